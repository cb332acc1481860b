// Widening of 8- or 16-bit unsigned pixels to f32 on the device, so such
// images cross the bus as their own bytes (4x or 2x fewer than as f32). Every
// u8 and u16 value is an f32 exactly, so the widened array is what the host
// conversion would give, bit for bit.
//
// The pixels arrive packed little-endian into u32 words (WebGPU's byte
// order); each invocation widens one word: 4 values of 8 bits or 2 of 16.
// The last word of a chunk may be partly past `count` (the upload is padded
// to whole words): those values are not written.

override WG: u32 = 256u;
// Bits per value: 8 or 16.
override BITS: u32 = 8u;

@group(0) @binding(0) var<uniform> p: WidenParams;
@group(0) @binding(1) var<storage, read> words: array<u32>;
@group(0) @binding(2) var<storage, read_write> values: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let word = gid.y * p.row_pitch + gid.x;
    let per = 32u / BITS;
    let first = word * per;
    if (first >= p.count) {
        return;
    }
    let v = words[word];
    for (var i = 0u; i < per; i++) {
        if (first + i < p.count) {
            values[first + i] = f32(extractBits(v, i * BITS, BITS));
        }
    }
}
