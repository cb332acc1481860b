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
//! Without dilation the `kw` taps of one kernel row are one contiguous run
//! of `kw * c` input values, so the reduction is `kh` runs of `kw * c`.
//! Padding is handled by a zero-padded copy of the band of input rows a
//! piece reads (cheap next to the arithmetic, which reads each input value
//! `kh * kw * nc` times); without padding the image is read in place.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::fast::{for_each_piece_uninit, piece_rows, SCRATCH};
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
/// `src[starts[q] + off..]` for each run `(off, len)` of the reduction.
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
    // Offsets of the reduction's contiguous runs from a pixel's first input.
    let mut runs = Vec::new();
    for i in 0..g.kh {
        if g.dw == 1 {
            runs.push((i * g.dh * row_stride, g.kw * g.c));
        } else {
            runs.extend((0..g.kw).map(|j| (i * g.dh * row_stride + j * g.dw * g.c, g.c)));
        }
    }
    let image_len = g.h * g.w * g.c;
    // `piece` stores every output (every pixel of every channel block), so
    // the output is not zeroed first.
    for_each_piece_uninit(o, g.m, g.oh, g.ow * g.nc, rows, |p, dst| {
        let band = p.oy1 - p.oy0;
        let band_rows = (band - 1) * g.sh + ekh;
        // First input of each output pixel of the band (the same for every
        // image of the piece), without a division per pixel.
        let starts: Vec<usize> = (0..band)
            .flat_map(|r| (0..g.ow).map(move |ox| r * g.sh * row_stride + ox * g.sw * g.c))
            .collect();
        SCRATCH.with_borrow_mut(|scratch| {
            if padded {
                // Cells outside the image stay zero for every image of the piece.
                scratch.clear();
                scratch.resize(band_rows * width * g.c, 0.0);
            }
            for (i, n) in (p.n0..p.n1).enumerate() {
                let image = &x[n * image_len..(n + 1) * image_len];
                let src: &[f32] = if padded {
                    fill_band(image, g, p.oy0, band_rows, width, scratch);
                    scratch
                } else {
                    &image[p.oy0 * g.sh * g.w * g.c..]
                };
                let source = Source { src, starts: &starts };
                let out = &mut dst[i * band * g.ow * g.nc..(i + 1) * band * g.ow * g.nc];
                // SAFETY: forwarded from this function's contract.
                unsafe { piece(&source, &runs, &packed, g, out) };
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

/// Every output of one image's band (`out`, NHWC).
#[target_feature(enable = "avx2,fma")]
unsafe fn piece(
    source: &Source,
    runs: &[(usize, usize)],
    packed: &Packed,
    g: &Conv2dGeometry,
    out: &mut [MaybeUninit<f32>],
) {
    let starts = source.starts;
    let pixels = starts.len();
    // The last input any output reads must lie inside the source: this
    // bounds every pointer the kernel forms below.
    let reach = runs.iter().map(|&(off, len)| off + len).max().unwrap_or(0);
    assert!(pixels > 0 && starts[pixels - 1] + reach <= source.src.len());
    assert!(out.len() == pixels * g.nc);
    // The runs cover the reduction once: `block` reads BLOCK weights per step.
    assert!(runs.iter().map(|&(_, len)| len).sum::<usize>() == g.reduction_len());
    let base = source.src.as_ptr();
    for b in 0..g.nc.div_ceil(BLOCK) {
        let w = packed.block(b);
        assert!(w.len() == g.reduction_len() * BLOCK);
        let lanes = BLOCK.min(g.nc - b * BLOCK);
        // Pixels run across row ends: a block's pixels need not share a row,
        // so only the band's last block can be short.
        let mut q0 = 0;
        while q0 < pixels {
            let count = PIX.min(pixels - q0);
            // A short block repeats its last pixel; the extra sums are dropped.
            // SAFETY: every start is that of a pixel of the band, checked above.
            let src: [*const f32; PIX] = std::array::from_fn(|p| unsafe { base.add(starts[q0 + p.min(count - 1)]) });
            // SAFETY: runs from each start stay within `reach`; `w` holds
            // BLOCK floats per reduction step.
            let acc = unsafe { block(src, runs, w.as_ptr()) };
            for (p, acc_p) in acc.iter().enumerate().take(count) {
                let at = (q0 + p) * g.nc + b * BLOCK;
                let dst = &mut out[at..at + lanes];
                if lanes == BLOCK {
                    // SAFETY: `dst` holds BLOCK = 16 floats (MaybeUninit<f32>
                    // has the layout of f32).
                    unsafe {
                        let d = dst.as_mut_ptr().cast::<f32>();
                        _mm256_storeu_ps(d, acc_p[0]);
                        _mm256_storeu_ps(d.add(8), acc_p[1]);
                    }
                } else {
                    let mut sums = [0f32; BLOCK];
                    // SAFETY: `sums` holds BLOCK = 16 floats.
                    unsafe {
                        _mm256_storeu_ps(sums.as_mut_ptr(), acc_p[0]);
                        _mm256_storeu_ps(sums.as_mut_ptr().add(8), acc_p[1]);
                    }
                    for (d, &v) in dst.iter_mut().zip(&sums) {
                        d.write(v);
                    }
                }
            }
            q0 += count;
        }
    }
}

/// The sums of `PIX` pixels x 16 output channels over the whole reduction.
///
/// # Safety
/// AVX2 and FMA; for each run `(off, len)` and pixel `p`,
/// `src[p] + off .. src[p] + off + len` is readable, and `w` holds 16 floats
/// per step of all runs.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn block(src: [*const f32; PIX], runs: &[(usize, usize)], mut w: *const f32) -> [[__m256; 2]; PIX] {
    let mut acc = [[_mm256_setzero_ps(); 2]; PIX];
    for &(off, len) in runs {
        // SAFETY: the caller's contract covers every pointer formed here.
        unsafe {
            let s: [*const f32; PIX] = std::array::from_fn(|p| src[p].add(off));
            for t in 0..len {
                let w0 = _mm256_loadu_ps(w);
                let w1 = _mm256_loadu_ps(w.add(8));
                w = w.add(BLOCK);
                for p in 0..PIX {
                    let v = _mm256_broadcast_ss(&*s[p].add(t));
                    acc[p][0] = _mm256_fmadd_ps(v, w0, acc[p][0]);
                    acc[p][1] = _mm256_fmadd_ps(v, w1, acc[p][1]);
                }
            }
        }
    }
    acc
}
