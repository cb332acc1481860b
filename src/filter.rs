//! Image filtering as `convpool filter` does it: named kernels, decoding and
//! encoding of PNG/JPEG, and the explicit scaling of results back to pixels.
//!
//! Pixels are kept in their own units (0..=255 for 8-bit images, 0..=65535
//! for 16-bit ones) as f32, NHWC. A 2-D kernel filters each channel on its
//! own (the channels travel as extra images of the batch); a 3-D or 4-D
//! kernel from a file mixes channels as in [`crate::Engine::conv2d`].

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ndarray::{s, Array2, Array3, Array4, ArrayD, ArrayView4, Axis, CowArray, Ix4};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::gpu::pixels::widened;
use crate::gpu::{GpuArray, Pixel};
use crate::shape::{kernels_hwio, Conv2dSpec, Padding, PaddingMode, Pool2dSpec, PoolMode};

/// A filter kernel by name.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterKernel {
    /// 1x1, weight 1.
    Identity,
    /// `N x N` mean.
    Box(usize),
    /// `N x N` Gaussian with standard deviation `sigma`, normalised to sum 1.
    Gaussian(usize, f64),
    /// Horizontal derivative `[[1, 0, -1], [2, 0, -2], [1, 0, -1]]` (not flipped).
    SobelX,
    /// Vertical derivative, the transpose of `SobelX`.
    SobelY,
    /// Gradient magnitude `sqrt(sobel_x^2 + sobel_y^2)`.
    Sobel,
    /// `[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`.
    Laplacian,
    /// `[[0, -1, 0], [-1, 5, -1], [0, -1, 0]]`.
    Sharpen,
    /// `[[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]`.
    Emboss,
    /// A kernel from a `.npy` file: `(kh, kw)` per channel, `(kh, kw, c)` or
    /// `(kh, kw, c, nc)` across channels.
    File(ArrayD<f32>),
}

/// Names `--kernel` accepts, for messages.
pub const KERNEL_NAMES: &str =
    "identity, box:N, gaussian:N:SIGMA, sobel-x, sobel-y, sobel, laplacian, sharpen, emboss, file:K.npy";

fn kernel_error(text: &str, why: impl fmt::Display) -> Error {
    Error::invalid("kernel", format!("{text:?}: {why} (known: {KERNEL_NAMES})"))
}

impl FromStr for FilterKernel {
    type Err = Error;

    /// Parses `NAME[:ARGS]`; `file:K.npy` reads the file.
    fn from_str(text: &str) -> Result<Self> {
        let (name, args) = text.split_once(':').unwrap_or((text, ""));
        let size = |a: &str| -> Result<usize> {
            match a.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(kernel_error(text, "the size must be a whole number >= 1")),
            }
        };
        let no_args = |k: FilterKernel| {
            if args.is_empty() {
                Ok(k)
            } else {
                Err(kernel_error(text, "takes no arguments"))
            }
        };
        match name.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "identity" => no_args(FilterKernel::Identity),
            "box" => Ok(FilterKernel::Box(size(args)?)),
            "gaussian" => {
                let (n, sigma) = args.split_once(':').unwrap_or((args, ""));
                let n = size(n)?;
                let sigma = if sigma.is_empty() {
                    // OpenCV's default for a given size.
                    0.3 * ((n as f64 - 1.0) * 0.5 - 1.0) + 0.8
                } else {
                    match sigma.parse::<f64>() {
                        Ok(s) if s.is_finite() && s > 0.0 => s,
                        _ => return Err(kernel_error(text, "SIGMA must be a positive number")),
                    }
                };
                Ok(FilterKernel::Gaussian(n, sigma))
            }
            "sobel-x" => no_args(FilterKernel::SobelX),
            "sobel-y" => no_args(FilterKernel::SobelY),
            "sobel" => no_args(FilterKernel::Sobel),
            "laplacian" => no_args(FilterKernel::Laplacian),
            "sharpen" => no_args(FilterKernel::Sharpen),
            "emboss" => no_args(FilterKernel::Emboss),
            "file" if !args.is_empty() => {
                let k = crate::npy::read_f32(args)?;
                kernels_hwio(k.shape())?;
                Ok(FilterKernel::File(k))
            }
            "file" => Err(kernel_error(text, "give a path: file:K.npy")),
            _ => Err(kernel_error(text, "unknown kernel")),
        }
    }
}

fn grid(rows: [[f32; 3]; 3]) -> Array2<f32> {
    Array2::from_shape_fn((3, 3), |(i, j)| rows[i][j])
}

impl FilterKernel {
    /// The 2-D weights of a named kernel (`None` for `Sobel` and `File`).
    pub fn weights(&self) -> Option<Array2<f32>> {
        Some(match self {
            FilterKernel::Identity => Array2::ones((1, 1)),
            FilterKernel::Box(n) => Array2::from_elem((*n, *n), 1.0 / (n * n) as f32),
            FilterKernel::Gaussian(n, sigma) => {
                let c = (*n as f64 - 1.0) / 2.0;
                let g = Array2::from_shape_fn((*n, *n), |(i, j)| {
                    let (y, x) = (i as f64 - c, j as f64 - c);
                    (-(x * x + y * y) / (2.0 * sigma * sigma)).exp()
                });
                let total = g.sum();
                g.mapv(|v| (v / total) as f32)
            }
            FilterKernel::SobelX => grid([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]),
            FilterKernel::SobelY => grid([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]),
            FilterKernel::Laplacian => grid([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]),
            FilterKernel::Sharpen => grid([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]]),
            FilterKernel::Emboss => grid([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]]),
            FilterKernel::Sobel | FilterKernel::File(_) => return None,
        })
    }

    /// Whether the kernel measures change (weights summing to 0, or the
    /// Sobel magnitude) rather than smoothing or sharpening: it decides the
    /// default output scaling.
    pub fn is_derivative(&self) -> bool {
        match self {
            FilterKernel::Sobel => true,
            FilterKernel::File(k) => k.sum().abs() < 1e-6 * k.iter().map(|v| v.abs()).sum::<f32>().max(1e-30),
            other => other.weights().is_some_and(|w| w.sum().abs() < 1e-6),
        }
    }
}

/// How filtered values become pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Clamp to the value range of the input image.
    Clamp,
    /// Map the output's own minimum..maximum to the full pixel range.
    MinMax,
    /// Absolute values, then as `MinMax`.
    Abs,
}

impl FromStr for Scale {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "clamp" => Ok(Scale::Clamp),
            "minmax" | "min-max" => Ok(Scale::MinMax),
            "abs" => Ok(Scale::Abs),
            _ => Err(Error::invalid(
                "scale",
                format!("expected clamp, minmax or abs, got {text:?}"),
            )),
        }
    }
}

/// Parses `--pool MODE:KxK[:S]` (for example `max:2x2` or `avg:3x3:1`);
/// the stride defaults to the window.
pub fn parse_pool(text: &str) -> Result<Pool2dSpec> {
    let bad = || Error::invalid("pool", format!("expected max|avg:KxK[:S], got {text:?}"));
    let mut parts = text.split(':');
    let mode: PoolMode = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let window = parts.next().ok_or_else(bad)?;
    let (kh, kw) = match window.split_once(['x', 'X']) {
        Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
        None => {
            let k: usize = window.parse().map_err(|_| bad())?;
            (k, k)
        }
    };
    let mut spec = Pool2dSpec::new(mode, kh, kw);
    if let Some(s) = parts.next() {
        let s: usize = s.parse().map_err(|_| bad())?;
        spec = spec.with_stride(s, s);
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(spec)
}

/// A decoded image in its own pixel units.
#[derive(Debug, Clone)]
pub struct Image {
    /// `(h, w, c)`, c = 1 (gray) or 3 (RGB).
    pub pixels: Array3<f32>,
    /// Whether it came from 16 bits per channel (kept for the output).
    pub sixteen_bit: bool,
}

impl Image {
    /// Largest pixel value of the format: 255 or 65535.
    pub fn max_value(&self) -> f32 {
        if self.sixteen_bit {
            65535.0
        } else {
            255.0
        }
    }
}

/// Decodes a PNG or JPEG (gray or colour, 8 or 16 bits; alpha is dropped).
pub fn load_image(path: &Path) -> Result<Image> {
    let decoded = image::ImageReader::open(path)
        .map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?
        .decode()
        .map_err(|e| Error::Decode {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    use image::DynamicImage as D;
    let sixteen_bit = matches!(
        decoded,
        D::ImageLuma16(_) | D::ImageLumaA16(_) | D::ImageRgb16(_) | D::ImageRgba16(_)
    );
    let gray = !decoded.color().has_color();
    let (w, h) = (decoded.width() as usize, decoded.height() as usize);
    let (c, values): (usize, Vec<f32>) = match (gray, sixteen_bit) {
        (true, false) => (1, decoded.to_luma8().into_raw().into_iter().map(f32::from).collect()),
        (true, true) => (1, decoded.to_luma16().into_raw().into_iter().map(f32::from).collect()),
        (false, false) => (3, decoded.to_rgb8().into_raw().into_iter().map(f32::from).collect()),
        (false, true) => (3, decoded.to_rgb16().into_raw().into_iter().map(f32::from).collect()),
    };
    let pixels = Array3::from_shape_vec((h, w, c), values).expect("decoder returns h * w * c values");
    Ok(Image { pixels, sixteen_bit })
}

/// Encodes `(h, w, c)` pixels (already in 0..=max) as PNG, atomically: a
/// temporary file beside `path` is renamed into place once complete.
pub fn save_png(path: &Path, pixels: &Array3<f32>, sixteen_bit: bool) -> Result<()> {
    let (h, w_px, c) = pixels.dim();
    let color = match (c, sixteen_bit) {
        (1, false) => image::ExtendedColorType::L8,
        (3, false) => image::ExtendedColorType::Rgb8,
        (4, false) => image::ExtendedColorType::Rgba8,
        (1, true) => image::ExtendedColorType::L16,
        (3, true) => image::ExtendedColorType::Rgb16,
        (4, true) => image::ExtendedColorType::Rgba16,
        _ => {
            return Err(Error::invalid(
                "kernel",
                format!("the result has {c} channels; a PNG holds 1 (gray), 3 (RGB) or 4 (RGBA)"),
            ))
        }
    };
    let bytes: Vec<u8> = if sixteen_bit {
        // The encoder takes native-endian samples and writes PNG's big-endian.
        pixels.iter().flat_map(|&v| (v.round() as u16).to_ne_bytes()).collect()
    } else {
        pixels.iter().map(|&v| v.round() as u8).collect()
    };
    crate::atomic::write_atomic(path, |w| {
        let encoder = image::codecs::png::PngEncoder::new(w);
        image::ImageEncoder::write_image(encoder, &bytes, w_px as u32, h as u32, color)
            .map_err(|e| Error::invalid("out", format!("{}: cannot encode: {e}", path.display())))
    })
}

/// What `convpool filter` does to every image.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Kernels applied in order.
    pub kernels: Vec<FilterKernel>,
    /// Pooling after the kernels.
    pub pool: Option<Pool2dSpec>,
    /// Padding of every convolution (`same` keeps the size).
    pub padding: Padding,
    /// What the padded cells hold. `convpool filter` defaults to `Reflect`
    /// (OpenCV's BORDER_REFLECT_101), so a blur keeps the brightness of the
    /// image's edges; `Zeros` darkens them.
    pub border: PaddingMode,
    /// Output scaling; `None` picks it from the kernels.
    pub scale: Option<Scale>,
}

impl Pipeline {
    /// The scaling used: the one asked for, or `Abs` when any kernel is a
    /// derivative and `Clamp` otherwise.
    pub fn scale(&self) -> Scale {
        self.scale
            .unwrap_or(if self.kernels.iter().any(FilterKernel::is_derivative) {
                Scale::Abs
            } else {
                Scale::Clamp
            })
    }

    /// Runs the kernels and the pooling on a batch `(m, h, w, c)`; returns
    /// the raw values (not yet scaled). On a GPU engine the batch stays on
    /// the device from the first kernel to the pooling (one upload, one
    /// download; Sobel's magnitude is the one step taken on the host); a
    /// batch too large for one device buffer, or any other GPU failure of
    /// that chain, runs call by call through the host instead, where large
    /// inputs are chunked and the engine's CPU fallback applies (8- and
    /// 16-bit samples still cross to the GPU as their own bytes there: the
    /// first step is a pixel call).
    pub fn run(&self, engine: &Engine, batch: Array4<f32>) -> Result<Array4<f32>> {
        self.run_any(engine, batch.view())
    }

    /// [`Pipeline::run`] of 8- or 16-bit samples: on a GPU they cross as
    /// their own bytes and are widened there (exact), on the CPU they are
    /// widened on the host; the result is `run` of the f32 values.
    pub fn run_samples(&self, engine: &Engine, batch: &Samples) -> Result<Array4<f32>> {
        match batch {
            Samples::U8(b) => self.run_any(engine, b.view()),
            Samples::U16(b) => self.run_any(engine, b.view()),
        }
    }

    fn run_any<T: Pixel>(&self, engine: &Engine, batch: ArrayView4<T>) -> Result<Array4<f32>> {
        if engine.is_gpu() {
            let on_device = self.run_on(engine, Data::Samples(batch), true);
            match on_device {
                Err(Error::Gpu(_)) => {}
                result => return result,
            }
        }
        self.run_on(engine, Data::Samples(batch), false)
    }

    /// The pipeline with every step on the device (`resident`) or through
    /// the host.
    fn run_on<T: Pixel>(&self, engine: &Engine, batch: Data<'_, T>, resident: bool) -> Result<Array4<f32>> {
        let spec = Conv2dSpec::new(self.padding).with_padding_mode(self.border);
        let mut x = batch;
        for k in &self.kernels {
            x = match (k, k.weights()) {
                (_, Some(w)) => per_channel(engine, x, &w.insert_axis(Axis(2)).insert_axis(Axis(3)), &spec, resident)?,
                (FilterKernel::Sobel, None) => {
                    let gx = FilterKernel::SobelX.weights().expect("named kernel");
                    let gy = FilterKernel::SobelY.weights().expect("named kernel");
                    let both = ndarray::stack(Axis(2), &[gx.view(), gy.view()]).expect("same shapes");
                    let g = per_channel(engine, x, &both.insert_axis(Axis(2)), &spec, resident)?.into_host()?;
                    // per_channel returns (m, oh, ow, c * 2): magnitude of each pair.
                    let (m, oh, ow, c2) = g.dim();
                    let pairs = g.into_shape_with_order((m, oh, ow, c2 / 2, 2)).expect("pairs");
                    Data::Host(pairs.map_axis(Axis(4), |p| (p[0] * p[0] + p[1] * p[1]).sqrt()).into())
                }
                (FilterKernel::File(k), None) => {
                    if k.ndim() == 2 {
                        let w = k.view().into_dimensionality::<ndarray::Ix2>().expect("2-D");
                        per_channel(
                            engine,
                            x,
                            &w.to_owned().insert_axis(Axis(2)).insert_axis(Axis(3)),
                            &spec,
                            resident,
                        )?
                    } else {
                        let hwio = kernels_hwio(k.shape())?;
                        let k4 = k
                            .to_shape(hwio.to_vec())
                            .expect("same size")
                            .into_dimensionality::<Ix4>()
                            .expect("4-D")
                            .to_owned();
                        conv(engine, x, &k4, &spec, resident)?
                    }
                }
                _ => unreachable!("only Sobel and File have no plain weights"),
            };
        }
        if let Some(pool) = &self.pool {
            x = match x {
                Data::Samples(v) if !resident => Data::Host(engine.pool2d_pixels(v, pool)?.into()),
                Data::Host(h) if !resident => Data::Host(engine.pool2d(&h, pool)?.into()),
                x => Data::Device(engine.pool2d_resident(&x.into_device(engine)?, pool)?),
            };
        }
        x.into_host()
    }
}

/// A batch between two steps of a pipeline: the caller's samples, on the
/// host (a step's output) or on the device.
enum Data<'a, T: Pixel> {
    Samples(ArrayView4<'a, T>),
    Host(CowArray<'a, f32, Ix4>),
    Device(GpuArray),
}

impl<T: Pixel> Data<'_, T> {
    /// Channels.
    fn channels(&self) -> usize {
        match self {
            Data::Samples(v) => v.dim().3,
            Data::Host(h) => h.dim().3,
            Data::Device(d) => d.shape()[3],
        }
    }

    fn into_host(self) -> Result<Array4<f32>> {
        match self {
            Data::Samples(v) => Ok(widened(v).into_owned()),
            Data::Host(h) => Ok(h.into_owned()),
            Data::Device(d) => d.download(),
        }
    }

    fn into_device(self, engine: &Engine) -> Result<GpuArray> {
        match self {
            Data::Samples(v) => engine.upload_pixels(v),
            Data::Host(h) => engine.upload(h.view()),
            Data::Device(d) => Ok(d),
        }
    }
}

/// One convolution of a pipeline, on the device or through the host.
fn conv<'a, T: Pixel>(
    engine: &Engine,
    x: Data<'a, T>,
    kernels: &Array4<f32>,
    spec: &Conv2dSpec,
    resident: bool,
) -> Result<Data<'a, T>> {
    Ok(match x {
        Data::Samples(v) if !resident => Data::Host(engine.conv2d_pixels(v, kernels, spec)?.into()),
        Data::Host(h) if !resident => Data::Host(engine.conv2d(&h, kernels, spec)?.into()),
        x => Data::Device(engine.conv2d_resident(&x.into_device(engine)?, kernels, spec)?),
    })
}

/// Filters every channel on its own with `(kh, kw, 1, k)` kernels, as one
/// depthwise convolution (`groups = c`, channel multiplier `k`). Returns
/// `(m, oh, ow, c * k)` with the `k` results of each channel adjacent.
fn per_channel<'a, T: Pixel>(
    engine: &Engine,
    x: Data<'a, T>,
    kernels: &Array4<f32>,
    spec: &Conv2dSpec,
    resident: bool,
) -> Result<Data<'a, T>> {
    let c = x.channels();
    let (kh, kw, _, k) = kernels.dim();
    // Output channel `ch * k + t` filters channel `ch` with kernel `t`.
    let tiled = Array4::from_shape_fn((kh, kw, 1, c * k), |(i, j, _, o)| kernels[[i, j, 0, o % k]]);
    conv(engine, x, &tiled, &spec.with_groups(c), resident)
}

/// Turns raw filtered values of one image into pixels in `0..=max`.
/// `input_range` is the (min, max) of the input image, for `Clamp`.
pub fn to_pixels(values: &Array3<f32>, scale: Scale, input_range: (f32, f32), max: f32) -> Array3<f32> {
    let stretch = |v: &Array3<f32>| {
        let (lo, hi) = v
            .iter()
            .filter(|x| x.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let span = hi - lo;
        v.mapv(|x| {
            if !x.is_finite() || span <= 0.0 {
                0.0
            } else {
                ((x - lo) / span * max).clamp(0.0, max)
            }
        })
    };
    match scale {
        Scale::Clamp => values.mapv(|x| {
            if x.is_nan() {
                0.0
            } else {
                x.clamp(input_range.0, input_range.1).clamp(0.0, max)
            }
        }),
        Scale::MinMax => stretch(values),
        Scale::Abs => stretch(&values.mapv(f32::abs)),
    }
}

/// The (min, max) of an image's values.
pub fn value_range(pixels: &Array3<f32>) -> (f32, f32) {
    pixels
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)))
}

/// Stacks images of one size and channel count into a batch; none, or
/// images of different shapes, are an error naming the shapes.
pub fn stack(images: &[&Image]) -> Result<Array4<f32>> {
    check_stack(images)?;
    let views: Vec<_> = images.iter().map(|i| i.pixels.view()).collect();
    ndarray::stack(Axis(0), &views).map_err(|e| Error::invalid("images", e.to_string()))
}

/// [`stack`] as the images' own 8- or 16-bit samples, `(m, h, w, c)` u16
/// (u8 values in 8-bit images): what a GPU uploads as its own bytes.
pub fn stack_samples(images: &[&Image]) -> Result<Samples> {
    check_stack(images)?;
    if images.iter().any(|i| i.sixteen_bit != images[0].sixteen_bit) {
        return Err(Error::invalid(
            "images",
            "a batch of samples holds images of one bit depth (8 and 16 bits given)",
        ));
    }
    let (h, w, c) = images[0].pixels.dim();
    let shape = (images.len(), h, w, c);
    // One pass over the images in order; each pixel is a whole number in
    // the format's range, so `as` is exact.
    fn collect<T>(images: &[&Image], shape: (usize, usize, usize, usize), to: fn(f32) -> T) -> Array4<T> {
        let values = images.iter().flat_map(|i| i.pixels.iter().map(|&v| to(v))).collect();
        Array4::from_shape_vec(shape, values).expect("images of one shape")
    }
    Ok(if images[0].sixteen_bit {
        Samples::U16(collect(images, shape, |v| v as u16))
    } else {
        Samples::U8(collect(images, shape, |v| v as u8))
    })
}

/// A batch of images in their own sample type.
#[derive(Debug, Clone, PartialEq)]
pub enum Samples {
    /// 8-bit images.
    U8(Array4<u8>),
    /// 16-bit images.
    U16(Array4<u16>),
}

fn check_stack(images: &[&Image]) -> Result<()> {
    let Some(first) = images.first() else {
        return Err(Error::invalid("images", "no image to stack"));
    };
    if let Some(other) = images.iter().find(|i| i.pixels.shape() != first.pixels.shape()) {
        return Err(Error::invalid(
            "images",
            format!(
                "a batch holds images of one shape: {:?} and {:?}",
                first.pixels.shape(),
                other.pixels.shape()
            ),
        ));
    }
    Ok(())
}

/// Image `i` of a batch result.
pub fn image_of(batch: &Array4<f32>, i: usize) -> Array3<f32> {
    batch.slice(s![i, .., .., ..]).to_owned()
}
