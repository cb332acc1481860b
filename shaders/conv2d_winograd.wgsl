// Winograd F(2x2, 3x3) convolution over NHWC images: 3x3 kernels, stride 1,
// no dilation, no groups, channels in whole vec4s (c % 4 == 0, nc % 4 ==
// 0). Each 2x2 block of outputs ("tile") reads a 4x4 block of inputs; with
// the input block transformed to V = Bt d B and each filter to U = G g Gt
// (host side, src/gpu/kernels/conv_winograd.rs), the tile's outputs are
// At (sum over channels of U . V) A: 16 independent GEMMs, one per element
// xi of the 4x4 transform, with 16 multiply-adds per tile and channel pair
// where the implicit GEMM takes 36.
//
// A workgroup computes TT tiles x TN output channels, all in one dispatch:
// per slice of KC = 4 input channels, 128 invocations each read two rows of
// one tile's input block as vec4s of channels and write one row of its V
// into workgroup memory as vec4s of the slice's channels (so the whole
// workgroup shares the transform), the others stage the slice of U; then
// each invocation accumulates, for one xi, a block of 8 tiles x 8 channels
// (per tile one vec4 read of V for 32 multiply-adds against eight vec4s of
// U read once per slice). At the end the 16 products of each tile and
// channel meet in workgroup memory, a quarter of them at a time, and one
// invocation per (tile, channel) transforms them back and stores the 2x2
// outputs with the epilogue.
//
// Exactness. Output (r, s) of a tile uses rows r .. r + 2 and columns s ..
// s + 2 of its input block only (rows 0-2 of At and Bt never touch row 3,
// rows 1-3 never row 0), so a value outside an output's window never
// reaches it, bit for bit; a tile row past the chunk's last output row
// reads zeros for rows the chunk did not upload, which only that discarded
// row sees. The transforms add and subtract inputs of neighbouring outputs,
// so an infinite or NaN input would give NaN where the direct sum gives inf,
// and values near the top of the f32 range could overflow: an input of
// magnitude above `p.limit` (NaN included; the host sets it from the
// kernels' largest magnitude and c) makes its workgroup compute its outputs
// as direct sums in HWIO order instead, from the plain kernels stored after
// U. The host takes this kernel only for finite kernels.
//
// Bounds, by construction (the host creates this module without naga's
// runtime checks): workgroup arrays are indexed by counters bounded by the
// constants TT, TN, KC and WG; an image read happens only for a real tile
// (n < batch) at a cell whose row lies in the chunk's band and whose column
// lies in the image, at channel c0 + 3 < c; a kernel read of U at xi < 16,
// channel < c, output channel < nc (both multiples of 4), of the plain
// kernels at tap < 9, so every index stays below 25 * c * nc; a write only
// for a row below oh_chunk, a column below ow and a channel below nc.
//
// Shapes arrive in `ConvParams` (common.wgsl): m_total counts the chunk's
// tiles, tiles_m the workgroups along them, tiles_n those along channels.

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> images: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> kernels: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

// Tiles and output channels per workgroup, input channels per slice.
const TT: u32 = 32u;
const TN: u32 = 32u;
const KC: u32 = 4u;
// 16 transform elements x 16 blocks of 8 tiles x 8 channels.
const WG: u32 = 256u;
// Quads of the slice's V ([xi][tile]: the slice's four channels) and U
// ([xi][k][TN / 4]) during the reduction; of a quarter of the products
// ([xi][16 tiles][4 quads of channels]) during the output transform, which
// reuses the memory.
const V_QUADS: u32 = 512u;
const U_QUADS: u32 = 512u;
const M_QUADS: u32 = 1024u;

var<workgroup> smem: array<vec4<f32>, M_QUADS>;
// Per tile: (image in the chunk, first output row in the chunk, first
// output column, 1 for a real tile).
var<workgroup> tiles: array<vec4<u32>, TT>;
var<workgroup> bad_any: atomic<u32>;
var<workgroup> bad_seen: u32;

// Four channels from c0 of the cell at padded offset (a, b) from the
// top-left of tile `t`'s input block, or zeros for a padded cell, for a row
// outside the chunk's band, or for no tile.
fn cell(t: vec4<u32>, a: u32, b: u32, c0: u32) -> vec4<f32> {
    let y = border(i32(t.y + p.out_row0 + a) - i32(p.pad_top), i32(p.h), MODE);
    let x = border(i32(t.z + b) - i32(p.pad_left), i32(p.w), MODE);
    let row = y - i32(p.in_row0);
    if (t.w == 0u || y < 0 || x < 0 || row < 0 || row >= i32(p.band_h)) {
        return vec4<f32>(0.0);
    }
    let e = ((t.x * p.band_h + u32(row)) * p.w + u32(x)) * p.c + c0;
    return images[e >> 2u];
}

// Scalar element `e` of a vec4 array.
fn image1(e: u32) -> f32 {
    return images[e >> 2u][e & 3u];
}

fn kernel1(e: u32) -> f32 {
    return kernels[e >> 2u][e & 3u];
}

// The epilogue and the store of output (oy, ox) of image n of the chunk,
// channel co, if it is one.
fn store(n: u32, oy: u32, ox: u32, co: u32, v: f32) {
    if (oy < p.oh_chunk && ox < p.ow && co < p.nc) {
        var r = v;
        if (HAS_BIAS) {
            r = r + bias[co];
        }
        out[((n * p.oh_chunk + oy) * p.ow + ox) * p.nc + co] = activate(r, ACT, p.act_a, p.act_b);
    }
}

// The direct sum of output (oy, ox) of image n, channel co, in the order of
// the tiled kernel (kernel row, column, channel): padded cells read as 0
// and still multiplied, as the reference does.
fn direct(n: u32, oy: u32, ox: u32, co: u32) -> f32 {
    let plain = 16u * p.c * p.nc;
    var acc = 0.0;
    for (var a = 0u; a < 3u; a++) {
        let y = border(i32(oy + p.out_row0 + a) - i32(p.pad_top), i32(p.h), MODE);
        let row = y - i32(p.in_row0);
        for (var b = 0u; b < 3u; b++) {
            let x = border(i32(ox + b) - i32(p.pad_left), i32(p.w), MODE);
            let inside = y >= 0 && x >= 0 && row >= 0 && row < i32(p.band_h);
            let base = select(0u, ((n * p.band_h + u32(row)) * p.w + u32(x)) * p.c, inside);
            let tap = plain + (a * 3u + b) * p.c * p.nc + co;
            for (var ch = 0u; ch < p.c; ch++) {
                let v = select(0.0, image1(base + ch), inside);
                acc = acc + v * kernel1(tap + ch * p.nc);
            }
        }
    }
    return acc;
}

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    // Folded over x and y like the tiled kernel; uniform, so the barriers
    // below stay uniform.
    let tg = wid.x + wid.y * nwg.x;
    if (tg >= p.tiles_m) {
        return;
    }
    let tid = lid.x;
    let n0 = wid.z * TN;
    let tiles_x = (p.ow + 1u) / 2u;
    let tiles_y = (p.oh_chunk + 1u) / 2u;
    if (tid < TT) {
        let t = tg * TT + tid;
        let r = t / tiles_x;
        tiles[tid] = vec4<u32>(r / tiles_y, 2u * (r % tiles_y), 2u * (t % tiles_x), select(0u, 1u, t < p.m_total));
    }
    if (tid == 0u) {
        atomicStore(&bad_any, 0u);
    }
    workgroupBarrier();

    // This invocation's GEMM: transform element xi, tiles 8 to .. + 7,
    // channels n0 + 8 no .. + 7; acc[2 ti + h] holds tile 8 to + ti,
    // channels n0 + 8 no + 4 h .. + 3.
    let xi = tid / 16u;
    let to = tid % 4u;
    let no = (tid / 4u) % 4u;
    var acc: array<vec4<f32>, 16>;
    // Its share of the input transform (tid < 4 TT): row i of V for tile vt,
    // from rows ra and rb of the input block (Bt's row i: d0 - d2, d1 + d2,
    // d2 - d1, d1 - d3).
    let vt = tid / 4u;
    let i = tid % 4u;
    let ra = select(select(select(1u, 2u, i == 2u), 1u, i == 1u), 0u, i == 0u);
    let rb = select(select(select(3u, 1u, i == 2u), 2u, i == 1u), 2u, i == 0u);
    let plus = i == 1u;
    let limit = vec4<f32>(p.limit);
    var bad = false;
    let slices = p.c / KC;
    for (var s = 0u; s < slices; s++) {
        let c0 = s * KC;
        if (tid < 4u * TT) {
            let t = tiles[vt];
            var rv: array<vec4<f32>, 4>;
            for (var b = 0u; b < 4u; b++) {
                let da = cell(t, ra, b, c0);
                let db = cell(t, rb, b, c0);
                // NaN fails the comparison too.
                bad = bad || any(!(abs(da) <= limit)) || any(!(abs(db) <= limit));
                rv[b] = select(da - db, da + db, plus);
            }
            smem[(4u * i) * TT + vt] = rv[0] - rv[2];
            smem[(4u * i + 1u) * TT + vt] = rv[1] + rv[2];
            smem[(4u * i + 2u) * TT + vt] = rv[2] - rv[1];
            smem[(4u * i + 3u) * TT + vt] = rv[1] - rv[3];
        }
        // U of the slice: [xi][k][TN / 4 quads], from U's [xi][ch][nc].
        for (var e = tid; e < U_QUADS; e += WG) {
            let ux = e / (KC * TN / 4u);
            let k = (e / (TN / 4u)) % KC;
            let n = n0 + 4u * (e % (TN / 4u));
            var u = vec4<f32>(0.0);
            if (n < p.nc) {
                u = kernels[((ux * p.c + c0 + k) * p.nc + n) >> 2u];
            }
            smem[V_QUADS + e] = u;
        }
        workgroupBarrier();
        // b[2 k + h]: channels n0 + 8 no + 4 h .. + 3 of step k.
        var b: array<vec4<f32>, 8>;
        for (var k = 0u; k < KC; k++) {
            let at = V_QUADS + (xi * KC + k) * (TN / 4u) + 2u * no;
            b[2u * k] = smem[at];
            b[2u * k + 1u] = smem[at + 1u];
        }
        for (var ti = 0u; ti < 8u; ti++) {
            let a = smem[xi * TT + 8u * to + ti];
            for (var k = 0u; k < KC; k++) {
                acc[2u * ti] = acc[2u * ti] + a[k] * b[2u * k];
                acc[2u * ti + 1u] = acc[2u * ti + 1u] + a[k] * b[2u * k + 1u];
            }
        }
        workgroupBarrier();
    }
    if (bad) {
        atomicOr(&bad_any, 1u);
    }
    workgroupBarrier();
    if (tid == 0u) {
        bad_seen = atomicLoad(&bad_any);
    }
    if (workgroupUniformLoad(&bad_seen) != 0u) {
        // Direct sums: invocation tid takes channel n0 + tid % TN of tiles
        // 4 (tid / TN) .. + 3.
        let co = n0 + tid % TN;
        for (var q = 0u; q < 4u; q++) {
            let t = tiles[4u * (tid / TN) + q];
            if (t.w == 1u && co < p.nc) {
                for (var r = 0u; r < 2u; r++) {
                    for (var c = 0u; c < 2u; c++) {
                        if (t.y + r < p.oh_chunk && t.z + c < p.ow) {
                            store(t.x, t.y + r, t.z + c, co, direct(t.x, t.y + r, t.z + c, co));
                        }
                    }
                }
            }
        }
        return;
    }
    // The output transform, a quarter of each invocation's products at a
    // time (tiles 4 th .. + 3 of its eight, channels 4 h .. + 3 of its
    // eight): smem[(xi * 16 + 4 to + ti) * 4 + no] holds tile 8 to + 4 th +
    // ti, channels n0 + 8 no + 4 h .. + 3.
    for (var part = 0u; part < 4u; part++) {
        let th = part / 2u;
        let h = part % 2u;
        for (var ti = 0u; ti < 4u; ti++) {
            smem[(xi * 16u + 4u * to + ti) * 4u + no] = acc[2u * (4u * th + ti) + h];
        }
        workgroupBarrier();
        let tt = tid / 16u;
        let q = (tid % 16u) / 4u;
        let lane = tid % 4u;
        var m: array<f32, 16>;
        for (var x = 0u; x < 16u; x++) {
            m[x] = smem[(x * 16u + tt) * 4u + q][lane];
        }
        // At M A, rows then columns (At: m0 + m1 + m2, m1 - m2 - m3).
        var y0: array<f32, 4>;
        var y1: array<f32, 4>;
        for (var j = 0u; j < 4u; j++) {
            y0[j] = m[j] + m[4u + j] + m[8u + j];
            y1[j] = m[4u + j] - m[8u + j] - m[12u + j];
        }
        let info = tiles[8u * (tt / 4u) + 4u * th + tt % 4u];
        let co = n0 + 8u * q + 4u * h + lane;
        if (info.w == 1u) {
            store(info.x, info.y, info.z, co, y0[0] + y0[1] + y0[2]);
            store(info.x, info.y, info.z + 1u, co, y0[1] - y0[2] - y0[3]);
            store(info.x, info.y + 1u, info.z, co, y1[0] + y1[1] + y1[2]);
            store(info.x, info.y + 1u, info.z + 1u, co, y1[1] - y1[2] - y1[3]);
        }
        workgroupBarrier();
    }
}
