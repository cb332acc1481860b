//! `shaders/widen.wgsl`: 8- or 16-bit unsigned pixels, uploaded as their own
//! bytes, widened to f32 on the device; one invocation per u32 word.

use super::Constants;
use crate::gpu::pixels::PixelKind;

/// Invocations per workgroup.
pub const WIDEN_WG: u32 = 256;

/// The widening kernel for one pixel type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Widen {
    /// Bits per value: 8 or 16.
    pub bits: u32,
}

impl Widen {
    /// The kernel for `kind`; `None` for f32, which needs none.
    pub fn of(kind: PixelKind) -> Option<Self> {
        match kind {
            PixelKind::F32 => None,
            PixelKind::U8 => Some(Widen { bits: 8 }),
            PixelKind::U16 => Some(Widen { bits: 16 }),
        }
    }

    /// Values one invocation writes.
    pub fn per_invocation(&self) -> u32 {
        32 / self.bits
    }

    /// The pipeline constants.
    pub fn constants(&self) -> Constants {
        vec![("WG", WIDEN_WG), ("BITS", self.bits)]
    }
}
