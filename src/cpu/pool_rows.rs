//! Pooling with few channels, a row at a time: each output row is built
//! separably from its window rows with contiguous, vectorised folds, so
//! there is no per-pixel bookkeeping. (With many channels `pool_nhwc`
//! folds each pixel's window in registers instead.) The commonest window,
//! 2 x 2 at stride 2 inside the image, skips the row path's strided copy
//! on AVX-512: each block of pixels is folded and picked out of its two
//! input vectors by permutations (`pairs_2x2`), with the same bits.

use std::mem::MaybeUninit;

use super::pieces::{for_each_piece_uninit, piece_rows, Piece, TILE_FLOATS};
use super::simd::{dispatch, Isa, Simd, WithSimd};
use crate::shape::{Pool2dGeometry, PoolMode};

/// The row path over the output `o` of `x`; `g.c` may be anything, but the
/// span a row of windows covers must be compact (see `span_is_compact`).
pub(super) fn pool(isa: Isa, x: &[f32], o: &mut [MaybeUninit<f32>], g: &Pool2dGeometry) {
    pool_with(isa, x, o, g, true)
}

/// [`pool`], with the 2 x 2 pairs of [`pairs_2x2`] allowed or not (the
/// tests compare the two).
fn pool_with(isa: Isa, x: &[f32], o: &mut [MaybeUninit<f32>], g: &Pool2dGeometry, allow_pairs: bool) {
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
            pairs: (allow_pairs && takes_pairs(g)).then(|| pair_lanes(g.c)),
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

/// Whether every output row can be built by [`pairs_2x2`]: 2 x 2 windows
/// at stride 2, undilated, wholly inside the image (no padding, no window
/// past the edge), with fewer channels than a 16-lane vector and at least
/// one block of `16 / c` pixels per row.
fn takes_pairs(g: &Pool2dGeometry) -> bool {
    let p = g.pads;
    (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw) == (2, 2, 2, 2, 1, 1)
        && !g.adaptive
        && (p.top, p.bottom, p.left, p.right) == (0, 0, 0, 0)
        && 2 * g.oh <= g.h
        && 2 * g.ow <= g.w
        && (1..16).contains(&g.c)
        && 16 / g.c <= g.ow
}

/// The per-piece workspace of the pooling row path.
struct PoolWork<'a> {
    /// Rows go through [`pairs_2x2`] where the vectors are 16 lanes wide
    /// (see [`takes_pairs`]), with these lanes ([`pair_lanes`]).
    pairs: Option<PairLanes>,
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
            if g.mode == PoolMode::Avg {
                // SAFETY: `pool_row` writes every element of its row.
                let out_row = unsafe { super::memory::assume_written(out_row) };
                if super::pool_windows::any_non_finite(out_row) {
                    super::pool_windows::redo_overflowed_averages(image, g, p.oy0 + r, out_row);
                }
            }
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
    if let Some(lanes) = work.pairs.as_ref().filter(|_| S::HAS_VECTORS && S::LANES == 16) {
        let row_len = g.w * g.c;
        let divisor = (g.divisor_rows(oy) * work.col_counts[0]) as f32;
        let (r0, r1) = (&image[2 * oy * row_len..], &image[(2 * oy + 1) * row_len..]);
        pairs_2x2(s, g.mode, [r0, r1], lanes, divisor, out_row);
        return;
    }
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

/// Where [`pairs_2x2`] finds the values of a block's lanes, for `c`
/// channels (made once per piece: they take divisions by `c`).
#[derive(Clone, Copy)]
struct PairLanes {
    c: usize,
    /// Lane e of a block is channel e % c of its pixel e / c, whose window
    /// starts at folded float 2 * (e / c) * c + e % c of the block's two
    /// vectors (2 * (16 / c) * c <= 32: every index is in them).
    left: [u32; 16],
    /// The window's right column, c floats on.
    right: [u32; 16],
}

/// The lanes of [`PairLanes`] for `c` channels (`1 <= c < 16`).
fn pair_lanes(c: usize) -> PairLanes {
    let n = 16 / c * c;
    let left: [u32; 16] = std::array::from_fn(|e| if e < n { (2 * (e / c) * c + e % c) as u32 } else { 0 });
    let right = std::array::from_fn(|e| if e < n { left[e] + c as u32 } else { 0 });
    PairLanes { c, left, right }
}

/// One output row of 2 x 2 windows at stride 2 (see [`takes_pairs`]) from
/// its two input rows `rows` (each from its first pixel on), in blocks of
/// `16 / c` output pixels: two vectors of each row folded lane by lane,
/// then each pixel's left and right halves picked out of the folded pair by
/// two permutations and folded. That is the row path's work in one pass,
/// without its strided copy: the same folds in the same order (the rows,
/// then the columns; the average summed from +0 and divided last), so the
/// same bits. The last block moves back to end at the row's last pixel,
/// recomputing a few (the same bits again); a block whose loads would run
/// past the end of `rows` is computed one value at a time.
#[inline(always)]
fn pairs_2x2<S: Simd>(
    s: S,
    mode: PoolMode,
    rows: [&[f32]; 2],
    lanes: &PairLanes,
    divisor: f32,
    out: &mut [MaybeUninit<f32>],
) {
    let PairLanes { c, left, right } = *lanes;
    let ow = out.len() / c;
    let per_block = 16 / c;
    let n = per_block * c;
    let [r0, r1] = rows;
    let len = r0.len().min(r1.len());
    assert!(S::LANES == 16 && per_block >= 1 && ow >= per_block && out.len() == ow * c && len >= 2 * ow * c);
    let o = out.as_mut_ptr().cast::<f32>();
    for block in 0..ow.div_ceil(per_block) {
        let px = (block * per_block).min(ow - per_block);
        let at = 2 * px * c;
        if at + 2 * S::LANES > len {
            for (e, &l) in left[..n].iter().enumerate() {
                let (l, r) = (at + l as usize, at + l as usize + c);
                let v = match mode {
                    PoolMode::Max => super::max_nan(super::max_nan(r0[l], r1[l]), super::max_nan(r0[r], r1[r])),
                    PoolMode::Avg => ((0.0 + (r0[l] + r1[l])) + (r0[r] + r1[r])) / divisor,
                };
                out[px * c + e].write(v);
            }
            continue;
        }
        // SAFETY: at + 2 * LANES <= len, the length of both rows (checked
        // just above), and px * c + n <= ow * c = out.len().
        unsafe {
            let (a, b) = (r0.as_ptr().add(at), r1.as_ptr().add(at));
            let (a0, a1) = (s.load(a), s.load(a.add(S::LANES)));
            let (b0, b1) = (s.load(b), s.load(b.add(S::LANES)));
            let v = match mode {
                PoolMode::Max => {
                    let (v0, v1) = (s.max_nan(a0, b0), s.max_nan(a1, b1));
                    s.max_nan(s.permute2(v0, v1, &left), s.permute2(v0, v1, &right))
                }
                PoolMode::Avg => {
                    let (v0, v1) = (s.add(a0, b0), s.add(a1, b1));
                    let sum = s.add(s.add(s.zero(), s.permute2(v0, v1, &left)), s.permute2(v0, v1, &right));
                    s.div(sum, s.splat(divisor))
                }
            };
            s.store_prefix(o.add(px * c), n, v);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Pool2dSpec;

    /// The 2 x 2 pairs give the row path's bits (NaN, infinities and signed
    /// zeros included) for every channel count they take, rows of one block
    /// and of a last block moved back, an odd width (its last column left
    /// out) and a ceil-mode window past the edge (which must not take
    /// them); and they match the reference.
    #[test]
    fn pairs_give_the_row_paths_bits() {
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e-40, -3.5];
        for c in 1..16 {
            let block = 16 / c;
            for w in [2 * block, 2 * block + 1, 2 * block + 6, 37] {
                let shape = [2, 5, w, c];
                let len: usize = shape.iter().product();
                let x: Vec<f32> = (0..len)
                    .map(|i| {
                        let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                        if h.is_multiple_of(11) {
                            specials[(h / 11) as usize % specials.len()]
                        } else {
                            (h % 1000) as f32 / 37.0 - 13.0
                        }
                    })
                    .collect();
                let images = ndarray::ArrayView4::from_shape(shape, &x).unwrap();
                for mode in [PoolMode::Max, PoolMode::Avg] {
                    for ceil in [false, true] {
                        let g = Pool2dSpec::new(mode, 2, 2)
                            .with_stride(2, 2)
                            .with_ceil_mode(ceil)
                            .resolve(shape)
                            .unwrap()
                            .normalised();
                        if ceil && w % 2 == 1 {
                            assert!(!takes_pairs(&g), "c {c} w {w}: a window past the edge");
                        }
                        let want = crate::cpu::reference::pool2d(images, &g);
                        for isa in Isa::available() {
                            let run = |pairs: bool| {
                                let mut o = vec![MaybeUninit::new(f32::NAN); g.m * g.oh * g.ow * g.c];
                                pool_with(isa, &x, &mut o, &g, pairs);
                                // SAFETY: every element was initialised above.
                                o.into_iter().map(|v| unsafe { v.assume_init() }).collect::<Vec<f32>>()
                            };
                            let (got, rows) = (run(true), run(false));
                            let case = format!("{isa} {mode:?} c {c} w {w} ceil {ceil}");
                            for (i, ((&a, &b), &r)) in got.iter().zip(&rows).zip(&want).enumerate() {
                                assert!(
                                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                                    "{case} at {i}: {a} vs {b}"
                                );
                                let close = (a - r).abs() <= 1e-5 * r.abs().max(1.0);
                                assert!(
                                    a == r || (a.is_nan() && r.is_nan()) || close,
                                    "{case} at {i}: {a} vs reference {r}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
