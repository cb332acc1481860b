//! convpool: 2-D convolution and pooling over batches of NHWC images, on the
//! GPU through wgpu or on the CPU, with the semantics of its SPEC (every
//! padding mode of ONNX/TF, dilation, strides, max/avg pooling options).
//!
//! ```
//! use convpool::{Conv2dSpec, Engine, Padding};
//! use ndarray::Array4;
//!
//! let engine = Engine::cpu();
//! let images = Array4::<f32>::ones((2, 8, 8, 3)); // (m, h, w, c)
//! let kernels = Array4::<f32>::ones((3, 3, 3, 4)); // (kh, kw, c, nc)
//! let out = engine.conv2d(&images, &kernels, &Conv2dSpec::new(Padding::Same)).unwrap();
//! assert_eq!(out.shape(), &[2, 8, 8, 4]);
//! assert_eq!(out[[0, 4, 4, 0]], 27.0); // interior: 3 * 3 * 3 ones
//! assert_eq!(out[[0, 0, 0, 0]], 12.0); // corner: 2 * 2 * 3 ones
//! ```

#![warn(missing_docs)]

pub(crate) mod atomic;
pub mod bench;
pub mod check;
pub mod compat;
pub mod cpu;
pub mod engine;
pub mod epilogue;
pub mod error;
pub mod filter;
pub mod gpu;
pub mod npy;
pub mod shape;

pub use cpu::Isa;
pub use engine::{Device, Engine, EngineOptions};
pub use epilogue::Activation;
pub use error::{Error, Result};
pub use gpu::{GpuArray, GpuOptions, Pixel, PixelKind};
pub use shape::{Conv2dGeometry, Conv2dSpec, Padding, PaddingMode, Pads, Pool2dGeometry, Pool2dSpec, PoolMode, Window};
