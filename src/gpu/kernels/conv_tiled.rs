//! `shaders/conv2d.wgsl`: the implicit-GEMM conv kernel, its tiling and
//! its pipeline constants.

use crate::shape::Conv2dGeometry;

use super::{Constants, ConvRules};

/// The tiled conv kernel's specialisation: register block and workgroup
/// extents, chosen by output-channel count so a narrow convolution does not
/// waste most of a wide tile, and its load variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvTiling {
    /// Outputs per side of one invocation's register block (`RB`: 4 or 8).
    pub block: u32,
    /// Invocations along output channels (tile width / block).
    pub wg_n: u32,
    /// Invocations along output pixels (tile height / block).
    pub wg_m: u32,
    /// `c % 4 == 0`: images read as vec4 along channels.
    pub vec_a: bool,
    /// `nc % 4 == 0`: kernels read as vec4 along output channels.
    pub vec_b: bool,
    /// 1x1 kernel, stride 1, no padding: pixel `m` is row `m` of the image
    /// matrix, a plain GEMM.
    pub pointwise: bool,
}

impl ConvTiling {
    /// Largest tile height and width, as in the shader (its workgroup
    /// memory is sized for them).
    #[cfg_attr(not(test), allow(dead_code))]
    pub const MAX_TILE: (u32, u32) = (256, 128);

    /// Workgroups of 8x8-block tiles a convolution needs before it takes
    /// them: two per multiprocessor of a large GPU (an H100 has 132).
    pub const MIN_WIDE_GROUPS: usize = 256;

    /// The specialisation for a convolution; `block` forces the register
    /// block (4 or 8) instead of the choice by output-channel count and
    /// size. On a `software` adapter (a CPU running the invocations as SIMD
    /// lanes, as lavapipe does) every layer takes 8x8 blocks: such a device
    /// has a handful of cores to fill, not a hundred multiprocessors, and
    /// each read of workgroup memory is a gather there, so the block that
    /// does the most multiply-adds per read wins even on narrow layers.
    pub fn for_conv(g: &Conv2dGeometry, block: Option<u32>, software: bool) -> Self {
        if let Some(block) = block.or(software.then_some(8)) {
            return Self::with_block(g, block);
        }
        // 8x8 blocks do 64 multiply-adds per four vec4 reads of workgroup
        // memory (4x4: 16 per two), the usual shape of a fast SGEMM, but
        // need a tile 64+ wide to keep its columns busy, and their 128-pixel
        // tiles leave most of a large GPU idle on a small layer, which gets
        // more, smaller tiles instead.
        let wide = Self::with_block(g, 8);
        if g.group_nc() >= 64 && wide.groups(g) >= Self::MIN_WIDE_GROUPS {
            wide
        } else {
            Self::with_block(g, 4)
        }
    }

    /// The specialisation with register block `block`.
    fn with_block(g: &Conv2dGeometry, block: u32) -> Self {
        let (wg_n, wg_m) = match (block, g.group_nc()) {
            (8, 0..=64) => (8, 16),
            (8, _) => (16, 16),
            (_, 0..=4) => (1, 64),
            (_, 5..=16) => (4, 64),
            _ => (16, 16),
        };
        ConvTiling {
            block,
            wg_n,
            wg_m,
            vec_a: g.group_c().is_multiple_of(4),
            vec_b: g.group_nc().is_multiple_of(4),
            pointwise: g.is_pointwise() && g.groups == 1,
        }
    }

    /// Workgroups of the whole convolution (before chunking).
    fn groups(&self, g: &Conv2dGeometry) -> usize {
        (g.m * g.oh * g.ow).div_ceil(self.tile_m() as usize) * self.tiles_n(g) * g.groups
    }

    /// Tiles across one group's output channels.
    pub fn tiles_n(&self, g: &Conv2dGeometry) -> usize {
        g.group_nc().div_ceil(self.tile_n() as usize)
    }

    /// Output pixels per workgroup.
    pub fn tile_m(&self) -> u32 {
        self.wg_m * self.block
    }

    /// Output channels per workgroup.
    pub fn tile_n(&self) -> u32 {
        self.wg_n * self.block
    }

    /// The pipeline constants of this specialisation with `rules`.
    pub fn constants(&self, rules: ConvRules) -> Constants {
        let mut c = vec![
            ("WG_N", self.wg_n),
            ("WG_M", self.wg_m),
            ("VEC_A", u32::from(self.vec_a)),
            ("VEC_B", u32::from(self.vec_b)),
            ("POINTWISE", u32::from(self.pointwise)),
            ("RB", self.block),
        ];
        c.extend(rules.constants());
        c
    }
}
