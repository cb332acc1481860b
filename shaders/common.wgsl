// Shared by every shader: build.rs and src/gpu/pipelines.rs put this file in
// front of each of the others, so the params structs and the border and
// activation rules are written once. The structs are mirrored by
// src/gpu/params.rs (checked field by field by tests/gpu_params.rs).

struct ConvParams {
    batch: u32,      // images in this chunk
    h: u32,          // image height (whole image)
    w: u32,
    c: u32,          // image channels (a pixel's stride)
    band_h: u32,     // image rows held in `images` per image
    in_row0: u32,    // first image row held in `images`
    out_row0: u32,   // first output row computed by this chunk
    oh_chunk: u32,   // output rows computed by this chunk
    ow: u32,
    nc: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    pad_top: u32,
    pad_left: u32,
    m_total: u32,    // work units of this chunk (pixels, or outputs per invocation)
    k_total: u32,    // kh * kw * gc
    tiles_m: u32,    // ceil(pixels / TILE_M)
    row_pitch: u32,  // invocations per row of the folded 2-D dispatch
    gc: u32,         // input channels per group, c / groups
    gnc: u32,        // output channels per group, nc / groups
    tiles_n: u32,    // tiles across one group's output channels
    act_a: f32,      // the activation's numbers (alpha; clip's lo)
    act_b: f32,      // (clip's hi)
    limit: f32,      // Winograd: inputs past this magnitude take direct sums
}

struct WidenParams {
    count: u32,      // values of this chunk
    row_pitch: u32,  // invocations per row of the folded 2-D dispatch
    _pad0: u32,
    _pad1: u32,
}

struct PoolParams {
    batch: u32,
    h: u32,
    w: u32,
    c: u32,
    band_h: u32,     // image rows held in `images` per image
    in_row0: u32,    // first image row held in `images`
    out_row0: u32,   // first output row computed by this chunk
    oh_chunk: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    pad_top: u32,
    pad_bottom: u32,
    pad_left: u32,
    pad_right: u32,
    mode: u32,              // 0 max, 1 avg (the kernels read it as AVG)
    count_include_pad: u32, // 0 or 1
    total: u32,             // batch * oh_chunk * ow * c
    row_pitch: u32,         // invocations per row of the folded dispatch
    oh: u32,                // output height of the whole call (adaptive windows)
    adaptive: u32,          // 1: windows floor(i * h / oh) .. ceil((i + 1) * h / oh)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// A conv pipeline's border mode (PaddingMode::code), activation
// (Activation::gpu_code, 0 none) and whether a bias is added: pipeline
// constants, so each pipeline compiles its own rule alone rather than
// branching on it for every tap and every output.
override MODE: u32 = 0u;
override ACT: u32 = 0u;
override HAS_BIAS: bool = false;

const NEG_INF_BITS: u32 = 0xff800000u;
const NAN_BITS: u32 = 0x7fc00000u;

// NaN tested on the bits, so no compiler assumption about NaN can remove it.
fn is_nan(v: vec4<f32>) -> vec4<bool> {
    return (bitcast<vec4<u32>>(v) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u);
}

fn is_nan1(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// The image cell that padded index `j` (relative to the image's first cell)
// holds on an axis of `n` cells, or -1 for a zero: PaddingMode::source in
// src/shape.rs (1 reflect, 2 symmetric, 3 replicate, 4 circular).
fn border(j: i32, n: i32, mode: u32) -> i32 {
    if (j >= 0 && j < n) {
        return j;
    }
    switch mode {
        case 1u: {
            return select(2 * (n - 1) - j, -j, j < 0);
        }
        case 2u: {
            return select(2 * n - 1 - j, -j - 1, j < 0);
        }
        case 3u: {
            return clamp(j, 0, n - 1);
        }
        case 4u: {
            return ((j % n) + n) % n;
        }
        default: {
            return -1;
        }
    }
}

// The activation of src/epilogue.rs (codes of Activation::gpu_code), with
// NaN staying NaN: comparisons, not max/min.
fn activate(x: f32, act: u32, a: f32, b: f32) -> f32 {
    switch act {
        case 1u: {
            return select(x, 0.0, x < 0.0);
        }
        case 2u, 6u: {
            return select(select(x, b, x > b), a, x < a);
        }
        case 3u: {
            return select(x, a * x, x < 0.0);
        }
        case 4u: {
            return 1.0 / (1.0 + exp(-x));
        }
        case 5u: {
            // Past 9, f32 tanh is 1 within the tolerance; some drivers
            // compute tanh as a ratio of exponentials that overflows to NaN.
            return select(tanh(x), sign(x), abs(x) > 9.0);
        }
        default: {
            return x;
        }
    }
}
