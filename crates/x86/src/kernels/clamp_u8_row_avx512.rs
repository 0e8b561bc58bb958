//! `min(max(q, lo), hi)` of a quint8 row (relu, relu6, hardtanh),
//! AVX-512BW: `vpmaxub` / `vpminub`, 256 bytes a step, then 64, the tail masked.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::membound::Out;

/// # Safety
/// AVX-512F/BW available; `src.len() == dst.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn clamp(src: &[u8], lo: u8, hi: u8, dst: &mut [Out]) {
    let n = src.len();
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut u8);
    let (l, h) = (_mm512_set1_epi8(lo as i8), _mm512_set1_epi8(hi as i8));
    // SAFETY (loads and stores below): every access lies within the first
    // n bytes of both slices; masked-off lanes are not accessed.
    let one = |i: usize, m: __mmask64| {
        let v = _mm512_maskz_loadu_epi8(m, s.add(i) as *const i8);
        _mm512_mask_storeu_epi8(
            d.add(i) as *mut i8,
            m,
            _mm512_min_epu8(_mm512_max_epu8(v, l), h),
        );
    };
    let mut i = 0;
    while i + 256 <= n {
        for u in 0..4 {
            one(i + 64 * u, !0);
        }
        i += 256;
    }
    while i < n {
        let m = if n - i >= 64 {
            !0
        } else {
            (1u64 << (n - i)) - 1
        };
        one(i, m);
        i += 64;
    }
}
