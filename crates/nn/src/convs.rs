//! `Conv1d`, `Conv3d` and `ConvTranspose1d/2d/3d`: float modules with
//! backward (fused with a batch norm and / or ReLU as `nni.ConvBn1d`,
//! `ConvBnReLU3d`, `ConvReLU1d`, …, and their QAT forms with a weight fake
//! quant: `nnqat.Conv1d/3d`, `nniqat.ConvBn1d/3d`, `ConvBnReLU1d/3d`,
//! `ConvReLU1d/3d`), and the quantized modules they convert to
//! (`nnq.Conv1d/3d`, `nniq.ConvReLU1d/3d`, `nnq.ConvTranspose1d/2d/3d`).
//! Conv2d keeps its own module ([`crate::layers::Conv2d`]).

use std::fmt;
use std::sync::Arc;

use rquant_core::qconfig::{FakeQuantize, QConfig};
use rquant_core::{
    dequantize, Conv1dParams, Conv3dParams, Engine, PackedConv1d, PackedConv3d,
    PackedConvTranspose2d, QTensor, Tensor,
};
use serde_json::{json, Value as J};

use crate::convnd::{self as C, ConvNdParams};
use crate::error::{bad, NnError, Result};
use crate::format::Saver;
use crate::layers::{fuse_conv_bn_weights, BatchNorm2d, FqCache};
use crate::mapping::Mappings;
use crate::module::{Layer, Module};
use crate::param::{Param, Rng};
use crate::post::{quantize_weight, Observation};
use crate::qops::{self, ConvTranspose3dParams, PackedConvTranspose3d};
use crate::registry::{ModuleRegistry, Node};
use crate::value::Value;

/// Which convolution a [`ConvNd`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvNdKind {
    Conv1d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
}

impl ConvNdKind {
    pub fn dims(self) -> usize {
        match self {
            ConvNdKind::Conv1d | ConvNdKind::ConvTranspose1d => 1,
            ConvNdKind::ConvTranspose2d => 2,
            ConvNdKind::Conv3d | ConvNdKind::ConvTranspose3d => 3,
        }
    }
    pub fn transposed(self) -> bool {
        matches!(
            self,
            ConvNdKind::ConvTranspose1d | ConvNdKind::ConvTranspose2d | ConvNdKind::ConvTranspose3d
        )
    }
    /// `Conv1d`, `ConvTranspose2d`, …
    pub fn name(self) -> &'static str {
        match self {
            ConvNdKind::Conv1d => "Conv1d",
            ConvNdKind::Conv3d => "Conv3d",
            ConvNdKind::ConvTranspose1d => "ConvTranspose1d",
            ConvNdKind::ConvTranspose2d => "ConvTranspose2d",
            ConvNdKind::ConvTranspose3d => "ConvTranspose3d",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "Conv1d" => ConvNdKind::Conv1d,
            "Conv3d" => ConvNdKind::Conv3d,
            "ConvTranspose1d" => ConvNdKind::ConvTranspose1d,
            "ConvTranspose2d" => ConvNdKind::ConvTranspose2d,
            "ConvTranspose3d" => ConvNdKind::ConvTranspose3d,
            _ => return None,
        })
    }
}

fn init_uniform(shape: Vec<usize>, bound: f32, rng: &mut Rng) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape, (0..n).map(|_| rng.sym(bound)).collect()).expect("shape")
}

fn relu_inplace(t: &mut Tensor) {
    for v in t.data_mut() {
        *v = v.max(0.0);
    }
}

fn relu_mask(g: &mut Tensor, y: &Tensor) {
    for (gv, &yv) in g.data_mut().iter_mut().zip(y.data()) {
        if yv <= 0.0 {
            *gv = 0.0;
        }
    }
}

#[derive(Debug, Clone)]
struct BnQatCache {
    scale_factor: Vec<f32>,
    running_std: Vec<f32>,
    conv_raw: Tensor,
}

/// `nn.Conv1d` / `nn.Conv3d` / `nn.ConvTranspose1d/2d/3d`; `bn` and `relu`
/// make the fused forms, `weight_fake_quant` the QAT forms (Conv1d and
/// Conv3d; QAT conv-bn folds the batch norm into the weight in training, as
/// `nniqat.ConvBn*d._forward_approximate`).
#[derive(Debug, Clone)]
pub struct ConvNd {
    pub kind: ConvNdKind,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel_size: Vec<usize>,
    pub params: ConvNdParams,
    /// `[O, C/groups, *k]`; transposed: `[C, O/groups, *k]`.
    pub weight: Param,
    pub bias: Option<Param>,
    pub bn: Option<BatchNorm2d>,
    pub relu: bool,
    pub weight_fake_quant: Option<FakeQuantize>,
    pub freeze_bn: bool,
    pub(crate) training: bool,
    cache_x: Option<Tensor>,
    cache_y: Option<Tensor>,
    cache_fq: Option<FqCache>,
    cache_qat: Option<BnQatCache>,
}

impl ConvNd {
    /// PyTorch's default initialisation (uniform ±1/sqrt(fan_in)), seeded.
    pub fn new(
        kind: ConvNdKind,
        in_channels: usize,
        out_channels: usize,
        kernel_size: &[usize],
        params: ConvNdParams,
        bias: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        let g = params.groups.max(1);
        let kvol: usize = kernel_size.iter().product();
        let mut shape = if kind.transposed() {
            vec![in_channels, out_channels / g]
        } else {
            vec![out_channels, in_channels / g]
        };
        shape.extend_from_slice(kernel_size);
        // PyTorch's fan_in is weight.size(1) · kernel volume for both.
        let fan_in = shape[1] * kvol;
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let w = init_uniform(shape, bound, rng);
        let b = bias.then(|| init_uniform(vec![out_channels], bound, rng));
        Self::from_weights(kind, w, b, params)
    }

    pub fn from_weights(
        kind: ConvNdKind,
        weight: Tensor,
        bias: Option<Tensor>,
        params: ConvNdParams,
    ) -> Result<Self> {
        let op = "ConvNd";
        let dims = kind.dims();
        params.check(op, dims)?;
        let s = weight.shape().to_vec();
        if s.len() != dims + 2 {
            return Err(bad(
                op,
                format!(
                    "{} weight {s:?} must have {} dimensions",
                    kind.name(),
                    dims + 2
                ),
            ));
        }
        let g = params.groups;
        let (cin, cout) = if kind.transposed() {
            if !s[0].is_multiple_of(g) {
                return Err(bad(
                    op,
                    format!("groups {g} must divide in_channels {}", s[0]),
                ));
            }
            (s[0], s[1] * g)
        } else {
            if !s[0].is_multiple_of(g) {
                return Err(bad(
                    op,
                    format!("groups {g} must divide out_channels {}", s[0]),
                ));
            }
            (s[1] * g, s[0])
        };
        if kind.transposed() {
            for a in 0..dims {
                if params.output_padding[a] >= params.stride[a].max(params.dilation[a]) {
                    return Err(bad(
                        op,
                        format!(
                            "output_padding {:?} must be smaller than stride {:?} or dilation {:?}",
                            params.output_padding, params.stride, params.dilation
                        ),
                    ));
                }
            }
        } else if params.output_padding.iter().any(|&v| v != 0) {
            return Err(bad(op, "output_padding is for transposed convolutions"));
        }
        if let Some(b) = &bias {
            if b.shape() != [cout] {
                return Err(bad(
                    op,
                    format!("bias {:?} does not match {cout} outputs", b.shape()),
                ));
            }
        }
        Ok(ConvNd {
            kind,
            in_channels: cin,
            out_channels: cout,
            kernel_size: s[2..].to_vec(),
            params,
            weight: Param::new(weight),
            bias: bias.map(Param::new),
            bn: None,
            relu: false,
            weight_fake_quant: None,
            freeze_bn: false,
            training: false,
            cache_x: None,
            cache_y: None,
            cache_fq: None,
            cache_qat: None,
        })
    }

    fn conv_f(&self, x: &Tensor, w: &Tensor, b: Option<&[f32]>) -> Result<Tensor> {
        if self.kind.transposed() {
            C::conv_transpose(x, w, b, &self.params)
        } else {
            C::conv(x, w, b, &self.params)
        }
    }

    fn conv_b(&self, x: &Tensor, w: &Tensor, gy: &Tensor) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
        if self.kind.transposed() {
            C::conv_transpose_backward(x, w, &self.params, gy)
        } else {
            C::conv_backward(x, w, &self.params, gy)
        }
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let dims = self.kind.dims();
        if x.ndim() != dims + 2 || x.shape()[1] != self.in_channels {
            return Err(bad(
                "ConvNd",
                format!(
                    "{} expects [N, {}, …] with {} dimensions, got {:?}",
                    self.kind.name(),
                    self.in_channels,
                    dims + 2,
                    x.shape()
                ),
            ));
        }
        Ok(())
    }

    pub fn forward(&mut self, x: Tensor) -> Result<Tensor> {
        self.check_input(&x)?;
        if self.weight_fake_quant.is_some() && self.bn.is_some() {
            return self.forward_bn_qat(x);
        }
        let w = match &mut self.weight_fake_quant {
            Some(fq) => {
                let o = fq.forward(&self.weight.value)?;
                let w = o.y.clone();
                self.cache_fq = self.training.then_some(FqCache {
                    w: o.y,
                    mask: o.mask,
                });
                w
            }
            None => self.weight.value.clone(),
        };
        let b = self.bias.as_ref().map(|b| b.value.data().to_vec());
        let mut y = self.conv_f(&x, &w, b.as_deref())?;
        if let Some(bn) = &mut self.bn {
            bn.training = self.training;
            y = bn.forward(y)?;
        }
        if self.relu {
            relu_inplace(&mut y);
        }
        if self.training {
            self.cache_x = Some(x);
            self.cache_y = self.relu.then(|| y.clone());
        }
        Ok(y)
    }

    fn forward_bn_qat(&mut self, x: Tensor) -> Result<Tensor> {
        let c = self.out_channels;
        let bn = self.bn.as_ref().expect("checked");
        let running_std: Vec<f32> = bn
            .running_var
            .data()
            .iter()
            .map(|v| (v + bn.eps).sqrt())
            .collect();
        let sf: Vec<f32> = (0..c)
            .map(|i| bn.weight.value.data()[i] / running_std[i])
            .collect();
        let per = self.weight.value.numel() / c;
        let mut ws = self.weight.value.clone();
        for (i, v) in ws.data_mut().iter_mut().enumerate() {
            *v *= sf[i / per];
        }
        let fq = self.weight_fake_quant.as_mut().expect("checked");
        let fqo = fq.forward(&ws)?;
        let conv_raw = self.conv_f(&x, &fqo.y, None)?;
        let mut y0 = conv_raw.clone();
        let vol: usize = y0.shape()[2..].iter().product();
        for (i, plane) in y0.data_mut().chunks_mut(vol.max(1)).enumerate() {
            let ch = i % c;
            let b = self.bias.as_ref().map_or(0.0, |b| b.value.data()[ch]);
            for v in plane {
                *v = *v / sf[ch] + b;
            }
        }
        let bn = self.bn.as_mut().expect("checked");
        let mut y = if self.training && self.freeze_bn {
            crate::layers::bn_eval_with_cache(bn, y0)?
        } else {
            bn.training = self.training;
            bn.forward(y0)?
        };
        if self.relu {
            relu_inplace(&mut y);
        }
        if self.training {
            self.cache_x = Some(x);
            self.cache_y = self.relu.then(|| y.clone());
            self.cache_fq = Some(FqCache {
                w: fqo.y,
                mask: fqo.mask,
            });
            self.cache_qat = Some(BnQatCache {
                scale_factor: sf,
                running_std,
                conv_raw,
            });
        }
        Ok(y)
    }

    fn backward_bn_qat(&mut self, mut g: Tensor) -> Result<Tensor> {
        let x = self
            .cache_x
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        if let Some(y) = self.cache_y.take() {
            relu_mask(&mut g, &y);
        }
        let fq = self.cache_fq.take().expect("cached with x");
        let qc = self.cache_qat.take().expect("cached with x");
        let c = self.out_channels;
        let dy0 = self.bn.as_mut().expect("qat conv-bn").backward(g)?;
        let vol: usize = dy0.shape()[2..].iter().product::<usize>().max(1);
        let mut draw = dy0.clone();
        let mut dsf = vec![0.0f32; c];
        let mut db = vec![0.0f32; c];
        for (i, (d, r)) in draw
            .data_mut()
            .chunks_mut(vol)
            .zip(qc.conv_raw.data().chunks(vol))
            .enumerate()
        {
            let ch = i % c;
            for (dv, rv) in d.iter_mut().zip(r) {
                db[ch] += *dv;
                dsf[ch] -= *dv * rv / (qc.scale_factor[ch] * qc.scale_factor[ch]);
                *dv /= qc.scale_factor[ch];
            }
        }
        let (dx, dws, _) = self.conv_b(&x, &fq.w, &draw)?;
        // Through the weight fake quant (its mask, or LSQ's gradients).
        let mut scaled = self.weight.value.clone();
        let per = scaled.numel() / c;
        for (i, v) in scaled.data_mut().iter_mut().enumerate() {
            *v *= qc.scale_factor[i / per];
        }
        let dws = Tensor::new(fq.w.shape().to_vec(), dws)?;
        let dws = self
            .weight_fake_quant
            .as_mut()
            .expect("qat")
            .backward(&scaled, &dws, &fq.mask)?;
        let mut dw = vec![0.0f32; dws.numel()];
        for (i, &d) in dws.data().iter().enumerate() {
            let ch = i / per;
            dw[i] = d * qc.scale_factor[ch];
            dsf[ch] += d * self.weight.value.data()[i];
        }
        let dgamma: Vec<f32> = (0..c).map(|ch| dsf[ch] / qc.running_std[ch]).collect();
        self.bn.as_mut().expect("qat").weight.accumulate(dgamma)?;
        self.weight.accumulate(dw)?;
        if let Some(b) = &mut self.bias {
            b.accumulate(db)?;
        }
        Ok(dx)
    }

    pub fn backward(&mut self, mut g: Tensor) -> Result<Tensor> {
        if self.weight_fake_quant.is_some() && self.bn.is_some() {
            return self.backward_bn_qat(g);
        }
        let x = self
            .cache_x
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        if let Some(y) = self.cache_y.take() {
            relu_mask(&mut g, &y);
        }
        if let Some(bn) = &mut self.bn {
            g = bn.backward(g)?;
        }
        let fq = self.cache_fq.take();
        let w = fq.as_ref().map_or(&self.weight.value, |c| &c.w).clone();
        let (dx, dw, db) = self.conv_b(&x, &w, &g)?;
        let dw = match (&fq, &mut self.weight_fake_quant) {
            (Some(c), Some(f)) => f
                .backward(
                    &self.weight.value,
                    &Tensor::new(w.shape().to_vec(), dw)?,
                    &c.mask,
                )?
                .into_data(),
            _ => dw,
        };
        self.weight.accumulate(dw)?;
        if let Some(b) = &mut self.bias {
            b.accumulate(db)?;
        }
        Ok(dx)
    }

    /// The weight and bias a quantized module holds: a live batch norm
    /// folded in (PyTorch's `fuse_conv_bn_weights`).
    pub fn folded_weights(&self) -> Result<(Tensor, Option<Vec<f32>>)> {
        let b = self.bias.as_ref().map(|b| b.value.data().to_vec());
        match &self.bn {
            Some(bn) if self.kind.transposed() => {
                let (w, b) = fuse_convtranspose_bn_weights(&self.weight.value, b.as_deref(), bn)?;
                Ok((w, Some(b)))
            }
            Some(bn) => {
                let (w, b) = fuse_conv_bn_weights(&self.weight.value, b.as_deref(), bn)?;
                Ok((w, Some(b)))
            }
            None => Ok((self.weight.value.clone(), b)),
        }
    }
}

/// PyTorch's `fuse_conv_bn_weights(..., transpose=True)`: the batch norm's
/// factor scales the weight along axis 1 (output channels per group).
pub fn fuse_convtranspose_bn_weights(
    w: &Tensor,
    b: Option<&[f32]>,
    bn: &BatchNorm2d,
) -> Result<(Tensor, Vec<f32>)> {
    let s = w.shape();
    if s.len() < 3 {
        return Err(bad("fuse", format!("transposed conv weight {s:?}")));
    }
    let (c, og) = (s[0], s[1]);
    let o = bn.num_features;
    if !o.is_multiple_of(og) || !c.is_multiple_of(o / og) {
        return Err(bad(
            "fuse",
            format!("batch norm has {o} features, transposed conv weight {s:?}"),
        ));
    }
    let groups = o / og;
    let cg = c / groups;
    let rsqrt: Vec<f32> = bn
        .running_var
        .data()
        .iter()
        .map(|v| 1.0 / (v + bn.eps).sqrt())
        .collect();
    let gamma = bn.weight.value.data();
    let k: usize = s[2..].iter().product();
    let mut wf = w.clone();
    for (i, chunk) in wf.data_mut().chunks_mut(k).enumerate() {
        // chunk i is weight[ci][oo]
        let ci = i / og;
        let oo = i % og;
        let gi = ci / cg;
        let oc = gi * og + oo;
        let f = gamma[oc] * rsqrt[oc];
        for v in chunk {
            *v *= f;
        }
    }
    let bf = (0..o)
        .map(|i| {
            let b0 = b.map_or(0.0, |b| b[i]);
            (b0 - bn.running_mean.data()[i]) * rsqrt[i] * gamma[i] + bn.bias.value.data()[i]
        })
        .collect();
    Ok((wf, bf))
}

impl Layer for ConvNd {
    fn type_name(&self) -> String {
        let n = self.kind.dims();
        if self.kind.transposed() {
            return self.kind.name().to_string();
        }
        let base = match (self.bn.is_some(), self.relu) {
            (false, false) => format!("Conv{n}d"),
            (false, true) => format!("ConvReLU{n}d"),
            (true, false) => format!("ConvBn{n}d"),
            (true, true) => format!("ConvBnReLU{n}d"),
        };
        if self.weight_fake_quant.is_some() {
            format!("QAT{base}")
        } else {
            base
        }
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::F(ConvNd::forward(self, x.float("ConvNd")?)?))
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        ConvNd::backward(self, g)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
        let frozen = self.freeze_bn;
        if let Some(bn) = &mut self.bn {
            bn.training = on && !frozen;
        }
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut v = vec![("weight".to_string(), &mut self.weight)];
        if let Some(b) = &mut self.bias {
            v.push(("bias".to_string(), b));
        }
        if let Some(bn) = &mut self.bn {
            v.push(("bn.weight".to_string(), &mut bn.weight));
            v.push(("bn.bias".to_string(), &mut bn.bias));
        }
        if let Some(fq) = &mut self.weight_fake_quant {
            for (n, p) in fq.params_mut() {
                v.push((format!("weight_fake_quant.{n}"), p));
            }
        }
        v
    }
    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        match &mut self.bn {
            Some(bn) => vec![
                ("bn.running_mean".to_string(), &mut bn.running_mean),
                ("bn.running_var".to_string(), &mut bn.running_var),
            ],
            None => Vec::new(),
        }
    }
    fn fake_quants_mut(&mut self) -> Vec<&mut FakeQuantize> {
        self.weight_fake_quant.iter_mut().collect()
    }
    fn weight(&self) -> Option<Tensor> {
        self.bn.is_none().then(|| self.weight.value.clone())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        out.f32("weight", &self.weight.value);
        let b = out.bias(self.bias.as_ref().map(|b| b.value.data()));
        let mut j =
            json!({ "bias": b, "params": convnd_json(&self.params), "freeze_bn": self.freeze_bn });
        if let Some(bn) = &self.bn {
            out.within("bn", |o| crate::resume::save_bn(bn, o));
        }
        if let Some(fq) = &self.weight_fake_quant {
            j["weight_fake_quant"] = out.within("weight_fake_quant", |o| {
                crate::resume::save_fake_quant(fq, o)
            })?;
        }
        Ok(j)
    }
}

pub(crate) fn convnd_json(p: &ConvNdParams) -> J {
    json!({"stride": p.stride, "padding": p.padding, "dilation": p.dilation,
           "output_padding": p.output_padding, "groups": p.groups})
}

fn usize_list(n: &Node, j: &J, k: &str, dims: usize) -> Result<Vec<usize>> {
    let v = j
        .get(k)
        .and_then(J::as_array)
        .ok_or_else(|| n.attr_error(&format!("params.{k}"), "not an array"))?;
    let out: Vec<usize> = v
        .iter()
        .map(|x| {
            x.as_u64()
                .filter(|&u| u <= i32::MAX as u64)
                .map(|u| u as usize)
        })
        .collect::<Option<_>>()
        .ok_or_else(|| {
            n.attr_error(
                &format!("params.{k}"),
                format!("expected integers in [0, {}]", i32::MAX),
            )
        })?;
    if out.len() != dims {
        return Err(n.attr_error(
            &format!("params.{k}"),
            format!("expected {dims} entries, got {}", out.len()),
        ));
    }
    Ok(out)
}

pub(crate) fn load_convnd_params(n: &Node, dims: usize) -> Result<ConvNdParams> {
    let j = n.field("params")?;
    let groups = j
        .get("groups")
        .and_then(J::as_u64)
        .filter(|&g| g > 0 && g <= i32::MAX as u64)
        .ok_or_else(|| n.attr_error("params.groups", "not a positive integer"))?
        as usize;
    Ok(ConvNdParams {
        stride: usize_list(n, j, "stride", dims)?,
        padding: usize_list(n, j, "padding", dims)?,
        dilation: usize_list(n, j, "dilation", dims)?,
        output_padding: usize_list(n, j, "output_padding", dims)?,
        groups,
    })
}

// ---------------------------------------------------------------- quantized

/// The packed weight of a [`QConvNd`].
#[derive(Debug, Clone)]
pub enum PackedNd {
    Conv1d(Arc<PackedConv1d>),
    Conv3d(Arc<PackedConv3d>),
    /// A transposed conv1d is a transposed conv2d of height 1.
    ConvTranspose1d(Arc<PackedConvTranspose2d>),
    ConvTranspose2d(Arc<PackedConvTranspose2d>),
    ConvTranspose3d(Arc<PackedConvTranspose3d>),
}

impl PackedNd {
    fn kind(&self) -> ConvNdKind {
        match self {
            PackedNd::Conv1d(_) => ConvNdKind::Conv1d,
            PackedNd::Conv3d(_) => ConvNdKind::Conv3d,
            PackedNd::ConvTranspose1d(_) => ConvNdKind::ConvTranspose1d,
            PackedNd::ConvTranspose2d(_) => ConvNdKind::ConvTranspose2d,
            PackedNd::ConvTranspose3d(_) => ConvNdKind::ConvTranspose3d,
        }
    }
    /// The int8 weight in PyTorch's layout.
    pub fn weight(&self) -> QTensor<i8> {
        match self {
            PackedNd::Conv1d(p) => p.weight(),
            PackedNd::Conv3d(p) => p.weight(),
            PackedNd::ConvTranspose1d(p) => {
                let w = p.weight();
                let s = w.shape();
                QTensor::with_qscheme(
                    vec![s[0], s[1], s[3]],
                    w.int_repr().to_vec(),
                    w.qparams().clone(),
                    w.qscheme(),
                )
                .expect("same data")
            }
            PackedNd::ConvTranspose2d(p) => p.weight().clone(),
            PackedNd::ConvTranspose3d(p) => p.weight().clone(),
        }
    }
    pub fn bias(&self) -> Option<&[f32]> {
        match self {
            PackedNd::Conv1d(p) => p.bias(),
            PackedNd::Conv3d(p) => p.bias(),
            PackedNd::ConvTranspose1d(p) | PackedNd::ConvTranspose2d(p) => p.bias(),
            PackedNd::ConvTranspose3d(p) => p.bias(),
        }
    }
    fn packed_for(&self) -> rquant_core::PathId {
        match self {
            PackedNd::Conv1d(p) => p.packed_for(),
            PackedNd::Conv3d(p) => p.packed_for(),
            PackedNd::ConvTranspose1d(p) | PackedNd::ConvTranspose2d(p) => p.packed_for(),
            PackedNd::ConvTranspose3d(p) => p.packed_for(),
        }
    }
    /// PyTorch-style parameters.
    pub fn params(&self) -> ConvNdParams {
        match self {
            PackedNd::Conv1d(p) => {
                let q = p.params();
                ConvNdParams {
                    stride: vec![q.stride],
                    padding: vec![q.padding],
                    dilation: vec![q.dilation],
                    output_padding: vec![0],
                    groups: q.groups,
                }
            }
            PackedNd::Conv3d(p) => {
                let q = p.params();
                ConvNdParams {
                    stride: q.stride.to_vec(),
                    padding: q.padding.to_vec(),
                    dilation: q.dilation.to_vec(),
                    output_padding: vec![0; 3],
                    groups: q.groups,
                }
            }
            PackedNd::ConvTranspose1d(p) => {
                let q = p.params();
                ConvNdParams {
                    stride: vec![q.stride[1]],
                    padding: vec![q.padding[1]],
                    dilation: vec![q.dilation[1]],
                    output_padding: vec![q.output_padding[1]],
                    groups: q.groups,
                }
            }
            PackedNd::ConvTranspose2d(p) => {
                let q = p.params();
                ConvNdParams {
                    stride: q.stride.to_vec(),
                    padding: q.padding.to_vec(),
                    dilation: q.dilation.to_vec(),
                    output_padding: q.output_padding.to_vec(),
                    groups: q.groups,
                }
            }
            PackedNd::ConvTranspose3d(p) => {
                let q = p.params();
                ConvNdParams {
                    stride: q.stride.to_vec(),
                    padding: q.padding.to_vec(),
                    dilation: q.dilation.to_vec(),
                    output_padding: q.output_padding.to_vec(),
                    groups: q.groups,
                }
            }
        }
    }
    /// Pack `w` (PyTorch's layout) for `engine`.
    pub fn pack(
        engine: &Engine,
        kind: ConvNdKind,
        w: QTensor<i8>,
        bias: Option<Vec<f32>>,
        p: &ConvNdParams,
    ) -> Result<PackedNd> {
        p.check("pack", kind.dims())?;
        let a3 = |v: &[usize]| -> [usize; 3] { [v[0], v[1], v[2]] };
        let a2 = |v: &[usize]| -> [usize; 2] { [v[0], v[1]] };
        Ok(match kind {
            ConvNdKind::Conv1d => PackedNd::Conv1d(Arc::new(engine.pack_conv1d(
                w,
                bias,
                Conv1dParams {
                    stride: p.stride[0],
                    padding: p.padding[0],
                    dilation: p.dilation[0],
                    groups: p.groups,
                },
            )?)),
            ConvNdKind::Conv3d => PackedNd::Conv3d(Arc::new(engine.pack_conv3d(
                w,
                bias,
                Conv3dParams {
                    stride: a3(&p.stride),
                    padding: a3(&p.padding),
                    dilation: a3(&p.dilation),
                    groups: p.groups,
                },
            )?)),
            ConvNdKind::ConvTranspose1d => {
                PackedNd::ConvTranspose1d(Arc::new(qops::pack_conv_transpose1d(
                    engine,
                    w,
                    bias,
                    p.stride[0],
                    p.padding[0],
                    p.output_padding[0],
                    p.dilation[0],
                    p.groups,
                )?))
            }
            ConvNdKind::ConvTranspose2d => {
                PackedNd::ConvTranspose2d(Arc::new(engine.pack_conv_transpose2d(
                    w,
                    bias,
                    rquant_core::ConvTranspose2dParams {
                        stride: a2(&p.stride),
                        padding: a2(&p.padding),
                        output_padding: a2(&p.output_padding),
                        dilation: a2(&p.dilation),
                        groups: p.groups,
                    },
                )?))
            }
            ConvNdKind::ConvTranspose3d => {
                PackedNd::ConvTranspose3d(Arc::new(qops::pack_conv_transpose3d(
                    engine,
                    w,
                    bias,
                    ConvTranspose3dParams {
                        stride: a3(&p.stride),
                        padding: a3(&p.padding),
                        output_padding: a3(&p.output_padding),
                        dilation: a3(&p.dilation),
                        groups: p.groups,
                    },
                )?))
            }
        })
    }
}

/// Static quantized `nnq.Conv1d` / `nniq.ConvReLU1d` / `nnq.Conv3d` /
/// `nniq.ConvReLU3d` / `nnq.ConvTranspose1d/2d/3d`.
#[derive(Clone)]
pub struct QConvNd {
    pub engine: Engine,
    pub packed: PackedNd,
    pub scale: f64,
    pub zero_point: i64,
    pub relu: bool,
}

impl fmt::Debug for QConvNd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(weight={:?}, {:?}, scale={}, zero_point={}, {:?})",
            self.type_name(),
            self.packed.weight().shape(),
            self.packed.params(),
            self.scale,
            self.zero_point,
            self.engine
        )
    }
}

fn observed(obs: Option<Observation>, what: &str) -> Result<Observation> {
    obs.ok_or_else(|| {
        NnError::module(
            "",
            format!("{what} needs an observation of its output (prepare the model first)"),
        )
    })
}

impl QConvNd {
    /// From an observed ConvNd (fused, QAT or plain; a live batch norm folded first).
    pub fn from_float(m: Module, obs: Option<Observation>, engine: &Engine) -> Result<Module> {
        let mut c: ConvNd = m.expect_type("QConvNd::from_float")?;
        let obs = observed(obs, c.kind.name())?;
        let (scale, zero_point) = obs.qparams()?;
        let (wf, bf) = c.folded_weights()?;
        if c.kind.transposed() && obs.qconfig.weight.observer_spec().kind.is_per_channel() {
            return Err(NnError::module(
                "",
                format!(
                    "{} weights must be per-tensor (PyTorch's transposed convolutions refuse per-channel weights): give it a qconfig with a per-tensor weight observer, e.g. default_qconfig",
                    c.kind.name()
                ),
            ));
        }
        let w = quantize_weight(&wf, &obs.qconfig.weight, c.weight_fake_quant.as_mut())?;
        Ok(QConvNd {
            engine: engine.clone(),
            packed: PackedNd::pack(engine, c.kind, w, bf, &c.params)?,
            scale,
            zero_point,
            relu: c.relu,
        }
        .into())
    }
    fn load(n: &mut Node) -> Result<Module> {
        let tag = n.type_name().to_string();
        let base = tag.trim_start_matches("Quantized").replace("ReLU", "");
        let kind = ConvNdKind::from_name(&base)
            .ok_or_else(|| n.attr_error("type", format!("not a convolution: {tag}")))?;
        let p = load_convnd_params(n, kind.dims())?;
        let w = n.qweight()?;
        let b = n.bias(n.get_bool("bias")?)?;
        let packed = PackedNd::pack(n.engine(), kind, w, b, &p)
            .map_err(|e| n.tensor_error("weight", e.to_string()))?;
        Ok(QConvNd {
            engine: n.engine().clone(),
            packed,
            scale: n.scale()?,
            zero_point: n.zero_point()?,
            relu: tag.contains("ReLU"),
        }
        .into())
    }
}

impl Layer for QConvNd {
    fn type_name(&self) -> String {
        let k = self.packed.kind();
        if self.relu {
            format!("QuantizedConvReLU{}d", k.dims())
        } else {
            format!("Quantized{}", k.name())
        }
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let q = x.quant("QuantizedConvNd")?;
        let (s, z, e) = (self.scale, self.zero_point, &self.engine);
        Ok(Value::Q(match &self.packed {
            PackedNd::Conv1d(p) => e.conv1d(&q, p, s, z, self.relu)?,
            PackedNd::Conv3d(p) => e.conv3d(&q, p, s, z, self.relu)?,
            PackedNd::ConvTranspose1d(p) => qops::conv_transpose1d(e, &q, p, s, z)?,
            PackedNd::ConvTranspose2d(p) => e.conv_transpose2d(&q, p, s, z)?,
            PackedNd::ConvTranspose3d(p) => qops::conv_transpose3d(e, &q, p, s, z)?,
        }))
    }
    fn weight(&self) -> Option<Tensor> {
        Some(dequantize(&self.packed.weight()))
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        if self.packed.packed_for() != engine.path() {
            self.packed = PackedNd::pack(
                engine,
                self.packed.kind(),
                self.packed.weight(),
                self.packed.bias().map(<[f32]>::to_vec),
                &self.packed.params(),
            )?;
        }
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        let qs = out.qweight(&self.packed.weight())?;
        let b = out.bias(self.packed.bias());
        out.qparams(self.scale, self.zero_point);
        Ok(json!({"qscheme": qs, "bias": b, "params": convnd_json(&self.packed.params())}))
    }
}

// ---------------------------------------------------------------- registration

pub(crate) fn register_mappings(m: &mut Mappings) {
    fn qat(mut m: Module, qc: &QConfig) -> Result<Module> {
        let fq = qc.weight.build_fake_quant()?;
        let name = m.type_name();
        let c = m
            .downcast_mut::<ConvNd>()
            .ok_or_else(|| NnError::module("", format!("{name} has no QAT form")))?;
        c.weight_fake_quant = Some(fq);
        Ok(m)
    }
    for n in ["1d", "3d"] {
        for base in ["Conv", "ConvReLU", "ConvBn", "ConvBnReLU"] {
            let t = format!("{base}{n}");
            // PyTorch's QAT table has no Conv1d / ConvReLU1d: prepare_qat
            // leaves them float (only their output is fake quantized).
            if n == "3d" || base.starts_with("ConvBn") {
                m.qat.insert(t.clone(), Arc::new(qat));
            }
            m.set_static(&t, true, QConvNd::from_float);
            m.set_static(&format!("QAT{t}"), true, QConvNd::from_float);
        }
    }
    for t in ["ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"] {
        m.set_static(t, true, QConvNd::from_float);
    }
}

pub(crate) fn register_loaders(r: &mut ModuleRegistry) {
    fn float(n: &mut Node) -> Result<Module> {
        let tag = n.type_name().to_string();
        let qat = tag.starts_with("QAT");
        let t = tag.trim_start_matches("QAT");
        let relu = t.contains("ReLU");
        let bn = t.contains("Bn");
        let base = t.replace("ReLU", "").replace("Bn", "");
        let kind = ConvNdKind::from_name(&base)
            .ok_or_else(|| n.attr_error("type", format!("not a convolution: {tag}")))?;
        let p = load_convnd_params(n, kind.dims())?;
        let b = n.bias(n.get_bool("bias")?)?;
        let mut c = ConvNd::from_weights(
            kind,
            n.f32("weight")?,
            b.map(|b| Tensor::new([b.len()], b)).transpose()?,
            p,
        )
        .map_err(|e| n.tensor_error("", e.to_string()))?;
        c.relu = relu;
        c.freeze_bn = n.get_bool_opt("freeze_bn")?.unwrap_or(false);
        if bn {
            let mut b = crate::resume::load_bn(n, "bn", c.out_channels)?;
            b.one_d = kind.dims() == 1;
            b.three_d = kind.dims() == 3;
            c.bn = Some(b);
        }
        if qat {
            c.weight_fake_quant = Some(crate::resume::load_fake_quant(
                n,
                "weight_fake_quant",
                n.field("weight_fake_quant")?,
            )?);
        }
        Ok(c.into())
    }
    for n in ["1d", "3d"] {
        for base in ["Conv", "ConvReLU", "ConvBn", "ConvBnReLU"] {
            r.register(&format!("{base}{n}"), float);
            r.register(&format!("QAT{base}{n}"), float);
        }
        r.register(&format!("QuantizedConv{n}"), QConvNd::load);
        r.register(&format!("QuantizedConvReLU{n}"), QConvNd::load);
    }
    for t in ["ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"] {
        r.register(t, float);
        r.register(&format!("Quantized{t}"), QConvNd::load);
    }
}
