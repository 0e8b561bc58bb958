//! 256-entry byte table lookup of rows (`dst[r·stride + j] = t[src[r·run + j]]`:
//! hardswish, sigmoid, the other table activations, requantize, cat's
//! interleaved channel runs), NEON: four `tbl` lookups over the table's
//! 64-byte quarters (an index outside a quarter's range gives 0), OR-ed, 16
//! bytes a step; a row's tail is one overlapping step; rows shorter than 16
//! run the scalar loop.

use core::arch::aarch64::*;

use rquant_core::membound::Out;

/// # Safety
/// NEON available; `rquant_core::membound::check_rows(src.len(), run,
/// dst.len(), stride)` holds.
#[target_feature(enable = "neon")]
pub unsafe fn lut(t: &[u8; 256], src: &[u8], run: usize, dst: &mut [Out], stride: usize) {
    let rows = src.len() / run;
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut u8);
    if run < 16 {
        for r in 0..rows {
            for j in 0..run {
                // SAFETY: inside row r of src and of dst (the rows check).
                *d.add(r * stride + j) = t[*s.add(r * run + j) as usize];
            }
        }
        return;
    }
    // SAFETY: each quarter is 64 bytes inside the 256-byte table.
    let q = |i: usize| vld1q_u8_x4(t.as_ptr().add(64 * i));
    let (t0, t1, t2, t3) = (q(0), q(1), q(2), q(3));
    let v64 = vdupq_n_u8(64);
    let look = |i0: uint8x16_t| {
        let i1 = vsubq_u8(i0, v64);
        let i2 = vsubq_u8(i1, v64);
        let i3 = vsubq_u8(i2, v64);
        vorrq_u8(
            vorrq_u8(vqtbl4q_u8(t0, i0), vqtbl4q_u8(t1, i1)),
            vorrq_u8(vqtbl4q_u8(t2, i2), vqtbl4q_u8(t3, i3)),
        )
    };
    for r in 0..rows {
        // SAFETY (loads and stores below): every access lies within row r
        // of src (run bytes at r·run) and of dst (run bytes at r·stride).
        let (sp, dp) = (s.add(r * run), d.add(r * stride));
        let mut j = 0;
        loop {
            let jj = j.min(run - 16);
            vst1q_u8(dp.add(jj), look(vld1q_u8(sp.add(jj))));
            j += 16;
            if j >= run {
                break;
            }
        }
    }
}
