//! Direct NHWC convolution for many channels, on the SIMD layer.
//!
//! In NHWC the channels of one pixel are contiguous, and in HWIO the output
//! channels of one tap are contiguous, so an output block of `PIX` pixels x
//! `NV` vectors of channels is a small GEMM whose reduction runs over contiguous memory:
//! for each tap and input channel, broadcast one input value per pixel and
//! multiply-add it with `NV` vectors of weights. The `PIX * NV` accumulators stay in
//! registers for the whole reduction (`kh * kw * c` steps), so there is no
//! im2col copy, no packing of the input and no reload of partial sums, which
//! is where a general GEMM on im2col tiles loses time.
//!
//! Each reduction step reads input `start + off[step]` of its pixel, from a
//! table of offsets made once per call (without dilation, `kh` runs of
//! `kw * c` consecutive offsets), so the reduction is one loop and its
//! accumulators stay in registers from start to end.
//! Padding is handled by a zero-padded copy of the band of input rows a
//! piece reads (cheap next to the arithmetic, which reads each input value
//! `kh * kw * nc` times); without padding the image is read in place.
//!
//! Register blocks ([`Blocking`]) per instruction set: with 16 ymm registers
//! (AVX2), 6 pixels x 2 vectors (16 channels): 12 accumulators, 2 weights
//! and 1 broadcast. With 32 zmm registers (AVX-512), 6 pixels x 4 vectors
//! (64 channels): 24 accumulators, 4 weights and 1 broadcast, and 4 weight
//! loads + 6 broadcasts per 24 multiply-adds; more pixels per block would
//! need more pointers than there are general registers (each pixel keeps
//! its own input pointer), so narrower layers take 8 x 2 or 8 x 1.

use std::mem::MaybeUninit;

use super::pieces::{finish, for_each_piece_uninit, piece_rows, prefetch_lines, LINE, SCRATCH, TILE_FLOATS};
use super::simd::{dispatch, Isa, Simd, WithSimd};
use crate::epilogue::Epilogue;
use crate::shape::Conv2dGeometry;

/// A register block: `pix` output pixels x `nv` vectors of output channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Blocking {
    pub(super) pix: usize,
    pub(super) nv: usize,
}

impl Blocking {
    /// The block the NHWC kernel takes for `nc` output channels on `isa`.
    /// On AVX-512, of 8 x 1, 8 x 2 and 6 x 4 the one that pads `nc` least
    /// (the widest on a tie), so that a multiple of 16 output channels is
    /// always whole blocks (Winograd relies on it).
    pub(super) fn of(isa: Isa, nc: usize) -> Self {
        match isa {
            Isa::Avx512 => [(6, 4), (8, 2), (8, 1)]
                .into_iter()
                .map(|(pix, nv)| Blocking { pix, nv })
                .min_by_key(|b| nc.next_multiple_of(b.channels(isa)))
                .expect("three blockings"),
            Isa::Avx2 | Isa::Portable => Blocking { pix: 6, nv: 2 },
        }
    }

    /// Output channels per block.
    pub(super) fn channels(self, isa: Isa) -> usize {
        self.nv * isa.lanes()
    }
}

/// Weights repacked as `[block][tap][channels]` (HWIO taps, output channels
/// past `nc` zero), 64-byte aligned so every weight load is whole cache
/// lines or halves.
pub(super) struct Packed {
    buf: Vec<f32>,
    start: usize,
    per_block: usize,
}

impl Packed {
    pub(super) fn new(k: &[f32], g: &Conv2dGeometry, block: usize) -> Self {
        let taps = g.reduction_len();
        let per_block = taps * block;
        let blocks = g.nc.div_ceil(block);
        let mut buf = vec![0f32; blocks * per_block + 16];
        let start = buf.as_ptr().align_offset(64).min(16);
        for t in 0..taps {
            for (oc, &v) in k[t * g.nc..(t + 1) * g.nc].iter().enumerate() {
                buf[start + (oc / block) * per_block + t * block + oc % block] = v;
            }
        }
        Packed { buf, start, per_block }
    }

    pub(super) fn block(&self, b: usize) -> &[f32] {
        &self.buf[self.start + b * self.per_block..self.start + (b + 1) * self.per_block]
    }
}

/// Where the input of one piece lives: output pixel `q` of the band reads
/// `src[starts[q] + off]` at each reduction step's offset `off`.
struct Source<'a> {
    src: &'a [f32],
    starts: &'a [usize],
}

/// The convolution, with the vectors of `isa`.
pub(super) fn conv(isa: Isa, x: &[f32], k: &[f32], o: &mut [MaybeUninit<f32>], g: &Conv2dGeometry, ep: &Epilogue) {
    let blocking = Blocking::of(isa, g.nc);
    let packed = Packed::new(k, g, blocking.channels(isa));
    let padded = g.pads != Default::default();
    let ekh = g.extent().0;
    // Padded columns a row of outputs reads.
    let width = g.span_cols();
    let per_row = g.sh * width * g.c;
    let rows = piece_rows(g.oh, per_row, g.m, TILE_FLOATS);
    // Rows of the padded band, or of the image read in place.
    let row_stride = if padded { width * g.c } else { g.w * g.c };
    // Offset of each reduction step's input (HWIO order: kernel row, kernel
    // column, channel) from a pixel's first input.
    let offs: Vec<usize> = (0..g.kh)
        .flat_map(|i| (0..g.kw).flat_map(move |j| (0..g.c).map(move |ch| i * g.dh * row_stride + j * g.dw * g.c + ch)))
        .collect();
    let image_len = g.h * g.w * g.c;
    // `piece` stores every output (every pixel of every channel block), so
    // the output is not zeroed first.
    for_each_piece_uninit(o, g.m, g.oh, g.ow * g.nc, rows, |p, dst| {
        let band = p.oy1 - p.oy0;
        let band_rows = (band - 1) * g.sh + ekh;
        // First input of each output pixel of the band (the same for every
        // image of the piece), without a division per pixel.
        let mut starts = Vec::with_capacity(band * g.ow);
        for r in 0..band {
            starts.extend((0..g.ow).map(|ox| r * g.sh * row_stride + ox * g.sw * g.c));
        }
        SCRATCH.with_borrow_mut(|scratch| {
            if padded {
                // Cells outside the image stay zero for every image of the piece.
                scratch.clear();
                scratch.resize(band_rows * width * g.c, 0.0);
            }
            for (i, n) in (p.n0..p.n1).enumerate() {
                let image = &x[n * image_len..(n + 1) * image_len];
                // Whole images: the next one's input is fetched while this
                // one is summed (see `piece`).
                let next = if band == g.oh && n + 1 < p.n1 {
                    &x[(n + 1) * image_len..(n + 2) * image_len]
                } else {
                    &[]
                };
                let src: &[f32] = if padded {
                    fill_band(image, g, p.oy0, band_rows, width, scratch);
                    scratch
                } else {
                    &image[p.oy0 * g.sh * g.w * g.c..]
                };
                let out = &mut dst[i * band * g.ow * g.nc..(i + 1) * band * g.ow * g.nc];
                let op = ImagePiece {
                    source: Source { src, starts: &starts },
                    offs: &offs,
                    packed: &packed,
                    g,
                    next,
                    out,
                    blocking,
                };
                dispatch(isa, op);
            }
        });
        // SAFETY: `ImagePiece` stored every output of every image above.
        unsafe { finish(dst, ep, g.nc) };
    });
}

/// Copies input rows `oy0 * sh - top ..` into the zero-padded band.
fn fill_band(image: &[f32], g: &Conv2dGeometry, oy0: usize, rows: usize, width: usize, band: &mut [f32]) {
    let c = g.c;
    let left = g.pads.left;
    // Padded columns [left, left + w) are image columns, clipped to the band.
    let u1 = (left + g.w).min(width);
    if u1 <= left {
        return;
    }
    for r in 0..rows {
        let Some(y) = (oy0 * g.sh + r).checked_sub(g.pads.top).filter(|&y| y < g.h) else {
            continue;
        };
        let src = &image[y * g.w * c..(y * g.w + u1 - left) * c];
        band[(r * width + left) * c..(r * width + u1) * c].copy_from_slice(src);
    }
}

/// One image's band, run with the vectors of `S`.
struct ImagePiece<'a> {
    source: Source<'a>,
    offs: &'a [usize],
    packed: &'a Packed,
    g: &'a Conv2dGeometry,
    next: &'a [f32],
    out: &'a mut [MaybeUninit<f32>],
    blocking: Blocking,
}

impl WithSimd for ImagePiece<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let ImagePiece {
            source,
            offs,
            packed,
            g,
            next,
            out,
            blocking,
        } = self;
        // The blocks of `Blocking::of`, as constants. The match on the
        // constant `S::LANES` leaves the other instruction sets' blocks
        // uncompiled for `S`.
        match (S::LANES, blocking.pix, blocking.nv) {
            (16, 8, 1) => piece::<S, 8, 1>(s, &source, offs, packed, g, next, out),
            (16, 8, 2) => piece::<S, 8, 2>(s, &source, offs, packed, g, next, out),
            (16, 6, 4) => piece::<S, 6, 4>(s, &source, offs, packed, g, next, out),
            (8, 6, 2) => piece::<S, 6, 2>(s, &source, offs, packed, g, next, out),
            _ => unreachable!("Blocking::of makes no {blocking:?}"),
        }
    }
}

/// Every output of one image's band (`out`, NHWC), prefetching `next` (the
/// next image's input, or nothing) a share of its cache lines per block of
/// pixels, so that its loads overlap these multiply-adds instead of
/// stalling the next image's copy into the band.
#[inline(always)]
fn piece<S: Simd, const PIX: usize, const NV: usize>(
    s: S,
    source: &Source,
    offs: &[usize],
    packed: &Packed,
    g: &Conv2dGeometry,
    next: &[f32],
    out: &mut [MaybeUninit<f32>],
) {
    let block_c = NV * S::LANES;
    let starts = source.starts;
    let pixels = starts.len();
    // The last input any output reads must lie inside the source: this
    // bounds every pointer the kernel forms below.
    let reach = offs.iter().max().map_or(0, |&off| off + 1);
    assert!(pixels > 0 && starts[pixels - 1] + reach <= source.src.len());
    assert!(out.len() == pixels * g.nc);
    // One offset per reduction step: `block` reads a block of weights per step.
    assert!(offs.len() == g.reduction_len());
    let base = source.src.as_ptr();
    // Lines of `next` per pixel block.
    let lines = next.len().div_ceil(LINE);
    let share = lines.div_ceil(pixels.div_ceil(PIX));
    let mut fetched = 0;
    for b in 0..g.nc.div_ceil(block_c) {
        let w = packed.block(b);
        assert!(w.len() == g.reduction_len() * block_c);
        let lanes = block_c.min(g.nc - b * block_c);
        // Pixels run across row ends: a block's pixels need not share a row,
        // so only the band's last block can be short.
        let mut q0 = 0;
        while q0 < pixels {
            let count = PIX.min(pixels - q0);
            let to = (fetched + share).min(lines);
            prefetch_lines(next, fetched..to);
            fetched = to;
            // A short block repeats its last pixel; the extra sums are dropped.
            // SAFETY: every start is that of a pixel of the band, checked above.
            let src: [*const f32; PIX] = std::array::from_fn(|p| unsafe { base.add(starts[q0 + p.min(count - 1)]) });
            // SAFETY: every offset from each start stays within `reach`;
            // `w` holds a block of weights per reduction step.
            let acc = unsafe { block::<S, PIX, NV>(s, src, offs, w.as_ptr()) };
            let at = q0 * g.nc + b * block_c;
            assert!(at + (count - 1) * g.nc + lanes <= out.len());
            // SAFETY: pixel p < count's `lanes` outputs lie at `at + p * nc`,
            // inside `out` by the assert above (MaybeUninit<f32> has the
            // layout of f32).
            unsafe { store(s, acc, count, lanes, out.as_mut_ptr().add(at).cast::<f32>(), g.nc) };
            q0 += count;
        }
    }
}

/// Stores the first `lanes` sums of pixels `p < count` of a block at
/// `dst + p * stride`. Every index into `acc` is a constant (the common
/// full block stores straight from the registers; others with prefix
/// stores), because indexing it with a run-time count makes the compiler
/// keep the accumulators in memory through the whole reduction.
///
/// # Safety
/// `count <= PIX`, `lanes <= NV * LANES`, and for each `p < count`,
/// `dst + p * stride .. + lanes` is writable.
#[inline(always)]
pub(super) unsafe fn store<S: Simd, const PIX: usize, const NV: usize>(
    s: S,
    acc: [[S::F; NV]; PIX],
    count: usize,
    lanes: usize,
    dst: *mut f32,
    stride: usize,
) {
    // SAFETY: the caller's contract covers every pointer formed here.
    unsafe {
        if count == PIX && lanes == NV * S::LANES {
            for (p, acc_p) in acc.iter().enumerate() {
                for (v, &a) in acc_p.iter().enumerate() {
                    s.store(dst.add(p * stride + v * S::LANES), a);
                }
            }
            return;
        }
        for (p, acc_p) in acc.iter().enumerate() {
            if p >= count {
                break;
            }
            for (v, &a) in acc_p.iter().enumerate() {
                let n = lanes.saturating_sub(v * S::LANES).min(S::LANES);
                if n > 0 {
                    s.store_prefix(dst.add(p * stride + v * S::LANES), n, a);
                }
            }
        }
    }
}

/// The sums of `PIX` pixels x `NV` vectors of output channels over a
/// reduction whose step `t` reads input `src[p] + offs[t]` of pixel `p`.
/// One loop over the steps (rather than nested loops over contiguous runs,
/// which stored the accumulators back at the end of every run).
///
/// # Safety
/// `src[p] + off` is readable for every pixel `p` and offset `off`, and `w`
/// holds `NV * LANES` floats per step.
#[inline(always)]
pub(super) unsafe fn block<S: Simd, const PIX: usize, const NV: usize>(
    s: S,
    src: [*const f32; PIX],
    offs: &[usize],
    mut w: *const f32,
) -> [[S::F; NV]; PIX] {
    let mut acc = [[s.zero(); NV]; PIX];
    for &off in offs {
        // SAFETY: the caller's contract covers every pointer formed here.
        unsafe {
            step(s, &mut acc, &src, off, w);
            w = w.add(NV * S::LANES);
        }
    }
    acc
}

/// [`block`] where the reduction is one run of `len` consecutive inputs
/// from each pixel's start (the Winograd products): no offset table to
/// load.
///
/// # Safety
/// `src[p] .. src[p] + len` is readable for every pixel `p`, and `w` holds
/// `NV * LANES` floats per step.
#[inline(always)]
pub(super) unsafe fn block_run<S: Simd, const PIX: usize, const NV: usize>(
    s: S,
    src: [*const f32; PIX],
    len: usize,
    mut w: *const f32,
) -> [[S::F; NV]; PIX] {
    let mut acc = [[s.zero(); NV]; PIX];
    for t in 0..len {
        // SAFETY: the caller's contract covers every pointer formed here.
        unsafe {
            step(s, &mut acc, &src, t, w);
            w = w.add(NV * S::LANES);
        }
    }
    acc
}

/// One reduction step: input `src[p] + off` of each pixel times the
/// weights at `w`, added to the pixel's accumulators.
///
/// # Safety
/// `src[p] + off` readable for every pixel, `NV * LANES` floats at `w`.
#[inline(always)]
unsafe fn step<S: Simd, const PIX: usize, const NV: usize>(
    s: S,
    acc: &mut [[S::F; NV]; PIX],
    src: &[*const f32; PIX],
    off: usize,
    w: *const f32,
) {
    // SAFETY: the caller's contract.
    unsafe {
        // Loops, not `array::from_fn`: a closure is compiled for the
        // baseline target unless inlined, and an intrinsic in it becomes a
        // call.
        let mut wv = [s.zero(); NV];
        for (v, wv) in wv.iter_mut().enumerate() {
            *wv = s.load(w.add(v * S::LANES));
        }
        for p in 0..PIX {
            let x = s.broadcast(src[p].add(off));
            for v in 0..NV {
                acc[p][v] = s.mul_add(x, wv[v], acc[p][v]);
            }
        }
    }
}
