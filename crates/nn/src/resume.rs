//! Resumable calibration and QAT: prepared (observed) and QAT models saved
//! with every observer's statistics, every fake quant's scale, zero point,
//! switches and observer, batch-norm running statistics, and the qconfig
//! specs that rebuild them; loading restores the exact state, so a resumed
//! run gives the bits an uninterrupted one gives. Also the JSON form of
//! qconfigs ([`qconfig_to_json`] / [`qconfig_from_json`]).
//!
//! In a model file an observed module is its own module (tensors and
//! attributes as usual) plus an `activation_post_process` attribute and
//! `{path}.activation_post_process.*` tensors; a weight fake quant is a
//! `weight_fake_quant` attribute and `{path}.weight_fake_quant.*` tensors.

use rquant_core::observer::{Observer, ObserverConfig, ObserverDType, ObserverKind, ObserverState};
use rquant_core::qconfig::{
    FakeQuantKind, FakeQuantState, FakeQuantize, FakeQuantizeSpec, LsqSpec, ObserverSpec, QConfig,
    QSpec,
};
use rquant_core::{QDType, QScheme, Tensor};
use serde_json::{json, Value as J};

use crate::error::{NnError, Result};
use crate::format::{join, Saver};
use crate::layers::BatchNorm2d;
use crate::post::ActPost;
use crate::registry::Node;

// ---------------------------------------------------------------- specs as JSON

/// An observer spec as JSON (torch's class name and `with_args` arguments).
pub fn observer_spec_to_json(s: &ObserverSpec) -> J {
    let c = &s.config;
    json!({
        "class": s.kind.name(),
        "dtype": c.dtype.name(),
        "qscheme": c.qscheme.name(),
        "reduce_range": c.reduce_range,
        "quant_min": c.quant_min,
        "quant_max": c.quant_max,
        "averaging_constant": c.averaging_constant,
        "ch_axis": c.ch_axis,
        "bins": c.bins,
        "eps": c.eps,
        "is_dynamic": c.is_dynamic,
        "fixed_scale": c.fixed_scale,
        "fixed_zero_point": c.fixed_zero_point,
        "placeholder_dtype": s.placeholder_dtype.map(|d| d.name()),
    })
}

fn field<'a>(j: &'a J, k: &str) -> std::result::Result<&'a J, String> {
    j.get(k).ok_or_else(|| format!("missing field {k:?}"))
}
fn f64_of(j: &J, k: &str) -> std::result::Result<f64, String> {
    field(j, k)?
        .as_f64()
        .ok_or_else(|| format!("{k} is not a number"))
}
fn i64_of(j: &J, k: &str) -> std::result::Result<i64, String> {
    field(j, k)?
        .as_i64()
        .ok_or_else(|| format!("{k} is not an integer"))
}
fn bool_of(j: &J, k: &str) -> std::result::Result<bool, String> {
    field(j, k)?
        .as_bool()
        .ok_or_else(|| format!("{k} is not a boolean"))
}
fn str_of<'a>(j: &'a J, k: &str) -> std::result::Result<&'a str, String> {
    field(j, k)?
        .as_str()
        .ok_or_else(|| format!("{k} is not a string"))
}
fn opt_i64(j: &J, k: &str) -> std::result::Result<Option<i64>, String> {
    match j.get(k) {
        None | Some(J::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{k} is not an integer")),
    }
}

/// The inverse of [`observer_spec_to_json`].
pub fn observer_spec_from_json(j: &J) -> std::result::Result<ObserverSpec, String> {
    let class = str_of(j, "class")?;
    let kind = ObserverKind::from_name(class)
        .ok_or_else(|| format!("unknown observer class {class:?}"))?;
    let dtype = str_of(j, "dtype")?;
    let qscheme = str_of(j, "qscheme")?;
    let bins = i64_of(j, "bins")?;
    let config = ObserverConfig {
        dtype: QDType::from_name(dtype).ok_or_else(|| format!("unknown dtype {dtype:?}"))?,
        qscheme: QScheme::from_name(qscheme)
            .ok_or_else(|| format!("unknown qscheme {qscheme:?}"))?,
        reduce_range: bool_of(j, "reduce_range")?,
        quant_min: opt_i64(j, "quant_min")?,
        quant_max: opt_i64(j, "quant_max")?,
        averaging_constant: f64_of(j, "averaging_constant")?,
        ch_axis: i64_of(j, "ch_axis")?,
        bins: usize::try_from(bins).map_err(|_| format!("bins {bins} is negative"))?,
        eps: f64_of(j, "eps")? as f32,
        is_dynamic: bool_of(j, "is_dynamic")?,
        fixed_scale: f64_of(j, "fixed_scale")? as f32,
        fixed_zero_point: i64_of(j, "fixed_zero_point")?,
    };
    let placeholder_dtype = match j.get("placeholder_dtype") {
        None | Some(J::Null) => None,
        Some(v) => {
            let s = v
                .as_str()
                .ok_or_else(|| "placeholder_dtype is not a string".to_string())?;
            Some(ObserverDType::from_name(s).ok_or_else(|| format!("unknown dtype {s:?}"))?)
        }
    };
    Ok(ObserverSpec {
        kind,
        config,
        placeholder_dtype,
    })
}

/// A fake-quant spec as JSON.
pub fn fake_quant_spec_to_json(s: &FakeQuantizeSpec) -> J {
    json!({
        "class": s.kind.name(),
        "observer": observer_spec_to_json(&s.observer),
        "lsq": {"scale": s.lsq.scale, "zero_point": s.lsq.zero_point,
                "channel_len": s.lsq.channel_len, "use_grad_scaling": s.lsq.use_grad_scaling},
    })
}

/// The inverse of [`fake_quant_spec_to_json`].
pub fn fake_quant_spec_from_json(j: &J) -> std::result::Result<FakeQuantizeSpec, String> {
    let class = str_of(j, "class")?;
    let kind = FakeQuantKind::from_name(class)
        .ok_or_else(|| format!("unknown fake quant class {class:?}"))?;
    let observer = observer_spec_from_json(field(j, "observer")?)?;
    let l = field(j, "lsq")?;
    let channel_len = match opt_i64(l, "channel_len")? {
        None => None,
        Some(v) => Some(usize::try_from(v).map_err(|_| format!("channel_len {v} is negative"))?),
    };
    Ok(FakeQuantizeSpec {
        kind,
        observer,
        lsq: LsqSpec {
            scale: f64_of(l, "scale")? as f32,
            zero_point: f64_of(l, "zero_point")? as f32,
            channel_len,
            use_grad_scaling: bool_of(l, "use_grad_scaling")?,
        },
    })
}

/// A qconfig slot as JSON.
pub fn qspec_to_json(s: &QSpec) -> J {
    match s {
        QSpec::Observer(o) => json!({"observer": observer_spec_to_json(o)}),
        QSpec::FakeQuant(f) => json!({"fake_quant": fake_quant_spec_to_json(f)}),
    }
}

/// The inverse of [`qspec_to_json`].
pub fn qspec_from_json(j: &J) -> std::result::Result<QSpec, String> {
    if let Some(o) = j.get("observer") {
        return Ok(QSpec::Observer(observer_spec_from_json(o)?));
    }
    if let Some(f) = j.get("fake_quant") {
        return Ok(QSpec::FakeQuant(fake_quant_spec_from_json(f)?));
    }
    Err("expected \"observer\" or \"fake_quant\"".into())
}

/// A qconfig as JSON (`{"activation": …, "weight": …}`).
pub fn qconfig_to_json(q: &QConfig) -> J {
    json!({"activation": qspec_to_json(&q.activation), "weight": qspec_to_json(&q.weight)})
}

/// The inverse of [`qconfig_to_json`].
pub fn qconfig_from_json(j: &J) -> std::result::Result<QConfig, String> {
    Ok(QConfig {
        activation: qspec_from_json(field(j, "activation")?)?,
        weight: qspec_from_json(field(j, "weight")?)?,
    })
}

// ---------------------------------------------------------------- state tensors

fn save_observer_state(st: &ObserverState, out: &mut Saver) {
    out.f32_slice("min_val", &st.min);
    out.f32_slice("max_val", &st.max);
    if !st.histogram.is_empty() {
        out.f32_slice("histogram", &st.histogram);
    }
}

fn vec_at(n: &Node, name: &str) -> Result<Vec<f32>> {
    Ok(n.f32(name)?.into_data())
}

fn opt_vec_at(n: &Node, name: &str) -> Result<Vec<f32>> {
    if n.has_tensor(name) {
        vec_at(n, name)
    } else {
        Ok(Vec::new())
    }
}

fn load_observer_state(n: &Node, sub: &str) -> Result<ObserverState> {
    Ok(ObserverState {
        min: vec_at(n, &join(sub, "min_val"))?,
        max: vec_at(n, &join(sub, "max_val"))?,
        histogram: opt_vec_at(n, &join(sub, "histogram"))?,
    })
}

/// Write a fake quant (its spec, switches and state) under the current path.
pub(crate) fn save_fake_quant(fq: &FakeQuantize, out: &mut Saver) -> Result<J> {
    let st = fq.state();
    out.f32_slice("scale", &st.scale);
    out.f32_slice("zero_point", &st.zero_point);
    out.within("activation_post_process", |o| {
        save_observer_state(&st.observer, o)
    });
    Ok(json!({
        "spec": fake_quant_spec_to_json(fq.spec()),
        "fake_quant_enabled": st.fake_quant_enabled,
        "observer_enabled": st.observer_enabled,
        "static_enabled": st.static_enabled,
        "learning_enabled": st.learning_enabled,
    }))
}

/// Rebuild a fake quant saved by [`save_fake_quant`] under `{path}.{sub}`
/// with attributes `j`.
pub(crate) fn load_fake_quant(n: &Node, sub: &str, j: &J) -> Result<FakeQuantize> {
    let err = |d: String| n.attr_error(sub, d);
    let spec = fake_quant_spec_from_json(j.get("spec").ok_or_else(|| err("missing spec".into()))?)
        .map_err(err)?;
    let mut fq = spec.build().map_err(|e| n.quant_error(e))?;
    let b = |k: &str| j.get(k).and_then(J::as_bool);
    let st = FakeQuantState {
        scale: vec_at(n, &join(sub, "scale"))?,
        zero_point: vec_at(n, &join(sub, "zero_point"))?,
        fake_quant_enabled: b("fake_quant_enabled")
            .ok_or_else(|| err("fake_quant_enabled is not a boolean".into()))?,
        observer_enabled: b("observer_enabled")
            .ok_or_else(|| err("observer_enabled is not a boolean".into()))?,
        static_enabled: b("static_enabled"),
        learning_enabled: b("learning_enabled"),
        observer: load_observer_state(n, &join(sub, "activation_post_process"))?,
    };
    fq.set_state(&st)
        .map_err(|e| n.tensor_error(sub, e.to_string()))?;
    Ok(fq)
}

/// Write an activation post-process (observer or fake quant).
pub(crate) fn save_act_post(post: &ActPost, out: &mut Saver) -> Result<J> {
    match post {
        ActPost::Observer(o) => {
            let spec = o.spec().ok_or_else(|| {
                NnError::module(
                    out.path(),
                    "an observer not built from a spec cannot be saved",
                )
            })?;
            save_observer_state(&o.state(), out);
            Ok(json!({"observer": observer_spec_to_json(spec)}))
        }
        ActPost::FakeQuant { fq, .. } => Ok(json!({"fake_quant": save_fake_quant(fq, out)?})),
        #[allow(unreachable_patterns)]
        _ => Err(NnError::module(
            out.path(),
            "this activation post-process cannot be saved",
        )),
    }
}

/// Rebuild an activation post-process saved by [`save_act_post`].
pub(crate) fn load_act_post(n: &Node, sub: &str, j: &J) -> Result<ActPost> {
    if let Some(o) = j.get("observer") {
        let spec = observer_spec_from_json(o).map_err(|d| n.attr_error(sub, d))?;
        let mut obs: Box<dyn Observer> = spec.build().map_err(|e| n.quant_error(e))?;
        obs.set_state(&load_observer_state(n, sub)?)
            .map_err(|e| n.tensor_error(sub, e.to_string()))?;
        return Ok(ActPost::Observer(obs));
    }
    if let Some(f) = j.get("fake_quant") {
        return Ok(ActPost::FakeQuant {
            fq: Box::new(load_fake_quant(n, sub, f)?),
            mask: None,
        });
    }
    Err(n.attr_error(sub, "expected \"observer\" or \"fake_quant\""))
}

/// Write a batch norm's parameters and running statistics; returns its attributes.
pub(crate) fn save_bn(bn: &BatchNorm2d, out: &mut Saver) -> J {
    out.f32("weight", &bn.weight.value);
    out.f32("bias", &bn.bias.value);
    out.f32("running_mean", &bn.running_mean);
    out.f32("running_var", &bn.running_var);
    json!({"eps": bn.eps, "momentum": bn.momentum, "num_batches_tracked": bn.num_batches_tracked,
           "training": bn.training})
}

/// Rebuild a batch norm of `c` features saved by [`save_bn`] under `{path}.{sub}`.
pub(crate) fn load_bn(n: &Node, sub: &str, c: usize) -> Result<BatchNorm2d> {
    let j = n.field(sub)?;
    let mut b = BatchNorm2d::new(c);
    let t = |name: &str| -> Result<Tensor> {
        let t = n.f32(&join(sub, name))?;
        if t.shape() != [c] {
            return Err(n.tensor_error(
                &join(sub, name),
                format!("shape {:?}, expected [{c}]", t.shape()),
            ));
        }
        Ok(t)
    };
    b.weight.value = t("weight")?;
    b.bias.value = t("bias")?;
    b.running_mean = t("running_mean")?;
    b.running_var = t("running_var")?;
    b.eps = j
        .get("eps")
        .and_then(J::as_f64)
        .ok_or_else(|| n.attr_error(&join(sub, "eps"), "not a number"))? as f32;
    b.momentum =
        j.get("momentum")
            .and_then(J::as_f64)
            .ok_or_else(|| n.attr_error(&join(sub, "momentum"), "not a number"))? as f32;
    b.num_batches_tracked = j
        .get("num_batches_tracked")
        .and_then(J::as_i64)
        .ok_or_else(|| n.attr_error(&join(sub, "num_batches_tracked"), "not an integer"))?;
    b.training = j.get("training").and_then(J::as_bool).unwrap_or(false);
    Ok(b)
}
