//! 256-entry byte table lookup of rows (`dst[r·stride + j] = t[src[r·run + j]]`),
//! AVX-512 VBMI: two `vpermi2b` 128-entry lookups (the table's halves, index
//! bits 0..6) and a blend on index bit 7 (`vpmovb2m`), 64 bytes a step,
//! each row's tail masked.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::membound::Out;

/// # Safety
/// AVX-512F/BW/VBMI available; `rquant_core::membound::check_rows(src.len(),
/// run, dst.len(), stride)` holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub unsafe fn lut(t: &[u8; 256], src: &[u8], run: usize, dst: &mut [Out], stride: usize) {
    let rows = src.len() / run;
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut u8);
    // SAFETY: four 64-byte loads inside the 256-byte table.
    let q = |k: usize| _mm512_loadu_si512(t.as_ptr().add(64 * k) as *const _);
    let (t0, t1, t2, t3) = (q(0), q(1), q(2), q(3));
    let look = |x: __m512i| {
        let lo = _mm512_permutex2var_epi8(t0, x, t1);
        let hi = _mm512_permutex2var_epi8(t2, x, t3);
        _mm512_mask_blend_epi8(_mm512_movepi8_mask(x), lo, hi)
    };
    for r in 0..rows {
        // SAFETY (loads and stores below): every access lies within row r
        // of src (run bytes at r·run) and of dst (run bytes at r·stride);
        // masked-off lanes are not accessed.
        let (sp, dp) = (s.add(r * run), d.add(r * stride));
        let mut j = 0;
        while j < run {
            let m: __mmask64 = if run - j >= 64 {
                !0
            } else {
                (1u64 << (run - j)) - 1
            };
            let x = _mm512_maskz_loadu_epi8(m, sp.add(j) as *const i8);
            _mm512_mask_storeu_epi8(dp.add(j) as *mut i8, m, look(x));
            j += 64;
        }
    }
}
