//! The bottom layer of the fast CPU path: how work is split into pieces
//! run in parallel with rayon, the one scratch budget, the per-thread
//! workspace and the prefetch of the next piece's input. Every kernel
//! imports this; it imports no kernel.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::epilogue::Epilogue;

thread_local! {
    /// Per-thread workspace (planes or im2col tiles), reused across pieces.
    pub(super) static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats of workspace (padded input band, planes, window rows) one piece
/// of a kernel aims for: the one scratch budget of every kernel that
/// copies its input, about a core's share of the L2 cache.
pub(super) const TILE_FLOATS: usize = 1 << 16;

/// A piece of work: images `n0..n1`, output rows `oy0..oy1` of each (whole
/// images when several are grouped, a band of rows of one image otherwise).
#[derive(Debug, Clone, Copy)]
pub(super) struct Piece {
    pub(super) n0: usize,
    pub(super) n1: usize,
    pub(super) oy0: usize,
    pub(super) oy1: usize,
}

/// Runs `f(piece, out)` over pieces in parallel; `out` is the piece's
/// contiguous slice of the NHWC output. A piece holds at most `rows` output
/// rows; `rows >= oh` groups whole images.
pub(super) fn for_each_piece(
    out: &mut [MaybeUninit<f32>],
    m: usize,
    oh: usize,
    row_elems: usize,
    rows: usize,
    f: impl Fn(Piece, &mut [f32]) + Sync,
) {
    for_each_piece_uninit(out, m, oh, row_elems, rows, |p, dst| {
        f(p, super::memory::zero_fill(dst))
    })
}

/// [`for_each_piece`] for a kernel that writes every element of its piece
/// itself (so zeroing it first would be a wasted pass): `out`'s pieces are
/// handed over uninitialised.
pub(super) fn for_each_piece_uninit(
    out: &mut [MaybeUninit<f32>],
    m: usize,
    oh: usize,
    row_elems: usize,
    rows: usize,
    f: impl Fn(Piece, &mut [MaybeUninit<f32>]) + Sync,
) {
    let per_image = oh * row_elems;
    if per_image == 0 || m == 0 {
        return;
    }
    if rows >= oh {
        // As many whole images per piece as fit the tile, while leaving
        // enough pieces to balance the cores.
        let threads = rayon::current_num_threads();
        let group = (rows / oh).clamp(1, m.div_ceil(8 * threads).max(1));
        out.par_chunks_mut(group * per_image)
            .enumerate()
            .for_each(|(b, chunk)| {
                let n0 = b * group;
                let piece = Piece {
                    n0,
                    n1: n0 + chunk.len() / per_image,
                    oy0: 0,
                    oy1: oh,
                };
                f(piece, chunk)
            });
    } else {
        out.par_chunks_mut(per_image).enumerate().for_each(|(n, image_out)| {
            image_out
                .par_chunks_mut(rows * row_elems)
                .enumerate()
                .for_each(|(b, band)| {
                    let oy0 = b * rows;
                    let piece = Piece {
                        n0: n,
                        n1: n + 1,
                        oy0,
                        oy1: oy0 + band.len() / row_elems,
                    };
                    f(piece, band)
                });
        });
    }
}

/// Applies the epilogue (bias, activation) to a piece of NHWC output of
/// `nc` channels while it is still in cache: the kernels call it once their
/// piece is stored.
///
/// # Safety
/// Every element of `dst` must have been written.
pub(super) unsafe fn finish(dst: &mut [MaybeUninit<f32>], ep: &Epilogue, nc: usize) {
    if !ep.is_identity() {
        // SAFETY: every element was written (the caller's contract).
        ep.apply(unsafe { super::memory::assume_written(dst) }, nc);
    }
}

/// Output rows per piece so that `per_row` floats of workspace per output
/// row stay near `tile`; with few images, bands split each image so every
/// core gets work. May exceed `oh`: whole images are then grouped.
pub(super) fn piece_rows(oh: usize, per_row: usize, m: usize, tile: usize) -> usize {
    let by_size = (tile / per_row.max(1)).max(1);
    let threads = rayon::current_num_threads();
    if m >= 4 * threads {
        return by_size;
    }
    let by_parallelism = oh.div_ceil((4 * threads).div_ceil(m.max(1))).max(1);
    by_size.min(by_parallelism)
}

/// Floats per 64-byte cache line.
pub(super) const LINE: usize = 16;

/// Prefetches cache lines `lines` of `next` (line `l` holds its floats from
/// `l * LINE` on); lines past its end are skipped.
#[inline(always)]
pub(super) fn prefetch_lines(next: &[f32], lines: std::ops::Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    for l in lines.start..lines.end.min(next.len().div_ceil(LINE)) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: l * LINE < next.len(), an address inside `next` (and a
        // prefetch never faults).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(next.as_ptr().add(l * LINE).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (next, lines);
}
