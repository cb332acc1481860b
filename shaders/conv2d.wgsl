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
// Staging (the host picks STAGES and KT, 8, 16 or 32, per tiling within the
// device's workgroup memory; the workgroup arrays are sized by them). With
// STAGES = 1 each slice is loaded straight into the tiles, then multiplied,
// with a barrier after each. With STAGES = 2 the tiles are double-buffered
// and each invocation fetches its share of slice s + 1 into registers
// before it multiplies slice s, so the loads are in flight during the
// multiply-adds, then stores it into the buffer slice s - 1 was read from:
// one barrier per slice suffices, since every invocation has finished
// slice s - 1 once it passes the barrier that ends it.
//
// The A tile is stored transposed ([kk][mm]) with scalar stores: its reads,
// WG_N times more frequent than its stores, are then single vec4s of four
// rows. A vec4 store would need four rows of one invocation's load, and an
// invocation loads one or two rows per slice on the wide tilings.
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
// runtime checks): workgroup arrays are sized by the tiling's constants
// (TILE_M * KT / 4 * STAGES quads and so on) and indexed by loop counters
// bounded by them; the private staging arrays (`pa`, `pb`, `cells`) are
// indexed by counters clamped to their own lengths (a tiling that would
// need more is refused by the host: src/gpu/kernels/conv_tiled.rs, whose
// tests check every tiling it picks); an image read happens only for a row
// below m_total whose tap lands inside the image, whose row lies in the
// chunk's band (the chunk planner uploads every row a band reads); a kernel
// read only for k < k_total and n < n_end; a write only for m < m_total and
// n < n_end. Every divisor (gc, kw, ow, oh_chunk, tiles_n) is at least 1
// for a planned chunk, and every loop is bounded by the params.
//
// Shapes arrive in `ConvParams` (common.wgsl, mirrored in src/gpu/params.rs).
// The tiling (workgroup extents, register block, staging) and the three load
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

// Reduction steps per slice: 8 or 16.
override KT: u32 = 8u;
// Workgroup buffers per tile: 1, or 2 (double-buffered).
override STAGES: u32 = 1u;
// Accumulators of the largest register block, in vec4s along columns.
const ACC_QUADS: u32 = 16u;
// Rows one invocation loads per slice with VEC_A, at most (TILE_M * KT / 4
// over the invocations); four times as many single floats without it.
const MAX_ROWS: u32 = 8u;
// Kernel quads (or four times as many floats) one invocation loads per
// slice, at most.
const MAX_BQ: u32 = 4u;

// Element [kk * TILE_M + mm] of stage t is a_tile[t * TILE_M * KT / 4 + ..
// >> 2][.. & 3]; likewise b_tile with [kk * TILE_N + nn]. TILE_M and TILE_N
// are multiples of 4.
var<workgroup> a_tile: array<vec4<f32>, WG_M * RB * KT / 4u * STAGES>;
var<workgroup> b_tile: array<vec4<f32>, WG_N * RB * KT / 4u * STAGES>;
// Per tile row: (first image row of its image in `images`, top input row,
// left input column, 1 if the row is a real output pixel).
var<workgroup> rows: array<vec4<i32>, WG_M * RB>;

// Element `at` ([kk * TILE_M + mm]) of the A tile of the stage at quad
// `t0`, and the four elements of a vec4 of channels kk .. kk + 3.
fn put_a(t0: u32, at: u32, v: f32) {
    a_tile[t0 + (at >> 2u)][at & 3u] = v;
}

fn put_a4(t0: u32, at: u32, v: vec4<f32>) {
    let tm = WG_M * RB;
    put_a(t0, at, v.x);
    put_a(t0, at + tm, v.y);
    put_a(t0, at + 2u * tm, v.z);
    put_a(t0, at + 3u * tm, v.w);
}

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
    let my_rows = min((TILE_M + row_step - 1u) / row_step, MAX_ROWS);
    var cells: array<i32, MAX_ROWS>;
    var cells_tap = vec2<u32>(0xffffffffu);
    // Single floats of A and of B this invocation loads per slice.
    let a_elems = min((TILE_M * KT + threads - 1u) / threads, 4u * MAX_ROWS);
    let b_quads = min((KT * TILE_N / 4u + threads - 1u) / threads, MAX_BQ);
    let b_elems = min((KT * TILE_N + threads - 1u) / threads, 4u * MAX_BQ);
    // With two buffers, one slice in flight in registers: A rows (or
    // floats, four to a vec4) and B quads (or floats).
    var pa: array<vec4<f32>, MAX_ROWS>;
    var pb: array<vec4<f32>, MAX_BQ>;
    let a_stage = TILE_M * KT / 4u;
    let b_stage = TILE_N * KT / 4u;
    let slices = (p.k_total + KT - 1u) / KT;
    // One buffer: iteration s loads slice s straight into the tiles and
    // multiplies it. Two: it fetches slice s into registers, multiplies
    // slice s - 1, then stores slice s into the other buffer (one more
    // iteration multiplies the last slice).
    let double = STAGES == 2u;
    let last = select(slices, slices + 1u, double);
    for (var s = 0u; s < last; s++) {
        let k0 = s * KT;
        let put = (s % STAGES) * a_stage;
        let put_b = (s % STAGES) * b_stage;
        if (s < slices) {
            let k = k0 + k_lane;
            let live = tap.y < p.kh;
            if (VEC_A) {
                if (!POINTWISE && any(cells_tap != tap.yz)) {
                    cells_tap = tap.yz;
                    for (var r = 0u; r < my_rows; r++) {
                        let mm = tid / per_slice + r * row_step;
                        cells[r] = select(-1, tap_index(min(mm, TILE_M - 1u), tap.yz, ch0), mm < TILE_M && live);
                    }
                }
                for (var r = 0u; r < my_rows; r++) {
                    let mm = tid / per_slice + r * row_step;
                    var v = vec4<f32>(0.0);
                    if (POINTWISE) {
                        let m = m0 + mm;
                        if (mm < TILE_M && m < p.m_total && k < p.k_total) {
                            v = images[(m * p.c + k) >> 2u];
                        }
                    } else if (cells[r] >= 0) {
                        v = images[(u32(cells[r]) + tap.x) >> 2u];
                    }
                    if (double) {
                        pa[r] = v;
                    } else if (mm < TILE_M) {
                        put_a4(put, k_lane * TILE_M + mm, v);
                    }
                }
            } else {
                // Single channels: the tap changes every few slices when the
                // group has few channels, so it is mapped per element.
                for (var j = 0u; j < a_elems; j++) {
                    let mm = (tid + j * threads) / KT;
                    var v = 0.0;
                    if (mm < TILE_M) {
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
                        if (!double) {
                            put_a(put, k_lane * TILE_M + mm, v);
                        }
                    }
                    if (double) {
                        pa[j >> 2u][j & 3u] = v;
                    }
                }
            }
            // The next slice's step: KT more channels, carried into the
            // kernel column and row.
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
                for (var j = 0u; j < b_quads; j++) {
                    let e = tid + j * threads;
                    let k = k0 + e / quads;
                    let n = n0 + (e % quads) * 4u;
                    var v = vec4<f32>(0.0);
                    if (e < KT * quads && k < p.k_total && n < n_end) {
                        v = kernels[(k * p.nc + n) >> 2u];
                    }
                    if (double) {
                        pb[j] = v;
                    } else if (e < b_stage) {
                        b_tile[put_b + e] = v;
                    }
                }
            } else {
                for (var j = 0u; j < b_elems; j++) {
                    let e = tid + j * threads;
                    let k = k0 + e / TILE_N;
                    let n = n0 + e % TILE_N;
                    var v = 0.0;
                    if (e < KT * TILE_N && k < p.k_total && n < n_end) {
                        v = kernel_at(k * p.nc + n);
                    }
                    if (double) {
                        pb[j >> 2u][j & 3u] = v;
                    } else if (e < KT * TILE_N) {
                        b_tile[put_b + (e >> 2u)][e & 3u] = v;
                    }
                }
            }
        }
        if (!double) {
            // The slice just stored is complete.
            workgroupBarrier();
        }
        // Multiply slice s (one buffer) or s - 1 (two).
        if (!double || s > 0u) {
            let t = select(s, s - 1u, double) % STAGES;
            let at0 = t * a_stage;
            let bt0 = t * b_stage;
            for (var kk = 0u; kk < KT; kk++) {
                // Rows 4 * (q * WG_M + lid.y) .. + 3 and likewise columns.
                var a: array<vec4<f32>, 2>;
                var b: array<vec4<f32>, 2>;
                for (var q = 0u; q < bq; q++) {
                    a[q] = a_tile[at0 + kk * (TILE_M / 4u) + q * WG_M + lid.y];
                    b[q] = b_tile[bt0 + kk * (TILE_N / 4u) + q * WG_N + lid.x];
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
        }
        // Two buffers: slice s goes into the one slice s - 1 was not read from.
        if (double && s < slices) {
            if (VEC_A) {
                for (var r = 0u; r < my_rows; r++) {
                    let mm = tid / per_slice + r * row_step;
                    if (mm < TILE_M) {
                        put_a4(put, k_lane * TILE_M + mm, pa[r]);
                    }
                }
            } else {
                for (var j = 0u; j < a_elems; j++) {
                    let mm = (tid + j * threads) / KT;
                    if (mm < TILE_M) {
                        put_a(put, k_lane * TILE_M + mm, pa[j >> 2u][j & 3u]);
                    }
                }
            }
            if (VEC_B) {
                for (var j = 0u; j < b_quads; j++) {
                    let e = tid + j * threads;
                    if (e < b_stage) {
                        b_tile[put_b + e] = pb[j];
                    }
                }
            } else {
                for (var j = 0u; j < b_elems; j++) {
                    let e = tid + j * threads;
                    if (e < KT * TILE_N) {
                        b_tile[put_b + (e >> 2u)][e & 3u] = pb[j >> 2u][j & 3u];
                    }
                }
            }
        }
        // One buffer: every invocation is done with it before the next
        // slice overwrites it. Two: the slice stored is complete.
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
