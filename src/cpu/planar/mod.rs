//! The planar kernel, for few channels in and out (grayscale and RGB
//! filtering): a zero-padded planar copy of the rows a piece reads
//! (`copies`), split into stride phases so every tap reads a contiguous
//! run, then vectorised multiply-adds with the accumulators in registers
//! (`kernel`). Grayscale images are read in place instead, only their
//! padding rows copied, and the lanes whose taps reach the left or right
//! padding masked to zero.
//!
//! Written once over the SIMD layer (AVX-512, AVX2 + FMA, portable); the
//! copies use AVX2 helpers wherever the kernel has vectors.

mod copies;
mod kernel;
mod layout;

use std::mem::MaybeUninit;

use self::copies::{fill_planes, padded_rows_in_place};
use self::kernel::{BlockWeights, ColumnMasks, Grid, Run, LANES};
use self::layout::{in_place_reach, Planes};
use super::pieces::{finish, for_each_piece_uninit, piece_rows, Piece, SCRATCH, TILE_FLOATS};
use super::simd::{dispatch, Avx2, Isa, Simd, WithSimd};
use crate::epilogue::Epilogue;
use crate::shape::Conv2dGeometry;

/// The planar kernel with the vectors of `isa`.
pub(crate) fn conv(isa: Isa, x: &[f32], k: &[f32], o: &mut [MaybeUninit<f32>], g: &Conv2dGeometry, ep: &Epilogue) {
    let row_elems = g.ow * g.nc;
    let per_row = g.c * g.sh * (g.ow * g.sw + g.kw * g.dw);
    let rows = piece_rows(g.oh, per_row, g.m, TILE_FLOATS);
    // Bands in multiples of the 4-row register blocks where possible.
    let rows = if (4..g.oh).contains(&rows) { rows / 4 * 4 } else { rows };
    // The lanes of rows read in place that reach the padding are masked
    // (the same masks for every piece).
    let whole = Planes::new(g, 1);
    let masks = (g.c == 1 && whole.phases == 1).then(|| ColumnMasks::new(g, whole.computed(g)));
    // The copies' AVX2 helpers, wherever the kernel has vectors.
    #[cfg(target_arch = "x86_64")]
    let avx2 = if isa >= Isa::Avx2 { Avx2::new() } else { None };
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = None;
    // Every output of a piece is stored by `Run::block` (every row, column
    // block and channel block), so the piece is not zeroed first.
    for_each_piece_uninit(o, g.m, g.oh, row_elems, rows, |p, dst| {
        let layout = Planes::new(g, p.oy1 - p.oy0);
        SCRATCH.with_borrow_mut(|planes| {
            let piece = PlanarPiece {
                avx2,
                x,
                k,
                g,
                layout: &layout,
                masks: masks.as_ref(),
                p,
                planes,
                dst: &mut *dst,
            };
            dispatch(isa, piece);
        });
        // SAFETY: `Run::block` stores every output of the piece.
        unsafe { finish(dst, ep, g.nc) };
    });
}

/// One piece, run with the vectors of `S`.
struct PlanarPiece<'a> {
    avx2: Option<Avx2>,
    x: &'a [f32],
    k: &'a [f32],
    g: &'a Conv2dGeometry,
    layout: &'a Planes,
    masks: Option<&'a ColumnMasks>,
    p: Piece,
    planes: &'a mut Vec<f32>,
    dst: &'a mut [MaybeUninit<f32>],
}

impl WithSimd for PlanarPiece<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // Column blocks of LANES floats as one or two vectors (a match on
        // the constant, so only the one `S` needs is compiled).
        match S::LANES {
            16 => piece::<S, 1>(s, self),
            _ => piece::<S, 2>(s, self),
        }
    }
}

/// One piece of the planar kernel (see [`Run`] for the register blocks).
/// The last column block reads past the row (into the next row or the slack
/// at the end); its extra values are dropped.
#[inline(always)]
fn piece<S: Simd, const CV: usize>(simd: S, work: PlanarPiece) {
    let PlanarPiece {
        avx2,
        x,
        k,
        g,
        layout,
        masks,
        p,
        planes,
        dst,
    } = work;
    let band = p.oy1 - p.oy0;
    let row_elems = g.ow * g.nc;
    let plane_len = layout.len(g);
    // Tap offsets relative to an output row's first input, in HWIO order
    // (so tap t has weights k[t * nc..]): into the planes, and into the
    // image itself for rows read in place.
    let mut offs = Vec::with_capacity(g.kh * g.kw * g.c);
    let mut offs_in_place = Vec::with_capacity(g.kh * g.kw);
    for i in 0..g.kh {
        for j in 0..g.kw {
            let (q, phase) = ((j * g.dw) / layout.phases, (j * g.dw) % layout.phases);
            for ch in 0..g.c {
                offs.push(layout.plane(ch, phase) + i * g.dh * layout.width + q);
            }
            offs_in_place.push(i * g.dh * g.w + j * g.dw);
        }
    }
    // With one channel and no phase split the planes would be a copy of the
    // image rows, so the rows whose taps stay inside the image vertically
    // are read in place. There the lanes whose taps reach the left or right
    // padding would read the neighbouring row's pixels: they are masked
    // (`ColumnMasks`).
    let in_place = g.c == 1 && layout.phases == 1;
    let (top, first) = (g.pads.top, g.pads.top.div_ceil(g.sh));
    let last = (g.h + top).checked_sub(g.extent().0).map_or(0, |v| v / g.sh + 1);
    let (a, b) = (first.clamp(p.oy0, p.oy1), last.clamp(p.oy0, p.oy1));
    let reach = in_place_reach(g, layout, b.saturating_sub(a));
    let spans = layout.spans(g);
    let weights = BlockWeights::new(k, offs.len(), g.nc);
    let (grid_in_place, grid) = (
        Grid::of(&offs_in_place, g.sh * g.w, g),
        Grid::of(&offs, g.sh * layout.width, g),
    );
    let mut cleared = false;
    let image = g.h * g.w * g.c;
    for (i, n) in (p.n0..p.n1).enumerate() {
        let out = &mut dst[i * band * row_elems..(i + 1) * band * row_elems];
        let next = if n + 1 < p.n1 {
            &x[(n + 1) * image..(n + 2) * image]
        } else {
            &[]
        };
        // The image offset of output row a's first padded input, where rows
        // a..b are read in place: none before the input or past its end.
        let base = (in_place && a < b)
            .then(|| ((n * g.h + a * g.sh - top) * g.w).checked_sub(g.pads.left))
            .flatten()
            .filter(|&s| s + reach <= x.len());
        let direct = if base.is_some() { (a, b) } else { (p.oy0, p.oy0) };
        // Top to bottom: padding rows above, rows in place, padding rows
        // below (reading the image in order keeps the prefetcher ahead; the
        // bottom rows first made their copy take the cache misses).
        for part in 0..3 {
            let (s, e) = [(p.oy0, direct.0), direct, (direct.1, p.oy1)][part];
            if s == e {
                continue;
            }
            let rows = &mut out[(s - p.oy0) * row_elems..(e - p.oy0) * row_elems];
            if part == 1 {
                let base = base.expect("rows read in place have a base");
                // (Not prefetching the next image: rows read in place stream
                // through the hardware prefetcher, and software prefetches
                // on top only compete with it.)
                let run = Run::new(&offs_in_place, grid_in_place, &x[base..], g.sh * g.w, g, layout, masks);
                run.all_rows::<S, CV>(simd, &weights, e - s, rows);
                continue;
            }
            if in_place {
                // Rows that reach the top or bottom padding: their input rows
                // (zero rows for the padding) copied in the image's own
                // layout, and summed by the in-place kernel with its column
                // masks. The planes would hold the same values with the
                // padding columns spelled out, but go through another copy
                // and a slower run for the few rows of a small image's band.
                let virtual_rows = padded_rows_in_place(x, g, n, s, e, layout, planes);
                let run = Run::new(
                    &offs_in_place,
                    grid_in_place,
                    virtual_rows,
                    g.sh * g.w,
                    g,
                    layout,
                    masks,
                );
                run.all_rows::<S, CV>(simd, &weights, e - s, rows);
                // (The planes' zero padding is gone.)
                cleared = false;
                continue;
            }
            if !cleared {
                planes.clear();
                planes.resize(plane_len + LANES, 0.0);
                cleared = true;
            }
            fill_planes(avx2, x, g, layout, &spans, n, s..e, planes);
            let mut run = Run::new(&offs, grid, planes, g.sh * layout.width, g, layout, None);
            // The run of the whole image prefetches the next.
            if (s, e) == (p.oy0, p.oy1) {
                run = run.prefetching(next);
            }
            run.all_rows::<S, CV>(simd, &weights, e - s, rows);
        }
    }
}
