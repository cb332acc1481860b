//! Convolution and pooling on a [`GpuContext`]: validation of device limits,
//! chunk planning, upload, dispatch and the one readback path.

use std::mem::MaybeUninit;

use bytemuck::Pod;
use ndarray::{Array4, ArrayView4};
use rayon::prelude::*;

use crate::epilogue::Activation;
use crate::error::{Error, Result};
use crate::shape::{Conv2dGeometry, PaddingMode, Pool2dGeometry, PoolMode};

use super::buffers::Buffers;
use super::chunk::{plan, Chunk, ChunkLimits, Problem};
use super::context::GpuContext;
use super::params::{ConvParams, PoolParams};
use super::pipelines::{pool_lanes, ConvTiling, PoolTiling, DIRECT_MAX_NC, DIRECT_WG, POOL_WG};

/// Largest input or output chunk, bytes: large enough that a dispatch
/// dwarfs its fixed cost, small enough that the buffers of two chunks in
/// flight stay a fraction of a large call's own input and output.
const CHUNK_CAP_BYTES: u64 = 32 << 20;

fn u32_of(what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Overflow {
        what,
        detail: format!("{v} does not fit the GPU's 32-bit indices"),
    })
}

/// The shaders compute coordinates in i32: refuse geometries where the last
/// tap of a window would not fit.
fn check_i32(what: &'static str, out: usize, stride: usize, k: usize, d: usize, len: usize) -> Result<()> {
    let reach = (out.saturating_sub(1))
        .checked_mul(stride)
        .and_then(|v| v.checked_add((k - 1).checked_mul(d)?))
        .and_then(|v| v.checked_add(len));
    match reach {
        Some(v) if v < i32::MAX as usize => Ok(()),
        _ => Err(Error::Overflow {
            what,
            detail: format!("output {out}, stride {stride}, kernel {k}, dilation {d}, size {len} exceed the GPU's 32-bit coordinates"),
        }),
    }
}

/// Folds `groups` workgroups into `(x, y)` with both at most `max_dim`.
fn fold(groups: u64, max_dim: u32) -> Result<(u32, u32)> {
    if groups == 0 {
        return Ok((0, 0));
    }
    let x = groups.min(max_dim as u64);
    let y = groups.div_ceil(x);
    if y > max_dim as u64 {
        return Err(Error::Gpu(format!(
            "{groups} workgroups do not fold into {max_dim} x {max_dim}"
        )));
    }
    Ok((x as u32, y as u32))
}

/// One chunk ready to dispatch.
struct Step<P> {
    params: P,
    groups: (u32, u32, u32),
}

/// Which conv kernel a convolution takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvKernel {
    /// The implicit GEMM of `conv2d.wgsl`.
    Tiled(ConvTiling),
    /// `conv2d_direct.wgsl`, one invocation per pixel: few output channels.
    Direct,
    /// `conv2d_direct.wgsl`, one invocation per output value: groups of few
    /// channels (depthwise), where a GEMM tile would be one column wide.
    PerOutput,
}

fn conv_problem(g: &Conv2dGeometry, kernel: ConvKernel) -> Problem {
    Problem {
        m: g.m,
        h: g.h,
        in_row_elems: g.w * g.c,
        oh: g.oh,
        out_row_elems: g.ow * g.nc,
        sh: g.sh,
        ekh: g.extent().0,
        pad_top: g.pads.top,
        // Work units per workgroup: one per invocation in the direct
        // kernel, a tile of pixels in the tiled one.
        units_per_group: match kernel {
            ConvKernel::Tiled(t) => t.tile_m() as usize,
            ConvKernel::Direct | ConvKernel::PerOutput => DIRECT_WG as usize,
        },
        units_per_out_row: match kernel {
            ConvKernel::PerOutput => g.ow * g.nc,
            ConvKernel::Tiled(_) | ConvKernel::Direct => g.ow,
        },
        mode: g.padding_mode,
        whole: false,
    }
}

/// Workgroups of the tiled pooling kernel for one output row of one image
/// as if tiles were one row high: a bound on its groups per row.
fn tiles_per_row(g: &Pool2dGeometry, t: PoolTiling) -> usize {
    let units = g.c / pool_lanes(g.c);
    units.div_ceil(t.ct as usize) * g.ow.div_ceil(t.tw as usize)
}

fn pool_problem(g: &Pool2dGeometry, tiled: Option<PoolTiling>) -> Problem {
    Problem {
        m: g.m,
        h: g.h,
        in_row_elems: g.w * g.c,
        oh: g.oh,
        out_row_elems: g.ow * g.c,
        sh: g.sh,
        ekh: g.extent().0,
        pad_top: g.pads.top,
        units_per_group: tiled.map_or(POOL_WG as usize, |_| 1),
        units_per_out_row: tiled.map_or(g.ow * g.c, |t| tiles_per_row(g, t)),
        mode: PaddingMode::Zeros,
        whole: g.adaptive,
    }
}

impl GpuContext {
    /// The chunks a convolution is split into on this device.
    pub fn plan_conv(&self, g: &Conv2dGeometry) -> Result<Vec<Chunk>> {
        plan(&conv_problem(g, self.conv_kernel(g)), &self.limits())
    }

    /// The chunks a pooling is split into on this device.
    pub fn plan_pool(&self, g: &Pool2dGeometry) -> Result<Vec<Chunk>> {
        plan(&pool_problem(g, self.pool_tiling(g)), &self.limits())
    }

    /// The conv kernel (and the tiled one's specialisation) on this context.
    fn conv_kernel(&self, g: &Conv2dGeometry) -> ConvKernel {
        if g.nc <= DIRECT_MAX_NC {
            ConvKernel::Direct
        } else if g.groups > 1 && g.group_c() <= DIRECT_MAX_NC {
            ConvKernel::PerOutput
        } else {
            ConvKernel::Tiled(ConvTiling::for_conv(g, self.conv_register_block))
        }
    }

    /// The tile of the tiled pooling kernel where it is enabled and applies
    /// (fixed windows only).
    fn pool_tiling(&self, g: &Pool2dGeometry) -> Option<PoolTiling> {
        (self.tiled_pooling && !g.adaptive)
            .then(|| PoolTiling::choose(g))
            .flatten()
    }

    fn limits(&self) -> ChunkLimits {
        let d = self.max_groups_per_dim as u64;
        ChunkLimits {
            // Two chunks are in flight, each with an input, an output and a
            // mappable copy: capping a chunk keeps the memory of a huge call
            // near its input plus its output.
            max_binding_bytes: self.max_binding_bytes.min(CHUNK_CAP_BYTES),
            max_groups: d * d,
        }
    }

    fn take_buffers(&self) -> Buffers {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give_buffers(&self, b: Buffers) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(b);
    }

    /// Convolution on the GPU. `g` must come from [`crate::Conv2dSpec::resolve`].
    /// With `profile`, also returns the summed kernel time in seconds when
    /// the device records timestamps.
    pub(crate) fn conv2d(
        &self,
        images: ArrayView4<f32>,
        kernels: ArrayView4<f32>,
        bias: Option<&[f32]>,
        g: &Conv2dGeometry,
        profile: bool,
    ) -> Result<(Array4<f32>, Option<f64>)> {
        // A stride on an axis with one output changes nothing: 2^62 must not
        // fail the shaders' 32-bit checks.
        let g = &g.normalised();
        check_i32("conv2d rows", g.oh, g.sh, g.kh, g.dh, g.h + g.pads.top)?;
        check_i32("conv2d columns", g.ow, g.sw, g.kw, g.dw, g.w + g.pads.left)?;
        let kernel_bytes = (g.kh * g.kw * g.group_c() * g.nc * 4) as u64;
        if kernel_bytes > self.max_binding_bytes {
            return Err(Error::Gpu(format!(
                "kernels {:?} take {kernel_bytes} bytes, more than one GPU binding holds ({} bytes)",
                g.kernel_shape(),
                self.max_binding_bytes
            )));
        }
        let kernel = self.conv_kernel(g);
        let tiles_n = match kernel {
            ConvKernel::Tiled(t) => t.tiles_n(g),
            ConvKernel::Direct | ConvKernel::PerOutput => 1,
        };
        let groups_z = match kernel {
            ConvKernel::Tiled(_) => tiles_n.saturating_mul(g.groups),
            ConvKernel::Direct | ConvKernel::PerOutput => 1,
        };
        if groups_z > self.max_groups_per_dim as usize {
            return Err(Error::Gpu(format!(
                "{} output channels in {} groups need more workgroups than the device allows",
                g.nc, g.groups
            )));
        }
        let problem = conv_problem(g, kernel);
        let (act, act_a, act_b) = Activation::gpu_code(g.activation);
        let chunks = plan(&problem, &self.limits())?;
        let base = ConvParams {
            h: u32_of("height", g.h)?,
            w: u32_of("width", g.w)?,
            c: u32_of("channels", g.c)?,
            ow: u32_of("output width", g.ow)?,
            nc: u32_of("kernel count", g.nc)?,
            kh: u32_of("kernel height", g.kh)?,
            kw: u32_of("kernel width", g.kw)?,
            sh: u32_of("stride", g.sh)?,
            sw: u32_of("stride", g.sw)?,
            dh: u32_of("dilation", g.dh)?,
            dw: u32_of("dilation", g.dw)?,
            pad_top: u32_of("padding", g.pads.top)?,
            pad_left: u32_of("padding", g.pads.left)?,
            k_total: u32_of("kernel size", g.kh * g.kw * g.group_c())?,
            gc: u32_of("channels", g.group_c())?,
            gnc: u32_of("kernel count", g.group_nc())?,
            tiles_n: tiles_n as u32,
            mode: g.padding_mode.code(),
            act,
            has_bias: u32::from(bias.is_some()),
            act_a,
            act_b,
            ..Default::default()
        };
        let max_dim = self.max_groups_per_dim;
        let group_pixels = problem.units_per_group;
        let per_output = kernel == ConvKernel::PerOutput;
        let step = |ch: &Chunk| -> Result<Step<ConvParams>> {
            let pixels = ch.batch * ch.out_rows * g.ow;
            let m_total = if per_output { pixels * g.nc } else { pixels };
            let tiles_m = m_total.div_ceil(group_pixels);
            let (x, y) = fold(tiles_m as u64, max_dim)?;
            Ok(Step {
                params: ConvParams {
                    batch: ch.batch as u32,
                    band_h: ch.in_rows as u32,
                    in_row0: ch.in_row0 as u32,
                    out_row0: ch.out_row0 as u32,
                    oh_chunk: ch.out_rows as u32,
                    m_total: u32_of("chunk outputs", m_total)?,
                    tiles_m: tiles_m as u32,
                    row_pitch: x * DIRECT_WG,
                    ..base
                },
                groups: (x, y, groups_z as u32),
            })
        };
        let pipeline = match kernel {
            ConvKernel::Tiled(t) => self.pipelines.conv(&self.device, t),
            ConvKernel::Direct => self.pipelines.conv_direct(&self.device, false),
            ConvKernel::PerOutput => self.pipelines.conv_direct(&self.device, true),
        };
        let kernels = kernels.as_standard_layout();
        let kernels = kernels.as_slice().expect("standard layout");
        // The layout always binds a bias; without one the shader reads none.
        let bias = bias.unwrap_or(&[0.0]);
        self.execute(
            &pipeline,
            &self.pipelines.conv_layout,
            images,
            Some((kernels, bias)),
            g.output_shape(),
            &problem,
            &chunks,
            step,
            profile,
        )
    }

    /// Pooling on the GPU. `g` must come from [`crate::Pool2dSpec::resolve`].
    /// `profile` as for [`GpuContext::conv2d`].
    pub(crate) fn pool2d(
        &self,
        images: ArrayView4<f32>,
        g: &Pool2dGeometry,
        profile: bool,
    ) -> Result<(Array4<f32>, Option<f64>)> {
        check_i32("pool2d rows", g.oh, g.sh, g.kh, g.dh, g.h + g.pads.top + g.pads.bottom)?;
        check_i32(
            "pool2d columns",
            g.ow,
            g.sw,
            g.kw,
            g.dw,
            g.w + g.pads.left + g.pads.right,
        )?;
        self.pool_any(images, g, false, profile)
    }

    /// The argmax of max pooling on the GPU, int64 `y * w + x` per output
    /// cell (-1 where the window has no real cell).
    pub(crate) fn max_pool2d_indices(&self, images: ArrayView4<f32>, g: &Pool2dGeometry) -> Result<Array4<i64>> {
        if g.h.checked_mul(g.w).is_none_or(|cells| cells > i32::MAX as usize) {
            return Err(Error::Overflow {
                what: "pool2d indices",
                detail: format!("images of {}x{} cells exceed the GPU's 32-bit indices", g.h, g.w),
            });
        }
        let (words, _) = self.pool_any(images, g, true, false)?;
        // The shader writes i32 words; they came back through the f32
        // readback bit for bit.
        Ok(words.mapv(|v| v.to_bits() as i32 as i64))
    }

    fn pool_any(
        &self,
        images: ArrayView4<f32>,
        g: &Pool2dGeometry,
        argmax: bool,
        profile: bool,
    ) -> Result<(Array4<f32>, Option<f64>)> {
        let g = &g.normalised();
        if g.adaptive {
            let fits = |len: usize, out: usize| len.checked_mul(out + 1).is_some_and(|v| v <= u32::MAX as usize);
            if !fits(g.h, g.oh) || !fits(g.w, g.ow) {
                return Err(Error::Overflow {
                    what: "adaptive pooling",
                    detail: format!(
                        "output {}x{} of images {}x{} exceeds the GPU's 32-bit window arithmetic",
                        g.oh, g.ow, g.h, g.w
                    ),
                });
            }
        }
        let tiling = if argmax { None } else { self.pool_tiling(g) };
        let problem = pool_problem(g, tiling);
        let chunks = plan(&problem, &self.limits())?;
        let base = PoolParams {
            h: u32_of("height", g.h)?,
            w: u32_of("width", g.w)?,
            c: u32_of("channels", g.c)?,
            ow: u32_of("output width", g.ow)?,
            kh: u32_of("window height", g.kh)?,
            kw: u32_of("window width", g.kw)?,
            sh: u32_of("stride", g.sh)?,
            sw: u32_of("stride", g.sw)?,
            dh: u32_of("dilation", g.dh)?,
            dw: u32_of("dilation", g.dw)?,
            pad_top: u32_of("padding", g.pads.top)?,
            pad_bottom: u32_of("padding", g.pads.bottom)?,
            pad_left: u32_of("padding", g.pads.left)?,
            pad_right: u32_of("padding", g.pads.right)?,
            mode: match g.mode {
                PoolMode::Max => 0,
                PoolMode::Avg => 1,
            },
            count_include_pad: g.count_include_pad as u32,
            oh: u32_of("output height", g.oh)?,
            adaptive: u32::from(g.adaptive),
            ..Default::default()
        };
        let max_dim = self.max_groups_per_dim;
        // Four channels per invocation where they make whole vec4s.
        let lanes = if argmax { 1 } else { pool_lanes(g.c) };
        let vec = lanes == 4;
        let step = |ch: &Chunk| -> Result<Step<PoolParams>> {
            let total = ch.batch * ch.out_rows * g.ow * g.c;
            let groups = match tiling {
                Some(t) => tiles_per_row(g, t) * ch.out_rows.div_ceil(t.th as usize) * ch.batch,
                None => (total / lanes).div_ceil(POOL_WG as usize),
            };
            let (x, y) = fold(groups as u64, max_dim)?;
            Ok(Step {
                params: PoolParams {
                    batch: ch.batch as u32,
                    band_h: ch.in_rows as u32,
                    in_row0: ch.in_row0 as u32,
                    out_row0: ch.out_row0 as u32,
                    oh_chunk: ch.out_rows as u32,
                    total: u32_of("chunk outputs", total)?,
                    row_pitch: x * POOL_WG,
                    ..base
                },
                groups: (x, y, 1),
            })
        };
        let pipeline = match tiling {
            _ if argmax => self.pipelines.pool_argmax(&self.device),
            Some(t) => self.pipelines.pool_tiled(&self.device, t, vec),
            None => self.pipelines.pool(&self.device, vec),
        };
        self.execute(
            &pipeline,
            &self.pipelines.pool_layout,
            images,
            None,
            g.output_shape(),
            &problem,
            &chunks,
            step,
            profile,
        )
    }

    /// Runs every chunk in order and stitches the output together. GPU
    /// errors raised meanwhile are caught by error scopes and returned.
    #[allow(clippy::too_many_arguments)]
    fn execute<P: Pod>(
        &self,
        pipeline: &wgpu::ComputePipeline,
        layout: &wgpu::BindGroupLayout,
        images: ArrayView4<f32>,
        kernels: Option<(&[f32], &[f32])>,
        out_shape: [usize; 4],
        problem: &Problem,
        chunks: &[Chunk],
        step: impl Fn(&Chunk) -> Result<Step<P>>,
        profile: bool,
    ) -> Result<(Array4<f32>, Option<f64>)> {
        // Every step is planned (and so validated) before anything is uploaded.
        let steps = chunks.iter().map(&step).collect::<Result<Vec<_>>>()?;
        self.check_alive()?;
        let images = images.as_standard_layout();
        let images = images.as_slice().expect("standard layout");
        // Filled straight from the readbacks: zeroing it first would be one
        // more pass over the whole output.
        let mut out = Array4::<f32>::uninit(out_shape);
        let out_slice = out.as_slice_mut().expect("fresh array is contiguous");

        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut buffers = self.take_buffers();
        let result = self.execute_steps(
            &mut buffers,
            pipeline,
            layout,
            images,
            kernels,
            out_slice,
            problem,
            chunks,
            &steps,
            profile && self.timestamps,
        );
        let scoped = pollster::block_on(validation.pop()).or_else(|| pollster::block_on(oom.pop()));
        if let Some(e) = scoped {
            // The buffers may be in any state after an error: drop them.
            self.check_alive()?;
            return Err(Error::Gpu(e.to_string()));
        }
        match result {
            Ok(kernel_seconds) => {
                self.give_buffers(buffers);
                // SAFETY: `execute_steps` returns Ok only after its chunks,
                // checked to tile the output in order, were all read back.
                Ok((unsafe { out.assume_init() }, kernel_seconds))
            }
            // A chunk that timed out may still be running or mapping: its
            // buffers are dropped, not handed to the next call.
            Err(e) => {
                self.check_alive()?;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn execute_steps<P: Pod>(
        &self,
        b: &mut Buffers,
        pipeline: &wgpu::ComputePipeline,
        layout: &wgpu::BindGroupLayout,
        images: &[f32],
        kernels: Option<(&[f32], &[f32])>,
        out: &mut [MaybeUninit<f32>],
        problem: &Problem,
        chunks: &[Chunk],
        steps: &[Step<P>],
        profile: bool,
    ) -> Result<Option<f64>> {
        use wgpu::BufferUsages as U;
        let dev = &self.device;
        let cap = self.max_binding_bytes;
        let in_len = |c: &Chunk| c.batch * c.in_rows * problem.in_row_elems;
        let out_len = |c: &Chunk| c.batch * c.out_rows * problem.out_row_elems;
        let in_bytes = chunks.iter().map(|c| in_len(c) as u64 * 4).max().unwrap_or(0);
        let out_bytes = chunks.iter().map(|c| out_len(c) as u64 * 4).max().unwrap_or(0);
        let kernel_buf = match kernels {
            Some((k, bias)) => {
                let buf = b
                    .kernels
                    .ensure(dev, (k.len() * 4) as u64, cap, U::STORAGE | U::COPY_DST, "kernels");
                self.queue.write_buffer(buf, 0, bytemuck::cast_slice(k));
                let bias_buf = b
                    .bias
                    .ensure(dev, (bias.len() * 4) as u64, cap, U::STORAGE | U::COPY_DST, "bias");
                self.queue.write_buffer(bias_buf, 0, bytemuck::cast_slice(bias));
                Some((buf, bias_buf))
            }
            None => None,
        };
        // Two slots when there is more than one chunk: chunk i + 1 is
        // uploaded and submitted before chunk i is read back.
        let in_flight = chunks.len().clamp(1, 2);
        let mut slots = Vec::with_capacity(in_flight);
        for s in b.chunks.iter_mut().take(in_flight) {
            let params = s
                .params
                .ensure(dev, size_of::<P>() as u64, u64::MAX, U::UNIFORM | U::COPY_DST, "params");
            let input = s.input.ensure(dev, in_bytes, cap, U::STORAGE | U::COPY_DST, "images");
            let output = s.output.ensure(dev, out_bytes, cap, U::STORAGE | U::COPY_SRC, "output");
            let staging = s
                .staging
                .ensure(dev, out_bytes, cap, U::MAP_READ | U::COPY_DST, "staging");
            let mut entries = vec![
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: input.as_entire_binding(),
                },
            ];
            if let Some((k, _)) = kernel_buf {
                entries.push(wgpu::BindGroupEntry {
                    binding: 2,
                    resource: k.as_entire_binding(),
                });
            }
            entries.push(wgpu::BindGroupEntry {
                binding: entries.len() as u32,
                resource: output.as_entire_binding(),
            });
            if let Some((_, bias)) = kernel_buf {
                entries.push(wgpu::BindGroupEntry {
                    binding: 4,
                    resource: bias.as_entire_binding(),
                });
            }
            let bind_group = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout,
                entries: &entries,
            });
            let timing = profile.then(|| {
                let set = dev.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("kernel time"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                });
                let resolve = s
                    .query_resolve
                    .ensure(dev, 16, u64::MAX, U::QUERY_RESOLVE | U::COPY_SRC, "timestamps");
                let read = s
                    .query_read
                    .ensure(dev, 16, u64::MAX, U::MAP_READ | U::COPY_DST, "timestamps read");
                (set, resolve.clone(), read.clone())
            });
            slots.push((
                params.clone(),
                input.clone(),
                output.clone(),
                staging.clone(),
                bind_group,
                timing,
            ));
        }

        let submit = |i: usize| -> wgpu::SubmissionIndex {
            let (chunk, step) = (&chunks[i], &steps[i]);
            let (params, input, output, staging, bind_group, timing) = &slots[i % in_flight];
            let in_start = (chunk.n0 * problem.h + chunk.in_row0) * problem.in_row_elems;
            if in_len(chunk) > 0 {
                self.queue.write_buffer(
                    input,
                    0,
                    bytemuck::cast_slice(&images[in_start..in_start + in_len(chunk)]),
                );
            }
            self.queue.write_buffer(params, 0, bytemuck::bytes_of(&step.params));
            let mut encoder = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: timing.as_ref().map(|(set, _, _)| wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(0),
                        end_of_pass_write_index: Some(1),
                    }),
                });
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, bind_group, &[]);
                let (x, y, z) = step.groups;
                pass.dispatch_workgroups(x, y, z);
            }
            encoder.copy_buffer_to_buffer(output, 0, staging, 0, out_len(chunk) as u64 * 4);
            if let Some((set, resolve, read)) = timing {
                encoder.resolve_query_set(set, 0..2, resolve, 0);
                encoder.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
            }
            self.queue.submit([encoder.finish()])
        };

        let mut kernel_ns = 0f64;
        // Outputs read back so far: the chunks must tile the output in order
        // (the caller assumes it initialised).
        let mut written = 0usize;
        let mut next = Some(submit(0));
        for (i, chunk) in chunks.iter().enumerate() {
            let current = next.take().expect("chunk i was submitted");
            if i + 1 < chunks.len() {
                next = Some(submit(i + 1));
            }
            let (_, _, _, staging, _, timing) = &slots[i % in_flight];
            let out_start = (chunk.n0 * problem.oh + chunk.out_row0) * problem.out_row_elems;
            if out_start != written || out_start + out_len(chunk) > out.len() {
                return Err(Error::Gpu(format!(
                    "internal: chunk {i} starts at output {out_start}, expected {written} (of {})",
                    out.len()
                )));
            }
            let dst = &mut out[out_start..out_start + out_len(chunk)];
            read_back(dev, staging, &current, dst.len(), self.timeout, |src| fill(dst, src))?;
            written += out_len(chunk);
            if let Some((_, _, read)) = timing {
                let mut stamps = [0f32; 4];
                read_back(dev, read, &current, 4, self.timeout, |src| stamps.copy_from_slice(src))?;
                let [begin, end]: [u64; 2] = bytemuck::cast(stamps);
                kernel_ns += end.saturating_sub(begin) as f64 * self.queue.get_timestamp_period() as f64;
            }
        }
        if written != out.len() {
            return Err(Error::Gpu(format!(
                "internal: the chunks covered {written} of {} outputs",
                out.len()
            )));
        }
        Ok(profile.then_some(kernel_ns * 1e-9))
    }
}

/// Copies a readback into its part of the output, on every core when it is
/// large (a single-threaded copy of a large output is a real part of a
/// call's time).
fn fill(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    const PIECE: usize = 1 << 16;
    let copy = |d: &mut [MaybeUninit<f32>], s: &[f32]| {
        for (d, &s) in d.iter_mut().zip(s) {
            d.write(s);
        }
    };
    if dst.len() >= 4 * PIECE {
        dst.par_chunks_mut(PIECE)
            .zip(src.par_chunks(PIECE))
            .for_each(|(d, s)| copy(d, s));
    } else {
        copy(dst, src);
    }
}

/// Waits for submission `until` (at most `timeout`), maps the first `len`
/// floats of `staging`, hands them to `sink` and unmaps. Later submissions
/// keep running.
fn read_back(
    device: &wgpu::Device,
    staging: &wgpu::Buffer,
    until: &wgpu::SubmissionIndex,
    len: usize,
    timeout: std::time::Duration,
    sink: impl FnOnce(&[f32]),
) -> Result<()> {
    let bytes = (len * 4) as u64;
    let slice = staging.slice(0..bytes);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(until.clone()),
            timeout: Some(timeout),
        })
        .map_err(|e| match e {
            wgpu::PollError::Timeout => Error::Gpu(format!(
                "the GPU did not finish a chunk within {:.3} s (timeout: GpuOptions::timeout or \
                 CONVPOOL_GPU_TIMEOUT); the device may be hung or lost",
                timeout.as_secs_f64()
            )),
            e => Error::Gpu(format!("waiting for the GPU: {e}")),
        })?;
    // The map callback has run once the submission is done; a device that
    // was lost meanwhile never runs it, which is an error, not a wait.
    rx.recv_timeout(timeout)
        .map_err(|_| Error::Gpu("the GPU dropped a readback (the device may be lost)".into()))?
        .map_err(|e| Error::Gpu(format!("mapping the output: {e}")))?;
    {
        let view = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("mapping the output: {e}")))?;
        sink(bytemuck::cast_slice(&view));
    }
    staging.unmap();
    Ok(())
}
