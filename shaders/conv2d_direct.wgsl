// Direct 2-D cross-correlation where a GEMM tile would be mostly empty: one
// invocation per output pixel (n, oy, ox) of this chunk computing all of its
// nc <= 4 outputs, or with PER_OUTPUT one invocation per output value (a
// grouped layer with few channels per group, depthwise above all), looping
// over the taps in HWIO order. Output channel k belongs to group
// k / gnc and reads that group's gc input channels. Border modes map each
// tap onto the image cell it holds (`border`, common.wgsl); zeros are read as
// 0 and still multiplied, as in the CPU reference. The epilogue (bias,
// activation) is applied in the store.
//
// Shapes arrive in `ConvParams` (common.wgsl, mirrored in src/gpu/params.rs).

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> images: array<f32>;
@group(0) @binding(2) var<storage, read> kernels: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

override WG: u32 = 64u;
// One invocation per output value rather than per pixel.
override PER_OUTPUT: bool = false;

// Outputs per invocation at most (the host sends only nc <= MAX_NC to the
// per-pixel variant).
const MAX_NC: u32 = 4u;

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let u = gid.x + gid.y * p.row_pitch;
    if (u >= p.m_total) {
        return;
    }
    var m = u;
    var k0 = 0u;
    var k1 = p.nc;
    if (PER_OUTPUT) {
        m = u / p.nc;
        k0 = u % p.nc;
        k1 = k0 + 1u;
    }
    let ox = m % p.ow;
    let t = m / p.ow;
    let oy = t % p.oh_chunk + p.out_row0;
    let n = t / p.oh_chunk;
    var acc: array<f32, MAX_NC>;
    // Each output's first input channel (its group's), found once: an
    // integer division in the tap loop is a scalar loop on a SIMD device.
    var ch0s: array<u32, MAX_NC>;
    for (var k = k0; k < k1; k++) {
        ch0s[k - k0] = (k / p.gnc) * p.gc;
    }
    for (var i = 0u; i < p.kh; i++) {
        let y = border(i32(oy * p.sh + i * p.dh) - i32(p.pad_top), i32(p.h), MODE);
        let y_in = y >= 0;
        let row = n * p.band_h + select(0u, u32(max(y, 0)) - p.in_row0, y_in);
        for (var j = 0u; j < p.kw; j++) {
            let x = border(i32(ox * p.sw + j * p.dw) - i32(p.pad_left), i32(p.w), MODE);
            let inside = y_in && x >= 0;
            let base = select(0u, (row * p.w + u32(max(x, 0))) * p.c, inside);
            let tap = (i * p.kw + j) * p.gc;
            for (var ch = 0u; ch < p.gc; ch++) {
                let wrow = (tap + ch) * p.nc;
                // Outputs of one group share their input: read once.
                var at = 0xffffffffu;
                var v = 0.0;
                for (var k = k0; k < k1; k++) {
                    let cell = base + ch0s[k - k0] + ch;
                    if (cell != at) {
                        at = cell;
                        v = select(0.0, images[cell], inside);
                    }
                    acc[k - k0] = acc[k - k0] + v * kernels[wrow + k];
                }
            }
        }
    }
    for (var k = k0; k < k1; k++) {
        var r = acc[k - k0];
        if (HAS_BIAS) {
            r = r + bias[k];
        }
        out[m * p.nc + k] = activate(r, ACT, p.act_a, p.act_b);
    }
}
