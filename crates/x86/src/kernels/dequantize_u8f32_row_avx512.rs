//! Per-tensor dequantize of 8-bit codes to f32, AVX-512F/BW, 64 values a step:
//! `f32(q − zp) · scale`, with `q` read through `rquant_core::portable::Code8`.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::portable::Code8;

#[cfg(target_arch = "x86_64")]
use super::output_avx512::lanes;

/// Dequantize `src` into `dst` (equal lengths). With `stream`, the aligned
/// body is written with non-temporal stores: for outputs far larger than the
/// caches they save the read-for-ownership of every destination line.
///
/// # Safety
/// AVX-512F and AVX-512BW must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dequantize_row(src: &[u8], c: Code8, dst: &mut [f32], stream: bool) {
    let n = src.len().min(dst.len());
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let scale = _mm512_set1_ps(c.scale);
    let zp = _mm512_set1_epi32(c.zp);
    let flip = _mm_set1_epi8(c.flip as i8);
    let step = |b: __m128i| -> __m512 {
        let q = _mm512_cvtepu8_epi32(_mm_xor_si128(b, flip));
        _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, zp)), scale)
    };
    let mut j = 0;
    if stream {
        // Masked steps up to a 64-byte boundary of dst, then aligned streaming stores.
        let head = d.align_offset(64).min(n);
        while j < head {
            let k = (head - j).min(16);
            let m = lanes(k);
            // SAFETY: the mask covers only lanes before `head` ≤ n.
            let b = _mm_maskz_loadu_epi8(m, s.add(j) as *const i8);
            _mm512_mask_storeu_ps(d.add(j), m, step(b));
            j += k;
        }
        while j + 64 <= n {
            for u in 0..4 {
                // SAFETY: in bounds as below; d + j is 64-byte aligned.
                let b = _mm_loadu_si128(s.add(j + 16 * u) as *const __m128i);
                _mm512_stream_ps(d.add(j + 16 * u), step(b));
            }
            j += 64;
        }
        _mm_sfence();
    }
    while j + 64 <= n {
        for u in 0..4 {
            // SAFETY: j + 16u + 16 ≤ n, inside both slices.
            let b = _mm_loadu_si128(s.add(j + 16 * u) as *const __m128i);
            _mm512_storeu_ps(d.add(j + 16 * u), step(b));
        }
        j += 64;
    }
    while j < n {
        let m = lanes(n - j);
        // SAFETY: the mask covers only the n − j lanes left in both slices.
        let b = _mm_maskz_loadu_epi8(m, s.add(j) as *const i8);
        _mm512_mask_storeu_ps(d.add(j), m, step(b));
        j += 16;
    }
}
