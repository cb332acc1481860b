//! Shader modules, bind-group layouts and a cache of compute pipelines keyed
//! by kernel family and override constants: no pipeline is built per call.

use std::collections::HashMap;
use std::sync::Mutex;

/// Which shader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `shaders/conv2d.wgsl`.
    Conv2d,
    /// `shaders/conv2d_direct.wgsl`.
    Conv2dDirect,
    /// `shaders/pool2d.wgsl`, entry point `main`.
    Pool2d,
    /// `shaders/pool2d.wgsl`, entry point `tiled`.
    Pool2dTiled,
    /// `shaders/pool2d_argmax.wgsl`.
    Pool2dArgmax,
}

/// A shader as the device gets it: `shaders/common.wgsl` (params structs,
/// border and activation rules) in front of the shader's own file.
macro_rules! shader {
    ($label:literal, $file:literal) => {
        wgpu::ShaderModuleDescriptor {
            label: Some($label),
            source: wgpu::ShaderSource::Wgsl(
                concat!(
                    include_str!("../../shaders/common.wgsl"),
                    include_str!(concat!("../../shaders/", $file))
                )
                .into(),
            ),
        }
    };
}

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
    /// size.
    pub fn for_conv(g: &crate::shape::Conv2dGeometry, block: Option<u32>) -> Self {
        if let Some(block) = block {
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
    fn with_block(g: &crate::shape::Conv2dGeometry, block: u32) -> Self {
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
    fn groups(&self, g: &crate::shape::Conv2dGeometry) -> usize {
        (g.m * g.oh * g.ow).div_ceil(self.tile_m() as usize) * self.tiles_n(g) * g.groups
    }

    /// Tiles across one group's output channels.
    pub fn tiles_n(&self, g: &crate::shape::Conv2dGeometry) -> usize {
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
}

/// Invocations per workgroup of the pooling kernel.
pub const POOL_WG: u32 = 256;

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

/// Channels per invocation of the pooling kernels: a vec4 where the
/// channel count is a multiple of 4, else one.
pub fn pool_lanes(c: usize) -> usize {
    if c.is_multiple_of(4) {
        4
    } else {
        1
    }
}

impl PoolTiling {
    /// Staged input cells a tile may hold (`TILE_CAP` in the shader: 12 KiB
    /// of vec4, under WebGPU's 16 KiB default workgroup storage).
    pub const CAP: usize = 768;

    /// The tile for a pooling whose windows overlap, or None where they do
    /// not (each input is then read once anyway) or no tile fits `CAP`.
    /// Among the tiles that fit, the one that stages the fewest input cells
    /// per output, with at least half of its invocations busy.
    pub fn choose(g: &crate::shape::Pool2dGeometry) -> Option<Self> {
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
}

/// Invocations per workgroup of the direct conv kernel.
pub const DIRECT_WG: u32 = 64;

/// Output channels up to which the direct conv kernel is used (its
/// `MAX_NC`): a GEMM tile would be mostly empty there.
pub const DIRECT_MAX_NC: usize = 4;

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn uniform(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// Modules, layouts and the pipeline cache of one device.
pub struct Pipelines {
    conv_module: wgpu::ShaderModule,
    direct_module: wgpu::ShaderModule,
    pool_module: wgpu::ShaderModule,
    argmax_module: wgpu::ShaderModule,
    pub(crate) conv_layout: wgpu::BindGroupLayout,
    pub(crate) pool_layout: wgpu::BindGroupLayout,
    conv_pipeline_layout: wgpu::PipelineLayout,
    pool_pipeline_layout: wgpu::PipelineLayout,
    cache: Mutex<HashMap<(Family, [u32; 6]), wgpu::ComputePipeline>>,
}

impl Pipelines {
    /// Compiles the shader modules and builds the layouts.
    pub fn new(device: &wgpu::Device) -> Self {
        let conv_module = device.create_shader_module(shader!("conv2d", "conv2d.wgsl"));
        let direct_module = device.create_shader_module(shader!("conv2d_direct", "conv2d_direct.wgsl"));
        let pool_module = device.create_shader_module(shader!("pool2d", "pool2d.wgsl"));
        let argmax_module = device.create_shader_module(shader!("pool2d_argmax", "pool2d_argmax.wgsl"));
        let conv_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("conv2d"),
            entries: &[
                uniform(0),
                storage(1, true),
                storage(2, true),
                storage(3, false),
                storage(4, true),
            ],
        });
        let pool_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("pool2d"),
            entries: &[uniform(0), storage(1, true), storage(2, false)],
        });
        let layout = |bgl: &wgpu::BindGroupLayout| {
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(bgl)],
                immediate_size: 0,
            })
        };
        Pipelines {
            conv_pipeline_layout: layout(&conv_layout),
            pool_pipeline_layout: layout(&pool_layout),
            conv_module,
            direct_module,
            pool_module,
            argmax_module,
            conv_layout,
            pool_layout,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, device: &wgpu::Device, family: Family, consts: [u32; 6]) -> wgpu::ComputePipeline {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((family, consts))
            .or_insert_with(|| {
                let (module, layout, names): (_, _, &[&str]) = match family {
                    Family::Conv2d => (
                        &self.conv_module,
                        &self.conv_pipeline_layout,
                        &["WG_N", "WG_M", "VEC_A", "VEC_B", "POINTWISE", "RB"],
                    ),
                    Family::Conv2dDirect => (&self.direct_module, &self.conv_pipeline_layout, &["WG", "PER_OUTPUT"]),
                    Family::Pool2dArgmax => (&self.argmax_module, &self.pool_pipeline_layout, &["WG"]),
                    Family::Pool2d => (&self.pool_module, &self.pool_pipeline_layout, &["WG", "VEC"]),
                    Family::Pool2dTiled => (
                        &self.pool_module,
                        &self.pool_pipeline_layout,
                        &["WG_T", "VEC", "TW", "TH", "CT"],
                    ),
                };
                let constants: Vec<(&str, f64)> = names.iter().zip(consts).map(|(n, v)| (*n, v as f64)).collect();
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(match family {
                        Family::Conv2d => "conv2d",
                        Family::Conv2dDirect => "conv2d_direct",
                        Family::Pool2d => "pool2d",
                        Family::Pool2dTiled => "pool2d_tiled",
                        Family::Pool2dArgmax => "pool2d_argmax",
                    }),
                    layout: Some(layout),
                    module,
                    entry_point: Some(if family == Family::Pool2dTiled { "tiled" } else { "main" }),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        // Every workgroup variable is written before it is read.
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
            })
            .clone()
    }

    /// The conv pipeline for a specialisation.
    pub fn conv(&self, device: &wgpu::Device, t: ConvTiling) -> wgpu::ComputePipeline {
        let flags = [t.vec_a, t.vec_b, t.pointwise].map(u32::from);
        self.get(
            device,
            Family::Conv2d,
            [t.wg_n, t.wg_m, flags[0], flags[1], flags[2], t.block],
        )
    }

    /// The direct conv pipeline; `per_output`: one invocation per output
    /// value rather than per pixel.
    pub fn conv_direct(&self, device: &wgpu::Device, per_output: bool) -> wgpu::ComputePipeline {
        self.get(
            device,
            Family::Conv2dDirect,
            [DIRECT_WG, u32::from(per_output), 0, 0, 0, 0],
        )
    }

    /// The argmax pipeline of max pooling.
    pub fn pool_argmax(&self, device: &wgpu::Device) -> wgpu::ComputePipeline {
        self.get(device, Family::Pool2dArgmax, [POOL_WG, 0, 0, 0, 0, 0])
    }

    /// The tiled pooling pipeline for a tile; `vec` as for [`Pipelines::pool`].
    pub fn pool_tiled(&self, device: &wgpu::Device, t: PoolTiling, vec: bool) -> wgpu::ComputePipeline {
        let wg = t.tw * t.th * t.ct;
        self.get(device, Family::Pool2dTiled, [wg, u32::from(vec), t.tw, t.th, t.ct, 0])
    }

    /// The pooling pipeline; `vec` when the channel count is a multiple of
    /// 4 (one invocation per four channels).
    pub fn pool(&self, device: &wgpu::Device, vec: bool) -> wgpu::ComputePipeline {
        self.get(device, Family::Pool2d, [POOL_WG, u32::from(vec), 0, 0, 0, 0])
    }
}
