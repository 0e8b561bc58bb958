//! Per-tensor quantize of an f32 row to 8-bit codes, AVX2, 32 values a step:
//! the arithmetic of `rquant_core::portable::quantize8` (see the AVX-512 twin).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::portable::{quantize8, Code8};

const MAGIC: f32 = 12_582_912.0;

/// Quantize `src` into `dst` (equal lengths); returns whether `src` holds a NaN.
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn quantize_row(src: &[f32], c: Code8, dst: &mut [u8]) -> bool {
    let n = src.len().min(dst.len());
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let inv = _mm256_set1_ps(c.inv);
    let lo = _mm256_set1_ps(-c.zp as f32);
    let hi = _mm256_set1_ps((255 - c.zp) as f32);
    let magic = _mm256_set1_ps(MAGIC);
    let bias = _mm256_set1_epi32(MAGIC.to_bits() as i32 - c.zp);
    let flip = _mm256_set1_epi8(c.flip as i8);
    // vpackssdw / vpackuswb work within 128-bit lanes: this restores the order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let step = |x: __m256| -> __m256i {
        let v = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(x, inv), lo), hi);
        _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(v, magic)), bias)
    };
    let mut nan = _mm256_setzero_ps();
    let mut j = 0;
    while j + 32 <= n {
        let mut q = [_mm256_setzero_si256(); 4];
        for (u, qu) in q.iter_mut().enumerate() {
            // SAFETY: j + 8u + 8 ≤ n, inside both slices.
            let x = _mm256_loadu_ps(s.add(j + 8 * u));
            nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
            *qu = step(x);
        }
        // Every value is in 0..=255: the saturating packs are plain narrowing.
        let w = _mm256_packus_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let b = _mm256_xor_si256(_mm256_permutevar8x32_epi32(w, order), flip);
        // SAFETY: 32 bytes at j, inside dst.
        _mm256_storeu_si256(d.add(j) as *mut __m256i, b);
        j += 32;
    }
    let tail_nan = quantize8(&src[j..n], c, &mut dst[j..n]);
    _mm256_movemask_ps(nan) != 0 || tail_nan
}
