//! `min(max(q, lo), hi)` of a quint8 row (relu, relu6, hardtanh), NEON:
//! `umax` / `umin`, 64 bytes a step, then 16; the tail is one overlapping
//! 16-byte step; fewer than 16 bytes run the scalar loop.

use core::arch::aarch64::*;

use rquant_core::membound::Out;

/// # Safety
/// NEON available; `src.len() == dst.len()`.
#[target_feature(enable = "neon")]
pub unsafe fn clamp(src: &[u8], lo: u8, hi: u8, dst: &mut [Out]) {
    let n = src.len();
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr() as *mut u8);
    if n < 16 {
        for i in 0..n {
            // SAFETY: i < n, inside both slices.
            *d.add(i) = (*s.add(i)).max(lo).min(hi);
        }
        return;
    }
    let (l, h) = (vdupq_n_u8(lo), vdupq_n_u8(hi));
    // SAFETY (loads and stores below): every access lies within the first
    // n bytes of both slices.
    let one = |i: usize| vst1q_u8(d.add(i), vminq_u8(vmaxq_u8(vld1q_u8(s.add(i)), l), h));
    let mut i = 0;
    while i + 64 <= n {
        for u in 0..4 {
            one(i + 16 * u);
        }
        i += 64;
    }
    while i + 16 <= n {
        one(i);
        i += 16;
    }
    if i < n {
        one(n - 16);
    }
}
