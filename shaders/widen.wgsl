// The pass ahead of a kernel that reads f32 pixels of its own channel count,
// for an input that arrives otherwise:
// - 8- or 16-bit unsigned pixels are widened to f32 on the device, so such
//   images cross the bus as their own bytes (4x or 2x fewer than as f32).
//   Every u8 and u16 value is an f32 exactly, so the widened array is what
//   the host conversion would give, bit for bit.
// - Pixels of CIN channels (RGB) get COUT - CIN zero channels appended, so
//   a kernel that reads four channels as one vec4 takes them. Values of 32
//   bits are copied as they are (bitcast: NaN payloads and -0 kept).
//
// The values arrive packed little-endian into u32 words (WebGPU's byte
// order). Without padding (COUT = 0) each invocation widens one word: 4
// values of 8 bits or 2 of 16. The last word of a chunk may be partly past
// `count` (the upload is padded to whole words): those values are not
// written. With padding each invocation writes one pixel of COUT values;
// `count` is the number of values written.

override WG: u32 = 256u;
// Bits per value: 8, 16 or 32 (32 only with padding).
override BITS: u32 = 8u;
// Channels per pixel read and written; COUT = 0: no padding.
override CIN: u32 = 0u;
override COUT: u32 = 0u;

@group(0) @binding(0) var<uniform> p: WidenParams;
@group(0) @binding(1) var<storage, read> words: array<u32>;
@group(0) @binding(2) var<storage, read_write> values: array<f32>;

// Value `i` of the packed input.
fn value(i: u32) -> f32 {
    if (BITS == 32u) {
        return bitcast<f32>(words[i]);
    }
    let per = 32u / BITS;
    return f32(extractBits(words[i / per], (i % per) * BITS, BITS));
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let inv = gid.y * p.row_pitch + gid.x;
    if (COUT > 0u) {
        let first = inv * COUT;
        if (first >= p.count) {
            return;
        }
        for (var ch = 0u; ch < COUT; ch++) {
            var v = 0.0;
            // Only the pixel's own values: the next pixel's (or past the
            // input's end, for the last one) is never read.
            if (ch < CIN) {
                v = value(inv * CIN + ch);
            }
            values[first + ch] = v;
        }
        return;
    }
    let per = 32u / BITS;
    let first = inv * per;
    if (first >= p.count) {
        return;
    }
    let v = words[inv];
    for (var i = 0u; i < per; i++) {
        if (first + i < p.count) {
            values[first + i] = f32(extractBits(v, i * BITS, BITS));
        }
    }
}
