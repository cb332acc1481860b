//! `shaders/pool2d.wgsl`, entry point `main`: one invocation per output
//! value (or per four channels), and its pipeline constants.

use super::Constants;

/// Invocations per workgroup of the pooling kernel.
pub const POOL_WG: u32 = 256;

/// Channels per invocation of the pooling kernels: a vec4 where the
/// channel count is a multiple of 4, else one.
pub fn pool_lanes(c: usize) -> usize {
    if c.is_multiple_of(4) {
        4
    } else {
        1
    }
}

/// The pooling kernel's variant (of either entry point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// Four channels per invocation (the channel count is a multiple of 4).
    pub vec: bool,
    /// Average pooling, else max.
    pub avg: bool,
}

impl Pool {
    /// The pipeline constants.
    pub fn constants(&self) -> Constants {
        vec![
            ("WG", POOL_WG),
            ("VEC", u32::from(self.vec)),
            ("AVG", u32::from(self.avg)),
        ]
    }
}
