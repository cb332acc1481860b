//! NaN, infinities and subnormals through every GPU kernel, against the
//! reference. naga emits no float controls, so how a driver treats them is
//! the driver's choice; these tests pin the results SPEC.md asks for on
//! whatever adapter runs them (lavapipe in CI, any lent device). Every
//! engine runs in verify mode: NaN and infinities must match exactly,
//! finite values within SPEC's tolerance (max pooling exactly).

use crate::common::{array, gpu_engine_with};
use convpool::{Conv2dSpec, Engine, GpuOptions, Padding, PaddingMode, Pool2dSpec, PoolMode};
use ndarray::Array4;

/// Values of every class: ordinary numbers with NaN, +inf, -inf, signed
/// zeros, subnormals and values of magnitude `big` sprinkled in (about one
/// cell in `every`). `big` stays where no sum of the call overflows f32:
/// past it the reference (f64) and any f32 path part ways by design.
fn specials(shape: [usize; 4], seed: u64, every: usize, big: f32) -> Array4<f32> {
    let odd: [f32; 9] = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        1e-40,
        -3e-39,
        f32::MIN_POSITIVE / 2.0,
        big,
        -big,
    ];
    let mut x = array(shape, seed);
    for (i, v) in x.iter_mut().enumerate() {
        let h = (i as u64 ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        if (h as usize).is_multiple_of(every) {
            *v = odd[(h as usize / every) % odd.len()];
        }
    }
    x
}

/// Subnormal values only, of both signs.
fn subnormals(shape: [usize; 4], seed: u64) -> Array4<f32> {
    array(shape, seed).mapv(|v| v * 1e-39)
}

fn engine(options: GpuOptions) -> Option<Engine> {
    gpu_engine_with(options)
}

/// What a case is, images, kernels, spec, register block.
type ConvCase = (&'static str, [usize; 4], [usize; 4], Conv2dSpec, Option<u32>);

/// Each conv kernel of the table, by the shapes that select it.
fn conv_cases() -> Vec<ConvCase> {
    let same = Conv2dSpec::new(Padding::Same);
    vec![
        (
            "tiled, vec4 images and kernels",
            [2, 9, 8, 8],
            [3, 3, 8, 8],
            same,
            Some(4),
        ),
        ("tiled 8x8 block", [1, 12, 12, 8], [3, 3, 8, 64], same, Some(8)),
        ("tiled, scalar loads (c = 3)", [2, 9, 8, 3], [3, 3, 3, 6], same, Some(4)),
        (
            "tiled, pointwise",
            [2, 7, 6, 8],
            [1, 1, 8, 12],
            Conv2dSpec::default(),
            None,
        ),
        (
            "tiled, reflect border",
            [1, 9, 8, 4],
            [3, 3, 4, 8],
            same.with_padding_mode(PaddingMode::Reflect),
            None,
        ),
        ("direct, per pixel (nc <= 4)", [2, 9, 8, 3], [3, 3, 3, 2], same, None),
        // Asked for by name (GpuOptions::conv_winograd).
        ("winograd", [2, 9, 8, 8], [3, 3, 8, 12], same, None),
        (
            "winograd, replicate border",
            [1, 10, 7, 4],
            [3, 3, 4, 8],
            same.with_padding_mode(PaddingMode::Replicate),
            None,
        ),
        (
            "direct, per output (depthwise)",
            [2, 9, 8, 6],
            [3, 3, 1, 6],
            same.with_groups(6),
            None,
        ),
    ]
}

fn pool_cases() -> Vec<(&'static str, [usize; 4], Pool2dSpec, bool)> {
    let overlap = |m| Pool2dSpec::new(m, 3, 3).with_stride(2, 2).with_padding(Padding::Same);
    let mut v = Vec::new();
    for mode in [PoolMode::Max, PoolMode::Avg] {
        v.push(("plain, vec4 channels", [2, 9, 8, 4], overlap(mode), false));
        v.push(("plain, scalar channels", [2, 9, 8, 3], overlap(mode), false));
        v.push(("tiled", [2, 9, 8, 4], overlap(mode), true));
        v.push(("adaptive", [2, 9, 8, 3], Pool2dSpec::adaptive(mode, 4, 3), false));
    }
    v
}

fn check_conv(data: fn([usize; 4], u64) -> Array4<f32>, what: &str) {
    for (name, xs, ks, spec, block) in conv_cases() {
        let Some(e) = engine(GpuOptions {
            conv_register_block: block,
            conv_winograd: Some(name.starts_with("winograd")),
            ..Default::default()
        }) else {
            return;
        };
        let x = data(xs, 3);
        // Kernels hold the same classes of values as the images.
        let k = data(ks, 4);
        let got = e
            .conv2d(&x, &k, &spec)
            .unwrap_or_else(|err| panic!("{what}, {name}: {err}"));
        let want = Engine::cpu_reference().conv2d(&x, &k, &spec).unwrap();
        for (g, w) in got.iter().zip(want.iter()) {
            assert_eq!(
                g.is_nan(),
                w.is_nan(),
                "{what}, {name}: NaN where the reference has {w}"
            );
            if w.is_infinite() {
                assert_eq!(g, w, "{what}, {name}");
            }
        }
    }
}

fn check_pool(data: fn([usize; 4], u64) -> Array4<f32>, what: &str) {
    for (name, xs, spec, tiled) in pool_cases() {
        let Some(e) = engine(GpuOptions {
            tiled_pooling: Some(tiled),
            ..Default::default()
        }) else {
            return;
        };
        let x = data(xs, 5);
        let got = e
            .pool2d(&x, &spec)
            .unwrap_or_else(|err| panic!("{what}, {name} {:?}: {err}", spec.mode));
        let want = Engine::cpu_reference().pool2d(&x, &spec).unwrap();
        if spec.mode == PoolMode::Max {
            // Max pooling is a choice among the inputs: the same bits.
            assert!(
                got.iter()
                    .zip(want.iter())
                    .all(|(g, w)| g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan())),
                "{what}, {name}: max pooling differs from the reference"
            );
        }
        if spec.mode == PoolMode::Max {
            let (values, idx) = e.max_pool2d_with_indices(&x, &spec).unwrap();
            let (_, want_idx) = Engine::cpu_reference().max_pool2d_with_indices(&x, &spec).unwrap();
            assert_eq!(idx, want_idx, "{what}, {name}: argmax");
            assert_eq!(values.mapv(f32::to_bits), got.mapv(f32::to_bits));
        }
    }
}

#[test]
fn nan_infinities_and_extremes_through_every_conv_kernel() {
    // Products of two 1e17s and sums of a few hundred stay below f32::MAX.
    check_conv(|s, seed| specials(s, seed, 7, 1e17), "specials");
}

#[test]
fn subnormals_through_every_conv_kernel() {
    check_conv(subnormals, "subnormals");
}

#[test]
fn nan_infinities_and_extremes_through_every_pool_kernel() {
    check_pool(|s, seed| specials(s, seed, 5, 1e37), "specials");
}

#[test]
fn subnormals_through_every_pool_kernel() {
    check_pool(subnormals, "subnormals");
}

/// Values near `f32::MAX` of both signs: f32 sums of a window overflow
/// where its mean does not, and every pool kernel still gives the
/// reference's mean (verify mode holds it to SPEC.md's tolerance).
#[test]
fn averages_near_the_f32_limit_through_every_pool_kernel() {
    check_pool(
        |s, seed| array(s, seed).mapv(|v| if v > -0.5 { 3e38 } else { -1e38 }),
        "near f32::MAX",
    );
}
