//! rquant's reference engine: plain scalar loops, obviously correct, the
//! oracle every other engine is compared with bit for bit. Each op follows
//! docs/numerics.md line by line; speed is not a goal here. The memory-bound
//! ops (element-wise, pooling, cat, lookup tables) are `rquant_core::portable`,
//! shared with every engine that does not vectorise them.

use std::any::Any;

use rquant_core::engine::{
    Backend, Checked, ConvCall, DynamicCall, GemmBackend, Int8Panels, LinearCall, MemoryBackend,
    Panels,
};
use rquant_core::numerics::{
    bias_term, dynamic_out, quantize_val, requantize_u8_clamped, RequantChannel,
};
use rquant_core::output::Clamp;
use rquant_core::{Conv2dParams, Engine, PackedLinearFp16, QTensor, QuantError, Result, Tensor};

/// The reference backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReferenceEngine;

/// The reference engine, always available.
pub fn engine() -> Engine {
    Engine::new(ReferenceEngine)
}

/// A quantized weight unpacked to `w - w_zp` per output channel, with its scales.
#[derive(Debug)]
struct RefWeight {
    /// `[out, rest]` row-major, each entry `w - w_zp[out]`.
    w: Vec<i32>,
    zps: Vec<i32>,
    scales: Vec<f64>,
    per_channel: bool,
}

impl Panels for RefWeight {
    fn bytes(&self) -> usize {
        self.w.len() * 4 + self.scales.len() * 12
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Int8Panels for RefWeight {
    fn unpack(&self) -> Vec<i8> {
        let rest = self.w.len() / self.zps.len();
        self.w
            .chunks_exact(rest)
            .zip(&self.zps)
            .flat_map(|(row, &z)| row.iter().map(move |&v| (v + z) as i8))
            .collect()
    }
}

/// fp16-rounded weights.
#[derive(Debug)]
struct RefFp16(Vec<f32>);

impl Panels for RefFp16 {
    fn bytes(&self) -> usize {
        self.0.len() * 4
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl RefWeight {
    fn new(w: &QTensor<i8>) -> Self {
        let out = w.shape()[0];
        let rest = w.numel() / out;
        let mut v = Vec::with_capacity(w.numel());
        let mut scales = Vec::with_capacity(out);
        let mut zps = Vec::with_capacity(out);
        for o in 0..out {
            let (s, z) = w.qparams().channel(o);
            scales.push(s);
            zps.push(z as i32);
            v.extend(
                w.int_repr()[o * rest..(o + 1) * rest]
                    .iter()
                    .map(|&q| q as i32 - z as i32),
            );
        }
        RefWeight {
            w: v,
            zps,
            scales,
            per_channel: w.qparams().is_per_channel(),
        }
    }
}

fn xq(x: &QTensor<u8>) -> (f64, i32) {
    let (s, z) = x.q_per_tensor().expect("validated per-tensor");
    (s, z as i32)
}

/// The output qparams and clamp of a static call, and the weight's bias.
struct Out<'a> {
    scale: f64,
    zp: i32,
    clamp: Clamp,
    bias: Option<&'a [f32]>,
}

/// Requantize one output channel's accumulator as fbgemm's ReQuantizeOutput
/// with a float bias, from the scales (not from the front end's precomputed
/// output stage, so that description is checked too).
fn requant(acc: i32, x_scale: f64, wt: &RefWeight, c: usize, out: &Out) -> u8 {
    let ch = RequantChannel::new(x_scale, wt.scales[c], out.scale);
    let b = out.bias.map_or(0.0, |b| {
        bias_term(b[c], ch.act_times_w_scale, wt.per_channel)
    });
    requantize_u8_clamped(acc, b, ch.multiplier, out.zp, out.clamp)
}

fn ours<'a, P: 'static>(op: &'static str, p: Option<&'a P>) -> Result<&'a P> {
    p.ok_or_else(|| QuantError::invalid(op, "weights were not packed by the reference engine"))
}

/// Exact dot product of `(x - x_zp)` with a weight row, in wrapping int32
/// (the normative accumulator: it never wraps for K below 32 000).
fn dot(x: &[u8], x_zp: i32, w: &[i32]) -> i32 {
    x.iter().zip(w).fold(0i32, |acc, (&a, &b)| {
        acc.wrapping_add((a as i32 - x_zp).wrapping_mul(b))
    })
}

impl Backend for ReferenceEngine {
    fn name(&self) -> &'static str {
        "reference"
    }
    fn isa(&self) -> &'static str {
        "scalar"
    }
    fn priority(&self) -> i32 {
        -100
    }
}

// The memory-bound ops (element-wise, pooling, cat, tables) are the trait's
// defaults: the portable scalar code of rquant-core.
impl MemoryBackend for ReferenceEngine {}

impl GemmBackend for ReferenceEngine {
    fn pack_linear(&self, w: &QTensor<i8>, _: Checked) -> Result<Box<dyn Int8Panels>> {
        Ok(Box::new(RefWeight::new(w)))
    }

    fn linear(&self, c: &LinearCall<'_>) -> Result<Vec<u8>> {
        let w = c.w;
        let wt: &RefWeight = ours("linear", w.panels())?;
        let (n, k, m) = (w.out_features(), w.in_features(), c.m);
        let (xs, xz) = xq(c.x);
        let out = Out {
            scale: c.out.scale,
            zp: c.out.zero_point as i32,
            clamp: c.requant.clamp,
            bias: w.bias(),
        };
        let xd = c.x.int_repr();
        let mut y = Vec::with_capacity(m * n);
        for i in 0..m {
            let row = &xd[i * k..(i + 1) * k];
            for j in 0..n {
                let acc = dot(row, xz, &wt.w[j * k..(j + 1) * k]);
                y.push(requant(acc, xs, wt, j, &out));
            }
        }
        Ok(y)
    }

    fn linear_dynamic(&self, c: &DynamicCall<'_>) -> Result<Vec<f32>> {
        let w = c.w;
        let wt: &RefWeight = ours("linear_dynamic", w.panels())?;
        let (n, k, m) = (w.out_features(), w.in_features(), c.m);
        let zp = c.code.zp as i64;
        let xq: Vec<u8> =
            c.x.iter()
                .map(|&v| quantize_val::<u8>(c.code.inv, zp, v))
                .collect();
        let mut y = Vec::with_capacity(m * n);
        for i in 0..m {
            let row = &xq[i * k..(i + 1) * k];
            for j in 0..n {
                let acc = dot(row, zp as i32, &wt.w[j * k..(j + 1) * k]);
                let sp = c.code.scale * (wt.scales[j] as f32);
                y.push(dynamic_out(acc, sp, w.bias().map(|b| b[j])));
            }
        }
        Ok(y)
    }

    fn pack_linear_fp16(
        &self,
        w: &Tensor,
        _bias: Option<&[f32]>,
        _: Checked,
    ) -> Result<Box<dyn Panels>> {
        Ok(Box::new(RefFp16(fp16_round_weights(w.data()))))
    }

    fn linear_dynamic_fp16(
        &self,
        x: &[f32],
        m: usize,
        w: &PackedLinearFp16,
        _: Checked,
    ) -> Result<Vec<f32>> {
        let w16 = &ours::<RefFp16>("linear_dynamic_fp16", w.panels())?.0;
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

    fn pack_conv2d(
        &self,
        w: &QTensor<i8>,
        _p: Conv2dParams,
        _: Checked,
    ) -> Result<Box<dyn Int8Panels>> {
        Ok(Box::new(RefWeight::new(w)))
    }

    fn conv2d(&self, c: &ConvCall<'_>) -> Result<Vec<u8>> {
        let (g, w) = (c.g, c.w);
        let wt: &RefWeight = ours("conv2d", w.panels())?;
        let (xs, xz) = xq(c.x);
        let out = Out {
            scale: c.out.scale,
            zp: c.out.zero_point as i32,
            clamp: c.requant.clamp,
            bias: w.bias(),
        };
        let xd = c.x.int_repr();
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
                            requant(acc, xs, wt, oc, &out);
                    }
                }
            }
        }
        Ok(y)
    }
}

/// fp16 weights as PyTorch packs them: clamp to ±65504, round to fp16 (RNE,
/// subnormals kept), back to f32.
pub fn fp16_round_weights(w: &[f32]) -> Vec<f32> {
    w.iter()
        .map(|&v| half::f16::from_f32(v.clamp(-65504.0, 65504.0)).to_f32())
        .collect()
}
