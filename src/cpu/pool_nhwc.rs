//! Pooling with many channels (x86_64 with AVX2), one output pixel at a
//! time: the window's taps are folded into up to 32 channels held in
//! registers and the result is stored once, instead of folding every tap
//! into the output row in memory (the row-at-a-time loop of
//! [`super::fast::pool2d`], which wins when there are only a few channels).
//!
//! Max pooling follows SPEC.md: NaN anywhere in the window gives NaN.
//! `vmaxps(v, m)` already keeps a NaN that is in `m`, but drops one in `v`,
//! so NaN inputs are also tracked in a mask that is or-ed in at the end (an
//! all-ones pattern is a NaN).

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::fast::{for_each_piece, piece_rows};
use crate::shape::{Pool2dGeometry, PoolMode};

/// Floats of input window rows one piece aims for.
const TILE_FLOATS: usize = 1 << 16;

/// The valid input columns of each output column, flattened.
struct Columns {
    /// `taps[start[ox]..start[ox + 1]]` are output column `ox`'s.
    start: Vec<usize>,
    taps: Vec<usize>,
    /// Columns that count for the divisor of an average.
    counted: Vec<usize>,
}

impl Columns {
    fn new(g: &Pool2dGeometry) -> Self {
        let mut start = vec![0];
        let mut taps = Vec::new();
        for ox in 0..g.ow {
            taps.extend((0..g.kw).filter_map(|j| (ox * g.sw + j * g.dw).checked_sub(g.pads.left).filter(|&x| x < g.w)));
            start.push(taps.len());
        }
        let counted = (0..g.ow).map(|ox| g.divisor_cols(ox)).collect();
        Columns { start, taps, counted }
    }
}

/// The pooling; the caller has checked AVX2 at run time and `g.c >= 8`.
///
/// # Safety
/// The CPU must support AVX2.
pub(super) unsafe fn pool(x: &[f32], o: &mut [MaybeUninit<f32>], g: &Pool2dGeometry) {
    let row_elems = g.ow * g.c;
    let rows = piece_rows(g.oh, g.w * g.c * g.kh, g.m, TILE_FLOATS);
    let columns = Columns::new(g);
    let image_len = g.h * g.w * g.c;
    for_each_piece(o, g.m, g.oh, row_elems, rows, |p, dst| {
        let band = p.oy1 - p.oy0;
        let mut ys = Vec::with_capacity(g.kh);
        for (i, n) in (p.n0..p.n1).enumerate() {
            let image = &x[n * image_len..(n + 1) * image_len];
            let image_dst = &mut dst[i * band * row_elems..(i + 1) * band * row_elems];
            for (r, out_row) in image_dst.chunks_mut(row_elems).enumerate() {
                let oy = p.oy0 + r;
                ys.clear();
                ys.extend(
                    (0..g.kh).filter_map(|i| (oy * g.sh + i * g.dh).checked_sub(g.pads.top).filter(|&y| y < g.h)),
                );
                // SAFETY: forwarded from this function's contract.
                unsafe { pool_row(image, g, &ys, g.divisor_rows(oy), &columns, out_row) };
            }
        }
    });
}

/// One output row: input rows `ys`, `rows_counted` rows for the divisor.
#[target_feature(enable = "avx2")]
unsafe fn pool_row(
    image: &[f32],
    g: &Pool2dGeometry,
    ys: &[usize],
    rows_counted: usize,
    columns: &Columns,
    out_row: &mut [f32],
) {
    let c = g.c;
    let vector_c = c / 8 * 8;
    for (ox, px) in out_row.chunks_exact_mut(c).enumerate() {
        let xs = &columns.taps[columns.start[ox]..columns.start[ox + 1]];
        let divisor = (rows_counted * columns.counted[ox]) as f32;
        let window = Window {
            image,
            row_len: g.w * c,
            c,
            ys,
            xs,
            mode: g.mode,
            divisor,
        };
        let mut ch = 0;
        while ch + 32 <= vector_c {
            // SAFETY: AVX2 is this function's contract.
            unsafe { window.fold::<4>(ch, &mut px[ch..ch + 32]) };
            ch += 32;
        }
        while ch + 8 <= vector_c {
            // SAFETY: as above.
            unsafe { window.fold::<1>(ch, &mut px[ch..ch + 8]) };
            ch += 8;
        }
        for (ch, out) in px.iter_mut().enumerate().skip(ch) {
            *out = window.fold_scalar(ch);
        }
    }
}

/// The taps of one output pixel's window.
struct Window<'a> {
    image: &'a [f32],
    row_len: usize,
    c: usize,
    ys: &'a [usize],
    xs: &'a [usize],
    mode: PoolMode,
    divisor: f32,
}

impl Window<'_> {
    /// Channels `ch..ch + 8 * K` of the pixel into `out` (`8 * K` floats).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn fold<const K: usize>(&self, ch: usize, out: &mut [f32]) {
        let max = self.mode == PoolMode::Max;
        let mut acc = [_mm256_set1_ps(if max { f32::NEG_INFINITY } else { 0.0 }); K];
        let mut nan = [_mm256_setzero_ps(); K];
        for &y in self.ys {
            let row = &self.image[y * self.row_len..(y + 1) * self.row_len];
            for &x in self.xs {
                let tap = &row[x * self.c + ch..x * self.c + ch + 8 * K];
                for k in 0..K {
                    // SAFETY: `tap` holds 8 * K floats (sliced above).
                    let v = unsafe { _mm256_loadu_ps(tap.as_ptr().add(8 * k)) };
                    if max {
                        acc[k] = _mm256_max_ps(v, acc[k]);
                        nan[k] = _mm256_or_ps(nan[k], _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
                    } else {
                        acc[k] = _mm256_add_ps(acc[k], v);
                    }
                }
            }
        }
        assert!(out.len() == 8 * K);
        for k in 0..K {
            let r = if max {
                _mm256_or_ps(acc[k], nan[k])
            } else {
                _mm256_div_ps(acc[k], _mm256_set1_ps(self.divisor))
            };
            // SAFETY: `out` holds 8 * K floats (asserted above).
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * k), r) };
        }
    }

    /// One channel, for the channels past the last multiple of 8.
    fn fold_scalar(&self, ch: usize) -> f32 {
        let taps = self.ys.iter().flat_map(|&y| {
            self.xs
                .iter()
                .map(move |&x| self.image[y * self.row_len + x * self.c + ch])
        });
        match self.mode {
            PoolMode::Max => taps.fold(f32::NEG_INFINITY, super::max_nan),
            PoolMode::Avg => taps.fold(0.0, |s, v| s + v) / self.divisor,
        }
    }
}
