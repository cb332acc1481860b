//! Where the planar kernel's inputs live: the zero-padded, phase-split
//! planes, and how far the rows read in place reach.

use super::kernel::LANES;
use crate::shape::Conv2dGeometry;

/// Layout of the zero-padded planar rows of the planar kernel:
/// `planes[ch][phase][row][q]` holds padded column `q * phases + phase`.
///
/// A grayscale convolution with column stride 2 is not phase-split: it is
/// computed at every column (`step` = 2 computed columns per output) and
/// every other sum is kept. The extra multiply-adds cost less than splitting
/// small rows into phases, which made such convolutions copy-bound.
pub(crate) struct Planes {
    pub(crate) rows: usize,
    pub(crate) width: usize,
    /// Stride phases the columns are split into (`sw`, or 1 with `step`).
    pub(crate) phases: usize,
    /// Computed columns per output column (1, or `sw` = 2 when not split).
    pub(crate) step: usize,
}

impl Planes {
    pub(crate) fn new(g: &Conv2dGeometry, band: usize) -> Self {
        let step = if g.c == 1 && g.sw == 2 && g.nc <= 4 { g.sw } else { 1 };
        let phases = g.sw / step;
        Planes {
            rows: (band - 1) * g.sh + g.extent().0,
            width: (g.span_cols() - 1) / phases + 1,
            phases,
            step,
        }
    }

    pub(crate) fn plane(&self, ch: usize, phase: usize) -> usize {
        (ch * self.phases + phase) * self.rows * self.width
    }

    pub(crate) fn len(&self, g: &Conv2dGeometry) -> usize {
        g.c * self.phases * self.rows * self.width
    }

    /// Columns computed per output row: every column an output reads at its
    /// first tap, `step` apart per output.
    pub(crate) fn computed(&self, g: &Conv2dGeometry) -> usize {
        (g.ow - 1) * self.step + 1
    }

    /// Per phase, the plane columns `q0..q1` that hold image columns from
    /// `x0` on (the same for every row), as `(phase, q0, q1, x0)`.
    pub(crate) fn spans(&self, g: &Conv2dGeometry) -> Vec<(usize, usize, usize, usize)> {
        let (ph, left) = (self.phases, g.pads.left);
        // Padded columns u = q * phases + phase in [left, left + cols) are
        // image columns.
        let cols = (left + g.w).min(self.width * ph).saturating_sub(left);
        (0..ph)
            .filter_map(|phase| {
                let q0 = left.saturating_sub(phase).div_ceil(ph);
                let q1 = (left + cols).saturating_sub(phase).div_ceil(ph).min(self.width);
                (q0 < q1).then(|| (phase, q0, q1, q0 * ph + phase - left))
            })
            .collect()
    }
}

/// How far past the first padded input of its first row the reads of
/// `rows` output rows read in place reach (at least one row; the last
/// column block reads up to LANES - 1 columns past the row).
pub(crate) fn in_place_reach(g: &Conv2dGeometry, layout: &Planes, rows: usize) -> usize {
    let (ekh, ekw) = g.extent();
    (rows.saturating_sub(1) * g.sh + ekh - 1) * g.w + ekw - 1 + layout.computed(g).next_multiple_of(LANES)
}
