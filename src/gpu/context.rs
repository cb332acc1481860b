//! Instance, adapter choice and device: the part of the GPU path that talks
//! to the driver once, when an engine is built.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};

use super::buffers::Buffers;
use super::kernels::conv_tiled::{ConvDevice, Staging};
use super::pipelines::Pipelines;

/// Knobs of the GPU path.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Use at most this many bytes per buffer binding (below the device's
    /// own limit), so tests can exercise chunking on small data.
    pub max_binding_bytes: Option<u64>,
    /// Use at most this many bytes per buffer (below the device's own
    /// limit, and never below the binding limit), so tests can exercise
    /// what happens to an array larger than one device buffer: a
    /// [`super::GpuArray`] refuses it, host calls chunk it.
    pub max_buffer_bytes: Option<u64>,
    /// Use at most this many workgroups per dispatch dimension.
    pub max_workgroups_per_dim: Option<u32>,
    /// Only adapters whose name contains this text (case-insensitive); the
    /// environment variable `CONVPOOL_ADAPTER` sets it too.
    pub adapter: Option<String>,
    /// Pool overlapping windows with the tiled kernel, which stages each
    /// tile's input in workgroup memory and so reads every input cell once
    /// per tile, instead of the direct kernel (one invocation per output,
    /// overlapping windows served by the GPU's caches). Off by default: on
    /// lavapipe the tiled kernel measured 1.75x slower on cnn_maxpool, and it
    /// has not been timed on a hardware GPU yet. `None` reads the
    /// environment variable `CONVPOOL_POOL_KERNEL` (`tiled` or `direct`).
    pub tiled_pooling: Option<bool>,
    /// Outputs per side of one invocation's register block in the tiled
    /// conv kernel, 4 or 8, for every convolution instead of the choice by
    /// output-channel count and size (8 from 64 channels where the 128 x 64
    /// tiles still make 256+ workgroups: 64 multiply-adds per four vec4
    /// reads of workgroup memory; 4 otherwise). For comparing the two on a
    /// device. `None` reads the environment variable `CONVPOOL_CONV_BLOCK`.
    pub conv_register_block: Option<u32>,
    /// The tiled conv kernel's staging as `(stages, kt)`: 1 or 2 workgroup
    /// buffers per tile (2: double-buffered, one barrier per slice) and 8,
    /// 16 or 32 reduction steps per slice, tried first on every tiling; one
    /// that does not fit a tiling (the device's workgroup memory, the
    /// shader's staging registers) takes the next less pipelined. `None`
    /// reads `CONVPOOL_CONV_STAGING` (`1x8`, `2x8`, `2x16`, `1x32`,
    /// `2x32`), else the most pipelined of `2x16`, `2x8`, `1x8` that fits on
    /// a hardware GPU and `1x8` on a software one.
    pub conv_staging: Option<(u32, u32)>,
    /// How long a call waits for the GPU to finish a chunk before it gives
    /// up with an error (the device may be hung or lost). `None` reads
    /// `CONVPOOL_GPU_TIMEOUT` (seconds, fractions allowed), else
    /// [`DEFAULT_GPU_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// On a unified-memory or CPU adapter (an integrated GPU, lavapipe),
    /// bind the host-mapped upload and readback buffers themselves, so no
    /// staging copy runs on the device. `None` reads `CONVPOOL_GPU_MAPPED`
    /// (`0` turns it off); on by default where the adapter allows it, never
    /// on a discrete GPU, where mapped memory is slow for the GPU to use.
    pub mapped_buffers: Option<bool>,
    /// Where the 8- and 16-bit images of a host call
    /// ([`crate::Engine::conv2d_pixels`], [`crate::Engine::pool2d_pixels`])
    /// are widened to f32: on the device after an upload of their own bytes
    /// (`true`), or on the host before an f32 upload (`false`). `None`: on
    /// the device, except where the GPU binds mapped host memory
    /// ([`GpuOptions::mapped_buffers`]), since there no bus is saved;
    /// `CONVPOOL_GPU_WIDEN` (`device` or `host`) overrides that default.
    pub device_widening: Option<bool>,
    /// Whether the tiled conv kernel reads RGB images (three channels, no
    /// groups) as four, the fourth zero, so each pixel is one vec4 load
    /// instead of three scalar ones: the padding runs on the device, ahead
    /// of the kernel, and the bus carries the three channels. `None` reads
    /// `CONVPOOL_CONV_RGB` (`pad` or `scalar`), else pads on a hardware
    /// GPU and not on a software adapter (where the fourth channel is a
    /// third more arithmetic and a load costs the same either way).
    pub conv_pad_rgb: Option<bool>,
    /// Run 3x3, stride-1, undilated convolutions without groups, with
    /// channels and kernels in multiples of four, through Winograd F(2x2,
    /// 3x3) (2.25x fewer multiply-adds, results within SPEC.md's tolerance
    /// rather than the implicit GEMM's sums; inputs the transforms cannot
    /// take exactly, infinities, NaN or magnitudes near the top of the f32
    /// range, fall back to direct sums per workgroup, and kernels holding
    /// them to the implicit GEMM). Off by default until a device run shows
    /// it wins. `None` reads `CONVPOOL_CONV_WINOGRAD` (`on` or `off`).
    pub conv_winograd: Option<bool>,
}

/// How long a call waits for one chunk on the GPU by default: far past any
/// chunk's time (a chunk is at most one binding of work), short enough
/// that a hung device is reported rather than waited on forever.
pub const DEFAULT_GPU_TIMEOUT: Duration = Duration::from_secs(120);

/// The timeout asked for in `options` or `CONVPOOL_GPU_TIMEOUT`.
fn timeout(options: &GpuOptions) -> Result<Duration> {
    if let Some(t) = options.timeout {
        if t.is_zero() {
            return Err(Error::invalid("timeout", "must be longer than zero"));
        }
        return Ok(t);
    }
    match std::env::var("CONVPOOL_GPU_TIMEOUT") {
        Ok(text) if !text.trim().is_empty() => match text.trim().parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs.is_finite() && secs < 1e9 => Ok(Duration::from_secs_f64(secs)),
            _ => Err(Error::invalid(
                "CONVPOOL_GPU_TIMEOUT",
                format!("expected seconds above zero, got {text:?}"),
            )),
        },
        _ => Ok(DEFAULT_GPU_TIMEOUT),
    }
}

/// Where host calls widen 8- and 16-bit pixels, from `options` or
/// `CONVPOOL_GPU_WIDEN`; by default on the device unless the GPU binds
/// mapped host memory.
fn device_widening(options: &GpuOptions, unified: bool) -> Result<bool> {
    if let Some(on) = options.device_widening {
        return Ok(on);
    }
    match std::env::var("CONVPOOL_GPU_WIDEN") {
        Ok(text) if !text.trim().is_empty() => match text.trim().to_ascii_lowercase().as_str() {
            "device" => Ok(true),
            "host" => Ok(false),
            _ => Err(Error::invalid(
                "CONVPOOL_GPU_WIDEN",
                format!("expected device or host, got {text:?}"),
            )),
        },
        _ => Ok(!unified),
    }
}

/// The RGB padding asked for in `options` or `CONVPOOL_CONV_RGB`.
fn conv_pad_rgb(options: &GpuOptions) -> Result<Option<bool>> {
    if let Some(on) = options.conv_pad_rgb {
        return Ok(Some(on));
    }
    match std::env::var("CONVPOOL_CONV_RGB") {
        Ok(text) if !text.trim().is_empty() => match text.trim().to_ascii_lowercase().as_str() {
            "pad" => Ok(Some(true)),
            "scalar" => Ok(Some(false)),
            _ => Err(Error::invalid(
                "CONVPOOL_CONV_RGB",
                format!("expected pad or scalar, got {text:?}"),
            )),
        },
        _ => Ok(None),
    }
}

/// Whether Winograd is asked for in `options` or `CONVPOOL_CONV_WINOGRAD`.
fn conv_winograd(options: &GpuOptions) -> Result<bool> {
    if let Some(on) = options.conv_winograd {
        return Ok(on);
    }
    match std::env::var("CONVPOOL_CONV_WINOGRAD") {
        Ok(text) if !text.trim().is_empty() => match text.trim().to_ascii_lowercase().as_str() {
            "on" | "1" => Ok(true),
            "off" | "0" => Ok(false),
            _ => Err(Error::invalid(
                "CONVPOOL_CONV_WINOGRAD",
                format!("expected on or off, got {text:?}"),
            )),
        },
        _ => Ok(false),
    }
}

/// What `convpool devices` prints about an adapter.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    /// Adapter name as the driver reports it.
    pub name: String,
    /// Vulkan, Metal, Dx12, Gl.
    pub backend: String,
    /// Discrete, integrated, virtual, CPU (software) or other.
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Largest storage buffer binding, bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer, bytes.
    pub max_buffer_size: u64,
    /// Largest workgroup count per dispatch dimension.
    pub max_compute_workgroups_per_dimension: u32,
    /// Whether this is a software rasteriser (lavapipe, llvmpipe, WARP).
    pub software: bool,
}

/// The register block asked for in `options` or `CONVPOOL_CONV_BLOCK`.
fn register_block(options: &GpuOptions) -> Result<Option<u32>> {
    let (arg, asked) = match options.conv_register_block {
        Some(b) => ("conv_register_block", Some(b.to_string())),
        None => ("CONVPOOL_CONV_BLOCK", std::env::var("CONVPOOL_CONV_BLOCK").ok()),
    };
    match asked.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some("4") => Ok(Some(4)),
        Some("8") => Ok(Some(8)),
        Some(other) => Err(Error::InvalidArgument {
            arg,
            message: format!("register block {other:?}: the tiled conv kernel takes 4 or 8"),
        }),
    }
}

/// The conv staging asked for in `options` or `CONVPOOL_CONV_STAGING`.
fn conv_staging(options: &GpuOptions) -> Result<Option<Staging>> {
    let (arg, asked) = match options.conv_staging {
        Some((stages, kt)) => ("conv_staging", Some(format!("{stages}x{kt}"))),
        None => ("CONVPOOL_CONV_STAGING", std::env::var("CONVPOOL_CONV_STAGING").ok()),
    };
    match asked.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => Staging::parse(text).map(Some).ok_or_else(|| Error::InvalidArgument {
            arg,
            message: format!(
                "staging {text:?}: the tiled conv kernel takes 1 or 2 stages of 8, 16 or 32 steps (1x8, 2x8, 2x16, 1x32, 2x32)"
            ),
        }),
    }
}

/// Backends to search: `WGPU_BACKEND` when set (for example `gl`), else the
/// primary ones (Vulkan, Metal, DX12), so Mesa's GL adapter is not taken by
/// accident.
fn instance() -> (wgpu::Instance, wgpu::Backends) {
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
    let desc = wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    };
    (wgpu::Instance::new(desc), backends)
}

fn summary(adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let limits = adapter.limits();
    AdapterSummary {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_buffer_size: limits.max_buffer_size,
        max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        software: info.device_type == wgpu::DeviceType::Cpu,
    }
}

/// Every adapter wgpu finds on the searched backends.
pub fn list_adapters() -> Vec<AdapterSummary> {
    let (instance, backends) = instance();
    pollster::block_on(instance.enumerate_adapters(backends))
        .iter()
        .map(summary)
        .collect()
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// A device with its queue, pipelines and reusable buffers.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) summary: AdapterSummary,
    /// Largest binding this context uses, bytes (a multiple of 16: the
    /// conv kernel binds its inputs as arrays of vec4).
    pub(crate) max_binding_bytes: u64,
    /// Largest workgroup count per dispatch dimension this context uses.
    pub(crate) max_groups_per_dim: u32,
    pub(crate) pipelines: Pipelines,
    /// Whether the device records timestamps (kernel time in the benchmark).
    pub(crate) timestamps: bool,
    /// Whether overlapping pooling windows use the tiled kernel.
    pub(crate) tiled_pooling: bool,
    /// Register block forced on the tiled conv kernel, if any.
    /// What the device allows the tiled conv kernel (its workgroup
    /// memory, whether it is a software adapter) and what was forced.
    pub(crate) conv: ConvDevice,
    /// Idle buffer sets; a call takes one (or makes one) and gives it back,
    /// so concurrent calls never share buffers and never wait on each other.
    pub(crate) idle: Mutex<Vec<Buffers>>,
    /// Largest single buffer (a [`super::GpuArray`]'s limit), bytes.
    pub(crate) max_buffer_bytes: u64,
    /// Bytes moved host to device (images, kernels, uploads) so far.
    pub(crate) uploaded: AtomicU64,
    /// Bytes moved device to host (outputs, downloads) so far.
    pub(crate) downloaded: AtomicU64,
    /// How long a call waits for a chunk.
    pub(crate) timeout: Duration,
    /// Set by the driver's device-lost callback: every later call is
    /// refused with an error rather than sent to a dead device.
    pub(crate) lost: Arc<AtomicBool>,
    /// The GPU reads uploads from, and writes outputs into, host-mapped
    /// buffers ([`GpuOptions::mapped_buffers`]).
    pub(crate) unified: bool,
    /// 8- and 16-bit host pixels are widened on the device
    /// ([`GpuOptions::device_widening`]).
    pub(crate) device_widening: bool,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.summary.name)
            .field("backend", &self.summary.backend)
            .field("max_binding_bytes", &self.max_binding_bytes)
            .field("max_groups_per_dim", &self.max_groups_per_dim)
            .finish()
    }
}

impl GpuContext {
    /// Finds the best adapter (hardware before software) and opens a device
    /// with the adapter's own limits.
    pub fn new(options: &GpuOptions) -> Result<Arc<Self>> {
        let conv_register_block = register_block(options)?;
        let conv_staging = conv_staging(options)?;
        let pad_rgb = conv_pad_rgb(options)?;
        let winograd = conv_winograd(options)?;
        let timeout = timeout(options)?;
        let (instance, backends) = instance();
        let filter = options
            .adapter
            .clone()
            .or_else(|| std::env::var("CONVPOOL_ADAPTER").ok())
            .filter(|s| !s.is_empty())
            .map(|s| s.to_lowercase());
        let mut adapters: Vec<wgpu::Adapter> = pollster::block_on(instance.enumerate_adapters(backends))
            .into_iter()
            .filter(|a| {
                let info = a.get_info();
                filter.as_ref().is_none_or(|f| info.name.to_lowercase().contains(f))
            })
            .collect();
        adapters.sort_by_key(|a| rank(a.get_info().device_type));
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            Error::NoAdapter(match &filter {
                Some(f) => format!("no adapter on backends {backends:?} has {f:?} in its name"),
                None => format!(
                    "wgpu found no adapter on backends {backends:?} (install a Vulkan driver, e.g. \
                     mesa-vulkan-drivers, or set WGPU_BACKEND)"
                ),
            })
        })?;
        let summary = summary(&adapter);
        let limits = adapter.limits();
        // Timestamps let the benchmark report kernel time apart from transfers.
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let shared_memory = matches!(
            adapter.get_info().device_type,
            wgpu::DeviceType::Cpu | wgpu::DeviceType::IntegratedGpu
        );
        let unified = shared_memory
            && adapter.features().contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS)
            && options
                .mapped_buffers
                .unwrap_or_else(|| std::env::var("CONVPOOL_GPU_MAPPED").map_or(true, |v| v.trim() != "0"));
        let mut required_features = wgpu::Features::empty();
        if timestamps {
            required_features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        if unified {
            required_features |= wgpu::Features::MAPPABLE_PRIMARY_BUFFERS;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("convpool"),
            required_features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::NoAdapter(format!("{}: cannot open a device: {e}", summary.name)))?;
        // Errors are collected with error scopes around each call; anything
        // that escapes them must not abort the process.
        device.on_uncaptured_error(Arc::new(|e| eprintln!("convpool: uncaptured GPU error: {e}")));
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        device.set_device_lost_callback(move |_, _| flag.store(true, Ordering::SeqCst));
        // Indices in the shaders are u32 element offsets; 1 GiB keeps every
        // one of them far from overflow.
        let device_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let max_binding_bytes = options
            .max_binding_bytes
            .unwrap_or(u64::MAX)
            .min(device_binding)
            .min(1 << 30)
            & !15;
        let max_groups_per_dim = options
            .max_workgroups_per_dim
            .unwrap_or(u32::MAX)
            .min(limits.max_compute_workgroups_per_dimension)
            .max(1);
        let device_widening = device_widening(options, unified)?;
        let conv = ConvDevice {
            software: summary.software,
            block: conv_register_block,
            staging: conv_staging,
            workgroup_bytes: limits.max_compute_workgroup_storage_size as u64,
            pad_rgb,
            winograd,
        };
        let pipelines = Pipelines::new(&device);
        Ok(Arc::new(GpuContext {
            device,
            queue,
            summary,
            max_binding_bytes: max_binding_bytes.max(16),
            max_groups_per_dim,
            pipelines,
            timestamps,
            tiled_pooling: options.tiled_pooling.unwrap_or_else(|| {
                std::env::var("CONVPOOL_POOL_KERNEL").is_ok_and(|v| v.eq_ignore_ascii_case("tiled"))
            }),
            conv,
            idle: Mutex::new(Vec::new()),
            max_buffer_bytes: options
                .max_buffer_bytes
                .unwrap_or(u64::MAX)
                .min(limits.max_buffer_size)
                .max(max_binding_bytes.max(16)),
            uploaded: AtomicU64::new(0),
            downloaded: AtomicU64::new(0),
            timeout,
            lost,
            unified,
            device_widening,
        }))
    }

    /// Whether the GPU binds host-mapped buffers directly
    /// ([`GpuOptions::mapped_buffers`]; unified-memory and CPU adapters).
    pub fn mapped_buffers(&self) -> bool {
        self.unified
    }

    /// Whether 8- and 16-bit host pixels are widened on the device
    /// ([`GpuOptions::device_widening`]).
    pub fn device_widening(&self) -> bool {
        self.device_widening
    }

    /// Bytes moved between host and device by this context so far, as
    /// (host to device, device to host): images, kernels and outputs of
    /// every call, and [`super::GpuArray`] uploads and downloads.
    pub fn transfer_bytes(&self) -> (u64, u64) {
        (
            self.uploaded.load(Ordering::Relaxed),
            self.downloaded.load(Ordering::Relaxed),
        )
    }

    /// Buffer sets kept for reuse: at most the number of calls that ran at
    /// once (each call takes one and gives it back).
    pub fn pooled_buffer_sets(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the device was lost (destroyed, reset or removed): calls on
    /// this context then fail; build a new engine.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Refuses a call on a lost device.
    pub(crate) fn check_alive(&self) -> Result<()> {
        if self.is_lost() {
            return Err(Error::Gpu(format!(
                "the device {} was lost; this engine cannot run on it again (build a new one)",
                self.summary.name
            )));
        }
        Ok(())
    }

    /// Destroys the device, as a driver reset or a removed GPU would:
    /// for fault-injection tests of the paths that must then report an
    /// error instead of hanging or panicking.
    #[doc(hidden)]
    pub fn destroy_device_for_tests(&self) {
        // The driver's lost callback runs only on a later poll; the
        // destruction is known here already.
        self.lost.store(true, Ordering::SeqCst);
        self.device.destroy();
    }

    /// The adapter this context runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// Whether kernel times can be measured with timestamp queries.
    pub fn has_timestamps(&self) -> bool {
        self.timestamps
    }

    /// Largest binding this context uses, bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.max_binding_bytes
    }

    /// The device's workgroup memory, bytes (what the tiled conv kernel's
    /// staging must fit).
    pub fn max_workgroup_bytes(&self) -> u64 {
        self.conv.workgroup_bytes
    }

    /// Largest workgroup count per dispatch dimension this context uses.
    pub fn max_groups_per_dim(&self) -> u32 {
        self.max_groups_per_dim
    }
}
