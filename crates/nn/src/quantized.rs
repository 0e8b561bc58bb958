//! Quantized modules produced by `convert` / `quantize_dynamic`. Each holds
//! its weights prepacked by one engine (shared, immutable) and the engine
//! itself; `to_engine` repacks a model for another engine.

use std::sync::Arc;

use rquant_core::{
    dequantize, quantize_per_tensor, Engine, PackedConv2d, PackedLinear, PackedLinearFp16, QTensor,
    Tensor,
};

use crate::error::{bad, Result};
use crate::quantize::FfOp;
use crate::rnn::{run_rnn, Proj, RnnKind};
use crate::value::Value;

/// Static quantized Linear / LinearReLU.
#[derive(Clone)]
pub struct QLinear {
    pub engine: Engine,
    pub packed: Arc<PackedLinear>,
    pub scale: f64,
    pub zero_point: i64,
    pub relu: bool,
}

/// Static quantized Conv2d / ConvReLU2d.
#[derive(Clone)]
pub struct QConv2d {
    pub engine: Engine,
    pub packed: Arc<PackedConv2d>,
    pub scale: f64,
    pub zero_point: i64,
    pub relu: bool,
}

/// Dynamic weights: int8 (activation quantized per call) or fp16.
#[derive(Clone)]
pub enum DynWeight {
    Int8 {
        packed: Arc<PackedLinear>,
        reduce_range: bool,
    },
    Fp16(Arc<PackedLinearFp16>),
}

impl DynWeight {
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
}

/// `nnqd.Linear`: f32 in and out, int8 or fp16 weights.
#[derive(Clone)]
pub struct QDynLinear {
    pub engine: Engine,
    pub weight: DynWeight,
    pub relu: bool,
}

/// `nnqd.LSTM` / `nnqd.GRU`: every projection a dynamic linear.
#[derive(Clone)]
pub struct QDynRnn {
    pub engine: Engine,
    pub kind: RnnKind,
    pub input_size: usize,
    pub hidden_size: usize,
    pub batch_first: bool,
    /// Per layer: (ih, hh).
    pub layers: Vec<(DynWeight, DynWeight)>,
}

impl QDynRnn {
    pub fn forward_full(
        &self,
        x: &Tensor,
        h0: Option<(&Tensor, &Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let proj = |l: usize, p: Proj, v: &Tensor| -> Result<Tensor> {
            let w = match p {
                Proj::Ih => &self.layers[l].0,
                Proj::Hh => &self.layers[l].1,
            };
            w.apply(&self.engine, v)
        };
        run_rnn(
            self.kind,
            self.input_size,
            self.hidden_size,
            self.layers.len(),
            self.batch_first,
            x,
            h0,
            &proj,
        )
    }
}

/// `nnq.QFunctional`: add / add_relu / mul / cat with output qparams.
#[derive(Clone)]
pub struct QFunctional {
    pub engine: Engine,
    pub scale: f64,
    pub zero_point: i64,
}

impl QFunctional {
    pub fn binary(&self, a: Value, b: Value, op: FfOp) -> Result<Value> {
        let (a, b) = (a.quant("QFunctional")?, b.quant("QFunctional")?);
        let e = &self.engine;
        let y = match op {
            FfOp::Add => e.add(&a, &b, self.scale, self.zero_point)?,
            FfOp::AddRelu => e.add_relu(&a, &b, self.scale, self.zero_point)?,
            FfOp::Mul => e.mul(&a, &b, self.scale, self.zero_point)?,
        };
        Ok(Value::Q(y))
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

/// A quantized module.
#[derive(Clone)]
pub enum QModule {
    Quantize {
        scale: f64,
        zero_point: i64,
    },
    DeQuantize,
    Linear(QLinear),
    Conv2d(QConv2d),
    DynamicLinear(QDynLinear),
    DynamicRnn(QDynRnn),
    Functional(QFunctional),
    Hardswish {
        engine: Engine,
        scale: f64,
        zero_point: i64,
    },
}

impl std::fmt::Debug for QModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.type_name())
    }
}

impl QModule {
    pub fn type_name(&self) -> String {
        match self {
            QModule::Quantize { .. } => "Quantize".into(),
            QModule::DeQuantize => "DeQuantize".into(),
            QModule::Linear(l) => if l.relu {
                "QuantizedLinearReLU"
            } else {
                "QuantizedLinear"
            }
            .into(),
            QModule::Conv2d(c) => if c.relu {
                "QuantizedConvReLU2d"
            } else {
                "QuantizedConv2d"
            }
            .into(),
            QModule::DynamicLinear(d) => match d.weight {
                DynWeight::Int8 { .. } => "DynamicQuantizedLinear(qint8)".into(),
                DynWeight::Fp16(_) => "DynamicQuantizedLinear(float16)".into(),
            },
            QModule::DynamicRnn(r) => match r.kind {
                RnnKind::Lstm => "DynamicQuantizedLSTM".into(),
                RnnKind::Gru => "DynamicQuantizedGRU".into(),
            },
            QModule::Functional(_) => "QFunctional".into(),
            QModule::Hardswish { .. } => "QuantizedHardswish".into(),
        }
    }

    pub fn forward(&self, x: Value) -> Result<Value> {
        match self {
            QModule::Quantize { scale, zero_point } => match x {
                Value::F(t) => Ok(Value::Q(quantize_per_tensor::<u8>(
                    &t,
                    *scale,
                    *zero_point,
                )?)),
                q => Ok(q),
            },
            QModule::DeQuantize => Ok(Value::F(match x {
                Value::Q(q) => dequantize(&q),
                Value::F(t) => t,
            })),
            QModule::Linear(l) => {
                let q = x.quant("QuantizedLinear")?;
                Ok(Value::Q(l.engine.linear(
                    &q,
                    &l.packed,
                    l.scale,
                    l.zero_point,
                    l.relu,
                )?))
            }
            QModule::Conv2d(c) => {
                let q = x.quant("QuantizedConv2d")?;
                Ok(Value::Q(c.engine.conv2d(
                    &q,
                    &c.packed,
                    c.scale,
                    c.zero_point,
                    c.relu,
                )?))
            }
            QModule::DynamicLinear(d) => {
                let t = x.float("DynamicQuantizedLinear")?;
                let mut y = d.weight.apply(&d.engine, &t)?;
                if d.relu {
                    for v in y.data_mut() {
                        *v = v.max(0.0);
                    }
                }
                Ok(Value::F(y))
            }
            QModule::DynamicRnn(r) => Ok(Value::F(
                r.forward_full(&x.float("DynamicQuantizedRNN")?, None)?.0,
            )),
            QModule::Functional(_) => Err(bad(
                "QFunctional",
                "call add / mul / cat / add_relu instead of forward",
            )),
            QModule::Hardswish {
                engine,
                scale,
                zero_point,
            } => Ok(Value::Q(engine.hardswish(
                &x.quant("QuantizedHardswish")?,
                *scale,
                *zero_point,
            )?)),
        }
    }

    /// The engine that packed this module's weights, if any.
    pub fn engine_name(&self) -> Option<&'static str> {
        match self {
            QModule::Linear(l) => Some(l.engine.name()),
            QModule::Conv2d(c) => Some(c.engine.name()),
            QModule::DynamicLinear(d) => Some(d.engine.name()),
            QModule::DynamicRnn(r) => Some(r.engine.name()),
            QModule::Functional(f) => Some(f.engine.name()),
            QModule::Hardswish { engine, .. } => Some(engine.name()),
            _ => None,
        }
    }

    /// The same module with weights repacked by `engine`.
    pub fn repack(&self, engine: &Engine) -> Result<QModule> {
        let e = engine;
        let dynw = |w: &DynWeight| -> Result<DynWeight> {
            Ok(match w {
                DynWeight::Int8 {
                    packed,
                    reduce_range,
                } => DynWeight::Int8 {
                    packed: Arc::new(
                        e.pack_linear(packed.weight().clone(), packed.bias().map(|b| b.to_vec()))?,
                    ),
                    // PyTorch's dynamic linear ignores reduce_range under qnnpack.
                    reduce_range: *reduce_range && e.dynamic_reduce_range(),
                },
                DynWeight::Fp16(p) => DynWeight::Fp16(Arc::new(
                    e.pack_linear_fp16(p.weight().clone(), p.bias().map(|b| b.to_vec()))?,
                )),
            })
        };
        Ok(match self {
            QModule::Linear(l) => QModule::Linear(QLinear {
                engine: engine.clone(),
                packed: Arc::new(e.pack_linear(
                    l.packed.weight().clone(),
                    l.packed.bias().map(|b| b.to_vec()),
                )?),
                ..l.clone()
            }),
            QModule::Conv2d(c) => QModule::Conv2d(QConv2d {
                engine: engine.clone(),
                packed: Arc::new(e.pack_conv2d(
                    c.packed.weight().clone(),
                    c.packed.bias().map(|b| b.to_vec()),
                    c.packed.params(),
                )?),
                ..c.clone()
            }),
            QModule::DynamicLinear(d) => QModule::DynamicLinear(QDynLinear {
                engine: engine.clone(),
                weight: dynw(&d.weight)?,
                relu: d.relu,
            }),
            QModule::DynamicRnn(r) => QModule::DynamicRnn(QDynRnn {
                engine: engine.clone(),
                layers: r
                    .layers
                    .iter()
                    .map(|(a, b)| Ok((dynw(a)?, dynw(b)?)))
                    .collect::<Result<Vec<_>>>()?,
                ..r.clone()
            }),
            QModule::Functional(f) => QModule::Functional(QFunctional {
                engine: engine.clone(),
                ..f.clone()
            }),
            QModule::Hardswish {
                scale, zero_point, ..
            } => QModule::Hardswish {
                engine: engine.clone(),
                scale: *scale,
                zero_point: *zero_point,
            },
            other => other.clone(),
        })
    }
}
