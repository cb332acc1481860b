//! The planar kernel, for few channels in and out (grayscale and RGB
//! filtering): a zero-padded planar copy of the rows a piece reads
//! (`copies`), split into stride phases so every tap reads a contiguous
//! run, then vectorised multiply-adds with the accumulators in registers
//! (`kernel`). Grayscale images are read in place instead, only their
//! padding rows copied, and the lanes whose taps reach the left or right
//! padding masked to zero.
//!
//! Its vectorised build is AVX2 + FMA (on AVX-512 machines too); the
//! portable build runs elsewhere and in the tests.

mod copies;
mod kernel;

use std::mem::MaybeUninit;

use self::copies::{fill_planes, padded_rows_in_place};
use self::kernel::{BlockWeights, ColumnMasks, Grid, Run, LANES};
use super::pieces::{for_each_piece_uninit, piece_rows, Piece, SCRATCH, TILE_FLOATS};
#[cfg(target_arch = "x86_64")]
use super::simd::Avx2;
use crate::shape::Conv2dGeometry;

#[cfg(not(target_arch = "x86_64"))]
type Avx2 = std::convert::Infallible;

/// Layout of the zero-padded planar rows of the direct kernel:
/// `planes[ch][phase][row][q]` holds padded column `q * phases + phase`.
///
/// A grayscale convolution with column stride 2 is not phase-split: it is
/// computed at every column (`step` = 2 computed columns per output) and
/// every other sum is kept. The extra multiply-adds cost less than splitting
/// small rows into phases, which made such convolutions copy-bound.
pub(super) struct Planes {
    pub(super) rows: usize,
    pub(super) width: usize,
    /// Stride phases the columns are split into (`sw`, or 1 with `step`).
    pub(super) phases: usize,
    /// Computed columns per output column (1, or `sw` = 2 when not split).
    pub(super) step: usize,
}

impl Planes {
    pub(super) fn new(g: &Conv2dGeometry, band: usize) -> Self {
        let step = if g.c == 1 && g.sw == 2 && g.nc <= 4 { g.sw } else { 1 };
        let phases = g.sw / step;
        Planes {
            rows: (band - 1) * g.sh + g.extent().0,
            width: (g.span_cols() - 1) / phases + 1,
            phases,
            step,
        }
    }

    pub(super) fn plane(&self, ch: usize, phase: usize) -> usize {
        (ch * self.phases + phase) * self.rows * self.width
    }

    pub(super) fn len(&self, g: &Conv2dGeometry) -> usize {
        g.c * self.phases * self.rows * self.width
    }

    /// Columns computed per output row: every column an output reads at its
    /// first tap, `step` apart per output.
    pub(super) fn computed(&self, g: &Conv2dGeometry) -> usize {
        (g.ow - 1) * self.step + 1
    }

    /// Per phase, the plane columns `q0..q1` that hold image columns from
    /// `x0` on (the same for every row), as `(phase, q0, q1, x0)`.
    pub(super) fn spans(&self, g: &Conv2dGeometry) -> Vec<(usize, usize, usize, usize)> {
        let (ph, left) = (self.phases, g.pads.left);
        // Padded columns u = q * phases + phase in [left, left + cols) are
        // image columns.
        let cols = (left + g.w).min(self.width * ph).saturating_sub(left);
        (0..ph)
            .filter_map(|phase| {
                let q0 = left.saturating_sub(phase).div_ceil(ph);
                let q1 = (left + cols).saturating_sub(phase).div_ceil(ph).min(self.width);
                (q0 < q1).then(|| (phase, q0, q1, q0 * ph + phase - left))
            })
            .collect()
    }
}

/// The planar kernel: the AVX2/FMA build with a token, the portable build
/// without (the tests run both on machines with AVX2).
pub(crate) fn conv(x: &[f32], k: &[f32], o: &mut [MaybeUninit<f32>], g: &Conv2dGeometry, avx2: Option<Avx2>) {
    let row_elems = g.ow * g.nc;
    let per_row = g.c * g.sh * (g.ow * g.sw + g.kw * g.dw);
    let rows = piece_rows(g.oh, per_row, g.m, TILE_FLOATS);
    // Bands in multiples of the 4-row register blocks where possible.
    let rows = if (4..g.oh).contains(&rows) { rows / 4 * 4 } else { rows };
    // The FMA build masks the lanes of rows read in place that reach the
    // padding (the same for every piece); the other recomputes those columns
    // (`border_columns`).
    let whole = Planes::new(g, 1);
    let masks = (avx2.is_some() && g.c == 1 && whole.phases == 1).then(|| ColumnMasks::new(g, whole.computed(g)));
    // Every output of a piece is stored by `Run::block` (every row, column
    // block and channel block), so the piece is not zeroed first.
    for_each_piece_uninit(o, g.m, g.oh, row_elems, rows, |p, dst| {
        let layout = Planes::new(g, p.oy1 - p.oy0);
        SCRATCH.with_borrow_mut(|planes| {
            #[cfg(target_arch = "x86_64")]
            if let Some(t) = avx2 {
                direct_piece_avx2(t, x, k, g, &layout, masks.as_ref(), p, planes, dst);
                return;
            }
            direct_piece::<false>(None, x, k, g, &layout, None, p, planes, dst);
        })
    });
}

/// The FMA build of [`direct_piece`]. Everything hot must be inlined into it
/// without closures: a closure is compiled for the baseline target and would
/// turn every `mul_add` into a library call.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn direct_piece_avx2(
    t: Avx2,
    x: &[f32],
    k: &[f32],
    g: &Conv2dGeometry,
    layout: &Planes,
    masks: Option<&ColumnMasks>,
    p: Piece,
    planes: &mut Vec<f32>,
    dst: &mut [MaybeUninit<f32>],
) {
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn build(
        t: Avx2,
        x: &[f32],
        k: &[f32],
        g: &Conv2dGeometry,
        layout: &Planes,
        masks: Option<&ColumnMasks>,
        p: Piece,
        planes: &mut Vec<f32>,
        dst: &mut [MaybeUninit<f32>],
    ) {
        direct_piece::<true>(Some(t), x, k, g, layout, masks, p, planes, dst)
    }
    // SAFETY: the token proves AVX2 and FMA were detected.
    unsafe { build(t, x, k, g, layout, masks, p, planes, dst) }
}

/// One piece of the direct kernel. Output rows are computed LANES columns at
/// a time for RB rows and KB output channels together: RB * KB * 2
/// independent 8-wide accumulators hide the FMA latency, and each loaded
/// input vector feeds KB multiply-adds. The last column block reads past the
/// row (into the next row or the slack at the end); its extra values are
/// dropped.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn direct_piece<const FMA: bool>(
    avx2: Option<Avx2>,
    x: &[f32],
    k: &[f32],
    g: &Conv2dGeometry,
    layout: &Planes,
    masks: Option<&ColumnMasks>,
    p: Piece,
    planes: &mut Vec<f32>,
    dst: &mut [MaybeUninit<f32>],
) {
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
    // padding would read the neighbouring row's pixels: the FMA build masks
    // them (`ColumnMasks`), the portable one recomputes those output
    // columns (`border_columns`).
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
                // through the hardware prefetcher; software prefetches on
                // top measured 5-10 % slower.)
                let run = Run::new(&offs_in_place, grid_in_place, &x[base..], g.sh * g.w, g, layout, masks);
                run.all_rows::<FMA>(&weights, e - s, rows);
                if masks.is_none() {
                    border_columns(x, k, g, n, s, e, rows);
                }
                continue;
            }
            if in_place && masks.is_some() {
                // Rows that reach the top or bottom padding: their input rows
                // (zero rows for the padding) copied in the image's own
                // layout, and summed by the in-place kernel with its column
                // masks. The planes would hold the same values with the
                // padding columns spelled out, but go through another copy
                // and a slower run for the few rows of a small image's band
                // (a 28x28 image's one padded row took a third of its time).
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
                run.all_rows::<FMA>(&weights, e - s, rows);
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
            run.all_rows::<FMA>(&weights, e - s, rows);
        }
    }
}

/// How far past the first padded input of its first row the reads of
/// `rows` output rows read in place reach (at least one row; the last
/// column block reads up to LANES - 1 columns past the row).
pub(super) fn in_place_reach(g: &Conv2dGeometry, layout: &Planes, rows: usize) -> usize {
    let (ekh, ekw) = g.extent();
    (rows.saturating_sub(1) * g.sh + ekh - 1) * g.w + ekw - 1 + layout.computed(g).next_multiple_of(LANES)
}

/// Recomputes, for output rows `a..b` of image `n` (held in `rows`), the
/// output columns whose taps reach the left or right padding, tap by tap in
/// HWIO order as the kernel without FMA sums them (so the sums are bit for
/// bit those of the planes path).
fn border_columns(
    x: &[f32],
    k: &[f32],
    g: &Conv2dGeometry,
    n: usize,
    a: usize,
    b: usize,
    rows: &mut [MaybeUninit<f32>],
) {
    let left_end = g.pads.left.div_ceil(g.sw).min(g.ow);
    let right_start = (g.w + g.pads.left)
        .checked_sub(g.extent().1)
        .map_or(0, |v| v / g.sw + 1)
        .clamp(left_end, g.ow);
    let image = &x[n * g.h * g.w..(n + 1) * g.h * g.w];
    let row_elems = g.ow * g.nc;
    for oy in a..b {
        for ox in (0..left_end).chain(right_start..g.ow) {
            for kc in 0..g.nc {
                let mut acc = 0f32;
                for i in 0..g.kh {
                    // Rows a..b read inside the image (see `direct_piece`).
                    let y = oy * g.sh + i * g.dh - g.pads.top;
                    for j in 0..g.kw {
                        let xx = (ox * g.sw + j * g.dw).checked_sub(g.pads.left).filter(|&xx| xx < g.w);
                        let v = xx.map_or(0.0, |xx| image[y * g.w + xx]);
                        acc += v * k[(i * g.kw + j) * g.nc + kc];
                    }
                }
                rows[(oy - a) * row_elems + ox * g.nc + kc].write(acc);
            }
        }
    }
}
