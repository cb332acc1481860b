//! `convpool`: convolution and pooling of `.npy` arrays from the shell.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use convpool::error::Shape;
use convpool::shape::{images_nhwc, kernels_hwio};
use convpool::{
    npy, Conv2dSpec, Device, Engine, EngineOptions, Error, Padding, Pool2dSpec, PoolMode, Window,
};
use ndarray::{Array4, ArrayD, Axis, Ix4};

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
    /// Kernels, .npy: (kh, kw), (kh, kw, c) or (kh, kw, c, nc).
    #[arg(long, value_name = "K.npy")]
    kernels: PathBuf,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct PoolArgs {
    /// KH,KW (or one number for both), or `global`.
    #[arg(long, allow_hyphen_values = true)]
    window: String,
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

/// `A,B`, or `A` for both. Zero passes here: the shape module refuses it
/// with the message every caller gets.
fn pair(arg: &'static str, text: &str) -> Result<(usize, usize), Error> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let num = |p: &str| {
        p.parse::<usize>().map_err(|_| {
            Error::invalid(
                arg,
                format!("expected whole numbers like 2,2 or 2, got {text:?}"),
            )
        })
    };
    match parts[..] {
        [a] => {
            let v = num(a)?;
            Ok((v, v))
        }
        [a, b] => Ok((num(a)?, num(b)?)),
        _ => Err(Error::invalid(
            arg,
            format!("expected two numbers A,B, got {text:?}"),
        )),
    }
}

fn parse_padding(text: &str) -> Result<Padding, Error> {
    text.parse()
}

fn shape_of(a: &ArrayD<f32>) -> Shape {
    Shape::from(a.shape())
}

fn to4(a: ArrayD<f32>, dims: [usize; 4]) -> Array4<f32> {
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

fn conv(args: &ConvArgs) -> Result<String, Error> {
    let c = &args.common;
    let padding = parse_padding(&c.padding)?;
    let stride = pair("stride", c.stride.as_deref().unwrap_or("1,1"))?;
    let dilation = pair("dilation", &c.dilation)?;
    let spec = Conv2dSpec::new(padding)
        .with_stride(stride.0, stride.1)
        .with_dilation(dilation.0, dilation.1);
    c.device.parse::<Device>()?;
    let images = npy::read_f32(&c.images)?;
    let kernels = npy::read_f32(&args.kernels)?;
    let (images_shape, kernels_shape) = (shape_of(&images), shape_of(&kernels));
    let nhwc = images_nhwc(images.shape())?;
    let hwio = kernels_hwio(kernels.shape())?;
    // Validate everything before a device is opened.
    spec.resolve(nhwc, hwio)?;
    let engine = engine(c)?;
    let start = Instant::now();
    let out = engine.conv2d(&to4(images, nhwc), &to4(kernels, hwio), &spec)?;
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
    let window = if args.window.trim().eq_ignore_ascii_case("global") {
        Window::Global
    } else {
        let (kh, kw) = pair("window", &args.window)?;
        Window::Fixed(kh, kw)
    };
    let mode: PoolMode = args.mode.parse()?;
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
    let images = npy::read_f32(&c.images)?;
    let images_shape = shape_of(&images);
    let nhwc = images_nhwc(images.shape())?;
    spec.resolve(nhwc)?;
    let engine = engine(c)?;
    let start = Instant::now();
    let out = engine.pool2d(&to4(images, nhwc), &spec)?;
    let secs = start.elapsed().as_secs_f64();
    npy::write_f32_atomic(&c.out, out.view().into_dyn())?;
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
        text.push_str("no GPU adapter found (wgpu searched Vulkan, Metal and DX12; set WGPU_BACKEND=gl to try OpenGL)\n");
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

fn main() -> ExitCode {
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
    };
    match (result, &cli.command) {
        (Ok(text), Command::Devices) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
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
