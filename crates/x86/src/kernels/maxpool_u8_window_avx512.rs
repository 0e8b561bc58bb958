//! Max pooling of NHWC pixel runs (`rquant_core::membound::Window`),
//! AVX-512BW: each output pixel's channel vector is the running `vpmaxub`
//! of its window's taps, 64 channels per step, the last step masked.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::membound::{Out, Window};

/// # Safety
/// AVX-512F/BW available; `w.check(src.len(), dst.len())` holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn max(w: &Window, src: &[u8], dst: &mut [Out]) {
    let c = w.c;
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut u8);
    for p in 0..w.npix {
        // SAFETY (pointer arithmetic, loads and stores below): every tap of
        // every channel step lies inside `src` and every store inside `dst`
        // (the window check); the masks cover channels < c only, and
        // masked-off lanes are not accessed.
        let (sp, dp) = (s.add(p * w.step), d.add(p * c));
        let mut j = 0;
        while j < c {
            let m: __mmask64 = if c - j >= 64 {
                !0
            } else {
                (1u64 << (c - j)) - 1
            };
            let mut v = _mm512_setzero_si512();
            for i in 0..w.ny {
                let r = sp.add(i * w.sy + j);
                for k in 0..w.nx {
                    let t = _mm512_maskz_loadu_epi8(m, r.add(k * w.sx) as *const i8);
                    v = _mm512_max_epu8(v, t);
                }
            }
            _mm512_mask_storeu_epi8(dp.add(j) as *mut i8, m, v);
            j += 64;
        }
    }
}
