//! One NCHW max-pool output row (`rquant_core::membound::NchwRow`), AVX2,
//! in two passes over a zero-padded scratch row: the `vpmaxub` of the
//! window's input rows (32 columns a step, the tail one overlapping step;
//! rows narrower than 32 run the scalar loop), then the windows along the
//! row — stride 1: `vpmaxub` of the taps' unaligned loads, 32 outputs a
//! step; stride 2: the same on 64 bytes, then the even bytes
//! (`vpackuswb` + `vpermq`); other strides: the scalar loop. Padding and
//! ceil-mode columns read the scratch's zeros, which never win a max (as
//! the oracle, which skips them); the last step's extra lanes read zeros
//! past the row and are not stored.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::membound::{nchw_horizontal_scalar, nchw_vertical_scalar, NchwRow, Out};

/// # Safety
/// AVX2 available; `r.check(src.len(), dst.len())` holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn max_nchw(r: &NchwRow, src: &[u8], tmp: &mut Vec<u8>, dst: &mut [Out]) {
    let t = r.scratch(tmp);
    let (w, s) = (r.w, src.as_ptr());
    if w >= 32 {
        let tp = t.as_mut_ptr().add(r.pad);
        let mut j = 0;
        loop {
            // SAFETY: rows i < ny start at i·sy inside src, columns jj..jj + 32
            // ≤ w; the store lands in tmp[pad..pad + w] (scratch_len ≥ pad + w).
            let jj = j.min(w - 32);
            let mut m = _mm256_setzero_si256();
            for i in 0..r.ny {
                m = _mm256_max_epu8(
                    m,
                    _mm256_loadu_si256(s.add(i * r.sy + jj) as *const __m256i),
                );
            }
            _mm256_storeu_si256(tp.add(jj) as *mut __m256i, m);
            j += 32;
            if j >= w {
                break;
            }
        }
    } else {
        nchw_vertical_scalar(r, src, t, 0);
    }
    let (tp, d) = (t.as_ptr(), dst.as_mut_ptr() as *mut u8);
    let ow = r.ow;
    // SAFETY (stores below): o0 + 32 ≤ ow, or the partial copy of ow − o0.
    let put = |o0: usize, v: __m256i| {
        if o0 + 32 <= ow {
            _mm256_storeu_si256(d.add(o0) as *mut __m256i, v);
        } else {
            let mut buf = [0u8; 32];
            _mm256_storeu_si256(buf.as_mut_ptr() as *mut __m256i, v);
            std::ptr::copy_nonoverlapping(buf.as_ptr(), d.add(o0), ow - o0);
        }
    };
    // SAFETY (loads below): for o0 < ow the furthest byte read is at most
    // 63 past the last tap ((ow − 1)·sx + (kx − 1)·dx), inside the
    // scratch's NCHW_SLACK zero bytes.
    match r.sx {
        1 => {
            for o0 in (0..ow).step_by(32) {
                let mut m = _mm256_setzero_si256();
                for k in 0..r.kx {
                    m = _mm256_max_epu8(
                        m,
                        _mm256_loadu_si256(tp.add(o0 + k * r.dx) as *const __m256i),
                    );
                }
                put(o0, m);
            }
        }
        2 => {
            let even = _mm256_set1_epi16(0x00FF);
            for o0 in (0..ow).step_by(32) {
                let (mut m0, mut m1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                for k in 0..r.kx {
                    let p = tp.add(2 * o0 + k * r.dx);
                    m0 = _mm256_max_epu8(m0, _mm256_loadu_si256(p as *const __m256i));
                    m1 = _mm256_max_epu8(m1, _mm256_loadu_si256(p.add(32) as *const __m256i));
                }
                let e = _mm256_packus_epi16(_mm256_and_si256(m0, even), _mm256_and_si256(m1, even));
                put(o0, _mm256_permute4x64_epi64::<0xD8>(e));
            }
        }
        _ => nchw_horizontal_scalar(r, t, dst, 0),
    }
}
