//! The convolution's epilogue (SPEC.md "Bias and activation"):
//! `out = act(conv + bias[k])`, applied after the whole reduction. One
//! definition of every activation, used by the reference (in f64), the
//! fast CPU path (on each piece of output while it is still in cache) and,
//! mirrored in `shaders/common.wgsl`, the GPU.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// An activation applied to every output of a convolution. NaN stays NaN
/// through every one of them (relu of NaN is NaN, not 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` if `x >= 0`, else `alpha * x` (any finite alpha; 0.01 by default).
    LeakyRelu(f32),
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `min(max(x, lo), hi)`; `lo <= hi`, neither NaN (infinite allowed).
    Clip(f32, f32),
}

/// The leaky ReLU's slope when none is given (PyTorch's and TensorFlow's).
pub const LEAKY_RELU_ALPHA: f32 = 0.01;

impl Activation {
    /// Refuses parameters SPEC.md does not allow: a non-finite alpha, NaN
    /// clip bounds or `lo > hi` (where PyTorch's clamp silently returns hi).
    pub fn validate(self) -> Result<Self> {
        match self {
            Activation::LeakyRelu(alpha) if !alpha.is_finite() => Err(Error::invalid(
                "activation",
                format!("leaky_relu needs a finite alpha, got {alpha}"),
            )),
            Activation::Clip(lo, hi) if lo.is_nan() || hi.is_nan() => Err(Error::invalid(
                "activation",
                format!("clip bounds must not be NaN, got clip:{lo}:{hi}"),
            )),
            Activation::Clip(lo, hi) if lo > hi => Err(Error::invalid(
                "activation",
                format!("clip needs lo <= hi, got clip:{lo}:{hi}"),
            )),
            a => Ok(a),
        }
    }

    /// The activation of one f32 value (the fast CPU path's arithmetic).
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        // Comparisons, not f32::max: max(NaN, 0) is 0, and NaN must stay.
        match self {
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Relu6 => clip(x, 0.0, 6.0),
            Activation::LeakyRelu(alpha) => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::Clip(lo, hi) => clip(x, lo, hi),
        }
    }

    /// The activation in f64 (the reference's arithmetic).
    pub fn apply_f64(self, x: f64) -> f64 {
        match self {
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Relu6 => clip(x, 0.0, 6.0),
            Activation::LeakyRelu(alpha) => {
                if x < 0.0 {
                    alpha as f64 * x
                } else {
                    x
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::Clip(lo, hi) => clip(x, lo as f64, hi as f64),
        }
    }

    /// `(code, a, b)` for the GPU's params: the code of `shaders/common.wgsl`
    /// (0 is no activation) and the activation's two numbers.
    pub fn gpu_code(activation: Option<Activation>) -> (u32, f32, f32) {
        match activation {
            None => (0, 0.0, 0.0),
            Some(Activation::Relu) => (1, 0.0, 0.0),
            Some(Activation::Relu6) => (2, 0.0, 6.0),
            Some(Activation::LeakyRelu(alpha)) => (3, alpha, 0.0),
            Some(Activation::Sigmoid) => (4, 0.0, 0.0),
            Some(Activation::Tanh) => (5, 0.0, 0.0),
            Some(Activation::Clip(lo, hi)) => (6, lo, hi),
        }
    }

    /// The extra absolute tolerance SPEC.md allows this activation (the
    /// transcendental ones: `1e-6`).
    pub fn tolerance(activation: Option<Activation>) -> f64 {
        match activation {
            Some(Activation::Sigmoid | Activation::Tanh) => 1e-6,
            _ => 0.0,
        }
    }
}

#[inline(always)]
fn clip<T: PartialOrd>(x: T, lo: T, hi: T) -> T {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

fn number(text: &str, what: &str, whole: &str) -> Result<f32> {
    text.trim()
        .parse::<f32>()
        .map_err(|_| Error::invalid("activation", format!("{what} of {whole:?} is not a number")))
}

impl FromStr for Activation {
    type Err = Error;

    /// Parses `relu`, `relu6`, `leaky_relu[:ALPHA]`, `sigmoid`, `tanh` or
    /// `clip:LO:HI` (`inf` and `-inf` allowed as bounds).
    fn from_str(text: &str) -> Result<Self> {
        let lower = text.trim().to_ascii_lowercase();
        let mut parts = lower.split(':');
        let name = parts.next().unwrap_or("");
        let args: Vec<&str> = parts.collect();
        let activation = match (name, args.as_slice()) {
            ("relu", []) => Activation::Relu,
            ("relu6", []) => Activation::Relu6,
            ("leaky_relu", []) => Activation::LeakyRelu(LEAKY_RELU_ALPHA),
            ("leaky_relu", [alpha]) => Activation::LeakyRelu(number(alpha, "alpha", text)?),
            ("sigmoid", []) => Activation::Sigmoid,
            ("tanh", []) => Activation::Tanh,
            ("clip", [lo, hi]) => Activation::Clip(number(lo, "lo", text)?, number(hi, "hi", text)?),
            _ => {
                return Err(Error::invalid(
                    "activation",
                    format!("expected relu, relu6, leaky_relu[:ALPHA], sigmoid, tanh or clip:LO:HI, got {text:?}"),
                ))
            }
        };
        activation.validate()
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activation::Relu => f.write_str("relu"),
            Activation::Relu6 => f.write_str("relu6"),
            Activation::LeakyRelu(alpha) => write!(f, "leaky_relu:{alpha}"),
            Activation::Sigmoid => f.write_str("sigmoid"),
            Activation::Tanh => f.write_str("tanh"),
            Activation::Clip(lo, hi) => write!(f, "clip:{lo}:{hi}"),
        }
    }
}

/// Bias and activation of one call, as the CPU paths apply them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Epilogue<'a> {
    /// `(nc,)`, added to each pixel's outputs.
    pub(crate) bias: Option<&'a [f32]>,
    /// Applied after the bias.
    pub(crate) activation: Option<Activation>,
}

impl<'a> Epilogue<'a> {
    /// Whether there is nothing to do.
    pub(crate) fn is_identity(&self) -> bool {
        self.bias.is_none() && self.activation.is_none()
    }

    /// The part of this epilogue for output channels `k0..k1`.
    pub(crate) fn channels(&self, k0: usize, k1: usize) -> Epilogue<'a> {
        Epilogue {
            bias: self.bias.map(|b| &b[k0..k1]),
            activation: self.activation,
        }
    }

    /// Applies the epilogue to whole NHWC pixels of `nc` outputs each.
    pub(crate) fn apply(&self, out: &mut [f32], nc: usize) {
        if self.is_identity() || nc == 0 {
            return;
        }
        debug_assert_eq!(out.len() % nc, 0);
        // One monomorphic loop per activation, so the common ones
        // vectorise (comparisons and selects, no calls).
        match self.activation {
            None => self.each(out, nc, |v| v),
            Some(Activation::Relu) => self.each(out, nc, |v| Activation::Relu.apply(v)),
            Some(Activation::Relu6) => self.each(out, nc, |v| Activation::Relu6.apply(v)),
            Some(a @ Activation::LeakyRelu(_)) => self.each(out, nc, |v| a.apply(v)),
            Some(Activation::Sigmoid) => self.each(out, nc, |v| Activation::Sigmoid.apply(v)),
            Some(Activation::Tanh) => self.each(out, nc, |v| Activation::Tanh.apply(v)),
            Some(a @ Activation::Clip(..)) => self.each(out, nc, |v| a.apply(v)),
        }
    }

    #[inline(always)]
    fn each(&self, out: &mut [f32], nc: usize, f: impl Fn(f32) -> f32) {
        match self.bias {
            Some(bias) => {
                for pixel in out.chunks_exact_mut(nc) {
                    for (v, b) in pixel.iter_mut().zip(bias) {
                        *v = f(*v + b);
                    }
                }
            }
            None => out.iter_mut().for_each(|v| *v = f(*v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_parse_and_print() {
        for (text, want) in [
            ("relu", Activation::Relu),
            ("RELU6", Activation::Relu6),
            ("leaky_relu", Activation::LeakyRelu(0.01)),
            ("leaky_relu:-0.5", Activation::LeakyRelu(-0.5)),
            ("sigmoid", Activation::Sigmoid),
            ("tanh", Activation::Tanh),
            ("clip:-1:1", Activation::Clip(-1.0, 1.0)),
            ("clip:-inf:0", Activation::Clip(f32::NEG_INFINITY, 0.0)),
        ] {
            let got: Activation = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string().parse::<Activation>().unwrap(), want);
        }
        for bad in [
            "",
            "gelu",
            "relu:1",
            "leaky_relu:x",
            "leaky_relu:inf",
            "clip:1",
            "clip:2:1",
            "clip:nan:1",
        ] {
            let err = bad.parse::<Activation>().unwrap_err().to_string();
            assert!(err.starts_with("activation: "), "{bad}: {err}");
        }
    }

    #[test]
    fn nan_stays_nan_and_values_are_as_specified() {
        let all = [
            Activation::Relu,
            Activation::Relu6,
            Activation::LeakyRelu(0.2),
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Clip(-1.0, 1.0),
        ];
        for a in all {
            assert!(a.apply(f32::NAN).is_nan(), "{a}");
            assert!(a.apply_f64(f64::NAN).is_nan(), "{a}");
        }
        assert_eq!(Activation::Relu.apply(-3.0), 0.0);
        assert_eq!(Activation::Relu6.apply(7.5), 6.0);
        assert_eq!(Activation::LeakyRelu(0.2).apply(-5.0), -1.0);
        assert_eq!(Activation::Clip(-1.0, 1.0).apply(-2.0), -1.0);
        assert_eq!(Activation::Sigmoid.apply(0.0), 0.5);
        assert_eq!(Activation::Sigmoid.apply(-200.0), 0.0);
        assert_eq!(Activation::Tanh.apply(f32::INFINITY), 1.0);
    }

    #[test]
    fn epilogue_adds_the_bias_per_channel() {
        let bias = [1.0, -10.0];
        let ep = Epilogue {
            bias: Some(&bias),
            activation: Some(Activation::Relu),
        };
        let mut out = [1.0, 2.0, 3.0, 20.0];
        ep.apply(&mut out, 2);
        assert_eq!(out, [2.0, 0.0, 4.0, 10.0]);
        let mut part = [5.0];
        ep.channels(1, 2).apply(&mut part, 1);
        assert_eq!(part, [0.0]);
    }
}
