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
        let vectors = c / S::LANES * S::LANES;
        let mut ys: Vec<Option<usize>> = Vec::with_capacity(g.kh);
        let mut xs: Vec<Option<usize>> = Vec::with_capacity(g.kw);
        let mut px = 0usize;
        for n in p.n0..p.n1 {
            let image = &x[n * image_len..(n + 1) * image_len];
            for oy in p.oy0..p.oy1 {
                ys.clear();
                ys.extend((0..g.kh).map(|i| (oy * g.sh + i * g.dh).checked_sub(g.pads.top).filter(|&y| y < g.h)));
                for ox in 0..g.ow {
                    xs.clear();
                    xs.extend(
                        (0..g.kw).map(|j| (ox * g.sw + j * g.dw).checked_sub(g.pads.left).filter(|&v| v < g.w)),
                    );
                    let out = &mut dst[px * c..(px + 1) * c];
                    px += 1;
                    let mut cb = 0;
                    while cb < vectors {
                        let mut acc = s.zero();
                        for (i, y) in ys.iter().enumerate() {
                            for (j, xx) in xs.iter().enumerate() {
                                let w = &k[(i * g.kw + j) * c + cb..][..S::LANES];
                                // SAFETY: `w` holds LANES floats, and so does
                                // the input slice taken below.
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
            }
        }
    }
}
