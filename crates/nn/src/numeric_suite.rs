//! Numeric suite (`torch.ao.ns._numeric_suite`): compare a float model with
//! its quantized version.
//!
//! * [`compare_weights`]: the float and (dequantized) quantized weight of
//!   every quantized module, by state_dict name (dynamic LSTM / GRU weights
//!   per layer and direction, embedding tables, conv and linear weights).
//! * [`prepare_model_outputs`] / [`compare_model_outputs`] /
//!   [`get_matching_activations`]: [`OutputLogger`]s attached to matching
//!   modules of both models (at any depth, inside your own [`crate::Block`]s
//!   too), their recorded outputs paired by name.
//! * [`prepare_model_with_stubs`] / [`compare_model_stub`]: [`Shadow`]
//!   modules that run the float module beside each quantized one on the
//!   same (dequantized) input and log both outputs.
//! * [`get_logger_dict`]: every logger's recordings; [`sqnr`] (`compute_SQNR`).
//!
//! The `*_sqnr` forms give one SQNR row per pair, for reports.

use std::collections::BTreeMap;

use rquant_core::Tensor;

use crate::channels_last::FlattenChannelsLast;
use crate::error::Result;
use crate::format::join;
use crate::module::{Layer, Module, Sequential};
use crate::value::Value;

/// `compute_SQNR`: `20 · log10(‖x‖ / ‖x − y‖)` in dB (∞ when equal).
pub fn sqnr(x: &[f32], y: &[f32]) -> f64 {
    let ps: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let pn: f64 = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    if pn == 0.0 {
        f64::INFINITY
    } else {
        20.0 * (ps / pn).log10()
    }
}

/// One weight of [`compare_weights`]: `{"float": …, "quantized": …}`.
#[derive(Debug, Clone)]
pub struct WeightPair {
    /// The state_dict name (`fc1.weight`, `lstm.weight_ih_l0_reverse`).
    pub name: String,
    pub float: Tensor,
    pub quantized: Tensor,
}

/// `compare_weights(float_dict, quantized_dict)`: for every quantized
/// module (one that runs on an engine) whose path exists in `float` and
/// names the same weights, the float weight and the quantized one
/// dequantized. Use the fused float model for fused layers.
pub fn compare_weights(float: &Module, quant: &Module) -> Vec<WeightPair> {
    let hwc = hwc_paths(quant);
    let mut out = Vec::new();
    for (path, qm) in quant.named_modules() {
        if qm.engine().is_none() {
            continue;
        }
        let Some(fm) = float.get(&path) else {
            continue;
        };
        if fm.engine().is_some() {
            continue;
        }
        let fw: BTreeMap<String, Tensor> = fm.layer().named_weights().into_iter().collect();
        for (n, mut qw) in qm.layer().named_weights() {
            if let (Some(&chw), "weight") = (hwc.get(&path), n.as_str()) {
                qw = hwc_to_chw(&qw, chw);
            }
            if let Some(f) = fw.get(&n) {
                if f.shape() == qw.shape() {
                    out.push(WeightPair {
                        name: join(&path, &n),
                        float: f.clone(),
                        quantized: qw,
                    });
                }
            }
        }
    }
    out
}

/// Where a converted channels-last model holds features in (H, W, C) order
/// while the float model (and PyTorch) has (C, H, W): the output of each
/// [`FlattenChannelsLast`] and the weight columns of the Linear after it
/// (permuted at convert time). Path -> (C, H, W).
fn hwc_paths(quant: &Module) -> BTreeMap<String, [usize; 3]> {
    fn flatten_cl(m: &Module) -> Option<&FlattenChannelsLast> {
        m.downcast_ref::<FlattenChannelsLast>().or_else(|| {
            m.downcast_ref::<OutputLogger>()
                .and_then(|l| l.module.downcast_ref::<FlattenChannelsLast>())
        })
    }
    let mut out = BTreeMap::new();
    for (path, m) in quant.named_modules() {
        let Some(s) = m.downcast_ref::<Sequential>() else {
            continue;
        };
        for (i, (name, child)) in s.children.iter().enumerate() {
            let Some(f) = flatten_cl(child) else {
                continue;
            };
            let chw = [f.c, f.h, f.w];
            out.insert(join(&path, name), chw);
            // The Linear: the next child's first leaf.
            if let Some((next, mut leaf)) = s.children.get(i + 1).map(|(n, c)| (join(&path, n), c))
            {
                let mut p = next;
                while let Some((n, c)) = leaf.children().first().copied() {
                    p = join(&p, n);
                    leaf = c;
                }
                out.insert(p, chw);
            }
        }
    }
    out
}

/// `[rows, H·W·C]` in (H, W, C) order -> (C, H, W) order.
fn hwc_to_chw(t: &Tensor, [c, h, w]: [usize; 3]) -> Tensor {
    let k = c * h * w;
    if t.shape().len() != 2 || t.shape()[1] != k {
        return t.clone();
    }
    let mut d = vec![0f32; t.data().len()];
    for (dst, src) in d.chunks_exact_mut(k).zip(t.data().chunks_exact(k)) {
        for ch in 0..c {
            for p in 0..h * w {
                dst[ch * h * w + p] = src[p * c + ch];
            }
        }
    }
    Tensor::new(t.shape().to_vec(), d).expect("same shape")
}

/// One row of an SQNR report.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub name: String,
    pub float_type: String,
    pub quant_type: String,
    pub shape: Vec<usize>,
    pub sqnr_db: f64,
}

/// [`compare_weights`] as SQNR rows.
pub fn compare_weights_sqnr(float: &Module, quant: &Module) -> Vec<Comparison> {
    compare_weights(float, quant)
        .into_iter()
        .map(|p| {
            let module = p.name.rsplit_once('.').map_or("", |(m, _)| m);
            Comparison {
                float_type: float.get(module).map(|m| m.type_name()).unwrap_or_default(),
                quant_type: quant.get(module).map(|m| m.type_name()).unwrap_or_default(),
                shape: p.float.shape().to_vec(),
                sqnr_db: sqnr(p.float.data(), p.quantized.data()),
                name: p.name,
            }
        })
        .collect()
}

// ---------------------------------------------------------------- loggers

/// `OutputLogger`: wraps a module and records every output it produces
/// (quantized outputs dequantized), `stats["tensor_val"]`. It reports the
/// wrapped module's type name and passes values through unchanged.
#[derive(Debug, Clone)]
pub struct OutputLogger {
    pub module: Module,
    pub tensor_val: Vec<Tensor>,
}

impl Layer for OutputLogger {
    fn type_name(&self) -> String {
        self.module.type_name()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let y = self.module.forward(x)?;
        self.tensor_val.push(y.to_float());
        Ok(y)
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        self.module.backward(g)
    }
    fn children(&self) -> Vec<(&str, &Module)> {
        self.module.children()
    }
    fn children_mut(&mut self) -> Vec<(&str, &mut Module)> {
        self.module.children_mut()
    }
    fn set_training(&mut self, on: bool) {
        self.module.train(on);
    }
    fn engine(&self) -> Option<&rquant_core::Engine> {
        self.module.engine()
    }
    fn weight(&self) -> Option<Tensor> {
        self.module.layer().weight()
    }
    fn named_weights(&self) -> Vec<(String, Tensor)> {
        self.module.layer().named_weights()
    }
}

/// `Shadow(q_module, float_module, logger)`: runs the quantized module and,
/// on the same input dequantized, the float one; logs both outputs
/// (`ShadowLogger`: `stats["float"]`, `stats["quantized"]`) and returns the
/// quantized output.
#[derive(Debug, Clone)]
pub struct Shadow {
    pub orig_module: Module,
    pub shadow_module: Module,
    pub float: Vec<Tensor>,
    pub quantized: Vec<Tensor>,
}

impl Layer for Shadow {
    fn type_name(&self) -> String {
        "Shadow".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let fx = Value::F(x.to_float());
        let y = self.orig_module.forward(x)?;
        let fy = self.shadow_module.forward(fx)?;
        self.float.push(fy.to_float());
        self.quantized.push(y.to_float());
        Ok(y)
    }
    fn engine(&self) -> Option<&rquant_core::Engine> {
        self.orig_module.engine()
    }
}

/// Leaf modules (paths) of `quant` worth logging: not Identity / QuantStub
/// / DeQuantStub, present in `float`, of a type in `allow_list` when given.
fn matching_leaves(float: &Module, quant: &Module, allow_list: Option<&[&str]>) -> Vec<String> {
    let skip = ["Identity", "QuantStub", "DeQuantStub"];
    quant
        .named_modules()
        .into_iter()
        .filter(|(p, m)| {
            !p.is_empty()
                && m.children().is_empty()
                && !skip.contains(&m.type_name().as_str())
                && float.get(p).is_some()
                && allow_list.is_none_or(|l| {
                    l.contains(&m.type_name().as_str())
                        || float
                            .get(p)
                            .is_some_and(|f| l.contains(&f.type_name().as_str()))
                })
        })
        .map(|(p, _)| p)
        .collect()
}

fn wrap_logger(model: &mut Module, path: &str) -> Result<()> {
    let slot = model.at_mut(path)?;
    let inner = std::mem::replace(slot, Module::identity());
    *slot = OutputLogger {
        module: inner,
        tensor_val: Vec::new(),
    }
    .into();
    Ok(())
}

/// `prepare_model_outputs(float_module, q_module, OutputLogger, allow_list)`:
/// wraps the matching leaf modules of both models in [`OutputLogger`]s.
pub fn prepare_model_outputs(
    float: &mut Module,
    quant: &mut Module,
    allow_list: Option<&[&str]>,
) -> Result<()> {
    for p in matching_leaves(float, quant, allow_list) {
        wrap_logger(float, &p)?;
        wrap_logger(quant, &p)?;
    }
    Ok(())
}

/// `get_logger_dict(mod)`: every logger's recordings by path — an
/// [`OutputLogger`]'s outputs under `{path}`, a [`Shadow`]'s under
/// `{path}.float` and `{path}.quantized`.
pub fn get_logger_dict(model: &Module) -> BTreeMap<String, Vec<Tensor>> {
    let mut out = BTreeMap::new();
    for (p, m) in model.named_modules() {
        if let Some(l) = m.downcast_ref::<OutputLogger>() {
            out.insert(p, l.tensor_val.clone());
        } else if let Some(s) = m.downcast_ref::<Shadow>() {
            out.insert(join(&p, "float"), s.float.clone());
            out.insert(join(&p, "quantized"), s.quantized.clone());
        }
    }
    out
}

/// One logged module of [`get_matching_activations`] / [`compare_model_outputs`].
#[derive(Debug, Clone)]
pub struct ActivationPair {
    pub name: String,
    pub float: Vec<Tensor>,
    pub quantized: Vec<Tensor>,
}

/// `get_matching_activations(float_module, q_module)`: the recordings of
/// loggers at the same path in both models.
pub fn get_matching_activations(float: &Module, quant: &Module) -> Vec<ActivationPair> {
    let fd = get_logger_dict(float);
    let hwc = hwc_paths(quant);
    get_logger_dict(quant)
        .into_iter()
        .filter_map(|(name, mut q)| {
            if let Some(&chw) = hwc.get(&name) {
                q = q.iter().map(|t| hwc_to_chw(t, chw)).collect();
            }
            fd.get(&name).map(|f| ActivationPair {
                name,
                float: f.clone(),
                quantized: q,
            })
        })
        .collect()
}

/// `compare_model_outputs(float_model, q_model, data)`: attach loggers
/// (working on clones, the models are left as they were), run `x` through
/// both, and pair every logged output by name.
pub fn compare_model_outputs(
    float: &Module,
    quant: &Module,
    x: &Tensor,
    allow_list: Option<&[&str]>,
) -> Result<Vec<ActivationPair>> {
    let (mut f, mut q) = (float.clone(), quant.clone());
    prepare_model_outputs(&mut f, &mut q, allow_list)?;
    f.forward(Value::F(x.clone()))?;
    q.forward(Value::F(x.clone()))?;
    Ok(get_matching_activations(&f, &q))
}

/// [`compare_model_outputs`] as SQNR rows (of the last output of each module).
pub fn compare_model_outputs_sqnr(
    float: &Module,
    quant: &Module,
    x: &Tensor,
) -> Result<Vec<Comparison>> {
    let pairs = compare_model_outputs(float, quant, x, None)?;
    Ok(pairs
        .into_iter()
        .filter_map(|p| {
            let (f, q) = (p.float.last()?, p.quantized.last()?);
            (f.shape() == q.shape()).then(|| Comparison {
                float_type: float
                    .get(&p.name)
                    .map(|m| m.type_name())
                    .unwrap_or_default(),
                quant_type: quant
                    .get(&p.name)
                    .map(|m| m.type_name())
                    .unwrap_or_default(),
                shape: f.shape().to_vec(),
                sqnr_db: sqnr(f.data(), q.data()),
                name: p.name,
            })
        })
        .collect())
}

/// `prepare_model_with_stubs(float_module, q_module, module_swap_list,
/// ShadowLogger)`: every module of `quant` whose type is in `swap_types`
/// (quantized type names, e.g. `QuantizedLinear`) and whose path exists in
/// `float` becomes a [`Shadow`] of itself and the float module.
pub fn prepare_model_with_stubs(
    float: &Module,
    quant: &mut Module,
    swap_types: &[&str],
) -> Result<()> {
    let paths: Vec<String> = quant
        .named_modules()
        .into_iter()
        .filter(|(p, m)| {
            !p.is_empty() && swap_types.contains(&m.type_name().as_str()) && float.get(p).is_some()
        })
        .map(|(p, _)| p)
        .collect();
    for p in paths {
        let f = float.get(&p).expect("checked").clone();
        let slot = quant.at_mut(&p)?;
        let q = std::mem::replace(slot, Module::identity());
        *slot = Shadow {
            orig_module: q,
            shadow_module: f,
            float: Vec::new(),
            quantized: Vec::new(),
        }
        .into();
    }
    Ok(())
}

/// One shadowed module of [`compare_model_stub`].
#[derive(Debug, Clone)]
pub struct ShadowPair {
    pub name: String,
    pub float: Vec<Tensor>,
    pub quantized: Vec<Tensor>,
}

/// `compare_model_stub(float_model, q_model, module_swap_list, data)`:
/// shadow the listed modules (on a clone of `quant`), run `x`, and return
/// each shadow's float and quantized outputs.
pub fn compare_model_stub(
    float: &Module,
    quant: &Module,
    swap_types: &[&str],
    x: &Tensor,
) -> Result<Vec<ShadowPair>> {
    let mut q = quant.clone();
    prepare_model_with_stubs(float, &mut q, swap_types)?;
    q.forward(Value::F(x.clone()))?;
    Ok(q.named_modules()
        .into_iter()
        .filter_map(|(p, m)| {
            m.downcast_ref::<Shadow>().map(|s| ShadowPair {
                name: p,
                float: s.float.clone(),
                quantized: s.quantized.clone(),
            })
        })
        .collect())
}

/// The comparison as a printable table.
pub fn table(title: &str, rows: &[Comparison]) -> String {
    let mut s = format!(
        "{title}\n{:<22} {:<18} {:<26} {:>18} {:>10}\n",
        "name", "float", "quantized", "shape", "SQNR (dB)"
    );
    for r in rows {
        s += &format!(
            "{:<22} {:<18} {:<26} {:>18} {:>10.2}\n",
            r.name,
            r.float_type,
            r.quant_type,
            format!("{:?}", r.shape),
            r.sqnr_db
        );
    }
    s
}
