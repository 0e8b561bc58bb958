//! Average pooling of NHWC pixel runs (`rquant_core::membound::Window`),
//! AVX2, for avg_pool2d and adaptive_avg_pool2d: 16 channels per step,
//! the taps summed in u16 lanes (`vpmovzxbw` + `vpaddw`, at most 256 taps
//! at a time: 256 · 255 < 2^16) and flushed into int32, then the
//! window's finish in f32 (`Finish`: the exact-range division or the
//! reciprocal multiply), clamped to [0, 255] and rounded half to even with
//! the 1.5·2^23 magic number. A channel count that is not a multiple of 16
//! ends with one overlapping step; fewer than 16 channels run the scalar loop.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::membound::{avg_scalar_part, Finish, Out, Window};

const MAGIC: f32 = 12_582_912.0;

/// # Safety
/// AVX2 available; `w.check(src.len(), dst.len())` holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn avg(w: &Window, f: Finish, src: &[u8], dst: &mut [Out]) {
    let c = w.c;
    if c < 16 {
        return avg_scalar_part(w, f, src, dst, 0, c);
    }
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut u8);
    let (add, div, recip) = match f {
        Finish::Div { add, div } => (add, div, None),
        Finish::Recip(r) => (0, 1.0, Some(r)),
    };
    let (addv, divv, recv) = (
        _mm256_set1_epi32(add),
        _mm256_set1_ps(div),
        _mm256_set1_ps(recip.unwrap_or(1.0)),
    );
    let (zero, top, magic) = (
        _mm256_setzero_ps(),
        _mm256_set1_ps(255.0),
        _mm256_set1_ps(MAGIC),
    );
    let bias = _mm256_set1_epi32(MAGIC.to_bits() as i32);
    let finish = |acc: __m256i| -> __m256i {
        let v = _mm256_cvtepi32_ps(_mm256_add_epi32(acc, addv));
        let v = match recip {
            None => _mm256_div_ps(v, divv),
            Some(_) => _mm256_mul_ps(v, recv),
        };
        let v = _mm256_min_ps(_mm256_max_ps(v, zero), top);
        _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(v, magic)), bias)
    };
    for p in 0..w.npix {
        // SAFETY (pointer arithmetic, loads and stores below): every tap of
        // every channel step lies inside `src` and every store inside `dst`
        // (the window check; steps end at channel c − 1).
        let (sp, dp) = (s.add(p * w.step), d.add(p * c));
        let mut j = 0;
        loop {
            let jj = j.min(c - 16);
            let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            let mut acc = _mm256_setzero_si256();
            let mut n = 0;
            for i in 0..w.ny {
                let r = sp.add(i * w.sy + jj);
                for k in 0..w.nx {
                    let t = _mm_loadu_si128(r.add(k * w.sx) as *const __m128i);
                    acc = _mm256_add_epi16(acc, _mm256_cvtepu8_epi16(t));
                    n += 1;
                    if n == 256 {
                        lo = _mm256_add_epi32(
                            lo,
                            _mm256_cvtepu16_epi32(_mm256_castsi256_si128(acc)),
                        );
                        hi = _mm256_add_epi32(
                            hi,
                            _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(acc)),
                        );
                        acc = _mm256_setzero_si256();
                        n = 0;
                    }
                }
            }
            lo = _mm256_add_epi32(lo, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(acc)));
            hi = _mm256_add_epi32(
                hi,
                _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(acc)),
            );
            // [lo0..3, hi0..3, lo4..7, hi4..7] → [lo0..7, hi0..7] as u16 → bytes.
            let q = _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(finish(lo), finish(hi)));
            let b = _mm_packus_epi16(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            _mm_storeu_si128(dp.add(jj) as *mut __m128i, b);
            j += 16;
            if j >= c {
                break;
            }
        }
    }
}
