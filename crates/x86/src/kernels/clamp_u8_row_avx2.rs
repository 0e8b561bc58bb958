//! `min(max(q, lo), hi)` of a quint8 row (relu, relu6, hardtanh), AVX2:
//! `vpmaxub` / `vpminub`, 128 bytes a step, then 32; the tail is one
//! overlapping 32- or 16-byte step; fewer than 16 bytes run the scalar loop.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::membound::Out;

/// # Safety
/// AVX2 available; `src.len() == dst.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn clamp(src: &[u8], lo: u8, hi: u8, dst: &mut [Out]) {
    let n = src.len();
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut u8);
    if n < 16 {
        for i in 0..n {
            // SAFETY: i < n, inside both slices.
            *d.add(i) = (*s.add(i)).max(lo).min(hi);
        }
        return;
    }
    // SAFETY (loads and stores below): every access lies within the first
    // n bytes of both slices.
    if n < 32 {
        let (l, h) = (_mm_set1_epi8(lo as i8), _mm_set1_epi8(hi as i8));
        for i in [0, n - 16] {
            let v = _mm_loadu_si128(s.add(i) as *const __m128i);
            _mm_storeu_si128(
                d.add(i) as *mut __m128i,
                _mm_min_epu8(_mm_max_epu8(v, l), h),
            );
        }
        return;
    }
    let (l, h) = (_mm256_set1_epi8(lo as i8), _mm256_set1_epi8(hi as i8));
    let one = |i: usize| {
        let v = _mm256_loadu_si256(s.add(i) as *const __m256i);
        _mm256_storeu_si256(
            d.add(i) as *mut __m256i,
            _mm256_min_epu8(_mm256_max_epu8(v, l), h),
        );
    };
    let mut i = 0;
    while i + 128 <= n {
        for u in 0..4 {
            one(i + 32 * u);
        }
        i += 128;
    }
    while i + 32 <= n {
        one(i);
        i += 32;
    }
    if i < n {
        one(n - 32);
    }
}
