//! The kernel table: one file per kernel, each owning its tiling or
//! variant, its pipeline constants (names and values together) and how
//! its work is counted; [`Family`] names each kernel's shader, entry point
//! and bindings, which [`super::pipelines`] builds from.

pub(crate) mod conv_direct;
pub(crate) mod conv_tiled;
pub(crate) mod conv_winograd;
pub(crate) mod pool;
pub(crate) mod pool_argmax;
pub(crate) mod pool_tiled;
pub(crate) mod widen;

use crate::epilogue::Activation;
use crate::shape::{Conv2dGeometry, PaddingMode};

/// Pipeline-overridable constants of one pipeline, by name.
pub type Constants = Vec<(&'static str, u32)>;

/// Which bind-group layout a kernel takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bindings {
    /// params, images, kernels, output, bias.
    Conv,
    /// params, images, output.
    Pool,
}

/// A kernel of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// [`conv_tiled`].
    ConvTiled,
    /// [`conv_direct`].
    ConvDirect,
    /// [`conv_winograd`].
    ConvWinograd,
    /// [`pool`].
    Pool,
    /// [`pool_tiled`].
    PoolTiled,
    /// [`pool_argmax`].
    PoolArgmax,
    /// [`widen`].
    Widen,
}

/// The shader files; `Family::shader` indexes it.
pub const SHADERS: [Shader; 6] = [
    Shader {
        label: "conv2d",
        source: concat!(
            include_str!("../../../shaders/common.wgsl"),
            include_str!("../../../shaders/conv2d.wgsl")
        ),
        trusted: true,
    },
    Shader {
        label: "conv2d_direct",
        source: concat!(
            include_str!("../../../shaders/common.wgsl"),
            include_str!("../../../shaders/conv2d_direct.wgsl")
        ),
        // Keeps naga's checks: without them it ran slower on lavapipe
        // (benches/RESULTS.md).
        trusted: false,
    },
    Shader {
        label: "pool2d",
        source: concat!(
            include_str!("../../../shaders/common.wgsl"),
            include_str!("../../../shaders/pool2d.wgsl")
        ),
        trusted: false,
    },
    Shader {
        label: "pool2d_argmax",
        source: concat!(
            include_str!("../../../shaders/common.wgsl"),
            include_str!("../../../shaders/pool2d_argmax.wgsl")
        ),
        trusted: false,
    },
    Shader {
        label: "widen",
        source: concat!(
            include_str!("../../../shaders/common.wgsl"),
            include_str!("../../../shaders/widen.wgsl")
        ),
        trusted: false,
    },
    Shader {
        label: "conv2d_winograd",
        source: concat!(
            include_str!("../../../shaders/common.wgsl"),
            include_str!("../../../shaders/conv2d_winograd.wgsl")
        ),
        trusted: true,
    },
];

/// A shader as the device gets it: `shaders/common.wgsl` (params structs,
/// border and activation rules) in front of the shader's own file.
#[derive(Debug, Clone, Copy)]
pub struct Shader {
    /// Debug label.
    pub label: &'static str,
    /// WGSL source.
    pub source: &'static str,
    /// Created without naga's runtime checks: the shader's own bounds logic
    /// keeps every access in range (its header gives the reasoning).
    pub trusted: bool,
}

impl Family {
    /// Index into [`SHADERS`].
    pub fn shader(self) -> usize {
        match self {
            Family::ConvTiled => 0,
            Family::ConvDirect => 1,
            Family::Pool | Family::PoolTiled => 2,
            Family::PoolArgmax => 3,
            Family::Widen => 4,
            Family::ConvWinograd => 5,
        }
    }

    /// Entry point in the shader.
    pub fn entry(self) -> &'static str {
        match self {
            Family::PoolTiled => "tiled",
            _ => "main",
        }
    }

    /// Pipeline label.
    pub fn label(self) -> &'static str {
        match self {
            Family::ConvTiled => "conv2d",
            Family::ConvDirect => "conv2d_direct",
            Family::ConvWinograd => "conv2d_winograd",
            Family::Pool => "pool2d",
            Family::PoolTiled => "pool2d_tiled",
            Family::PoolArgmax => "pool2d_argmax",
            Family::Widen => "widen",
        }
    }

    /// Bind-group layout.
    pub fn bindings(self) -> Bindings {
        match self {
            Family::ConvTiled | Family::ConvDirect | Family::ConvWinograd => Bindings::Conv,
            // Params, input, output: the pooling layout.
            Family::Pool | Family::PoolTiled | Family::PoolArgmax | Family::Widen => Bindings::Pool,
        }
    }
}

/// The per-layer rules every conv kernel compiles in (common.wgsl's
/// `MODE`, `ACT`, `HAS_BIAS`): the border mode and the epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvRules {
    /// Border mode.
    pub mode: PaddingMode,
    /// Activation code, [`Activation::gpu_code`].
    pub act: u32,
    /// A bias is added.
    pub has_bias: bool,
}

impl ConvRules {
    /// The rules of a convolution.
    pub fn of(g: &Conv2dGeometry, has_bias: bool) -> Self {
        ConvRules {
            mode: g.padding_mode,
            act: Activation::gpu_code(g.activation).0,
            has_bias,
        }
    }

    /// As pipeline constants.
    pub fn constants(&self) -> Constants {
        vec![
            ("MODE", self.mode.code()),
            ("ACT", self.act),
            ("HAS_BIAS", u32::from(self.has_bias)),
        ]
    }
}

/// Which conv kernel a convolution takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKernel {
    /// The implicit GEMM.
    Tiled(conv_tiled::ConvTiling),
    /// The direct kernel.
    Direct(conv_direct::ConvDirect),
    /// Winograd F(2x2, 3x3), where asked for and the shape fits.
    Winograd(conv_winograd::ConvWinograd),
}

impl ConvKernel {
    /// The kernel for a convolution on `dev` (see
    /// [`conv_tiled::ConvTiling::for_conv`]).
    pub fn for_conv(g: &Conv2dGeometry, dev: &conv_tiled::ConvDevice) -> Self {
        use conv_direct::{ConvDirect, DIRECT_MAX_NC};
        use conv_winograd::ConvWinograd;
        if dev.winograd && ConvWinograd::fits(g, dev.workgroup_bytes) {
            ConvKernel::Winograd(ConvWinograd)
        } else if g.nc <= DIRECT_MAX_NC {
            ConvKernel::Direct(ConvDirect { per_output: false })
        } else if g.groups > 1 && g.group_c() <= DIRECT_MAX_NC {
            ConvKernel::Direct(ConvDirect { per_output: true })
        } else {
            ConvKernel::Tiled(conv_tiled::ConvTiling::for_conv(g, dev))
        }
    }

    /// Whether RGB images are read as four channels (a zero fourth, and
    /// zero kernel rows for it), so the tiled kernel loads each pixel as
    /// one vec4 instead of three values: three channels, no groups, a
    /// layer the tiled kernel takes, and a device that takes it
    /// (forced by [`conv_tiled::ConvDevice::pad_rgb`]; by default every
    /// hardware GPU, where a vector load is one transaction, and no
    /// software adapter, where the fourth channel is a third more work).
    pub fn pads_rgb(g: &Conv2dGeometry, dev: &conv_tiled::ConvDevice) -> bool {
        g.c == 3
            && g.groups == 1
            && dev.pad_rgb.unwrap_or(!dev.software)
            && matches!(ConvKernel::for_conv(g, dev), ConvKernel::Tiled(_))
    }

    /// The table entry and pipeline constants.
    pub fn pipeline(&self, rules: ConvRules) -> (Family, Constants) {
        match self {
            ConvKernel::Tiled(t) => (Family::ConvTiled, t.constants(rules)),
            ConvKernel::Direct(d) => (Family::ConvDirect, d.constants(rules)),
            ConvKernel::Winograd(w) => (Family::ConvWinograd, w.constants(rules)),
        }
    }
}

/// Which pooling kernel a pooling takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKernel {
    /// One invocation per output value or vec4.
    Plain(pool::Pool),
    /// Staged tiles, of the variant given.
    Tiled(pool_tiled::PoolTiling, pool::Pool),
    /// The argmax.
    Argmax(pool_argmax::PoolArgmax),
}

impl PoolKernel {
    /// The table entry and pipeline constants.
    pub fn pipeline(&self) -> (Family, Constants) {
        match self {
            PoolKernel::Plain(k) => (Family::Pool, k.constants()),
            PoolKernel::Tiled(t, v) => (Family::PoolTiled, t.constants(*v)),
            PoolKernel::Argmax(k) => (Family::PoolArgmax, k.constants()),
        }
    }
}
