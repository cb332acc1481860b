//! Property tests of the CPU reference (shapes, `same`, identity, linearity,
//! constant pooling) and of typed errors on invalid input.

use convpool::{Conv2dSpec, Engine, Error, Padding, Pool2dSpec, PoolMode};
use ndarray::{Array4, ArrayView4};
use proptest::prelude::*;

mod common;

use common::{array, cpu_engines, hostile, padding_strategy};

/// Output size written independently of the crate: SPEC.md's formula.
fn expected_len(size: usize, pads: (usize, usize), k: usize, d: usize, s: usize) -> usize {
    let ek = (k - 1) * d + 1;
    (size + pads.0 + pads.1 - ek) / s + 1
}

#[derive(Debug, Clone)]
struct ConvCase {
    images: [usize; 4],
    kernels: [usize; 4],
    spec: Conv2dSpec,
    seed: u64,
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (0usize..3, 1usize..10, 1usize..10, 1usize..4),
        (1usize..5, 1usize..5, 1usize..4),
        (1usize..4, 1usize..4, 1usize..3, 1usize..3),
        padding_strategy(),
        any::<u64>(),
    )
        .prop_map(
            |((m, h, w, c), (kh, kw, nc), (sh, sw, dh, dw), padding, seed)| ConvCase {
                images: [m, h, w, c],
                kernels: [kh, kw, c, nc],
                spec: Conv2dSpec::new(padding).with_stride(sh, sw).with_dilation(dh, dw),
                seed,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn output_shape_follows_the_formula(case in conv_case()) {
        let Ok(g) = case.spec.resolve(case.images, case.kernels) else {
            // Only a kernel larger than the padded image may be refused here.
            let padded_ok = case.spec.resolve(case.images, [1, 1, case.images[3], 1]).is_ok();
            prop_assert!(padded_ok);
            return Ok(());
        };
        let [m, h, w, _] = case.images;
        let p = g.pads();
        prop_assert_eq!(g.oh(), expected_len(h, (p.top, p.bottom), g.kh(), g.dh(), g.sh()));
        prop_assert_eq!(g.ow(), expected_len(w, (p.left, p.right), g.kw(), g.dw(), g.sw()));
        let out = Engine::cpu()
            .conv2d(&array(case.images, case.seed), &array(case.kernels, !case.seed), &case.spec)
            .unwrap();
        prop_assert_eq!(out.shape(), &[m, g.oh(), g.ow(), case.kernels[3]]);
    }

    #[test]
    fn same_gives_ceil_of_size_over_stride(case in conv_case()) {
        for padding in [Padding::Same, Padding::SameLower] {
            let spec = case.spec.with_padding(padding);
            let g = spec.resolve(case.images, case.kernels).unwrap();
            prop_assert_eq!(g.oh(), case.images[1].div_ceil(spec.stride.0));
            prop_assert_eq!(g.ow(), case.images[2].div_ceil(spec.stride.1));
        }
    }

    #[test]
    fn delta_kernel_returns_the_input(
        (m, h, w, c) in (1usize..3, 1usize..10, 1usize..10, 1usize..4),
        (half_h, half_w, dh, dw) in (0usize..3, 0usize..3, 1usize..3, 1usize..3),
        seed in any::<u64>(),
    ) {
        let (kh, kw) = (2 * half_h + 1, 2 * half_w + 1);
        let mut k = Array4::<f32>::zeros((kh, kw, c, c));
        for ch in 0..c {
            k[[half_h, half_w, ch, ch]] = 1.0;
        }
        let x = array([m, h, w, c], seed);
        let spec = Conv2dSpec::new(Padding::Same).with_dilation(dh, dw);
        let y = Engine::cpu().conv2d(&x, &k, &spec).unwrap();
        prop_assert_eq!(y, x);
    }

    #[test]
    fn linear_in_the_kernel(case in conv_case(), a in -2.0f32..2.0, b in -2.0f32..2.0) {
        prop_assume!(case.spec.resolve(case.images, case.kernels).is_ok());
        let e = Engine::cpu();
        let x = array(case.images, case.seed);
        let k1 = array(case.kernels, case.seed.rotate_left(7));
        let k2 = array(case.kernels, case.seed.rotate_left(19));
        let mixed = &k1 * a + &k2 * b;
        let lhs = e.conv2d(&x, &mixed, &case.spec).unwrap();
        let rhs = e.conv2d(&x, &k1, &case.spec).unwrap() * a + e.conv2d(&x, &k2, &case.spec).unwrap() * b;
        let tol = convpool::check::conv_tolerance(case.kernels[0] * case.kernels[1] * case.kernels[2], 4.0 * 16.0);
        prop_assert!(convpool::check::within(lhs.view(), rhs.view(), tol));
    }

    #[test]
    fn max_pool_of_a_constant_is_the_constant(
        (m, h, w, c) in (1usize..3, 1usize..10, 1usize..10, 1usize..4),
        (kh, kw, sh, sw) in (1usize..4, 1usize..4, 1usize..4, 1usize..4),
        padding in padding_strategy(),
        ceil_mode in any::<bool>(),
        value in -1e30f32..1e30,
    ) {
        let spec = Pool2dSpec::new(PoolMode::Max, kh, kw)
            .with_stride(sh, sw)
            .with_padding(padding)
            .with_ceil_mode(ceil_mode);
        let x = Array4::from_elem((m, h, w, c), value);
        match Engine::cpu().pool2d(&x, &spec) {
            Ok(y) => prop_assert!(y.iter().all(|&v| v == value)),
            Err(e) => prop_assert!(
                matches!(e, Error::PoolPaddingTooLarge { .. } | Error::KernelTooLarge { .. }),
                "{}", e
            ),
        }
    }

    #[test]
    fn invalid_input_is_a_typed_error(
        (m, h, w, c) in (0usize..3, 0usize..6, 0usize..6, 0usize..4),
        (kh, kw, kc, nc) in (0usize..8, 0usize..8, 0usize..5, 0usize..3),
        (sh, sw, dh, dw) in (0usize..3, 0usize..3, 0usize..3, 0usize..3),
        padding in padding_strategy(),
    ) {
        let x = Array4::<f32>::zeros((m, h, w, c));
        let k = Array4::<f32>::zeros((kh, kw, kc, nc));
        let spec = Conv2dSpec::new(padding).with_stride(sh, sw).with_dilation(dh, dw);
        // Whatever the shapes, the call returns; an error names an argument.
        if let Err(e) = Engine::cpu().conv2d(&x, &k, &spec) {
            let msg = e.to_string();
            prop_assert!(
                ["images", "kernels", "stride", "dilation", "channel", "padding"].iter().any(|a| msg.contains(a)),
                "{}", msg
            );
        }
        let pool = Pool2dSpec::new(PoolMode::Avg, kh, kw).with_stride(sh, sw).with_padding(padding);
        if let Err(e) = Engine::cpu().pool2d(&x, &pool) {
            let msg = e.to_string();
            prop_assert!(
                ["images", "window", "stride", "dilation", "padding"].iter().any(|a| msg.contains(a)),
                "{}", msg
            );
        }
    }
}

proptest! {
    // Shapes that do not resolve are redrawn: room for that in deeper runs
    // (PROPTEST_CASES in the thousands).
    #![proptest_config(ProptestConfig { max_global_rejects: 1 << 16, ..ProptestConfig::with_cases(256) })]

    /// The fast CPU path (every strategy: pointwise GEMM, direct, im2col)
    /// against the reference, through verify mode.
    #[test]
    fn fast_cpu_conv_matches_reference(
        (m, h, w, c) in (0usize..=5, 1usize..14, 1usize..14, 1usize..=17),
        (kh, kw, nc) in (1usize..5, 1usize..5, 1usize..=40),
        (sh, sw, dh, dw) in (1usize..4, 1usize..4, 1usize..3, 1usize..3),
        padding in padding_strategy(),
        seed in any::<u64>(),
    ) {
        let spec = Conv2dSpec::new(padding).with_stride(sh, sw).with_dilation(dh, dw);
        prop_assume!(spec.resolve([m, h, w, c], [kh, kw, c, nc]).is_ok());
        let (x, k) = (array([m, h, w, c], seed), array([kh, kw, c, nc], !seed));
        for e in cpu_engines() {
            let y = e.conv2d(&x, &k, &spec);
            prop_assert!(y.is_ok(), "{}: {}", e.describe(), y.unwrap_err());
        }
    }

    /// Shapes of the Winograd path (3x3, stride 1, no dilation, channels in
    /// whole vectors), which the general strategy above rarely draws.
    #[test]
    fn fast_cpu_winograd_shapes_match_reference(
        (m, h, w) in (0usize..=3, 1usize..20, 1usize..20),
        (c, nc) in (prop::sample::select(vec![16usize, 24, 32, 64]), prop::sample::select(vec![16usize, 32, 48])),
        padding in padding_strategy(),
        seed in any::<u64>(),
    ) {
        let spec = Conv2dSpec::new(padding);
        prop_assume!(spec.resolve([m, h, w, c], [3, 3, c, nc]).is_ok());
        let (x, k) = (array([m, h, w, c], seed), array([3, 3, c, nc], !seed));
        for e in cpu_engines() {
            let y = e.conv2d(&x, &k, &spec);
            prop_assert!(y.is_ok(), "{}: {}", e.describe(), y.unwrap_err());
        }
    }

    #[test]
    fn fast_cpu_pool_matches_reference(
        (m, h, w, c) in (0usize..=5, 1usize..14, 1usize..14, 1usize..=17),
        (kh, kw, sh, sw, dh, dw) in (1usize..5, 1usize..5, 1usize..4, 1usize..4, 1usize..3, 1usize..3),
        padding in padding_strategy(),
        (avg, ceil_mode, count_include_pad) in (any::<bool>(), any::<bool>(), any::<bool>()),
        seed in any::<u64>(),
    ) {
        let mode = if avg { PoolMode::Avg } else { PoolMode::Max };
        let spec = Pool2dSpec::new(mode, kh, kw)
            .with_stride(sh, sw)
            .with_dilation(dh, dw)
            .with_padding(padding)
            .with_ceil_mode(ceil_mode)
            .with_count_include_pad(count_include_pad);
        prop_assume!(spec.resolve([m, h, w, c]).is_ok());
        let x = array([m, h, w, c], seed);
        for e in cpu_engines() {
            let y = e.pool2d(&x, &spec);
            prop_assert!(y.is_ok(), "{}: {}", e.describe(), y.unwrap_err());
        }
    }
}

#[test]
fn pointwise_and_special_values_on_the_fast_path() {
    // 1x1 valid stride 1 is the GEMM strategy; an inf weight meets padded
    // zeros in the other strategies.
    for e in cpu_engines() {
        pointwise_and_special_values_on(&e);
    }
}

fn pointwise_and_special_values_on(e: &Engine) {
    let x = array([3, 7, 9, 5], 11);
    let k = array([1, 1, 5, 6], 12);
    e.conv2d(&x, &k, &Conv2dSpec::default()).unwrap();
    let mut x = array([2, 8, 9, 3], 13);
    x[[0, 2, 2, 1]] = f32::NAN;
    x[[1, 4, 4, 0]] = f32::INFINITY;
    for nc in [1, 2, 8] {
        let mut k = array([3, 3, 3, nc], 14);
        k[[0, 0, 0, 0]] = f32::INFINITY;
        let y = e.conv2d(&x, &k, &Conv2dSpec::new(Padding::Same)).unwrap();
        // The corner output multiplies the infinite weight by a padded zero.
        assert!(y[[0, 0, 0, 0]].is_nan());
    }
}

#[test]
fn hand_computed_small_cases() {
    let x = Array4::from_shape_vec((1, 3, 3, 1), (1..=9).map(|v| v as f32).collect()).unwrap();
    let k = Array4::from_shape_vec((2, 2, 1, 1), vec![1.0, 0.0, 0.0, -1.0]).unwrap();
    let e = Engine::cpu();
    // x[y, x] - x[y + 1, x + 1] = -4 everywhere.
    let y = e.conv2d(&x, &k, &Conv2dSpec::default()).unwrap();
    assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![-4.0; 4]);
    // Same (even kernel): extra padding at the end; bottom-right sees only 9.
    let y = e.conv2d(&x, &k, &Conv2dSpec::new(Padding::Same)).unwrap();
    assert_eq!(y[[0, 2, 2, 0]], 9.0);
    assert_eq!(y[[0, 0, 2, 0]], 3.0 - 0.0);
    // Avg pool 2x2 stride 1 with ceil and padding counted or not.
    let spec = Pool2dSpec::new(PoolMode::Avg, 2, 2)
        .with_stride(2, 2)
        .with_ceil_mode(true);
    let y = e.pool2d(&x, &spec).unwrap();
    assert_eq!(y.shape(), &[1, 2, 2, 1]);
    assert_eq!(y[[0, 0, 0, 0]], (1.0 + 2.0 + 4.0 + 5.0) / 4.0);
    assert_eq!(y[[0, 1, 1, 0]], 9.0); // one real cell
    assert_eq!(y[[0, 0, 1, 0]], (3.0 + 6.0) / 2.0);
    let spec = Pool2dSpec::new(PoolMode::Max, 2, 2)
        .with_stride(2, 2)
        .with_padding(Padding::Symmetric(1, 1));
    let x = -x;
    let y = e.pool2d(&x, &spec).unwrap();
    // Padding never wins, even against negative numbers.
    assert_eq!(y[[0, 0, 0, 0]], -1.0);
    // NaN beats every number in max pooling.
    let mut x = x;
    x[[0, 1, 1, 0]] = f32::NAN;
    let y = e.pool2d(&x, &spec).unwrap();
    assert!(y[[0, 1, 1, 0]].is_nan());
    assert_eq!(y[[0, 0, 0, 0]], -1.0);
}

#[test]
fn empty_batch_gives_empty_result_of_the_right_shape() {
    let x = Array4::<f32>::zeros((0, 5, 6, 3));
    let k = Array4::<f32>::zeros((3, 3, 3, 2));
    let y = Engine::cpu()
        .conv2d(&x, &k, &Conv2dSpec::new(Padding::Same).with_stride(2, 1))
        .unwrap();
    assert_eq!(y.shape(), &[0, 3, 6, 2]);
    let _: ArrayView4<f32> = y.view();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Hostile geometry (strides, dilations, pads up to 1e9 on tiny images):
    /// a typed error, or the reference's result without a workspace sized by
    /// the padded span (which would abort the process on allocation).
    #[test]
    fn huge_strides_dilations_and_pads(case in hostile()) {
        let x = array(case.images, case.seed);
        let engine = Engine::cpu().with_verify(true);
        if let Some(spec) = case.conv() {
            let y = engine.conv2d(&x, &array(case.kernels, !case.seed), &spec);
            prop_assert!(y.is_ok(), "{}", y.unwrap_err());
        }
        if let Some(pool) = case.pool(PoolMode::Avg) {
            let y = engine.pool2d(&x, &pool);
            prop_assert!(y.is_ok(), "{}", y.unwrap_err());
        }
    }
}

/// Each instruction set gives the same bits run to run (pieces are summed
/// independently, whatever thread takes them), on a workload of every
/// kernel: planar (gray and RGB), NHWC, Winograd, pointwise, im2col, both
/// pooling paths; and max pooling is the same bits on every instruction set.
#[test]
fn every_isa_is_deterministic_and_max_pooling_agrees_across_isas() {
    let convs: &[([usize; 4], [usize; 4], Padding, usize)] = &[
        ([3, 40, 37, 1], [3, 3, 1, 1], Padding::Same, 1),
        ([4, 32, 32, 3], [3, 3, 3, 1], Padding::Same, 1),
        ([4, 32, 32, 3], [3, 3, 3, 16], Padding::Same, 1),
        ([2, 20, 20, 32], [3, 3, 32, 64], Padding::Same, 1),
        ([2, 20, 20, 32], [1, 1, 32, 24], Padding::Valid, 1),
        ([2, 20, 20, 24], [5, 5, 24, 40], Padding::Same, 2),
    ];
    let engines = cpu_engines();
    for &(xs, ks, padding, s) in convs {
        let (x, k) = (array(xs, 21), array(ks, 22));
        let spec = Conv2dSpec::new(padding).with_stride(s, s);
        for e in &engines {
            let a = e.conv2d(&x, &k, &spec).unwrap();
            let b = e.conv2d(&x, &k, &spec).unwrap();
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{}: {xs:?} * {ks:?} differs run to run",
                e.describe()
            );
        }
    }
    for (xs, mode) in [
        ([3, 33, 35, 3], PoolMode::Max),
        ([2, 28, 28, 64], PoolMode::Max),
        ([2, 28, 28, 40], PoolMode::Avg),
    ] {
        let mut x = array(xs, 23);
        x[[0, 3, 4, 1]] = f32::NAN;
        let spec = Pool2dSpec::new(mode, 3, 3)
            .with_stride(2, 2)
            .with_padding(Padding::Same);
        let first = engines[0].pool2d(&x, &spec).unwrap();
        for e in &engines {
            let a = e.pool2d(&x, &spec).unwrap();
            let b = e.pool2d(&x, &spec).unwrap();
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{}",
                e.describe()
            );
            if mode == PoolMode::Max {
                assert!(
                    a.iter().zip(&first).all(|(p, q)| p == q || (p.is_nan() && q.is_nan())),
                    "{} max pooling differs from {}",
                    e.describe(),
                    engines[0].describe()
                );
            }
        }
    }
}

/// An instruction set this CPU lacks, or an unknown name, is a typed error
/// naming the argument, before any work.
#[test]
fn unavailable_or_unknown_isa_is_an_error() {
    for isa in convpool::Isa::ALL {
        match Engine::cpu_with_isa(isa) {
            Ok(e) => assert_eq!(e.cpu_isa(), Some(isa)),
            Err(err) => {
                assert!(!isa.is_available());
                assert!(err.to_string().starts_with("isa"), "{err}");
            }
        }
    }
    assert!("avx1024".parse::<convpool::Isa>().is_err());
    let bad = convpool::EngineOptions {
        device: convpool::Device::Cpu,
        cpu_isa: convpool::Isa::ALL.into_iter().find(|i| !i.is_available()),
        ..Default::default()
    };
    if bad.cpu_isa.is_some() {
        let err = Engine::with_options(bad).unwrap_err().to_string();
        assert!(err.starts_with("cpu_isa"), "{err}");
    }
}
