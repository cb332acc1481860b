//! The GEMM paths: pointwise convolution and im2col + GEMM, through the
//! `gemm` crate (which picks its own kernels at run time from the CPU's
//! features: AVX-512 where present, with this crate's `x86-v4` feature).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::pieces::{finish, for_each_piece_uninit, piece_rows, SCRATCH, TILE_FLOATS};
use super::simd::Isa;
use crate::epilogue::Epilogue;
use crate::shape::Conv2dGeometry;

/// The instruction set the `gemm` crate runs on this CPU (its own run-time
/// choice, which no forced [`Isa`] changes).
pub(super) fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// Floats of im2col workspace per piece: large enough that the GEMM sees a
/// tall matrix (its packing cost is per call), small enough for the L2 cache.
const IM2COL_FLOATS: usize = 1 << 18;

/// `dst (m x n) = lhs (m x k) * rhs (k x n)`, all row-major and contiguous.
fn sgemm(m: usize, n: usize, k: usize, dst: &mut [MaybeUninit<f32>], lhs: &[f32], rhs: &[f32]) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    // SAFETY: the asserts above keep every index the GEMM touches in bounds
    // (row-major strides: column stride 1, row stride = columns), and `dst`
    // does not alias the inputs (it is a `&mut`). With `read_dst` false the
    // GEMM writes `dst` without reading it, so it may start uninitialised
    // (MaybeUninit<f32> has the layout of f32).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<f32>(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The pointwise convolution (1x1, stride 1, no padding): NHWC images
/// already are the `(pixels x c)` matrix, so it is one GEMM per band of
/// pixels, with no copies.
pub(super) fn pointwise(x: &[f32], k: &[f32], o: &mut [MaybeUninit<f32>], g: &Conv2dGeometry, ep: &Epilogue) {
    let rows = (TILE_FLOATS / g.c.max(g.nc)).max(64);
    o.par_chunks_mut(rows * g.nc).enumerate().for_each(|(b, dst)| {
        let p0 = b * rows;
        let p = dst.len() / g.nc;
        sgemm(p, g.nc, g.c, dst, &x[p0 * g.c..(p0 + p) * g.c], k);
        // SAFETY: the GEMM wrote every element of `dst`.
        unsafe { finish(dst, ep, g.nc) };
    });
}

/// Convolution as im2col + GEMM on bounded tiles of output rows (never the
/// whole batch): the general path, for shapes neither the planar nor the NHWC
/// kernel takes.
pub(super) fn conv(x: &[f32], k: &[f32], o: &mut [MaybeUninit<f32>], g: &Conv2dGeometry, ep: &Epilogue) {
    let kk = g.kh * g.kw * g.c;
    let row_elems = g.ow * g.nc;
    let rows = piece_rows(g.oh, g.ow * kk, g.m, IM2COL_FLOATS);
    for_each_piece_uninit(o, g.m, g.oh, row_elems, rows, |p, dst| {
        SCRATCH.with_borrow_mut(|cols| {
            let pixels = (p.oy1 - p.oy0) * g.ow;
            // im2col writes every cell: grow the workspace, never clear it.
            if cols.len() < pixels * kk {
                cols.resize(pixels * kk, 0.0);
            }
            for (i, n) in (p.n0..p.n1).enumerate() {
                im2col(x, g, n, p.oy0, p.oy1, cols);
                let out = &mut dst[i * pixels * g.nc..(i + 1) * pixels * g.nc];
                sgemm(pixels, g.nc, kk, out, cols, k);
            }
        });
        // SAFETY: the GEMMs wrote every element of every image of `dst`.
        unsafe { finish(dst, ep, g.nc) };
    });
}

/// Rows `[oy0, oy1)` of image `n` as a `(pixels x kh*kw*c)` matrix in HWIO
/// order. Every cell is written (padding as zeros), so the workspace needs no
/// clearing between pieces. Without horizontal dilation the taps of one
/// kernel row are one contiguous run of the image row, copied at once.
fn im2col(x: &[f32], g: &Conv2dGeometry, n: usize, oy0: usize, oy1: usize, cols: &mut [f32]) {
    let kk = g.kh * g.kw * g.c;
    let image = &x[n * g.h * g.w * g.c..(n + 1) * g.h * g.w * g.c];
    for (r, oy) in (oy0..oy1).enumerate() {
        for ox in 0..g.ow {
            let row = &mut cols[(r * g.ow + ox) * kk..(r * g.ow + ox + 1) * kk];
            for i in 0..g.kh {
                let dst_row = &mut row[i * g.kw * g.c..(i + 1) * g.kw * g.c];
                let Some(y) = (oy * g.sh + i * g.dh).checked_sub(g.pads.top).filter(|&y| y < g.h) else {
                    dst_row.fill(0.0);
                    continue;
                };
                let src_row = &image[y * g.w * g.c..(y + 1) * g.w * g.c];
                let x0 = ox * g.sw;
                if g.dw == 1 {
                    // Taps j with 0 <= x0 + j - left < w.
                    let j0 = g.pads.left.saturating_sub(x0).min(g.kw);
                    let j1 = (g.pads.left + g.w).saturating_sub(x0).min(g.kw).max(j0);
                    dst_row[..j0 * g.c].fill(0.0);
                    if j1 > j0 {
                        let s0 = (x0 + j0 - g.pads.left) * g.c;
                        dst_row[j0 * g.c..j1 * g.c].copy_from_slice(&src_row[s0..s0 + (j1 - j0) * g.c]);
                    }
                    dst_row[j1 * g.c..].fill(0.0);
                    continue;
                }
                for (j, tap) in dst_row.chunks_exact_mut(g.c).enumerate() {
                    match (x0 + j * g.dw).checked_sub(g.pads.left).filter(|&v| v < g.w) {
                        Some(xx) => tap.copy_from_slice(&src_row[xx * g.c..(xx + 1) * g.c]),
                        None => tap.fill(0.0),
                    }
                }
            }
        }
    }
}
