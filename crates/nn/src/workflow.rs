//! The rest of the eager workflow API: `QuantWrapper`, `add_quant_dequant`,
//! `quantize_qat`, `swap_module`, and `quantize_dynamic` with a per-type /
//! per-name `qconfig_spec` (PyTorch's `propagate_qconfig_` semantics: a
//! name beats a type, children inherit their parent's qconfig).

use std::collections::HashMap;

use rquant_core::observer::ObserverDType;
use rquant_core::qconfig::{
    default_dynamic_qconfig, float16_dynamic_qconfig, float_qparams_weight_only_qconfig,
    float_qparams_weight_only_qconfig_4bit, QConfig,
};
use rquant_core::{Engine, Tensor};
use serde_json::{json, Value as J};

use crate::error::{NnError, Result};
use crate::format::{join, Saver};
use crate::mapping::{DynamicConfig, DynamicDType, Mappings};
use crate::module::{Layer, Module};
use crate::post::Observation;
use crate::quantize::{convert_mapped, prepare_qat_mapped, QConfigMap};
use crate::registry::ModuleRegistry;
use crate::value::Value;

/// `QuantWrapper(module)`: `dequant(module(quant(x)))`, children `quant`,
/// `dequant` and `module` (PyTorch's order and names).
#[derive(Debug, Clone)]
pub struct QuantWrapper {
    pub children: Vec<(String, Module)>,
}

impl QuantWrapper {
    pub fn new(module: impl Into<Module>) -> Self {
        QuantWrapper {
            children: vec![
                ("quant".into(), Module::quant_stub()),
                ("dequant".into(), Module::dequant_stub()),
                ("module".into(), module.into()),
            ],
        }
    }
    fn child(&mut self, name: &str) -> &mut Module {
        &mut self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("QuantWrapper has quant, dequant and module")
            .1
    }
}

impl Layer for QuantWrapper {
    fn type_name(&self) -> String {
        "QuantWrapper".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let x = self
            .child("quant")
            .forward(x)
            .map_err(|e| e.within("quant"))?;
        let x = self
            .child("module")
            .forward(x)
            .map_err(|e| e.within("module"))?;
        self.child("dequant")
            .forward(x)
            .map_err(|e| e.within("dequant"))
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let g = self
            .child("dequant")
            .backward(g)
            .map_err(|e| e.within("dequant"))?;
        let g = self
            .child("module")
            .backward(g)
            .map_err(|e| e.within("module"))?;
        self.child("quant")
            .backward(g)
            .map_err(|e| e.within("quant"))
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
        Ok(json!({}))
    }
}

impl Module {
    /// `QuantWrapper(module)`.
    pub fn quant_wrapper(module: impl Into<Module>) -> Self {
        Module::new(QuantWrapper::new(module))
    }
}

pub(crate) fn register_loaders(r: &mut ModuleRegistry) {
    r.register("QuantWrapper", |n| {
        let mut w = QuantWrapper {
            children: Vec::new(),
        };
        for name in ["quant", "dequant", "module"] {
            let c = n.take_child(name)?;
            w.children.push((name.to_string(), c));
        }
        Ok(w.into())
    });
}

/// `add_quant_dequant(model)`: every leaf module with a qconfig (resolved
/// from `qconfig`) is wrapped in a [`QuantWrapper`]; a leaf root is
/// returned wrapped itself.
pub fn add_quant_dequant(model: Module, qconfig: &QConfigMap) -> Result<Module> {
    let resolved = qconfig.resolve(&model)?;
    fn rec(m: Module, path: &str, resolved: &HashMap<String, Option<QConfig>>) -> Result<Module> {
        let leaf = m.children().is_empty();
        if leaf {
            let has = matches!(resolved.get(path), Some(Some(_)));
            return Ok(if has { Module::quant_wrapper(m) } else { m });
        }
        let mut m = m;
        let names: Vec<String> = m.children().iter().map(|(n, _)| n.to_string()).collect();
        for n in names {
            let p = join(path, &n);
            let slot = m.at_mut(&n)?;
            let child = std::mem::replace(slot, Module::identity());
            *slot = rec(child, &p, resolved)?;
        }
        Ok(m)
    }
    rec(model, "", &resolved)
}

/// `quantize_qat(model, run_fn)`: training mode, [`crate::prepare_qat`],
/// `run` (the training loop), then convert on `engine`.
pub fn quantize_qat(
    model: &mut Module,
    qconfig: &QConfigMap,
    engine: &Engine,
    run: &mut dyn FnMut(&mut Module) -> Result<()>,
) -> Result<()> {
    quantize_qat_mapped(model, qconfig, engine, &Mappings::default(), run)
}

/// [`quantize_qat`] with your tables.
pub fn quantize_qat_mapped(
    model: &mut Module,
    qconfig: &QConfigMap,
    engine: &Engine,
    mappings: &Mappings,
    run: &mut dyn FnMut(&mut Module) -> Result<()>,
) -> Result<()> {
    model.train(true);
    prepare_qat_mapped(model, qconfig, mappings)?;
    run(model)?;
    model.train(false);
    convert_mapped(model, engine, mappings)
}

/// `swap_module(mod, mapping)`: the quantized form of one observed module
/// (an [`crate::observed::Observed`], or a module keeping its own
/// observation such as FloatFunctional), or the module unchanged when its
/// type has no static mapping or it was not observed.
pub fn swap_module(m: Module, mappings: &Mappings, engine: &Engine) -> Result<Module> {
    let (module, obs): (Module, Option<Observation>) = if m.is::<crate::observed::Observed>() {
        let o: crate::observed::Observed = m.expect_type("swap_module")?;
        let (module, obs) = o.into_parts();
        (module, Some(obs))
    } else {
        let mut m = m;
        let obs = m.layer_mut().take_observation();
        (m, obs)
    };
    let ty = module.type_name();
    match mappings.static_quant.get(&ty) {
        Some(rule) if obs.is_some() || !rule.observe => (rule.convert)(module, obs, engine),
        _ => Ok(module),
    }
}

// ---------------------------------------------------------------- dynamic

/// `quantize_dynamic`'s `qconfig_spec`: qconfigs by module type and by
/// dotted name.
#[derive(Debug, Clone, Default)]
pub struct DynamicSpec {
    pub by_type: Vec<(String, QConfig)>,
    pub by_name: Vec<(String, QConfig)>,
}

impl DynamicSpec {
    /// `{type: qconfig, …}` for every type given.
    pub fn types(types: &[&str], q: QConfig) -> Self {
        DynamicSpec {
            by_type: types.iter().map(|t| (t.to_string(), q.clone())).collect(),
            by_name: Vec::new(),
        }
    }
    /// Add `{type: qconfig}`.
    pub fn with_type(mut self, type_name: &str, q: QConfig) -> Self {
        self.by_type.push((type_name.to_string(), q));
        self
    }
    /// Add `{name: qconfig}` (applies to the module and its children).
    pub fn with_name(mut self, path: &str, q: QConfig) -> Self {
        self.by_name.push((path.to_string(), q));
        self
    }
    /// PyTorch's default `qconfig_spec` for `dtype` when none is given:
    /// qint8 and float16 — Linear, LSTM, GRU, LSTMCell, RNNCell, GRUCell
    /// with `default_dynamic_qconfig` / `float16_dynamic_qconfig`; quint8 —
    /// Embedding and EmbeddingBag with `float_qparams_weight_only_qconfig`;
    /// quint4x2 — EmbeddingBag with the 4-bit form.
    pub fn default_for(dtype: DynamicSpecDType) -> Self {
        let rnn = ["Linear", "LSTM", "GRU", "LSTMCell", "RNNCell", "GRUCell"];
        match dtype {
            DynamicSpecDType::QInt8 => Self::types(&rnn, default_dynamic_qconfig()),
            DynamicSpecDType::Float16 => Self::types(&rnn, float16_dynamic_qconfig()),
            DynamicSpecDType::QUInt8 => Self::types(
                &["Embedding", "EmbeddingBag"],
                float_qparams_weight_only_qconfig(),
            ),
            DynamicSpecDType::QUInt4x2 => {
                Self::types(&["EmbeddingBag"], float_qparams_weight_only_qconfig_4bit())
            }
        }
    }
    /// `qconfig_spec` given as a set of types / names with `dtype`: each
    /// gets `dtype`'s default qconfig. Entries naming a type of the dynamic
    /// mapping are types; others are module names.
    pub fn set(entries: &[&str], dtype: DynamicSpecDType, mappings: &Mappings) -> Self {
        let q = match dtype {
            DynamicSpecDType::QInt8 => default_dynamic_qconfig(),
            DynamicSpecDType::Float16 => float16_dynamic_qconfig(),
            DynamicSpecDType::QUInt8 => float_qparams_weight_only_qconfig(),
            DynamicSpecDType::QUInt4x2 => float_qparams_weight_only_qconfig_4bit(),
        };
        let mut s = DynamicSpec::default();
        for e in entries {
            if mappings.dynamic.contains_key(*e) {
                s.by_type.push((e.to_string(), q.clone()));
            } else {
                s.by_name.push((e.to_string(), q.clone()));
            }
        }
        s
    }
}

/// The `dtype` argument of `quantize_dynamic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynamicSpecDType {
    QInt8,
    Float16,
    /// `torch.quint8`: weight-only 8-bit embeddings.
    QUInt8,
    /// `torch.quint4x2`: weight-only 4-bit embedding bags.
    QUInt4x2,
}

/// The weight dtype a dynamic qconfig asks for: float16 placeholders mean
/// fp16 weights, anything else int8 (embeddings read their qconfig).
pub fn dynamic_dtype_of(q: &QConfig) -> DynamicDType {
    match q.weight.observer_spec().placeholder_dtype {
        Some(ObserverDType::Float16) => DynamicDType::Float16,
        _ => DynamicDType::QInt8,
    }
}

/// `quantize_dynamic(model, qconfig_spec, mapping=…)`: each module gets the
/// qconfig of its type, else its parent's; a name entry overrides both for
/// the module and its children; modules whose type the dynamic mapping
/// knows and that have a qconfig are swapped (children first), each with
/// the weight dtype its qconfig asks for.
pub fn quantize_dynamic_spec(
    model: &mut Module,
    spec: &DynamicSpec,
    engine: &Engine,
    mappings: &Mappings,
) -> Result<()> {
    // Propagate (before any swap: types are the float ones).
    let mut resolved: HashMap<String, Option<QConfig>> = HashMap::new();
    fn rec(
        m: &Module,
        path: &str,
        parent: Option<&QConfig>,
        spec: &DynamicSpec,
        out: &mut HashMap<String, Option<QConfig>>,
    ) {
        let ty = m.type_name();
        let mut q = spec
            .by_type
            .iter()
            .find(|(t, _)| *t == ty)
            .map(|(_, q)| q)
            .or(parent);
        if let Some((_, nq)) = spec.by_name.iter().find(|(n, _)| n == path) {
            q = Some(nq);
        }
        out.insert(path.to_string(), q.cloned());
        for (n, c) in m.children() {
            rec(c, &join(path, n), q, spec, out);
        }
    }
    rec(model, "", None, spec, &mut resolved);
    for (n, _) in &spec.by_name {
        if !resolved.contains_key(n) {
            return Err(NnError::module(
                n.as_str(),
                "quantize_dynamic: qconfig_spec names no such submodule",
            ));
        }
    }
    model.visit_mut("", &mut |path, m| {
        let Some(Some(q)) = resolved.get(path) else {
            return Ok(());
        };
        let Some(f) = mappings.dynamic.get(&m.type_name()) else {
            return Ok(());
        };
        let cfg = DynamicConfig {
            dtype: dynamic_dtype_of(q),
            qconfig: q.clone(),
            engine: engine.clone(),
        };
        let float = std::mem::replace(m, Module::identity());
        *m = f(float, &cfg).map_err(|e| if path.is_empty() { e } else { e.within(path) })?;
        Ok(())
    })
}
