//! Dot-product 4x8 kernel for tiles of 2-4 rows on the `c4` layout (rows 0-3
//! of the packed 8-row tile): per 4-deep K block one activation register and
//! two weight registers, 8 `sdot` by element (16 MACs each) — half of the
//! 8x8 kernel's instructions.

use core::arch::aarch64::*;
use core::arch::asm;

use rquant_core::gemm::Micro;

use crate::pack::{MR, NR};

/// Bytes of one packed K block of A or B.
const BLK: usize = 4 * MR;

/// `c[r][j] = Σ a[kb][r][t]·b[kb][j][t]` (s8) for r < 4; rows 4-7 untouched.
///
/// # Safety
/// NEON and dotprod available (reached only through an engine value whose
/// ISA `Dotprod` or better was detected).
pub unsafe fn gemm(kb: usize, a: &[u8], b: &[i8], c: &mut [i32; MR * NR]) {
    assert!(a.len() >= kb * BLK && b.len() >= kb * BLK);
    // SAFETY: lengths checked above; the features are guaranteed by the caller.
    unsafe { inner(kb, a.as_ptr() as *const i8, b.as_ptr(), c) }
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
unsafe fn inner(kb: usize, a: *const i8, b: *const i8, c: &mut [i32; MR * NR]) {
    let z = vdupq_n_s32(0);
    let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21, mut c30, mut c31) =
        (z, z, z, z, z, z, z, z);
    for blk in 0..kb {
        // SAFETY: a and b hold at least kb*32 bytes (checked by the caller).
        let (a0, b0, b1) = unsafe {
            let pb = b.add(blk * BLK);
            (
                vld1q_s8(a.add(blk * BLK)),
                vld1q_s8(pb),
                vld1q_s8(pb.add(16)),
            )
        };
        // SAFETY: register-only arithmetic; dotprod is enabled on this function.
        unsafe {
            asm!(
                "sdot {c00:v}.4s, {b0:v}.16b, {a0:v}.4b[0]",
                "sdot {c01:v}.4s, {b1:v}.16b, {a0:v}.4b[0]",
                "sdot {c10:v}.4s, {b0:v}.16b, {a0:v}.4b[1]",
                "sdot {c11:v}.4s, {b1:v}.16b, {a0:v}.4b[1]",
                "sdot {c20:v}.4s, {b0:v}.16b, {a0:v}.4b[2]",
                "sdot {c21:v}.4s, {b1:v}.16b, {a0:v}.4b[2]",
                "sdot {c30:v}.4s, {b0:v}.16b, {a0:v}.4b[3]",
                "sdot {c31:v}.4s, {b1:v}.16b, {a0:v}.4b[3]",
                c00 = inout(vreg) c00, c01 = inout(vreg) c01,
                c10 = inout(vreg) c10, c11 = inout(vreg) c11,
                c20 = inout(vreg) c20, c21 = inout(vreg) c21,
                c30 = inout(vreg) c30, c31 = inout(vreg) c31,
                a0 = in(vreg_low16) a0,
                b0 = in(vreg) b0, b1 = in(vreg) b1,
                options(pure, nomem, nostack),
            );
        }
    }
    let rows = [(c00, c01), (c10, c11), (c20, c21), (c30, c31)];
    for (r, (lo, hi)) in rows.into_iter().enumerate() {
        // SAFETY: c has 64 elements; r*8+8 <= 32.
        unsafe {
            vst1q_s32(c.as_mut_ptr().add(r * NR), lo);
            vst1q_s32(c.as_mut_ptr().add(r * NR + 4), hi);
        }
    }
}
