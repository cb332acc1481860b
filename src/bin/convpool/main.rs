//! `convpool`: convolution and pooling of `.npy` arrays from the shell.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

mod filter;
use convpool::error::Shape;
use convpool::npy::NpyArray;
use convpool::shape::{images_nhwc, kernels_hwio};
use convpool::Pixel;
use convpool::{
    npy, Activation, Conv2dSpec, Device, Engine, EngineOptions, Error, Padding, PaddingMode, Pool2dSpec, PoolMode,
    Window,
};
use ndarray::{Array1, Array4, ArrayD, Axis, Ix4};

/// 2-D convolution and pooling over batches of images, on the GPU (wgpu) or the CPU.
///
/// Images are `(m, h, w)` or `(m, h, w, c)` (NHWC); kernels `(kh, kw)`,
/// `(kh, kw, c)` or `(kh, kw, c, nc)` (HWIO). Any real numeric dtype is read;
/// results are written as float32.
#[derive(Parser, Debug)]
#[command(name = "convpool", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Cross-correlate images with kernels (the kernel is not flipped).
    Conv(ConvArgs),
    /// Max or average pooling of each channel.
    Pool(PoolArgs),
    /// List the GPU adapters wgpu finds and the device `--device auto` takes.
    Devices,
    /// Time the benchmark workloads (headless) against this machine's roofline.
    Bench(BenchArgs),
    /// Filter photographs (PNG/JPEG, gray or RGB, 8/16-bit) and write PNGs.
    Filter(FilterArgs),
}

#[derive(Args, Debug)]
struct FilterArgs {
    /// A PNG/JPEG file, a folder of them, or a glob such as 'photos/*.jpg'.
    #[arg(long)]
    input: String,
    /// identity | box:N | gaussian:N[:SIGMA] | sobel-x | sobel-y | sobel | laplacian |
    /// sharpen | emboss | file:K.npy. Repeat to chain kernels.
    #[arg(long = "kernel", value_name = "NAME[:ARGS]")]
    kernels: Vec<String>,
    /// Pool after the kernels: max|avg:KxK[:S] (stride S defaults to K).
    #[arg(long)]
    pool: Option<String>,
    /// Padding of every kernel; `same` keeps the image size.
    #[arg(long, default_value = "same", allow_hyphen_values = true)]
    padding: String,
    /// What the padding holds: zeros | reflect | symmetric | replicate |
    /// circular. reflect (OpenCV's default) keeps a blur's edges as bright
    /// as the image; zeros darkens them.
    #[arg(long, default_value = "reflect")]
    border: String,
    /// auto | cpu | gpu.
    #[arg(long, default_value = "auto")]
    device: String,
    /// clamp (to the input's value range) | minmax | abs (absolute value, then
    /// minmax). Default: abs when a kernel is a derivative (sobel*, laplacian,
    /// zero-sum files), clamp otherwise.
    #[arg(long)]
    scale: Option<String>,
    /// Output PNG, or a folder (for a folder or glob input).
    #[arg(long, value_name = "OUT.png|DIR/")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// seed | cnn | chain | all (all adds cnn_conv3x3_b64, sized for real
    /// GPUs, and the chain: the seed's conv then pool of 8-bit images kept
    /// on the device, against two host calls). Default: seed and cnn.
    #[arg(long)]
    suite: Option<String>,
    /// Run only these workloads (repeatable).
    #[arg(long = "workload", value_name = "NAME")]
    workloads: Vec<String>,
    /// auto | cpu | gpu.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Timed runs per workload, after one warm-up run.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Smaller batches (per-element figures stay comparable), under a minute.
    #[arg(long)]
    quick: bool,
    /// Write JSON (one object per workload) to PATH, or to stdout without PATH.
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    json: Option<Option<PathBuf>>,
    /// Use this FMA peak (GFLOP/s) for the roofline instead of measuring the CPU's.
    #[arg(long)]
    peak_gflops: Option<f64>,
    /// Use this bandwidth (GB/s, read + write) for the roofline instead of measuring the CPU's.
    #[arg(long)]
    bandwidth_gbps: Option<f64>,
}

#[derive(Args, Debug)]
struct Common {
    /// Images, .npy: (m, h, w) or (m, h, w, c).
    #[arg(long, value_name = "X.npy")]
    images: PathBuf,
    /// valid | same | same_lower | seed_same | PH,PW | T,B,L,R.
    #[arg(long, default_value = "valid", allow_hyphen_values = true)]
    padding: String,
    /// SH,SW (or one number for both).
    #[arg(long, allow_hyphen_values = true)]
    stride: Option<String>,
    /// DH,DW (or one number for both).
    #[arg(long, default_value = "1,1", allow_hyphen_values = true)]
    dilation: String,
    /// auto (hardware GPU if any, else CPU) | cpu | gpu.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Check the GPU result against the CPU reference (SPEC tolerance).
    #[arg(long)]
    verify: bool,
    /// Output .npy (float32), written atomically.
    #[arg(long, value_name = "Y.npy")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct ConvArgs {
    /// Kernels, .npy: (kh, kw), (kh, kw, c) or (kh, kw, c, nc); with groups
    /// G, (kh, kw, c / G, nc).
    #[arg(long, value_name = "K.npy")]
    kernels: PathBuf,
    /// What the padded cells hold: zeros | reflect | symmetric | replicate | circular.
    #[arg(long, default_value = "zeros")]
    padding_mode: String,
    /// Channel groups (G = c: depthwise); c and nc divisible by G.
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Bias, .npy of shape (nc,), added to every output channel.
    #[arg(long, value_name = "B.npy")]
    bias: Option<PathBuf>,
    /// After the bias: relu | relu6 | leaky_relu[:ALPHA] | sigmoid | tanh | clip:LO:HI.
    #[arg(long, allow_hyphen_values = true)]
    activation: Option<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("size").required(true).args(["window", "output_size"]))]
struct PoolArgs {
    /// KH,KW (or one number for both), or `global`.
    #[arg(long, allow_hyphen_values = true)]
    window: Option<String>,
    /// Adaptive pooling to OH,OW (PyTorch adaptive_*_pool2d); excludes
    /// --window, --stride, --padding, --dilation and --ceil-mode.
    #[arg(long, value_name = "OH,OW", conflicts_with_all = ["stride", "padding", "dilation", "ceil_mode"])]
    output_size: Option<String>,
    /// Also write the argmax of max pooling, int64 (m, oh, ow, c): y * w + x
    /// of each winner, -1 where a window has no real cell.
    #[arg(long, value_name = "IDX.npy")]
    indices: Option<PathBuf>,
    /// max | avg.
    #[arg(long, default_value = "max")]
    mode: String,
    /// Round the output size up (PyTorch / ONNX ceil_mode).
    #[arg(long)]
    ceil_mode: bool,
    /// Average over padded cells too.
    #[arg(long)]
    count_include_pad: bool,
    #[command(flatten)]
    common: Common,
}

/// `A,B`, or `A` for both ([`convpool::shape::parse_pair`]).
fn pair(arg: &'static str, text: &str) -> Result<(usize, usize), Error> {
    convpool::shape::parse_pair(arg, text)
}

fn parse_padding(text: &str) -> Result<Padding, Error> {
    text.parse()
}

fn shape_of(a: &ArrayD<f32>) -> Shape {
    Shape::from(a.shape())
}

fn to4<T>(a: ArrayD<T>, dims: [usize; 4]) -> Array4<T> {
    a.into_shape_with_order(dims.to_vec())
        .expect("same element count")
        .into_dimensionality::<Ix4>()
        .expect("four dimensions")
}

fn engine(common: &Common) -> Result<Engine, Error> {
    Engine::with_options(EngineOptions {
        device: common.device.parse::<Device>()?,
        verify: common.verify,
        ..Default::default()
    })
}

/// A convolution of f32, u8 or u16 images (the last two widened on the GPU
/// after an upload of their own bytes).
fn conv_pixels<T: Pixel>(
    engine: &Engine,
    images: &Array4<T>,
    kernels: &Array4<f32>,
    bias: Option<&Array1<f32>>,
    spec: &Conv2dSpec,
) -> Result<Array4<f32>, Error> {
    match bias {
        Some(b) => engine.conv2d_bias_pixels(images, kernels, b, spec),
        None => engine.conv2d_pixels(images, kernels, spec),
    }
}

fn conv(args: &ConvArgs) -> Result<String, Error> {
    let c = &args.common;
    let padding = parse_padding(&c.padding)?;
    let stride = pair("stride", c.stride.as_deref().unwrap_or("1,1"))?;
    let dilation = pair("dilation", &c.dilation)?;
    let activation = args.activation.as_deref().map(str::parse::<Activation>).transpose()?;
    let spec = Conv2dSpec::new(padding)
        .with_stride(stride.0, stride.1)
        .with_dilation(dilation.0, dilation.1)
        .with_padding_mode(args.padding_mode.parse::<PaddingMode>()?)
        .with_groups(args.groups)
        .with_activation(activation);
    c.device.parse::<Device>()?;
    // uint8 and uint16 images stay as they are: a GPU uploads their bytes.
    let images = npy::read(&c.images)?;
    let kernels = npy::read_f32(&args.kernels)?;
    let bias = match &args.bias {
        Some(path) => {
            let b = npy::read_f32(path)?;
            if b.ndim() != 1 {
                return Err(Error::invalid(
                    "bias",
                    format!("{}: expected shape (nc,), got {}", path.display(), shape_of(&b)),
                ));
            }
            Some(b.into_dimensionality::<ndarray::Ix1>().expect("one dimension"))
        }
        None => None,
    };
    let (images_shape, kernels_shape) = (Shape::from(images.shape()), shape_of(&kernels));
    let nhwc = images_nhwc(images.shape())?;
    let hwio = kernels_hwio(kernels.shape())?;
    // Validate everything before a device is opened.
    let g = spec.resolve(nhwc, hwio)?;
    if let Some(b) = &bias {
        if b.len() != g.nc() {
            return Err(Error::invalid(
                "bias",
                format!(
                    "{}: expected shape ({},), one value per output channel of kernels {kernels_shape}, got ({},)",
                    args.bias.as_ref().expect("a bias file").display(),
                    g.nc(),
                    b.len()
                ),
            ));
        }
    }
    let engine = engine(c)?;
    let start = Instant::now();
    let kernels = to4(kernels, hwio);
    let b = bias.as_ref();
    let out = match images {
        NpyArray::F32(x) => conv_pixels(&engine, &to4(x, nhwc), &kernels, b, &spec)?,
        NpyArray::U8(x) => conv_pixels(&engine, &to4(x, nhwc), &kernels, b, &spec)?,
        NpyArray::U16(x) => conv_pixels(&engine, &to4(x, nhwc), &kernels, b, &spec)?,
    };
    let secs = start.elapsed().as_secs_f64();
    // The seed's shapes: a 2-D or 3-D kernel gives (m, oh, ow).
    let out = if kernels_shape.dims().len() < 4 {
        out.index_axis_move(Axis(3), 0).into_dyn()
    } else {
        out.into_dyn()
    };
    npy::write_f32_atomic(&c.out, out.view())?;
    Ok(format!(
        "conv {images_shape} * {kernels_shape} -> {} on {} in {secs:.3} s",
        Shape::from(out.shape()),
        engine.describe()
    ))
}

fn pool(args: &PoolArgs) -> Result<String, Error> {
    let c = &args.common;
    let window = match (&args.window, &args.output_size) {
        (_, Some(size)) => {
            let (oh, ow) = pair("output-size", size)?;
            Window::Adaptive(oh, ow)
        }
        (Some(w), None) if w.trim().eq_ignore_ascii_case("global") => Window::Global,
        (Some(w), None) => {
            let (kh, kw) = pair("window", w)?;
            Window::Fixed(kh, kw)
        }
        (None, None) => return Err(Error::invalid("window", "give --window KH,KW or --output-size OH,OW")),
    };
    let mode: PoolMode = args.mode.parse()?;
    if args.indices.is_some() && mode != PoolMode::Max {
        return Err(Error::invalid("indices", format!("need --mode max, got --mode {mode}")));
    }
    let mut spec = Pool2dSpec {
        window,
        ..Pool2dSpec::new(mode, 1, 1)
    }
    .with_padding(parse_padding(&c.padding)?)
    .with_ceil_mode(args.ceil_mode)
    .with_count_include_pad(args.count_include_pad);
    let dilation = pair("dilation", &c.dilation)?;
    spec = spec.with_dilation(dilation.0, dilation.1);
    if let Some(s) = &c.stride {
        let (sh, sw) = pair("stride", s)?;
        spec = spec.with_stride(sh, sw);
    }
    c.device.parse::<Device>()?;
    let images = npy::read(&c.images)?;
    let images_shape = Shape::from(images.shape());
    let nhwc = images_nhwc(images.shape())?;
    spec.resolve(nhwc)?;
    let engine = engine(c)?;
    let start = Instant::now();
    let (out, indices) = match (&args.indices, images) {
        (Some(_), images) => {
            let (v, i) = engine.max_pool2d_with_indices(&to4(images.into_f32(), nhwc), &spec)?;
            (v, Some(i))
        }
        (None, NpyArray::F32(x)) => (engine.pool2d_pixels(&to4(x, nhwc), &spec)?, None),
        (None, NpyArray::U8(x)) => (engine.pool2d_pixels(&to4(x, nhwc), &spec)?, None),
        (None, NpyArray::U16(x)) => (engine.pool2d_pixels(&to4(x, nhwc), &spec)?, None),
    };
    let secs = start.elapsed().as_secs_f64();
    if let (Some(path), Some(i)) = (&args.indices, &indices) {
        npy::write_i64_atomic(path, i.view().into_dyn())?;
    }
    if let Err(e) = npy::write_f32_atomic(&c.out, out.view().into_dyn()) {
        // Both files or neither.
        if let Some(path) = &args.indices {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    Ok(format!(
        "pool {images_shape} -> {} on {} in {secs:.3} s",
        Shape::from(out.shape()),
        engine.describe()
    ))
}

fn devices() -> String {
    let adapters = convpool::gpu::list_adapters();
    let mut text = String::new();
    if adapters.is_empty() {
        text.push_str(
            "no GPU adapter found (wgpu searched Vulkan, Metal and DX12; set WGPU_BACKEND=gl to try OpenGL)\n",
        );
    }
    for (i, a) in adapters.iter().enumerate() {
        text.push_str(&format!(
            "[{i}] {} ({}, {}{})\n    driver: {}\n    max storage binding: {} bytes, max buffer: {} bytes, max workgroups per dimension: {}\n",
            a.name,
            a.backend,
            a.device_type,
            if a.software { ", software" } else { "" },
            if a.driver.is_empty() { "unknown" } else { &a.driver },
            a.max_storage_buffer_binding_size,
            a.max_buffer_size,
            a.max_compute_workgroups_per_dimension
        ));
    }
    match Engine::new(Device::Auto) {
        Ok(e) => text.push_str(&format!("--device auto uses: {}", e.describe())),
        Err(e) => text.push_str(&format!("--device auto: {e}")),
    }
    text
}

fn bench(args: &BenchArgs) -> Result<String, Error> {
    use convpool::bench::{self, Suite};
    let suites: &[Suite] = match args.suite.as_deref().map(str::trim) {
        None => &[Suite::Seed, Suite::Cnn],
        Some("seed") => &[Suite::Seed],
        Some("cnn") => &[Suite::Cnn],
        Some("chain") => &[Suite::Chain],
        Some("all") => &[Suite::Seed, Suite::Cnn, Suite::Large, Suite::Chain],
        Some(other) => {
            return Err(Error::invalid(
                "suite",
                format!("expected seed, cnn, chain or all, got {other:?}"),
            ))
        }
    };
    let all = bench::workloads();
    for name in &args.workloads {
        if !all.iter().any(|w| w.name == name) {
            let names: Vec<&str> = all.iter().map(|w| w.name).collect();
            return Err(Error::invalid(
                "workload",
                format!("unknown {name:?}; known: {}", names.join(", ")),
            ));
        }
    }
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|w| {
            if args.workloads.is_empty() {
                suites.contains(&w.suite)
            } else {
                args.workloads.iter().any(|n| n == w.name)
            }
        })
        .collect();
    let engine = Engine::new(args.device.parse::<Device>()?)?;
    let measured = if args.peak_gflops.is_none() || args.bandwidth_gbps.is_none() {
        eprintln!("convpool: measuring this machine's FMA peak and copy bandwidth ...");
        Some(bench::measure_peaks(args.quick))
    } else {
        None
    };
    let peaks = bench::Peaks {
        fma_gflops: args.peak_gflops.or(measured.map(|p| p.fma_gflops)).unwrap_or(1.0),
        copy_gbps: args.bandwidth_gbps.or(measured.map(|p| p.copy_gbps)).unwrap_or(1.0),
        fma_isa: if args.peak_gflops.is_none() {
            measured.and_then(|p| p.fma_isa)
        } else {
            None
        },
    };
    let adapter = engine.gpu().map(|g| g.adapter().clone());
    let device_name = adapter.as_ref().map_or_else(|| "CPU".to_string(), |a| a.name.clone());
    let backend = adapter
        .as_ref()
        .map_or_else(|| "cpu".to_string(), |a| a.backend.to_lowercase());
    let json_to_stdout = matches!(args.json, Some(None));
    let say = |line: String| {
        if json_to_stdout {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    say(format!(
        "convpool bench{} on {} (peaks: FMA {:.1} GFLOP/s{}, copy {:.1} GB/s{})",
        if args.quick { " --quick" } else { "" },
        engine.describe(),
        peaks.fma_gflops,
        peaks.fma_isa.map_or(String::new(), |isa| format!(" with {isa}")),
        peaks.copy_gbps,
        if measured.is_some() { ", measured" } else { ", given" }
    ));
    say(format!(
        "{:<22} {:>6} {:>8} {:>11} {:>11} {:>11} {:>9} {:>8} {:>11} {:>7}",
        "workload", "m", "isa", "median ms", "min ms", "kernel ms", "GFLOP/s", "GB/s", "roofline ms", "% roof"
    ));
    let mut objects = Vec::new();
    for w in &chosen {
        let r = bench::run(&engine, w, args.quick, args.repeats)?;
        let gpu_kernel = bench::gpu_conv_kernel(&engine, w, args.quick)?;
        say(format!(
            "{:<22} {:>6} {:>8} {:>11.3} {:>11.3} {:>11} {:>9.2} {:>8.2} {:>11.3} {:>6.1}%",
            r.name,
            r.m,
            r.isa.map_or(backend.as_str(), |isa| isa.name()),
            r.median_s * 1e3,
            r.min_s * 1e3,
            r.kernel_median_s.map_or("-".to_string(), |k| format!("{:.3}", k * 1e3)),
            r.gflops(),
            r.gbps(),
            r.roofline_s(&peaks) * 1e3,
            100.0 * r.roofline_fraction(&peaks)
        ));
        objects.push(serde_json::json!({
            "workload": r.name,
            "device": device_name,
            "backend": backend,
            "engine": engine.describe(),
            "quick": args.quick,
            "m": r.m,
            "repeats": args.repeats,
            "median_s": r.median_s,
            "min_s": r.min_s,
            "kernel_median_s": r.kernel_median_s,
            "host_overhead_median_s": r.host_overhead_median_s,
            "flops": r.flops,
            "min_bytes": r.min_bytes,
            "gflops": r.gflops(),
            "gbps": r.gbps(),
            "kernel_gflops": r.kernel_median_s.map(|k| r.flops / k / 1e9),
            "roofline_s": r.roofline_s(&peaks),
            "roofline_fraction": r.roofline_fraction(&peaks),
            "peak_fma_gflops": peaks.fma_gflops,
            "peak_copy_gbps": peaks.copy_gbps,
            "isa": r.isa.map(|isa| isa.name()),
            "peak_fma_isa": peaks.fma_isa.map(|isa| isa.name()),
            "gpu_kernel": gpu_kernel,
        }));
    }
    let json = serde_json::to_string_pretty(&objects).expect("plain values serialise");
    match &args.json {
        Some(Some(path)) => std::fs::write(path, json + "\n").map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?,
        Some(None) => println!("{json}"),
        None => {}
    }
    Ok(String::new())
}

/// On a headless machine (no `XDG_RUNTIME_DIR`: containers, CI, ssh) Mesa's
/// device-select Vulkan layer probes for a Wayland display at every
/// instance and prints "XDG_RUNTIME_DIR is invalid or not set" each time.
/// That layer only orders the adapters, which convpool enumerates and
/// chooses itself, so it is switched off there (`NODEVICE_SELECT=1`; a value
/// the user set is kept). Done first thing in `main`, while the process has
/// one thread, the only time changing the environment is sound.
fn quiet_when_headless() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() && std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
}

/// Asks glibc to keep freed blocks of up to 1 GiB for reuse. By default a
/// block over 32 MiB is unmapped when freed, so each call of a repeated
/// run (`bench`, `filter` over many images) gets its result in fresh pages
/// that the kernel zeroes and faults in one by one: on the benchmark's large
/// outputs (seed_multi, image_blur) that took as much time as the
/// convolution. The CLI is a short-lived process, so holding on to its
/// largest freed blocks costs nothing.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator tunables; it is called before any
    // thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

fn main() -> ExitCode {
    quiet_when_headless();
    keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                let _ = e.print();
                return if e.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // One line: clap's message up to its usage block, lines joined.
            let rendered = e.render().to_string();
            let message = rendered.split("\n\n").next().unwrap_or("invalid arguments");
            let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("convpool: {line} (see convpool --help)");
            return ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Command::Conv(a) => conv(a),
        Command::Pool(a) => pool(a),
        Command::Devices => Ok(devices()),
        Command::Bench(a) => bench(a),
        Command::Filter(a) => filter::run(a).map(|code| {
            if code != 0 {
                std::process::exit(code);
            }
            String::new()
        }),
    };
    match (result, &cli.command) {
        (Ok(text), Command::Devices) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        (Ok(_), Command::Bench(_) | Command::Filter(_)) => ExitCode::SUCCESS,
        (Ok(text), _) => {
            eprintln!("convpool: {text}");
            ExitCode::SUCCESS
        }
        (Err(e), _) => {
            eprintln!("convpool: error: {e}");
            ExitCode::FAILURE
        }
    }
}
