// Max / average pooling over NHWC images, one invocation per output element
// (n, oy, ox, ch) of this chunk, or with VEC (c % 4 == 0) per four channels
// of an output pixel, read as one vec4; consecutive invocations take
// consecutive channels so their loads are contiguous. The images are bound as
// an array of vec4 either way (single floats are read out of it).
//
// Max: a padded cell never wins, NaN beats every number (tested on the bits,
// so no compiler assumption about NaN can remove the test), a window with no
// real cell gives -inf. Avg: the sum divided by the real cells of the window,
// or with `count_include_pad` by the cells inside the padded input. An f32
// sum of values near f32::MAX can overflow where their mean does not: the
// lanes whose sum came out infinite or NaN fold their window again with
// every value scaled by 2^-64 (exact down to 2^-62; no f32 sum of at most
// 2^32 such values overflows) and scale the mean back by 2^64, which gives
// what an f32 of unbounded range would. A window holding an infinity or
// NaN gives the same infinity or NaN either way.
//
// Adaptive pooling (`adaptive`): output row i pools rows floor(i * h / oh)
// .. ceil((i + 1) * h / oh), likewise columns, no padding; the host sends
// whole images (in_row0 = 0) and the untiled kernel.
//
// Shapes arrive in `PoolParams` (common.wgsl, mirrored in src/gpu/params.rs).


@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> images: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

override WG: u32 = 256u;
// c % 4 == 0: four channels per invocation.
override VEC: bool = false;
// Average pooling (else max): a constant, so a max pipeline carries none of
// the average's code (a software adapter runs a branch it cannot prove
// uniform for every invocation).
override AVG: bool = false;


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

    if (p.adaptive != 0u) {
        let ys = adaptive_window(oy, p.h, p.oh);
        let xs = adaptive_window(ox, p.w, p.ow);
        let f = fold_adaptive(n, ys, xs, ch, 1.0);
        var r = f.best;
        if (AVG) {
            let divisor = (ys.y - ys.x) * (xs.y - xs.x);
            r = mean(f.sum, divisor);
            let over = !finite(f.sum);
            if (any(over)) {
                let scaled = fold_adaptive(n, ys, xs, ch, bitcast<f32>(DOWN_BITS)).sum;
                r = select(r, mean(scaled, divisor) * bitcast<f32>(UP_BITS), over);
            }
        }
        store(idx, r);
        return;
    }
    let f = fold_window(n, y0, x0, ch, 1.0);
    var result = f.best;
    if (AVG) {
        let rows = counted(y0, p.kh, p.dh, p.h, p.pad_top, p.pad_bottom);
        let cols = counted(x0, p.kw, p.dw, p.w, p.pad_left, p.pad_right);
        let divisor = rows * cols;
        result = mean(f.sum, divisor);
        let over = !finite(f.sum);
        if (any(over)) {
            let scaled = fold_window(n, y0, x0, ch, bitcast<f32>(DOWN_BITS)).sum;
            result = select(result, mean(scaled, divisor) * bitcast<f32>(UP_BITS), over);
        }
    }
    store(idx, result);
}

// The max and the sum (of each value times `scale`) of a window.
struct Fold {
    best: vec4<f32>,
    sum: vec4<f32>,
}

// 2^-64 and 2^64, for the redo of an overflowed average.
const DOWN_BITS: u32 = 0x1f800000u;
const UP_BITS: u32 = 0x5f800000u;

// Lanes neither infinite nor NaN.
fn finite(v: vec4<f32>) -> vec4<bool> {
    return abs(v) <= vec4<f32>(bitcast<f32>(0x7f7fffffu));
}

// `sum` over `divisor` cells; 0 / 0 (a dilated window whose taps all miss
// the image) is NaN.
fn mean(sum: vec4<f32>, divisor: u32) -> vec4<f32> {
    if (divisor == 0u) {
        return vec4<f32>(bitcast<f32>(NAN_BITS));
    }
    return sum / f32(divisor);
}

// The adaptive window rows ys.x..ys.y, columns xs.x..xs.y of image `n`.
fn fold_adaptive(n: u32, ys: vec2<u32>, xs: vec2<u32>, ch: u32, scale: f32) -> Fold {
    var f = Fold(vec4<f32>(bitcast<f32>(NEG_INF_BITS)), vec4<f32>(0.0));
    for (var y = ys.x; y < ys.y; y++) {
        let row = (n * p.band_h + y - p.in_row0) * p.w;
        for (var x = xs.x; x < xs.y; x++) {
            let v = load((row + x) * p.c + ch);
            f.best = select(f.best, v, !is_nan(f.best) & (is_nan(v) | v > f.best));
            f.sum = f.sum + v * scale;
        }
    }
    return f;
}

// The fixed window whose first tap is at (y0, x0) of image `n` (taps
// outside the image skipped).
fn fold_window(n: u32, y0: i32, x0: i32, ch: u32, scale: f32) -> Fold {
    var f = Fold(vec4<f32>(bitcast<f32>(NEG_INF_BITS)), vec4<f32>(0.0));
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
            f.best = select(f.best, v, !is_nan(f.best) & (is_nan(v) | v > f.best));
            f.sum = f.sum + v * scale;
        }
    }
    return f;
}

// Output `idx` (and with VEC the three after it).
fn store(idx: u32, r: vec4<f32>) {
    out[idx] = r.x;
    if (VEC) {
        out[idx + 1u] = r.y;
        out[idx + 2u] = r.z;
        out[idx + 3u] = r.w;
    }
}

// Adaptive window [start, end) of output i of `outs` over `len` cells; the
// host checks that i * len and (i + 1) * len fit 32 bits.
fn adaptive_window(i: u32, len: u32, outs: u32) -> vec2<u32> {
    return vec2<u32>(i * len / outs, ((i + 1u) * len + outs - 1u) / outs);
}

// ---------------------------------------------------------------------------
// Tiled pooling for overlapping windows (stride below the window's extent):
// a workgroup computes a TH x TW tile of output pixels x CT channel units
// (vec4s with VEC, single channels without) of one image, after staging the
// input cells the tile reads in workgroup memory, so each of them is read
// from the storage buffer once per tile instead of once per window that
// covers it. The host picks the tile (see src/gpu/ops.rs) so that the staged
// input fits TILE_CAP. Padding and cells past the image are staged as the
// neutral element (-inf for max, 0 for avg), which leaves every result as
// the direct kernel computes it.

override TW: u32 = 4u;
override TH: u32 = 2u;
override CT: u32 = 16u;
// TW * TH * CT.
override WG_T: u32 = 128u;

const TILE_CAP: u32 = 768u;
var<workgroup> tile: array<vec4<f32>, TILE_CAP>;

@compute @workgroup_size(WG_T, 1, 1)
fn tiled(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let units = select(p.c, p.c / 4u, VEC);
    let tiles_u = (units + CT - 1u) / CT;
    let tiles_x = (p.ow + TW - 1u) / TW;
    let tiles_y = (p.oh_chunk + TH - 1u) / TH;
    // Folded over x and y like every dispatch here; the same for the whole
    // workgroup, so returning keeps the barrier uniform.
    var g = wid.x + wid.y * nwg.x;
    if (g >= tiles_u * tiles_x * tiles_y * p.batch) {
        return;
    }
    let tu = g % tiles_u;
    g = g / tiles_u;
    let tx = g % tiles_x;
    g = g / tiles_x;
    let ty = g % tiles_y;
    let n = g / tiles_y;

    let ekh = (p.kh - 1u) * p.dh + 1u;
    let ekw = (p.kw - 1u) * p.dw + 1u;
    let ih = (TH - 1u) * p.sh + ekh;
    let iw = (TW - 1u) * p.sw + ekw;
    let y_base = i32((ty * TH + p.out_row0) * p.sh) - i32(p.pad_top);
    let x_base = i32(tx * TW * p.sw) - i32(p.pad_left);
    let neutral = select(vec4<f32>(bitcast<f32>(NEG_INF_BITS)), vec4<f32>(0.0), AVG);
    for (var e = lid; e < ih * iw * CT; e += WG_T) {
        let u = e % CT;
        let t = e / CT;
        let y = y_base + i32(t / iw);
        let x = x_base + i32(t % iw);
        let gu = tu * CT + u;
        var v = neutral;
        if (y >= 0 && y < i32(p.h) && x >= 0 && x < i32(p.w) && gu < units) {
            let row = n * p.band_h + (u32(y) - p.in_row0);
            v = load((row * p.w + u32(x)) * p.c + gu * select(1u, 4u, VEC));
        }
        tile[e] = v;
    }
    workgroupBarrier();

    let u = lid % CT;
    let lx = (lid / CT) % TW;
    let ly = lid / (CT * TW);
    let gu = tu * CT + u;
    let ox = tx * TW + lx;
    let oy_chunk = ty * TH + ly;
    if (gu >= units || ox >= p.ow || oy_chunk >= p.oh_chunk) {
        return;
    }
    let f = fold_tile(ly, lx, u, iw, 1.0);
    var result = f.best;
    if (AVG) {
        let oy = oy_chunk + p.out_row0;
        let rows = counted(i32(oy * p.sh) - i32(p.pad_top), p.kh, p.dh, p.h, p.pad_top, p.pad_bottom);
        let cols = counted(i32(ox * p.sw) - i32(p.pad_left), p.kw, p.dw, p.w, p.pad_left, p.pad_right);
        let divisor = rows * cols;
        result = mean(f.sum, divisor);
        let over = !finite(f.sum);
        if (any(over)) {
            let scaled = fold_tile(ly, lx, u, iw, bitcast<f32>(DOWN_BITS)).sum;
            result = select(result, mean(scaled, divisor) * bitcast<f32>(UP_BITS), over);
        }
    }
    let at = ((n * p.oh_chunk + oy_chunk) * p.ow + ox) * p.c + gu * select(1u, 4u, VEC);
    out[at] = result.x;
    if (VEC) {
        out[at + 1u] = result.y;
        out[at + 2u] = result.z;
        out[at + 3u] = result.w;
    }
}

// The window of tile pixel (ly, lx), channel unit u, from the staged tile
// (`iw` cells wide).
fn fold_tile(ly: u32, lx: u32, u: u32, iw: u32, scale: f32) -> Fold {
    var f = Fold(vec4<f32>(bitcast<f32>(NEG_INF_BITS)), vec4<f32>(0.0));
    for (var i = 0u; i < p.kh; i++) {
        let r = ly * p.sh + i * p.dh;
        for (var j = 0u; j < p.kw; j++) {
            let v = tile[(r * iw + lx * p.sw + j * p.dw) * CT + u];
            f.best = select(f.best, v, !is_nan(f.best) & (is_nan(v) | v > f.best));
            f.sum = f.sum + v * scale;
        }
    }
    return f;
}
