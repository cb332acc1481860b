//! The planar kernel's copies: input rows into the zero-padded, phase-split
//! planes, and the padded rows of a grayscale image in its own layout.

use super::layout::{in_place_reach, Planes};
use crate::cpu::simd::Avx2;
use crate::shape::Conv2dGeometry;

/// The input rows that output rows `s..e` of image `n` read (one channel,
/// no phase split), rows outside the image as zeros, laid out as the image
/// is (row stride `w`, no padding columns) in `buf`, which is returned from
/// output row `s`'s first padded input on: what a run in place reads at
/// `x[base..]`, with room for the last column block's reads past the row.
pub(super) fn padded_rows_in_place<'b>(
    x: &[f32],
    g: &Conv2dGeometry,
    n: usize,
    s: usize,
    e: usize,
    layout: &Planes,
    buf: &'b mut Vec<f32>,
) -> &'b [f32] {
    let rows_in = (e - s - 1) * g.sh + g.extent().0;
    let reach = in_place_reach(g, layout, e - s);
    let left = g.pads.left;
    buf.clear();
    buf.resize((left + rows_in * g.w).max(reach + 1), 0.0);
    let image = &x[n * g.h * g.w..(n + 1) * g.h * g.w];
    for r in 0..rows_in {
        if let Some(y) = (s * g.sh + r).checked_sub(g.pads.top).filter(|&y| y < g.h) {
            buf[left + r * g.w..left + (r + 1) * g.w].copy_from_slice(&image[y * g.w..(y + 1) * g.w]);
        }
    }
    buf
}

/// Copies the input rows that output rows `oys` read into the
/// planar, phase-split layout (`spans` from [`Planes::spans`]). Padding rows
/// are zeroed; padding columns are never written, so they keep the zeros
/// the planes were created with.
#[allow(clippy::too_many_arguments)]
pub(super) fn fill_planes(
    avx2: Option<Avx2>,
    x: &[f32],
    g: &Conv2dGeometry,
    layout: &Planes,
    spans: &[(usize, usize, usize, usize)],
    n: usize,
    oys: std::ops::Range<usize>,
    planes: &mut [f32],
) {
    let (oy0, band) = (oys.start, oys.len());
    let image = &x[n * g.h * g.w * g.c..(n + 1) * g.h * g.w * g.c];
    let (c, sw) = (g.c, layout.phases);
    let rows = (band - 1) * g.sh + g.extent().0;
    #[cfg(target_arch = "x86_64")]
    if let (&[(0, q0, q1, x0)], 3, 1, Some(t)) = (spans, c, sw, avx2) {
        // RGB without stride phases (one span): each row's three plane rows
        // split off directly, the whole band in one AVX2 call (the general
        // setup of `gather`, and a call and checks per row, cost as much as
        // the copy itself on small images).
        let y0 = (oy0 * g.sh) as isize - g.pads.top as isize;
        // SAFETY: the token proves AVX2 was detected.
        unsafe { deinterleave_rows_avx2(t, image, g.w, g.h, y0, rows, (q0, q1, x0), layout, planes) };
        return;
    }
    let cols = spans
        .iter()
        .map(|&(_, q0, q1, x0)| x0 + (q1 - q0 - 1) * sw + 1)
        .max()
        .unwrap_or(0);
    for r in 0..rows {
        let Some(y) = (oy0 * g.sh + r).checked_sub(g.pads.top).filter(|&y| y < g.h) else {
            // A padding row; another band of the piece may have left image
            // pixels here.
            for ch in 0..c {
                for phase in 0..sw {
                    let at = layout.plane(ch, phase) + r * layout.width;
                    planes[at..at + layout.width].fill(0.0);
                }
            }
            continue;
        };
        let src_row = &image[y * g.w * c..(y * g.w + cols) * c];
        for &(phase, q0, q1, x0) in spans {
            let at = |ch: usize| layout.plane(ch, phase) + r * layout.width;
            if sw == 1 && c == 1 {
                planes[at(0) + q0..at(0) + q1].copy_from_slice(&src_row[x0..x0 + (q1 - q0)]);
                continue;
            }
            // A fixed channel count lets the compiler unroll the channels of
            // a pixel: each pixel is read once and its channels go to their
            // planes (an iterator with a run-time step per element made this
            // copy most of the kernel's time).
            let row_at = r * layout.width;
            match c {
                1 => gather::<1>(avx2, planes, layout, phase, sw, row_at, q0, q1, src_row, x0),
                2 => gather::<2>(avx2, planes, layout, phase, sw, row_at, q0, q1, src_row, x0),
                3 => gather::<3>(avx2, planes, layout, phase, sw, row_at, q0, q1, src_row, x0),
                4 => gather::<4>(avx2, planes, layout, phase, sw, row_at, q0, q1, src_row, x0),
                _ => {
                    for ch in 0..c {
                        let dst = &mut planes[at(ch) + q0..at(ch) + q1];
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = src_row[(x0 + i * sw) * c + ch];
                        }
                    }
                }
            }
        }
    }
}

/// Plane columns `q0..q1` of row `row_at` of the C planes of `phase`, from
/// pixels `x0, x0 + sw, ..` of `src_row`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gather<const C: usize>(
    avx2: Option<Avx2>,
    planes: &mut [f32],
    layout: &Planes,
    phase: usize,
    sw: usize,
    row_at: usize,
    q0: usize,
    q1: usize,
    src_row: &[f32],
    x0: usize,
) {
    let len = q1 - q0;
    // The planes of one phase are every sw-th plane from plane(0, phase)
    // (`chunks_mut` with that stride: no division per call, unlike
    // `chunks_exact_mut` + `step_by`).
    let stride = sw * layout.rows * layout.width;
    let first = layout.plane(0, phase);
    let mut planes_of_phase = planes[first..first + (C - 1) * stride + row_at + q1]
        .chunks_mut(stride)
        .map(|p| &mut p[row_at + q0..row_at + q1]);
    let mut dst: [&mut [f32]; C] = std::array::from_fn(|_| planes_of_phase.next().expect("C planes"));
    let src = &src_row[x0 * C..(x0 + (len - 1) * sw + 1) * C];
    #[cfg(target_arch = "x86_64")]
    if let (3, 1, Some(t)) = (C, sw, avx2) {
        let [r, g, b] = &mut dst[..] else {
            unreachable!("C == 3")
        };
        // SAFETY: the token proves AVX2 was detected.
        unsafe { deinterleave3_avx2(t, src, [&mut **r, &mut **g, &mut **b]) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let (1, 2, Some(t)) = (C, sw, avx2) {
        // SAFETY: the token proves AVX2 was detected.
        unsafe { every_other_avx2(t, src, dst[0]) };
        return;
    }
    for (i, px) in src.chunks(sw * C).enumerate() {
        for (ch, d) in dst.iter_mut().enumerate() {
            d[i] = px[ch];
        }
    }
}

/// Rows `y0 .. y0 + rows` of an RGB image (`w` x `h`, rows outside it as
/// zeros) into plane rows `0..rows` of the three planes of `layout`: plane
/// columns `q0..q1` from pixels `x0..` of each row.
///
/// # Safety
/// Compiled for AVX2; the token argument is the proof that the CPU has it
/// (callers still need `unsafe` to enter a function with target features).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn deinterleave_rows_avx2(
    t: Avx2,
    image: &[f32],
    w: usize,
    h: usize,
    y0: isize,
    rows: usize,
    (q0, q1, x0): (usize, usize, usize),
    layout: &Planes,
    planes: &mut [f32],
) {
    let plane = layout.rows * layout.width;
    let (red, rest) = planes.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    for r in 0..rows {
        let at = r * layout.width;
        let dst = [
            &mut red[at..at + layout.width],
            &mut green[at..at + layout.width],
            &mut blue[at..at + layout.width],
        ];
        let y = y0 + r as isize;
        if y < 0 || y >= h as isize {
            // A padding row; another band of the piece may have left image
            // pixels here.
            for d in dst {
                d.fill(0.0);
            }
            continue;
        }
        let src = &image[(y as usize * w + x0) * 3..(y as usize * w + x0 + q1 - q0) * 3];
        let [a, b, c] = dst;
        // SAFETY: AVX2, from the token.
        unsafe { deinterleave3_avx2(t, src, [&mut a[q0..q1], &mut b[q0..q1], &mut c[q0..q1]]) };
    }
}

/// Splits interleaved 3-channel pixels (RGB) into three planes, 8 pixels
/// at a time: three loads, two blends and a lane permutation per plane
/// instead of 24 scalar moves.
///
/// # Safety
/// Compiled for AVX2; the token argument is the proof that the CPU has it
/// (callers still need `unsafe` to enter a function with target features).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn deinterleave3_avx2(_proof: Avx2, src: &[f32], mut dst: [&mut [f32]; 3]) {
    use std::arch::x86_64::*;
    let n = dst[0].len();
    assert!(src.len() >= 3 * n && dst.iter().all(|d| d.len() == n));
    let full = n / 8 * 8;
    // Lane i of the blend of the three loads holds a value of the plane;
    // the permutation puts pixel j's value in lane j.
    let order = [
        _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5),
        _mm256_setr_epi32(1, 4, 7, 2, 5, 0, 3, 6),
        _mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7),
    ];
    for i in (0..full).step_by(8) {
        // SAFETY: pixels i..i + 8 are inside `src` (3 * n floats) and
        // `dst` (n floats each), asserted above.
        unsafe {
            let p = src.as_ptr().add(3 * i);
            let (a, b, c) = (
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
            );
            let r = _mm256_blend_ps::<0x24>(_mm256_blend_ps::<0x92>(a, b), c);
            let g = _mm256_blend_ps::<0x49>(_mm256_blend_ps::<0x24>(a, b), c);
            let bl = _mm256_blend_ps::<0x92>(_mm256_blend_ps::<0x49>(a, b), c);
            for (plane, (v, idx)) in [r, g, bl].into_iter().zip(order).enumerate() {
                _mm256_storeu_ps(dst[plane].as_mut_ptr().add(i), _mm256_permutevar8x32_ps(v, idx));
            }
        }
    }
    for i in full..n {
        for (ch, d) in dst.iter_mut().enumerate() {
            d[i] = src[3 * i + ch];
        }
    }
}

/// `dst[i] = src[2 * i]`, 8 at a time (one stride phase of a grayscale row).
///
/// # Safety
/// Compiled for AVX2; the token argument is the proof that the CPU has it
/// (callers still need `unsafe` to enter a function with target features).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn every_other_avx2(_proof: Avx2, src: &[f32], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = dst.len();
    assert!(n > 0 && src.len() > 2 * (n - 1));
    let mut i = 0;
    while 2 * i + 16 <= src.len() && i + 8 <= n {
        // SAFETY: src[2i..2i + 16] and dst[i..i + 8] are in bounds (loop test).
        unsafe {
            let p = src.as_ptr().add(2 * i);
            let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            // [a0 a2 b0 b2 | a4 a6 b4 b6], then the middle 64-bit pairs swapped.
            let v = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let v = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), v);
        }
        i += 8;
    }
    for (d, s) in dst[i..].iter_mut().zip(src[2 * i..].iter().step_by(2)) {
        *d = *s;
    }
}
