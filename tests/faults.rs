//! Injected GPU faults: a readback that never completes (a timeout), a lost
//! device (destroyed before and during a call), requests past the device's
//! limits. Each is a typed, one-line error, never a panic or a hang; the
//! command line leaves no partial file; an engine keeps working after a
//! refused request, and says it cannot after its device is gone.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{array, gpu_engine, gpu_engine_with};
use convpool::{Conv2dSpec, Error, GpuOptions, Padding, Pool2dSpec, PoolMode};
use ndarray::Array4;

fn work() -> (Array4<f32>, Array4<f32>, Conv2dSpec) {
    (
        array([4, 64, 64, 8], 1),
        array([3, 3, 8, 16], 2),
        Conv2dSpec::new(Padding::Same),
    )
}

#[test]
fn a_readback_that_does_not_complete_in_time_is_an_error() {
    let Some(hasty) = gpu_engine_with(GpuOptions {
        timeout: Some(Duration::from_nanos(1)),
        ..Default::default()
    }) else {
        return;
    };
    let (x, k, spec) = work();
    for _ in 0..2 {
        let err = hasty.conv2d(&x, &k, &spec).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Gpu(_)) && msg.contains("did not finish"), "{msg}");
        assert!(!msg.contains('\n'));
    }
    // The device itself is fine: an engine with the default timeout agrees
    // with the reference (verify mode).
    let engine = gpu_engine().unwrap();
    engine.conv2d(&x, &k, &spec).unwrap();
    // A zero timeout is refused before a device is opened.
    let zero = convpool::gpu::GpuContext::new(&GpuOptions {
        timeout: Some(Duration::ZERO),
        ..Default::default()
    });
    assert!(zero.unwrap_err().to_string().starts_with("timeout"));
}

#[test]
fn a_lost_device_is_an_error_on_every_later_call() {
    let Some(engine) = gpu_engine_with(GpuOptions::default()) else {
        return;
    };
    let (x, k, spec) = work();
    engine.conv2d(&x, &k, &spec).unwrap();
    let ctx = engine.gpu().unwrap();
    ctx.destroy_device_for_tests();
    for _ in 0..3 {
        let err = engine.conv2d(&x, &k, &spec).unwrap_err();
        assert!(matches!(err, Error::Gpu(_)), "{err}");
        let pool = engine.pool2d(&x, &Pool2dSpec::new(PoolMode::Max, 2, 2)).unwrap_err();
        assert!(matches!(pool, Error::Gpu(_)), "{pool}");
    }
    assert!(ctx.is_lost());
    let msg = engine.conv2d(&x, &k, &spec).unwrap_err().to_string();
    assert!(msg.contains("lost"), "{msg}");
}

#[test]
fn a_device_destroyed_during_a_call_gives_an_error_or_the_result() {
    let Some(engine) = gpu_engine_with(GpuOptions {
        // Many chunks, so the destruction lands between two of them.
        max_binding_bytes: Some(64 << 10),
        ..Default::default()
    }) else {
        return;
    };
    let x = array([16, 96, 96, 8], 3);
    let k = array([3, 3, 8, 8], 4);
    let spec = Conv2dSpec::new(Padding::Same);
    let ctx = engine.gpu().unwrap();
    std::thread::scope(|s| {
        let call = s.spawn(|| engine.conv2d(&x, &k, &spec));
        std::thread::sleep(Duration::from_millis(30));
        ctx.destroy_device_for_tests();
        match call.join().expect("the call does not panic") {
            Ok(out) => assert_eq!(out.shape(), &[16, 96, 96, 8]),
            Err(e) => assert!(matches!(e, Error::Gpu(_)), "{e}"),
        }
    });
    assert!(engine.conv2d(&x, &k, &spec).is_err());
}

#[test]
fn requests_past_the_device_limits_are_refused_and_the_engine_goes_on() {
    let Some(small) = gpu_engine_with(GpuOptions {
        max_binding_bytes: Some(1024),
        ..Default::default()
    }) else {
        return;
    };
    // Kernels larger than one binding.
    let x = array([1, 8, 8, 16], 5);
    let k = array([3, 3, 16, 16], 6);
    let err = small.conv2d(&x, &k, &Conv2dSpec::default()).unwrap_err();
    assert!(err.to_string().contains("more than one GPU binding holds"), "{err}");
    // One output row larger than a binding.
    let wide = array([1, 2, 600, 1], 7);
    let err = small.pool2d(&wide, &Pool2dSpec::new(PoolMode::Max, 1, 1)).unwrap_err();
    assert!(err.to_string().contains("one output row needs more"), "{err}");
    // The same engine still runs what fits, and agrees with the reference.
    let fits = array([2, 6, 5, 2], 8);
    small
        .conv2d(&fits, &array([3, 3, 2, 2], 9), &Conv2dSpec::default())
        .unwrap();
    // Geometry past the shaders' 32-bit coordinates.
    let big = 1usize << 31;
    let one = Array4::<f32>::ones((1, 1, 1, 1));
    let spec = Conv2dSpec::new(Padding::Symmetric(big, 0));
    let err = small.conv2d(&one, &one, &spec).unwrap_err();
    assert!(matches!(err, Error::Overflow { .. }), "{err}");
}

/// On the command line a GPU fault is one line and leaves no output file.
#[test]
fn the_cli_leaves_no_file_when_the_gpu_fails() {
    if gpu_engine().is_none() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (x, k, _) = work();
    let (xp, kp, out) = (d.path().join("x.npy"), d.path().join("k.npy"), d.path().join("y.npy"));
    ndarray_npy::write_npy(&xp, &x).unwrap();
    ndarray_npy::write_npy(&kp, &k).unwrap();
    let res = Command::new(env!("CARGO_BIN_EXE_convpool"))
        .args(["conv", "--device", "gpu", "--padding", "same"])
        .args(["--images", xp.to_str().unwrap(), "--kernels", kp.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()])
        .env("CONVPOOL_GPU_TIMEOUT", "0.000000001")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.starts_with("convpool")).collect();
    assert!(!res.status.success());
    assert_eq!(ours.len(), 1, "{stderr}");
    assert!(ours[0].contains("did not finish"), "{stderr}");
    assert!(!out.exists());
    let bad = Command::new(env!("CARGO_BIN_EXE_convpool"))
        .args(["devices"])
        .env("CONVPOOL_GPU_TIMEOUT", "soon")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&bad.stdout).to_string() + &String::from_utf8_lossy(&bad.stderr);
    assert!(text.contains("CONVPOOL_GPU_TIMEOUT"), "{text}");
}

/// With the CPU fallback (what `Device::Auto` has), a failing GPU call is
/// run on the CPU instead, with the same result as the CPU engine gives.
#[test]
fn the_cpu_fallback_runs_a_failed_gpu_call_on_the_cpu() {
    let Some(hasty) = gpu_engine_with(GpuOptions {
        timeout: Some(Duration::from_nanos(1)),
        ..Default::default()
    }) else {
        return;
    };
    let (x, k, spec) = work();
    let hasty = hasty.with_cpu_fallback(true);
    let cpu = convpool::Engine::cpu();
    assert_eq!(hasty.conv2d(&x, &k, &spec).unwrap(), cpu.conv2d(&x, &k, &spec).unwrap());
    let pool = Pool2dSpec::new(PoolMode::Max, 3, 3);
    assert_eq!(
        hasty.max_pool2d_with_indices(&x, &pool).unwrap(),
        cpu.max_pool2d_with_indices(&x, &pool).unwrap()
    );
    // Validation errors are not GPU failures: still returned.
    assert!(hasty.conv2d(&x, &array([3, 3, 5, 2], 1), &spec).is_err());
    // Without it the failure is returned.
    assert!(hasty.with_cpu_fallback(false).conv2d(&x, &k, &spec).is_err());
}
