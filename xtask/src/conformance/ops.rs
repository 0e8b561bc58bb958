//! Running one case's op on an engine, producing its named outputs.

use std::collections::BTreeMap;

use rquant_core::numerics::{choose_qparams, find_min_max};
use rquant_core::{
    dequantize, fake_quantize_per_channel, fake_quantize_per_tensor, quantize_per_channel,
    quantize_per_tensor, AvgPool2dParams, Conv2dParams, Engine, MaxPool2dParams, QDType, QParams,
    QTensor, QType, Tensor as FTensor,
};

use super::case::{Case, CaseError, Data, Tensor};

pub type Outputs = BTreeMap<String, Tensor>;

/// Ops whose result does not depend on the engine (core functions): run once.
pub const CORE_OPS: &[&str] = &[
    "quantize_per_tensor",
    "quantize_per_channel",
    "dequantize_per_tensor",
    "dequantize_per_channel",
    "observer",
    "choose_qparams_dynamic",
    "fake_quantize_per_tensor",
    "fake_quantize_per_channel",
];

/// Every op the runner knows.
pub const ALL_OPS: &[&str] = &[
    "quantize_per_tensor",
    "quantize_per_channel",
    "dequantize_per_tensor",
    "dequantize_per_channel",
    "observer",
    "choose_qparams_dynamic",
    "fake_quantize_per_tensor",
    "fake_quantize_per_channel",
    "linear",
    "linear_dynamic",
    "linear_dynamic_fp16",
    "conv2d",
    "add",
    "add_relu",
    "mul",
    "relu",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "hardswish",
    "sigmoid",
    "cat",
];

fn one(name: &str, shape: Vec<usize>, data: Data) -> Outputs {
    let mut m = Outputs::new();
    m.insert(name.to_string(), Tensor { shape, data });
    m
}

fn ftensor(c: &Case, name: &str) -> Result<FTensor, CaseError> {
    let (shape, v) = c.in_f32(name)?;
    FTensor::new(shape, v).map_err(|e| c.err(e.to_string()))
}

fn dtype(c: &Case) -> Result<QDType, CaseError> {
    let s = c.str("dtype")?;
    QDType::from_name(&s).ok_or_else(|| c.err(format!("unknown dtype {s:?}")))
}

fn q_data<T: QType>(q: &QTensor<T>) -> Data {
    let v = q.int_repr().iter().map(|x| x.to_i64());
    match T::DTYPE {
        QDType::QUInt8 => Data::U8(v.map(|i| i as u8).collect()),
        QDType::QInt8 => Data::I8(v.map(|i| i as i8).collect()),
        QDType::QInt32 => Data::I32(v.map(|i| i as i32).collect()),
    }
}

/// The quantized input `name` read with the dtype attr's storage type.
fn qint_input(c: &Case, name: &str, dt: QDType) -> Result<(Vec<usize>, Vec<i64>), CaseError> {
    Ok(match dt {
        QDType::QUInt8 => {
            let (s, v) = c.in_u8(name)?;
            (s, v.into_iter().map(i64::from).collect())
        }
        QDType::QInt8 => {
            let (s, v) = c.in_i8(name)?;
            (s, v.into_iter().map(i64::from).collect())
        }
        QDType::QInt32 => {
            let (s, v) = c.in_i32(name)?;
            (s, v.into_iter().map(i64::from).collect())
        }
    })
}

fn make_q<T: QType>(
    c: &Case,
    shape: Vec<usize>,
    v: &[i64],
    qp: QParams,
) -> Result<QTensor<T>, CaseError> {
    let data: Vec<T> = v.iter().map(|&x| T::saturate(x)).collect();
    QTensor::from_int_repr(shape, data, qp).map_err(|e| c.err(e.to_string()))
}

fn deq(
    c: &Case,
    dt: QDType,
    shape: Vec<usize>,
    v: &[i64],
    qp: QParams,
) -> Result<FTensor, CaseError> {
    Ok(match dt {
        QDType::QUInt8 => dequantize(&make_q::<u8>(c, shape, v, qp)?),
        QDType::QInt8 => dequantize(&make_q::<i8>(c, shape, v, qp)?),
        QDType::QInt32 => dequantize(&make_q::<i32>(c, shape, v, qp)?),
    })
}

fn quint8(c: &Case, name: &str, scale: &str, zp: &str) -> Result<QTensor<u8>, CaseError> {
    let (shape, v) = c.in_u8(name)?;
    let qp = QParams::per_tensor(c.f64(scale)?, c.i64(zp)?);
    QTensor::from_int_repr(shape, v, qp).map_err(|e| c.err(e.to_string()))
}

/// The weight of linear / conv from `w`, `w_scales`, `w_zero_points` and `w_qscheme`.
fn weight(c: &Case) -> Result<QTensor<i8>, CaseError> {
    let (shape, w) = c.in_i8("w")?;
    let (_, scales) = c.in_f64("w_scales")?;
    let (_, zps) = c.in_i64("w_zero_points")?;
    let per_channel = match c.opt_str("w_qscheme")?.as_deref() {
        Some("per_tensor") => false,
        Some("per_channel") => true,
        Some(other) => return Err(c.err(format!("unknown w_qscheme {other:?}"))),
        None => shape.first().is_some_and(|&n| scales.len() == n && n != 1) || scales.len() > 1,
    };
    let qp = if per_channel {
        QParams::PerChannel {
            scales,
            zero_points: zps,
            axis: 0,
        }
    } else {
        match (scales.as_slice(), zps.as_slice()) {
            ([s], [z]) => QParams::per_tensor(*s, *z),
            _ => return Err(c.err("per-tensor weight needs one scale and one zero point")),
        }
    };
    QTensor::from_int_repr(shape, w, qp).map_err(|e| c.err(e.to_string()))
}

fn bias(c: &Case) -> Result<Option<Vec<f32>>, CaseError> {
    if c.has_input("bias") {
        Ok(Some(c.in_f32("bias")?.1))
    } else {
        Ok(None)
    }
}

fn u8_out(q: QTensor<u8>) -> Outputs {
    one("y", q.shape().to_vec(), Data::U8(q.into_int_repr()))
}

/// Run `c` on `engine` (ignored for core ops) and return its outputs.
pub fn run(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let e = |r: rquant_core::QuantError| c.err(r.to_string());
    Ok(match c.op.as_str() {
        "quantize_per_tensor" => {
            let x = ftensor(c, "x")?;
            let (s, z) = (c.f64("scale")?, c.i64("zero_point")?);
            let d = match dtype(c)? {
                QDType::QUInt8 => q_data(&quantize_per_tensor::<u8>(&x, s, z).map_err(e)?),
                QDType::QInt8 => q_data(&quantize_per_tensor::<i8>(&x, s, z).map_err(e)?),
                QDType::QInt32 => q_data(&quantize_per_tensor::<i32>(&x, s, z).map_err(e)?),
            };
            one("q", x.shape().to_vec(), d)
        }
        "quantize_per_channel" => {
            let x = ftensor(c, "x")?;
            let (_, s) = c.in_f64("scales")?;
            let (_, z) = c.in_i64("zero_points")?;
            let axis = c.i64("axis")?;
            let d = match dtype(c)? {
                QDType::QUInt8 => q_data(&quantize_per_channel::<u8>(&x, &s, &z, axis).map_err(e)?),
                QDType::QInt8 => q_data(&quantize_per_channel::<i8>(&x, &s, &z, axis).map_err(e)?),
                QDType::QInt32 => {
                    q_data(&quantize_per_channel::<i32>(&x, &s, &z, axis).map_err(e)?)
                }
            };
            one("q", x.shape().to_vec(), d)
        }
        "dequantize_per_tensor" => {
            let dt = dtype(c)?;
            let (shape, v) = qint_input(c, "q", dt)?;
            let qp = QParams::per_tensor(c.f64("scale")?, c.i64("zero_point")?);
            let x = deq(c, dt, shape, &v, qp)?;
            one("x", x.shape().to_vec(), Data::F32(x.into_data()))
        }
        "dequantize_per_channel" => {
            let dt = dtype(c)?;
            let (shape, v) = qint_input(c, "q", dt)?;
            let axis = rquant_core::quant::normalize_axis(
                "dequantize_per_channel",
                c.i64("axis")?,
                shape.len(),
            )
            .map_err(e)?;
            let qp = QParams::PerChannel {
                scales: c.in_f64("scales")?.1,
                zero_points: c.in_i64("zero_points")?.1,
                axis,
            };
            let x = deq(c, dt, shape, &v, qp)?;
            one("x", x.shape().to_vec(), Data::F32(x.into_data()))
        }
        "choose_qparams_dynamic" => {
            let x = ftensor(c, "x")?;
            let rr = c.bool_or("reduce_range", false)?;
            if dtype(c)? != QDType::QUInt8 {
                return Err(c.err("choose_qparams_dynamic supports dtype quint8 only"));
            }
            if x.data().iter().any(|v| !v.is_finite()) {
                return Err(c.err("choose_qparams_dynamic: input holds NaN or infinity"));
            }
            let (lo, hi) = find_min_max(x.data());
            let p = choose_qparams(lo, hi, 0, 255, rr);
            let mut m = one("scale", vec![1], Data::F64(vec![p.scale]));
            m.insert(
                "zero_point".into(),
                Tensor {
                    shape: vec![1],
                    data: Data::I64(vec![p.zero_point]),
                },
            );
            m
        }
        "fake_quantize_per_tensor" | "fake_quantize_per_channel" => {
            let x = ftensor(c, "x")?;
            let gy = ftensor(c, "grad_y")?;
            let (qmin, qmax) = (c.i64("quant_min")?, c.i64("quant_max")?);
            let fq = if c.op == "fake_quantize_per_tensor" {
                fake_quantize_per_tensor(
                    &x,
                    c.f64("scale")? as f32,
                    c.i64("zero_point")?,
                    qmin,
                    qmax,
                )
            } else {
                let (_, s) = c.in_f32("scales")?;
                let (_, z) = c.in_i32("zero_points")?;
                let z: Vec<i64> = z.into_iter().map(i64::from).collect();
                fake_quantize_per_channel(&x, &s, &z, c.i64("axis")?, qmin, qmax)
            }
            .map_err(e)?;
            let gx = fq.backward(&gy).map_err(e)?;
            let mut m = one("y", x.shape().to_vec(), Data::F32(fq.y.into_data()));
            m.insert(
                "grad_x".into(),
                Tensor {
                    shape: gx.shape().to_vec(),
                    data: Data::F32(gx.into_data()),
                },
            );
            m
        }
        "observer" => super::observer::run(c)?,
        "linear" => {
            let x = quint8(c, "x", "x_scale", "x_zero_point")?;
            let w = engine.pack_linear(weight(c)?, bias(c)?).map_err(e)?;
            let y = engine
                .linear(
                    &x,
                    &w,
                    c.f64("out_scale")?,
                    c.i64("out_zero_point")?,
                    c.bool_or("relu", false)?,
                )
                .map_err(e)?;
            u8_out(y)
        }
        "linear_dynamic" => {
            let x = ftensor(c, "x")?;
            let w = engine.pack_linear(weight(c)?, bias(c)?).map_err(e)?;
            let y = engine
                .linear_dynamic(&x, &w, c.bool_or("reduce_range", false)?)
                .map_err(e)?;
            one("y", y.shape().to_vec(), Data::F32(y.into_data()))
        }
        "linear_dynamic_fp16" => {
            let x = ftensor(c, "x")?;
            let w = engine
                .pack_linear_fp16(ftensor(c, "w")?, bias(c)?)
                .map_err(e)?;
            let y = engine.linear_dynamic_fp16(&x, &w).map_err(e)?;
            one("y", y.shape().to_vec(), Data::F32(y.into_data()))
        }
        "conv2d" => {
            let x = quint8(c, "x", "x_scale", "x_zero_point")?;
            let groups = c.i64("groups")?;
            let p = Conv2dParams {
                stride: c.pair("stride", None)?,
                padding: c.pair("padding", None)?,
                dilation: c.pair("dilation", None)?,
                groups: usize::try_from(groups)
                    .map_err(|_| c.err(format!("groups {groups} is negative")))?,
            };
            let w = engine.pack_conv2d(weight(c)?, bias(c)?, p).map_err(e)?;
            let y = engine
                .conv2d(
                    &x,
                    &w,
                    c.f64("out_scale")?,
                    c.i64("out_zero_point")?,
                    c.bool_or("relu", false)?,
                )
                .map_err(e)?;
            u8_out(y)
        }
        "add" | "add_relu" | "mul" => {
            let a = quint8(c, "a", "a_scale", "a_zero_point")?;
            let b = quint8(c, "b", "b_scale", "b_zero_point")?;
            let (s, z) = (c.f64("out_scale")?, c.i64("out_zero_point")?);
            let y = match c.op.as_str() {
                "add" => engine.add(&a, &b, s, z),
                "add_relu" => engine.add_relu(&a, &b, s, z),
                _ => engine.mul(&a, &b, s, z),
            }
            .map_err(e)?;
            u8_out(y)
        }
        "relu" => u8_out(
            engine
                .relu(&quint8(c, "x", "scale", "zero_point")?)
                .map_err(e)?,
        ),
        "max_pool2d" => {
            // Max pooling needs no qparams; any valid ones do.
            let (shape, v) = c.in_u8("x")?;
            let x = QTensor::from_int_repr(shape, v, QParams::per_tensor(1.0, 0))
                .map_err(|r| c.err(r.to_string()))?;
            let p = MaxPool2dParams {
                kernel: c.pair("kernel_size", None)?,
                stride: c.pair("stride", None)?,
                padding: c.pair("padding", Some([0, 0]))?,
                dilation: c.pair("dilation", Some([1, 1]))?,
                ceil_mode: c.bool_or("ceil_mode", false)?,
            };
            u8_out(engine.max_pool2d(&x, &p).map_err(e)?)
        }
        "avg_pool2d" => {
            let x = quint8(c, "x", "scale", "zero_point")?;
            let divisor_override = match c.opt_i64("divisor_override")? {
                None => None,
                Some(d) if d > 0 => Some(d as usize),
                Some(d) => return Err(c.err(format!("divisor_override {d} must be positive"))),
            };
            let p = AvgPool2dParams {
                kernel: c.pair("kernel_size", None)?,
                stride: c.pair("stride", None)?,
                padding: c.pair("padding", Some([0, 0]))?,
                ceil_mode: c.bool_or("ceil_mode", false)?,
                count_include_pad: c.bool_or("count_include_pad", true)?,
                divisor_override,
            };
            u8_out(engine.avg_pool2d(&x, &p).map_err(e)?)
        }
        "adaptive_avg_pool2d" => {
            let x = quint8(c, "x", "scale", "zero_point")?;
            u8_out(
                engine
                    .adaptive_avg_pool2d(&x, c.pair("output_size", None)?)
                    .map_err(e)?,
            )
        }
        "hardswish" | "sigmoid" => {
            let x = quint8(c, "x", "scale", "zero_point")?;
            let (s, z) = (c.f64("out_scale")?, c.i64("out_zero_point")?);
            let y = if c.op == "hardswish" {
                engine.hardswish(&x, s, z)
            } else {
                engine.sigmoid(&x, s, z)
            }
            .map_err(e)?;
            u8_out(y)
        }
        "cat" => {
            let scales = c.f64s("scales")?;
            let zps = c.i64s("zero_points")?;
            let n = c.inputs.keys().filter(|k| k.starts_with('x')).count();
            if scales.len() != n || zps.len() != n {
                return Err(c.err(format!(
                    "cat: {n} inputs but {} scales and {} zero points",
                    scales.len(),
                    zps.len()
                )));
            }
            let mut xs = Vec::with_capacity(n);
            for i in 0..n {
                let (shape, v) = c.in_u8(&format!("x{i}"))?;
                xs.push(
                    QTensor::from_int_repr(shape, v, QParams::per_tensor(scales[i], zps[i]))
                        .map_err(|r| c.err(r.to_string()))?,
                );
            }
            let refs: Vec<&QTensor<u8>> = xs.iter().collect();
            u8_out(
                engine
                    .cat(
                        &refs,
                        c.i64("dim")?,
                        c.f64("out_scale")?,
                        c.i64("out_zero_point")?,
                    )
                    .map_err(e)?,
            )
        }
        other => return Err(c.err(format!("unknown op {other:?}"))),
    })
}
