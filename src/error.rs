//! The one error type of the crate.
//!
//! Every variant names the argument it is about and the shapes involved, so a
//! message read on its own (in a log, on a terminal) says what to fix.

use std::fmt;

/// Shorthand for `std::result::Result<T, convpool::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A shape written the way numpy prints it, `(2, 8, 8, 3)`, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape(Box<[usize]>);

impl Shape {
    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() == 1 {
            f.write_str(",")?;
        }
        f.write_str(")")
    }
}

impl From<&[usize]> for Shape {
    fn from(dims: &[usize]) -> Self {
        Shape(dims.into())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(dims: [usize; N]) -> Self {
        Shape(dims.into())
    }
}

/// Everything that can go wrong in convpool.
///
/// Validation errors are raised before any work starts (in particular before
/// anything is uploaded to a GPU), so an `Err` never leaves partial results.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An array has the wrong number of dimensions.
    #[error("{arg}: expected {expected}, got an array of shape {shape} ({} dimensions)", shape.dims().len())]
    Rank {
        /// Which argument (`images`, `kernels`, ...).
        arg: &'static str,
        /// What was expected, e.g. `(m, h, w, c)`.
        expected: &'static str,
        /// The shape that was passed.
        shape: Shape,
    },

    /// A dimension that must be at least 1 is 0.
    #[error("{arg}: {dim} must be at least 1, got shape {shape}")]
    EmptyDimension {
        /// Which argument.
        arg: &'static str,
        /// Which dimension (`height`, `channels`, ...).
        dim: &'static str,
        /// The shape that was passed.
        shape: Shape,
    },

    /// The channel count of the images and of the kernels differ.
    #[error("channel mismatch: images {images} have {image_channels} channels but kernels {kernels} expect {kernel_channels}")]
    ChannelMismatch {
        /// Shape of the images, NHWC.
        images: Shape,
        /// Shape of the kernels, HWIO.
        kernels: Shape,
        /// `c` of the images.
        image_channels: usize,
        /// `c` of the kernels.
        kernel_channels: usize,
    },

    /// A stride, dilation or window entry is zero.
    #[error("{arg} must be at least 1 in each dimension, got ({}, {})", value.0, value.1)]
    ZeroParameter {
        /// `stride`, `dilation` or `window`.
        arg: &'static str,
        /// The value that was passed.
        value: (usize, usize),
    },

    /// The (dilated) kernel or window does not fit in the padded image, so
    /// the output would have fewer than one row or column.
    #[error("{arg} {kernel} (dilated extent {}x{}) is larger than the padded image {}x{} (images {images}, pads top/bottom/left/right {pads:?}): the output would be empty",
        extent.0, extent.1, padded.0, padded.1)]
    KernelTooLarge {
        /// `kernels` or `window`.
        arg: &'static str,
        /// Kernel or window shape.
        kernel: Shape,
        /// Dilated kernel height and width.
        extent: (usize, usize),
        /// Padded image height and width.
        padded: (usize, usize),
        /// Shape of the images.
        images: Shape,
        /// The resolved pads.
        pads: [usize; 4],
    },

    /// A pooling pad is as large as the dilated window, so whole windows would
    /// lie in padding (PyTorch and ONNX refuse this too).
    #[error("padding: pooling pads top/bottom/left/right {pads:?} must each be smaller than the dilated window {}x{} (window {window}, images {images})", extent.0, extent.1)]
    PoolPaddingTooLarge {
        /// The resolved pads.
        pads: [usize; 4],
        /// Dilated window height and width.
        extent: (usize, usize),
        /// The window shape.
        window: Shape,
        /// Shape of the images.
        images: Shape,
    },

    /// A size computation overflows `usize` (or a device's 32-bit indexing).
    #[error("{what} overflows: {detail}")]
    Overflow {
        /// What was being computed.
        what: &'static str,
        /// The shapes and parameters involved.
        detail: String,
    },

    /// A padding description could not be understood.
    #[error("padding: cannot parse {text:?}: {reason}")]
    InvalidPadding {
        /// The text that was given.
        text: String,
        /// Why it was refused.
        reason: String,
    },

    /// Any other argument that is out of its domain.
    #[error("{arg}: {}", line(message))]
    InvalidArgument {
        /// Which argument.
        arg: &'static str,
        /// What is wrong with it.
        message: String,
    },

    /// A file could not be read or written.
    #[error("{}: {}", line(path), line(&source.to_string()))]
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A `.npy` file is malformed, truncated or of an unsupported dtype.
    #[error("{}: {}", line(path), line(message))]
    Npy {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },

    /// An image file could not be decoded (corrupt, truncated, unsupported).
    #[error("{}: cannot decode: {}", line(path), line(message))]
    Decode {
        /// The file.
        path: String,
        /// What the decoder said.
        message: String,
    },

    /// `Device::Gpu` was asked for but no usable adapter exists.
    #[error("no GPU adapter found: {}", line(.0))]
    NoAdapter(String),

    /// The GPU reported an error (device lost, out of memory, validation).
    #[error("GPU error: {}", line(.0))]
    Gpu(String),

    /// Verify mode found a result outside the tolerance of SPEC.md.
    #[error("verify: {op} on the {path} differs from the CPU reference by {max_abs_diff:e} at index {index:?} (got {got}, reference {reference}; allowed {tolerance:e})")]
    VerifyMismatch {
        /// `conv2d` or `pool2d`.
        op: &'static str,
        /// `GPU` or `fast CPU path`.
        path: &'static str,
        /// Largest absolute difference (NaN/inf mismatches count as infinite).
        max_abs_diff: f64,
        /// NHWC index of the largest difference.
        index: [usize; 4],
        /// Value of the checked path there.
        got: f32,
        /// Reference value there.
        reference: f32,
        /// The tolerance that was exceeded.
        tolerance: f64,
    },
}

/// Text from outside (a file name, a decoder's or driver's message) as part
/// of a one-line message: line breaks become "; ", other control
/// characters are escaped, trailing blanks dropped.
fn line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for part in text
        .split(['\n', '\r'])
        .map(str::trim_end)
        .filter(|p| !p.trim().is_empty())
    {
        if !out.is_empty() {
            out.push_str("; ");
        }
        for ch in part.chars() {
            if ch.is_control() {
                out.extend(ch.escape_default());
            } else {
                out.push(ch);
            }
        }
    }
    out
}

impl Error {
    /// Helper for [`Error::InvalidArgument`].
    pub fn invalid(arg: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            arg,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text from outside never breaks an error over lines (found by the
    /// `parsers` and `image` fuzz targets: a file name with a newline and
    /// NULs, a JPEG decoder's message ending in a newline).
    #[test]
    fn outside_text_stays_on_one_line() {
        let e = Error::Io {
            path: "k\n\0\0\0".into(),
            source: std::io::Error::other("file name contained an unexpected NUL byte"),
        };
        assert_eq!(
            e.to_string(),
            "k; \\u{0}\\u{0}\\u{0}: file name contained an unexpected NUL byte"
        );
        let e = Error::Decode {
            path: "x.img".into(),
            message: "Format error decoding Jpeg: I/O errors Not enough bytes\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "x.img: cannot decode: Format error decoding Jpeg: I/O errors Not enough bytes"
        );
        assert_eq!(Error::Gpu("a\r\nb".into()).to_string(), "GPU error: a; b");
    }
}
