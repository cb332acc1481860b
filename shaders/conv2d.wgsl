// 2-D cross-correlation over NHWC images and HWIO kernels as an implicit GEMM:
// rows are output pixels (n, oy, ox) of this chunk, columns are output
// channels, the reduction runs over (i, j, ch) in HWIO order so the kernel
// tensor is already the row-major K x N matrix.
//
// A workgroup computes a TILE_M x TILE_N output tile; each invocation keeps an
// RB x RB block of accumulators in registers (RB = 8 for wide layers, where
// each reduction step then does 64 multiply-adds for four vec4 reads of
// workgroup memory; RB = 4 where a tile that wide would be mostly empty).
// An invocation's rows and columns are runs of four, so its operands come
// out of workgroup memory as vec4s. Slices of the implicit im2col matrix and
// of the kernels are staged in workgroup memory, KT reduction steps at a
// time. Padded cells are read as 0 and still multiplied, so `0 * inf` in a
// kernel gives NaN exactly as the formula of the CPU reference does.
//
// Loads: images and kernels are bound as arrays of vec4. When the channel
// count is a multiple of 4 (VEC_A), four consecutive reduction steps are four
// consecutive channels of one pixel, 16-byte aligned, fetched with one vec4
// load; likewise four output channels of the kernels when nc is (VEC_B).
// Otherwise single floats are read out of the vec4 array. The pixel
// coordinates of the tile's rows are decoded once per workgroup into
// workgroup memory, and each invocation decodes its reduction step once per
// KT slice, so the loads do no per-element divisions. POINTWISE (1x1, stride
// 1, no padding, whole images) reads row m of the image matrix directly.
//
// Groups: the workgroups along z are (group, tile of the group's output
// channels); a group's reduction runs over its own c / groups channels, read
// at the group's channel offset. Border modes map each tap onto the image
// cell it holds (`border`, common.wgsl) in the load step; the epilogue (bias,
// activation) is applied in the store.
//
// Bounds, by construction (the host creates this module without naga's
// runtime checks): workgroup and private arrays are indexed by loop
// counters bounded by constants of the tiling (MAX_TILE_*, ACC_QUADS,
// MAX_ROWS, which the host's tilings respect; tests/gpu.rs runs each); an
// image read happens only for a row below m_total whose tap lands inside the
// image, whose row lies in the chunk's band (the chunk planner uploads every
// row a band reads); a kernel read only for k < k_total and n < n_end; a
// write only for m < m_total and n < n_end. Every divisor (gc, kw, ow,
// oh_chunk, tiles_n) is at least 1 for a planned chunk, and every loop is
// bounded by the params.
//
// Shapes arrive in `ConvParams` (common.wgsl, mirrored in src/gpu/params.rs);
// only the tiling is fixed here. Workgroup extents and the three load
// variants are pipeline overrides.


@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> images: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> kernels: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

// Invocations along output channels and along output pixels.
override WG_N: u32 = 16u;
override WG_M: u32 = 16u;
// c % 4 == 0: vec4 loads of the images.
override VEC_A: bool = false;
// nc % 4 == 0: vec4 loads of the kernels.
override VEC_B: bool = false;
// 1x1 kernel, stride 1, no padding: a chunk's input rows are its output
// rows, so pixel m of the chunk is at images[m * c].
override POINTWISE: bool = false;
// Register block: RB x RB outputs per invocation, 4 or 8.
override RB: u32 = 4u;

const KT: u32 = 8u;
// Largest tiles the host picks (src/gpu/pipelines.rs): 256 x 4 and 128 x
// 128; with `rows`, 16 KiB of workgroup memory, WebGPU's default limit.
const MAX_TILE_M: u32 = 256u;
const MAX_TILE_N: u32 = 128u;
const A_TILE_QUADS: u32 = MAX_TILE_M * KT / 4u;
const B_TILE_QUADS: u32 = KT * MAX_TILE_N / 4u;
// Accumulators of the largest register block, in vec4s along columns.
const ACC_QUADS: u32 = 16u;
// Rows one invocation loads per slice with VEC_A, at most: TILE_M * KT / 4
// over the invocations, for every tiling the host picks (256 x 16 tiles on
// 256 invocations: 2; 256 x 4 on 64: 8).
const MAX_ROWS: u32 = 8u;

// Element [kk * TILE_M + mm] is a_tile[.. >> 2][.. & 3]; likewise b_tile
// with [kk * TILE_N + nn]. TILE_M and TILE_N are multiples of 4.
var<workgroup> a_tile: array<vec4<f32>, A_TILE_QUADS>;
var<workgroup> b_tile: array<vec4<f32>, B_TILE_QUADS>;
// Per tile row: (first image row of its image in `images`, top input row,
// left input column, 1 if the row is a real output pixel).
var<workgroup> rows: array<vec4<i32>, MAX_TILE_M>;

fn image_at(i: u32) -> f32 {
    return images[i >> 2u][i & 3u];
}

fn kernel_at(i: u32) -> f32 {
    return kernels[i >> 2u][i & 3u];
}

// Index into `images` of channel `ch0` (the group's first) of the cell that
// tap `ij` (kernel row, column) of tile row `mm` reads, or -1 where the tap
// reads a zero of the padding or the row lies outside the problem.
fn tap_index(mm: u32, ij: vec2<u32>, ch0: u32) -> i32 {
    let r = rows[mm];
    if (r.w == 0) {
        return -1;
    }
    let y = border(r.y + i32(ij.x * p.dh), i32(p.h), MODE);
    let x = border(r.z + i32(ij.y * p.dw), i32(p.w), MODE);
    if (y < 0 || x < 0) {
        return -1;
    }
    let row = r.x + y - i32(p.in_row0);
    return (row * i32(p.w) + x) * i32(p.c) + i32(ch0);
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
    let TILE_M = WG_M * RB;
    let TILE_N = WG_N * RB;
    let m0 = tile_m * TILE_M;
    let group = wid.z / p.tiles_n;
    let n0 = group * p.gnc + (wid.z % p.tiles_n) * TILE_N;
    // This group's output channels end here; its input channels start at ch0.
    let n_end = (group + 1u) * p.gnc;
    let ch0 = group * p.gc;
    let tid = lid.y * WG_N + lid.x;
    let threads = WG_M * WG_N;

    for (var mm = tid; mm < TILE_M; mm += threads) {
        let m = m0 + mm;
        let ox = m % p.ow;
        let t = m / p.ow;
        let oy = t % p.oh_chunk + p.out_row0;
        let n = t / p.oh_chunk;
        rows[mm] = vec4<i32>(
            i32(n * p.band_h),
            i32(oy * p.sh) - i32(p.pad_top),
            i32(ox * p.sw) - i32(p.pad_left),
            select(0, 1, m < p.m_total),
        );
    }
    workgroupBarrier();

    // Block row 4 * qa + r, columns 4 * qb .. 4 * qb + 3 is acc[(4 * qa + r)
    // * bq + qb] with bq = RB / 4; zero-initialised.
    var acc: array<vec4<f32>, ACC_QUADS>;
    let bq = RB / 4u;
    // The reduction step this invocation loads, kept decoded as (channel
    // within the group, kernel row, kernel column) and advanced by KT per
    // slice: one division per invocation instead of two per slice. Each
    // invocation keeps one k offset for every row it loads (threads is a
    // multiple of KT).
    let lanes = select(1u, 4u, VEC_A);
    let per_slice = KT / lanes;
    let k_lane = (tid % per_slice) * lanes;
    var tap = vec3<u32>(k_lane % p.gc, (k_lane / p.gc) / p.kw, (k_lane / p.gc) % p.kw);
    // With VEC_A a quad of channels never straddles two taps, so the index
    // of channel 0 of each loaded row's tap is computed once per tap (in
    // registers, `cells`) and a slice adds the channel to it: no border
    // arithmetic inside the slice loop while the tap stays the same.
    let row_step = threads / per_slice;
    let my_rows = (TILE_M + row_step - 1u) / row_step;
    var cells: array<i32, MAX_ROWS>;
    var cells_tap = vec2<u32>(0xffffffffu);
    for (var k0 = 0u; k0 < p.k_total; k0 += KT) {
        let k = k0 + k_lane;
        let live = tap.y < p.kh;
        if (VEC_A) {
            if (!POINTWISE && any(cells_tap != tap.yz)) {
                cells_tap = tap.yz;
                for (var s = 0u; s < min(my_rows, MAX_ROWS); s++) {
                    let mm = tid / per_slice + s * row_step;
                    cells[s] = select(-1, tap_index(min(mm, TILE_M - 1u), tap.yz, ch0), mm < TILE_M && live);
                }
            }
            for (var s = 0u; s < min(my_rows, MAX_ROWS); s++) {
                let mm = tid / per_slice + s * row_step;
                if (mm >= TILE_M) {
                    break;
                }
                var v = vec4<f32>(0.0);
                if (POINTWISE) {
                    let m = m0 + mm;
                    if (m < p.m_total && k < p.k_total) {
                        v = images[(m * p.c + k) >> 2u];
                    }
                } else if (cells[s] >= 0) {
                    v = images[(u32(cells[s]) + tap.x) >> 2u];
                }
                let at = k_lane * TILE_M + mm;
                a_tile[at >> 2u][at & 3u] = v.x;
                a_tile[(at + TILE_M) >> 2u][at & 3u] = v.y;
                a_tile[(at + 2u * TILE_M) >> 2u][at & 3u] = v.z;
                a_tile[(at + 3u * TILE_M) >> 2u][at & 3u] = v.w;
            }
        } else {
            // Single channels: the tap changes every few slices when the
            // group has few channels, so it is mapped per element.
            for (var e = tid; e < TILE_M * KT; e += threads) {
                let mm = e / KT;
                var v = 0.0;
                if (POINTWISE) {
                    let m = m0 + mm;
                    if (m < p.m_total && k < p.k_total) {
                        v = image_at(m * p.c + k);
                    }
                } else if (live) {
                    let at = tap_index(mm, tap.yz, ch0);
                    if (at >= 0) {
                        v = image_at(u32(at) + tap.x);
                    }
                }
                let at = k_lane * TILE_M + mm;
                a_tile[at >> 2u][at & 3u] = v;
            }
        }
        // The next slice's step: KT more channels, carried into the kernel
        // column and row.
        tap.x += KT;
        while (tap.x >= p.gc) {
            tap.x -= p.gc;
            tap.z += 1u;
            if (tap.z == p.kw) {
                tap.z = 0u;
                tap.y += 1u;
            }
        }
        if (VEC_B) {
            let quads = TILE_N / 4u;
            for (var e = tid; e < KT * quads; e += threads) {
                let nq = e % quads;
                let kk = e / quads;
                let k = k0 + kk;
                let n = n0 + nq * 4u;
                var v = vec4<f32>(0.0);
                if (k < p.k_total && n < n_end) {
                    v = kernels[(k * p.nc + n) >> 2u];
                }
                b_tile[kk * (TILE_N / 4u) + nq] = v;
            }
        } else {
            for (var e = tid; e < KT * TILE_N; e += threads) {
                let nn = e % TILE_N;
                let kk = e / TILE_N;
                let k = k0 + kk;
                let n = n0 + nn;
                var v = 0.0;
                if (k < p.k_total && n < n_end) {
                    v = kernel_at(k * p.nc + n);
                }
                let at = kk * TILE_N + nn;
                b_tile[at >> 2u][at & 3u] = v;
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KT; kk++) {
            // Rows 4 * (q * WG_M + lid.y) .. + 3 and likewise columns.
            var a: array<vec4<f32>, 2>;
            var b: array<vec4<f32>, 2>;
            for (var q = 0u; q < bq; q++) {
                a[q] = a_tile[kk * (TILE_M / 4u) + q * WG_M + lid.y];
                b[q] = b_tile[kk * (TILE_N / 4u) + q * WG_N + lid.x];
            }
            for (var qa = 0u; qa < bq; qa++) {
                for (var r = 0u; r < 4u; r++) {
                    let ar = a[qa][r];
                    for (var qb = 0u; qb < bq; qb++) {
                        let i = (4u * qa + r) * bq + qb;
                        acc[i] = acc[i] + ar * b[qb];
                    }
                }
            }
        }
        workgroupBarrier();
    }
    for (var qa = 0u; qa < bq; qa++) {
        for (var r = 0u; r < 4u; r++) {
            let m = m0 + 4u * (qa * WG_M + lid.y) + r;
            for (var qb = 0u; qb < bq; qb++) {
                let n = n0 + 4u * (qb * WG_N + lid.x);
                let v = acc[(4u * qa + r) * bq + qb];
                for (var e = 0u; e < 4u; e++) {
                    if (m < p.m_total && n + e < n_end) {
                        var r = v[e];
                        if (HAS_BIAS) {
                            r = r + bias[n + e];
                        }
                        out[m * p.nc + n + e] = activate(r, ACT, p.act_a, p.act_b);
                    }
                }
            }
        }
    }
}
