//! ARMv8.6 int8 matrix-multiply 8x8 kernel on the `c8` layout: per 8-deep K
//! block, four activation registers (row pairs 2q, 2q+1: 8 u8 each) and four
//! weight registers (column pairs 2p, 2p+1: 8 s8 each); 16 `usmmla` (32 MACs
//! each: a 2x8 by 8x2 product) update 16 int32x4 accumulators, each a 2x2
//! output block. `usmmla` multiplies unsigned activations by signed weights
//! directly, so the epilogue only subtracts the zero-point terms.
//! `usmmla` is not a stable intrinsic on Rust 1.95: `asm!`.

use core::arch::aarch64::*;
use core::arch::asm;

use rquant_core::gemm::Micro;

use crate::pack::{MR, NR};

/// Bytes of one packed K block of A or B.
const BLK: usize = 8 * MR;

/// `c[r][j] = Σ a[kb][r][t]·b[kb][j][t]` (u8 × s8) over `kb` blocks.
///
/// # Safety
/// The CPU must support NEON and i8mm (reached only through an engine value
/// whose ISA `I8mm` was detected).
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
    // acc[q][p]: rows 2q, 2q+1 × columns 2p, 2p+1 as [r0c0, r0c1, r1c0, r1c1].
    let (mut c00, mut c01, mut c02, mut c03) = (z, z, z, z);
    let (mut c10, mut c11, mut c12, mut c13) = (z, z, z, z);
    let (mut c20, mut c21, mut c22, mut c23) = (z, z, z, z);
    let (mut c30, mut c31, mut c32, mut c33) = (z, z, z, z);
    for blk in 0..kb {
        // SAFETY: a and b hold at least kb*64 bytes (checked by the caller).
        let (a0, a1, a2, a3, b0, b1, b2, b3) = unsafe {
            let pa = a.add(blk * BLK);
            let pb = b.add(blk * BLK);
            (
                vld1q_u8(pa),
                vld1q_u8(pa.add(16)),
                vld1q_u8(pa.add(32)),
                vld1q_u8(pa.add(48)),
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
                "usmmla {c20:v}.4s, {a2:v}.16b, {b0:v}.16b",
                "usmmla {c21:v}.4s, {a2:v}.16b, {b1:v}.16b",
                "usmmla {c22:v}.4s, {a2:v}.16b, {b2:v}.16b",
                "usmmla {c23:v}.4s, {a2:v}.16b, {b3:v}.16b",
                "usmmla {c30:v}.4s, {a3:v}.16b, {b0:v}.16b",
                "usmmla {c31:v}.4s, {a3:v}.16b, {b1:v}.16b",
                "usmmla {c32:v}.4s, {a3:v}.16b, {b2:v}.16b",
                "usmmla {c33:v}.4s, {a3:v}.16b, {b3:v}.16b",
                c00 = inout(vreg) c00, c01 = inout(vreg) c01,
                c02 = inout(vreg) c02, c03 = inout(vreg) c03,
                c10 = inout(vreg) c10, c11 = inout(vreg) c11,
                c12 = inout(vreg) c12, c13 = inout(vreg) c13,
                c20 = inout(vreg) c20, c21 = inout(vreg) c21,
                c22 = inout(vreg) c22, c23 = inout(vreg) c23,
                c30 = inout(vreg) c30, c31 = inout(vreg) c31,
                c32 = inout(vreg) c32, c33 = inout(vreg) c33,
                a0 = in(vreg) a0, a1 = in(vreg) a1, a2 = in(vreg) a2, a3 = in(vreg) a3,
                b0 = in(vreg) b0, b1 = in(vreg) b1, b2 = in(vreg) b2, b3 = in(vreg) b3,
                options(pure, nomem, nostack),
            );
        }
    }
    let blocks = [
        [c00, c01, c02, c03],
        [c10, c11, c12, c13],
        [c20, c21, c22, c23],
        [c30, c31, c32, c33],
    ];
    for (q, blk) in blocks.into_iter().enumerate() {
        let s = |v: int32x4_t| vreinterpretq_s64_s32(v);
        let lo_a = vreinterpretq_s32_s64(vzip1q_s64(s(blk[0]), s(blk[1]))); // row 2q, cols 0-3
        let hi_a = vreinterpretq_s32_s64(vzip2q_s64(s(blk[0]), s(blk[1]))); // row 2q+1, cols 0-3
        let lo_b = vreinterpretq_s32_s64(vzip1q_s64(s(blk[2]), s(blk[3]))); // row 2q, cols 4-7
        let hi_b = vreinterpretq_s32_s64(vzip2q_s64(s(blk[2]), s(blk[3]))); // row 2q+1, cols 4-7
                                                                            // SAFETY: c has 64 elements; (2q+1)*8+8 <= 64 for q < 4.
        unsafe {
            let p = c.as_mut_ptr().add(2 * q * NR);
            vst1q_s32(p, lo_a);
            vst1q_s32(p.add(4), lo_b);
            vst1q_s32(p.add(NR), hi_a);
            vst1q_s32(p.add(NR + 4), hi_b);
        }
    }
}
