//! AVX-VNNI int8 GEMM microkernel (256-bit `vpdpbusd`, VEX-encoded), 6×16
//! tile, k-units of 4 u8/s8: for CPUs with AVX-VNNI but no AVX-512
//! (Alder Lake and later client cores, Zen 5 client parts).
//!
//! Exactness: `vpdpbusd` multiplies u8 by s8 and adds each lane's four
//! products to the int32 accumulator without intermediate saturation.
//!
//! The body is written once, generic over the dot-product instruction:
//! [`run`] uses the VEX form (`avxvnni`); [`run_evex`] the same
//! instruction in its EVEX 256-bit form (`avx512vnni` + `avx512vl`), which
//! an AVX-512 VNNI machine can run, so the kernel's addressing and tails are
//! tested there even when no AVX-VNNI CPU is at hand.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::gemm::{ALayout, Elem, Micro, Shape};

/// The tile and operand layout ([`crate::pack`] packs activations for it).
pub const SHAPE: Shape = Shape {
    mr: 6,
    nr: 16,
    kr: 4,
    elem: Elem::I8,
    a: ALayout::Rows,
};
pub const MR: usize = SHAPE.mr;
pub const NR: usize = SHAPE.nr;

/// Shared body: `dp(acc, x, w)` is one 256-bit `vpdpbusd`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn body<const M: usize>(
    ku: usize,
    a: *const u8,
    lda: usize,
    b: *const u8,
    c: *mut i32,
    init: bool,
    dp: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
) {
    let mut acc = [[_mm256_setzero_si256(); 2]; M];
    if !init {
        for (i, acc_i) in acc.iter_mut().enumerate() {
            acc_i[0] = _mm256_loadu_si256(c.add(i * NR) as *const __m256i);
            acc_i[1] = _mm256_loadu_si256(c.add(i * NR + 8) as *const __m256i);
        }
    }
    let mut rows = [a; M];
    for (i, r) in rows.iter_mut().enumerate() {
        *r = a.add(i * lda);
    }
    let mut off = 0usize;
    let mut b = b;
    for _ in 0..ku {
        // SAFETY (whole loop body): a and b advance by one k-unit per
        // iteration and stay within the ku units the caller guarantees.
        let b0 = _mm256_loadu_si256(b as *const __m256i);
        let b1 = _mm256_loadu_si256(b.add(32) as *const __m256i);
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let x = _mm256_set1_epi32((rows[i].add(off) as *const i32).read_unaligned());
            acc_i[0] = dp(acc_i[0], x, b0);
            acc_i[1] = dp(acc_i[1], x, b1);
        }
        off += 4;
        b = b.add(NR * 4);
    }
    for (i, acc_i) in acc.iter().enumerate() {
        _mm256_storeu_si256(c.add(i * NR) as *mut __m256i, acc_i[0]);
        _mm256_storeu_si256(c.add(i * NR + 8) as *mut __m256i, acc_i[1]);
    }
}

/// Instantiate `body` for each row count under one set of target features.
macro_rules! run_with {
    ($name:ident, $features:literal, $dp:path) => {
        /// `t.c` (+)= the raw `Σ x·w` of `t.mrows` activation rows and one
        /// weight panel over `t.ku` k-units (`t.init`: from zero, else onto `t.c`).
        ///
        /// # Safety
        /// The target features named in the attribute must be available and
        /// `t` must fit [`SHAPE`] ([`Micro::assert_fits`]).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        pub unsafe fn $name(t: Micro<'_>) {
            let (ku, a, lda, b, c, init) = (
                t.ku,
                t.a.as_ptr(),
                t.lda,
                t.b.as_ptr(),
                t.c.as_mut_ptr(),
                t.init,
            );
            // The closure inherits the function's target features.
            let dp = |s, x, w| $dp(s, x, w);
            match t.mrows {
                1 => body::<1>(ku, a, lda, b, c, init, dp),
                2 => body::<2>(ku, a, lda, b, c, init, dp),
                3 => body::<3>(ku, a, lda, b, c, init, dp),
                4 => body::<4>(ku, a, lda, b, c, init, dp),
                5 => body::<5>(ku, a, lda, b, c, init, dp),
                _ => body::<6>(ku, a, lda, b, c, init, dp),
            }
        }
    };
}

run_with!(run, "avx2,avxvnni", _mm256_dpbusd_avx_epi32);
run_with!(
    run_evex,
    "avx2,avx512f,avx512vl,avx512vnni",
    _mm256_dpbusd_epi32
);
