//! CPU paths. `reference` is the yardstick of SPEC.md; faster paths are
//! checked against it.
//!
//! Layers, bottom up (each file imports only the layers below it):
//! - `simd`: the vector layer (AVX-512, AVX2 + FMA, portable) and [`Isa`];
//! - `memory` (output allocation) and `pieces` (the parallel split into
//!   pieces, the scratch budget, prefetching);
//! - the kernels, each with one entry: `gemm` (pointwise and im2col + GEMM),
//!   `planar` (few channels), `nhwc` (many channels), `winograd` (3x3 on
//!   the NHWC kernel's blocks), `pool_rows` (few channels), `pool_nhwc`
//!   (many channels);
//! - `fast`: which kernel a call takes, and the dispatch to it.

mod border;
mod depthwise;
pub(crate) mod fast;
mod gemm;
mod memory;
mod nhwc;
mod pieces;
mod planar;
mod pool_nhwc;
mod pool_rows;
mod pool_windows;
pub(crate) mod reference;
pub(crate) mod simd;
mod winograd;

pub(crate) use memory::output_uninit;
pub use simd::Isa;

use crate::error::{Error, Result};

/// Whether the padded rows and columns a row of outputs spans stay within
/// a small multiple of the image plus a kernel. The CPU kernels that copy
/// that span (planar and NHWC convolution, few-channel pooling rows) take
/// it only then: with huge padding, stride or dilation (a 1-pixel image,
/// pads and stride of 1e9) it is mostly padding no tap reads, gigabytes of
/// it, and the callers fall back to paths that touch only the taps.
pub(crate) fn span_is_compact(h: usize, w: usize, kh: usize, kw: usize, ekh: usize, span_cols: usize) -> bool {
    span_cols <= 2 * (w + kw) && ekh <= 2 * (h + kh)
}

/// NaN-propagating max of SPEC.md: NaN beats every number; once NaN, stays NaN.
#[inline(always)]
pub(crate) fn max_nan(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

/// Refuses a result the machine cannot hold, before anything is computed:
/// an impossible allocation would otherwise abort the process.
pub(crate) fn check_output_fits(shape: [usize; 4]) -> Result<()> {
    let elems = crate::shape::checked_elems("output", &shape)?;
    let mut probe: Vec<f32> = Vec::new();
    probe.try_reserve_exact(elems).map_err(|_| Error::Overflow {
        what: "output",
        detail: format!(
            "a result of shape {} ({} bytes) cannot be allocated",
            crate::error::Shape::from(shape),
            elems as u128 * 4
        ),
    })
}
