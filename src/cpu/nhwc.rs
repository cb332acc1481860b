//! Direct NHWC convolution for many channels (x86_64 with AVX2 and FMA).
//!
//! In NHWC the channels of one pixel are contiguous, and in HWIO the output
//! channels of one tap are contiguous, so an output block of `PIX` pixels x
//! 16 channels is a small GEMM whose reduction runs over contiguous memory:
//! for each tap and input channel, broadcast one input value per pixel and
//! multiply-add it with 16 weights. The `PIX * 2` accumulators stay in
//! registers for the whole reduction (`kh * kw * c` steps), so there is no
//! im2col copy, no packing of the input and no reload of partial sums, which
//! is where a general GEMM on im2col tiles loses time.
//!
//! Each reduction step reads input `start + off[step]` of its pixel, from a
//! table of offsets made once per call (without dilation, `kh` runs of
//! `kw * c` consecutive offsets), so the reduction is one loop and its 12
//! accumulators stay in registers from start to end.
//! Padding is handled by a zero-padded copy of the band of input rows a
//! piece reads (cheap next to the arithmetic, which reads each input value
//! `kh * kw * nc` times); without padding the image is read in place.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::fast::{for_each_piece_uninit, piece_rows, prefetch_lines, LINE, SCRATCH};
use crate::shape::Conv2dGeometry;

/// Output channels per block: two 8-wide registers.
pub(super) const BLOCK: usize = 16;

/// Output pixels per block: 12 accumulators + 2 weight registers + 1
/// broadcast of the 16 ymm registers.
pub(super) const PIX: usize = 6;

/// Floats of padded input band one piece aims for (about the L2 cache).
const BAND_FLOATS: usize = 1 << 16;

/// Weights repacked as `[block][tap][16]` (HWIO taps, output channels past
/// `nc` zero), 64-byte aligned so every weight load is one cache line half.
struct Packed {
    buf: Vec<f32>,
    start: usize,
    per_block: usize,
}

impl Packed {
    fn new(k: &[f32], g: &Conv2dGeometry) -> Self {
        let taps = g.reduction_len();
        let per_block = taps * BLOCK;
        let blocks = g.nc.div_ceil(BLOCK);
        let mut buf = vec![0f32; blocks * per_block + 16];
        let start = buf.as_ptr().align_offset(64).min(16);
        for t in 0..taps {
            for (oc, &v) in k[t * g.nc..(t + 1) * g.nc].iter().enumerate() {
                buf[start + (oc / BLOCK) * per_block + t * BLOCK + oc % BLOCK] = v;
            }
        }
        Packed { buf, start, per_block }
    }

    fn block(&self, b: usize) -> &[f32] {
        &self.buf[self.start + b * self.per_block..self.start + (b + 1) * self.per_block]
    }
}

/// Where the input of one piece lives: output pixel `q` of the band reads
/// `src[starts[q] + off]` at each reduction step's offset `off`.
struct Source<'a> {
    src: &'a [f32],
    starts: &'a [usize],
}

/// The convolution; the caller has checked AVX2 and FMA at run time.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
pub(super) unsafe fn conv(x: &[f32], k: &[f32], o: &mut [MaybeUninit<f32>], g: &Conv2dGeometry) {
    let packed = Packed::new(k, g);
    let padded = g.pads != Default::default();
    let ekh = g.extent().0;
    // Padded columns a row of outputs reads.
    let width = g.span_cols();
    let per_row = g.sh * width * g.c;
    let rows = piece_rows(g.oh, per_row, g.m, BAND_FLOATS);
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
        // (Nested loops into a sized Vec: a flat_map collect grows it by
        // doubling, 5 % of a batch of 32x32 images.)
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
                let source = Source { src, starts: &starts };
                let out = &mut dst[i * band * g.ow * g.nc..(i + 1) * band * g.ow * g.nc];
                // SAFETY: forwarded from this function's contract.
                unsafe { piece(&source, &offs, &packed, g, next, out) };
            }
        })
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

/// Every output of one image's band (`out`, NHWC), prefetching `next` (the
/// next image's input, or nothing) a share of its cache lines per block of
/// pixels, so that its loads overlap these multiply-adds instead of
/// stalling the next image's copy into the band.
#[target_feature(enable = "avx2,fma")]
unsafe fn piece(
    source: &Source,
    offs: &[usize],
    packed: &Packed,
    g: &Conv2dGeometry,
    next: &[f32],
    out: &mut [MaybeUninit<f32>],
) {
    let starts = source.starts;
    let pixels = starts.len();
    // The last input any output reads must lie inside the source: this
    // bounds every pointer the kernel forms below.
    let reach = offs.iter().max().map_or(0, |&off| off + 1);
    assert!(pixels > 0 && starts[pixels - 1] + reach <= source.src.len());
    assert!(out.len() == pixels * g.nc);
    // One offset per reduction step: `block` reads BLOCK weights per step.
    assert!(offs.len() == g.reduction_len());
    let base = source.src.as_ptr();
    // Lines of `next` per pixel block.
    let lines = next.len().div_ceil(LINE);
    let share = lines.div_ceil(pixels.div_ceil(PIX));
    let mut fetched = 0;
    for b in 0..g.nc.div_ceil(BLOCK) {
        let w = packed.block(b);
        assert!(w.len() == g.reduction_len() * BLOCK);
        let lanes = BLOCK.min(g.nc - b * BLOCK);
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
            // `w` holds BLOCK floats per reduction step.
            let acc = unsafe { block(src, offs, w.as_ptr()) };
            let at = q0 * g.nc + b * BLOCK;
            assert!(at + (count - 1) * g.nc + lanes <= out.len());
            // SAFETY: pixel p < count's `lanes` outputs lie at `at + p * nc`,
            // inside `out` by the assert above (MaybeUninit<f32> has the
            // layout of f32).
            unsafe { store(acc, count, lanes, out.as_mut_ptr().add(at).cast::<f32>(), g.nc) };
            q0 += count;
        }
    }
}

/// Stores the first `lanes` sums of pixels `p < count` of a block at
/// `dst + p * stride`. Every index into `acc` is a constant (the common
/// full block stores straight from the registers; others go through an
/// array), because indexing it with a run-time count makes the compiler
/// keep the accumulators in memory through the whole reduction.
///
/// # Safety
/// AVX2; `count <= PIX`, `lanes <= BLOCK`, and for each `p < count`,
/// `dst + p * stride .. + lanes` is writable and does not overlap `acc`.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn store(acc: [[__m256; 2]; PIX], count: usize, lanes: usize, dst: *mut f32, stride: usize) {
    // SAFETY: the caller's contract covers every pointer formed here.
    unsafe {
        if count == PIX && lanes == BLOCK {
            for (p, acc_p) in acc.iter().enumerate() {
                _mm256_storeu_ps(dst.add(p * stride), acc_p[0]);
                _mm256_storeu_ps(dst.add(p * stride + 8), acc_p[1]);
            }
            return;
        }
        let mut sums = [0f32; PIX * BLOCK];
        for (p, acc_p) in acc.iter().enumerate() {
            _mm256_storeu_ps(sums.as_mut_ptr().add(p * BLOCK), acc_p[0]);
            _mm256_storeu_ps(sums.as_mut_ptr().add(p * BLOCK + 8), acc_p[1]);
        }
        for p in 0..count.min(PIX) {
            std::ptr::copy_nonoverlapping(sums.as_ptr().add(p * BLOCK), dst.add(p * stride), lanes.min(BLOCK));
        }
    }
}

/// The sums of `PIX` pixels x 16 output channels over a reduction whose
/// step `t` reads input `src[p] + offs[t]` of pixel `p`. One loop over the
/// steps (rather than nested loops over contiguous runs: measured 7-12 %
/// slower on 3x3 and 7x7 RGB layers, the accumulators being stored back at
/// the end of every run).
///
/// # Safety
/// AVX2 and FMA; `src[p] + off` is readable for every pixel `p` and offset
/// `off`, and `w` holds 16 floats per step.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn block(src: [*const f32; PIX], offs: &[usize], mut w: *const f32) -> [[__m256; 2]; PIX] {
    let mut acc = [[_mm256_setzero_ps(); 2]; PIX];
    for &off in offs {
        // SAFETY: the caller's contract covers every pointer formed here.
        unsafe {
            step(&mut acc, &src, off, w);
            w = w.add(BLOCK);
        }
    }
    acc
}

/// [`block`] where the reduction is one run of `len` consecutive inputs
/// from each pixel's start (the Winograd products): no offset table to
/// load, measured 3-5 % faster there.
///
/// # Safety
/// AVX2 and FMA; `src[p] .. src[p] + len` is readable for every pixel `p`,
/// and `w` holds 16 floats per step.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn block_run(src: [*const f32; PIX], len: usize, mut w: *const f32) -> [[__m256; 2]; PIX] {
    let mut acc = [[_mm256_setzero_ps(); 2]; PIX];
    for t in 0..len {
        // SAFETY: the caller's contract covers every pointer formed here.
        unsafe {
            step(&mut acc, &src, t, w);
            w = w.add(BLOCK);
        }
    }
    acc
}

/// One reduction step: input `src[p] + off` of each pixel times the 16
/// weights at `w`, added to the pixel's accumulators.
///
/// # Safety
/// AVX2 and FMA; `src[p] + off` readable for every pixel, 16 floats at `w`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn step(acc: &mut [[__m256; 2]; PIX], src: &[*const f32; PIX], off: usize, w: *const f32) {
    // SAFETY: the caller's contract.
    unsafe {
        let w0 = _mm256_loadu_ps(w);
        let w1 = _mm256_loadu_ps(w.add(8));
        for p in 0..PIX {
            let v = _mm256_broadcast_ss(&*src[p].add(off));
            acc[p][0] = _mm256_fmadd_ps(v, w0, acc[p][0]);
            acc[p][1] = _mm256_fmadd_ps(v, w1, acc[p][1]);
        }
    }
}
