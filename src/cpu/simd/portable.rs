//! Plain Rust "vectors" of 8 floats, for machines without AVX2 (and for
//! testing the portable path on any machine). The compiler vectorises the
//! lane loops for the baseline target (SSE2 on x86_64).

use super::{Isa, Simd, WithSimd};

/// The portable implementation; available everywhere.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Portable;

/// Lanes of the portable vector: as wide as AVX2's, so the kernels' blocks
/// keep the shapes they have there.
const N: usize = 8;

#[inline(always)]
fn map2(a: [f32; N], b: [f32; N], f: impl Fn(f32, f32) -> f32) -> [f32; N] {
    std::array::from_fn(|i| f(a[i], b[i]))
}

impl Simd for Portable {
    type F = [f32; N];
    const LANES: usize = N;
    const ISA: Isa = Isa::Portable;
    const HAS_VECTORS: bool = false;

    #[inline(always)]
    fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output {
        op.with_simd(self)
    }

    #[inline(always)]
    fn splat(self, v: f32) -> [f32; N] {
        [v; N]
    }

    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> [f32; N] {
        // SAFETY: N floats readable from `p` (the caller's contract).
        unsafe { p.cast::<[f32; N]>().read_unaligned() }
    }

    #[inline(always)]
    unsafe fn broadcast(self, p: *const f32) -> [f32; N] {
        // SAFETY: `p` readable (the caller's contract).
        [unsafe { *p }; N]
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: [f32; N]) {
        // SAFETY: N floats writable from `p` (the caller's contract).
        unsafe { p.cast::<[f32; N]>().write_unaligned(v) }
    }

    #[inline(always)]
    unsafe fn store_prefix(self, p: *mut f32, n: usize, v: [f32; N]) {
        // SAFETY: n.min(N) floats writable from `p` (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, n.min(N)) }
    }

    #[inline(always)]
    fn mul_add(self, a: [f32; N], b: [f32; N], c: [f32; N]) -> [f32; N] {
        // Unfused: without hardware FMA, `f32::mul_add` is a library call.
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }

    #[inline(always)]
    fn add(self, a: [f32; N], b: [f32; N]) -> [f32; N] {
        map2(a, b, |x, y| x + y)
    }

    #[inline(always)]
    fn sub(self, a: [f32; N], b: [f32; N]) -> [f32; N] {
        map2(a, b, |x, y| x - y)
    }

    #[inline(always)]
    fn div(self, a: [f32; N], b: [f32; N]) -> [f32; N] {
        map2(a, b, |x, y| x / y)
    }

    #[inline(always)]
    fn and(self, a: [f32; N], b: [f32; N]) -> [f32; N] {
        map2(a, b, |x, y| f32::from_bits(x.to_bits() & y.to_bits()))
    }

    #[inline(always)]
    unsafe fn store_even(self, p: *mut f32, n: usize, v: &[[f32; N]]) {
        for (i, x) in v.iter().flatten().step_by(2).take(n).enumerate() {
            // SAFETY: i < n floats writable from `p` (the caller's contract).
            unsafe { *p.add(i) = *x };
        }
    }

    #[inline(always)]
    fn max_nan(self, m: [f32; N], v: [f32; N]) -> [f32; N] {
        map2(m, v, crate::cpu::max_nan)
    }

    #[inline(always)]
    fn max_keeping(self, m: [f32; N], v: [f32; N]) -> [f32; N] {
        map2(m, v, |m, v| if v > m { v } else { m })
    }

    #[inline(always)]
    fn flag_nan(self, flags: [f32; N], v: [f32; N]) -> [f32; N] {
        map2(flags, v, |f, v| if v.is_nan() { f32::from_bits(u32::MAX) } else { f })
    }

    #[inline(always)]
    fn any_set(self, flags: [f32; N]) -> bool {
        flags.iter().any(|f| f.to_bits() != 0)
    }

    #[inline(always)]
    fn abs_max_finite(self, m: [f32; N], bad: [f32; N], v: [f32; N]) -> ([f32; N], [f32; N]) {
        // `y * 0` is 0 for finite y and NaN for inf or NaN.
        (map2(m, v, |x, y| x.max(y.abs())), map2(bad, v, |b, y| b + y * 0.0))
    }

    #[inline(always)]
    fn to_array(self, v: [f32; N]) -> [f32; 16] {
        let mut a = [0f32; 16];
        a[..N].copy_from_slice(&v);
        a
    }
}
