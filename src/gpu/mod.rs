//! The GPU path: WGSL shaders driven through wgpu.
//!
//! - `context`: instance, adapter choice (`CONVPOOL_ADAPTER`, `WGPU_BACKEND`), device.
//! - `pipelines`: shader modules, layouts, a pipeline cache.
//! - `buffers`: buffers reused across calls.
//! - `chunk`: splitting work to fit binding, buffer and dispatch limits.
//! - `params`: `#[repr(C)]` mirrors of the WGSL params structs.
//! - `ops`: conv2d and pool2d: upload, dispatch, readback.

pub mod buffers;
pub mod chunk;
pub mod context;
pub mod ops;
pub mod params;
pub mod pipelines;

pub use chunk::Chunk;
pub use context::{list_adapters, AdapterSummary, GpuContext, GpuOptions};
