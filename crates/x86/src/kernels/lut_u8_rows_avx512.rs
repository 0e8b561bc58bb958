//! 256-entry byte table lookup of rows (`dst[r·stride + j] = t[src[r·run + j]]`),
//! AVX-512BW without VBMI: the XOR-combined sixteen-`vpshufb` scheme of
//! `lut_u8_rows_avx2` on 64-byte vectors, each row's tail masked.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::membound::Out;

/// # Safety
/// AVX-512F/BW available; `rquant_core::membound::check_rows(src.len(),
/// run, dst.len(), stride)` holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn lut(t: &[u8; 256], src: &[u8], run: usize, dst: &mut [Out], stride: usize) {
    let rows = src.len() / run;
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut u8);
    // SAFETY: the 16 loads read t[16k..16k + 16] inside the 256-byte table.
    let sixteenth = |k: usize| {
        _mm512_broadcast_i32x4(_mm_loadu_si128(t.as_ptr().add(16 * k) as *const __m128i))
    };
    let mut vt = [_mm512_setzero_si512(); 16];
    vt[0] = sixteenth(0);
    for k in 1..16 {
        vt[k] = _mm512_xor_si512(sixteenth(k - 1), sixteenth(k));
        if k >= 8 {
            vt[k] = _mm512_xor_si512(vt[k], vt[k - 8]);
        }
    }
    let off = _mm512_set1_epi8(16);
    let look = |x: __m512i| -> __m512i {
        let mut x = x;
        let mut y = _mm512_shuffle_epi8(vt[0], x);
        for v in &vt[1..9] {
            x = _mm512_sub_epi8(x, off);
            y = _mm512_xor_si512(y, _mm512_shuffle_epi8(*v, x));
        }
        for v in &vt[9..] {
            x = _mm512_subs_epi8(x, off);
            y = _mm512_xor_si512(y, _mm512_shuffle_epi8(*v, x));
        }
        y
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
