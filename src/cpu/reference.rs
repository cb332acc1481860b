//! The CPU reference: the formulas of SPEC.md written as plainly as possible,
//! accumulating in f64. It is the yardstick every faster path is checked
//! against, so it favours being obviously right over being fast.

use ndarray::{Array4, ArrayView4, Axis};
use rayon::prelude::*;

use crate::shape::{offset, Conv2dGeometry, Pool2dGeometry, PoolMode};

/// Cross-correlation over NHWC images and HWIO kernels, without bias.
#[cfg(test)]
pub fn conv2d(images: ArrayView4<f32>, kernels: ArrayView4<f32>, g: &Conv2dGeometry) -> Array4<f32> {
    conv2d_bias(images, kernels, None, g)
}

/// Cross-correlation over NHWC images and `(kh, kw, c / groups, nc)`
/// kernels, then the epilogue:
/// `out[n, y, x, k] = act(bias[k] + sum in_pad[n, y*sh + i*dh, x*sw + j*dw, q*(c/g) + ch] * ker[i, j, ch, k])`
/// with `q = k / (nc / g)`.
///
/// Padded cells hold what the border mode says; zeros take part in the
/// products, so `0 * inf` in the kernel gives NaN exactly as the formula
/// says.
pub fn conv2d_bias(
    images: ArrayView4<f32>,
    kernels: ArrayView4<f32>,
    bias: Option<&[f32]>,
    g: &Conv2dGeometry,
) -> Array4<f32> {
    debug_assert_eq!(images.shape(), g.input_shape());
    debug_assert_eq!(kernels.shape(), g.kernel_shape());
    let (gc, gnc) = (g.group_c(), g.group_nc());
    let mut out = Array4::<f32>::zeros(g.output_shape());
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(images.axis_iter(Axis(0)).into_par_iter())
        .for_each(|(mut out_n, image)| {
            let mut acc = vec![0f64; g.nc];
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    acc.iter_mut().for_each(|a| *a = 0.0);
                    for i in 0..g.kh {
                        let y = offset(oy * g.sh + i * g.dh, g.pads.top);
                        let y = g.padding_mode.source(y, g.h);
                        for j in 0..g.kw {
                            let x = offset(ox * g.sw + j * g.dw, g.pads.left);
                            let x = g.padding_mode.source(x, g.w);
                            for (k, a) in acc.iter_mut().enumerate() {
                                let q = k / gnc;
                                for ch in 0..gc {
                                    let v = match (y, x) {
                                        (Some(y), Some(x)) => image[[y, x, q * gc + ch]] as f64,
                                        _ => 0.0,
                                    };
                                    *a += v * kernels[[i, j, ch, k]] as f64;
                                }
                            }
                        }
                    }
                    for (k, a) in acc.iter().enumerate() {
                        let mut v = *a;
                        if let Some(b) = bias {
                            v += b[k] as f64;
                        }
                        if let Some(act) = g.activation {
                            v = act.apply_f64(v);
                        }
                        out_n[[oy, ox, k]] = v as f32;
                    }
                }
            }
        });
    out
}

/// Max or average pooling of each channel (fixed, global or adaptive
/// windows).
///
/// Max: padded cells never win, NaN beats every number, a window with no
/// real cell gives -inf. Avg: the sum in f64 divided by
/// [`Pool2dGeometry::divisor`] (0/0 gives NaN).
pub fn pool2d(images: ArrayView4<f32>, g: &Pool2dGeometry) -> Array4<f32> {
    debug_assert_eq!(images.shape(), g.input_shape());
    let mut out = Array4::<f32>::zeros(g.output_shape());
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(images.axis_iter(Axis(0)).into_par_iter())
        .for_each(|(mut out_n, image)| {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let divisor = g.divisor(oy, ox);
                    for ch in 0..g.c {
                        let mut max = f32::NEG_INFINITY;
                        let mut sum = 0f64;
                        for y in g.window_rows(oy) {
                            for x in g.window_cols(ox) {
                                let v = image[[y, x, ch]];
                                if v.is_nan() || v > max {
                                    max = v;
                                }
                                sum += v as f64;
                            }
                        }
                        out_n[[oy, ox, ch]] = match g.mode {
                            PoolMode::Max => max,
                            PoolMode::Avg => (sum / divisor) as f32,
                        };
                    }
                }
            }
        });
    out
}

/// The argmax of max pooling, per output cell: `y * w + x` of the winning
/// cell within its image and channel, -1 for a window with no real cell.
/// PyTorch's scan: the first real cell starts it, then a cell wins if it is
/// larger or NaN (so ties keep the first, and the last NaN wins).
pub fn max_pool2d_indices(images: ArrayView4<f32>, g: &Pool2dGeometry) -> Array4<i64> {
    debug_assert_eq!(images.shape(), g.input_shape());
    let mut out = Array4::<i64>::zeros(g.output_shape());
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(images.axis_iter(Axis(0)).into_par_iter())
        .for_each(|(mut out_n, image)| {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for ch in 0..g.c {
                        let mut best = f32::NEG_INFINITY;
                        let mut index = -1i64;
                        for y in g.window_rows(oy) {
                            for x in g.window_cols(ox) {
                                let v = image[[y, x, ch]];
                                if index < 0 || v > best || v.is_nan() {
                                    best = v;
                                    index = (y * g.w + x) as i64;
                                }
                            }
                        }
                        out_n[[oy, ox, ch]] = index;
                    }
                }
            }
        });
    out
}
