//! All geometry of convpool: padding modes, specs, resolved pads, output sizes
//! and the validation of shapes.
//!
//! Every path (CPU reference, fast CPU, GPU, CLI) asks this module and nobody
//! else recomputes an output size, so the semantics of SPEC.md live in one
//! place. Layouts: images NHWC `(m, h, w, c)`, kernels HWIO `(kh, kw, c, nc)`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result, Shape};

/// How the border of an image is padded before a convolution or pooling.
///
/// | mode | top | bottom |
/// |---|---|---|
/// | `Valid` | 0 | 0 |
/// | `Symmetric(ph, pw)` | ph | ph |
/// | `Explicit { top, bottom, .. }` | top | bottom |
/// | `Same` (TF `SAME`, ONNX `SAME_UPPER`) | `total / 2` | `total - top` |
/// | `SameLower` (ONNX `SAME_LOWER`) | `total - total / 2` | `total / 2` |
/// | `SeedSame` | `((h - 1) * sh + ekh - h) / 2 + 1` | same as top |
///
/// with `total = max((ceil(h / sh) - 1) * sh + ekh - h, 0)` and the dilated
/// kernel extent `ekh = (kh - 1) * dh + 1`. Width works the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding.
    #[default]
    Valid,
    /// Output `ceil(h / sh)`, extra padding at the end (TF `SAME`).
    Same,
    /// Output `ceil(h / sh)`, extra padding at the start (ONNX `SAME_LOWER`).
    SameLower,
    /// The `'same'` of the seed exercise's strided functions: larger than
    /// `Same` (a 3x3 kernel at stride 1 gives `h + 2` rows).
    SeedSame,
    /// `(ph, pw)` on both sides of each axis.
    Symmetric(usize, usize),
    /// Asymmetric pads, as ONNX `pads`.
    Explicit {
        /// Rows added above.
        top: usize,
        /// Rows added below.
        bottom: usize,
        /// Columns added on the left.
        left: usize,
        /// Columns added on the right.
        right: usize,
    },
}

impl FromStr for Padding {
    type Err = Error;

    /// Parses `valid`, `same` (or `same_upper`), `same_lower`, `seed_same`,
    /// `PH,PW` or `T,B,L,R` (whole numbers, not negative).
    fn from_str(text: &str) -> Result<Self> {
        let refuse = |reason: &str| Error::InvalidPadding {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let t = text.trim().to_ascii_lowercase().replace('-', "_");
        match t.as_str() {
            "valid" => return Ok(Padding::Valid),
            "same" | "same_upper" => return Ok(Padding::Same),
            "same_lower" => return Ok(Padding::SameLower),
            "seed_same" => return Ok(Padding::SeedSame),
            _ => {}
        }
        let pads = text
            .split(',')
            .map(|p| {
                let p = p.trim();
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(refuse(
                        "expected valid, same, same_lower, seed_same, PH,PW or T,B,L,R \
                         with non-negative whole numbers",
                    ));
                }
                p.parse::<usize>().map_err(|_| refuse("a pad is too large"))
            })
            .collect::<Result<Vec<usize>>>()?;
        match pads[..] {
            [ph, pw] => Ok(Padding::Symmetric(ph, pw)),
            [top, bottom, left, right] => Ok(Padding::Explicit {
                top,
                bottom,
                left,
                right,
            }),
            _ => Err(refuse(&format!(
                "expected 2 numbers (PH,PW) or 4 (T,B,L,R), got {}",
                pads.len()
            ))),
        }
    }
}

impl fmt::Display for Padding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Padding::Valid => f.write_str("valid"),
            Padding::Same => f.write_str("same"),
            Padding::SameLower => f.write_str("same_lower"),
            Padding::SeedSame => f.write_str("seed_same"),
            Padding::Symmetric(ph, pw) => write!(f, "{ph},{pw}"),
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } => write!(f, "{top},{bottom},{left},{right}"),
        }
    }
}

/// Resolved pads of one call, in rows/columns of zeros (or of "never wins"
/// cells for max pooling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pads {
    /// Rows above the image.
    pub top: usize,
    /// Rows below the image.
    pub bottom: usize,
    /// Columns left of the image.
    pub left: usize,
    /// Columns right of the image.
    pub right: usize,
}

impl Pads {
    /// `[top, bottom, left, right]`, the order of ONNX and of the goldens.
    pub fn tblr(&self) -> [usize; 4] {
        [self.top, self.bottom, self.left, self.right]
    }
}

/// `(outputs - 1) * stride + extent`, saturating.
fn span(outputs: usize, stride: usize, extent: usize) -> usize {
    outputs.saturating_sub(1).saturating_mul(stride).saturating_add(extent)
}

/// Dilated extent `(k - 1) * d + 1`.
fn extent(k: usize, d: usize, what: &'static str) -> Result<usize> {
    (k - 1)
        .checked_mul(d)
        .and_then(|e| e.checked_add(1))
        .ok_or_else(|| Error::Overflow {
            what,
            detail: format!("dilated extent of size {k} with dilation {d}"),
        })
}

fn overflow(what: &'static str, detail: String) -> Error {
    Error::Overflow { what, detail }
}

/// Pads at the start and end of one axis for a padding mode.
fn axis_pads(padding: Padding, vertical: bool, size: usize, ext: usize, stride: usize) -> Result<(usize, usize)> {
    let of = || overflow("padding", format!("size {size}, extent {ext}, stride {stride}"));
    Ok(match padding {
        Padding::Valid => (0, 0),
        Padding::Symmetric(ph, pw) => {
            let p = if vertical { ph } else { pw };
            (p, p)
        }
        Padding::Explicit {
            top,
            bottom,
            left,
            right,
        } => {
            if vertical {
                (top, bottom)
            } else {
                (left, right)
            }
        }
        Padding::Same | Padding::SameLower => {
            let out = size.div_ceil(stride);
            let covered = (out - 1)
                .checked_mul(stride)
                .and_then(|v| v.checked_add(ext))
                .ok_or_else(of)?;
            let total = covered.saturating_sub(size);
            if padding == Padding::Same {
                (total / 2, total - total / 2)
            } else {
                (total - total / 2, total / 2)
            }
        }
        Padding::SeedSame => {
            // (h - 1) * sh + ekh - h is never negative for h, sh, ekh >= 1.
            let p = (size - 1)
                .checked_mul(stride)
                .and_then(|v| v.checked_add(ext))
                .ok_or_else(of)?
                - size;
            (p / 2 + 1, p / 2 + 1)
        }
    })
}

/// Output length of one axis, or `None` when the extent does not fit the
/// padded size. `ceil_mode` follows PyTorch/ONNX, including the rule that
/// drops a last window that would start in the end padding.
fn axis_out(size: usize, pads: (usize, usize), ext: usize, stride: usize, ceil: bool) -> Option<usize> {
    let padded = size.checked_add(pads.0)?.checked_add(pads.1)?;
    let span = padded.checked_sub(ext)?;
    if !ceil {
        return Some(span / stride + 1);
    }
    let mut out = span.div_ceil(stride) + 1;
    if (out - 1) * stride >= size + pads.0 {
        out -= 1;
    }
    Some(out)
}

/// Turns an image shape `(m, h, w)` or `(m, h, w, c)` into NHWC.
pub fn images_nhwc(shape: &[usize]) -> Result<[usize; 4]> {
    let nhwc = match *shape {
        [m, h, w] => [m, h, w, 1],
        [m, h, w, c] => [m, h, w, c],
        _ => {
            return Err(Error::Rank {
                arg: "images",
                expected: "(m, h, w) or (m, h, w, c)",
                shape: shape.into(),
            })
        }
    };
    for (dim, name) in nhwc[1..].iter().zip(["height", "width", "channels"]) {
        if *dim == 0 {
            return Err(Error::EmptyDimension {
                arg: "images",
                dim: name,
                shape: shape.into(),
            });
        }
    }
    checked_elems("images", &nhwc)?;
    Ok(nhwc)
}

/// Turns a kernel shape `(kh, kw)`, `(kh, kw, c)` or `(kh, kw, c, nc)` into
/// HWIO.
pub fn kernels_hwio(shape: &[usize]) -> Result<[usize; 4]> {
    let hwio = match *shape {
        [kh, kw] => [kh, kw, 1, 1],
        [kh, kw, c] => [kh, kw, c, 1],
        [kh, kw, c, nc] => [kh, kw, c, nc],
        _ => {
            return Err(Error::Rank {
                arg: "kernels",
                expected: "(kh, kw), (kh, kw, c) or (kh, kw, c, nc)",
                shape: shape.into(),
            })
        }
    };
    for (dim, name) in hwio.iter().zip(["height", "width", "channels", "count"]) {
        if *dim == 0 {
            return Err(Error::EmptyDimension {
                arg: "kernels",
                dim: name,
                shape: shape.into(),
            });
        }
    }
    checked_elems("kernels", &hwio)?;
    Ok(hwio)
}

/// Element count of a shape, refusing overflow.
pub fn checked_elems(what: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| overflow(what, format!("element count of shape {}", Shape::from(shape))))
}

fn nonzero(arg: &'static str, value: (usize, usize)) -> Result<()> {
    if value.0 == 0 || value.1 == 0 {
        return Err(Error::ZeroParameter { arg, value });
    }
    Ok(())
}

/// A 2-D convolution: stride, dilation and padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dSpec {
    /// `(sh, sw)`, each at least 1.
    pub stride: (usize, usize),
    /// `(dh, dw)`, each at least 1.
    pub dilation: (usize, usize),
    /// How the border is padded.
    pub padding: Padding,
}

impl Default for Conv2dSpec {
    fn default() -> Self {
        Conv2dSpec {
            stride: (1, 1),
            dilation: (1, 1),
            padding: Padding::Valid,
        }
    }
}

impl Conv2dSpec {
    /// Stride 1, dilation 1 and the given padding.
    pub fn new(padding: Padding) -> Self {
        Conv2dSpec {
            padding,
            ..Default::default()
        }
    }

    /// The same spec with another stride.
    pub fn with_stride(mut self, sh: usize, sw: usize) -> Self {
        self.stride = (sh, sw);
        self
    }

    /// The same spec with another dilation.
    pub fn with_dilation(mut self, dh: usize, dw: usize) -> Self {
        self.dilation = (dh, dw);
        self
    }

    /// The same spec with another padding.
    pub fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Validates the spec against NHWC images and HWIO kernels and resolves
    /// the pads and output size.
    pub fn resolve(&self, images_nhwc: [usize; 4], kernels_hwio: [usize; 4]) -> Result<Conv2dGeometry> {
        let [m, h, w, c] = images_nhwc;
        let [kh, kw, kc, nc] = kernels_hwio;
        check_images(images_nhwc)?;
        let kernels = Shape::from(kernels_hwio);
        for (dim, name) in [(kh, "height"), (kw, "width"), (kc, "channels"), (nc, "count")] {
            if dim == 0 {
                return Err(Error::EmptyDimension {
                    arg: "kernels",
                    dim: name,
                    shape: kernels,
                });
            }
        }
        if c != kc {
            return Err(Error::ChannelMismatch {
                images: Shape::from(images_nhwc),
                kernels,
                image_channels: c,
                kernel_channels: kc,
            });
        }
        let win = resolve_window(
            "kernels",
            kernels,
            images_nhwc,
            (kh, kw),
            self.stride,
            self.dilation,
            self.padding,
            None,
        )?;
        checked_elems("output", &[m, win.oh, win.ow, nc])?;
        Ok(Conv2dGeometry {
            m,
            h,
            w,
            c,
            kh,
            kw,
            nc,
            sh: self.stride.0,
            sw: self.stride.1,
            dh: self.dilation.0,
            dw: self.dilation.1,
            pads: win.pads,
            oh: win.oh,
            ow: win.ow,
        })
    }
}

/// Images must have at least one row, column and channel (the batch may be
/// empty).
fn check_images(images_nhwc: [usize; 4]) -> Result<()> {
    let [_, h, w, c] = images_nhwc;
    for (dim, name) in [(h, "height"), (w, "width"), (c, "channels")] {
        if dim == 0 {
            return Err(Error::EmptyDimension {
                arg: "images",
                dim: name,
                shape: Shape::from(images_nhwc),
            });
        }
    }
    Ok(())
}

/// Pads and output size of a window (kernel or pooling window) sliding over
/// the images: the part both resolutions share. `pool_ceil_mode` is
/// `Some(ceil_mode)` for pooling (whose pads must stay inside the window) and
/// `None` for convolution.
struct Resolved {
    pads: Pads,
    oh: usize,
    ow: usize,
}

#[allow(clippy::too_many_arguments)]
fn resolve_window(
    arg: &'static str,
    window: Shape,
    images_nhwc: [usize; 4],
    (kh, kw): (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    padding: Padding,
    pool_ceil_mode: Option<bool>,
) -> Result<Resolved> {
    let [_, h, w, _] = images_nhwc;
    let images = Shape::from(images_nhwc);
    nonzero("stride", stride)?;
    nonzero("dilation", dilation)?;
    let ((sh, sw), (dh, dw)) = (stride, dilation);
    let ekh = extent(kh, dh, "kernel height")?;
    let ekw = extent(kw, dw, "kernel width")?;
    let (top, bottom) = axis_pads(padding, true, h, ekh, sh)?;
    let (left, right) = axis_pads(padding, false, w, ekw, sw)?;
    let pads = Pads {
        top,
        bottom,
        left,
        right,
    };
    // Pooling pads must leave no window wholly in padding (PyTorch, ONNX).
    if pool_ceil_mode.is_some() && (top >= ekh || bottom >= ekh || left >= ekw || right >= ekw) {
        return Err(Error::PoolPaddingTooLarge {
            pads: pads.tblr(),
            extent: (ekh, ekw),
            window,
            images,
        });
    }
    let ceil = pool_ceil_mode.unwrap_or(false);
    let too_large = || Error::KernelTooLarge {
        arg,
        kernel: window.clone(),
        extent: (ekh, ekw),
        padded: (
            h.saturating_add(top).saturating_add(bottom),
            w.saturating_add(left).saturating_add(right),
        ),
        images: images.clone(),
        pads: pads.tblr(),
    };
    let oh = axis_out(h, (top, bottom), ekh, sh, ceil).ok_or_else(too_large)?;
    let ow = axis_out(w, (left, right), ekw, sw, ceil).ok_or_else(too_large)?;
    Ok(Resolved { pads, oh, ow })
}

/// A convolution with every number resolved: the contract between the
/// shape module and the compute paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Batch size (may be 0).
    pub m: usize,
    /// Image height.
    pub h: usize,
    /// Image width.
    pub w: usize,
    /// Channels of images and kernels.
    pub c: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Number of kernels (output channels).
    pub nc: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Vertical dilation.
    pub dh: usize,
    /// Horizontal dilation.
    pub dw: usize,
    /// Resolved pads.
    pub pads: Pads,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl Conv2dGeometry {
    /// NHWC output shape `(m, oh, ow, nc)`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.m, self.oh, self.ow, self.nc]
    }

    /// NHWC input shape.
    pub fn input_shape(&self) -> [usize; 4] {
        [self.m, self.h, self.w, self.c]
    }

    /// HWIO kernel shape.
    pub fn kernel_shape(&self) -> [usize; 4] {
        [self.kh, self.kw, self.c, self.nc]
    }

    /// Floating-point operations, `2 * m * oh * ow * kh * kw * c * nc`.
    pub fn flops(&self) -> f64 {
        2.0 * [self.m, self.oh, self.ow, self.kh, self.kw, self.c, self.nc]
            .iter()
            .map(|&v| v as f64)
            .product::<f64>()
    }

    /// Dilated kernel extent `((kh - 1) * dh + 1, (kw - 1) * dw + 1)`:
    /// the input rows and columns one output reads.
    pub fn extent(&self) -> (usize, usize) {
        ((self.kh - 1) * self.dh + 1, (self.kw - 1) * self.dw + 1)
    }

    /// Padded columns a row of outputs reads, `(ow - 1) * sw + ekw`
    /// (saturating: hostile strides must not overflow).
    pub fn span_cols(&self) -> usize {
        span(self.ow, self.sw, self.extent().1)
    }

    /// A 1x1 kernel at stride 1 without padding: output pixel `p` is input
    /// pixel `p`, so the convolution is one GEMM of the image matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.pads == Pads::default()
    }

    /// Reduction length per output, `kh * kw * c` (the tolerance of SPEC.md
    /// scales with it).
    pub fn reduction_len(&self) -> usize {
        self.kh * self.kw * self.c
    }
}

/// Max or average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolMode {
    /// Largest value in the window; NaN beats every number; padding never wins.
    #[default]
    Max,
    /// Arithmetic mean over the window.
    Avg,
}

impl FromStr for PoolMode {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "max" => Ok(PoolMode::Max),
            "avg" | "average" | "mean" => Ok(PoolMode::Avg),
            _ => Err(Error::invalid("mode", format!("expected max or avg, got {text:?}"))),
        }
    }
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolMode::Max => "max",
            PoolMode::Avg => "avg",
        })
    }
}

/// The pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// `(kh, kw)` cells.
    Fixed(usize, usize),
    /// The whole image: one output per image and channel.
    Global,
}

/// A 2-D pooling: window, stride, dilation, padding and the options of
/// PyTorch/ONNX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dSpec {
    /// The window.
    pub window: Window,
    /// `(sh, sw)`; `None` means equal to the window (PyTorch and TF default).
    pub stride: Option<(usize, usize)>,
    /// `(dh, dw)`, each at least 1.
    pub dilation: (usize, usize),
    /// How the border is padded. Pads must be smaller than the dilated window.
    pub padding: Padding,
    /// Max or average.
    pub mode: PoolMode,
    /// Round the output size up (PyTorch/ONNX `ceil_mode`).
    pub ceil_mode: bool,
    /// Average over every cell of the padded input in the window, not only
    /// the real image cells.
    pub count_include_pad: bool,
}

impl Pool2dSpec {
    /// A `(kh, kw)` window, stride equal to the window, no padding.
    pub fn new(mode: PoolMode, kh: usize, kw: usize) -> Self {
        Pool2dSpec {
            window: Window::Fixed(kh, kw),
            stride: None,
            dilation: (1, 1),
            padding: Padding::Valid,
            mode,
            ceil_mode: false,
            count_include_pad: false,
        }
    }

    /// Global pooling over the whole image.
    pub fn global(mode: PoolMode) -> Self {
        Pool2dSpec {
            window: Window::Global,
            ..Pool2dSpec::new(mode, 1, 1)
        }
    }

    /// The same spec with another stride.
    pub fn with_stride(mut self, sh: usize, sw: usize) -> Self {
        self.stride = Some((sh, sw));
        self
    }

    /// The same spec with another dilation.
    pub fn with_dilation(mut self, dh: usize, dw: usize) -> Self {
        self.dilation = (dh, dw);
        self
    }

    /// The same spec with another padding.
    pub fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// The same spec with `ceil_mode` set as given.
    pub fn with_ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.ceil_mode = ceil_mode;
        self
    }

    /// The same spec with `count_include_pad` set as given.
    pub fn with_count_include_pad(mut self, count_include_pad: bool) -> Self {
        self.count_include_pad = count_include_pad;
        self
    }

    /// Validates the spec against NHWC images and resolves pads and output.
    pub fn resolve(&self, images_nhwc: [usize; 4]) -> Result<Pool2dGeometry> {
        let [m, h, w, c] = images_nhwc;
        check_images(images_nhwc)?;
        let (global, (kh, kw)) = match self.window {
            Window::Fixed(kh, kw) => (false, (kh, kw)),
            Window::Global => (true, (h, w)),
        };
        nonzero("window", (kh, kw))?;
        let stride = if global {
            (1, 1)
        } else {
            self.stride.unwrap_or((kh, kw))
        };
        let dilation = if global { (1, 1) } else { self.dilation };
        let padding = if global { Padding::Valid } else { self.padding };
        let win = resolve_window(
            "window",
            Shape::from([kh, kw]),
            images_nhwc,
            (kh, kw),
            stride,
            dilation,
            padding,
            Some(self.ceil_mode),
        )?;
        checked_elems("output", &[m, win.oh, win.ow, c])?;
        Ok(Pool2dGeometry {
            m,
            h,
            w,
            c,
            kh,
            kw,
            sh: stride.0,
            sw: stride.1,
            dh: dilation.0,
            dw: dilation.1,
            pads: win.pads,
            oh: win.oh,
            ow: win.ow,
            mode: self.mode,
            count_include_pad: self.count_include_pad,
        })
    }
}

/// A pooling with every number resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dGeometry {
    /// Batch size (may be 0).
    pub m: usize,
    /// Image height.
    pub h: usize,
    /// Image width.
    pub w: usize,
    /// Channels (pooled independently).
    pub c: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Vertical dilation.
    pub dh: usize,
    /// Horizontal dilation.
    pub dw: usize,
    /// Resolved pads.
    pub pads: Pads,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Max or average.
    pub mode: PoolMode,
    /// Whether the average divides by the padded-input cells of the window.
    pub count_include_pad: bool,
}

impl Pool2dGeometry {
    /// NHWC output shape `(m, oh, ow, c)`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.m, self.oh, self.ow, self.c]
    }

    /// NHWC input shape.
    pub fn input_shape(&self) -> [usize; 4] {
        [self.m, self.h, self.w, self.c]
    }

    /// Dilated window extent `((kh - 1) * dh + 1, (kw - 1) * dw + 1)`.
    pub fn extent(&self) -> (usize, usize) {
        ((self.kh - 1) * self.dh + 1, (self.kw - 1) * self.dw + 1)
    }

    /// Padded columns a row of outputs reads, `(ow - 1) * sw + ekw`
    /// (saturating: hostile strides must not overflow).
    pub fn span_cols(&self) -> usize {
        span(self.ow, self.sw, self.extent().1)
    }

    /// The divisor of the average at output `(oy, ox)`: the window's taps
    /// that hit real image cells or, with `count_include_pad`, cells of the
    /// padded input (never the cells past it that `ceil_mode` adds). It is
    /// the product of [`Pool2dGeometry::divisor_rows`] and
    /// [`Pool2dGeometry::divisor_cols`]; written once here so every CPU path
    /// applies the same rule.
    pub fn divisor(&self, oy: usize, ox: usize) -> f64 {
        (self.divisor_rows(oy) * self.divisor_cols(ox)) as f64
    }

    /// Rows of the window at output row `oy` that count for the divisor.
    pub fn divisor_rows(&self, oy: usize) -> usize {
        self.counted_taps(oy, self.sh, self.kh, self.dh, self.h, self.pads.top, self.pads.bottom)
    }

    /// Columns of the window at output column `ox` that count for the divisor.
    pub fn divisor_cols(&self, ox: usize) -> usize {
        self.counted_taps(ox, self.sw, self.kw, self.dw, self.w, self.pads.left, self.pads.right)
    }

    #[allow(clippy::too_many_arguments)]
    fn counted_taps(&self, o: usize, s: usize, k: usize, d: usize, len: usize, p0: usize, p1: usize) -> usize {
        let start = (o * s) as i64 - p0 as i64;
        let (lo, hi) = if self.count_include_pad {
            (-(p0 as i64), (len + p1) as i64)
        } else {
            (0, len as i64)
        };
        (0..k)
            .map(|i| start + (i * d) as i64)
            .filter(|&y| y >= lo && y < hi)
            .count()
    }
}

#[cfg(test)]
#[path = "shape_tests.rs"]
mod tests;
