//! SPEC.md "Extensions, version 2" on every path: border modes, groups and
//! depthwise, bias and activation, argmax, adaptive pooling and the
//! ceil_mode correction, against the f64 reference and independent
//! hand-written definitions; bad inputs as typed errors.

mod common;

use common::{array, cpu_engines, gpu_engine};
use convpool::{Activation, Conv2dSpec, Engine, Error, Padding, PaddingMode, Pool2dSpec, PoolMode};
use ndarray::{Array1, Array4, Axis};
use proptest::prelude::*;

/// Every engine but the reference: each CPU instruction set and the GPU
/// (all in verify mode, so each call is also checked by the engine itself).
fn engines() -> Vec<Engine> {
    let mut v = cpu_engines();
    if let Some(gpu) = gpu_engine() {
        v.push(gpu.clone());
    }
    v
}

fn modes() -> impl Strategy<Value = PaddingMode> {
    prop::sample::select(PaddingMode::ALL.to_vec())
}

fn activations() -> impl Strategy<Value = Option<Activation>> {
    prop_oneof![
        Just(None),
        Just(Some(Activation::Relu)),
        Just(Some(Activation::Relu6)),
        (-1.0f32..1.0).prop_map(|a| Some(Activation::LeakyRelu(a))),
        Just(Some(Activation::Sigmoid)),
        Just(Some(Activation::Tanh)),
        (-2.0f32..0.0, 0.0f32..2.0).prop_map(|(lo, hi)| Some(Activation::Clip(lo, hi))),
    ]
}

/// The SPEC's table, written out independently of `PaddingMode::source`:
/// numpy.pad's `constant`, `reflect`, `symmetric`, `edge` and `wrap`.
fn numpy_pad_index(mode: PaddingMode, j: i64, n: i64) -> Option<i64> {
    if (0..n).contains(&j) {
        return Some(j);
    }
    Some(match mode {
        PaddingMode::Zeros => return None,
        PaddingMode::Reflect => {
            if j < 0 {
                -j
            } else {
                2 * n - 2 - j
            }
        }
        PaddingMode::Symmetric => {
            if j < 0 {
                -1 - j
            } else {
                2 * n - 1 - j
            }
        }
        PaddingMode::Replicate => j.clamp(0, n - 1),
        PaddingMode::Circular => ((j % n) + n) % n,
    })
}

fn pad_by_hand(x: &Array4<f32>, mode: PaddingMode, [t, b, l, r]: [usize; 4]) -> Array4<f32> {
    let (m, h, w, c) = x.dim();
    Array4::from_shape_fn((m, h + t + b, w + l + r, c), |(n, y, xx, ch)| {
        let sy = numpy_pad_index(mode, y as i64 - t as i64, h as i64);
        let sx = numpy_pad_index(mode, xx as i64 - l as i64, w as i64);
        match (sy, sx) {
            (Some(sy), Some(sx)) => x[[n, sy as usize, sx as usize, ch]],
            _ => 0.0,
        }
    })
}

#[derive(Debug, Clone)]
struct Case {
    images: [usize; 4],
    kernels: [usize; 4],
    spec: Conv2dSpec,
    bias: bool,
    seed: u64,
}

/// Grouped convolutions with every border mode and activation, pads within
/// each mode's limit.
fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..3, 2usize..9, 2usize..9),
        (1usize..4, 1usize..4, 1usize..4),
        (1usize..4, 1usize..4, 1usize..3),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3),
        (1usize..3, 1usize..3),
        modes(),
        activations(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |((m, h, w), (groups, gc, gnc), (kh, kw, sh), (t, b, l, r), (dh, dw), mode, act, bias, seed)| {
                let cap = |p: usize, n: usize| match mode.max_pad(n) {
                    Some(limit) => p.min(limit),
                    None => p,
                };
                let spec = Conv2dSpec::new(Padding::Explicit {
                    top: cap(t, h),
                    bottom: cap(b, h),
                    left: cap(l, w),
                    right: cap(r, w),
                })
                .with_stride(sh, 1)
                .with_dilation(dh, dw)
                .with_padding_mode(mode)
                .with_groups(groups)
                .with_activation(act);
                Case {
                    images: [m, h, w, groups * gc],
                    kernels: [kh, kw, gc, groups * gnc],
                    spec,
                    bias,
                    seed,
                }
            },
        )
}

fn bias_of(nc: usize, seed: u64) -> Array1<f32> {
    array([1, 1, 1, nc], seed).into_shape_with_order(nc).unwrap()
}

fn run(e: &Engine, x: &Array4<f32>, k: &Array4<f32>, bias: Option<&Array1<f32>>, spec: &Conv2dSpec) -> Array4<f32> {
    match bias {
        Some(b) => e.conv2d_bias(x, k, b, spec),
        None => e.conv2d(x, k, spec),
    }
    .unwrap_or_else(|err| panic!("{}: {err}", e.describe()))
}

fn close(a: &Array4<f32>, b: &Array4<f32>, tol: f32) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= tol)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every path against the reference (verify mode) and against the
    /// reference called here.
    #[test]
    fn v2_convolutions_match_the_reference_on_every_path(c in case()) {
        let Ok(g) = c.spec.resolve(c.images, c.kernels) else { return Ok(()) };
        let x = array(c.images, c.seed);
        let k = array(c.kernels, !c.seed);
        let bias = c.bias.then(|| bias_of(g.nc(), c.seed ^ 7));
        let want = run(&Engine::cpu_reference(), &x, &k, bias.as_ref(), &c.spec);
        for e in engines() {
            let got = run(&e, &x, &k, bias.as_ref(), &c.spec);
            prop_assert!(close(&got, &want, 1e-4), "{} on {c:?}", e.describe());
        }
    }

    /// A border mode is zero padding of the input padded by hand.
    #[test]
    fn border_modes_equal_zero_padding_of_a_hand_padded_input(c in case()) {
        let spec = c.spec.with_groups(1).with_activation(None);
        let kernels = [c.kernels[0], c.kernels[1], c.images[3], c.kernels[3]];
        let Ok(g) = spec.resolve(c.images, kernels) else { return Ok(()) };
        let x = array(c.images, c.seed);
        let k = array(kernels, !c.seed);
        let padded = pad_by_hand(&x, spec.padding_mode, g.pads().tblr());
        let plain = Conv2dSpec::new(Padding::Valid).with_stride(g.sh(), g.sw()).with_dilation(g.dh(), g.dw());
        let want = run(&Engine::cpu_reference(), &padded, &k, None, &plain);
        for e in engines().iter().chain([&Engine::cpu_reference()]) {
            let got = run(e, &x, &k, None, &spec);
            prop_assert!(close(&got, &want, 1e-4), "{} on {c:?}", e.describe());
        }
    }

    /// Depthwise (groups = c) is each channel convolved alone with its own
    /// kernels (a channel multiplier of 1 or 2).
    #[test]
    fn depthwise_is_each_channel_on_its_own(
        (m, h, w, ch) in (1usize..3, 3usize..10, 3usize..10, 1usize..20),
        (kh, kw, times) in (1usize..4, 1usize..4, 1usize..3),
        seed in any::<u64>(),
    ) {
        let spec = Conv2dSpec::new(Padding::Same).with_groups(ch);
        let x = array([m, h, w, ch], seed);
        let k = array([kh, kw, 1, ch * times], !seed);
        for e in engines() {
            let got = run(&e, &x, &k, None, &spec);
            for q in 0..ch {
                let xq = x.slice(ndarray::s![.., .., .., q..q + 1]).to_owned();
                let kq = k.slice(ndarray::s![.., .., .., q * times..(q + 1) * times]).to_owned();
                let want = run(&Engine::cpu_reference(), &xq, &kq, None, &Conv2dSpec::new(Padding::Same));
                let part = got.slice(ndarray::s![.., .., .., q * times..(q + 1) * times]).to_owned();
                prop_assert!(close(&part, &want, 1e-4), "{} channel {q}", e.describe());
            }
        }
    }

    /// Depthwise 3 x 3 layers wide enough for the CPU's eight-pixel blocks,
    /// with channels in whole vectors of every instruction set and rows in
    /// the padding (top and bottom, row dilation), equal the reference; a
    /// kernel holding inf gives NaN wherever a padded tap multiplies it, as
    /// the reference does.
    #[test]
    fn depthwise_3x3_blocks_match_the_reference(
        (m, h, w) in (1usize..3, 1usize..12, 8usize..40),
        ch in prop::sample::select(vec![16usize, 32, 48]),
        dh in 1usize..3,
        padding in prop::sample::select(vec![Padding::Same, Padding::Valid, Padding::Symmetric(2, 1)]),
        inf in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let spec = Conv2dSpec::new(padding).with_groups(ch).with_dilation(dh, 1);
        let x = array([m, h, w, ch], seed);
        let mut k = array([3, 3, 1, ch], !seed);
        if inf {
            k[[0, 1, 0, 5]] = f32::INFINITY;
        }
        if spec.resolve([m, h, w, ch], [3, 3, 1, ch]).is_err() {
            return Ok(());
        }
        let want = run(&Engine::cpu_reference(), &x, &k, None, &spec);
        for e in engines() {
            let got = run(&e, &x, &k, None, &spec);
            prop_assert!(close(&got, &want, 1e-4), "{} on {:?}", e.describe(), (m, h, w, ch, dh, padding));
        }
    }

    /// An argmax index points at its window's max, inside the window; the
    /// values equal plain max pooling bit for bit.
    #[test]
    fn argmax_points_at_the_max(
        (m, h, w, ch) in (1usize..3, 1usize..9, 1usize..9, 1usize..6),
        (kh, kw, s, d) in (1usize..4, 1usize..4, 1usize..3, 1usize..3),
        ceil in any::<bool>(),
        adaptive in prop::option::of((1usize..7, 1usize..7)),
        seed in any::<u64>(),
    ) {
        let spec = match adaptive {
            Some((oh, ow)) => Pool2dSpec::adaptive(PoolMode::Max, oh, ow),
            None => Pool2dSpec::new(PoolMode::Max, kh, kw)
                .with_stride(s, s)
                .with_dilation(d, d)
                .with_padding(Padding::Symmetric(((kh - 1) * d) / 2, ((kw - 1) * d) / 2))
                .with_ceil_mode(ceil),
        };
        let x = array([m, h, w, ch], seed).mapv(|v| (v * 4.0).round());
        let Ok(g) = spec.resolve([m, h, w, ch]) else { return Ok(()) };
        let want = Engine::cpu_reference().max_pool2d_with_indices(&x, &spec).unwrap();
        for e in engines() {
            let (values, idx) = e.max_pool2d_with_indices(&x, &spec).unwrap();
            prop_assert_eq!(&idx, &want.1, "{}", e.describe());
            prop_assert_eq!(&values, &e.pool2d(&x, &spec).unwrap());
            for ((n, oy, ox, c), &i) in idx.indexed_iter() {
                let rows: Vec<usize> = g.window_rows(oy).collect();
                let cols: Vec<usize> = g.window_cols(ox).collect();
                if rows.is_empty() || cols.is_empty() {
                    prop_assert_eq!(i, -1);
                    continue;
                }
                let (y, xx) = (i as usize / w, i as usize % w);
                prop_assert!(rows.contains(&y) && cols.contains(&xx));
                prop_assert_eq!(x[[n, y, xx, c]], values[[n, oy, ox, c]]);
            }
        }
    }

    /// Adaptive pooling on every path against the reference, and each
    /// window against PyTorch's start/end rule written out here.
    #[test]
    fn adaptive_pooling_matches_the_reference(
        (m, h, w, ch) in (1usize..3, 1usize..12, 1usize..12, 1usize..9),
        (oh, ow) in (1usize..14, 1usize..14),
        avg in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mode = if avg { PoolMode::Avg } else { PoolMode::Max };
        let spec = Pool2dSpec::adaptive(mode, oh, ow);
        let x = array([m, h, w, ch], seed);
        let want = Engine::cpu_reference().pool2d(&x, &spec).unwrap();
        prop_assert_eq!(want.shape(), &[m, oh, ow, ch]);
        for (oy, ox) in [(0, 0), (oh - 1, ow - 1), (oh / 2, ow / 2)] {
            let (y0, y1) = (oy * h / oh, ((oy + 1) * h).div_ceil(oh));
            let (x0, x1) = (ox * w / ow, ((ox + 1) * w).div_ceil(ow));
            let win = x.slice(ndarray::s![0, y0..y1, x0..x1, 0]);
            let v = if avg {
                win.iter().map(|&v| v as f64).sum::<f64>() / win.len() as f64
            } else {
                win.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64
            };
            prop_assert!((want[[0, oy, ox, 0]] as f64 - v).abs() <= 1e-5);
        }
        for e in engines() {
            let got = e.pool2d(&x, &spec).unwrap();
            prop_assert!(close(&got, &want, if avg { 1e-5 } else { 0.0 }), "{}", e.describe());
        }
    }
}

/// Epilogue by hand: bias then each activation, NaN staying NaN.
#[test]
fn bias_and_activation_by_hand() {
    // One pixel, 1x1 kernel of ones over two channels: out = x0 + x1.
    let x = Array4::from_shape_vec((1, 1, 3, 2), vec![1.0, 2.0, -4.0, -1.0, f32::NAN, 0.0]).unwrap();
    let k = Array4::<f32>::ones((1, 1, 2, 1));
    let b = Array1::from(vec![0.5f32]);
    let cases: [(Option<Activation>, [f32; 3]); 5] = [
        (None, [3.5, -4.5, f32::NAN]),
        (Some(Activation::Relu), [3.5, 0.0, f32::NAN]),
        (Some(Activation::LeakyRelu(0.1)), [3.5, -0.45, f32::NAN]),
        (Some(Activation::Clip(-1.0, 1.0)), [1.0, -1.0, f32::NAN]),
        (Some(Activation::Relu6), [3.5, 0.0, f32::NAN]),
    ];
    for e in engines().iter().chain([&Engine::cpu_reference()]) {
        for (act, want) in cases {
            let spec = Conv2dSpec::default().with_activation(act);
            let got = e.conv2d_bias(&x, &k, &b, &spec).unwrap();
            for (g, w) in got.iter().zip(want) {
                assert!(
                    (g.is_nan() && w.is_nan()) || (g - w).abs() < 1e-6,
                    "{}: {act:?} {g} vs {w}",
                    e.describe()
                );
            }
        }
    }
}

/// ceil_mode with a window larger than the padded input returns the one
/// window (PyTorch, ONNX) while it overhangs by less than a stride.
#[test]
fn ceil_mode_with_a_window_larger_than_the_input() {
    let x = Array4::from_shape_vec((1, 2, 2, 1), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let spec = Pool2dSpec::new(PoolMode::Avg, 3, 3)
        .with_stride(2, 2)
        .with_ceil_mode(true);
    for e in engines().iter().chain([&Engine::cpu_reference()]) {
        let out = e.pool2d(&x, &spec).unwrap();
        assert_eq!(out.shape(), &[1, 1, 1, 1]);
        assert_eq!(out[[0, 0, 0, 0]], 2.5, "{}", e.describe());
        let max = e
            .pool2d(
                &x,
                &Pool2dSpec {
                    mode: PoolMode::Max,
                    ..spec
                },
            )
            .unwrap();
        assert_eq!(max[[0, 0, 0, 0]], 4.0);
    }
    // Overhanging by a whole stride, or without ceil_mode: still an error.
    let too_far = Pool2dSpec::new(PoolMode::Max, 4, 4)
        .with_stride(2, 2)
        .with_ceil_mode(true);
    assert!(matches!(
        Engine::cpu().pool2d(&x, &too_far),
        Err(Error::KernelTooLarge { .. })
    ));
    let floor = Pool2dSpec::new(PoolMode::Max, 3, 3).with_stride(2, 2);
    assert!(matches!(
        Engine::cpu().pool2d(&x, &floor),
        Err(Error::KernelTooLarge { .. })
    ));
}

/// A blur of a constant image is that constant everywhere with every
/// border mode but zeros, edges included.
#[test]
fn a_constant_image_stays_constant_under_non_zero_border_modes() {
    let x = Array4::from_elem((1, 9, 11, 3), 0.75f32);
    let k = Array4::from_elem((5, 5, 1, 3), 1.0 / 25.0);
    for mode in [
        PaddingMode::Reflect,
        PaddingMode::Symmetric,
        PaddingMode::Replicate,
        PaddingMode::Circular,
    ] {
        let spec = Conv2dSpec::new(Padding::Same).with_padding_mode(mode).with_groups(3);
        for e in engines().iter().chain([&Engine::cpu_reference()]) {
            let out = e.conv2d(&x, &k, &spec).unwrap();
            assert_eq!(out.shape(), x.shape());
            assert!(
                out.iter().all(|v| (v - 0.75).abs() < 1e-6),
                "{mode} on {}",
                e.describe()
            );
        }
    }
}

/// Every bad v2 argument is a typed, one-line error naming the argument,
/// before any work.
#[test]
fn bad_v2_arguments_are_typed_errors() {
    let e = Engine::cpu();
    let x = Array4::<f32>::zeros((1, 4, 5, 6));
    let err = |r: convpool::Result<Array4<f32>>| r.unwrap_err().to_string();
    let k = Array4::<f32>::zeros((3, 3, 3, 4));
    let groups = |g| Conv2dSpec::default().with_groups(g);
    for (spec, kernels, starts) in [
        (groups(4), &k, "groups"),                           // 4 does not divide 6
        (groups(2), &Array4::zeros((3, 3, 2, 4)), "groups"), // third axis is not c / g
        (groups(0), &k, "groups"),
        (groups(3), &Array4::zeros((3, 3, 2, 4)), "groups"), // 4 kernels, 3 groups
    ] {
        let msg = err(e.conv2d(&x, kernels, &spec));
        assert!(msg.starts_with(starts) && !msg.contains('\n'), "{msg}");
        assert!(msg.contains("(1, 4, 5, 6)"), "{msg}");
    }
    let k6 = Array4::<f32>::zeros((3, 3, 6, 2));
    let reflect = Conv2dSpec::new(Padding::Symmetric(4, 0)).with_padding_mode(PaddingMode::Reflect);
    let msg = err(e.conv2d(&x, &k6, &reflect));
    assert!(
        msg.starts_with("padding_mode: reflect") && msg.contains("pad 4"),
        "{msg}"
    );
    let circular = Conv2dSpec::new(Padding::Symmetric(0, 6)).with_padding_mode(PaddingMode::Circular);
    assert!(err(e.conv2d(&x, &k6, &circular)).starts_with("padding_mode: circular"));
    assert!(e
        .conv2d(&x, &k6, &circular.with_padding(Padding::Symmetric(4, 5)))
        .is_ok());
    let msg = err(e.conv2d_bias(&x, &k6, &Array1::zeros(3), &Conv2dSpec::default()));
    assert!(
        msg.starts_with("bias: expected shape (2,)") && msg.contains("got (3,)"),
        "{msg}"
    );
    let clip = Conv2dSpec::default().with_activation(Some(Activation::Clip(1.0, -1.0)));
    assert!(err(e.conv2d(&x, &k6, &clip)).starts_with("activation: "));
    let pool = |r: convpool::Result<Array4<f32>>| r.unwrap_err().to_string();
    assert!(pool(e.pool2d(&x, &Pool2dSpec::adaptive(PoolMode::Max, 0, 2))).starts_with("output_size"));
    let strided = Pool2dSpec::adaptive(PoolMode::Max, 2, 2).with_stride(2, 2);
    assert!(pool(e.pool2d(&x, &strided)).starts_with("output_size: adaptive pooling to (2, 2) takes no stride"));
    let avg = Pool2dSpec::new(PoolMode::Avg, 2, 2);
    let msg = e.max_pool2d_with_indices(&x, &avg).unwrap_err().to_string();
    assert!(msg.starts_with("mode: indices need max pooling"), "{msg}");
    // The same errors on the GPU, before it is touched.
    if let Some(gpu) = gpu_engine() {
        assert!(gpu
            .conv2d(&x, &k, &groups(4))
            .unwrap_err()
            .to_string()
            .starts_with("groups"));
    }
}

/// An empty batch keeps its shape through every v2 option.
#[test]
fn empty_batches() {
    let x = Array4::<f32>::zeros((0, 5, 6, 4));
    let k = Array4::<f32>::zeros((3, 3, 1, 8));
    let spec = Conv2dSpec::new(Padding::Same)
        .with_groups(4)
        .with_padding_mode(PaddingMode::Reflect)
        .with_activation(Some(Activation::Relu));
    for e in engines() {
        assert_eq!(
            e.conv2d_bias(&x, &k, &Array1::zeros(8), &spec).unwrap().shape(),
            &[0, 5, 6, 8]
        );
        let (v, i) = e
            .max_pool2d_with_indices(&x, &Pool2dSpec::adaptive(PoolMode::Max, 2, 3))
            .unwrap();
        assert_eq!((v.shape(), i.shape()), (&[0, 2, 3, 4][..], &[0, 2, 3, 4][..]));
    }
    let _ = Axis(0);
}

/// The GPU's tiled kernel with groups (more than four channels per group,
/// vec4 loads and scalar loads), every border mode and the epilogue.
#[test]
fn gpu_tiled_groups_with_borders_and_epilogue() {
    let Some(gpu) = gpu_engine() else { return };
    for (c, nc, groups) in [(16, 24, 2), (10, 12, 2), (15, 18, 3), (8, 64, 1)] {
        let x = array([2, 9, 11, c], c as u64);
        let k = array([3, 3, c / groups, nc], nc as u64);
        let bias = bias_of(nc, 5);
        for mode in PaddingMode::ALL {
            let spec = Conv2dSpec::new(Padding::Same)
                .with_groups(groups)
                .with_padding_mode(mode)
                .with_activation(Some(Activation::LeakyRelu(0.1)));
            let want = run(&Engine::cpu_reference(), &x, &k, Some(&bias), &spec);
            let got = run(gpu, &x, &k, Some(&bias), &spec);
            assert!(close(&got, &want, 1e-4), "c {c}, nc {nc}, groups {groups}, {mode}");
        }
    }
}

/// Border modes and adaptive windows across GPU chunks: row bands of one
/// image (their rows mapped through the border) and runs of whole images
/// agree with the unchunked call bit for bit.
#[test]
fn gpu_chunks_with_border_modes_and_adaptive_windows() {
    let Some(big) = gpu_engine() else { return };
    let Some(small) = common::gpu_engine_with(convpool::GpuOptions {
        max_binding_bytes: Some(4096),
        ..Default::default()
    }) else {
        return;
    };
    let x = array([2, 24, 20, 2], 3);
    let k = array([3, 3, 1, 6], 4);
    for mode in PaddingMode::ALL {
        let spec = Conv2dSpec::new(Padding::Symmetric(2, 1))
            .with_dilation(2, 1)
            .with_groups(2)
            .with_padding_mode(mode);
        let g = spec.resolve([2, 24, 20, 2], [3, 3, 1, 6]).unwrap();
        let chunks = small.gpu().unwrap().plan_conv(&g).unwrap();
        assert!(chunks.len() > 2, "{mode}: {} chunks", chunks.len());
        let a = run(big, &x, &k, None, &spec);
        let b = run(&small, &x, &k, None, &spec);
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()), "{mode}");
        assert!(
            close(&a, &run(&Engine::cpu_reference(), &x, &k, None, &spec), 1e-4),
            "{mode}"
        );
    }
    let x = array([6, 12, 10, 2], 9);
    for mode in [PoolMode::Max, PoolMode::Avg] {
        let spec = Pool2dSpec::adaptive(mode, 5, 3);
        assert!(
            small
                .gpu()
                .unwrap()
                .plan_pool(&spec.resolve([6, 12, 10, 2]).unwrap())
                .unwrap()
                .len()
                > 1
        );
        let (a, b) = (big.pool2d(&x, &spec).unwrap(), small.pool2d(&x, &spec).unwrap());
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()), "{mode}");
    }
    let spec = Pool2dSpec::new(PoolMode::Max, 3, 3).with_stride(2, 2);
    assert_eq!(
        big.max_pool2d_with_indices(&x, &spec).unwrap().1,
        small.max_pool2d_with_indices(&x, &spec).unwrap().1
    );
}

/// A window far larger than the image (huge pads, or ceil_mode past the
/// padded input) costs its real taps only, on the CPU paths.
#[test]
fn huge_pooling_windows_cost_their_real_taps() {
    let x = Array4::from_shape_vec((1, 3, 1, 2), vec![1.0, -1.0, 5.0, -2.0, 3.0, -3.0]).unwrap();
    let huge = 1usize << 30;
    for spec in [
        Pool2dSpec::new(PoolMode::Max, huge, 1)
            .with_stride(1, 1)
            .with_padding(Padding::Symmetric(huge / 2, 0)),
        Pool2dSpec::new(PoolMode::Avg, huge, 1).with_ceil_mode(true),
    ] {
        let start = std::time::Instant::now();
        let want = Engine::cpu_reference().pool2d(&x, &spec).unwrap();
        for e in cpu_engines() {
            assert_eq!(e.pool2d(&x, &spec).unwrap(), want);
        }
        assert!(start.elapsed().as_secs() < 20, "{spec:?}");
        let (v, i) = Engine::cpu()
            .max_pool2d_with_indices(
                &x,
                &Pool2dSpec {
                    mode: PoolMode::Max,
                    ..spec
                },
            )
            .unwrap();
        assert!(v.iter().zip(&i).all(|(v, &i)| i < 0
            || x.as_slice().unwrap()[i as usize * 2] == *v
            || x.as_slice().unwrap()[i as usize * 2 + 1] == *v));
    }
}

/// Replicate padding takes any pad: pads of 2^31 around a small image with
/// a stride as large give a small result without a hand-padded copy the
/// machine cannot hold (an `engine` fuzz finding).
#[test]
fn huge_replicate_pads_do_not_pad_by_hand() {
    let x = array([1, 3, 2, 1], 1);
    let k = array([2, 2, 1, 1], 2);
    let big = 1usize << 31;
    let spec = Conv2dSpec::new(Padding::Symmetric(big, big))
        .with_stride(big, big)
        .with_padding_mode(PaddingMode::Replicate);
    let want = Engine::cpu_reference().conv2d(&x, &k, &spec).unwrap();
    for e in cpu_engines() {
        assert_eq!(e.conv2d(&x, &k, &spec).unwrap(), want);
    }
    assert_eq!(want.shape(), &[1, 3, 3, 1]);
}

/// A stride past the padded image (one output on that axis) is cut to the
/// padded extent by the fast paths, not to 1: kernels that run a batch as
/// one tall image step from image to image by the stride (found by the
/// `engine` fuzz target and the GPU property test when it was cut to 1).
#[test]
fn strides_past_the_image_on_every_path() {
    let x = common::array([2, 2, 1, 1], 31);
    let k = common::array([1, 1, 1, 5], 32);
    for (sh, sw) in [(2, 1), (3, 1), (1 << 62, 1 << 40), (5, 7)] {
        let spec = Conv2dSpec::default().with_stride(sh, sw);
        let want = Engine::cpu_reference().conv2d(&x, &k, &spec).unwrap();
        for engine in engines() {
            let got = engine.conv2d(&x, &k, &spec).unwrap();
            assert_eq!(got, want, "stride ({sh}, {sw}) on {}", engine.describe());
        }
        let pool = Pool2dSpec::new(PoolMode::Max, 1, 1).with_stride(sh, sw);
        let want = Engine::cpu_reference().pool2d(&x, &pool).unwrap();
        for engine in engines() {
            assert_eq!(engine.pool2d(&x, &pool).unwrap(), want, "{}", engine.describe());
        }
    }
}
