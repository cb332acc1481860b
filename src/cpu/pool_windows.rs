//! Pooling by explicit windows, one output pixel at a time with the
//! channels innermost (contiguous in NHWC, so the folds vectorise):
//! adaptive pooling (every output has its own window) and the argmax of max
//! pooling (fixed or adaptive windows). Windows come from
//! [`Pool2dGeometry::window_rows`] / [`Pool2dGeometry::window_cols`], the
//! same as the reference's. Also the f64 redo of the averages the vector
//! kernels' f32 sums overflow.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::shape::{Pool2dGeometry, PoolMode};

/// Max or average pooling over `g`'s windows (adaptive ones included),
/// bit for bit the reference's max, its f64 sum for the average.
pub(super) fn pool(x: &[f32], o: &mut [MaybeUninit<f32>], g: &Pool2dGeometry) {
    let (c, image_len) = (g.c, g.h * g.w * g.c);
    o.par_chunks_mut(g.ow * c).enumerate().for_each(|(row, dst)| {
        let (n, oy) = (row / g.oh, row % g.oh);
        let image = &x[n * image_len..(n + 1) * image_len];
        let ys: Vec<usize> = g.window_rows(oy).collect();
        let mut sum = vec![0f64; c];
        let mut max = vec![f32::NEG_INFINITY; c];
        for (ox, out) in dst.chunks_exact_mut(c).enumerate() {
            let xs: Vec<usize> = g.window_cols(ox).collect();
            match g.mode {
                PoolMode::Max => {
                    max.fill(f32::NEG_INFINITY);
                    for &y in &ys {
                        for &xx in &xs {
                            let px = &image[(y * g.w + xx) * c..][..c];
                            for (m, &v) in max.iter_mut().zip(px) {
                                *m = super::max_nan(*m, v);
                            }
                        }
                    }
                    for (d, &m) in out.iter_mut().zip(&max) {
                        *d = MaybeUninit::new(m);
                    }
                }
                PoolMode::Avg => {
                    sum.fill(0.0);
                    for &y in &ys {
                        for &xx in &xs {
                            let px = &image[(y * g.w + xx) * c..][..c];
                            for (s, &v) in sum.iter_mut().zip(px) {
                                *s += v as f64;
                            }
                        }
                    }
                    let divisor = g.divisor(oy, ox);
                    for (d, &s) in out.iter_mut().zip(&sum) {
                        *d = MaybeUninit::new((s / divisor) as f32);
                    }
                }
            }
        }
    });
}

/// Whether an f32 average row holds an infinity or NaN, which an f32 sum
/// of values near `f32::MAX` can give where the mean is finite. Branch-free
/// and inlined into the vector kernels, so it runs at their width on a row
/// still in the L1 cache.
#[inline(always)]
pub(super) fn any_non_finite(row: &[f32]) -> bool {
    row.iter().fold(false, |bad, v| bad | !v.is_finite())
}

/// Redoes with [`pool`]'s f64 sum the averages of output row `oy` of
/// `image` that an f32 sum left infinite or NaN. A window holding an
/// infinity or NaN gives the same infinity or NaN either way, so only the
/// overflowed ones change.
#[cold]
pub(super) fn redo_overflowed_averages(image: &[f32], g: &Pool2dGeometry, oy: usize, row: &mut [f32]) {
    let c = g.c;
    let ys: Vec<usize> = g.window_rows(oy).collect();
    for (i, v) in row.iter_mut().enumerate() {
        if v.is_finite() {
            continue;
        }
        let (ox, ch) = (i / c, i % c);
        let mut sum = 0f64;
        for &y in &ys {
            for xx in g.window_cols(ox) {
                sum += image[(y * g.w + xx) * c + ch] as f64;
            }
        }
        *v = (sum / g.divisor(oy, ox)) as f32;
    }
}

/// The argmax of max pooling, `y * w + x` per output cell, -1 for a window
/// with no real cell: the first real cell starts the scan, then a cell
/// wins if it is larger or NaN (PyTorch's rule: ties keep the first, the
/// last NaN wins).
pub(super) fn indices(x: &[f32], o: &mut [i64], g: &Pool2dGeometry) {
    let (c, image_len) = (g.c, g.h * g.w * g.c);
    o.par_chunks_mut(g.ow * c).enumerate().for_each(|(row, dst)| {
        let (n, oy) = (row / g.oh, row % g.oh);
        let image = &x[n * image_len..(n + 1) * image_len];
        let ys: Vec<usize> = g.window_rows(oy).collect();
        let mut best = vec![f32::NEG_INFINITY; c];
        for (ox, out) in dst.chunks_exact_mut(c).enumerate() {
            out.fill(-1);
            let mut first = true;
            for &y in &ys {
                for xx in g.window_cols(ox) {
                    let at = (y * g.w + xx) as i64;
                    let px = &image[(y * g.w + xx) * c..][..c];
                    if first {
                        best.copy_from_slice(px);
                        out.fill(at);
                        first = false;
                        continue;
                    }
                    for ((b, i), &v) in best.iter_mut().zip(out.iter_mut()).zip(px) {
                        if v > *b || v.is_nan() {
                            *b = v;
                            *i = at;
                        }
                    }
                }
            }
        }
    });
}
