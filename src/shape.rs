//! All geometry of convpool: padding modes, specs, resolved pads, output sizes
//! and the validation of shapes.
//!
//! Every path (CPU reference, fast CPU, GPU, CLI) asks this module and nobody
//! else recomputes an output size, so the semantics of SPEC.md live in one
//! place. Layouts: images NHWC `(m, h, w, c)`, kernels HWIO `(kh, kw, c, nc)`.

use std::fmt;
use std::str::FromStr;

use crate::epilogue::Activation;
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
        Padding::from_pads(&pads).ok_or_else(|| {
            refuse(&format!(
                "expected 2 numbers (PH,PW) or 4 (T,B,L,R), got {}",
                pads.len()
            ))
        })
    }
}

impl Padding {
    /// `[ph, pw]` (both sides of each axis) or `[top, bottom, left, right]`;
    /// `None` for any other count.
    pub fn from_pads(pads: &[usize]) -> Option<Padding> {
        match *pads {
            [ph, pw] => Some(Padding::Symmetric(ph, pw)),
            [top, bottom, left, right] => Some(Padding::Explicit {
                top,
                bottom,
                left,
                right,
            }),
            _ => None,
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

/// What the padded cells of a convolution hold (SPEC.md "Border modes").
/// The pads themselves still come from [`Padding`]; index `j` runs over the
/// image's `n` cells, negative or past the end in the padding.
///
/// | mode | cell at `j < 0` or `j >= n` | numpy.pad | OpenCV |
/// |---|---|---|---|
/// | `Zeros` | 0 | constant | BORDER_CONSTANT |
/// | `Reflect` | mirror without the edge (`-1 -> 1`) | reflect | BORDER_REFLECT_101 |
/// | `Symmetric` | mirror with the edge (`-1 -> 0`) | symmetric | BORDER_REFLECT |
/// | `Replicate` | nearest edge cell | edge | BORDER_REPLICATE |
/// | `Circular` | `j mod n` | wrap | BORDER_WRAP |
///
/// `Reflect` needs every pad `<= n - 1`, `Symmetric` and `Circular` every
/// pad `<= n` (one reflection, never repeated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum PaddingMode {
    /// Zeros (the default; what convolution always did).
    #[default]
    Zeros,
    /// Mirror without repeating the edge cell.
    Reflect,
    /// Mirror repeating the edge cell.
    Symmetric,
    /// The nearest edge cell.
    Replicate,
    /// Wrap around.
    Circular,
}

impl PaddingMode {
    /// Every mode, in the order of SPEC.md.
    pub const ALL: [PaddingMode; 5] = [
        PaddingMode::Zeros,
        PaddingMode::Reflect,
        PaddingMode::Symmetric,
        PaddingMode::Replicate,
        PaddingMode::Circular,
    ];

    /// The image cell that padded index `j` (relative to the image's first
    /// cell) holds on an axis of `n` cells, or `None` for a zero. `j` must
    /// lie within the pads this mode accepts ([`PaddingMode::max_pad`]).
    #[inline]
    pub fn source(self, j: i64, n: usize) -> Option<usize> {
        let n = n as i64;
        if (0..n).contains(&j) {
            return Some(j as usize);
        }
        let k = match self {
            PaddingMode::Zeros => return None,
            PaddingMode::Reflect if j < 0 => -j,
            PaddingMode::Reflect => 2 * (n - 1) - j,
            PaddingMode::Symmetric if j < 0 => -j - 1,
            PaddingMode::Symmetric => 2 * n - 1 - j,
            PaddingMode::Replicate => j.clamp(0, n - 1),
            PaddingMode::Circular => j.rem_euclid(n),
        };
        debug_assert!((0..n).contains(&k), "{self} maps {j} outside 0..{n}");
        Some(k.clamp(0, n - 1) as usize)
    }

    /// The largest pad this mode accepts on an axis of `n` cells (`None`:
    /// any).
    pub fn max_pad(self, n: usize) -> Option<usize> {
        match self {
            PaddingMode::Zeros | PaddingMode::Replicate => None,
            PaddingMode::Reflect => Some(n - 1),
            PaddingMode::Symmetric | PaddingMode::Circular => Some(n),
        }
    }

    /// The mode's number in the GPU's params (`shaders/common.wgsl`).
    pub fn code(self) -> u32 {
        self as u32
    }
}

impl FromStr for PaddingMode {
    type Err = Error;

    /// Parses `zeros`, `reflect`, `symmetric`, `replicate` or `circular`.
    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "zeros" => Ok(PaddingMode::Zeros),
            "reflect" => Ok(PaddingMode::Reflect),
            "symmetric" => Ok(PaddingMode::Symmetric),
            "replicate" => Ok(PaddingMode::Replicate),
            "circular" => Ok(PaddingMode::Circular),
            _ => Err(Error::invalid(
                "padding_mode",
                format!("expected zeros, reflect, symmetric, replicate or circular, got {text:?}"),
            )),
        }
    }
}

impl fmt::Display for PaddingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PaddingMode::Zeros => "zeros",
            PaddingMode::Reflect => "reflect",
            PaddingMode::Symmetric => "symmetric",
            PaddingMode::Replicate => "replicate",
            PaddingMode::Circular => "circular",
        })
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
    let Some(span) = padded.checked_sub(ext) else {
        // ceil((padded - ext) / stride) + 1 with a negative numerator is 1
        // while the window overhangs the padded input by less than a
        // stride (PyTorch and ONNX return that one window), else 0.
        return (ceil && ext - padded < stride).then_some(1);
    };
    if !ceil {
        return Some(span / stride + 1);
    }
    let mut out = span.div_ceil(stride) + 1;
    if (out - 1) * stride >= size + pads.0 {
        out -= 1;
    }
    Some(out)
}

/// Strides and dilations as [`Conv2dGeometry::normalised`] leaves them: a
/// stride past the padded extent (one output on the axis) cut to it, the
/// dilation of a one-tap axis 1.
fn normal_steps(
    h: usize,
    w: usize,
    pads: Pads,
    (oh, ow): (usize, usize),
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    (dh, dw): (usize, usize),
) -> ((usize, usize), (usize, usize)) {
    let stride = |out: usize, s: usize, padded: usize| if out == 1 && s > padded { padded.max(1) } else { s };
    let ph = h.saturating_add(pads.top).saturating_add(pads.bottom);
    let pw = w.saturating_add(pads.left).saturating_add(pads.right);
    (
        (stride(oh, sh, ph), stride(ow, sw, pw)),
        (if kh == 1 { 1 } else { dh }, if kw == 1 { 1 } else { dw }),
    )
}

/// Cells of one padded image plane, exactly (pads may be near usize::MAX).
fn padded_plane(h: usize, w: usize, pads: Pads) -> u128 {
    (h as u128 + pads.top as u128 + pads.bottom as u128) * (w as u128 + pads.left as u128 + pads.right as u128)
}

/// `pos - pad`, a position on a padded axis as an image index (negative in
/// the leading pad): exact in i128, then saturated into i64. Saturation
/// keeps every index that can name an image cell, and only the zero and
/// replicate modes accept pads that large, for which the side of the image
/// an index falls on is all that matters.
pub(crate) fn offset(pos: usize, pad: usize) -> i64 {
    (pos as i128 - pad as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// The hull `[y0, y1)` of image rows that padded rows `[p0, p1)` read
/// (`p` counts from the first padded row, `pad` rows above the image).
pub(crate) fn rows_read(mode: PaddingMode, n: usize, pad: usize, p0: usize, p1: usize) -> (usize, usize) {
    let (a, b) = (offset(p0, pad), offset(p1, pad));
    if mode == PaddingMode::Zeros {
        let y0 = a.clamp(0, n as i64) as usize;
        return (y0, (b.clamp(0, n as i64) as usize).max(y0));
    }
    // Each of the three pieces (above, inside, below) maps monotonically,
    // so its end points bound its image.
    let (mut lo, mut hi) = (usize::MAX, 0);
    let ni = n as i64;
    let mut take = |s: i64, e: i64| {
        if s < e {
            for j in [s, e - 1] {
                if let Some(y) = mode.source(j, n) {
                    lo = lo.min(y);
                    hi = hi.max(y + 1);
                }
            }
        }
    };
    take(a, b.min(0));
    take(a.max(0), b.min(ni));
    take(a.max(ni), b);
    if lo == usize::MAX {
        (0, 0)
    } else {
        (lo, hi)
    }
}

/// Parses `A,B`, or `A` for both (strides, dilations, windows, output
/// sizes on the command line). Zero passes here: the specs refuse it with
/// the message every caller gets.
pub fn parse_pair(arg: &'static str, text: &str) -> Result<(usize, usize)> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let num = |p: &str| {
        p.parse::<usize>()
            .map_err(|_| Error::invalid(arg, format!("expected whole numbers like 2,2 or 2, got {text:?}")))
    };
    match parts[..] {
        [a] => {
            let v = num(a)?;
            Ok((v, v))
        }
        [a, b] => Ok((num(a)?, num(b)?)),
        _ => Err(Error::invalid(arg, format!("expected two numbers A,B, got {text:?}"))),
    }
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
    // The bound is ndarray's: its non-empty axes must multiply to at most
    // isize::MAX, even when another axis is empty (an empty batch of
    // 2^62-row outputs has no element, yet no array of that shape can be
    // made: found by the `engine` fuzz target).
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)))
        .filter(|&n| n <= isize::MAX as usize)
        .map(|_| shape.iter().product())
        .ok_or_else(|| overflow(what, format!("element count of shape {}", Shape::from(shape))))
}

fn nonzero(arg: &'static str, value: (usize, usize)) -> Result<()> {
    if value.0 == 0 || value.1 == 0 {
        return Err(Error::ZeroParameter { arg, value });
    }
    Ok(())
}

/// A 2-D convolution: stride, dilation, padding, border mode, groups and
/// the activation of its epilogue (the bias comes with the call:
/// [`crate::Engine::conv2d_bias`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv2dSpec {
    /// `(sh, sw)`, each at least 1.
    pub stride: (usize, usize),
    /// `(dh, dw)`, each at least 1.
    pub dilation: (usize, usize),
    /// How many pads the border gets.
    pub padding: Padding,
    /// What the padded cells hold.
    pub padding_mode: PaddingMode,
    /// Channel groups (SPEC.md "Groups"): `c` and `nc` divisible by it,
    /// kernels `(kh, kw, c / groups, nc)`; `groups = c` is depthwise.
    pub groups: usize,
    /// Applied to every output after the bias.
    pub activation: Option<Activation>,
}

impl Default for Conv2dSpec {
    fn default() -> Self {
        Conv2dSpec {
            stride: (1, 1),
            dilation: (1, 1),
            padding: Padding::Valid,
            padding_mode: PaddingMode::Zeros,
            groups: 1,
            activation: None,
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

    /// The same spec with another border mode.
    pub fn with_padding_mode(mut self, mode: PaddingMode) -> Self {
        self.padding_mode = mode;
        self
    }

    /// The same spec with `groups` channel groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// The same spec with an activation (or none).
    pub fn with_activation(mut self, activation: Option<Activation>) -> Self {
        self.activation = activation;
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
        let groups = self.groups;
        if groups == 0 {
            return Err(Error::invalid(
                "groups",
                format!(
                    "must be at least 1, got 0 (images {}, kernels {kernels})",
                    Shape::from(images_nhwc)
                ),
            ));
        }
        if groups > 1 && (c % groups != 0 || nc % groups != 0 || kc != c / groups) {
            return Err(Error::invalid(
                "groups",
                format!(
                    "{groups} groups need images with channels divisible by {groups} and kernels \
                     (kh, kw, c / {groups}, nc) with nc divisible by {groups}; got images {} and kernels {kernels}",
                    Shape::from(images_nhwc)
                ),
            ));
        }
        if let Some(a) = self.activation {
            a.validate()?;
        }
        if groups == 1 && c != kc {
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
        let mode = self.padding_mode;
        for (pad, side, n, axis) in [
            (win.pads.top, "top", h, "height"),
            (win.pads.bottom, "bottom", h, "height"),
            (win.pads.left, "left", w, "width"),
            (win.pads.right, "right", w, "width"),
        ] {
            if let Some(limit) = mode.max_pad(n) {
                if pad > limit {
                    return Err(Error::invalid(
                        "padding_mode",
                        format!(
                            "{mode} padding needs every pad <= {} (image {axis} {n}), got {side} pad {pad} \
                             (pads top/bottom/left/right {:?}, images {})",
                            if mode == PaddingMode::Reflect { "n - 1" } else { "n" },
                            win.pads.tblr(),
                            Shape::from(images_nhwc)
                        ),
                    ));
                }
            }
        }
        Ok(Conv2dGeometry {
            m,
            h,
            w,
            c,
            kh,
            kw,
            nc,
            groups,
            padding_mode: mode,
            activation: self.activation,
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
/// shape module and the compute paths. Only [`Conv2dSpec::resolve`] makes
/// one (its fields are read through the methods of the same names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Conv2dGeometry {
    /// Batch size (may be 0).
    pub(crate) m: usize,
    /// Image height.
    pub(crate) h: usize,
    /// Image width.
    pub(crate) w: usize,
    /// Channels of images and kernels.
    pub(crate) c: usize,
    /// Kernel height.
    pub(crate) kh: usize,
    /// Kernel width.
    pub(crate) kw: usize,
    /// Number of kernels (output channels).
    pub(crate) nc: usize,
    /// Channel groups (1: a plain convolution).
    pub(crate) groups: usize,
    /// What the padded cells hold.
    pub(crate) padding_mode: PaddingMode,
    /// The epilogue's activation.
    pub(crate) activation: Option<Activation>,
    /// Vertical stride.
    pub(crate) sh: usize,
    /// Horizontal stride.
    pub(crate) sw: usize,
    /// Vertical dilation.
    pub(crate) dh: usize,
    /// Horizontal dilation.
    pub(crate) dw: usize,
    /// Resolved pads.
    pub(crate) pads: Pads,
    /// Output height.
    pub(crate) oh: usize,
    /// Output width.
    pub(crate) ow: usize,
}

impl Conv2dGeometry {
    /// The same convolution with a stride past the padded image (possible
    /// only with one output on that axis: 2^62 is valid) cut to the padded
    /// extent, and the dilation of a one-tap axis set to 1. Neither changes
    /// a number of the result, and a huge one would only overflow the fast
    /// kernels' index arithmetic. The stride is cut to the padded extent,
    /// not to 1: kernels that treat a batch as one tall image (or rows as
    /// one long row) step from image to image by the stride, which holds
    /// when `oh * sh` is the padded height.
    pub(crate) fn normalised(&self) -> Self {
        let mut g = *self;
        ((g.sh, g.sw), (g.dh, g.dw)) =
            normal_steps(g.h, g.w, g.pads, (g.oh, g.ow), (g.kh, g.kw), (g.sh, g.sw), (g.dh, g.dw));
        g
    }

    /// Whether each padded image stays within a small multiple of what a
    /// call reads and writes anyway. Pads of 2^40 around a tiny image are
    /// valid (zeros and replicate take any pad); the fast kernels, which
    /// size buffers and offsets from the padded extent, leave them to the
    /// reference, which maps each tap and touches only the output.
    pub(crate) fn padded_is_modest(&self) -> bool {
        let per_image = self.h * self.w * self.c + self.oh * self.ow * self.nc;
        padded_plane(self.h, self.w, self.pads) * self.c as u128 <= 4 * per_image as u128 + (1 << 24)
    }

    /// Batch size (may be 0).
    pub fn m(&self) -> usize {
        self.m
    }

    /// Image height.
    pub fn h(&self) -> usize {
        self.h
    }

    /// Image width.
    pub fn w(&self) -> usize {
        self.w
    }

    /// Channels of images and kernels.
    pub fn c(&self) -> usize {
        self.c
    }

    /// Kernel height.
    pub fn kh(&self) -> usize {
        self.kh
    }

    /// Kernel width.
    pub fn kw(&self) -> usize {
        self.kw
    }

    /// Number of kernels (output channels).
    pub fn nc(&self) -> usize {
        self.nc
    }

    /// Channel groups (1: a plain convolution).
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// What the padded cells hold.
    pub fn padding_mode(&self) -> PaddingMode {
        self.padding_mode
    }

    /// The epilogue's activation.
    pub fn activation(&self) -> Option<Activation> {
        self.activation
    }

    /// Vertical stride.
    pub fn sh(&self) -> usize {
        self.sh
    }

    /// Horizontal stride.
    pub fn sw(&self) -> usize {
        self.sw
    }

    /// Vertical dilation.
    pub fn dh(&self) -> usize {
        self.dh
    }

    /// Horizontal dilation.
    pub fn dw(&self) -> usize {
        self.dw
    }

    /// Resolved pads.
    pub fn pads(&self) -> Pads {
        self.pads
    }

    /// Output height.
    pub fn oh(&self) -> usize {
        self.oh
    }

    /// Output width.
    pub fn ow(&self) -> usize {
        self.ow
    }

    /// NHWC output shape `(m, oh, ow, nc)`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.m, self.oh, self.ow, self.nc]
    }

    /// NHWC input shape.
    pub fn input_shape(&self) -> [usize; 4] {
        [self.m, self.h, self.w, self.c]
    }

    /// HWIO kernel shape, `(kh, kw, c / groups, nc)`.
    pub fn kernel_shape(&self) -> [usize; 4] {
        [self.kh, self.kw, self.group_c(), self.nc]
    }

    /// Input channels per group, `c / groups`.
    pub fn group_c(&self) -> usize {
        self.c / self.groups
    }

    /// Output channels per group, `nc / groups`.
    pub fn group_nc(&self) -> usize {
        self.nc / self.groups
    }

    /// Whether every output channel reads one input channel (`groups = c`).
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.c
    }

    /// Floating-point operations, `2 * m * oh * ow * kh * kw * (c / groups) * nc`.
    pub fn flops(&self) -> f64 {
        2.0 * [self.m, self.oh, self.ow, self.kh, self.kw, self.group_c(), self.nc]
            .iter()
            .map(|&v| v as f64)
            .product::<f64>()
    }

    /// The same convolution with zero padding and no epilogue, one group:
    /// what the plain kernels compute once border, groups and epilogue are
    /// taken care of around them.
    pub(crate) fn plain(&self) -> Conv2dGeometry {
        Conv2dGeometry {
            groups: 1,
            padding_mode: PaddingMode::Zeros,
            activation: None,
            ..*self
        }
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

    /// Reduction length per output, `kh * kw * c / groups` (the tolerance
    /// of SPEC.md scales with it).
    pub fn reduction_len(&self) -> usize {
        self.kh * self.kw * self.group_c()
    }

    /// Input rows output rows `[oy0, oy1)` read, as the hull `[y0, y1)` of
    /// the image rows their taps map to (border modes map padded rows onto
    /// image rows; circular ones from the far edge).
    pub fn input_rows(&self, oy0: usize, oy1: usize) -> (usize, usize) {
        rows_read(
            self.padding_mode,
            self.h,
            self.pads.top,
            oy0 * self.sh,
            (oy1 - 1) * self.sh + self.extent().0,
        )
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
    /// Adaptive pooling to an `(oh, ow)` output (PyTorch
    /// `adaptive_{max,avg}_pool2d`): output row `i` pools input rows
    /// `floor(i * h / oh) .. ceil((i + 1) * h / oh)`, likewise columns.
    /// Excludes stride, padding, dilation and ceil mode.
    Adaptive(usize, usize),
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

    /// Adaptive pooling to an `(oh, ow)` output.
    pub fn adaptive(mode: PoolMode, oh: usize, ow: usize) -> Self {
        Pool2dSpec {
            window: Window::Adaptive(oh, ow),
            ..Pool2dSpec::new(mode, 1, 1)
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
        if let Window::Adaptive(oh, ow) = self.window {
            return self.resolve_adaptive(images_nhwc, oh, ow);
        }
        let (global, (kh, kw)) = match self.window {
            Window::Fixed(kh, kw) => (false, (kh, kw)),
            _ => (true, (h, w)),
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
        // A window larger than the padded input (ceil_mode allows one) has
        // taps past it that never count: they are dropped, so no path loops
        // over them (a window of 2^31 rows over a 3-row image is one window
        // of 3 rows).
        let taps = |k: usize, d: usize, padded: usize| k.min(padded.div_ceil(d).max(1));
        let (kh, kw) = (
            taps(kh, dilation.0, h + win.pads.top + win.pads.bottom),
            taps(kw, dilation.1, w + win.pads.left + win.pads.right),
        );
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
            adaptive: false,
        })
    }

    fn resolve_adaptive(&self, images_nhwc: [usize; 4], oh: usize, ow: usize) -> Result<Pool2dGeometry> {
        let [m, h, w, c] = images_nhwc;
        nonzero("output_size", (oh, ow))?;
        let mut excluded = Vec::new();
        if self.stride.is_some() {
            excluded.push("stride");
        }
        if self.dilation != (1, 1) {
            excluded.push("dilation");
        }
        if self.padding != Padding::Valid {
            excluded.push("padding");
        }
        if self.ceil_mode {
            excluded.push("ceil_mode");
        }
        if !excluded.is_empty() {
            return Err(Error::invalid(
                "output_size",
                format!(
                    "adaptive pooling to ({oh}, {ow}) takes no {} (images {})",
                    excluded.join(", "),
                    Shape::from(images_nhwc)
                ),
            ));
        }
        checked_elems("output", &[m, oh, ow, c])?;
        h.checked_mul(oh).and_then(|_| w.checked_mul(ow)).ok_or_else(|| {
            overflow(
                "output_size",
                format!("({oh}, {ow}) for images {}", Shape::from(images_nhwc)),
            )
        })?;
        // The largest window, in closed form (an output size of 2^31 must
        // not mean 2^31 steps here): window i spans
        // ceil((r + len) / out) cells, r = i * len mod out, and r reaches
        // every multiple of gcd(len, out) below out, so its largest value is
        // out - gcd.
        let widest = |len: usize, out: usize| {
            let (mut a, mut b) = (len, out);
            while b != 0 {
                (a, b) = (b, a % b);
            }
            let (len, out, gcd) = (len as u128, out as u128, a as u128);
            Some((out - gcd + len).div_ceil(out) as usize)
        };
        Ok(Pool2dGeometry {
            m,
            h,
            w,
            c,
            kh: widest(h, oh).unwrap_or(1),
            kw: widest(w, ow).unwrap_or(1),
            sh: 1,
            sw: 1,
            dh: 1,
            dw: 1,
            pads: Pads::default(),
            oh,
            ow,
            mode: self.mode,
            count_include_pad: false,
            adaptive: true,
        })
    }
}

/// The taps `i0..i1` of `0..k` whose cells `start + i * d` lie in
/// `[lo, hi)`.
fn tap_range(start: i128, k: usize, d: usize, lo: i128, hi: i128) -> (usize, usize) {
    let d = d as i128;
    // First i with start + i * d >= lo; first i with start + i * d >= hi.
    let first_at_least = |bound: i128| {
        if start >= bound {
            0
        } else {
            (bound - start + d - 1) / d
        }
    };
    let k = k as i128;
    let i0 = first_at_least(lo).min(k);
    let i1 = first_at_least(hi).clamp(i0, k);
    (i0 as usize, i1 as usize)
}

/// Adaptive pooling's window `[start, end)` for output `i` of `out` over
/// `len` cells: `floor(i * len / out) .. ceil((i + 1) * len / out)`.
pub fn adaptive_window(i: usize, len: usize, out: usize) -> (usize, usize) {
    let start = (i as u128 * len as u128 / out as u128) as usize;
    let end = ((i as u128 + 1) * len as u128).div_ceil(out as u128) as usize;
    (start, end)
}

/// A pooling with every number resolved; only [`Pool2dSpec::resolve`]
/// makes one (its fields are read through the methods of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dGeometry {
    /// Batch size (may be 0).
    pub(crate) m: usize,
    /// Image height.
    pub(crate) h: usize,
    /// Image width.
    pub(crate) w: usize,
    /// Channels (pooled independently).
    pub(crate) c: usize,
    /// Window height.
    pub(crate) kh: usize,
    /// Window width.
    pub(crate) kw: usize,
    /// Vertical stride.
    pub(crate) sh: usize,
    /// Horizontal stride.
    pub(crate) sw: usize,
    /// Vertical dilation.
    pub(crate) dh: usize,
    /// Horizontal dilation.
    pub(crate) dw: usize,
    /// Resolved pads.
    pub(crate) pads: Pads,
    /// Output height.
    pub(crate) oh: usize,
    /// Output width.
    pub(crate) ow: usize,
    /// Max or average.
    pub(crate) mode: PoolMode,
    /// Whether the average divides by the padded-input cells of the window.
    pub(crate) count_include_pad: bool,
    /// Adaptive pooling: each output's window is [`adaptive_window`] of
    /// its row and column (`kh`, `kw` are then the largest window).
    pub(crate) adaptive: bool,
}

impl Pool2dGeometry {
    /// See [`Conv2dGeometry::normalised`].
    pub(crate) fn normalised(&self) -> Self {
        let mut g = *self;
        ((g.sh, g.sw), (g.dh, g.dw)) =
            normal_steps(g.h, g.w, g.pads, (g.oh, g.ow), (g.kh, g.kw), (g.sh, g.sw), (g.dh, g.dw));
        g
    }

    /// See [`Conv2dGeometry::padded_is_modest`].
    pub(crate) fn padded_is_modest(&self) -> bool {
        padded_plane(self.h, self.w, self.pads) <= 4 * (self.h * self.w + self.oh * self.ow) as u128 + (1 << 24)
    }

    /// Batch size (may be 0).
    pub fn m(&self) -> usize {
        self.m
    }

    /// Image height.
    pub fn h(&self) -> usize {
        self.h
    }

    /// Image width.
    pub fn w(&self) -> usize {
        self.w
    }

    /// Channels (pooled independently).
    pub fn c(&self) -> usize {
        self.c
    }

    /// Window height.
    pub fn kh(&self) -> usize {
        self.kh
    }

    /// Window width.
    pub fn kw(&self) -> usize {
        self.kw
    }

    /// Vertical stride.
    pub fn sh(&self) -> usize {
        self.sh
    }

    /// Horizontal stride.
    pub fn sw(&self) -> usize {
        self.sw
    }

    /// Vertical dilation.
    pub fn dh(&self) -> usize {
        self.dh
    }

    /// Horizontal dilation.
    pub fn dw(&self) -> usize {
        self.dw
    }

    /// Resolved pads.
    pub fn pads(&self) -> Pads {
        self.pads
    }

    /// Output height.
    pub fn oh(&self) -> usize {
        self.oh
    }

    /// Output width.
    pub fn ow(&self) -> usize {
        self.ow
    }

    /// Max or average.
    pub fn mode(&self) -> PoolMode {
        self.mode
    }

    /// Whether the average divides by the padded-input cells of the window.
    pub fn count_include_pad(&self) -> bool {
        self.count_include_pad
    }

    /// Adaptive pooling: each output's window is [`adaptive_window`] of
    /// its row and column (`kh`, `kw` are then the largest window).
    pub fn adaptive(&self) -> bool {
        self.adaptive
    }

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
        // In f64: both counts can be near 2^62 with hostile pads and
        // windows (found by the `engine` fuzz target with overflow checks);
        // each is exact in f64 below 2^53, and the product is rounded once,
        // as the cast of an exact integer product would be.
        self.divisor_rows(oy) as f64 * self.divisor_cols(ox) as f64
    }

    /// Rows of the window at output row `oy` that count for the divisor.
    pub fn divisor_rows(&self, oy: usize) -> usize {
        if self.adaptive {
            let (a, b) = adaptive_window(oy, self.h, self.oh);
            return b - a;
        }
        self.counted_taps(oy, self.sh, self.kh, self.dh, self.h, self.pads.top, self.pads.bottom)
    }

    /// Columns of the window at output column `ox` that count for the divisor.
    pub fn divisor_cols(&self, ox: usize) -> usize {
        if self.adaptive {
            let (a, b) = adaptive_window(ox, self.w, self.ow);
            return b - a;
        }
        self.counted_taps(ox, self.sw, self.kw, self.dw, self.w, self.pads.left, self.pads.right)
    }

    /// The image rows of output row `oy`'s window, in window order (padded
    /// taps left out).
    pub fn window_rows(&self, oy: usize) -> impl Iterator<Item = usize> + '_ {
        self.window_taps(oy, self.sh, self.kh, self.dh, self.h, self.oh, self.pads.top)
    }

    /// The image columns of output column `ox`'s window, in window order.
    pub fn window_cols(&self, ox: usize) -> impl Iterator<Item = usize> + '_ {
        self.window_taps(ox, self.sw, self.kw, self.dw, self.w, self.ow, self.pads.left)
    }

    #[allow(clippy::too_many_arguments)]
    fn window_taps(
        &self,
        o: usize,
        s: usize,
        k: usize,
        d: usize,
        len: usize,
        out: usize,
        pad: usize,
    ) -> impl Iterator<Item = usize> + '_ {
        let (adaptive, fixed) = if self.adaptive {
            let (a, b) = adaptive_window(o, len, out);
            (a..b, 0..0)
        } else {
            // Only the taps that hit the image, found without visiting the
            // others (a huge window over a small image has few).
            let (i0, i1) = tap_range((o * s) as i128 - pad as i128, k, d, 0, len as i128);
            (0..0, i0..i1)
        };
        adaptive.chain(fixed.map(move |i| o * s + i * d - pad))
    }

    #[allow(clippy::too_many_arguments)]
    fn counted_taps(&self, o: usize, s: usize, k: usize, d: usize, len: usize, p0: usize, p1: usize) -> usize {
        let start = (o * s) as i128 - p0 as i128;
        let (lo, hi) = if self.count_include_pad {
            (-(p0 as i128), len as i128 + p1 as i128)
        } else {
            (0, len as i128)
        };
        let (i0, i1) = tap_range(start, k, d, lo, hi);
        i1 - i0
    }
}

#[cfg(test)]
#[path = "shape_tests.rs"]
mod tests;
