//! Pooling with few channels, a row at a time: each output row is built
//! separably from its window rows with contiguous, vectorised folds, so
//! there is no per-pixel bookkeeping. (With many channels `pool_nhwc`
//! folds each pixel's window in registers instead.)

use std::mem::MaybeUninit;

use super::pieces::{for_each_piece_uninit, piece_rows, Piece, TILE_FLOATS};
use super::simd::{dispatch, Isa, Simd, WithSimd};
use crate::shape::{Pool2dGeometry, PoolMode};

/// The row path over the output `o` of `x`; `g.c` may be anything, but the
/// span a row of windows covers must be compact (see `span_is_compact`).
pub(super) fn pool(isa: Isa, x: &[f32], o: &mut [MaybeUninit<f32>], g: &Pool2dGeometry) {
    let (_, ekw) = g.extent();
    let row_elems = g.ow * g.c;
    let rows = piece_rows(g.oh, row_elems * g.kh, g.m, TILE_FLOATS);
    // Columns that count for the divisor, per output column (the divisor is
    // the product of the row and column counts of the shared rule).
    let col_counts: Vec<usize> = (0..g.ow).map(|ox| g.divisor_cols(ox)).collect();
    let init = identity(g.mode);
    // Padded columns the windows span (ceil_mode may reach past the padding).
    let padded_cols = (g.pads.left + g.w).max(g.span_cols());
    // Every output of a piece is written by `pool_row`, so the piece is not
    // zeroed first.
    for_each_piece_uninit(o, g.m, g.oh, row_elems, rows, |p, dst| {
        // Cells outside the image hold `init`, which no fold changes: a
        // padded cell never wins a max and adds nothing to a sum.
        let mut column = vec![init; padded_cols * g.c];
        // One fold per window start (`(ow - 1) * sw + 1` columns).
        let mut wide = vec![0f32; if g.sw > 1 { (g.span_cols() + 1 - ekw) * g.c } else { 0 }];
        let mut work = PoolWork {
            col_counts: &col_counts,
            column: &mut column,
            wide: &mut wide,
        };
        dispatch(
            isa,
            PoolPiece {
                x,
                g,
                p,
                work: &mut work,
                dst,
            },
        );
    });
}

/// The per-piece workspace of the pooling row path.
struct PoolWork<'a> {
    /// Columns that count for the divisor, per output column.
    col_counts: &'a [usize],
    /// The window's rows folded, with the padding columns around.
    column: &'a mut [f32],
    /// Horizontal folds at every window start (strided pooling).
    wide: &'a mut [f32],
}

/// One piece of the row path, run with the vectors of `S`.
struct PoolPiece<'a, 'w> {
    x: &'a [f32],
    g: &'a Pool2dGeometry,
    p: Piece,
    work: &'a mut PoolWork<'w>,
    dst: &'a mut [MaybeUninit<f32>],
}

impl WithSimd for PoolPiece<'_, '_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        pool_piece(s, self.x, self.g, self.p, self.work, self.dst)
    }
}

/// Every output row of one piece of the pooling row path.
#[inline(always)]
fn pool_piece<S: Simd>(
    s: S,
    x: &[f32],
    g: &Pool2dGeometry,
    p: Piece,
    work: &mut PoolWork,
    dst: &mut [MaybeUninit<f32>],
) {
    let band = p.oy1 - p.oy0;
    let row_elems = g.ow * g.c;
    for (i, n) in (p.n0..p.n1).enumerate() {
        let image = &x[n * g.h * g.w * g.c..(n + 1) * g.h * g.w * g.c];
        let image_dst = &mut dst[i * band * row_elems..(i + 1) * band * row_elems];
        for (r, out_row) in image_dst.chunks_mut(row_elems).enumerate() {
            pool_row(s, image, g, p.oy0 + r, work, out_row);
        }
    }
}

/// One output row, separably and with contiguous folds only: the window's
/// rows are folded into the zero-padded `column`, its columns are folded at
/// every column (into the output row itself at stride 1, else into `wide`,
/// from which every sw-th pixel is then kept). Folding `sw` times more
/// columns than needed is still faster than strided folds when channels
/// are few: contiguous folds are vectorised.
#[inline(always)]
fn pool_row<S: Simd>(
    s: S,
    image: &[f32],
    g: &Pool2dGeometry,
    oy: usize,
    work: &mut PoolWork,
    out_row: &mut [MaybeUninit<f32>],
) {
    let (column, wide) = (&mut *work.column, &mut *work.wide);
    let out_row = pool_row_with(s, image, g, oy, column, wide, out_row);
    match g.mode {
        PoolMode::Max => {}
        PoolMode::Avg => {
            let col_counts = work.col_counts;
            let rows = g.divisor_rows(oy);
            // Runs of pixels with the same divisor (all but the edges) as
            // one flat slice each, so the divisions are vectorised.
            let mut ox = 0;
            for run in col_counts.chunk_by(|a, b| a == b) {
                let divisor = (rows * run[0]) as f32;
                for s in &mut out_row[ox * g.c..(ox + run.len()) * g.c] {
                    *s /= divisor;
                }
                ox += run.len();
            }
        }
    }
}

/// Folds the windows of output row `oy` into `out_row`, writing every
/// element, and returns it as floats.
#[inline(always)]
fn pool_row_with<'a, S: Simd>(
    s: S,
    image: &[f32],
    g: &Pool2dGeometry,
    oy: usize,
    column: &mut [f32],
    wide: &'a mut [f32],
    out_row: &'a mut [MaybeUninit<f32>],
) -> &'a mut [f32] {
    let init = identity(g.mode);
    let c = g.c;
    let row_len = g.w * c;
    let mut rows = (0..g.kh).filter_map(|i| (oy * g.sh + i * g.dh).checked_sub(g.pads.top).filter(|&y| y < g.h));
    // A window wholly in the padding keeps `init`.
    let Some(first) = rows.next() else {
        out_row.fill(MaybeUninit::new(init));
        // SAFETY: every element was just written.
        return unsafe { super::memory::assume_written(out_row) };
    };
    let row = |y: usize| &image[y * row_len..(y + 1) * row_len];
    let inside = &mut column[g.pads.left * c..g.pads.left * c + row_len];
    // The first two rows, and below the first two columns, in one pass
    // each: a copy or a fill, then a fold, would be two library calls per
    // row, which dominate short rows.
    match rows.next() {
        // SAFETY: fold2 writes only floats through the view.
        Some(second) => fold2(
            s,
            g.mode,
            unsafe { super::memory::as_uninit(inside) },
            row(first),
            row(second),
            false,
        ),
        None => inside.copy_from_slice(row(first)),
    }
    for y in rows {
        fold(s, g.mode, inside, row(y));
    }
    // At stride 1 the columns are folded into the output row itself.
    let (acc, out_row) = if g.sw == 1 {
        (out_row, None)
    } else {
        // SAFETY: only floats are written through the view (fold2 or the
        // fill below).
        (unsafe { super::memory::as_uninit(wide) }, Some(out_row))
    };
    let len = acc.len();
    let col = |j: usize| &column[j * g.dw * c..j * g.dw * c + len];
    // Columns folded so far: two by fold2, or none after the fill.
    let folded = if g.kw >= 2 {
        fold2(s, g.mode, acc, col(0), col(1), true);
        2
    } else {
        acc.fill(MaybeUninit::new(init));
        0
    };
    // SAFETY: fold2 or the fill wrote every element.
    let acc = unsafe { super::memory::assume_written(acc) };
    for j in folded..g.kw {
        fold(s, g.mode, acc, col(j));
    }
    let Some(out_row) = out_row else {
        return acc;
    };
    match c {
        1 => keep_every::<1>(out_row, acc, g.sw),
        2 => keep_every::<2>(out_row, acc, g.sw),
        3 => keep_every::<3>(out_row, acc, g.sw),
        4 => keep_every::<4>(out_row, acc, g.sw),
        _ => {
            for (px, src) in out_row.chunks_exact_mut(c).zip(acc.chunks(g.sw * c)) {
                for (d, &v) in px.iter_mut().zip(&src[..c]) {
                    d.write(v);
                }
            }
        }
    }
    // SAFETY: one window start per output pixel (`wide` holds
    // `(ow - 1) * sw + 1` of them), so every pixel was written.
    unsafe { super::memory::assume_written(out_row) }
}

/// The value [`fold`] starts from, which no fold changes: -inf for max
/// (padding never wins), 0 for the sum.
fn identity(mode: PoolMode) -> f32 {
    match mode {
        PoolMode::Max => f32::NEG_INFINITY,
        PoolMode::Avg => 0.0,
    }
}

/// `dst[i] = dst[i] op src[i]` for the pooling mode's fold (sum, or the
/// NaN-propagating max of SPEC.md).
#[inline(always)]
fn fold<S: Simd>(s: S, mode: PoolMode, dst: &mut [f32], src: &[f32]) {
    match mode {
        PoolMode::Avg => {
            for (a, &v) in dst.iter_mut().zip(src) {
                *a += v;
            }
        }
        PoolMode::Max => {
            let n = dst.len().min(src.len());
            let d = dst.as_mut_ptr();
            // SAFETY: n floats of each; `dst` is read and written through one pointer.
            unsafe { max_into(s, d, d, src.as_ptr(), n) }
        }
    }
}

/// `dst[i] = a[i] op b[i]` for the pooling mode's fold; with
/// `from_identity`, `(identity op a[i]) op b[i]`, as a fill with
/// [`identity`] then two folds would give (the sum of a -0 starts from +0).
#[inline(always)]
fn fold2<S: Simd>(s: S, mode: PoolMode, dst: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32], from_identity: bool) {
    assert!(a.len() >= dst.len() && b.len() >= dst.len());
    match mode {
        PoolMode::Avg if from_identity => {
            for ((d, &u), &v) in dst.iter_mut().zip(a).zip(b) {
                d.write((0.0 + u) + v);
            }
        }
        PoolMode::Avg => {
            for ((d, &u), &v) in dst.iter_mut().zip(a).zip(b) {
                d.write(u + v);
            }
        }
        // -inf max a is a, NaN included: the identity changes nothing.
        // SAFETY: dst.len() floats of each slice (asserted above).
        PoolMode::Max => unsafe { max_into(s, dst.as_mut_ptr().cast(), a.as_ptr(), b.as_ptr(), dst.len()) },
    }
}

/// `dst[i] = max_nan(a[i], b[i])` for `i < n`, a vector at a time with
/// [`Simd::max_nan`]'s explicit blends (written as plain Rust, "keep `a`
/// unless `b` wins" compiles to masked stores: twice as slow); `a` may be
/// `dst` itself.
///
/// # Safety
/// `n` floats from each pointer are valid (for writing, from `dst`).
#[inline(always)]
unsafe fn max_into<S: Simd>(s: S, dst: *mut f32, a: *const f32, b: *const f32, n: usize) {
    if n < S::LANES {
        for i in 0..n {
            // SAFETY: i < n (the caller's bound).
            unsafe { *dst.add(i) = super::max_nan(*a.add(i), *b.add(i)) };
        }
        return;
    }
    // Whole vectors, the last one ending at n (overlapping the one before
    // it where n is not a multiple of LANES): max_nan(max_nan(x, y), y) is
    // max_nan(x, y), bit for bit, so lanes folded twice (in place, where
    // `a` is `dst`) keep their value, and short rows need no scalar tail
    // (with 16 lanes, most of a 93-float row would be one).
    let mut i = 0;
    loop {
        // SAFETY: i + LANES <= n (the caller's bound).
        unsafe { s.store(dst.add(i), s.max_nan(s.load(a.add(i)), s.load(b.add(i)))) };
        if i + S::LANES == n {
            break;
        }
        i = (i + S::LANES).min(n - S::LANES);
    }
}

/// `out[ox] = wide[ox * sw]` for pixels of C channels (a fixed count, so
/// each pixel is a few plain moves).
#[inline(always)]
fn keep_every<const C: usize>(out: &mut [MaybeUninit<f32>], wide: &[f32], sw: usize) {
    for (px, src) in out.chunks_exact_mut(C).zip(wide.chunks(sw * C)) {
        let src: &[f32; C] = src[..C].try_into().expect("C floats");
        let px: &mut [MaybeUninit<f32>; C] = px.try_into().expect("C floats");
        *px = src.map(MaybeUninit::new);
    }
}

/// [`fold`] of max mode with the vectors of `isa` (for the tests).
#[cfg(test)]
pub(super) fn fold_max(isa: Isa, dst: &mut [f32], src: &[f32]) {
    struct Op<'a>(&'a mut [f32], &'a [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) {
            fold(s, PoolMode::Max, self.0, self.1)
        }
    }
    dispatch(isa, Op(dst, src))
}
