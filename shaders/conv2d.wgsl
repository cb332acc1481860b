// 2-D cross-correlation over NHWC images and HWIO kernels as an implicit GEMM:
// rows are output pixels (n, oy, ox) of this chunk, columns are output
// channels, the reduction runs over (i, j, ch) in HWIO order so the kernel
// tensor is already the row-major K x N matrix.
//
// A workgroup computes a TILE_M x TILE_N output tile; each invocation keeps an
// RM x RN block of accumulators in registers; slices of the implicit im2col
// matrix and of the kernels are staged in workgroup memory, KT reduction steps
// at a time. Padded cells are read as 0 and still multiplied, so `0 * inf` in
// a kernel gives NaN exactly as the formula of the CPU reference does.
//
// Shapes arrive in `ConvParams` (mirrored by `ConvParams` in src/gpu/params.rs);
// only the tiling is fixed here. Workgroup extents are pipeline overrides.

struct ConvParams {
    batch: u32,      // images in this chunk
    h: u32,          // image height (whole image)
    w: u32,
    c: u32,
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
    m_total: u32,    // batch * oh_chunk * ow
    k_total: u32,    // kh * kw * c
    tiles_m: u32,    // ceil(m_total / TILE_M)
    row_pitch: u32,  // used by conv2d_direct.wgsl only
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> images: array<f32>;
@group(0) @binding(2) var<storage, read> kernels: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// Invocations along output channels and along output pixels.
override WG_N: u32 = 16u;
override WG_M: u32 = 16u;

const RM: u32 = 4u;
const RN: u32 = 4u;
const KT: u32 = 8u;
const MAX_TILE_M: u32 = 256u;
const MAX_TILE_N: u32 = 64u;
const A_TILE_LEN: u32 = MAX_TILE_M * KT;
const B_TILE_LEN: u32 = KT * MAX_TILE_N;

var<workgroup> a_tile: array<f32, A_TILE_LEN>; // [kk * TILE_M + mm]
var<workgroup> b_tile: array<f32, B_TILE_LEN>; // [kk * TILE_N + nn]

// Element (m, k) of the implicit im2col matrix, 0 outside the image.
fn load_a(m: u32, k: u32) -> f32 {
    if (m >= p.m_total || k >= p.k_total) {
        return 0.0;
    }
    let ox = m % p.ow;
    let t = m / p.ow;
    let oy = t % p.oh_chunk + p.out_row0;
    let n = t / p.oh_chunk;
    let ch = k % p.c;
    let t2 = k / p.c;
    let j = t2 % p.kw;
    let i = t2 / p.kw;
    let y = i32(oy * p.sh + i * p.dh) - i32(p.pad_top);
    let x = i32(ox * p.sw + j * p.dw) - i32(p.pad_left);
    if (y < 0 || x < 0 || y >= i32(p.h) || x >= i32(p.w)) {
        return 0.0;
    }
    let row = u32(y) - p.in_row0;
    return images[((n * p.band_h + row) * p.w + u32(x)) * p.c + ch];
}

@compute @workgroup_size(WG_N, WG_M, 1)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    // The tile index is folded over x and y so no dimension passes the
    // device's workgroup-count limit; the same for every invocation of the
    // workgroup, so returning here keeps the barriers uniform.
    let tile_m = wid.x + wid.y * nwg.x;
    if (tile_m >= p.tiles_m) {
        return;
    }
    let TILE_M = WG_M * RM;
    let TILE_N = WG_N * RN;
    let m0 = tile_m * TILE_M;
    let n0 = wid.z * TILE_N;
    let tid = lid.y * WG_N + lid.x;
    let threads = WG_M * WG_N;

    var acc: array<f32, 16>; // RM * RN, zero-initialised
    for (var k0 = 0u; k0 < p.k_total; k0 += KT) {
        // Consecutive invocations take consecutive k, which are consecutive
        // channels in NHWC memory.
        for (var e = tid; e < TILE_M * KT; e += threads) {
            let kk = e % KT;
            let mm = e / KT;
            a_tile[kk * TILE_M + mm] = load_a(m0 + mm, k0 + kk);
        }
        for (var e = tid; e < KT * TILE_N; e += threads) {
            let nn = e % TILE_N;
            let kk = e / TILE_N;
            let k = k0 + kk;
            let n = n0 + nn;
            var v = 0.0;
            if (k < p.k_total && n < p.nc) {
                v = kernels[k * p.nc + n];
            }
            b_tile[kk * TILE_N + nn] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KT; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < RM; i++) {
                a[i] = a_tile[kk * TILE_M + lid.y + i * WG_M];
            }
            for (var j = 0u; j < RN; j++) {
                b[j] = b_tile[kk * TILE_N + lid.x + j * WG_N];
            }
            for (var i = 0u; i < RM; i++) {
                for (var j = 0u; j < RN; j++) {
                    acc[i * RN + j] = acc[i * RN + j] + a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < RM; i++) {
        let m = m0 + lid.y + i * WG_M;
        for (var j = 0u; j < RN; j++) {
            let n = n0 + lid.x + j * WG_N;
            if (m < p.m_total && n < p.nc) {
                out[m * p.nc + n] = acc[i * RN + j];
            }
        }
    }
}
