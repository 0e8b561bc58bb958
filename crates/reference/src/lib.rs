//! rquant's reference engine: plain scalar loops, obviously correct, the
//! oracle every other engine is compared with bit for bit. Each op follows
//! docs/numerics.md line by line; speed is not a goal here. The memory-bound
//! ops (element-wise, pooling, cat, lookup tables) are `rquant_core::portable`,
//! shared with every engine that does not vectorise them.

use std::sync::Arc;

use rquant_core::engine::Payload;
use rquant_core::numerics::{
    bias_term, dynamic_out, inv_scale, quantize_val, requantize_u8, RequantChannel,
};
use rquant_core::ops::{ConvGeometry, OutQ};
use rquant_core::{
    numerics, Conv2dParams, PackedConv2d, PackedLinear, PackedLinearFp16, QTensor, QuantEngine,
    QuantError, Result, Tensor,
};

/// The reference engine value.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReferenceEngine;

/// The reference engine, always available.
pub fn engine() -> Arc<dyn QuantEngine> {
    Arc::new(ReferenceEngine)
}

/// A quantized weight unpacked to `w - w_zp` per output channel, with its scales.
struct RefWeight {
    /// `[out, rest]` row-major, each entry `w - w_zp[out]`.
    w: Vec<i32>,
    scales: Vec<f64>,
    per_channel: bool,
}

impl RefWeight {
    fn new(w: &QTensor<i8>) -> Self {
        let out = w.shape()[0];
        let rest = w.numel() / out;
        let mut v = Vec::with_capacity(w.numel());
        let mut scales = Vec::with_capacity(out);
        for o in 0..out {
            let (s, z) = w.qparams().channel(o);
            scales.push(s);
            v.extend(
                w.int_repr()[o * rest..(o + 1) * rest]
                    .iter()
                    .map(|&q| q as i32 - z as i32),
            );
        }
        RefWeight {
            w: v,
            scales,
            per_channel: w.qparams().is_per_channel(),
        }
    }
}

fn ref_weight<'a>(op: &'static str, p: Option<&'a RefWeight>) -> Result<&'a RefWeight> {
    p.ok_or_else(|| QuantError::invalid(op, "weights were not packed by the reference engine"))
}

fn xq(x: &QTensor<u8>) -> (f64, i32) {
    let (s, z) = x.q_per_tensor().expect("validated per-tensor");
    (s, z as i32)
}

/// Requantize one output channel's accumulator as fbgemm's ReQuantizeOutput with a float bias.
fn requant(
    acc: i32,
    x_scale: f64,
    wt: &RefWeight,
    c: usize,
    bias: Option<&[f32]>,
    out: OutQ,
    relu: bool,
) -> u8 {
    let ch = RequantChannel::new(x_scale, wt.scales[c], out.scale);
    let b = bias.map_or(0.0, |b| {
        bias_term(b[c], ch.act_times_w_scale, wt.per_channel)
    });
    requantize_u8(acc, b, ch.multiplier, out.zero_point as i32, relu)
}

/// Exact dot product of `(x - x_zp)` with a weight row, in wrapping int32
/// (the normative accumulator: it never wraps for K below 32 000).
fn dot(x: &[u8], x_zp: i32, w: &[i32]) -> i32 {
    x.iter().zip(w).fold(0i32, |acc, (&a, &b)| {
        acc.wrapping_add((a as i32 - x_zp).wrapping_mul(b))
    })
}

impl QuantEngine for ReferenceEngine {
    fn name(&self) -> &'static str {
        "reference"
    }
    fn isa(&self) -> &'static str {
        "scalar"
    }
    fn priority(&self) -> i32 {
        -100
    }

    fn pack_linear_impl(&self, w: &QTensor<i8>, _bias: Option<&[f32]>) -> Result<Payload> {
        Ok(Box::new(RefWeight::new(w)))
    }

    fn linear_impl(
        &self,
        x: &QTensor<u8>,
        m: usize,
        w: &PackedLinear,
        out: OutQ,
        relu: bool,
    ) -> Result<Vec<u8>> {
        let wt = ref_weight("linear", w.payload::<RefWeight>())?;
        let (n, k) = (w.out_features(), w.in_features());
        let (xs, xz) = xq(x);
        let xd = x.int_repr();
        let mut y = Vec::with_capacity(m * n);
        for i in 0..m {
            let row = &xd[i * k..(i + 1) * k];
            for j in 0..n {
                let acc = dot(row, xz, &wt.w[j * k..(j + 1) * k]);
                y.push(requant(acc, xs, wt, j, w.bias(), out, relu));
            }
        }
        Ok(y)
    }

    fn linear_dynamic_impl(
        &self,
        x: &[f32],
        m: usize,
        w: &PackedLinear,
        reduce_range: bool,
    ) -> Result<Vec<f32>> {
        let wt = ref_weight("linear_dynamic", w.payload::<RefWeight>())?;
        let (n, k) = (w.out_features(), w.in_features());
        let (lo, hi) = numerics::find_min_max(x);
        let qp = numerics::choose_qparams(lo, hi, 0, 255, reduce_range);
        let inv = inv_scale(qp.scale);
        let xq: Vec<u8> = x
            .iter()
            .map(|&v| quantize_val::<u8>(inv, qp.zero_point, v))
            .collect();
        let xz = qp.zero_point as i32;
        let mut y = Vec::with_capacity(m * n);
        for i in 0..m {
            let row = &xq[i * k..(i + 1) * k];
            for j in 0..n {
                let acc = dot(row, xz, &wt.w[j * k..(j + 1) * k]);
                let sp = (qp.scale as f32) * (wt.scales[j] as f32);
                y.push(dynamic_out(acc, sp, w.bias().map(|b| b[j])));
            }
        }
        Ok(y)
    }

    fn pack_linear_fp16_impl(&self, w: &Tensor, _bias: Option<&[f32]>) -> Result<Payload> {
        Ok(Box::new(fp16_round_weights(w.data())))
    }

    fn linear_dynamic_fp16_impl(
        &self,
        x: &[f32],
        m: usize,
        w: &PackedLinearFp16,
    ) -> Result<Vec<f32>> {
        let w16 = w.payload::<Vec<f32>>().ok_or_else(|| {
            QuantError::invalid(
                "linear_dynamic_fp16",
                "weights not packed by the reference engine",
            )
        })?;
        let (n, k) = (w.out_features(), w.in_features());
        let mut y = Vec::with_capacity(m * n);
        for i in 0..m {
            let row = &x[i * k..(i + 1) * k];
            for j in 0..n {
                let wr = &w16[j * k..(j + 1) * k];
                // One sequential FMA chain over K, started by a plain product.
                let mut acc = row[0] * wr[0];
                for kk in 1..k {
                    acc = row[kk].mul_add(wr[kk], acc);
                }
                if let Some(b) = w.bias() {
                    acc += b[j];
                }
                y.push(acc);
            }
        }
        Ok(y)
    }

    fn pack_conv2d_impl(
        &self,
        w: &QTensor<i8>,
        _bias: Option<&[f32]>,
        _p: Conv2dParams,
    ) -> Result<Payload> {
        Ok(Box::new(RefWeight::new(w)))
    }

    fn conv2d_impl(
        &self,
        x: &QTensor<u8>,
        g: &ConvGeometry,
        w: &PackedConv2d,
        out: OutQ,
        relu: bool,
    ) -> Result<Vec<u8>> {
        let wt = ref_weight("conv2d", w.payload::<RefWeight>())?;
        let (xs, xz) = xq(x);
        let xd = x.int_repr();
        let p = g.params;
        let (cg, og) = (g.c_per_group(), g.o_per_group());
        let wsz = cg * g.kh * g.kw;
        let mut y = vec![0u8; g.n * g.o * g.oh * g.ow];
        for b in 0..g.n {
            for oc in 0..g.o {
                let grp = oc / og;
                let wrow = &wt.w[oc * wsz..(oc + 1) * wsz];
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut acc = 0i32;
                        for icg in 0..cg {
                            let ic = grp * cg + icg;
                            for ky in 0..g.kh {
                                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize
                                    - p.padding[0] as isize;
                                for kx in 0..g.kw {
                                    let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                                        - p.padding[1] as isize;
                                    // Padding holds x_zp, which contributes zero.
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = xd
                                        [((b * g.c + ic) * g.h + iy as usize) * g.w + ix as usize]
                                        as i32;
                                    let wv = wrow[(icg * g.kh + ky) * g.kw + kx];
                                    acc = acc.wrapping_add((xv - xz).wrapping_mul(wv));
                                }
                            }
                        }
                        y[((b * g.o + oc) * g.oh + oy) * g.ow + ox] =
                            requant(acc, xs, wt, oc, w.bias(), out, relu);
                    }
                }
            }
        }
        Ok(y)
    }
    // The memory-bound ops (element-wise, pooling, cat, tables) are the
    // trait's defaults: the portable scalar code of rquant-core.
}

/// fp16 weights as PyTorch packs them: clamp to ±65504, round to fp16 (RNE,
/// subnormals kept), back to f32.
pub fn fp16_round_weights(w: &[f32]) -> Vec<f32> {
    w.iter()
        .map(|&v| half::f16::from_f32(v.clamp(-65504.0, 65504.0)).to_f32())
        .collect()
}
