//! `shaders/conv2d_direct.wgsl`: the direct conv kernel for few output
//! channels (one invocation per pixel) and for groups of few channels (one
//! per output value), and its pipeline constants.

use super::{Constants, ConvRules};

/// Invocations per workgroup of the direct conv kernel.
pub const DIRECT_WG: u32 = 64;

/// Output channels up to which the direct conv kernel is used (its
/// `MAX_NC`): a GEMM tile would be mostly empty there.
pub const DIRECT_MAX_NC: usize = 4;

/// The direct kernel's variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvDirect {
    /// One invocation per output value rather than per pixel.
    pub per_output: bool,
}

impl ConvDirect {
    /// The pipeline constants of this variant with `rules`.
    pub fn constants(&self, rules: ConvRules) -> Constants {
        let mut c = vec![("WG", DIRECT_WG), ("PER_OUTPUT", u32::from(self.per_output))];
        c.extend(rules.constants());
        c
    }

    /// Work units (invocations) of a chunk of `pixels` output pixels with
    /// `nc` output channels.
    pub fn units(&self, pixels: usize, nc: usize) -> usize {
        if self.per_output {
            pixels * nc
        } else {
            pixels
        }
    }
}
