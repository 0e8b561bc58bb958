//! The open module set. Every module — float, fused, observed, QAT,
//! quantized, rquant's or a user's — is a type implementing [`Layer`]; a
//! model is a tree of [`Module`]s (boxed layers) whose dotted paths are
//! PyTorch's state_dict prefixes (`conv_layers.0`). Workflows (fuse,
//! prepare, convert) replace nodes in place, as PyTorch's eager mode swaps
//! modules, choosing replacements from [`crate::mapping::Mappings`] by
//! [`Layer::type_name`]; files store each node under that same name and load
//! it through a [`crate::registry::ModuleRegistry`].

use std::any::Any;
use std::fmt;

use rquant_core::qconfig::FakeQuantize;
use rquant_core::{BinaryOp, Engine, Tensor};
use serde_json::Value as J;

use crate::error::{bad, NnError, Result};
use crate::format::{join, Saver};
use crate::param::Param;
use crate::post::Observation;
use crate::value::Value;

/// A module. Only [`type_name`](Layer::type_name) and
/// [`forward`](Layer::forward) are required; the rest default to "nothing
/// of that kind" (no children, no parameters, no engine, not savable).
///
/// Implementors must be `Clone` (cloning a model clones its layers).
pub trait Layer: LayerBase + fmt::Debug + Send + Sync {
    /// The PyTorch-style class name (`Conv2d`, `ConvReLU2d`, `QATLinear`,
    /// `QuantizedLinear`, …). It is the key of the mapping tables and the
    /// type tag of the model file.
    fn type_name(&self) -> String;

    /// Forward one value (float or quint8).
    fn forward(&mut self, x: Value) -> Result<Value>;

    /// Backward of the last training-mode forward: accumulates parameter
    /// gradients and returns the gradient of the input.
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let _ = g;
        Err(NnError::module(
            "",
            format!("{} does not implement backward", self.type_name()),
        ))
    }

    /// Named direct children (fusion, prepare, convert, save and load reach them).
    fn children(&self) -> Vec<(&str, &Module)> {
        Vec::new()
    }
    fn children_mut(&mut self) -> Vec<(&str, &mut Module)> {
        Vec::new()
    }

    /// Training (`true`) or evaluation mode of this module's own state
    /// (children are set by [`Module::train`]).
    fn set_training(&mut self, on: bool) {
        let _ = on;
    }

    /// This module's own trainable parameters, named relative to it
    /// (`weight`, `bias`, `bn.weight`).
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        Vec::new()
    }

    /// This module's own float buffers of the state_dict (`running_mean`, …).
    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        Vec::new()
    }

    /// Every fake quant this module owns (weight and output), for
    /// `disable_observer`, `enable_observer`, `set_fake_quant_enabled`.
    fn fake_quants_mut(&mut self) -> Vec<&mut FakeQuantize> {
        Vec::new()
    }

    /// The module's weight as float (dequantized for int8 modules), for the
    /// numeric suite.
    fn weight(&self) -> Option<Tensor> {
        None
    }

    /// The module's weights as float by state_dict name (`weight`, and for
    /// recurrent modules `weight_ih_l0`, …), for the numeric suite.
    fn named_weights(&self) -> Vec<(String, Tensor)> {
        self.weight()
            .map(|w| vec![("weight".to_string(), w)])
            .unwrap_or_default()
    }

    /// The engine this module runs its int8 ops on, if any.
    fn engine(&self) -> Option<&Engine> {
        None
    }

    /// Run on `engine` from now on, repacking weights if they were packed
    /// for another engine or ISA path (a no-op when they were not).
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        let _ = engine;
        Ok(())
    }

    /// Write this module's tensors to `out` (under `out.path()`) and return
    /// its attributes as a JSON object; the file records the type tag and
    /// the children. A module saved here needs a loader under its type
    /// name in the [`crate::registry::ModuleRegistry`] it is loaded with.
    fn save(&self, out: &mut Saver) -> Result<J> {
        let _ = out;
        Err(NnError::module(
            "",
            format!("{} cannot be saved in a model file", self.type_name()),
        ))
    }

    /// `prepare` offers the module its output observation: a module that
    /// observes its own outputs (FloatFunctional, whose ops are not
    /// `forward`) keeps it and returns `None`; others return it, and
    /// `prepare` wraps them in [`crate::observed::Observed`].
    fn observe_output(&mut self, obs: Observation) -> Option<Observation> {
        Some(obs)
    }

    /// The observation kept by [`observe_output`](Layer::observe_output), for `convert`.
    fn take_observation(&mut self) -> Option<Observation> {
        None
    }

    /// `FloatFunctional.add` / `add_relu` / `mul` (and the quantized forms).
    fn binary(&mut self, op: BinaryOp, a: Value, b: Value) -> Result<Value> {
        let _ = (op, a, b);
        Err(bad(
            "FloatFunctional",
            format!("{} is not a FloatFunctional", self.type_name()),
        ))
    }

    /// `FloatFunctional.cat` along `dim` (and the quantized form).
    fn cat(&mut self, xs: Vec<Value>, dim: usize) -> Result<Value> {
        let _ = (xs, dim);
        Err(bad(
            "FloatFunctional",
            format!("{} is not a FloatFunctional", self.type_name()),
        ))
    }

    /// Backward through a FloatFunctional's output fake quant (QAT); the
    /// caller routes the result to the op's inputs.
    fn functional_backward(&mut self, g: Tensor) -> Result<Tensor> {
        Ok(g)
    }

    /// A recurrent module's forward from an initial state `(h_0, c_0)`
    /// (`c_0` ignored by GRU / RNN), returning the output and the final
    /// state, as PyTorch's `LSTM.forward(x, (h_0, c_0))`.
    fn forward_state(
        &mut self,
        x: Tensor,
        state: Option<(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let _ = (x, state);
        Err(NnError::module(
            "",
            format!("{} is not a recurrent module", self.type_name()),
        ))
    }

    /// An embedding bag's forward on flat `indices` split at `offsets`,
    /// with optional per-sample weights (`EmbeddingBag(input, offsets, …)`).
    fn bags(
        &mut self,
        indices: &[i64],
        offsets: &[i64],
        per_sample_weights: Option<&[f32]>,
    ) -> Result<Tensor> {
        let _ = (indices, offsets, per_sample_weights);
        Err(NnError::module(
            "",
            format!("{} is not an embedding bag", self.type_name()),
        ))
    }

    /// `FloatFunctional.add_scalar` / `mul_scalar` (and the quantized forms).
    fn scalar(&mut self, op: ScalarOp, x: Value, c: f64) -> Result<Value> {
        let _ = (op, x, c);
        Err(bad(
            "FloatFunctional",
            format!("{} is not a FloatFunctional", self.type_name()),
        ))
    }

    /// `FloatFunctional.matmul` (and the quantized form).
    fn matmul(&mut self, a: Value, b: Value) -> Result<Value> {
        let _ = (a, b);
        Err(bad(
            "FloatFunctional",
            format!("{} is not a FloatFunctional", self.type_name()),
        ))
    }
}

/// The scalar ops of `FloatFunctional` / `QFunctional`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarOp {
    Add,
    Mul,
}

/// Cloning and downcasting for every [`Layer`]; implemented for each
/// `Layer + Clone` type, never by hand.
pub trait LayerBase: Any {
    fn box_clone(&self) -> Box<dyn Layer>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<T: Layer + Clone> LayerBase for T {
    fn box_clone(&self) -> Box<dyn Layer> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// A node of the module tree: one boxed [`Layer`].
pub struct Module(Box<dyn Layer>);

impl Clone for Module {
    fn clone(&self) -> Self {
        Module(self.0.box_clone())
    }
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Layer + Clone> From<T> for Module {
    fn from(l: T) -> Self {
        Module(Box::new(l))
    }
}

impl Module {
    pub fn new(l: impl Layer + Clone) -> Self {
        Module(Box::new(l))
    }
    pub fn from_box(l: Box<dyn Layer>) -> Self {
        Module(l)
    }
    pub fn into_box(self) -> Box<dyn Layer> {
        self.0
    }
    pub fn layer(&self) -> &dyn Layer {
        &*self.0
    }
    pub fn layer_mut(&mut self) -> &mut dyn Layer {
        &mut *self.0
    }

    /// Whether the layer is a `T`.
    pub fn is<T: Layer>(&self) -> bool {
        self.0.as_any().is::<T>()
    }
    pub fn downcast_ref<T: Layer>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }
    pub fn downcast_mut<T: Layer>(&mut self) -> Option<&mut T> {
        self.0.as_any_mut().downcast_mut()
    }
    /// The layer as a `T`, or the module back if it is another type.
    pub fn into_inner<T: Layer>(self) -> std::result::Result<T, Module> {
        if self.is::<T>() {
            Ok(*self.0.into_any().downcast().expect("checked"))
        } else {
            Err(self)
        }
    }
    /// [`into_inner`](Module::into_inner) with an error naming both types.
    pub fn expect_type<T: Layer>(self, what: &str) -> Result<T> {
        self.into_inner::<T>().map_err(|m| {
            NnError::module(
                "",
                format!("{what}: expected {}, got {}", short::<T>(), m.type_name()),
            )
        })
    }

    /// The PyTorch-style class name (fused, QAT and quantized forms included).
    pub fn type_name(&self) -> String {
        self.0.type_name()
    }
    /// Forward one value through the module.
    pub fn forward(&mut self, x: Value) -> Result<Value> {
        self.0.forward(x)
    }
    /// Backward of the last training-mode forward.
    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        self.0.backward(g)
    }
    /// Named direct children.
    pub fn children(&self) -> Vec<(&str, &Module)> {
        self.0.children()
    }
    pub fn children_mut(&mut self) -> Vec<(&str, &mut Module)> {
        self.0.children_mut()
    }
    /// The engine the module runs on, if it holds one.
    pub fn engine(&self) -> Option<&Engine> {
        self.0.engine()
    }

    /// The submodule at a dotted path ("" is the module itself).
    pub fn get(&self, path: &str) -> Option<&Module> {
        if path.is_empty() {
            return Some(self);
        }
        let (head, rest) = path.split_once('.').unwrap_or((path, ""));
        let child = self
            .children()
            .into_iter()
            .find(|(n, _)| *n == head)
            .map(|(_, m)| m)?;
        child.get(rest)
    }
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Module> {
        if path.is_empty() {
            return Some(self);
        }
        let (head, rest) = path.split_once('.').unwrap_or((path, ""));
        let child = self
            .children_mut()
            .into_iter()
            .find(|(n, _)| *n == head)
            .map(|(_, m)| m)?;
        child.get_mut(rest)
    }
    /// [`get_mut`](Module::get_mut) with an error naming the path.
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
            m.0.set_training(on);
            Ok(())
        });
    }

    /// Visit every trainable parameter with its state_dict name, in tree
    /// order (children before their parent, as [`visit_mut`](Module::visit_mut)).
    pub fn for_each_param_mut(
        &mut self,
        f: &mut dyn FnMut(&str, &mut Param) -> Result<()>,
    ) -> Result<()> {
        self.visit_mut("", &mut |path, m| {
            for (n, p) in m.0.params_mut() {
                f(&join(path, &n), p)?;
            }
            Ok(())
        })
    }

    /// Visit every float buffer (batch-norm running statistics) with its
    /// state_dict name, after the parameters' order.
    pub fn for_each_buffer_mut(
        &mut self,
        f: &mut dyn FnMut(&str, &mut Tensor) -> Result<()>,
    ) -> Result<()> {
        self.visit_mut("", &mut |path, m| {
            for (n, t) in m.0.buffers_mut() {
                f(&join(path, &n), t)?;
            }
            Ok(())
        })
    }

    /// Clear every parameter gradient.
    pub fn zero_grad(&mut self) {
        let _ = self.for_each_param_mut(&mut |_, p| {
            p.grad = None;
            Ok(())
        });
    }

    /// The float state_dict: parameters and batch-norm buffers, PyTorch names.
    pub fn state_dict(&mut self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let _ = self.for_each_param_mut(&mut |n, p| {
            out.push((n.to_string(), p.value.clone()));
            Ok(())
        });
        let _ = self.for_each_buffer_mut(&mut |n, t| {
            out.push((n.to_string(), t.clone()));
            Ok(())
        });
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
        let mut find = |name: &str, want: &[usize]| -> Result<Tensor> {
            let i = sd
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| NnError::file(file, name, "missing from the state_dict"))?;
            used[i] = true;
            let got = &sd[i].1;
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
            Ok(got.clone())
        };
        self.for_each_param_mut(&mut |name, p| {
            p.value = find(name, p.value.shape())?;
            Ok(())
        })?;
        self.for_each_buffer_mut(&mut |name, b| {
            *b = find(name, b.shape())?;
            Ok(())
        })?;
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
        self.0.binary(BinaryOp::Add, a, b)
    }
    pub fn add_relu(&mut self, a: Value, b: Value) -> Result<Value> {
        self.0.binary(BinaryOp::AddRelu, a, b)
    }
    pub fn mul(&mut self, a: Value, b: Value) -> Result<Value> {
        self.0.binary(BinaryOp::Mul, a, b)
    }
    /// `FloatFunctional.cat` / `QFunctional.cat` along `dim`.
    pub fn cat(&mut self, xs: Vec<Value>, dim: usize) -> Result<Value> {
        self.0.cat(xs, dim)
    }
    /// `FloatFunctional.add_scalar` / `QFunctional.add_scalar` (not observed:
    /// the quantized op moves the qparams).
    pub fn add_scalar(&mut self, x: Value, c: f64) -> Result<Value> {
        self.0.scalar(ScalarOp::Add, x, c)
    }
    /// `FloatFunctional.mul_scalar` / `QFunctional.mul_scalar` (not observed).
    pub fn mul_scalar(&mut self, x: Value, c: f64) -> Result<Value> {
        self.0.scalar(ScalarOp::Mul, x, c)
    }
    /// `FloatFunctional.matmul` / `QFunctional.matmul`.
    pub fn matmul(&mut self, a: Value, b: Value) -> Result<Value> {
        self.0.matmul(a, b)
    }
    /// Backward through a FloatFunctional's output fake quant (QAT); the
    /// caller routes the result to the op's inputs.
    pub fn functional_backward(&mut self, g: Tensor) -> Result<Tensor> {
        self.0.functional_backward(g)
    }
}

fn short<T>() -> &'static str {
    let n = std::any::type_name::<T>();
    n.rsplit("::").next().unwrap_or(n)
}

// ---------------------------------------------------------------- containers

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
    /// Append a named child.
    pub fn push(mut self, name: &str, m: impl Into<Module>) -> Self {
        self.children.push((name.to_string(), m.into()));
        self
    }
}

impl Layer for Sequential {
    fn type_name(&self) -> String {
        "Sequential".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let mut x = x;
        for (name, m) in &mut self.children {
            x = m.forward(x).map_err(|e| e.within(name))?;
        }
        Ok(x)
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let mut g = g;
        for (name, m) in self.children.iter_mut().rev() {
            g = m.backward(g).map_err(|e| e.within(name))?;
        }
        Ok(g)
    }
    fn children(&self) -> Vec<(&str, &Module)> {
        self.children.iter().map(|(n, m)| (n.as_str(), m)).collect()
    }
    fn children_mut(&mut self) -> Vec<(&str, &mut Module)> {
        self.children
            .iter_mut()
            .map(|(n, m)| (n.as_str(), m))
            .collect()
    }
    fn save(&self, _: &mut Saver) -> Result<J> {
        Ok(J::Object(Default::default()))
    }
}
