//! The seven functions of the classic numpy exercise, with its names,
//! argument order and output shapes: as free functions on the default
//! [`Engine::shared`], or as methods of [`Seed`] on any engine
//! (`engine.seed().convolve(...)`).
//!
//! Differences from the exercise are deliberate and follow SPEC.md: every
//! function uses the real output-size formula (the exercise's
//! `convolve_grayscale` forgot the stride), and bad input is an `Err`.

use ndarray::{Array3, Array4, AsArray, Axis, Ix2, Ix3, Ix4};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::shape::{Conv2dSpec, Padding, Pool2dSpec, PoolMode};

/// The `padding` argument of the exercise: `'same'`, `'valid'` or `(ph, pw)`.
///
/// The exercise's `'same'` is [`Padding::SeedSame`] (larger than TF's `SAME`),
/// and it is the default, as in the exercise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeedPadding {
    /// The exercise's `'same'`: [`Padding::SeedSame`].
    #[default]
    Same,
    /// No padding.
    Valid,
    /// `(ph, pw)` zeros on both sides.
    Explicit(usize, usize),
}

impl From<(usize, usize)> for SeedPadding {
    fn from((ph, pw): (usize, usize)) -> Self {
        SeedPadding::Explicit(ph, pw)
    }
}

impl std::str::FromStr for SeedPadding {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.parse::<Padding>()? {
            Padding::Valid => Ok(SeedPadding::Valid),
            Padding::Same | Padding::SeedSame => Ok(SeedPadding::Same),
            Padding::Symmetric(ph, pw) => Ok(SeedPadding::Explicit(ph, pw)),
            _ => Err(Error::InvalidPadding {
                text: text.to_string(),
                reason: "the exercise's functions take 'same', 'valid' or (ph, pw)".into(),
            }),
        }
    }
}

impl From<SeedPadding> for Padding {
    fn from(p: SeedPadding) -> Self {
        match p {
            SeedPadding::Same => Padding::SeedSame,
            SeedPadding::Valid => Padding::Valid,
            SeedPadding::Explicit(ph, pw) => Padding::Symmetric(ph, pw),
        }
    }
}

/// `(m, oh, ow, 1)` back to the exercise's `(m, oh, ow)`.
fn drop_channel(out: Array4<f32>) -> Array3<f32> {
    out.index_axis_move(Axis(3), 0)
}

/// The seven seed functions on one engine.
#[derive(Debug, Clone, Copy)]
pub struct Seed<'e> {
    engine: &'e Engine,
}

impl Engine {
    /// The seed exercise's functions running on this engine.
    pub fn seed(&self) -> Seed<'_> {
        Seed { engine: self }
    }
}

impl Seed<'_> {
    fn grayscale<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix3>,
        kernel: impl AsArray<'a, f32, Ix2>,
        spec: Conv2dSpec,
    ) -> Result<Array3<f32>> {
        let images = images.into().insert_axis(Axis(3));
        let kernel = kernel.into().insert_axis(Axis(2)).insert_axis(Axis(3));
        self.engine.conv2d(images, kernel, &spec).map(drop_channel)
    }

    /// See [`convolve_grayscale_valid`].
    pub fn convolve_grayscale_valid<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix3>,
        kernel: impl AsArray<'a, f32, Ix2>,
    ) -> Result<Array3<f32>> {
        self.grayscale(images, kernel, Conv2dSpec::new(Padding::Valid))
    }

    /// See [`convolve_grayscale_same`].
    pub fn convolve_grayscale_same<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix3>,
        kernel: impl AsArray<'a, f32, Ix2>,
    ) -> Result<Array3<f32>> {
        self.grayscale(images, kernel, Conv2dSpec::new(Padding::SameLower))
    }

    /// See [`convolve_grayscale_padding`].
    pub fn convolve_grayscale_padding<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix3>,
        kernel: impl AsArray<'a, f32, Ix2>,
        padding: (usize, usize),
    ) -> Result<Array3<f32>> {
        self.grayscale(
            images,
            kernel,
            Conv2dSpec::new(Padding::Symmetric(padding.0, padding.1)),
        )
    }

    /// See [`convolve_grayscale`].
    pub fn convolve_grayscale<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix3>,
        kernel: impl AsArray<'a, f32, Ix2>,
        padding: SeedPadding,
        stride: (usize, usize),
    ) -> Result<Array3<f32>> {
        let spec = Conv2dSpec::new(padding.into()).with_stride(stride.0, stride.1);
        self.grayscale(images, kernel, spec)
    }

    /// See [`convolve_channels`].
    pub fn convolve_channels<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix4>,
        kernel: impl AsArray<'a, f32, Ix3>,
        padding: SeedPadding,
        stride: (usize, usize),
    ) -> Result<Array3<f32>> {
        let spec = Conv2dSpec::new(padding.into()).with_stride(stride.0, stride.1);
        let kernel = kernel.into().insert_axis(Axis(3));
        self.engine.conv2d(images, kernel, &spec).map(drop_channel)
    }

    /// See [`convolve`].
    pub fn convolve<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix4>,
        kernels: impl AsArray<'a, f32, Ix4>,
        padding: SeedPadding,
        stride: (usize, usize),
    ) -> Result<Array4<f32>> {
        let spec = Conv2dSpec::new(padding.into()).with_stride(stride.0, stride.1);
        self.engine.conv2d(images, kernels, &spec)
    }

    /// See [`pool`].
    pub fn pool<'a>(
        &self,
        images: impl AsArray<'a, f32, Ix4>,
        kernel_shape: (usize, usize),
        stride: (usize, usize),
        mode: PoolMode,
    ) -> Result<Array4<f32>> {
        let spec = Pool2dSpec::new(mode, kernel_shape.0, kernel_shape.1).with_stride(stride.0, stride.1);
        self.engine.pool2d(images, &spec)
    }
}

/// Task 0: valid convolution of grayscale images `(m, h, w)` with a kernel
/// `(kh, kw)`; returns `(m, h - kh + 1, w - kw + 1)`.
pub fn convolve_grayscale_valid<'a>(
    images: impl AsArray<'a, f32, Ix3>,
    kernel: impl AsArray<'a, f32, Ix2>,
) -> Result<Array3<f32>> {
    Engine::shared()?.seed().convolve_grayscale_valid(images, kernel)
}

/// Task 1: same convolution of grayscale images; returns exactly `(m, h, w)`.
///
/// The exercise pads `(kh - 1) / 2` (odd) or `kh / 2` (even) on both sides and
/// drops the last rows/columns, which is [`Padding::SameLower`] at stride 1
/// (and equals `Same` for odd kernels).
pub fn convolve_grayscale_same<'a>(
    images: impl AsArray<'a, f32, Ix3>,
    kernel: impl AsArray<'a, f32, Ix2>,
) -> Result<Array3<f32>> {
    Engine::shared()?.seed().convolve_grayscale_same(images, kernel)
}

/// Task 2: grayscale convolution with `(ph, pw)` zeros on both sides.
pub fn convolve_grayscale_padding<'a>(
    images: impl AsArray<'a, f32, Ix3>,
    kernel: impl AsArray<'a, f32, Ix2>,
    padding: (usize, usize),
) -> Result<Array3<f32>> {
    Engine::shared()?
        .seed()
        .convolve_grayscale_padding(images, kernel, padding)
}

/// Task 3: grayscale convolution with padding and stride `(sh, sw)`.
/// The exercise's default padding is `'same'` ([`SeedPadding::default`]).
pub fn convolve_grayscale<'a>(
    images: impl AsArray<'a, f32, Ix3>,
    kernel: impl AsArray<'a, f32, Ix2>,
    padding: SeedPadding,
    stride: (usize, usize),
) -> Result<Array3<f32>> {
    Engine::shared()?
        .seed()
        .convolve_grayscale(images, kernel, padding, stride)
}

/// Task 4: images `(m, h, w, c)` with one kernel `(kh, kw, c)`; returns
/// `(m, oh, ow)`.
pub fn convolve_channels<'a>(
    images: impl AsArray<'a, f32, Ix4>,
    kernel: impl AsArray<'a, f32, Ix3>,
    padding: SeedPadding,
    stride: (usize, usize),
) -> Result<Array3<f32>> {
    Engine::shared()?
        .seed()
        .convolve_channels(images, kernel, padding, stride)
}

/// Task 5: images `(m, h, w, c)` with kernels `(kh, kw, c, nc)`; returns
/// `(m, oh, ow, nc)`.
pub fn convolve<'a>(
    images: impl AsArray<'a, f32, Ix4>,
    kernels: impl AsArray<'a, f32, Ix4>,
    padding: SeedPadding,
    stride: (usize, usize),
) -> Result<Array4<f32>> {
    Engine::shared()?.seed().convolve(images, kernels, padding, stride)
}

/// Task 6: max or average pooling of `(m, h, w, c)` with a `(kh, kw)` window
/// and stride `(sh, sw)`, no padding; returns `(m, oh, ow, c)`.
pub fn pool<'a>(
    images: impl AsArray<'a, f32, Ix4>,
    kernel_shape: (usize, usize),
    stride: (usize, usize),
    mode: PoolMode,
) -> Result<Array4<f32>> {
    Engine::shared()?.seed().pool(images, kernel_shape, stride, mode)
}
