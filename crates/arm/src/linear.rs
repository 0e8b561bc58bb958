//! Quantized linear (static and dynamic) on the shared GEMM driver.

use rquant_core::engine::{DynamicCall, LinearCall};
use rquant_core::gemm::{Gemm, PackedB, Store, Table};
use rquant_core::numerics::quantize_val;
use rquant_core::portable::Code8;
use rquant_core::QTensor;

use crate::gemm;
use crate::isa::{Caps, Isa};
use crate::output::{shifted, FloatStage, RawOut, RequantStage};

/// Engine payload of a packed linear weight: the shared GEMM panels of this
/// path's kernel.
#[derive(Debug)]
pub struct LinearPack {
    pub isa: Isa,
    pub b: PackedB,
}

impl rquant_core::engine::Panels for LinearPack {
    fn bytes(&self) -> usize {
        self.b.bytes()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl rquant_core::engine::Int8Panels for LinearPack {
    fn unpack(&self) -> Vec<i8> {
        self.b.unpack()
    }
}

impl LinearPack {
    pub fn new(isa: Isa, table: Table, w: &QTensor<i8>) -> LinearPack {
        let (n, k) = (w.shape()[0], w.shape()[1]);
        LinearPack {
            isa,
            b: PackedB::new(table, w.int_repr(), n, k),
        }
    }
}

/// Static quantized linear: `[m][n]` quint8.
pub fn linear(caps: Caps, p: &LinearPack, c: &LinearCall<'_>, threads: usize) -> Vec<u8> {
    let (b, r) = (&p.b, c.requant);
    let (m, n, k) = (c.m, b.n(), b.k());
    let x = c.x.int_repr();
    // Every ARM kernel is exact for every input: the activations' maximum
    // is never asked for.
    let layout = b.select(|| 255);
    let len = m * n;
    let mut y = Vec::with_capacity(len);
    let stage = RequantStage {
        caps,
        r,
        colterm: shifted(&r.zp, layout.kernel.a_shift, c.w.col_sums()),
        col0: 0,
        out: RawOut::uninit(&mut y.spare_capacity_mut()[..len]),
        store: Store::Rows { base: 0, ld: n },
        res: None,
    };
    let fill = |i: usize, dst: &mut [u8]| dst.copy_from_slice(&x[i * k..(i + 1) * k]);
    gemm::run(
        &Gemm {
            b,
            layout,
            m,
            fill: &fill,
            row_sums: !r.zp.zw_all_zero,
            stage: &stage,
        },
        threads,
    );
    // SAFETY: the GEMM's tiles cover every (row, column) of the m×n output
    // once, and the stage stores every element of each tile.
    unsafe { y.set_len(len) };
    y
}

/// Dynamic linear: the activations quantized (with the front end's qparams)
/// while they are packed, GEMM, float output.
pub fn linear_dynamic(caps: Caps, p: &LinearPack, c: &DynamicCall<'_>, threads: usize) -> Vec<f32> {
    let (b, d) = (&p.b, c.dequant);
    let (m, n, k) = (c.m, b.n(), b.k());
    let layout = b.select(|| c.x_max);
    let len = m * n;
    let mut y = Vec::with_capacity(len);
    let stage = FloatStage {
        caps,
        d,
        colterm: shifted(&d.zp, layout.kernel.a_shift, c.w.col_sums()),
        bias: c.w.bias(),
        out: RawOut::uninit(&mut y.spare_capacity_mut()[..len]),
        store: Store::Rows { base: 0, ld: n },
    };
    let (x, code) = (c.x, c.code);
    let fill = |i: usize, dst: &mut [u8]| quantize_u8(caps, &x[i * k..(i + 1) * k], code, dst);
    gemm::run(
        &Gemm {
            b,
            layout,
            m,
            fill: &fill,
            row_sums: !d.zp.zw_all_zero,
            stage: &stage,
        },
        threads,
    );
    // SAFETY: the GEMM's tiles cover every (row, column) of the m×n output
    // once, and the stage stores every element of each tile.
    unsafe { y.set_len(len) };
    y
}

/// `quantize_val::<u8>(inv, zp, v)` for every v (NEON: 8 per step, `fmul`
/// then `fcvtns` round half to even, saturating `+ zp`, clamp to [0, 255] —
/// the scalar formula's bits, its i64 saturation included, since every value
/// beyond i32 clamps to 0 or 255 either way).
fn quantize_u8(caps: Caps, x: &[f32], code: Code8, y: &mut [u8]) {
    let (inv, zp) = (code.inv, code.zp as i64);
    #[cfg(target_arch = "aarch64")]
    let done = if caps.neon {
        // SAFETY: NEON detected (caps come from an engine value).
        unsafe { quantize_u8_neon(x, inv, zp as i32, y) }
    } else {
        0
    };
    #[cfg(not(target_arch = "aarch64"))]
    let done = {
        let _ = caps;
        0
    };
    for (d, &v) in y[done..].iter_mut().zip(&x[done..]) {
        *d = quantize_val::<u8>(inv, zp, v);
    }
}

/// The leading multiple of 8 of [`quantize_u8`]; returns how many were done.
///
/// # Safety
/// NEON available.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn quantize_u8_neon(x: &[f32], inv: f32, zp: i32, y: &mut [u8]) -> usize {
    use core::arch::aarch64::*;
    assert_eq!(x.len(), y.len());
    let n8 = x.len() / 8 * 8;
    let (vinv, vzp) = (vdupq_n_f32(inv), vdupq_n_s32(zp));
    let (v0, v255) = (vdupq_n_s32(0), vdupq_n_s32(255));
    let q = |v: float32x4_t| {
        vminq_s32(
            vmaxq_s32(vqaddq_s32(vcvtnq_s32_f32(vmulq_f32(v, vinv)), vzp), v0),
            v255,
        )
    };
    for i in (0..n8).step_by(8) {
        // SAFETY: i + 8 <= len of x and y.
        unsafe {
            let a = q(vld1q_f32(x.as_ptr().add(i)));
            let b = q(vld1q_f32(x.as_ptr().add(i + 4)));
            let u = vqmovun_s16(vcombine_s16(vmovn_s32(a), vmovn_s32(b)));
            vst1_u8(y.as_mut_ptr().add(i), u);
        }
    }
    n8
}
