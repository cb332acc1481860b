//! CPU paths. `reference` is the yardstick of SPEC.md; faster paths are
//! checked against it.

pub mod fast;
#[cfg(target_arch = "x86_64")]
mod nhwc;
#[cfg(target_arch = "x86_64")]
mod pool_nhwc;
pub mod reference;
#[cfg(target_arch = "x86_64")]
mod winograd;

use std::mem::MaybeUninit;

use ndarray::Array4;

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

/// An uninitialised array for a result of the fast path. Its kernels store
/// every element (the GEMMs write without reading, the direct kernels store
/// whole blocks) or zero each piece (see [`zero_fill`]) right before
/// computing it, in parallel and while the piece is in cache: a zeroed allocation is
/// cleared by the calling thread alone, in a pass over memory of its own,
/// whenever the allocator reuses memory (fresh pages come zeroed anyway).
///
/// Large results come from fresh pages, and on Linux faulting them in 4 KiB
/// at a time costs more than the computation of a memory-bound
/// convolution; asking for transparent huge pages before the first touch
/// makes that 512 times fewer faults.
pub(crate) fn output_uninit(shape: [usize; 4]) -> Array4<MaybeUninit<f32>> {
    let mut a = Array4::<f32>::uninit(shape);
    #[cfg(target_os = "linux")]
    if let Some(s) = a.as_slice_mut() {
        advise_huge_pages(s.as_mut_ptr() as usize, std::mem::size_of_val(s));
    }
    a
}

/// Zero-fills `s` and returns it as initialised floats.
pub(crate) fn zero_fill(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    s.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just written, and MaybeUninit<f32> has the
    // layout of f32.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(start: usize, len: usize) {
    const HUGE: usize = 2 << 20;
    let end = start + len;
    let first = start.next_multiple_of(HUGE);
    let last = end / HUGE * HUGE;
    if last > first + HUGE {
        // SAFETY: [first, last) lies inside an allocation the caller owns;
        // MADV_HUGEPAGE is a hint that never changes the contents.
        unsafe {
            libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_HUGEPAGE);
        }
    }
}
