//! Depthwise convolution, one output row of one channel, on f32 FMAs (AVX2).
//!
//! Exactness: inputs are `x − zx` and weights `w − zw` (integers of
//! magnitude ≤ 255), so every product is an integer ≤ 65 025 and every
//! partial sum of at most [`MAX_TAPS`] taps stays below 2^24: each FMA is
//! exact, and the f32 sum equals the reference's int32 accumulator.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Taps for which every partial sum is an exact f32 integer (258·65 025 < 2^24).
pub const MAX_TAPS: usize = 258;

/// Extra f32 the plane buffer must hold past the last input (the final
/// vector of a row may read up to 8 lanes past the row end).
pub const SLACK: usize = 8;

/// `acc[ox] = Σ_t w_t · xpad[base + off_t + ox·stride]` for `ox < acc.len()`.
///
/// # Safety
/// AVX2 and FMA must be available; `taps.len() <= MAX_TAPS`; every index
/// `base + off_t + (ceil(ow/8)·8 − 1)·stride` is inside `xpad`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dw_row(
    xpad: &[f32],
    base: usize,
    taps: &[(usize, f32)],
    stride: usize,
    acc: &mut [i32],
) {
    let ow = acc.len();
    let idx = _mm256_mullo_epi32(
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        _mm256_set1_epi32(stride as i32),
    );
    let mut ox = 0;
    while ox < ow {
        let mut s = _mm256_setzero_ps();
        for &(off, w) in taps {
            let p = xpad.as_ptr().add(base + off + ox * stride);
            let x = if stride == 1 {
                _mm256_loadu_ps(p)
            } else {
                _mm256_i32gather_ps::<4>(p, idx)
            };
            s = _mm256_fmadd_ps(x, _mm256_set1_ps(w), s);
        }
        // The sums are integers below 2^24: the conversion is exact.
        let v = _mm256_cvtps_epi32(s);
        if ox + 8 <= ow {
            _mm256_storeu_si256(acc.as_mut_ptr().add(ox) as *mut __m256i, v);
        } else {
            let mut t = [0i32; 8];
            _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, v);
            acc[ox..].copy_from_slice(&t[..ow - ox]);
        }
        ox += 8;
    }
}
