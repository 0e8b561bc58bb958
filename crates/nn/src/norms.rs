//! `LayerNorm`, `GroupNorm` and `InstanceNorm1d/2d/3d` (float forward and
//! backward), and the quantized norms: `nnq.LayerNorm`, `nnq.GroupNorm`,
//! `nnq.InstanceNorm1d/2d/3d`, `nnq.BatchNorm2d/3d` and `nniq.BNReLU2d/3d`
//! (the engine's layer / group / instance / batch norm, docs/numerics.md §14).

use rquant_core::{BatchNormParams, Engine, NormParams, QTensor, Tensor};
use serde_json::{json, Value as J};

use crate::error::{bad, NnError, Result};
use crate::format::Saver;
use crate::layers::BatchNorm2d;
use crate::mapping::Mappings;
use crate::module::{Layer, Module};
use crate::param::Param;
use crate::post::Observation;
use crate::registry::{ModuleRegistry, Node};
use crate::value::Value;

/// Which normalisation.
#[derive(Debug, Clone, PartialEq)]
pub enum NormKind {
    /// `nn.LayerNorm(normalized_shape)`: the trailing dims.
    Layer { normalized_shape: Vec<usize> },
    /// `nn.GroupNorm(num_groups, num_channels)`.
    Group { num_groups: usize },
    /// `nn.InstanceNorm{dims}d(num_features)` (`track_running_stats=False`).
    Instance { dims: usize },
}

/// A float layer / group / instance norm with optional affine parameters.
#[derive(Debug, Clone)]
pub struct Norm {
    pub kind: NormKind,
    /// Channels (group and instance norm).
    pub num_channels: usize,
    pub eps: f64,
    pub weight: Option<Param>,
    pub bias: Option<Param>,
    pub(crate) training: bool,
    cache: Option<(Tensor, Vec<f32>, Vec<f32>)>,
}

/// The group layout of a norm over `shape`: (groups, group length, affine
/// index of element `j` of a group).
struct Layout {
    groups: usize,
    len: usize,
    /// For group / instance norm: elements per channel (affine per channel);
    /// for layer norm: 0 (affine per element of the group).
    per_channel: usize,
    channels: usize,
}

impl Layout {
    fn affine_index(&self, g: usize, j: usize) -> usize {
        match self.len.checked_div(self.per_channel) {
            None => j,
            Some(cpg) => (g * cpg + j / self.per_channel) % self.channels,
        }
    }
}

impl Norm {
    pub fn layer_norm(normalized_shape: &[usize], eps: f64, elementwise_affine: bool) -> Self {
        let n: usize = normalized_shape.iter().product();
        Self::with(
            NormKind::Layer {
                normalized_shape: normalized_shape.to_vec(),
            },
            n,
            eps,
            elementwise_affine,
        )
    }
    pub fn group_norm(num_groups: usize, num_channels: usize, eps: f64, affine: bool) -> Self {
        Self::with(NormKind::Group { num_groups }, num_channels, eps, affine)
    }
    /// `nn.InstanceNorm{dims}d(num_features, eps, affine)`.
    pub fn instance_norm(dims: usize, num_features: usize, eps: f64, affine: bool) -> Self {
        Self::with(NormKind::Instance { dims }, num_features, eps, affine)
    }
    fn with(kind: NormKind, n: usize, eps: f64, affine: bool) -> Self {
        let p = |v: f32| Param::new(Tensor::new([n], vec![v; n]).expect("1-D"));
        Norm {
            kind,
            num_channels: n,
            eps,
            weight: affine.then(|| p(1.0)),
            bias: affine.then(|| p(0.0)),
            training: false,
            cache: None,
        }
    }

    fn layout(&self, s: &[usize]) -> Result<Layout> {
        match &self.kind {
            NormKind::Layer { normalized_shape } => {
                let k = normalized_shape.len();
                if k == 0 || k > s.len() || s[s.len() - k..] != **normalized_shape {
                    return Err(bad(
                        "LayerNorm",
                        format!("normalized_shape {normalized_shape:?} is not a suffix of the input shape {s:?}"),
                    ));
                }
                let len: usize = normalized_shape.iter().product();
                Ok(Layout {
                    groups: s.iter().product::<usize>() / len.max(1),
                    len,
                    per_channel: 0,
                    channels: len,
                })
            }
            NormKind::Group { num_groups } => self.channel_layout("GroupNorm", s, *num_groups, 3),
            NormKind::Instance { dims } => {
                self.channel_layout("InstanceNorm", s, self.num_channels, dims + 2)
            }
        }
    }

    fn channel_layout(
        &self,
        op: &'static str,
        s: &[usize],
        groups: usize,
        nd: usize,
    ) -> Result<Layout> {
        let ok = if op == "GroupNorm" {
            s.len() >= 3
        } else {
            s.len() == nd
        };
        if !ok
            || s[1] != self.num_channels
            || groups == 0
            || !self.num_channels.is_multiple_of(groups)
        {
            return Err(bad(
                op,
                format!(
                    "expected [N, {}, …] ({} dims) with {groups} groups dividing the channels, got {s:?}",
                    self.num_channels,
                    if op == "GroupNorm" { "at least 3".to_string() } else { nd.to_string() }
                ),
            ));
        }
        let per_channel: usize = s[2..].iter().product();
        Ok(Layout {
            groups: s[0] * groups,
            len: self.num_channels / groups * per_channel,
            per_channel,
            channels: self.num_channels,
        })
    }

    pub fn forward_float(&mut self, x: Tensor) -> Result<Tensor> {
        let l = self.layout(x.shape())?;
        let mut y = x.clone();
        let (mut means, mut rstds) = (Vec::with_capacity(l.groups), Vec::with_capacity(l.groups));
        for (g, chunk) in y
            .data_mut()
            .chunks_mut(l.len.max(1))
            .enumerate()
            .take(l.groups)
        {
            let n = chunk.len() as f64;
            let mean = chunk.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = chunk
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            let rstd = 1.0 / (var + self.eps).sqrt();
            for (j, v) in chunk.iter_mut().enumerate() {
                let a = l.affine_index(g, j);
                let w = self.weight.as_ref().map_or(1.0, |w| w.value.data()[a]);
                let b = self.bias.as_ref().map_or(0.0, |b| b.value.data()[a]);
                *v = (((*v as f64 - mean) * rstd) as f32) * w + b;
            }
            means.push(mean as f32);
            rstds.push(rstd as f32);
        }
        if self.training {
            self.cache = Some((x, means, rstds));
        }
        Ok(y)
    }

    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let (x, means, rstds) = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        let l = self.layout(x.shape())?;
        let mut dx = vec![0.0f32; x.numel()];
        let mut dw = vec![0.0f32; self.weight.as_ref().map_or(0, |w| w.value.numel())];
        let mut db = vec![0.0f32; dw.len()];
        for gi in 0..l.groups {
            let r = gi * l.len..(gi + 1) * l.len;
            let (xs, gs) = (&x.data()[r.clone()], &g.data()[r.clone()]);
            let (m, rs) = (means[gi], rstds[gi]);
            let n = l.len as f32;
            let mut sum_d = 0.0f32;
            let mut sum_dx = 0.0f32;
            let mut dxhat = vec![0.0f32; l.len];
            for j in 0..l.len {
                let a = l.affine_index(gi, j);
                let xhat = (xs[j] - m) * rs;
                let w = self.weight.as_ref().map_or(1.0, |w| w.value.data()[a]);
                if !dw.is_empty() {
                    dw[a] += gs[j] * xhat;
                    db[a] += gs[j];
                }
                dxhat[j] = gs[j] * w;
                sum_d += dxhat[j];
                sum_dx += dxhat[j] * xhat;
            }
            for j in 0..l.len {
                let xhat = (xs[j] - m) * rs;
                dx[r.start + j] = rs / n * (n * dxhat[j] - sum_d - xhat * sum_dx);
            }
        }
        if let Some(w) = &mut self.weight {
            w.accumulate(dw)?;
        }
        if let Some(b) = &mut self.bias {
            b.accumulate(db)?;
        }
        Ok(Tensor::new(x.shape().to_vec(), dx)?)
    }

    fn type_base(&self) -> String {
        match &self.kind {
            NormKind::Layer { .. } => "LayerNorm".into(),
            NormKind::Group { .. } => "GroupNorm".into(),
            NormKind::Instance { dims } => format!("InstanceNorm{dims}d"),
        }
    }

    fn attrs(&self) -> J {
        let mut j = json!({"eps": self.eps, "num_channels": self.num_channels,
                           "affine": self.weight.is_some()});
        match &self.kind {
            NormKind::Layer { normalized_shape } => j["normalized_shape"] = json!(normalized_shape),
            NormKind::Group { num_groups } => j["num_groups"] = json!(num_groups),
            NormKind::Instance { .. } => {}
        }
        j
    }

    fn from_node(n: &Node, tag: &str) -> Result<Norm> {
        let base = tag.trim_start_matches("Quantized");
        let eps = n.get_f64("eps")?;
        let c = n.get_usize("num_channels")?;
        let affine = n.get_bool("affine")?;
        let mut m = match base {
            "LayerNorm" => {
                let s = n
                    .field("normalized_shape")?
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|v| v.as_u64().map(|u| u as usize))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| n.attr_error("normalized_shape", "not a list of sizes"))?;
                if s.iter().product::<usize>() != c {
                    return Err(n.attr_error("normalized_shape", "does not match num_channels"));
                }
                Norm::layer_norm(&s, eps, affine)
            }
            "GroupNorm" => Norm::group_norm(n.get_usize("num_groups")?, c, eps, affine),
            b if b.starts_with("InstanceNorm") => {
                let dims = match b {
                    "InstanceNorm1d" => 1,
                    "InstanceNorm2d" => 2,
                    "InstanceNorm3d" => 3,
                    _ => return Err(n.attr_error("type", format!("unknown norm {tag}"))),
                };
                Norm::instance_norm(dims, c, eps, affine)
            }
            _ => return Err(n.attr_error("type", format!("unknown norm {tag}"))),
        };
        if affine {
            for (name, p) in [("weight", &mut m.weight), ("bias", &mut m.bias)] {
                let t = n.f32(name)?;
                if t.shape() != [c] {
                    return Err(
                        n.tensor_error(name, format!("shape {:?}, expected [{c}]", t.shape()))
                    );
                }
                p.as_mut().expect("affine").value = t;
            }
        }
        Ok(m)
    }
}

impl Layer for Norm {
    fn type_name(&self) -> String {
        self.type_base()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::F(self.forward_float(x.float("Norm")?)?))
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        Norm::backward(self, g)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut v = Vec::new();
        if let Some(w) = &mut self.weight {
            v.push(("weight".into(), w));
        }
        if let Some(b) = &mut self.bias {
            v.push(("bias".into(), b));
        }
        v
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            out.f32("weight", &w.value);
            out.f32("bias", &b.value);
        }
        Ok(self.attrs())
    }
}

/// `nnq.LayerNorm` / `nnq.GroupNorm` / `nnq.InstanceNorm{1,2,3}d`: float
/// affine parameters, output qparams from the observer.
#[derive(Debug, Clone)]
pub struct QNorm {
    pub norm: Norm,
    pub engine: Engine,
    pub scale: f64,
    pub zero_point: i64,
}

impl QNorm {
    pub fn from_float(m: Module, obs: Option<Observation>, engine: &Engine) -> Result<Module> {
        let norm: Norm = m.expect_type("QNorm::from_float")?;
        let obs = obs.ok_or_else(|| {
            NnError::module(
                "",
                format!(
                    "{} needs an observation of its output (prepare the model first)",
                    norm.type_base()
                ),
            )
        })?;
        let (scale, zero_point) = obs.qparams()?;
        Ok(QNorm {
            norm,
            engine: engine.clone(),
            scale,
            zero_point,
        }
        .into())
    }
    fn run(&self, x: &QTensor<u8>) -> Result<QTensor<u8>> {
        let w = self.norm.weight.as_ref().map(|w| w.value.data().to_vec());
        let b = self.norm.bias.as_ref().map(|b| b.value.data().to_vec());
        let p = NormParams {
            weight: w.as_deref(),
            bias: b.as_deref(),
            eps: self.norm.eps,
        };
        let (e, s, z) = (&self.engine, self.scale, self.zero_point);
        Ok(match &self.norm.kind {
            NormKind::Layer { normalized_shape } => e.layer_norm(x, normalized_shape, &p, s, z)?,
            NormKind::Group { num_groups } => {
                if x.ndim() < 2 || x.shape()[1] != self.norm.num_channels {
                    return Err(bad(
                        "QuantizedGroupNorm",
                        format!(
                            "expected [N, {}, …], got {:?}",
                            self.norm.num_channels,
                            x.shape()
                        ),
                    ));
                }
                e.group_norm(x, *num_groups, &p, s, z)?
            }
            NormKind::Instance { dims } => {
                if x.ndim() != dims + 2 || x.shape()[1] != self.norm.num_channels {
                    return Err(bad(
                        "QuantizedInstanceNorm",
                        format!(
                            "expected [N, {}, …] with {} dims, got {:?}",
                            self.norm.num_channels,
                            dims + 2,
                            x.shape()
                        ),
                    ));
                }
                e.instance_norm(x, &p, s, z)?
            }
        })
    }
}

impl Layer for QNorm {
    fn type_name(&self) -> String {
        format!("Quantized{}", self.norm.type_base())
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::Q(self.run(&x.quant("QuantizedNorm")?)?))
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        let j = self.norm.save(out)?;
        out.qparams(self.scale, self.zero_point);
        Ok(j)
    }
}

/// `nnq.BatchNorm2d` / `nnq.BatchNorm3d` / `nniq.BNReLU2d` / `nniq.BNReLU3d`.
#[derive(Debug, Clone)]
pub struct QBatchNorm {
    pub bn: BatchNorm2d,
    pub engine: Engine,
    pub scale: f64,
    pub zero_point: i64,
}

impl QBatchNorm {
    pub fn from_float(m: Module, obs: Option<Observation>, engine: &Engine) -> Result<Module> {
        let bn: BatchNorm2d = m.expect_type("QBatchNorm::from_float")?;
        if bn.one_d {
            return Err(NnError::module(
                "",
                "BatchNorm1d has no quantized module in PyTorch's mappings (fuse it into the preceding Linear or Conv1d)",
            ));
        }
        let obs = obs.ok_or_else(|| {
            NnError::module(
                "",
                "BatchNorm needs an observation of its output (prepare the model first)",
            )
        })?;
        let (scale, zero_point) = obs.qparams()?;
        Ok(QBatchNorm {
            bn,
            engine: engine.clone(),
            scale,
            zero_point,
        }
        .into())
    }
    /// Run on `x` (`[N, C, H, W]`, or `[N, C, D, H, W]` for the 3-d form).
    pub fn run(&self, x: &QTensor<u8>) -> Result<QTensor<u8>> {
        let p = BatchNormParams {
            weight: self.bn.weight.value.data(),
            bias: self.bn.bias.value.data(),
            mean: self.bn.running_mean.data(),
            var: self.bn.running_var.data(),
            eps: self.bn.eps as f64,
        };
        if self.bn.three_d {
            crate::qops::batch_norm3d(
                &self.engine,
                x,
                &p,
                self.scale,
                self.zero_point,
                self.bn.relu,
            )
        } else {
            Ok(self
                .engine
                .batch_norm2d(x, &p, self.scale, self.zero_point, self.bn.relu)?)
        }
    }
}

impl Layer for QBatchNorm {
    fn type_name(&self) -> String {
        format!("Quantized{}", self.bn.type_name())
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::Q(self.run(&x.quant("QuantizedBatchNorm")?)?))
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        let j = self.bn.save(out)?;
        out.qparams(self.scale, self.zero_point);
        Ok(j)
    }
}

pub(crate) fn register_mappings(m: &mut Mappings) {
    for t in [
        "LayerNorm",
        "GroupNorm",
        "InstanceNorm1d",
        "InstanceNorm2d",
        "InstanceNorm3d",
    ] {
        m.set_static(t, true, QNorm::from_float);
    }
    for t in ["BatchNorm2d", "BNReLU2d", "BatchNorm3d", "BNReLU3d"] {
        m.set_static(t, true, QBatchNorm::from_float);
    }
}

pub(crate) fn register_loaders(r: &mut ModuleRegistry) {
    fn float(n: &mut Node) -> Result<Module> {
        let tag = n.type_name().to_string();
        Ok(Norm::from_node(n, &tag)?.into())
    }
    fn quant(n: &mut Node) -> Result<Module> {
        let tag = n.type_name().to_string();
        Ok(QNorm {
            norm: Norm::from_node(n, &tag)?,
            engine: n.engine().clone(),
            scale: n.scale()?,
            zero_point: n.zero_point()?,
        }
        .into())
    }
    for t in [
        "LayerNorm",
        "GroupNorm",
        "InstanceNorm1d",
        "InstanceNorm2d",
        "InstanceNorm3d",
    ] {
        r.register(t, float);
        r.register(&format!("Quantized{t}"), quant);
    }
    fn qbn(n: &mut Node) -> Result<Module> {
        let tag = n.type_name().trim_start_matches("Quantized").to_string();
        let w = n.f32("weight")?;
        let c = w.numel();
        let mut bn = BatchNorm2d::new(c);
        let get = |name: &str| -> Result<Tensor> {
            let t = n.f32(name)?;
            if t.shape() != [c] {
                return Err(n.tensor_error(name, format!("shape {:?}, expected [{c}]", t.shape())));
            }
            Ok(t)
        };
        bn.bias.value = get("bias")?;
        bn.running_mean = get("running_mean")?;
        bn.running_var = get("running_var")?;
        bn.weight.value = w;
        bn.eps = n.get_f64("eps")? as f32;
        bn.relu = tag.starts_with("BNReLU");
        bn.three_d = tag.ends_with("3d");
        Ok(QBatchNorm {
            bn,
            engine: n.engine().clone(),
            scale: n.scale()?,
            zero_point: n.zero_point()?,
        }
        .into())
    }
    for t in ["BatchNorm2d", "BNReLU2d", "BatchNorm3d", "BNReLU3d"] {
        r.register(&format!("Quantized{t}"), qbn);
    }
}

impl Module {
    /// `nn.LayerNorm(normalized_shape, eps=1e-5)`.
    pub fn layer_norm(normalized_shape: &[usize]) -> Self {
        Module::new(Norm::layer_norm(normalized_shape, 1e-5, true))
    }
    /// `nn.GroupNorm(num_groups, num_channels)`.
    pub fn group_norm(num_groups: usize, num_channels: usize) -> Self {
        Module::new(Norm::group_norm(num_groups, num_channels, 1e-5, true))
    }
}
