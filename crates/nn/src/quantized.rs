//! Quantized modules produced by `convert` / `quantize_dynamic`. Each holds
//! the engine it runs every op on and, where it has weights, those weights
//! prepacked by that engine (shared, immutable); `to_engine` repacks them
//! for another. Each type also says how it is built from a float module
//! (`from_float`, used by the default mapping tables), saved and loaded.

use std::fmt;
use std::sync::Arc;

use rquant_core::ops::conv_out_len;
use rquant_core::{
    dequantize, BinaryOp, Engine, MemoryFormat, PackedConv2d, PackedLinear, PackedLinearFp16,
    QTensor, Tensor,
};
use serde_json::{json, Value as J};

use crate::error::{bad, NnError, Result};
use crate::format::Saver;
use crate::layers::{fuse_conv_bn_weights, Conv2d, Linear};
use crate::mapping::{DynamicConfig, DynamicDType, Mappings};
use crate::module::{Layer, Module};
use crate::post::{quantize_weight, Observation};
use crate::registry::{ModuleRegistry, Node};
use crate::rnn::{run_rnn, Proj, Rnn, RnnKind, RnnSpec};
use crate::value::Value;

fn observed(obs: Option<Observation>, what: &str) -> Result<Observation> {
    obs.ok_or_else(|| {
        NnError::module(
            "",
            format!("{what} needs an observation of its output (prepare the model first)"),
        )
    })
}

// ---------------------------------------------------------------- Quantize / DeQuantize

/// `nnq.Quantize` (from an observed QuantStub): float → quint8.
#[derive(Debug, Clone)]
pub struct Quantize {
    pub engine: Engine,
    pub scale: f64,
    pub zero_point: i64,
}

impl Quantize {
    pub fn from_float(_: Module, obs: Option<Observation>, engine: &Engine) -> Result<Module> {
        let (scale, zero_point) = observed(obs, "QuantStub")?.qparams()?;
        Ok(Quantize {
            engine: engine.clone(),
            scale,
            zero_point,
        }
        .into())
    }
}

impl Layer for Quantize {
    fn type_name(&self) -> String {
        "Quantize".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let t = match x {
            Value::F(t) => t,
            q => return Ok(q),
        };
        // A 4-D activation becomes channels-last here, once: every quantized
        // CNN layer after it reads and writes NHWC (`crate::channels_last`).
        let format = if t.ndim() == 4 {
            MemoryFormat::ChannelsLast
        } else {
            MemoryFormat::Contiguous
        };
        Ok(Value::Q(self.engine.quantize(
            &t,
            self.scale,
            self.zero_point,
            format,
        )?))
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
        Ok(json!({}))
    }
}

/// `nnq.DeQuantize` (from a DeQuantStub): quint8 → float.
#[derive(Debug, Clone)]
pub struct DeQuantize {
    pub engine: Engine,
}

impl Layer for DeQuantize {
    fn type_name(&self) -> String {
        "DeQuantize".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::F(match x {
            Value::Q(q) => {
                let mut out = vec![0f32; q.numel()];
                self.engine.dequantize_into(&q, &mut out)?;
                Tensor::new(q.shape().to_vec(), out)?
            }
            Value::F(t) => t,
        }))
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, _: &mut Saver) -> Result<J> {
        Ok(json!({}))
    }
}

// ---------------------------------------------------------------- Linear / Conv2d

/// Static quantized Linear / LinearReLU (`nnq.Linear`, `nniq.LinearReLU`).
#[derive(Clone)]
pub struct QLinear {
    pub engine: Engine,
    pub packed: Arc<PackedLinear>,
    pub scale: f64,
    pub zero_point: i64,
    pub relu: bool,
}

impl fmt::Debug for QLinear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(in={}, out={}, scale={}, zero_point={}, {:?})",
            self.type_name(),
            self.packed.in_features(),
            self.packed.out_features(),
            self.scale,
            self.zero_point,
            self.engine
        )
    }
}

impl QLinear {
    /// From an observed Linear / LinearReLU / QATLinear(ReLU).
    pub fn from_float(m: Module, obs: Option<Observation>, engine: &Engine) -> Result<Module> {
        let obs = observed(obs, "Linear")?;
        let mut l: Linear = m.expect_type("QLinear::from_float")?;
        let (scale, zero_point) = obs.qparams()?;
        let (wf, b) = l.folded_weights()?;
        let w = quantize_weight(&wf, &obs.qconfig.weight, l.weight_fake_quant.as_mut())?;
        Ok(QLinear {
            engine: engine.clone(),
            packed: Arc::new(engine.pack_linear(w, b)?),
            scale,
            zero_point,
            relu: l.relu,
        }
        .into())
    }
    fn load(n: &mut Node) -> Result<Module> {
        let w = n.qweight()?;
        let b = n.bias(n.get_bool("bias")?)?;
        let packed = n.engine().pack_linear(w, b).map_err(|e| n.quant_error(e))?;
        Ok(QLinear {
            engine: n.engine().clone(),
            packed: Arc::new(packed),
            scale: n.scale()?,
            zero_point: n.zero_point()?,
            relu: relu_of(n)?,
        }
        .into())
    }
}

/// A ReLU-fused tag, or (version-1 files) a `relu` attribute beside the plain tag.
fn relu_of(n: &Node) -> Result<bool> {
    Ok(n.type_name().ends_with("ReLU")
        || n.type_name().ends_with("ReLU2d")
        || n.get_bool_opt("relu")?.unwrap_or(false))
}

impl Layer for QLinear {
    fn type_name(&self) -> String {
        if self.relu {
            "QuantizedLinearReLU"
        } else {
            "QuantizedLinear"
        }
        .into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let q = x.quant("QuantizedLinear")?;
        Ok(Value::Q(self.engine.linear(
            &q,
            &self.packed,
            self.scale,
            self.zero_point,
            self.relu,
        )?))
    }
    fn weight(&self) -> Option<Tensor> {
        Some(dequantize(&self.packed.weight()))
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        if self.packed.packed_for() != engine.path() {
            self.packed = Arc::new(engine.repack_linear(&self.packed)?);
        }
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        let qs = out.qweight(&self.packed.weight())?;
        let b = out.bias(self.packed.bias());
        out.qparams(self.scale, self.zero_point);
        Ok(json!({"qscheme": qs, "bias": b}))
    }
}

/// Static quantized Conv2d / ConvReLU2d (`nnq.Conv2d`, `nniq.ConvReLU2d`),
/// and rquant's ConvHardtanh2d (a fused ReLU6 / Hardtanh: the int8 output
/// clamped to `[quantize(min), quantize(max)]` under the output qparams,
/// the same values as a separate quantized hardtanh after the conv).
#[derive(Clone)]
pub struct QConv2d {
    pub engine: Engine,
    pub packed: Arc<PackedConv2d>,
    pub scale: f64,
    pub zero_point: i64,
    pub relu: bool,
    pub clamp: Option<(f32, f32)>,
}

impl fmt::Debug for QConv2d {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(weight={:?}, {:?}, scale={}, zero_point={}, {:?})",
            self.type_name(),
            self.packed.weight_shape(),
            self.packed.params(),
            self.scale,
            self.zero_point,
            self.engine
        )
    }
}

impl QConv2d {
    /// From an observed Conv2d / ConvReLU2d / ConvBn(ReLU)2d and their QAT
    /// forms (a live batch norm is folded first, as `nniqat.ConvBn2d.to_float`).
    pub fn from_float(m: Module, obs: Option<Observation>, engine: &Engine) -> Result<Module> {
        let obs = observed(obs, "Conv2d")?;
        let mut c: Conv2d = m.expect_type("QConv2d::from_float")?;
        let (scale, zero_point) = obs.qparams()?;
        let (wf, bf) = match &c.bn {
            Some(bn) => {
                let b = c.bias.as_ref().map(|b| b.value.data().to_vec());
                let (w, b) = fuse_conv_bn_weights(&c.weight.value, b.as_deref(), bn)?;
                (w, Some(b))
            }
            None => (
                c.weight.value.clone(),
                c.bias.as_ref().map(|b| b.value.data().to_vec()),
            ),
        };
        let w = quantize_weight(&wf, &obs.qconfig.weight, c.weight_fake_quant.as_mut())?;
        Ok(QConv2d {
            engine: engine.clone(),
            packed: Arc::new(engine.pack_conv2d(w, bf, c.params)?),
            scale,
            zero_point,
            relu: c.relu,
            clamp: c.clamp,
        }
        .into())
    }
    fn load(n: &mut Node) -> Result<Module> {
        let w = n.qweight()?;
        let b = n.bias(n.get_bool("bias")?)?;
        let packed = n
            .engine()
            .pack_conv2d(w, b, n.get_conv()?)
            .map_err(|e| n.quant_error(e))?;
        Ok(QConv2d {
            engine: n.engine().clone(),
            packed: Arc::new(packed),
            scale: n.scale()?,
            zero_point: n.zero_point()?,
            relu: relu_of(n)?,
            clamp: crate::layers::clamp_attr(n)?,
        }
        .into())
    }
}

impl QConv2d {
    /// This conv's forward on a quantized input: the engine's conv (with
    /// its fused ReLU), then the Hardtanh clamp if any.
    fn run(&self, q: &QTensor<u8>) -> Result<QTensor<u8>> {
        let y = self
            .engine
            .conv2d(q, &self.packed, self.scale, self.zero_point, self.relu)?;
        // The clamp as a second pass: the engine's conv2d takes only a ReLU
        // flag (its output stage could apply any [lo, hi] in the epilogue).
        Ok(match self.clamp {
            Some((lo, hi)) => self.engine.hardtanh(&y, lo, hi)?,
            None => y,
        })
    }

    /// The conv's output shape for an input of shape `x` (None when the
    /// kernel does not fit; the conv itself then reports the error).
    fn out_shape(&self, x: &[usize]) -> Option<[usize; 4]> {
        let (&[n, _, h, w], &[o, _, kh, kw]) = (x, self.packed.weight_shape()) else {
            return None;
        };
        let p = self.packed.params();
        let oh = conv_out_len(h, kh, p.stride[0], p.padding[0], p.dilation[0])?;
        let ow = conv_out_len(w, kw, p.stride[1], p.padding[1], p.dilation[1])?;
        Some([n, o, oh, ow])
    }

    /// Whether [`forward_add`](QConv2d::forward_add) with `add` runs as one
    /// op (given a residual of the conv output's shape): a conv without a
    /// fused ReLU or clamp, and `add` on the same engine path.
    pub fn fuses_add(&self, add: &QFunctional) -> bool {
        !self.relu && self.clamp.is_none() && add.engine.path() == self.engine.path()
    }

    /// This conv followed by `add`'s quantized add (`relu`: add_relu) of
    /// `residual`, the tail of torchvision's ResNet blocks (`conv2` with
    /// `bn2` folded, then `FloatFunctional.add_relu(out, identity)`), as
    /// one op when it can be: [`Engine::conv2d_add`] fuses the add into
    /// the conv's output stage and keeps both roundings (the conv's
    /// requantization to its own output qparams, then the add's), so the
    /// result has the bits of `add.binary(conv(x), residual, op)`. A conv
    /// with a fused ReLU or clamp, an `add` on another engine path, or a
    /// residual that only broadcasts to the conv's output runs the two ops
    /// one after the other. [`crate::Block::conv_add`] calls it from a
    /// block's forward.
    pub fn forward_add(
        &self,
        x: Value,
        residual: Value,
        add: &QFunctional,
        relu: bool,
    ) -> Result<Value> {
        let op = if relu {
            BinaryOp::AddRelu
        } else {
            BinaryOp::Add
        };
        let q = x.quant("QuantizedConv2d")?;
        let r = residual.quant("QFunctional")?;
        let fusable =
            self.fuses_add(add) && self.out_shape(q.shape()).is_some_and(|s| r.shape() == s);
        if !fusable {
            let y = self.run(&q)?;
            return add.binary(Value::Q(y), Value::Q(r), op);
        }
        Ok(Value::Q(self.engine.conv2d_add(
            &q,
            &self.packed,
            (self.scale, self.zero_point),
            &r,
            (add.scale, add.zero_point),
            relu,
        )?))
    }
}

impl Layer for QConv2d {
    fn type_name(&self) -> String {
        if self.clamp.is_some() {
            "QuantizedConvHardtanh2d"
        } else if self.relu {
            "QuantizedConvReLU2d"
        } else {
            "QuantizedConv2d"
        }
        .into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let q = x.quant("QuantizedConv2d")?;
        Ok(Value::Q(self.run(&q)?))
    }
    fn weight(&self) -> Option<Tensor> {
        Some(dequantize(&self.packed.weight()))
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        if self.packed.packed_for() != engine.path() {
            self.packed = Arc::new(engine.repack_conv2d(&self.packed)?);
        }
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        let qs = out.qweight(&self.packed.weight())?;
        let b = out.bias(self.packed.bias());
        out.qparams(self.scale, self.zero_point);
        let mut a = json!({"qscheme": qs, "bias": b, "params": crate::layers::conv_json(self.packed.params())});
        if let Some((lo, hi)) = self.clamp {
            a["clamp"] = json!([lo, hi]);
        }
        Ok(a)
    }
}

// ---------------------------------------------------------------- dynamic

/// Dynamic weights: int8 (activation quantized per call) or fp16.
#[derive(Debug, Clone)]
pub enum DynWeight {
    Int8 {
        packed: Arc<PackedLinear>,
        reduce_range: bool,
    },
    Fp16(Arc<PackedLinearFp16>),
}

impl DynWeight {
    /// A float weight `[out, in]` quantized as `cfg` says (int8 with the
    /// qconfig's weight observer, or fp16) and packed by its engine.
    pub fn from_float(w: &Tensor, bias: Option<Vec<f32>>, cfg: &DynamicConfig) -> Result<Self> {
        let e = &cfg.engine;
        Ok(match cfg.dtype {
            DynamicDType::QInt8 => DynWeight::Int8 {
                packed: Arc::new(
                    e.pack_linear(quantize_weight(w, &cfg.qconfig.weight, None)?, bias)?,
                ),
                reduce_range: e.dynamic_reduce_range(),
            },
            DynamicDType::Float16 => {
                DynWeight::Fp16(Arc::new(e.pack_linear_fp16(w.clone(), bias)?))
            }
        })
    }
    pub fn apply(&self, engine: &Engine, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            DynWeight::Int8 {
                packed,
                reduce_range,
            } => engine.linear_dynamic(x, packed, *reduce_range)?,
            DynWeight::Fp16(p) => engine.linear_dynamic_fp16(x, p)?,
        })
    }
    pub fn out_features(&self) -> usize {
        match self {
            DynWeight::Int8 { packed, .. } => packed.out_features(),
            DynWeight::Fp16(p) => p.out_features(),
        }
    }
    /// The weight shape `[out, in]`.
    pub fn weight_shape(&self) -> &[usize] {
        match self {
            DynWeight::Int8 { packed, .. } => packed.weight_shape(),
            DynWeight::Fp16(p) => p.weight().shape(),
        }
    }
    /// The weight as float (int8 dequantized; fp16 rounded as the kernel sees it).
    pub fn float_weight(&self) -> Tensor {
        match self {
            DynWeight::Int8 { packed, .. } => dequantize(&packed.weight()),
            DynWeight::Fp16(p) => Tensor::new(
                p.weight().shape().to_vec(),
                p.weight()
                    .data()
                    .iter()
                    .map(|&v| half::f16::from_f32(v.clamp(-65504.0, 65504.0)).to_f32())
                    .collect(),
            )
            .expect("same shape"),
        }
    }
    /// The same weights packed for `engine` (a no-op when they already are).
    pub fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        match self {
            DynWeight::Int8 {
                packed,
                reduce_range,
            } => {
                if packed.packed_for() != engine.path() {
                    *packed = Arc::new(engine.repack_linear(packed)?);
                }
                // PyTorch's dynamic linear ignores reduce_range under qnnpack.
                *reduce_range = *reduce_range && engine.dynamic_reduce_range();
            }
            DynWeight::Fp16(p) => {
                if p.packed_for() != engine.path() {
                    *p = Arc::new(engine.repack_linear_fp16(p)?);
                }
            }
        }
        Ok(())
    }
    pub(crate) fn save(&self, out: &mut Saver) -> Result<J> {
        Ok(match self {
            DynWeight::Int8 {
                packed,
                reduce_range,
            } => {
                let qs = out.qweight(&packed.weight())?;
                let has_bias = out.bias(packed.bias());
                json!({"dtype": "qint8", "qscheme": qs, "reduce_range": reduce_range, "bias": has_bias})
            }
            DynWeight::Fp16(pk) => {
                out.f32("weight", pk.weight());
                let has_bias = out.bias(pk.bias());
                json!({"dtype": "float16", "bias": has_bias})
            }
        })
    }
    /// The weight of `{path}.{sub}` described by the JSON `j`.
    pub(crate) fn load(n: &Node, sub: &str, j: &J, field: &str) -> Result<Self> {
        let e = n.engine();
        let get = |k: &str| {
            j.get(k)
                .ok_or_else(|| n.attr_error(field, format!("missing field {k:?}")))
        };
        let has_bias = get("bias")?
            .as_bool()
            .ok_or_else(|| n.attr_error(field, "bias is not a boolean"))?;
        Ok(match get("dtype")?.as_str() {
            Some("qint8") => {
                let reduce_range = get("reduce_range")?
                    .as_bool()
                    .ok_or_else(|| n.attr_error(field, "reduce_range is not a boolean"))?;
                DynWeight::Int8 {
                    packed: Arc::new(
                        e.pack_linear(
                            n.qweight_at(sub, get("qscheme")?)?,
                            n.bias_at(sub, has_bias)?,
                        )
                        .map_err(|x| n.quant_error(x))?,
                    ),
                    reduce_range: reduce_range && e.dynamic_reduce_range(),
                }
            }
            Some("float16") => DynWeight::Fp16(Arc::new(
                e.pack_linear_fp16(
                    n.f32(&crate::format::join(sub, "weight"))?,
                    n.bias_at(sub, has_bias)?,
                )
                .map_err(|x| n.quant_error(x))?,
            )),
            _ => {
                return Err(n.attr_error(
                    &format!("{field}.dtype"),
                    "expected \"qint8\" or \"float16\"",
                ))
            }
        })
    }
}

/// `nnqd.Linear` / `nniqd.LinearReLU`: f32 in and out, int8 or fp16 weights.
#[derive(Debug, Clone)]
pub struct QDynLinear {
    pub engine: Engine,
    pub weight: DynWeight,
    pub relu: bool,
}

impl QDynLinear {
    /// From a float Linear / LinearReLU.
    pub fn from_float(m: Module, cfg: &DynamicConfig) -> Result<Module> {
        let l: Linear = m.expect_type("QDynLinear::from_float")?;
        let b = l.bias.as_ref().map(|b| b.value.data().to_vec());
        Ok(QDynLinear {
            engine: cfg.engine.clone(),
            weight: DynWeight::from_float(&l.weight.value, b, cfg)?,
            relu: l.relu,
        }
        .into())
    }
    fn load(n: &mut Node) -> Result<Module> {
        Ok(QDynLinear {
            engine: n.engine().clone(),
            weight: DynWeight::load(n, "", n.field("weight")?, "weight")?,
            relu: relu_of(n)?,
        }
        .into())
    }
}

impl Layer for QDynLinear {
    fn type_name(&self) -> String {
        if self.relu {
            "DynamicQuantizedLinearReLU"
        } else {
            "DynamicQuantizedLinear"
        }
        .into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let t = x.float("DynamicQuantizedLinear")?;
        let mut y = self.weight.apply(&self.engine, &t)?;
        if self.relu {
            for v in y.data_mut() {
                *v = v.max(0.0);
            }
        }
        Ok(Value::F(y))
    }
    fn weight(&self) -> Option<Tensor> {
        Some(self.weight.float_weight())
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.weight.to_engine(engine)?;
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        Ok(json!({ "weight": self.weight.save(out)? }))
    }
}

/// The dynamic weights of one layer and direction of a [`QDynRnn`].
#[derive(Debug, Clone)]
pub struct DynLayer {
    pub ih: DynWeight,
    pub hh: DynWeight,
    /// LSTM `proj_size` (beyond PyTorch, whose dynamic LSTM refuses it).
    pub hr: Option<DynWeight>,
}

/// `nnqd.LSTM` / `nnqd.GRU`: every projection a dynamic linear
/// (multi-layer, bidirectional, batch_first; LSTM `proj_size` too).
#[derive(Debug, Clone)]
pub struct QDynRnn {
    pub engine: Engine,
    pub kind: RnnKind,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub proj_size: usize,
    pub batch_first: bool,
    /// `num_layers · dirs` entries, layer-major.
    pub layers: Vec<DynLayer>,
}

impl QDynRnn {
    /// From a float LSTM / GRU.
    pub fn from_float(m: Module, cfg: &DynamicConfig) -> Result<Module> {
        let r: Rnn = m.expect_type("QDynRnn::from_float")?;
        let dw = |p: &crate::param::Param, b: &Option<crate::param::Param>| {
            DynWeight::from_float(&p.value, b.as_ref().map(|b| b.value.data().to_vec()), cfg)
        };
        let layers = r
            .layers
            .iter()
            .map(|l| {
                Ok(DynLayer {
                    ih: dw(&l.w_ih, &l.b_ih)?,
                    hh: dw(&l.w_hh, &l.b_hh)?,
                    hr: l.w_hr.as_ref().map(|w| dw(w, &None)).transpose()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(QDynRnn {
            engine: cfg.engine.clone(),
            kind: r.kind,
            input_size: r.input_size,
            hidden_size: r.hidden_size,
            num_layers: r.num_layers,
            bidirectional: r.bidirectional,
            proj_size: r.proj_size,
            batch_first: r.batch_first,
            layers,
        }
        .into())
    }
    pub fn spec(&self) -> RnnSpec {
        RnnSpec {
            kind: self.kind,
            input_size: self.input_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            bidirectional: self.bidirectional,
            proj_size: self.proj_size,
            batch_first: self.batch_first,
        }
    }
    /// Output sequence and (h_n, c_n), from optional initial states.
    pub fn forward_full(
        &self,
        x: &Tensor,
        h0: Option<(&Tensor, &Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let spec = self.spec();
        if self.layers.len() != spec.num_layers * spec.dirs() {
            return Err(bad(
                "DynamicQuantizedRNN",
                "weight sets do not match the layers",
            ));
        }
        let proj = |ld: usize, p: Proj, v: &Tensor| -> Result<Tensor> {
            let l = &self.layers[ld];
            let w = match p {
                Proj::Ih => &l.ih,
                Proj::Hh => &l.hh,
                Proj::Hr => {
                    l.hr.as_ref()
                        .ok_or_else(|| bad("DynamicQuantizedLSTM", "no projection weight"))?
                }
            };
            w.apply(&self.engine, v)
        };
        run_rnn(&spec, x, h0, &proj, None)
    }
    fn load(n: &mut Node) -> Result<Module> {
        let kind = match n.type_name() {
            "DynamicQuantizedLSTM" => RnnKind::Lstm,
            "DynamicQuantizedGRU" => RnnKind::Gru,
            // Version-1 files: one tag and a `kind` attribute.
            _ => match n.field("kind")?.as_str() {
                Some("LSTM") => RnnKind::Lstm,
                Some("GRU") => RnnKind::Gru,
                _ => return Err(n.attr_error("kind", "expected LSTM or GRU")),
            },
        };
        let spec = crate::rnn::spec_of(n, kind)?;
        let entries = n
            .field("layers")?
            .as_array()
            .ok_or_else(|| n.attr_error("layers", "not an array"))?
            .clone();
        if entries.len() != spec.num_layers * spec.dirs() {
            return Err(n.attr_error(
                "layers",
                format!(
                    "{} entries for {} layers × {} directions",
                    entries.len(),
                    spec.num_layers,
                    spec.dirs()
                ),
            ));
        }
        let mut layers = Vec::with_capacity(entries.len());
        for (ld, v) in entries.iter().enumerate() {
            let sfx = spec.suffix(ld);
            // [ih, hh] (files before proj_size) or {"ih", "hh", "hr"}.
            let (a, b, c) = match (v.get(0), v.get(1), v.get("ih"), v.get("hh")) {
                (Some(a), Some(b), _, _) => (a, b, None),
                (_, _, Some(a), Some(b)) => (a, b, v.get("hr")),
                _ => return Err(n.attr_error("layers", "entries must be [ih, hh] or {ih, hh, hr}")),
            };
            let ih = DynWeight::load(n, &format!("ih_{sfx}"), a, "layers")?;
            let hh = DynWeight::load(n, &format!("hh_{sfx}"), b, "layers")?;
            let hr = match c {
                Some(c) if !c.is_null() => {
                    Some(DynWeight::load(n, &format!("hr_{sfx}"), c, "layers")?)
                }
                _ => None,
            };
            let (ih_s, hh_s, hr_s) = spec.shapes(ld);
            for (w, want, name) in [(&ih, ih_s, "ih"), (&hh, hh_s, "hh")] {
                let got = w.weight_shape();
                if got != want {
                    return Err(n.tensor_error(
                        &format!("{name}_{sfx}.weight"),
                        format!("shape {got:?}, expected {want:?}"),
                    ));
                }
            }
            if hr.as_ref().map(|w| w.weight_shape().to_vec()) != hr_s.map(|s| s.to_vec()) {
                return Err(n.tensor_error(
                    &format!("hr_{sfx}.weight"),
                    "projection weight does not match proj_size",
                ));
            }
            layers.push(DynLayer { ih, hh, hr });
        }
        Ok(QDynRnn {
            engine: n.engine().clone(),
            kind,
            input_size: spec.input_size,
            hidden_size: spec.hidden_size,
            num_layers: spec.num_layers,
            bidirectional: spec.bidirectional,
            proj_size: spec.proj_size,
            batch_first: spec.batch_first,
            layers,
        }
        .into())
    }
}

impl Layer for QDynRnn {
    fn type_name(&self) -> String {
        format!("DynamicQuantized{}", self.kind.name())
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::F(
            self.forward_full(&x.float("DynamicQuantizedRNN")?, None)?.0,
        ))
    }
    fn forward_state(
        &mut self,
        x: Tensor,
        state: Option<(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        self.forward_full(&x, state.as_ref().map(|(h, c)| (h, c)))
    }
    fn named_weights(&self) -> Vec<(String, Tensor)> {
        let spec = self.spec();
        let mut v = Vec::new();
        for (ld, l) in self.layers.iter().enumerate() {
            let sfx = spec.suffix(ld);
            v.push((format!("weight_ih_{sfx}"), l.ih.float_weight()));
            v.push((format!("weight_hh_{sfx}"), l.hh.float_weight()));
            if let Some(w) = &l.hr {
                v.push((format!("weight_hr_{sfx}"), w.float_weight()));
            }
        }
        v
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        for l in &mut self.layers {
            l.ih.to_engine(engine)?;
            l.hh.to_engine(engine)?;
            if let Some(w) = &mut l.hr {
                w.to_engine(engine)?;
            }
        }
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        let spec = self.spec();
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(ld, l)| {
                let sfx = spec.suffix(ld);
                let hr = match &l.hr {
                    Some(w) => out.within(&format!("hr_{sfx}"), |o| w.save(o))?,
                    None => J::Null,
                };
                Ok(json!({
                    "ih": out.within(&format!("ih_{sfx}"), |o| l.ih.save(o))?,
                    "hh": out.within(&format!("hh_{sfx}"), |o| l.hh.save(o))?,
                    "hr": hr,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(
            json!({"input_size": self.input_size, "hidden_size": self.hidden_size,
                  "num_layers": self.num_layers, "bidirectional": self.bidirectional,
                  "proj_size": self.proj_size, "batch_first": self.batch_first, "layers": layers}),
        )
    }
}

// ---------------------------------------------------------------- element-wise

/// `nnq.QFunctional`: add / add_relu / mul / cat with output qparams.
#[derive(Debug, Clone)]
pub struct QFunctional {
    pub engine: Engine,
    pub scale: f64,
    pub zero_point: i64,
}

impl QFunctional {
    /// From an observed FloatFunctional.
    pub fn from_float(_: Module, obs: Option<Observation>, engine: &Engine) -> Result<Module> {
        let (scale, zero_point) = observed(obs, "FloatFunctional")?.qparams()?;
        Ok(QFunctional {
            engine: engine.clone(),
            scale,
            zero_point,
        }
        .into())
    }
    pub fn binary(&self, a: Value, b: Value, op: BinaryOp) -> Result<Value> {
        let (a, b) = (a.quant("QFunctional")?, b.quant("QFunctional")?);
        Ok(Value::Q(self.engine.binary(
            op,
            &a,
            &b,
            self.scale,
            self.zero_point,
        )?))
    }
    pub fn cat(&self, xs: Vec<Value>, dim: usize) -> Result<Value> {
        let qs = xs
            .into_iter()
            .map(|v| v.quant("QFunctional.cat"))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&QTensor<u8>> = qs.iter().collect();
        Ok(Value::Q(self.engine.cat(
            &refs,
            dim as i64,
            self.scale,
            self.zero_point,
        )?))
    }
}

impl Layer for QFunctional {
    fn type_name(&self) -> String {
        "QFunctional".into()
    }
    fn forward(&mut self, _: Value) -> Result<Value> {
        Err(bad(
            "QFunctional",
            "call add / mul / cat / add_relu instead of forward",
        ))
    }
    fn binary(&mut self, op: BinaryOp, a: Value, b: Value) -> Result<Value> {
        QFunctional::binary(self, a, b, op)
    }
    fn cat(&mut self, xs: Vec<Value>, dim: usize) -> Result<Value> {
        QFunctional::cat(self, xs, dim)
    }
    fn scalar(&mut self, op: crate::module::ScalarOp, x: Value, c: f64) -> Result<Value> {
        let q = x.quant("QFunctional")?;
        Ok(Value::Q(match op {
            crate::module::ScalarOp::Add => crate::qops::add_scalar(&self.engine, &q, c, false)?,
            crate::module::ScalarOp::Mul => crate::qops::mul_scalar(&self.engine, &q, c, false)?,
        }))
    }
    fn matmul(&mut self, a: Value, b: Value) -> Result<Value> {
        let (a, b) = (
            a.quant("QFunctional.matmul")?,
            b.quant("QFunctional.matmul")?,
        );
        Ok(Value::Q(self.engine.matmul::<u8>(
            &a,
            &b,
            self.scale,
            self.zero_point,
        )?))
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
        Ok(json!({}))
    }
}

/// `nnq.Hardswish`: output qparams from the observer.
#[derive(Debug, Clone)]
pub struct QHardswish {
    pub engine: Engine,
    pub scale: f64,
    pub zero_point: i64,
}

impl QHardswish {
    /// From an observed Hardswish.
    pub fn from_float(_: Module, obs: Option<Observation>, engine: &Engine) -> Result<Module> {
        let (scale, zero_point) = observed(obs, "Hardswish")?.qparams()?;
        Ok(QHardswish {
            engine: engine.clone(),
            scale,
            zero_point,
        }
        .into())
    }
}

impl Layer for QHardswish {
    fn type_name(&self) -> String {
        "QuantizedHardswish".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::Q(self.engine.hardswish(
            &x.quant("QuantizedHardswish")?,
            self.scale,
            self.zero_point,
        )?))
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
        Ok(json!({}))
    }
}

/// `nnq.ReLU6`: `clamp(q, zero_point, quantize(6.0))`, the input's qparams
/// kept (the observer `prepare` attaches is not used, as in PyTorch).
#[derive(Debug, Clone)]
pub struct QReLU6 {
    pub engine: Engine,
}

impl Layer for QReLU6 {
    fn type_name(&self) -> String {
        "QuantizedReLU6".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::Q(self.engine.relu6(&x.quant("QuantizedReLU6")?)?))
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, _: &mut Saver) -> Result<J> {
        Ok(json!({}))
    }
}

// ---------------------------------------------------------------- registration

fn no_quantized_bn(_: Module, _: Option<Observation>, _: &Engine) -> Result<Module> {
    Err(NnError::module(
        "",
        "BatchNorm1d has no quantized module in PyTorch's mappings: fuse it into the preceding Linear or Conv1d",
    ))
}

/// `DEFAULT_STATIC_QUANT_MODULE_MAPPINGS` and
/// `DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS` for rquant's modules.
pub(crate) fn register_mappings(m: &mut Mappings) {
    for t in [
        "Linear",
        "LinearReLU",
        "QATLinear",
        "QATLinearReLU",
        "QATLinearBn1d",
    ] {
        m.set_static(t, true, QLinear::from_float);
    }
    for t in [
        "Conv2d",
        "ConvReLU2d",
        "ConvBn2d",
        "ConvBnReLU2d",
        "QATConv2d",
        "QATConvReLU2d",
        "QATConvBn2d",
        "QATConvBnReLU2d",
        "ConvHardtanh2d",
        "ConvBnHardtanh2d",
        "QATConvHardtanh2d",
        "QATConvBnHardtanh2d",
    ] {
        m.set_static(t, true, QConv2d::from_float);
    }
    m.set_static("QuantStub", true, Quantize::from_float);
    m.set_static("DeQuantStub", false, |_, _, e| {
        Ok(DeQuantize { engine: e.clone() }.into())
    });
    m.set_static("FloatFunctional", true, QFunctional::from_float);
    m.set_static("Hardswish", true, QHardswish::from_float);
    m.set_static("ReLU6", true, |_, _, e| {
        Ok(QReLU6 { engine: e.clone() }.into())
    });
    m.set_static("BatchNorm1d", true, no_quantized_bn);
    m.dynamic
        .insert("Linear".into(), Arc::new(QDynLinear::from_float));
    m.dynamic
        .insert("LinearReLU".into(), Arc::new(QDynLinear::from_float));
    m.dynamic
        .insert("LSTM".into(), Arc::new(QDynRnn::from_float));
    m.dynamic
        .insert("GRU".into(), Arc::new(QDynRnn::from_float));
    for t in ["LSTMCell", "GRUCell", "RNNCell"] {
        m.dynamic
            .insert(t.into(), Arc::new(crate::rnn::QDynCell::from_float));
    }
}

/// Loaders of the quantized modules (and the version-1 tags they replaced).
pub(crate) fn register_loaders(r: &mut ModuleRegistry) {
    r.register("Quantize", |n| {
        let (scale, zero_point) = n.qparams()?;
        Ok(Quantize {
            engine: n.engine().clone(),
            scale,
            zero_point,
        }
        .into())
    });
    r.register("DeQuantize", |n| {
        Ok(DeQuantize {
            engine: n.engine().clone(),
        }
        .into())
    });
    r.register("QuantizedLinear", QLinear::load);
    r.register("QuantizedLinearReLU", QLinear::load);
    r.register("QuantizedConv2d", QConv2d::load);
    r.register("QuantizedConvReLU2d", QConv2d::load);
    r.register("QuantizedConvHardtanh2d", QConv2d::load);
    r.register("DynamicQuantizedLinear", QDynLinear::load);
    r.register("DynamicQuantizedLinearReLU", QDynLinear::load);
    r.register("DynamicQuantizedLSTM", QDynRnn::load);
    r.register("DynamicQuantizedGRU", QDynRnn::load);
    r.register("DynamicQuantizedRNN", QDynRnn::load);
    r.register("QFunctional", |n| {
        let (scale, zero_point) = n.qparams()?;
        Ok(QFunctional {
            engine: n.engine().clone(),
            scale,
            zero_point,
        }
        .into())
    });
    r.register("QuantizedReLU6", |n| {
        Ok(QReLU6 {
            engine: n.engine().clone(),
        }
        .into())
    });
    r.register("QuantizedHardswish", |n| {
        let (scale, zero_point) = n.qparams()?;
        Ok(QHardswish {
            engine: n.engine().clone(),
            scale,
            zero_point,
        }
        .into())
    });
}
