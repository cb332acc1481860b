//! The Winograd F(2x2, 3x3) kernel (`GpuOptions::conv_winograd`): within
//! SPEC.md's tolerance of the reference on ragged shapes, every border mode,
//! the epilogue and chunks of odd row counts; NaN and infinities where the
//! reference has them (its workgroups that meet one take direct sums); the
//! resident path equal to the host path bit for bit.

use crate::common::{array, gpu_engine_with};
use convpool::{Activation, Conv2dSpec, Engine, GpuOptions, Padding, PaddingMode};
use ndarray::{Array1, Array4};

fn winograd(max_binding_bytes: Option<u64>) -> Option<Engine> {
    gpu_engine_with(GpuOptions {
        conv_winograd: Some(true),
        max_binding_bytes,
        ..Default::default()
    })
    // Verify mode would hide a miss behind its own error; the tests compare.
    .map(|e| e.with_verify(false))
}

/// SPEC.md's bound for a convolution of `k` against the reference `want`.
fn assert_close(got: &Array4<f32>, want: &Array4<f32>, k: [usize; 4], what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let taps = (k[0] * k[1] * k[2]) as f32;
    let bound = 1e-4 * scale * (taps / 4096.0).sqrt().max(1.0);
    let worst = got
        .iter()
        .zip(want.iter())
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(worst <= bound, "{what}: off by {worst}, bound {bound}");
}

/// Whether the device runs the kernel at all (it declares just over 16 KiB
/// of workgroup memory); lavapipe's 32 KiB does.
fn takes_winograd(e: &Engine, x: [usize; 4], k: [usize; 4], spec: &Conv2dSpec) -> bool {
    let g = spec.resolve(x, k).unwrap();
    let d = e.gpu().unwrap().describe_conv(&g);
    let room = e.gpu().unwrap().max_workgroup_bytes();
    assert_eq!(d.starts_with("winograd"), room >= 16 * 1024 + 32 * 16 + 8, "{d}");
    d.starts_with("winograd")
}

fn cases() -> Vec<([usize; 4], [usize; 4], Conv2dSpec)> {
    let same = Conv2dSpec::new(Padding::Same);
    let mut v = vec![
        // Odd sizes: ragged tiles on both axes; 36 = 32 + 4 channels.
        ([3, 13, 11, 8], [3, 3, 8, 36], same),
        ([2, 8, 8, 4], [3, 3, 4, 8], Conv2dSpec::default()),
        ([1, 5, 6, 12], [3, 3, 12, 72], Conv2dSpec::default()),
        // Uneven explicit pads.
        (
            [2, 9, 7, 16],
            [3, 3, 16, 40],
            Conv2dSpec::new(Padding::Explicit {
                top: 2,
                bottom: 0,
                left: 1,
                right: 3,
            }),
        ),
        // One output row and column.
        ([2, 3, 3, 4], [3, 3, 4, 8], Conv2dSpec::default()),
        // More than 16 tiles in one image: several workgroups per image.
        ([1, 30, 26, 20], [3, 3, 20, 64], same),
        // An empty batch.
        ([0, 8, 8, 4], [3, 3, 4, 8], same),
    ];
    for mode in [
        PaddingMode::Reflect,
        PaddingMode::Symmetric,
        PaddingMode::Replicate,
        PaddingMode::Circular,
    ] {
        v.push(([2, 7, 10, 8], [3, 3, 8, 12], same.with_padding_mode(mode)));
    }
    v
}

#[test]
fn winograd_agrees_with_the_reference() {
    let Some(e) = winograd(None) else { return };
    for (i, (xs, ks, spec)) in cases().into_iter().enumerate() {
        if !takes_winograd(&e, xs, ks, &spec) {
            return;
        }
        let x = array(xs, 60 + i as u64);
        let k = array(ks, 70 + i as u64);
        let bias = Array1::from_iter((0..ks[3]).map(|j| j as f32 * 0.5 - 3.0));
        let reference = Engine::cpu_reference();
        let what = format!("case {i}: {xs:?} * {ks:?}");
        assert_close(
            &e.conv2d(&x, &k, &spec).unwrap(),
            &reference.conv2d(&x, &k, &spec).unwrap(),
            ks,
            &what,
        );
        let relu = spec.with_activation(Some(Activation::Relu));
        let want = reference.conv2d_bias(&x, &k, &bias, &relu).unwrap();
        assert_close(&e.conv2d_bias(&x, &k, &bias, &relu).unwrap(), &want, ks, &what);
    }
}

/// Bands of 15 output rows (832 bytes each; the limit is one whole input
/// image, which the mirrored borders read) and the rows they read: a
/// band's last tile row reads rows past the band, which only its discarded
/// half sees.
#[test]
fn winograd_in_bands_of_odd_row_counts() {
    let Some(e) = winograd(Some(30 * 26 * 4 * 4)) else {
        return;
    };
    let (xs, ks) = ([2, 30, 26, 4], [3, 3, 4, 8]);
    for mode in [PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Circular] {
        let spec = Conv2dSpec::new(Padding::Same).with_padding_mode(mode);
        if !takes_winograd(&e, xs, ks, &spec) {
            return;
        }
        let g = spec.resolve(xs, ks).unwrap();
        let plan = e.gpu().unwrap().plan_conv(&g).unwrap();
        assert!(plan.iter().any(|c| c.out_rows % 2 == 1 && c.out_row0 > 0), "{plan:?}");
        let (x, k) = (array(xs, 11), array(ks, 12));
        let bias = Array1::from_iter((0..8).map(|j| j as f32 - 4.0));
        let want = Engine::cpu_reference().conv2d_bias(&x, &k, &bias, &spec).unwrap();
        assert_close(
            &e.conv2d_bias(&x, &k, &bias, &spec).unwrap(),
            &want,
            ks,
            &format!("{mode:?}"),
        );
    }
}

/// Chunks of whole images cut the same tiles: the same bits as one call.
#[test]
fn winograd_batch_chunks_equal_one_dispatch_bit_for_bit() {
    let Some(e) = winograd(None) else { return };
    let (xs, ks, spec) = ([5, 12, 10, 8], [3, 3, 8, 40], Conv2dSpec::new(Padding::Same));
    if !takes_winograd(&e, xs, ks, &spec) {
        return;
    }
    // Two images' input and output (12 * 10 * 40 floats) per chunk.
    let small = winograd(Some(2 * 12 * 10 * 40 * 4)).unwrap();
    let g = spec.resolve(xs, ks).unwrap();
    let plan = small.gpu().unwrap().plan_conv(&g).unwrap();
    assert!(plan.len() > 1 && plan.iter().all(|c| c.out_rows == 12), "{plan:?}");
    let (x, k) = (array(xs, 1), array(ks, 2));
    let one = e.conv2d(&x, &k, &spec).unwrap();
    let chunked = small.conv2d(&x, &k, &spec).unwrap();
    assert_eq!(one.mapv(f32::to_bits), chunked.mapv(f32::to_bits));
}

/// The transforms would turn an infinity into NaN for outputs that only
/// neighbour it, and overflow near the top of the f32 range: such inputs
/// take direct sums, and kernels holding them the implicit GEMM, so NaN
/// and infinities land where the reference puts them.
#[test]
fn winograd_keeps_nan_and_infinities_where_the_reference_has_them() {
    let Some(e) = winograd(None) else { return };
    let (xs, ks, spec) = ([2, 12, 13, 8], [3, 3, 8, 36], Conv2dSpec::new(Padding::Same));
    if !takes_winograd(&e, xs, ks, &spec) {
        return;
    }
    let reference = Engine::cpu_reference();
    // Nonnegative kernels: sums of one infinity and finite values stay
    // infinite in any order, so the reference's infinities are exact.
    let k = array(ks, 5).mapv(f32::abs);
    for (what, cell, v) in [
        ("inf", [0, 5, 6, 3], f32::INFINITY),
        ("-inf", [1, 0, 12, 0], f32::NEG_INFINITY),
        ("NaN", [1, 11, 0, 7], f32::NAN),
        // Finite, but past what the transforms take.
        ("3e37", [0, 7, 7, 2], 3e37),
    ] {
        let mut x = array(xs, 6);
        x[cell] = v;
        let got = e.conv2d(&x, &k, &spec).unwrap();
        let want = reference.conv2d(&x, &k, &spec).unwrap();
        let mut hits = 0;
        for (g, w) in got.iter().zip(want.iter()) {
            assert_eq!(g.is_nan(), w.is_nan(), "{what}: {g} where the reference has {w}");
            if !w.is_finite() {
                hits += 1;
                assert!(g.is_nan() || g == w, "{what}: {g} where the reference has {w}");
            } else {
                assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{what}: {g} against {w}");
            }
        }
        assert!(hits > 0 || v.is_finite(), "{what}: no output holds it");
    }
    // Kernels with an infinity take the implicit GEMM.
    let mut k_inf = k.clone();
    k_inf[[1, 1, 0, 0]] = f32::INFINITY;
    let x = array(xs, 7);
    let got = e.conv2d(&x, &k_inf, &spec).unwrap();
    let want = reference.conv2d(&x, &k_inf, &spec).unwrap();
    for (g, w) in got.iter().zip(want.iter()) {
        assert_eq!(g.is_nan(), w.is_nan(), "inf kernel: {g} where the reference has {w}");
        assert!(
            !w.is_infinite() || g == w,
            "inf kernel: {g} where the reference has {w}"
        );
    }
}

/// A finite kernel near the top of the f32 range transforms past it (U is
/// up to 2.25x the kernel): zero and tiny inputs against it must give the
/// reference's zeros and finite sums, not 0 x inf.
#[test]
fn winograd_takes_kernels_near_the_f32_limit() {
    let Some(e) = winograd(None) else { return };
    let (xs, ks, spec) = ([1, 6, 6, 4], [3, 3, 4, 8], Conv2dSpec::new(Padding::Same));
    if !takes_winograd(&e, xs, ks, &spec) {
        return;
    }
    let mut k = array(ks, 15);
    k[[0, 0, 0, 0]] = 3e38;
    k[[0, 1, 0, 0]] = 3e38;
    k[[0, 2, 0, 0]] = 3e38;
    let reference = Engine::cpu_reference();
    for (what, scale) in [("zeros", 0.0f32), ("tiny", 1e-30)] {
        let x = array(xs, 16).mapv(|v| v * scale);
        let got = e.conv2d(&x, &k, &spec).unwrap();
        let want = reference.conv2d(&x, &k, &spec).unwrap();
        for (g, w) in got.iter().zip(want.iter()) {
            assert!(w.is_finite(), "{what}: the reference has {w}");
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1e-30), "{what}: {g} against {w}");
        }
    }
}

/// A resident conv runs the same kernel on the same bytes as a host call.
#[test]
fn winograd_resident_equals_the_host_call_bit_for_bit() {
    let Some(e) = winograd(None) else { return };
    let (xs, ks) = ([3, 11, 9, 8], [3, 3, 8, 16]);
    let spec = Conv2dSpec::new(Padding::Same).with_activation(Some(Activation::Relu));
    if !takes_winograd(&e, xs, ks, &spec) {
        return;
    }
    let (x, k) = (array(xs, 8), array(ks, 9));
    let bias = Array1::from_iter((0..16).map(|j| j as f32 - 8.0));
    let host = e.conv2d_bias(&x, &k, &bias, &spec).unwrap();
    let d = e.upload(&x).unwrap();
    let d = e.conv2d_bias_resident(&d, &k, &bias, &spec).unwrap();
    assert_eq!(d.download().unwrap().mapv(f32::to_bits), host.mapv(f32::to_bits));
}

/// Transformed kernels take 25/9 the plain ones' bytes: a layer whose plain
/// kernels fit a binding and whose transformed ones do not runs on the
/// implicit GEMM rather than failing.
#[test]
fn winograd_kernels_past_a_binding_take_the_implicit_gemm() {
    let Some(e) = winograd(Some(4096)) else { return };
    let (xs, ks, spec) = ([1, 8, 8, 8], [3, 3, 8, 8], Conv2dSpec::new(Padding::Same));
    let g = spec.resolve(xs, ks).unwrap();
    let d = e.gpu().unwrap().describe_conv(&g);
    assert!(d.starts_with("tiled"), "{d}");
    let (x, k) = (array(xs, 13), array(ks, 14));
    let want = Engine::cpu_reference().conv2d(&x, &k, &spec).unwrap();
    assert_close(&e.conv2d(&x, &k, &spec).unwrap(), &want, ks, "tiled instead");
    // With room for them, the same layer takes Winograd.
    let roomy = winograd(Some(8192)).unwrap();
    assert_eq!(
        takes_winograd(&roomy, xs, ks, &spec),
        roomy.gpu().unwrap().max_workgroup_bytes() >= 16904
    );
}
