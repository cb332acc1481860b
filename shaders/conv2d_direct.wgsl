// Direct 2-D cross-correlation for few output channels (nc <= 4), where a
// GEMM tile would be mostly empty: one invocation per output pixel
// (n, oy, ox) of this chunk computes all of its nc outputs, looping over the
// taps in HWIO order. Padded cells are read as 0 and still multiplied, as in
// the CPU reference.
//
// Shapes arrive in `ConvParams`, the same struct as conv2d.wgsl (mirrored by
// `ConvParams` in src/gpu/params.rs).

struct ConvParams {
    batch: u32,
    h: u32,
    w: u32,
    c: u32,
    band_h: u32,
    in_row0: u32,
    out_row0: u32,
    oh_chunk: u32,
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
    m_total: u32,
    k_total: u32,
    tiles_m: u32,
    row_pitch: u32,  // invocations per row of the folded 2-D dispatch
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> images: array<f32>;
@group(0) @binding(2) var<storage, read> kernels: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WG: u32 = 64u;

// Outputs per invocation at most (the host sends only nc <= MAX_NC here).
const MAX_NC: u32 = 4u;

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let m = gid.x + gid.y * p.row_pitch;
    if (m >= p.m_total) {
        return;
    }
    let ox = m % p.ow;
    let t = m / p.ow;
    let oy = t % p.oh_chunk + p.out_row0;
    let n = t / p.oh_chunk;
    var acc: array<f32, MAX_NC>;
    var tap = 0u;
    for (var i = 0u; i < p.kh; i++) {
        let y = i32(oy * p.sh + i * p.dh) - i32(p.pad_top);
        let y_in = y >= 0 && y < i32(p.h);
        let row = n * p.band_h + select(0u, u32(max(y, 0)) - p.in_row0, y_in);
        for (var j = 0u; j < p.kw; j++) {
            let x = i32(ox * p.sw + j * p.dw) - i32(p.pad_left);
            let inside = y_in && x >= 0 && x < i32(p.w);
            let base = select(0u, (row * p.w + u32(max(x, 0))) * p.c, inside);
            for (var ch = 0u; ch < p.c; ch++) {
                let v = select(0.0, images[base + ch], inside);
                let wrow = tap * p.nc;
                for (var k = 0u; k < p.nc; k++) {
                    acc[k] = acc[k] + v * kernels[wrow + k];
                }
                tap += 1u;
            }
        }
    }
    for (var k = 0u; k < p.nc; k++) {
        out[m * p.nc + k] = acc[k];
    }
}
