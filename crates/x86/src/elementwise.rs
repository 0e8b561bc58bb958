//! Element-wise ops, pooling and cat: the reference engine's formulas
//! (through `rquant_core::numerics`), with hardswish and sigmoid as 256-entry
//! lookup tables built from the same scalar function. Identical bits by
//! construction; memory-bound, so plain loops.

use rquant_core::numerics::{self, dequantize_val, div_rne, inv_scale, quantize_val, rne};
use rquant_core::ops::{
    adaptive_window, AvgPool2dParams, BinaryOp, MaxPool2dParams, OutQ, PoolGeometry,
};
use rquant_core::{QTensor, Result};

/// The scalar implementations (shared by every ISA path of the engine).
pub(crate) struct Elementwise;

impl Elementwise {
    pub(crate) fn binary_impl(
        &self,
        op: BinaryOp,
        a: &QTensor<u8>,
        b: &QTensor<u8>,
        out: OutQ,
    ) -> Result<Vec<u8>> {
        let (sa, za) = a.q_per_tensor().expect("validated");
        let (sb, zb) = b.q_per_tensor().expect("validated");
        let inv = inv_scale(out.scale);
        let it = a.int_repr().iter().zip(b.int_repr());
        Ok(match op {
            BinaryOp::Add | BinaryOp::AddRelu => it
                .map(|(&qa, &qb)| {
                    let mut c = dequantize_val(sa as f32, za, qa as i64)
                        + dequantize_val(sb as f32, zb, qb as i64);
                    if op == BinaryOp::AddRelu {
                        c = c.max(0.0);
                    }
                    quantize_val::<u8>(inv, out.zero_point, c)
                })
                .collect(),
            BinaryOp::Mul => {
                let mult = (sa as f32) * (sb as f32) * inv;
                it.map(|(&qa, &qb)| {
                    let c = (qa as i32 - za as i32) * (qb as i32 - zb as i32);
                    let r = numerics::f32_to_i64_sat(rne(c as f32 * mult)) + out.zero_point;
                    r.clamp(0, 255) as u8
                })
                .collect()
            }
        })
    }

    pub(crate) fn cat_impl(
        &self,
        xs: &[&QTensor<u8>],
        outer: usize,
        inner: usize,
        out: OutQ,
    ) -> Result<Vec<u8>> {
        let inv = inv_scale(out.scale);
        let total: usize = xs.iter().map(|x| x.numel()).sum();
        let mut y = Vec::with_capacity(total);
        for o in 0..outer {
            for x in xs {
                let (s, z) = x.q_per_tensor().expect("validated");
                let len = x.numel() / outer;
                debug_assert_eq!(len % inner.max(1), 0);
                y.extend(x.int_repr()[o * len..(o + 1) * len].iter().map(|&q| {
                    quantize_val::<u8>(inv, out.zero_point, dequantize_val(s as f32, z, q as i64))
                }));
            }
        }
        Ok(y)
    }

    pub(crate) fn relu_impl(&self, x: &QTensor<u8>) -> Result<Vec<u8>> {
        let z = x.q_per_tensor().expect("validated").1 as u8;
        Ok(x.int_repr().iter().map(|&q| q.max(z)).collect())
    }

    pub(crate) fn max_pool2d_impl(
        &self,
        x: &QTensor<u8>,
        g: &PoolGeometry,
        p: &MaxPool2dParams,
    ) -> Result<Vec<u8>> {
        let xd = x.int_repr();
        let mut y = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
        for plane in 0..g.n * g.c {
            let src = &xd[plane * g.h * g.w..(plane + 1) * g.h * g.w];
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut m = 0u8;
                    for ky in 0..p.kernel[0] {
                        let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize
                            - p.padding[0] as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        for kx in 0..p.kernel[1] {
                            let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                                - p.padding[1] as isize;
                            if ix < 0 || ix >= g.w as isize {
                                continue;
                            }
                            m = m.max(src[iy as usize * g.w + ix as usize]);
                        }
                    }
                    y.push(m);
                }
            }
        }
        Ok(y)
    }

    pub(crate) fn avg_pool2d_impl(
        &self,
        x: &QTensor<u8>,
        g: &PoolGeometry,
        p: &AvgPool2dParams,
    ) -> Result<Vec<u8>> {
        let z = x.q_per_tensor().expect("validated").1;
        let xd = x.int_repr();
        let mut y = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
        let (h, w) = (g.h as i64, g.w as i64);
        let (ph, pw) = (p.padding[0] as i64, p.padding[1] as i64);
        for plane in 0..g.n * g.c {
            let src = &xd[plane * g.h * g.w..(plane + 1) * g.h * g.w];
            for oy in 0..g.oh as i64 {
                for ox in 0..g.ow as i64 {
                    let hs = oy * p.stride[0] as i64 - ph;
                    let ws = ox * p.stride[1] as i64 - pw;
                    let he = (hs + p.kernel[0] as i64).min(h + ph);
                    let we = (ws + p.kernel[1] as i64).min(w + pw);
                    let pool_size = (he - hs) * (we - ws);
                    let (hs, ws, he, we) = (hs.max(0), ws.max(0), he.min(h), we.min(w));
                    let size = (he - hs) * (we - ws);
                    let mut sum = 0i64;
                    for iy in hs..he {
                        for ix in ws..we {
                            sum += src[(iy * w + ix) as usize] as i64;
                        }
                    }
                    let div = match p.divisor_override {
                        Some(d) => d as i64,
                        None if p.count_include_pad => pool_size,
                        None => size,
                    };
                    // rne((Σq − size·zp)/div + zp), exact, zp added before rounding.
                    let v = div_rne(sum - size * z + z * div, div);
                    y.push(v.clamp(0, 255) as u8);
                }
            }
        }
        Ok(y)
    }

    pub(crate) fn adaptive_avg_pool2d_impl(
        &self,
        x: &QTensor<u8>,
        g: &PoolGeometry,
    ) -> Result<Vec<u8>> {
        let xd = x.int_repr();
        let mut y = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
        for plane in 0..g.n * g.c {
            let src = &xd[plane * g.h * g.w..(plane + 1) * g.h * g.w];
            for oy in 0..g.oh {
                let (hs, he) = adaptive_window(oy, g.h, g.oh);
                for ox in 0..g.ow {
                    let (ws, we) = adaptive_window(ox, g.w, g.ow);
                    let mut sum = 0i64;
                    for iy in hs..he {
                        for ix in ws..we {
                            sum += src[iy * g.w + ix] as i64;
                        }
                    }
                    // rne(f32(Σq) · f32(1/(kh·kw))): a reciprocal multiply, as PyTorch.
                    let recip = 1.0f32 / ((he - hs) * (we - ws)) as f32;
                    let v = numerics::f32_to_i64_sat(rne(sum as f32 * recip));
                    y.push(v.clamp(0, 255) as u8);
                }
            }
        }
        Ok(y)
    }

    pub(crate) fn hardswish_impl(&self, x: &QTensor<u8>, out: OutQ) -> Result<Vec<u8>> {
        let (s, z) = x.q_per_tensor().expect("validated");
        let inv = inv_scale(out.scale);
        // 256 possible inputs: the table holds the scalar formula's results.
        let lut: Vec<u8> = (0..=255u8)
            .map(|q| {
                let v = dequantize_val(s as f32, z, q as i64);
                quantize_val::<u8>(inv, out.zero_point, numerics::hardswish_f32(v))
            })
            .collect();
        Ok(x.int_repr().iter().map(|&q| lut[q as usize]).collect())
    }

    pub(crate) fn sigmoid_impl(&self, x: &QTensor<u8>, out: OutQ) -> Result<Vec<u8>> {
        let (s, z) = x.q_per_tensor().expect("validated");
        let inv = inv_scale(out.scale);
        // 256 possible inputs: build the table once per call.
        let lut: Vec<u8> = (0..=255u8)
            .map(|q| {
                quantize_val::<u8>(
                    inv,
                    out.zero_point,
                    numerics::sigmoid_f32(dequantize_val(s as f32, z, q as i64)),
                )
            })
            .collect();
        Ok(x.int_repr().iter().map(|&q| lut[q as usize]).collect())
    }
}
