//! [`GpuArray`]: a batch of NHWC images kept in device memory, so that a
//! chain of convolutions and poolings uploads once and downloads once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ndarray::{Array4, ArrayView4};

use crate::error::{Error, Result};
use crate::shape::{checked_elems, Conv2dGeometry, Pool2dGeometry};

use super::context::GpuContext;
use super::pixels::{HostData, Pixel};
use super::run::{fill, read_back, Sink, Source};

/// A float32 NHWC batch held on one engine's GPU. Made by
/// [`crate::Engine::upload`] or by a device-resident operation
/// ([`crate::Engine::conv2d_resident`], [`crate::Engine::pool2d_resident`]),
/// read with [`GpuArray::download`]. The values are those the host path
/// would give, bit for bit: the same kernels run on the same data.
pub struct GpuArray {
    ctx: Arc<GpuContext>,
    buffer: wgpu::Buffer,
    shape: [usize; 4],
}

impl std::fmt::Debug for GpuArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuArray")
            .field("shape", &self.shape)
            .field("adapter", &self.ctx.adapter().name)
            .finish()
    }
}

impl GpuArray {
    /// `[batch, height, width, channels]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }

    /// Copies the array back to the host.
    pub fn download(&self) -> Result<Array4<f32>> {
        let ctx = &self.ctx;
        ctx.check_alive()?;
        let len = self.shape.iter().product::<usize>();
        let bytes = (len * 4) as u64;
        let mut out = Array4::<f32>::uninit(self.shape);
        if len > 0 {
            // The readback memory of the call pool, as a host call would use.
            let mut buffers = ctx.take_buffers();
            let staging = buffers.chunks[0]
                .staging
                .ensure(
                    &ctx.device,
                    bytes,
                    u64::MAX,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    "staging",
                )
                .clone();
            let mut encoder = ctx
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            encoder.copy_buffer_to_buffer(&self.buffer, 0, &staging, 0, bytes);
            let index = ctx.queue.submit([encoder.finish()]);
            let dst = out.as_slice_mut().expect("fresh array is contiguous");
            read_back(&ctx.device, &staging, &index, len, ctx.timeout, |src| fill(dst, src))?;
            ctx.give_buffers(buffers);
            ctx.downloaded.fetch_add(bytes, Ordering::Relaxed);
        }
        // SAFETY: every element was written by the readback above (or there
        // are none).
        Ok(unsafe { out.assume_init() })
    }
}

impl GpuContext {
    /// A device buffer for an array of `shape`, checked against the
    /// device's largest buffer.
    fn resident_buffer(self: &Arc<Self>, shape: [usize; 4], mapped: bool) -> Result<wgpu::Buffer> {
        let elems = checked_elems("array", &shape)?;
        let bytes = (elems as u64)
            .checked_mul(4)
            .filter(|&b| b <= self.max_buffer_bytes)
            .ok_or_else(|| {
                Error::Gpu(format!(
                    "an array of shape {shape:?} takes more than the device's largest buffer ({} bytes); \
                 run it from the host instead, which chunks it",
                    self.max_buffer_bytes
                ))
            })?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resident"),
            size: bytes.max(16).next_multiple_of(16),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: mapped,
        }))
    }

    /// Copies host images to a new device-resident f32 array: f32 as they
    /// are, u8 and u16 as their own bytes, widened on the device.
    pub(crate) fn upload_pixels<T: Pixel>(self: &Arc<Self>, images: ArrayView4<T>) -> Result<GpuArray> {
        if let Some(f) = T::as_f32(images.view()) {
            return self.upload(f);
        }
        self.check_alive()?;
        let shape = [images.dim().0, images.dim().1, images.dim().2, images.dim().3];
        let buffer = self.resident_buffer(shape, false)?;
        let images = images.as_standard_layout();
        let launch = self.widen_launch(shape, T::KIND)?;
        let data = HostData::of(images.as_slice().expect("standard layout"));
        self.run(&launch, Source::Host(data), Sink::Device(&buffer), false)?;
        Ok(GpuArray {
            ctx: self.clone(),
            buffer,
            shape,
        })
    }

    /// Copies host images to a new device-resident array.
    pub(crate) fn upload(self: &Arc<Self>, images: ArrayView4<f32>) -> Result<GpuArray> {
        self.check_alive()?;
        let shape = [images.dim().0, images.dim().1, images.dim().2, images.dim().3];
        let buffer = self.resident_buffer(shape, true)?;
        let images = images.as_standard_layout();
        let data: &[u8] = bytemuck::cast_slice(images.as_slice().expect("standard layout"));
        {
            let mut view = buffer
                .slice(0..data.len().max(16) as u64)
                .get_mapped_range_mut()
                .map_err(|e| Error::Gpu(format!("writing an upload: {e}")))?;
            super::run::copy_in(view.slice(..data.len()), data);
        }
        buffer.unmap();
        self.uploaded.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(GpuArray {
            ctx: self.clone(),
            buffer,
            shape,
        })
    }

    /// Refuses an array of another engine's device.
    fn own(self: &Arc<Self>, a: &GpuArray) -> Result<()> {
        if Arc::ptr_eq(&a.ctx, self) {
            Ok(())
        } else {
            Err(Error::invalid(
                "images",
                "this GpuArray lives on another engine's device; upload it to this engine",
            ))
        }
    }

    /// Convolution of a resident array into a new resident array.
    pub(crate) fn conv2d_resident(
        self: &Arc<Self>,
        images: &GpuArray,
        kernels: ArrayView4<f32>,
        bias: Option<&[f32]>,
        g: &Conv2dGeometry,
    ) -> Result<GpuArray> {
        self.own(images)?;
        let shape = g.output_shape();
        let out = self.resident_buffer(shape, false)?;
        let kernels = kernels.as_standard_layout();
        let kernels = kernels.as_slice().expect("standard layout");
        self.conv2d_device(&images.buffer, kernels, bias, g, &out)?;
        Ok(GpuArray {
            ctx: self.clone(),
            buffer: out,
            shape,
        })
    }

    /// Pooling of a resident array into a new resident array.
    pub(crate) fn pool2d_resident(self: &Arc<Self>, images: &GpuArray, g: &Pool2dGeometry) -> Result<GpuArray> {
        self.own(images)?;
        let shape = g.output_shape();
        let out = self.resident_buffer(shape, false)?;
        self.pool2d_device(&images.buffer, g, &out)?;
        Ok(GpuArray {
            ctx: self.clone(),
            buffer: out,
            shape,
        })
    }
}
