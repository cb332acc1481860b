//! Shared test helpers: the GPU engine (failing instead of skipping under
//! `CONVPOOL_REQUIRE_GPU=1`), the golden cases and their comparison.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};

use convpool::shape::{images_nhwc, kernels_hwio};
use convpool::{Conv2dSpec, Device, Engine, EngineOptions, GpuOptions, Padding, Pool2dSpec, PoolMode};
use ndarray::{Array4, ArrayD, Axis, Dimension, Ix4};
use ndarray_npy::NpzReader;
use serde_json::Value;

/// Whether a missing adapter must fail the test run (CI sets it).
pub fn gpu_required() -> bool {
    std::env::var("CONVPOOL_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// A verify-mode GPU engine with the given options, or `None` (with the
/// reason printed) when no adapter exists and the GPU is not required.
pub fn gpu_engine_with(gpu: GpuOptions) -> Option<Engine> {
    match Engine::with_options(EngineOptions {
        device: Device::Gpu,
        verify: true,
        gpu,
        ..Default::default()
    }) {
        Ok(e) => Some(e),
        Err(e) if gpu_required() => panic!("CONVPOOL_REQUIRE_GPU=1 but no GPU engine: {e}"),
        Err(e) => {
            eprintln!("skipping GPU test: {e} (set CONVPOOL_REQUIRE_GPU=1 to make this a failure)");
            None
        }
    }
}

/// The default verify-mode GPU engine, shared by the tests of one binary.
pub fn gpu_engine() -> Option<&'static Engine> {
    static ENGINE: std::sync::OnceLock<Option<Engine>> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| gpu_engine_with(GpuOptions::default())).as_ref()
}

/// One golden case of `tests/golden/manifest.json`.
pub struct Case {
    pub name: String,
    pub op: String,
    pub params: Value,
    pub exact: bool,
    pub images: ArrayD<f32>,
    pub kernels: Option<ArrayD<f32>>,
    pub bias: Option<ndarray::Array1<f32>>,
    pub expected: ArrayD<f64>,
    pub expected_indices: Option<ArrayD<i64>>,
}

/// One fast-CPU engine per instruction set this machine has (narrower ones
/// forced), with verify mode on: the tests run every kernel build.
pub fn cpu_engines() -> Vec<Engine> {
    convpool::Isa::available()
        .into_iter()
        .map(|isa| Engine::cpu_with_isa(isa).expect("an available ISA").with_verify(true))
        .collect()
}

pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

pub fn load_cases() -> Vec<Case> {
    let dir = golden_dir();
    let manifest: Value = serde_json::from_reader(File::open(dir.join("manifest.json")).unwrap()).unwrap();
    manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut npz = NpzReader::new(File::open(dir.join(c["file"].as_str().unwrap())).unwrap()).unwrap();
            let names = npz.names().unwrap();
            let has = |name: &str| names.iter().any(|n| n == name || n == &format!("{name}.npy"));
            let kernels = has("kernels").then(|| npz.by_name("kernels.npy").unwrap());
            let bias = has("bias").then(|| npz.by_name("bias.npy").unwrap());
            let expected_indices = has("expected_indices").then(|| npz.by_name("expected_indices.npy").unwrap());
            Case {
                name: c["name"].as_str().unwrap().to_string(),
                op: c["op"].as_str().unwrap().to_string(),
                params: c["params"].clone(),
                exact: c["exact"].as_bool().unwrap(),
                images: npz.by_name("images.npy").unwrap(),
                kernels,
                bias,
                expected: npz.by_name("expected.npy").unwrap(),
                expected_indices,
            }
        })
        .collect()
}

fn pair(v: &Value) -> (usize, usize) {
    (v[0].as_u64().unwrap() as usize, v[1].as_u64().unwrap() as usize)
}

fn padding(v: &Value) -> Padding {
    match v {
        Value::String(s) => s.parse().unwrap(),
        Value::Array(a) => {
            let p: Vec<usize> = a.iter().map(|x| x.as_u64().unwrap() as usize).collect();
            match p[..] {
                [ph, pw] => Padding::Symmetric(ph, pw),
                [top, bottom, left, right] => Padding::Explicit {
                    top,
                    bottom,
                    left,
                    right,
                },
                _ => panic!("bad padding {v}"),
            }
        }
        _ => panic!("bad padding {v}"),
    }
}

fn seed_padding(v: &Value) -> convpool::compat::SeedPadding {
    match v {
        Value::String(s) => s.parse().unwrap(),
        _ => pair(v).into(),
    }
}

pub fn d2(a: &ArrayD<f32>) -> ndarray::ArrayView2<'_, f32> {
    a.view().into_dimensionality().unwrap()
}

pub fn d3(a: &ArrayD<f32>) -> ndarray::ArrayView3<'_, f32> {
    a.view().into_dimensionality().unwrap()
}

pub fn d4(a: &ArrayD<f32>) -> ndarray::ArrayView4<'_, f32> {
    a.view().into_dimensionality().unwrap()
}

pub fn seed_padding_of(v: &Value) -> convpool::compat::SeedPadding {
    seed_padding(v)
}

pub fn pair_of(v: &Value) -> (usize, usize) {
    pair(v)
}

fn to4(a: &ArrayD<f32>, dims: [usize; 4]) -> Array4<f32> {
    a.to_shape(dims.to_vec())
        .unwrap()
        .to_owned()
        .into_dimensionality::<Ix4>()
        .unwrap()
}

/// Runs a case's operation on `engine` with the case's own API.
pub fn run_case(engine: &Engine, case: &Case) -> convpool::Result<ArrayD<f32>> {
    run_case_full(engine, case).map(|(out, _)| out)
}

/// The conv2d spec of a golden case, v2 options included.
pub fn conv_spec(p: &Value) -> Conv2dSpec {
    let (sh, sw) = pair(&p["stride"]);
    let (dh, dw) = pair(&p["dilation"]);
    let mut spec = Conv2dSpec::new(padding(&p["padding"]))
        .with_stride(sh, sw)
        .with_dilation(dh, dw);
    if let Some(mode) = p["padding_mode"].as_str() {
        spec = spec.with_padding_mode(mode.parse().unwrap());
    }
    if let Some(g) = p["groups"].as_u64() {
        spec = spec.with_groups(g as usize);
    }
    if let Some(a) = p["activation"].as_str() {
        spec = spec.with_activation(Some(a.parse().unwrap()));
    }
    spec
}

/// The pool2d / adaptive_pool2d spec of a golden case.
pub fn pool_spec(op: &str, p: &Value) -> Pool2dSpec {
    let mode: PoolMode = p["mode"].as_str().unwrap().parse().unwrap();
    if op == "adaptive_pool2d" {
        let (oh, ow) = pair(&p["output_size"]);
        return Pool2dSpec::adaptive(mode, oh, ow);
    }
    let (dh, dw) = if p["dilation"].is_null() {
        (1, 1)
    } else {
        pair(&p["dilation"])
    };
    if p["window"].is_null() {
        return Pool2dSpec::global(mode);
    }
    let (kh, kw) = pair(&p["window"]);
    let (sh, sw) = pair(&p["stride"]);
    Pool2dSpec::new(mode, kh, kw)
        .with_stride(sh, sw)
        .with_dilation(dh, dw)
        .with_padding(padding(&p["padding"]))
        .with_ceil_mode(p["ceil_mode"].as_bool().unwrap())
        .with_count_include_pad(p["count_include_pad"].as_bool().unwrap())
}

/// [`run_case`], with the argmax indices where the case asks for them.
pub fn run_case_full(engine: &Engine, case: &Case) -> convpool::Result<(ArrayD<f32>, Option<ArrayD<i64>>)> {
    let p = &case.params;
    if matches!(case.op.as_str(), "pool2d" | "adaptive_pool2d") {
        let spec = pool_spec(&case.op, p);
        let images = to4(&case.images, images_nhwc(case.images.shape())?);
        if p["return_indices"].as_bool() == Some(true) {
            let (values, indices) = engine.max_pool2d_with_indices(&images, &spec)?;
            return Ok((values.into_dyn(), Some(indices.into_dyn())));
        }
        return Ok((engine.pool2d(&images, &spec)?.into_dyn(), None));
    }
    Ok((run_seed_or_conv(engine, case)?, None))
}

fn run_seed_or_conv(engine: &Engine, case: &Case) -> convpool::Result<ArrayD<f32>> {
    let p = &case.params;
    let seed = engine.seed();
    let img = &case.images;
    let ker = case.kernels.as_ref();

    Ok(match case.op.as_str() {
        "convolve_grayscale_valid" => seed.convolve_grayscale_valid(d3(img), d2(ker.unwrap()))?.into_dyn(),
        "convolve_grayscale_same" => seed.convolve_grayscale_same(d3(img), d2(ker.unwrap()))?.into_dyn(),
        "convolve_grayscale_padding" => seed
            .convolve_grayscale_padding(d3(img), d2(ker.unwrap()), pair(&p["padding"]))?
            .into_dyn(),
        "convolve_grayscale" => seed
            .convolve_grayscale(
                d3(img),
                d2(ker.unwrap()),
                seed_padding(&p["padding"]),
                pair(&p["stride"]),
            )?
            .into_dyn(),
        "convolve_channels" => seed
            .convolve_channels(
                d4(img),
                d3(ker.unwrap()),
                seed_padding(&p["padding"]),
                pair(&p["stride"]),
            )?
            .into_dyn(),
        "convolve" => seed
            .convolve(
                d4(img),
                d4(ker.unwrap()),
                seed_padding(&p["padding"]),
                pair(&p["stride"]),
            )?
            .into_dyn(),
        "pool" => {
            let mode: PoolMode = p["mode"].as_str().unwrap().parse().unwrap();
            seed.pool(d4(img), pair(&p["kernel_shape"]), pair(&p["stride"]), mode)?
                .into_dyn()
        }
        "conv2d" => {
            let spec = conv_spec(p);
            let k = ker.unwrap();
            let (x, k4) = (to4(img, images_nhwc(img.shape())?), to4(k, kernels_hwio(k.shape())?));
            let out = match &case.bias {
                Some(b) => engine.conv2d_bias(&x, &k4, b, &spec)?,
                None => engine.conv2d(&x, &k4, &spec)?,
            };
            if k.ndim() < 4 {
                out.index_axis_move(Axis(3), 0).into_dyn()
            } else {
                out.into_dyn()
            }
        }
        other => panic!("unknown op {other}"),
    })
}

/// Checks `out` against the case's float64 expectation with SPEC.md's rule.
pub fn check_case(case: &Case, out: &ArrayD<f32>) -> Result<(), String> {
    if out.shape() != case.expected.shape() {
        return Err(format!("shape {:?}, expected {:?}", out.shape(), case.expected.shape()));
    }
    let max_ref = case
        .expected
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(v.abs()));
    let transcendental = case.params["activation"]
        .as_str()
        .is_some_and(|a| a.starts_with("sigmoid") || a.starts_with("tanh"));
    let tol = 1e-4 * max_ref.max(1.0) + if transcendental { 1e-6 } else { 0.0 };
    for ((idx, &got), &want) in out.indexed_iter().zip(case.expected.iter()) {
        let ok = if want.is_nan() {
            got.is_nan()
        } else if want.is_infinite() || case.exact {
            got as f64 == want
        } else {
            got.is_finite() && (got as f64 - want).abs() <= tol
        };
        if !ok {
            return Err(format!(
                "at {:?}: got {got}, expected {want} (tolerance {tol:e})",
                idx.slice()
            ));
        }
    }
    Ok(())
}

/// Checks argmax indices bit for bit against the case's.
pub fn check_indices(case: &Case, got: Option<&ArrayD<i64>>) -> Result<(), String> {
    match (&case.expected_indices, got) {
        (None, None) => Ok(()),
        (Some(want), Some(got)) if want.shape() != got.shape() => Err(format!(
            "indices of shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        )),
        (Some(want), Some(got)) => match got.indexed_iter().zip(want.iter()).find(|((_, a), b)| a != b) {
            None => Ok(()),
            Some(((idx, a), b)) => Err(format!("index at {:?}: got {a}, expected {b}", idx.slice())),
        },
        (Some(_), None) => Err("no indices returned".into()),
        (None, Some(_)) => Err("indices returned where none were asked for".into()),
    }
}

/// Deterministic values in [-1, 1): shrinking then acts on shapes only.
pub fn array(shape: [usize; 4], seed: u64) -> Array4<f32> {
    let mut s = seed | 1;
    Array4::from_shape_fn(shape, |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

/// Every padding mode, with small explicit pads.
pub fn padding_strategy() -> impl proptest::strategy::Strategy<Value = Padding> {
    use proptest::prelude::*;
    prop_oneof![
        Just(Padding::Valid),
        Just(Padding::Same),
        Just(Padding::SameLower),
        Just(Padding::SeedSame),
        (0usize..3, 0usize..3).prop_map(|(a, b)| Padding::Symmetric(a, b)),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3).prop_map(|(top, bottom, left, right)| Padding::Explicit {
            top,
            bottom,
            left,
            right
        }),
    ]
}

/// A hostile problem: tiny images and kernels with strides, dilations and
/// pads from 1 to 1e9 (on a log scale).
#[derive(Debug, Clone)]
pub struct Hostile {
    pub images: [usize; 4],
    pub kernels: [usize; 4],
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    /// `[top, bottom, left, right]`.
    pub pads: [usize; 4],
    pub seed: u64,
}

#[allow(dead_code)]
pub fn hostile() -> impl proptest::strategy::Strategy<Value = Hostile> {
    use proptest::prelude::*;
    let huge = || (0u32..=9, 1usize..10).prop_map(|(e, d)| (d * 10usize.pow(e)).min(1_000_000_000));
    (
        (1usize..3, 1usize..6, 1usize..6, 1usize..12),
        (1usize..4, 1usize..4, 1usize..12),
        (huge(), huge(), huge(), huge()),
        (huge(), huge(), huge(), huge()),
        any::<u64>(),
    )
        .prop_map(
            |((m, h, w, c), (kh, kw, nc), (sh, sw, dh, dw), (top, bottom, left, right), seed)| Hostile {
                images: [m, h, w, c],
                kernels: [kh, kw, c, nc],
                stride: (sh, sw),
                dilation: (dh, dw),
                pads: [top, bottom, left, right],
                seed,
            },
        )
}

/// Outputs a hostile case may have: the reference must compute them.
const HOSTILE_MAX_OUTPUTS: usize = 20_000;

#[allow(dead_code)]
impl Hostile {
    /// The convolution, where it resolves to a result small enough to check.
    pub fn conv(&self) -> Option<Conv2dSpec> {
        let [top, bottom, left, right] = self.pads;
        let spec = Conv2dSpec::new(Padding::Explicit {
            top,
            bottom,
            left,
            right,
        })
        .with_stride(self.stride.0, self.stride.1)
        .with_dilation(self.dilation.0, self.dilation.1);
        let g = spec.resolve(self.images, self.kernels).ok()?;
        (g.output_shape().iter().product::<usize>() <= HOSTILE_MAX_OUTPUTS).then_some(spec)
    }

    /// A pooling with the same window, strides and dilations (pads capped at
    /// half the dilated window, as pooling requires), where it resolves to a
    /// result small enough to check.
    pub fn pool(&self, mode: PoolMode) -> Option<Pool2dSpec> {
        let ([top, _, left, _], [kh, kw, _, _]) = (self.pads, self.kernels);
        let (dh, dw) = self.dilation;
        let spec = Pool2dSpec::new(mode, kh, kw)
            .with_stride(self.stride.0, self.stride.1)
            .with_dilation(dh, dw)
            .with_padding(Padding::Symmetric(
                top.min(dh * (kh - 1) / 2),
                left.min(dw * (kw - 1) / 2),
            ));
        let g = spec.resolve(self.images).ok()?;
        (g.output_shape().iter().product::<usize>() <= HOSTILE_MAX_OUTPUTS).then_some(spec)
    }
}
