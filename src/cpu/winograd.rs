//! Winograd F(2x2, 3x3) for 3x3, stride-1, undilated convolutions with many
//! channels, on the SIMD layer.
//!
//! Each 2x2 block of outputs ("tile") reads a 4x4 block of inputs. With the
//! input tile transformed to `V = Bt d B` and each 3x3 filter to
//! `U = G g Gt` (4x4 each), the tile's outputs are `At (sum_c U . V) A`:
//! 16 independent products over the input channels, i.e. 16 GEMMs
//! (tiles x c) * (c x nc), which take 16 multiply-adds per tile where the
//! NHWC kernel takes 36 (2.25x fewer). The GEMMs run on the NHWC kernel's
//! register blocks (`super::nhwc::block_run`); the transforms are additions
//! vectorised along channels, which NHWC keeps contiguous.
//!
//! The transforms add and subtract inputs of neighbouring outputs, so one
//! infinite or NaN input (or weight) would reach outputs whose windows do not
//! hold it, against SPEC.md's propagation rule; and values near the top of
//! the f32 range could overflow where the NHWC kernel's sums do not. [`usable`]
//! therefore takes this path only for finite inputs and weights of moderate
//! magnitude; everything else goes to the NHWC kernel.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::ops::Range;

use super::nhwc::{block_run, store, Blocking};
use super::pieces::{finish, for_each_piece_uninit, piece_rows, TILE_FLOATS};
use super::simd::{dispatch, Isa, Simd, WithSimd};
use crate::epilogue::Epilogue;
use crate::shape::Conv2dGeometry;

thread_local! {
    /// Per-thread transformed inputs and products of one block of tiles.
    static WORK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Tiles transformed and multiplied together: a multiple of the register
/// block's pixels, with `16 * tiles * (c + nc)` floats of workspace.
fn tiles(blocking: Blocking) -> usize {
    4 * blocking.pix
}

/// Whether the shape is one this path computes on `isa`: 3x3, stride 1, no
/// dilation, channels in whole vectors (c a multiple of the vector, nc of
/// the NHWC kernel's channel block) and enough of them for the transforms
/// to pay off.
pub(super) fn fits(isa: Isa, g: &Conv2dGeometry) -> bool {
    g.kh == 3
        && g.kw == 3
        && (g.sh, g.sw, g.dh, g.dw) == (1, 1, 1, 1)
        && g.c >= 16
        && g.c.is_multiple_of(isa.lanes())
        && g.nc >= 16
        && g.nc.is_multiple_of(Blocking::of(isa, g.nc).channels(isa))
}

/// Whether the values allow the transforms (see the module docs): every
/// input and weight finite, `max|x| * max|w| * c` far below `f32::MAX`
/// (the transformed products stay within a small factor of the NHWC sums),
/// and the weights' transform finite (`|U| <= 2.25 max|w|`: an infinite U
/// times a zero input would be NaN where the reference has 0).
pub(super) fn usable(isa: Isa, x: &[f32], k: &[f32], g: &Conv2dGeometry) -> bool {
    match (dispatch(isa, MaxAbsFinite(x)), dispatch(isa, MaxAbsFinite(k))) {
        (Some(mx), Some(mk)) => {
            mk <= f32::MAX / 4.0 && (mx as f64) * (mk as f64) * (g.c as f64) * 1e3 < f32::MAX as f64
        }
        _ => false,
    }
}

/// The largest magnitude in a slice, or `None` if any value is infinite or
/// NaN; vectorised, since it reads every input and weight of the layer.
struct MaxAbsFinite<'a>(&'a [f32]);

impl WithSimd for MaxAbsFinite<'_> {
    type Output = Option<f32>;

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> Option<f32> {
        let v = self.0;
        let full = v.len() / S::LANES * S::LANES;
        let (mut max, mut bad) = (s.zero(), s.zero());
        for i in (0..full).step_by(S::LANES) {
            // SAFETY: i + LANES <= v.len().
            (max, bad) = s.abs_max_finite(max, bad, unsafe { s.load(v.as_ptr().add(i)) });
        }
        let (max, bad) = (s.to_array(max), s.to_array(bad));
        let tail = &v[full..];
        let finite = bad[..S::LANES].iter().chain(tail).all(|x| x.is_finite());
        let max = max[..S::LANES].iter().chain(tail).fold(0f32, |m, &x| m.max(x.abs()));
        finite.then_some(max)
    }
}

/// The 16 transformed filters `U = G g Gt`, as `[k][nc / block][c][block]` (the
/// layout `block` reads weights in), computed in f64 and rounded once.
fn transform_weights(k: &[f32], g: &Conv2dGeometry, block: usize) -> Vec<f32> {
    let (c, nc) = (g.c, g.nc);
    let blocks = nc / block;
    let mut u = vec![0f32; 16 * c * nc];
    // G g Gt with G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]],
    // for every output channel at once (the innermost loops run along the
    // contiguous output channels).
    let mut gg = vec![[[0f64; 3]; 4]; nc];
    for ci in 0..c {
        let w = |i: usize, j: usize| &k[((i * 3 + j) * c + ci) * nc..][..nc];
        for j in 0..3 {
            let (w0, w1, w2) = (w(0, j), w(1, j), w(2, j));
            for (oc, ggo) in gg.iter_mut().enumerate() {
                let (a, b, d) = (w0[oc] as f64, w1[oc] as f64, w2[oc] as f64);
                ggo[0][j] = a;
                ggo[1][j] = (a + b + d) / 2.0;
                ggo[2][j] = (a - b + d) / 2.0;
                ggo[3][j] = d;
            }
        }
        for r in 0..4 {
            for (oc, ggo) in gg.iter().enumerate() {
                let [a, b, d] = ggo[r];
                let row = [a, (a + b + d) / 2.0, (a - b + d) / 2.0, d];
                let (blk, l) = (oc / block, oc % block);
                for (q, &v) in row.iter().enumerate() {
                    u[(((4 * r + q) * blocks + blk) * c + ci) * block + l] = v as f32;
                }
            }
        }
    }
    u
}

/// The convolution with the vectors of `isa`; the caller has checked
/// [`fits`] and [`usable`].
pub(super) fn conv(isa: Isa, x: &[f32], k: &[f32], o: &mut [MaybeUninit<f32>], g: &Conv2dGeometry, ep: &Epilogue) {
    assert!(fits(isa, g));
    let blocking = Blocking::of(isa, g.nc);
    let u = transform_weights(k, g, blocking.channels(isa));
    let per_chunk = tiles(blocking);
    // Pieces of whole tile rows (an even number of output rows).
    let rows = piece_rows(g.oh, 2 * g.w * g.c, g.m, TILE_FLOATS).next_multiple_of(2);
    for_each_piece_uninit(o, g.m, g.oh, g.ow * g.nc, rows, |p, dst| {
        WORK.with_borrow_mut(|(v, prod)| {
            v.resize(16 * per_chunk * g.c, 0.0);
            prod.resize(16 * per_chunk * g.nc, 0.0);
            let op = Tiles {
                x,
                u: &u,
                g,
                p: (p.n0..p.n1, p.oy0..p.oy1),
                v,
                prod,
                dst: &mut *dst,
                blocking,
            };
            dispatch(isa, op);
        });
        // SAFETY: `Tiles` stores every output of its piece.
        unsafe { finish(dst, ep, g.nc) };
    });
}

/// One piece's tiles (images `p.0`, output rows `p.1`), with the vectors
/// of `S`.
struct Tiles<'a> {
    x: &'a [f32],
    u: &'a [f32],
    g: &'a Conv2dGeometry,
    p: (Range<usize>, Range<usize>),
    v: &'a mut [f32],
    prod: &'a mut [f32],
    dst: &'a mut [MaybeUninit<f32>],
    blocking: Blocking,
}

impl WithSimd for Tiles<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        // As in `nhwc`: only this instruction set's blocks are compiled.
        match (S::LANES, self.blocking.pix, self.blocking.nv) {
            (16, 8, 1) => self.run::<S, 8, 1>(s),
            (16, 8, 2) => self.run::<S, 8, 2>(s),
            (16, 6, 4) => self.run::<S, 6, 4>(s),
            (8, 6, 2) => self.run::<S, 6, 2>(s),
            (_, pix, nv) => unreachable!("Blocking::of makes no {pix} x {nv}"),
        }
    }
}

impl Tiles<'_> {
    #[inline(always)]
    fn run<S: Simd, const PIX: usize, const NV: usize>(self, s: S) {
        let g = self.g;
        let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
        let (images, rows) = self.p;
        let band = rows.len();
        let per_chunk = 4 * PIX;
        for (i, n) in images.enumerate() {
            let out = &mut self.dst[i * band * g.ow * g.nc..(i + 1) * band * g.ow * g.nc];
            // The piece's tiles, numbered row-major over (ty, tx).
            let (first, end) = (rows.start / 2 * tw, rows.end.div_ceil(2).min(th) * tw);
            for start in (first..end).step_by(per_chunk) {
                let chunk = start..end.min(start + per_chunk);
                transform_inputs(s, self.x, g, n, chunk.clone(), per_chunk, self.v);
                multiply::<S, PIX, NV>(s, self.u, self.v, g, chunk.len(), self.prod);
                transform_outputs(s, self.prod, g, rows.start, chunk, per_chunk, out);
            }
        }
    }
}

/// Row and column of tile number `t` (row-major, `ceil(ow / 2)` a row).
fn tile_at(g: &Conv2dGeometry, t: usize) -> (usize, usize) {
    let tw = g.ow.div_ceil(2);
    (t / tw, t % tw)
}

/// `V = Bt d B` of the tiles numbered `tiles` (image `n`), as `[k][tile][c]`
/// with `per_chunk` tiles per `k`; input cells in the padding are zeros.
#[inline(always)]
fn transform_inputs<S: Simd>(
    s: S,
    x: &[f32],
    g: &Conv2dGeometry,
    n: usize,
    tiles: Range<usize>,
    per_chunk: usize,
    v: &mut [f32],
) {
    let c = g.c;
    let image = &x[n * g.h * g.w * c..(n + 1) * g.h * g.w * c];
    let stride = per_chunk * c;
    assert!(v.len() >= 16 * stride && tiles.len() <= per_chunk && c.is_multiple_of(S::LANES));
    // Cells in the padding read a vector of zeros (step 0 per channel).
    let zeros = [0f32; 16];
    assert!(S::LANES <= zeros.len());
    for (t, (ty, tx)) in tiles.map(|t| tile_at(g, t)).enumerate() {
        // Each of the 16 cells: where its channels start, and 1 for a pixel
        // of the image (0 for the zeros).
        let mut px = [(zeros.as_ptr(), 0usize); 16];
        for r in 0..4 {
            let Some(y) = (2 * ty + r).checked_sub(g.pads.top).filter(|&y| y < g.h) else {
                continue;
            };
            for q in 0..4 {
                if let Some(xx) = (2 * tx + q).checked_sub(g.pads.left).filter(|&xx| xx < g.w) {
                    px[4 * r + q] = (image[(y * g.w + xx) * c..(y * g.w + xx + 1) * c].as_ptr(), 1);
                }
            }
        }
        let out = v[t * c..].as_mut_ptr();
        for ci in (0..c).step_by(S::LANES) {
            // SAFETY: a pixel's channels ci..ci + LANES lie inside the image
            // (c is a multiple of LANES), the zeros hold LANES floats.
            // (Loops, not `array::from_fn`: see `nhwc::step`.)
            let mut d = [[s.zero(); 4]; 4];
            for (r, dr) in d.iter_mut().enumerate() {
                for (q, dq) in dr.iter_mut().enumerate() {
                    let (p, step) = px[4 * r + q];
                    *dq = unsafe { s.load(p.add(ci * step)) };
                }
            }
            // Bt d: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3), then the same
            // on the columns.
            let mut bd = [[s.zero(); 4]; 4];
            for q in 0..4 {
                bd[0][q] = s.sub(d[0][q], d[2][q]);
                bd[1][q] = s.add(d[1][q], d[2][q]);
                bd[2][q] = s.sub(d[2][q], d[1][q]);
                bd[3][q] = s.sub(d[1][q], d[3][q]);
            }
            for (r, xr) in bd.iter().enumerate() {
                let row = [
                    s.sub(xr[0], xr[2]),
                    s.add(xr[1], xr[2]),
                    s.sub(xr[2], xr[1]),
                    s.sub(xr[1], xr[3]),
                ];
                for (q, &val) in row.iter().enumerate() {
                    // SAFETY: (4r + q) * stride + t * c + ci + LANES <= 16 * stride
                    // (asserted above; t < per_chunk, ci + LANES <= c).
                    unsafe { s.store(out.add((4 * r + q) * stride + ci), val) };
                }
            }
        }
    }
}

/// The 16 products `M[k] = V[k] * U[k]` for `count` tiles, as
/// `[k][tile][nc]`.
#[inline(always)]
fn multiply<S: Simd, const PIX: usize, const NV: usize>(
    s: S,
    u: &[f32],
    v: &[f32],
    g: &Conv2dGeometry,
    count: usize,
    prod: &mut [f32],
) {
    let (c, nc) = (g.c, g.nc);
    let block = NV * S::LANES;
    let per_chunk = 4 * PIX;
    let blocks = nc / block;
    assert!(u.len() == 16 * blocks * c * block && v.len() >= 16 * per_chunk * c && prod.len() >= 16 * per_chunk * nc);
    assert!(count > 0 && count <= per_chunk);
    for kk in 0..16 {
        let vk = &v[kk * per_chunk * c..(kk + 1) * per_chunk * c];
        for b in 0..blocks {
            let w = &u[(kk * blocks + b) * c * block..(kk * blocks + b + 1) * c * block];
            for t0 in (0..count).step_by(PIX) {
                let n = PIX.min(count - t0);
                // A short block repeats its last tile; the extra sums are dropped.
                let src: [*const f32; PIX] = std::array::from_fn(|p| vk[(t0 + p.min(n - 1)) * c..].as_ptr());
                // SAFETY: each tile's c transformed inputs are inside `vk`,
                // `w` holds `block` weights per input channel.
                let acc = unsafe { block_run::<S, PIX, NV>(s, src, c, w.as_ptr()) };
                let at = (kk * per_chunk + t0) * nc + b * block;
                assert!(at + (n - 1) * nc + block <= prod.len());
                // SAFETY: tile p < n's `block` sums at `at + p * nc`, inside
                // `prod` by the assert above.
                unsafe { store(s, acc, n, block, prod.as_mut_ptr().add(at), nc) };
            }
        }
    }
}

/// `Y = At M A` of every tile: its 2x2 outputs (those inside the output)
/// into `out`, the NHWC rows `oy0..` of one image.
#[inline(always)]
fn transform_outputs<S: Simd>(
    s: S,
    prod: &[f32],
    g: &Conv2dGeometry,
    oy0: usize,
    tiles: Range<usize>,
    per_chunk: usize,
    out: &mut [MaybeUninit<f32>],
) {
    let nc = g.nc;
    let stride = per_chunk * nc;
    let rows = out.len() / (g.ow * nc);
    assert!(prod.len() >= 16 * stride && tiles.len() <= per_chunk && nc.is_multiple_of(S::LANES));
    for (t, (ty, tx)) in tiles.map(|t| tile_at(g, t)).enumerate() {
        // Where each of the tile's 2x2 outputs goes, if inside this band.
        let dst: [[Option<usize>; 2]; 2] = std::array::from_fn(|a| {
            std::array::from_fn(|b| {
                let (y, xx) = (2 * ty + a, 2 * tx + b);
                (y >= oy0 && y - oy0 < rows && y < g.oh && xx < g.ow).then(|| ((y - oy0) * g.ow + xx) * nc)
            })
        });
        let src = prod[t * nc..].as_ptr();
        for co in (0..nc).step_by(S::LANES) {
            // SAFETY: (4r + q) * stride + t * nc + co + LANES <= 16 * stride.
            let mut m = [[s.zero(); 4]; 4];
            for (r, mr) in m.iter_mut().enumerate() {
                for (q, mq) in mr.iter_mut().enumerate() {
                    *mq = unsafe { s.load(src.add((4 * r + q) * stride + co)) };
                }
            }
            // At M: rows (m0 + m1 + m2, m1 - m2 - m3), then the same on the
            // columns.
            let mut am = [[s.zero(); 4]; 2];
            for q in 0..4 {
                am[0][q] = s.add(s.add(m[0][q], m[1][q]), m[2][q]);
                am[1][q] = s.sub(s.sub(m[1][q], m[2][q]), m[3][q]);
            }
            for (a, row) in am.iter().enumerate() {
                let ys = [
                    s.add(s.add(row[0], row[1]), row[2]),
                    s.sub(s.sub(row[1], row[2]), row[3]),
                ];
                for (b, &val) in ys.iter().enumerate() {
                    if let Some(at) = dst[a][b] {
                        let d = &mut out[at + co..at + co + S::LANES];
                        // SAFETY: `d` holds LANES floats.
                        unsafe { s.store(d.as_mut_ptr().cast(), val) };
                    }
                }
            }
        }
    }
}
