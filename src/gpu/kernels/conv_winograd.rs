//! `shaders/conv2d_winograd.wgsl`: Winograd F(2x2, 3x3) for 3x3, stride-1,
//! undilated convolutions without groups, its kernel transform and its
//! pipeline constants. Asked for only (`GpuOptions::conv_winograd`,
//! `CONVPOOL_CONV_WINOGRAD`): it does 2.25x fewer multiply-adds than the
//! implicit GEMM for more work in workgroup memory, which only a device run
//! can weigh.

use crate::shape::Conv2dGeometry;

use super::{Constants, ConvRules};

/// Tiles (2x2 outputs) per workgroup (`TT` in the shader).
pub const TILES: u32 = 32;
/// Output channels per workgroup (`TN`).
pub const CHANNELS: u32 = 32;
/// Bytes of workgroup memory the shader declares: the products of its
/// tiles (`M_QUADS` vec4s), the tiles' coordinates and two flags.
pub const WORKGROUP_BYTES: u64 = 1024 * 16 + TILES as u64 * 16 + 8;

/// The Winograd kernel (it has one specialisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvWinograd;

impl ConvWinograd {
    /// Whether the shape is one the kernel computes: 3x3, stride 1, no
    /// dilation, no groups, channels and kernels in whole vec4s, more
    /// kernels than the direct kernel takes, on a device with the
    /// workgroup memory it declares.
    pub fn fits(g: &Conv2dGeometry, workgroup_bytes: u64) -> bool {
        (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.groups) == (3, 3, 1, 1, 1, 1, 1)
            && g.c.is_multiple_of(4)
            && g.nc.is_multiple_of(4)
            && g.nc > super::conv_direct::DIRECT_MAX_NC
            && WORKGROUP_BYTES <= workgroup_bytes
    }

    /// The pipeline constants with `rules`.
    pub fn constants(&self, rules: ConvRules) -> Constants {
        rules.constants()
    }

    /// Workgroups along output channels.
    pub fn tiles_n(g: &Conv2dGeometry) -> usize {
        g.nc.div_ceil(CHANNELS as usize)
    }

    /// Tiles of a chunk of `batch` images and `out_rows` output rows.
    pub fn tiles(batch: usize, out_rows: usize, ow: usize) -> usize {
        batch * out_rows.div_ceil(2) * ow.div_ceil(2)
    }
}

/// `G` of F(2x2, 3x3): `U = G g Gt`.
const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];

/// What the shader reads from its kernel binding: `U = G g Gt` of each
/// filter as `[xi][c][nc]` (xi = 4 i + j over the 4x4 transform), then the
/// HWIO kernels as they are (the direct sums of a workgroup that meets a
/// value the transforms cannot take). Computed in f64, rounded once.
pub fn kernel_data(k: &[f32], c: usize, nc: usize) -> Vec<f32> {
    let mut data = vec![0f32; 16 * c * nc];
    for ch in 0..c {
        for co in 0..nc {
            let g = |a: usize, b: usize| k[((a * 3 + b) * c + ch) * nc + co] as f64;
            for i in 0..4 {
                for j in 0..4 {
                    let mut u = 0.0;
                    for (a, ga) in G[i].iter().enumerate() {
                        for (b, gb) in G[j].iter().enumerate() {
                            u += ga * g(a, b) * gb;
                        }
                    }
                    data[((4 * i + j) * c + ch) * nc + co] = u as f32;
                }
            }
        }
    }
    data.extend_from_slice(k);
    data
}

/// Floats the shader's kernel binding holds for `c` and `nc`.
pub fn kernel_len(c: usize, nc: usize) -> usize {
    25 * c * nc
}

/// The largest input magnitude the transforms take for these kernels
/// (`p.limit`), or `None` for kernels the implicit GEMM takes instead:
/// those holding an infinity or NaN, and those whose transform could
/// overflow (`|U| <= 2.25 max|w|`; an infinite U times a zero input would
/// be NaN where the reference has 0). The transforms' sums stay within a
/// small factor (below 1e3) of `max|x| * max|w| * c`, which must stay far
/// from `f32::MAX`.
pub fn input_limit(k: &[f32], c: usize) -> Option<f32> {
    let mut max = 0f32;
    for &v in k {
        if !v.is_finite() || v.abs() > f32::MAX / 4.0 {
            return None;
        }
        max = max.max(v.abs());
    }
    let room = f32::MAX as f64 / ((max as f64) * (c.max(1) as f64) * 1e3);
    Some(room.min(f32::MAX as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// U of a filter by hand: a single 1 at the centre gives G's middle
    /// column's outer product, [0, .5, -.5, 0] each way.
    #[test]
    fn transform_of_the_centre_tap() {
        let mut k = vec![0f32; 9];
        k[4] = 1.0;
        let data = kernel_data(&k, 1, 1);
        let col = [0.0, 0.5, -0.5, 0.0];
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(data[4 * i + j], (col[i] * col[j]) as f32, "U[{i}][{j}]");
            }
        }
        assert_eq!(&data[16..], &k[..]);
        assert_eq!(data.len(), kernel_len(1, 1));
    }

    #[test]
    fn limits() {
        assert_eq!(input_limit(&[1.0, f32::NAN], 4), None);
        assert_eq!(input_limit(&[f32::INFINITY], 4), None);
        assert_eq!(input_limit(&[1.0, -f32::MAX / 3.0], 4), None);
        assert!(input_limit(&[f32::MAX / 4.0], 4).is_some());
        assert_eq!(input_limit(&[0.0; 9], 4), Some(f32::MAX));
        let l = input_limit(&[2.0, -4.0], 64).unwrap() as f64;
        assert!((l - f32::MAX as f64 / (4.0 * 64.0 * 1e3)).abs() < l * 1e-6, "{l}");
    }
}
