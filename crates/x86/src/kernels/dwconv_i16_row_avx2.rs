//! Depthwise convolution, one output row of one channel (AVX2): the input
//! plane is pre-padded and zero-point-shifted to int16 (`x − zx`, padding 0),
//! weights are `w − zw`; each tap adds `x·w` (|·| ≤ 65 025) in wrapping
//! int32 — the reference's accumulator, exact. LLVM vectorises the lane loop
//! with AVX2 inside the target-feature function.

/// `acc[ox] = Σ_t w_t · xpad[base + off_t + ox·stride]` for `ox < acc.len()`.
///
/// # Safety
/// AVX2 must be available. (All accesses are bounds-checked slices.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn dw_row(
    xpad: &[i16],
    base: usize,
    taps: &[(usize, i32)],
    stride: usize,
    acc: &mut [i32],
) {
    row(xpad, base, taps, stride, acc)
}

/// Portable twin of [`dw_row`].
#[inline(always)]
pub fn row(xpad: &[i16], base: usize, taps: &[(usize, i32)], stride: usize, acc: &mut [i32]) {
    let ow = acc.len();
    acc.fill(0);
    if ow == 0 {
        return;
    }
    for &(off, w) in taps {
        let src = &xpad[base + off..base + off + (ow - 1) * stride + 1];
        if stride == 1 {
            for (a, &x) in acc.iter_mut().zip(src) {
                *a = a.wrapping_add(x as i32 * w);
            }
        } else {
            for (a, &x) in acc.iter_mut().zip(src.iter().step_by(stride)) {
                *a = a.wrapping_add(x as i32 * w);
            }
        }
    }
}
