//! Baseline NEON 4x8 kernel for tiles of 2-4 rows (small batches, M tails) on
//! the `c1` layout (rows 0-3 of the packed 8-row tile): 8 `smlal`/`smlal2` by
//! lane per K step (4 MACs each), half of the 8x8 kernel's work.

use core::arch::aarch64::*;

use rquant_core::gemm::Micro;

use crate::pack::{MR, NR};

/// `c[r][j] = Σ_k a[k][r]·b[k][j]` for r < 4 over `kc` steps; rows 4-7 untouched.
///
/// # Safety
/// NEON available (reached only through an engine value with `Isa::Neon` or better).
pub unsafe fn gemm(kc: usize, a: &[i16], b: &[i16], c: &mut [i32; MR * NR]) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    // SAFETY: lengths checked above; NEON guaranteed by the caller.
    unsafe { inner(kc, a.as_ptr(), b.as_ptr(), c) }
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
unsafe fn inner(kc: usize, a: *const i16, b: *const i16, c: &mut [i32; MR * NR]) {
    let z = vdupq_n_s32(0);
    let mut acc = [[z; 2]; 4];
    for k in 0..kc {
        // SAFETY: a and b hold at least kc*8 elements (checked by the caller).
        let (va, vb) = unsafe { (vld1_s16(a.add(k * MR)), vld1q_s16(b.add(k * NR))) };
        let bl = vget_low_s16(vb);
        macro_rules! row {
            ($r:literal) => {
                acc[$r][0] = vmlal_lane_s16::<$r>(acc[$r][0], bl, va);
                acc[$r][1] = vmlal_high_lane_s16::<$r>(acc[$r][1], vb, va);
            };
        }
        row!(0);
        row!(1);
        row!(2);
        row!(3);
    }
    for (r, pair) in acc.iter().enumerate() {
        // SAFETY: c has 64 elements; r*8+8 <= 32.
        unsafe {
            vst1q_s32(c.as_mut_ptr().add(r * NR), pair[0]);
            vst1q_s32(c.as_mut_ptr().add(r * NR + 4), pair[1]);
        }
    }
}
