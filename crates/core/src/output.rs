//! The output stage of every int8 GEMM-like op, described once
//! (docs/numerics.md, "Static linear and conv" and "Dynamic linear").
//!
//! A microkernel produces raw `Σ_k x[m,k]·w[n,k]` in wrapping int32. The
//! stage then
//! 1. corrects for the zero points: `acc + colterm[n] − zw[n]·rowsum[m]`
//!    ([`ZeroPointTerms`]), which is `Σ (x−zx)(w−zw)` exactly;
//! 2. either requantizes to quint8 ([`Requant`]: float bias term, multiplier,
//!    round half to even, output zero point, clamp to `[lo, hi]`), or turns
//!    the accumulator into f32 ([`Dequant`], dynamic linear).
//!
//! These values are computed here, from `numerics`, and cached on the packed
//! weight (`PackedLinear`, `PackedConv2d`) by value; engines only consume
//! them, per tile, and store the results in whatever layout their op needs.
//! [`Requant::apply`] and [`Dequant::apply`] are the scalar definitions that
//! every vectorised stage must match bit for bit.
//!
//! A conv may be followed, in the same output stage, by a residual add
//! ([`ResidualAdd`]): the conv's codes (requantized to its own qparams, as
//! above) are added to another quint8 tensor with the add's qparams, so the
//! fused op keeps both roundings and gives the unfused pair's bits.

use crate::numerics::{
    self, dequantize_val, dynamic_out, inv_scale, quantize_val, requantize_u8_clamped,
    RequantChannel,
};

/// The zero-point correction of one (weight, activation zero point) pair.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroPointTerms {
    /// `K·zx·zw[n] − zx·Σ_k w[n,k]` (wrapping), per output column.
    pub colterm: Vec<i32>,
    /// Weight zero point per output column (the `− zw[n]·rowsum[m]` term).
    pub zw: Vec<i32>,
    /// Every `zw` is 0 (symmetric weights): row sums are not needed.
    pub zw_all_zero: bool,
}

impl ZeroPointTerms {
    /// For weights with column sums `col_sums` and zero points `zw`, reduction
    /// length `k`, activation zero point `zx`.
    pub fn new(k: usize, col_sums: &[i32], zw: &[i32], zx: i32) -> Self {
        let k = k as i32;
        let colterm = col_sums
            .iter()
            .zip(zw)
            .map(|(&cs, &z)| {
                k.wrapping_mul(zx)
                    .wrapping_mul(z)
                    .wrapping_sub(zx.wrapping_mul(cs))
            })
            .collect();
        ZeroPointTerms {
            colterm,
            zw: zw.to_vec(),
            zw_all_zero: zw.iter().all(|&z| z == 0),
        }
    }

    /// The corrected accumulator of column `n` for a row with sum `rowsum`.
    #[inline(always)]
    pub fn correct(&self, n: usize, acc: i32, rowsum: i32) -> i32 {
        acc.wrapping_add(self.colterm[n])
            .wrapping_sub(self.zw[n].wrapping_mul(rowsum))
    }
}

/// Clamp of a quint8 output, in the quantized domain: `[lo, hi]`.
/// No activation: `[0, 255]`; fused ReLU: `[out_zp, 255]`; a fused ReLU6 or
/// hardtanh clamps `hi` (and `lo`) to the codes of its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Clamp {
    pub lo: u8,
    pub hi: u8,
}

impl Clamp {
    pub const NONE: Clamp = Clamp { lo: 0, hi: 255 };
    /// `relu`: the output zero point is the smallest code.
    pub fn relu(out_zp: i64, relu: bool) -> Clamp {
        if relu {
            Clamp {
                lo: out_zp.clamp(0, 255) as u8,
                hi: 255,
            }
        } else {
            Clamp::NONE
        }
    }
}

/// Requantization to quint8 of one packed weight for one (activation
/// qparams, output qparams, clamp): the static linear/conv output stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Requant {
    pub zp: ZeroPointTerms,
    /// Float bias in accumulator units, per column (0 without a bias).
    pub bias_term: Vec<f32>,
    /// `f32(x_scale)·f32(w_scale[n]) / f32(out_scale)`, per column.
    pub mult: Vec<f32>,
    pub out_zp: i32,
    pub clamp: Clamp,
    /// Per-channel weights (the arrays differ per column).
    pub per_channel: bool,
    /// Every `(f32(acc) + bias_term)·mult` is finite and below 2^62 in
    /// magnitude for any int32 acc: a vector stage needs no NaN / overflow
    /// handling (the "tame" range).
    pub tame: bool,
}

/// What a [`Requant`] is computed from.
#[derive(Debug, Clone, Copy)]
pub struct RequantSpec<'a> {
    /// Reduction length K (for the zero-point term).
    pub k: usize,
    pub col_sums: &'a [i32],
    /// Weight (scale, zero point) per column.
    pub w_qparams: &'a [(f64, i64)],
    pub per_channel: bool,
    pub bias: Option<&'a [f32]>,
    pub x_scale: f64,
    pub x_zp: i64,
    pub out_scale: f64,
    pub out_zp: i64,
    pub clamp: Clamp,
}

impl Requant {
    pub fn new(s: &RequantSpec<'_>) -> Requant {
        let n = s.w_qparams.len();
        let mut bias_term = Vec::with_capacity(n);
        let mut mult = Vec::with_capacity(n);
        for (c, &(w_scale, _)) in s.w_qparams.iter().enumerate() {
            let ch = RequantChannel::new(s.x_scale, w_scale, s.out_scale);
            mult.push(ch.multiplier);
            bias_term.push(s.bias.map_or(0.0, |b| {
                numerics::bias_term(b[c], ch.act_times_w_scale, s.per_channel)
            }));
        }
        let tame = bias_term.iter().zip(&mult).all(|(&b, &m)| {
            let bound = (2f64.powi(31) + (b as f64).abs()) * (m as f64).abs();
            bound.is_finite() && bound < 2f64.powi(62)
        });
        let zw: Vec<i32> = s.w_qparams.iter().map(|&(_, z)| z as i32).collect();
        Requant {
            zp: ZeroPointTerms::new(s.k, s.col_sums, &zw, s.x_zp as i32),
            bias_term,
            mult,
            out_zp: s.out_zp as i32,
            clamp: s.clamp,
            per_channel: s.per_channel,
            tame,
        }
    }

    /// Number of output columns.
    pub fn len(&self) -> usize {
        self.mult.len()
    }
    pub fn is_empty(&self) -> bool {
        self.mult.is_empty()
    }

    /// The quint8 output of column `n` for raw accumulator `acc` of a row
    /// with activation sum `rowsum`: the definition every stage matches.
    #[inline]
    pub fn apply(&self, n: usize, acc: i32, rowsum: i32) -> u8 {
        self.requantize(n, self.zp.correct(n, acc, rowsum))
    }

    /// Requantize an already zero-point-corrected accumulator of column `n`.
    #[inline]
    pub fn requantize(&self, n: usize, corrected: i32) -> u8 {
        requantize_u8_clamped(
            corrected,
            self.bias_term[n],
            self.mult[n],
            self.out_zp,
            self.clamp,
        )
    }
}

/// The f32 output of dynamic linear for one call (the activation qparams
/// change per call, so this is built per call; it is O(N)).
#[derive(Debug, Clone, PartialEq)]
pub struct Dequant {
    pub zp: ZeroPointTerms,
    /// `f32(x_scale)·f32(w_scale[n])`.
    pub scale_product: Vec<f32>,
}

impl Dequant {
    pub fn new(
        k: usize,
        col_sums: &[i32],
        w_qparams: &[(f64, i64)],
        x_scale: f64,
        x_zp: i64,
    ) -> Dequant {
        let zw: Vec<i32> = w_qparams.iter().map(|&(_, z)| z as i32).collect();
        Dequant {
            zp: ZeroPointTerms::new(k, col_sums, &zw, x_zp as i32),
            scale_product: w_qparams
                .iter()
                .map(|&(s, _)| (x_scale as f32) * (s as f32))
                .collect(),
        }
    }

    /// The f32 output of column `n` (with `bias`, the packed weight's bias).
    #[inline]
    pub fn apply(&self, n: usize, acc: i32, rowsum: i32, bias: Option<&[f32]>) -> f32 {
        dynamic_out(
            self.zp.correct(n, acc, rowsum),
            self.scale_product[n],
            bias.map(|b| b[n]),
        )
    }
}

/// A quantized add (`torch.ops.quantized.add` / `add_relu`, what
/// `FloatFunctional.add` / `add_relu` become) applied to the output codes of
/// an op: `a` is that op's output (scale and zero point of its own output
/// qparams), `b` the other operand, the result is quantized to the add's
/// output qparams. [`ResidualAdd::apply`] is the arithmetic of
/// `portable::binary` for `Add` / `AddRelu`, element for element:
/// dequantize both (`f32(q − zp)·f32(scale)`), add in f32, `max(·, 0)` for
/// add_relu, quantize (`quantize_val`). A fused conv + add therefore rounds
/// twice, exactly like the two ops run one after the other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResidualAdd {
    /// `f32` of the first operand's scale, and its zero point.
    pub a_scale: f32,
    pub a_zp: i32,
    /// `f32` of the second operand's scale, and its zero point.
    pub b_scale: f32,
    pub b_zp: i32,
    /// `1 / f32(out_scale)` (`numerics::inv_scale`), and the output zero point.
    pub inv_out: f32,
    pub out_zp: i32,
    /// add_relu.
    pub relu: bool,
}

impl ResidualAdd {
    /// From the (scale, zero point) pairs of the two operands and of the output.
    pub fn new(a: (f64, i64), b: (f64, i64), out: (f64, i64), relu: bool) -> ResidualAdd {
        ResidualAdd {
            a_scale: a.0 as f32,
            a_zp: a.1 as i32,
            b_scale: b.0 as f32,
            b_zp: b.1 as i32,
            inv_out: inv_scale(out.0),
            out_zp: out.1 as i32,
            relu,
        }
    }

    /// The output code for operand codes `qa` and `qb`: the definition
    /// every vectorised add stage matches.
    #[inline]
    pub fn apply(&self, qa: u8, qb: u8) -> u8 {
        let mut c = dequantize_val(self.a_scale, self.a_zp as i64, qa as i64)
            + dequantize_val(self.b_scale, self.b_zp as i64, qb as i64);
        if self.relu {
            c = c.max(0.0);
        }
        quantize_val::<u8>(self.inv_out, self.out_zp as i64, c)
    }

    /// `a[i] = apply(a[i], b[i])` over two equally long runs.
    pub fn apply_in_place(&self, a: &mut [u8], b: &[u8]) {
        assert_eq!(a.len(), b.len());
        for (x, &y) in a.iter_mut().zip(b) {
            *x = self.apply(*x, y);
        }
    }
}

/// `Σ_k w[n,k]` of each row of a row-major `[n, k]` int8 matrix.
pub fn col_sums(w: &[i8], k: usize) -> Vec<i32> {
    if k == 0 {
        return Vec::new();
    }
    w.chunks_exact(k)
        .map(|r| r.iter().map(|&v| v as i32).sum())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::{bias_term, requantize_u8};

    #[test]
    fn requant_matches_the_composition_with_and_without_relu() {
        let w_qparams = [(0.02, 0), (0.05, 3)];
        let cs = [10, -7];
        for relu in [false, true] {
            let spec = RequantSpec {
                k: 16,
                col_sums: &cs,
                w_qparams: &w_qparams,
                per_channel: true,
                bias: Some(&[0.25, -1.5]),
                x_scale: 0.1,
                x_zp: 5,
                out_scale: 0.07,
                out_zp: 100,
                clamp: Clamp::relu(100, relu),
            };
            let r = Requant::new(&spec);
            assert!(r.tame);
            for acc in [-100_000, -3, 0, 1, 77, 50_000] {
                for rs in [0, 19, 400] {
                    for n in 0..2 {
                        let corrected = acc + r.zp.colterm[n] - r.zp.zw[n] * rs;
                        let ch = RequantChannel::new(0.1, w_qparams[n].0, 0.07);
                        let bt = bias_term([0.25, -1.5][n], ch.act_times_w_scale, true);
                        let want = requantize_u8(corrected, bt, ch.multiplier, 100, relu);
                        assert_eq!(r.apply(n, acc, rs), want, "acc {acc} rs {rs} n {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn residual_add_is_portable_binary_add() {
        use crate::ops::{BinaryOp, OutQ};
        use crate::{QParams, QTensor};
        let all: Vec<u8> = (0..=255u8).collect();
        for (sa, za, sb, zb, so, zo) in [
            (0.05, 128, 0.031, 3, 0.07, 100),
            (1e-3, 0, 2.5, 255, 0.9, 0),
            (0.2, 255, 0.2, 255, 1e-4, 255),
        ] {
            for relu in [false, true] {
                let r = ResidualAdd::new((sa, za), (sb, zb), (so, zo), relu);
                let op = if relu {
                    BinaryOp::AddRelu
                } else {
                    BinaryOp::Add
                };
                for qb in [0u8, 1, 77, 128, 254, 255] {
                    let a =
                        QTensor::from_int_repr(vec![256], all.clone(), QParams::per_tensor(sa, za))
                            .unwrap();
                    let b = QTensor::from_int_repr(
                        vec![256],
                        vec![qb; 256],
                        QParams::per_tensor(sb, zb),
                    )
                    .unwrap();
                    let want = crate::portable::binary(
                        op,
                        &a,
                        &b,
                        OutQ {
                            scale: so,
                            zero_point: zo,
                        },
                    )
                    .unwrap();
                    let mut got = all.clone();
                    r.apply_in_place(&mut got, &[qb; 256]);
                    assert_eq!(got, want, "{sa} {za} {sb} {zb} {so} {zo} {relu} qb {qb}");
                }
            }
        }
    }

    #[test]
    fn clamp_bounds_hold() {
        let spec = RequantSpec {
            k: 4,
            col_sums: &[0],
            w_qparams: &[(1.0, 0)],
            per_channel: false,
            bias: None,
            x_scale: 1.0,
            x_zp: 0,
            out_scale: 1.0,
            out_zp: 10,
            clamp: Clamp { lo: 10, hi: 16 },
        };
        let r = Requant::new(&spec);
        assert_eq!(r.apply(0, -50, 0), 10);
        assert_eq!(r.apply(0, 3, 0), 13);
        assert_eq!(r.apply(0, 50, 0), 16);
    }
}
