//! 512-bit vectors: AVX-512F (with AVX2 and FMA, which every AVX-512 CPU has).

use std::arch::x86_64::*;

use super::{Isa, Simd, WithSimd};

/// Proof that this CPU has AVX-512F, AVX2 and FMA: only [`Avx512::new`]
/// makes one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512 {
    _detected: (),
}

impl Avx512 {
    /// The token, where AVX-512F, AVX2 and FMA were detected at run time.
    pub(crate) fn new() -> Option<Self> {
        (is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
            .then_some(Avx512 { _detected: () })
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn vectorized<Op: WithSimd>(s: Avx512, op: Op) -> Op::Output {
    op.with_simd(s)
}

// SAFETY (every `unsafe` block below that calls an intrinsic): an `Avx512`
// exists only where AVX-512F, AVX2 and FMA were detected, and every method
// takes one.
impl Simd for Avx512 {
    type F = __m512;
    const LANES: usize = 16;
    const ISA: Isa = Isa::Avx512;
    const HAS_VECTORS: bool = true;

    #[inline(always)]
    fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output {
        // SAFETY: see above.
        unsafe { vectorized(self, op) }
    }

    #[inline(always)]
    fn splat(self, v: f32) -> __m512 {
        // SAFETY: see above.
        unsafe { _mm512_set1_ps(v) }
    }

    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: see above; `p` readable by the caller's contract.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn broadcast(self, p: *const f32) -> __m512 {
        // SAFETY: see above; `p` readable by the caller's contract.
        unsafe { _mm512_set1_ps(*p) }
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: see above; `p` writable by the caller's contract.
        unsafe { _mm512_storeu_ps(p, v) }
    }

    #[inline(always)]
    unsafe fn store_prefix(self, p: *mut f32, n: usize, v: __m512) {
        // One masked store: lanes past n are neither written nor faulted on.
        let mask: __mmask16 = if n >= 16 { !0 } else { (1u16 << n) - 1 };
        // SAFETY: see above; only lanes below n of `p` are written.
        unsafe { _mm512_mask_storeu_ps(p, mask, v) }
    }

    #[inline(always)]
    fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: see above.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }

    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see above.
        unsafe { _mm512_add_ps(a, b) }
    }

    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see above.
        unsafe { _mm512_sub_ps(a, b) }
    }

    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see above.
        unsafe { _mm512_div_ps(a, b) }
    }

    #[inline(always)]
    fn and(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see above.
        unsafe { _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_castps_si512(b))) }
    }

    #[inline(always)]
    unsafe fn store_even(self, p: *mut f32, n: usize, v: &[__m512]) {
        // SAFETY: see above; store_prefix writes n floats of `p`.
        unsafe {
            match v {
                [x] => {
                    let idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14);
                    self.store_prefix(p, n.min(8), _mm512_permutexvar_ps(idx, *x))
                }
                [x, y] => {
                    // Even lanes of x then of y: one two-source permutation.
                    let idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                    self.store_prefix(p, n.min(16), _mm512_permutex2var_ps(*x, idx, *y));
                }
                _ => unreachable!("one or two vectors"),
            }
        }
    }

    #[inline(always)]
    fn permute2(self, a: __m512, b: __m512, idx: &[u32; 16]) -> __m512 {
        // SAFETY: see above; `idx` holds 16 indices.
        unsafe { _mm512_permutex2var_ps(a, _mm512_loadu_si512(idx.as_ptr().cast()), b) }
    }

    #[inline(always)]
    fn max_nan(self, m: __m512, v: __m512) -> __m512 {
        // As the AVX2 build: max(v, m) keeps a NaN m; a NaN v is blended in.
        // SAFETY: see above.
        unsafe {
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            _mm512_mask_blend_ps(nan, _mm512_max_ps(v, m), v)
        }
    }

    #[inline(always)]
    fn max_keeping(self, m: __m512, v: __m512) -> __m512 {
        // SAFETY: see above.
        unsafe { _mm512_max_ps(v, m) }
    }

    #[inline(always)]
    fn flag_nan(self, flags: __m512, v: __m512) -> __m512 {
        // SAFETY: see above.
        unsafe {
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            _mm512_mask_blend_ps(nan, flags, _mm512_castsi512_ps(_mm512_set1_epi32(-1)))
        }
    }

    #[inline(always)]
    fn any_set(self, flags: __m512) -> bool {
        // SAFETY: see above.
        unsafe { _mm512_test_epi32_mask(_mm512_castps_si512(flags), _mm512_castps_si512(flags)) != 0 }
    }

    #[inline(always)]
    fn abs_max_finite(self, m: __m512, bad: __m512, v: __m512) -> (__m512, __m512) {
        // SAFETY: see above.
        unsafe {
            (
                _mm512_max_ps(m, _mm512_abs_ps(v)),
                _mm512_add_ps(bad, _mm512_sub_ps(v, v)),
            )
        }
    }

    #[inline(always)]
    fn to_array(self, v: __m512) -> [f32; 16] {
        let mut a = [0f32; 16];
        // SAFETY: see above; `a` holds 16 floats.
        unsafe { _mm512_storeu_ps(a.as_mut_ptr(), v) };
        a
    }
}
