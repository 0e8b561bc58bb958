//! Max pooling of NHWC pixel runs (`rquant_core::membound::Window`), AVX2:
//! each output pixel's channel vector is the running `vpmaxub` of its
//! window's taps, 32 channels per step (16 for 16..31 channels). A channel
//! count that is not a multiple of the step ends with one step that
//! overlaps the previous one (the same values are written again); fewer
//! than 16 channels run the scalar loop.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::membound::{max_scalar_part, Out, Window};

/// # Safety
/// AVX2 available; `w.check(src.len(), dst.len())` holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn max(w: &Window, src: &[u8], dst: &mut [Out]) {
    let c = w.c;
    if c < 16 {
        return max_scalar_part(w, src, dst, 0, c);
    }
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut u8);
    for p in 0..w.npix {
        // SAFETY (pointer arithmetic, loads and stores below): every tap of
        // every channel step lies inside `src` and every store inside
        // `dst` (the window check; steps end at channel c − 1).
        let (sp, dp) = (s.add(p * w.step), d.add(p * c));
        if c >= 32 {
            let mut j = 0;
            loop {
                let jj = j.min(c - 32);
                let mut m = _mm256_setzero_si256();
                for i in 0..w.ny {
                    let r = sp.add(i * w.sy + jj);
                    for k in 0..w.nx {
                        m = _mm256_max_epu8(
                            m,
                            _mm256_loadu_si256(r.add(k * w.sx) as *const __m256i),
                        );
                    }
                }
                _mm256_storeu_si256(dp.add(jj) as *mut __m256i, m);
                j += 32;
                if j >= c {
                    break;
                }
            }
        } else {
            for jj in [0, c - 16] {
                let mut m = _mm_setzero_si128();
                for i in 0..w.ny {
                    let r = sp.add(i * w.sy + jj);
                    for k in 0..w.nx {
                        m = _mm_max_epu8(m, _mm_loadu_si128(r.add(k * w.sx) as *const __m128i));
                    }
                }
                _mm_storeu_si128(dp.add(jj) as *mut __m128i, m);
            }
        }
    }
}
