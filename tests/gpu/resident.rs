//! Device-resident chaining (`GpuArray`): upload once, conv -> pool -> conv
//! on the device, download once. The results must be the host path's bit
//! for bit, chunked or not, and the chain must move fewer bytes.

use crate::common::{array, gpu_engine_with};
use convpool::{Activation, Conv2dSpec, Engine, Error, GpuOptions, Padding, Pool2dSpec, PoolMode};
use ndarray::{Array1, Array4};

fn gpu(max_binding_bytes: Option<u64>) -> Option<Engine> {
    // Not in verify mode: verify would download and compare every step,
    // and this test counts the bytes the chain moves.
    gpu_engine_with(GpuOptions {
        max_binding_bytes,
        ..Default::default()
    })
    .map(|e| e.with_verify(false))
}

fn bits(a: &Array4<f32>) -> Vec<u32> {
    a.iter().map(|v| v.to_bits()).collect()
}

/// The seed's pipeline and more: conv + bias + relu, max pool, depthwise
/// conv, avg pool.
fn chain_on_host(e: &Engine, x: &Array4<f32>) -> Array4<f32> {
    let (k1, b1, k2) = weights();
    let conv = Conv2dSpec::new(Padding::Same).with_activation(Some(Activation::Relu));
    let y = e.conv2d_bias(x, &k1, &b1, &conv).unwrap();
    let y = e.pool2d(&y, &Pool2dSpec::new(PoolMode::Max, 2, 2)).unwrap();
    let y = e
        .conv2d(&y, &k2, &Conv2dSpec::new(Padding::Valid).with_groups(8))
        .unwrap();
    e.pool2d(&y, &Pool2dSpec::new(PoolMode::Avg, 3, 3).with_stride(2, 2))
        .unwrap()
}

fn chain_on_device(e: &Engine, x: &Array4<f32>) -> Array4<f32> {
    let (k1, b1, k2) = weights();
    let conv = Conv2dSpec::new(Padding::Same).with_activation(Some(Activation::Relu));
    let d = e.upload(x).unwrap();
    let d = e.conv2d_bias_resident(&d, &k1, &b1, &conv).unwrap();
    let d = e.pool2d_resident(&d, &Pool2dSpec::new(PoolMode::Max, 2, 2)).unwrap();
    let d = e
        .conv2d_resident(&d, &k2, &Conv2dSpec::new(Padding::Valid).with_groups(8))
        .unwrap();
    let d = e
        .pool2d_resident(&d, &Pool2dSpec::new(PoolMode::Avg, 3, 3).with_stride(2, 2))
        .unwrap();
    assert_eq!(d.shape(), [3, 4, 5, 8]);
    d.download().unwrap()
}

/// Bytes of the kernels and bias a host call of `x` uploads: the kernels of
/// an RGB layer the GPU reads as four channels carry their zero rows.
fn weight_bytes(e: &Engine, spec: &Conv2dSpec, x: &[usize], k: &Array4<f32>, bias: usize) -> u64 {
    let (x, k) = (
        [x[0], x[1], x[2], x[3]],
        [k.shape()[0], k.shape()[1], k.shape()[2], k.shape()[3]],
    );
    let described = e.gpu().unwrap().describe_conv(&spec.resolve(x, k).unwrap());
    let c = if described.contains("3 channels read as 4") {
        4
    } else {
        k[2]
    };
    ((k[0] * k[1] * c * k[3] + bias) * 4) as u64
}

fn weights() -> (Array4<f32>, Array1<f32>, Array4<f32>) {
    let k1 = array([3, 3, 3, 8], 21);
    let b1 = Array1::from_iter((0..8).map(|i| i as f32 * 0.1 - 0.4));
    let k2 = array([3, 3, 1, 8], 22);
    (k1, b1, k2)
}

#[test]
fn a_chain_on_the_device_equals_the_host_calls_bit_for_bit() {
    let Some(e) = gpu(None) else { return };
    let x = array([3, 25, 26, 3], 20);
    let host = chain_on_host(&e, &x);
    let device = chain_on_device(&e, &x);
    assert_eq!(bits(&host), bits(&device));
    // And the host path agrees with the CPU reference (within SPEC).
    let want = chain_on_host(&Engine::cpu_reference(), &x);
    assert!(convpool::check::within(host.view(), want.view(), 1e-4));
}

#[test]
fn chunked_resident_calls_equal_unchunked_bit_for_bit() {
    // 2 KiB bindings: every step is split into bands of rows, the device
    // arrays copied band by band into the chunk buffers and back.
    let (Some(big), Some(small)) = (gpu(None), gpu(Some(2048))) else {
        return;
    };
    let x = array([3, 25, 26, 3], 23);
    let chunks = small
        .gpu()
        .unwrap()
        .plan_conv(
            &Conv2dSpec::new(Padding::Same)
                .resolve([3, 25, 26, 3], [3, 3, 3, 8])
                .unwrap(),
        )
        .unwrap();
    assert!(chunks.len() > 3, "{chunks:?}");
    assert_eq!(bits(&chain_on_device(&big, &x)), bits(&chain_on_device(&small, &x)));
    assert_eq!(bits(&chain_on_device(&small, &x)), bits(&chain_on_host(&small, &x)));
}

#[test]
fn a_chained_conv_then_pool_moves_at_most_half_the_bytes_of_two_calls() {
    let Some(e) = gpu(None) else { return };
    let ctx = e.gpu().unwrap();
    let x = array([4, 32, 32, 8], 24);
    let k = array([3, 3, 8, 8], 25);
    let conv = Conv2dSpec::new(Padding::Same);
    let pool = Pool2dSpec::new(PoolMode::Max, 2, 2);
    let moved = |f: &dyn Fn() -> Array4<f32>| {
        let (u0, d0) = ctx.transfer_bytes();
        let out = f();
        let (u1, d1) = ctx.transfer_bytes();
        (out, (u1 - u0) + (d1 - d0))
    };
    let (two, separate) = moved(&|| e.pool2d(&e.conv2d(&x, &k, &conv).unwrap(), &pool).unwrap());
    let (one, chained) = moved(&|| {
        let d = e.upload(&x).unwrap();
        let d = e.conv2d_resident(&d, &k, &conv).unwrap();
        e.pool2d_resident(&d, &pool).unwrap().download().unwrap()
    });
    assert_eq!(bits(&two), bits(&one));
    let image_bytes = (x.len() * 4) as u64;
    let kernel_bytes = (k.len() * 4 + 4) as u64;
    // Two calls: images up, conv output down and up again, pool output down.
    assert_eq!(separate, image_bytes + kernel_bytes + 2 * image_bytes + image_bytes / 4);
    // The chain: images up, pool output down.
    assert_eq!(chained, image_bytes + kernel_bytes + image_bytes / 4);
    assert!(2 * chained <= separate, "{chained} vs {separate}");
}

#[test]
fn resident_calls_refuse_bad_input_with_typed_errors() {
    let Some(e) = gpu(None) else { return };
    let d = e.upload(&array([1, 5, 5, 3], 26)).unwrap();
    // Kernels for 4 channels on a 3-channel array: the shapes are named.
    let err = e
        .conv2d_resident(&d, &array([3, 3, 4, 2], 27), &Conv2dSpec::default())
        .unwrap_err();
    assert!(matches!(err, Error::ChannelMismatch { .. }), "{err}");
    assert!(err.to_string().contains('3') && err.to_string().contains('4'), "{err}");
    // A window larger than the image.
    let err = e
        .pool2d_resident(&d, &Pool2dSpec::new(PoolMode::Max, 6, 6))
        .unwrap_err();
    assert!(!matches!(err, Error::Gpu(_)), "{err}");
    // A bias of the wrong length.
    let err = e
        .conv2d_bias_resident(&d, &array([3, 3, 3, 2], 28), &Array1::zeros(3), &Conv2dSpec::default())
        .unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
    // An array of another engine's device.
    let Some(other) = gpu(None) else { return };
    let err = other
        .pool2d_resident(&d, &Pool2dSpec::new(PoolMode::Max, 2, 2))
        .unwrap_err();
    assert!(err.to_string().contains("another engine"), "{err}");
    // No GPU, no resident arrays.
    let err = Engine::cpu().upload(&array([1, 2, 2, 1], 29)).unwrap_err();
    assert!(err.to_string().contains("GPU"), "{err}");
}

#[test]
fn an_empty_batch_stays_empty() {
    let Some(e) = gpu(None) else { return };
    let d = e.upload(&Array4::<f32>::zeros((0, 4, 4, 2))).unwrap();
    let d = e
        .conv2d_resident(&d, &array([3, 3, 2, 5], 30), &Conv2dSpec::new(Padding::Same))
        .unwrap();
    assert_eq!(d.download().unwrap().dim(), (0, 4, 4, 5));
}

/// 8- and 16-bit pixels cross as their own bytes and are widened on the
/// device: exactly `mapv(f32::from)`, with the extremes of each type, value
/// counts that end mid-word, chunked (2 KiB bindings: bands of rows, each
/// starting a fresh word) and not, through mapped buffers and through
/// staging copies.
#[test]
fn u8_and_u16_uploads_widen_exactly_and_move_their_own_bytes() {
    let engines = [
        (None, None),
        (Some(2048), None),
        (None, Some(false)),
        (Some(2048), Some(false)),
    ]
    .map(|(max_binding_bytes, mapped_buffers)| {
        gpu_engine_with(GpuOptions {
            max_binding_bytes,
            mapped_buffers,
            ..Default::default()
        })
    });
    if engines.iter().any(Option::is_none) {
        return;
    }
    // 3 x 13 x 11 x 3 = 1287 values: not a multiple of 4 or of 2, and an
    // image row (33 values) that ends mid-word.
    let shape = (3, 13, 11, 3);
    let u8s = Array4::from_shape_fn(shape, |(n, y, x, c)| match (n * 31 + y * 7 + x * 3 + c) % 67 {
        0 => 0u8,
        1 => 255,
        v => (v * 37 % 256) as u8,
    });
    let u16s = Array4::from_shape_fn(shape, |(n, y, x, c)| match (n * 31 + y * 7 + x * 3 + c) % 67 {
        0 => 0u16,
        1 => u16::MAX,
        v => (v * 977 % 65536) as u16,
    });
    let conv = Conv2dSpec::new(Padding::Same);
    let k = array([3, 3, 3, 4], 33);
    for e in engines.iter().flatten() {
        let e = e.clone().with_verify(false);
        let ctx = e.gpu().unwrap();
        let (u0, _) = ctx.transfer_bytes();
        let d = e.upload_pixels(&u8s).unwrap();
        let (u1, _) = ctx.transfer_bytes();
        assert_eq!(d.download().unwrap(), u8s.mapv(f32::from));
        // A quarter of the f32 bytes, each chunk padded to a whole word.
        let f32_bytes = (u8s.len() * 4) as u64;
        assert!(u1 - u0 >= f32_bytes / 4 && u1 - u0 < f32_bytes / 4 + 64, "{}", u1 - u0);
        let d16 = e.upload_pixels(&u16s).unwrap();
        assert_eq!(d16.download().unwrap(), u16s.mapv(f32::from));
        // A strided view is read in its logical order.
        let t = u8s.view().permuted_axes([0, 2, 1, 3]);
        assert_eq!(e.upload_pixels(t).unwrap().download().unwrap(), t.mapv(f32::from));
        // f32 through the same entry point is the plain upload.
        let f = u16s.mapv(|v| f32::from(v) * 0.5 - 3.25);
        assert_eq!(e.upload_pixels(&f).unwrap().download().unwrap(), f);
        // The widened array feeds a conv exactly as the host's f32 would.
        let want = e.conv2d(&u8s.mapv(f32::from), &k, &conv).unwrap();
        let got = e.conv2d_resident(&d, &k, &conv).unwrap().download().unwrap();
        assert_eq!(bits(&got), bits(&want));
    }
    // Empty batches and a CPU engine.
    let e = engines[0].as_ref().unwrap();
    let d = e.upload_pixels(&Array4::<u8>::zeros((0, 4, 4, 3))).unwrap();
    assert_eq!(d.download().unwrap().dim(), (0, 4, 4, 3));
    let d = e.upload_pixels(&Array4::<u16>::zeros((2, 0, 4, 3))).unwrap();
    assert_eq!(d.download().unwrap().dim(), (2, 0, 4, 3));
    let err = Engine::cpu().upload_pixels(&u8s).unwrap_err();
    assert!(err.to_string().contains("GPU"), "{err}");
}

/// The host calls of 8- and 16-bit images: what the f32 calls give on the
/// widened images, bit for bit. A GPU with its own memory (staging copies)
/// uploads a quarter (half) of the image bytes; one that maps the host's
/// memory widens on the host (no bus to save). Bad arguments are refused
/// before anything is uploaded.
#[test]
fn pixel_calls_equal_f32_calls_and_upload_fewer_bytes() {
    let engine = |mapped| {
        gpu_engine_with(GpuOptions {
            mapped_buffers: Some(mapped),
            ..Default::default()
        })
        .map(|e| e.with_verify(false))
    };
    let (Some(e), Some(mapped)) = (engine(false), engine(true)) else {
        return;
    };
    let ctx = e.gpu().unwrap();
    let px = Array4::from_shape_fn((2, 19, 17, 3), |(n, y, x, c)| {
        ((n * 71 + y * 13 + x * 5 + c * 3) % 256) as u8
    });
    let px16 = px.mapv(|v| u16::from(v) * 257);
    let k = array([3, 3, 3, 8], 34);
    let b = Array1::from_iter((0..8).map(|i| i as f32 - 3.5));
    let conv = Conv2dSpec::new(Padding::Same).with_activation(Some(Activation::Relu));
    let pool = Pool2dSpec::new(PoolMode::Avg, 3, 3).with_stride(2, 2);
    let uploaded = |f: &dyn Fn() -> Array4<f32>| {
        let (u0, _) = ctx.transfer_bytes();
        let out = f();
        (out, ctx.transfer_bytes().0 - u0)
    };
    let f = px.mapv(f32::from);
    let (want, f32_up) = uploaded(&|| e.conv2d_bias(&f, &k, &b, &conv).unwrap());
    let (got, u8_up) = uploaded(&|| e.conv2d_bias_pixels(&px, &k, &b, &conv).unwrap());
    assert_eq!(bits(&got), bits(&want));
    let weights = weight_bytes(&e, &conv, f.shape(), &k, b.len());
    assert_eq!(f32_up, f.len() as u64 * 4 + weights);
    assert_eq!(u8_up, (f.len() as u64).next_multiple_of(4) + weights);
    let f16 = px16.mapv(f32::from);
    assert_eq!(
        bits(&e.conv2d_pixels(&px16, &k, &conv).unwrap()),
        bits(&e.conv2d(&f16, &k, &conv).unwrap())
    );
    assert_eq!(
        bits(&e.pool2d_pixels(&px16, &pool).unwrap()),
        bits(&e.pool2d(&f16, &pool).unwrap())
    );
    // f32 through the pixel calls is the f32 call.
    assert_eq!(
        bits(&e.conv2d_pixels(&f, &k, &conv).unwrap()),
        bits(&e.conv2d(&f, &k, &conv).unwrap())
    );
    // Shared memory (lavapipe, integrated GPUs): the same bits, widened on
    // the host, so the f32 bytes are uploaded.
    let m = mapped.gpu().unwrap();
    if m.adapter().software {
        assert!(m.mapped_buffers());
    }
    if m.mapped_buffers() {
        let (u0, _) = m.transfer_bytes();
        let got = mapped.conv2d_bias_pixels(&px, &k, &b, &conv).unwrap();
        assert_eq!(m.transfer_bytes().0 - u0, f32_up);
        assert_eq!(bits(&got), bits(&want));
    }
    // Refused before the upload: nothing crosses the bus.
    let (u0, d0) = ctx.transfer_bytes();
    let err = e.conv2d_pixels(&px, &array([3, 3, 4, 8], 35), &conv).unwrap_err();
    assert!(matches!(err, Error::ChannelMismatch { .. }), "{err}");
    let err = e.conv2d_bias_pixels(&px, &k, &Array1::zeros(3), &conv).unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
    let err = e
        .pool2d_pixels(&px, &Pool2dSpec::new(PoolMode::Max, 40, 2))
        .unwrap_err();
    assert!(!matches!(err, Error::Gpu(_)), "{err}");
    assert_eq!(ctx.transfer_bytes(), (u0, d0));
    // In verify mode the chain is checked against the reference too.
    let v = e.clone().with_verify(true);
    assert_eq!(
        bits(&v.conv2d_pixels(&px, &k, &conv).unwrap()),
        bits(&e.conv2d(&f, &k, &conv).unwrap())
    );
}

/// Host calls widen 8- and 16-bit pixels on the device chunk by chunk:
/// with 2 KiB bindings a call runs as many chunks, each uploaded as its own
/// bytes (starting mid-word: rows of 39 bytes) and widened ahead of its
/// kernel, through staging copies and through mapped buffers, and equals the
/// f32 call bit for bit.
#[test]
fn chunked_pixel_calls_widen_each_chunk_on_the_device() {
    for mapped in [false, true] {
        let Some(e) = gpu_engine_with(GpuOptions {
            max_binding_bytes: Some(2048),
            mapped_buffers: Some(mapped),
            device_widening: Some(true),
            ..Default::default()
        })
        .map(|e| e.with_verify(false)) else {
            return;
        };
        let ctx = e.gpu().unwrap();
        assert!(ctx.device_widening());
        let px = Array4::from_shape_fn((3, 23, 13, 3), |(n, y, x, c)| {
            ((n * 89 + y * 31 + x * 7 + c * 101) % 256) as u8
        });
        let f = px.mapv(f32::from);
        let k = array([3, 3, 3, 5], 36);
        let b = Array1::from_iter((0..5).map(|i| 40.0 * i as f32 - 90.0));
        let conv = Conv2dSpec::new(Padding::Same).with_activation(Some(Activation::Relu));
        let chunks = ctx
            .plan_conv(&conv.resolve([3, 23, 13, 3], [3, 3, 3, 5]).unwrap())
            .unwrap();
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        let uploaded = |f: &dyn Fn() -> Array4<f32>| {
            let (u0, _) = ctx.transfer_bytes();
            let out = f();
            (out, ctx.transfer_bytes().0 - u0)
        };
        let (want, f32_up) = uploaded(&|| e.conv2d_bias(&f, &k, &b, &conv).unwrap());
        let (got, u8_up) = uploaded(&|| e.conv2d_bias_pixels(&px, &k, &b, &conv).unwrap());
        assert_eq!(bits(&got), bits(&want), "mapped {mapped}");
        // Each chunk's bytes, rounded up to whole words.
        let weights = weight_bytes(&e, &conv, f.shape(), &k, b.len());
        let images = (f32_up - weights) / 4;
        assert!(
            (images..=images + 3 * chunks.len() as u64).contains(&(u8_up - weights)),
            "{u8_up} bytes for {images} pixels in {} chunks",
            chunks.len()
        );
        let px16 = px.mapv(|v| u16::from(v) * 255 + 7);
        let f16 = px16.mapv(f32::from);
        for pool in [
            Pool2dSpec::new(PoolMode::Max, 3, 2).with_stride(2, 1),
            Pool2dSpec::new(PoolMode::Avg, 2, 2),
        ] {
            assert_eq!(
                bits(&e.pool2d_pixels(&px16, &pool).unwrap()),
                bits(&e.pool2d(&f16, &pool).unwrap())
            );
            assert_eq!(
                bits(&e.pool2d_pixels(&px, &pool).unwrap()),
                bits(&e.pool2d(&f, &pool).unwrap())
            );
        }
        let v = e.clone().with_verify(true);
        assert_eq!(
            bits(&v.conv2d_pixels(&px16, &k, &conv).unwrap()),
            bits(&e.conv2d(&f16, &k, &conv).unwrap())
        );
    }
}

/// The benchmark's chain workloads run on the GPU (the resident one through
/// the widened upload), at a small batch, on the default engine and on one
/// that widens host calls' pixels on the device.
#[test]
fn the_chain_workloads_run_on_the_gpu() {
    let Some(e) = gpu(None) else { return };
    let Some(widening) = gpu_engine_with(GpuOptions {
        device_widening: Some(true),
        ..Default::default()
    }) else {
        return;
    };
    for (e, mut w) in [e, widening.with_verify(false)].into_iter().flat_map(|e| {
        convpool::bench::workloads()
            .into_iter()
            .filter(|w| w.suite == convpool::bench::Suite::Chain)
            .map(move |w| (e.clone(), w))
    }) {
        w.quick_m = 3;
        let ctx = e.gpu().unwrap();
        let (u0, _) = ctx.transfer_bytes();
        let m = convpool::bench::run(&e, &w, true, 1).unwrap();
        let up = ctx.transfer_bytes().0 - u0;
        // seed_multi's conv: 16 output channels, the tiled kernel.
        let kernel = convpool::bench::gpu_conv_kernel(&e, &w, true).unwrap().unwrap();
        assert!(kernel.starts_with("tiled ") && kernel.contains(" staging "), "{kernel}");
        assert_eq!(m.m, 3);
        // Two runs (warm-up and one timed): u8 samples for the resident
        // chain; the images (u8 where this GPU widens on the device) and
        // the conv's output for the host ones.
        let pixels = 3 * 32 * 32 * 3;
        let c = if kernel.contains("3 channels read as 4") { 4 } else { 3 };
        let kernels = 3 * 3 * c * 16 * 4 + 4;
        let conv_out = 4 * 3 * 32 * 32 * 16;
        let per_run = match w.name {
            "chain_seed_u8_resident" => pixels + kernels,
            "chain_seed_u8_host" if ctx.device_widening() => pixels + kernels + conv_out,
            _ => 4 * pixels + kernels + conv_out,
        };
        assert_eq!(up, 2 * per_run as u64, "{}", w.name);
    }
}
