//! The module tree. A model is a tree of [`Module`]s whose dotted paths are
//! PyTorch's state_dict prefixes (`conv_layers.0`); workflows (fuse, prepare,
//! convert) replace nodes in place, as PyTorch's eager mode swaps modules.

use std::fmt;

use rquant_core::qconfig::QConfig;
use rquant_core::Tensor;

use crate::error::{bad, NnError, Result};
use crate::layers::*;
use crate::quantize::ActPost;
use crate::quantized::QModule;
use crate::rnn::{Embedding, Rnn};
use crate::value::Value;

/// A user-defined module with its own forward (skip connections, several
/// inputs): its children are ordinary [`Module`]s, so fusion, prepare and
/// convert reach them.
pub trait CustomModule: Send + Sync + fmt::Debug {
    fn type_name(&self) -> &str;
    fn forward(&mut self, x: Value) -> Result<Value>;
    fn backward(&mut self, _grad: Tensor) -> Result<Tensor> {
        Err(bad(
            "backward",
            format!("{} does not implement backward", self.type_name()),
        ))
    }
    fn children(&self) -> Vec<(&str, &Module)>;
    fn children_mut(&mut self) -> Vec<(&str, &mut Module)>;
    fn box_clone(&self) -> Box<dyn CustomModule>;
}

/// `nn.Sequential` with named children (PyTorch names them "0", "1", …).
#[derive(Debug, Clone, Default)]
pub struct Sequential {
    pub children: Vec<(String, Module)>,
}

impl Sequential {
    pub fn new() -> Self {
        Sequential::default()
    }
    /// Children named "0", "1", … as `nn.Sequential(*modules)`.
    pub fn from_modules(mods: Vec<Module>) -> Self {
        Sequential {
            children: mods
                .into_iter()
                .enumerate()
                .map(|(i, m)| (i.to_string(), m))
                .collect(),
        }
    }
    pub fn push(mut self, name: &str, m: Module) -> Self {
        self.children.push((name.to_string(), m));
        self
    }
}

/// A module with an activation post-process attached by `prepare` (an
/// observer) or `prepare_qat` (a fake quant), and the qconfig convert uses.
#[derive(Debug, Clone)]
pub struct Observed {
    pub module: Module,
    pub post: ActPost,
    pub qconfig: QConfig,
}

/// `nn.quantized.FloatFunctional`: add, mul, cat, add_relu in float, with an
/// output observer after prepare.
#[derive(Debug, Clone, Default)]
pub struct FloatFunctional {
    pub post: Option<ActPost>,
    pub qconfig: Option<QConfig>,
    pub(crate) training: bool,
}

/// Every module rquant knows.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Module {
    Linear(Linear),
    Conv2d(Conv2d),
    BatchNorm2d(BatchNorm2d),
    Act(Activation),
    MaxPool2d(MaxPool2d),
    AvgPool2d(AvgPool2d),
    AdaptiveAvgPool2d(AdaptiveAvgPool2d),
    Flatten(Flatten),
    Dropout(Dropout),
    Identity,
    Sequential(Sequential),
    /// Identity in float; becomes `Quantize` at convert.
    QuantStub,
    /// Identity in float; becomes `DeQuantize` at convert.
    DeQuantStub,
    FloatFunctional(FloatFunctional),
    Embedding(Embedding),
    Rnn(Rnn),
    Observed(Box<Observed>),
    Quantized(QModule),
    Custom(Box<dyn CustomModule>),
}

impl Clone for Module {
    fn clone(&self) -> Self {
        match self {
            Module::Linear(m) => Module::Linear(m.clone()),
            Module::Conv2d(m) => Module::Conv2d(m.clone()),
            Module::BatchNorm2d(m) => Module::BatchNorm2d(m.clone()),
            Module::Act(m) => Module::Act(m.clone()),
            Module::MaxPool2d(m) => Module::MaxPool2d(m.clone()),
            Module::AvgPool2d(m) => Module::AvgPool2d(m.clone()),
            Module::AdaptiveAvgPool2d(m) => Module::AdaptiveAvgPool2d(m.clone()),
            Module::Flatten(m) => Module::Flatten(m.clone()),
            Module::Dropout(m) => Module::Dropout(m.clone()),
            Module::Identity => Module::Identity,
            Module::Sequential(m) => Module::Sequential(m.clone()),
            Module::QuantStub => Module::QuantStub,
            Module::DeQuantStub => Module::DeQuantStub,
            Module::FloatFunctional(m) => Module::FloatFunctional(m.clone()),
            Module::Embedding(m) => Module::Embedding(m.clone()),
            Module::Rnn(m) => Module::Rnn(m.clone()),
            Module::Observed(m) => Module::Observed(m.clone()),
            Module::Quantized(m) => Module::Quantized(m.clone()),
            Module::Custom(m) => Module::Custom(m.box_clone()),
        }
    }
}

fn no_cache(_: ()) -> NnError {
    NnError::module("", "backward is not defined for this module")
}

impl Module {
    pub fn relu() -> Self {
        Module::Act(Activation::new(ActKind::ReLU))
    }
    pub fn relu6() -> Self {
        Module::Act(Activation::new(ActKind::ReLU6))
    }
    pub fn hardswish() -> Self {
        Module::Act(Activation::new(ActKind::Hardswish))
    }
    /// `nn.BatchNorm1d(num_features)`.
    pub fn batch_norm1d(num_features: usize) -> Self {
        Module::BatchNorm2d(BatchNorm2d::new_1d(num_features))
    }
    pub fn flatten() -> Self {
        Module::Flatten(Flatten::default())
    }

    /// The PyTorch-style class name (fused and QAT forms included).
    pub fn type_name(&self) -> String {
        match self {
            Module::Linear(m) => m.type_name().into(),
            Module::Conv2d(m) => m.type_name().into(),
            Module::BatchNorm2d(m) => m.type_name().into(),
            Module::Act(m) => m.type_name().into(),
            Module::MaxPool2d(_) => "MaxPool2d".into(),
            Module::AvgPool2d(_) => "AvgPool2d".into(),
            Module::AdaptiveAvgPool2d(_) => "AdaptiveAvgPool2d".into(),
            Module::Flatten(_) => "Flatten".into(),
            Module::Dropout(_) => "Dropout".into(),
            Module::Identity => "Identity".into(),
            Module::Sequential(_) => "Sequential".into(),
            Module::QuantStub => "QuantStub".into(),
            Module::DeQuantStub => "DeQuantStub".into(),
            Module::FloatFunctional(_) => "FloatFunctional".into(),
            Module::Embedding(_) => "Embedding".into(),
            Module::Rnn(r) => r.type_name().into(),
            Module::Observed(o) => o.module.type_name(),
            Module::Quantized(q) => q.type_name(),
            Module::Custom(c) => c.type_name().into(),
        }
    }

    /// Forward one value through the module.
    pub fn forward(&mut self, x: Value) -> Result<Value> {
        match self {
            Module::Linear(m) => Ok(Value::F(m.forward(x.float("Linear")?)?)),
            Module::Conv2d(m) => Ok(Value::F(m.forward(x.float("Conv2d")?)?)),
            Module::BatchNorm2d(m) => Ok(Value::F(m.forward(x.float("BatchNorm2d")?)?)),
            Module::Act(m) => match x {
                Value::F(t) => Ok(Value::F(m.forward_float(t)?)),
                Value::Q(q) => Ok(Value::Q(m.forward_quant(q)?)),
            },
            Module::MaxPool2d(m) => match x {
                Value::F(t) => Ok(Value::F(m.forward_float(t)?)),
                Value::Q(q) => Ok(Value::Q(m.forward_quant(q)?)),
            },
            Module::AvgPool2d(m) => match x {
                Value::F(t) => Ok(Value::F(m.forward_float(t)?)),
                Value::Q(q) => Ok(Value::Q(m.forward_quant(q)?)),
            },
            Module::AdaptiveAvgPool2d(m) => match x {
                Value::F(t) => Ok(Value::F(m.forward_float(t)?)),
                Value::Q(q) => Ok(Value::Q(m.forward_quant(q)?)),
            },
            Module::Flatten(m) => m.forward(x),
            Module::Dropout(m) => m.forward(x),
            Module::Identity | Module::QuantStub | Module::DeQuantStub => Ok(x),
            Module::Sequential(s) => {
                let mut x = x;
                for (name, m) in &mut s.children {
                    x = m.forward(x).map_err(|e| e.within(name))?;
                }
                Ok(x)
            }
            Module::FloatFunctional(_) => Err(bad(
                "FloatFunctional",
                "call add / mul / cat / add_relu instead of forward",
            )),
            Module::Embedding(e) => e.forward(x),
            Module::Rnn(r) => Ok(Value::F(r.forward(&x.float("LSTM/GRU")?, None)?.0)),
            Module::Observed(o) => {
                let y = o.module.forward(x)?;
                Ok(Value::F(o.post.apply(y.float("observer")?)?))
            }
            Module::Quantized(q) => q.forward(x),
            Module::Custom(c) => c.forward(x),
        }
    }

    /// Backward of the last training-mode forward: accumulates parameter
    /// gradients and returns the gradient of the input.
    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        match self {
            Module::Linear(m) => m.backward(g),
            Module::Conv2d(m) => m.backward(g),
            Module::BatchNorm2d(m) => m.backward(g),
            Module::Act(m) => m.backward(g),
            Module::MaxPool2d(m) => m.backward(g),
            Module::AvgPool2d(m) => m.backward(g),
            Module::AdaptiveAvgPool2d(m) => m.backward(g),
            Module::Flatten(m) => m.backward(g),
            Module::Dropout(m) => m.backward(g),
            Module::Identity | Module::QuantStub | Module::DeQuantStub => Ok(g),
            Module::Sequential(s) => {
                let mut g = g;
                for (name, m) in s.children.iter_mut().rev() {
                    g = m.backward(g).map_err(|e| e.within(name))?;
                }
                Ok(g)
            }
            Module::Observed(o) => {
                let g = o.post.backward(g)?;
                o.module.backward(g)
            }
            Module::Custom(c) => c.backward(g),
            Module::FloatFunctional(_)
            | Module::Embedding(_)
            | Module::Rnn(_)
            | Module::Quantized(_) => Err(no_cache(())),
        }
    }

    /// Named direct children.
    pub fn children(&self) -> Vec<(&str, &Module)> {
        match self {
            Module::Sequential(s) => s.children.iter().map(|(n, m)| (n.as_str(), m)).collect(),
            Module::Custom(c) => c.children(),
            _ => Vec::new(),
        }
    }
    pub fn children_mut(&mut self) -> Vec<(&str, &mut Module)> {
        match self {
            Module::Sequential(s) => s
                .children
                .iter_mut()
                .map(|(n, m)| (n.as_str(), m))
                .collect(),
            Module::Custom(c) => c.children_mut(),
            _ => Vec::new(),
        }
    }

    /// The module at a dotted path ("" is self).
    pub fn get(&self, path: &str) -> Option<&Module> {
        if path.is_empty() {
            return Some(self);
        }
        let (head, rest) = path.split_once('.').unwrap_or((path, ""));
        let child = self.children().into_iter().find(|(n, _)| *n == head)?.1;
        child.get(rest)
    }
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Module> {
        if path.is_empty() {
            return Some(self);
        }
        let (head, rest) = path.split_once('.').unwrap_or((path, ""));
        let child = self.children_mut().into_iter().find(|(n, _)| *n == head)?.1;
        child.get_mut(rest)
    }
    /// The module at `path`, or an error naming the path.
    pub fn at_mut(&mut self, path: &str) -> Result<&mut Module> {
        self.get_mut(path)
            .ok_or_else(|| NnError::module(path, "no such submodule"))
    }

    /// Every module with its dotted path, pre-order (`named_modules`).
    pub fn named_modules(&self) -> Vec<(String, &Module)> {
        let mut out = Vec::new();
        fn rec<'a>(m: &'a Module, p: String, out: &mut Vec<(String, &'a Module)>) {
            out.push((p.clone(), m));
            for (n, c) in m.children() {
                rec(c, join(&p, n), out);
            }
        }
        rec(self, String::new(), &mut out);
        out
    }

    /// Apply `f` to every module, children first (post-order), with its path.
    pub fn visit_mut(
        &mut self,
        path: &str,
        f: &mut dyn FnMut(&str, &mut Module) -> Result<()>,
    ) -> Result<()> {
        for (n, c) in self.children_mut() {
            let p = join(path, n);
            c.visit_mut(&p, f)?;
        }
        f(path, self)
    }

    /// Training or evaluation mode for the whole tree (`model.train(on)`).
    pub fn train(&mut self, on: bool) {
        let _ = self.visit_mut("", &mut |_, m| {
            m.set_training(on);
            Ok(())
        });
    }
    fn set_training(&mut self, on: bool) {
        match self {
            Module::Linear(m) => m.training = on,
            Module::Conv2d(m) => {
                m.training = on;
                if let Some(bn) = &mut m.bn {
                    bn.training = on && !m.freeze_bn;
                }
            }
            Module::BatchNorm2d(m) => m.training = on,
            Module::Act(m) => m.training = on,
            Module::MaxPool2d(m) => m.training = on,
            Module::AvgPool2d(m) => m.training = on,
            Module::AdaptiveAvgPool2d(m) => m.training = on,
            Module::Flatten(m) => m.training = on,
            Module::Dropout(m) => m.training = on,
            Module::FloatFunctional(m) => m.training = on,
            Module::Observed(o) => o.module.train(on),
            _ => {}
        }
    }

    /// Trainable parameters with their state_dict names.
    pub fn named_parameters_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut out = Vec::new();
        self.collect_params("", &mut out);
        out
    }
    fn collect_params<'a>(&'a mut self, p: &str, out: &mut Vec<(String, &'a mut Param)>) {
        match self {
            Module::Linear(m) => {
                out.push((join(p, "weight"), &mut m.weight));
                if let Some(b) = &mut m.bias {
                    out.push((join(p, "bias"), b));
                }
            }
            Module::Conv2d(m) => {
                out.push((join(p, "weight"), &mut m.weight));
                if let Some(b) = &mut m.bias {
                    out.push((join(p, "bias"), b));
                }
                if let Some(bn) = &mut m.bn {
                    out.push((join(p, "bn.weight"), &mut bn.weight));
                    out.push((join(p, "bn.bias"), &mut bn.bias));
                }
            }
            Module::BatchNorm2d(m) => {
                out.push((join(p, "weight"), &mut m.weight));
                out.push((join(p, "bias"), &mut m.bias));
            }
            Module::Embedding(e) => out.push((join(p, "weight"), &mut e.weight)),
            Module::Rnn(r) => {
                for (n, t) in r.params_mut() {
                    out.push((join(p, &n), t));
                }
            }
            Module::Observed(o) => o.module.collect_params(p, out),
            Module::Sequential(s) => {
                for (n, c) in &mut s.children {
                    let q = join(p, n);
                    c.collect_params(&q, out);
                }
            }
            Module::Custom(c) => {
                for (n, ch) in c.children_mut() {
                    let q = join(p, n);
                    ch.collect_params(&q, out);
                }
            }
            _ => {}
        }
    }

    /// Clear every parameter gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in self.named_parameters_mut() {
            p.grad = None;
        }
    }

    /// The float state_dict: parameters and batch-norm buffers, PyTorch names.
    pub fn state_dict(&mut self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .named_parameters_mut()
            .into_iter()
            .map(|(n, p)| (n, p.value.clone()))
            .collect();
        for (path, m) in self.named_modules() {
            let bn = match m {
                Module::BatchNorm2d(b) => Some((path.clone(), b)),
                Module::Conv2d(Conv2d { bn: Some(b), .. }) => Some((join(&path, "bn"), b)),
                _ => None,
            };
            if let Some((p, b)) = bn {
                out.push((join(&p, "running_mean"), b.running_mean.clone()));
                out.push((join(&p, "running_var"), b.running_var.clone()));
            }
        }
        out
    }

    /// Load float weights by name. Every parameter and batch-norm buffer must
    /// be present with the right shape; `strict` also rejects unexpected keys
    /// (`num_batches_tracked` is always accepted).
    pub fn load_state_dict(
        &mut self,
        sd: &[(String, Tensor)],
        strict: bool,
        file: &str,
    ) -> Result<()> {
        let mut used = vec![false; sd.len()];
        let mut find = |name: &str| -> Option<Tensor> {
            let i = sd.iter().position(|(n, _)| n == name)?;
            used[i] = true;
            Some(sd[i].1.clone())
        };
        let check = |name: &str, want: &[usize], got: &Tensor| -> Result<()> {
            if want != got.shape() {
                return Err(NnError::file(
                    file,
                    name,
                    format!(
                        "shape {:?} does not match the model's {:?}",
                        got.shape(),
                        want
                    ),
                ));
            }
            Ok(())
        };
        for (name, p) in self.named_parameters_mut() {
            let t = find(&name)
                .ok_or_else(|| NnError::file(file, &name, "missing from the state_dict"))?;
            check(&name, p.value.shape(), &t)?;
            p.value = t;
        }
        let mut paths = Vec::new();
        for (path, m) in self.named_modules() {
            match m {
                Module::BatchNorm2d(_) => paths.push(path.clone()),
                Module::Conv2d(Conv2d { bn: Some(_), .. }) => paths.push(join(&path, "bn")),
                _ => {}
            }
        }
        for p in paths {
            let (mpath, bn_in_conv) = match p
                .strip_suffix(".bn")
                .or_else(|| (p == "bn").then_some(""))
            {
                Some(c) if matches!(self.get(c), Some(Module::Conv2d(_))) => (c.to_string(), true),
                _ => (p.clone(), false),
            };
            let rm_name = join(&p, "running_mean");
            let rv_name = join(&p, "running_var");
            let rm = find(&rm_name)
                .ok_or_else(|| NnError::file(file, &rm_name, "missing from the state_dict"))?;
            let rv = find(&rv_name)
                .ok_or_else(|| NnError::file(file, &rv_name, "missing from the state_dict"))?;
            let _ = find(&join(&p, "num_batches_tracked"));
            let bn = match self.get_mut(&mpath) {
                Some(Module::BatchNorm2d(b)) if !bn_in_conv => b,
                Some(Module::Conv2d(Conv2d { bn: Some(b), .. })) => b,
                _ => unreachable!("collected above"),
            };
            check(&rm_name, bn.running_mean.shape(), &rm)?;
            check(&rv_name, bn.running_var.shape(), &rv)?;
            bn.running_mean = rm;
            bn.running_var = rv;
        }
        if strict {
            if let Some(i) =
                (0..sd.len()).find(|&i| !used[i] && !sd[i].0.ends_with("num_batches_tracked"))
            {
                return Err(NnError::file(
                    file,
                    &sd[i].0,
                    "unexpected key: the model has no such parameter",
                ));
            }
        }
        Ok(())
    }

    // ---- FloatFunctional / QFunctional ops (skip connections) ----

    /// `FloatFunctional.add` / `QFunctional.add`.
    pub fn add(&mut self, a: Value, b: Value) -> Result<Value> {
        self.binary(a, b, crate::quantize::FfOp::Add)
    }
    pub fn add_relu(&mut self, a: Value, b: Value) -> Result<Value> {
        self.binary(a, b, crate::quantize::FfOp::AddRelu)
    }
    pub fn mul(&mut self, a: Value, b: Value) -> Result<Value> {
        self.binary(a, b, crate::quantize::FfOp::Mul)
    }
    fn binary(&mut self, a: Value, b: Value, op: crate::quantize::FfOp) -> Result<Value> {
        match self {
            Module::FloatFunctional(f) => f.binary(a, b, op),
            Module::Quantized(QModule::Functional(q)) => q.binary(a, b, op),
            m => Err(bad(
                "FloatFunctional",
                format!("{} is not a FloatFunctional", m.type_name()),
            )),
        }
    }
    /// `FloatFunctional.cat` / `QFunctional.cat` along `dim`.
    pub fn cat(&mut self, xs: Vec<Value>, dim: usize) -> Result<Value> {
        match self {
            Module::FloatFunctional(f) => f.cat(xs, dim),
            Module::Quantized(QModule::Functional(q)) => q.cat(xs, dim),
            m => Err(bad(
                "FloatFunctional",
                format!("{} is not a FloatFunctional", m.type_name()),
            )),
        }
    }
    /// Backward through a FloatFunctional's output fake quant (QAT); the
    /// caller routes the result to the op's inputs.
    pub fn functional_backward(&mut self, g: Tensor) -> Result<Tensor> {
        match self {
            Module::FloatFunctional(FloatFunctional { post: Some(p), .. }) => p.backward(g),
            _ => Ok(g),
        }
    }
}

pub(crate) fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}.{b}")
    }
}
