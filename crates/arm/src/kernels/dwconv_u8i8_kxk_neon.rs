//! NEON depthwise convolution of one plane, 8 output pixels per step: per
//! tap, 8 input bytes (stride 1: one `ld1`; stride 2: `ld2`, even lanes)
//! widened with the zero point subtracted (`usubl`), then `smlal`/`smlal2`
//! by the scalar `w - w_zp` (4 MACs each) into two int32x4 accumulators.
//! Exact (products in [-65025, 65025], wrapping sum). Border pixels, where
//! some tap of the 8 falls outside the row, and other strides use the scalar
//! twin's per-pixel code.

use core::arch::aarch64::*;

use super::dwconv_u8i8_kxk_scalar::{in_y, pixel, DwGeom};

/// Accumulators of output row `oy` (`acc.len() == ow`); `w` holds `w - w_zp`.
///
/// # Safety
/// NEON available (reached only through an engine value with `Isa::Neon` or better).
pub unsafe fn row(g: &DwGeom, plane: &[u8], xz: i32, w: &[i16], oy: usize, acc: &mut [i32]) {
    assert!(plane.len() >= g.h * g.w && w.len() >= g.kh * g.kw && acc.len() == g.ow);
    let s = g.stride[1];
    // Columns whose 8-pixel step keeps every tap inside the row: for the first
    // pixel ox0, ix0 = ox0*s - pad >= 0; for the read end, ix0 + (kw-1)*d + 8*s <= w.
    let span = (g.kw - 1) * g.dilation[1];
    let mut ox = 0;
    while ox < g.ow {
        let ix0 = (ox * s) as isize - g.padding[1] as isize;
        let vector =
            (s == 1 || s == 2) && ox + 8 <= g.ow && ix0 >= 0 && ix0 as usize + span + 8 * s <= g.w;
        if vector {
            // SAFETY: every read below is inside `plane` (checked above and by
            // the row bounds in_y); NEON is guaranteed by the caller.
            unsafe { step8(g, plane, xz, w, oy, ix0 as usize, &mut acc[ox..ox + 8]) };
            ox += 8;
        } else {
            acc[ox] = pixel(g, plane, xz, w, oy, ox);
            ox += 1;
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn step8(
    g: &DwGeom,
    plane: &[u8],
    xz: i32,
    w: &[i16],
    oy: usize,
    ix0: usize,
    acc: &mut [i32],
) {
    let vz = vdup_n_u8(xz as u8);
    let mut lo = vdupq_n_s32(0);
    let mut hi = vdupq_n_s32(0);
    for ky in 0..g.kh {
        let Some(iy) = in_y(g, oy, ky) else { continue };
        let row = &plane[iy * g.w..(iy + 1) * g.w];
        for kx in 0..g.kw {
            let ix = ix0 + kx * g.dilation[1];
            // SAFETY: ix + 8*stride <= w (checked by the caller), so the 8 or
            // 16 bytes read are inside `row`.
            let x8 = unsafe {
                if g.stride[1] == 1 {
                    vld1_u8(row.as_ptr().add(ix))
                } else {
                    vld2_u8(row.as_ptr().add(ix)).0
                }
            };
            let xv = vreinterpretq_s16_u16(vsubl_u8(x8, vz));
            let wv = w[ky * g.kw + kx];
            lo = vmlal_n_s16(lo, vget_low_s16(xv), wv);
            hi = vmlal_high_n_s16(hi, xv, wv);
        }
    }
    // SAFETY: acc has 8 elements (the caller's slice).
    unsafe {
        vst1q_s32(acc.as_mut_ptr(), lo);
        vst1q_s32(acc.as_mut_ptr().add(4), hi);
    }
}
