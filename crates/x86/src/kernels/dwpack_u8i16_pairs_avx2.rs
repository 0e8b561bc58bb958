//! Pair rows for the NHWC depthwise kernels, AVX2: the fill of
//! `dwpack_u8i16_pairs_avx512.rs` (same layout, same values) 8 lanes at a
//! time.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub use super::dwpack_u8i16_pairs_avx512::PairRow;

/// Fill the pair row.
///
/// # Safety
/// AVX2 must be available; `t` fits ([`PairRow::assert_fits`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn fill(t: &mut PairRow<'_>) {
    let out = t.out.as_mut_ptr();
    let (w, c) = (t.w as isize, t.c);
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for h in 0..t.cblocks * 2 {
        let ch0 = h * 8;
        let n = c.saturating_sub(ch0).min(8);
        // Lanes past C stay 0.
        let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), iota);
        let zx = _mm256_and_si256(_mm256_set1_epi32(t.xz as i32), keep);
        // The 8 lanes of column `col`.
        let lanes = |col: isize| -> __m256i {
            match t.x {
                Some(x) if col >= 0 && col < w && n > 0 => {
                    let at = col as usize * c + ch0;
                    if n == 8 {
                        // SAFETY: bytes at .. at + 8 are inside `x` (pixel
                        // `col` of a row of w·c bytes).
                        _mm256_cvtepu8_epi32(_mm_loadl_epi64(x.as_ptr().add(at) as *const __m128i))
                    } else {
                        let mut tmp = [0u8; 8];
                        tmp[..n].copy_from_slice(&x[at..at + n]);
                        _mm256_cvtepu8_epi32(_mm_loadl_epi64(tmp.as_ptr() as *const __m128i))
                    }
                }
                _ => zx,
            }
        };
        let o = out.add((h / 2) * t.pairs * 16 + (h % 2) * 8);
        let col0 = -(t.left as isize);
        // SAFETY (stores): lanes (cb, j, half..half + 8) are inside `out`.
        if t.step == 1 {
            let mut cur = lanes(col0);
            for j in 0..t.pairs {
                let next = lanes(col0 + j as isize + 1);
                let pair = _mm256_or_si256(cur, _mm256_slli_epi32::<16>(next));
                _mm256_storeu_si256(o.add(j * 16) as *mut __m256i, pair);
                cur = next;
            }
        } else {
            for j in 0..t.pairs {
                let col = col0 + (j * t.step) as isize;
                let pair = _mm256_or_si256(lanes(col), _mm256_slli_epi32::<16>(lanes(col + 1)));
                _mm256_storeu_si256(o.add(j * 16) as *mut __m256i, pair);
            }
        }
    }
}
