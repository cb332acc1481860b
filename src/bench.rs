//! The benchmark workloads and the machine peaks they are read against.
//!
//! `convpool bench` and the criterion benches both use these definitions, so
//! a workload means the same shapes everywhere (and the same as in the
//! baseline script that times onnxruntime on this machine).

use std::time::Instant;

use ndarray::Array4;
use rayon::prelude::*;

use crate::cpu::simd::{dispatch, Simd, WithSimd};
use crate::cpu::Isa;

use crate::engine::Engine;
use crate::epilogue::Activation;
use crate::error::Result;
use crate::shape::{Conv2dSpec, Padding, Pool2dSpec, PoolMode};

/// Which group a workload belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// The seed exercise's shapes (MNIST / CIFAR-sized batches).
    Seed,
    /// CNN layers and a large image filter.
    Cnn,
    /// Sized for real GPUs; only in `--suite all`.
    Large,
    /// The seed's conv-then-pool pipeline on 8-bit images, kept on the
    /// device against two host calls; in `--suite chain` and `all`.
    Chain,
}

/// What a workload computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// A convolution with kernels of this HWIO shape.
    Conv {
        /// `(kh, kw, c / groups, nc)`.
        kernels: [usize; 4],
        /// Stride, padding, groups, activation.
        spec: Conv2dSpec,
        /// With a bias of `nc` values (the fused epilogue).
        bias: bool,
    },
    /// A pooling.
    Pool {
        /// Window, stride, padding, mode.
        spec: Pool2dSpec,
    },
    /// A convolution, then a pooling of its output, of 8-bit images.
    Chain {
        /// `(kh, kw, c, nc)`.
        kernels: [usize; 4],
        /// The convolution.
        spec: Conv2dSpec,
        /// The pooling.
        pool: Pool2dSpec,
        /// How the steps run and what crosses to the device.
        path: ChainPath,
    },
}

/// How a chain workload runs its two steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainPath {
    /// On a GPU: the u8 samples uploaded once ([`Engine::upload_pixels`]),
    /// both steps on the device, one download (elsewhere as `PixelHost`).
    Resident,
    /// Two host calls, the first of the u8 samples
    /// ([`Engine::conv2d_pixels`]: widened on the device, chunk by chunk,
    /// on a GPU with its own memory).
    PixelHost,
    /// Two host calls of the images as f32, as a numpy user would make them.
    F32Host,
}

/// One named benchmark workload.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Name, as in the README's table and the baseline script.
    pub name: &'static str,
    /// Group.
    pub suite: Suite,
    /// NHWC input shape of the full run.
    pub images: [usize; 4],
    /// Batch size of a `--quick` run (per-element figures stay comparable).
    pub quick_m: usize,
    /// The operation.
    pub op: Op,
}

fn conv(
    name: &'static str,
    suite: Suite,
    images: [usize; 4],
    quick_m: usize,
    kernels: [usize; 4],
    padding: Padding,
    stride: usize,
) -> Workload {
    let spec = Conv2dSpec::new(padding).with_stride(stride, stride);
    Workload {
        name,
        suite,
        images,
        quick_m,
        op: Op::Conv {
            kernels,
            spec,
            bias: false,
        },
    }
}

fn pool(name: &'static str, suite: Suite, images: [usize; 4], quick_m: usize, spec: Pool2dSpec) -> Workload {
    Workload {
        name,
        suite,
        images,
        quick_m,
        op: Op::Pool { spec },
    }
}

/// seed_multi then seed_pool_max on its output, of 8-bit images.
fn chain(name: &'static str, path: ChainPath) -> Workload {
    Workload {
        name,
        suite: Suite::Chain,
        images: [10000, 32, 32, 3],
        quick_m: 1000,
        op: Op::Chain {
            kernels: [3, 3, 3, 16],
            spec: Conv2dSpec::new(Padding::Same).with_activation(Some(Activation::Relu)),
            pool: Pool2dSpec::new(PoolMode::Max, 2, 2).with_stride(2, 2),
            path,
        },
    }
}

/// Every workload, in the order of the README's table.
pub fn workloads() -> Vec<Workload> {
    use Padding::{Same, Symmetric, Valid};
    use Suite::*;
    let pool2 = |mode| Pool2dSpec::new(mode, 2, 2).with_stride(2, 2);
    let maxpool3 = Pool2dSpec::new(PoolMode::Max, 3, 3)
        .with_stride(2, 2)
        .with_padding(Symmetric(1, 1));
    vec![
        conv(
            "seed_gray_valid",
            Seed,
            [50000, 28, 28, 1],
            5000,
            [3, 3, 1, 1],
            Valid,
            1,
        ),
        conv(
            "seed_gray_strided",
            Seed,
            [50000, 28, 28, 1],
            5000,
            [3, 3, 1, 1],
            Symmetric(1, 1),
            2,
        ),
        conv(
            "seed_channels_same",
            Seed,
            [10000, 32, 32, 3],
            1000,
            [3, 3, 3, 1],
            Same,
            1,
        ),
        conv("seed_multi", Seed, [10000, 32, 32, 3], 1000, [3, 3, 3, 16], Same, 1),
        pool("seed_pool_max", Seed, [10000, 32, 32, 3], 1000, pool2(PoolMode::Max)),
        pool("seed_pool_avg", Seed, [10000, 32, 32, 3], 1000, pool2(PoolMode::Avg)),
        conv("cnn_conv3x3", Cnn, [8, 56, 56, 64], 2, [3, 3, 64, 64], Same, 1),
        Workload {
            name: "cnn_conv3x3_bias_relu",
            suite: Cnn,
            images: [8, 56, 56, 64],
            quick_m: 2,
            op: Op::Conv {
                kernels: [3, 3, 64, 64],
                spec: Conv2dSpec::new(Same).with_activation(Some(Activation::Relu)),
                bias: true,
            },
        },
        Workload {
            name: "cnn_depthwise3x3",
            suite: Cnn,
            images: [8, 112, 112, 32],
            quick_m: 2,
            op: Op::Conv {
                kernels: [3, 3, 1, 32],
                spec: Conv2dSpec::new(Same).with_groups(32),
                bias: false,
            },
        },
        conv("cnn_conv1x1", Cnn, [8, 28, 28, 256], 2, [1, 1, 256, 128], Valid, 1),
        conv("cnn_stem", Cnn, [4, 224, 224, 3], 1, [7, 7, 3, 64], Symmetric(3, 3), 2),
        pool("cnn_maxpool", Cnn, [8, 112, 112, 64], 2, maxpool3),
        conv("image_blur", Cnn, [1, 4096, 4096, 1], 1, [5, 5, 1, 1], Same, 1),
        conv("cnn_conv3x3_b64", Large, [64, 56, 56, 64], 2, [3, 3, 64, 64], Same, 1),
        chain("chain_seed_u8_resident", ChainPath::Resident),
        chain("chain_seed_u8_host", ChainPath::PixelHost),
        chain("chain_seed_f32_host", ChainPath::F32Host),
    ]
}

impl Workload {
    /// Input shape of a full or `--quick` run.
    pub fn input_shape(&self, quick: bool) -> [usize; 4] {
        let [m, h, w, c] = self.images;
        [if quick { self.quick_m.min(m) } else { m }, h, w, c]
    }

    /// Output shape for an input shape.
    pub fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        Ok(match self.op {
            Op::Conv { kernels, spec, .. } => spec.resolve(input, kernels)?.output_shape(),
            Op::Pool { spec } => spec.resolve(input)?.output_shape(),
            Op::Chain {
                kernels, spec, pool, ..
            } => pool
                .resolve(spec.resolve(input, kernels)?.output_shape())?
                .output_shape(),
        })
    }

    /// Floating-point operations: `2 * m * oh * ow * kh * kw * c * nc` for a
    /// convolution, one per window cell for pooling.
    pub fn flops(&self, input: [usize; 4]) -> Result<f64> {
        Ok(match self.op {
            Op::Conv { kernels, spec, .. } => spec.resolve(input, kernels)?.flops(),
            Op::Pool { spec } => pool_flops(&spec, input)?,
            Op::Chain {
                kernels, spec, pool, ..
            } => {
                let g = spec.resolve(input, kernels)?;
                g.flops() + pool_flops(&pool, g.output_shape())?
            }
        })
    }

    /// Bytes that must move at least once: input (f32, or u8 for a chain
    /// of the u8 samples), kernels, bias and output (f32).
    pub fn min_bytes(&self, input: [usize; 4]) -> Result<f64> {
        let out: usize = self.output_shape(input)?.iter().product();
        let kernel: usize = match self.op {
            Op::Conv { kernels, bias, .. } => kernels.iter().product::<usize>() + if bias { kernels[3] } else { 0 },
            Op::Pool { .. } => 0,
            Op::Chain { kernels, .. } => kernels.iter().product(),
        };
        let input_bytes = match self.op {
            Op::Chain {
                path: ChainPath::Resident | ChainPath::PixelHost,
                ..
            } => 1,
            _ => 4,
        };
        Ok((input_bytes * input.iter().product::<usize>() + 4 * (kernel + out)) as f64)
    }
}

fn pool_flops(spec: &Pool2dSpec, input: [usize; 4]) -> Result<f64> {
    let g = spec.resolve(input)?;
    Ok(g.output_shape().iter().product::<usize>() as f64 * (g.kh * g.kw) as f64)
}

/// Deterministic pseudo-random values in [-1, 1), filled in parallel.
pub fn random_array(shape: [usize; 4], seed: u64) -> Array4<f32> {
    let mut a = Array4::<f32>::zeros(shape);
    if let Some(s) = a.as_slice_mut() {
        s.par_chunks_mut(1 << 16).enumerate().for_each(|(b, chunk)| {
            let mut x = (seed ^ (b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
            for v in chunk {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            }
        });
    }
    a
}

/// One workload, timed.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Workload name.
    pub name: &'static str,
    /// Batch size actually run.
    pub m: usize,
    /// Median of the timed runs, seconds (end to end: upload, compute,
    /// readback on a GPU).
    pub median_s: f64,
    /// Fastest timed run, seconds.
    pub min_s: f64,
    /// Median GPU kernel time from timestamp queries, seconds.
    pub kernel_median_s: Option<f64>,
    /// Median over the runs of end-to-end minus kernel time (upload,
    /// readback, host work), where kernel times were recorded: paired per
    /// run, so the noise of a long kernel does not swamp it.
    pub host_overhead_median_s: Option<f64>,
    /// Operations of one run.
    pub flops: f64,
    /// Minimum bytes of one run.
    pub min_bytes: f64,
    /// The instruction set the fast CPU path ran it with (`None` on the
    /// GPU and the reference).
    pub isa: Option<Isa>,
}

impl Measurement {
    /// GFLOP/s at the median time.
    pub fn gflops(&self) -> f64 {
        self.flops / self.median_s / 1e9
    }

    /// GB/s of the minimum traffic at the median time.
    pub fn gbps(&self) -> f64 {
        self.min_bytes / self.median_s / 1e9
    }

    /// Roofline time `max(flops / peak, bytes / bandwidth)`, seconds.
    pub fn roofline_s(&self, peaks: &Peaks) -> f64 {
        (self.flops / (peaks.fma_gflops * 1e9)).max(self.min_bytes / (peaks.copy_gbps * 1e9))
    }

    /// Fraction of the roofline reached at the median time.
    pub fn roofline_fraction(&self, peaks: &Peaks) -> f64 {
        self.roofline_s(peaks) / self.median_s
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Times a workload on an engine: one warm-up run, then `repeats` runs.
pub fn run(engine: &Engine, w: &Workload, quick: bool, repeats: usize) -> Result<Measurement> {
    let input = w.input_shape(quick);
    let images = random_array(input, 1);
    let kernels = match w.op {
        Op::Conv { kernels, .. } | Op::Chain { kernels, .. } => random_array(kernels, 2),
        Op::Pool { .. } => Array4::zeros((0, 0, 0, 0)),
    };
    // 8-bit images for a chain, and the same values as f32.
    let (pixels, images) = match w.op {
        Op::Chain { .. } => {
            let pixels = images.mapv(|v| ((v + 1.0) * 127.5) as u8);
            let images = pixels.mapv(f32::from);
            (pixels, images)
        }
        _ => (Array4::zeros((0, 0, 0, 0)), images),
    };
    let bias = match w.op {
        Op::Conv {
            kernels, bias: true, ..
        } => Some(random_array([1, 1, 1, kernels[3]], 3).into_raw_vec_and_offset().0),
        _ => None,
    };
    let once = || -> Result<(f64, Option<f64>)> {
        let start = Instant::now();
        let kernel = match w.op {
            Op::Conv { spec, .. } => match &bias {
                Some(b) => engine.conv2d_bias_timed(&images, &kernels, b.as_slice(), &spec)?.1,
                None => engine.conv2d_timed(&images, &kernels, &spec)?.1,
            },
            Op::Pool { spec } => engine.pool2d_timed(&images, &spec)?.1,
            Op::Chain { spec, pool, path, .. } => {
                let out = match path {
                    ChainPath::Resident if engine.is_gpu() => {
                        let d = engine.upload_pixels(&pixels)?;
                        let d = engine.conv2d_resident(&d, &kernels, &spec)?;
                        engine.pool2d_resident(&d, &pool)?.download()?
                    }
                    ChainPath::Resident | ChainPath::PixelHost => {
                        engine.pool2d(&engine.conv2d_pixels(&pixels, &kernels, &spec)?, &pool)?
                    }
                    ChainPath::F32Host => engine.pool2d(&engine.conv2d(&images, &kernels, &spec)?, &pool)?,
                };
                std::hint::black_box(out);
                None
            }
        };
        Ok((start.elapsed().as_secs_f64(), kernel))
    };
    let isa = match w.op {
        Op::Conv { kernels, spec, .. } | Op::Chain { kernels, spec, .. } => engine.conv2d_isa(input, kernels, &spec)?,
        Op::Pool { spec } => engine.pool2d_isa(input, &spec)?,
    };
    once()?;
    let mut times = Vec::with_capacity(repeats);
    let mut kernel_times = Vec::with_capacity(repeats);
    let mut overheads = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let (t, k) = once()?;
        times.push(t);
        kernel_times.extend(k);
        overheads.extend(k.map(|k| t - k));
    }
    Ok(Measurement {
        name: w.name,
        m: input[0],
        min_s: times.iter().copied().fold(f64::INFINITY, f64::min),
        median_s: median(&mut times),
        kernel_median_s: (!kernel_times.is_empty()).then(|| median(&mut kernel_times)),
        host_overhead_median_s: (!overheads.is_empty()).then(|| median(&mut overheads)),
        flops: w.flops(input)?,
        min_bytes: w.min_bytes(input)?,
        isa,
    })
}

/// Which GPU conv kernel a workload's convolution runs with on `engine`
/// (tile, register block and staging: [`crate::gpu::GpuContext::describe_conv`]);
/// `None` off the GPU and for a pooling.
pub fn gpu_conv_kernel(engine: &Engine, w: &Workload, quick: bool) -> Result<Option<String>> {
    match (engine.gpu(), w.op) {
        (Some(ctx), Op::Conv { kernels, spec, .. } | Op::Chain { kernels, spec, .. }) => {
            Ok(Some(ctx.describe_conv(&spec.resolve(w.input_shape(quick), kernels)?)))
        }
        _ => Ok(None),
    }
}

/// This machine's FMA peak (all threads) and copy bandwidth (read + write).
#[derive(Debug, Clone, Copy)]
pub struct Peaks {
    /// GFLOP/s of independent FMA chains on every thread.
    pub fma_gflops: f64,
    /// GB/s of a large copy, counting bytes read and written.
    pub copy_gbps: f64,
    /// The vectors the FMA peak was measured with: the widest this CPU has
    /// (`None` where the peak was given, not measured).
    pub fma_isa: Option<Isa>,
}

/// Measures [`Peaks`] the way the baseline script does (12 independent FMA
/// chains per thread, with the widest vectors the CPU has; a large parallel
/// copy).
pub fn measure_peaks(quick: bool) -> Peaks {
    let threads = rayon::current_num_threads();
    let isa = Isa::detected();
    let iters: u64 = if quick { 20_000_000 } else { 100_000_000 };
    let fma_gflops = (0..3)
        .map(|_| {
            let start = Instant::now();
            let sink: f32 = (0..threads)
                .into_par_iter()
                .map(|_| dispatch(isa, FmaChains { iters }))
                .sum();
            std::hint::black_box(sink);
            (threads as u64 * iters * 12 * isa.lanes() as u64 * 2) as f64 / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max);
    let floats = if quick { 32 << 20 } else { 128 << 20 };
    let src = vec![1f32; floats];
    let mut dst = vec![0f32; floats];
    let chunk = floats.div_ceil(threads);
    let copy_gbps = (0..3)
        .map(|_| {
            let start = Instant::now();
            dst.par_chunks_mut(chunk)
                .zip(src.par_chunks(chunk))
                .for_each(|(d, s)| d.copy_from_slice(s));
            std::hint::black_box(&dst);
            (2 * floats * 4) as f64 / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max);
    Peaks {
        fma_gflops,
        copy_gbps,
        fma_isa: Some(isa),
    }
}

/// 12 independent chains of FMAs (latency 4 x 2 pipes keeps both pipes
/// busy), `iters` steps; returns a value the optimiser cannot drop.
struct FmaChains {
    iters: u64,
}

impl WithSimd for FmaChains {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> f32 {
        // Opaque starting values: a compiler that can see the lanes are
        // equal packs the chains into fewer registers and the "peak" comes
        // out too high.
        let b = std::hint::black_box(s.splat(0.999_999_9));
        let c = std::hint::black_box(s.splat(1e-7));
        let mut x: [S::F; 12] = std::array::from_fn(|i| std::hint::black_box(s.splat(0.1 * (i + 1) as f32)));
        for _ in 0..self.iters {
            for v in x.iter_mut() {
                *v = s.mul_add(*v, b, c);
            }
        }
        let sum = x.into_iter().fold(s.zero(), |a, v| s.add(a, v));
        s.to_array(sum)[..S::LANES].iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chain workloads' sizes, by hand: seed_multi (3x3, 3 -> 16
    /// channels, same) then a 2x2 max pool of its output.
    #[test]
    fn chain_workloads_count_both_steps() {
        let all = workloads();
        let get = |name: &str| *all.iter().find(|w| w.name == name).unwrap();
        let (dev, pixel_host, host) = (
            get("chain_seed_u8_resident"),
            get("chain_seed_u8_host"),
            get("chain_seed_f32_host"),
        );
        let input = dev.input_shape(true);
        assert_eq!(input, [1000, 32, 32, 3]);
        assert_eq!(dev.output_shape(input).unwrap(), [1000, 16, 16, 16]);
        let conv_flops = 2.0 * 1000.0 * 32.0 * 32.0 * 27.0 * 16.0;
        let pool_flops = 1000.0 * 16.0 * 16.0 * 16.0 * 4.0;
        assert_eq!(dev.flops(input).unwrap(), conv_flops + pool_flops);
        let (pixels, kernels, out) = (
            1000.0 * 32.0 * 32.0 * 3.0,
            3.0 * 3.0 * 3.0 * 16.0,
            1000.0 * 16.0 * 16.0 * 16.0,
        );
        assert_eq!(dev.min_bytes(input).unwrap(), pixels + 4.0 * (kernels + out));
        assert_eq!(pixel_host.min_bytes(input).unwrap(), pixels + 4.0 * (kernels + out));
        assert_eq!(host.min_bytes(input).unwrap(), 4.0 * (pixels + kernels + out));
        assert_eq!(host.flops(input).unwrap(), conv_flops + pool_flops);
        assert_eq!(all.iter().filter(|w| w.suite == Suite::Chain).count(), 3);
    }

    /// A chain runs and times on the CPU (every variant).
    #[test]
    fn chain_workloads_run_on_the_cpu() {
        let e = Engine::cpu();
        for w in workloads().into_iter().filter(|w| w.suite == Suite::Chain) {
            let mut small = w;
            small.quick_m = 2;
            let m = run(&e, &small, true, 1).unwrap();
            assert_eq!(gpu_conv_kernel(&e, &small, true).unwrap(), None);
            assert_eq!(m.m, 2);
            assert!(m.median_s > 0.0 && m.kernel_median_s.is_none());
        }
    }
}
