//! `shaders/pool2d.wgsl`, entry point `tiled`: pooling of overlapping
//! windows from input tiles staged in workgroup memory; its tile choice and
//! pipeline constants.

use crate::shape::Pool2dGeometry;

use super::pool::{pool_lanes, Pool};
use super::Constants;

/// The tile of the tiled pooling kernel: `th x tw` output pixels x `ct`
/// channel units (vec4s when the channel count is a multiple of 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolTiling {
    /// Output columns per tile.
    pub tw: u32,
    /// Output rows per tile.
    pub th: u32,
    /// Channel units per tile.
    pub ct: u32,
}

impl PoolTiling {
    /// Staged input cells a tile may hold (`TILE_CAP` in the shader: 12 KiB
    /// of vec4, under WebGPU's 16 KiB default workgroup storage).
    pub const CAP: usize = 768;

    /// The tile for a pooling whose windows overlap, or None where they do
    /// not (each input is then read once anyway) or no tile fits `CAP`.
    /// Among the tiles that fit, the one that stages the fewest input cells
    /// per output, with at least half of its invocations busy.
    pub fn choose(g: &Pool2dGeometry) -> Option<Self> {
        let (ekh, ekw) = g.extent();
        if g.sh >= ekh && g.sw >= ekw {
            return None;
        }
        let units = g.c / pool_lanes(g.c);
        let mut best: Option<(f64, usize, PoolTiling)> = None;
        for ct in [1usize, 2, 4, 8, 16, 32] {
            for th in [1usize, 2, 4, 8, 16] {
                for tw in [1usize, 2, 4, 8, 16, 32] {
                    let wg = ct * tw * th;
                    let staged = ((th - 1) * g.sh + ekh) * ((tw - 1) * g.sw + ekw) * ct;
                    if !(32..=256).contains(&wg) || staged > Self::CAP {
                        continue;
                    }
                    let useful = ct.min(units) * tw.min(g.ow) * th.min(g.oh);
                    if 2 * useful < wg {
                        continue;
                    }
                    let score = useful as f64 / staged as f64;
                    let tiling = PoolTiling {
                        tw: tw as u32,
                        th: th as u32,
                        ct: ct as u32,
                    };
                    if best.is_none_or(|(s, w, _)| score > s || (score == s && wg > w)) {
                        best = Some((score, wg, tiling));
                    }
                }
            }
        }
        best.map(|(_, _, t)| t)
    }

    /// The pipeline constants for the variant `v`.
    pub fn constants(&self, v: Pool) -> Constants {
        vec![
            ("WG_T", self.tw * self.th * self.ct),
            ("VEC", u32::from(v.vec)),
            ("AVG", u32::from(v.avg)),
            ("TW", self.tw),
            ("TH", self.th),
            ("CT", self.ct),
        ]
    }

    /// Workgroups for one output row of one image as if tiles were one row
    /// high: a bound on its groups per row.
    pub fn per_row(&self, g: &Pool2dGeometry) -> usize {
        let units = g.c / pool_lanes(g.c);
        units.div_ceil(self.ct as usize) * g.ow.div_ceil(self.tw as usize)
    }
}
