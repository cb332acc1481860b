//! Copies that turn the v2 options into what the plain kernels compute:
//! border modes as a hand-padded input (then a convolution without
//! padding), a group's channels as their own contiguous images, a depthwise
//! channel multiplier as repeated channels.

use rayon::prelude::*;

use crate::shape::{offset, Conv2dGeometry, PaddingMode, Pads};

/// The images padded by hand with `g`'s border mode, and the geometry of
/// the same convolution over them without padding.
pub(super) fn pad(x: &[f32], g: &Conv2dGeometry) -> (Vec<f32>, Conv2dGeometry) {
    let (ph, pw) = (g.h + g.pads.top + g.pads.bottom, g.w + g.pads.left + g.pads.right);
    let c = g.c;
    let image_len = g.h * g.w * c;
    let mut padded = vec![0f32; g.m * ph * pw * c];
    let cols: Vec<Option<usize>> = (0..pw)
        .map(|u| g.padding_mode.source(offset(u, g.pads.left), g.w))
        .collect();
    padded.par_chunks_mut(pw * c).enumerate().for_each(|(row, dst)| {
        let (n, r) = (row / ph, row % ph);
        let Some(y) = g.padding_mode.source(offset(r, g.pads.top), g.h) else {
            return;
        };
        let src = &x[n * image_len + y * g.w * c..][..g.w * c];
        let (l, w) = (g.pads.left, g.w);
        dst[l * c..(l + w) * c].copy_from_slice(src);
        for (u, col) in cols.iter().enumerate() {
            if (l..l + w).contains(&u) {
                continue;
            }
            if let Some(xx) = col {
                dst[u * c..(u + 1) * c].copy_from_slice(&src[xx * c..(xx + 1) * c]);
            }
        }
    });
    let plain = Conv2dGeometry {
        h: ph,
        w: pw,
        pads: Pads::default(),
        padding_mode: PaddingMode::Zeros,
        ..*g
    };
    (padded, plain)
}

/// Channels `c0..c0 + count` of every pixel of `x` (`c` channels each), as
/// contiguous pixels of `count` channels.
pub(super) fn channels(x: &[f32], c: usize, c0: usize, count: usize) -> Vec<f32> {
    let pixels = x.len() / c;
    let mut out = vec![0f32; pixels * count];
    out.par_chunks_mut(count * 4096)
        .zip(x.par_chunks(c * 4096))
        .for_each(|(dst, src)| {
            for (d, s) in dst.chunks_exact_mut(count).zip(src.chunks_exact(c)) {
                d.copy_from_slice(&s[c0..c0 + count]);
            }
        });
    out
}

/// Every channel of every pixel repeated `times` times in a row (channel
/// `ch` becomes `ch * times .. (ch + 1) * times`).
pub(super) fn repeat_channels(x: &[f32], c: usize, times: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len() * times];
    out.par_chunks_mut(c * times * 4096)
        .zip(x.par_chunks(c * 4096))
        .for_each(|(dst, src)| {
            for (d, s) in dst.chunks_exact_mut(times).zip(src) {
                d.fill(*s);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Conv2dSpec;
    use crate::Padding;

    #[test]
    fn padding_by_hand_follows_each_mode() {
        // One row of 3 cells [1, 2, 3], two pads each side.
        let x = [1.0, 2.0, 3.0];
        let want = [
            (PaddingMode::Zeros, [0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0]),
            (PaddingMode::Reflect, [3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]),
            (PaddingMode::Symmetric, [2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0]),
            (PaddingMode::Replicate, [1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0]),
            (PaddingMode::Circular, [2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0]),
        ];
        for (mode, row) in want {
            let spec = Conv2dSpec::new(Padding::Explicit {
                top: 0,
                bottom: 0,
                left: 2,
                right: 2,
            })
            .with_padding_mode(mode);
            let g = spec.resolve([1, 1, 3, 1], [1, 1, 1, 1]).unwrap();
            let (padded, pg) = pad(&x, &g);
            assert_eq!(padded, row, "{mode}");
            assert_eq!((pg.h, pg.w, pg.pads), (1, 7, Pads::default()));
        }
    }

    #[test]
    fn channel_copies() {
        let x = [0.0, 1.0, 2.0, 10.0, 11.0, 12.0];
        assert_eq!(channels(&x, 3, 1, 2), [1.0, 2.0, 11.0, 12.0]);
        assert_eq!(repeat_channels(&x[..2], 2, 2), [0.0, 0.0, 1.0, 1.0]);
    }
}
