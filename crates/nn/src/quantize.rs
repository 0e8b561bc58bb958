//! Eager-mode workflows, as `torch.ao.quantization`: `fuse_modules`
//! (eval folding) and `fuse_modules_qat`, `prepare` / calibration /
//! `convert`, `prepare_qat`, `quantize_dynamic`, and engine moves. Which
//! modules are observed and what they become is read from
//! [`Mappings`] (the `*_mapped` forms take your own tables).

use std::collections::BTreeMap;

use rquant_core::qconfig::{FakeQuantize, QConfig};
use rquant_core::{Conv2dParams, Engine, Tensor};

use crate::convs::ConvNd;
use crate::error::{NnError, Result};
pub use crate::layers::{cat_float, fuse_conv_bn_weights, fuse_linear_bn_weights};
use crate::layers::{ActKind, Activation, BatchNorm2d, Conv2d, Linear};
pub use crate::mapping::{DynamicConfig, DynamicDType, Mappings};
use crate::module::Module;
use crate::observed::Observed;
pub use crate::post::{ActPost, Observation};

// ---------------------------------------------------------------- qconfig mapping

/// A qconfig mapping: a global qconfig and overrides by module type, by
/// dotted name (a name applies to the module and everything under it), by
/// regex over names, and by (parent name, type, index among the parent's
/// children of that type) — PyTorch's `QConfigMapping` (`set_global`,
/// `set_object_type`, `set_module_name`, `set_module_name_regex`,
/// `set_module_name_object_type_order`), resolved with its precedence:
/// global < object type < name regex (the first matching pattern) < module
/// name (the nearest named ancestor) < name-type-order. `None` keeps a
/// module float. `QConfigMap::global(q).set_module(…)` is the old
/// `qconfig_dict` form (names only).
#[derive(Debug, Clone, Default)]
pub struct QConfigMap {
    pub global: Option<QConfig>,
    pub by_name: Vec<(String, Option<QConfig>)>,
    pub by_type: Vec<(String, Option<QConfig>)>,
    pub by_regex: Vec<(String, Option<QConfig>)>,
    pub by_name_type_order: Vec<(String, String, usize, Option<QConfig>)>,
}

/// PyTorch's name for the same object.
pub type QConfigMapping = QConfigMap;

fn upsert<K: PartialEq>(v: &mut Vec<(K, Option<QConfig>)>, k: K, q: Option<QConfig>) {
    match v.iter_mut().find(|(n, _)| *n == k) {
        Some(slot) => slot.1 = q,
        None => v.push((k, q)),
    }
}

impl QConfigMap {
    pub fn global(q: QConfig) -> Self {
        QConfigMap {
            global: Some(q),
            ..Default::default()
        }
    }
    /// An empty mapping (`QConfigMapping()`): every module stays float.
    pub fn new() -> Self {
        QConfigMap::default()
    }
    /// `set_global`.
    pub fn set_global(mut self, q: Option<QConfig>) -> Self {
        self.global = q;
        self
    }
    /// `set_module_name(path, q)`.
    pub fn set_module(mut self, path: &str, q: Option<QConfig>) -> Self {
        upsert(&mut self.by_name, path.to_string(), q);
        self
    }
    /// `set_module_name` (PyTorch's name for [`QConfigMap::set_module`]).
    pub fn set_module_name(self, path: &str, q: Option<QConfig>) -> Self {
        self.set_module(path, q)
    }
    /// `set_object_type(type, q)`, `type` a [`crate::module::Layer::type_name`].
    pub fn set_object_type(mut self, type_name: &str, q: Option<QConfig>) -> Self {
        upsert(&mut self.by_type, type_name.to_string(), q);
        self
    }
    /// `set_module_name_regex(pattern, q)`: Python `re.match` semantics (the
    /// pattern anchored at the start of the name); patterns are tried in
    /// the order they were set, the first match wins. A pattern that is not
    /// a valid regex is an error at resolution.
    pub fn set_module_name_regex(mut self, pattern: &str, q: Option<QConfig>) -> Self {
        upsert(&mut self.by_regex, pattern.to_string(), q);
        self
    }
    /// `set_module_name_object_type_order(parent, type, index, q)`: the
    /// `index`-th child (from 0, in order) of type `type` directly under `parent`.
    pub fn set_module_name_object_type_order(
        mut self,
        parent: &str,
        type_name: &str,
        index: usize,
        q: Option<QConfig>,
    ) -> Self {
        match self
            .by_name_type_order
            .iter_mut()
            .find(|(p, t, i, _)| p == parent && t == type_name && *i == index)
        {
            Some(slot) => slot.3 = q,
            None => {
                self.by_name_type_order
                    .push((parent.to_string(), type_name.to_string(), index, q))
            }
        }
        self
    }

    /// The qconfig of the module at `path` by name alone: the nearest named
    /// ancestor (or itself), else global.
    pub fn for_path(&self, path: &str) -> Option<QConfig> {
        self.name_lookup(path)
            .unwrap_or_else(|| self.global.clone())
    }

    fn name_lookup(&self, path: &str) -> Option<Option<QConfig>> {
        let mut best: Option<(usize, &Option<QConfig>)> = None;
        for (n, q) in &self.by_name {
            let hit = n.is_empty() || path == n || path.starts_with(&format!("{n}."));
            if hit && best.is_none_or(|(l, _)| n.len() >= l) {
                best = Some((n.len(), q));
            }
        }
        best.map(|(_, q)| q.clone())
    }

    /// The qconfig of one module with `QConfigMapping`'s precedence.
    /// `order` is (parent path, index among the parent's children of this type).
    pub fn for_module(
        &self,
        path: &str,
        type_name: &str,
        order: Option<(&str, usize)>,
    ) -> Result<Option<QConfig>> {
        if let Some((parent, idx)) = order {
            if let Some((_, _, _, q)) = self
                .by_name_type_order
                .iter()
                .find(|(p, t, i, _)| p == parent && t == type_name && *i == idx)
            {
                return Ok(q.clone());
            }
        }
        if let Some(q) = self.name_lookup(path) {
            return Ok(q);
        }
        for (pat, q) in &self.by_regex {
            let re = regex::Regex::new(&format!("^(?:{pat})")).map_err(|e| {
                NnError::module(path, format!("module name regex {pat:?} is not valid: {e}"))
            })?;
            if re.is_match(path) {
                return Ok(q.clone());
            }
        }
        if let Some((_, q)) = self.by_type.iter().find(|(t, _)| t == type_name) {
            return Ok(q.clone());
        }
        Ok(self.global.clone())
    }

    /// Every module's qconfig (by path), resolved once over the model as it is.
    pub fn resolve(
        &self,
        model: &Module,
    ) -> Result<std::collections::HashMap<String, Option<QConfig>>> {
        let mut out = std::collections::HashMap::new();
        fn rec(
            map: &QConfigMap,
            m: &Module,
            path: &str,
            order: Option<(&str, usize)>,
            out: &mut std::collections::HashMap<String, Option<QConfig>>,
        ) -> Result<()> {
            out.insert(
                path.to_string(),
                map.for_module(path, &m.type_name(), order)?,
            );
            let mut counts: std::collections::HashMap<String, usize> = Default::default();
            for (n, c) in m.children() {
                let t = c.type_name();
                let i = counts.entry(t).or_insert(0);
                let idx = *i;
                *i += 1;
                rec(
                    map,
                    c,
                    &crate::format::join(path, n),
                    Some((path, idx)),
                    out,
                )?;
            }
            Ok(())
        }
        rec(self, model, "", None, &mut out)?;
        Ok(out)
    }
}

/// `get_default_qconfig_mapping(backend)`: the backend's default qconfig
/// globally, and PyTorch's module-type entries: fixed-qparams qconfigs for
/// Sigmoid, Hardsigmoid, Softmax (0to1) and Tanh (neg1to1), per-tensor
/// weights for ConvTranspose1d/2d/3d, a placeholder weight for LayerNorm,
/// and `default_quint8_weight_qconfig` for PReLU. (PyTorch's functional and
/// method keys, e.g. `reshape`, have no eager module.)
pub fn get_default_qconfig_mapping(backend: &str) -> Result<QConfigMap> {
    default_mapping(rquant_core::qconfig::get_default_qconfig(backend)?, false)
}

/// `get_default_qat_qconfig_mapping(backend)`.
pub fn get_default_qat_qconfig_mapping(backend: &str) -> Result<QConfigMap> {
    default_mapping(
        rquant_core::qconfig::get_default_qat_qconfig(backend)?,
        true,
    )
}

fn default_mapping(q: QConfig, qat: bool) -> Result<QConfigMap> {
    use rquant_core::observer::ObserverKind;
    use rquant_core::qconfig::{
        default_placeholder_observer, default_weight_fake_quant, default_weight_observer,
        fixed_qparams_qconfig, ObserverSpec, QSpec,
    };
    let mut m = QConfigMap::global(q.clone());
    // fbgemm has no per-channel transposed convolutions: per-tensor weights.
    let transpose = QConfig {
        activation: q.activation.clone(),
        weight: if qat {
            QSpec::FakeQuant(default_weight_fake_quant())
        } else {
            QSpec::Observer(default_weight_observer())
        },
    };
    for t in ["ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"] {
        m = m.set_object_type(t, Some(transpose.clone()));
    }
    // LayerNorm keeps float weights.
    let layer_norm = QConfig {
        activation: q.activation.clone(),
        weight: QSpec::Observer(default_placeholder_observer()),
    };
    m = m.set_object_type("LayerNorm", Some(layer_norm));
    // PReLU: `default_quint8_weight_qconfig` (HistogramObserver and
    // MinMaxObserver classes with their defaults: quint8 weights).
    let prelu = QConfig {
        activation: QSpec::Observer(ObserverSpec::new(ObserverKind::Histogram)),
        weight: QSpec::Observer(ObserverSpec::new(ObserverKind::MinMax)),
    };
    m = m.set_object_type("PReLU", Some(prelu));
    for (t, neg) in [
        ("Sigmoid", false),
        ("Hardsigmoid", false),
        ("Softmax", false),
        ("Tanh", true),
    ] {
        m = m.set_object_type(t, Some(fixed_qparams_qconfig(neg, qat)));
    }
    Ok(m)
}

// ---------------------------------------------------------------- fusion

fn take(model: &mut Module, path: &str) -> Result<Module> {
    Ok(std::mem::replace(model.at_mut(path)?, Module::identity()))
}

/// `fuse_modules(model, [[conv, bn, relu], …])` for inference: conv+bn,
/// conv+bn+relu, conv+relu, linear+relu, linear+bn, bn+relu, and beyond
/// PyTorch conv(+bn)+ReLU6 and conv(+bn)+Hardtanh (a clamp the converted
/// conv applies to its int8 output). The first module becomes the fused
/// one, the others Identity. Batch norms are folded with PyTorch's exact
/// arithmetic, so the model must be in eval mode.
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
        let mods = g
            .iter()
            .map(|p| take(model, p))
            .collect::<Result<Vec<_>>>()?;
        let fused = fuse_group(mods, qat).map_err(|e| match e {
            NnError::Module { detail, .. } => {
                NnError::module(g.join(" + "), format!("{detail} (got {kinds:?})"))
            }
            e => e.within(g[0]),
        })?;
        *model.at_mut(g[0])? = fused;
    }
    Ok(())
}

fn is_relu(m: &Module) -> bool {
    m.downcast_ref::<Activation>()
        .is_some_and(|a| a.kind == ActKind::ReLU)
}

/// ReLU6 and Hardtanh as the clamp a conv fuses.
fn clamp_of(m: &Module) -> Option<(f32, f32)> {
    if m.downcast_ref::<Activation>()
        .is_some_and(|a| a.kind == ActKind::ReLU6)
    {
        return Some((0.0, 6.0));
    }
    match m.downcast_ref::<crate::acts::Act>()?.f {
        crate::acts::ActFn::Hardtanh { min_val, max_val } => Some((min_val, max_val)),
        _ => None,
    }
}

const PATTERNS: &str = "unsupported fusion pattern: expected conv+bn, conv+bn+relu, conv+relu (Conv1d/2d/3d with BatchNorm1d/2d/3d), conv+bn+relu6, conv+relu6, conv+bn+hardtanh, conv+hardtanh (Conv2d), conv_transpose+bn, linear+relu, linear+bn or bn+relu (BatchNorm2d/3d)";

fn fuse_group(mods: Vec<Module>, qat: bool) -> Result<Module> {
    let mut it = mods.into_iter();
    let first = it
        .next()
        .ok_or_else(|| NnError::module("", "empty fusion group"))?;
    let rest: Vec<Module> = it.collect();
    let bn_of = |m: &Module| m.downcast_ref::<BatchNorm2d>().cloned();
    if first.is::<Conv2d>() {
        let mut c: Conv2d = first.expect_type("fuse")?;
        match rest.as_slice() {
            [b] if c.bn.is_none() && !c.relu && c.clamp.is_none() && bn_of(b).is_some() => {
                fold_or_attach(&mut c, bn_of(b).expect("checked"), qat)?;
            }
            [b, r]
                if c.bn.is_none()
                    && !c.relu
                    && c.clamp.is_none()
                    && bn_of(b).is_some()
                    && is_relu(r) =>
            {
                fold_or_attach(&mut c, bn_of(b).expect("checked"), qat)?;
                c.relu = true;
            }
            [r] if is_relu(r) && !c.relu && c.clamp.is_none() => c.relu = true,
            [b, a]
                if c.bn.is_none()
                    && !c.relu
                    && c.clamp.is_none()
                    && bn_of(b).is_some()
                    && clamp_of(a).is_some() =>
            {
                fold_or_attach(&mut c, bn_of(b).expect("checked"), qat)?;
                c.clamp = clamp_of(a);
            }
            [a] if !c.relu && c.clamp.is_none() && clamp_of(a).is_some() => c.clamp = clamp_of(a),
            _ => return Err(NnError::module("", PATTERNS)),
        }
        return Ok(c.into());
    }
    if first.is::<ConvNd>() {
        let mut c: ConvNd = first.expect_type("fuse")?;
        let dims = c.kind.dims();
        let bn_ok = |b: &BatchNorm2d| match dims {
            1 => b.one_d,
            3 => b.three_d,
            _ => !b.one_d && !b.three_d,
        };
        let free = c.bn.is_none() && !c.relu;
        match rest.as_slice() {
            [b] if free && bn_of(b).is_some_and(|b| bn_ok(&b)) => {
                fold_or_attach_nd(&mut c, bn_of(b).expect("checked"), qat)?;
            }
            [b, r]
                if free
                    && !c.kind.transposed()
                    && bn_of(b).is_some_and(|b| bn_ok(&b))
                    && is_relu(r) =>
            {
                fold_or_attach_nd(&mut c, bn_of(b).expect("checked"), qat)?;
                c.relu = true;
            }
            [r] if is_relu(r) && !c.relu && !c.kind.transposed() => c.relu = true,
            _ => return Err(NnError::module("", PATTERNS)),
        }
        return Ok(c.into());
    }
    if first.is::<Linear>() {
        let mut l: Linear = first.expect_type("fuse")?;
        match rest.as_slice() {
            [r] if is_relu(r) && !l.relu && l.bn.is_none() => {
                l.relu = true;
                return Ok(l.into());
            }
            [b] if !l.relu && l.bn.is_none() && bn_of(b).is_some_and(|b| b.one_d) => {
                let bn = bn_of(b).expect("checked");
                if qat {
                    // nni.LinearBn1d: prepare_qat makes it nniqat.LinearBn1d.
                    l.bn = Some(bn);
                    return Ok(l.into());
                }
                if l.training || bn.training {
                    return Err(NnError::module(
                        "",
                        "fusing linear+bn for inference requires eval mode (call model.train(false))",
                    ));
                }
                let b = l.bias.as_ref().map(|b| b.value.data().to_vec());
                let (w, b) = fuse_linear_bn_weights(&l.weight.value, b.as_deref(), &bn)?;
                let mut nl = Linear::from_weights(w, Some(Tensor::new([b.len()], b)?))?;
                nl.training = l.training;
                return Ok(nl.into());
            }
            _ => return Err(NnError::module("", PATTERNS)),
        }
    }
    if first.is::<BatchNorm2d>() {
        let mut bn: BatchNorm2d = first.expect_type("fuse")?;
        if let [r] = rest.as_slice() {
            if is_relu(r) && !bn.relu && !bn.one_d {
                bn.relu = true;
                return Ok(bn.into());
            }
        }
    }
    Err(NnError::module("", PATTERNS))
}

fn fold_or_attach_nd(c: &mut ConvNd, bn: BatchNorm2d, qat: bool) -> Result<()> {
    if qat {
        if c.kind.transposed() {
            return Err(NnError::module(
                "",
                "fusing ConvTranspose+BatchNorm is not supported in QAT (as PyTorch)",
            ));
        }
        c.bn = Some(bn);
        return Ok(());
    }
    if c.training || bn.training {
        return Err(NnError::module(
            "",
            "fusing conv+bn for inference requires eval mode (call model.train(false))",
        ));
    }
    c.bn = Some(bn);
    let (w, b) = c.folded_weights()?;
    let b = b.expect("a folded batch norm gives a bias");
    c.bn = None;
    c.weight.value = w;
    c.bias = Some(crate::param::Param::new(Tensor::new([b.len()], b)?));
    Ok(())
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
    let (relu, clamp) = (c.relu, c.clamp);
    *c = Conv2d::from_weights(w, Some(Tensor::new([b.len()], b)?), c.params)?;
    c.relu = relu;
    c.clamp = clamp;
    Ok(())
}

// ---------------------------------------------------------------- prepare

/// `prepare`: attach an observer (from each module's qconfig) to the output
/// of every leaf module whose type the default static mapping observes;
/// modules whose qconfig is None stay float.
pub fn prepare(model: &mut Module, qconfig: &QConfigMap) -> Result<()> {
    prepare_mapped(model, qconfig, &Mappings::default())
}

/// [`prepare`] with your own mapping tables.
pub fn prepare_mapped(model: &mut Module, qconfig: &QConfigMap, mappings: &Mappings) -> Result<()> {
    prepare_with(model, qconfig, mappings, &PrepareOptions::default())
}

/// Options of [`prepare_with`]: PyTorch's `prepare(allow_list=…,
/// observer_non_leaf_module_list=…)`.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// Module types to observe (None: the static mapping's observed types).
    pub allow_list: Option<Vec<String>>,
    /// Non-leaf module types to observe as a whole (their children are not observed).
    pub observer_non_leaf: Vec<String>,
}

/// [`prepare`] with your tables and PyTorch's `allow_list` /
/// `observer_non_leaf_module_list`; custom modules
/// ([`Mappings::with_custom_module`]) are swapped for their observed form first.
pub fn prepare_with(
    model: &mut Module,
    qconfig: &QConfigMap,
    mappings: &Mappings,
    opts: &PrepareOptions,
) -> Result<()> {
    let resolved = qconfig.resolve(model)?;
    swap_custom(model, &resolved, mappings)?;
    attach(model, &resolved, mappings, false, opts)
}

fn swap_custom(
    model: &mut Module,
    resolved: &std::collections::HashMap<String, Option<QConfig>>,
    mappings: &Mappings,
) -> Result<()> {
    if mappings.custom.is_empty() {
        return Ok(());
    }
    model.visit_mut("", &mut |path, m| {
        let Some(Some(qc)) = resolved.get(path) else {
            return Ok(());
        };
        if let Some(to_observed) = mappings.custom.get(&m.type_name()) {
            let float = std::mem::replace(m, Module::identity());
            *m = to_observed(float, qc).map_err(|e| within(path, e))?;
        }
        Ok(())
    })
}

/// `prepare_qat`: swap modules for their QAT forms (weight fake quants on
/// Linear / Conv2d, plain, fused and ConvBn) and attach output fake quants;
/// the model should be in training mode.
pub fn prepare_qat(model: &mut Module, qconfig: &QConfigMap) -> Result<()> {
    prepare_qat_mapped(model, qconfig, &Mappings::default())
}

/// [`prepare_qat`] with your own mapping tables.
pub fn prepare_qat_mapped(
    model: &mut Module,
    qconfig: &QConfigMap,
    mappings: &Mappings,
) -> Result<()> {
    let resolved = qconfig.resolve(model)?;
    swap_custom(model, &resolved, mappings)?;
    model.visit_mut("", &mut |path, m| {
        let Some(Some(qc)) = resolved.get(path) else {
            return Ok(());
        };
        if let Some(to_qat) = mappings.qat.get(&m.type_name()) {
            let float = std::mem::replace(m, Module::identity());
            *m = to_qat(float, qc).map_err(|e| within(path, e))?;
        }
        Ok(())
    })?;
    attach(model, &resolved, mappings, true, &PrepareOptions::default())
}

fn within(path: &str, e: NnError) -> NnError {
    if path.is_empty() {
        e
    } else {
        e.within(path)
    }
}

fn attach(
    model: &mut Module,
    resolved: &std::collections::HashMap<String, Option<QConfig>>,
    mappings: &Mappings,
    qat: bool,
    opts: &PrepareOptions,
) -> Result<()> {
    // Non-leaf modules observed as a whole: their subtrees are skipped.
    let mut skip: Vec<String> = Vec::new();
    for (p, m) in model.named_modules() {
        if opts.observer_non_leaf.contains(&m.type_name()) && !p.is_empty() {
            skip.push(format!("{p}."));
        }
    }
    model.visit_mut("", &mut |path, m| {
        let Some(Some(qc)) = resolved.get(path).cloned() else {
            return Ok(());
        };
        if skip.iter().any(|s| path.starts_with(s.as_str())) {
            return Ok(());
        }
        let ty = m.type_name();
        let listed = match &opts.allow_list {
            Some(l) => l.contains(&ty),
            None => mappings.static_quant.get(&ty).is_some_and(|r| r.observe),
        } || (qat && mappings.special_act.contains_key(&ty));
        let non_leaf = opts.observer_non_leaf.contains(&ty);
        let observe =
            (m.children().is_empty() || non_leaf) && !m.is::<Observed>() && (listed || non_leaf);
        if !observe {
            return Ok(());
        }
        let obs = match mappings.special_act.get(&m.type_name()) {
            Some(sp) if qat || !sp.qat_only => {
                let spec = rquant_core::qconfig::fixed_qparams_qconfig(sp.neg1to1, qat).activation;
                Observation::with_spec(qc, &spec, qat)
            }
            _ => Observation::new(qc, qat),
        }
        .map_err(|e| within(path, e))?;
        if let Some(obs) = m.layer_mut().observe_output(obs) {
            let inner = std::mem::replace(m, Module::identity());
            *m = Observed::new(inner, obs).into();
        }
        Ok(())
    })
}

/// Give the observed modules of a prepared model fixed output qparams
/// instead of calibrating them: `qparams` maps each module path (the keys of
/// PyTorch's converted model: `quant`, `conv1`, `layer1.0.add_relu`, …) to a
/// (scale, zero point). Each observer is replaced by [`ActPost::Fixed`]:
/// later forwards pass values through unobserved, and `convert` quantizes
/// the outputs with exactly these qparams (weights are still quantized by
/// the qconfig's weight observer).
///
/// Use it to reproduce another tool's converted model (PyTorch's exported
/// scales and zero points) without re-running its calibration: histogram
/// observers are sensitive to last-ulp float differences in the activations
/// they see, as PyTorch's own 1- vs 2-thread calibrations show.
///
/// Strict both ways: a path that is not an observed module, and an observed
/// module with no entry, are errors naming the path. Scales must be finite
/// and positive. Models prepared for QAT (fake quants) are refused.
pub fn set_activation_qparams(
    model: &mut Module,
    qparams: &BTreeMap<String, (f32, i64)>,
) -> Result<()> {
    for (p, &(s, _)) in qparams {
        if !(s.is_finite() && s > 0.0) {
            return Err(NnError::module(
                p.as_str(),
                format!("activation scale {s} must be finite and positive"),
            ));
        }
    }
    let mut seen = Vec::new();
    let mut missing = Vec::new();
    model.visit_mut("", &mut |path, m| {
        let fixed = |path: &str, post: &ActPost, missing: &mut Vec<String>| -> Result<Option<ActPost>> {
            if let ActPost::FakeQuant { .. } = post {
                return Err(NnError::module(
                    path,
                    "set_activation_qparams: the model was prepared for QAT (fake quants); use it after prepare",
                ));
            }
            Ok(match qparams.get(path) {
                Some(&(scale, zero_point)) => Some(ActPost::Fixed { scale, zero_point }),
                None => {
                    missing.push(path.to_string());
                    None
                }
            })
        };
        if let Some(o) = m.downcast_mut::<Observed>() {
            if let Some(p) = fixed(path, &o.post, &mut missing)? {
                o.post = p;
                seen.push(path.to_string());
            }
        } else if let Some(mut obs) = m.layer_mut().take_observation() {
            let p = fixed(path, &obs.post, &mut missing);
            if let Ok(Some(p)) = &p {
                obs.post = p.clone();
                seen.push(path.to_string());
            }
            // Hand the observation back (changed or not) before any error.
            if m.layer_mut().observe_output(obs).is_some() {
                return Err(NnError::module(
                    path,
                    format!(
                        "{} did not take its observation back in observe_output",
                        m.type_name()
                    ),
                ));
            }
            p?;
        }
        Ok(())
    })?;
    if let Some(p) = qparams.keys().find(|p| !seen.contains(p)) {
        return Err(NnError::module(
            p.as_str(),
            "set_activation_qparams: no observed module at this path (prepare the model first)",
        ));
    }
    if !missing.is_empty() {
        return Err(NnError::module(
            missing[0].as_str(),
            format!(
                "set_activation_qparams: no qparams given for {} observed module(s): {}",
                missing.len(),
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The paths of every observed module of a prepared model (the keys
/// [`set_activation_qparams`] needs), in post-order.
pub fn observed_paths(model: &mut Module) -> Vec<String> {
    let mut out = Vec::new();
    let _ = model.visit_mut("", &mut |path, m| {
        if m.is::<Observed>() {
            out.push(path.to_string());
        } else if let Some(obs) = m.layer_mut().take_observation() {
            out.push(path.to_string());
            let _ = m.layer_mut().observe_output(obs);
        }
        Ok(())
    });
    out
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
        let m = match m.downcast_mut::<Observed>() {
            Some(o) => &mut o.module,
            None => m,
        };
        if let Some(c) = m.downcast_mut::<Conv2d>() {
            if let Some(bn) = &mut c.bn {
                bn.training = false;
                c.freeze_bn = true;
            }
        } else if let Some(c) = m.downcast_mut::<ConvNd>() {
            if let Some(bn) = &mut c.bn {
                bn.training = false;
                c.freeze_bn = true;
            }
        } else if let Some(l) = m.downcast_mut::<Linear>() {
            if let Some(bn) = &mut l.bn {
                bn.training = false;
                l.freeze_bn = true;
            }
        }
        Ok(())
    });
}

/// Resume updating batch-norm statistics of QAT ConvBn / LinearBn modules
/// (`update_bn_stats`, the inverse of [`freeze_bn_stats`]); the batch
/// norms follow the module's training mode again.
pub fn update_bn_stats(model: &mut Module) {
    let _ = model.visit_mut("", &mut |_, m| {
        let m = match m.downcast_mut::<Observed>() {
            Some(o) => &mut o.module,
            None => m,
        };
        let (bn, freeze, training) = if let Some(c) = m.downcast_mut::<Conv2d>() {
            (c.bn.as_mut(), &mut c.freeze_bn, c.training)
        } else if let Some(c) = m.downcast_mut::<ConvNd>() {
            (c.bn.as_mut(), &mut c.freeze_bn, c.training)
        } else if let Some(l) = m.downcast_mut::<Linear>() {
            (l.bn.as_mut(), &mut l.freeze_bn, l.training)
        } else {
            return Ok(());
        };
        if let Some(bn) = bn {
            *freeze = false;
            bn.training = training;
        }
        Ok(())
    });
}

fn for_each_fake_quant(model: &mut Module, f: &mut dyn FnMut(&mut FakeQuantize)) {
    let _ = model.visit_mut("", &mut |_, m| {
        for fq in m.layer_mut().fake_quants_mut() {
            f(fq);
        }
        Ok(())
    });
}

// ---------------------------------------------------------------- convert

/// `convert`: replace every observed module by its quantized form, with
/// weights quantized per the weight observer and packed once by the current
/// engine (`rquant_core::registry::engine()`), outputs quantized with the
/// observed qparams. QuantStub/DeQuantStub become Quantize/DeQuantize.
pub fn convert(model: &mut Module) -> Result<()> {
    let engine = rquant_core::registry::engine()?;
    convert_with(model, &engine)
}

/// [`convert`] with an explicit engine: every module of the converted model
/// (float pooling and ReLU on quantized values included) runs on it.
pub fn convert_with(model: &mut Module, engine: &Engine) -> Result<()> {
    convert_mapped(model, engine, &Mappings::default())
}

/// [`convert_with`] with your own mapping tables.
pub fn convert_mapped(model: &mut Module, engine: &Engine, mappings: &Mappings) -> Result<()> {
    model.visit_mut("", &mut |path, m| {
        let (module, obs) = if m.is::<Observed>() {
            let o: Observed = std::mem::replace(m, Module::identity()).expect_type("convert")?;
            let (module, obs) = o.into_parts();
            (module, Some(obs))
        } else if let Some(obs) = m.layer_mut().take_observation() {
            (std::mem::replace(m, Module::identity()), Some(obs))
        } else if mappings
            .static_quant
            .get(&m.type_name())
            .is_some_and(|r| !r.observe)
        {
            (std::mem::replace(m, Module::identity()), None)
        } else {
            return Ok(());
        };
        let ty = module.type_name();
        let rule = mappings.static_quant.get(&ty).ok_or_else(|| {
            within(
                path,
                NnError::module("", format!("no static quantization mapping for {ty}")),
            )
        })?;
        *m = (rule.convert)(module, obs, engine).map_err(|e| within(path, e))?;
        Ok(())
    })?;
    crate::channels_last::fold_flatten_into_linear(model)?;
    to_engine(model, engine)
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
    LstmCell,
    GruCell,
    RnnCell,
}

impl DynamicType {
    /// The type names this stands for in the dynamic mapping.
    pub fn type_names(self) -> &'static [&'static str] {
        match self {
            DynamicType::Linear => &["Linear", "LinearReLU"],
            DynamicType::Lstm => &["LSTM"],
            DynamicType::Gru => &["GRU"],
            DynamicType::LstmCell => &["LSTMCell"],
            DynamicType::GruCell => &["GRUCell"],
            DynamicType::RnnCell => &["RNNCell"],
        }
    }
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
    let engine = rquant_core::registry::engine()?;
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
    let names: Vec<&str> = types.iter().flat_map(|t| t.type_names()).copied().collect();
    let mappings = Mappings::default().dynamic_only(&names);
    let cfg = DynamicConfig {
        dtype,
        qconfig: qconfig.clone(),
        engine: engine.clone(),
    };
    quantize_dynamic_mapped(model, &cfg, &mappings)
}

/// Replace every module whose type is in `mappings.dynamic` by its dynamic
/// quantized form (PyTorch's `quantize_dynamic(…, mapping=…)`).
pub fn quantize_dynamic_mapped(
    model: &mut Module,
    cfg: &DynamicConfig,
    mappings: &Mappings,
) -> Result<()> {
    model.visit_mut("", &mut |path, m| {
        let Some(f) = mappings.dynamic.get(&m.type_name()) else {
            return Ok(());
        };
        let float = std::mem::replace(m, Module::identity());
        *m = f(float, cfg).map_err(|e| within(path, e))?;
        Ok(())
    })
}

/// Move a whole model to `engine`: quantized modules repack their weights
/// (a model converted once runs on any engine with identical outputs) and
/// every module that runs int8 ops (pooling, ReLU, Quantize, …) runs them
/// on `engine` from now on.
pub fn to_engine(model: &mut Module, engine: &Engine) -> Result<()> {
    model.visit_mut("", &mut |path, m| {
        m.layer_mut().to_engine(engine).map_err(|e| within(path, e))
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
