//! Average pooling of NHWC pixel runs (`rquant_core::membound::Window`),
//! NEON, for avg_pool2d and adaptive_avg_pool2d: 16 channels per step, the
//! taps summed in u16 lanes (`uaddw`, at most 256 taps at a time: 256 · 255
//! < 2^16) and flushed into u32, then the window's finish in f32
//! (`Finish`: the exact-range division or the reciprocal multiply),
//! clamped to [0, 255] and rounded half to even (`fcvtns`), as
//! `Finish::apply`. A channel count that is not a multiple of 16 ends with
//! one overlapping step; fewer than 16 channels run the scalar loop.

use core::arch::aarch64::*;

use rquant_core::membound::{avg_scalar_part, Finish, Out, Window};

/// # Safety
/// NEON available; `w.check(src.len(), dst.len())` holds.
#[target_feature(enable = "neon")]
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
        vdupq_n_s32(add),
        vdupq_n_f32(div),
        vdupq_n_f32(recip.unwrap_or(1.0)),
    );
    let (zero, top) = (vdupq_n_f32(0.0), vdupq_n_f32(255.0));
    let finish = |acc: uint32x4_t| -> int32x4_t {
        let v = vcvtq_f32_s32(vaddq_s32(vreinterpretq_s32_u32(acc), addv));
        let v = match recip {
            None => vdivq_f32(v, divv),
            Some(_) => vmulq_f32(v, recv),
        };
        vcvtnq_s32_f32(vminq_f32(vmaxq_f32(v, zero), top))
    };
    for p in 0..w.npix {
        // SAFETY (pointer arithmetic, loads and stores below): every tap of
        // every channel step lies inside `src` and every store inside `dst`
        // (the window check; steps end at channel c − 1).
        let (sp, dp) = (s.add(p * w.step), d.add(p * c));
        let mut j = 0;
        loop {
            let jj = j.min(c - 16);
            let mut sum = [vdupq_n_u32(0); 4];
            let (mut lo, mut hi) = (vdupq_n_u16(0), vdupq_n_u16(0));
            let mut n = 0;
            let flush = |sum: &mut [uint32x4_t; 4], lo: uint16x8_t, hi: uint16x8_t| {
                sum[0] = vaddw_u16(sum[0], vget_low_u16(lo));
                sum[1] = vaddw_high_u16(sum[1], lo);
                sum[2] = vaddw_u16(sum[2], vget_low_u16(hi));
                sum[3] = vaddw_high_u16(sum[3], hi);
            };
            for i in 0..w.ny {
                let r = sp.add(i * w.sy + jj);
                for k in 0..w.nx {
                    let v = vld1q_u8(r.add(k * w.sx));
                    lo = vaddw_u8(lo, vget_low_u8(v));
                    hi = vaddw_high_u8(hi, v);
                    n += 1;
                    if n == 256 {
                        flush(&mut sum, lo, hi);
                        lo = vdupq_n_u16(0);
                        hi = vdupq_n_u16(0);
                        n = 0;
                    }
                }
            }
            flush(&mut sum, lo, hi);
            let q0 = vcombine_u16(vqmovun_s32(finish(sum[0])), vqmovun_s32(finish(sum[1])));
            let q1 = vcombine_u16(vqmovun_s32(finish(sum[2])), vqmovun_s32(finish(sum[3])));
            vst1q_u8(dp.add(jj), vcombine_u8(vqmovn_u16(q0), vqmovn_u16(q1)));
            j += 16;
            if j >= c {
                break;
            }
        }
    }
}
