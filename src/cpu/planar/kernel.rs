//! The planar kernel's register kernel, on the SIMD layer: output rows
//! computed LANES columns at a time (`CV` vectors: two ymm, one zmm) for
//! several rows and output channels together, from the planes (or an image
//! read in place) at a table of tap offsets. The accumulators stay in
//! registers for the whole reduction and are stored straight from them.

use std::mem::MaybeUninit;

use super::super::pieces::{prefetch_lines, LINE};
use super::super::simd::Simd;
use super::layout::Planes;
use crate::shape::Conv2dGeometry;

/// Columns per column block (two 8-wide or one 16-wide vector).
pub(crate) const LANES: usize = 16;

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

/// Taps of one output channel on a full `k x k` grid of neighbouring
/// inputs: tap `(i, j, ch)` reads `offs[0] + ch * plane + i * row + j`, and
/// output rows are `sh` input rows apart. [`Run::grid_rows`] loads each
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
    /// inputs to pay for the extra loads of rows it does not share).
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

/// Lane masks for output rows read in place: lane `l` of
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
}

/// The planes of one image and where its taps read.
pub(super) struct Run<'a> {
    offs: &'a [usize],
    /// Where the taps form a [`Grid`] (summed column by column).
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
    /// For rows read in place: which lanes read padding.
    masks: Option<&'a ColumnMasks>,
    /// The input of the piece's next image, if any: a share of its cache
    /// lines is prefetched before each block of rows, so that its loads
    /// overlap this image's multiply-adds instead of following them (small
    /// images are otherwise copied, then summed, one after the other).
    next: &'a [f32],
}

impl<'a> Run<'a> {
    #[allow(clippy::too_many_arguments)]
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
    /// channels after the other, with `CV` vectors per column block.
    /// Register blocks of RB rows x KB channels x CV vectors: 8
    /// accumulators either way (enough to hide the FMA latency), each loaded
    /// input vector feeding KB multiply-adds.
    #[inline(always)]
    pub(super) fn all_rows<S: Simd, const CV: usize>(
        &self,
        s: S,
        weights: &BlockWeights,
        band: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        assert!(CV * S::LANES == LANES);
        // A match on the constants: only the blocks this instruction set
        // uses are compiled (the portable build one row at a time).
        match (S::HAS_VECTORS, CV) {
            (false, _) => {
                for (b, w) in weights.fours.iter().enumerate() {
                    self.rows_block::<S, CV, 1, 4>(s, w, 4 * b, band, out);
                }
                if let Some(w) = &weights.two {
                    self.rows_block::<S, CV, 1, 2>(s, w, 4 * weights.fours.len(), band, out);
                }
                if let Some(w) = &weights.one {
                    self.rows_block::<S, CV, 1, 1>(s, w, self.nc - 1, band, out);
                }
            }
            (true, 2) => {
                for (b, w) in weights.fours.iter().enumerate() {
                    self.rows_block::<S, CV, 1, 4>(s, w, 4 * b, band, out);
                }
                if let Some(w) = &weights.two {
                    self.rows_block::<S, CV, 2, 2>(s, w, 4 * weights.fours.len(), band, out);
                }
                if let Some(w) = &weights.one {
                    self.rows_block::<S, CV, 4, 1>(s, w, self.nc - 1, band, out);
                }
            }
            (true, _) => {
                for (b, w) in weights.fours.iter().enumerate() {
                    self.rows_block::<S, CV, 2, 4>(s, w, 4 * b, band, out);
                }
                if let Some(w) = &weights.two {
                    self.rows_block::<S, CV, 4, 2>(s, w, 4 * weights.fours.len(), band, out);
                }
                if let Some(w) = &weights.one {
                    self.rows_block::<S, CV, 8, 1>(s, w, self.nc - 1, band, out);
                }
            }
        }
    }

    /// Channels `kc..kc + KB` of every row of a band, RB rows at a time (the
    /// leftover rows two at a time, then a last one alone: one row alone
    /// has too few accumulators to hide the FMA latency).
    #[inline(always)]
    fn rows_block<S: Simd, const CV: usize, const RB: usize, const KB: usize>(
        &self,
        s: S,
        w: &[[f32; KB]],
        kc: usize,
        band: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        let full = band / RB * RB;
        // The next image is prefetched once, with the first block of channels.
        let first = kc == 0;
        for r in (0..full).step_by(RB) {
            if first {
                self.prefetch_share(r, RB, band);
            }
            self.block::<S, CV, RB, KB>(s, w, r, kc, out);
        }
        // (Nothing is left over from blocks of one row: not compiled there.)
        match RB {
            1 => {}
            _ => {
                let mut r = full;
                while r + 2 <= band {
                    if first {
                        self.prefetch_share(r, 2, band);
                    }
                    self.block::<S, CV, 2, KB>(s, w, r, kc, out);
                    r += 2;
                }
                if r < band {
                    if first {
                        self.prefetch_share(r, 1, band);
                    }
                    self.block::<S, CV, 1, KB>(s, w, r, kc, out);
                }
            }
        }
    }

    /// Output rows `r..r + RB`, channels `kc..kc + KB`, every column.
    #[inline(always)]
    fn block<S: Simd, const CV: usize, const RB: usize, const KB: usize>(
        &self,
        s: S,
        w: &[[f32; KB]],
        r: usize,
        kc: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        // A match on the constant KB: the one-channel kernels (and their
        // grids) are compiled only for the blocks of one channel.
        match KB {
            1 if self.nc == 1 => {
                self.one_channel::<S, CV, RB, KB>(s, w, r, out);
                return;
            }
            _ => {}
        }
        let computed = self.computed;
        for x in (0..computed).step_by(LANES) {
            let acc = self.accumulate_at::<S, CV, RB, KB>(s, w, r, x);
            // The sums as arrays: several channels interleave in the output.
            let mut sums = [[[0f32; LANES]; KB]; RB];
            for (sums_r, acc_r) in sums.iter_mut().zip(&acc) {
                for (sums_k, acc_k) in sums_r.iter_mut().zip(acc_r) {
                    for (v, &a) in acc_k.iter().enumerate() {
                        // SAFETY: each destination holds LANES = CV * S::LANES floats.
                        unsafe { s.store(sums_k.as_mut_ptr().add(v * S::LANES), a) };
                    }
                }
            }
            // Outputs x / step.. of this block (LANES is a multiple of step).
            // (`step` is 1 or 2: shifts, not divisions by a run-time value.)
            let half = self.step == 2;
            let (ox, cols) = (
                x >> half as u32,
                (LANES.min(computed - x) + half as usize) >> half as u32,
            );
            for (rb, sums_r) in sums.iter().enumerate() {
                let row = &mut out[(r + rb) * self.ow * self.nc..(r + rb + 1) * self.ow * self.nc];
                for l in 0..cols {
                    for (kb, sums_k) in sums_r.iter().enumerate() {
                        row[(ox + l) * self.nc + kc + kb].write(sums_k[l * self.step]);
                    }
                }
            }
        }
    }

    /// Output rows `r..r + RB` of one output channel, every column block,
    /// stored straight from the registers (not through an array on the
    /// stack, a store and reload per sum). Taps on a [`Grid`] go to
    /// [`Run::grid_rows`].
    #[inline(always)]
    fn one_channel<S: Simd, const CV: usize, const RB: usize, const KB: usize>(
        &self,
        s: S,
        w: &[[f32; KB]],
        r: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        // The grids only where there are vectors (the portable build sums
        // tap by tap).
        let grid = match S::HAS_VECTORS {
            true => self.grid,
            false => None,
        };
        if let Some(grid) = grid {
            match (grid.k, grid.sh) {
                (3, 1) => self.grid_rows::<S, CV, RB, KB, 3, 1>(s, &grid, w, r, out),
                (5, 1) => self.grid_rows::<S, CV, RB, KB, 5, 1>(s, &grid, w, r, out),
                (5, 2) => self.grid_rows::<S, CV, RB, KB, 5, 2>(s, &grid, w, r, out),
                _ => unreachable!("Grid::of admits 3x3 at row stride 1 and 5x5 at 1 or 2"),
            }
            return;
        }
        for x in (0..self.computed).step_by(LANES) {
            let acc = self.accumulate_at::<S, CV, RB, KB>(s, w, r, x);
            self.store_one_channel(s, &acc, r, x, out);
        }
    }

    /// Stores one column block of one output channel, rows `r..r + RB`: the
    /// block cut by the row's end with prefix stores; with column stride 2
    /// every other sum.
    #[inline(always)]
    fn store_one_channel<S: Simd, const CV: usize, const RB: usize, const KB: usize>(
        &self,
        s: S,
        acc: &[[[S::F; CV]; KB]; RB],
        r: usize,
        x: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        assert!(KB == 1 && self.nc == 1 && x < self.computed);
        // Computed columns, then outputs, of this block (the last one may be
        // cut by the row's end).
        let computed = LANES.min(self.computed - x);
        for (rb, acc_r) in acc.iter().enumerate() {
            if self.step == 1 {
                let dst = &mut out[(r + rb) * self.ow + x..][..computed];
                for (v, &a) in acc_r[0].iter().enumerate() {
                    let n = computed.saturating_sub(v * S::LANES).min(S::LANES);
                    if n > 0 {
                        // SAFETY: lanes v * LANES .. + n of dst (MaybeUninit<f32>
                        // has the layout of f32).
                        unsafe { s.store_prefix(dst.as_mut_ptr().cast::<f32>().add(v * S::LANES), n, a) };
                    }
                }
            } else {
                let dst = &mut out[(r + rb) * self.ow + x / 2..][..computed.div_ceil(2)];
                // SAFETY: stores the first dst.len() floats of dst.
                unsafe { s.store_even(dst.as_mut_ptr().cast(), dst.len(), &acc_r[0]) };
            }
        }
    }

    /// The RB x KB x CV accumulators of the column block at `x`, in
    /// registers, masked where the block's lanes read padding.
    #[inline(always)]
    fn accumulate_at<S: Simd, const CV: usize, const RB: usize, const KB: usize>(
        &self,
        s: S,
        w: &[[f32; KB]],
        r: usize,
        x: usize,
    ) -> [[[S::F; CV]; KB]; RB] {
        match self.masks_at(x) {
            Some(masks) => self.accumulate::<S, CV, RB, KB, true>(s, w, r, x, masks),
            None => self.accumulate::<S, CV, RB, KB, false>(s, w, r, x, &[]),
        }
    }

    /// The body of [`Run::accumulate_at`]; with MASKED, each loaded vector
    /// is cut by its kernel column's mask (one channel, taps in HWIO order,
    /// so tap `t` is in kernel column `t % masks.len()`).
    #[inline(always)]
    fn accumulate<S: Simd, const CV: usize, const RB: usize, const KB: usize, const MASKED: bool>(
        &self,
        s: S,
        w: &[[f32; KB]],
        r: usize,
        x: usize,
        masks: &[[u32; LANES]],
    ) -> [[[S::F; CV]; KB]; RB] {
        // One bounds check for the whole block instead of one per load: the
        // farthest load starts at max_off + (r + RB - 1) * row_stride + x.
        let last = self.max_off + (r + RB - 1) * self.row_stride + x + LANES;
        assert!(last <= self.planes.len());
        assert!(!MASKED || self.offs.len() == w.len() && w.len().is_multiple_of(masks.len()));
        let base = self.planes.as_ptr();
        let mut acc = [[[s.zero(); CV]; KB]; RB];
        let mut j = 0;
        for (&off, wt) in self.offs.iter().zip(w) {
            let mut wv = [s.zero(); KB];
            for kb in 0..KB {
                wv[kb] = s.splat(wt[kb]);
            }
            let mut mask = [s.zero(); CV];
            if MASKED {
                mask = mask_vectors(s, &masks[j]);
                j = if j + 1 == masks.len() { 0 } else { j + 1 };
            }
            for (rb, acc_r) in acc.iter_mut().enumerate() {
                let at = off + (r + rb) * self.row_stride + x;
                for v in 0..CV {
                    // SAFETY: at + LANES <= last <= planes.len() (asserted
                    // above): CV unaligned loads inside the planes.
                    let mut d = unsafe { s.load(base.add(at + v * S::LANES)) };
                    if MASKED {
                        d = s.and(d, mask[v]);
                    }
                    for kb in 0..KB {
                        acc_r[kb][v] = s.mul_add(d, wv[kb], acc_r[kb][v]);
                    }
                }
            }
        }
        acc
    }

    /// Output rows `r..r + RB` of a [`Grid`] of K x K taps (one output
    /// channel), output rows SH input rows apart, every column block:
    /// channel by channel and kernel column by kernel column, each input
    /// row's vector is loaded once and feeds every output row of the block
    /// that reads it, with the K weights of that column in registers: half
    /// the loads of the tap-by-tap kernel per multiply-add (whose shifted,
    /// unaligned loads held it near half the FMA peak). The weights and the
    /// bounds are settled once per block of rows, not once per column block.
    #[inline(always)]
    fn grid_rows<S: Simd, const CV: usize, const RB: usize, const KB: usize, const K: usize, const SH: usize>(
        &self,
        s: S,
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
            let acc = match self.masks_at(x) {
                Some(masks) => self.grid_block::<S, CV, RB, KB, K, SH, true>(s, grid, &wk, r, x, masks),
                None => self.grid_block::<S, CV, RB, KB, K, SH, false>(s, grid, &wk, r, x, &[]),
            };
            self.store_one_channel(s, &acc, r, x, out);
        }
    }

    /// One column block of [`Run::grid_rows`]; with MASKED, each loaded
    /// vector is cut by its kernel column's mask. The caller has checked
    /// that the block's reads stay inside the planes.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn grid_block<
        S: Simd,
        const CV: usize,
        const RB: usize,
        const KB: usize,
        const K: usize,
        const SH: usize,
        const MASKED: bool,
    >(
        &self,
        s: S,
        grid: &Grid,
        wk: &[[[f32; K]; K]; 4],
        r: usize,
        x: usize,
        masks: &[[u32; LANES]],
    ) -> [[[S::F; CV]; KB]; RB] {
        assert!(!MASKED || masks.len() == K);
        let start = self.offs[0] + r * self.row_stride + x;
        let mut acc = [[[s.zero(); CV]; KB]; RB];
        for (ch, wch) in wk[..grid.c].iter().enumerate() {
            for (j, wj) in wch.iter().enumerate() {
                let mut wv = [s.zero(); K];
                for (v, &wt) in wv.iter_mut().zip(wj) {
                    *v = s.splat(wt);
                }
                let mut mask = [s.zero(); CV];
                if MASKED {
                    mask = mask_vectors(s, &masks[j]);
                }
                for y in 0..(RB - 1) * SH + K {
                    let at = start + ch * grid.plane + y * grid.row + j;
                    let mut d = [s.zero(); CV];
                    for (v, dv) in d.iter_mut().enumerate() {
                        // SAFETY: a tap's read of this column block, inside
                        // the bound the caller checked, LANES floats.
                        *dv = unsafe { s.load(self.planes.as_ptr().add(at + v * S::LANES)) };
                        if MASKED {
                            *dv = s.and(*dv, mask[v]);
                        }
                    }
                    for (i, wv) in wv.iter().enumerate() {
                        // Output row o reads input rows o * SH + i.
                        if y >= i && (y - i) % SH == 0 && (y - i) / SH < RB {
                            let o = &mut acc[(y - i) / SH][0];
                            for v in 0..CV {
                                o[v] = s.mul_add(d[v], *wv, o[v]);
                            }
                        }
                    }
                }
            }
        }
        acc
    }
}

/// One mask as the CV vectors the kernels AND their loads with.
#[inline(always)]
fn mask_vectors<S: Simd, const CV: usize>(s: S, mask: &[u32; LANES]) -> [S::F; CV] {
    let m: *const f32 = mask.as_ptr().cast();
    let mut v = [s.zero(); CV];
    for (i, vi) in v.iter_mut().enumerate() {
        // SAFETY: a mask holds LANES = CV * S::LANES lanes.
        *vi = unsafe { s.load(m.add(i * S::LANES)) };
    }
    v
}
