//! AVX2 residual add over a run of output codes: `a[i] = add.apply(a[i],
//! b[i])` (`rquant_core::output::ResidualAdd`), 8 lanes at a time, the
//! tail through the scalar definition. Same operation order per lane as
//! the definition (see the AVX-512 twin, `residual_add_u8_row_avx512.rs`).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use rquant_core::output::ResidualAdd;

/// `a[i] = add.apply(a[i], b[i])` for `i < n`.
///
/// # Safety
/// AVX2 must be available; `a` is valid for reads and writes of `n` bytes
/// and `b` for reads of `n` bytes (no other thread writes them).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn add_row(a: *mut u8, b: *const u8, n: usize, add: &ResidualAdd) {
    let sa = _mm256_set1_ps(add.a_scale);
    let za = _mm256_set1_epi32(add.a_zp);
    let sb = _mm256_set1_ps(add.b_scale);
    let zb = _mm256_set1_epi32(add.b_zp);
    let inv = _mm256_set1_ps(add.inv_out);
    let lo = _mm256_set1_ps((0 - add.out_zp) as f32);
    let hi = _mm256_set1_ps((255 - add.out_zp) as f32);
    let magic = _mm256_set1_ps(12_582_912.0);
    let bias = _mm256_set1_epi32(12_582_912.0f32.to_bits() as i32 - add.out_zp);
    let zero = _mm256_setzero_ps();
    let mut j = 0;
    while j + 8 <= n {
        // SAFETY: bytes j..j + 8 are inside both runs.
        let qa = _mm256_cvtepu8_epi32(_mm_loadl_epi64(a.add(j) as *const __m128i));
        let qb = _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.add(j) as *const __m128i));
        let fa = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(qa, za)), sa);
        let fb = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(qb, zb)), sb);
        let mut c = _mm256_add_ps(fa, fb);
        if add.relu {
            c = _mm256_max_ps(c, zero);
        }
        let y = _mm256_mul_ps(c, inv);
        let y = _mm256_add_ps(_mm256_min_ps(_mm256_max_ps(y, lo), hi), magic);
        let q = _mm256_sub_epi32(_mm256_castps_si256(y), bias);
        // Every lane is in 0..=255: the saturating packs only narrow.
        let p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
        _mm_storel_epi64(a.add(j) as *mut __m128i, _mm_packus_epi16(p16, p16));
        j += 8;
    }
    while j < n {
        // SAFETY: byte j is inside both runs.
        *a.add(j) = add.apply(*a.add(j), *b.add(j));
        j += 1;
    }
}
