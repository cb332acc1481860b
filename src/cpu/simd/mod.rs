//! The one SIMD layer of the CPU kernels.
//!
//! Kernels are written once, generic over [`Simd`], and run through
//! [`dispatch`], which picks the implementation of the instruction set
//! asked for: 512-bit AVX-512F ([`Avx512`]), 256-bit AVX2 + FMA ([`Avx2`])
//! or plain Rust ([`Portable`], on every machine, so the portable path is
//! tested everywhere). The x86 tokens are zero-sized proofs that the
//! features were detected at run time: they can only be made by
//! [`Avx2::new`] / [`Avx512::new`], so holding one is what makes their
//! intrinsics sound, instead of a convention between caller and callee.
//!
//! [`Simd::vectorize`] runs an operation inside a function compiled with
//! the token's features. Everything the operation calls must be
//! `#[inline(always)]` (the vector methods here are): a function that is
//! not inlined is compiled for the baseline target, where every intrinsic
//! would become a call.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod portable;

use std::fmt;
use std::str::FromStr;

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;
/// Where there is no AVX2 there is no token: `Option<Avx2>` is always `None`.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) type Avx2 = std::convert::Infallible;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::Avx512;
pub(crate) use portable::Portable;

use crate::error::{Error, Result};

/// The instruction set the fast CPU kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, no explicit vectors: every machine.
    Portable,
    /// 256-bit vectors: AVX2 with FMA (x86_64).
    Avx2,
    /// 512-bit vectors: AVX-512F (x86_64), with AVX2 and FMA.
    Avx512,
}

/// The environment variable that forces an instruction set.
pub const ISA_ENV: &str = "CONVPOOL_CPU_ISA";

impl Isa {
    /// Every instruction set, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The widest instruction set this CPU has.
    pub fn detected() -> Isa {
        *Isa::ALL
            .iter()
            .rev()
            .find(|isa| isa.is_available())
            .unwrap_or(&Isa::Portable)
    }

    /// Every instruction set this CPU can run, narrowest first: the tests
    /// run each of them.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|isa| isa.is_available()).collect()
    }

    /// Whether this CPU can run this instruction set.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Avx2::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Avx512::new().is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The lowercase name (`avx512`, `avx2`, `portable`), as
    /// `CONVPOOL_CPU_ISA` and the benchmark's JSON spell it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Floats per vector of the kernels' blocks (the portable build keeps
    /// the AVX2 shapes).
    pub fn lanes(self) -> usize {
        match self {
            Isa::Portable => 8,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
        }
    }

    /// `Ok(self)` if this CPU can run it, else an error naming `arg`.
    pub fn checked(self, arg: &'static str) -> Result<Isa> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(Error::invalid(
                arg,
                format!(
                    "this CPU cannot run {self} (it has {}; available: {})",
                    Isa::detected(),
                    Isa::available().iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
                ),
            ))
        }
    }

    /// The instruction set `CONVPOOL_CPU_ISA` forces, if it is set: an
    /// unknown name or one this CPU lacks is an error naming the variable.
    pub fn from_env() -> Result<Option<Isa>> {
        match std::env::var(ISA_ENV) {
            Ok(v) if !v.trim().is_empty() => {
                let isa: Isa = v
                    .parse()
                    .map_err(|_| Error::invalid(ISA_ENV, format!("expected avx512, avx2 or portable, got {v:?}")))?;
                isa.checked(ISA_ENV).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The instruction set a CPU engine runs by default: the one
    /// `CONVPOOL_CPU_ISA` forces, else the widest detected.
    pub fn default_for_engine() -> Result<Isa> {
        Ok(Isa::from_env()?.unwrap_or_else(Isa::detected))
    }
}

impl FromStr for Isa {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "portable" | "scalar" => Ok(Isa::Portable),
            "avx2" => Ok(Isa::Avx2),
            "avx512" | "avx512f" => Ok(Isa::Avx512),
            _ => Err(Error::invalid(
                "isa",
                format!("expected avx512, avx2 or portable, got {text:?}"),
            )),
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An operation generic over the vector implementation, run by
/// [`dispatch`] with the one the instruction set asks for.
pub(crate) trait WithSimd {
    /// What the operation returns.
    type Output;
    /// The operation; implementations must be `#[inline(always)]` so that
    /// they are compiled inside [`Simd::vectorize`]'s target features.
    fn with_simd<S: Simd>(self, s: S) -> Self::Output;
}

/// Runs `op` with the vectors of `isa`, which must be available (an
/// [`Isa`] that reached a kernel was checked with [`Isa::checked`]; one
/// that is not falls back to the widest narrower one).
pub(crate) fn dispatch<Op: WithSimd>(isa: Isa, op: Op) -> Op::Output {
    #[cfg(target_arch = "x86_64")]
    {
        if isa >= Isa::Avx512 {
            if let Some(s) = Avx512::new() {
                return s.vectorize(op);
            }
        }
        if isa >= Isa::Avx2 {
            if let Some(s) = Avx2::new() {
                return s.vectorize(op);
            }
        }
    }
    let _ = isa;
    Portable.vectorize(op)
}

/// A vector instruction set: `F` holds `LANES` floats. Loads and stores
/// are unaligned. Every method is `#[inline(always)]` in every
/// implementation.
pub(crate) trait Simd: Copy + Send + Sync + 'static {
    /// A vector of `LANES` floats.
    type F: Copy;
    /// Floats per vector.
    const LANES: usize;
    /// Which instruction set this is.
    #[cfg_attr(not(test), allow(dead_code))]
    const ISA: Isa;
    /// Whether there are vector registers behind `F`: kernels compile their
    /// wide register blocks only where there are (in the portable build
    /// they would be long runs of scalar code, slow to compile, that the
    /// compiler has to vectorise on its own).
    const HAS_VECTORS: bool;

    /// Runs `op` inside a function compiled with this instruction set.
    fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output;

    /// All lanes `v`.
    fn splat(self, v: f32) -> Self::F;
    /// All lanes zero.
    fn zero(self) -> Self::F {
        self.splat(0.0)
    }
    /// `LANES` floats from `p`.
    ///
    /// # Safety
    /// `p .. p + LANES` must be readable.
    unsafe fn load(self, p: *const f32) -> Self::F;
    /// All lanes `*p`.
    ///
    /// # Safety
    /// `p` must be readable.
    unsafe fn broadcast(self, p: *const f32) -> Self::F;
    /// `LANES` floats to `p`.
    ///
    /// # Safety
    /// `p .. p + LANES` must be writable.
    unsafe fn store(self, p: *mut f32, v: Self::F);
    /// The first `n` lanes (`n <= LANES`) to `p`, nothing past them.
    ///
    /// # Safety
    /// `p .. p + n` must be writable.
    unsafe fn store_prefix(self, p: *mut f32, n: usize, v: Self::F);
    /// `a * b + c`, fused where the instruction set has FMA.
    fn mul_add(self, a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// `a + b`.
    fn add(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a - b`.
    fn sub(self, a: Self::F, b: Self::F) -> Self::F;
    /// `a / b`.
    fn div(self, a: Self::F, b: Self::F) -> Self::F;
    /// Bitwise `a & b` (to cut lanes with an all-ones / all-zeros mask).
    fn and(self, a: Self::F, b: Self::F) -> Self::F;
    /// Stores the even lanes of the concatenated vectors `v` (lanes 0, 2,
    /// 4, ... of `v[0]`, then of `v[1]`), the first `n` of them (`n` at
    /// most half the lanes of `v`).
    ///
    /// # Safety
    /// `p .. p + n` must be writable; `v` holds one or two vectors.
    unsafe fn store_even(self, p: *mut f32, n: usize, v: &[Self::F]);
    /// Lane `e` of the result is lane `idx[e]` of `a` followed by `b`
    /// (`idx[e] < 2 * LANES`; only the first `LANES` indices count). One
    /// instruction with AVX-512; elsewhere through memory (callers take it
    /// only where it is one instruction, the other builds have it for the
    /// tests and for completeness).
    #[inline(always)]
    fn permute2(self, a: Self::F, b: Self::F, idx: &[u32; 16]) -> Self::F {
        let (x, y) = (self.to_array(a), self.to_array(b));
        let v: [f32; 16] = std::array::from_fn(|e| {
            let i = idx[e] as usize % (2 * Self::LANES);
            if i < Self::LANES {
                x[i]
            } else {
                y[i - Self::LANES]
            }
        });
        // SAFETY: `v` holds 16 >= LANES floats.
        unsafe { self.load(v.as_ptr()) }
    }
    /// SPEC.md's max, lane by lane: `v` where `v > m` or `v` is NaN, else
    /// `m` (so a NaN in either stays).
    fn max_nan(self, m: Self::F, v: Self::F) -> Self::F;
    /// The plain vector max: `v` where `v > m`, else `m` (so a NaN `m`
    /// stays and a NaN `v` is dropped: pair it with [`Simd::flag_nan`]).
    fn max_keeping(self, m: Self::F, v: Self::F) -> Self::F;
    /// `flags` with every lane where `v` is NaN set to all ones.
    fn flag_nan(self, flags: Self::F, v: Self::F) -> Self::F;
    /// Whether any lane of `flags` has a bit set.
    fn any_set(self, flags: Self::F) -> bool;
    /// `max(m, |v|)` over the lanes (non-NaN `m`), and whether `v` has a
    /// lane that is not finite, or-ed into `bad`.
    fn abs_max_finite(self, m: Self::F, bad: Self::F, v: Self::F) -> (Self::F, Self::F);
    /// The lanes as an array of up to 16 (the rest zero).
    fn to_array(self, v: Self::F) -> [f32; 16];
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Probe;

    impl WithSimd for Probe {
        type Output = (Isa, Vec<f32>);

        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) -> Self::Output {
            let src: Vec<f32> = (0..S::LANES).map(|i| i as f32 - 2.5).collect();
            let mut out = vec![7f32; S::LANES + 1];
            // SAFETY: both hold LANES floats.
            unsafe {
                let v = s.load(src.as_ptr());
                let r = s.mul_add(v, s.splat(2.0), s.splat(1.0));
                let r = s.max_nan(r, s.zero());
                s.store_prefix(out.as_mut_ptr(), S::LANES - 1, r);
            }
            (S::ISA, out)
        }
    }

    /// Each available instruction set runs as itself and computes the same
    /// lane by lane; a prefix store leaves the lanes past it alone.
    #[test]
    fn every_available_isa_dispatches_to_itself() {
        for isa in Isa::available() {
            let (ran, out) = dispatch(isa, Probe);
            assert_eq!(ran, isa);
            let lanes = out.len() - 1;
            for (i, &v) in out.iter().enumerate() {
                let want = if i + 1 >= lanes {
                    7.0
                } else {
                    (2.0 * (i as f32 - 2.5) + 1.0).max(0.0)
                };
                assert_eq!(v, want, "{isa} lane {i}");
            }
        }
    }

    #[test]
    fn isa_names_parse_and_bad_ones_are_errors() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
        }
        assert_eq!("AVX-512".parse::<Isa>().unwrap(), Isa::Avx512);
        let e = "sse9".parse::<Isa>().unwrap_err().to_string();
        assert!(e.starts_with("isa") && e.contains("sse9"), "{e}");
        assert!(Isa::available().contains(&Isa::detected()));
    }

    /// NaN in either operand wins the max, in every lane position.
    #[test]
    fn max_nan_keeps_nan_on_every_isa() {
        struct Max;
        impl WithSimd for Max {
            type Output = Vec<[u32; 2]>;
            #[inline(always)]
            fn with_simd<S: Simd>(self, s: S) -> Self::Output {
                let a: Vec<f32> = (0..S::LANES)
                    .map(|i| if i % 3 == 0 { f32::NAN } else { i as f32 })
                    .collect();
                let b: Vec<f32> = (0..S::LANES).map(|i| if i % 3 == 1 { f32::NAN } else { 1.0 }).collect();
                // SAFETY: LANES floats each.
                let r = unsafe { s.max_nan(s.load(a.as_ptr()), s.load(b.as_ptr())) };
                let r = s.to_array(r);
                (0..S::LANES)
                    .map(|i| [r[i].to_bits(), crate::cpu::max_nan(a[i], b[i]).to_bits()])
                    .collect()
            }
        }
        for isa in Isa::available() {
            for (i, [got, want]) in dispatch(isa, Max).into_iter().enumerate() {
                assert_eq!(got, want, "{isa} lane {i}");
            }
        }
    }

    /// `permute2` picks lane `idx[e]` of the two vectors end to end, on
    /// every instruction set (indices reaching into either vector).
    #[test]
    fn permute2_picks_from_both_vectors() {
        struct Pick;
        impl WithSimd for Pick {
            type Output = Vec<[f32; 2]>;
            #[inline(always)]
            fn with_simd<S: Simd>(self, s: S) -> Self::Output {
                let l = S::LANES;
                let both: Vec<f32> = (0..2 * l).map(|i| 100.0 + i as f32).collect();
                let idx: [u32; 16] = std::array::from_fn(|e| ((e * 7 + 3) % (2 * l)) as u32);
                // SAFETY: 2 * LANES floats in `both`.
                let (a, b) = unsafe { (s.load(both.as_ptr()), s.load(both.as_ptr().add(l))) };
                let r = s.to_array(s.permute2(a, b, &idx));
                (0..l).map(|e| [r[e], both[idx[e] as usize]]).collect()
            }
        }
        for isa in Isa::available() {
            for (e, [got, want]) in dispatch(isa, Pick).into_iter().enumerate() {
                assert_eq!(got, want, "{isa} lane {e}");
            }
        }
    }
}
