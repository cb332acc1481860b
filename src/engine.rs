//! Device choice, fallback and the public entry points.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use ndarray::{Array4, ArrayView1, ArrayView4, AsArray, Ix1, Ix4};

use crate::check;
use crate::cpu::{fast, reference, Isa};
use crate::epilogue::Activation;
use crate::error::{Error, Result, Shape};
use crate::gpu::pixels::widened;
use crate::gpu::{GpuArray, GpuContext, GpuOptions, Pixel, PixelKind};
use crate::shape::{Conv2dSpec, Pool2dSpec, PoolMode};

/// Which hardware an [`Engine`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// A hardware GPU when one works, otherwise the CPU.
    #[default]
    Auto,
    /// A GPU adapter (software adapters included); an error if none exists.
    Gpu,
    /// The CPU.
    Cpu,
}

impl FromStr for Device {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "gpu" => Ok(Device::Gpu),
            "cpu" => Ok(Device::Cpu),
            _ => Err(Error::invalid(
                "device",
                format!("expected auto, cpu or gpu, got {text:?}"),
            )),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Auto => "auto",
            Device::Gpu => "gpu",
            Device::Cpu => "cpu",
        })
    }
}

/// How to build an [`Engine`].
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Which device.
    pub device: Device,
    /// Run the CPU reference after every GPU call and fail on a difference
    /// beyond SPEC.md's tolerance.
    pub verify: bool,
    /// Knobs of the GPU path (forced limits, adapter choice).
    pub gpu: GpuOptions,
    /// On the CPU, run the plain f64 reference instead of the fast path
    /// (slow; for checking other paths).
    pub reference: bool,
    /// The instruction set of the fast CPU path (also what `Auto` falls
    /// back to): `None` takes `CONVPOOL_CPU_ISA` if set, else the widest
    /// this CPU has. One the CPU lacks is an error.
    pub cpu_isa: Option<Isa>,
}

#[derive(Debug, Clone)]
enum Backend {
    Reference,
    Cpu(Isa),
    Gpu(Arc<GpuContext>),
}

/// Runs convolutions and poolings on the device it was built for.
///
/// An engine is `Send + Sync`: share one between threads rather than
/// building one per call (building one opens a GPU device).
#[derive(Debug, Clone)]
pub struct Engine {
    backend: Backend,
    reason: String,
    verify: bool,
    /// Where a GPU call fails, run it on the fast CPU path with this
    /// instruction set instead (and say so on stderr): what `Auto` asks for.
    fallback: Option<Isa>,
}

impl Engine {
    /// An engine on the requested device.
    ///
    /// `Auto` takes a hardware GPU when one works and otherwise the CPU; a
    /// software adapter (lavapipe, llvmpipe: wgpu's `DeviceType::Cpu`) is
    /// hundreds of times slower than the CPU path, so `Auto` never takes it,
    /// while `Gpu` does.
    pub fn new(device: Device) -> Result<Self> {
        Engine::with_options(EngineOptions {
            device,
            ..Default::default()
        })
    }

    /// An engine with every option spelled out.
    pub fn with_options(options: EngineOptions) -> Result<Self> {
        // Checked first, whatever the device: a bad value is an error even
        // where a GPU is found.
        let isa = match options.cpu_isa {
            Some(isa) => isa.checked("cpu_isa")?,
            None => Isa::default_for_engine()?,
        };
        let (backend, reason) = match options.device {
            Device::Cpu if options.reference => (Backend::Reference, "CPU reference (asked for)".to_string()),
            Device::Cpu => (Backend::Cpu(isa), format!("CPU, {isa} (asked for)")),
            Device::Gpu => {
                let ctx = GpuContext::new(&options.gpu)?;
                let reason = format!("GPU {} (asked for)", describe_adapter(&ctx));
                (Backend::Gpu(ctx), reason)
            }
            Device::Auto => match GpuContext::new(&options.gpu) {
                Ok(ctx) if !ctx.adapter().software => {
                    let reason = format!("GPU {} (hardware adapter found)", describe_adapter(&ctx));
                    (Backend::Gpu(ctx), reason)
                }
                Ok(ctx) => (
                    Backend::Cpu(isa),
                    format!(
                        "CPU, {isa} (the only adapter, {}, is a software renderer, slower than the CPU path; \
                         ask for the GPU to use it anyway)",
                        describe_adapter(&ctx)
                    ),
                ),
                // A bad option is the caller's mistake, not a missing GPU: it
                // is reported, not papered over by the CPU fallback.
                Err(e @ Error::InvalidArgument { .. }) => return Err(e),
                Err(e) => (Backend::Cpu(isa), format!("CPU, {isa} ({e})")),
            },
        };
        let fallback = (options.device == Device::Auto && matches!(backend, Backend::Gpu(_))).then_some(isa);
        Ok(Engine {
            backend,
            reason,
            verify: options.verify,
            fallback,
        })
    }

    /// An engine on the CPU, with the instruction set `CONVPOOL_CPU_ISA`
    /// forces where it names one this CPU has, else the widest it has (use
    /// [`Engine::with_options`] to have a bad value reported as an error).
    pub fn cpu() -> Self {
        let isa = Isa::default_for_engine().unwrap_or_else(|_| Isa::detected());
        Engine::cpu_isa_unchecked(isa)
    }

    /// An engine on the CPU with the kernels of `isa`; an error if this CPU
    /// cannot run them.
    pub fn cpu_with_isa(isa: Isa) -> Result<Self> {
        Ok(Engine::cpu_isa_unchecked(isa.checked("isa")?))
    }

    fn cpu_isa_unchecked(isa: Isa) -> Self {
        Engine {
            backend: Backend::Cpu(isa),
            reason: format!("CPU, {isa} (asked for)"),
            verify: false,
            fallback: None,
        }
    }

    /// The instruction set of the fast CPU path, when this engine runs it.
    pub fn cpu_isa(&self) -> Option<Isa> {
        match self.backend {
            Backend::Cpu(isa) => Some(isa),
            Backend::Reference | Backend::Gpu(_) => None,
        }
    }

    /// An engine on the CPU reference: plain loops accumulating in f64, the
    /// yardstick of every other path.
    pub fn cpu_reference() -> Self {
        Engine {
            backend: Backend::Reference,
            reason: "CPU reference (asked for)".into(),
            verify: false,
            fallback: None,
        }
    }

    /// The same engine with the CPU fallback switched on or off: where a
    /// GPU call fails (a lost device, a timeout, memory), the call runs on
    /// the fast CPU path instead and a line on stderr says so. On by
    /// default for `Device::Auto` (which chose the GPU), off for
    /// `Device::Gpu`, where a failure is returned. Validation errors are
    /// returned either way.
    pub fn with_cpu_fallback(mut self, on: bool) -> Self {
        self.fallback = match (on, self.fallback) {
            (false, _) => None,
            (true, Some(isa)) => Some(isa),
            (true, None) => Some(Isa::default_for_engine().unwrap_or_else(|_| Isa::detected())),
        };
        self
    }

    /// Runs `gpu`, or on a GPU failure with the fallback on, `cpu`.
    fn on_gpu<T>(&self, op: &str, gpu: impl FnOnce() -> Result<T>, cpu: impl FnOnce(Isa) -> T) -> Result<T> {
        match (gpu(), self.fallback) {
            (Err(Error::Gpu(message)), Some(isa)) => {
                eprintln!("convpool: the GPU failed ({message}); this {op} ran on the CPU ({isa})");
                Ok(cpu(isa))
            }
            (result, _) => result,
        }
    }

    /// The same engine with verify mode switched on or off.
    pub fn with_verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// The process-wide engine of `Device::Auto`, built on first use; the
    /// seed functions run on it. An error (an invalid `CONVPOOL_*` setting)
    /// is returned to every caller, not replaced by another engine.
    pub fn shared() -> Result<&'static Engine> {
        static SHARED: OnceLock<std::result::Result<Engine, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Engine::new(Device::Auto).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|message| Error::invalid("engine", format!("the shared engine could not be built: {message}")))
    }

    /// Which device this engine took and why.
    pub fn describe(&self) -> &str {
        &self.reason
    }

    /// Whether this engine runs on a GPU.
    pub fn is_gpu(&self) -> bool {
        matches!(self.backend, Backend::Gpu(_))
    }

    /// The instruction set the fast CPU path runs a convolution of these
    /// shapes with (`None` off the fast CPU path). The GEMM paths (1x1
    /// layers, im2col) run what the `gemm` crate picks from the CPU, whatever
    /// the engine's own instruction set.
    pub fn conv2d_isa(&self, images: [usize; 4], kernels: [usize; 4], spec: &Conv2dSpec) -> Result<Option<Isa>> {
        let g = spec.resolve(images, kernels)?;
        Ok(self.cpu_isa().map(|isa| fast::conv2d_isa(isa, &g)))
    }

    /// The instruction set the fast CPU path runs a pooling of this shape
    /// with (`None` off the fast CPU path).
    pub fn pool2d_isa(&self, images: [usize; 4], spec: &Pool2dSpec) -> Result<Option<Isa>> {
        let g = spec.resolve(images)?;
        Ok(self.cpu_isa().map(|isa| fast::pool2d_isa(isa, &g)))
    }

    /// The GPU context, when this engine runs on a GPU.
    pub fn gpu(&self) -> Option<&GpuContext> {
        match &self.backend {
            Backend::Gpu(ctx) => Some(ctx),
            Backend::Cpu(_) | Backend::Reference => None,
        }
    }

    /// 2-D cross-correlation of NHWC `images` with HWIO `kernels`; returns
    /// `(m, oh, ow, nc)`.
    pub fn conv2d<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix4>,
        kernels: impl AsArray<'a, f32, Ix4>,
        spec: &Conv2dSpec,
    ) -> Result<Array4<f32>> {
        self.conv2d_any(images.into(), kernels.into(), None, spec, false)
            .map(|(out, _)| out)
    }

    /// [`Engine::conv2d`], also returning the GPU kernel time in seconds
    /// (timestamp queries; `None` on the CPU or without timestamp support).
    pub fn conv2d_timed<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix4>,
        kernels: impl AsArray<'a, f32, Ix4>,
        spec: &Conv2dSpec,
    ) -> Result<(Array4<f32>, Option<f64>)> {
        self.conv2d_any(images.into(), kernels.into(), None, spec, true)
    }

    /// [`Engine::conv2d`] followed by the epilogue `act(out + bias[k])`:
    /// `bias` has shape `(nc,)`, the activation is the spec's
    /// ([`Conv2dSpec::with_activation`]). Fused into the kernels' stores.
    ///
    /// ```
    /// use convpool::{Activation, Conv2dSpec, Engine, Padding};
    /// use ndarray::{arr1, Array4};
    ///
    /// let images = Array4::<f32>::ones((1, 4, 4, 2));
    /// let kernels = Array4::<f32>::ones((3, 3, 2, 2));
    /// let spec = Conv2dSpec::new(Padding::Same).with_activation(Some(Activation::Relu));
    /// let out = Engine::cpu().conv2d_bias(&images, &kernels, &arr1(&[1.0, -100.0]), &spec).unwrap();
    /// assert_eq!(out[[0, 1, 1, 0]], 19.0); // 3 * 3 * 2 ones, plus 1
    /// assert_eq!(out[[0, 1, 1, 1]], 0.0); // relu(18 - 100)
    /// ```
    pub fn conv2d_bias<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix4>,
        kernels: impl AsArray<'a, f32, Ix4>,
        bias: impl AsArray<'a, f32, Ix1>,
        spec: &Conv2dSpec,
    ) -> Result<Array4<f32>> {
        let bias: ArrayView1<f32> = bias.into();
        self.conv2d_any(images.into(), kernels.into(), Some(bias), spec, false)
            .map(|(out, _)| out)
    }

    /// [`Engine::conv2d_bias`], also returning the GPU kernel time.
    pub fn conv2d_bias_timed<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix4>,
        kernels: impl AsArray<'a, f32, Ix4>,
        bias: impl AsArray<'a, f32, Ix1>,
        spec: &Conv2dSpec,
    ) -> Result<(Array4<f32>, Option<f64>)> {
        let bias: ArrayView1<f32> = bias.into();
        self.conv2d_any(images.into(), kernels.into(), Some(bias), spec, true)
    }

    /// The one conv entry point; `timed` asks the GPU for timestamps
    /// (queries resolved into each chunk's readback), which only the
    /// `_timed` calls pay for.
    fn conv2d_any<T: Pixel>(
        &self,
        images: ArrayView4<T>,
        kernels: ArrayView4<f32>,
        bias: Option<ArrayView1<f32>>,
        spec: &Conv2dSpec,
        timed: bool,
    ) -> Result<(Array4<f32>, Option<f64>)> {
        let g = spec.resolve(dims(&images), dims(&kernels))?;
        // A contiguous bias is read in place; a strided view is copied.
        let bias = bias.as_ref().map(|b| b.as_standard_layout());
        check_bias(bias.as_ref().map(|b| b.len()), &g)?;
        let bias = bias.as_ref().map(|b| b.as_slice().expect("standard layout"));
        crate::cpu::check_output_fits(g.output_shape())?;
        if g.m == 0 {
            return Ok((Array4::zeros(g.output_shape()), None));
        }
        let (out, kernel_seconds) = match &self.backend {
            Backend::Reference => return Ok((reference::conv2d_bias(widened(images).view(), kernels, bias, &g), None)),
            Backend::Cpu(isa) => (fast::conv2d_bias(*isa, widened(images).view(), kernels, bias, &g), None),
            Backend::Gpu(ctx) => self.on_gpu(
                "conv2d",
                || match host_widening::<T>(ctx) {
                    true => ctx.conv2d(widened(images).view(), kernels, bias, &g, timed),
                    false => ctx.conv2d(images, kernels, bias, &g, timed),
                },
                |isa| (fast::conv2d_bias(isa, widened(images).view(), kernels, bias, &g), None),
            )?,
        };
        if self.verify {
            let want = reference::conv2d_bias(widened(images).view(), kernels, bias, &g);
            self.check("conv2d", &out, &want, conv_tolerance(&g, &want), false)?;
        }
        Ok((out, kernel_seconds))
    }

    /// Max pooling that also returns, per output cell, the position of the
    /// winning input cell as `y * w + x` within its image and channel
    /// (PyTorch's `return_indices`; -1 for a window with no real cell).
    /// `spec.mode` must be max.
    ///
    /// ```
    /// use convpool::{Engine, Pool2dSpec, PoolMode};
    /// use ndarray::Array4;
    ///
    /// let images = Array4::from_shape_vec((1, 2, 2, 1), vec![1.0, 5.0, 3.0, 2.0]).unwrap();
    /// let (max, idx) = Engine::cpu()
    ///     .max_pool2d_with_indices(&images, &Pool2dSpec::new(PoolMode::Max, 2, 2))
    ///     .unwrap();
    /// assert_eq!((max[[0, 0, 0, 0]], idx[[0, 0, 0, 0]]), (5.0, 1));
    /// ```
    pub fn max_pool2d_with_indices<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix4>,
        spec: &Pool2dSpec,
    ) -> Result<(Array4<f32>, Array4<i64>)> {
        let images: ArrayView4<f32> = images.into();
        if spec.mode != PoolMode::Max {
            return Err(Error::invalid(
                "mode",
                format!(
                    "indices need max pooling, got {} (images {})",
                    spec.mode,
                    Shape::from(dims(&images))
                ),
            ));
        }
        let g = spec.resolve(dims(&images))?;
        crate::cpu::check_output_fits(g.output_shape())?;
        crate::cpu::check_output_fits([2, g.m, g.oh * g.ow, g.c])?;
        if g.m == 0 {
            return Ok((Array4::zeros(g.output_shape()), Array4::zeros(g.output_shape())));
        }
        let values = self.pool2d(images, spec)?;
        let indices = match &self.backend {
            Backend::Reference => return Ok((values, reference::max_pool2d_indices(images, &g))),
            Backend::Cpu(_) => fast::max_pool2d_indices(images, &g),
            Backend::Gpu(ctx) => self.on_gpu(
                "max_pool2d_with_indices",
                || ctx.max_pool2d_indices(images, &g),
                |_| fast::max_pool2d_indices(images, &g),
            )?,
        };
        if self.verify {
            let want = reference::max_pool2d_indices(images, &g);
            if let Some((index, (&got, &reference))) = indices
                .indexed_iter()
                .zip(want.iter())
                .find(|((_, a), b)| a != b)
                .map(|((i, a), b)| (i, (a, b)))
            {
                return Err(Error::VerifyMismatch {
                    op: "max_pool2d indices",
                    path: if self.is_gpu() { "GPU" } else { "fast CPU path" },
                    max_abs_diff: (got - reference).unsigned_abs() as f64,
                    index: [index.0, index.1, index.2, index.3],
                    got: got as f32,
                    reference: reference as f32,
                    tolerance: 0.0,
                });
            }
        }
        Ok((values, indices))
    }

    /// Max or average pooling of NHWC `images`; returns `(m, oh, ow, c)`.
    pub fn pool2d<'a>(&self, images: impl AsArray<'a, f32, Ix4>, spec: &Pool2dSpec) -> Result<Array4<f32>> {
        self.pool2d_any(images.into(), spec, false).map(|(out, _)| out)
    }

    /// [`Engine::pool2d`], also returning the GPU kernel time in seconds.
    pub fn pool2d_timed<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix4>,
        spec: &Pool2dSpec,
    ) -> Result<(Array4<f32>, Option<f64>)> {
        self.pool2d_any(images.into(), spec, true)
    }

    /// The one pooling entry point; `timed` as for `conv2d_any`.
    fn pool2d_any<T: Pixel>(
        &self,
        images: ArrayView4<T>,
        spec: &Pool2dSpec,
        timed: bool,
    ) -> Result<(Array4<f32>, Option<f64>)> {
        let g = spec.resolve(dims(&images))?;
        crate::cpu::check_output_fits(g.output_shape())?;
        if g.m == 0 {
            return Ok((Array4::zeros(g.output_shape()), None));
        }
        let (out, kernel_seconds) = match &self.backend {
            Backend::Reference => return Ok((reference::pool2d(widened(images).view(), &g), None)),
            Backend::Cpu(isa) => (fast::pool2d(*isa, widened(images).view(), &g), None),
            Backend::Gpu(ctx) => self.on_gpu(
                "pool2d",
                || match host_widening::<T>(ctx) {
                    true => ctx.pool2d(widened(images).view(), &g, timed),
                    false => ctx.pool2d(images, &g, timed),
                },
                |isa| (fast::pool2d(isa, widened(images).view(), &g), None),
            )?,
        };
        if self.verify {
            let want = reference::pool2d(widened(images).view(), &g);
            let (tol, exact) = pool_tolerance(&g, &want);
            self.check("pool2d", &out, &want, tol, exact)?;
        }
        Ok((out, kernel_seconds))
    }

    /// The GPU context of a device-resident operation, or an error naming
    /// this engine's device.
    fn resident_context(&self, op: &str) -> Result<&Arc<GpuContext>> {
        match &self.backend {
            Backend::Gpu(ctx) => Ok(ctx),
            Backend::Cpu(_) | Backend::Reference => Err(Error::invalid(
                "device",
                format!("{op} keeps data on a GPU; this engine runs on {}", self.describe()),
            )),
        }
    }

    /// Copies NHWC images to this engine's GPU, where
    /// [`Engine::conv2d_resident`] and [`Engine::pool2d_resident`] chain
    /// without a round trip through the host; [`GpuArray::download`] reads
    /// the result. An engine without a GPU returns an error.
    ///
    /// ```no_run
    /// use convpool::{Conv2dSpec, Device, Engine, Padding, Pool2dSpec, PoolMode};
    /// use ndarray::Array4;
    ///
    /// let engine = Engine::new(Device::Gpu).unwrap();
    /// let images = Array4::<f32>::ones((8, 64, 64, 3));
    /// let kernels = Array4::<f32>::ones((3, 3, 3, 16));
    /// let x = engine.upload(&images).unwrap();
    /// let x = engine.conv2d_resident(&x, &kernels, &Conv2dSpec::new(Padding::Same)).unwrap();
    /// let x = engine.pool2d_resident(&x, &Pool2dSpec::new(PoolMode::Max, 2, 2)).unwrap();
    /// assert_eq!(x.download().unwrap().dim(), (8, 32, 32, 16));
    /// ```
    pub fn upload<'a>(&self, images: impl AsArray<'a, f32, Ix4>) -> Result<GpuArray> {
        let images: ArrayView4<f32> = images.into();
        self.resident_context("upload")?.upload(images)
    }

    /// [`Engine::conv2d`] of `f32`, `u8` or `u16` images. On a GPU with its
    /// own memory, 8- and 16-bit images cross the bus as their own bytes
    /// (a quarter or half of the f32 bytes) and are widened to f32 on the
    /// device, chunk by chunk, so a batch of any size goes. On a GPU that
    /// shares the host's memory ([`GpuContext::mapped_buffers`]) and on the
    /// CPU they are widened on the host ([`GpuOptions::device_widening`]
    /// chooses on a GPU). The result is that of
    /// `conv2d(images.mapv(f32::from), ..)`, bit for bit.
    ///
    /// ```
    /// use convpool::{Conv2dSpec, Engine, Padding};
    /// use ndarray::Array4;
    ///
    /// let pixels = Array4::<u8>::from_elem((1, 4, 4, 1), 255);
    /// let kernels = Array4::<f32>::from_elem((3, 3, 1, 1), 1.0);
    /// let out = Engine::cpu().conv2d_pixels(&pixels, &kernels, &Conv2dSpec::new(Padding::Valid)).unwrap();
    /// assert_eq!(out[[0, 0, 0, 0]], 9.0 * 255.0);
    /// ```
    pub fn conv2d_pixels<'a, T: Pixel>(
        &self,
        images: impl AsArray<'a, T, Ix4>,
        kernels: impl AsArray<'a, f32, Ix4>,
        spec: &Conv2dSpec,
    ) -> Result<Array4<f32>> {
        self.conv2d_any(images.into(), kernels.into(), None, spec, false)
            .map(|(out, _)| out)
    }

    /// [`Engine::conv2d_bias`] of `f32`, `u8` or `u16` images, as
    /// [`Engine::conv2d_pixels`].
    pub fn conv2d_bias_pixels<'a, T: Pixel>(
        &self,
        images: impl AsArray<'a, T, Ix4>,
        kernels: impl AsArray<'a, f32, Ix4>,
        bias: impl AsArray<'a, f32, Ix1>,
        spec: &Conv2dSpec,
    ) -> Result<Array4<f32>> {
        self.conv2d_any(images.into(), kernels.into(), Some(bias.into()), spec, false)
            .map(|(out, _)| out)
    }

    /// [`Engine::pool2d`] of `f32`, `u8` or `u16` images, as
    /// [`Engine::conv2d_pixels`].
    pub fn pool2d_pixels<'a, T: Pixel>(
        &self,
        images: impl AsArray<'a, T, Ix4>,
        spec: &Pool2dSpec,
    ) -> Result<Array4<f32>> {
        self.pool2d_any(images.into(), spec, false).map(|(out, _)| out)
    }

    /// [`Engine::upload`] of `f32`, `u8` or `u16` images. 8- and 16-bit
    /// pixels cross to the device as their own bytes (a quarter or half of
    /// the f32 bytes) and are widened to f32 there; every such value is an
    /// f32 exactly, so the array holds what `images.mapv(f32::from)` would.
    ///
    /// ```no_run
    /// use convpool::{Conv2dSpec, Device, Engine, Padding};
    /// use ndarray::Array4;
    ///
    /// let engine = Engine::new(Device::Gpu).unwrap();
    /// let pixels = Array4::<u8>::from_elem((4, 32, 32, 3), 200);
    /// let x = engine.upload_pixels(&pixels).unwrap();
    /// let kernels = Array4::<f32>::from_elem((3, 3, 3, 8), 1.0 / 27.0);
    /// let y = engine.conv2d_resident(&x, &kernels, &Conv2dSpec::new(Padding::Valid)).unwrap();
    /// assert_eq!(y.download().unwrap().dim(), (4, 30, 30, 8));
    /// ```
    pub fn upload_pixels<'a, T: Pixel>(&self, images: impl AsArray<'a, T, Ix4>) -> Result<GpuArray> {
        let images: ArrayView4<T> = images.into();
        self.resident_context("upload")?.upload_pixels(images)
    }

    /// [`Engine::conv2d`] of a device-resident batch, leaving the output on
    /// the device. The values are the host path's, bit for bit.
    pub fn conv2d_resident<'a>(
        &self,
        images: &GpuArray,
        kernels: impl AsArray<'a, f32, Ix4>,
        spec: &Conv2dSpec,
    ) -> Result<GpuArray> {
        self.conv2d_resident_any(images, kernels.into(), None, spec)
    }

    /// [`Engine::conv2d_bias`] of a device-resident batch, leaving the
    /// output on the device.
    pub fn conv2d_bias_resident<'a>(
        &self,
        images: &GpuArray,
        kernels: impl AsArray<'a, f32, Ix4>,
        bias: impl AsArray<'a, f32, Ix1>,
        spec: &Conv2dSpec,
    ) -> Result<GpuArray> {
        self.conv2d_resident_any(images, kernels.into(), Some(bias.into()), spec)
    }

    fn conv2d_resident_any(
        &self,
        images: &GpuArray,
        kernels: ArrayView4<f32>,
        bias: Option<ArrayView1<f32>>,
        spec: &Conv2dSpec,
    ) -> Result<GpuArray> {
        let ctx = self.resident_context("conv2d_resident")?;
        let g = spec.resolve(images.shape(), dims(&kernels))?;
        let bias = bias.as_ref().map(|b| b.as_standard_layout());
        check_bias(bias.as_ref().map(|b| b.len()), &g)?;
        let bias = bias.as_ref().map(|b| b.as_slice().expect("standard layout"));
        crate::cpu::check_output_fits(g.output_shape())?;
        let out = ctx.conv2d_resident(images, kernels, bias, &g)?;
        if self.verify {
            let x = images.download()?;
            let want = reference::conv2d_bias(x.view(), kernels, bias, &g);
            self.check("conv2d", &out.download()?, &want, conv_tolerance(&g, &want), false)?;
        }
        Ok(out)
    }

    /// [`Engine::pool2d`] of a device-resident batch, leaving the output on
    /// the device.
    pub fn pool2d_resident(&self, images: &GpuArray, spec: &Pool2dSpec) -> Result<GpuArray> {
        let ctx = self.resident_context("pool2d_resident")?;
        let g = spec.resolve(images.shape())?;
        crate::cpu::check_output_fits(g.output_shape())?;
        let out = ctx.pool2d_resident(images, &g)?;
        if self.verify {
            let want = reference::pool2d(images.download()?.view(), &g);
            let (tol, exact) = pool_tolerance(&g, &want);
            self.check("pool2d", &out.download()?, &want, tol, exact)?;
        }
        Ok(out)
    }

    /// Verify mode: compares a result with the CPU reference.
    fn check(
        &self,
        op: &'static str,
        got: &Array4<f32>,
        want: &Array4<f32>,
        tolerance: f64,
        exact: bool,
    ) -> Result<()> {
        let ok = if exact {
            check::largest_difference(got.view(), want.view(), true).max_abs_diff == 0.0
        } else {
            check::within(got.view(), want.view(), tolerance)
        };
        if ok {
            return Ok(());
        }
        let d = check::largest_difference(got.view(), want.view(), exact);
        Err(Error::VerifyMismatch {
            op,
            path: if self.is_gpu() { "GPU" } else { "fast CPU path" },
            max_abs_diff: d.max_abs_diff,
            index: d.index,
            got: d.got,
            reference: d.reference,
            tolerance,
        })
    }
}

/// Whether 8- and 16-bit host pixels are widened on the host for this GPU
/// ([`GpuOptions::device_widening`]): by default where it maps the host's
/// memory (an integrated GPU, lavapipe), as there is no bus to save and the
/// extra device pass made the calls slower (benches/RESULTS.md).
fn host_widening<T: Pixel>(ctx: &GpuContext) -> bool {
    T::KIND != PixelKind::F32 && !ctx.device_widening()
}

/// Verify mode's tolerance for a convolution (SPEC's, plus the activation's).
fn conv_tolerance(g: &crate::shape::Conv2dGeometry, want: &Array4<f32>) -> f64 {
    check::conv_tolerance(g.reduction_len(), check::max_abs_finite(want.view())) + Activation::tolerance(g.activation)
}

/// Verify mode's tolerance for a pooling: max is exact.
fn pool_tolerance(g: &crate::shape::Pool2dGeometry, want: &Array4<f32>) -> (f64, bool) {
    if g.mode == PoolMode::Max {
        (0.0, true)
    } else {
        (check::avg_tolerance(check::max_abs_finite(want.view())), false)
    }
}

/// A bias must hold one value per output channel.
fn check_bias(len: Option<usize>, g: &crate::shape::Conv2dGeometry) -> Result<()> {
    match len {
        Some(len) if len != g.nc => Err(Error::invalid(
            "bias",
            format!(
                "expected shape ({},), one value per output channel of kernels {}, got ({len},)",
                g.nc,
                Shape::from(g.kernel_shape())
            ),
        )),
        _ => Ok(()),
    }
}

fn describe_adapter(ctx: &GpuContext) -> String {
    let a = ctx.adapter();
    format!("{} ({}, {})", a.name, a.backend, a.device_type)
}

fn dims<T>(a: &ArrayView4<T>) -> [usize; 4] {
    let (m, h, w, c) = a.dim();
    [m, h, w, c]
}

#[cfg(test)]
mod tests {

    /// On the CPU the pixel calls widen on the host: the f32 call's result
    /// on `mapv(f32::from)`, bit for bit, for every engine kind.
    #[test]
    fn pixel_calls_on_the_cpu_equal_f32_calls() {
        use crate::{Conv2dSpec, Padding, Pool2dSpec, PoolMode};
        let px = Array4::from_shape_fn((2, 9, 7, 3), |(n, y, x, c)| {
            ((n * 71 + y * 13 + x * 5 + c * 3) % 256) as u8
        });
        let f = px.mapv(f32::from);
        let k = Array4::from_shape_fn((3, 3, 3, 5), |(i, j, c, o)| {
            (i + 2 * j + 3 * c + 5 * o) as f32 * 0.01 - 0.2
        });
        let b = ndarray::Array1::from_iter((0..5).map(|i| i as f32));
        let conv = Conv2dSpec::new(Padding::Same);
        let pool = Pool2dSpec::new(PoolMode::Max, 2, 2);
        for e in [Engine::cpu(), Engine::cpu_reference()] {
            assert_eq!(
                e.conv2d_pixels(&px, &k, &conv).unwrap(),
                e.conv2d(&f, &k, &conv).unwrap()
            );
            assert_eq!(
                e.conv2d_bias_pixels(&px.mapv(u16::from), &k, &b, &conv).unwrap(),
                e.conv2d_bias(&f, &k, &b, &conv).unwrap()
            );
            assert_eq!(e.pool2d_pixels(&px, &pool).unwrap(), e.pool2d(&f, &pool).unwrap());
            assert_eq!(e.pool2d_pixels(&f, &pool).unwrap(), e.pool2d(&f, &pool).unwrap());
            let err = e
                .conv2d_pixels(&px, k.slice(ndarray::s![.., .., ..2, ..]), &conv)
                .unwrap_err();
            assert!(matches!(err, Error::ChannelMismatch { .. }), "{err}");
        }
    }

    use super::*;

    #[test]
    fn engine_is_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Engine>();
    }

    /// An invalid GPU option is an error with `Auto` too, not a silent CPU
    /// fallback; a missing GPU still falls back.
    #[test]
    fn auto_with_an_invalid_gpu_option_is_an_error() {
        let options = EngineOptions {
            gpu: GpuOptions {
                conv_register_block: Some(5),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = Engine::with_options(options).unwrap_err().to_string();
        assert!(err.starts_with("conv_register_block"), "{err}");
        assert!(Engine::shared().is_ok());
    }

    #[test]
    fn device_names_parse() {
        assert_eq!("GPU".parse::<Device>().unwrap(), Device::Gpu);
        assert!("tpu".parse::<Device>().unwrap_err().to_string().starts_with("device"));
    }
}
