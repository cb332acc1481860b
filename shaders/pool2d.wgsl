// Max / average pooling over NHWC images, one invocation per output element
// (n, oy, ox, ch) of this chunk, or with VEC (c % 4 == 0) per four channels
// of an output pixel, read as one vec4; consecutive invocations take
// consecutive channels so their loads are contiguous. The images are bound as
// an array of vec4 either way (single floats are read out of it).
//
// Max: a padded cell never wins, NaN beats every number (tested on the bits,
// so no compiler assumption about NaN can remove the test), a window with no
// real cell gives -inf. Avg: the sum divided by the real cells of the window,
// or with `count_include_pad` by the cells inside the padded input.
//
// Shapes arrive in `PoolParams` (mirrored in src/gpu/params.rs).

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
    mode: u32,              // 0 max, 1 avg
    count_include_pad: u32, // 0 or 1
    total: u32,             // batch * oh_chunk * ow * c
    row_pitch: u32,         // invocations per row of the folded dispatch
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> images: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

override WG: u32 = 256u;
// c % 4 == 0: four channels per invocation.
override VEC: bool = false;

const NEG_INF_BITS: u32 = 0xff800000u;
const NAN_BITS: u32 = 0x7fc00000u;

fn is_nan(v: vec4<f32>) -> vec4<bool> {
    return (bitcast<vec4<u32>>(v) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u);
}

// Channels `i..i + 4` (VEC) or channel `i` alone (in .x).
fn load(i: u32) -> vec4<f32> {
    if (VEC) {
        return images[i >> 2u];
    }
    return vec4<f32>(images[i >> 2u][i & 3u], 0.0, 0.0, 0.0);
}

// Taps of one window along one axis that count for the divisor.
fn counted(start: i32, k: u32, d: u32, len: u32, pad0: u32, pad1: u32) -> u32 {
    var lo = 0;
    var hi = i32(len);
    if (p.count_include_pad != 0u) {
        lo = -i32(pad0);
        hi = i32(len + pad1);
    }
    var n = 0u;
    for (var i = 0u; i < k; i++) {
        let y = start + i32(i * d);
        if (y >= lo && y < hi) {
            n += 1u;
        }
    }
    return n;
}

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let lanes = select(1u, 4u, VEC);
    let idx = (gid.x + gid.y * p.row_pitch) * lanes;
    if (idx >= p.total) {
        return;
    }
    let ch = idx % p.c;
    var t = idx / p.c;
    let ox = t % p.ow;
    t = t / p.ow;
    let oy = t % p.oh_chunk + p.out_row0;
    let n = t / p.oh_chunk;
    let y0 = i32(oy * p.sh) - i32(p.pad_top);
    let x0 = i32(ox * p.sw) - i32(p.pad_left);

    var best = vec4<f32>(bitcast<f32>(NEG_INF_BITS));
    var sum = vec4<f32>(0.0);
    for (var i = 0u; i < p.kh; i++) {
        let y = y0 + i32(i * p.dh);
        if (y < 0 || y >= i32(p.h)) {
            continue;
        }
        let row = (n * p.band_h + (u32(y) - p.in_row0)) * p.w;
        for (var j = 0u; j < p.kw; j++) {
            let x = x0 + i32(j * p.dw);
            if (x < 0 || x >= i32(p.w)) {
                continue;
            }
            let v = load((row + u32(x)) * p.c + ch);
            best = select(best, v, !is_nan(best) & (is_nan(v) | v > best));
            sum = sum + v;
        }
    }
    var result = best;
    if (p.mode != 0u) {
        let rows = counted(y0, p.kh, p.dh, p.h, p.pad_top, p.pad_bottom);
        let cols = counted(x0, p.kw, p.dw, p.w, p.pad_left, p.pad_right);
        let divisor = rows * cols;
        if (divisor == 0u) {
            // 0 / 0: a dilated window whose taps all miss the image.
            result = vec4<f32>(bitcast<f32>(NAN_BITS));
        } else {
            result = sum / f32(divisor);
        }
    }
    out[idx] = result.x;
    if (VEC) {
        out[idx + 1u] = result.y;
        out[idx + 2u] = result.z;
        out[idx + 3u] = result.w;
    }
}
