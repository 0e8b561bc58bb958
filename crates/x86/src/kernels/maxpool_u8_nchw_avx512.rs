//! One NCHW max-pool output row (`rquant_core::membound::NchwRow`),
//! AVX-512BW: the two passes of `maxpool_u8_nchw_avx2` on 64-byte vectors
//! — the rows' `vpmaxub` (tail masked), then the windows along the row
//! (stride 1: unaligned loads; stride 2: 128 bytes, even bytes by
//! `vpackuswb` + `vpermq`; other strides: scalar), 64 outputs a step, the
//! last store masked.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::membound::{nchw_horizontal_scalar, NchwRow, Out};

/// # Safety
/// AVX-512F/BW available; `r.check(src.len(), dst.len())` holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn max_nchw(r: &NchwRow, src: &[u8], tmp: &mut Vec<u8>, dst: &mut [Out]) {
    let t = r.scratch(tmp);
    let (w, s) = (r.w, src.as_ptr());
    let mask = |n: usize| -> __mmask64 {
        if n >= 64 {
            !0
        } else {
            (1u64 << n) - 1
        }
    };
    let tp = t.as_mut_ptr().add(r.pad);
    let mut j = 0;
    while j < w {
        // SAFETY: rows i < ny start at i·sy inside src, the mask keeps
        // columns below w; the store lands in tmp[pad..pad + w].
        let m = mask(w - j);
        let mut v = _mm512_setzero_si512();
        for i in 0..r.ny {
            v = _mm512_max_epu8(
                v,
                _mm512_maskz_loadu_epi8(m, s.add(i * r.sy + j) as *const i8),
            );
        }
        _mm512_mask_storeu_epi8(tp.add(j) as *mut i8, m, v);
        j += 64;
    }
    let (tp, d) = (t.as_ptr(), dst.as_mut_ptr() as *mut u8);
    let ow = r.ow;
    // SAFETY (loads below): for o0 < ow the furthest byte read is at most
    // 127 past the last tap ((ow − 1)·sx + (kx − 1)·dx), inside the
    // scratch's NCHW_SLACK zero bytes; the stores are masked to ow.
    match r.sx {
        1 => {
            for o0 in (0..ow).step_by(64) {
                let mut v = _mm512_setzero_si512();
                for k in 0..r.kx {
                    v = _mm512_max_epu8(v, _mm512_loadu_si512(tp.add(o0 + k * r.dx) as *const _));
                }
                _mm512_mask_storeu_epi8(d.add(o0) as *mut i8, mask(ow - o0), v);
            }
        }
        2 => {
            let even = _mm512_set1_epi16(0x00FF);
            let order = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7);
            for o0 in (0..ow).step_by(64) {
                let (mut m0, mut m1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for k in 0..r.kx {
                    let p = tp.add(2 * o0 + k * r.dx);
                    m0 = _mm512_max_epu8(m0, _mm512_loadu_si512(p as *const _));
                    m1 = _mm512_max_epu8(m1, _mm512_loadu_si512(p.add(64) as *const _));
                }
                let e = _mm512_packus_epi16(_mm512_and_si512(m0, even), _mm512_and_si512(m1, even));
                let v = _mm512_permutexvar_epi64(order, e);
                _mm512_mask_storeu_epi8(d.add(o0) as *mut i8, mask(ow - o0), v);
            }
        }
        _ => nchw_horizontal_scalar(r, t, dst, 0),
    }
}
