//! The tolerance of SPEC.md and the comparison that verify mode and the tests
//! use: `max|out - ref| <= 1e-4 * max(1, max|ref|)` for convolutions (scaled
//! by `sqrt(kh*kw*c / 4096)` for long reductions) and average pooling; bit for
//! bit for max pooling. NaN must meet NaN and an infinity the same infinity.

use approx::AbsDiffEq;
use ndarray::ArrayView4;

/// Allowed absolute difference for a convolution with reduction length
/// `kh * kw * c` whose reference has largest finite magnitude `max_abs_ref`.
pub fn conv_tolerance(reduction_len: usize, max_abs_ref: f64) -> f64 {
    let scale = (reduction_len as f64 / 4096.0).sqrt().max(1.0);
    1e-4 * max_abs_ref.max(1.0) * scale
}

/// Allowed absolute difference for average pooling.
pub fn avg_tolerance(max_abs_ref: f64) -> f64 {
    1e-4 * max_abs_ref.max(1.0)
}

/// Largest finite magnitude of an array (0 for an empty one).
pub fn max_abs_finite(a: ArrayView4<f32>) -> f64 {
    a.iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(v.abs() as f64))
}

/// Where two arrays differ most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference {
    /// Largest absolute difference; infinite where NaN or an infinity is not matched.
    pub max_abs_diff: f64,
    /// NHWC index of it.
    pub index: [usize; 4],
    /// Value of the checked array there.
    pub got: f32,
    /// Value of the reference there.
    pub reference: f32,
}

fn element_diff(got: f32, want: f32, exact: bool) -> f64 {
    if want.is_nan() || got.is_nan() {
        return if want.is_nan() && got.is_nan() {
            0.0
        } else {
            f64::INFINITY
        };
    }
    if want.is_infinite() || got.is_infinite() {
        return if want == got { 0.0 } else { f64::INFINITY };
    }
    if exact {
        return if got.to_bits() == want.to_bits() || got == want {
            0.0
        } else {
            f64::INFINITY
        };
    }
    (got as f64 - want as f64).abs()
}

/// The largest difference between `got` and `reference` (same shape).
/// With `exact`, any difference of finite values counts as infinite.
pub fn largest_difference(got: ArrayView4<f32>, reference: ArrayView4<f32>, exact: bool) -> Difference {
    let mut worst = Difference {
        max_abs_diff: 0.0,
        index: [0; 4],
        got: 0.0,
        reference: 0.0,
    };
    for ((idx, &g), &r) in got.indexed_iter().zip(reference.iter()) {
        let d = element_diff(g, r, exact);
        if d > worst.max_abs_diff || (worst.max_abs_diff == 0.0 && idx == (0, 0, 0, 0)) {
            worst = Difference {
                max_abs_diff: d,
                index: [idx.0, idx.1, idx.2, idx.3],
                got: g,
                reference: r,
            };
        }
    }
    worst
}

/// Whether `got` is within `tolerance` of `reference` element by element
/// (NaN and infinities matched exactly).
pub fn within(got: ArrayView4<f32>, reference: ArrayView4<f32>, tolerance: f64) -> bool {
    got.shape() == reference.shape()
        && got.iter().zip(reference.iter()).all(|(&g, &r)| {
            if r.is_finite() && g.is_finite() {
                (g as f64).abs_diff_eq(&(r as f64), tolerance)
            } else {
                element_diff(g, r, false) == 0.0
            }
        })
}
