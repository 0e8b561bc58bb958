//! Activation modules beyond ReLU / ReLU6 / Hardswish ([`crate::layers::Activation`]):
//! `Sigmoid`, `Tanh`, `Hardsigmoid`, `ELU`, `LeakyReLU`, `Hardtanh`,
//! `GELU`, `Softmax`, `CELU`, `Threshold` (float forward and backward, and
//! what PyTorch's float module does on a quantized input), `PReLU`, and the
//! quantized modules they convert to: `nnq.ELU`, `nnq.LeakyReLU`,
//! `nnq.Softmax`, `nnq.PReLU`, and `nnq.Sigmoid` / `Tanh` / `Hardsigmoid`
//! with the fixed output qparams of PyTorch's fixed-qparams observers
//! (1/256 and 0; tanh 2/256 and 128).

use rquant_core::portable::activation as act;
use rquant_core::special::erf_f64;
use rquant_core::{quantize_per_tensor, Engine, GeluApproximate, QTensor, Tensor};
use serde_json::{json, Value as J};

use crate::error::{bad, NnError, Result};
use crate::format::Saver;
use crate::mapping::Mappings;
use crate::module::{Layer, Module};
use crate::param::Param;
use crate::post::Observation;
use crate::registry::{ModuleRegistry, Node};
use crate::value::Value;

/// Which activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActFn {
    Sigmoid,
    Tanh,
    Hardsigmoid,
    Elu {
        alpha: f32,
    },
    LeakyRelu {
        negative_slope: f32,
    },
    Hardtanh {
        min_val: f32,
        max_val: f32,
    },
    Gelu {
        approximate: GeluApproximate,
    },
    /// `nn.Softmax(dim)` (negative dims count from the end).
    Softmax {
        dim: i64,
    },
    Celu {
        alpha: f32,
    },
    Threshold {
        threshold: f32,
        value: f32,
    },
}

impl ActFn {
    /// The PyTorch class name.
    pub fn name(&self) -> &'static str {
        match self {
            ActFn::Sigmoid => "Sigmoid",
            ActFn::Tanh => "Tanh",
            ActFn::Hardsigmoid => "Hardsigmoid",
            ActFn::Elu { .. } => "ELU",
            ActFn::LeakyRelu { .. } => "LeakyReLU",
            ActFn::Hardtanh { .. } => "Hardtanh",
            ActFn::Gelu { .. } => "GELU",
            ActFn::Softmax { .. } => "Softmax",
            ActFn::Celu { .. } => "CELU",
            ActFn::Threshold { .. } => "Threshold",
        }
    }
    fn attrs(&self) -> J {
        match *self {
            ActFn::Elu { alpha } | ActFn::Celu { alpha } => json!({ "alpha": alpha }),
            ActFn::LeakyRelu { negative_slope } => json!({ "negative_slope": negative_slope }),
            ActFn::Hardtanh { min_val, max_val } => json!({"min_val": min_val, "max_val": max_val}),
            ActFn::Gelu { approximate } => json!({"approximate": match approximate {
                GeluApproximate::None => "none",
                GeluApproximate::Tanh => "tanh",
            }}),
            ActFn::Softmax { dim } => json!({ "dim": dim }),
            ActFn::Threshold { threshold, value } => {
                json!({"threshold": threshold, "value": value})
            }
            _ => json!({}),
        }
    }
    fn from_node(n: &Node, name: &str) -> Result<ActFn> {
        let f = |k: &str| -> Result<f32> { Ok(n.get_f64(k)? as f32) };
        Ok(match name {
            "Sigmoid" => ActFn::Sigmoid,
            "Tanh" => ActFn::Tanh,
            "Hardsigmoid" => ActFn::Hardsigmoid,
            "ELU" => ActFn::Elu { alpha: f("alpha")? },
            "CELU" => ActFn::Celu { alpha: f("alpha")? },
            "LeakyReLU" => ActFn::LeakyRelu {
                negative_slope: f("negative_slope")?,
            },
            "Hardtanh" => {
                let (min_val, max_val) = (f("min_val")?, f("max_val")?);
                if !(min_val.is_finite() && max_val.is_finite()) {
                    return Err(n.attr_error("min_val", "bounds must be finite"));
                }
                ActFn::Hardtanh { min_val, max_val }
            }
            "GELU" => ActFn::Gelu {
                approximate: GeluApproximate::from_name(n.get_str("approximate")?)
                    .ok_or_else(|| n.attr_error("approximate", "expected \"none\" or \"tanh\""))?,
            },
            "Softmax" => ActFn::Softmax {
                dim: n
                    .field("dim")?
                    .as_i64()
                    .ok_or_else(|| n.attr_error("dim", "not an integer"))?,
            },
            "Threshold" => ActFn::Threshold {
                threshold: f("threshold")?,
                value: f("value")?,
            },
            _ => return Err(n.attr_error("type", format!("not an activation: {name}"))),
        })
    }
    /// Whether PyTorch's eager prepare gives this module a fixed-qparams
    /// observer / fake quant (`DEFAULT_MODULE_TO_ACT_POST_PROCESS`), and
    /// which: (scale, zero point).
    pub fn fixed_qparams(&self) -> Option<(f64, i64)> {
        match self {
            ActFn::Sigmoid | ActFn::Hardsigmoid | ActFn::Softmax { .. } => Some((1.0 / 256.0, 0)),
            ActFn::Tanh => Some((2.0 / 256.0, 128)),
            _ => None,
        }
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// `dim` in `0..nd`.
fn axis(dim: i64, nd: usize) -> Result<usize> {
    let d = if dim < 0 { dim + nd as i64 } else { dim };
    if d < 0 || d >= nd as i64 {
        return Err(bad(
            "Softmax",
            format!("dim {dim} out of range for {nd} dimensions"),
        ));
    }
    Ok(d as usize)
}

/// Float softmax along `dim` (max-subtracted, f32).
pub fn softmax_f32(x: &Tensor, dim: i64) -> Result<Tensor> {
    let d = axis(dim, x.ndim())?;
    let (outer, len, inner) = rquant_core::quant::split_axis(x.shape(), d);
    let mut y = x.clone();
    let data = y.data_mut();
    for o in 0..outer {
        for i in 0..inner {
            let idx = |j: usize| (o * len + j) * inner + i;
            let m = (0..len)
                .map(|j| data[idx(j)])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0.0f32;
            for j in 0..len {
                let e = (data[idx(j)] - m).exp();
                data[idx(j)] = e;
                s += e;
            }
            for j in 0..len {
                data[idx(j)] /= s;
            }
        }
    }
    Ok(y)
}

impl ActFn {
    /// The float function of one element (softmax excepted).
    pub fn f(&self, v: f32) -> f32 {
        match *self {
            ActFn::Sigmoid => sigmoid(v),
            ActFn::Tanh => v.tanh(),
            ActFn::Hardsigmoid => act::hardsigmoid_f32(v),
            ActFn::Elu { alpha } => {
                if v > 0.0 {
                    v
                } else {
                    alpha * v.exp_m1()
                }
            }
            ActFn::Celu { alpha } => {
                if v > 0.0 {
                    v
                } else {
                    alpha * (v / alpha).exp_m1()
                }
            }
            ActFn::LeakyRelu { negative_slope } => act::leaky_relu_f32(v, negative_slope),
            ActFn::Hardtanh { min_val, max_val } => v.max(min_val).min(max_val),
            ActFn::Gelu { approximate } => gelu(v, approximate),
            ActFn::Threshold { threshold, value } => {
                if v > threshold {
                    v
                } else {
                    value
                }
            }
            ActFn::Softmax { .. } => v,
        }
    }
    /// The derivative at input `v` (output `y`).
    fn df(&self, v: f32, y: f32) -> f32 {
        match *self {
            ActFn::Sigmoid => y * (1.0 - y),
            ActFn::Tanh => 1.0 - y * y,
            ActFn::Hardsigmoid => {
                if v > -3.0 && v < 3.0 {
                    1.0 / 6.0
                } else {
                    0.0
                }
            }
            ActFn::Elu { alpha } => {
                if v > 0.0 {
                    1.0
                } else {
                    y + alpha
                }
            }
            ActFn::Celu { alpha } => {
                if v > 0.0 {
                    1.0
                } else {
                    (v / alpha).exp()
                }
            }
            ActFn::LeakyRelu { negative_slope } => {
                if v > 0.0 {
                    1.0
                } else {
                    negative_slope
                }
            }
            ActFn::Hardtanh { min_val, max_val } => {
                if v > min_val && v < max_val {
                    1.0
                } else {
                    0.0
                }
            }
            ActFn::Gelu { approximate } => gelu_grad(v, approximate),
            ActFn::Threshold { threshold, .. } => {
                if v > threshold {
                    1.0
                } else {
                    0.0
                }
            }
            ActFn::Softmax { .. } => 1.0,
        }
    }
}

fn gelu(v: f32, a: GeluApproximate) -> f32 {
    let x = v as f64;
    (match a {
        GeluApproximate::None => 0.5 * x * (1.0 + erf_f64(x * std::f64::consts::FRAC_1_SQRT_2)),
        GeluApproximate::Tanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
        }
    }) as f32
}

fn gelu_grad(v: f32, a: GeluApproximate) -> f32 {
    let x = v as f64;
    (match a {
        GeluApproximate::None => {
            let cdf = 0.5 * (1.0 + erf_f64(x * std::f64::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            cdf + x * pdf
        }
        GeluApproximate::Tanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            let inner = k * (x + 0.044715 * x * x * x);
            let t = inner.tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x)
        }
    }) as f32
}

fn no_engine(op: &str) -> NnError {
    NnError::module(
        "",
        format!("{op} on a quantized input needs an engine: convert the model, load it with an engine, or call rquant_nn::to_engine"),
    )
}

/// A float activation module (`nn.Sigmoid`, `nn.ELU`, …). On a quantized
/// input it does what PyTorch's float module does on a quint8 tensor:
/// sigmoid, tanh and hardsigmoid give the fixed output qparams, hardtanh,
/// GELU, leaky ReLU, ELU, CELU and threshold keep the input's qparams
/// (PyTorch's `quantized_*` kernels called with the input's scale and zero
/// point); softmax needs output qparams (convert it).
#[derive(Debug, Clone)]
pub struct Act {
    pub f: ActFn,
    pub engine: Option<Engine>,
    pub(crate) training: bool,
    cache: Option<(Tensor, Tensor)>,
}

impl Act {
    pub fn new(f: ActFn) -> Self {
        Act {
            f,
            engine: None,
            training: false,
            cache: None,
        }
    }
    pub fn forward_float(&mut self, x: Tensor) -> Result<Tensor> {
        let y = match self.f {
            ActFn::Softmax { dim } => softmax_f32(&x, dim)?,
            f => {
                let mut y = x.clone();
                for v in y.data_mut() {
                    *v = f.f(*v);
                }
                y
            }
        };
        if self.training {
            self.cache = Some((x, y.clone()));
        }
        Ok(y)
    }
    pub fn forward_quant(&self, x: QTensor<u8>) -> Result<QTensor<u8>> {
        let e = self
            .engine
            .as_ref()
            .ok_or_else(|| no_engine(self.f.name()))?;
        let (s, z) = x
            .q_per_tensor()
            .ok_or_else(|| bad("activation", "per-tensor input required"))?;
        Ok(match self.f {
            ActFn::Sigmoid => e.sigmoid(&x, 1.0 / 256.0, 0)?,
            ActFn::Tanh => e.tanh(&x)?,
            ActFn::Hardsigmoid => e.hardsigmoid(&x)?,
            ActFn::Hardtanh { min_val, max_val } => e.hardtanh(&x, min_val, max_val)?,
            ActFn::Gelu { approximate } => e.gelu(&x, approximate)?,
            ActFn::LeakyRelu { negative_slope } => e.leaky_relu(&x, negative_slope, s, z)?,
            ActFn::Elu { alpha } => e.elu(&x, alpha, s, z)?,
            ActFn::Celu { alpha } => crate::qops::celu(e, &x, alpha)?,
            ActFn::Threshold { threshold, value } => {
                crate::qops::threshold(e, &x, threshold, value)?
            }
            ActFn::Softmax { .. } => {
                return Err(bad(
                    "Softmax",
                    "a float Softmax cannot run on quantized input: convert it (it needs output qparams)",
                ))
            }
        })
    }
    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let (x, y) = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        match self.f {
            ActFn::Softmax { dim } => {
                let d = axis(dim, y.ndim())?;
                let (outer, len, inner) = rquant_core::quant::split_axis(y.shape(), d);
                let mut dx = g.clone();
                for o in 0..outer {
                    for i in 0..inner {
                        let idx = |j: usize| (o * len + j) * inner + i;
                        let dot: f32 = (0..len).map(|j| g.data()[idx(j)] * y.data()[idx(j)]).sum();
                        for j in 0..len {
                            dx.data_mut()[idx(j)] = y.data()[idx(j)] * (g.data()[idx(j)] - dot);
                        }
                    }
                }
                Ok(dx)
            }
            f => {
                let mut dx = g;
                for ((d, &xv), &yv) in dx.data_mut().iter_mut().zip(x.data()).zip(y.data()) {
                    *d *= f.df(xv, yv);
                }
                Ok(dx)
            }
        }
    }
}

impl Layer for Act {
    fn type_name(&self) -> String {
        self.f.name().into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        match x {
            Value::F(t) => Ok(Value::F(self.forward_float(t)?)),
            Value::Q(q) => Ok(Value::Q(self.forward_quant(q)?)),
        }
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        Act::backward(self, g)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = Some(engine.clone());
        Ok(())
    }
    fn save(&self, _: &mut Saver) -> Result<J> {
        Ok(self.f.attrs())
    }
}

impl Module {
    /// A float activation module.
    pub fn act(f: ActFn) -> Self {
        Module::new(Act::new(f))
    }
    pub fn sigmoid() -> Self {
        Module::act(ActFn::Sigmoid)
    }
    pub fn tanh() -> Self {
        Module::act(ActFn::Tanh)
    }
    pub fn hardsigmoid() -> Self {
        Module::act(ActFn::Hardsigmoid)
    }
    /// `nn.ELU(alpha)`.
    pub fn elu(alpha: f32) -> Self {
        Module::act(ActFn::Elu { alpha })
    }
    /// `nn.LeakyReLU(negative_slope)`.
    pub fn leaky_relu(negative_slope: f32) -> Self {
        Module::act(ActFn::LeakyRelu { negative_slope })
    }
    /// `nn.Hardtanh(min_val, max_val)`.
    pub fn hardtanh(min_val: f32, max_val: f32) -> Self {
        Module::act(ActFn::Hardtanh { min_val, max_val })
    }
    /// `nn.GELU(approximate)`.
    pub fn gelu(approximate: GeluApproximate) -> Self {
        Module::act(ActFn::Gelu { approximate })
    }
    /// `nn.Softmax(dim)`.
    pub fn softmax(dim: i64) -> Self {
        Module::act(ActFn::Softmax { dim })
    }
}

// ---------------------------------------------------------------- PReLU

/// `nn.PReLU(num_parameters, init)`: `x > 0 ? x : weight[c]·x` along
/// dimension 1 (one weight for all channels when `num_parameters` is 1).
#[derive(Debug, Clone)]
pub struct PReLU {
    pub weight: Param,
    pub(crate) training: bool,
    cache: Option<Tensor>,
}

impl PReLU {
    pub fn new(num_parameters: usize, init: f32) -> Self {
        PReLU {
            weight: Param::new(
                Tensor::new([num_parameters], vec![init; num_parameters]).expect("1-D"),
            ),
            training: false,
            cache: None,
        }
    }
    fn channel_of(&self, shape: &[usize]) -> Result<(usize, usize)> {
        let n = self.weight.value.numel();
        if n == 1 {
            return Ok((1, 1));
        }
        if shape.len() < 2 || shape[1] != n {
            return Err(bad(
                "PReLU",
                format!("{n} parameters but the input {shape:?} has no matching dimension 1"),
            ));
        }
        Ok((n, shape[2..].iter().product()))
    }
    pub fn forward_float(&mut self, x: Tensor) -> Result<Tensor> {
        let (c, inner) = self.channel_of(x.shape())?;
        let w = self.weight.value.data();
        let mut y = x.clone();
        for (i, v) in y.data_mut().iter_mut().enumerate() {
            let a = if c == 1 { w[0] } else { w[(i / inner) % c] };
            if *v <= 0.0 {
                *v *= a;
            }
        }
        if self.training {
            self.cache = Some(x);
        }
        Ok(y)
    }
    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let x = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        let (c, inner) = self.channel_of(x.shape())?;
        let w = self.weight.value.data().to_vec();
        let mut dw = vec![0.0f32; w.len()];
        let mut dx = g.clone();
        for (i, (d, &xv)) in dx.data_mut().iter_mut().zip(x.data()).enumerate() {
            let ch = if c == 1 { 0 } else { (i / inner) % c };
            if xv <= 0.0 {
                dw[ch] += *d * xv;
                *d *= w[ch];
            }
        }
        self.weight.accumulate(dw)?;
        Ok(dx)
    }
}

impl Layer for PReLU {
    fn type_name(&self) -> String {
        "PReLU".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::F(self.forward_float(x.float("PReLU")?)?))
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        PReLU::backward(self, g)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        vec![("weight".into(), &mut self.weight)]
    }
    fn weight(&self) -> Option<Tensor> {
        Some(self.weight.value.clone())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        out.f32("weight", &self.weight.value);
        Ok(json!({}))
    }
}

// ---------------------------------------------------------------- quantized

/// `nnq.ELU`, `nnq.LeakyReLU`, `nnq.Softmax`, `nnq.Sigmoid`, and the
/// fixed-qparams `Tanh` / `Hardsigmoid`: an activation with output qparams.
#[derive(Debug, Clone)]
pub struct QAct {
    pub f: ActFn,
    pub engine: Engine,
    pub scale: f64,
    pub zero_point: i64,
}

impl QAct {
    /// From an observed activation (its observer's qparams; for sigmoid,
    /// tanh, hardsigmoid and softmax the fixed-qparams observer's).
    pub fn from_float(m: Module, obs: Option<Observation>, engine: &Engine) -> Result<Module> {
        let a: Act = m.expect_type("QAct::from_float")?;
        let obs = obs.ok_or_else(|| {
            NnError::module(
                "",
                format!(
                    "{} needs an observation of its output (prepare the model first)",
                    a.f.name()
                ),
            )
        })?;
        let (scale, zero_point) = obs.qparams()?;
        let q = QAct {
            f: a.f,
            engine: engine.clone(),
            scale,
            zero_point,
        };
        q.check()?;
        Ok(q.into())
    }
    fn check(&self) -> Result<()> {
        let fixed = match self.f {
            ActFn::Tanh => Some((2.0 / 256.0, 128)),
            ActFn::Hardsigmoid => Some((1.0 / 256.0, 0)),
            _ => None,
        };
        if let Some((s, z)) = fixed {
            if (self.scale, self.zero_point) != (s, z) {
                return Err(bad(
                    "QuantizedActivation",
                    format!(
                        "quantized {} has fixed output qparams ({s}, {z}), got ({}, {}): prepare gives it a fixed-qparams observer",
                        self.f.name(),
                        self.scale,
                        self.zero_point
                    ),
                ));
            }
        }
        rquant_core::tensor::check_scale("QuantizedActivation", self.scale)?;
        rquant_core::tensor::check_zero_point(
            "QuantizedActivation",
            self.zero_point,
            rquant_core::QDType::QUInt8,
        )?;
        Ok(())
    }
    fn load(n: &mut Node) -> Result<Module> {
        let name = n.type_name().trim_start_matches("Quantized").to_string();
        let q = QAct {
            f: ActFn::from_node(n, &name)?,
            engine: n.engine().clone(),
            scale: n.scale()?,
            zero_point: n.zero_point()?,
        };
        q.check()
            .map_err(|e| n.attr_error("scale", e.to_string()))?;
        Ok(q.into())
    }
}

impl Layer for QAct {
    fn type_name(&self) -> String {
        format!("Quantized{}", self.f.name())
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let x = x.quant("QuantizedActivation")?;
        let (e, s, z) = (&self.engine, self.scale, self.zero_point);
        Ok(Value::Q(match self.f {
            ActFn::Sigmoid => e.sigmoid(&x, s, z)?,
            ActFn::Tanh => e.tanh(&x)?,
            ActFn::Hardsigmoid => e.hardsigmoid(&x)?,
            ActFn::Elu { alpha } => e.elu(&x, alpha, s, z)?,
            ActFn::LeakyRelu { negative_slope } => e.leaky_relu(&x, negative_slope, s, z)?,
            ActFn::Softmax { dim } => e.softmax(&x, dim, s, z)?,
            f => {
                return Err(bad(
                    "QuantizedActivation",
                    format!("{} has no quantized module with output qparams", f.name()),
                ))
            }
        }))
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        out.qparams(self.scale, self.zero_point);
        Ok(self.f.attrs())
    }
}

/// `nnq.PReLU`: quint8 weight (per-tensor, from the qconfig's weight
/// observer, as `nnq.PReLU.from_float`) and output qparams.
#[derive(Debug, Clone)]
pub struct QPReLU {
    pub engine: Engine,
    pub weight: QTensor<u8>,
    pub scale: f64,
    pub zero_point: i64,
}

impl QPReLU {
    pub fn from_float(m: Module, obs: Option<Observation>, engine: &Engine) -> Result<Module> {
        let p: PReLU = m.expect_type("QPReLU::from_float")?;
        let obs = obs.ok_or_else(|| {
            NnError::module(
                "",
                "PReLU needs an observation of its output (prepare the model first)",
            )
        })?;
        let (scale, zero_point) = obs.qparams()?;
        // `nnq.PReLU.from_float`: the weight observer's qparams, as one
        // float scale and int zero point, the weight quantized to quint8.
        let mut o = obs.qconfig.weight.build_observer()?;
        o.observe(&p.weight.value)?;
        let qp = o.calculate_qparams()?;
        let (ws, wz) = qp.per_tensor().ok_or_else(|| {
            bad(
                "PReLU",
                "the weight observer must give one scale and zero point (a per-tensor observer, or one parameter)",
            )
        })?;
        let wz = wz.clamp(0, 255);
        let weight = quantize_per_tensor::<u8>(&p.weight.value, ws as f64, wz)?;
        Ok(QPReLU {
            engine: engine.clone(),
            weight,
            scale,
            zero_point,
        }
        .into())
    }
    fn load(n: &mut Node) -> Result<Module> {
        let w = n.qweight_u8("weight")?;
        Ok(QPReLU {
            engine: n.engine().clone(),
            weight: w,
            scale: n.scale()?,
            zero_point: n.zero_point()?,
        }
        .into())
    }
}

impl Layer for QPReLU {
    fn type_name(&self) -> String {
        "QuantizedPReLU".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let x = x.quant("QuantizedPReLU")?;
        Ok(Value::Q(crate::qops::prelu(
            &self.engine,
            &x,
            &self.weight,
            self.scale,
            self.zero_point,
        )?))
    }
    fn weight(&self) -> Option<Tensor> {
        Some(rquant_core::dequantize(&self.weight))
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        out.qweight_u8("weight", &self.weight);
        out.qparams(self.scale, self.zero_point);
        Ok(json!({}))
    }
}

// ---------------------------------------------------------------- registration

pub(crate) fn register_mappings(m: &mut Mappings) {
    for t in ["ELU", "LeakyReLU", "Softmax"] {
        m.set_static(t, true, QAct::from_float);
    }
    // PyTorch leaves Sigmoid, Tanh and Hardsigmoid float and unobserved
    // under PTQ: on quantized values their kernels give fixed qparams (the
    // module types stay torch's; QAct has them for custom mappings). Under
    // QAT they get the fixed-qparams fake quant below, dropped by convert.
    for t in ["Sigmoid", "Tanh", "Hardsigmoid"] {
        m.set_static(t, false, |m, _, e| {
            let mut a: Act = m.expect_type("convert")?;
            a.engine = Some(e.clone());
            Ok(a.into())
        });
    }
    m.set_static("PReLU", true, QPReLU::from_float);
    // `DEFAULT_MODULE_TO_ACT_POST_PROCESS`, which PyTorch's prepare applies
    // to modules in training mode only.
    for (t, neg, qat_only) in [
        ("Sigmoid", false, true),
        ("Hardsigmoid", false, true),
        ("Softmax", false, true),
        ("Tanh", true, true),
    ] {
        m.special_act.insert(
            t.to_string(),
            crate::mapping::SpecialAct {
                neg1to1: neg,
                qat_only,
            },
        );
    }
}

pub(crate) fn register_loaders(r: &mut ModuleRegistry) {
    fn float(n: &mut Node) -> Result<Module> {
        let name = n.type_name().to_string();
        Ok(Act::new(ActFn::from_node(n, &name)?).into())
    }
    for t in [
        "Sigmoid",
        "Tanh",
        "Hardsigmoid",
        "ELU",
        "LeakyReLU",
        "Hardtanh",
        "GELU",
        "Softmax",
        "CELU",
        "Threshold",
    ] {
        r.register(t, float);
    }
    for t in [
        "ELU",
        "LeakyReLU",
        "Softmax",
        "Sigmoid",
        "Tanh",
        "Hardsigmoid",
    ] {
        r.register(&format!("Quantized{t}"), QAct::load);
    }
    r.register("PReLU", |n| {
        let w = n.f32("weight")?;
        if w.ndim() != 1 || w.numel() == 0 {
            return Err(n.tensor_error("weight", "PReLU weight must be 1-D and not empty"));
        }
        let mut p = PReLU::new(w.numel(), 0.25);
        p.weight.value = w;
        Ok(p.into())
    });
    r.register("QuantizedPReLU", QPReLU::load);
}
