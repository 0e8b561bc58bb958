//! NEON depthwise convolution on NHWC activations (channel multiplier 1),
//! channels in lanes, 8 per step: for each output pixel and block of 8
//! channels, per in-bounds tap, 8 input bytes of the pixel under it (one
//! `ld1`) widened with the zero point subtracted (`usubl`), then
//! `smlal`/`smlal2` by the tap's 8 per-channel `w − w_zp` into two int32x4
//! accumulators (exact: products in [−65025, 65025], wrapping sum, padded
//! taps skipped as they contribute 0). The 8 accumulators are requantized
//! in the lanes with the channels' own bias terms and multipliers (the
//! output stage's instruction sequence, `crate::output`) and stored as 8
//! NHWC bytes. The last block of a channel count that is not a multiple
//! of 8 reads its bytes through an 8-byte copy (zero points past `c`, whose
//! weights are 0) and stores only its `c mod 8` outputs. Any kernel size,
//! stride, padding and dilation. The scalar twin is core's
//! `rquant_core::conv::dw_rows`.

use core::arch::aarch64::*;

use rquant_core::output::Clamp;

/// Output rows `oy0 .. oy0 + rows` of one image.
#[derive(Debug)]
pub struct DwNhwc<'a> {
    /// The image, NHWC: `h × w` pixels of `c` channels.
    pub x: &'a [u8],
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub xz: u8,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
    pub ow: usize,
    /// `w − w_zp` as `[kh·kw][cpad]`, `cpad` = `c` rounded up to 8 (zeros past `c`).
    pub lanes: &'a [i16],
    /// Bias term and multiplier per channel (`cpad` long, zeros past `c`).
    pub bt: &'a [f32],
    pub mult: &'a [f32],
    pub out_zp: i32,
    pub clamp: Clamp,
    pub oy0: usize,
    pub rows: usize,
    /// The rows' outputs, NHWC (`rows × ow × c`).
    pub out: &'a mut [u8],
}

impl DwNhwc<'_> {
    /// Channels rounded up to whole 8-lane blocks.
    pub fn cpad(&self) -> usize {
        self.c.div_ceil(8) * 8
    }

    /// Panics unless every read and write of [`run`] is in bounds.
    pub fn assert_fits(&self) {
        let cpad = self.cpad();
        assert!(self.c >= 1 && self.kh >= 1 && self.kw >= 1);
        assert!(self.stride[0] >= 1 && self.stride[1] >= 1);
        assert!(self.x.len() >= self.h * self.w * self.c, "input too short");
        assert!(
            self.lanes.len() >= self.kh * self.kw * cpad,
            "weights too short"
        );
        assert!(self.bt.len() >= cpad && self.mult.len() >= cpad);
        assert!(
            self.out.len() >= self.rows * self.ow * self.c,
            "output too short"
        );
    }
}

/// Fill `t.out`.
///
/// # Safety
/// NEON available (reached only through an engine value with `Isa::Neon`
/// or better).
#[target_feature(enable = "neon")]
pub unsafe fn run(t: &mut DwNhwc<'_>) {
    t.assert_fits();
    let (c, cpad) = (t.c, t.cpad());
    let full = c / 8 * 8;
    let vz = vdup_n_u8(t.xz);
    let vzp = vdupq_n_s32(t.out_zp);
    let vlo = vdupq_n_s32(t.clamp.lo as i32);
    let vhi = vdupq_n_s32(t.clamp.hi as i32);
    let (h, w) = (t.h as isize, t.w as isize);
    for r in 0..t.rows {
        let oy = t.oy0 + r;
        for ox in 0..t.ow {
            let out = &mut t.out[(r * t.ow + ox) * c..][..c];
            for cb in (0..cpad).step_by(8) {
                let tail = cb >= full;
                let mut lo = vdupq_n_s32(0);
                let mut hi = vdupq_n_s32(0);
                for ky in 0..t.kh {
                    let iy = (oy * t.stride[0] + ky * t.dil[0]) as isize - t.pad[0] as isize;
                    if iy < 0 || iy >= h {
                        continue;
                    }
                    for kx in 0..t.kw {
                        let ix = (ox * t.stride[1] + kx * t.dil[1]) as isize - t.pad[1] as isize;
                        if ix < 0 || ix >= w {
                            continue;
                        }
                        let at = (iy as usize * t.w + ix as usize) * c + cb;
                        let x8 = if tail {
                            let mut tmp = [t.xz; 8];
                            tmp[..c - cb].copy_from_slice(&t.x[at..at + c - cb]);
                            // SAFETY: tmp has 8 bytes.
                            unsafe { vld1_u8(tmp.as_ptr()) }
                        } else {
                            let px = &t.x[at..at + 8];
                            // SAFETY: px has 8 bytes (a full block: cb + 8 <= c).
                            unsafe { vld1_u8(px.as_ptr()) }
                        };
                        let wl = &t.lanes[(ky * t.kw + kx) * cpad + cb..][..8];
                        // SAFETY: wl has 8 elements.
                        let wv = unsafe { vld1q_s16(wl.as_ptr()) };
                        let xv = vreinterpretq_s16_u16(vsubl_u8(x8, vz));
                        lo = vmlal_s16(lo, vget_low_s16(xv), vget_low_s16(wv));
                        hi = vmlal_high_s16(hi, xv, wv);
                    }
                }
                let (bt, mu) = (&t.bt[cb..cb + 8], &t.mult[cb..cb + 8]);
                // SAFETY: bt and mu have 8 elements each.
                let (b0, b1, m0, m1) = unsafe {
                    (
                        vld1q_f32(bt.as_ptr()),
                        vld1q_f32(bt.as_ptr().add(4)),
                        vld1q_f32(mu.as_ptr()),
                        vld1q_f32(mu.as_ptr().add(4)),
                    )
                };
                // (f32(acc) + bias) * mult, two roundings, then RNE to int32
                // (saturating), + zp (saturating), clamp [lo, hi]: the
                // scalar `requantize_u8_clamped`'s bits.
                let q = |acc: int32x4_t, b: float32x4_t, m: float32x4_t| -> int32x4_t {
                    let f = vmulq_f32(vaddq_f32(vcvtq_f32_s32(acc), b), m);
                    let v = vqaddq_s32(vcvtnq_s32_f32(f), vzp);
                    vminq_s32(vmaxq_s32(v, vlo), vhi)
                };
                let (v0, v1) = (q(lo, b0, m0), q(hi, b1, m1));
                // Values are in [0, 255]: the narrowing is exact.
                let u = vqmovun_s16(vcombine_s16(vmovn_s32(v0), vmovn_s32(v1)));
                let mut tmp = [0u8; 8];
                // SAFETY: tmp has 8 bytes.
                unsafe { vst1_u8(tmp.as_mut_ptr(), u) };
                let n = 8.min(c - cb);
                out[cb..cb + n].copy_from_slice(&tmp[..n]);
            }
        }
    }
}
