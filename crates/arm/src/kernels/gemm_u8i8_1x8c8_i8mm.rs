//! i8mm 1x8 kernel (one activation row) on the `c8` layout, with `usdot`
//! (u8 × s8 dot product, part of FEAT_I8MM): per 8-deep K block, row 0's 8
//! bytes duplicated into both halves of a register and the four column-pair
//! weight registers; 4 `usdot` (16 MACs each, all useful — `usmmla` would
//! waste half on the missing second row). Lane 2q/2q+1 of the accumulator for
//! column pair p hold the K halves 0-3 / 4-7 of columns 2p and 2p+1; a
//! pairwise add at the end folds them.

use core::arch::aarch64::*;
use core::arch::asm;

use rquant_core::gemm::Micro;

use crate::pack::{MR, NR};

/// `c[0][j] = Σ a[kb][0][t]·b[kb][j][t]` (u8 × s8) over `kb` blocks; other
/// rows untouched.
///
/// # Safety
/// NEON and i8mm available (reached only through an engine value whose ISA
/// `I8mm` was detected).
pub unsafe fn gemm(kb: usize, a: &[u8], b: &[i8], c: &mut [i32; MR * NR]) {
    assert!(a.len() >= kb * 8 * MR && b.len() >= kb * 8 * NR);
    // SAFETY: lengths checked above; features guaranteed by the caller.
    unsafe { inner(kb, a, b.as_ptr(), c) }
}

/// The shared microkernel signature (`rquant_core::gemm::Micro`): `t.c`
/// (+)= this kernel's tile over `t.ku` k-units (the K blocks of the driver
/// accumulate through [`super::accumulate`]).
///
/// # Safety
/// NEON and i8mm available; `t` fits the layout's shape (`Micro::assert_fits`).
pub unsafe fn run(t: Micro<'_>) {
    super::accumulate(t, |ku, a, b, c| {
        // SAFETY: the caller's contract (features); the slices are checked
        // inside `gemm`.
        unsafe { gemm(ku, a, bytemuck::cast_slice(b), c) }
    })
}

#[target_feature(enable = "neon,i8mm")]
unsafe fn inner(kb: usize, a: &[u8], b: *const i8, c: &mut [i32; MR * NR]) {
    let z = vdupq_n_s32(0);
    let (mut c0, mut c1, mut c2, mut c3) = (z, z, z, z);
    for blk in 0..kb {
        // SAFETY: a and b hold kb*64 bytes (checked by the caller); row 0 of
        // block blk is the 8 bytes at blk*64.
        let (va, b0, b1, b2, b3) = unsafe {
            let word = (a.as_ptr().add(blk * 8 * MR) as *const u64).read_unaligned();
            let p = b.add(blk * 64);
            (
                vreinterpretq_u8_u64(vdupq_n_u64(word)),
                vld1q_s8(p),
                vld1q_s8(p.add(16)),
                vld1q_s8(p.add(32)),
                vld1q_s8(p.add(48)),
            )
        };
        // SAFETY: register-only arithmetic; i8mm is enabled on this function.
        unsafe {
            asm!(
                "usdot {c0:v}.4s, {a:v}.16b, {b0:v}.16b",
                "usdot {c1:v}.4s, {a:v}.16b, {b1:v}.16b",
                "usdot {c2:v}.4s, {a:v}.16b, {b2:v}.16b",
                "usdot {c3:v}.4s, {a:v}.16b, {b3:v}.16b",
                c0 = inout(vreg) c0, c1 = inout(vreg) c1,
                c2 = inout(vreg) c2, c3 = inout(vreg) c3,
                a = in(vreg) va,
                b0 = in(vreg) b0, b1 = in(vreg) b1, b2 = in(vreg) b2, b3 = in(vreg) b3,
                options(pure, nomem, nostack),
            );
        }
    }
    // [c0: col0 lo, col0 hi, col1 lo, col1 hi] → pairwise adds give columns 0..3.
    let lo = vpaddq_s32(c0, c1);
    let hi = vpaddq_s32(c2, c3);
    // SAFETY: c has 64 elements.
    unsafe {
        vst1q_s32(c.as_mut_ptr(), lo);
        vst1q_s32(c.as_mut_ptr().add(4), hi);
    }
}
