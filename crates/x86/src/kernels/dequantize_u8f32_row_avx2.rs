//! Per-tensor dequantize of 8-bit codes to f32, AVX2, 32 values a step:
//! `f32(q − zp) · scale`, with `q` read through `rquant_core::portable::Code8`.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::portable::{dequantize8, Code8};

/// Dequantize `src` into `dst` (equal lengths).
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn dequantize_row(src: &[u8], c: Code8, dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let scale = _mm256_set1_ps(c.scale);
    let zp = _mm256_set1_epi32(c.zp);
    let flip = _mm_set1_epi8(c.flip as i8);
    let mut j = 0;
    while j + 32 <= n {
        for u in 0..4 {
            // SAFETY: j + 8u + 8 ≤ n, inside both slices.
            let b = _mm_xor_si128(_mm_loadl_epi64(s.add(j + 8 * u) as *const __m128i), flip);
            let q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(b), zp);
            _mm256_storeu_ps(
                d.add(j + 8 * u),
                _mm256_mul_ps(_mm256_cvtepi32_ps(q), scale),
            );
        }
        j += 32;
    }
    dequantize8(&src[j..n], c, &mut dst[j..n]);
}
