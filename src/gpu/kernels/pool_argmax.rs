//! `shaders/pool2d_argmax.wgsl`: the argmax of max pooling, one invocation
//! per output value; its pipeline constants.

use super::pool::POOL_WG;
use super::Constants;

/// The argmax kernel (one variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolArgmax;

impl PoolArgmax {
    /// The pipeline constants.
    pub fn constants(&self) -> Constants {
        vec![("WG", POOL_WG)]
    }
}
