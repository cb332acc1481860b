//! The planar kernel's register kernel: output rows computed LANES columns
//! at a time for several rows and output channels together, from the
//! planes (or an image read in place) at a table of tap offsets.

use std::mem::MaybeUninit;

use super::super::pieces::{prefetch_lines, LINE};
use super::Planes;
use crate::shape::Conv2dGeometry;

/// Columns per register block: two 8-wide registers.
pub(super) const LANES: usize = 16;

/// The weights of each tap for the output channels of one register block:
/// channels in blocks of 4 (one row at a time), then 2 (two rows), then 1
/// (four rows). Gathered once per piece, not once per image.
pub(super) struct BlockWeights {
    fours: Vec<Vec<[f32; 4]>>,
    two: Option<Vec<[f32; 2]>>,
    one: Option<Vec<[f32; 1]>>,
}

impl BlockWeights {
    pub(super) fn new(k: &[f32], taps: usize, nc: usize) -> Self {
        fn gather<const KB: usize>(k: &[f32], taps: usize, nc: usize, kc: usize) -> Vec<[f32; KB]> {
            (0..taps).map(|t| std::array::from_fn(|b| k[t * nc + kc + b])).collect()
        }
        let two_at = nc / 4 * 4;
        BlockWeights {
            fours: (0..nc / 4).map(|b| gather::<4>(k, taps, nc, 4 * b)).collect(),
            two: (nc % 4 >= 2).then(|| gather::<2>(k, taps, nc, two_at)),
            one: (nc % 2 == 1).then(|| gather::<1>(k, taps, nc, nc - 1)),
        }
    }
}

/// Channels `kc..kc + KB` of every row of a band, RB rows at a time (the
/// leftover rows two at a time, then a last one alone).
#[inline(always)]
fn rows_block<const RB: usize, const KB: usize, const FMA: bool>(
    run: &Run,
    w: &[[f32; KB]],
    kc: usize,
    band: usize,
    out: &mut [MaybeUninit<f32>],
) {
    let full = band / RB * RB;
    // The next image is prefetched once, with the first block of channels.
    let prefetch = |r: usize, rows: usize| {
        if kc == 0 {
            run.prefetch_share(r, rows, band);
        }
    };
    for r in (0..full).step_by(RB) {
        prefetch(r, RB);
        run.block::<RB, KB, FMA>(w, r, kc, out);
    }
    // The leftover rows two at a time: one row alone has too few
    // accumulators to hide the FMA latency (a profile of image_blur showed
    // the single-row loop taking a fifth of the kernel's time).
    let mut r = full;
    while r + 2 <= band {
        prefetch(r, 2);
        run.block::<2, KB, FMA>(w, r, kc, out);
        r += 2;
    }
    if r < band {
        prefetch(r, 1);
        run.block::<1, KB, FMA>(w, r, kc, out);
    }
}

/// Taps of one output channel on a full `k x k` grid of neighbouring
/// inputs: tap `(i, j, ch)` reads `offs[0] + ch * plane + i * row + j`, and
/// output rows are `sh` input rows apart. [`Run::grid_rows_avx2`] loads each
/// input vector once for every output row of a block that reads it.
#[derive(Clone, Copy)]
pub(super) struct Grid {
    /// Taps per side (the grids are square).
    k: usize,
    sh: usize,
    c: usize,
    /// Floats between input rows.
    row: usize,
    /// Floats between channel planes.
    plane: usize,
}

impl Grid {
    /// The grid of `offs` (in HWIO order), when it is one of the shapes with
    /// a compiled kernel: one output channel, 5x5 taps at row stride 1 or 2,
    /// 3x3 at row stride 1 (at stride 2 a 3x3 block of rows shares too few
    /// inputs: it measured slower than the tap-by-tap kernel).
    pub(super) fn of(offs: &[usize], row_stride: usize, g: &Conv2dGeometry) -> Option<Self> {
        let (kh, kw, c) = (g.kh, g.kw, g.c);
        if g.nc != 1 || !matches!((kh, kw, g.sh), (3, 3, 1) | (5, 5, 1 | 2)) || offs.len() != kh * kw * c {
            return None;
        }
        let at = |i: usize, j: usize, ch: usize| offs[(i * kw + j) * c + ch];
        let row = at(1, 0, 0).checked_sub(offs[0])?;
        let plane = if c > 1 { at(0, 0, 1).checked_sub(offs[0])? } else { 0 };
        let grid = Grid {
            k: kh,
            sh: g.sh,
            c,
            row,
            plane,
        };
        let fits =
            (0..kh).all(|i| (0..kw).all(|j| (0..c).all(|ch| at(i, j, ch) == offs[0] + ch * plane + i * row + j)));
        (fits && row_stride == g.sh * row).then_some(grid)
    }
}

/// Lane masks for output rows read in place (the FMA build): lane `l` of
/// the column block at `x`, kernel column `j`, is all ones where computed
/// column `x + l` reads an image column at that kernel column, zero where
/// it would read the left or right padding (which, in place, is the
/// neighbouring row's pixels). The masked vectors sum zeros there, in the
/// kernels' own order, as the padded planes would.
pub(super) struct ColumnMasks {
    kw: usize,
    /// Per column block, where its `kw` masks start in `masks`: only blocks
    /// with a lane that reads padding have any.
    blocks: Vec<Option<usize>>,
    masks: Vec<[u32; LANES]>,
}

impl ColumnMasks {
    pub(super) fn new(g: &Conv2dGeometry, computed: usize) -> Self {
        let (mut blocks, mut masks) = (Vec::new(), Vec::new());
        let inside = g.pads.left..g.pads.left + g.w;
        for x in (0..computed).step_by(LANES) {
            // Lanes past the row's last computed column are never stored.
            let reach = x + LANES.min(computed - x) - 1 + (g.kw - 1) * g.dw;
            if inside.contains(&x) && inside.contains(&reach) {
                blocks.push(None);
                continue;
            }
            let block: Vec<[u32; LANES]> = (0..g.kw)
                .map(|j| {
                    std::array::from_fn(|l| {
                        let keep = x + l >= computed || inside.contains(&(x + l + j * g.dw));
                        if keep {
                            u32::MAX
                        } else {
                            0
                        }
                    })
                })
                .collect();
            let any = block.iter().flatten().any(|&m| m == 0);
            blocks.push(any.then_some(masks.len()));
            if any {
                masks.extend(block);
            }
        }
        ColumnMasks {
            kw: g.kw,
            blocks,
            masks,
        }
    }

    fn at(&self, x: usize) -> Option<&[[u32; LANES]]> {
        self.blocks[x / LANES].map(|i| &self.masks[i..i + self.kw])
    }

    /// One mask as the two vectors the kernels AND their loads with.
    ///
    /// Callers must have AVX2 enabled; always inlined into them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn vectors(mask: &[u32; LANES]) -> [std::arch::x86_64::__m256; 2] {
        use std::arch::x86_64::*;
        let m: *const f32 = mask.as_ptr().cast();
        // SAFETY: a mask holds LANES = 16 lanes, two unaligned 8-lane loads.
        unsafe { [_mm256_loadu_ps(m), _mm256_loadu_ps(m.add(8))] }
    }
}

/// The planes of one image and where its taps read.
pub(super) struct Run<'a> {
    offs: &'a [usize],
    /// Where the taps form a [`Grid`] (summed column by column, in the FMA
    /// build).
    grid: Option<Grid>,
    /// The largest of `offs`.
    max_off: usize,
    planes: &'a [f32],
    row_stride: usize,
    ow: usize,
    /// Computed columns per output column (see [`Planes`]).
    step: usize,
    /// Columns computed per row ([`Planes::computed`]).
    computed: usize,
    nc: usize,
    /// For rows read in place (FMA build): which lanes read padding.
    masks: Option<&'a ColumnMasks>,
    /// The input of the piece's next image, if any: a share of its cache
    /// lines is prefetched before each block of rows, so that its loads
    /// overlap this image's multiply-adds instead of following them (small
    /// images are otherwise copied, then summed, one after the other).
    next: &'a [f32],
}

impl<'a> Run<'a> {
    pub(super) fn new(
        offs: &'a [usize],
        grid: Option<Grid>,
        planes: &'a [f32],
        row_stride: usize,
        g: &Conv2dGeometry,
        layout: &Planes,
        masks: Option<&'a ColumnMasks>,
    ) -> Self {
        Run {
            offs,
            grid,
            max_off: offs.iter().copied().max().unwrap_or(0),
            planes,
            row_stride,
            ow: g.ow,
            step: layout.step,
            computed: layout.computed(g),
            nc: g.nc,
            masks,
            next: &[],
        }
    }

    /// This run with `next` prefetched along the way (see [`Run::next`]).
    pub(super) fn prefetching(self, next: &'a [f32]) -> Self {
        Run { next, ..self }
    }

    /// Prefetches the share of [`Run::next`]'s cache lines that belongs to
    /// rows `r..r + rows` of `band`.
    #[inline(always)]
    fn prefetch_share(&self, r: usize, rows: usize, band: usize) {
        let lines = self.next.len().div_ceil(LINE);
        prefetch_lines(self.next, r * lines / band..(r + rows) * lines / band);
    }

    /// The masks of the column block at `x`, one per kernel column, where
    /// any of its lanes reads padding.
    fn masks_at(&self, x: usize) -> Option<&'a [[u32; LANES]]> {
        self.masks.and_then(|m| m.at(x))
    }

    /// Every channel of output rows `0..band`, one register block of
    /// channels after the other.
    #[inline(always)]
    pub(super) fn all_rows<const FMA: bool>(&self, weights: &BlockWeights, band: usize, out: &mut [MaybeUninit<f32>]) {
        for (b, w) in weights.fours.iter().enumerate() {
            rows_block::<1, 4, FMA>(self, w, 4 * b, band, out);
        }
        if let Some(w) = &weights.two {
            rows_block::<2, 2, FMA>(self, w, 4 * weights.fours.len(), band, out);
        }
        if let Some(w) = &weights.one {
            rows_block::<4, 1, FMA>(self, w, self.nc - 1, band, out);
        }
    }

    /// Output rows `r..r + RB`, channels `kc..kc + KB`, every column.
    #[inline(always)]
    fn block<const RB: usize, const KB: usize, const FMA: bool>(
        &self,
        w: &[[f32; KB]],
        r: usize,
        kc: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        #[cfg(target_arch = "x86_64")]
        if FMA && KB == 1 && self.nc == 1 {
            // SAFETY: FMA is true only in the build that runs after `has_fma`
            // saw AVX2 and FMA.
            unsafe { self.one_channel_avx2::<RB, KB>(w, r, out) };
            return;
        }
        let computed = self.computed;
        for x in (0..computed).step_by(LANES) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: FMA is true only in the build that runs after `has_fma`
            // saw AVX2 and FMA.
            let acc = if FMA {
                unsafe { self.sums_avx2::<RB, KB>(w, r, x) }
            } else {
                self.sums_scalar::<RB, KB>(w, r, x)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let acc = self.sums_scalar::<RB, KB>(w, r, x);
            // Outputs x / step.. of this block (LANES is a multiple of step).
            // (`step` is 1 or 2: shifts, not divisions by a run-time value.)
            let half = self.step == 2;
            let (ox, cols) = (
                x >> half as u32,
                (LANES.min(computed - x) + half as usize) >> half as u32,
            );
            for (rb, acc_r) in acc.iter().enumerate() {
                let row = &mut out[(r + rb) * self.ow * self.nc..(r + rb + 1) * self.ow * self.nc];
                if KB == 1 && self.nc == 1 {
                    // Separate loops: a run-time step would keep the common
                    // contiguous store from becoming one copy.
                    let dst = &mut row[ox..ox + cols];
                    if self.step == 1 && cols == LANES {
                        // A fixed length: a few vector moves, not a call to
                        // memcpy per block (which showed in the profile).
                        let dst: &mut [MaybeUninit<f32>; LANES] = dst.try_into().expect("LANES outputs");
                        *dst = acc_r[0].map(MaybeUninit::new);
                    } else if self.step == 1 {
                        for (d, &v) in dst.iter_mut().zip(&acc_r[0]) {
                            d.write(v);
                        }
                    } else if cols == LANES / 2 {
                        let dst: &mut [MaybeUninit<f32>; LANES / 2] = dst.try_into().expect("LANES / 2 outputs");
                        *dst = std::array::from_fn(|l| MaybeUninit::new(acc_r[0][2 * l]));
                    } else {
                        for (d, &v) in dst.iter_mut().zip(acc_r[0].iter().step_by(2)) {
                            d.write(v);
                        }
                    }
                    continue;
                }
                for l in 0..cols {
                    for (kb, acc_k) in acc_r.iter().enumerate() {
                        row[(ox + l) * self.nc + kc + kb].write(acc_k[l * self.step]);
                    }
                }
            }
        }
    }

    /// Sums of every tap for `LANES` columns from `x`, rows `r..r + RB`,
    /// the KB channels of `w`.
    #[inline(always)]
    fn sums_scalar<const RB: usize, const KB: usize>(
        &self,
        w: &[[f32; KB]],
        r: usize,
        x: usize,
    ) -> [[[f32; LANES]; KB]; RB] {
        let mut acc = [[[0f32; LANES]; KB]; RB];
        for (&off, wt) in self.offs.iter().zip(w) {
            for (rb, acc_r) in acc.iter_mut().enumerate() {
                let at = off + (r + rb) * self.row_stride + x;
                let s = &self.planes[at..at + LANES];
                for (acc_k, &wk) in acc_r.iter_mut().zip(wt) {
                    for (a, &v) in acc_k.iter_mut().zip(s) {
                        *a += v * wk;
                    }
                }
            }
        }
        acc
    }

    /// [`Run::sums_scalar`] with AVX2 FMAs: RB * KB * 2 accumulators stay in
    /// registers, each loaded vector feeds KB multiply-adds.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn sums_avx2<const RB: usize, const KB: usize>(
        &self,
        w: &[[f32; KB]],
        r: usize,
        x: usize,
    ) -> [[[f32; LANES]; KB]; RB] {
        use std::arch::x86_64::*;
        // SAFETY: the caller runs this only where AVX2 and FMA are present.
        let acc = unsafe { self.accumulate_avx2::<RB, KB>(w, r, x) };
        let mut sums = [[[0f32; LANES]; KB]; RB];
        for (sums_r, acc_r) in sums.iter_mut().zip(&acc) {
            for (sums_k, [lo, hi]) in sums_r.iter_mut().zip(acc_r) {
                // SAFETY: each destination holds LANES = 16 floats.
                unsafe {
                    _mm256_storeu_ps(sums_k.as_mut_ptr(), *lo);
                    _mm256_storeu_ps(sums_k.as_mut_ptr().add(8), *hi);
                }
            }
        }
        sums
    }

    /// Output rows `r..r + RB` of one output channel, every column block,
    /// stored straight from the registers: going through an array on the
    /// stack cost a tenth of the kernel's time. Taps on a [`Grid`] go to
    /// [`Run::grid_rows_avx2`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn one_channel_avx2<const RB: usize, const KB: usize>(
        &self,
        w: &[[f32; KB]],
        r: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        if let Some(grid) = self.grid {
            // SAFETY: the caller runs this only where AVX2 and FMA are present.
            unsafe {
                match (grid.k, grid.sh) {
                    (3, 1) => self.grid_rows_avx2::<RB, KB, 3, 1>(&grid, w, r, out),
                    (5, 1) => self.grid_rows_avx2::<RB, KB, 5, 1>(&grid, w, r, out),
                    (5, 2) => self.grid_rows_avx2::<RB, KB, 5, 2>(&grid, w, r, out),
                    _ => unreachable!("Grid::of admits 3x3 at row stride 1 and 5x5 at 1 or 2"),
                }
            }
            return;
        }
        for x in (0..self.computed).step_by(LANES) {
            // SAFETY: as above.
            unsafe {
                let acc = self.accumulate_avx2::<RB, KB>(w, r, x);
                self.store_one_channel(&acc, r, x, out);
            }
        }
    }

    /// Stores one column block of one output channel, rows `r..r + RB`: the
    /// block cut by the row's end with [`store_prefix`], with column stride
    /// 2 every other sum, gathered by two shuffles.
    ///
    /// Callers must have AVX2 enabled (its intrinsics need it). It is always
    /// inlined into them, where the intrinsics inline too: as a call per
    /// column block, with the accumulators passed through memory, it took a
    /// tenth of the kernel's samples in the profile.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn store_one_channel<const RB: usize, const KB: usize>(
        &self,
        acc: &[[[std::arch::x86_64::__m256; 2]; KB]; RB],
        r: usize,
        x: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        use std::arch::x86_64::*;
        assert!(KB == 1 && self.nc == 1 && x < self.computed);
        // Computed columns, then outputs, of this block (the last one may be
        // cut by the row's end).
        let computed = LANES.min(self.computed - x);
        for (rb, acc_r) in acc.iter().enumerate() {
            let [lo, hi] = acc_r[0];
            if self.step == 1 {
                let dst = &mut out[(r + rb) * self.ow + x..][..computed];
                // SAFETY: the first min(8, computed) floats of dst, then the
                // rest from dst[8..] (there only when computed > 8).
                unsafe {
                    store_prefix(dst, lo);
                    if computed > 8 {
                        store_prefix(&mut dst[8..], hi);
                    }
                }
            } else {
                // Even lanes of lo and hi, in order: the shuffle leaves the
                // 64-bit pairs (lo0 lo2, hi0 hi2, lo4 lo6, hi4 hi6).
                let even = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
                let even = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(even)));
                let dst = &mut out[(r + rb) * self.ow + x / 2..][..computed.div_ceil(2)];
                // SAFETY: stores the first dst.len() <= 8 floats.
                unsafe { store_prefix(dst, even) };
            }
        }
    }

    /// The RB x KB x 2 accumulators of [`Run::sums_avx2`], in registers.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn accumulate_avx2<const RB: usize, const KB: usize>(
        &self,
        w: &[[f32; KB]],
        r: usize,
        x: usize,
    ) -> [[[std::arch::x86_64::__m256; 2]; KB]; RB] {
        // SAFETY (both): AVX2 and FMA are enabled here.
        match self.masks_at(x) {
            Some(masks) => unsafe { self.accumulate::<RB, KB, true>(w, r, x, masks) },
            None => unsafe { self.accumulate::<RB, KB, false>(w, r, x, &[]) },
        }
    }

    /// The body of [`Run::accumulate_avx2`]; with MASKED, each loaded
    /// vector is cut by its kernel column's mask (one channel, taps in
    /// HWIO order, so tap `t` is in kernel column `t % masks.len()`).
    ///
    /// Callers must have AVX2 and FMA enabled; always inlined into them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn accumulate<const RB: usize, const KB: usize, const MASKED: bool>(
        &self,
        w: &[[f32; KB]],
        r: usize,
        x: usize,
        masks: &[[u32; LANES]],
    ) -> [[[std::arch::x86_64::__m256; 2]; KB]; RB] {
        use std::arch::x86_64::*;
        // One bounds check for the whole block instead of one per load: the
        // farthest load starts at max_off + (r + RB - 1) * row_stride + x.
        let last = self.max_off + (r + RB - 1) * self.row_stride + x + LANES;
        assert!(last <= self.planes.len());
        assert!(!MASKED || self.offs.len() == w.len() && w.len().is_multiple_of(masks.len()));
        let base = self.planes.as_ptr();
        let mut acc = [[[_mm256_setzero_ps(); 2]; KB]; RB];
        let mut j = 0;
        for (&off, wt) in self.offs.iter().zip(w) {
            let mut wv = [_mm256_setzero_ps(); KB];
            for kb in 0..KB {
                wv[kb] = _mm256_set1_ps(wt[kb]);
            }
            let mask = if MASKED {
                // SAFETY: the caller has AVX2 enabled.
                let m = unsafe { ColumnMasks::vectors(&masks[j]) };
                j = if j + 1 == masks.len() { 0 } else { j + 1 };
                m
            } else {
                [_mm256_setzero_ps(); 2]
            };
            for (rb, acc_r) in acc.iter_mut().enumerate() {
                let at = off + (r + rb) * self.row_stride + x;
                // SAFETY: at + LANES <= last <= planes.len() (asserted above):
                // two unaligned 8-float loads inside the planes.
                let (mut lo, mut hi) = unsafe { (_mm256_loadu_ps(base.add(at)), _mm256_loadu_ps(base.add(at + 8))) };
                if MASKED {
                    (lo, hi) = (_mm256_and_ps(lo, mask[0]), _mm256_and_ps(hi, mask[1]));
                }
                for kb in 0..KB {
                    acc_r[kb][0] = _mm256_fmadd_ps(lo, wv[kb], acc_r[kb][0]);
                    acc_r[kb][1] = _mm256_fmadd_ps(hi, wv[kb], acc_r[kb][1]);
                }
            }
        }
        acc
    }

    /// Output rows `r..r + RB` of a [`Grid`] of K x K taps (one output
    /// channel), output rows SH input rows apart, every column block:
    /// channel by channel and kernel column by kernel column, each input
    /// row's vector is loaded once and feeds every output row of the block
    /// that reads it, with the K weights of that column in registers. Half
    /// the loads of the tap-by-tap kernel per multiply-add (whose shifted,
    /// unaligned loads held it near half the FMA peak): 1.5x on a 5x5
    /// filter. The weights and the bounds are settled once per block of
    /// rows, not once per column block.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn grid_rows_avx2<const RB: usize, const KB: usize, const K: usize, const SH: usize>(
        &self,
        grid: &Grid,
        w: &[[f32; KB]],
        r: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        debug_assert!(grid.k == K && grid.sh == SH);
        // Weights by channel, kernel column, kernel row (the planar kernel
        // takes at most four channels).
        let mut wk = [[[0f32; K]; K]; 4];
        assert!(grid.c <= wk.len() && w.len() == K * K * grid.c);
        for (ch, wch) in wk[..grid.c].iter_mut().enumerate() {
            for (j, wj) in wch.iter_mut().enumerate() {
                for (i, v) in wj.iter_mut().enumerate() {
                    *v = w[(i * K + j) * grid.c + ch][0];
                }
            }
        }
        // The farthest read of the rows' last column block is the farthest
        // tap of its last row (`max_off` holds the grid's bottom right tap of
        // the last plane): every read below stays inside the planes.
        let last_x = (self.computed - 1) / LANES * LANES;
        assert!(self.max_off + (r + RB - 1) * self.row_stride + last_x + LANES <= self.planes.len());
        for x in (0..self.computed).step_by(LANES) {
            // SAFETY (all three): AVX2 and FMA are enabled here, and every
            // read of the block stays inside the bound asserted above.
            let acc = match self.masks_at(x) {
                Some(masks) => unsafe { self.grid_block::<RB, KB, K, SH, true>(grid, &wk, r, x, masks) },
                None => unsafe { self.grid_block::<RB, KB, K, SH, false>(grid, &wk, r, x, &[]) },
            };
            unsafe { self.store_one_channel(&acc, r, x, out) };
        }
    }

    /// One column block of [`Run::grid_rows_avx2`]; with MASKED, each loaded
    /// vector is cut by its kernel column's mask.
    ///
    /// Callers must have AVX2 and FMA enabled and have checked that the
    /// block's reads stay inside the planes; always inlined into them.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn grid_block<const RB: usize, const KB: usize, const K: usize, const SH: usize, const MASKED: bool>(
        &self,
        grid: &Grid,
        wk: &[[[f32; K]; K]; 4],
        r: usize,
        x: usize,
        masks: &[[u32; LANES]],
    ) -> [[[std::arch::x86_64::__m256; 2]; KB]; RB] {
        use std::arch::x86_64::*;
        assert!(!MASKED || masks.len() == K);
        let start = self.offs[0] + r * self.row_stride + x;
        let mut acc = [[[_mm256_setzero_ps(); 2]; KB]; RB];
        for (ch, wch) in wk[..grid.c].iter().enumerate() {
            for (j, wj) in wch.iter().enumerate() {
                let mut wv = [_mm256_setzero_ps(); K];
                for (v, &wt) in wv.iter_mut().zip(wj) {
                    *v = _mm256_set1_ps(wt);
                }
                let mask = if MASKED {
                    // SAFETY: the caller has AVX2 enabled.
                    unsafe { ColumnMasks::vectors(&masks[j]) }
                } else {
                    [_mm256_setzero_ps(); 2]
                };
                for y in 0..(RB - 1) * SH + K {
                    let at = start + ch * grid.plane + y * grid.row + j;
                    // SAFETY: a tap's read of this column block, inside the
                    // bound the caller checked, LANES floats.
                    let (mut lo, mut hi) = unsafe {
                        let p = self.planes.as_ptr().add(at);
                        (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
                    };
                    if MASKED {
                        (lo, hi) = (_mm256_and_ps(lo, mask[0]), _mm256_and_ps(hi, mask[1]));
                    }
                    for (i, wv) in wv.iter().enumerate() {
                        // Output row o reads input rows o * SH + i.
                        if y >= i && (y - i) % SH == 0 && (y - i) / SH < RB {
                            let o = &mut acc[(y - i) / SH][0];
                            o[0] = _mm256_fmadd_ps(lo, *wv, o[0]);
                            o[1] = _mm256_fmadd_ps(hi, *wv, o[1]);
                        }
                    }
                }
            }
        }
        acc
    }
}

/// Stores the first `min(8, dst.len())` lanes of `v` into `dst`, with at
/// most three stores (8 lanes at once where they fit): the cut block at a
/// row's end, without a round trip through the stack.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_prefix(dst: &mut [MaybeUninit<f32>], v: std::arch::x86_64::__m256) {
    use std::arch::x86_64::*;
    let mut n = dst.len().min(8);
    let mut p: *mut f32 = dst.as_mut_ptr().cast();
    // SAFETY: every store below writes lanes below n <= dst.len() of dst
    // (MaybeUninit<f32> has the layout of f32).
    unsafe {
        if n == 8 {
            _mm256_storeu_ps(p, v);
            return;
        }
        let mut part = _mm256_castps256_ps128(v);
        if n >= 4 {
            _mm_storeu_ps(p, part);
            (part, p, n) = (_mm256_extractf128_ps::<1>(v), p.add(4), n - 4);
        }
        if n >= 2 {
            _mm_storel_pd(p.cast(), _mm_castps_pd(part));
            (part, p, n) = (_mm_movehl_ps(part, part), p.add(2), n - 2);
        }
        if n == 1 {
            _mm_store_ss(p, part);
        }
    }
}
