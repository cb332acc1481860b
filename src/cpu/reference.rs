//! The CPU reference: the formulas of SPEC.md written as plainly as possible,
//! accumulating in f64. It is the yardstick every faster path is checked
//! against, so it favours being obviously right over being fast.

use ndarray::{Array4, ArrayView4, Axis};
use rayon::prelude::*;

use crate::shape::{Conv2dGeometry, Pool2dGeometry, PoolMode};

/// Image value at signed coordinates, or `None` in the padding.
fn at(image: &ndarray::ArrayView3<f32>, y: i64, x: i64, ch: usize) -> Option<f32> {
    let (h, w, _) = image.dim();
    if y < 0 || x < 0 || y >= h as i64 || x >= w as i64 {
        None
    } else {
        Some(image[[y as usize, x as usize, ch]])
    }
}

/// Cross-correlation over NHWC images and HWIO kernels:
/// `out[n, y, x, k] = sum in_pad[n, y*sh + i*dh, x*sw + j*dw, ch] * ker[i, j, ch, k]`.
///
/// Padded cells take part as zeros, products included, so `0 * inf` in the
/// kernel gives NaN exactly as the formula says.
pub fn conv2d(images: ArrayView4<f32>, kernels: ArrayView4<f32>, g: &Conv2dGeometry) -> Array4<f32> {
    debug_assert_eq!(images.shape(), g.input_shape());
    debug_assert_eq!(kernels.shape(), g.kernel_shape());
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
                        let y = (oy * g.sh + i * g.dh) as i64 - g.pads.top as i64;
                        for j in 0..g.kw {
                            let x = (ox * g.sw + j * g.dw) as i64 - g.pads.left as i64;
                            for ch in 0..g.c {
                                let v = at(&image, y, x, ch).unwrap_or(0.0) as f64;
                                for (k, a) in acc.iter_mut().enumerate() {
                                    *a += v * kernels[[i, j, ch, k]] as f64;
                                }
                            }
                        }
                    }
                    for (k, a) in acc.iter().enumerate() {
                        out_n[[oy, ox, k]] = *a as f32;
                    }
                }
            }
        });
    out
}

/// Max or average pooling of each channel.
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
                        for i in 0..g.kh {
                            let y = (oy * g.sh + i * g.dh) as i64 - g.pads.top as i64;
                            for j in 0..g.kw {
                                let x = (ox * g.sw + j * g.dw) as i64 - g.pads.left as i64;
                                if let Some(v) = at(&image, y, x, ch) {
                                    if v.is_nan() || v > max {
                                        max = v;
                                    }
                                    sum += v as f64;
                                }
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
