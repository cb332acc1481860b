//! Host mirrors of the WGSL params structs (`shaders/common.wgsl`). Field
//! order, types and size must match the shaders exactly;
//! `tests/gpu_params.rs` checks them against the structs naga parses out of
//! the WGSL source.

use bytemuck::{Pod, Zeroable};

/// Mirrors `ConvParams` in `shaders/common.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Pod, Zeroable)]
pub struct ConvParams {
    /// Images in this chunk.
    pub batch: u32,
    /// Image height (whole image).
    pub h: u32,
    /// Image width.
    pub w: u32,
    /// Channels.
    pub c: u32,
    /// Image rows held in the input buffer per image.
    pub band_h: u32,
    /// First image row held in the input buffer.
    pub in_row0: u32,
    /// First output row computed by this chunk.
    pub out_row0: u32,
    /// Output rows computed by this chunk.
    pub oh_chunk: u32,
    /// Output width.
    pub ow: u32,
    /// Output channels.
    pub nc: u32,
    /// Kernel height.
    pub kh: u32,
    /// Kernel width.
    pub kw: u32,
    /// Vertical stride.
    pub sh: u32,
    /// Horizontal stride.
    pub sw: u32,
    /// Vertical dilation.
    pub dh: u32,
    /// Horizontal dilation.
    pub dw: u32,
    /// Rows of padding above the image.
    pub pad_top: u32,
    /// Columns of padding left of the image.
    pub pad_left: u32,
    /// Work units of the chunk: `batch * oh_chunk * ow` pixels (times `nc`
    /// for the direct kernel's one-output invocations).
    pub m_total: u32,
    /// `kh * kw * gc`.
    pub k_total: u32,
    /// Output tiles along the pixel axis (tiled kernel).
    pub tiles_m: u32,
    /// Invocations per row of the folded 2-D dispatch (direct kernel).
    pub row_pitch: u32,
    /// Input channels per group.
    pub gc: u32,
    /// Output channels per group.
    pub gnc: u32,
    /// Tiles across one group's output channels (tiled kernel).
    pub tiles_n: u32,
    /// The activation's first number.
    pub act_a: f32,
    /// The activation's second number.
    pub act_b: f32,
    /// Winograd kernel: the input magnitude past which a workgroup takes
    /// direct sums ([`super::kernels::conv_winograd::input_limit`]).
    pub limit: f32,
}

/// Mirrors `PoolParams` in `shaders/common.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PoolParams {
    /// Images in this chunk.
    pub batch: u32,
    /// Image height (whole image).
    pub h: u32,
    /// Image width.
    pub w: u32,
    /// Channels.
    pub c: u32,
    /// Image rows held in the input buffer per image.
    pub band_h: u32,
    /// First image row held in the input buffer.
    pub in_row0: u32,
    /// First output row computed by this chunk.
    pub out_row0: u32,
    /// Output rows computed by this chunk.
    pub oh_chunk: u32,
    /// Output width.
    pub ow: u32,
    /// Window height.
    pub kh: u32,
    /// Window width.
    pub kw: u32,
    /// Vertical stride.
    pub sh: u32,
    /// Horizontal stride.
    pub sw: u32,
    /// Vertical dilation.
    pub dh: u32,
    /// Horizontal dilation.
    pub dw: u32,
    /// Rows of padding above.
    pub pad_top: u32,
    /// Rows of padding below.
    pub pad_bottom: u32,
    /// Columns of padding on the left.
    pub pad_left: u32,
    /// Columns of padding on the right.
    pub pad_right: u32,
    /// 0 max, 1 avg (the kernels take it as their `AVG` pipeline constant;
    /// kept here so a call's params say all of it).
    pub mode: u32,
    /// 0 or 1.
    pub count_include_pad: u32,
    /// `batch * oh_chunk * ow * c`.
    pub total: u32,
    /// Invocations per row of the folded 2-D dispatch.
    pub row_pitch: u32,
    /// Output height of the whole call (adaptive windows).
    pub oh: u32,
    /// 1 for adaptive pooling.
    pub adaptive: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad: [u32; 3],
}

/// Mirrors `WidenParams` in `shaders/common.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct WidenParams {
    /// Values of this chunk.
    pub count: u32,
    /// Invocations per row of the folded 2-D dispatch.
    pub row_pitch: u32,
    /// Padding to a multiple of 16 bytes.
    pub _pad: [u32; 2],
}
