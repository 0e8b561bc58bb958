//! Baseline NEON 8x8 kernel on the `c1` layout: per K step one 8-row i16
//! activation vector and one 8-column i16 weight vector; 16 `smlal`/`smlal2`
//! by lane (4 MACs each) update 16 int32x4 accumulators. Products of two
//! values in [-255, 255] are exact in int32 and the sum wraps like the
//! reference.

use core::arch::aarch64::*;

use rquant_core::gemm::Micro;

use crate::pack::{MR, NR};

/// `c[r][j] = Σ_k a[k][r]·b[k][j]` over `kc` steps (wrapping int32).
///
/// # Safety
/// The CPU must support NEON (always true on AArch64 Linux; the engine only
/// reaches this through an `Isa::Neon`-or-better value that detected it).
pub unsafe fn gemm(kc: usize, a: &[i16], b: &[i16], c: &mut [i32; MR * NR]) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    // SAFETY: lengths checked above; NEON is guaranteed by the caller.
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
    let mut acc = [[z; 2]; MR];
    for k in 0..kc {
        // SAFETY: a and b hold at least kc*8 elements (checked by the caller).
        let (va, vb) = unsafe { (vld1q_s16(a.add(k * MR)), vld1q_s16(b.add(k * NR))) };
        let bl = vget_low_s16(vb);
        macro_rules! row {
            ($r:literal) => {
                acc[$r][0] = vmlal_laneq_s16::<$r>(acc[$r][0], bl, va);
                acc[$r][1] = vmlal_high_laneq_s16::<$r>(acc[$r][1], vb, va);
            };
        }
        row!(0);
        row!(1);
        row!(2);
        row!(3);
        row!(4);
        row!(5);
        row!(6);
        row!(7);
    }
    for (r, pair) in acc.iter().enumerate() {
        // SAFETY: c has MR*NR = 64 elements; r*8+4+4 <= 64.
        unsafe {
            vst1q_s32(c.as_mut_ptr().add(r * NR), pair[0]);
            vst1q_s32(c.as_mut_ptr().add(r * NR + 4), pair[1]);
        }
    }
}
