//! The GPU path: WGSL shaders driven through wgpu.
//!
//! - `context`: instance, adapter choice (`CONVPOOL_ADAPTER`, `WGPU_BACKEND`), device.
//! - `kernels`: the kernel table, one file per kernel (tiling, pipeline constants).
//! - `pipelines`: shader modules, layouts, a pipeline cache built from the table.
//! - `buffers`: buffers reused across calls, mapped upload memory.
//! - `chunk`: splitting work to fit binding, buffer and dispatch limits.
//! - `params`: `#[repr(C)]` mirrors of the WGSL params structs.
//! - `ops`: conv2d and pool2d planned into launches.
//! - `run`: the one host skeleton: upload, dispatch, readback, chunk by chunk.
//! - `resident`: [`GpuArray`], data kept on the device between calls.
//! - `pixels`: the element types an upload takes (f32, and u8/u16 widened
//!   on the device).
//!
//! Only the context, its options, the adapter list, `GpuArray` and the
//! pixel types are
//! public; the rest is the crate's own (a caller cannot hand a kernel
//! parameters that the shape module never resolved).

pub(crate) mod buffers;
pub(crate) mod chunk;
pub(crate) mod context;
pub(crate) mod kernels;
pub(crate) mod ops;
pub(crate) mod params;
pub(crate) mod pipelines;
pub(crate) mod pixels;
pub(crate) mod resident;
pub(crate) mod run;

pub use chunk::Chunk;
pub use context::{list_adapters, AdapterSummary, GpuContext, GpuOptions, DEFAULT_GPU_TIMEOUT};
pub use pixels::{Pixel, PixelKind};
pub use resident::GpuArray;

#[cfg(test)]
mod layout_tests;
