//! The output pipeline applied to one 8x8 tile of raw accumulators: exact
//! zero-point correction (wrapping int32), then either fbgemm's float
//! requantization to quint8 (`numerics::requantize_u8`) or the float output
//! of dynamic linear (`numerics::dynamic_out`). The NEON version performs the
//! same f32 operations in the same order (separate `fadd`/`fmul`, `fmla` only
//! where the scalar formula is a fused `mul_add`, `fcvtns` = round half to
//! even), so both give the same bits.

use rquant_core::numerics::{dynamic_out, requantize_u8};

use crate::pack::{MR, NR};

/// Per-call, per-column constants (all `panels * NR` long, zero-padded).
pub struct Columns<'a> {
    /// Added to every accumulator of the column (see `PackedB::col_terms`).
    pub cterm: &'a [i32],
    /// Weight zero points: `acc -= wz[j] * rowsum[i]`.
    pub wz: &'a [i32],
    /// Whether cterm / wz apply (false for the `c1` layout).
    pub correct: bool,
}

/// What the tile becomes.
pub enum Output<'a> {
    /// quint8: `clamp(rne((f32(acc) + bias[j]) * mult[j]) + zp, lo, 255)`.
    Static {
        bias: &'a [f32],
        mult: &'a [f32],
        zp: i32,
        relu: bool,
    },
    /// f32: `fma(f32(acc), sp[j], bias[j])` or `f32(acc) * sp[j]`.
    Dynamic {
        sp: &'a [f32],
        bias: Option<&'a [f32]>,
    },
}

/// Where one tile's results go: `dst[r * stride + c]` for r < nrows, c < ncols.
pub struct Dst<'a, T> {
    pub data: &'a mut [T],
    pub stride: usize,
    pub nrows: usize,
    pub ncols: usize,
}

#[inline]
fn exact(
    tile: &[i32; MR * NR],
    cols: &Columns,
    j0: usize,
    rsum: &[i32; MR],
    r: usize,
    c: usize,
) -> i32 {
    let raw = tile[r * NR + c];
    if cols.correct {
        let j = j0 + c;
        raw.wrapping_add(cols.cterm[j])
            .wrapping_sub(cols.wz[j].wrapping_mul(rsum[r]))
    } else {
        raw
    }
}

/// Scalar pipeline to quint8.
pub fn static_scalar(
    tile: &[i32; MR * NR],
    cols: &Columns,
    out: &Output,
    j0: usize,
    rsum: &[i32; MR],
    dst: Dst<'_, u8>,
) {
    let Output::Static {
        bias,
        mult,
        zp,
        relu,
    } = *out
    else {
        unreachable!("static output expected")
    };
    for r in 0..dst.nrows {
        for c in 0..dst.ncols {
            let acc = exact(tile, cols, j0, rsum, r, c);
            let j = j0 + c;
            dst.data[r * dst.stride + c] = requantize_u8(acc, bias[j], mult[j], zp, relu);
        }
    }
}

/// Scalar pipeline to f32.
pub fn dynamic_scalar(
    tile: &[i32; MR * NR],
    cols: &Columns,
    out: &Output,
    j0: usize,
    rsum: &[i32; MR],
    dst: Dst<'_, f32>,
) {
    let Output::Dynamic { sp, bias } = *out else {
        unreachable!("dynamic output expected")
    };
    for r in 0..dst.nrows {
        for c in 0..dst.ncols {
            let acc = exact(tile, cols, j0, rsum, r, c);
            let j = j0 + c;
            dst.data[r * dst.stride + c] = dynamic_out(acc, sp[j], bias.map(|b| b[j]));
        }
    }
}

/// Requantize a run of accumulators of one output channel (depthwise conv).
pub fn requant_run_scalar(acc: &[i32], bias: f32, mult: f32, zp: i32, relu: bool, out: &mut [u8]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = requantize_u8(a, bias, mult, zp, relu);
    }
}

#[cfg(target_arch = "aarch64")]
pub mod neon {
    //! The same pipelines on int32x4 / float32x4 vectors.
    use core::arch::aarch64::*;

    use super::{Columns, Dst, Output};
    use crate::pack::{MR, NR};

    /// Exact accumulators of tile row r, columns 4h..4h+4.
    ///
    /// # Safety
    /// NEON available; `cols` arrays hold at least j0 + 8 elements.
    #[inline(always)]
    unsafe fn exact4(
        tile: &[i32; MR * NR],
        cols: &Columns,
        j0: usize,
        rsum: &[i32; MR],
        r: usize,
        h: usize,
    ) -> int32x4_t {
        // SAFETY: r < 8, h < 2 keep the tile read in bounds; the column arrays
        // are panel-padded (len >= j0 + 8), guaranteed by the caller.
        unsafe {
            let raw = vld1q_s32(tile.as_ptr().add(r * NR + 4 * h));
            if cols.correct {
                let ct = vld1q_s32(cols.cterm.as_ptr().add(j0 + 4 * h));
                let wz = vld1q_s32(cols.wz.as_ptr().add(j0 + 4 * h));
                vmlsq_s32(vaddq_s32(raw, ct), wz, vdupq_n_s32(rsum[r]))
            } else {
                raw
            }
        }
    }

    /// NEON pipeline to quint8.
    ///
    /// # Safety
    /// NEON available; every per-column array holds at least j0 + 8 elements.
    #[target_feature(enable = "neon")]
    pub unsafe fn static_neon(
        tile: &[i32; MR * NR],
        cols: &Columns,
        out: &Output,
        j0: usize,
        rsum: &[i32; MR],
        dst: Dst<'_, u8>,
    ) {
        let Output::Static {
            bias,
            mult,
            zp,
            relu,
        } = *out
        else {
            unreachable!("static output expected")
        };
        assert!(bias.len() >= j0 + NR && mult.len() >= j0 + NR);
        assert!(cols.cterm.len() >= j0 + NR && cols.wz.len() >= j0 + NR);
        let vzp = vdupq_n_s32(zp);
        let vlo = vdupq_n_s32(if relu { zp } else { 0 });
        let vhi = vdupq_n_s32(255);
        // SAFETY: bounds asserted above (8 columns from j0).
        let (b0, b1, m0, m1) = unsafe {
            (
                vld1q_f32(bias.as_ptr().add(j0)),
                vld1q_f32(bias.as_ptr().add(j0 + 4)),
                vld1q_f32(mult.as_ptr().add(j0)),
                vld1q_f32(mult.as_ptr().add(j0 + 4)),
            )
        };
        let q = |acc: int32x4_t, b: float32x4_t, m: float32x4_t| -> int32x4_t {
            // (f32(acc) + bias) * mult, two roundings, then RNE to int32
            // (saturating), + zp (saturating), clamp [lo, 255].
            let f = vmulq_f32(vaddq_f32(vcvtq_f32_s32(acc), b), m);
            let v = vqaddq_s32(vcvtnq_s32_f32(f), vzp);
            vminq_s32(vmaxq_s32(v, vlo), vhi)
        };
        for r in 0..dst.nrows {
            // SAFETY: r < 8; column bounds asserted above.
            let (a0, a1) = unsafe {
                (
                    exact4(tile, cols, j0, rsum, r, 0),
                    exact4(tile, cols, j0, rsum, r, 1),
                )
            };
            let v0 = q(a0, b0, m0);
            let v1 = q(a1, b1, m1);
            // Values are in [0, 255]: the narrowing is exact.
            let u = vqmovun_s16(vcombine_s16(vmovn_s32(v0), vmovn_s32(v1)));
            let row = &mut dst.data[r * dst.stride..r * dst.stride + dst.ncols];
            if dst.ncols == NR {
                // SAFETY: row has exactly 8 elements.
                unsafe { vst1_u8(row.as_mut_ptr(), u) };
            } else {
                let mut tmp = [0u8; NR];
                // SAFETY: tmp has 8 elements.
                unsafe { vst1_u8(tmp.as_mut_ptr(), u) };
                row.copy_from_slice(&tmp[..dst.ncols]);
            }
        }
    }

    /// NEON pipeline to f32.
    ///
    /// # Safety
    /// NEON available; every per-column array holds at least j0 + 8 elements.
    #[target_feature(enable = "neon")]
    pub unsafe fn dynamic_neon(
        tile: &[i32; MR * NR],
        cols: &Columns,
        out: &Output,
        j0: usize,
        rsum: &[i32; MR],
        dst: Dst<'_, f32>,
    ) {
        let Output::Dynamic { sp, bias } = *out else {
            unreachable!("dynamic output expected")
        };
        assert!(sp.len() >= j0 + NR && bias.is_none_or(|b| b.len() >= j0 + NR));
        assert!(cols.cterm.len() >= j0 + NR && cols.wz.len() >= j0 + NR);
        // SAFETY: bounds asserted above.
        let (s0, s1) = unsafe {
            (
                vld1q_f32(sp.as_ptr().add(j0)),
                vld1q_f32(sp.as_ptr().add(j0 + 4)),
            )
        };
        // SAFETY: bounds asserted above.
        let bv = bias.map(|b| unsafe {
            (
                vld1q_f32(b.as_ptr().add(j0)),
                vld1q_f32(b.as_ptr().add(j0 + 4)),
            )
        });
        for r in 0..dst.nrows {
            // SAFETY: r < 8; column bounds asserted above.
            let (a0, a1) = unsafe {
                (
                    exact4(tile, cols, j0, rsum, r, 0),
                    exact4(tile, cols, j0, rsum, r, 1),
                )
            };
            let (f0, f1) = (vcvtq_f32_s32(a0), vcvtq_f32_s32(a1));
            let (o0, o1) = match bv {
                // fmla: one rounding, exactly f32::mul_add.
                Some((c0, c1)) => (vfmaq_f32(c0, f0, s0), vfmaq_f32(c1, f1, s1)),
                None => (vmulq_f32(f0, s0), vmulq_f32(f1, s1)),
            };
            let mut tmp = [0f32; NR];
            // SAFETY: tmp has 8 elements.
            unsafe {
                vst1q_f32(tmp.as_mut_ptr(), o0);
                vst1q_f32(tmp.as_mut_ptr().add(4), o1);
            }
            dst.data[r * dst.stride..r * dst.stride + dst.ncols].copy_from_slice(&tmp[..dst.ncols]);
        }
    }

    /// [`super::requant_run_scalar`] four accumulators at a time.
    ///
    /// # Safety
    /// NEON available.
    #[target_feature(enable = "neon")]
    pub unsafe fn requant_run(
        acc: &[i32],
        bias: f32,
        mult: f32,
        zp: i32,
        relu: bool,
        out: &mut [u8],
    ) {
        assert_eq!(acc.len(), out.len());
        let (vb, vm) = (vdupq_n_f32(bias), vdupq_n_f32(mult));
        let vzp = vdupq_n_s32(zp);
        let vlo = vdupq_n_s32(if relu { zp } else { 0 });
        let vhi = vdupq_n_s32(255);
        let n4 = acc.len() / 4 * 4;
        let mut tmp = [0i32; 4];
        for i in (0..n4).step_by(4) {
            // SAFETY: i + 4 <= acc.len(); tmp has 4 elements.
            unsafe {
                let a = vld1q_s32(acc.as_ptr().add(i));
                let f = vmulq_f32(vaddq_f32(vcvtq_f32_s32(a), vb), vm);
                let v = vminq_s32(vmaxq_s32(vqaddq_s32(vcvtnq_s32_f32(f), vzp), vlo), vhi);
                vst1q_s32(tmp.as_mut_ptr(), v);
            }
            for (o, &t) in out[i..i + 4].iter_mut().zip(&tmp) {
                *o = t as u8;
            }
        }
        super::requant_run_scalar(&acc[n4..], bias, mult, zp, relu, &mut out[n4..]);
    }
}
