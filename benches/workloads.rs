//! Criterion benches for a few of `convpool bench`'s workloads (at their
//! `--quick` batch sizes), on the CPU and, when an adapter exists, the GPU.
//! GPU timings use `iter_custom`, so each sample includes the upload, the
//! dispatch, the wait for the device and the readback.

use std::time::{Duration, Instant};

use convpool::bench::{random_array, workloads, Op, Workload};
use convpool::{Device, Engine};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndarray::Array4;

const NAMES: [&str; 6] = [
    "seed_gray_valid",
    "seed_pool_max",
    "cnn_conv3x3",
    "cnn_conv3x3_bias_relu",
    "cnn_depthwise3x3",
    "cnn_conv1x1",
];

fn inputs(w: &Workload) -> (Array4<f32>, Array4<f32>) {
    let images = random_array(w.input_shape(true), 1);
    let kernels = match w.op {
        Op::Conv { kernels, .. } | Op::Chain { kernels, .. } => random_array(kernels, 2),
        Op::Pool { .. } => Array4::zeros((0, 0, 0, 0)),
    };
    (images, kernels)
}

fn run_once(engine: &Engine, w: &Workload, images: &Array4<f32>, kernels: &Array4<f32>) {
    let out = match w.op {
        Op::Conv { spec, bias: true, .. } => {
            let bias = ndarray::Array1::<f32>::linspace(-1.0, 1.0, kernels.dim().3);
            engine.conv2d_bias(images, kernels, &bias, &spec)
        }
        Op::Conv { spec, .. } => engine.conv2d(images, kernels, &spec),
        Op::Pool { spec } => engine.pool2d(images, &spec),
        // Not among NAMES: `convpool bench --suite chain` times the chains.
        Op::Chain { spec, pool, .. } => engine
            .conv2d(images, kernels, &spec)
            .and_then(|y| engine.pool2d(&y, &pool)),
    };
    std::hint::black_box(out.expect("benchmark workloads are valid"));
}

fn benches(c: &mut Criterion) {
    let cpu = Engine::cpu();
    // A GPU only if one works; the benches still run on the CPU without one.
    let gpu = Engine::new(Device::Gpu).ok();
    for w in workloads().into_iter().filter(|w| NAMES.contains(&w.name)) {
        let (images, kernels) = inputs(&w);
        let mut group = c.benchmark_group(w.name);
        group.sample_size(10).measurement_time(Duration::from_secs(3));
        group.throughput(Throughput::Elements(images.len() as u64));
        group.bench_function("cpu", |b| b.iter(|| run_once(&cpu, &w, &images, &kernels)));
        if let Some(gpu) = &gpu {
            // Every call already blocks on the device until its readback.
            group.bench_function("gpu", |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        run_once(gpu, &w, &images, &kernels);
                    }
                    start.elapsed()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(workload_benches, benches);
criterion_main!(workload_benches);
