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
    let Some(x) = t.x else {
        t.out[..t.cblocks * t.pairs * 16].fill(0);
        return;
    };
    let zx = _mm256_set1_epi32(t.xz);
    let low = _mm256_set1_epi32(0xffff);
    let (w, c) = (t.w as isize, t.c);
    // Lanes of column `col`, channels ch0 .. ch0 + 8: `x − zx` (0 outside
    // the row and past the last channel).
    let lanes = |col: isize, ch0: usize| -> __m256i {
        if col < 0 || col >= w || ch0 >= c {
            return _mm256_setzero_si256();
        }
        let at = col as usize * c + ch0;
        let n = (c - ch0).min(8);
        if n == 8 {
            // SAFETY: bytes at .. at + 8 are inside `x` (pixel `col` of a
            // row of w·c bytes).
            let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(x.as_ptr().add(at) as *const __m128i));
            return _mm256_sub_epi32(v, zx);
        }
        let mut tmp = [0u8; 8];
        // SAFETY: bytes at .. at + n are inside `x`.
        std::ptr::copy_nonoverlapping(x.as_ptr().add(at), tmp.as_mut_ptr(), n);
        let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(tmp.as_ptr() as *const __m128i));
        // Channels past C stay 0.
        let keep = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        _mm256_and_si256(_mm256_sub_epi32(v, zx), keep)
    };
    for j in 0..t.pairs {
        let col = (j * t.step) as isize - t.left as isize;
        for cb in 0..t.cblocks {
            for half in [0, 8] {
                let ch0 = cb * 16 + half;
                let pair = _mm256_or_si256(
                    _mm256_and_si256(lanes(col, ch0), low),
                    _mm256_slli_epi32::<16>(lanes(col + 1, ch0)),
                );
                // SAFETY: lanes (cb, j, half..half + 8) are inside `out`.
                _mm256_storeu_si256(
                    out.add((cb * t.pairs + j) * 16 + half) as *mut __m256i,
                    pair,
                );
            }
        }
    }
}
