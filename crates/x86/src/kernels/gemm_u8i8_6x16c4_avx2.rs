//! AVX2 int8 GEMM microkernel with `vpmaddubsw`, 6×16 tile, k-units of 4 u8/s8.
//!
//! Exactness is conditional and checked by the caller before this kernel is
//! chosen: `vpmaddubsw` forms `sat16(x0·w0 + x1·w1)`, which equals the exact
//! sum whenever `x_max · max(|w0| + |w1|) <= 32767` over the adjacent weight
//! pairs ([`crate::pack::Narrow::exact_for`]: the activations' maximum is
//! known from packing, the pair bound from weight packing). `vpmaddwd` with
//! ones then adds the two int16 pairs exactly into int32 and `vpaddd`
//! accumulates in wrapping int32 — the reference's semantics. Otherwise the
//! `vpmaddwd` kernel on int16-widened operands runs.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub const MR: usize = 6;
pub const NR: usize = 16;

/// # Safety
/// AVX2 must be available; `a` points at `mrows` activation rows `lda`
/// bytes apart, each with `ku·4` readable bytes; `b` holds `ku·NR·4` bytes;
/// `c` has room for `mrows·NR` i32 (row stride NR); `1 <= mrows <= MR`.
/// `init`: start from zero, else accumulate onto the tile already in `c`.
/// Exact only under the saturation bound above (the caller's check).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn dispatch(
    mrows: usize,
    ku: usize,
    a: *const u8,
    lda: usize,
    b: *const u8,
    c: *mut i32,
    init: bool,
) {
    match mrows {
        1 => kernel::<1>(ku, a, lda, b, c, init),
        2 => kernel::<2>(ku, a, lda, b, c, init),
        3 => kernel::<3>(ku, a, lda, b, c, init),
        4 => kernel::<4>(ku, a, lda, b, c, init),
        5 => kernel::<5>(ku, a, lda, b, c, init),
        _ => kernel::<6>(ku, a, lda, b, c, init),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn kernel<const M: usize>(
    ku: usize,
    a: *const u8,
    lda: usize,
    b: *const u8,
    c: *mut i32,
    init: bool,
) {
    let mut acc = [[_mm256_setzero_si256(); 2]; M];
    if !init {
        for (i, acc_i) in acc.iter_mut().enumerate() {
            acc_i[0] = _mm256_loadu_si256(c.add(i * NR) as *const __m256i);
            acc_i[1] = _mm256_loadu_si256(c.add(i * NR + 8) as *const __m256i);
        }
    }
    let ones = _mm256_set1_epi16(1);
    let mut rows = [a; M];
    for (i, r) in rows.iter_mut().enumerate() {
        *r = a.add(i * lda);
    }
    let mut off = 0usize;
    let mut b = b;
    for _ in 0..ku {
        // SAFETY (whole loop body): the rows and b advance by one k-unit per
        // iteration and stay within the ku units the caller guarantees.
        let b0 = _mm256_loadu_si256(b as *const __m256i);
        let b1 = _mm256_loadu_si256(b.add(32) as *const __m256i);
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let x = _mm256_set1_epi32((rows[i].add(off) as *const i32).read_unaligned());
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b0), ones);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b1), ones);
            acc_i[0] = _mm256_add_epi32(acc_i[0], p0);
            acc_i[1] = _mm256_add_epi32(acc_i[1], p1);
        }
        off += 4;
        b = b.add(NR * 4);
    }
    for (i, acc_i) in acc.iter().enumerate() {
        _mm256_storeu_si256(c.add(i * NR) as *mut __m256i, acc_i[0]);
        _mm256_storeu_si256(c.add(i * NR + 8) as *mut __m256i, acc_i[1]);
    }
}
