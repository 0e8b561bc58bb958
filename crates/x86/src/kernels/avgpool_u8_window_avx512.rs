//! Average pooling of NHWC pixel runs (`rquant_core::membound::Window`),
//! AVX-512BW, for avg_pool2d and adaptive_avg_pool2d: 32 channels per step
//! (the last masked), the taps summed in u16 lanes (`vpmovzxbw` +
//! `vpaddw`, at most 256 taps at a time) and flushed into int32, then the
//! window's finish in f32 (`Finish`), clamped to [0, 255], rounded half
//! to even with the 1.5·2^23 magic number and narrowed with `vpmovdb`.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::membound::{Finish, Out, Window};

#[cfg(target_arch = "x86_64")]
use super::output_avx512::clamp_ps;

const MAGIC: f32 = 12_582_912.0;

/// # Safety
/// AVX-512F/BW/VL available; `w.check(src.len(), dst.len())` holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn avg(w: &Window, f: Finish, src: &[u8], dst: &mut [Out]) {
    let c = w.c;
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut u8);
    let (add, div, recip) = match f {
        Finish::Div { add, div } => (add, div, None),
        Finish::Recip(r) => (0, 1.0, Some(r)),
    };
    let (addv, divv, recv) = (
        _mm512_set1_epi32(add),
        _mm512_set1_ps(div),
        _mm512_set1_ps(recip.unwrap_or(1.0)),
    );
    let (zero, top, magic) = (
        _mm512_setzero_ps(),
        _mm512_set1_ps(255.0),
        _mm512_set1_ps(MAGIC),
    );
    let bias = _mm512_set1_epi32(MAGIC.to_bits() as i32);
    let finish = |acc: __m512i| -> __m128i {
        let v = _mm512_cvtepi32_ps(_mm512_add_epi32(acc, addv));
        let v = match recip {
            None => _mm512_div_ps(v, divv),
            Some(_) => _mm512_mul_ps(v, recv),
        };
        let v = clamp_ps(v, zero, top);
        _mm512_cvtepi32_epi8(_mm512_sub_epi32(
            _mm512_castps_si512(_mm512_add_ps(v, magic)),
            bias,
        ))
    };
    for p in 0..w.npix {
        // SAFETY (pointer arithmetic, loads and stores below): every tap of
        // every channel step lies inside `src` and every store inside `dst`
        // (the window check); the masks cover channels < c only, and
        // masked-off lanes are not accessed.
        let (sp, dp) = (s.add(p * w.step), d.add(p * c));
        let mut j = 0;
        while j < c {
            let m: __mmask32 = if c - j >= 32 {
                !0
            } else {
                (1u32 << (c - j)) - 1
            };
            let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            let mut acc = _mm512_setzero_si512();
            let mut n = 0;
            for i in 0..w.ny {
                let r = sp.add(i * w.sy + j);
                for k in 0..w.nx {
                    let t = _mm256_maskz_loadu_epi8(m, r.add(k * w.sx) as *const i8);
                    acc = _mm512_add_epi16(acc, _mm512_cvtepu8_epi16(t));
                    n += 1;
                    if n == 256 {
                        lo = _mm512_add_epi32(
                            lo,
                            _mm512_cvtepu16_epi32(_mm512_castsi512_si256(acc)),
                        );
                        hi = _mm512_add_epi32(
                            hi,
                            _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64::<1>(acc)),
                        );
                        acc = _mm512_setzero_si512();
                        n = 0;
                    }
                }
            }
            lo = _mm512_add_epi32(lo, _mm512_cvtepu16_epi32(_mm512_castsi512_si256(acc)));
            hi = _mm512_add_epi32(
                hi,
                _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64::<1>(acc)),
            );
            _mm_mask_storeu_epi8(dp.add(j) as *mut i8, m as __mmask16, finish(lo));
            if c - j > 16 {
                _mm_mask_storeu_epi8(
                    dp.add(j + 16) as *mut i8,
                    (m >> 16) as __mmask16,
                    finish(hi),
                );
            }
            j += 32;
        }
    }
}
