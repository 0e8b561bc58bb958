//! Eager-mode workflows, as `torch.ao.quantization`: `fuse_modules`
//! (eval folding) and `fuse_modules_qat`, `prepare` / calibration / `convert`,
//! `prepare_qat`, `quantize_dynamic`, and engine moves.

use std::sync::Arc;

use rquant_core::observer::Observer;
use rquant_core::qconfig::{FakeQuantize, QConfig, QSpec};
use rquant_core::{
    quantize_per_channel, quantize_per_tensor, registry, Conv2dParams, Engine, QScheme, QTensor,
    Tensor,
};

use crate::error::{bad, NnError, Result};
use crate::layers::{ActKind, BatchNorm2d, Conv2d, Linear};
use crate::module::{join, FloatFunctional, Module, Observed};
use crate::quantized::*;
use crate::value::Value;

// ---------------------------------------------------------------- activation post-process

/// What `prepare` attaches to a module's output: an observer (PTQ) or a
/// fake quant (QAT, with the gradient mask of the last forward).
#[derive(Debug, Clone)]
pub enum ActPost {
    Observer(Box<dyn Observer>),
    FakeQuant {
        fq: Box<FakeQuantize>,
        mask: Option<Vec<bool>>,
    },
}

impl ActPost {
    pub fn observer(spec: &QSpec) -> Result<Self> {
        Ok(ActPost::Observer(spec.build_observer()?))
    }
    pub fn fake_quant(spec: &QSpec) -> Result<Self> {
        Ok(ActPost::FakeQuant {
            fq: Box::new(spec.build_fake_quant()?),
            mask: None,
        })
    }
    /// Observe (and for fake quant, quantize-dequantize) a module's output.
    pub fn apply(&mut self, y: Tensor) -> Result<Tensor> {
        match self {
            ActPost::Observer(o) => {
                o.observe(&y)?;
                Ok(y)
            }
            ActPost::FakeQuant { fq, mask } => {
                let out = fq.forward(&y)?;
                *mask = Some(out.mask);
                Ok(out.y)
            }
        }
    }
    pub fn backward(&mut self, mut g: Tensor) -> Result<Tensor> {
        if let ActPost::FakeQuant { mask: Some(m), .. } = self {
            for (v, &k) in g.data_mut().iter_mut().zip(m.iter()) {
                *v *= if k { 1.0 } else { 0.0 };
            }
        }
        Ok(g)
    }
    /// Per-tensor output qparams (`calculate_qparams`).
    pub fn qparams(&self) -> Result<(f64, i64)> {
        let qp = match self {
            ActPost::Observer(o) => o.calculate_qparams()?,
            ActPost::FakeQuant { fq, .. } => fq.calculate_qparams()?,
        };
        let (s, z) = qp
            .per_tensor()
            .ok_or_else(|| bad("convert", "activation qparams must be per-tensor"))?;
        Ok((s as f64, z))
    }
    pub fn fake_quant_mut(&mut self) -> Option<&mut FakeQuantize> {
        match self {
            ActPost::FakeQuant { fq, .. } => Some(fq),
            _ => None,
        }
    }
}

/// FloatFunctional's ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfOp {
    Add,
    AddRelu,
    Mul,
}

impl FloatFunctional {
    pub fn binary(&mut self, a: Value, b: Value, op: FfOp) -> Result<Value> {
        let (a, b) = (a.float("FloatFunctional")?, b.float("FloatFunctional")?);
        if a.shape() != b.shape() {
            return Err(bad(
                "FloatFunctional",
                format!("shapes {:?} and {:?} differ", a.shape(), b.shape()),
            ));
        }
        let data = a
            .data()
            .iter()
            .zip(b.data())
            .map(|(&x, &y)| match op {
                FfOp::Add => x + y,
                FfOp::AddRelu => (x + y).max(0.0),
                FfOp::Mul => x * y,
            })
            .collect();
        let y = Tensor::new(a.shape().to_vec(), data)?;
        Ok(Value::F(match &mut self.post {
            Some(p) => p.apply(y)?,
            None => y,
        }))
    }
    pub fn cat(&mut self, xs: Vec<Value>, dim: usize) -> Result<Value> {
        let ts = xs
            .into_iter()
            .map(|v| v.float("FloatFunctional.cat"))
            .collect::<Result<Vec<_>>>()?;
        let y = cat_float(&ts, dim)?;
        Ok(Value::F(match &mut self.post {
            Some(p) => p.apply(y)?,
            None => y,
        }))
    }
}

/// Concatenate float tensors along `dim`.
pub fn cat_float(ts: &[Tensor], dim: usize) -> Result<Tensor> {
    let first = ts.first().ok_or_else(|| bad("cat", "no inputs"))?;
    if dim >= first.ndim() {
        return Err(bad(
            "cat",
            format!("dim {dim} out of range for {:?}", first.shape()),
        ));
    }
    let outer: usize = first.shape()[..dim].iter().product();
    let inner: usize = first.shape()[dim + 1..].iter().product();
    let mut total = 0;
    for t in ts {
        if t.ndim() != first.ndim()
            || t.shape()[..dim] != first.shape()[..dim]
            || t.shape()[dim + 1..] != first.shape()[dim + 1..]
        {
            return Err(bad(
                "cat",
                format!(
                    "{:?} does not match {:?} off dim {dim}",
                    t.shape(),
                    first.shape()
                ),
            ));
        }
        total += t.shape()[dim];
    }
    let mut out = Vec::with_capacity(outer * total * inner);
    for o in 0..outer {
        for t in ts {
            let d = t.shape()[dim];
            out.extend_from_slice(&t.data()[o * d * inner..(o + 1) * d * inner]);
        }
    }
    let mut shape = first.shape().to_vec();
    shape[dim] = total;
    Ok(Tensor::new(shape, out)?)
}

// ---------------------------------------------------------------- qconfig mapping

/// `qconfig_dict`: a global qconfig and per-module overrides by dotted path
/// (`None` keeps a module and its children float).
#[derive(Debug, Clone, Default)]
pub struct QConfigMap {
    pub global: Option<QConfig>,
    pub by_name: Vec<(String, Option<QConfig>)>,
}

impl QConfigMap {
    pub fn global(q: QConfig) -> Self {
        QConfigMap {
            global: Some(q),
            by_name: Vec::new(),
        }
    }
    pub fn set_module(mut self, path: &str, q: Option<QConfig>) -> Self {
        self.by_name.push((path.to_string(), q));
        self
    }
    /// The qconfig of the module at `path`: the longest matching override, else global.
    pub fn for_path(&self, path: &str) -> Option<QConfig> {
        let mut best: Option<(usize, &Option<QConfig>)> = None;
        for (n, q) in &self.by_name {
            let hit = n.is_empty() || path == n || path.starts_with(&format!("{n}."));
            if hit && best.is_none_or(|(l, _)| n.len() >= l) {
                best = Some((n.len(), q));
            }
        }
        match best {
            Some((_, q)) => q.clone(),
            None => self.global.clone(),
        }
    }
}

// ---------------------------------------------------------------- fusion

/// PyTorch's `fuse_conv_bn_weights`: `w' = w · (γ · rsqrt(var + eps))`,
/// `b' = (b − mean) · rsqrt(var + eps) · γ + β`, in f32 in that order.
pub fn fuse_conv_bn_weights(
    w: &Tensor,
    b: Option<&[f32]>,
    bn: &BatchNorm2d,
) -> Result<(Tensor, Vec<f32>)> {
    fold_bn(w, b, bn, false)
}

/// PyTorch's `fuse_linear_bn_weights`: the same weight, but the bias
/// associates differently: `b' = (b − mean) · (γ · rsqrt(var + eps)) + β`.
pub fn fuse_linear_bn_weights(
    w: &Tensor,
    b: Option<&[f32]>,
    bn: &BatchNorm2d,
) -> Result<(Tensor, Vec<f32>)> {
    fold_bn(w, b, bn, true)
}

fn fold_bn(
    w: &Tensor,
    b: Option<&[f32]>,
    bn: &BatchNorm2d,
    linear: bool,
) -> Result<(Tensor, Vec<f32>)> {
    let c = w.shape()[0];
    if bn.num_features != c {
        return Err(bad(
            "fuse",
            format!(
                "batch norm has {} features, conv/linear {c} outputs",
                bn.num_features
            ),
        ));
    }
    let rsqrt: Vec<f32> = bn
        .running_var
        .data()
        .iter()
        .map(|v| 1.0 / (v + bn.eps).sqrt())
        .collect();
    let gamma = bn.weight.value.data();
    let k: Vec<f32> = (0..c).map(|i| gamma[i] * rsqrt[i]).collect();
    let per = w.numel() / c;
    let mut wf = w.clone();
    for (i, v) in wf.data_mut().iter_mut().enumerate() {
        *v *= k[i / per];
    }
    let bf = (0..c)
        .map(|i| {
            let b0 = b.map_or(0.0, |b| b[i]);
            if linear {
                (b0 - bn.running_mean.data()[i]) * k[i] + bn.bias.value.data()[i]
            } else {
                (b0 - bn.running_mean.data()[i]) * rsqrt[i] * gamma[i] + bn.bias.value.data()[i]
            }
        })
        .collect();
    Ok((wf, bf))
}

fn take(model: &mut Module, path: &str) -> Result<Module> {
    Ok(std::mem::replace(model.at_mut(path)?, Module::Identity))
}

/// `fuse_modules(model, [[conv, bn, relu], …])` for inference: conv+bn,
/// conv+bn+relu, conv+relu, linear+relu, linear+bn, bn+relu. The first
/// module becomes the fused one, the others Identity. Batch norms are folded
/// with PyTorch's exact arithmetic, so the model must be in eval mode.
pub fn fuse_modules(model: &mut Module, groups: &[&[&str]]) -> Result<()> {
    fuse(model, groups, false)
}

/// `fuse_modules_qat`: conv+bn(+relu) keep the batch norm live (ConvBn2d /
/// ConvBnReLU2d, folded at convert); the other patterns as `fuse_modules`.
pub fn fuse_modules_qat(model: &mut Module, groups: &[&[&str]]) -> Result<()> {
    fuse(model, groups, true)
}

fn fuse(model: &mut Module, groups: &[&[&str]], qat: bool) -> Result<()> {
    for g in groups {
        let kinds: Vec<String> = g
            .iter()
            .map(|p| {
                model
                    .get(p)
                    .map(|m| m.type_name())
                    .ok_or_else(|| NnError::module(*p, "no such submodule"))
            })
            .collect::<Result<_>>()?;
        let k: Vec<&str> = kinds.iter().map(String::as_str).collect();
        let mods = g
            .iter()
            .map(|p| take(model, p))
            .collect::<Result<Vec<_>>>()?;
        let fused = fuse_group(mods, qat).map_err(|e| match e {
            NnError::Module { detail, .. } => {
                NnError::module(g.join(" + "), format!("{detail} (got {k:?})"))
            }
            e => e.within(g[0]),
        })?;
        *model.at_mut(g[0])? = fused;
    }
    Ok(())
}

fn fuse_group(mods: Vec<Module>, qat: bool) -> Result<Module> {
    let is_relu = |m: &Module| matches!(m, Module::Act(a) if a.kind == ActKind::ReLU);
    let mut it = mods.into_iter();
    let first = it
        .next()
        .ok_or_else(|| NnError::module("", "empty fusion group"))?;
    let rest: Vec<Module> = it.collect();
    match (first, rest.as_slice()) {
        (Module::Conv2d(mut c), [Module::BatchNorm2d(bn)]) if c.bn.is_none() && !c.relu => {
            fold_or_attach(&mut c, bn.clone(), qat)?;
            Ok(Module::Conv2d(c))
        }
        (Module::Conv2d(mut c), [Module::BatchNorm2d(bn), r]) if is_relu(r) && c.bn.is_none() && !c.relu => {
            fold_or_attach(&mut c, bn.clone(), qat)?;
            c.relu = true;
            Ok(Module::Conv2d(c))
        }
        (Module::Conv2d(mut c), [r]) if is_relu(r) && !c.relu => {
            c.relu = true;
            Ok(Module::Conv2d(c))
        }
        (Module::Linear(mut l), [r]) if is_relu(r) && !l.relu => {
            l.relu = true;
            Ok(Module::Linear(l))
        }
        (Module::Linear(l), [Module::BatchNorm2d(bn)]) if !l.relu => {
            if qat {
                return Err(NnError::module("", "linear+bn QAT fusion (LinearBn1d) is not supported"));
            }
            if l.training || bn.training {
                return Err(NnError::module(
                    "",
                    "fusing linear+bn for inference requires eval mode (call model.train(false))",
                ));
            }
            let b = l.bias.as_ref().map(|b| b.value.data().to_vec());
            let (w, b) = fuse_linear_bn_weights(&l.weight.value, b.as_deref(), bn)?;
            let mut nl = Linear::from_weights(w, Some(Tensor::new([b.len()], b)?))?;
            nl.training = l.training;
            Ok(Module::Linear(nl))
        }
        (Module::BatchNorm2d(mut bn), [r]) if is_relu(r) && !bn.relu => {
            bn.relu = true;
            Ok(Module::BatchNorm2d(bn))
        }
        _ => Err(NnError::module(
            "",
            "unsupported fusion pattern: expected conv+bn, conv+bn+relu, conv+relu, linear+relu, linear+bn or bn+relu",
        )),
    }
}

fn fold_or_attach(c: &mut Conv2d, bn: BatchNorm2d, qat: bool) -> Result<()> {
    if qat {
        c.bn = Some(bn);
        return Ok(());
    }
    if c.training || bn.training {
        return Err(NnError::module(
            "",
            "fusing conv+bn for inference requires eval mode (call model.train(false))",
        ));
    }
    let b = c.bias.as_ref().map(|b| b.value.data().to_vec());
    let (w, b) = fuse_conv_bn_weights(&c.weight.value, b.as_deref(), &bn)?;
    let relu = c.relu;
    *c = Conv2d::from_weights(w, Some(Tensor::new([b.len()], b)?), c.params)?;
    c.relu = relu;
    Ok(())
}

// ---------------------------------------------------------------- prepare

fn observable(m: &Module) -> bool {
    matches!(m, Module::Linear(_) | Module::Conv2d(_) | Module::QuantStub)
        || matches!(m, Module::Act(a) if a.kind == ActKind::Hardswish)
        || matches!(m, Module::BatchNorm2d(_))
}

/// `prepare`: attach an observer (from each module's qconfig) to the output
/// of every quantizable module; modules whose qconfig is None stay float.
pub fn prepare(model: &mut Module, qconfig: &QConfigMap) -> Result<()> {
    attach(model, qconfig, false)
}

/// `prepare_qat`: weight fake quants on Linear / Conv2d (incl. fused and
/// ConvBn forms) and output fake quants; the model should be in training mode.
pub fn prepare_qat(model: &mut Module, qconfig: &QConfigMap) -> Result<()> {
    attach(model, qconfig, true)
}

fn attach(model: &mut Module, map: &QConfigMap, qat: bool) -> Result<()> {
    model.visit_mut("", &mut |path, m| {
        let Some(qc) = map.for_path(path) else {
            return Ok(());
        };
        let wrap = |e: NnError| if path.is_empty() { e } else { e.within(path) };
        if let Module::FloatFunctional(f) = m {
            f.post = Some(
                if qat {
                    ActPost::fake_quant(&qc.activation)
                } else {
                    ActPost::observer(&qc.activation)
                }
                .map_err(wrap)?,
            );
            f.qconfig = Some(qc);
            return Ok(());
        }
        if !observable(m) {
            return Ok(());
        }
        let mut inner = std::mem::replace(m, Module::Identity);
        let post = if qat {
            match &mut inner {
                Module::Linear(l) => {
                    l.weight_fake_quant =
                        Some(qc.weight.build_fake_quant().map_err(|e| wrap(e.into()))?)
                }
                Module::Conv2d(c) => {
                    c.weight_fake_quant =
                        Some(qc.weight.build_fake_quant().map_err(|e| wrap(e.into()))?)
                }
                _ => {}
            }
            ActPost::fake_quant(&qc.activation)
        } else {
            ActPost::observer(&qc.activation)
        };
        let post = match post {
            Ok(p) => p,
            Err(e) => {
                *m = inner;
                return Err(wrap(e));
            }
        };
        *m = Module::Observed(Box::new(Observed {
            module: inner,
            post,
            qconfig: qc,
        }));
        Ok(())
    })
}

/// Stop updating fake-quant observers (`disable_observer`).
pub fn disable_observer(model: &mut Module) {
    for_each_fake_quant(model, &mut |fq| fq.observer_enabled = false);
}
/// Resume updating fake-quant observers (`enable_observer`).
pub fn enable_observer(model: &mut Module) {
    for_each_fake_quant(model, &mut |fq| fq.observer_enabled = true);
}
/// Turn fake quantization off / on (`disable_fake_quant` / `enable_fake_quant`).
pub fn set_fake_quant_enabled(model: &mut Module, on: bool) {
    for_each_fake_quant(model, &mut |fq| fq.fake_quant_enabled = on);
}
/// Freeze batch-norm statistics of QAT ConvBn modules (`freeze_bn_stats`).
pub fn freeze_bn_stats(model: &mut Module) {
    let _ = model.visit_mut("", &mut |_, m| {
        let m = match m {
            Module::Observed(o) => &mut o.module,
            m => m,
        };
        if let Module::Conv2d(c) = m {
            if c.bn.is_some() {
                c.freeze_bn = true;
                if let Some(bn) = &mut c.bn {
                    bn.training = false;
                }
            }
        }
        Ok(())
    });
}

fn for_each_fake_quant(model: &mut Module, f: &mut dyn FnMut(&mut FakeQuantize)) {
    let _ = model.visit_mut("", &mut |_, m| {
        match m {
            Module::Observed(o) => {
                if let Some(fq) = o.post.fake_quant_mut() {
                    f(fq);
                }
                match &mut o.module {
                    Module::Linear(Linear {
                        weight_fake_quant: Some(fq),
                        ..
                    })
                    | Module::Conv2d(Conv2d {
                        weight_fake_quant: Some(fq),
                        ..
                    }) => f(fq),
                    _ => {}
                }
            }
            Module::FloatFunctional(FloatFunctional { post: Some(p), .. }) => {
                if let Some(fq) = p.fake_quant_mut() {
                    f(fq);
                }
            }
            _ => {}
        }
        Ok(())
    });
}

// ---------------------------------------------------------------- convert

/// Quantize a float weight with the qparams an observer (or a QAT weight
/// fake quant) chose, as PyTorch's `_quantize_weight`.
fn quantize_weight(
    w: &Tensor,
    qp: &rquant_core::observer::ObserverQParams,
    scheme: QScheme,
) -> Result<QTensor<i8>> {
    if scheme.is_per_channel() {
        let scales: Vec<f64> = qp.scales.iter().map(|&s| s as f64).collect();
        Ok(quantize_per_channel::<i8>(w, &scales, &qp.zero_points, 0)?)
    } else {
        let (s, z) = qp.per_tensor().ok_or_else(|| {
            bad(
                "convert",
                "per-tensor weight observer returned several qparams",
            )
        })?;
        Ok(quantize_per_tensor::<i8>(w, s as f64, z)?)
    }
}

fn weight_qtensor(w: &Tensor, spec: &QSpec, wfq: Option<&mut FakeQuantize>) -> Result<QTensor<i8>> {
    match wfq {
        Some(fq) => {
            if fq.observer_enabled {
                fq.forward(w)?;
            }
            let qp = fq.calculate_qparams()?;
            quantize_weight(w, &qp, fq.qscheme())
        }
        None => {
            let mut o = spec.build_observer()?;
            o.observe(w)?;
            let qp = o.calculate_qparams()?;
            quantize_weight(w, &qp, o.qscheme())
        }
    }
}

/// `convert`: replace every observed module by its quantized form, with
/// weights quantized per the weight observer and packed once by the current
/// engine (`rquant_core::registry::engine()`), outputs quantized with the
/// observed qparams. QuantStub/DeQuantStub become Quantize/DeQuantize.
pub fn convert(model: &mut Module) -> Result<()> {
    let engine = registry::engine()?;
    convert_with(model, &engine)
}

/// [`convert`] with an explicit engine.
pub fn convert_with(model: &mut Module, engine: &Engine) -> Result<()> {
    model.visit_mut("", &mut |path, m| {
        let out = match m {
            Module::Observed(_) => {
                let Module::Observed(o) = std::mem::replace(m, Module::Identity) else {
                    unreachable!()
                };
                convert_one(*o, engine)
                    .map_err(|e| if path.is_empty() { e } else { e.within(path) })?
            }
            Module::DeQuantStub => Module::Quantized(QModule::DeQuantize),
            Module::FloatFunctional(FloatFunctional { post: Some(p), .. }) => {
                let (scale, zero_point) = p.qparams()?;
                Module::Quantized(QModule::Functional(QFunctional {
                    engine: engine.clone(),
                    scale,
                    zero_point,
                }))
            }
            _ => return Ok(()),
        };
        *m = out;
        Ok(())
    })
}

fn convert_one(o: Observed, engine: &Engine) -> Result<Module> {
    let Observed {
        module,
        post,
        qconfig,
    } = o;
    let (scale, zero_point) = post.qparams()?;
    let e = engine;
    Ok(Module::Quantized(match module {
        Module::QuantStub => QModule::Quantize { scale, zero_point },
        Module::Linear(mut l) => {
            let w = weight_qtensor(&l.weight.value, &qconfig.weight, l.weight_fake_quant.as_mut())?;
            let b = l.bias.as_ref().map(|b| b.value.data().to_vec());
            QModule::Linear(QLinear {
                engine: engine.clone(),
                packed: Arc::new(e.pack_linear(w, b)?),
                scale,
                zero_point,
                relu: l.relu,
            })
        }
        Module::Conv2d(mut c) => {
            let (wf, bf) = match &c.bn {
                Some(bn) => {
                    let b = c.bias.as_ref().map(|b| b.value.data().to_vec());
                    let (w, b) = fuse_conv_bn_weights(&c.weight.value, b.as_deref(), bn)?;
                    (w, Some(b))
                }
                None => (c.weight.value.clone(), c.bias.as_ref().map(|b| b.value.data().to_vec())),
            };
            let w = weight_qtensor(&wf, &qconfig.weight, c.weight_fake_quant.as_mut())?;
            QModule::Conv2d(QConv2d {
                engine: engine.clone(),
                packed: Arc::new(e.pack_conv2d(w, bf, c.params)?),
                scale,
                zero_point,
                relu: c.relu,
            })
        }
        Module::Act(a) if a.kind == ActKind::Hardswish => QModule::Hardswish {
            engine: engine.clone(),
            scale,
            zero_point,
        },
        Module::BatchNorm2d(_) => {
            return Err(NnError::module(
                "",
                "a standalone BatchNorm2d has no quantized kernel in rquant's engines: fuse it into the preceding conv",
            ))
        }
        other => return Err(NnError::module("", format!("{} cannot be converted", other.type_name()))),
    }))
}

/// `quantize(model, run_fn, qconfig)`: prepare, calibrate with `calib`, convert.
pub fn quantize(
    model: &mut Module,
    qconfig: &QConfigMap,
    calib: &mut dyn FnMut(&mut Module) -> Result<()>,
) -> Result<()> {
    model.train(false);
    prepare(model, qconfig)?;
    calib(model)?;
    convert(model)
}

// ---------------------------------------------------------------- dynamic

/// Module types `quantize_dynamic` may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynamicType {
    Linear,
    Lstm,
    Gru,
}

/// Weight dtype of dynamic quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynamicDType {
    QInt8,
    Float16,
}

/// `quantize_dynamic(model, {Linear, LSTM, GRU}, dtype)` with
/// `default_dynamic_qconfig` (qint8: per-tensor symmetric MinMax weights) or
/// `float16_dynamic_qconfig`; dynamic Linear runs with `reduce_range=true`
/// except under qnnpack, as PyTorch.
pub fn quantize_dynamic(
    model: &mut Module,
    types: &[DynamicType],
    dtype: DynamicDType,
) -> Result<()> {
    let q = match dtype {
        DynamicDType::QInt8 => rquant_core::qconfig::default_dynamic_qconfig(),
        DynamicDType::Float16 => rquant_core::qconfig::float16_dynamic_qconfig(),
    };
    let engine = registry::engine()?;
    quantize_dynamic_with(model, types, dtype, &q, &engine)
}

/// [`quantize_dynamic`] with an explicit qconfig (e.g. `per_channel_dynamic_qconfig`) and engine.
pub fn quantize_dynamic_with(
    model: &mut Module,
    types: &[DynamicType],
    dtype: DynamicDType,
    qconfig: &QConfig,
    engine: &Engine,
) -> Result<()> {
    let reduce_range = engine.dynamic_reduce_range();
    let dyn_weight = |w: &Tensor, b: Option<Vec<f32>>| -> Result<DynWeight> {
        Ok(match dtype {
            DynamicDType::QInt8 => DynWeight::Int8 {
                packed: Arc::new(engine.pack_linear(weight_qtensor(w, &qconfig.weight, None)?, b)?),
                reduce_range,
            },
            DynamicDType::Float16 => {
                DynWeight::Fp16(Arc::new(engine.pack_linear_fp16(w.clone(), b)?))
            }
        })
    };
    model.visit_mut("", &mut |path, m| {
        let ctx = |e: NnError| if path.is_empty() { e } else { e.within(path) };
        let new = match m {
            Module::Linear(l) if types.contains(&DynamicType::Linear) => {
                let b = l.bias.as_ref().map(|b| b.value.data().to_vec());
                Module::Quantized(QModule::DynamicLinear(QDynLinear {
                    engine: engine.clone(),
                    weight: dyn_weight(&l.weight.value, b).map_err(ctx)?,
                    relu: l.relu,
                }))
            }
            Module::Rnn(r)
                if (r.kind == crate::rnn::RnnKind::Lstm && types.contains(&DynamicType::Lstm))
                    || (r.kind == crate::rnn::RnnKind::Gru
                        && types.contains(&DynamicType::Gru)) =>
            {
                let layers = r
                    .layers
                    .iter()
                    .map(|l| {
                        Ok((
                            dyn_weight(
                                &l.w_ih.value,
                                l.b_ih.as_ref().map(|b| b.value.data().to_vec()),
                            )?,
                            dyn_weight(
                                &l.w_hh.value,
                                l.b_hh.as_ref().map(|b| b.value.data().to_vec()),
                            )?,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()
                    .map_err(ctx)?;
                Module::Quantized(QModule::DynamicRnn(QDynRnn {
                    engine: engine.clone(),
                    kind: r.kind,
                    input_size: r.input_size,
                    hidden_size: r.hidden_size,
                    batch_first: r.batch_first,
                    layers,
                }))
            }
            _ => return Ok(()),
        };
        *m = new;
        Ok(())
    })
}

/// Repack every quantized module of a model for `engine` (a model converted
/// once runs on any engine with identical outputs).
pub fn to_engine(model: &mut Module, engine: &Engine) -> Result<()> {
    model.visit_mut("", &mut |path, m| {
        if let Module::Quantized(q) = m {
            *q = q.repack(engine).map_err(|e| e.within(path))?;
        }
        Ok(())
    })
}

/// Conv2d params helper: stride, padding, dilation, groups.
pub fn conv_params(stride: usize, padding: usize, dilation: usize, groups: usize) -> Conv2dParams {
    Conv2dParams {
        stride: [stride; 2],
        padding: [padding; 2],
        dilation: [dilation; 2],
        groups,
    }
}

/// The dotted paths of every module of a type (e.g. for building fusion lists).
pub fn paths_of(model: &Module, type_name: &str) -> Vec<String> {
    model
        .named_modules()
        .into_iter()
        .filter(|(_, m)| m.type_name() == type_name)
        .map(|(p, _)| p)
        .collect()
}

#[allow(dead_code)]
fn _join(a: &str, b: &str) -> String {
    join(a, b)
}
