//! The GPU path on whatever adapter wgpu finds (Mesa's lavapipe in CI).
//! Every engine here runs in verify mode, so each call is also compared with
//! the CPU reference under SPEC.md's tolerance.

mod common;

// Kept in this binary (each test binary links wgpu once more).
#[path = "gpu/numerics.rs"]
mod numerics;
#[path = "gpu/resident.rs"]
mod resident;
#[path = "gpu/winograd.rs"]
mod winograd;

use common::{array, gpu_engine, gpu_engine_with, hostile, padding_strategy};
use convpool::{Activation, Conv2dSpec, Engine, Error, GpuOptions, Padding, PaddingMode, Pool2dSpec, PoolMode};
use ndarray::{Array1, Array4};
use proptest::prelude::*;
use std::sync::OnceLock;

#[test]
fn device_runs_a_small_dispatch_with_hand_computed_values() {
    let Some(engine) = gpu_engine() else { return };
    assert!(engine.is_gpu(), "{}", engine.describe());
    let x = Array4::from_shape_vec((1, 2, 3, 1), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let k = Array4::from_shape_vec((1, 2, 1, 2), vec![1.0, 10.0, 1.0, -1.0]).unwrap();
    let y = engine.conv2d(&x, &k, &Conv2dSpec::default()).unwrap();
    // Channel 0 sums neighbours, channel 1 is 10 * left - right.
    assert_eq!(y.shape(), &[1, 2, 2, 2]);
    assert_eq!(
        y.iter().copied().collect::<Vec<_>>(),
        vec![3.0, 8.0, 5.0, 17.0, 9.0, 35.0, 11.0, 44.0]
    );
    let y = engine
        .pool2d(&x, &Pool2dSpec::new(PoolMode::Max, 2, 2).with_stride(1, 1))
        .unwrap();
    assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![5.0, 6.0]);
}

fn forced(max_binding_bytes: Option<u64>, max_workgroups_per_dim: Option<u32>) -> Option<Engine> {
    gpu_engine_with(GpuOptions {
        max_binding_bytes,
        max_workgroups_per_dim,
        ..Default::default()
    })
}

/// The same call on a default engine and a forced-limit engine must agree
/// bit for bit: chunking changes where work runs, not what it computes.
fn assert_chunked_equal(small: &Engine, x: &Array4<f32>, k: &Array4<f32>, conv: &Conv2dSpec, pool: &Pool2dSpec) {
    let Some(big) = gpu_engine() else { return };
    let ctx = small.gpu().unwrap();
    let conv_chunks = ctx.plan_conv(&conv.resolve(dims(x), dims(k)).unwrap()).unwrap();
    let pool_chunks = ctx.plan_pool(&pool.resolve(dims(x)).unwrap()).unwrap();
    eprintln!("conv chunks {conv_chunks:?}\npool chunks {pool_chunks:?}");
    let one_image = (x.len() / x.dim().0 * 4) as u64;
    if ctx.max_binding_bytes() < one_image {
        // Row bands of single images, with every output row covered once.
        assert!(conv_chunks.iter().all(|c| c.batch == 1 && c.out_rows < x.dim().1));
        assert!(pool_chunks.iter().all(|c| c.batch == 1));
    } else if ctx.max_binding_bytes() < x.len() as u64 * 4 {
        assert!(conv_chunks.len() > 1 && conv_chunks.iter().all(|c| c.out_row0 == 0));
    }
    assert_eq!(big.conv2d(x, k, conv).unwrap(), small.conv2d(x, k, conv).unwrap());
    let a = big.pool2d(x, pool).unwrap();
    let b = small.pool2d(x, pool).unwrap();
    assert!(a.iter().zip(b.iter()).all(|(p, q)| p.to_bits() == q.to_bits()));
}

fn dims(a: &Array4<f32>) -> [usize; 4] {
    let (m, h, w, c) = a.dim();
    [m, h, w, c]
}

#[test]
fn chunking_over_the_batch() {
    // One image is 12 * 11 * 3 * 4 = 1584 bytes: 4 KiB holds two.
    let Some(small) = forced(Some(4096), None) else {
        return;
    };
    let x = array([7, 12, 11, 3], 1);
    let k = array([3, 3, 3, 5], 2);
    let conv = Conv2dSpec::new(Padding::Same);
    let pool = Pool2dSpec::new(PoolMode::Avg, 3, 3)
        .with_stride(2, 2)
        .with_padding(Padding::Same);
    assert_chunked_equal(&small, &x, &k, &conv, &pool);
}

#[test]
fn chunking_over_rows_of_one_image() {
    // One row is 40 * 2 * 4 = 320 bytes and an output row reads 9 of them
    // (dilated kernel): 4 KiB forces bands of 2 output rows with their halo.
    let Some(small) = forced(Some(4096), None) else {
        return;
    };
    let x = array([2, 37, 40, 2], 3);
    let k = array([5, 3, 2, 3], 4);
    let conv = Conv2dSpec::new(Padding::Explicit {
        top: 3,
        bottom: 1,
        left: 2,
        right: 0,
    })
    .with_stride(2, 1)
    .with_dilation(2, 1);
    let pool = Pool2dSpec::new(PoolMode::Max, 3, 2)
        .with_stride(2, 1)
        .with_padding(Padding::Symmetric(1, 1))
        .with_ceil_mode(true);
    assert_chunked_equal(&small, &x, &k, &conv, &pool);
}

#[test]
fn dispatch_folding_past_the_workgroup_limit() {
    // With at most 3 workgroups per dimension the convolutions need 9 x 9
    // (tiled kernel) and many more (direct kernel, nc <= 4) folded
    // workgroups, and larger problems are chunked.
    let Some(small) = forced(None, Some(3)) else { return };
    let x = array([3, 20, 20, 4], 5);
    let conv = Conv2dSpec::new(Padding::Same);
    let pool = Pool2dSpec::new(PoolMode::Avg, 2, 2).with_count_include_pad(true);
    assert_chunked_equal(&small, &x, &array([3, 3, 4, 6], 6), &conv, &pool);
    assert_chunked_equal(&small, &x, &array([3, 3, 4, 2], 7), &conv, &pool);
}

#[test]
fn tiled_pooling_agrees_with_the_direct_kernel_bit_for_bit() {
    // Overlapping windows on the tiled kernel, chunked into row bands and
    // folded past 3 workgroups per dimension, against the direct kernel.
    let Some(direct) = gpu_engine() else { return };
    let Some(tiled) = gpu_engine_with(GpuOptions {
        max_binding_bytes: Some(3000),
        max_workgroups_per_dim: Some(3),
        tiled_pooling: Some(true),
        ..Default::default()
    }) else {
        return;
    };
    for c in [8, 5] {
        let mut x = array([3, 21, 19, c], 9);
        x[[0, 4, 4, 1]] = f32::NAN;
        x[[1, 7, 3, 2]] = f32::INFINITY;
        x[[2, 0, 0, 0]] = f32::NEG_INFINITY;
        let specs = [
            Pool2dSpec::new(PoolMode::Max, 3, 3)
                .with_stride(2, 2)
                .with_padding(Padding::Same),
            Pool2dSpec::new(PoolMode::Avg, 3, 2)
                .with_stride(1, 2)
                .with_padding(Padding::Symmetric(1, 1))
                .with_count_include_pad(true),
            Pool2dSpec::new(PoolMode::Avg, 2, 3)
                .with_dilation(2, 1)
                .with_ceil_mode(true)
                .with_stride(1, 2),
        ];
        for spec in &specs {
            let a = direct.pool2d(&x, spec).unwrap();
            let b = tiled.pool2d(&x, spec).unwrap();
            assert!(
                a.iter().zip(b.iter()).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{spec:?} on c = {c}"
            );
        }
    }
}

#[test]
fn nan_and_infinities_follow_spec() {
    let Some(engine) = gpu_engine() else { return };
    let mut x = array([2, 9, 8, 3], 7);
    x[[0, 3, 3, 0]] = f32::NAN;
    x[[0, 6, 2, 1]] = f32::INFINITY;
    x[[1, 1, 1, 2]] = f32::NEG_INFINITY;
    x[[1, 1, 2, 2]] = f32::INFINITY;
    // Positive weights, so +inf and -inf products meet as NaN.
    let k = array([3, 3, 3, 2], 8).mapv(|v| v.abs() + 0.1);
    // Verify mode compares NaN and infinities exactly.
    let y = engine.conv2d(&x, &k, &Conv2dSpec::new(Padding::Same)).unwrap();
    assert!(y[[0, 3, 3, 0]].is_nan());
    assert!(y[[1, 1, 1, 0]].is_nan()); // +inf and -inf meet
    for mode in [PoolMode::Max, PoolMode::Avg] {
        let spec = Pool2dSpec::new(mode, 3, 3)
            .with_stride(2, 2)
            .with_padding(Padding::Same);
        let y = engine.pool2d(&x, &spec).unwrap();
        assert!(y[[0, 1, 1, 0]].is_nan(), "{mode}: NaN beats every number");
    }
}

#[test]
fn empty_batch_on_the_gpu() {
    let Some(engine) = gpu_engine() else { return };
    let y = engine
        .conv2d(
            &Array4::zeros((0, 5, 6, 3)),
            &Array4::zeros((3, 3, 3, 2)),
            &Conv2dSpec::new(Padding::Same),
        )
        .unwrap();
    assert_eq!(y.shape(), &[0, 5, 6, 2]);
    let y = engine
        .pool2d(&Array4::zeros((0, 6, 6, 2)), &Pool2dSpec::new(PoolMode::Max, 2, 2))
        .unwrap();
    assert_eq!(y.shape(), &[0, 3, 3, 2]);
}

#[test]
fn concurrent_calls_from_eight_threads_agree() {
    let Some(engine) = gpu_engine() else { return };
    let x = array([3, 16, 15, 5], 9);
    let k = array([3, 3, 5, 7], 10);
    let spec = Conv2dSpec::new(Padding::Same).with_stride(1, 2);
    let pool = Pool2dSpec::new(PoolMode::Avg, 2, 2);
    let want = engine.conv2d(&x, &k, &spec).unwrap();
    let want_pool = engine.pool2d(&x, &pool).unwrap();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..4 {
                    assert_eq!(engine.conv2d(&x, &k, &spec).unwrap(), want);
                    assert_eq!(engine.pool2d(&x, &pool).unwrap(), want_pool);
                }
            });
        }
    });
}

#[test]
fn errors_come_before_the_gpu_is_touched() {
    let Some(engine) = gpu_engine() else { return };
    let e = engine
        .conv2d(
            &Array4::zeros((1, 5, 5, 3)),
            &Array4::zeros((3, 3, 2, 1)),
            &Conv2dSpec::default(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("channel mismatch"), "{e}");
}

proptest! {
    // Shapes that do not resolve are redrawn: room for that in deeper runs
    // (PROPTEST_CASES in the thousands).
    #![proptest_config(ProptestConfig { max_global_rejects: 1 << 16, ..ProptestConfig::with_cases(256) })]

    /// GPU against the CPU reference (verify mode) on random problems.
    #[test]
    fn gpu_conv_matches_reference(
        (m, h, w, c) in (0usize..=9, 1usize..12, 1usize..12, 1usize..=17),
        (kh, kw, nc) in (1usize..5, 1usize..5, 1usize..=40),
        (sh, sw, dh, dw) in (1usize..4, 1usize..4, 1usize..3, 1usize..3),
        padding in padding_strategy(),
        seed in any::<u64>(),
    ) {
        let Some(engine) = gpu_engine() else { return Ok(()) };
        let spec = Conv2dSpec::new(padding).with_stride(sh, sw).with_dilation(dh, dw);
        prop_assume!(spec.resolve([m, h, w, c], [kh, kw, c, nc]).is_ok());
        let x = array([m, h, w, c], seed);
        let k = array([kh, kw, c, nc], !seed);
        let y = engine.conv2d(&x, &k, &spec);
        prop_assert!(y.is_ok(), "{}", y.unwrap_err());
        // The 8x8 register blocks of wide layers, on these narrow ones too.
        let Some(wide) = block8_engine() else { return Ok(()) };
        let y = wide.conv2d(&x, &k, &spec);
        prop_assert!(y.is_ok(), "{}", y.unwrap_err());
    }

    #[test]
    fn gpu_pool_matches_reference(
        (m, h, w, c) in (0usize..=9, 1usize..12, 1usize..12, 1usize..=17),
        (kh, kw, sh, sw, dh, dw) in (1usize..5, 1usize..5, 1usize..4, 1usize..4, 1usize..3, 1usize..3),
        padding in padding_strategy(),
        (avg, ceil_mode, count_include_pad) in (any::<bool>(), any::<bool>(), any::<bool>()),
        seed in any::<u64>(),
    ) {
        let Some(engine) = gpu_engine() else { return Ok(()) };
        let mode = if avg { PoolMode::Avg } else { PoolMode::Max };
        let spec = Pool2dSpec::new(mode, kh, kw)
            .with_stride(sh, sw)
            .with_dilation(dh, dw)
            .with_padding(padding)
            .with_ceil_mode(ceil_mode)
            .with_count_include_pad(count_include_pad);
        prop_assume!(spec.resolve([m, h, w, c]).is_ok());
        let x = array([m, h, w, c], seed);
        let y = engine.pool2d(&x, &spec);
        prop_assert!(y.is_ok(), "{}", y.unwrap_err());
        // The tiled kernel (overlapping windows), in verify mode too.
        let Some(tiled) = tiled_engine() else { return Ok(()) };
        let y = tiled.pool2d(&x, &spec);
        prop_assert!(y.is_ok(), "{}", y.unwrap_err());
    }
}

/// A verify-mode GPU engine whose tiled conv kernel always takes 8x8
/// register blocks.
fn block8_engine() -> Option<&'static Engine> {
    static ENGINE: OnceLock<Option<Engine>> = OnceLock::new();
    shared_engine(&ENGINE, || GpuOptions {
        conv_register_block: Some(8),
        ..Default::default()
    })
}

/// The verify-mode GPU engine with `options` held in `cell`, made by the
/// first test of this binary that asks for it.
fn shared_engine(cell: &'static OnceLock<Option<Engine>>, options: fn() -> GpuOptions) -> Option<&'static Engine> {
    cell.get_or_init(|| gpu_engine_with(options())).as_ref()
}

#[test]
fn wide_layers_agree_on_both_register_blocks() {
    // Large layers with 64+ output channels take 8x8 blocks; both engines
    // verify against the CPU reference, and the 4x4 blocks sum in the same
    // order, so the two agree to rounding (a driver may fuse one's
    // multiply-adds and not the other's). Tiles of 64 (72 = 64 + 8
    // channels: a second, mostly empty column of tiles) and 128 wide (136),
    // in chunks of a few rows on the 4x4 engine.
    let Some(eight) = block8_engine() else { return };
    let Some(four) = gpu_engine_with(GpuOptions {
        conv_register_block: Some(4),
        max_binding_bytes: Some(100_000),
        ..Default::default()
    }) else {
        return;
    };
    let x = array([6, 13, 11, 20], 21);
    for (nc, spec) in [
        (72, Conv2dSpec::new(Padding::Same)),
        (136, Conv2dSpec::new(Padding::Symmetric(2, 1)).with_stride(2, 1)),
        (64, Conv2dSpec::default()),
    ] {
        let k = array([3, 3, 20, nc], nc as u64);
        let a = eight.conv2d(&x, &k, &spec).unwrap();
        let b = four.conv2d(&x, &k, &spec).unwrap();
        assert!(
            a.iter()
                .zip(b.iter())
                .all(|(p, q)| (p - q).abs() <= 1e-5 * (1.0 + p.abs())),
            "nc {nc}"
        );
    }
    // A bad block size is refused before any device is opened.
    let e = convpool::gpu::GpuContext::new(&GpuOptions {
        conv_register_block: Some(6),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("conv_register_block") && e.to_string().contains("4 or 8"),
        "{e}"
    );
}

/// Every staging of the tiled conv kernel (1 or 2 buffers, 8, 16 or 32
/// steps per slice) on both register blocks gives what the reference gives
/// (verify mode) and what single 8-step slices give, to rounding: vec4 and
/// single-float loads of images and kernels, pointwise, groups, borders,
/// dilation, reductions that end mid-slice, the fused epilogue, ragged
/// tiles, and chunks of a few rows.
#[test]
fn every_conv_staging_agrees_with_the_reference() {
    let cases = [
        // vec4 images and kernels, 128 or 64 wide tiles, 72 = 64 + 8.
        ([3, 13, 11, 8], [3, 3, 8, 72], Conv2dSpec::new(Padding::Same), 1),
        // Three channels (single floats), 27-step reduction, reflect, dilation.
        (
            [5, 17, 9, 3],
            [3, 3, 3, 16],
            Conv2dSpec::new(Padding::Same)
                .with_padding_mode(PaddingMode::Reflect)
                .with_dilation(2, 1),
            1,
        ),
        // Ten output channels: single-float kernel loads; stride 2.
        ([2, 9, 10, 4], [2, 2, 4, 10], Conv2dSpec::default().with_stride(2, 2), 1),
        // Pointwise.
        ([3, 7, 7, 12], [1, 1, 12, 20], Conv2dSpec::default(), 1),
        // Two groups of 4 -> 20 channels, circular border, relu.
        (
            [2, 9, 9, 8],
            [3, 3, 4, 40],
            Conv2dSpec::new(Padding::Same)
                .with_groups(2)
                .with_padding_mode(PaddingMode::Circular)
                .with_activation(Some(Activation::Relu)),
            2,
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for block in [4, 8] {
        let engine = |staging, max_binding_bytes| {
            gpu_engine_with(GpuOptions {
                conv_register_block: Some(block),
                conv_staging: Some(staging),
                max_binding_bytes,
                ..Default::default()
            })
        };
        let Some(base) = engine((1, 8), None) else { return };
        for staging in [(1, 8), (2, 8), (1, 16), (2, 16), (1, 32), (2, 32)] {
            // In chunks of a few rows where the output is large.
            let e = engine(staging, Some(24_000)).unwrap();
            let ctx = e.gpu().unwrap();
            for (i, (x, k, spec, _)) in cases.iter().enumerate() {
                let xs = array(*x, 40 + i as u64);
                let ks = array(*k, 50 + i as u64);
                let bias = Array1::from_iter((0..k[3]).map(|j| j as f32 * 0.25 - 1.0));
                let want = base.conv2d_bias(&xs, &ks, &bias, spec).unwrap();
                let g = spec.resolve(*x, *k).unwrap();
                seen.insert(ctx.describe_conv(&g));
                let got = e.conv2d_bias(&xs, &ks, &bias, spec).unwrap();
                assert!(
                    got.iter()
                        .zip(want.iter())
                        .all(|(p, q)| (p - q).abs() <= 1e-5 * (1.0 + q.abs())),
                    "staging {staging:?} block {block} case {i}: {}",
                    ctx.describe_conv(&g)
                );
            }
        }
    }
    // Each staging ran where the device has room for it: up to 2x16 and
    // 1x32 on the 128 x 64 tile (26 KiB: lavapipe's 32 KiB holds them),
    // 2x32 on the 64 x 64 one (33 KiB).
    let Some(e) = gpu_engine() else { return };
    let room = e.gpu().unwrap().max_workgroup_bytes();
    for (staging, needs) in [
        ("1x8", 26624),
        ("2x8", 26624),
        ("1x16", 26624),
        ("2x16", 26624),
        ("1x32", 26624),
        ("2x32", 33792),
    ] {
        if room >= needs {
            assert!(
                seen.iter().any(|d| d.contains(&format!("staging {staging} "))),
                "{staging}: {seen:?}"
            );
        }
    }
    // A bad staging is refused before any device is opened.
    let err = convpool::gpu::GpuContext::new(&GpuOptions {
        conv_staging: Some((3, 8)),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("conv_staging"), "{err}");
}

/// RGB images read as four channels (a zero fourth, appended on the device
/// ahead of the kernel) give the scalar loads' result bit for bit: every
/// product with the zero channel is +0, which leaves each sum as it was.
/// From the host as f32 and as u8 (widened and padded in one pass), from a
/// device-resident array, chunked and whole; the bus carries the three
/// channels, and the kernel really read four.
#[test]
fn rgb_read_as_four_channels_equals_the_scalar_loads_bit_for_bit() {
    let cases = [
        // 3x3 same, bias + relu, one or several chunks.
        (
            [3, 17, 13, 3],
            [3, 3, 3, 16],
            Conv2dSpec::new(Padding::Same).with_activation(Some(Activation::Relu)),
        ),
        // The stem's shape: 7x7 stride 2, 64 channels.
        (
            [2, 30, 27, 3],
            [7, 7, 3, 64],
            Conv2dSpec::new(Padding::Same).with_stride(2, 2),
        ),
        // Reflect and circular borders, dilation.
        (
            [2, 11, 9, 3],
            [3, 2, 3, 12],
            Conv2dSpec::new(Padding::Same)
                .with_padding_mode(PaddingMode::Reflect)
                .with_dilation(2, 1),
        ),
        (
            [1, 9, 10, 3],
            [3, 3, 3, 8],
            Conv2dSpec::new(Padding::Same).with_padding_mode(PaddingMode::Circular),
        ),
    ];
    let engine = |pad, max_binding_bytes, device_widening| {
        gpu_engine_with(GpuOptions {
            conv_pad_rgb: Some(pad),
            max_binding_bytes,
            device_widening: Some(device_widening),
            ..Default::default()
        })
    };
    let Some(scalar) = engine(false, None, true) else {
        return;
    };
    let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for (i, (x, k, spec)) in cases.iter().enumerate() {
        let g = spec.resolve(*x, *k).unwrap();
        let xs = array(*x, 70 + i as u64);
        let ks = array(*k, 80 + i as u64);
        let bias = Array1::from_iter((0..k[3]).map(|j| j as f32 * 0.125 - 0.5));
        let px = Array4::from_shape_fn(*x, |(n, y, x, c)| ((n * 31 + y * 7 + x * 3 + c * 101) % 256) as u8);
        let want = scalar.conv2d_bias(&xs, &ks, &bias, spec).unwrap();
        let want8 = scalar.conv2d_bias(&px.mapv(f32::from), &ks, &bias, spec).unwrap();
        assert!(!scalar.gpu().unwrap().describe_conv(&g).contains("read as"));
        // Whole, and in chunks of a few rows (with their halos): bindings of
        // a third of the output, or the padded kernels or a padded image
        // (a circular border reads the whole image) where larger.
        let padded_kernels = (k[0] * k[1] * 4 * k[3] * 4) as u64;
        let third = ((g.output_shape().iter().product::<usize>() * 4 / 3) as u64)
            .max(padded_kernels)
            .max((x[1] * x[2] * 4 * 4) as u64);
        let third = Some(third.next_multiple_of(16));
        for (max_binding_bytes, device_widening) in [(None, true), (third, true), (third, false)] {
            let e = engine(true, max_binding_bytes, device_widening).unwrap();
            let ctx = e.gpu().unwrap();
            assert!(
                ctx.describe_conv(&g).contains("3 channels read as 4"),
                "{}",
                ctx.describe_conv(&g)
            );
            let chunks = ctx.plan_conv(&g).unwrap().len();
            assert_eq!(chunks > 1, max_binding_bytes.is_some(), "case {i}: {chunks} chunks");
            let what = format!("case {i}, {chunks} chunks, device widening {device_widening}");
            let (u0, _) = ctx.transfer_bytes();
            let got = e.conv2d_bias(&xs, &ks, &bias, spec).unwrap();
            let up = ctx.transfer_bytes().0 - u0;
            assert_eq!(bits(&got), bits(&want), "{what}");
            // Three channels of images (each chunk's rows; halos are read
            // again), the kernels with their zero rows, the bias.
            if chunks == 1 {
                assert_eq!(up, (xs.len() * 4) as u64 + padded_kernels + (k[3] * 4) as u64, "{what}");
            } else {
                assert!(up >= (xs.len() * 4) as u64 + padded_kernels, "{what}");
            }
            let got8 = e.conv2d_bias_pixels(&px, &ks, &bias, spec).unwrap();
            assert_eq!(bits(&got8), bits(&want8), "u8, {what}");
            let d = e.upload(&xs).unwrap();
            let resident = e.conv2d_bias_resident(&d, &ks, &bias, spec).unwrap();
            assert_eq!(bits(&resident.download().unwrap()), bits(&want), "resident, {what}");
        }
    }
    // Groups, and layers the direct kernel takes, keep three channels.
    let e = engine(true, None, true).unwrap();
    let ctx = e.gpu().unwrap();
    for (x, k, spec) in [
        ([1, 8, 8, 3], [3, 3, 3, 4], Conv2dSpec::default()),
        ([1, 8, 8, 3], [3, 3, 1, 12], Conv2dSpec::default().with_groups(3)),
        ([1, 8, 8, 6], [3, 3, 2, 12], Conv2dSpec::default().with_groups(3)),
    ] {
        let g = spec.resolve(x, k).unwrap();
        assert!(!ctx.describe_conv(&g).contains("read as"), "{}", ctx.describe_conv(&g));
        e.conv2d(&array(x, 5), &array(k, 6), &spec).unwrap();
    }
    // So do kernels that fit a binding only with three channels.
    let (x, k) = ([1, 8, 8, 3], [3, 3, 3, 16]);
    let e = engine(true, Some(3 * 3 * 3 * 16 * 4), true).unwrap();
    let g = Conv2dSpec::default().resolve(x, k).unwrap();
    assert!(!e.gpu().unwrap().describe_conv(&g).contains("read as"));
    e.conv2d(&array(x, 5), &array(k, 6), &Conv2dSpec::default()).unwrap();
}

/// A verify-mode GPU engine that pools overlapping windows with the tiled kernel.
fn tiled_engine() -> Option<&'static Engine> {
    static ENGINE: OnceLock<Option<Engine>> = OnceLock::new();
    shared_engine(&ENGINE, || GpuOptions {
        tiled_pooling: Some(true),
        ..Default::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Hostile geometry on the GPU (strides, dilations, pads up to 1e9 on
    /// tiny images): the reference's result, or a typed error where the
    /// coordinates pass the shaders' 32 bits; never a wrong result.
    #[test]
    fn gpu_huge_strides_dilations_and_pads(case in hostile()) {
        let Some(engine) = gpu_engine() else { return Ok(()) };
        let x = array(case.images, case.seed);
        if let Some(spec) = case.conv() {
            let y = engine.conv2d(&x, &array(case.kernels, !case.seed), &spec);
            prop_assert!(!matches!(y, Err(Error::VerifyMismatch { .. })), "{}", y.unwrap_err());
        }
        if let Some(pool) = case.pool(PoolMode::Max) {
            let y = engine.pool2d(&x, &pool);
            prop_assert!(!matches!(y, Err(Error::VerifyMismatch { .. })), "{}", y.unwrap_err());
        }
    }
}

/// A stride on an axis with one output changes no number, so a huge one
/// (2^62: one window per image) runs on the GPU like a stride of 1, equal
/// to the CPU, instead of failing the shaders' 32-bit checks; only the
/// `_timed` calls ask for timestamps.
#[test]
fn huge_strides_with_one_output_and_timestamps_only_when_timed() {
    let Some(engine) = gpu_engine() else { return };
    let x = array([2, 5, 6, 3], 11);
    let k = array([3, 4, 3, 2], 12);
    let spec = Conv2dSpec::default().with_stride(1 << 62, 1 << 62);
    let got = engine.conv2d(&x, &k, &spec).unwrap();
    let want = Engine::cpu().conv2d(&x, &k, &spec).unwrap();
    assert_eq!(got.shape(), &[2, 1, 1, 2]);
    assert!(convpool::check::largest_difference(got.view(), want.view(), false).max_abs_diff <= 1e-4);
    let pool = Pool2dSpec::new(PoolMode::Max, 3, 3).with_stride(1 << 62, 1 << 62);
    assert_eq!(
        engine.pool2d(&x, &pool).unwrap(),
        Engine::cpu().pool2d(&x, &pool).unwrap()
    );
    let (timed, _) = engine.conv2d_timed(&x, &k, &Conv2dSpec::default()).unwrap();
    assert_eq!(timed, engine.conv2d(&x, &k, &Conv2dSpec::default()).unwrap());
}

/// Binding the host-mapped buffers themselves (unified memory: lavapipe,
/// integrated GPUs) changes where the bytes live, not a bit of the result:
/// against the staging-copy path, chunked and not, timed and not.
#[test]
fn mapped_buffers_agree_with_staging_copies_bit_for_bit() {
    let engine = |mapped: bool, max_binding_bytes: Option<u64>| {
        gpu_engine_with(GpuOptions {
            mapped_buffers: Some(mapped),
            max_binding_bytes,
            ..Default::default()
        })
    };
    let (Some(copies), Some(mapped), Some(mapped_small)) =
        (engine(false, None), engine(true, None), engine(true, Some(4096)))
    else {
        return;
    };
    assert!(!copies.gpu().unwrap().mapped_buffers());
    let ctx = mapped.gpu().unwrap();
    if ctx.adapter().software {
        // lavapipe offers MAPPABLE_PRIMARY_BUFFERS: the mapped path is what CI runs.
        assert!(ctx.mapped_buffers(), "{:?}", ctx.adapter());
    }
    let x = array([3, 17, 15, 4], 31);
    let k = array([3, 3, 4, 8], 32);
    let conv = Conv2dSpec::new(Padding::Same);
    let pool = Pool2dSpec::new(PoolMode::Max, 3, 3).with_stride(2, 2);
    let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let want = bits(&copies.conv2d(&x, &k, &conv).unwrap());
    for e in [&mapped, &mapped_small] {
        assert_eq!(bits(&e.conv2d(&x, &k, &conv).unwrap()), want);
        assert_eq!(bits(&e.conv2d_timed(&x, &k, &conv).unwrap().0), want);
        assert_eq!(
            bits(&e.pool2d(&x, &pool).unwrap()),
            bits(&copies.pool2d(&x, &pool).unwrap())
        );
        assert_eq!(
            e.max_pool2d_with_indices(&x, &pool).unwrap().1,
            copies.max_pool2d_with_indices(&x, &pool).unwrap().1
        );
    }
}
