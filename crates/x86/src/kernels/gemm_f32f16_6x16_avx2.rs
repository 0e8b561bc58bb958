//! fp16-weight f32 GEMM microkernel (AVX2 + FMA + F16C), 6×16 tile.
//!
//! Vectorised across N: each lane is one output column, and each column's
//! value is the reference's single sequential chain over k — a plain product
//! `x0·w0`, then `fma(x_k, w_k, acc)` for k = 1.., then `+ bias` — so the bits
//! are the reference's. fp16 → f32 (`vcvtph2ps`) is exact.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub const MR: usize = 6;
pub const NR: usize = 16;

/// # Safety
/// AVX2, FMA and F16C must be available; `x` points at `mrows` rows of `k`
/// f32 each, `ldx` apart; `w` holds `k·NR` fp16 values (`[k][NR]`); `bias`
/// is null or holds NR f32; `c` has room for `mrows·NR` f32 (row stride NR);
/// `k >= 1`, `1 <= mrows <= MR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dispatch(
    mrows: usize,
    k: usize,
    x: *const f32,
    ldx: usize,
    w: *const u16,
    bias: *const f32,
    c: *mut f32,
) {
    match mrows {
        1 => kernel::<1>(k, x, ldx, w, bias, c),
        2 => kernel::<2>(k, x, ldx, w, bias, c),
        3 => kernel::<3>(k, x, ldx, w, bias, c),
        4 => kernel::<4>(k, x, ldx, w, bias, c),
        5 => kernel::<5>(k, x, ldx, w, bias, c),
        _ => kernel::<6>(k, x, ldx, w, bias, c),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn kernel<const M: usize>(
    k: usize,
    x: *const f32,
    ldx: usize,
    w: *const u16,
    bias: *const f32,
    c: *mut f32,
) {
    // SAFETY (whole body): reads stay within the k values of each row and
    // the k·NR weights the caller guarantees; writes within M·NR outputs.
    let w0 = _mm256_cvtph_ps(_mm_loadu_si128(w as *const __m128i));
    let w1 = _mm256_cvtph_ps(_mm_loadu_si128(w.add(8) as *const __m128i));
    let mut acc = [[_mm256_setzero_ps(); 2]; M];
    for (i, acc_i) in acc.iter_mut().enumerate() {
        let xv = _mm256_set1_ps(*x.add(i * ldx));
        acc_i[0] = _mm256_mul_ps(xv, w0);
        acc_i[1] = _mm256_mul_ps(xv, w1);
    }
    for kk in 1..k {
        let wp = w.add(kk * NR);
        let w0 = _mm256_cvtph_ps(_mm_loadu_si128(wp as *const __m128i));
        let w1 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(8) as *const __m128i));
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let xv = _mm256_set1_ps(*x.add(i * ldx + kk));
            acc_i[0] = _mm256_fmadd_ps(xv, w0, acc_i[0]);
            acc_i[1] = _mm256_fmadd_ps(xv, w1, acc_i[1]);
        }
    }
    if !bias.is_null() {
        let b0 = _mm256_loadu_ps(bias);
        let b1 = _mm256_loadu_ps(bias.add(8));
        for acc_i in acc.iter_mut() {
            acc_i[0] = _mm256_add_ps(acc_i[0], b0);
            acc_i[1] = _mm256_add_ps(acc_i[1], b1);
        }
    }
    for (i, acc_i) in acc.iter().enumerate() {
        _mm256_storeu_ps(c.add(i * NR), acc_i[0]);
        _mm256_storeu_ps(c.add(i * NR + 8), acc_i[1]);
    }
}
