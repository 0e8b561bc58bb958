//! One NCHW max-pool output row (`rquant_core::membound::NchwRow`), NEON,
//! in two passes over a zero-padded scratch row: the `umax` of the
//! window's input rows (16 columns a step, the tail one overlapping step;
//! rows narrower than 16 run the scalar loop), then the windows along the
//! row — stride 1: `umax` of the taps' unaligned loads; stride 2: the even
//! bytes of 32 (`ld2`); other strides: the scalar loop — 16 outputs a step.
//! Padding and ceil-mode columns read the scratch's zeros, which never win
//! a max (as the oracle, which skips them); the last step's extra lanes
//! read zeros past the row and are not stored.

use core::arch::aarch64::*;

use rquant_core::membound::{nchw_horizontal_scalar, nchw_vertical_scalar, NchwRow, Out};

/// # Safety
/// NEON available; `r.check(src.len(), dst.len())` holds.
#[target_feature(enable = "neon")]
pub unsafe fn max_nchw(r: &NchwRow, src: &[u8], tmp: &mut Vec<u8>, dst: &mut [Out]) {
    let t = r.scratch(tmp);
    let (w, s) = (r.w, src.as_ptr());
    if w >= 16 {
        let tp = t.as_mut_ptr().add(r.pad);
        let mut j = 0;
        loop {
            // SAFETY: rows i < ny start at i·sy inside src, columns jj..jj + 16
            // ≤ w; the store lands in tmp[pad..pad + w] (scratch_len ≥ pad + w).
            let jj = j.min(w - 16);
            let mut m = vdupq_n_u8(0);
            for i in 0..r.ny {
                m = vmaxq_u8(m, vld1q_u8(s.add(i * r.sy + jj)));
            }
            vst1q_u8(tp.add(jj), m);
            j += 16;
            if j >= w {
                break;
            }
        }
    } else {
        nchw_vertical_scalar(r, src, t, 0);
    }
    let (tp, d) = (t.as_ptr(), dst.as_mut_ptr() as *mut u8);
    let ow = r.ow;
    // SAFETY (stores below): o0 + 16 ≤ ow, or the partial copy of ow − o0.
    let put = |o0: usize, v: uint8x16_t| {
        if o0 + 16 <= ow {
            vst1q_u8(d.add(o0), v);
        } else {
            let mut buf = [0u8; 16];
            vst1q_u8(buf.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(buf.as_ptr(), d.add(o0), ow - o0);
        }
    };
    // SAFETY (loads below): for o0 < ow the furthest byte read is at most
    // 31 past the last tap ((ow − 1)·sx + (kx − 1)·dx), inside the
    // scratch's NCHW_SLACK zero bytes.
    match r.sx {
        1 => {
            for o0 in (0..ow).step_by(16) {
                let mut m = vdupq_n_u8(0);
                for k in 0..r.kx {
                    m = vmaxq_u8(m, vld1q_u8(tp.add(o0 + k * r.dx)));
                }
                put(o0, m);
            }
        }
        2 => {
            for o0 in (0..ow).step_by(16) {
                let mut m = vdupq_n_u8(0);
                for k in 0..r.kx {
                    m = vmaxq_u8(m, vld2q_u8(tp.add(2 * o0 + k * r.dx)).0);
                }
                put(o0, m);
            }
        }
        _ => nchw_horizontal_scalar(r, t, dst, 0),
    }
}
