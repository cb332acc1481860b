//! Sustained load on one engine: 8 threads x 1,000 mixed calls (convolution
//! and pooling, several shapes, v1 and v2 options), on the CPU and on the
//! GPU. Every result equals the single-threaded one bit for bit, memory
//! stays flat, the GPU's buffer pool stays bounded, nothing deadlocks.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{array, gpu_engine_with};
use convpool::{Activation, Conv2dSpec, Engine, GpuOptions, Padding, PaddingMode, Pool2dSpec, PoolMode};
use ndarray::{Array1, Array4};

const THREADS: usize = 8;
const CALLS: usize = 1000;

enum Call {
    Conv(Array4<f32>, Array4<f32>, Option<Array1<f32>>, Conv2dSpec),
    Pool(Array4<f32>, Pool2dSpec),
    Argmax(Array4<f32>, Pool2dSpec),
}

fn calls() -> Vec<Call> {
    let mut v = Vec::new();
    for (i, (x, k)) in [
        ([1, 9, 8, 1], [3, 3, 1, 1]),
        ([2, 7, 7, 3], [3, 3, 3, 8]),
        ([1, 6, 10, 4], [1, 1, 4, 12]),
        ([2, 5, 5, 8], [3, 3, 8, 16]),
    ]
    .into_iter()
    .enumerate()
    {
        let (x, k) = (array(x, i as u64), array(k, 100 + i as u64));
        v.push(Call::Conv(
            x.clone(),
            k.clone(),
            None,
            Conv2dSpec::new(Padding::Same).with_stride(1 + i % 2, 1),
        ));
        v.push(Call::Conv(
            x.clone(),
            k.clone(),
            Some(Array1::linspace(-1.0, 1.0, k.dim().3)),
            Conv2dSpec::new(Padding::Symmetric(1, 1))
                .with_padding_mode(PaddingMode::ALL[i % 5])
                .with_activation(Some(Activation::Relu)),
        ));
        v.push(Call::Pool(
            x.clone(),
            Pool2dSpec::new(PoolMode::Avg, 2, 2).with_ceil_mode(true),
        ));
        v.push(Call::Argmax(
            x.clone(),
            Pool2dSpec::new(PoolMode::Max, 3, 3).with_stride(2, 2),
        ));
        v.push(Call::Pool(x, Pool2dSpec::adaptive(PoolMode::Max, 3, 2)));
    }
    let dw = array([2, 8, 8, 6], 9);
    v.push(Call::Conv(
        dw,
        array([3, 3, 1, 12], 10),
        None,
        Conv2dSpec::new(Padding::Same).with_groups(6),
    ));
    v
}

/// Bits of a call's result (values, and indices for argmax).
fn run(e: &Engine, c: &Call) -> Vec<u64> {
    match c {
        Call::Conv(x, k, Some(b), spec) => bits(&e.conv2d_bias(x, k, b, spec).unwrap()),
        Call::Conv(x, k, None, spec) => bits(&e.conv2d(x, k, spec).unwrap()),
        Call::Pool(x, spec) => bits(&e.pool2d(x, spec).unwrap()),
        Call::Argmax(x, spec) => {
            let (v, i) = e.max_pool2d_with_indices(x, spec).unwrap();
            bits(&v).into_iter().chain(i.iter().map(|&i| i as u64)).collect()
        }
    }
}

fn bits(a: &Array4<f32>) -> Vec<u64> {
    a.iter().map(|v| v.to_bits() as u64).collect()
}

fn rss_kib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(0)
        * 4
}

fn hold(engine: &Engine, name: &str) {
    let calls = calls();
    let want: Vec<Vec<u64>> = calls.iter().map(|c| run(engine, c)).collect();
    // Run to run, the same engine gives the same bits.
    assert!(
        calls.iter().zip(&want).all(|(c, w)| run(engine, c) == *w),
        "{name}: not deterministic"
    );
    // Memory: 100 calls, then 900 more, single-threaded.
    for i in 0..100 {
        run(engine, &calls[i % calls.len()]);
    }
    let after_100 = rss_kib();
    for i in 0..900 {
        run(engine, &calls[i % calls.len()]);
    }
    let after_1000 = rss_kib();
    assert!(
        after_1000 as f64 <= after_100 as f64 * 1.10 + 4096.0,
        "{name}: RSS grew from {after_100} KiB after 100 calls to {after_1000} KiB after 1000"
    );
    // 8 threads x 1000 calls, each checked against the single-threaded bits.
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (calls, want) = (&calls, &want);
            s.spawn(move || {
                for i in 0..CALLS {
                    let j = (t * 7 + i * 3) % calls.len();
                    assert!(
                        run(engine, &calls[j]) == want[j],
                        "{name}: thread {t}, call {i} (case {j}) differs"
                    );
                }
            });
        }
    });
    if let Some(ctx) = engine.gpu() {
        let pooled = ctx.pooled_buffer_sets();
        assert!(
            pooled <= THREADS,
            "{name}: {pooled} buffer sets pooled for {THREADS} threads"
        );
    }
    eprintln!(
        "{name}: {} calls, RSS {after_100} -> {after_1000} KiB",
        THREADS * CALLS + 1000
    );
}

#[test]
fn eight_threads_by_a_thousand_mixed_calls() {
    // A deadlock fails the run instead of hanging it.
    static DONE: AtomicBool = AtomicBool::new(false);
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(900));
        if !DONE.load(Ordering::SeqCst) {
            eprintln!("load test: no progress after 900 s (deadlock?)");
            std::process::exit(101);
        }
    });
    for engine in common::cpu_engines() {
        hold(&engine, engine.describe());
    }
    if let Some(gpu) = gpu_engine_with(GpuOptions::default()) {
        // Without verify mode, so the GPU alone is under load.
        hold(&gpu.with_verify(false), "GPU");
    }
    DONE.store(true, Ordering::SeqCst);
}
