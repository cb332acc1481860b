//! 256-bit vectors: AVX2 with FMA.

use std::arch::x86_64::*;

use super::{Isa, Simd, WithSimd};

/// Proof that this CPU has AVX2 and FMA: only [`Avx2::new`] makes one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2 {
    _detected: (),
}

impl Avx2 {
    /// The token, where AVX2 and FMA were detected at run time.
    pub(crate) fn new() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2 { _detected: () })
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn vectorized<Op: WithSimd>(s: Avx2, op: Op) -> Op::Output {
    op.with_simd(s)
}

// SAFETY (every `unsafe` block below that calls an intrinsic): an `Avx2`
// exists only where AVX2 and FMA were detected, and every method takes one.
impl Simd for Avx2 {
    type F = __m256;
    const LANES: usize = 8;
    const ISA: Isa = Isa::Avx2;
    const HAS_VECTORS: bool = true;

    #[inline(always)]
    fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output {
        // SAFETY: see above.
        unsafe { vectorized(self, op) }
    }

    #[inline(always)]
    fn splat(self, v: f32) -> __m256 {
        // SAFETY: see above.
        unsafe { _mm256_set1_ps(v) }
    }

    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        // SAFETY: see above; `p` readable by the caller's contract.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn broadcast(self, p: *const f32) -> __m256 {
        // SAFETY: see above; `p` readable by the caller's contract.
        unsafe { _mm256_broadcast_ss(&*p) }
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        // SAFETY: see above; `p` writable by the caller's contract.
        unsafe { _mm256_storeu_ps(p, v) }
    }

    #[inline(always)]
    unsafe fn store_prefix(self, p: *mut f32, n: usize, v: __m256) {
        // At most three stores (8 lanes at once where they fit), without a
        // round trip through the stack.
        // SAFETY: see above; every store writes lanes below n of `p`.
        unsafe {
            let (mut n, mut p) = (n.min(8), p);
            if n == 8 {
                _mm256_storeu_ps(p, v);
                return;
            }
            let mut part = _mm256_castps256_ps128(v);
            if n >= 4 {
                _mm_storeu_ps(p, part);
                (part, p, n) = (_mm256_extractf128_ps::<1>(v), p.add(4), n - 4);
            }
            if n >= 2 {
                _mm_storel_pd(p.cast(), _mm_castps_pd(part));
                (part, p, n) = (_mm_movehl_ps(part, part), p.add(2), n - 2);
            }
            if n == 1 {
                _mm_store_ss(p, part);
            }
        }
    }

    #[inline(always)]
    fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: see above.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }

    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see above.
        unsafe { _mm256_add_ps(a, b) }
    }

    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see above.
        unsafe { _mm256_sub_ps(a, b) }
    }

    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see above.
        unsafe { _mm256_div_ps(a, b) }
    }

    #[inline(always)]
    fn and(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see above.
        unsafe { _mm256_and_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn store_even(self, p: *mut f32, n: usize, v: &[__m256]) {
        assert!(v.len() == 2 && n <= 8);
        // SAFETY: see above; store_prefix writes n floats of `p`.
        unsafe {
            // The shuffle leaves the 64-bit pairs (lo0 lo2, hi0 hi2, lo4 lo6,
            // hi4 hi6); the permutation puts them in order.
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(v[0], v[1]);
            let even = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(even)));
            self.store_prefix(p, n, even);
        }
    }

    #[inline(always)]
    fn max_nan(self, m: __m256, v: __m256) -> __m256 {
        // max_ps(v, m) is v where v > m, else m (a NaN m stays); a NaN v is
        // then blended in. Explicit blends: written as plain Rust, "keep m
        // unless v wins" compiles to masked stores, twice as slow.
        // SAFETY: see above.
        unsafe { _mm256_blendv_ps(_mm256_max_ps(v, m), v, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v)) }
    }

    #[inline(always)]
    fn max_keeping(self, m: __m256, v: __m256) -> __m256 {
        // SAFETY: see above.
        unsafe { _mm256_max_ps(v, m) }
    }

    #[inline(always)]
    fn flag_nan(self, flags: __m256, v: __m256) -> __m256 {
        // SAFETY: see above.
        unsafe { _mm256_or_ps(flags, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v)) }
    }

    #[inline(always)]
    fn any_set(self, flags: __m256) -> bool {
        // SAFETY: see above.
        unsafe { _mm256_testz_si256(_mm256_castps_si256(flags), _mm256_castps_si256(flags)) == 0 }
    }

    #[inline(always)]
    fn abs_max_finite(self, m: __m256, bad: __m256, v: __m256) -> (__m256, __m256) {
        // v - v is 0 for finite v and NaN for inf or NaN; the sum of those
        // stays NaN once any lane was.
        // SAFETY: see above.
        unsafe {
            let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
            (_mm256_max_ps(m, abs), _mm256_add_ps(bad, _mm256_sub_ps(v, v)))
        }
    }

    #[inline(always)]
    fn to_array(self, v: __m256) -> [f32; 16] {
        let mut a = [0f32; 16];
        // SAFETY: see above; `a` holds 16 >= 8 floats.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
        a
    }
}
