//! Convolution and pooling on a [`GpuContext`]: validation of device limits,
//! kernel choice, chunk planning and each chunk's params, as a [`Launch`]
//! that [`super::run`] executes from and to the host or the device.

use std::borrow::Cow;

use ndarray::{Array4, ArrayView4};

use crate::epilogue::Activation;
use crate::error::{Error, Result};
use crate::shape::{Conv2dGeometry, PaddingMode, Pool2dGeometry, PoolMode};

use super::chunk::{plan, Chunk, ChunkLimits, Problem};
use super::context::GpuContext;
use super::kernels::conv_direct::DIRECT_WG;
use super::kernels::conv_tiled::ConvTiling;
use super::kernels::conv_winograd::{self, ConvWinograd};
use super::kernels::pool::{pool_lanes, Pool, POOL_WG};
use super::kernels::pool_argmax::PoolArgmax;
use super::kernels::pool_tiled::PoolTiling;
use super::kernels::widen::{ChannelPad, Widen, WIDEN_WG};
use super::kernels::{Bindings, ConvKernel, ConvRules, PoolKernel};
use super::params::WidenParams;
use super::params::{ConvParams, PoolParams};
use super::pixels::{HostData, Pixel, PixelKind};
use super::run::{Launch, Sink, Source, Step};

/// Largest input or output chunk, bytes, of a call that does not fit one
/// dispatch: large enough that a dispatch dwarfs its fixed cost, small
/// enough that the buffers of the chunks in flight stay a fraction of a
/// large call's own input and output. A call that fits the device's
/// binding limit runs as one dispatch, whatever its size.
const CHUNK_CAP_BYTES: u64 = 64 << 20;

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

/// HWIO kernels of `pad.from` input channels with zero rows for the
/// channels `pad` appends (their products with the zero channels are +0,
/// which leaves every sum as it was).
fn pad_kernels(kernels: &[f32], pad: ChannelPad, nc: usize) -> Vec<f32> {
    let (from, to) = (pad.from as usize, pad.to as usize);
    let mut out = vec![0.0; kernels.len() / from * to];
    for (tap, src) in kernels.chunks_exact(from * nc).enumerate() {
        out[tap * to * nc..][..from * nc].copy_from_slice(src);
    }
    out
}

/// Bytes of a convolution's kernels on the device.
fn kernel_bytes(g: &Conv2dGeometry) -> u64 {
    (g.kh * g.kw * g.group_c() * g.nc * 4) as u64
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
            ConvKernel::Direct(_) => DIRECT_WG as usize,
            ConvKernel::Winograd(_) => conv_winograd::TILES as usize,
        },
        // Winograd: tiles of two rows, counted per row (an overestimate
        // for odd rows, which keeps the dispatch within the limit).
        units_per_out_row: match kernel {
            ConvKernel::Direct(d) => d.units(g.ow, g.nc),
            ConvKernel::Tiled(_) => g.ow,
            ConvKernel::Winograd(_) => g.ow.div_ceil(2),
        },
        mode: g.padding_mode,
        whole: false,
    }
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
        units_per_out_row: tiled.map_or(g.ow * g.c, |t| t.per_row(g)),
        mode: PaddingMode::Zeros,
        whole: g.adaptive,
    }
}

impl GpuContext {
    /// The chunks a convolution is split into on this device.
    pub fn plan_conv(&self, g: &Conv2dGeometry) -> Result<Vec<Chunk>> {
        let (g, _) = self.conv_as_run(&g.normalised());
        self.plan(&conv_problem(&g, self.conv_kernel(&g)))
    }

    /// The convolution as the kernel runs it: RGB images (three channels,
    /// no groups) that the tiled kernel would read one value at a time are
    /// read as four channels, the fourth zero, where the device takes them
    /// so ([`ConvKernel::pads_rgb`]) and the padded kernels fit a binding;
    /// with the channels appended.
    fn conv_as_run(&self, g: &Conv2dGeometry) -> (Conv2dGeometry, Option<ChannelPad>) {
        let pad = ChannelPad::RGB;
        if ConvKernel::pads_rgb(g, &self.conv) {
            let padded = Conv2dGeometry {
                c: pad.to as usize,
                ..*g
            };
            // Kernels that fit one binding only as they are stay as they are.
            if kernel_bytes(&padded) <= self.max_binding_bytes {
                return (padded, Some(pad));
            }
        }
        (*g, None)
    }

    /// The chunks a pooling is split into on this device.
    pub fn plan_pool(&self, g: &Pool2dGeometry) -> Result<Vec<Chunk>> {
        self.plan(&pool_problem(g, self.pool_tiling(g)))
    }

    /// One dispatch where the device's limits allow it; otherwise chunks of
    /// at most [`CHUNK_CAP_BYTES`].
    fn plan(&self, problem: &Problem) -> Result<Vec<Chunk>> {
        let d = self.max_groups_per_dim as u64;
        let limits = |bytes: u64| ChunkLimits {
            max_binding_bytes: bytes,
            max_groups: d * d,
        };
        let whole = plan(problem, &limits(self.max_binding_bytes))?;
        if whole.len() <= 1 || self.max_binding_bytes <= CHUNK_CAP_BYTES {
            return Ok(whole);
        }
        plan(problem, &limits(CHUNK_CAP_BYTES))
    }

    /// The conv kernel (and the tiled one's specialisation) on this
    /// context: Winograd only where its transformed kernels (25/9 the
    /// plain ones) fit one binding.
    fn conv_kernel(&self, g: &Conv2dGeometry) -> ConvKernel {
        match ConvKernel::for_conv(g, &self.conv) {
            ConvKernel::Winograd(_) if conv_winograd::kernel_len(g.c, g.nc) as u64 * 4 > self.max_binding_bytes => {
                ConvKernel::Tiled(ConvTiling::for_conv(g, &self.conv))
            }
            k => k,
        }
    }

    /// Which kernel a convolution runs with on this device, in words: the
    /// direct kernel, or the tiled one's tile, register block, staging
    /// (`stages x steps per slice`) and workgroup memory. `g` must come from
    /// [`crate::Conv2dSpec::resolve`].
    pub fn describe_conv(&self, g: &Conv2dGeometry) -> String {
        let (g, pad) = self.conv_as_run(&g.normalised());
        let padded = match pad {
            Some(p) => format!(", {} channels read as {}", p.from, p.to),
            None => String::new(),
        };
        match self.conv_kernel(&g) {
            ConvKernel::Direct(_) => "direct".to_string(),
            ConvKernel::Winograd(_) => format!(
                "winograd F(2x2, 3x3) {} tiles x {} channels ({} of {} bytes of workgroup memory{padded}; \
                 the tiled kernel for kernels holding inf or NaN)",
                conv_winograd::TILES,
                conv_winograd::CHANNELS,
                conv_winograd::WORKGROUP_BYTES,
                self.conv.workgroup_bytes
            ),
            ConvKernel::Tiled(t) => format!(
                "tiled {}x{} block {} staging {} ({} of {} bytes of workgroup memory{padded})",
                t.tile_m(),
                t.tile_n(),
                t.block,
                t.staging,
                t.workgroup_bytes(),
                self.conv.workgroup_bytes
            ),
        }
    }

    /// The tile of the tiled pooling kernel where it is enabled and applies
    /// (fixed windows only).
    fn pool_tiling(&self, g: &Pool2dGeometry) -> Option<PoolTiling> {
        (self.tiled_pooling && !g.adaptive)
            .then(|| PoolTiling::choose(g))
            .flatten()
    }

    /// Convolution on the GPU from and to the host. `g` must come from
    /// [`crate::Conv2dSpec::resolve`]. With `profile`, also returns the
    /// summed kernel time in seconds when the device records timestamps.
    /// 8- and 16-bit images are uploaded as their own bytes and widened on
    /// the device, chunk by chunk.
    pub(crate) fn conv2d<T: Pixel>(
        &self,
        images: ArrayView4<T>,
        kernels: ArrayView4<f32>,
        bias: Option<&[f32]>,
        g: &Conv2dGeometry,
        profile: bool,
    ) -> Result<(Array4<f32>, Option<f64>)> {
        let kernels = kernels.as_standard_layout();
        let kernels = kernels.as_slice().expect("standard layout");
        let launch = self.conv_launch(kernels, bias, g)?;
        self.to_host(&launch, images, profile)
    }

    /// Convolution of a device buffer into a device buffer of the output's
    /// size.
    pub(crate) fn conv2d_device(
        &self,
        images: &wgpu::Buffer,
        kernels: &[f32],
        bias: Option<&[f32]>,
        g: &Conv2dGeometry,
        out: &wgpu::Buffer,
    ) -> Result<()> {
        let launch = self.conv_launch(kernels, bias, g)?;
        self.run(&launch, Source::Device(images), Sink::Device(out), false)
            .map(drop)
    }

    /// Runs a launch on host images into a fresh host array.
    fn to_host<P: bytemuck::Pod, T: Pixel>(
        &self,
        launch: &Launch<'_, P>,
        images: ArrayView4<T>,
        profile: bool,
    ) -> Result<(Array4<f32>, Option<f64>)> {
        let images = images.as_standard_layout();
        let images = images.as_slice().expect("standard layout");
        // Filled straight from the readbacks: zeroing it first would be one
        // more pass over the whole output.
        let mut out = Array4::<f32>::uninit(launch.out_shape);
        let slice = out.as_slice_mut().expect("fresh array is contiguous");
        let kernel_seconds = self.run(launch, Source::Host(HostData::of(images)), Sink::Host(slice), profile)?;
        // SAFETY: `run` returns Ok only after its chunks, checked to tile the
        // output in order, were all read back.
        Ok((unsafe { out.assume_init() }, kernel_seconds))
    }

    /// A convolution planned and validated against this device's limits.
    fn conv_launch<'a>(
        &self,
        kernels: &'a [f32],
        bias: Option<&'a [f32]>,
        g: &Conv2dGeometry,
    ) -> Result<Launch<'a, ConvParams>> {
        // A stride on an axis with one output changes nothing: 2^62 must not
        // fail the shaders' 32-bit checks.
        let g = &g.normalised();
        let (g, pad) = &self.conv_as_run(g);
        check_i32("conv2d rows", g.oh, g.sh, g.kh, g.dh, g.h + g.pads.top)?;
        check_i32("conv2d columns", g.ow, g.sw, g.kw, g.dw, g.w + g.pads.left)?;
        // Winograd takes finite kernels whose transforms stay finite (its
        // transforms would spread an infinity to outputs whose windows do
        // not hold it).
        let (kernel, limit) = match self.conv_kernel(g) {
            ConvKernel::Winograd(w) => match conv_winograd::input_limit(kernels, g.c) {
                Some(limit) => (ConvKernel::Winograd(w), limit),
                None => (ConvKernel::Tiled(ConvTiling::for_conv(g, &self.conv)), 0.0),
            },
            k => (k, 0.0),
        };
        let kernel_bytes = match kernel {
            ConvKernel::Winograd(_) => conv_winograd::kernel_len(g.c, g.nc) as u64 * 4,
            _ => kernel_bytes(g),
        };
        if kernel_bytes > self.max_binding_bytes {
            return Err(Error::Gpu(format!(
                "kernels {:?} take {kernel_bytes} bytes, more than one GPU binding holds ({} bytes)",
                g.kernel_shape(),
                self.max_binding_bytes
            )));
        }
        let tiles_n = match kernel {
            ConvKernel::Tiled(t) => t.tiles_n(g),
            ConvKernel::Direct(_) => 1,
            ConvKernel::Winograd(_) => ConvWinograd::tiles_n(g),
        };
        let groups_z = match kernel {
            ConvKernel::Tiled(_) => tiles_n.saturating_mul(g.groups),
            ConvKernel::Direct(_) => 1,
            ConvKernel::Winograd(_) => tiles_n,
        };
        if groups_z > self.max_groups_per_dim as usize {
            return Err(Error::Gpu(format!(
                "{} output channels in {} groups need more workgroups than the device allows",
                g.nc, g.groups
            )));
        }
        let problem = conv_problem(g, kernel);
        let (_, act_a, act_b) = Activation::gpu_code(g.activation);
        let chunks = self.plan(&problem)?;
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
            act_a,
            act_b,
            limit,
            ..Default::default()
        };
        let max_dim = self.max_groups_per_dim;
        let steps = chunks
            .iter()
            .map(|ch| {
                let pixels = ch.batch * ch.out_rows * g.ow;
                let m_total = match kernel {
                    ConvKernel::Direct(d) => d.units(pixels, g.nc),
                    ConvKernel::Tiled(_) => pixels,
                    ConvKernel::Winograd(_) => ConvWinograd::tiles(ch.batch, ch.out_rows, g.ow),
                };
                let tiles_m = m_total.div_ceil(problem.units_per_group);
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
            })
            .collect::<Result<Vec<_>>>()?;
        let (family, constants) = kernel.pipeline(ConvRules::of(g, bias.is_some()));
        Ok(Launch {
            pipeline: self.pipelines.get(&self.device, family, constants),
            bindings: Bindings::Conv,
            input: PixelKind::F32,
            // The layout always binds a bias; without one the shader reads none.
            weights: Some((
                match (pad, kernel) {
                    (Some(pad), ConvKernel::Winograd(_)) => {
                        Cow::Owned(conv_winograd::kernel_data(&pad_kernels(kernels, *pad, g.nc), g.c, g.nc))
                    }
                    (None, ConvKernel::Winograd(_)) => Cow::Owned(conv_winograd::kernel_data(kernels, g.c, g.nc)),
                    (Some(pad), _) => Cow::Owned(pad_kernels(kernels, *pad, g.nc)),
                    (None, _) => Cow::Borrowed(kernels),
                },
                bias.unwrap_or(&[0.0]),
            )),
            pad: *pad,
            problem,
            chunks,
            steps,
            out_shape: g.output_shape(),
        })
    }

    /// Pooling on the GPU. `g` must come from [`crate::Pool2dSpec::resolve`].
    /// `profile` as for [`GpuContext::conv2d`].
    pub(crate) fn pool2d<T: Pixel>(
        &self,
        images: ArrayView4<T>,
        g: &Pool2dGeometry,
        profile: bool,
    ) -> Result<(Array4<f32>, Option<f64>)> {
        let launch = self.pool_launch(g, false)?;
        self.to_host(&launch, images, profile)
    }

    /// Pooling of a device buffer into a device buffer of the output's size.
    pub(crate) fn pool2d_device(&self, images: &wgpu::Buffer, g: &Pool2dGeometry, out: &wgpu::Buffer) -> Result<()> {
        let launch = self.pool_launch(g, false)?;
        self.run(&launch, Source::Device(images), Sink::Device(out), false)
            .map(drop)
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
        let launch = self.pool_launch(g, true)?;
        let (words, _) = self.to_host(&launch, images, false)?;
        // The shader writes i32 words; they came back through the f32
        // readback bit for bit.
        Ok(words.mapv(|v| v.to_bits() as i32 as i64))
    }

    /// A pooling (or its argmax) planned and validated against this
    /// device's limits.
    fn pool_launch(&self, g: &Pool2dGeometry, argmax: bool) -> Result<Launch<'static, PoolParams>> {
        // As for conv: a stride on an axis with one output changes nothing.
        let g = &g.normalised();
        check_i32("pool2d rows", g.oh, g.sh, g.kh, g.dh, g.h + g.pads.top + g.pads.bottom)?;
        check_i32(
            "pool2d columns",
            g.ow,
            g.sw,
            g.kw,
            g.dw,
            g.w + g.pads.left + g.pads.right,
        )?;
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
        // Four channels per invocation where they make whole vec4s.
        let variant = Pool {
            vec: !argmax && pool_lanes(g.c) == 4,
            avg: g.mode == PoolMode::Avg,
        };
        let kernel = match self.pool_tiling(g) {
            _ if argmax => PoolKernel::Argmax(PoolArgmax),
            Some(t) => PoolKernel::Tiled(t, variant),
            None => PoolKernel::Plain(variant),
        };
        let tiling = match kernel {
            PoolKernel::Tiled(t, _) => Some(t),
            _ => None,
        };
        let problem = pool_problem(g, tiling);
        let chunks = self.plan(&problem)?;
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
        let lanes = if variant.vec { 4 } else { 1 };
        let steps = chunks
            .iter()
            .map(|ch| {
                let total = ch.batch * ch.out_rows * g.ow * g.c;
                let groups = match tiling {
                    Some(t) => t.per_row(g) * ch.out_rows.div_ceil(t.th as usize) * ch.batch,
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
            })
            .collect::<Result<Vec<_>>>()?;
        let (family, constants) = kernel.pipeline();
        Ok(Launch {
            pipeline: self.pipelines.get(&self.device, family, constants),
            bindings: Bindings::Pool,
            input: PixelKind::F32,
            weights: None,
            pad: None,
            problem,
            chunks,
            steps,
            out_shape: g.output_shape(),
        })
    }

    /// The widening of a host batch of `shape` in `kind` (u8 or u16) into
    /// f32: the batch is cut into runs of whole rows, as a pooling with a
    /// 1x1 window would be.
    pub(crate) fn widen_launch(&self, shape: [usize; 4], kind: PixelKind) -> Result<Launch<'static, WidenParams>> {
        let widen = Widen::of(kind, None).ok_or_else(|| Error::Gpu("internal: f32 needs no widening".into()))?;
        let row = shape[2] * shape[3];
        let problem = Problem {
            m: shape[0],
            h: shape[1],
            in_row_elems: row,
            oh: shape[1],
            out_row_elems: row,
            sh: 1,
            ekh: 1,
            pad_top: 0,
            units_per_group: (WIDEN_WG * widen.per_invocation()) as usize,
            units_per_out_row: row,
            mode: PaddingMode::Zeros,
            whole: false,
        };
        let chunks = self.plan(&problem)?;
        let steps = chunks
            .iter()
            .map(|ch| self.widen_step(widen, ch.batch * ch.in_rows * row))
            .collect::<Result<Vec<_>>>()?;
        Ok(Launch {
            pipeline: self.widen_pipeline(widen),
            bindings: Bindings::Pool,
            input: kind,
            weights: None,
            pad: None,
            problem,
            chunks,
            steps,
            out_shape: shape,
        })
    }

    /// The widening kernel's pipeline.
    pub(crate) fn widen_pipeline(&self, widen: Widen) -> wgpu::ComputePipeline {
        self.pipelines
            .get(&self.device, super::kernels::Family::Widen, widen.constants())
    }

    /// The widening of `count` values in one dispatch: its params and
    /// workgroups.
    pub(crate) fn widen_step(&self, widen: Widen, count: usize) -> Result<Step<WidenParams>> {
        let per_group = (WIDEN_WG * widen.per_invocation()) as usize;
        let (x, y) = fold(count.div_ceil(per_group) as u64, self.max_groups_per_dim)?;
        Ok(Step {
            params: WidenParams {
                count: u32_of("chunk values", count)?,
                row_pitch: x * WIDEN_WG,
                ..Default::default()
            },
            groups: (x, y, 1),
        })
    }
}
