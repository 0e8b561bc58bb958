//! Element-wise, pooling and lookup-table ops. The scalar formulas are
//! `rquant_core::portable`'s (the reference engine's own), used for the
//! scalar path, for tails and borders, and for cat and the average pools;
//! add / add_relu / mul / relu, max pooling and the 256-entry tables
//! (hardswish, sigmoid) have NEON versions performing the same operations
//! (the same f32 operations in the same order, `fcvtns` = round half to even;
//! max and table lookups are exact).

#[cfg(target_arch = "aarch64")]
use rquant_core::numerics::{dequantize_val, inv_scale, quantize_val};
use rquant_core::ops::{BinaryOp, MaxPool2dParams, OutQ, PoolGeometry};
use rquant_core::{portable, QTensor, Result};

use crate::isa::Caps;

fn pt(x: &QTensor<u8>) -> (f64, i64) {
    x.q_per_tensor().expect("validated per-tensor")
}

pub fn binary(
    caps: Caps,
    op: BinaryOp,
    a: &QTensor<u8>,
    b: &QTensor<u8>,
    out: OutQ,
) -> Result<Vec<u8>> {
    #[cfg(target_arch = "aarch64")]
    if caps.neon {
        let (sa, za) = pt(a);
        let (sb, zb) = pt(b);
        let inv = inv_scale(out.scale);
        let mut y = vec![0u8; a.numel()];
        let p = neon::Params {
            sa: sa as f32,
            za: za as i32,
            sb: sb as f32,
            zb: zb as i32,
            inv,
            mult: portable::mul_multiplier(sa, sb, out.scale),
            oz: out.zero_point as i32,
        };
        // SAFETY: NEON was detected by the engine (caps.neon).
        let done = unsafe { neon::binary(op, &p, a.int_repr(), b.int_repr(), &mut y) };
        // The tail (fewer than 8 values): portable's formulas, value by value.
        let pairs = a.int_repr()[done..].iter().zip(&b.int_repr()[done..]);
        for (d, (&qa, &qb)) in y[done..].iter_mut().zip(pairs) {
            *d = match op {
                BinaryOp::Add | BinaryOp::AddRelu => {
                    let mut c =
                        dequantize_val(p.sa, za, qa as i64) + dequantize_val(p.sb, zb, qb as i64);
                    if op == BinaryOp::AddRelu {
                        c = c.max(0.0);
                    }
                    quantize_val::<u8>(inv, out.zero_point, c)
                }
                BinaryOp::Mul => portable::requantize_from_int(
                    (qa as i32 - za as i32) * (qb as i32 - zb as i32),
                    p.mult,
                    out.zero_point,
                ),
            };
        }
        return Ok(y);
    }
    let _ = caps;
    portable::binary(op, a, b, out)
}

pub fn relu(caps: Caps, x: &QTensor<u8>) -> Result<Vec<u8>> {
    #[cfg(target_arch = "aarch64")]
    if caps.neon {
        let z = pt(x).1 as u8;
        let mut y = x.int_repr().to_vec();
        // SAFETY: NEON was detected by the engine (caps.neon).
        unsafe { neon::relu(&mut y, z) };
        return Ok(y);
    }
    let _ = caps;
    portable::relu(x)
}

/// Max over the in-bounds taps of output pixel (oy, ox), as `portable::max_pool2d`.
#[cfg(target_arch = "aarch64")]
fn max_pixel(src: &[u8], g: &PoolGeometry, p: &MaxPool2dParams, oy: usize, ox: usize) -> u8 {
    let mut m = 0u8;
    for ky in 0..p.kernel[0] {
        let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
        if iy < 0 || iy >= g.h as isize {
            continue;
        }
        for kx in 0..p.kernel[1] {
            let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize - p.padding[1] as isize;
            if ix < 0 || ix >= g.w as isize {
                continue;
            }
            m = m.max(src[iy as usize * g.w + ix as usize]);
        }
    }
    m
}

pub fn max_pool2d(
    caps: Caps,
    x: &QTensor<u8>,
    g: &PoolGeometry,
    p: &MaxPool2dParams,
) -> Result<Vec<u8>> {
    #[cfg(target_arch = "aarch64")]
    if caps.neon {
        let xd = x.int_repr();
        let mut y = vec![0u8; g.n * g.c * g.oh * g.ow];
        for plane in 0..g.n * g.c {
            let src = &xd[plane * g.h * g.w..(plane + 1) * g.h * g.w];
            for oy in 0..g.oh {
                let dst = &mut y[(plane * g.oh + oy) * g.ow..][..g.ow];
                // SAFETY: NEON was detected by the engine (caps.neon).
                let mut ox = unsafe { neon::max_pool_row(src, g, p, oy, dst) };
                while ox < g.ow {
                    dst[ox] = max_pixel(src, g, p, oy, ox);
                    ox += 1;
                }
            }
        }
        return Ok(y);
    }
    let _ = caps;
    portable::max_pool2d(x, g, p)
}

fn lut(caps: Caps, x: &QTensor<u8>, table: &[u8; 256]) -> Vec<u8> {
    #[cfg(target_arch = "aarch64")]
    if caps.neon {
        let mut y = x.int_repr().to_vec();
        // SAFETY: NEON was detected by the engine (caps.neon).
        unsafe { neon::lut(table, &mut y) };
        return y;
    }
    let _ = caps;
    portable::apply_lut(table, x.int_repr())
}

pub fn hardswish(caps: Caps, x: &QTensor<u8>, out: OutQ) -> Result<Vec<u8>> {
    let (s, z) = pt(x);
    Ok(lut(caps, x, &portable::hardswish_lut(s, z, out)))
}

pub fn sigmoid(caps: Caps, x: &QTensor<u8>, out: OutQ) -> Result<Vec<u8>> {
    let (s, z) = pt(x);
    Ok(lut(caps, x, &portable::sigmoid_lut(s, z, out)))
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use core::arch::aarch64::*;

    use rquant_core::ops::{BinaryOp, MaxPool2dParams, PoolGeometry};

    pub struct Params {
        pub sa: f32,
        pub za: i32,
        pub sb: f32,
        pub zb: i32,
        pub inv: f32,
        pub mult: f32,
        pub oz: i32,
    }

    /// `y[i] = table[y[i]]` in place, 16 bytes per step: four `tbl` lookups
    /// over the four 64-byte quarters of the table (an index outside a
    /// quarter's range gives 0), OR-ed together.
    ///
    /// # Safety
    /// NEON available.
    #[target_feature(enable = "neon")]
    pub unsafe fn lut(table: &[u8; 256], y: &mut [u8]) {
        // SAFETY: each quarter is 64 bytes inside the 256-byte table.
        let q = |i: usize| unsafe { vld1q_u8_x4(table.as_ptr().add(64 * i)) };
        let (t0, t1, t2, t3) = (q(0), q(1), q(2), q(3));
        let v64 = vdupq_n_u8(64);
        let mut chunks = y.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: c has 16 bytes.
            unsafe {
                let i0 = vld1q_u8(c.as_ptr());
                let i1 = vsubq_u8(i0, v64);
                let i2 = vsubq_u8(i1, v64);
                let i3 = vsubq_u8(i2, v64);
                let r = vorrq_u8(
                    vorrq_u8(vqtbl4q_u8(t0, i0), vqtbl4q_u8(t1, i1)),
                    vorrq_u8(vqtbl4q_u8(t2, i2), vqtbl4q_u8(t3, i3)),
                );
                vst1q_u8(c.as_mut_ptr(), r);
            }
        }
        for v in chunks.into_remainder() {
            *v = table[*v as usize];
        }
    }

    /// The leading run of output pixels of row `oy` whose 16-pixel steps keep
    /// every tap inside the input row (stride 1 or 2), as the max of the
    /// in-bounds rows' taps; returns how many pixels were written (the rest,
    /// borders included, go through the scalar code).
    ///
    /// # Safety
    /// NEON available.
    #[target_feature(enable = "neon")]
    pub unsafe fn max_pool_row(
        src: &[u8],
        g: &PoolGeometry,
        p: &MaxPool2dParams,
        oy: usize,
        dst: &mut [u8],
    ) -> usize {
        let s = p.stride[1];
        if !(s == 1 || s == 2) || g.ow < 16 {
            return 0;
        }
        assert!(src.len() >= g.h * g.w && dst.len() == g.ow);
        let span = (p.kernel[1] - 1) * p.dilation[1];
        // Scalar border on the left: pixels whose first tap is in the padding.
        let first = p.padding[1].div_ceil(s);
        let mut ox = 0;
        while ox < first.min(g.ow) {
            dst[ox] = super::max_pixel(src, g, p, oy, ox);
            ox += 1;
        }
        while ox + 16 <= g.ow {
            let ix0 = ox * s - p.padding[1];
            if ix0 + span + 16 * s > g.w {
                break;
            }
            let mut m = vdupq_n_u8(0);
            for ky in 0..p.kernel[0] {
                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let row = &src[iy as usize * g.w..][..g.w];
                for kx in 0..p.kernel[1] {
                    let ix = ix0 + kx * p.dilation[1];
                    // SAFETY: ix + 16*s <= w (checked above), inside `row`.
                    let v = unsafe {
                        if s == 1 {
                            vld1q_u8(row.as_ptr().add(ix))
                        } else {
                            vld2q_u8(row.as_ptr().add(ix)).0
                        }
                    };
                    m = vmaxq_u8(m, v);
                }
            }
            // SAFETY: ox + 16 <= dst.len().
            unsafe { vst1q_u8(dst.as_mut_ptr().add(ox), m) };
            ox += 16;
        }
        ox
    }

    /// `max(q, zp)` in place, 16 bytes per step.
    ///
    /// # Safety
    /// NEON available.
    #[target_feature(enable = "neon")]
    pub unsafe fn relu(y: &mut [u8], zp: u8) {
        let vz = vdupq_n_u8(zp);
        let mut chunks = y.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: c has 16 bytes.
            unsafe { vst1q_u8(c.as_mut_ptr(), vmaxq_u8(vld1q_u8(c.as_ptr()), vz)) };
        }
        for q in chunks.into_remainder() {
            *q = (*q).max(zp);
        }
    }

    /// The leading multiple of 8 of `y = a op b`; returns how many were done.
    ///
    /// # Safety
    /// NEON available.
    #[target_feature(enable = "neon")]
    pub unsafe fn binary(op: BinaryOp, p: &Params, a: &[u8], b: &[u8], y: &mut [u8]) -> usize {
        assert!(a.len() == b.len() && y.len() == a.len());
        let n8 = a.len() / 8 * 8;
        let (vza, vzb) = (vdupq_n_s32(p.za), vdupq_n_s32(p.zb));
        let (vsa, vsb) = (vdupq_n_f32(p.sa), vdupq_n_f32(p.sb));
        let (vinv, vmult) = (vdupq_n_f32(p.inv), vdupq_n_f32(p.mult));
        let voz = vdupq_n_s32(p.oz);
        let (v0, v255) = (vdupq_n_s32(0), vdupq_n_s32(255));
        let zero = vdupq_n_f32(0.0);
        // Widen 4 bytes to int32 and subtract the zero point (exact).
        let lanes = |v: uint16x8_t, z: int32x4_t| {
            (
                vsubq_s32(vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(v))), z),
                vsubq_s32(vreinterpretq_s32_u32(vmovl_high_u16(v)), z),
            )
        };
        // round half to even (saturating), + zp (saturating), clamp to [0, 255].
        let finish =
            |f: float32x4_t| vminq_s32(vmaxq_s32(vqaddq_s32(vcvtnq_s32_f32(f), voz), v0), v255);
        for i in (0..n8).step_by(8) {
            // SAFETY: i + 8 <= len for a, b and y.
            let (va, vb) = unsafe {
                (
                    vmovl_u8(vld1_u8(a.as_ptr().add(i))),
                    vmovl_u8(vld1_u8(b.as_ptr().add(i))),
                )
            };
            let (a0, a1) = lanes(va, vza);
            let (b0, b1) = lanes(vb, vzb);
            let (r0, r1) = match op {
                BinaryOp::Add | BinaryOp::AddRelu => {
                    // dequantize: f32(q - zp) * scale; add; (relu); * inv.
                    let mut c0 = vaddq_f32(
                        vmulq_f32(vcvtq_f32_s32(a0), vsa),
                        vmulq_f32(vcvtq_f32_s32(b0), vsb),
                    );
                    let mut c1 = vaddq_f32(
                        vmulq_f32(vcvtq_f32_s32(a1), vsa),
                        vmulq_f32(vcvtq_f32_s32(b1), vsb),
                    );
                    if op == BinaryOp::AddRelu {
                        c0 = vmaxq_f32(c0, zero);
                        c1 = vmaxq_f32(c1, zero);
                    }
                    (finish(vmulq_f32(c0, vinv)), finish(vmulq_f32(c1, vinv)))
                }
                BinaryOp::Mul => {
                    // f32((qa - za)(qb - zb)) * mult, the product exact in int32.
                    let c0 = vcvtq_f32_s32(vmulq_s32(a0, b0));
                    let c1 = vcvtq_f32_s32(vmulq_s32(a1, b1));
                    (finish(vmulq_f32(c0, vmult)), finish(vmulq_f32(c1, vmult)))
                }
            };
            let u = vqmovun_s16(vcombine_s16(vmovn_s32(r0), vmovn_s32(r1)));
            // SAFETY: i + 8 <= y.len().
            unsafe { vst1_u8(y.as_mut_ptr().add(i), u) };
        }
        n8
    }
}
