//! ARMv8.2 dot-product 8x8 kernel on the `c4` layout: per 4-deep K block,
//! two activation registers (rows 0-3 / 4-7, 4 bytes each, stored as
//! `x - 128` in s8) and two weight registers (columns 0-3 / 4-7); 16
//! `sdot` by element (16 MACs each) update 16 int32x4 accumulators.
//! `sdot` needs both operands signed, hence the `x ^ 0x80` activation
//! encoding, undone exactly in the epilogue with the packed column sums
//! (`+128·Σw`). `sdot` is not a stable intrinsic on Rust 1.95: `asm!`.

use core::arch::aarch64::*;
use core::arch::asm;

use rquant_core::gemm::Micro;

use crate::pack::{MR, NR};

/// Bytes of one packed K block of A or B.
const BLK: usize = 4 * MR;

/// `c[r][j] = Σ a[kb][r][t]·b[kb][j][t]` (both s8) over `kb` blocks.
///
/// # Safety
/// The CPU must support NEON and dotprod (reached only through an engine
/// value whose ISA `Dotprod` or better was detected).
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
    let (mut c40, mut c41, mut c50, mut c51, mut c60, mut c61, mut c70, mut c71) =
        (z, z, z, z, z, z, z, z);
    for blk in 0..kb {
        // SAFETY: a and b hold at least kb*32 bytes (checked by the caller).
        let (a0, a1, b0, b1) = unsafe {
            let pa = a.add(blk * BLK);
            let pb = b.add(blk * BLK);
            (
                vld1q_s8(pa),
                vld1q_s8(pa.add(16)),
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
                "sdot {c40:v}.4s, {b0:v}.16b, {a1:v}.4b[0]",
                "sdot {c41:v}.4s, {b1:v}.16b, {a1:v}.4b[0]",
                "sdot {c50:v}.4s, {b0:v}.16b, {a1:v}.4b[1]",
                "sdot {c51:v}.4s, {b1:v}.16b, {a1:v}.4b[1]",
                "sdot {c60:v}.4s, {b0:v}.16b, {a1:v}.4b[2]",
                "sdot {c61:v}.4s, {b1:v}.16b, {a1:v}.4b[2]",
                "sdot {c70:v}.4s, {b0:v}.16b, {a1:v}.4b[3]",
                "sdot {c71:v}.4s, {b1:v}.16b, {a1:v}.4b[3]",
                c00 = inout(vreg) c00, c01 = inout(vreg) c01,
                c10 = inout(vreg) c10, c11 = inout(vreg) c11,
                c20 = inout(vreg) c20, c21 = inout(vreg) c21,
                c30 = inout(vreg) c30, c31 = inout(vreg) c31,
                c40 = inout(vreg) c40, c41 = inout(vreg) c41,
                c50 = inout(vreg) c50, c51 = inout(vreg) c51,
                c60 = inout(vreg) c60, c61 = inout(vreg) c61,
                c70 = inout(vreg) c70, c71 = inout(vreg) c71,
                a0 = in(vreg_low16) a0, a1 = in(vreg_low16) a1,
                b0 = in(vreg) b0, b1 = in(vreg) b1,
                options(pure, nomem, nostack),
            );
        }
    }
    let rows = [
        (c00, c01),
        (c10, c11),
        (c20, c21),
        (c30, c31),
        (c40, c41),
        (c50, c51),
        (c60, c61),
        (c70, c71),
    ];
    for (r, (lo, hi)) in rows.into_iter().enumerate() {
        // SAFETY: c has 64 elements; r*8+8 <= 64.
        unsafe {
            vst1q_s32(c.as_mut_ptr().add(r * NR), lo);
            vst1q_s32(c.as_mut_ptr().add(r * NR + 4), hi);
        }
    }
}
