//! Per-tensor quantize of an f32 row to 8-bit codes, AVX-512F/BW, 64 values a step.
//!
//! The arithmetic of `rquant_core::portable::quantize8`: clamp `x · inv` to
//! the integers the code can hold, add 1.5·2^23 (which rounds half to even
//! and leaves the integer in the low mantissa bits), subtract the magic's bits
//! minus the zero point, narrow with `vpmovdb`, flip the top bit for qint8.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::portable::Code8;

#[cfg(target_arch = "x86_64")]
use super::output_avx512::{clamp_ps, lanes};

const MAGIC: f32 = 12_582_912.0;

/// Quantize `src` into `dst` (equal lengths); returns whether `src` holds a NaN.
///
/// # Safety
/// AVX-512F, BW and VL must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn quantize_row(src: &[f32], c: Code8, dst: &mut [u8]) -> bool {
    let n = src.len().min(dst.len());
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let inv = _mm512_set1_ps(c.inv);
    let lo = _mm512_set1_ps(-c.zp as f32);
    let hi = _mm512_set1_ps((255 - c.zp) as f32);
    let magic = _mm512_set1_ps(MAGIC);
    let bias = _mm512_set1_epi32(MAGIC.to_bits() as i32 - c.zp);
    let flip = _mm512_set1_epi32(c.flip as i32);
    // NaN ⇔ |bits| > bits(inf): an integer compare (Miri implements it; not vcmpps).
    let abs = _mm512_set1_epi32(i32::MAX);
    let inf = _mm512_set1_epi32(f32::INFINITY.to_bits() as i32);
    let is_nan =
        |x: __m512| _mm512_cmpgt_epi32_mask(_mm512_and_si512(_mm512_castps_si512(x), abs), inf);
    // One 16-lane step; NaN lanes clamp to `lo` (vmaxps returns its second operand).
    let step = |x: __m512| -> __m512i {
        let v = clamp_ps(_mm512_mul_ps(x, inv), lo, hi);
        let q = _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(v, magic)), bias);
        _mm512_xor_si512(q, flip)
    };
    let mut nan: __mmask16 = 0;
    let mut j = 0;
    while j + 64 <= n {
        for u in 0..4 {
            // SAFETY: j + 16u + 16 ≤ n, inside both slices.
            let x = _mm512_loadu_ps(s.add(j + 16 * u));
            nan |= is_nan(x);
            let b = _mm512_cvtepi32_epi8(step(x));
            _mm_storeu_si128(d.add(j + 16 * u) as *mut __m128i, b);
        }
        j += 64;
    }
    while j < n {
        let m = lanes(n - j);
        // SAFETY: the mask covers only the n − j lanes left in both slices.
        let x = _mm512_maskz_loadu_ps(m, s.add(j));
        nan |= is_nan(x);
        _mm_mask_storeu_epi8(d.add(j) as *mut i8, m, _mm512_cvtepi32_epi8(step(x)));
        j += 16;
    }
    nan != 0
}
