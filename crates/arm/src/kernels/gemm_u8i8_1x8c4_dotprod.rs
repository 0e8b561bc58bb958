//! Dot-product 1x8 kernel (one activation row) on the `c4` layout: per
//! 4-deep K block, row 0's four `x - 128` bytes broadcast to every lane and two
//! 16-byte weight registers (columns 0-3 / 4-7): 2 `sdot` (16 MACs each), all
//! useful, where the 8x8 kernel would issue 16 for the same work.

use core::arch::aarch64::*;
use core::arch::asm;

use rquant_core::gemm::Micro;

use crate::pack::{MR, NR};

/// `c[0][j] = Σ a[kb][0][t]·b[kb][j][t]` (s8) over `kb` blocks; other rows untouched.
///
/// # Safety
/// NEON and dotprod available (reached only through an engine value whose
/// ISA `Dotprod` or better was detected).
pub unsafe fn gemm(kb: usize, a: &[u8], b: &[i8], c: &mut [i32; MR * NR]) {
    assert!(a.len() >= kb * 4 * MR && b.len() >= kb * 4 * NR);
    // SAFETY: lengths checked above; features guaranteed by the caller.
    unsafe { inner(kb, a, b.as_ptr(), c) }
}

/// The shared microkernel signature (`rquant_core::gemm::Micro`): `t.c`
/// (+)= this kernel's tile over `t.ku` k-units (the K blocks of the driver
/// accumulate through [`super::accumulate`]).
///
/// # Safety
/// NEON and dotprod available; `t` fits the layout's shape (`Micro::assert_fits`).
pub unsafe fn run(t: Micro<'_>) {
    super::accumulate(t, |ku, a, b, c| {
        // SAFETY: the caller's contract (features); the slices are checked
        // inside `gemm`.
        unsafe { gemm(ku, a, bytemuck::cast_slice(b), c) }
    })
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn inner(kb: usize, a: &[u8], b: *const i8, c: &mut [i32; MR * NR]) {
    let mut lo = vdupq_n_s32(0);
    let mut hi = vdupq_n_s32(0);
    for blk in 0..kb {
        // SAFETY: a holds kb*32 bytes and b kb*32 (checked by the caller);
        // row 0 of block blk is the 4 bytes at blk*32.
        let (va, b0, b1) = unsafe {
            let word = (a.as_ptr().add(blk * 4 * MR) as *const u32).read_unaligned();
            (
                vreinterpretq_s8_u32(vdupq_n_u32(word)),
                vld1q_s8(b.add(blk * 32)),
                vld1q_s8(b.add(blk * 32 + 16)),
            )
        };
        // SAFETY: register-only arithmetic; dotprod is enabled on this function.
        unsafe {
            asm!(
                "sdot {lo:v}.4s, {b0:v}.16b, {a:v}.16b",
                "sdot {hi:v}.4s, {b1:v}.16b, {a:v}.16b",
                lo = inout(vreg) lo, hi = inout(vreg) hi,
                b0 = in(vreg) b0, b1 = in(vreg) b1, a = in(vreg) va,
                options(pure, nomem, nostack),
            );
        }
    }
    // SAFETY: c has 64 elements.
    unsafe {
        vst1q_s32(c.as_mut_ptr(), lo);
        vst1q_s32(c.as_mut_ptr().add(4), hi);
    }
}
