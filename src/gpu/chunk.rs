//! Splitting one call into pieces that each fit the device: buffer binding
//! size, buffer size and workgroup counts. A piece is either a run of whole
//! images or, when one image alone is too large, a band of output rows of one
//! image together with the input rows (halo included) that band reads.

use crate::error::{Error, Result};
use crate::shape::{rows_read, PaddingMode};

/// Sizes of one problem, in elements, as the planner needs them.
#[derive(Debug, Clone, Copy)]
pub struct Problem {
    /// Batch size.
    pub m: usize,
    /// Image height.
    pub h: usize,
    /// Floats per image row (`w * c`).
    pub in_row_elems: usize,
    /// Output height.
    pub oh: usize,
    /// Floats per output row (`ow * nc` or `ow * c`).
    pub out_row_elems: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Dilated kernel/window height.
    pub ekh: usize,
    /// Rows of padding above.
    pub pad_top: usize,
    /// Output elements (`m_total` for conv) covered by one workgroup.
    pub units_per_group: usize,
    /// Work units per output row (pixels for conv, elements for pooling).
    pub units_per_out_row: usize,
    /// The border mode: the rows a band reads are the image rows its padded
    /// rows map to.
    pub mode: PaddingMode,
    /// Bands read whole images (adaptive windows).
    pub whole: bool,
}

/// Limits a chunk must respect.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Largest buffer binding, in bytes.
    pub max_binding_bytes: u64,
    /// Largest number of workgroups in one dispatch (after folding).
    pub max_groups: u64,
}

/// One piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// First image.
    pub n0: usize,
    /// Images in this piece.
    pub batch: usize,
    /// First output row.
    pub out_row0: usize,
    /// Output rows.
    pub out_rows: usize,
    /// First input row uploaded.
    pub in_row0: usize,
    /// Input rows uploaded per image.
    pub in_rows: usize,
}

impl Problem {
    /// Input rows `[y0, y1)` that output rows `[oy0, oy1)` read.
    fn input_rows(&self, oy0: usize, oy1: usize) -> (usize, usize) {
        if self.whole {
            return (0, self.h);
        }
        rows_read(
            self.mode,
            self.h,
            self.pad_top,
            oy0 * self.sh,
            (oy1 - 1) * self.sh + self.ekh,
        )
    }

    /// Input rows of the worst band of `rows` output rows.
    fn band_rows(&self, rows: usize) -> usize {
        if self.whole || self.mode != PaddingMode::Zeros {
            self.h
        } else {
            ((rows - 1) * self.sh + self.ekh).min(self.h)
        }
    }

    fn fits(&self, batch: usize, out_rows: usize, in_rows: usize, lim: &ChunkLimits) -> bool {
        let in_bytes = (batch * in_rows * self.in_row_elems * 4) as u64;
        let out_bytes = (batch * out_rows * self.out_row_elems * 4) as u64;
        let groups = (batch * out_rows * self.units_per_out_row).div_ceil(self.units_per_group) as u64;
        in_bytes <= lim.max_binding_bytes && out_bytes <= lim.max_binding_bytes && groups <= lim.max_groups
    }
}

/// Splits `p` into chunks that each respect `lim`, in output order.
pub fn plan(p: &Problem, lim: &ChunkLimits) -> Result<Vec<Chunk>> {
    let whole = |n0: usize, batch: usize| Chunk {
        n0,
        batch,
        out_row0: 0,
        out_rows: p.oh,
        in_row0: 0,
        in_rows: p.h,
    };
    if p.m == 0 {
        return Ok(Vec::new());
    }
    // Largest run of whole images; the predicate is monotone in the batch.
    let mut lo = 0;
    let mut hi = p.m;
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if p.fits(mid, p.oh, p.h, lim) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo > 0 {
        return Ok((0..p.m).step_by(lo).map(|n0| whole(n0, lo.min(p.m - n0))).collect());
    }
    // One image is too large: bands of output rows.
    let band_fits = |rows: usize| p.fits(1, rows, p.band_rows(rows), lim);
    let (mut lo, mut hi) = (0, p.oh);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if band_fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo == 0 {
        return Err(Error::Gpu(format!(
            "one output row needs more than the device allows (binding limit {} bytes, {} workgroups): \
             input rows of {} floats, output rows of {} floats",
            lim.max_binding_bytes, lim.max_groups, p.in_row_elems, p.out_row_elems
        )));
    }
    let mut chunks = Vec::new();
    for n in 0..p.m {
        for oy0 in (0..p.oh).step_by(lo) {
            let oy1 = (oy0 + lo).min(p.oh);
            let (y0, y1) = p.input_rows(oy0, oy1);
            chunks.push(Chunk {
                n0: n,
                batch: 1,
                out_row0: oy0,
                out_rows: oy1 - oy0,
                in_row0: y0,
                in_rows: y1 - y0,
            });
        }
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem() -> Problem {
        Problem {
            m: 3,
            h: 10,
            in_row_elems: 8,
            oh: 10,
            out_row_elems: 8,
            sh: 1,
            ekh: 3,
            pad_top: 1,
            units_per_group: 4,
            units_per_out_row: 8,
            mode: PaddingMode::Zeros,
            whole: false,
        }
    }

    #[test]
    fn whole_batch_when_it_fits() {
        let lim = ChunkLimits {
            max_binding_bytes: 1 << 20,
            max_groups: 1 << 20,
        };
        assert_eq!(plan(&problem(), &lim).unwrap().len(), 1);
    }

    #[test]
    fn batch_split_then_row_bands() {
        // One image is 10 * 8 * 4 = 320 bytes: two fit in 700.
        let lim = ChunkLimits {
            max_binding_bytes: 700,
            max_groups: 1 << 20,
        };
        let chunks = plan(&problem(), &lim).unwrap();
        assert_eq!(chunks.iter().map(|c| c.batch).collect::<Vec<_>>(), vec![2, 1]);
        // 100 bytes = 3 rows of 32 bytes: 1 output row per band (3 input rows).
        let lim = ChunkLimits {
            max_binding_bytes: 100,
            max_groups: 1 << 20,
        };
        let chunks = plan(&problem(), &lim).unwrap();
        assert_eq!(chunks.len(), 30);
        assert_eq!((chunks[0].in_row0, chunks[0].in_rows), (0, 2));
        assert_eq!((chunks[5].in_row0, chunks[5].in_rows), (4, 3));
        assert_eq!((chunks[9].in_row0, chunks[9].in_rows), (8, 2));
        let lim = ChunkLimits {
            max_binding_bytes: 64,
            max_groups: 1 << 20,
        };
        assert!(plan(&problem(), &lim).is_err());
    }
}
