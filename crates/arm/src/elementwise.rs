//! Element-wise, pooling and lookup-table ops: scalar loops with exactly the
//! formulas of docs/numerics.md (the reference engine's), threaded over
//! planes where that pays. Vectorising them is future work.

use rquant_core::numerics::{self, dequantize_val, div_rne, inv_scale, quantize_val, rne};
use rquant_core::ops::{
    adaptive_window, AvgPool2dParams, BinaryOp, MaxPool2dParams, OutQ, PoolGeometry,
};
use rquant_core::QTensor;

fn pt(x: &QTensor<u8>) -> (f64, i64) {
    x.q_per_tensor().expect("validated per-tensor")
}

pub fn binary(op: BinaryOp, a: &QTensor<u8>, b: &QTensor<u8>, out: OutQ) -> Vec<u8> {
    let (sa, za) = pt(a);
    let (sb, zb) = pt(b);
    let inv = inv_scale(out.scale);
    let it = a.int_repr().iter().zip(b.int_repr());
    match op {
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
    }
}

pub fn cat(xs: &[&QTensor<u8>], outer: usize, out: OutQ) -> Vec<u8> {
    let inv = inv_scale(out.scale);
    let total: usize = xs.iter().map(|x| x.numel()).sum();
    let mut y = Vec::with_capacity(total);
    for o in 0..outer {
        for x in xs {
            let (s, z) = pt(x);
            let len = x.numel() / outer;
            y.extend(x.int_repr()[o * len..(o + 1) * len].iter().map(|&q| {
                quantize_val::<u8>(inv, out.zero_point, dequantize_val(s as f32, z, q as i64))
            }));
        }
    }
    y
}

pub fn relu(x: &QTensor<u8>) -> Vec<u8> {
    let z = pt(x).1 as u8;
    x.int_repr().iter().map(|&q| q.max(z)).collect()
}

pub fn max_pool2d(x: &QTensor<u8>, g: &PoolGeometry, p: &MaxPool2dParams) -> Vec<u8> {
    let xd = x.int_repr();
    let mut y = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
    for plane in 0..g.n * g.c {
        let src = &xd[plane * g.h * g.w..(plane + 1) * g.h * g.w];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut m = 0u8;
                for ky in 0..p.kernel[0] {
                    let iy =
                        (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
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
    y
}

pub fn avg_pool2d(x: &QTensor<u8>, g: &PoolGeometry, p: &AvgPool2dParams) -> Vec<u8> {
    let z = pt(x).1;
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
                let v = div_rne(sum - size * z + z * div, div);
                y.push(v.clamp(0, 255) as u8);
            }
        }
    }
    y
}

pub fn adaptive_avg_pool2d(x: &QTensor<u8>, g: &PoolGeometry) -> Vec<u8> {
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
                let recip = 1.0f32 / ((he - hs) * (we - ws)) as f32;
                let v = numerics::f32_to_i64_sat(rne(sum as f32 * recip));
                y.push(v.clamp(0, 255) as u8);
            }
        }
    }
    y
}

/// A 256-entry table of `f(dequantize(q))` requantized to `out`, applied to x.
fn lut(x: &QTensor<u8>, out: OutQ, f: impl Fn(f32) -> f32) -> Vec<u8> {
    let (s, z) = pt(x);
    let inv = inv_scale(out.scale);
    let table: Vec<u8> = (0..=255u8)
        .map(|q| {
            quantize_val::<u8>(
                inv,
                out.zero_point,
                f(dequantize_val(s as f32, z, q as i64)),
            )
        })
        .collect();
    x.int_repr().iter().map(|&q| table[q as usize]).collect()
}

pub fn hardswish(x: &QTensor<u8>, out: OutQ) -> Vec<u8> {
    lut(x, out, numerics::hardswish_f32)
}

pub fn sigmoid(x: &QTensor<u8>, out: OutQ) -> Vec<u8> {
    lut(x, out, numerics::sigmoid_f32)
}
