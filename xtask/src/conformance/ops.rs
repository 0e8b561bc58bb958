//! The runner's op table: every op of ../shared/CONFORMANCE.md, once, with
//! how it runs (once, or on every engine), the function that computes it, and
//! which of its cases are pending on an issue. The op lists, the dispatch,
//! `cargo xtask conformance --list-ops` and the generator check
//! (tools/golden) all derive from [`OPS`].

use std::collections::BTreeMap;

use rquant_core::numerics::{choose_qparams, find_min_max};
use rquant_core::{
    dequantize, fake_quantize_per_channel, fake_quantize_per_tensor, quantize_per_channel,
    quantize_per_tensor, AvgPool2dParams, Conv2dParams, MaxPool2dParams, MemoryFormat, QDType,
    QParams, QTensor, QType, QuantError, Tensor as FTensor,
};

use super::case::{Case, CaseError, Data, Tensor};
use super::{extra, next};

pub type Outputs = BTreeMap<String, Tensor>;

/// The engine a case runs on (the one place the runner names its type).
pub use rquant_core::Engine;

/// Computes a case's outputs (engine-independent ops ignore the engine).
pub type RunFn = fn(&Case, &Engine) -> Result<Outputs, CaseError>;

/// Where an op's cases run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// Functions whose result does not depend on the engine (core functions,
    /// and module-layer ops that compute without an engine op): run once,
    /// reported under the engine label `core`.
    Once,
    /// On every engine and ISA path.
    OnEveryEngine,
}

/// Cases the runner cannot pass yet, and the issue that will bring them.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    pub issue: u32,
    /// What is missing, for the report.
    pub what: &'static str,
    /// Which of the op's cases are pending (all of them, for an op not
    /// implemented at all).
    pub applies: fn(&Case) -> bool,
}

/// One op of the table.
#[derive(Debug, Clone, Copy)]
pub struct OpSpec {
    pub name: &'static str,
    pub runs: Runs,
    /// None while the op is pending as a whole.
    pub run: Option<RunFn>,
    pub pending: Option<Pending>,
}

/// `Pending::applies` for an op pending as a whole.
pub fn every_case(_: &Case) -> bool {
    true
}

impl OpSpec {
    const fn once(name: &'static str, run: RunFn) -> OpSpec {
        OpSpec {
            name,
            runs: Runs::Once,
            run: Some(run),
            pending: None,
        }
    }
    const fn per_engine(name: &'static str, run: RunFn) -> OpSpec {
        OpSpec {
            name,
            runs: Runs::OnEveryEngine,
            run: Some(run),
            pending: None,
        }
    }
    /// An op the runner has no code for yet: every case is pending.
    pub const fn pending(name: &'static str, issue: u32, what: &'static str) -> OpSpec {
        OpSpec {
            name,
            runs: Runs::OnEveryEngine,
            run: None,
            pending: Some(Pending {
                issue,
                what,
                applies: every_case,
            }),
        }
    }
    /// The runner computes (some of) the op's cases.
    pub fn is_implemented(&self) -> bool {
        self.run.is_some()
    }

    /// The pending entry that holds for case `c`, if any.
    pub fn pending_for(&self, c: &Case) -> Option<&Pending> {
        self.pending.as_ref().filter(|p| (p.applies)(c))
    }

    /// One line of `cargo xtask conformance --list-ops`: the name, then
    /// `implemented` or `pending` (the generator reads these two columns).
    pub fn describe(&self) -> String {
        let runs = match self.runs {
            Runs::Once => "once (engine-independent)",
            Runs::OnEveryEngine => "on every engine",
        };
        match (self.run, &self.pending) {
            (Some(_), None) => format!("{:<28} implemented  {runs}", self.name),
            (Some(_), Some(p)) => format!(
                "{:<28} implemented  {runs}; pending (issue {}): {}",
                self.name, p.issue, p.what
            ),
            (None, Some(p)) => format!(
                "{:<28} pending      issue {}: {}",
                self.name, p.issue, p.what
            ),
            (None, None) => format!("{:<28} broken       no code and not pending", self.name),
        }
    }
}

/// Every op the runner knows: CONFORMANCE.md's, in its order, then rquant's own.
pub static OPS: &[OpSpec] = &[
    OpSpec::once("quantize_per_tensor", quantize_per_tensor_op),
    OpSpec::once("quantize_per_channel", quantize_per_channel_op),
    OpSpec::once("dequantize_per_tensor", dequantize_per_tensor_op),
    OpSpec::once("dequantize_per_channel", dequantize_per_channel_op),
    OpSpec::once("observer", observer_op),
    OpSpec::once("choose_qparams_dynamic", choose_qparams_dynamic_op),
    OpSpec::once("fake_quantize_per_tensor", fake_quantize_op),
    OpSpec::once("fake_quantize_per_channel", fake_quantize_op),
    OpSpec::per_engine("linear", linear_op),
    OpSpec::per_engine("linear_dynamic", linear_dynamic_op),
    OpSpec::per_engine("linear_dynamic_fp16", linear_dynamic_fp16_op),
    OpSpec::per_engine("conv2d", conv2d_op),
    OpSpec::per_engine("add", add_op),
    OpSpec::per_engine("add_relu", add_relu_op),
    OpSpec::per_engine("mul", mul_op),
    OpSpec::per_engine("mul_relu", mul_relu_op),
    OpSpec::per_engine("relu", relu_op),
    OpSpec::per_engine("max_pool2d", max_pool2d_op),
    OpSpec::per_engine("avg_pool2d", avg_pool2d_op),
    OpSpec::per_engine("adaptive_avg_pool2d", adaptive_avg_pool2d_op),
    OpSpec::per_engine("hardswish", hardswish_op),
    OpSpec::per_engine("sigmoid", sigmoid_op),
    OpSpec::per_engine("cat", cat_op),
    // Ops added for the next releases (CONFORMANCE.md, second table).
    OpSpec::per_engine("relu6", next::relu6_op),
    OpSpec::per_engine("hardtanh", next::hardtanh_op),
    OpSpec::per_engine("leaky_relu", next::leaky_relu_op),
    OpSpec::per_engine("elu", next::elu_op),
    OpSpec::per_engine("hardsigmoid", next::hardsigmoid_op),
    OpSpec::per_engine("tanh", next::tanh_op),
    OpSpec::per_engine("gelu", next::gelu_op),
    OpSpec::per_engine("layer_norm", next::layer_norm_op),
    OpSpec::per_engine("group_norm", next::group_norm_op),
    OpSpec::per_engine("instance_norm", next::instance_norm_op),
    OpSpec::per_engine("batch_norm2d", next::batch_norm2d_op),
    OpSpec::per_engine("batch_norm2d_relu", next::batch_norm2d_relu_op),
    OpSpec::per_engine("conv1d", next::conv1d_op),
    OpSpec::per_engine("conv3d", next::conv3d_op),
    OpSpec::per_engine("conv_transpose2d", next::conv_transpose2d_op),
    OpSpec::per_engine("upsample_nearest2d", next::upsample_nearest2d_op),
    OpSpec::per_engine("upsample_bilinear2d", next::upsample_bilinear2d_op),
    OpSpec::per_engine("constant_pad2d", next::constant_pad2d_op),
    OpSpec::per_engine("channel_shuffle", next::channel_shuffle_op),
    OpSpec::per_engine("mean", next::mean_op),
    OpSpec::per_engine("embedding_bag_byte", next::embedding_bag_byte_op),
    OpSpec::per_engine("embedding_bag_4bit", next::embedding_bag_4bit_op),
    OpSpec::per_engine("matmul", next::matmul_op),
    OpSpec::per_engine("softmax", next::softmax_op),
    // Ops beyond CONFORMANCE.md's tables (tests/golden/README.md): the module
    // layer's ops (rquant_nn::qops) and the 2-bit embedding bag. Those built on
    // engine ops run on every engine; those qops computes itself (no engine op
    // underneath: the engine argument is unused) run once.
    OpSpec::once("add_scalar", extra::add_scalar_op),
    OpSpec::once("add_scalar_relu", extra::add_scalar_relu_op),
    OpSpec::once("mul_scalar", extra::mul_scalar_op),
    OpSpec::once("mul_scalar_relu", extra::mul_scalar_relu_op),
    OpSpec::per_engine("cat_relu", extra::cat_relu_op),
    OpSpec::once("prelu", extra::prelu_op),
    OpSpec::once("celu", extra::celu_op),
    OpSpec::once("threshold", extra::threshold_op),
    OpSpec::per_engine("clamp", extra::clamp_op),
    OpSpec::per_engine("max_pool1d", extra::max_pool1d_op),
    OpSpec::once("max_pool3d", extra::max_pool3d_op),
    OpSpec::once("avg_pool3d", extra::avg_pool3d_op),
    OpSpec::once("adaptive_avg_pool3d", extra::adaptive_avg_pool3d_op),
    OpSpec::per_engine("conv_transpose1d", extra::conv_transpose1d_op),
    OpSpec::per_engine("conv_transpose3d", extra::conv_transpose3d_op),
    OpSpec::per_engine("batch_norm1d", extra::batch_norm1d_op),
    OpSpec::per_engine("batch_norm1d_relu", extra::batch_norm1d_relu_op),
    OpSpec::per_engine("batch_norm3d", extra::batch_norm3d_op),
    OpSpec::per_engine("batch_norm3d_relu", extra::batch_norm3d_relu_op),
    OpSpec::per_engine("embedding_bag_2bit", extra::embedding_bag_2bit_op),
];

/// The table entry of op `name`.
pub fn spec(name: &str) -> Option<&'static OpSpec> {
    OPS.iter().find(|s| s.name == name)
}

/// Run `c` on `engine` (ignored for engine-independent ops) and return its
/// outputs; an op the table does not know, or has no code for, is an error.
pub fn run(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let s = spec(&c.op).ok_or_else(|| c.err(format!("unknown op {:?}", c.op)))?;
    match (s.run, &s.pending) {
        (Some(f), _) => f(c, engine),
        (None, Some(p)) => Err(c.err(format!(
            "op {:?} is pending (issue {}: {})",
            c.op, p.issue, p.what
        ))),
        (None, None) => Err(c.err(format!("op {:?} has no code", c.op))),
    }
}

fn qe(c: &Case) -> impl Fn(QuantError) -> CaseError + '_ {
    move |r| c.err(r.to_string())
}

pub(super) fn one(name: &str, shape: Vec<usize>, data: Data) -> Outputs {
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

pub(super) fn quint8(
    c: &Case,
    name: &str,
    scale: &str,
    zp: &str,
) -> Result<QTensor<u8>, CaseError> {
    let (shape, v) = c.in_u8(name)?;
    let qp = QParams::per_tensor(c.f64(scale)?, c.i64(zp)?);
    QTensor::from_int_repr(shape, v, qp).map_err(|e| c.err(e.to_string()))
}

/// The weight of linear / conv from `w`, `w_scales`, `w_zero_points` and `w_qscheme`.
pub(super) fn weight(c: &Case) -> Result<QTensor<i8>, CaseError> {
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

pub(super) fn bias(c: &Case) -> Result<Option<Vec<f32>>, CaseError> {
    if c.has_input("bias") {
        Ok(Some(c.in_f32("bias")?.1))
    } else {
        Ok(None)
    }
}

pub(super) fn u8_out(q: QTensor<u8>) -> Outputs {
    one("y", q.shape().to_vec(), Data::U8(q.into_int_repr()))
}

fn quantize_per_tensor_op(c: &Case, _: &Engine) -> Result<Outputs, CaseError> {
    let e = qe(c);
    let x = ftensor(c, "x")?;
    let (s, z) = (c.f64("scale")?, c.i64("zero_point")?);
    let d = match dtype(c)? {
        QDType::QUInt8 => q_data(&quantize_per_tensor::<u8>(&x, s, z).map_err(e)?),
        QDType::QInt8 => q_data(&quantize_per_tensor::<i8>(&x, s, z).map_err(e)?),
        QDType::QInt32 => q_data(&quantize_per_tensor::<i32>(&x, s, z).map_err(e)?),
    };
    Ok(one("q", x.shape().to_vec(), d))
}

fn quantize_per_channel_op(c: &Case, _: &Engine) -> Result<Outputs, CaseError> {
    let e = qe(c);
    let x = ftensor(c, "x")?;
    let (_, s) = c.in_f64("scales")?;
    let (_, z) = c.in_i64("zero_points")?;
    let axis = c.i64("axis")?;
    let d = match dtype(c)? {
        QDType::QUInt8 => q_data(&quantize_per_channel::<u8>(&x, &s, &z, axis).map_err(e)?),
        QDType::QInt8 => q_data(&quantize_per_channel::<i8>(&x, &s, &z, axis).map_err(e)?),
        QDType::QInt32 => q_data(&quantize_per_channel::<i32>(&x, &s, &z, axis).map_err(e)?),
    };
    Ok(one("q", x.shape().to_vec(), d))
}

fn dequantize_per_tensor_op(c: &Case, _: &Engine) -> Result<Outputs, CaseError> {
    let dt = dtype(c)?;
    let (shape, v) = qint_input(c, "q", dt)?;
    let qp = QParams::per_tensor(c.f64("scale")?, c.i64("zero_point")?);
    let x = deq(c, dt, shape, &v, qp)?;
    Ok(one("x", x.shape().to_vec(), Data::F32(x.into_data())))
}

fn dequantize_per_channel_op(c: &Case, _: &Engine) -> Result<Outputs, CaseError> {
    let dt = dtype(c)?;
    let (shape, v) = qint_input(c, "q", dt)?;
    let axis =
        rquant_core::quant::normalize_axis("dequantize_per_channel", c.i64("axis")?, shape.len())
            .map_err(qe(c))?;
    let qp = QParams::PerChannel {
        scales: c.in_f64("scales")?.1,
        zero_points: c.in_i64("zero_points")?.1,
        axis,
    };
    let x = deq(c, dt, shape, &v, qp)?;
    Ok(one("x", x.shape().to_vec(), Data::F32(x.into_data())))
}

fn observer_op(c: &Case, _: &Engine) -> Result<Outputs, CaseError> {
    super::observer::run(c)
}

fn choose_qparams_dynamic_op(c: &Case, _: &Engine) -> Result<Outputs, CaseError> {
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
    Ok(m)
}

/// `fake_quantize_per_tensor` and `fake_quantize_per_channel`: forward and backward.
fn fake_quantize_op(c: &Case, _: &Engine) -> Result<Outputs, CaseError> {
    let e = qe(c);
    let x = ftensor(c, "x")?;
    let gy = ftensor(c, "grad_y")?;
    let (qmin, qmax) = (c.i64("quant_min")?, c.i64("quant_max")?);
    let fq = if c.op == "fake_quantize_per_tensor" {
        fake_quantize_per_tensor(&x, c.f64("scale")? as f32, c.i64("zero_point")?, qmin, qmax)
    } else {
        let (_, s) = c.in_f32("scales")?;
        let (_, z) = c.in_i32("zero_points")?;
        let z: Vec<i64> = z.into_iter().map(i64::from).collect();
        fake_quantize_per_channel(&x, &s, &z, c.i64("axis")?, qmin, qmax)
    }
    .map_err(&e)?;
    let gx = fq.backward(&gy).map_err(&e)?;
    let mut m = one("y", x.shape().to_vec(), Data::F32(fq.y.into_data()));
    m.insert(
        "grad_x".into(),
        Tensor {
            shape: gx.shape().to_vec(),
            data: Data::F32(gx.into_data()),
        },
    );
    Ok(m)
}

fn linear_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let e = qe(c);
    let x = quint8(c, "x", "x_scale", "x_zero_point")?;
    let w = engine.pack_linear(weight(c)?, bias(c)?).map_err(&e)?;
    let y = engine
        .linear(
            &x,
            &w,
            c.f64("out_scale")?,
            c.i64("out_zero_point")?,
            c.bool_or("relu", false)?,
        )
        .map_err(&e)?;
    Ok(u8_out(y))
}

fn linear_dynamic_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let e = qe(c);
    let x = ftensor(c, "x")?;
    let w = engine.pack_linear(weight(c)?, bias(c)?).map_err(&e)?;
    let y = engine
        .linear_dynamic(&x, &w, c.bool_or("reduce_range", false)?)
        .map_err(&e)?;
    Ok(one("y", y.shape().to_vec(), Data::F32(y.into_data())))
}

fn linear_dynamic_fp16_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let e = qe(c);
    let x = ftensor(c, "x")?;
    let w = engine
        .pack_linear_fp16(ftensor(c, "w")?, bias(c)?)
        .map_err(&e)?;
    let y = engine.linear_dynamic_fp16(&x, &w).map_err(&e)?;
    Ok(one("y", y.shape().to_vec(), Data::F32(y.into_data())))
}

fn conv2d_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let e = qe(c);
    let x = quint8(c, "x", "x_scale", "x_zero_point")?;
    let groups = c.i64("groups")?;
    let p = Conv2dParams {
        stride: c.pair("stride", None)?,
        padding: c.pair("padding", None)?,
        dilation: c.pair("dilation", None)?,
        groups: usize::try_from(groups)
            .map_err(|_| c.err(format!("groups {groups} is negative")))?,
    };
    let w = engine.pack_conv2d(weight(c)?, bias(c)?, p).map_err(&e)?;
    let (os, oz, relu) = (
        c.f64("out_scale")?,
        c.i64("out_zero_point")?,
        c.bool_or("relu", false)?,
    );
    let y = engine.conv2d(&x, &w, os, oz, relu).map_err(&e)?;
    // The same case channels-last (an engine's NHWC conv, or the front
    // end's conversions around it) must give the same bits, in NHWC.
    let xl = x.to_format(MemoryFormat::ChannelsLast);
    let yl = engine.conv2d(&xl, &w, os, oz, relu).map_err(&e)?;
    if yl.memory_format() != MemoryFormat::ChannelsLast
        || yl.contiguous().int_repr() != y.int_repr()
    {
        return Err(c.err(format!(
            "channels-last conv2d on {}/{} differs from the contiguous one",
            engine.name(),
            engine.isa()
        )));
    }
    Ok(u8_out(y))
}

/// The operands and output qparams of add / add_relu / mul / mul_relu.
fn binary_args(c: &Case) -> Result<(QTensor<u8>, QTensor<u8>, f64, i64), CaseError> {
    let a = quint8(c, "a", "a_scale", "a_zero_point")?;
    let b = quint8(c, "b", "b_scale", "b_zero_point")?;
    Ok((a, b, c.f64("out_scale")?, c.i64("out_zero_point")?))
}

fn add_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let (a, b, s, z) = binary_args(c)?;
    Ok(u8_out(engine.add(&a, &b, s, z).map_err(qe(c))?))
}

fn add_relu_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let (a, b, s, z) = binary_args(c)?;
    Ok(u8_out(engine.add_relu(&a, &b, s, z).map_err(qe(c))?))
}

fn mul_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let (a, b, s, z) = binary_args(c)?;
    Ok(u8_out(engine.mul(&a, &b, s, z).map_err(qe(c))?))
}

/// PyTorch's `quantized::mul_relu` is `mul` clamped below at the output zero
/// point, which is the engine's `relu` of the product (relu keeps qparams).
fn mul_relu_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let e = qe(c);
    let (a, b, s, z) = binary_args(c)?;
    let y = engine.mul(&a, &b, s, z).map_err(&e)?;
    Ok(u8_out(engine.relu(&y).map_err(&e)?))
}

fn relu_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let x = quint8(c, "x", "scale", "zero_point")?;
    Ok(u8_out(engine.relu(&x).map_err(qe(c))?))
}

fn max_pool2d_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    // Max pooling needs no qparams; any valid ones do.
    let (shape, v) = c.in_u8("x")?;
    let x = QTensor::from_int_repr(shape, v, QParams::per_tensor(1.0, 0)).map_err(qe(c))?;
    let p = MaxPool2dParams {
        kernel: c.pair("kernel_size", None)?,
        stride: c.pair("stride", None)?,
        padding: c.pair("padding", Some([0, 0]))?,
        dilation: c.pair("dilation", Some([1, 1]))?,
        ceil_mode: c.bool_or("ceil_mode", false)?,
    };
    Ok(u8_out(engine.max_pool2d(&x, &p).map_err(qe(c))?))
}

fn avg_pool2d_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
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
    Ok(u8_out(engine.avg_pool2d(&x, &p).map_err(qe(c))?))
}

fn adaptive_avg_pool2d_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let x = quint8(c, "x", "scale", "zero_point")?;
    let y = engine
        .adaptive_avg_pool2d(&x, c.pair("output_size", None)?)
        .map_err(qe(c))?;
    Ok(u8_out(y))
}

fn hardswish_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let x = quint8(c, "x", "scale", "zero_point")?;
    let (s, z) = (c.f64("out_scale")?, c.i64("out_zero_point")?);
    Ok(u8_out(engine.hardswish(&x, s, z).map_err(qe(c))?))
}

fn sigmoid_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let x = quint8(c, "x", "scale", "zero_point")?;
    let (s, z) = (c.f64("out_scale")?, c.i64("out_zero_point")?);
    Ok(u8_out(engine.sigmoid(&x, s, z).map_err(qe(c))?))
}

/// The inputs `x0, x1, …` of a `cat`-like case with their `scales` and
/// `zero_points` attributes.
pub(super) fn cat_inputs(c: &Case, op: &str) -> Result<Vec<QTensor<u8>>, CaseError> {
    let scales = c.f64s("scales")?;
    let zps = c.i64s("zero_points")?;
    let n = c.inputs.keys().filter(|k| k.starts_with('x')).count();
    if scales.len() != n || zps.len() != n {
        return Err(c.err(format!(
            "{op}: {n} inputs but {} scales and {} zero points",
            scales.len(),
            zps.len()
        )));
    }
    (0..n)
        .map(|i| {
            let (shape, v) = c.in_u8(&format!("x{i}"))?;
            QTensor::from_int_repr(shape, v, QParams::per_tensor(scales[i], zps[i])).map_err(qe(c))
        })
        .collect()
}

fn cat_op(c: &Case, engine: &Engine) -> Result<Outputs, CaseError> {
    let xs = cat_inputs(c, "cat")?;
    let refs: Vec<&QTensor<u8>> = xs.iter().collect();
    let y = engine
        .cat(
            &refs,
            c.i64("dim")?,
            c.f64("out_scale")?,
            c.i64("out_zero_point")?,
        )
        .map_err(qe(c))?;
    Ok(u8_out(y))
}
