//! `shaders/conv2d.wgsl`: the implicit-GEMM conv kernel, its tiling and
//! its pipeline constants.

use crate::shape::Conv2dGeometry;

use super::{Constants, ConvRules};

/// How the tiled conv kernel stages its reduction: workgroup buffers per
/// tile and reduction steps per slice (`STAGES`, `KT` in the shader).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Staging {
    /// 1: one buffer, two barriers per slice; 2: double-buffered, one.
    pub stages: u32,
    /// Reduction steps per slice: 8, 16 or 32.
    pub kt: u32,
}

impl Staging {
    /// One buffer of 8-step slices: what fits WebGPU's default 16 KiB of
    /// workgroup memory on every tiling, and what software adapters take
    /// (on lavapipe neither more stages nor longer slices measured faster:
    /// benches/RESULTS.md).
    pub const SINGLE: Staging = Staging { stages: 1, kt: 8 };

    /// A hardware GPU's choices, most pipelined first: the first one a
    /// tiling fits (the device's workgroup memory, the shader's staging
    /// registers) is taken.
    pub const PREFERRED: [Staging; 3] = [
        Staging { stages: 2, kt: 16 },
        Staging { stages: 2, kt: 8 },
        Staging::SINGLE,
    ];

    /// Parses `stages x kt` as `CONVPOOL_CONV_STAGING` spells it: `1x8`,
    /// `2x8`, `1x16`, `2x16`, `1x32` or `2x32`. The 32-step slices are
    /// asked for only (no default takes them): they halve the barriers
    /// again for twice the workgroup memory, which only a device run can
    /// weigh.
    pub fn parse(text: &str) -> Option<Staging> {
        let (stages, kt) = text.trim().split_once(['x', 'X'])?;
        let s = Staging {
            stages: stages.trim().parse().ok()?,
            kt: kt.trim().parse().ok()?,
        };
        (matches!(s.stages, 1 | 2) && matches!(s.kt, 8 | 16 | 32)).then_some(s)
    }
}

impl std::fmt::Display for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.stages, self.kt)
    }
}

/// What a device allows the tiled conv kernel, and what was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvDevice {
    /// A software adapter (see [`ConvTiling::for_conv`]).
    pub software: bool,
    /// A forced register block (4 or 8).
    pub block: Option<u32>,
    /// A forced staging, tried first; a tiling it does not fit takes the
    /// next of [`Staging::PREFERRED`] below it.
    pub staging: Option<Staging>,
    /// The device's workgroup memory, bytes.
    pub workgroup_bytes: u64,
    /// RGB images read as four channels, forced on or off (see
    /// [`super::ConvKernel::pads_rgb`]).
    pub pad_rgb: Option<bool>,
    /// Winograd F(2x2, 3x3) asked for, for the layers it takes
    /// ([`super::conv_winograd::ConvWinograd::fits`]).
    pub winograd: bool,
}

impl ConvDevice {
    /// WebGPU's defaults: a hardware adapter with 16 KiB of workgroup
    /// memory and nothing forced.
    #[cfg_attr(not(test), allow(dead_code))]
    pub const DEFAULT: ConvDevice = ConvDevice {
        software: false,
        block: None,
        staging: None,
        workgroup_bytes: 16 << 10,
        pad_rgb: None,
        winograd: false,
    };
}

/// Staging registers of the shader (`MAX_ROWS`, `MAX_BQ`: vec4s per
/// invocation and slice for the A and B tiles).
pub const MAX_ROWS: u32 = 8;
/// See [`MAX_ROWS`].
pub const MAX_BQ: u32 = 4;

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
    /// Buffers and slice length.
    pub staging: Staging,
}

impl ConvTiling {
    /// Workgroups of 8x8-block tiles a convolution needs before it takes
    /// them: two per multiprocessor of a large GPU (an H100 has 132).
    pub const MIN_WIDE_GROUPS: usize = 256;

    /// The specialisation for a convolution on `dev`. A forced block (4
    /// or 8) replaces the choice by output-channel count and size. On a
    /// software adapter (a CPU running the invocations as SIMD lanes, as
    /// lavapipe does) every layer takes 8x8 blocks: such a device has a
    /// handful of cores to fill, not a hundred multiprocessors, and each
    /// read of workgroup memory is a gather there, so the block that does
    /// the most multiply-adds per read wins even on narrow layers.
    pub fn for_conv(g: &Conv2dGeometry, dev: &ConvDevice) -> Self {
        let tiling = match dev.block.or(dev.software.then_some(8)) {
            Some(block) => Self::with_block(g, block),
            None => {
                // 8x8 blocks do 64 multiply-adds per four vec4 reads of
                // workgroup memory (4x4: 16 per two), the usual shape of a
                // fast SGEMM, but need a tile 64+ wide to keep its columns
                // busy, and their 128-pixel tiles leave most of a large GPU
                // idle on a small layer, which gets more, smaller tiles
                // instead.
                let wide = Self::with_block(g, 8);
                if g.group_nc() >= 64 && wide.groups(g) >= Self::MIN_WIDE_GROUPS {
                    wide
                } else {
                    Self::with_block(g, 4)
                }
            }
        };
        tiling.staged(dev)
    }

    /// This tiling with the most pipelined staging `dev` allows: the forced
    /// one or, on a hardware adapter, the first of [`Staging::PREFERRED`],
    /// where it fits; otherwise those after it.
    fn staged(self, dev: &ConvDevice) -> Self {
        let first = match (dev.staging, dev.software) {
            (Some(forced), _) => forced,
            (None, true) => Staging::SINGLE,
            (None, false) => Staging::PREFERRED[0],
        };
        let below = Staging::PREFERRED
            .into_iter()
            .filter(|s| s.stages <= first.stages && s.kt <= first.kt);
        std::iter::once(first)
            .chain(below)
            .map(|staging| ConvTiling { staging, ..self })
            .find(|t| t.fits(dev.workgroup_bytes))
            .unwrap_or(ConvTiling {
                staging: Staging::SINGLE,
                ..self
            })
    }

    /// Bytes of workgroup memory the shader declares for this tiling: the
    /// A and B tiles of every stage and the tile rows' coordinates.
    pub fn workgroup_bytes(&self) -> u64 {
        let (m, n, kt) = (self.tile_m() as u64, self.tile_n() as u64, self.staging.kt as u64);
        (m + n) * kt * 4 * self.staging.stages as u64 + m * 16
    }

    /// Whether this tiling fits `workgroup_bytes` and the shader's staging
    /// registers, and its invocations divide the slice evenly (the loads
    /// assume a multiple of KT of them).
    pub fn fits(&self, workgroup_bytes: u64) -> bool {
        let threads = self.wg_m * self.wg_n;
        let kt = self.staging.kt;
        let a = if self.vec_a {
            self.tile_m().div_ceil(threads / (kt / 4))
        } else {
            (self.tile_m() * kt).div_ceil(threads).div_ceil(4)
        };
        let b = if self.vec_b {
            (kt * self.tile_n() / 4).div_ceil(threads)
        } else {
            (kt * self.tile_n()).div_ceil(threads).div_ceil(4)
        };
        threads.is_multiple_of(kt) && a <= MAX_ROWS && b <= MAX_BQ && self.workgroup_bytes() <= workgroup_bytes
    }

    /// The specialisation with register block `block`, singly staged.
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
            staging: Staging::SINGLE,
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
            ("STAGES", self.staging.stages),
            ("KT", self.staging.kt),
        ];
        c.extend(rules.constants());
        c
    }
}
