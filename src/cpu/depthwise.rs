//! Depthwise convolution (`groups = c`, one kernel per channel): one pass
//! over NHWC input, vectorised along channels. It is memory-bound (`kh * kw`
//! multiply-adds per output against one input and one output value), so it
//! reads the input in place, with no padded copy and no repacking; each
//! piece's epilogue runs while the piece is in cache.
//!
//! The geometry it takes has `nc == c` (a channel multiplier is expanded
//! by the caller) and kernels `(kh, kw, 1, c)`: tap `(i, j)` of channel
//! `ch` is `k[(i * kw + j) * c + ch]`. Zero padding only (other border
//! modes are padded by the caller); padded taps still multiply their zero,
//! so `0 * inf` in a kernel gives NaN as in the reference.

use std::mem::MaybeUninit;

use super::pieces::{finish, for_each_piece_uninit, piece_rows, Piece, TILE_FLOATS};
use super::simd::{dispatch, Isa, Simd, WithSimd};
use crate::epilogue::Epilogue;
use crate::shape::Conv2dGeometry;

/// The depthwise convolution with the vectors of `isa`.
pub(super) fn conv(isa: Isa, x: &[f32], k: &[f32], o: &mut [MaybeUninit<f32>], g: &Conv2dGeometry, ep: &Epilogue) {
    debug_assert!(g.nc == g.c && g.group_c() == 1);
    let row_elems = g.ow * g.c;
    let rows = piece_rows(g.oh, row_elems, g.m, TILE_FLOATS);
    for_each_piece_uninit(o, g.m, g.oh, row_elems, rows, |p, dst| {
        dispatch(
            isa,
            Band {
                x,
                k,
                g,
                p,
                dst: &mut *dst,
            },
        );
        // SAFETY: `Band` stores every channel of every output pixel.
        unsafe { finish(dst, ep, g.nc) };
    });
}

/// One piece of output rows.
struct Band<'a> {
    x: &'a [f32],
    k: &'a [f32],
    g: &'a Conv2dGeometry,
    p: Piece,
    dst: &'a mut [MaybeUninit<f32>],
}

impl WithSimd for Band<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> Self::Output {
        let Band { x, k, g, p, dst } = self;
        let c = g.c;
        let image_len = g.h * g.w * c;
        // Offsets of the taps from a window's first cell, in HWIO order.
        let offs: Vec<usize> = (0..g.kh)
            .flat_map(|i| (0..g.kw).map(move |j| (i * g.dh * g.w + j * g.dw) * c))
            .collect();
        // Output columns whose taps all lie inside the image.
        let ekw = g.extent().1;
        let ox_lo = g.pads.left.div_ceil(g.sw).min(g.ow);
        let ox_hi = (g.w + g.pads.left)
            .checked_sub(ekw)
            .map_or(0, |last| last / g.sw + 1)
            .clamp(ox_lo, g.ow);
        let mut ys: Vec<Option<usize>> = Vec::with_capacity(g.kh);
        let mut xs: Vec<Option<usize>> = Vec::with_capacity(g.kw);
        let row_elems = g.ow * c;
        // 3 x 3 windows on neighbouring columns share their inputs.
        let unit_3x3 = g.kh == 3 && g.kw == 3 && g.sw == 1 && g.dw == 1 && c.is_multiple_of(S::LANES);
        let mut r = 0usize;
        for n in p.n0..p.n1 {
            let image = &x[n * image_len..(n + 1) * image_len];
            for oy in p.oy0..p.oy1 {
                let out_row = &mut dst[r * row_elems..(r + 1) * row_elems];
                r += 1;
                ys.clear();
                ys.extend((0..g.kh).map(|i| (oy * g.sh + i * g.dh).checked_sub(g.pads.top).filter(|&y| y < g.h)));
                let inner = if ys.iter().all(Option::is_some) {
                    ox_lo..ox_hi
                } else {
                    0..0
                };
                let mut ox = 0;
                while ox < g.ow {
                    // Rows in the padding multiply zeros (the top and bottom
                    // rows of a `same` layer take this path too).
                    if unit_3x3 && ox >= ox_lo && ox + 8 <= ox_hi {
                        let x0 = ox - g.pads.left;
                        let rows = [ys[0], ys[1], ys[2]].map(|y| y.map(|y| &image[(y * g.w + x0) * c..]));
                        runs8_3x3(s, rows, k, &mut out_row[ox * c..ox_hi * c]);
                        ox = ox_hi;
                        continue;
                    }
                    if inner.contains(&ox) {
                        let y0 = ys[0].expect("an inside row");
                        let base = (y0 * g.w + ox * g.sw - g.pads.left) * c;
                        // Four pixels at a time: eight independent chains of
                        // multiply-adds (one alone would wait on each
                        // one's latency), each weight loaded once for four.
                        let px = if ox + 4 <= inner.end { 4 } else { 1 };
                        let out = &mut out_row[ox * c..(ox + px) * c];
                        if px == 4 {
                            interior4(s, &image[base..], g.sw * c, k, &offs, out);
                        } else {
                            interior(s, &image[base..], k, &offs, out);
                        }
                        ox += px;
                        continue;
                    }
                    xs.clear();
                    xs.extend((0..g.kw).map(|j| (ox * g.sw + j * g.dw).checked_sub(g.pads.left).filter(|&v| v < g.w)));
                    border(s, image, k, g, &ys, &xs, &mut out_row[ox * c..(ox + 1) * c]);
                    ox += 1;
                }
            }
        }
    }
}

/// One output pixel whose taps all lie inside the image: `src` starts at
/// its window's first cell, tap `t` is at `src[offs[t]..]`.
#[inline(always)]
fn interior<S: Simd>(s: S, src: &[f32], k: &[f32], offs: &[usize], out: &mut [MaybeUninit<f32>]) {
    let c = out.len();
    let vectors = c / S::LANES * S::LANES;
    let last = offs[offs.len() - 1];
    assert!(src.len() >= last + c && k.len() >= offs.len() * c);
    let mut cb = 0;
    while cb < vectors {
        let mut acc = s.zero();
        for (t, &off) in offs.iter().enumerate() {
            // SAFETY: off + cb + LANES <= last + c <= src.len() and
            // t * c + cb + LANES <= offs.len() * c <= k.len() (asserted).
            unsafe {
                let v = s.load(src.as_ptr().add(off + cb));
                let w = s.load(k.as_ptr().add(t * c + cb));
                acc = s.mul_add(v, w, acc);
            }
        }
        // SAFETY: cb + LANES <= c = out.len().
        unsafe { s.store(out.as_mut_ptr().add(cb).cast(), acc) };
        cb += S::LANES;
    }
    for ch in vectors..c {
        let acc = offs
            .iter()
            .enumerate()
            .fold(0f32, |acc, (t, &off)| acc + src[off + ch] * k[t * c + ch]);
        out[ch] = MaybeUninit::new(acc);
    }
}

/// Four neighbouring output pixels whose taps all lie inside the image,
/// each `step` floats after the one before in `src`; `out` holds all four.
#[inline(always)]
fn interior4<S: Simd>(s: S, src: &[f32], step: usize, k: &[f32], offs: &[usize], out: &mut [MaybeUninit<f32>]) {
    let c = out.len() / 4;
    let last = offs[offs.len() - 1];
    assert!(src.len() >= last + 3 * step + c && k.len() >= offs.len() * c);
    let (x, w, o) = (src.as_ptr(), k.as_ptr(), out.as_mut_ptr().cast::<f32>());
    let mut cb = 0;
    // Two vectors of channels per pixel.
    while cb + 2 * S::LANES <= c {
        let mut acc = [s.zero(); 8];
        for (t, &off) in offs.iter().enumerate() {
            // SAFETY: every load ends by last + 3 * step + c <= src.len()
            // or by offs.len() * c <= k.len() (asserted above).
            unsafe {
                let w0 = s.load(w.add(t * c + cb));
                let w1 = s.load(w.add(t * c + cb + S::LANES));
                for p in 0..4 {
                    let at = off + p * step + cb;
                    acc[2 * p] = s.mul_add(s.load(x.add(at)), w0, acc[2 * p]);
                    acc[2 * p + 1] = s.mul_add(s.load(x.add(at + S::LANES)), w1, acc[2 * p + 1]);
                }
            }
        }
        for p in 0..4 {
            // SAFETY: p * c + cb + 2 * LANES <= 4 * c = out.len().
            unsafe {
                s.store(o.add(p * c + cb), acc[2 * p]);
                s.store(o.add(p * c + cb + S::LANES), acc[2 * p + 1]);
            }
        }
        cb += 2 * S::LANES;
    }
    // One vector of channels per pixel.
    while cb + S::LANES <= c {
        let mut acc = [s.zero(); 4];
        for (t, &off) in offs.iter().enumerate() {
            // SAFETY: as above.
            unsafe {
                let w0 = s.load(w.add(t * c + cb));
                for (p, a) in acc.iter_mut().enumerate() {
                    *a = s.mul_add(s.load(x.add(off + p * step + cb)), w0, *a);
                }
            }
        }
        for (p, a) in acc.into_iter().enumerate() {
            // SAFETY: p * c + cb + LANES <= out.len().
            unsafe { s.store(o.add(p * c + cb), a) };
        }
        cb += S::LANES;
    }
    for ch in cb..c {
        for p in 0..4 {
            let acc = offs
                .iter()
                .enumerate()
                .fold(0f32, |acc, (t, &off)| acc + src[off + p * step + ch] * k[t * c + ch]);
            out[p * c + ch] = MaybeUninit::new(acc);
        }
    }
}

/// Neighbouring output pixels (at least eight) of a 3 x 3 window with unit
/// stride and dilation along rows, every column inside the image, computed
/// in runs of eight: `rows[i]` starts at the first pixel's window in kernel
/// row `i`, `None` for a row in the padding (its taps multiply zeros, so
/// `0 * inf` still gives NaN). Where the pixels are not a whole number of
/// runs, the last run ends at the last pixel and recomputes a few of the
/// run before it (the same bits).
///
/// The row is swept in strips of [`STRIP_RUNS`] runs, one vector of
/// channels at a time: the nine weights of that vector stay in registers
/// for the strip, and the strip's input (three rows of it) stays in the L1
/// cache for the next vector of channels. Within a run each of the ten
/// input columns a kernel row covers is loaded once and multiplied into the
/// (up to) three outputs that read it (30 loads for 72 multiply-adds
/// instead of 72); that visits each output's taps in the order of
/// [`interior`] and [`border`], so the results are the same bits.
#[inline(always)]
fn runs8_3x3<S: Simd>(s: S, rows: [Option<&[f32]>; 3], k: &[f32], out: &mut [MaybeUninit<f32>]) {
    const RUN: usize = 8;
    let c = k.len() / 9;
    let pixels = out.len() / c;
    assert!(c.is_multiple_of(S::LANES) && k.len() == 9 * c && out.len() == pixels * c && pixels >= RUN);
    assert!(rows.iter().flatten().all(|r| r.len() >= (pixels + 2) * c));
    let rows = rows.map(|r| r.map(<[f32]>::as_ptr));
    let (w, o) = (k.as_ptr(), out.as_mut_ptr().cast::<f32>());
    let runs = pixels.div_ceil(RUN);
    for strip in (0..runs).step_by(STRIP_RUNS) {
        for cb in (0..c).step_by(S::LANES) {
            // SAFETY: a weight ends at 8 * c + cb + LANES <= 9 * c = k.len().
            let wv: [[S::F; 3]; 3] =
                std::array::from_fn(|i| std::array::from_fn(|j| unsafe { s.load(w.add((i * 3 + j) * c + cb)) }));
            for run in strip..(strip + STRIP_RUNS).min(runs) {
                let first = (run * RUN).min(pixels - RUN) * c + cb;
                let mut acc = [s.zero(); RUN];
                for (row, wi) in rows.iter().zip(&wv) {
                    for col in 0..RUN + 2 {
                        let v = match row {
                            // SAFETY: first + (RUN + 1) * c + LANES <=
                            // (pixels + 2) * c <= the row's length
                            // (asserted above).
                            Some(r) => unsafe { s.load(r.add(first + col * c)) },
                            None => s.zero(),
                        };
                        // Column `col` is tap `j` of output `col - j`.
                        for (j, &wj) in wi.iter().enumerate() {
                            if let Some(p) = col.checked_sub(j).filter(|&p| p < RUN) {
                                acc[p] = s.mul_add(v, wj, acc[p]);
                            }
                        }
                    }
                }
                for (p, a) in acc.into_iter().enumerate() {
                    // SAFETY: first + p * c + LANES <= pixels * c =
                    // out.len().
                    unsafe { s.store(o.add(first + p * c), a) };
                }
            }
        }
    }
}

/// Runs of eight pixels per strip of [`runs8_3x3`]: a strip of 32-channel
/// pixels reads 34 columns of three rows, about 13 KiB, which leaves the
/// rest of a 32 KiB L1 cache for the output and the next rows.
const STRIP_RUNS: usize = 4;

/// One output pixel with taps in the padding (`None` rows or columns):
/// those taps multiply zeros.
#[inline(always)]
fn border<S: Simd>(
    s: S,
    image: &[f32],
    k: &[f32],
    g: &Conv2dGeometry,
    ys: &[Option<usize>],
    xs: &[Option<usize>],
    out: &mut [MaybeUninit<f32>],
) {
    let c = g.c;
    let vectors = c / S::LANES * S::LANES;
    let mut cb = 0;
    while cb < vectors {
        let mut acc = s.zero();
        for (i, y) in ys.iter().enumerate() {
            for (j, xx) in xs.iter().enumerate() {
                let w = &k[(i * g.kw + j) * c + cb..][..S::LANES];
                // SAFETY: `w` holds LANES floats, and so does the input
                // slice taken below.
                let wv = unsafe { s.load(w.as_ptr()) };
                let v = match (y, xx) {
                    (Some(y), Some(xx)) => {
                        let src = &image[(y * g.w + xx) * c + cb..][..S::LANES];
                        unsafe { s.load(src.as_ptr()) }
                    }
                    _ => s.zero(),
                };
                acc = s.mul_add(v, wv, acc);
            }
        }
        let dst = &mut out[cb..cb + S::LANES];
        // SAFETY: `dst` holds LANES floats.
        unsafe { s.store(dst.as_mut_ptr().cast(), acc) };
        cb += S::LANES;
    }
    for ch in vectors..c {
        let mut acc = 0f32;
        for (i, y) in ys.iter().enumerate() {
            for (j, xx) in xs.iter().enumerate() {
                let v = match (y, xx) {
                    (Some(y), Some(xx)) => image[(y * g.w + xx) * c + ch],
                    _ => 0.0,
                };
                acc += v * k[(i * g.kw + j) * c + ch];
            }
        }
        out[ch] = MaybeUninit::new(acc);
    }
}
