//! The fast CPU path, checked against [`super::reference`] by the golden and
//! property tests.
//!
//! Four convolution strategies, chosen by shape (see `Strategy::choose`):
//! - pointwise (1x1, stride 1, no padding): NHWC images already are the
//!   `(pixels x c)` matrix, so the convolution is one GEMM with no copies;
//! - planar (few channels in and out, as in grayscale and RGB filtering):
//!   a zero-padded planar copy of the rows a piece reads, split into stride
//!   phases so every tap reads a contiguous run, then vectorised
//!   multiply-adds with the accumulators in registers; grayscale images are
//!   read in place instead, only their padding rows copied, and the lanes
//!   whose taps reach the left or right padding masked to zero;
//! - NHWC direct (8+ output channels, AVX2/FMA): `super::nhwc`;
//! - Winograd F(2x2, 3x3) for 3x3 stride-1 layers with many channels
//!   (`super::winograd`): 2.25x fewer multiply-adds, on the NHWC kernel's
//!   register blocks, for finite values (others take the NHWC kernel);
//! - im2col + GEMM otherwise (no AVX2/FMA, or a span that is mostly
//!   padding), on bounded tiles of output rows (never the whole batch),
//!   through the `gemm` crate.
//!
//! Work is split into pieces (several whole images, or a band of output rows
//! of one image) run with rayon; each piece writes a contiguous slice of the
//! NHWC output. Padded cells take part as zeros, products included, as in the
//! reference.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use crate::shape::{Conv2dGeometry, Pool2dGeometry, PoolMode};

thread_local! {
    /// Per-thread workspace (planes or im2col tiles), reused across pieces.
    pub(super) static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats of workspace one piece of the direct kernel or pooling aims for.
const TILE_FLOATS: usize = 1 << 16;

/// Floats of im2col workspace per piece: large enough that the GEMM sees a
/// tall matrix (its packing cost is per call), small enough for the L2 cache.
const IM2COL_FLOATS: usize = 1 << 18;

/// Accumulators per step of the direct kernel: two 8-wide registers.
const LANES: usize = 16;

/// A piece of work: images `n0..n1`, output rows `oy0..oy1` of each (whole
/// images when several are grouped, a band of rows of one image otherwise).
#[derive(Debug, Clone, Copy)]
pub(super) struct Piece {
    pub(super) n0: usize,
    pub(super) n1: usize,
    pub(super) oy0: usize,
    pub(super) oy1: usize,
}

/// Runs `f(piece, out)` over pieces in parallel; `out` is the piece's
/// contiguous slice of the NHWC output. A piece holds at most `rows` output
/// rows; `rows >= oh` groups whole images.
pub(super) fn for_each_piece(
    out: &mut [MaybeUninit<f32>],
    m: usize,
    oh: usize,
    row_elems: usize,
    rows: usize,
    f: impl Fn(Piece, &mut [f32]) + Sync,
) {
    for_each_piece_uninit(out, m, oh, row_elems, rows, |p, dst| f(p, super::zero_fill(dst)))
}

/// [`for_each_piece`] for a kernel that writes every element of its piece
/// itself (so zeroing it first would be a wasted pass): `out`'s pieces are
/// handed over uninitialised.
pub(super) fn for_each_piece_uninit(
    out: &mut [MaybeUninit<f32>],
    m: usize,
    oh: usize,
    row_elems: usize,
    rows: usize,
    f: impl Fn(Piece, &mut [MaybeUninit<f32>]) + Sync,
) {
    let per_image = oh * row_elems;
    if per_image == 0 || m == 0 {
        return;
    }
    if rows >= oh {
        // As many whole images per piece as fit the tile, while leaving
        // enough pieces to balance the cores.
        let threads = rayon::current_num_threads();
        let group = (rows / oh).clamp(1, m.div_ceil(8 * threads).max(1));
        out.par_chunks_mut(group * per_image)
            .enumerate()
            .for_each(|(b, chunk)| {
                let n0 = b * group;
                let piece = Piece {
                    n0,
                    n1: n0 + chunk.len() / per_image,
                    oy0: 0,
                    oy1: oh,
                };
                f(piece, chunk)
            });
    } else {
        out.par_chunks_mut(per_image).enumerate().for_each(|(n, image_out)| {
            image_out
                .par_chunks_mut(rows * row_elems)
                .enumerate()
                .for_each(|(b, band)| {
                    let oy0 = b * rows;
                    let piece = Piece {
                        n0: n,
                        n1: n + 1,
                        oy0,
                        oy1: oy0 + band.len() / row_elems,
                    };
                    f(piece, band)
                });
        });
    }
}

/// Output rows per piece so that `per_row` floats of workspace per output
/// row stay near `tile`; with few images, bands split each image so every
/// core gets work. May exceed `oh`: whole images are then grouped.
pub(super) fn piece_rows(oh: usize, per_row: usize, m: usize, tile: usize) -> usize {
    let by_size = (tile / per_row.max(1)).max(1);
    let threads = rayon::current_num_threads();
    if m >= 4 * threads {
        return by_size;
    }
    let by_parallelism = oh.div_ceil((4 * threads).div_ceil(m.max(1))).max(1);
    by_size.min(by_parallelism)
}

/// How a convolution is computed. Measured on an AVX2 machine (benchmark
/// workloads, side by side): with one output channel the planar kernel is
/// 3x-6x faster than the NHWC one (it vectorises along columns, so a
/// single output channel still fills every lane); with 16 (seed_multi, RGB
/// to 16) and 64 (cnn_conv3x3, cnn_stem) the NHWC kernel, vectorised along
/// output channels, is 1.1x-1.3x faster than planar and im2col + GEMM.
/// Pointwise layers are one GEMM, where the `gemm` crate stays ahead. 3x3
/// stride-1 layers with 16+ channels in and out (cnn_conv3x3) take
/// Winograd: 1.4x-1.5x faster than the NHWC kernel side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Pointwise,
    Planar,
    Nhwc,
    /// Winograd F(2x2, 3x3) on the NHWC kernel's blocks (`super::winograd`),
    /// where the values allow it; the NHWC kernel otherwise.
    Winograd,
    Im2col,
}

impl Strategy {
    fn choose(g: &Conv2dGeometry, fma: bool) -> Self {
        // The direct kernels copy the padded span of a band of outputs (the
        // planar one split into `sw` stride phases, so the strides count too).
        let compact = super::span_is_compact(g.h, g.w, g.kh, g.kw, g.extent().0, g.span_cols())
            && g.sw <= g.w + g.kw
            && g.sh <= g.h + g.kh;
        if g.is_pointwise() {
            Strategy::Pointwise
        } else if !compact {
            Strategy::Im2col
        } else if g.c <= 4 && g.nc < 8 {
            Strategy::Planar
        } else if fma && cfg!(target_arch = "x86_64") && g.nc >= 8 {
            #[cfg(target_arch = "x86_64")]
            if super::winograd::fits(g) {
                return Strategy::Winograd;
            }
            // Below 8 output channels most of its 16 lanes (and of its
            // repacked weights) would be padding.
            Strategy::Nhwc
        } else if g.c <= 4 && g.nc <= 16 {
            Strategy::Planar
        } else {
            Strategy::Im2col
        }
    }
}

/// Convolution; `g` must come from [`crate::Conv2dSpec::resolve`].
pub fn conv2d(images: ArrayView4<f32>, kernels: ArrayView4<f32>, g: &Conv2dGeometry) -> Array4<f32> {
    conv2d_with(Strategy::choose(g, has_fma()), images, kernels, g)
}

/// [`conv2d`] with the strategy given (the tests run every one of them).
fn conv2d_with(
    strategy: Strategy,
    images: ArrayView4<f32>,
    kernels: ArrayView4<f32>,
    g: &Conv2dGeometry,
) -> Array4<f32> {
    let images = images.as_standard_layout();
    let kernels = kernels.as_standard_layout();
    let x = images.as_slice().expect("standard layout");
    let k = kernels.as_slice().expect("standard layout");
    let mut out = super::output_uninit(g.output_shape(), x.as_ptr());
    let o = out.as_slice_mut().expect("fresh array is contiguous");
    match strategy {
        Strategy::Pointwise => conv_pointwise(x, k, o, g),
        Strategy::Planar => conv_direct(x, k, o, g, has_fma()),
        #[cfg(target_arch = "x86_64")]
        Strategy::Nhwc => {
            assert!(has_fma(), "the NHWC kernel needs AVX2 and FMA");
            // SAFETY: AVX2 and FMA were seen at run time just above.
            unsafe { super::nhwc::conv(x, k, o, g) }
        }
        #[cfg(target_arch = "x86_64")]
        Strategy::Winograd => {
            assert!(has_fma(), "the Winograd kernel needs AVX2 and FMA");
            if super::winograd::usable(x, k, g) {
                // SAFETY: AVX2 and FMA were seen at run time just above.
                unsafe { super::winograd::conv(x, k, o, g) }
            } else {
                // SAFETY: as above.
                unsafe { super::nhwc::conv(x, k, o, g) }
            }
        }
        _ => conv_im2col(x, k, o, g),
    }
    // SAFETY: every element is written: the planar, NHWC and Winograd
    // kernels store every output of their pieces themselves, and the GEMMs
    // of the pointwise and im2col paths write every element of theirs
    // (`sgemm` with `read_dst` false).
    unsafe { out.assume_init() }
}

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

fn conv_pointwise(x: &[f32], k: &[f32], o: &mut [MaybeUninit<f32>], g: &Conv2dGeometry) {
    let rows = (TILE_FLOATS / g.c.max(g.nc)).max(64);
    o.par_chunks_mut(rows * g.nc).enumerate().for_each(|(b, dst)| {
        let p0 = b * rows;
        let p = dst.len() / g.nc;
        sgemm(p, g.nc, g.c, dst, &x[p0 * g.c..(p0 + p) * g.c], k);
    });
}

fn conv_im2col(x: &[f32], k: &[f32], o: &mut [MaybeUninit<f32>], g: &Conv2dGeometry) {
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
        })
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

/// Layout of the zero-padded planar rows of the direct kernel:
/// `planes[ch][phase][row][q]` holds padded column `q * phases + phase`.
///
/// A grayscale convolution with column stride 2 is not phase-split: it is
/// computed at every column (`step` = 2 computed columns per output) and
/// every other sum is kept. The extra multiply-adds cost less than splitting
/// small rows into phases, which made such convolutions copy-bound.
struct Planes {
    rows: usize,
    width: usize,
    /// Stride phases the columns are split into (`sw`, or 1 with `step`).
    phases: usize,
    /// Computed columns per output column (1, or `sw` = 2 when not split).
    step: usize,
}

impl Planes {
    fn new(g: &Conv2dGeometry, band: usize) -> Self {
        let step = if g.c == 1 && g.sw == 2 && g.nc <= 4 { g.sw } else { 1 };
        let phases = g.sw / step;
        Planes {
            rows: (band - 1) * g.sh + g.extent().0,
            width: (g.span_cols() - 1) / phases + 1,
            phases,
            step,
        }
    }

    fn plane(&self, ch: usize, phase: usize) -> usize {
        (ch * self.phases + phase) * self.rows * self.width
    }

    fn len(&self, g: &Conv2dGeometry) -> usize {
        g.c * self.phases * self.rows * self.width
    }

    /// Columns computed per output row: every column an output reads at its
    /// first tap, `step` apart per output.
    fn computed(&self, g: &Conv2dGeometry) -> usize {
        (g.ow - 1) * self.step + 1
    }

    /// Per phase, the plane columns `q0..q1` that hold image columns from
    /// `x0` on (the same for every row), as `(phase, q0, q1, x0)`.
    fn spans(&self, g: &Conv2dGeometry) -> Vec<(usize, usize, usize, usize)> {
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

/// The planar kernel; `fma` picks the AVX2/FMA build (true only where
/// [`has_fma`] is: the tests also run the portable build on such machines).
fn conv_direct(x: &[f32], k: &[f32], o: &mut [MaybeUninit<f32>], g: &Conv2dGeometry, fma: bool) {
    let row_elems = g.ow * g.nc;
    let per_row = g.c * g.sh * (g.ow * g.sw + g.kw * g.dw);
    let rows = piece_rows(g.oh, per_row, g.m, TILE_FLOATS);
    // Bands in multiples of the 4-row register blocks where possible.
    let rows = if (4..g.oh).contains(&rows) { rows / 4 * 4 } else { rows };
    // The FMA build masks the lanes of rows read in place that reach the
    // padding (the same for every piece); the other recomputes those columns
    // (`border_columns`).
    let whole = Planes::new(g, 1);
    let masks = (fma && g.c == 1 && whole.phases == 1).then(|| ColumnMasks::new(g, whole.computed(g)));
    // Every output of a piece is stored by `Run::block` (every row, column
    // block and channel block), so the piece is not zeroed first.
    for_each_piece_uninit(o, g.m, g.oh, row_elems, rows, |p, dst| {
        let layout = Planes::new(g, p.oy1 - p.oy0);
        SCRATCH.with_borrow_mut(|planes| {
            #[cfg(target_arch = "x86_64")]
            if fma {
                // SAFETY: `fma` is true only when `has_fma` saw AVX2 and FMA at run time.
                unsafe { direct_piece_avx2(x, k, g, &layout, masks.as_ref(), p, planes, dst) };
                return;
            }
            let _ = fma;
            direct_piece::<false>(x, k, g, &layout, None, p, planes, dst);
        })
    });
}

/// The FMA build of [`direct_piece`]. Everything hot must be inlined into it
/// without closures: a closure is compiled for the baseline target and would
/// turn every `mul_add` into a library call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn direct_piece_avx2(
    x: &[f32],
    k: &[f32],
    g: &Conv2dGeometry,
    layout: &Planes,
    masks: Option<&ColumnMasks>,
    p: Piece,
    planes: &mut Vec<f32>,
    dst: &mut [MaybeUninit<f32>],
) {
    direct_piece::<true>(x, k, g, layout, masks, p, planes, dst)
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
            fill_planes(x, g, layout, &spans, n, s..e, planes);
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
fn in_place_reach(g: &Conv2dGeometry, layout: &Planes, rows: usize) -> usize {
    let (ekh, ekw) = g.extent();
    (rows.saturating_sub(1) * g.sh + ekh - 1) * g.w + ekw - 1 + layout.computed(g).next_multiple_of(LANES)
}

/// The input rows that output rows `s..e` of image `n` read (one channel,
/// no phase split), rows outside the image as zeros, laid out as the image
/// is (row stride `w`, no padding columns) in `buf`, which is returned from
/// output row `s`'s first padded input on: what a run in place reads at
/// `x[base..]`, with room for the last column block's reads past the row.
fn padded_rows_in_place<'b>(
    x: &[f32],
    g: &Conv2dGeometry,
    n: usize,
    s: usize,
    e: usize,
    layout: &Planes,
    buf: &'b mut Vec<f32>,
) -> &'b [f32] {
    let rows_in = (e - s - 1) * g.sh + g.extent().0;
    let reach = in_place_reach(g, layout, e - s);
    let left = g.pads.left;
    buf.clear();
    buf.resize((left + rows_in * g.w).max(reach + 1), 0.0);
    let image = &x[n * g.h * g.w..(n + 1) * g.h * g.w];
    for r in 0..rows_in {
        if let Some(y) = (s * g.sh + r).checked_sub(g.pads.top).filter(|&y| y < g.h) {
            buf[left + r * g.w..left + (r + 1) * g.w].copy_from_slice(&image[y * g.w..(y + 1) * g.w]);
        }
    }
    buf
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

/// The weights of each tap for the output channels of one register block:
/// channels in blocks of 4 (one row at a time), then 2 (two rows), then 1
/// (four rows). Gathered once per piece, not once per image.
struct BlockWeights {
    fours: Vec<Vec<[f32; 4]>>,
    two: Option<Vec<[f32; 2]>>,
    one: Option<Vec<[f32; 1]>>,
}

impl BlockWeights {
    fn new(k: &[f32], taps: usize, nc: usize) -> Self {
        fn gather<const KB: usize>(k: &[f32], taps: usize, nc: usize, kc: usize) -> Vec<[f32; KB]> {
            (0..taps).map(|t| std::array::from_fn(|b| k[t * nc + kc + b])).collect()
        }
        let two_at = nc / 4 * 4;
        BlockWeights {
            fours: (0..nc / 4).map(|b| gather::<4>(k, taps, nc, 4 * b)).collect(),
            two: (nc % 4 >= 2).then(|| gather::<2>(k, taps, nc, two_at)),
            one: (nc % 2 == 1).then(|| gather::<1>(k, taps, nc, nc - 1)),
        }
    }
}

/// Channels `kc..kc + KB` of every row of a band, RB rows at a time (the
/// leftover rows two at a time, then a last one alone).
#[inline(always)]
fn rows_block<const RB: usize, const KB: usize, const FMA: bool>(
    run: &Run,
    w: &[[f32; KB]],
    kc: usize,
    band: usize,
    out: &mut [MaybeUninit<f32>],
) {
    let full = band / RB * RB;
    // The next image is prefetched once, with the first block of channels.
    let prefetch = |r: usize, rows: usize| {
        if kc == 0 {
            run.prefetch_share(r, rows, band);
        }
    };
    for r in (0..full).step_by(RB) {
        prefetch(r, RB);
        run.block::<RB, KB, FMA>(w, r, kc, out);
    }
    // The leftover rows two at a time: one row alone has too few
    // accumulators to hide the FMA latency (a profile of image_blur showed
    // the single-row loop taking a fifth of the kernel's time).
    let mut r = full;
    while r + 2 <= band {
        prefetch(r, 2);
        run.block::<2, KB, FMA>(w, r, kc, out);
        r += 2;
    }
    if r < band {
        prefetch(r, 1);
        run.block::<1, KB, FMA>(w, r, kc, out);
    }
}

/// Taps of one output channel on a full `k x k` grid of neighbouring
/// inputs: tap `(i, j, ch)` reads `offs[0] + ch * plane + i * row + j`, and
/// output rows are `sh` input rows apart. [`Run::grid_rows_avx2`] loads each
/// input vector once for every output row of a block that reads it.
#[derive(Clone, Copy)]
struct Grid {
    /// Taps per side (the grids are square).
    k: usize,
    sh: usize,
    c: usize,
    /// Floats between input rows.
    row: usize,
    /// Floats between channel planes.
    plane: usize,
}

impl Grid {
    /// The grid of `offs` (in HWIO order), when it is one of the shapes with
    /// a compiled kernel: one output channel, 5x5 taps at row stride 1 or 2,
    /// 3x3 at row stride 1 (at stride 2 a 3x3 block of rows shares too few
    /// inputs: it measured slower than the tap-by-tap kernel).
    fn of(offs: &[usize], row_stride: usize, g: &Conv2dGeometry) -> Option<Self> {
        let (kh, kw, c) = (g.kh, g.kw, g.c);
        if g.nc != 1 || !matches!((kh, kw, g.sh), (3, 3, 1) | (5, 5, 1 | 2)) || offs.len() != kh * kw * c {
            return None;
        }
        let at = |i: usize, j: usize, ch: usize| offs[(i * kw + j) * c + ch];
        let row = at(1, 0, 0).checked_sub(offs[0])?;
        let plane = if c > 1 { at(0, 0, 1).checked_sub(offs[0])? } else { 0 };
        let grid = Grid {
            k: kh,
            sh: g.sh,
            c,
            row,
            plane,
        };
        let fits =
            (0..kh).all(|i| (0..kw).all(|j| (0..c).all(|ch| at(i, j, ch) == offs[0] + ch * plane + i * row + j)));
        (fits && row_stride == g.sh * row).then_some(grid)
    }
}

/// Lane masks for output rows read in place (the FMA build): lane `l` of
/// the column block at `x`, kernel column `j`, is all ones where computed
/// column `x + l` reads an image column at that kernel column, zero where
/// it would read the left or right padding (which, in place, is the
/// neighbouring row's pixels). The masked vectors sum zeros there, in the
/// kernels' own order, as the padded planes would.
struct ColumnMasks {
    kw: usize,
    /// Per column block, where its `kw` masks start in `masks`: only blocks
    /// with a lane that reads padding have any.
    blocks: Vec<Option<usize>>,
    masks: Vec<[u32; LANES]>,
}

impl ColumnMasks {
    fn new(g: &Conv2dGeometry, computed: usize) -> Self {
        let (mut blocks, mut masks) = (Vec::new(), Vec::new());
        let inside = g.pads.left..g.pads.left + g.w;
        for x in (0..computed).step_by(LANES) {
            // Lanes past the row's last computed column are never stored.
            let reach = x + LANES.min(computed - x) - 1 + (g.kw - 1) * g.dw;
            if inside.contains(&x) && inside.contains(&reach) {
                blocks.push(None);
                continue;
            }
            let block: Vec<[u32; LANES]> = (0..g.kw)
                .map(|j| {
                    std::array::from_fn(|l| {
                        let keep = x + l >= computed || inside.contains(&(x + l + j * g.dw));
                        if keep {
                            u32::MAX
                        } else {
                            0
                        }
                    })
                })
                .collect();
            let any = block.iter().flatten().any(|&m| m == 0);
            blocks.push(any.then_some(masks.len()));
            if any {
                masks.extend(block);
            }
        }
        ColumnMasks {
            kw: g.kw,
            blocks,
            masks,
        }
    }

    fn at(&self, x: usize) -> Option<&[[u32; LANES]]> {
        self.blocks[x / LANES].map(|i| &self.masks[i..i + self.kw])
    }

    /// One mask as the two vectors the kernels AND their loads with.
    ///
    /// Callers must have AVX2 enabled; always inlined into them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn vectors(mask: &[u32; LANES]) -> [std::arch::x86_64::__m256; 2] {
        use std::arch::x86_64::*;
        let m: *const f32 = mask.as_ptr().cast();
        // SAFETY: a mask holds LANES = 16 lanes, two unaligned 8-lane loads.
        unsafe { [_mm256_loadu_ps(m), _mm256_loadu_ps(m.add(8))] }
    }
}

/// Floats per 64-byte cache line.
pub(super) const LINE: usize = 16;

/// Prefetches cache lines `lines` of `next` (line `l` holds its floats from
/// `l * LINE` on); lines past its end are skipped.
#[inline(always)]
pub(super) fn prefetch_lines(next: &[f32], lines: std::ops::Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    for l in lines.start..lines.end.min(next.len().div_ceil(LINE)) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: l * LINE < next.len(), an address inside `next` (and a
        // prefetch never faults).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(next.as_ptr().add(l * LINE).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (next, lines);
}

/// The planes of one image and where its taps read.
struct Run<'a> {
    offs: &'a [usize],
    /// Where the taps form a [`Grid`] (summed column by column, in the FMA
    /// build).
    grid: Option<Grid>,
    /// The largest of `offs`.
    max_off: usize,
    planes: &'a [f32],
    row_stride: usize,
    ow: usize,
    /// Computed columns per output column (see [`Planes`]).
    step: usize,
    /// Columns computed per row ([`Planes::computed`]).
    computed: usize,
    nc: usize,
    /// For rows read in place (FMA build): which lanes read padding.
    masks: Option<&'a ColumnMasks>,
    /// The input of the piece's next image, if any: a share of its cache
    /// lines is prefetched before each block of rows, so that its loads
    /// overlap this image's multiply-adds instead of following them (small
    /// images are otherwise copied, then summed, one after the other).
    next: &'a [f32],
}

impl<'a> Run<'a> {
    fn new(
        offs: &'a [usize],
        grid: Option<Grid>,
        planes: &'a [f32],
        row_stride: usize,
        g: &Conv2dGeometry,
        layout: &Planes,
        masks: Option<&'a ColumnMasks>,
    ) -> Self {
        Run {
            offs,
            grid,
            max_off: offs.iter().copied().max().unwrap_or(0),
            planes,
            row_stride,
            ow: g.ow,
            step: layout.step,
            computed: layout.computed(g),
            nc: g.nc,
            masks,
            next: &[],
        }
    }

    /// This run with `next` prefetched along the way (see [`Run::next`]).
    fn prefetching(self, next: &'a [f32]) -> Self {
        Run { next, ..self }
    }

    /// Prefetches the share of [`Run::next`]'s cache lines that belongs to
    /// rows `r..r + rows` of `band`.
    #[inline(always)]
    fn prefetch_share(&self, r: usize, rows: usize, band: usize) {
        let lines = self.next.len().div_ceil(LINE);
        prefetch_lines(self.next, r * lines / band..(r + rows) * lines / band);
    }

    /// The masks of the column block at `x`, one per kernel column, where
    /// any of its lanes reads padding.
    fn masks_at(&self, x: usize) -> Option<&'a [[u32; LANES]]> {
        self.masks.and_then(|m| m.at(x))
    }

    /// Every channel of output rows `0..band`, one register block of
    /// channels after the other.
    #[inline(always)]
    fn all_rows<const FMA: bool>(&self, weights: &BlockWeights, band: usize, out: &mut [MaybeUninit<f32>]) {
        for (b, w) in weights.fours.iter().enumerate() {
            rows_block::<1, 4, FMA>(self, w, 4 * b, band, out);
        }
        if let Some(w) = &weights.two {
            rows_block::<2, 2, FMA>(self, w, 4 * weights.fours.len(), band, out);
        }
        if let Some(w) = &weights.one {
            rows_block::<4, 1, FMA>(self, w, self.nc - 1, band, out);
        }
    }

    /// Output rows `r..r + RB`, channels `kc..kc + KB`, every column.
    #[inline(always)]
    fn block<const RB: usize, const KB: usize, const FMA: bool>(
        &self,
        w: &[[f32; KB]],
        r: usize,
        kc: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        #[cfg(target_arch = "x86_64")]
        if FMA && KB == 1 && self.nc == 1 {
            // SAFETY: FMA is true only in the build that runs after `has_fma`
            // saw AVX2 and FMA.
            unsafe { self.one_channel_avx2::<RB, KB>(w, r, out) };
            return;
        }
        let computed = self.computed;
        for x in (0..computed).step_by(LANES) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: FMA is true only in the build that runs after `has_fma`
            // saw AVX2 and FMA.
            let acc = if FMA {
                unsafe { self.sums_avx2::<RB, KB>(w, r, x) }
            } else {
                self.sums_scalar::<RB, KB>(w, r, x)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let acc = self.sums_scalar::<RB, KB>(w, r, x);
            // Outputs x / step.. of this block (LANES is a multiple of step).
            // (`step` is 1 or 2: shifts, not divisions by a run-time value.)
            let half = self.step == 2;
            let (ox, cols) = (
                x >> half as u32,
                (LANES.min(computed - x) + half as usize) >> half as u32,
            );
            for (rb, acc_r) in acc.iter().enumerate() {
                let row = &mut out[(r + rb) * self.ow * self.nc..(r + rb + 1) * self.ow * self.nc];
                if KB == 1 && self.nc == 1 {
                    // Separate loops: a run-time step would keep the common
                    // contiguous store from becoming one copy.
                    let dst = &mut row[ox..ox + cols];
                    if self.step == 1 && cols == LANES {
                        // A fixed length: a few vector moves, not a call to
                        // memcpy per block (which showed in the profile).
                        let dst: &mut [MaybeUninit<f32>; LANES] = dst.try_into().expect("LANES outputs");
                        *dst = acc_r[0].map(MaybeUninit::new);
                    } else if self.step == 1 {
                        for (d, &v) in dst.iter_mut().zip(&acc_r[0]) {
                            d.write(v);
                        }
                    } else if cols == LANES / 2 {
                        let dst: &mut [MaybeUninit<f32>; LANES / 2] = dst.try_into().expect("LANES / 2 outputs");
                        *dst = std::array::from_fn(|l| MaybeUninit::new(acc_r[0][2 * l]));
                    } else {
                        for (d, &v) in dst.iter_mut().zip(acc_r[0].iter().step_by(2)) {
                            d.write(v);
                        }
                    }
                    continue;
                }
                for l in 0..cols {
                    for (kb, acc_k) in acc_r.iter().enumerate() {
                        row[(ox + l) * self.nc + kc + kb].write(acc_k[l * self.step]);
                    }
                }
            }
        }
    }

    /// Sums of every tap for `LANES` columns from `x`, rows `r..r + RB`,
    /// the KB channels of `w`.
    #[inline(always)]
    fn sums_scalar<const RB: usize, const KB: usize>(
        &self,
        w: &[[f32; KB]],
        r: usize,
        x: usize,
    ) -> [[[f32; LANES]; KB]; RB] {
        let mut acc = [[[0f32; LANES]; KB]; RB];
        for (&off, wt) in self.offs.iter().zip(w) {
            for (rb, acc_r) in acc.iter_mut().enumerate() {
                let at = off + (r + rb) * self.row_stride + x;
                let s = &self.planes[at..at + LANES];
                for (acc_k, &wk) in acc_r.iter_mut().zip(wt) {
                    for (a, &v) in acc_k.iter_mut().zip(s) {
                        *a += v * wk;
                    }
                }
            }
        }
        acc
    }

    /// [`Run::sums_scalar`] with AVX2 FMAs: RB * KB * 2 accumulators stay in
    /// registers, each loaded vector feeds KB multiply-adds.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn sums_avx2<const RB: usize, const KB: usize>(
        &self,
        w: &[[f32; KB]],
        r: usize,
        x: usize,
    ) -> [[[f32; LANES]; KB]; RB] {
        use std::arch::x86_64::*;
        // SAFETY: the caller runs this only where AVX2 and FMA are present.
        let acc = unsafe { self.accumulate_avx2::<RB, KB>(w, r, x) };
        let mut sums = [[[0f32; LANES]; KB]; RB];
        for (sums_r, acc_r) in sums.iter_mut().zip(&acc) {
            for (sums_k, [lo, hi]) in sums_r.iter_mut().zip(acc_r) {
                // SAFETY: each destination holds LANES = 16 floats.
                unsafe {
                    _mm256_storeu_ps(sums_k.as_mut_ptr(), *lo);
                    _mm256_storeu_ps(sums_k.as_mut_ptr().add(8), *hi);
                }
            }
        }
        sums
    }

    /// Output rows `r..r + RB` of one output channel, every column block,
    /// stored straight from the registers: going through an array on the
    /// stack cost a tenth of the kernel's time. Taps on a [`Grid`] go to
    /// [`Run::grid_rows_avx2`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn one_channel_avx2<const RB: usize, const KB: usize>(
        &self,
        w: &[[f32; KB]],
        r: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        if let Some(grid) = self.grid {
            // SAFETY: the caller runs this only where AVX2 and FMA are present.
            unsafe {
                match (grid.k, grid.sh) {
                    (3, 1) => self.grid_rows_avx2::<RB, KB, 3, 1>(&grid, w, r, out),
                    (5, 1) => self.grid_rows_avx2::<RB, KB, 5, 1>(&grid, w, r, out),
                    (5, 2) => self.grid_rows_avx2::<RB, KB, 5, 2>(&grid, w, r, out),
                    _ => unreachable!("Grid::of admits 3x3 at row stride 1 and 5x5 at 1 or 2"),
                }
            }
            return;
        }
        for x in (0..self.computed).step_by(LANES) {
            // SAFETY: as above.
            unsafe {
                let acc = self.accumulate_avx2::<RB, KB>(w, r, x);
                self.store_one_channel(&acc, r, x, out);
            }
        }
    }

    /// Stores one column block of one output channel, rows `r..r + RB`: the
    /// block cut by the row's end with [`store_prefix`], with column stride
    /// 2 every other sum, gathered by two shuffles.
    ///
    /// Callers must have AVX2 enabled (its intrinsics need it). It is always
    /// inlined into them, where the intrinsics inline too: as a call per
    /// column block, with the accumulators passed through memory, it took a
    /// tenth of the kernel's samples in the profile.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn store_one_channel<const RB: usize, const KB: usize>(
        &self,
        acc: &[[[std::arch::x86_64::__m256; 2]; KB]; RB],
        r: usize,
        x: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        use std::arch::x86_64::*;
        assert!(KB == 1 && self.nc == 1 && x < self.computed);
        // Computed columns, then outputs, of this block (the last one may be
        // cut by the row's end).
        let computed = LANES.min(self.computed - x);
        for (rb, acc_r) in acc.iter().enumerate() {
            let [lo, hi] = acc_r[0];
            if self.step == 1 {
                let dst = &mut out[(r + rb) * self.ow + x..][..computed];
                // SAFETY: the first min(8, computed) floats of dst, then the
                // rest from dst[8..] (there only when computed > 8).
                unsafe {
                    store_prefix(dst, lo);
                    if computed > 8 {
                        store_prefix(&mut dst[8..], hi);
                    }
                }
            } else {
                // Even lanes of lo and hi, in order: the shuffle leaves the
                // 64-bit pairs (lo0 lo2, hi0 hi2, lo4 lo6, hi4 hi6).
                let even = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
                let even = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(even)));
                let dst = &mut out[(r + rb) * self.ow + x / 2..][..computed.div_ceil(2)];
                // SAFETY: stores the first dst.len() <= 8 floats.
                unsafe { store_prefix(dst, even) };
            }
        }
    }

    /// The RB x KB x 2 accumulators of [`Run::sums_avx2`], in registers.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn accumulate_avx2<const RB: usize, const KB: usize>(
        &self,
        w: &[[f32; KB]],
        r: usize,
        x: usize,
    ) -> [[[std::arch::x86_64::__m256; 2]; KB]; RB] {
        // SAFETY (both): AVX2 and FMA are enabled here.
        match self.masks_at(x) {
            Some(masks) => unsafe { self.accumulate::<RB, KB, true>(w, r, x, masks) },
            None => unsafe { self.accumulate::<RB, KB, false>(w, r, x, &[]) },
        }
    }

    /// The body of [`Run::accumulate_avx2`]; with MASKED, each loaded
    /// vector is cut by its kernel column's mask (one channel, taps in
    /// HWIO order, so tap `t` is in kernel column `t % masks.len()`).
    ///
    /// Callers must have AVX2 and FMA enabled; always inlined into them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn accumulate<const RB: usize, const KB: usize, const MASKED: bool>(
        &self,
        w: &[[f32; KB]],
        r: usize,
        x: usize,
        masks: &[[u32; LANES]],
    ) -> [[[std::arch::x86_64::__m256; 2]; KB]; RB] {
        use std::arch::x86_64::*;
        // One bounds check for the whole block instead of one per load: the
        // farthest load starts at max_off + (r + RB - 1) * row_stride + x.
        let last = self.max_off + (r + RB - 1) * self.row_stride + x + LANES;
        assert!(last <= self.planes.len());
        assert!(!MASKED || self.offs.len() == w.len() && w.len().is_multiple_of(masks.len()));
        let base = self.planes.as_ptr();
        let mut acc = [[[_mm256_setzero_ps(); 2]; KB]; RB];
        let mut j = 0;
        for (&off, wt) in self.offs.iter().zip(w) {
            let mut wv = [_mm256_setzero_ps(); KB];
            for kb in 0..KB {
                wv[kb] = _mm256_set1_ps(wt[kb]);
            }
            let mask = if MASKED {
                // SAFETY: the caller has AVX2 enabled.
                let m = unsafe { ColumnMasks::vectors(&masks[j]) };
                j = if j + 1 == masks.len() { 0 } else { j + 1 };
                m
            } else {
                [_mm256_setzero_ps(); 2]
            };
            for (rb, acc_r) in acc.iter_mut().enumerate() {
                let at = off + (r + rb) * self.row_stride + x;
                // SAFETY: at + LANES <= last <= planes.len() (asserted above):
                // two unaligned 8-float loads inside the planes.
                let (mut lo, mut hi) = unsafe { (_mm256_loadu_ps(base.add(at)), _mm256_loadu_ps(base.add(at + 8))) };
                if MASKED {
                    (lo, hi) = (_mm256_and_ps(lo, mask[0]), _mm256_and_ps(hi, mask[1]));
                }
                for kb in 0..KB {
                    acc_r[kb][0] = _mm256_fmadd_ps(lo, wv[kb], acc_r[kb][0]);
                    acc_r[kb][1] = _mm256_fmadd_ps(hi, wv[kb], acc_r[kb][1]);
                }
            }
        }
        acc
    }

    /// Output rows `r..r + RB` of a [`Grid`] of K x K taps (one output
    /// channel), output rows SH input rows apart, every column block:
    /// channel by channel and kernel column by kernel column, each input
    /// row's vector is loaded once and feeds every output row of the block
    /// that reads it, with the K weights of that column in registers. Half
    /// the loads of the tap-by-tap kernel per multiply-add (whose shifted,
    /// unaligned loads held it near half the FMA peak): 1.5x on a 5x5
    /// filter. The weights and the bounds are settled once per block of
    /// rows, not once per column block.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn grid_rows_avx2<const RB: usize, const KB: usize, const K: usize, const SH: usize>(
        &self,
        grid: &Grid,
        w: &[[f32; KB]],
        r: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        debug_assert!(grid.k == K && grid.sh == SH);
        // Weights by channel, kernel column, kernel row (the planar kernel
        // takes at most four channels).
        let mut wk = [[[0f32; K]; K]; 4];
        assert!(grid.c <= wk.len() && w.len() == K * K * grid.c);
        for (ch, wch) in wk[..grid.c].iter_mut().enumerate() {
            for (j, wj) in wch.iter_mut().enumerate() {
                for (i, v) in wj.iter_mut().enumerate() {
                    *v = w[(i * K + j) * grid.c + ch][0];
                }
            }
        }
        // The farthest read of the rows' last column block is the farthest
        // tap of its last row (`max_off` holds the grid's bottom right tap of
        // the last plane): every read below stays inside the planes.
        let last_x = (self.computed - 1) / LANES * LANES;
        assert!(self.max_off + (r + RB - 1) * self.row_stride + last_x + LANES <= self.planes.len());
        for x in (0..self.computed).step_by(LANES) {
            // SAFETY (all three): AVX2 and FMA are enabled here, and every
            // read of the block stays inside the bound asserted above.
            let acc = match self.masks_at(x) {
                Some(masks) => unsafe { self.grid_block::<RB, KB, K, SH, true>(grid, &wk, r, x, masks) },
                None => unsafe { self.grid_block::<RB, KB, K, SH, false>(grid, &wk, r, x, &[]) },
            };
            unsafe { self.store_one_channel(&acc, r, x, out) };
        }
    }

    /// One column block of [`Run::grid_rows_avx2`]; with MASKED, each loaded
    /// vector is cut by its kernel column's mask.
    ///
    /// Callers must have AVX2 and FMA enabled and have checked that the
    /// block's reads stay inside the planes; always inlined into them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn grid_block<const RB: usize, const KB: usize, const K: usize, const SH: usize, const MASKED: bool>(
        &self,
        grid: &Grid,
        wk: &[[[f32; K]; K]; 4],
        r: usize,
        x: usize,
        masks: &[[u32; LANES]],
    ) -> [[[std::arch::x86_64::__m256; 2]; KB]; RB] {
        use std::arch::x86_64::*;
        assert!(!MASKED || masks.len() == K);
        let start = self.offs[0] + r * self.row_stride + x;
        let mut acc = [[[_mm256_setzero_ps(); 2]; KB]; RB];
        for (ch, wch) in wk[..grid.c].iter().enumerate() {
            for (j, wj) in wch.iter().enumerate() {
                let mut wv = [_mm256_setzero_ps(); K];
                for (v, &wt) in wv.iter_mut().zip(wj) {
                    *v = _mm256_set1_ps(wt);
                }
                let mask = if MASKED {
                    // SAFETY: the caller has AVX2 enabled.
                    unsafe { ColumnMasks::vectors(&masks[j]) }
                } else {
                    [_mm256_setzero_ps(); 2]
                };
                for y in 0..(RB - 1) * SH + K {
                    let at = start + ch * grid.plane + y * grid.row + j;
                    // SAFETY: a tap's read of this column block, inside the
                    // bound the caller checked, LANES floats.
                    let (mut lo, mut hi) = unsafe {
                        let p = self.planes.as_ptr().add(at);
                        (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
                    };
                    if MASKED {
                        (lo, hi) = (_mm256_and_ps(lo, mask[0]), _mm256_and_ps(hi, mask[1]));
                    }
                    for (i, wv) in wv.iter().enumerate() {
                        // Output row o reads input rows o * SH + i.
                        if y >= i && (y - i) % SH == 0 && (y - i) / SH < RB {
                            let o = &mut acc[(y - i) / SH][0];
                            o[0] = _mm256_fmadd_ps(lo, *wv, o[0]);
                            o[1] = _mm256_fmadd_ps(hi, *wv, o[1]);
                        }
                    }
                }
            }
        }
        acc
    }
}

/// Stores the first `min(8, dst.len())` lanes of `v` into `dst`, with at
/// most three stores (8 lanes at once where they fit): the cut block at a
/// row's end, without a round trip through the stack.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_prefix(dst: &mut [MaybeUninit<f32>], v: std::arch::x86_64::__m256) {
    use std::arch::x86_64::*;
    let mut n = dst.len().min(8);
    let mut p: *mut f32 = dst.as_mut_ptr().cast();
    // SAFETY: every store below writes lanes below n <= dst.len() of dst
    // (MaybeUninit<f32> has the layout of f32).
    unsafe {
        if n == 8 {
            _mm256_storeu_ps(p, v);
            return;
        }
        let mut part = _mm256_castps256_ps128(v);
        if n >= 4 {
            _mm_storeu_ps(p, part);
            (part, p, n) = (_mm256_extractf128_ps::<1>(v), p.add(4), n - 4);
        }
        if n >= 2 {
            _mm_storel_pd(p.cast(), _mm_castps_pd(part));
            (part, p, n) = (_mm_movehl_ps(part, part), p.add(2), n - 2);
        }
        if n == 1 {
            _mm_store_ss(p, part);
        }
    }
}

/// Copies the input rows that output rows `oys` read into the
/// planar, phase-split layout (`spans` from [`Planes::spans`]). Padding rows
/// are zeroed; padding columns are never written, so they keep the zeros
/// the planes were created with.
fn fill_planes(
    x: &[f32],
    g: &Conv2dGeometry,
    layout: &Planes,
    spans: &[(usize, usize, usize, usize)],
    n: usize,
    oys: std::ops::Range<usize>,
    planes: &mut [f32],
) {
    let (oy0, band) = (oys.start, oys.len());
    let image = &x[n * g.h * g.w * g.c..(n + 1) * g.h * g.w * g.c];
    let (c, sw) = (g.c, layout.phases);
    let rows = (band - 1) * g.sh + g.extent().0;
    #[cfg(target_arch = "x86_64")]
    if let (&[(0, q0, q1, x0)], 3, 1, true) = (spans, c, sw, has_fma()) {
        // RGB without stride phases (one span): each row's three plane rows
        // split off directly, the whole band in one AVX2 call (per row, the
        // general setup of `gather` was a tenth of seed_channels_same in the
        // profile, and the per-row calls and checks another tenth).
        let y0 = (oy0 * g.sh) as isize - g.pads.top as isize;
        // SAFETY: `has_fma` saw AVX2 at run time.
        unsafe { deinterleave_rows_avx2(image, g.w, g.h, y0, rows, (q0, q1, x0), layout, planes) };
        return;
    }
    let cols = spans
        .iter()
        .map(|&(_, q0, q1, x0)| x0 + (q1 - q0 - 1) * sw + 1)
        .max()
        .unwrap_or(0);
    for r in 0..rows {
        let Some(y) = (oy0 * g.sh + r).checked_sub(g.pads.top).filter(|&y| y < g.h) else {
            // A padding row; another band of the piece may have left image
            // pixels here.
            for ch in 0..c {
                for phase in 0..sw {
                    let at = layout.plane(ch, phase) + r * layout.width;
                    planes[at..at + layout.width].fill(0.0);
                }
            }
            continue;
        };
        let src_row = &image[y * g.w * c..(y * g.w + cols) * c];
        for &(phase, q0, q1, x0) in spans {
            let at = |ch: usize| layout.plane(ch, phase) + r * layout.width;
            if sw == 1 && c == 1 {
                planes[at(0) + q0..at(0) + q1].copy_from_slice(&src_row[x0..x0 + (q1 - q0)]);
                continue;
            }
            // A fixed channel count lets the compiler unroll the channels of
            // a pixel: each pixel is read once and its channels go to their
            // planes (an iterator with a run-time step per element made this
            // copy most of the kernel's time).
            let row_at = r * layout.width;
            match c {
                1 => gather::<1>(planes, layout, phase, sw, row_at, q0, q1, src_row, x0),
                2 => gather::<2>(planes, layout, phase, sw, row_at, q0, q1, src_row, x0),
                3 => gather::<3>(planes, layout, phase, sw, row_at, q0, q1, src_row, x0),
                4 => gather::<4>(planes, layout, phase, sw, row_at, q0, q1, src_row, x0),
                _ => {
                    for ch in 0..c {
                        let dst = &mut planes[at(ch) + q0..at(ch) + q1];
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = src_row[(x0 + i * sw) * c + ch];
                        }
                    }
                }
            }
        }
    }
}

/// Plane columns `q0..q1` of row `row_at` of the C planes of `phase`, from
/// pixels `x0, x0 + sw, ..` of `src_row`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gather<const C: usize>(
    planes: &mut [f32],
    layout: &Planes,
    phase: usize,
    sw: usize,
    row_at: usize,
    q0: usize,
    q1: usize,
    src_row: &[f32],
    x0: usize,
) {
    let len = q1 - q0;
    // The planes of one phase are every sw-th plane from plane(0, phase);
    // (`chunks_mut` with that stride: no division per call, unlike
    // `chunks_exact_mut` + `step_by`, which showed in the profile.)
    let stride = sw * layout.rows * layout.width;
    let first = layout.plane(0, phase);
    let mut planes_of_phase = planes[first..first + (C - 1) * stride + row_at + q1]
        .chunks_mut(stride)
        .map(|p| &mut p[row_at + q0..row_at + q1]);
    let mut dst: [&mut [f32]; C] = std::array::from_fn(|_| planes_of_phase.next().expect("C planes"));
    let src = &src_row[x0 * C..(x0 + (len - 1) * sw + 1) * C];
    #[cfg(target_arch = "x86_64")]
    if C == 3 && sw == 1 && is_x86_feature_detected!("avx2") {
        let [r, g, b] = &mut dst[..] else {
            unreachable!("C == 3")
        };
        // SAFETY: AVX2 was seen at run time just above.
        unsafe { deinterleave3_avx2(src, [&mut **r, &mut **g, &mut **b]) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if C == 1 && sw == 2 && is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was seen at run time just above.
        unsafe { every_other_avx2(src, dst[0]) };
        return;
    }
    for (i, px) in src.chunks(sw * C).enumerate() {
        for (ch, d) in dst.iter_mut().enumerate() {
            d[i] = px[ch];
        }
    }
}

/// Rows `y0 .. y0 + rows` of an RGB image (`w` x `h`, rows outside it as
/// zeros) into plane rows `0..rows` of the three planes of `layout`: plane
/// columns `q0..q1` from pixels `x0..` of each row.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn deinterleave_rows_avx2(
    image: &[f32],
    w: usize,
    h: usize,
    y0: isize,
    rows: usize,
    (q0, q1, x0): (usize, usize, usize),
    layout: &Planes,
    planes: &mut [f32],
) {
    let plane = layout.rows * layout.width;
    let (red, rest) = planes.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    for r in 0..rows {
        let at = r * layout.width;
        let dst = [
            &mut red[at..at + layout.width],
            &mut green[at..at + layout.width],
            &mut blue[at..at + layout.width],
        ];
        let y = y0 + r as isize;
        if y < 0 || y >= h as isize {
            // A padding row; another band of the piece may have left image
            // pixels here.
            for d in dst {
                d.fill(0.0);
            }
            continue;
        }
        let src = &image[(y as usize * w + x0) * 3..(y as usize * w + x0 + q1 - q0) * 3];
        let [a, b, c] = dst;
        // SAFETY: AVX2, from this function's contract.
        unsafe { deinterleave3_avx2(src, [&mut a[q0..q1], &mut b[q0..q1], &mut c[q0..q1]]) };
    }
}

/// Splits interleaved 3-channel pixels (RGB) into three planes, 8 pixels
/// at a time: three loads, two blends and a lane permutation per plane
/// instead of 24 scalar moves.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn deinterleave3_avx2(src: &[f32], mut dst: [&mut [f32]; 3]) {
    use std::arch::x86_64::*;
    let n = dst[0].len();
    assert!(src.len() >= 3 * n && dst.iter().all(|d| d.len() == n));
    let full = n / 8 * 8;
    // Lane i of the blend of the three loads holds a value of the plane;
    // the permutation puts pixel j's value in lane j.
    let order = [
        _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5),
        _mm256_setr_epi32(1, 4, 7, 2, 5, 0, 3, 6),
        _mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7),
    ];
    for i in (0..full).step_by(8) {
        // SAFETY: pixels i..i + 8 are inside `src` (3 * n floats) and
        // `dst` (n floats each), asserted above.
        unsafe {
            let p = src.as_ptr().add(3 * i);
            let (a, b, c) = (
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
            );
            let r = _mm256_blend_ps::<0x24>(_mm256_blend_ps::<0x92>(a, b), c);
            let g = _mm256_blend_ps::<0x49>(_mm256_blend_ps::<0x24>(a, b), c);
            let bl = _mm256_blend_ps::<0x92>(_mm256_blend_ps::<0x49>(a, b), c);
            for (plane, (v, idx)) in [r, g, bl].into_iter().zip(order).enumerate() {
                _mm256_storeu_ps(dst[plane].as_mut_ptr().add(i), _mm256_permutevar8x32_ps(v, idx));
            }
        }
    }
    for i in full..n {
        for (ch, d) in dst.iter_mut().enumerate() {
            d[i] = src[3 * i + ch];
        }
    }
}

/// `dst[i] = src[2 * i]`, 8 at a time (one stride phase of a grayscale row).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn every_other_avx2(src: &[f32], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = dst.len();
    assert!(n > 0 && src.len() > 2 * (n - 1));
    let mut i = 0;
    while 2 * i + 16 <= src.len() && i + 8 <= n {
        // SAFETY: src[2i..2i + 16] and dst[i..i + 8] are in bounds (loop test).
        unsafe {
            let p = src.as_ptr().add(2 * i);
            let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            // [a0 a2 b0 b2 | a4 a6 b4 b6], then the middle 64-bit pairs swapped.
            let v = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let v = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), v);
        }
        i += 8;
    }
    for (d, s) in dst[i..].iter_mut().zip(src[2 * i..].iter().step_by(2)) {
        *d = *s;
    }
}

fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Pooling. With 8 or more channels (and AVX2) each output pixel's window
/// is folded in registers; otherwise each output row
/// is built separably from its window rows with contiguous, vectorised
/// folds, so there is no per-pixel bookkeeping.
pub fn pool2d(images: ArrayView4<f32>, g: &Pool2dGeometry) -> Array4<f32> {
    // The row path below folds a padded copy of the span; where it is
    // mostly padding, the reference computes the few taps directly.
    let (ekh, ekw) = g.extent();
    if g.c < 8 && !super::span_is_compact(g.h, g.w, g.kh, g.kw, ekh, g.span_cols()) {
        return super::reference::pool2d(images, g);
    }
    let images = images.as_standard_layout();
    let x = images.as_slice().expect("standard layout");
    let mut out = super::output_uninit(g.output_shape(), x.as_ptr());
    let o = out.as_slice_mut().expect("fresh array is contiguous");
    // From 8 channels on, a pixel's channels fill whole registers; measured
    // 2.1x faster than the row-at-a-time loop below on cnn_maxpool (c = 64).
    #[cfg(target_arch = "x86_64")]
    if g.c >= 8 && has_fma() {
        // SAFETY: AVX2 was seen at run time.
        unsafe { super::pool_nhwc::pool(x, o, g) };
        // SAFETY: `for_each_piece` handed every piece of the output,
        // zero-filled, to the kernel.
        return unsafe { out.assume_init() };
    }
    let row_elems = g.ow * g.c;
    let rows = piece_rows(g.oh, row_elems * g.kh, g.m, TILE_FLOATS);
    // Columns that count for the divisor, per output column (the divisor is
    // the product of the row and column counts of the shared rule).
    let col_counts: Vec<usize> = (0..g.ow).map(|ox| g.divisor_cols(ox)).collect();
    let init = identity(g.mode);
    // Padded columns the windows span (ceil_mode may reach past the padding).
    let padded_cols = (g.pads.left + g.w).max(g.span_cols());
    let avx2 = has_fma();
    // Every output of a piece is written by `pool_row`, so the piece is not
    // zeroed first (that fill was a seventh of seed_pool_avg's time).
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
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: `avx2` is true only when `has_fma` saw AVX2 at run time.
            unsafe { pool_piece_avx2(x, g, p, &mut work, dst) };
            return;
        }
        let _ = avx2;
        pool_piece(x, g, p, &mut work, dst);
    });
    // SAFETY: `for_each_piece_uninit` handed every piece of the output to
    // `pool_row`, which writes every element of its row.
    unsafe { out.assume_init() }
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

/// [`pool_piece`] compiled for AVX2: the folds are vectorised 8 wide
/// (the baseline build folds 4 floats at a time and emulates the NaN-aware
/// max with three logic operations).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pool_piece_avx2(x: &[f32], g: &Pool2dGeometry, p: Piece, work: &mut PoolWork, dst: &mut [MaybeUninit<f32>]) {
    pool_piece(x, g, p, work, dst)
}

/// Every output row of one piece of the pooling row path.
#[inline(always)]
fn pool_piece(x: &[f32], g: &Pool2dGeometry, p: Piece, work: &mut PoolWork, dst: &mut [MaybeUninit<f32>]) {
    let band = p.oy1 - p.oy0;
    let row_elems = g.ow * g.c;
    for (i, n) in (p.n0..p.n1).enumerate() {
        let image = &x[n * g.h * g.w * g.c..(n + 1) * g.h * g.w * g.c];
        let image_dst = &mut dst[i * band * row_elems..(i + 1) * band * row_elems];
        for (r, out_row) in image_dst.chunks_mut(row_elems).enumerate() {
            pool_row(image, g, p.oy0 + r, work, out_row);
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
fn pool_row(image: &[f32], g: &Pool2dGeometry, oy: usize, work: &mut PoolWork, out_row: &mut [MaybeUninit<f32>]) {
    let (column, wide) = (&mut *work.column, &mut *work.wide);
    let out_row = pool_row_with(image, g, oy, column, wide, out_row);
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
fn pool_row_with<'a>(
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
        return unsafe { super::assume_written(out_row) };
    };
    let row = |y: usize| &image[y * row_len..(y + 1) * row_len];
    let inside = &mut column[g.pads.left * c..g.pads.left * c + row_len];
    // The first two rows, and below the first two columns, in one pass
    // each: a copy or a fill, then a fold, were two library calls per row
    // (a quarter of seed_pool_avg's time in the profile).
    match rows.next() {
        // SAFETY: fold2 writes only floats through the view.
        Some(second) => fold2(
            g.mode,
            unsafe { super::as_uninit(inside) },
            row(first),
            row(second),
            false,
        ),
        None => inside.copy_from_slice(row(first)),
    }
    for y in rows {
        fold(g.mode, inside, row(y));
    }
    // At stride 1 the columns are folded into the output row itself.
    let (acc, out_row) = if g.sw == 1 {
        (out_row, None)
    } else {
        // SAFETY: only floats are written through the view (fold2 or the
        // fill below).
        (unsafe { super::as_uninit(wide) }, Some(out_row))
    };
    let len = acc.len();
    let col = |j: usize| &column[j * g.dw * c..j * g.dw * c + len];
    // Columns folded so far: two by fold2, or none after the fill.
    let folded = if g.kw >= 2 {
        fold2(g.mode, acc, col(0), col(1), true);
        2
    } else {
        acc.fill(MaybeUninit::new(init));
        0
    };
    // SAFETY: fold2 or the fill wrote every element.
    let acc = unsafe { super::assume_written(acc) };
    for j in folded..g.kw {
        fold(g.mode, acc, col(j));
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
    unsafe { super::assume_written(out_row) }
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
fn fold(mode: PoolMode, dst: &mut [f32], src: &[f32]) {
    match mode {
        PoolMode::Avg => {
            for (a, &v) in dst.iter_mut().zip(src) {
                *a += v;
            }
        }
        PoolMode::Max => {
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was seen at run time just above.
                unsafe { fold_max_avx2(dst, src) };
                return;
            }
            for (a, &v) in dst.iter_mut().zip(src) {
                *a = super::max_nan(*a, v);
            }
        }
    }
}

/// `dst[i] = a[i] op b[i]` for the pooling mode's fold; with
/// `from_identity`, `(identity op a[i]) op b[i]`, as a fill with
/// [`identity`] then two folds would give (the sum of a -0 starts from +0).
#[inline(always)]
fn fold2(mode: PoolMode, dst: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32], from_identity: bool) {
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
        PoolMode::Max => {
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 was seen at run time just above; dst.len()
                // floats of each slice (asserted above).
                unsafe { max_avx2(dst.as_mut_ptr().cast(), a.as_ptr(), b.as_ptr(), dst.len()) };
                return;
            }
            for ((d, &u), &v) in dst.iter_mut().zip(a).zip(b) {
                d.write(super::max_nan(u, v));
            }
        }
    }
}

/// The max fold of [`fold`] with explicit blends. Written as plain Rust,
/// the compiler turns "keep `dst` unless `src` wins" into masked stores,
/// which made the AVX2 build of max pooling twice as slow as SSE.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn fold_max_avx2(dst: &mut [f32], src: &[f32]) {
    let n = dst.len().min(src.len());
    let d = dst.as_mut_ptr();
    // SAFETY: n floats of each; `dst` is read and written through one pointer.
    unsafe { max_avx2(d, d, src.as_ptr(), n) }
}

/// `dst[i] = max_nan(a[i], b[i])` for `i < n`, 8 lanes at a time; `a` may
/// be `dst` itself.
///
/// # Safety
/// The CPU must support AVX2; `n` floats from each pointer are valid (for
/// writing, from `dst`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn max_avx2(dst: *mut f32, a: *const f32, b: *const f32, n: usize) {
    use std::arch::x86_64::*;
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        // SAFETY: i + 8 <= n (the caller's bound).
        unsafe {
            let m = _mm256_loadu_ps(a.add(i));
            let v = _mm256_loadu_ps(b.add(i));
            // max_ps(v, m) is v where v > m, else m (NaN m stays); a NaN v
            // is then blended in: max_nan(m, v) lane by lane.
            let r = _mm256_blendv_ps(_mm256_max_ps(v, m), v, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            _mm256_storeu_ps(dst.add(i), r);
        }
    }
    for i in full..n {
        // SAFETY: i < n (the caller's bound).
        unsafe { *dst.add(i) = super::max_nan(*a.add(i), *b.add(i)) };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check, Conv2dSpec, Padding};

    fn array(shape: [usize; 4], seed: u64) -> Array4<f32> {
        crate::bench::random_array(shape, seed)
    }

    /// Asserts that strategy `s` gives the f64 reference's result within the
    /// convolution tolerance; `case` names the call in the message.
    fn assert_like_reference(s: Strategy, x: &Array4<f32>, k: &Array4<f32>, g: &Conv2dGeometry, case: &str) {
        let want = crate::cpu::reference::conv2d(x.view(), k.view(), g);
        let tolerance = check::conv_tolerance(g.reduction_len(), check::max_abs_finite(want.view()));
        let got = conv2d_with(s, x.view(), k.view(), g);
        assert!(
            check::within(got.view(), want.view(), tolerance),
            "{s:?} on {case}: {:?}",
            check::largest_difference(got.view(), want.view(), false)
        );
    }

    /// Every strategy against the reference, on shapes that reach each
    /// kernel's tails: pixel blocks cut by the band's end, channel blocks
    /// cut by `nc`, several images per piece, bands of one image.
    #[test]
    fn every_strategy_matches_the_reference() {
        type Case = ([usize; 4], [usize; 4], Padding, (usize, usize), (usize, usize));
        let explicit = |top, bottom, left, right| Padding::Explicit {
            top,
            bottom,
            left,
            right,
        };
        let cases: &[Case] = &[
            ([2, 9, 11, 3], [3, 3, 3, 16], Padding::Same, (1, 1), (1, 1)),
            ([3, 7, 5, 5], [2, 3, 5, 17], Padding::Valid, (1, 2), (1, 1)),
            ([1, 30, 7, 8], [3, 2, 8, 9], explicit(2, 0, 1, 3), (2, 1), (2, 2)),
            ([4, 6, 6, 1], [5, 5, 1, 1], Padding::SameLower, (1, 1), (1, 1)),
            ([1, 13, 13, 2], [3, 3, 2, 33], Padding::Symmetric(1, 2), (3, 2), (1, 3)),
            ([2, 5, 8, 24], [1, 1, 24, 7], Padding::Valid, (1, 1), (1, 1)),
            ([2, 5, 8, 6], [1, 1, 6, 20], Padding::Symmetric(1, 1), (2, 2), (1, 1)),
            ([9, 4, 4, 4], [4, 4, 4, 8], Padding::Valid, (1, 1), (1, 1)),
            // One channel without padding: the planar kernel reads the image
            // in place, except where the over-read would pass the input's end.
            ([5, 9, 37, 1], [3, 4, 1, 1], Padding::Valid, (2, 1), (1, 1)),
            ([3, 12, 20, 1], [2, 3, 1, 3], Padding::Valid, (1, 1), (2, 2)),
            ([1, 40, 19, 1], [5, 5, 1, 2], Padding::Valid, (1, 1), (1, 1)),
            // Wide rows: grayscale at column stride 2 computed at every
            // column, RGB split into planes (vectorised, with tails).
            ([2, 11, 43, 1], [3, 3, 1, 1], Padding::Symmetric(1, 1), (2, 2), (1, 1)),
            ([2, 7, 29, 3], [3, 3, 3, 1], Padding::Same, (1, 1), (1, 1)),
            // Padded grayscale: rows inside the image read in place with
            // their border lanes masked, padding rows from planes (in
            // bands of one image too), column stride 2 computed at every
            // column (up to 4 output channels) or phase-split (more, with
            // the vectorised every-other-column copy).
            ([3, 17, 23, 1], [3, 3, 1, 1], explicit(1, 2, 1, 0), (1, 1), (1, 1)),
            ([2, 28, 28, 1], [3, 3, 1, 1], Padding::Symmetric(1, 1), (2, 2), (1, 1)),
            ([1, 64, 50, 1], [5, 5, 1, 3], Padding::Same, (1, 1), (1, 1)),
            ([2, 31, 40, 1], [3, 2, 1, 5], explicit(3, 0, 0, 4), (2, 2), (2, 3)),
            ([1, 45, 33, 1], [3, 3, 1, 2], explicit(0, 1, 2, 2), (3, 2), (1, 2)),
            ([2, 6, 9, 1], [7, 7, 1, 1], Padding::Same, (1, 1), (1, 1)),
            // Grids of taps (one output channel, 3x3 and 5x5): each input
            // row loaded once per block of output rows, RGB planes too.
            ([2, 21, 40, 3], [5, 5, 3, 1], Padding::Same, (1, 1), (1, 1)),
            ([3, 26, 35, 1], [5, 5, 1, 1], Padding::Symmetric(2, 1), (2, 2), (1, 1)),
            ([2, 9, 70, 2], [3, 3, 2, 1], Padding::Valid, (1, 1), (1, 1)),
            // Winograd tiles: odd and even output sizes (partial tiles),
            // asymmetric pads, several images per piece, bands of one image.
            ([2, 9, 11, 16], [3, 3, 16, 16], Padding::Same, (1, 1), (1, 1)),
            ([1, 8, 7, 24], [3, 3, 24, 32], explicit(2, 0, 1, 3), (1, 1), (1, 1)),
            ([3, 5, 6, 16], [3, 3, 16, 48], Padding::Valid, (1, 1), (1, 1)),
            ([1, 40, 9, 16], [3, 3, 16, 16], Padding::Same, (1, 1), (1, 1)),
        ];
        for &(xs, ks, padding, (sh, sw), (dh, dw)) in cases {
            let spec = Conv2dSpec::new(padding).with_stride(sh, sw).with_dilation(dh, dw);
            let g = spec.resolve(xs, ks).unwrap();
            let (x, k) = (array(xs, 1), array(ks, 2));
            let mut strategies = vec![Strategy::Planar, Strategy::Im2col];
            if has_fma() {
                strategies.push(Strategy::Nhwc);
                #[cfg(target_arch = "x86_64")]
                if super::super::winograd::fits(&g) {
                    strategies.push(Strategy::Winograd);
                }
            }
            if Strategy::choose(&g, false) == Strategy::Pointwise {
                strategies.push(Strategy::Pointwise);
            }
            for s in strategies {
                assert_like_reference(s, &x, &k, &g, &format!("{xs:?} * {ks:?}"));
            }
        }
    }

    /// A 1-pixel image with padding and stride of 1e9: the direct kernels
    /// would copy two billion padded columns; the choice falls to im2col,
    /// which computes the 3 x 3 result at once. The same for a dilation of
    /// 1e8 with padding to match.
    #[test]
    fn huge_padding_and_stride_stay_small() {
        let spec =
            Conv2dSpec::new(Padding::Symmetric(100_000_000, 100_000_000)).with_dilation(100_000_000, 100_000_000);
        for nc in [1, 8] {
            let g = spec.resolve([2, 5, 5, 1], [3, 3, 1, nc]).unwrap();
            assert_eq!(Strategy::choose(&g, true), Strategy::Im2col);
            let (x, k) = (array([2, 5, 5, 1], 5), array([3, 3, 1, nc], 6));
            let want = crate::cpu::reference::conv2d(x.view(), k.view(), &g);
            let got = conv2d(x.view(), k.view(), &g);
            assert!(check::within(got.view(), want.view(), 1e-5));
        }
        let big = 1_000_000_000;
        let spec = Conv2dSpec::new(Padding::Symmetric(big, big)).with_stride(big, big);
        for nc in [1, 8] {
            let g = spec.resolve([1, 1, 1, 1], [1, 1, 1, nc]).unwrap();
            assert_eq!(Strategy::choose(&g, true), Strategy::Im2col);
            let k = array([1, 1, 1, nc], 4);
            let y = conv2d(Array4::from_elem((1, 1, 1, 1), 2.0).view(), k.view(), &g);
            assert_eq!(y.shape(), &[1, 3, 3, nc]);
            for ((_, oy, ox, ch), &v) in y.indexed_iter() {
                let want = if (oy, ox) == (1, 1) {
                    2.0 * k[[0, 0, 0, ch]]
                } else {
                    0.0
                };
                assert_eq!(v, want);
            }
        }
    }

    #[test]
    fn pooling_with_huge_dilation_stays_small() {
        // Two taps per window reach the image; the windows span 2e8 columns.
        let spec = crate::Pool2dSpec::new(crate::PoolMode::Avg, 3, 3)
            .with_dilation(100_000_000, 100_000_000)
            .with_padding(Padding::Symmetric(100_000_000, 100_000_000));
        for c in [1, 9] {
            let g = spec.resolve([2, 5, 5, c]).unwrap();
            let x = array([2, 5, 5, c], 7);
            let want = crate::cpu::reference::pool2d(x.view(), &g);
            let got = pool2d(x.view(), &g);
            assert!(check::within(got.view(), want.view(), 1e-6));
        }
    }

    /// The one-channel kernel stores each block straight into the output,
    /// the block cut by a row's end lane by lane: every cut, at column
    /// stride 1 and 2 (every other sum kept), with and without padding.
    #[test]
    fn every_row_end_is_stored() {
        for w in 1..=37 {
            for (s, padding) in [(1, Padding::Same), (2, Padding::Symmetric(1, 1)), (1, Padding::Valid)] {
                let (xs, ks) = ([2, 5, w, 1], [3, 3, 1, 1]);
                let Ok(g) = Conv2dSpec::new(padding).with_stride(s, s).resolve(xs, ks) else {
                    continue;
                };
                let (x, k) = (array(xs, 5), array(ks, 6));
                let case = format!("width {w}, stride {s}, {padding:?}");
                assert_like_reference(Strategy::Planar, &x, &k, &g, &case);
            }
        }
    }

    /// The planar kernel reads padded grayscale rows in place, masking (FMA
    /// build) or recomputing (portable build) their border columns, and
    /// takes the rows that reach the padding from a copy (the image's rows
    /// with zero rows, FMA build; the zero-padded planes, portable build);
    /// all must sum in the same order, so that padding the image by hand and convolving without
    /// padding gives the same bits (with the grid kernel, column by column,
    /// and with the tap-by-tap one; in both builds).
    #[test]
    fn padded_rows_sum_like_rows_read_in_place() {
        // (image, kernel, pads (top, bottom, left, right), stride)
        type Case = ([usize; 4], [usize; 4], (usize, usize, usize, usize), usize);
        let cases: &[Case] = &[
            ([2, 19, 37, 1], [5, 5, 1, 1], (2, 2, 2, 2), 1),
            ([1, 23, 41, 1], [5, 5, 1, 1], (1, 3, 4, 0), 2),
            ([2, 17, 35, 1], [3, 3, 1, 1], (1, 1, 1, 1), 1),
            ([2, 17, 35, 1], [3, 3, 1, 1], (1, 1, 1, 1), 2),
            ([1, 20, 33, 1], [4, 2, 1, 1], (2, 1, 1, 0), 1),
        ];
        for &(xs, ks, (top, bottom, left, right), s) in cases {
            let (x, k) = (array(xs, 3), array(ks, 4));
            let padding = Padding::Explicit {
                top,
                bottom,
                left,
                right,
            };
            let g = Conv2dSpec::new(padding).with_stride(s, s).resolve(xs, ks).unwrap();
            let mut padded = Array4::<f32>::zeros((xs[0], xs[1] + top + bottom, xs[2] + left + right, 1));
            padded
                .slice_mut(ndarray::s![.., top..top + xs[1], left..left + xs[2], ..])
                .assign(&x);
            let g_valid = Conv2dSpec::new(Padding::Valid)
                .with_stride(s, s)
                .resolve([xs[0], xs[1] + top + bottom, xs[2] + left + right, 1], ks)
                .unwrap();
            for fma in [has_fma(), false] {
                let got = planar(x.view(), k.view(), &g, fma);
                let want = planar(padded.view(), k.view(), &g_valid, fma);
                assert_eq!(
                    got,
                    want,
                    "{xs:?} * {ks:?}, pads {:?}, stride {s}, fma {fma}",
                    (top, bottom, left, right)
                );
            }
            let want = crate::cpu::reference::conv2d(x.view(), k.view(), &g);
            let got = planar(x.view(), k.view(), &g, false);
            let tolerance = check::conv_tolerance(g.reduction_len(), check::max_abs_finite(want.view()));
            assert!(
                check::within(got.view(), want.view(), tolerance),
                "portable build vs the reference: {xs:?} * {ks:?}, stride {s}"
            );
        }
    }

    /// The planar kernel's FMA build (where present) or its portable one.
    fn planar(x: ArrayView4<f32>, k: ArrayView4<f32>, g: &Conv2dGeometry, fma: bool) -> Array4<f32> {
        let (x, k) = (x.as_standard_layout(), k.as_standard_layout());
        let xs = x.as_slice().expect("standard layout");
        let mut out = crate::cpu::output_uninit(g.output_shape(), xs.as_ptr());
        let o = out.as_slice_mut().expect("fresh array is contiguous");
        conv_direct(xs, k.as_slice().expect("standard layout"), o, g, fma);
        // SAFETY: the planar kernel stores every output.
        unsafe { out.assume_init() }
    }

    /// Winograd transforms mix neighbouring inputs, so infinite or NaN
    /// values (in the image or the weights) take the direct kernel, which
    /// keeps SPEC.md's propagation: only the outputs whose windows hold them.
    #[test]
    fn winograd_leaves_special_values_to_the_direct_kernel() {
        let g = Conv2dSpec::new(Padding::Same)
            .resolve([1, 8, 8, 16], [3, 3, 16, 16])
            .unwrap();
        if !has_fma() {
            return;
        }
        assert_eq!(Strategy::choose(&g, true), Strategy::Winograd);
        for (special, in_kernel) in [(f32::NAN, false), (f32::INFINITY, false), (f32::INFINITY, true)] {
            let (mut x, mut k) = (array([1, 8, 8, 16], 3), array([3, 3, 16, 16], 4));
            if in_kernel {
                k[[0, 0, 5, 2]] = special;
            } else {
                x[[0, 4, 4, 7]] = special;
            }
            let want = crate::cpu::reference::conv2d(x.view(), k.view(), &g);
            let got = conv2d_with(Strategy::Winograd, x.view(), k.view(), &g);
            let tolerance = check::conv_tolerance(g.reduction_len(), check::max_abs_finite(want.view()));
            for (&a, &b) in got.iter().zip(&want) {
                assert_eq!(a.is_nan(), b.is_nan(), "{a} vs {b}");
                assert!(a.is_nan() || a == b || (a - b).abs() as f64 <= tolerance, "{a} vs {b}");
            }
            // Some outputs stay finite: the special value did not spread.
            assert!(got.iter().any(|v| v.is_finite()));
        }
    }

    /// The vectorised max fold keeps SPEC.md's NaN-propagating max lane by
    /// lane, bit for bit: NaN on either side, infinities, signed zeros.
    #[test]
    fn max_fold_matches_the_scalar_max() {
        let specials = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1.5,
            -2.0,
            7.0,
        ];
        let n = specials.len() * specials.len() + 5;
        let dst: Vec<f32> = (0..n).map(|i| specials[i % specials.len()]).collect();
        let src: Vec<f32> = (0..n)
            .map(|i| specials[(i / specials.len()) % specials.len()])
            .collect();
        let mut got = dst.clone();
        fold(PoolMode::Max, &mut got, &src);
        for ((&m, &v), &r) in dst.iter().zip(&src).zip(&got) {
            assert_eq!(r.to_bits(), crate::cpu::max_nan(m, v).to_bits(), "max_nan({m}, {v})");
        }
    }

    /// Max pooling of rows wide enough for the vector folds, with NaN,
    /// infinities and signed zeros in the image.
    #[test]
    fn max_pooling_with_special_values_matches_the_reference() {
        let mut x = array([2, 9, 40, 3], 5);
        for (i, v) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0]
            .into_iter()
            .enumerate()
        {
            x[[i % 2, 1 + i, 3 + 7 * i, i % 3]] = v;
        }
        for (k, s, padding) in [
            (2, 2, Padding::Valid),
            (3, 1, Padding::Symmetric(1, 1)),
            (3, 2, Padding::Same),
        ] {
            let g = crate::Pool2dSpec::new(PoolMode::Max, k, k)
                .with_stride(s, s)
                .with_padding(padding)
                .resolve([2, 9, 40, 3])
                .unwrap();
            let want = crate::cpu::reference::pool2d(x.view(), &g);
            let got = pool2d(x.view(), &g);
            for (&a, &b) in got.iter().zip(&want) {
                assert!(a == b || (a.is_nan() && b.is_nan()), "{a} vs {b}");
            }
        }
    }
}
