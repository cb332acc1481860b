//! Winograd F(2x2, 3x3) for 3x3, stride-1, undilated convolutions with many
//! channels (x86_64 with AVX2 and FMA).
//!
//! Each 2x2 block of outputs ("tile") reads a 4x4 block of inputs. With the
//! input tile transformed to `V = Bt d B` and each 3x3 filter to
//! `U = G g Gt` (4x4 each), the tile's outputs are `At (sum_c U . V) A`:
//! 16 independent products over the input channels, i.e. 16 GEMMs
//! (tiles x c) * (c x nc), which take 16 multiply-adds per tile where the
//! direct kernel takes 36 (2.25x fewer). The GEMMs run on the NHWC kernel's
//! register blocks (`super::nhwc::block_run`); the transforms are additions
//! vectorised along channels, which NHWC keeps contiguous.
//!
//! The transforms add and subtract inputs of neighbouring outputs, so one
//! infinite or NaN input (or weight) would reach outputs whose windows do not
//! hold it, against SPEC.md's propagation rule; and values near the top of
//! the f32 range could overflow where the direct sums do not. [`usable`]
//! therefore takes this path only for finite inputs and weights of moderate
//! magnitude; everything else goes to the direct kernel.

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::ops::Range;

use super::fast::{for_each_piece_uninit, piece_rows};
use super::nhwc::{block_run, store, BLOCK, PIX};
use crate::shape::Conv2dGeometry;

/// Tiles transformed and multiplied together: a multiple of the register
/// block's `PIX` tiles, with `16 * TILES * (c + nc)` floats of workspace.
const TILES: usize = 4 * PIX;

thread_local! {
    /// Per-thread transformed inputs and products of one block of tiles.
    static WORK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Whether the shape is one this path computes: 3x3, stride 1, no dilation,
/// channels in whole vectors (c a multiple of 8, nc of 16) and enough of
/// them for the transforms to pay off.
pub(super) fn fits(g: &Conv2dGeometry) -> bool {
    g.kh == 3
        && g.kw == 3
        && (g.sh, g.sw, g.dh, g.dw) == (1, 1, 1, 1)
        && g.c >= 16
        && g.c.is_multiple_of(8)
        && g.nc >= 16
        && g.nc.is_multiple_of(BLOCK)
}

/// Whether the values allow the transforms (see the module docs): every
/// input and weight finite, and `max|x| * max|w| * c` far below `f32::MAX`
/// (the transformed products stay within a small factor of the direct sums).
pub(super) fn usable(x: &[f32], k: &[f32], g: &Conv2dGeometry) -> bool {
    // SAFETY: the callers reach this path only after seeing AVX2 at run time.
    match unsafe { (max_abs_finite(x), max_abs_finite(k)) } {
        (Some(mx), Some(mk)) => (mx as f64) * (mk as f64) * (g.c as f64) * 1e3 < f32::MAX as f64,
        _ => false,
    }
}

/// The largest magnitude in `s`, or `None` if any value is infinite or NaN;
/// vectorised (a scalar scan with an early exit was a tenth of the layer).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
unsafe fn max_abs_finite(s: &[f32]) -> Option<f32> {
    let full = s.len() / 8 * 8;
    let sign = _mm256_set1_ps(-0.0);
    let (mut max, mut bad) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in (0..full).step_by(8) {
        // SAFETY: i + 8 <= s.len().
        let v = unsafe { _mm256_loadu_ps(s.as_ptr().add(i)) };
        max = _mm256_max_ps(max, _mm256_andnot_ps(sign, v));
        // v - v is 0 for a finite v and NaN for an infinite or NaN one.
        bad = _mm256_add_ps(bad, _mm256_sub_ps(v, v));
    }
    let mut lanes = [[0f32; 8]; 2];
    // SAFETY: each destination holds 8 floats.
    unsafe {
        _mm256_storeu_ps(lanes[0].as_mut_ptr(), max);
        _mm256_storeu_ps(lanes[1].as_mut_ptr(), bad);
    }
    let tail = &s[full..];
    let finite = lanes[1].iter().chain(tail).all(|v| v.is_finite());
    let max = lanes[0].iter().chain(tail).fold(0f32, |m, &v| m.max(v.abs()));
    finite.then_some(max)
}

/// The 16 transformed filters `U = G g Gt`, as `[k][nc / 16][c][16]` (the
/// layout `block` reads weights in), computed in f64 and rounded once.
fn transform_weights(k: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
    let (c, nc) = (g.c, g.nc);
    let blocks = nc / BLOCK;
    let mut u = vec![0f32; 16 * c * nc];
    // 16 output channels at a time (contiguous in HWIO and in the packed
    // layout), so the arithmetic is vectorised.
    for ci in 0..c {
        for b in 0..blocks {
            let w = |i: usize, j: usize| -> [f64; BLOCK] {
                let at = ((i * 3 + j) * c + ci) * nc + b * BLOCK;
                std::array::from_fn(|l| k[at + l] as f64)
            };
            let g3: [[[f64; BLOCK]; 3]; 3] = std::array::from_fn(|i| std::array::from_fn(|j| w(i, j)));
            // G g: rows g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2.
            let gg: [[[f64; BLOCK]; 3]; 4] = std::array::from_fn(|r| {
                std::array::from_fn(|j| {
                    std::array::from_fn(|l| match r {
                        0 => g3[0][j][l],
                        1 => (g3[0][j][l] + g3[1][j][l] + g3[2][j][l]) / 2.0,
                        2 => (g3[0][j][l] - g3[1][j][l] + g3[2][j][l]) / 2.0,
                        _ => g3[2][j][l],
                    })
                })
            });
            for (r, row) in gg.iter().enumerate() {
                for s in 0..4 {
                    let at = (((4 * r + s) * blocks + b) * c + ci) * BLOCK;
                    // (G g) Gt: the same combinations along columns.
                    for (l, d) in u[at..at + BLOCK].iter_mut().enumerate() {
                        *d = match s {
                            0 => row[0][l],
                            1 => (row[0][l] + row[1][l] + row[2][l]) / 2.0,
                            2 => (row[0][l] - row[1][l] + row[2][l]) / 2.0,
                            _ => row[2][l],
                        } as f32;
                    }
                }
            }
        }
    }
    u
}

/// The convolution; the caller has checked AVX2 and FMA at run time, and
/// [`fits`] and [`usable`].
///
/// # Safety
/// The CPU must support AVX2 and FMA.
pub(super) unsafe fn conv(x: &[f32], k: &[f32], o: &mut [MaybeUninit<f32>], g: &Conv2dGeometry) {
    assert!(fits(g));
    let u = transform_weights(k, g);
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    // Pieces of whole tile rows (an even number of output rows).
    let rows = piece_rows(g.oh, 2 * g.w * g.c, g.m, 1 << 16).next_multiple_of(2);
    for_each_piece_uninit(o, g.m, g.oh, g.ow * g.nc, rows, |p, dst| {
        WORK.with_borrow_mut(|(v, prod)| {
            v.resize(16 * TILES * g.c, 0.0);
            prod.resize(16 * TILES * g.nc, 0.0);
            let band = p.oy1 - p.oy0;
            for (i, n) in (p.n0..p.n1).enumerate() {
                let out = &mut dst[i * band * g.ow * g.nc..(i + 1) * band * g.ow * g.nc];
                // The piece's tiles, numbered row-major over (ty, tx).
                let (first, end) = (p.oy0 / 2 * tw, p.oy1.div_ceil(2).min(th) * tw);
                for start in (first..end).step_by(TILES) {
                    let chunk = start..end.min(start + TILES);
                    // SAFETY: AVX2 and FMA (this function's contract).
                    unsafe {
                        transform_inputs(x, g, n, chunk.clone(), v);
                        multiply(&u, v, g, chunk.len(), prod);
                        transform_outputs(prod, g, p.oy0, chunk, out);
                    }
                }
            }
        })
    });
}

/// Row and column of tile number `t` (row-major, `ceil(ow / 2)` a row).
fn tile_at(g: &Conv2dGeometry, t: usize) -> (usize, usize) {
    let tw = g.ow.div_ceil(2);
    (t / tw, t % tw)
}

/// `V = Bt d B` of the tiles numbered `tiles` (image `n`), as `[k][tile][c]`;
/// input cells in the padding are zeros.
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_inputs(x: &[f32], g: &Conv2dGeometry, n: usize, tiles: Range<usize>, v: &mut [f32]) {
    let c = g.c;
    let image = &x[n * g.h * g.w * c..(n + 1) * g.h * g.w * c];
    let stride = TILES * c;
    assert!(v.len() >= 16 * stride && tiles.len() <= TILES && c.is_multiple_of(8));
    let zeros = [0f32; 8];
    for (t, (ty, tx)) in tiles.map(|t| tile_at(g, t)).enumerate() {
        // The first channel of each of the tile's 16 input pixels, or a
        // zero vector (with no step) for a pixel in the padding.
        let mut px = [(zeros.as_ptr(), 0usize); 16];
        for r in 0..4 {
            let Some(y) = (2 * ty + r).checked_sub(g.pads.top).filter(|&y| y < g.h) else {
                continue;
            };
            for s in 0..4 {
                if let Some(xx) = (2 * tx + s).checked_sub(g.pads.left).filter(|&xx| xx < g.w) {
                    px[4 * r + s] = (image[(y * g.w + xx) * c..(y * g.w + xx + 1) * c].as_ptr(), 1);
                }
            }
        }
        let out = v[t * c..].as_mut_ptr();
        for ci in (0..c).step_by(8) {
            // SAFETY: an image pixel's pointer has c floats from it (ci + 8
            // <= c), the zero vector 8 with step 0.
            let d: [[__m256; 4]; 4] = std::array::from_fn(|r| {
                std::array::from_fn(|s| unsafe { _mm256_loadu_ps(px[4 * r + s].0.add(ci * px[4 * r + s].1)) })
            });
            // X = Bt d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3.
            let bd: [[__m256; 4]; 4] = [
                std::array::from_fn(|s| _mm256_sub_ps(d[0][s], d[2][s])),
                std::array::from_fn(|s| _mm256_add_ps(d[1][s], d[2][s])),
                std::array::from_fn(|s| _mm256_sub_ps(d[2][s], d[1][s])),
                std::array::from_fn(|s| _mm256_sub_ps(d[1][s], d[3][s])),
            ];
            for (r, xr) in bd.iter().enumerate() {
                // X B: the same combinations along columns.
                let row = [
                    _mm256_sub_ps(xr[0], xr[2]),
                    _mm256_add_ps(xr[1], xr[2]),
                    _mm256_sub_ps(xr[2], xr[1]),
                    _mm256_sub_ps(xr[1], xr[3]),
                ];
                for (s, &val) in row.iter().enumerate() {
                    // SAFETY: (4r + s) * stride + t * c + ci + 8 <= 16 * stride
                    // (asserted: t < TILES, ci + 8 <= c).
                    unsafe { _mm256_storeu_ps(out.add((4 * r + s) * stride + ci), val) };
                }
            }
        }
    }
}

/// The 16 products `M[k] = V[k] * U[k]` for `count` tiles, as `[k][tile][nc]`.
#[target_feature(enable = "avx2,fma")]
unsafe fn multiply(u: &[f32], v: &[f32], g: &Conv2dGeometry, count: usize, prod: &mut [f32]) {
    let (c, nc) = (g.c, g.nc);
    let blocks = nc / BLOCK;
    assert!(u.len() == 16 * blocks * c * BLOCK && v.len() >= 16 * TILES * c && prod.len() >= 16 * TILES * nc);
    assert!(count > 0 && count <= TILES);
    for kk in 0..16 {
        let vk = &v[kk * TILES * c..(kk + 1) * TILES * c];
        for b in 0..blocks {
            let w = &u[(kk * blocks + b) * c * BLOCK..(kk * blocks + b + 1) * c * BLOCK];
            for t0 in (0..count).step_by(PIX) {
                let n = PIX.min(count - t0);
                // A short group repeats its last tile; those sums are dropped.
                let src: [*const f32; PIX] = std::array::from_fn(|p| vk[(t0 + p.min(n - 1)) * c..].as_ptr());
                // SAFETY: each tile's row of `vk` holds c floats (one run of
                // c from each start), `w` holds c * 16 weights.
                let acc = unsafe { block_run(src, c, w.as_ptr()) };
                let at = (kk * TILES + t0) * nc + b * BLOCK;
                assert!(at + (n - 1) * nc + BLOCK <= prod.len());
                // SAFETY: tile t0 + p's 16 products lie at `at + p * nc`,
                // inside `prod` by the assert above.
                unsafe { store(acc, n, BLOCK, prod.as_mut_ptr().add(at), nc) };
            }
        }
    }
}

/// `Y = At M A` of every tile: its 2x2 outputs (those inside the output)
/// into `out`, the NHWC rows `oy0..` of one image.
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_outputs(
    prod: &[f32],
    g: &Conv2dGeometry,
    oy0: usize,
    tiles: Range<usize>,
    out: &mut [MaybeUninit<f32>],
) {
    let nc = g.nc;
    let stride = TILES * nc;
    let rows = out.len() / (g.ow * nc);
    assert!(prod.len() >= 16 * stride && tiles.len() <= TILES && nc.is_multiple_of(8));
    for (t, (ty, tx)) in tiles.map(|t| tile_at(g, t)).enumerate() {
        // Where each of the tile's 2x2 outputs goes, if inside the piece.
        let dst: [[Option<usize>; 2]; 2] = std::array::from_fn(|a| {
            std::array::from_fn(|b| {
                let (y, xx) = (2 * ty + a, 2 * tx + b);
                (y >= oy0 && y - oy0 < rows && y < g.oh && xx < g.ow).then(|| ((y - oy0) * g.ow + xx) * nc)
            })
        });
        let src = prod[t * nc..].as_ptr();
        for co in (0..nc).step_by(8) {
            // SAFETY: (4r + s) * stride + t * nc + co + 8 <= 16 * stride.
            let m: [[__m256; 4]; 4] = std::array::from_fn(|r| {
                std::array::from_fn(|s| unsafe { _mm256_loadu_ps(src.add((4 * r + s) * stride + co)) })
            });
            // At m: rows m0 + m1 + m2 and m1 - m2 - m3, then the same along
            // columns.
            let am: [[__m256; 4]; 2] = [
                std::array::from_fn(|s| _mm256_add_ps(_mm256_add_ps(m[0][s], m[1][s]), m[2][s])),
                std::array::from_fn(|s| _mm256_sub_ps(_mm256_sub_ps(m[1][s], m[2][s]), m[3][s])),
            ];
            for (a, row) in am.iter().enumerate() {
                let ys = [
                    _mm256_add_ps(_mm256_add_ps(row[0], row[1]), row[2]),
                    _mm256_sub_ps(_mm256_sub_ps(row[1], row[2]), row[3]),
                ];
                for (b, &val) in ys.iter().enumerate() {
                    if let Some(at) = dst[a][b] {
                        let d = &mut out[at + co..at + co + 8];
                        // SAFETY: `d` holds 8 floats (MaybeUninit<f32> has
                        // the layout of f32).
                        unsafe { _mm256_storeu_ps(d.as_mut_ptr().cast(), val) };
                    }
                }
            }
        }
    }
}
