//! i8mm 4x8 kernel for tiles of 2-4 rows on the `c8` layout (row pairs 0-1
//! and 2-3 of the packed 8-row tile): per 8-deep K block two activation and
//! four weight registers, 8 `usmmla` (32 MACs each) — half of the 8x8
//! kernel's instructions.

use core::arch::aarch64::*;
use core::arch::asm;

use rquant_core::gemm::Micro;

use crate::pack::{MR, NR};

/// Bytes of one packed K block of A or B.
const BLK: usize = 8 * MR;

/// `c[r][j] = Σ a[kb][r][t]·b[kb][j][t]` (u8 × s8) for r < 4; rows 4-7 untouched.
///
/// # Safety
/// NEON and i8mm available (reached only through an engine value whose ISA
/// `I8mm` was detected).
pub unsafe fn gemm(kb: usize, a: &[u8], b: &[i8], c: &mut [i32; MR * NR]) {
    assert!(a.len() >= kb * BLK && b.len() >= kb * BLK);
    // SAFETY: lengths checked above; the features are guaranteed by the caller.
    unsafe { inner(kb, a.as_ptr(), b.as_ptr(), c) }
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
unsafe fn inner(kb: usize, a: *const u8, b: *const i8, c: &mut [i32; MR * NR]) {
    let z = vdupq_n_s32(0);
    let (mut c00, mut c01, mut c02, mut c03) = (z, z, z, z);
    let (mut c10, mut c11, mut c12, mut c13) = (z, z, z, z);
    for blk in 0..kb {
        // SAFETY: a and b hold at least kb*64 bytes (checked by the caller).
        let (a0, a1, b0, b1, b2, b3) = unsafe {
            let pa = a.add(blk * BLK);
            let pb = b.add(blk * BLK);
            (
                vld1q_u8(pa),
                vld1q_u8(pa.add(16)),
                vld1q_s8(pb),
                vld1q_s8(pb.add(16)),
                vld1q_s8(pb.add(32)),
                vld1q_s8(pb.add(48)),
            )
        };
        // SAFETY: register-only arithmetic; i8mm is enabled on this function.
        unsafe {
            asm!(
                "usmmla {c00:v}.4s, {a0:v}.16b, {b0:v}.16b",
                "usmmla {c01:v}.4s, {a0:v}.16b, {b1:v}.16b",
                "usmmla {c02:v}.4s, {a0:v}.16b, {b2:v}.16b",
                "usmmla {c03:v}.4s, {a0:v}.16b, {b3:v}.16b",
                "usmmla {c10:v}.4s, {a1:v}.16b, {b0:v}.16b",
                "usmmla {c11:v}.4s, {a1:v}.16b, {b1:v}.16b",
                "usmmla {c12:v}.4s, {a1:v}.16b, {b2:v}.16b",
                "usmmla {c13:v}.4s, {a1:v}.16b, {b3:v}.16b",
                c00 = inout(vreg) c00, c01 = inout(vreg) c01,
                c02 = inout(vreg) c02, c03 = inout(vreg) c03,
                c10 = inout(vreg) c10, c11 = inout(vreg) c11,
                c12 = inout(vreg) c12, c13 = inout(vreg) c13,
                a0 = in(vreg) a0, a1 = in(vreg) a1,
                b0 = in(vreg) b0, b1 = in(vreg) b1, b2 = in(vreg) b2, b3 = in(vreg) b3,
                options(pure, nomem, nostack),
            );
        }
    }
    let blocks = [[c00, c01, c02, c03], [c10, c11, c12, c13]];
    for (q, blk) in blocks.into_iter().enumerate() {
        let s = |v: int32x4_t| vreinterpretq_s64_s32(v);
        let lo_a = vreinterpretq_s32_s64(vzip1q_s64(s(blk[0]), s(blk[1])));
        let hi_a = vreinterpretq_s32_s64(vzip2q_s64(s(blk[0]), s(blk[1])));
        let lo_b = vreinterpretq_s32_s64(vzip1q_s64(s(blk[2]), s(blk[3])));
        let hi_b = vreinterpretq_s32_s64(vzip2q_s64(s(blk[2]), s(blk[3])));
        // SAFETY: c has 64 elements; (2q+1)*8+8 <= 32 for q < 2.
        unsafe {
            let p = c.as_mut_ptr().add(2 * q * NR);
            vst1q_s32(p, lo_a);
            vst1q_s32(p.add(4), lo_b);
            vst1q_s32(p.add(NR), hi_a);
            vst1q_s32(p.add(NR + 4), hi_b);
        }
    }
}
