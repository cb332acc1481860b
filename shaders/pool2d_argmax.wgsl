// The argmax of max pooling: one invocation per output element (n, oy, ox,
// ch) of this chunk writes `y * w + x` of the winning cell as an i32 (the
// host widens it to i64), -1 for a window with no real cell. PyTorch's
// scan: the first real cell starts it, then a cell wins where it is larger
// or NaN (ties keep the first; the last NaN wins). Fixed and adaptive
// windows, as in pool2d.wgsl.
//
// Shapes arrive in `PoolParams` (common.wgsl, mirrored in src/gpu/params.rs).

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> images: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<i32>;

override WG: u32 = 256u;

// Considers the cell at image row y, column x of image n.
fn scan(n: u32, y: u32, x: u32, ch: u32, best: ptr<function, f32>, index: ptr<function, i32>) {
    let v = images[((n * p.band_h + y - p.in_row0) * p.w + x) * p.c + ch];
    if (*index < 0 || v > *best || is_nan1(v)) {
        *best = v;
        *index = i32(y * p.w + x);
    }
}

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x + gid.y * p.row_pitch;
    if (idx >= p.total) {
        return;
    }
    let ch = idx % p.c;
    var t = idx / p.c;
    let ox = t % p.ow;
    t = t / p.ow;
    let oy = t % p.oh_chunk + p.out_row0;
    let n = t / p.oh_chunk;
    var best = bitcast<f32>(NEG_INF_BITS);
    var index = -1;
    if (p.adaptive != 0u) {
        let y0 = oy * p.h / p.oh;
        let y1 = ((oy + 1u) * p.h + p.oh - 1u) / p.oh;
        let x0 = ox * p.w / p.ow;
        let x1 = ((ox + 1u) * p.w + p.ow - 1u) / p.ow;
        for (var y = y0; y < y1; y++) {
            for (var x = x0; x < x1; x++) {
                scan(n, y, x, ch, &best, &index);
            }
        }
    } else {
        let y0 = i32(oy * p.sh) - i32(p.pad_top);
        let x0 = i32(ox * p.sw) - i32(p.pad_left);
        for (var i = 0u; i < p.kh; i++) {
            let y = y0 + i32(i * p.dh);
            if (y < 0 || y >= i32(p.h)) {
                continue;
            }
            for (var j = 0u; j < p.kw; j++) {
                let x = x0 + i32(j * p.dw);
                if (x < 0 || x >= i32(p.w)) {
                    continue;
                }
                scan(n, u32(y), u32(x), ch, &best, &index);
            }
        }
    }
    out[idx] = index;
}
