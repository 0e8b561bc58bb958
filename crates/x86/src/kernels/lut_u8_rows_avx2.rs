//! 256-entry byte table lookup of rows (`dst[r·stride + j] = t[src[r·run + j]]`:
//! hardswish, sigmoid, the other table activations, requantize, cat's
//! interleaved channel runs), AVX2: sixteen `vpshufb` over the table's
//! 16-byte sixteenths, combined by XOR (XNNPACK's x8-lut scheme): table k
//! is stored XOR-ed with table k − 1 (and, from k = 8 on, with the stored
//! table k − 8), and the index drops by 16 before each lookup — wrapping up
//! to k = 8, saturating after — so every lookup whose index is out of its
//! sixteenth either yields 0 (index ≥ 128) or a term that a later one
//! cancels, leaving `t[x]` exactly. 32 bytes a step; a row's tail is one
//! overlapping 32- or 16-byte step; rows shorter than 16 run the scalar loop.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::membound::Out;

/// # Safety
/// AVX2 available; `rquant_core::membound::check_rows(src.len(), run,
/// dst.len(), stride)` holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn lut(t: &[u8; 256], src: &[u8], run: usize, dst: &mut [Out], stride: usize) {
    let rows = src.len() / run;
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut u8);
    if run < 16 {
        for r in 0..rows {
            for j in 0..run {
                // SAFETY: inside row r of src and of dst (the rows check).
                *d.add(r * stride + j) = t[*s.add(r * run + j) as usize];
            }
        }
        return;
    }
    // SAFETY: the 16 loads read t[16k..16k + 16] inside the 256-byte table.
    let sixteenth = |k: usize| {
        _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr().add(16 * k) as *const __m128i))
    };
    let mut vt = [_mm256_setzero_si256(); 16];
    vt[0] = sixteenth(0);
    for k in 1..16 {
        vt[k] = _mm256_xor_si256(sixteenth(k - 1), sixteenth(k));
        if k >= 8 {
            vt[k] = _mm256_xor_si256(vt[k], vt[k - 8]);
        }
    }
    let off = _mm256_set1_epi8(16);
    let look = |x: __m256i| -> __m256i {
        let mut x = x;
        let mut y = _mm256_shuffle_epi8(vt[0], x);
        for v in &vt[1..9] {
            x = _mm256_sub_epi8(x, off);
            y = _mm256_xor_si256(y, _mm256_shuffle_epi8(*v, x));
        }
        for v in &vt[9..] {
            x = _mm256_subs_epi8(x, off);
            y = _mm256_xor_si256(y, _mm256_shuffle_epi8(*v, x));
        }
        y
    };
    let off128 = _mm_set1_epi8(16);
    let look128 = |x: __m128i| -> __m128i {
        let mut x = x;
        let mut y = _mm_shuffle_epi8(_mm256_castsi256_si128(vt[0]), x);
        for v in &vt[1..9] {
            x = _mm_sub_epi8(x, off128);
            y = _mm_xor_si128(y, _mm_shuffle_epi8(_mm256_castsi256_si128(*v), x));
        }
        for v in &vt[9..] {
            x = _mm_subs_epi8(x, off128);
            y = _mm_xor_si128(y, _mm_shuffle_epi8(_mm256_castsi256_si128(*v), x));
        }
        y
    };
    for r in 0..rows {
        // SAFETY (loads and stores below): every access lies within row r
        // of src (run bytes at r·run) and of dst (run bytes at r·stride).
        let (sp, dp) = (s.add(r * run), d.add(r * stride));
        if run >= 32 {
            let mut j = 0;
            loop {
                let jj = j.min(run - 32);
                let x = _mm256_loadu_si256(sp.add(jj) as *const __m256i);
                _mm256_storeu_si256(dp.add(jj) as *mut __m256i, look(x));
                j += 32;
                if j >= run {
                    break;
                }
            }
        } else {
            for jj in [0, run - 16] {
                let x = _mm_loadu_si128(sp.add(jj) as *const __m128i);
                _mm_storeu_si128(dp.add(jj) as *mut __m128i, look128(x));
            }
        }
    }
}
