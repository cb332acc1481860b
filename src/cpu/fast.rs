//! The fast CPU path: which kernel a call takes, and the dispatch to it.
//! Every kernel is checked against [`super::reference`] by the golden and
//! property tests, on every instruction set the machine has.
//!
//! Convolution strategies, chosen by shape (see `Strategy::choose`):
//! - pointwise (1x1, stride 1, no padding): one GEMM with no copies
//!   (`super::gemm`);
//! - planar (few channels in and out, as in grayscale and RGB filtering):
//!   `super::planar`, vectorised along output columns;
//! - NHWC (8+ output channels, with vectors): `super::nhwc`, vectorised
//!   along output channels;
//! - Winograd F(2x2, 3x3) for 3x3 stride-1 layers with many channels
//!   (`super::winograd`): 2.25x fewer multiply-adds, on the NHWC kernel's
//!   register blocks, for finite values (others take the NHWC kernel);
//! - im2col + GEMM otherwise (the portable build, or a span that is mostly
//!   padding), on bounded tiles of output rows (`super::gemm`).
//!
//! Pooling takes `super::pool_nhwc` from one vector of channels on, the row
//! path `super::pool_rows` below that, and the reference where the span of
//! a row of windows is mostly padding.
//!
//! Work is split into pieces (`super::pieces`) run with rayon; each piece
//! writes a contiguous slice of the NHWC output. Padded cells take part as
//! zeros, products included, as in the reference.

use std::mem::MaybeUninit;

use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use super::simd::Isa;
use super::{border, depthwise, gemm, nhwc, planar, pool_nhwc, pool_rows, pool_windows, winograd};
use crate::epilogue::Epilogue;
use crate::shape::{Conv2dGeometry, PaddingMode, Pads, Pool2dGeometry};

/// How a convolution is computed. Measured side by side (benches/RESULTS.md):
/// with one output channel the planar kernel is several times faster than
/// the NHWC one (it vectorises along columns, so a single output channel
/// still fills every lane); from 16 output channels the NHWC kernel,
/// vectorised along output channels, beats planar and im2col + GEMM.
/// Pointwise layers are one GEMM, where the `gemm` crate stays ahead. 3x3
/// stride-1 layers with 16+ channels in and out take Winograd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    Pointwise,
    Planar,
    Nhwc,
    /// Winograd F(2x2, 3x3) on the NHWC kernel's blocks (`super::winograd`),
    /// where the values allow it; the NHWC kernel otherwise.
    Winograd,
    Im2col,
}

impl Strategy {
    pub(crate) fn choose(g: &Conv2dGeometry, isa: Isa) -> Self {
        // The planar and NHWC kernels copy the padded span of a band of outputs (the
        // planar one split into `sw` stride phases, so the strides count too).
        let compact = super::span_is_compact(g.h, g.w, g.kh, g.kw, g.extent().0, g.span_cols())
            && g.sw <= g.w + g.kw
            && g.sh <= g.h + g.kh;
        let vectors = isa >= Isa::Avx2;
        if g.is_pointwise() {
            Strategy::Pointwise
        } else if !compact {
            Strategy::Im2col
        } else if g.c <= 4 && g.nc < 8 {
            Strategy::Planar
        } else if vectors && g.nc >= 8 {
            if winograd::fits(isa, g) {
                return Strategy::Winograd;
            }
            // Below 8 output channels most of its lanes (and of its
            // repacked weights) would be padding.
            Strategy::Nhwc
        } else if g.c <= 4 && g.nc <= 16 {
            Strategy::Planar
        } else {
            Strategy::Im2col
        }
    }
}

/// The instruction set a convolution with the kernels of `isa` runs with:
/// `isa` itself, but the GEMMs run what the `gemm` crate picks from the CPU
/// (AVX-512 where present).
pub(crate) fn conv2d_isa(isa: Isa, g: &Conv2dGeometry) -> Isa {
    let g = &g.normalised();
    if !g.padded_is_modest() {
        return Isa::Portable;
    }
    match Strategy::choose(g, isa) {
        Strategy::Pointwise | Strategy::Im2col => gemm::isa(),
        Strategy::Planar | Strategy::Nhwc | Strategy::Winograd => isa,
    }
}

/// The instruction set a pooling with the kernels of `isa` runs with (the
/// reference's plain loops where [`pool2d`] leaves the work to it).
pub(crate) fn pool2d_isa(isa: Isa, g: &Pool2dGeometry) -> Isa {
    match PoolPath::choose(&g.normalised(), isa) {
        PoolPath::Reference | PoolPath::Windows => Isa::Portable,
        PoolPath::ByPixel | PoolPath::Rows => isa,
    }
}

/// Which pooling kernel a call takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolPath {
    /// From one vector of channels on, each output pixel's window is
    /// folded in registers (`pool_nhwc`).
    ByPixel,
    /// Below that, rows are folded with contiguous vector folds
    /// (`pool_rows`)...
    Rows,
    /// ...unless the span is mostly padding: then the reference computes
    /// the few taps directly.
    Reference,
    /// Adaptive windows, and windows far larger than the image (huge pads,
    /// ceil_mode): by explicit windows, whose tap ranges skip the taps that
    /// miss (`pool_windows`).
    Windows,
}

impl PoolPath {
    fn choose(g: &Pool2dGeometry, isa: Isa) -> Self {
        if g.adaptive || g.kh > 2 * g.h + 2 || g.kw > 2 * g.w + 2 || !g.padded_is_modest() {
            PoolPath::Windows
        } else if isa >= Isa::Avx2 && g.c >= isa.lanes() {
            PoolPath::ByPixel
        } else if super::span_is_compact(g.h, g.w, g.kh, g.kw, g.extent().0, g.span_cols()) {
            PoolPath::Rows
        } else {
            PoolPath::Reference
        }
    }
}

/// Convolution with the kernels of `isa` (which this CPU must have: see
/// [`Isa::checked`]); `g` must come from [`crate::Conv2dSpec::resolve`],
/// `bias` (if any) has `g.nc` values. Every v2 option of `g` is honoured: border modes pad a copy of the input by hand,
/// depthwise layers take their own kernel, other groups run group by group,
/// and the epilogue is applied to each piece of output as it is finished.
pub fn conv2d_bias(
    isa: Isa,
    images: ArrayView4<f32>,
    kernels: ArrayView4<f32>,
    bias: Option<&[f32]>,
    g: &Conv2dGeometry,
) -> Array4<f32> {
    let g = &g.normalised();
    if !g.padded_is_modest() {
        return super::reference::conv2d_bias(images, kernels, bias, g);
    }
    let images = images.as_standard_layout();
    let kernels = kernels.as_standard_layout();
    let x = images.as_slice().expect("standard layout");
    let k = kernels.as_slice().expect("standard layout");
    if g.padding_mode != PaddingMode::Zeros && g.pads != Pads::default() {
        // A hand-padded copy only where it stays near the size of the
        // input and output: replicate padding takes any pad, and a pad of
        // 2^31 around a tiny image (with a stride as large) would be a copy
        // the machine cannot hold (found by the `engine` fuzz target). The
        // reference maps each tap instead and touches only the output.
        let padded_elems = [
            g.m,
            g.h + g.pads.top + g.pads.bottom,
            g.w + g.pads.left + g.pads.right,
            g.c,
        ]
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d));
        let budget = 4 * (x.len() + g.output_shape().iter().product::<usize>()) + (1 << 20);
        if padded_elems.is_none_or(|n| n > budget) {
            return super::reference::conv2d_bias(images.view(), kernels.view(), bias, g);
        }
        let (padded, pg) = border::pad(x, g);
        let view = ArrayView4::from_shape(pg.input_shape(), &padded).expect("padded images");
        return conv2d_bias(isa, view, kernels.view(), bias, &pg);
    }
    let ep = Epilogue {
        bias,
        activation: g.activation,
    };
    let mut out = super::output_uninit(g.output_shape(), x.as_ptr());
    let o = out.as_slice_mut().expect("fresh array is contiguous");
    if g.groups == 1 {
        let plain = g.plain();
        run(Strategy::choose(&plain, isa), isa, x, k, o, &plain, &ep);
    } else if g.is_depthwise() {
        // One channel per group: channel `ch * times + t` filters input `ch`.
        let times = g.nc / g.c;
        let dg = Conv2dGeometry {
            c: g.nc,
            groups: g.nc,
            ..g.plain()
        };
        if times == 1 {
            depthwise::conv(isa, x, k, o, &dg, &ep);
        } else {
            depthwise::conv(isa, &border::repeat_channels(x, g.c, times), k, o, &dg, &ep);
        }
    } else {
        grouped(isa, x, k, o, g, &ep);
    }
    // SAFETY: every element is written: see `run` and `grouped`; the
    // depthwise kernel stores every channel of every pixel.
    unsafe { out.assume_init() }
}

/// A grouped convolution, one group at a time: the group's channels as
/// contiguous images, its kernels as their own HWIO block, its outputs
/// scattered into their channels.
fn grouped(isa: Isa, x: &[f32], k: &[f32], o: &mut [MaybeUninit<f32>], g: &Conv2dGeometry, ep: &Epilogue) {
    let (gc, gnc) = (g.group_c(), g.group_nc());
    let sub = Conv2dGeometry {
        c: gc,
        nc: gnc,
        ..g.plain()
    };
    let strategy = Strategy::choose(&sub, isa);
    let pixels = g.m * g.oh * g.ow;
    let mut part = vec![MaybeUninit::<f32>::uninit(); pixels * gnc];
    for q in 0..g.groups {
        let xq = border::channels(x, g.c, q * gc, gc);
        let kq = border::channels(k, g.nc, q * gnc, gnc);
        run(
            strategy,
            isa,
            &xq,
            &kq,
            &mut part,
            &sub,
            &ep.channels(q * gnc, (q + 1) * gnc),
        );
        o.par_chunks_mut(g.nc * 1024)
            .zip(part.par_chunks(gnc * 1024))
            .for_each(|(dst, src)| {
                for (d, s) in dst.chunks_exact_mut(g.nc).zip(src.chunks_exact(gnc)) {
                    d[q * gnc..(q + 1) * gnc].copy_from_slice(s);
                }
            });
    }
}

/// [`conv2d_bias`] of a plain convolution with the strategy given (the
/// tests run every one of them).
#[cfg(test)]
pub(crate) fn conv2d_with(
    strategy: Strategy,
    isa: Isa,
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
    run(strategy, isa, x, k, o, g, &Epilogue::default());
    // SAFETY: `run` writes every element.
    unsafe { out.assume_init() }
}

/// A plain convolution (one group, zero padding) by `strategy`, with the
/// epilogue fused into each piece. Every element of `o` is written: the
/// planar, NHWC and Winograd kernels store every output of their pieces
/// themselves, and the GEMMs of the pointwise and im2col paths write every
/// element of theirs (`sgemm` with `read_dst` false).
fn run(
    strategy: Strategy,
    isa: Isa,
    x: &[f32],
    k: &[f32],
    o: &mut [MaybeUninit<f32>],
    g: &Conv2dGeometry,
    ep: &Epilogue,
) {
    match strategy {
        Strategy::Pointwise => gemm::pointwise(x, k, o, g, ep),
        Strategy::Planar => planar::conv(isa, x, k, o, g, ep),
        Strategy::Nhwc => nhwc::conv(isa, x, k, o, g, ep),
        Strategy::Winograd if winograd::fits(isa, g) && winograd::usable(isa, x, k, g) => {
            winograd::conv(isa, x, k, o, g, ep)
        }
        Strategy::Winograd => nhwc::conv(isa, x, k, o, g, ep),
        Strategy::Im2col => gemm::conv(x, k, o, g, ep),
    }
}

/// The argmax of max pooling (SPEC.md "Max pooling with argmax indices"),
/// `(m, oh, ow, c)` int64.
pub fn max_pool2d_indices(images: ArrayView4<f32>, g: &Pool2dGeometry) -> Array4<i64> {
    let g = &g.normalised();
    let images = images.as_standard_layout();
    let x = images.as_slice().expect("standard layout");
    let mut out = Array4::<i64>::zeros(g.output_shape());
    pool_windows::indices(x, out.as_slice_mut().expect("fresh array is contiguous"), g);
    out
}

/// Pooling with the kernels of `isa` (which this CPU must have).
pub fn pool2d(isa: Isa, images: ArrayView4<f32>, g: &Pool2dGeometry) -> Array4<f32> {
    let g = &g.normalised();
    let path = PoolPath::choose(g, isa);
    if path == PoolPath::Windows {
        let images = images.as_standard_layout();
        let x = images.as_slice().expect("standard layout");
        let mut out = super::output_uninit(g.output_shape(), x.as_ptr());
        pool_windows::pool(x, out.as_slice_mut().expect("fresh array is contiguous"), g);
        // SAFETY: `pool_windows::pool` writes every channel of every pixel.
        return unsafe { out.assume_init() };
    }
    if path == PoolPath::Reference {
        return super::reference::pool2d(images, g);
    }
    let images = images.as_standard_layout();
    let x = images.as_slice().expect("standard layout");
    let mut out = super::output_uninit(g.output_shape(), x.as_ptr());
    let o = out.as_slice_mut().expect("fresh array is contiguous");
    if path == PoolPath::ByPixel {
        pool_nhwc::pool(isa, x, o, g);
    } else {
        pool_rows::pool(isa, x, o, g);
    }
    // SAFETY: `pool_nhwc` gets every piece of the output zero-filled
    // (`for_each_piece`) and `pool_rows` writes every element of every row.
    unsafe { out.assume_init() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::PoolMode;
    use crate::{check, Conv2dSpec, Padding};

    fn array(shape: [usize; 4], seed: u64) -> Array4<f32> {
        crate::bench::random_array(shape, seed)
    }

    /// Asserts that strategy `s` with the kernels of `isa` gives the f64
    /// reference's result within the convolution tolerance, and the same
    /// bits when run again; `case` names the call in the message.
    fn assert_like_reference(s: Strategy, isa: Isa, x: &Array4<f32>, k: &Array4<f32>, g: &Conv2dGeometry, case: &str) {
        let want = crate::cpu::reference::conv2d(x.view(), k.view(), g);
        let tolerance = check::conv_tolerance(g.reduction_len(), check::max_abs_finite(want.view()));
        let got = conv2d_with(s, isa, x.view(), k.view(), g);
        assert!(
            check::within(got.view(), want.view(), tolerance),
            "{s:?} ({isa}) on {case}: {:?}",
            check::largest_difference(got.view(), want.view(), false)
        );
        let again = conv2d_with(s, isa, x.view(), k.view(), g);
        assert!(
            got.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{s:?} ({isa}) on {case}: not deterministic"
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
            for isa in Isa::available() {
                // The NHWC kernel and Winograd run on the portable vectors
                // too (the choice never takes them there).
                let mut strategies = vec![Strategy::Planar, Strategy::Im2col, Strategy::Nhwc];
                if winograd::fits(isa, &g) {
                    strategies.push(Strategy::Winograd);
                }
                if Strategy::choose(&g, isa) == Strategy::Pointwise {
                    strategies.push(Strategy::Pointwise);
                }
                for s in strategies {
                    assert_like_reference(s, isa, &x, &k, &g, &format!("{xs:?} * {ks:?}"));
                }
            }
        }
    }

    /// A 1-pixel image with padding and stride of 1e9: the planar and NHWC kernels
    /// would copy two billion padded columns; the choice falls to im2col,
    /// which computes the 3 x 3 result at once. The same for a dilation of
    /// 1e8 with padding to match.
    #[test]
    fn huge_padding_and_stride_stay_small() {
        let spec =
            Conv2dSpec::new(Padding::Symmetric(100_000_000, 100_000_000)).with_dilation(100_000_000, 100_000_000);
        for nc in [1, 8] {
            let g = spec.resolve([2, 5, 5, 1], [3, 3, 1, nc]).unwrap();
            assert_eq!(Strategy::choose(&g, Isa::detected()), Strategy::Im2col);
            let (x, k) = (array([2, 5, 5, 1], 5), array([3, 3, 1, nc], 6));
            let want = crate::cpu::reference::conv2d(x.view(), k.view(), &g);
            let got = conv2d_bias(Isa::detected(), x.view(), k.view(), None, &g);
            assert!(check::within(got.view(), want.view(), 1e-5));
        }
        let big = 1_000_000_000;
        let spec = Conv2dSpec::new(Padding::Symmetric(big, big)).with_stride(big, big);
        for nc in [1, 8] {
            let g = spec.resolve([1, 1, 1, 1], [1, 1, 1, nc]).unwrap();
            assert_eq!(Strategy::choose(&g, Isa::detected()), Strategy::Im2col);
            let k = array([1, 1, 1, nc], 4);
            let y = conv2d_bias(
                Isa::detected(),
                Array4::from_elem((1, 1, 1, 1), 2.0).view(),
                k.view(),
                None,
                &g,
            );
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
            for isa in Isa::available() {
                let got = pool2d(isa, x.view(), &g);
                assert!(check::within(got.view(), want.view(), 1e-6), "{isa}");
            }
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
                for isa in Isa::available() {
                    assert_like_reference(Strategy::Planar, isa, &x, &k, &g, &case);
                }
            }
        }
    }

    /// The planar kernel reads padded grayscale rows in place, masking their
    /// border lanes, and takes the rows that reach the padding from a copy
    /// (the image's rows with zero rows); all must sum in the same order, so
    /// that padding the image by hand and convolving without padding gives
    /// the same bits (with the grid kernel, column by column, and with the
    /// tap-by-tap one; on every instruction set).
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
            let want = crate::cpu::reference::conv2d(x.view(), k.view(), &g);
            let tolerance = check::conv_tolerance(g.reduction_len(), check::max_abs_finite(want.view()));
            for isa in Isa::available() {
                let got = planar(isa, x.view(), k.view(), &g);
                let padded_by_hand = planar(isa, padded.view(), k.view(), &g_valid);
                assert_eq!(
                    got,
                    padded_by_hand,
                    "{xs:?} * {ks:?}, pads {:?}, stride {s}, {isa}",
                    (top, bottom, left, right),
                );
                assert!(
                    check::within(got.view(), want.view(), tolerance),
                    "{isa} vs the reference: {xs:?} * {ks:?}, stride {s}"
                );
            }
        }
    }

    /// The planar kernel with the vectors of `isa`.
    fn planar(isa: Isa, x: ArrayView4<f32>, k: ArrayView4<f32>, g: &Conv2dGeometry) -> Array4<f32> {
        let (x, k) = (x.as_standard_layout(), k.as_standard_layout());
        let xs = x.as_slice().expect("standard layout");
        let mut out = crate::cpu::output_uninit(g.output_shape(), xs.as_ptr());
        let o = out.as_slice_mut().expect("fresh array is contiguous");
        planar::conv(
            isa,
            xs,
            k.as_slice().expect("standard layout"),
            o,
            g,
            &Epilogue::default(),
        );
        // SAFETY: the planar kernel stores every output.
        unsafe { out.assume_init() }
    }

    /// Winograd transforms mix neighbouring inputs, so infinite or NaN
    /// values (in the image or the weights) take the NHWC kernel, which
    /// keeps SPEC.md's propagation: only the outputs whose windows hold them.
    #[test]
    fn winograd_leaves_special_values_to_the_nhwc_kernel() {
        let g = Conv2dSpec::new(Padding::Same)
            .resolve([1, 8, 8, 16], [3, 3, 16, 16])
            .unwrap();
        for isa in Isa::available() {
            winograd_special_values(isa, &g);
        }
    }

    fn winograd_special_values(isa: Isa, g: &Conv2dGeometry) {
        if isa >= Isa::Avx2 {
            assert_eq!(Strategy::choose(g, isa), Strategy::Winograd);
        }
        for (special, in_kernel) in [(f32::NAN, false), (f32::INFINITY, false), (f32::INFINITY, true)] {
            let (mut x, mut k) = (array([1, 8, 8, 16], 3), array([3, 3, 16, 16], 4));
            if in_kernel {
                k[[0, 0, 5, 2]] = special;
            } else {
                x[[0, 4, 4, 7]] = special;
            }
            let want = crate::cpu::reference::conv2d(x.view(), k.view(), g);
            let got = conv2d_with(Strategy::Winograd, isa, x.view(), k.view(), g);
            let tolerance = check::conv_tolerance(g.reduction_len(), check::max_abs_finite(want.view()));
            for (&a, &b) in got.iter().zip(&want) {
                assert_eq!(a.is_nan(), b.is_nan(), "{a} vs {b}");
                assert!(a.is_nan() || a == b || (a - b).abs() as f64 <= tolerance, "{a} vs {b}");
            }
            // Some outputs stay finite: the special value did not spread.
            assert!(got.iter().any(|v| v.is_finite()));
        }
    }

    /// A finite weight near the top of the f32 range transforms past it:
    /// zero and tiny images against it keep the reference's finite values
    /// (an infinite transformed weight times a zero would be NaN).
    #[test]
    fn winograd_leaves_weights_near_the_f32_limit_to_the_nhwc_kernel() {
        let g = Conv2dSpec::new(Padding::Same)
            .resolve([1, 8, 8, 16], [3, 3, 16, 16])
            .unwrap();
        let mut k = array([3, 3, 16, 16], 4);
        for j in 0..3 {
            k[[0, j, 0, 0]] = 3e38;
        }
        for isa in Isa::available() {
            for scale in [0.0f32, 1e-30] {
                let x = array([1, 8, 8, 16], 3).mapv(|v| v * scale);
                let want = crate::cpu::reference::conv2d(x.view(), k.view(), &g);
                let got = conv2d_with(Strategy::Winograd, isa, x.view(), k.view(), &g);
                let tolerance = check::conv_tolerance(g.reduction_len(), check::max_abs_finite(want.view()));
                for (&a, &b) in got.iter().zip(&want) {
                    assert!(b.is_finite(), "the reference has {b}");
                    assert!((a - b).abs() as f64 <= tolerance, "{isa}, x {scale}: {a} vs {b}");
                }
            }
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
        for isa in Isa::available() {
            let mut got = dst.clone();
            pool_rows::fold_max(isa, &mut got, &src);
            for ((&m, &v), &r) in dst.iter().zip(&src).zip(&got) {
                assert_eq!(
                    r.to_bits(),
                    crate::cpu::max_nan(m, v).to_bits(),
                    "{isa}: max_nan({m}, {v})"
                );
            }
        }
    }

    /// Averages of values near `f32::MAX`: the f32 sums overflow where the
    /// mean does not, and every kernel (vectors by pixel, rows, explicit
    /// windows) still gives the reference's mean; an infinity or NaN in a
    /// window still gives the reference's infinity or NaN.
    #[test]
    fn averages_of_values_near_the_f32_limit_match_the_reference() {
        for c in [3, 16, 32] {
            let shape = [2, 7, 9, c];
            let mut x = array(shape, 6).mapv(|v| if v > -0.5 { 3e38 } else { -1e38 });
            x[[0, 2, 3, 1]] = f32::INFINITY;
            x[[1, 4, 4, 2]] = f32::NAN;
            for (k, s, padding, include_pad) in [
                (2, 2, Padding::Valid, false),
                (3, 1, Padding::Symmetric(1, 1), false),
                (3, 2, Padding::Same, true),
                (9, 9, Padding::Valid, false),
            ] {
                let g = crate::Pool2dSpec::new(PoolMode::Avg, k.min(7), k)
                    .with_stride(s, s)
                    .with_padding(padding)
                    .with_count_include_pad(include_pad)
                    .resolve(shape)
                    .unwrap();
                let want = crate::cpu::reference::pool2d(x.view(), &g);
                let tolerance = 1e-4 * check::max_abs_finite(want.view()).max(1.0);
                for isa in Isa::available() {
                    let got = pool2d(isa, x.view(), &g);
                    let mut finite = 0;
                    for (&a, &b) in got.iter().zip(&want) {
                        assert_eq!(a.is_nan(), b.is_nan(), "{isa}, c {c}, k {k}: {a} vs {b}");
                        if b.is_finite() {
                            finite += 1;
                            assert!((a - b).abs() as f64 <= tolerance, "{isa}, c {c}, k {k}: {a} vs {b}");
                        } else {
                            assert!(a.is_nan() || a == b, "{isa}, c {c}, k {k}: {a} vs {b}");
                        }
                    }
                    assert!(finite > 0 && want.iter().any(|v| v.abs() > 1e38));
                }
            }
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
            for isa in Isa::available() {
                let got = pool2d(isa, x.view(), &g);
                for (&a, &b) in got.iter().zip(&want) {
                    assert!(a == b || (a.is_nan() && b.is_nan()), "{isa}: {a} vs {b}");
                }
            }
        }
    }
}
