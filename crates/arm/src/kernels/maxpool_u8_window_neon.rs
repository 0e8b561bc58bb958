//! Max pooling of NHWC pixel runs (`rquant_core::membound::Window`), NEON:
//! each output pixel's channel vector is the running `umax` of its
//! window's taps, 16 channels per step (8 for 8..15 channels). A channel
//! count that is not a multiple of the step ends with one step that
//! overlaps the previous one (the same values are written again); fewer
//! than 8 channels run the scalar loop.

use core::arch::aarch64::*;

use rquant_core::membound::{max_scalar_part, Out, Window};

/// # Safety
/// NEON available; `w.check(src.len(), dst.len())` holds.
#[target_feature(enable = "neon")]
pub unsafe fn max(w: &Window, src: &[u8], dst: &mut [Out]) {
    let c = w.c;
    if c < 8 {
        return max_scalar_part(w, src, dst, 0, c);
    }
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut u8);
    for p in 0..w.npix {
        // SAFETY (pointer arithmetic, loads and stores below): every tap of
        // every channel step lies inside `src` and every store inside `dst`
        // (the window check; steps end at channel c − 1).
        let (sp, dp) = (s.add(p * w.step), d.add(p * c));
        if c >= 16 {
            let mut j = 0;
            loop {
                let jj = j.min(c - 16);
                let mut m = vdupq_n_u8(0);
                for i in 0..w.ny {
                    let r = sp.add(i * w.sy + jj);
                    for k in 0..w.nx {
                        m = vmaxq_u8(m, vld1q_u8(r.add(k * w.sx)));
                    }
                }
                vst1q_u8(dp.add(jj), m);
                j += 16;
                if j >= c {
                    break;
                }
            }
        } else {
            for jj in [0, c - 8] {
                let mut m = vdup_n_u8(0);
                for i in 0..w.ny {
                    let r = sp.add(i * w.sy + jj);
                    for k in 0..w.nx {
                        m = vmax_u8(m, vld1_u8(r.add(k * w.sx)));
                    }
                }
                vst1_u8(dp.add(jj), m);
            }
        }
    }
}
