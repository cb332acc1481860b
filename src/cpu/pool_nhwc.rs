//! Pooling with many channels, one output pixel at a time: the window's
//! taps are folded into up to four vectors of channels held in registers
//! and the result is stored once, instead of folding every tap into the
//! output row in memory (`pool_rows`, which wins when there are only a few
//! channels).
//!
//! Max pooling follows SPEC.md bit for bit, NaN payloads included: the
//! plain vector max where no tap is NaN, the reference's scalar fold where
//! one is.

use std::mem::MaybeUninit;

use super::pieces::{for_each_piece, piece_rows, TILE_FLOATS};
use super::simd::{dispatch, Isa, Simd, WithSimd};
use crate::shape::{Pool2dGeometry, PoolMode};

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

/// The pooling with the vectors of `isa`; meant for `g.c` of at least one
/// vector (narrower pixels fold their channels one at a time).
pub(super) fn pool(isa: Isa, x: &[f32], o: &mut [MaybeUninit<f32>], g: &Pool2dGeometry) {
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
                let row = Row {
                    image,
                    g,
                    ys: &ys,
                    oy,
                    rows_counted: g.divisor_rows(oy),
                    columns: &columns,
                    out_row,
                };
                dispatch(isa, row);
            }
        }
    });
}

/// One output row: input rows `ys`, `rows_counted` rows for the divisor.
struct Row<'a> {
    image: &'a [f32],
    g: &'a Pool2dGeometry,
    oy: usize,
    ys: &'a [usize],
    rows_counted: usize,
    columns: &'a Columns,
    out_row: &'a mut [f32],
}

impl WithSimd for Row<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Row {
            image,
            g,
            oy,
            ys,
            rows_counted,
            columns,
            out_row,
        } = self;
        let c = g.c;
        let vector_c = c / S::LANES * S::LANES;
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
            while ch + 4 * S::LANES <= vector_c {
                window.fold::<S, 4>(s, ch, &mut px[ch..ch + 4 * S::LANES]);
                ch += 4 * S::LANES;
            }
            while ch + S::LANES <= vector_c {
                window.fold::<S, 1>(s, ch, &mut px[ch..ch + S::LANES]);
                ch += S::LANES;
            }
            for (ch, out) in px.iter_mut().enumerate().skip(ch) {
                *out = window.fold_scalar(ch);
            }
        }
        if g.mode == PoolMode::Avg && super::pool_windows::any_non_finite(out_row) {
            super::pool_windows::redo_overflowed_averages(image, g, oy, out_row);
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
    /// Channels `ch..ch + K * LANES` of the pixel into `out` (that many
    /// floats). Max folds with the plain vector max and flags NaN inputs on
    /// the side (cheaper per tap than a NaN-aware blend on AVX2); a window
    /// that holds a NaN is folded again channel by channel, so the result
    /// is the reference's bit for bit.
    #[inline(always)]
    fn fold<S: Simd, const K: usize>(&self, s: S, ch: usize, out: &mut [f32]) {
        let max = self.mode == PoolMode::Max;
        let mut acc = [s.splat(if max { f32::NEG_INFINITY } else { 0.0 }); K];
        let mut nan = [s.zero(); K];
        for &y in self.ys {
            let row = &self.image[y * self.row_len..(y + 1) * self.row_len];
            for &x in self.xs {
                let tap = &row[x * self.c + ch..x * self.c + ch + K * S::LANES];
                for k in 0..K {
                    // SAFETY: `tap` holds K * LANES floats (sliced above).
                    let v = unsafe { s.load(tap.as_ptr().add(k * S::LANES)) };
                    if max {
                        acc[k] = s.max_keeping(acc[k], v);
                        nan[k] = s.flag_nan(nan[k], v);
                    } else {
                        acc[k] = s.add(acc[k], v);
                    }
                }
            }
        }
        assert!(out.len() == K * S::LANES);
        if max && nan.iter().any(|&f| s.any_set(f)) {
            for (i, o) in out.iter_mut().enumerate() {
                *o = self.fold_scalar(ch + i);
            }
            return;
        }
        for (k, &a) in acc.iter().enumerate() {
            let r = if max { a } else { s.div(a, s.splat(self.divisor)) };
            // SAFETY: `out` holds K * LANES floats (asserted above).
            unsafe { s.store(out.as_mut_ptr().add(k * S::LANES), r) };
        }
    }

    /// One channel, for the channels past the last whole vector.
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
