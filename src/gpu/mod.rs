//! The GPU path: WGSL shaders driven through wgpu.
//!
//! - `context`: instance, adapter choice (`CONVPOOL_ADAPTER`, `WGPU_BACKEND`), device.
//! - `pipelines`: shader modules, layouts, a pipeline cache.
//! - `buffers`: buffers reused across calls.
//! - `chunk`: splitting work to fit binding, buffer and dispatch limits.
//! - `params`: `#[repr(C)]` mirrors of the WGSL params structs.
//! - `ops`: conv2d and pool2d: upload, dispatch, readback.

//!
//! Only the context, its options and the adapter list are public; the rest
//! is the crate's own (a caller cannot hand a kernel parameters that the
//! shape module never resolved).

pub(crate) mod buffers;
pub(crate) mod chunk;
pub(crate) mod context;
pub(crate) mod ops;
pub(crate) mod params;
pub(crate) mod pipelines;

pub use chunk::Chunk;
pub use context::{list_adapters, AdapterSummary, GpuContext, GpuOptions, DEFAULT_GPU_TIMEOUT};

#[cfg(test)]
mod layout_tests;
