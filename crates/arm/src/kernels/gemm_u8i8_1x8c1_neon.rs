//! Baseline NEON 1x8 kernel (one activation row, e.g. batch-1 linear) on the
//! `c1` layout: per K step the row's `x - x_zp` (read from row 0 of the packed
//! 8-row tile) times one 8-column i16 weight vector: `smlal` + `smlal2` by
//! scalar (4 MACs each). The 8x8 kernel would spend 7/8 of its MACs on
//! padding rows here.

use core::arch::aarch64::*;

use rquant_core::gemm::Micro;

use crate::pack::{MR, NR};

/// `c[0][j] = Σ_k a[k][0]·b[k][j]` over `kc` steps; other rows untouched.
///
/// # Safety
/// NEON available (reached only through an engine value with `Isa::Neon` or better).
pub unsafe fn gemm(kc: usize, a: &[i16], b: &[i16], c: &mut [i32; MR * NR]) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    // SAFETY: lengths checked above; NEON guaranteed by the caller.
    unsafe { inner(kc, a, b.as_ptr(), c) }
}

/// The shared microkernel signature (`rquant_core::gemm::Micro`): `t.c`
/// (+)= this kernel's tile over `t.ku` k-units (the K blocks of the driver
/// accumulate through [`super::accumulate`]).
///
/// # Safety
/// NEON available; `t` fits the layout's shape (`Micro::assert_fits`).
pub unsafe fn run(t: Micro<'_>) {
    super::accumulate(t, |ku, a, b, c| {
        // SAFETY: the caller's contract (features); the slices are checked
        // inside `gemm`.
        unsafe { gemm(ku, bytemuck::cast_slice(a), bytemuck::cast_slice(b), c) }
    })
}

#[target_feature(enable = "neon")]
unsafe fn inner(kc: usize, a: &[i16], b: *const i16, c: &mut [i32; MR * NR]) {
    let mut lo = vdupq_n_s32(0);
    let mut hi = vdupq_n_s32(0);
    for k in 0..kc {
        let ak = a[k * MR];
        // SAFETY: b holds kc*8 values (checked by the caller).
        let vb = unsafe { vld1q_s16(b.add(k * NR)) };
        lo = vmlal_n_s16(lo, vget_low_s16(vb), ak);
        hi = vmlal_high_n_s16(hi, vb, ak);
    }
    // SAFETY: c has 64 elements.
    unsafe {
        vst1q_s32(c.as_mut_ptr(), lo);
        vst1q_s32(c.as_mut_ptr().add(4), hi);
    }
}
