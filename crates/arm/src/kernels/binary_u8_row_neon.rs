//! Quantized add / add_relu / mul of quint8 rows, NEON, 16 elements a step
//! (`rquant_core::membound::BinaryParams`): codes widened to int32, zero
//! points subtracted (exact), converted to f32; add: `(a·sa + b·sb)·inv`
//! (relu before the `·inv`), mul: `(a·b)·mult` (the product of two codes is
//! exact in f32); then clamped to `[−oz, 255 − oz]`, rounded half to even
//! (`fcvtns`) and the zero point added — `BinaryParams::apply`'s
//! operations in the same order. The second operand is a row as long as
//! the first, one row repeated (NHWC pixels against a channel vector) or
//! one code. Tails end with one overlapping step; fewer than 16 elements
//! run the scalar loop.

use core::arch::aarch64::*;

use rquant_core::membound::{binary_scalar_part, BinaryParams, Operand, Out};
use rquant_core::ops::BinaryOp;

#[derive(Clone, Copy)]
struct Consts {
    sa: float32x4_t,
    sb: float32x4_t,
    inv: float32x4_t,
    mult: float32x4_t,
    za: int32x4_t,
    zb: int32x4_t,
    lo: float32x4_t,
    hi: float32x4_t,
    oz: int32x4_t,
}

#[derive(Clone, Copy)]
enum B {
    Ptr(*const u8),
    Splat(float32x4_t),
}

/// # Safety
/// NEON available; `b.check(a.len(), dst.len())` holds.
#[target_feature(enable = "neon")]
pub unsafe fn binary(p: &BinaryParams, a: &[u8], b: Operand<'_>, dst: &mut [Out]) {
    let n = a.len();
    let short = match b {
        Operand::Rows(r) => r.len() < 16,
        _ => n < 16,
    };
    if short {
        return binary_scalar_part(p, a, b, dst, 0);
    }
    let (lo, hi) = p.bounds();
    let k = Consts {
        sa: vdupq_n_f32(p.sa),
        sb: vdupq_n_f32(p.sb),
        inv: vdupq_n_f32(p.inv),
        mult: vdupq_n_f32(p.mult),
        za: vdupq_n_s32(p.za),
        zb: vdupq_n_s32(p.zb),
        lo: vdupq_n_f32(lo),
        hi: vdupq_n_f32(hi),
        oz: vdupq_n_s32(p.oz),
    };
    let (pa, pd) = (a.as_ptr(), dst.as_mut_ptr() as *mut u8);
    let run = |pa: *const u8, b: B, pd: *mut u8, len: usize| match p.op {
        BinaryOp::Add => segment::<0>(&k, pa, b, pd, len),
        BinaryOp::AddRelu => segment::<1>(&k, pa, b, pd, len),
        BinaryOp::Mul => segment::<2>(&k, pa, b, pd, len),
    };
    // SAFETY (the calls below): each segment's `len` elements of a, b and
    // dst lie inside their slices (the operand check), and len ≥ 16.
    match b {
        Operand::Same(bs) => run(pa, B::Ptr(bs.as_ptr()), pd, n),
        Operand::Splat(v) => run(pa, B::Splat(vdupq_n_f32((v as i32 - p.zb) as f32)), pd, n),
        Operand::Rows(r) => {
            let l = r.len();
            for i in 0..n / l {
                run(pa.add(i * l), B::Ptr(r.as_ptr()), pd.add(i * l), l);
            }
        }
    }
}

/// Four f32 lanes of each quarter of 16 codes, zero point subtracted.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn widen(v: uint8x16_t, z: int32x4_t) -> [float32x4_t; 4] {
    let (l, h) = (vmovl_u8(vget_low_u8(v)), vmovl_high_u8(v));
    let q = |x: uint32x4_t| vcvtq_f32_s32(vsubq_s32(vreinterpretq_s32_u32(x), z));
    [
        q(vmovl_u16(vget_low_u16(l))),
        q(vmovl_high_u16(l)),
        q(vmovl_u16(vget_low_u16(h))),
        q(vmovl_high_u16(h)),
    ]
}

/// `len ≥ 16` elements, 16 a step, the last step overlapping.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn segment<const OP: u8>(k: &Consts, pa: *const u8, b: B, pd: *mut u8, len: usize) {
    // SAFETY (loads and stores below): every access is within the first
    // `len` elements of the segment (the caller's contract).
    let step = |i: usize| {
        let fa = widen(vld1q_u8(pa.add(i)), k.za);
        let fb = match b {
            B::Ptr(pb) => widen(vld1q_u8(pb.add(i)), k.zb),
            B::Splat(v) => [v; 4],
        };
        let mut r = [vdupq_n_s32(0); 4];
        for q in 0..4 {
            let y = match OP {
                0 => vmulq_f32(
                    vaddq_f32(vmulq_f32(fa[q], k.sa), vmulq_f32(fb[q], k.sb)),
                    k.inv,
                ),
                1 => vmulq_f32(
                    vmaxq_f32(
                        vaddq_f32(vmulq_f32(fa[q], k.sa), vmulq_f32(fb[q], k.sb)),
                        vdupq_n_f32(0.0),
                    ),
                    k.inv,
                ),
                _ => vmulq_f32(vmulq_f32(fa[q], fb[q]), k.mult),
            };
            r[q] = vaddq_s32(vcvtnq_s32_f32(vminq_f32(vmaxq_f32(y, k.lo), k.hi)), k.oz);
        }
        let h0 = vcombine_u16(vqmovun_s32(r[0]), vqmovun_s32(r[1]));
        let h1 = vcombine_u16(vqmovun_s32(r[2]), vqmovun_s32(r[3]));
        vst1q_u8(pd.add(i), vcombine_u8(vqmovn_u16(h0), vqmovn_u16(h1)));
    };
    let mut i = 0;
    while i + 16 <= len {
        step(i);
        i += 16;
    }
    if i < len {
        step(len - 16);
    }
}
