//! The fast CPU path, checked against [`super::reference`] by the golden and
//! property tests.
//!
//! Three convolution strategies, chosen by shape:
//! - pointwise (1x1, stride 1, no padding): NHWC images already are the
//!   `(pixels x c)` matrix, so the convolution is one GEMM with no copies;
//! - direct (few channels in and out, as in grayscale and RGB filtering):
//!   a zero-padded planar copy of a band of rows, split into stride phases so
//!   every tap reads a contiguous run, then vectorised multiply-adds with the
//!   accumulators in registers;
//! - im2col + GEMM otherwise, on bounded tiles of output rows (never the whole
//!   batch), through the `gemm` crate.
//!
//! Work is split into (image, band of output rows) pieces run with rayon; each
//! piece writes a contiguous slice of the NHWC output. Padded cells take part
//! as zeros, products included, as in the reference.

use std::cell::RefCell;

use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use crate::shape::{Conv2dGeometry, Pool2dGeometry, PoolMode};

thread_local! {
    /// Per-thread workspace (planes or im2col tiles), reused across pieces.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats of workspace one piece aims for: a few hundred KiB, so a tile
/// stays in the L2 cache while the GEMM or the taps run over it.
const TILE_FLOATS: usize = 1 << 16;

/// Runs `f(n, oy0, oy1, out_rows)` over pieces of `rows` output rows of each
/// image, in parallel; `out` is the whole NHWC output.
fn for_each_band(
    out: &mut [f32],
    oh: usize,
    row_elems: usize,
    rows: usize,
    f: impl Fn(usize, usize, usize, &mut [f32]) + Sync,
) {
    let per_image = oh * row_elems;
    if per_image == 0 {
        return;
    }
    out.par_chunks_mut(per_image)
        .enumerate()
        .for_each(|(n, image_out)| {
            image_out
                .par_chunks_mut(rows * row_elems)
                .enumerate()
                .for_each(|(b, band)| {
                    let oy0 = b * rows;
                    f(n, oy0, oy0 + band.len() / row_elems, band)
                });
        });
}

/// Rows per piece so that `per_row` floats of work per output row stay near
/// [`TILE_FLOATS`], and the batch still offers enough pieces for every core.
fn band_rows(oh: usize, per_row: usize, m: usize) -> usize {
    let by_size = (TILE_FLOATS / per_row.max(1)).max(1);
    let threads = rayon::current_num_threads();
    // With few images, split each into several bands.
    let by_parallelism = if m >= 4 * threads {
        oh
    } else {
        oh.div_ceil((4 * threads).div_ceil(m.max(1))).max(1)
    };
    by_size.min(by_parallelism).min(oh).max(1)
}

/// Convolution; `g` must come from [`crate::Conv2dSpec::resolve`].
pub fn conv2d(
    images: ArrayView4<f32>,
    kernels: ArrayView4<f32>,
    g: &Conv2dGeometry,
) -> Array4<f32> {
    let images = images.as_standard_layout();
    let kernels = kernels.as_standard_layout();
    let x = images.as_slice().expect("standard layout");
    let k = kernels.as_slice().expect("standard layout");
    let mut out = Array4::<f32>::zeros(g.output_shape());
    let o = out.as_slice_mut().expect("fresh array is contiguous");
    let pointwise =
        g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pads == Default::default();
    if pointwise {
        conv_pointwise(x, k, o, g);
    } else if g.c * g.nc <= 16 && g.nc <= 4 {
        conv_direct(x, k, o, g);
    } else {
        conv_im2col(x, k, o, g);
    }
    out
}

/// `dst (m x n) = lhs (m x k) * rhs (k x n)`, all row-major and contiguous.
fn sgemm(m: usize, n: usize, k: usize, dst: &mut [f32], lhs: &[f32], rhs: &[f32]) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    // SAFETY: the asserts above keep every index the GEMM touches in bounds
    // (row-major strides: column stride 1, row stride = columns), and `dst`
    // does not alias the inputs (it is a `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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

fn conv_pointwise(x: &[f32], k: &[f32], o: &mut [f32], g: &Conv2dGeometry) {
    let rows = (TILE_FLOATS / g.c.max(g.nc)).max(64);
    o.par_chunks_mut(rows * g.nc)
        .enumerate()
        .for_each(|(b, dst)| {
            let p0 = b * rows;
            let p = dst.len() / g.nc;
            sgemm(p, g.nc, g.c, dst, &x[p0 * g.c..(p0 + p) * g.c], k);
        });
}

fn conv_im2col(x: &[f32], k: &[f32], o: &mut [f32], g: &Conv2dGeometry) {
    let kk = g.kh * g.kw * g.c;
    let row_elems = g.ow * g.nc;
    let rows = band_rows(g.oh, g.ow * kk, g.m);
    for_each_band(o, g.oh, row_elems, rows, |n, oy0, oy1, dst| {
        SCRATCH.with_borrow_mut(|cols| {
            let pixels = (oy1 - oy0) * g.ow;
            cols.clear();
            cols.resize(pixels * kk, 0.0);
            im2col(x, g, n, oy0, oy1, cols);
            sgemm(pixels, g.nc, kk, dst, cols, k);
        })
    });
}

/// Rows `[oy0, oy1)` of image `n` as a `(pixels x kh*kw*c)` matrix in HWIO
/// order; `cols` arrives zeroed, so padded cells are left alone.
fn im2col(x: &[f32], g: &Conv2dGeometry, n: usize, oy0: usize, oy1: usize, cols: &mut [f32]) {
    let kk = g.kh * g.kw * g.c;
    let image = &x[n * g.h * g.w * g.c..(n + 1) * g.h * g.w * g.c];
    for (r, oy) in (oy0..oy1).enumerate() {
        for ox in 0..g.ow {
            let row = &mut cols[(r * g.ow + ox) * kk..(r * g.ow + ox + 1) * kk];
            for i in 0..g.kh {
                let Some(y) = (oy * g.sh + i * g.dh)
                    .checked_sub(g.pads.top)
                    .filter(|&y| y < g.h)
                else {
                    continue;
                };
                for j in 0..g.kw {
                    let Some(xx) = (ox * g.sw + j * g.dw)
                        .checked_sub(g.pads.left)
                        .filter(|&v| v < g.w)
                    else {
                        continue;
                    };
                    let src = (y * g.w + xx) * g.c;
                    let dst = (i * g.kw + j) * g.c;
                    row[dst..dst + g.c].copy_from_slice(&image[src..src + g.c]);
                }
            }
        }
    }
}

/// Layout of the zero-padded planar band of the direct kernel:
/// `planes[ch][phase][row][q]` holds padded column `q * sw + phase`.
struct Planes {
    rows: usize,
    width: usize,
}

impl Planes {
    fn new(g: &Conv2dGeometry, band: usize) -> Self {
        let last = (g.ow - 1) * g.sw + (g.kw - 1) * g.dw;
        Planes {
            rows: (band - 1) * g.sh + (g.kh - 1) * g.dh + 1,
            width: last / g.sw + 1,
        }
    }

    fn plane(&self, ch: usize, phase: usize, sw: usize) -> usize {
        (ch * sw + phase) * self.rows * self.width
    }

    fn len(&self, g: &Conv2dGeometry) -> usize {
        g.c * g.sw * self.rows * self.width
    }
}

fn conv_direct(x: &[f32], k: &[f32], o: &mut [f32], g: &Conv2dGeometry) {
    let row_elems = g.ow * g.nc;
    let rows = band_rows(g.oh, g.c * g.sh * (g.ow * g.sw + g.kw * g.dw), g.m);
    let fma = has_fma();
    for_each_band(o, g.oh, row_elems, rows, |n, oy0, oy1, dst| {
        let layout = Planes::new(g, oy1 - oy0);
        SCRATCH.with_borrow_mut(|planes| {
            planes.clear();
            planes.resize(layout.len(g) + g.ow * g.nc, 0.0);
            let (planes, acc) = planes.split_at_mut(layout.len(g));
            fill_planes(x, g, &layout, n, oy0, planes);
            // Offsets of every tap for each output channel, relative to the
            // start of an output row's band rows.
            let taps: Vec<Vec<(usize, f32)>> = (0..g.nc)
                .map(|kc| {
                    let mut t = Vec::with_capacity(g.kh * g.kw * g.c);
                    for i in 0..g.kh {
                        for j in 0..g.kw {
                            let (q, phase) = ((j * g.dw) / g.sw, (j * g.dw) % g.sw);
                            for ch in 0..g.c {
                                let off =
                                    layout.plane(ch, phase, g.sw) + i * g.dh * layout.width + q;
                                t.push((off, k[((i * g.kw + j) * g.c + ch) * g.nc + kc]));
                            }
                        }
                    }
                    t
                })
                .collect();
            for (r, out_row) in dst.chunks_mut(row_elems).enumerate() {
                let base = r * g.sh * layout.width;
                for (kc, t) in taps.iter().enumerate() {
                    let acc_k = &mut acc[kc * g.ow..(kc + 1) * g.ow];
                    taps_row(fma, t, &planes[base..], acc_k);
                }
                if g.nc == 1 {
                    out_row.copy_from_slice(&acc[..g.ow]);
                } else {
                    for (ox, px) in out_row.chunks_mut(g.nc).enumerate() {
                        for (kc, v) in px.iter_mut().enumerate() {
                            *v = acc[kc * g.ow + ox];
                        }
                    }
                }
            }
        })
    });
}

/// Copies the input rows that output rows `[oy0, ..)` read into the planar,
/// phase-split layout; cells outside the image stay 0.
fn fill_planes(
    x: &[f32],
    g: &Conv2dGeometry,
    layout: &Planes,
    n: usize,
    oy0: usize,
    planes: &mut [f32],
) {
    let image = &x[n * g.h * g.w * g.c..(n + 1) * g.h * g.w * g.c];
    for r in 0..layout.rows {
        let Some(y) = (oy0 * g.sh + r)
            .checked_sub(g.pads.top)
            .filter(|&y| y < g.h)
        else {
            continue;
        };
        let src_row = &image[y * g.w * g.c..(y + 1) * g.w * g.c];
        // Padded column u = q * sw + phase holds image column u - left.
        let u0 = g.pads.left;
        let u1 = (g.pads.left + g.w).min(layout.width * g.sw);
        for u in u0..u1 {
            let (q, phase) = (u / g.sw, u % g.sw);
            let px = &src_row[(u - g.pads.left) * g.c..(u - g.pads.left + 1) * g.c];
            for (ch, &v) in px.iter().enumerate() {
                planes[layout.plane(ch, phase, g.sw) + r * layout.width + q] = v;
            }
        }
    }
}

/// `acc[x] = sum over taps of w * src[off + x]`, dispatched to an FMA build
/// where the processor has one.
fn taps_row(fma: bool, taps: &[(usize, f32)], src: &[f32], acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if fma {
        // SAFETY: `fma` is true only when `has_fma` saw AVX2 and FMA at run time.
        unsafe { taps_row_avx2(taps, src, acc) };
        return;
    }
    taps_row_generic::<false>(taps, src, acc);
    let _ = fma;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn taps_row_avx2(taps: &[(usize, f32)], src: &[f32], acc: &mut [f32]) {
    taps_row_generic::<true>(taps, src, acc)
}

#[inline(always)]
fn taps_row_generic<const FMA: bool>(taps: &[(usize, f32)], src: &[f32], acc: &mut [f32]) {
    const L: usize = 16;
    let madd = |a: f32, w: f32, s: f32| if FMA { a.mul_add(w, s) } else { a * w + s };
    let n = acc.len();
    let mut x = 0;
    while x + L <= n {
        let mut v = [0f32; L];
        for &(off, w) in taps {
            let s: &[f32; L] = src[off + x..off + x + L].try_into().expect("L floats");
            for l in 0..L {
                v[l] = madd(s[l], w, v[l]);
            }
        }
        acc[x..x + L].copy_from_slice(&v);
        x += L;
    }
    for (xx, a) in acc.iter_mut().enumerate().skip(x) {
        let mut v = 0f32;
        for &(off, w) in taps {
            v = madd(src[off + xx], w, v);
        }
        *a = v;
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

/// Pooling in one pass over the input: each output row reads its window rows
/// once, channels innermost (contiguous in NHWC).
pub fn pool2d(images: ArrayView4<f32>, g: &Pool2dGeometry) -> Array4<f32> {
    let images = images.as_standard_layout();
    let x = images.as_slice().expect("standard layout");
    let mut out = Array4::<f32>::zeros(g.output_shape());
    let o = out.as_slice_mut().expect("fresh array is contiguous");
    let row_elems = g.ow * g.c;
    let rows = band_rows(g.oh, row_elems * g.kh, g.m);
    for_each_band(o, g.oh, row_elems, rows, |n, oy0, _, dst| {
        let image = &x[n * g.h * g.w * g.c..(n + 1) * g.h * g.w * g.c];
        for (r, out_row) in dst.chunks_mut(row_elems).enumerate() {
            pool_row(image, g, oy0 + r, out_row);
        }
    });
    out
}

/// Image coordinates of the taps of window `o` along one axis that fall in
/// the image.
fn taps(
    o: usize,
    s: usize,
    k: usize,
    d: usize,
    pad: usize,
    len: usize,
) -> impl Iterator<Item = usize> {
    (0..k).filter_map(move |i| (o * s + i * d).checked_sub(pad).filter(|&v| v < len))
}

fn pool_row(image: &[f32], g: &Pool2dGeometry, oy: usize, out_row: &mut [f32]) {
    let c = g.c;
    for (ox, px) in out_row.chunks_mut(c).enumerate() {
        match g.mode {
            PoolMode::Max => {
                px.fill(f32::NEG_INFINITY);
                for y in taps(oy, g.sh, g.kh, g.dh, g.pads.top, g.h) {
                    for xx in taps(ox, g.sw, g.kw, g.dw, g.pads.left, g.w) {
                        let src = &image[(y * g.w + xx) * c..(y * g.w + xx + 1) * c];
                        for (m, &v) in px.iter_mut().zip(src) {
                            // NaN beats every number; once NaN, stays NaN.
                            *m = if v > *m || v.is_nan() { v } else { *m };
                        }
                    }
                }
            }
            PoolMode::Avg => {
                px.fill(0.0);
                for y in taps(oy, g.sh, g.kh, g.dh, g.pads.top, g.h) {
                    for xx in taps(ox, g.sw, g.kw, g.dw, g.pads.left, g.w) {
                        let src = &image[(y * g.w + xx) * c..(y * g.w + xx + 1) * c];
                        for (s, &v) in px.iter_mut().zip(src) {
                            *s += v;
                        }
                    }
                }
                let divisor = g.divisor(oy, ox) as f32;
                for s in px.iter_mut() {
                    *s /= divisor;
                }
            }
        }
    }
}
