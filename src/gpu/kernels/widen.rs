//! `shaders/widen.wgsl`: the pass ahead of a kernel for an input it cannot
//! read as it is. 8- or 16-bit unsigned pixels, uploaded as their own
//! bytes, are widened to f32 (one invocation per u32 word); pixels of three
//! channels get a zero fourth (one invocation per pixel), so the tiled conv
//! kernel reads RGB images as vec4s.

use super::Constants;
use crate::gpu::pixels::PixelKind;

/// Invocations per workgroup.
pub const WIDEN_WG: u32 = 256;

/// Zero channels appended to every pixel: a kernel reads `to` channels of
/// an input that has `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelPad {
    /// Channels per pixel of the input.
    pub from: u32,
    /// Channels per pixel the kernel reads.
    pub to: u32,
}

impl ChannelPad {
    /// RGB read as four channels.
    pub const RGB: ChannelPad = ChannelPad { from: 3, to: 4 };

    /// Input values behind `values` values the kernel reads (whole pixels).
    pub fn source_len(&self, values: usize) -> usize {
        values / self.to as usize * self.from as usize
    }
}

/// The pass for one kind of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Widen {
    /// Bits per value: 8, 16 or 32 (f32, copied as it is; only with `pad`).
    pub bits: u32,
    /// Channels appended to each pixel.
    pub pad: Option<ChannelPad>,
}

impl Widen {
    /// The pass for `kind` read through `pad`; `None` for f32 read as it is,
    /// which needs none.
    pub fn of(kind: PixelKind, pad: Option<ChannelPad>) -> Option<Self> {
        let bits = match kind {
            PixelKind::F32 if pad.is_none() => return None,
            PixelKind::F32 => 32,
            PixelKind::U8 => 8,
            PixelKind::U16 => 16,
        };
        Some(Widen { bits, pad })
    }

    /// Values one invocation writes.
    pub fn per_invocation(&self) -> u32 {
        match self.pad {
            Some(pad) => pad.to,
            None => 32 / self.bits,
        }
    }

    /// The pipeline constants.
    pub fn constants(&self) -> Constants {
        let (cin, cout) = self.pad.map_or((0, 0), |p| (p.from, p.to));
        vec![("WG", WIDEN_WG), ("BITS", self.bits), ("CIN", cin), ("COUT", cout)]
    }
}
