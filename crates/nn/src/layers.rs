//! Float layers with forward and backward: Linear, Conv2d (optionally with a
//! fused BatchNorm2d / ReLU and, after `prepare_qat`, a weight fake-quant),
//! BatchNorm2d, activations, pooling, Flatten, Dropout.

use rquant_core::qconfig::{FakeQuantize, QConfig};
use rquant_core::{BinaryOp, Conv2dParams, Engine, QTensor, Tensor};
use serde_json::{json, Value as J};

use crate::error::{bad, NnError, Result};
use crate::format::Saver;
use crate::functional as F;
use crate::mapping::Mappings;
use crate::module::{Layer, Module};
pub use crate::param::{Param, Rng};
use crate::post::Observation;
use crate::registry::{ModuleRegistry, Node};
use crate::value::Value;

fn init_uniform(shape: Vec<usize>, bound: f32, rng: &mut Rng) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape, (0..n).map(|_| rng.sym(bound)).collect()).expect("shape")
}

fn relu_inplace(t: &mut Tensor) {
    for v in t.data_mut() {
        *v = v.max(0.0);
    }
}

/// `g *= (y > 0)`.
fn relu_mask(g: &mut Tensor, y: &Tensor) {
    for (gv, &yv) in g.data_mut().iter_mut().zip(y.data()) {
        if yv <= 0.0 {
            *gv = 0.0;
        }
    }
}

/// Weight fake-quant state saved by the forward pass for the backward pass.
#[derive(Debug, Clone)]
pub(crate) struct FqCache {
    pub w: Tensor,
    pub mask: Vec<bool>,
}

fn fake_quant_weight(fq: &mut FakeQuantize, w: &Tensor, training: bool) -> Result<FqCache> {
    let _ = training;
    let out = fq.forward(w)?;
    Ok(FqCache {
        w: out.y,
        mask: out.mask,
    })
}

// ---------------------------------------------------------------- Linear

/// `nn.Linear`; with `relu` it is `nni.LinearReLU`; with `weight_fake_quant`
/// it is the QAT module (`nnqat.Linear` / `nniqat.LinearReLU`).
#[derive(Debug, Clone)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub weight: Param,
    pub bias: Option<Param>,
    pub relu: bool,
    pub weight_fake_quant: Option<FakeQuantize>,
    /// `nni.LinearBn1d` (fused by `fuse_modules_qat`); with a weight fake
    /// quant it is `nniqat.LinearBn1d` (the batch norm folded into the
    /// weight in training, as `_forward_approximate`).
    pub bn: Option<BatchNorm2d>,
    /// QAT: BN statistics frozen (`freeze_bn_stats`).
    pub freeze_bn: bool,
    pub(crate) training: bool,
    cache_x: Option<Tensor>,
    cache_y: Option<Tensor>,
    cache_fq: Option<FqCache>,
    cache_bn: Option<(Vec<f32>, Vec<f32>, Tensor, Tensor)>,
}

impl Linear {
    /// PyTorch's default initialisation (uniform ±1/sqrt(in_features)), seeded.
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut Rng) -> Self {
        let bound = 1.0 / (in_features as f32).sqrt();
        let w = init_uniform(vec![out_features, in_features], bound, rng);
        let b = bias.then(|| Param::new(init_uniform(vec![out_features], bound, rng)));
        Self::from_weights(w, b.map(|p| p.value)).expect("shape")
    }
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        if weight.ndim() != 2 {
            return Err(bad(
                "Linear",
                format!("weight must be 2-D, got {:?}", weight.shape()),
            ));
        }
        let (o, i) = (weight.shape()[0], weight.shape()[1]);
        if let Some(b) = &bias {
            if b.shape() != [o] {
                return Err(bad(
                    "Linear",
                    format!("bias {:?} does not match {o} outputs", b.shape()),
                ));
            }
        }
        Ok(Linear {
            in_features: i,
            out_features: o,
            weight: Param::new(weight),
            bias: bias.map(Param::new),
            relu: false,
            weight_fake_quant: None,
            bn: None,
            freeze_bn: false,
            training: false,
            cache_x: None,
            cache_y: None,
            cache_fq: None,
            cache_bn: None,
        })
    }
    /// The weight and bias a quantized module holds: a live batch norm
    /// folded in (PyTorch's `fuse_linear_bn_weights`).
    pub fn folded_weights(&self) -> Result<(Tensor, Option<Vec<f32>>)> {
        let b = self.bias.as_ref().map(|b| b.value.data().to_vec());
        match &self.bn {
            Some(bn) => {
                let (w, b) = fuse_linear_bn_weights(&self.weight.value, b.as_deref(), bn)?;
                Ok((w, Some(b)))
            }
            None => Ok((self.weight.value.clone(), b)),
        }
    }

    /// `nniqat.LinearBn1d._forward_approximate` (and the float `LinearBn1d`).
    fn forward_bn(&mut self, x: Tensor) -> Result<Tensor> {
        if x.ndim() != 2 {
            return Err(bad(
                "LinearBn1d",
                format!("expects [N, in_features] input, got {:?}", x.shape()),
            ));
        }
        let o = self.out_features;
        let Some(fq) = &mut self.weight_fake_quant else {
            // Float LinearBn1d: linear, then the batch norm.
            let b = self.bias.as_ref().map(|b| b.value.data());
            let y0 = F::linear(&x, self.weight.value.data(), o, self.in_features, b)?;
            let bn = self.bn.as_mut().expect("checked");
            bn.training = self.training && !self.freeze_bn;
            let y = bn.forward(y0)?;
            if self.training {
                self.cache_x = Some(x);
            }
            return Ok(y);
        };
        let bn = self.bn.as_ref().expect("checked");
        let running_std: Vec<f32> = bn
            .running_var
            .data()
            .iter()
            .map(|v| (v + bn.eps).sqrt())
            .collect();
        let sf: Vec<f32> = (0..o)
            .map(|i| bn.weight.value.data()[i] / running_std[i])
            .collect();
        let k = self.in_features;
        let mut ws = self.weight.value.clone();
        for (i, v) in ws.data_mut().iter_mut().enumerate() {
            *v *= sf[i / k];
        }
        let fqo = fq.forward(&ws)?;
        let raw = F::linear(&x, fqo.y.data(), o, k, None)?;
        let mut y0 = raw.clone();
        for (i, v) in y0.data_mut().iter_mut().enumerate() {
            let ch = i % o;
            let b = self.bias.as_ref().map_or(0.0, |b| b.value.data()[ch]);
            *v = *v / sf[ch] + b;
        }
        let bn = self.bn.as_mut().expect("checked");
        let y = if self.training && self.freeze_bn {
            bn_eval_with_cache(bn, y0)?
        } else {
            bn.training = self.training;
            bn.forward(y0)?
        };
        if self.training {
            self.cache_x = Some(x);
            self.cache_fq = Some(FqCache {
                w: fqo.y,
                mask: fqo.mask,
            });
            self.cache_bn = Some((sf, running_std, raw, ws));
        }
        Ok(y)
    }

    fn backward_bn(&mut self, g: Tensor) -> Result<Tensor> {
        let x = self
            .cache_x
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        let (o, k) = (self.out_features, self.in_features);
        let dy0 = self.bn.as_mut().expect("bn").backward(g)?;
        let Some((sf, running_std, raw, scaled)) = self.cache_bn.take() else {
            let (dx, dw, db) = F::linear_backward(&x, self.weight.value.data(), o, k, &dy0, true)?;
            self.weight.accumulate(dw)?;
            if let Some(b) = &mut self.bias {
                b.accumulate(db)?;
            }
            return Ok(dx.expect("requested"));
        };
        let fq = self.cache_fq.take().expect("cached with x");
        let mut draw = dy0.clone();
        let mut dsf = vec![0.0f32; o];
        let mut db = vec![0.0f32; o];
        for (i, (dv, rv)) in draw.data_mut().iter_mut().zip(raw.data()).enumerate() {
            let ch = i % o;
            db[ch] += *dv;
            dsf[ch] -= *dv * rv / (sf[ch] * sf[ch]);
            *dv /= sf[ch];
        }
        let (dx, dws, _) = F::linear_backward(&x, fq.w.data(), o, k, &draw, true)?;
        let dws = self.weight_fake_quant.as_mut().expect("qat").backward(
            &scaled,
            &Tensor::new([o, k], dws)?,
            &fq.mask,
        )?;
        let mut dw = vec![0.0f32; o * k];
        for (i, &d) in dws.data().iter().enumerate() {
            let ch = i / k;
            dw[i] = d * sf[ch];
            dsf[ch] += d * self.weight.value.data()[i];
        }
        let dgamma: Vec<f32> = (0..o).map(|c| dsf[c] / running_std[c]).collect();
        self.bn.as_mut().expect("bn").weight.accumulate(dgamma)?;
        self.weight.accumulate(dw)?;
        if let Some(b) = &mut self.bias {
            b.accumulate(db)?;
        }
        Ok(dx.expect("requested"))
    }

    pub fn forward(&mut self, x: Tensor) -> Result<Tensor> {
        if self.bn.is_some() {
            return self.forward_bn(x);
        }
        let w = match &mut self.weight_fake_quant {
            Some(fq) => {
                let c = fake_quant_weight(fq, &self.weight.value, self.training)?;
                let w = c.w.clone();
                self.cache_fq = self.training.then_some(c);
                w
            }
            None => self.weight.value.clone(),
        };
        let b = self.bias.as_ref().map(|b| b.value.data());
        let mut y = F::linear(&x, w.data(), self.out_features, self.in_features, b)?;
        if self.relu {
            relu_inplace(&mut y);
        }
        if self.training {
            self.cache_x = Some(x);
            self.cache_y = self.relu.then(|| y.clone());
        }
        Ok(y)
    }
    pub fn backward(&mut self, mut g: Tensor) -> Result<Tensor> {
        if self.bn.is_some() {
            return self.backward_bn(g);
        }
        let x = self
            .cache_x
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        if let Some(y) = self.cache_y.take() {
            relu_mask(&mut g, &y);
        }
        let fq = self.cache_fq.take();
        let w = fq.as_ref().map_or(&self.weight.value, |c| &c.w);
        let (dx, dw, db) =
            F::linear_backward(&x, w.data(), self.out_features, self.in_features, &g, true)?;
        let dw = match (&fq, &mut self.weight_fake_quant) {
            (Some(c), Some(f)) => f
                .backward(
                    &self.weight.value,
                    &Tensor::new(self.weight.value.shape().to_vec(), dw)?,
                    &c.mask,
                )?
                .into_data(),
            _ => dw,
        };
        self.weight.accumulate(dw)?;
        if let Some(b) = &mut self.bias {
            b.accumulate(db)?;
        }
        Ok(dx.expect("requested"))
    }
}

// ---------------------------------------------------------------- BatchNorm2d

/// `nn.BatchNorm2d` (affine, running stats, momentum 0.1); with `relu` it is
/// `nni.BNReLU2d`.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    pub num_features: usize,
    pub eps: f32,
    pub momentum: f32,
    pub weight: Param,
    pub bias: Param,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: i64,
    pub relu: bool,
    /// `nn.BatchNorm1d` (2-D / 3-D input).
    pub one_d: bool,
    /// `nn.BatchNorm3d` (5-D input); with `relu` it is `nni.BNReLU3d`.
    pub three_d: bool,
    pub(crate) training: bool,
    cache: Option<BnCache>,
}

#[derive(Debug, Clone)]
struct BnCache {
    xhat: Tensor,
    inv_std: Vec<f32>,
    batch_stats: bool,
    y: Option<Tensor>,
}

impl BatchNorm2d {
    pub fn new(num_features: usize) -> Self {
        BatchNorm2d {
            num_features,
            eps: 1e-5,
            momentum: 0.1,
            weight: Param::new(Tensor::new([num_features], vec![1.0; num_features]).unwrap()),
            bias: Param::new(Tensor::zeros([num_features])),
            running_mean: Tensor::zeros([num_features]),
            running_var: Tensor::new([num_features], vec![1.0; num_features]).unwrap(),
            num_batches_tracked: 0,
            relu: false,
            one_d: false,
            three_d: false,
            training: false,
            cache: None,
        }
    }
    fn check(&self, x: &Tensor) -> Result<()> {
        if x.ndim() != 4 || x.shape()[1] != self.num_features {
            return Err(bad(
                "BatchNorm2d",
                format!(
                    "expected [N, {}, H, W], got {:?}",
                    self.num_features,
                    x.shape()
                ),
            ));
        }
        Ok(())
    }
    /// `nn.BatchNorm1d`: the same module on `[N, C]` or `[N, C, L]` input.
    pub fn new_1d(num_features: usize) -> Self {
        BatchNorm2d {
            one_d: true,
            ..Self::new(num_features)
        }
    }
    /// `nn.BatchNorm3d`: the same module on `[N, C, D, H, W]` input.
    pub fn new_3d(num_features: usize) -> Self {
        BatchNorm2d {
            three_d: true,
            ..Self::new(num_features)
        }
    }
    /// The input as `[N, C, L, 1]` for the 1-d and 3-d forms.
    fn flat_shape(&self, s: &[usize]) -> Option<[usize; 4]> {
        let ok = (self.one_d && (s.len() == 2 || s.len() == 3)) || (self.three_d && s.len() == 5);
        ok.then(|| [s[0], s[1], s[2..].iter().product(), 1])
    }
    /// Forward (batch statistics in training mode, running ones in eval).
    pub fn forward(&mut self, x: Tensor) -> Result<Tensor> {
        if let Some(f) = self.flat_shape(x.shape()) {
            let s = x.shape().to_vec();
            let y = self.forward(x.reshape(f)?)?;
            return Ok(y.reshape(s)?);
        }
        self.check(&x)?;
        let c = self.num_features;
        let batch_stats = self.training;
        let (mean, var) = if batch_stats {
            let (mean, var) = F::channel_stats(&x)?;
            let n = x.numel() / c;
            let unbias = if n > 1 {
                n as f32 / (n as f32 - 1.0)
            } else {
                1.0
            };
            let m = self.momentum;
            for ch in 0..c {
                let rm = &mut self.running_mean.data_mut()[ch];
                *rm = (1.0 - m) * *rm + m * mean[ch];
                let rv = &mut self.running_var.data_mut()[ch];
                *rv = (1.0 - m) * *rv + m * var[ch] * unbias;
            }
            self.num_batches_tracked += 1;
            (mean, var)
        } else {
            (
                self.running_mean.data().to_vec(),
                self.running_var.data().to_vec(),
            )
        };
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        let scale: Vec<f32> = (0..c)
            .map(|i| inv_std[i] * self.weight.value.data()[i])
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|i| self.bias.value.data()[i] - mean[i] * scale[i])
            .collect();
        let mut y = F::channel_affine(&x, &scale, &shift)?;
        if self.relu {
            relu_inplace(&mut y);
        }
        if self.training {
            let zeros = vec![0.0; c];
            let neg: Vec<f32> = (0..c).map(|i| -mean[i] * inv_std[i]).collect();
            let xhat = F::channel_affine(&x, &inv_std, &neg)?;
            let _ = zeros;
            self.cache = Some(BnCache {
                xhat,
                inv_std,
                batch_stats,
                y: self.relu.then(|| y.clone()),
            });
        }
        Ok(y)
    }
    pub fn backward(&mut self, mut g: Tensor) -> Result<Tensor> {
        if let Some(f) = self.flat_shape(g.shape()) {
            let s = g.shape().to_vec();
            let dx = self.backward(g.reshape(f)?)?;
            return Ok(dx.reshape(s)?);
        }
        let cache = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        if let Some(y) = &cache.y {
            relu_mask(&mut g, y);
        }
        let c = self.num_features;
        let hw = g.shape()[2] * g.shape()[3];
        let n = g.shape()[0];
        let cnt = (n * hw) as f32;
        let (mut dgamma, mut dbeta) = (vec![0.0f32; c], vec![0.0f32; c]);
        for b in 0..n {
            for ch in 0..c {
                let r = (b * c + ch) * hw..(b * c + ch + 1) * hw;
                for (gv, xh) in g.data()[r.clone()].iter().zip(&cache.xhat.data()[r]) {
                    dgamma[ch] += gv * xh;
                    dbeta[ch] += gv;
                }
            }
        }
        let gamma = self.weight.value.data();
        let mut dx = vec![0.0f32; g.numel()];
        for b in 0..n {
            for ch in 0..c {
                let r = (b * c + ch) * hw..(b * c + ch + 1) * hw;
                let k = gamma[ch] * cache.inv_std[ch];
                for ((d, gv), xh) in dx[r.clone()]
                    .iter_mut()
                    .zip(&g.data()[r.clone()])
                    .zip(&cache.xhat.data()[r])
                {
                    *d = if cache.batch_stats {
                        k * (gv - dbeta[ch] / cnt - xh * dgamma[ch] / cnt)
                    } else {
                        k * gv
                    };
                }
            }
        }
        self.weight.accumulate(dgamma)?;
        self.bias.accumulate(dbeta)?;
        Ok(Tensor::new(g.shape().to_vec(), dx)?)
    }
}

// ---------------------------------------------------------------- Conv2d

/// `nn.Conv2d`; `bn`/`relu` make it `nni.ConvBn2d`, `ConvBnReLU2d`,
/// `ConvReLU2d`; with `weight_fake_quant` it is the QAT module (ConvBn QAT
/// modules fold the batch norm into the weight in training, as
/// `nniqat.ConvBn2d._forward_approximate`).
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel_size: [usize; 2],
    pub params: Conv2dParams,
    pub weight: Param,
    pub bias: Option<Param>,
    pub bn: Option<BatchNorm2d>,
    pub relu: bool,
    /// A fused clamp `[min, max]` after the (batch norm and) conv: ReLU6
    /// (`[0, 6]`) or `Hardtanh(min, max)` fused by `fuse_modules` — beyond
    /// PyTorch, whose eager fusion has no conv + ReLU6. Exclusive with `relu`.
    pub clamp: Option<(f32, f32)>,
    pub weight_fake_quant: Option<FakeQuantize>,
    /// QAT: BN statistics frozen (`freeze_bn_stats`).
    pub freeze_bn: bool,
    pub(crate) training: bool,
    cache_x: Option<Tensor>,
    cache_y: Option<Tensor>,
    cache_fq: Option<FqCache>,
    cache_qat: Option<ConvBnQatCache>,
}

#[derive(Debug, Clone)]
struct ConvBnQatCache {
    /// gamma / running_std per channel.
    scale_factor: Vec<f32>,
    running_std: Vec<f32>,
    /// conv(x, fq(w * sf)) before the division.
    conv_raw: Tensor,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; 2],
        params: Conv2dParams,
        bias: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        let fan_in = in_channels / params.groups.max(1) * kernel_size[0] * kernel_size[1];
        let bound = 1.0 / (fan_in as f32).sqrt();
        let w = init_uniform(
            vec![
                out_channels,
                in_channels / params.groups.max(1),
                kernel_size[0],
                kernel_size[1],
            ],
            bound,
            rng,
        );
        let b = bias.then(|| init_uniform(vec![out_channels], bound, rng));
        Self::from_weights(w, b, params)
    }
    pub fn from_weights(
        weight: Tensor,
        bias: Option<Tensor>,
        params: Conv2dParams,
    ) -> Result<Self> {
        let s = weight.shape().to_vec();
        if s.len() != 4 || params.groups == 0 || !s[0].is_multiple_of(params.groups) {
            return Err(bad(
                "Conv2d",
                format!(
                    "weight {s:?} must be [O, I/groups, kH, kW] with groups {} dividing O",
                    params.groups
                ),
            ));
        }
        if let Some(b) = &bias {
            if b.shape() != [s[0]] {
                return Err(bad(
                    "Conv2d",
                    format!("bias {:?} does not match {} outputs", b.shape(), s[0]),
                ));
            }
        }
        Ok(Conv2d {
            in_channels: s[1] * params.groups,
            out_channels: s[0],
            kernel_size: [s[2], s[3]],
            params,
            weight: Param::new(weight),
            bias: bias.map(Param::new),
            bn: None,
            relu: false,
            clamp: None,
            weight_fake_quant: None,
            freeze_bn: false,
            training: false,
            cache_x: None,
            cache_y: None,
            cache_fq: None,
            cache_qat: None,
        })
    }

    pub fn forward(&mut self, x: Tensor) -> Result<Tensor> {
        if self.weight_fake_quant.is_some() && self.bn.is_some() {
            return self.forward_conv_bn_qat(x);
        }
        let w = match &mut self.weight_fake_quant {
            Some(fq) => {
                let c = fake_quant_weight(fq, &self.weight.value, self.training)?;
                let w = c.w.clone();
                self.cache_fq = self.training.then_some(c);
                w
            }
            None => self.weight.value.clone(),
        };
        let b = self.bias.as_ref().map(|b| b.value.data());
        let mut y = F::conv2d(&x, w.data(), w.shape(), b, self.params)?;
        if let Some(bn) = &mut self.bn {
            bn.training = self.training;
            y = bn.forward(y)?;
        }
        self.activate(&mut y);
        if self.training {
            self.cache_x = Some(x);
            self.cache_y = (self.relu || self.clamp.is_some()).then(|| y.clone());
        }
        Ok(y)
    }

    /// The fused activation: ReLU or the clamp.
    fn activate(&self, y: &mut Tensor) {
        if self.relu {
            relu_inplace(y);
        }
        if let Some((lo, hi)) = self.clamp {
            for v in y.data_mut() {
                *v = v.clamp(lo, hi);
            }
        }
    }

    /// The fused activation's gradient mask, from its output `y`.
    fn activation_mask(&self, g: &mut Tensor, y: &Tensor) {
        match self.clamp {
            Some((lo, hi)) => {
                for (gv, &yv) in g.data_mut().iter_mut().zip(y.data()) {
                    if yv <= lo || yv >= hi {
                        *gv = 0.0;
                    }
                }
            }
            None => relu_mask(g, y),
        }
    }

    /// `nniqat.ConvBn2d._forward_approximate`: fold gamma / running_std into
    /// the weight, fake-quantize it, convolve, divide the scale back out,
    /// add the conv bias, then the batch norm (batch statistics unless frozen).
    fn forward_conv_bn_qat(&mut self, x: Tensor) -> Result<Tensor> {
        let bn = self.bn.as_mut().expect("checked");
        let c = self.out_channels;
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
        let fqo = fake_quant_weight(fq, &ws, self.training)?;
        let conv_raw = F::conv2d(&x, fqo.w.data(), fqo.w.shape(), None, self.params)?;
        let mut y0 = conv_raw.clone();
        let hw = y0.shape()[2] * y0.shape()[3];
        for (i, plane) in y0.data_mut().chunks_mut(hw).enumerate() {
            let ch = i % c;
            let b = self.bias.as_ref().map_or(0.0, |b| b.value.data()[ch]);
            for v in plane {
                *v = *v / sf[ch] + b;
            }
        }
        let mut y = if self.training && self.freeze_bn {
            bn_eval_with_cache(bn, y0)?
        } else {
            bn.training = self.training;
            bn.forward(y0)?
        };
        self.activate(&mut y);
        if self.training {
            self.cache_x = Some(x);
            self.cache_y = (self.relu || self.clamp.is_some()).then(|| y.clone());
            self.cache_fq = Some(FqCache {
                w: fqo.w,
                mask: fqo.mask,
            });
            self.cache_qat = Some(ConvBnQatCache {
                scale_factor: sf,
                running_std,
                conv_raw,
            });
        }
        Ok(y)
    }

    fn backward_conv_bn_qat(&mut self, mut g: Tensor) -> Result<Tensor> {
        let x = self
            .cache_x
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        if let Some(y) = self.cache_y.take() {
            self.activation_mask(&mut g, &y);
        }
        let fq = self.cache_fq.take().expect("cached with x");
        let qc = self.cache_qat.take().expect("cached with x");
        let c = self.out_channels;
        let bn = self.bn.as_mut().expect("qat conv-bn");
        let gamma_before = bn.weight.grad.clone();
        let dy0 = bn.backward(g)?;
        let hw = dy0.shape()[2] * dy0.shape()[3];
        // y0 = raw / sf + b
        let mut draw = dy0.clone();
        let mut dsf = vec![0.0f32; c];
        let mut db = vec![0.0f32; c];
        for (i, (d, r)) in draw
            .data_mut()
            .chunks_mut(hw)
            .zip(qc.conv_raw.data().chunks(hw))
            .enumerate()
        {
            let ch = i % c;
            for (dv, rv) in d.iter_mut().zip(r) {
                db[ch] += *dv;
                dsf[ch] -= *dv * rv / (qc.scale_factor[ch] * qc.scale_factor[ch]);
                *dv /= qc.scale_factor[ch];
            }
        }
        let (dx, dws, _) =
            F::conv2d_backward(&x, fq.w.data(), fq.w.shape(), self.params, &draw, true)?;
        let per = self.weight.value.numel() / c;
        let mut scaled = self.weight.value.clone();
        for (i, v) in scaled.data_mut().iter_mut().enumerate() {
            *v *= qc.scale_factor[i / per];
        }
        let dws = self.weight_fake_quant.as_mut().expect("qat").backward(
            &scaled,
            &Tensor::new(fq.w.shape().to_vec(), dws)?,
            &fq.mask,
        )?;
        let mut dw = vec![0.0f32; dws.numel()];
        for (i, &d) in dws.data().iter().enumerate() {
            let ch = i / per;
            dw[i] = d * qc.scale_factor[ch];
            dsf[ch] += d * self.weight.value.data()[i];
        }
        // sf = gamma / running_std
        let dgamma: Vec<f32> = (0..c).map(|ch| dsf[ch] / qc.running_std[ch]).collect();
        let _ = gamma_before;
        bn.weight.accumulate(dgamma)?;
        self.weight.accumulate(dw)?;
        if let Some(b) = &mut self.bias {
            b.accumulate(db)?;
        }
        Ok(dx.expect("requested"))
    }

    pub fn backward(&mut self, mut g: Tensor) -> Result<Tensor> {
        if self.weight_fake_quant.is_some() && self.bn.is_some() {
            return self.backward_conv_bn_qat(g);
        }
        let x = self
            .cache_x
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        if let Some(y) = self.cache_y.take() {
            self.activation_mask(&mut g, &y);
        }
        if let Some(bn) = &mut self.bn {
            g = bn.backward(g)?;
        }
        let fq = self.cache_fq.take();
        let w = fq.as_ref().map_or(&self.weight.value, |c| &c.w);
        let (dx, dw, db) = F::conv2d_backward(&x, w.data(), w.shape(), self.params, &g, true)?;
        let dw = match (&fq, &mut self.weight_fake_quant) {
            (Some(c), Some(f)) => f
                .backward(
                    &self.weight.value,
                    &Tensor::new(self.weight.value.shape().to_vec(), dw)?,
                    &c.mask,
                )?
                .into_data(),
            _ => dw,
        };
        self.weight.accumulate(dw)?;
        if let Some(b) = &mut self.bias {
            b.accumulate(db)?;
        }
        Ok(dx.expect("requested"))
    }
}

/// Eval-mode batch norm that still records what the backward pass needs.
pub(crate) fn bn_eval_with_cache(bn: &mut BatchNorm2d, y0: Tensor) -> Result<Tensor> {
    let relu = bn.relu;
    bn.relu = false;
    bn.training = false;
    let out = bn.forward(y0.clone());
    bn.relu = relu;
    let out = out?;
    let c = bn.num_features;
    let inv_std: Vec<f32> = bn
        .running_var
        .data()
        .iter()
        .map(|v| 1.0 / (v + bn.eps).sqrt())
        .collect();
    let neg: Vec<f32> = (0..c)
        .map(|i| -bn.running_mean.data()[i] * inv_std[i])
        .collect();
    let xhat = F::channel_affine(&y0, &inv_std, &neg)?;
    bn.cache = Some(BnCache {
        xhat,
        inv_std,
        batch_stats: false,
        y: None,
    });
    Ok(out)
}

// ---------------------------------------------------------------- element-wise

fn no_engine(op: &str) -> NnError {
    NnError::module(
        "",
        format!("{op} on a quantized input needs an engine: convert the model, load it with an engine, or call rquant_nn::to_engine"),
    )
}

/// Element-wise activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActKind {
    ReLU,
    ReLU6,
    Hardswish,
}

#[derive(Debug, Clone)]
pub struct Activation {
    pub kind: ActKind,
    /// The engine quantized inputs run on (set by `convert`, `to_engine`
    /// and loading; PyTorch keeps these float modules in quantized models).
    pub engine: Option<Engine>,
    pub(crate) training: bool,
    cache_x: Option<Tensor>,
}

impl Activation {
    pub fn new(kind: ActKind) -> Self {
        Activation {
            kind,
            engine: None,
            training: false,
            cache_x: None,
        }
    }
    fn f(kind: ActKind, v: f32) -> f32 {
        match kind {
            ActKind::ReLU => v.max(0.0),
            ActKind::ReLU6 => v.clamp(0.0, 6.0),
            ActKind::Hardswish => rquant_core::numerics::hardswish_f32(v),
        }
    }
    fn df(kind: ActKind, v: f32) -> f32 {
        match kind {
            ActKind::ReLU => (v > 0.0) as i32 as f32,
            ActKind::ReLU6 => (v > 0.0 && v < 6.0) as i32 as f32,
            ActKind::Hardswish => {
                if v < -3.0 {
                    0.0
                } else if v <= 3.0 {
                    v / 3.0 + 0.5
                } else {
                    1.0
                }
            }
        }
    }
    pub fn forward_float(&mut self, x: Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for v in y.data_mut() {
            *v = Self::f(self.kind, *v);
        }
        if self.training {
            self.cache_x = Some(x);
        }
        Ok(y)
    }
    /// On quantized input: ReLU and ReLU6 keep the input qparams (as PyTorch's
    /// quantized relu / hardtanh); Hardswish needs output qparams (convert).
    /// (Hardsigmoid is [`crate::acts::Act`].)
    pub fn forward_quant(&self, x: QTensor<u8>) -> Result<QTensor<u8>> {
        match self.kind {
            ActKind::ReLU => Ok(self.engine.as_ref().ok_or_else(|| no_engine("ReLU"))?.relu(&x)?),
            ActKind::ReLU6 => Ok(self
                .engine
                .as_ref()
                .ok_or_else(|| no_engine("ReLU6"))?
                .relu6(&x)?),
            ActKind::Hardswish => Err(bad(
                "Hardswish",
                "a float Hardswish cannot run on quantized input: convert it (it needs output qparams)",
            )),
        }
    }
    pub fn backward(&mut self, mut g: Tensor) -> Result<Tensor> {
        let x = self
            .cache_x
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        for (gv, &xv) in g.data_mut().iter_mut().zip(x.data()) {
            *gv *= Self::df(self.kind, xv);
        }
        Ok(g)
    }
}

// ---------------------------------------------------------------- pooling

#[derive(Debug, Clone)]
pub struct MaxPool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub ceil_mode: bool,
    /// The engine quantized inputs run on (set by `convert`, `to_engine`
    /// and loading; PyTorch keeps these float modules in quantized models).
    pub engine: Option<Engine>,
    pub(crate) training: bool,
    cache: Option<(Vec<usize>, Vec<u32>)>,
}

impl MaxPool2d {
    /// `nn.MaxPool2d(kernel, stride)` (stride defaults to the kernel).
    pub fn new(kernel: usize, stride: usize) -> Self {
        MaxPool2d {
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [0; 2],
            dilation: [1; 2],
            ceil_mode: false,
            engine: None,
            training: false,
            cache: None,
        }
    }
    pub fn forward_float(&mut self, x: Tensor) -> Result<Tensor> {
        let (y, idx) = F::max_pool2d(
            &x,
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            self.training,
        )?;
        if self.training {
            self.cache = Some((x.shape().to_vec(), idx));
        }
        Ok(y)
    }
    pub fn forward_quant(&self, x: QTensor<u8>) -> Result<QTensor<u8>> {
        let p = rquant_core::MaxPool2dParams {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            ceil_mode: self.ceil_mode,
        };
        Ok(self
            .engine
            .as_ref()
            .ok_or_else(|| no_engine("MaxPool2d"))?
            .max_pool2d(&x, &p)?)
    }
    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let (shape, idx) = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        F::max_pool2d_backward(&shape, &idx, &g)
    }
}

#[derive(Debug, Clone)]
pub struct AvgPool2d {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub ceil_mode: bool,
    pub count_include_pad: bool,
    pub divisor_override: Option<usize>,
    /// The engine quantized inputs run on (set by `convert`, `to_engine`
    /// and loading; PyTorch keeps these float modules in quantized models).
    pub engine: Option<Engine>,
    pub(crate) training: bool,
    cache: Option<Vec<usize>>,
}

impl AvgPool2d {
    pub fn new(kernel: usize, stride: usize) -> Self {
        AvgPool2d {
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [0; 2],
            ceil_mode: false,
            count_include_pad: true,
            divisor_override: None,
            engine: None,
            training: false,
            cache: None,
        }
    }
    pub fn forward_float(&mut self, x: Tensor) -> Result<Tensor> {
        let y = F::avg_pool2d(
            &x,
            self.kernel,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )?;
        if self.training {
            self.cache = Some(x.shape().to_vec());
        }
        Ok(y)
    }
    pub fn forward_quant(&self, x: QTensor<u8>) -> Result<QTensor<u8>> {
        let p = rquant_core::AvgPool2dParams {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            ceil_mode: self.ceil_mode,
            count_include_pad: self.count_include_pad,
            divisor_override: self.divisor_override,
        };
        Ok(self
            .engine
            .as_ref()
            .ok_or_else(|| no_engine("AvgPool2d"))?
            .avg_pool2d(&x, &p)?)
    }
    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let shape = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        F::avg_pool2d_backward(
            &shape,
            self.kernel,
            self.stride,
            self.padding,
            self.count_include_pad,
            self.divisor_override,
            &g,
        )
    }
}

#[derive(Debug, Clone)]
pub struct AdaptiveAvgPool2d {
    pub output_size: [usize; 2],
    /// The engine quantized inputs run on (set by `convert`, `to_engine`
    /// and loading; PyTorch keeps these float modules in quantized models).
    pub engine: Option<Engine>,
    pub(crate) training: bool,
    cache: Option<Vec<usize>>,
}

impl AdaptiveAvgPool2d {
    pub fn new(output_size: [usize; 2]) -> Self {
        AdaptiveAvgPool2d {
            output_size,
            engine: None,
            training: false,
            cache: None,
        }
    }
    pub fn forward_float(&mut self, x: Tensor) -> Result<Tensor> {
        let y = F::adaptive_avg_pool2d(&x, self.output_size)?;
        if self.training {
            self.cache = Some(x.shape().to_vec());
        }
        Ok(y)
    }
    pub fn forward_quant(&self, x: QTensor<u8>) -> Result<QTensor<u8>> {
        Ok(self
            .engine
            .as_ref()
            .ok_or_else(|| no_engine("AdaptiveAvgPool2d"))?
            .adaptive_avg_pool2d(&x, self.output_size)?)
    }
    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let shape = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        F::adaptive_avg_pool2d_backward(&shape, &g)
    }
}

/// `nn.Flatten(start_dim=1, end_dim=-1)`.
#[derive(Debug, Clone)]
pub struct Flatten {
    pub start_dim: usize,
    pub(crate) training: bool,
    cache: Option<Vec<usize>>,
    /// The last 4-D input's shape: convert uses it to fold a channels-last
    /// flatten into the following Linear (`channels_last`).
    seen: Option<[usize; 4]>,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten {
            start_dim: 1,
            training: false,
            cache: None,
            seen: None,
        }
    }
}

impl Flatten {
    fn out_shape(&self, s: &[usize]) -> Result<Vec<usize>> {
        if s.len() < self.start_dim {
            return Err(bad(
                "Flatten",
                format!("input {s:?} has fewer than {} dims", self.start_dim),
            ));
        }
        let mut o = s[..self.start_dim].to_vec();
        o.push(s[self.start_dim..].iter().product());
        Ok(o)
    }
    /// The shape of the last 4-D input seen (`[N, C, H, W]`).
    pub fn seen_input(&self) -> Option<[usize; 4]> {
        self.seen
    }
    pub fn forward(&mut self, x: Value) -> Result<Value> {
        let shape = self.out_shape(x.shape())?;
        if self.training {
            self.cache = Some(x.shape().to_vec());
        }
        if let &[n, c, h, w] = x.shape() {
            self.seen = Some([n, c, h, w]);
        }
        Ok(match x {
            Value::F(t) => Value::F(t.reshape(shape)?),
            Value::Q(q) => Value::Q(q.reshape(shape)?),
        })
    }
    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let shape = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        Ok(g.reshape(shape)?)
    }
}

/// `nn.Dropout(p)`: identity in eval mode; in training zeroes with
/// probability p and scales by 1/(1-p) (seeded, deterministic).
#[derive(Debug, Clone)]
pub struct Dropout {
    pub p: f32,
    pub rng: Rng,
    pub(crate) training: bool,
    mask: Option<Vec<f32>>,
}

impl Dropout {
    pub fn new(p: f32, seed: u64) -> Self {
        Dropout {
            p,
            rng: Rng(seed),
            training: false,
            mask: None,
        }
    }
    pub fn forward(&mut self, x: Value) -> Result<Value> {
        if !self.training || self.p == 0.0 {
            return Ok(x);
        }
        let mut t = x.float("Dropout")?;
        let keep = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = (0..t.numel())
            .map(|_| {
                if self.rng.uniform() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        for (v, m) in t.data_mut().iter_mut().zip(&mask) {
            *v *= m;
        }
        self.mask = Some(mask);
        Ok(Value::F(t))
    }
    pub fn backward(&mut self, mut g: Tensor) -> Result<Tensor> {
        if let Some(m) = self.mask.take() {
            for (v, m) in g.data_mut().iter_mut().zip(&m) {
                *v *= m;
            }
        }
        Ok(g)
    }
}

// ---------------------------------------------------------------- batch-norm folding

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

/// `torch.matmul` of float tensors `[.., M, K] × [.., K, N]` (batch
/// dimensions broadcast), f32 accumulation in `k` order.
pub fn matmul_float(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() < 2 || sb.len() < 2 || sa[sa.len() - 1] != sb[sb.len() - 2] {
        return Err(bad(
            "matmul",
            format!("shapes {sa:?} and {sb:?} do not multiply"),
        ));
    }
    let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
    let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
    let nd = ba.len().max(bb.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() < nd {
            1
        } else {
            s[i + s.len() - nd]
        }
    };
    let mut batch = Vec::with_capacity(nd);
    for i in 0..nd {
        let (x, y) = (dim(ba, i), dim(bb, i));
        if x != y && x != 1 && y != 1 {
            return Err(bad(
                "matmul",
                format!("batch dims of {sa:?} and {sb:?} do not broadcast"),
            ));
        }
        batch.push(x.max(y));
    }
    let total: usize = batch.iter().product();
    let index = |s: &[usize], mut flat: usize| {
        let (mut idx, mut stride) = (0, 1);
        for i in (0..nd).rev() {
            let coord = flat % batch[i];
            flat /= batch[i];
            let d = dim(s, i);
            if d != 1 {
                idx += coord * stride;
            }
            stride *= d;
        }
        idx
    };
    let mut out = vec![0.0f32; total * m * n];
    for t in 0..total {
        let (ia, ib) = (index(ba, t), index(bb, t));
        let am = &a.data()[ia * m * k..(ia + 1) * m * k];
        let bm = &b.data()[ib * k * n..(ib + 1) * k * n];
        let om = &mut out[t * m * n..(t + 1) * m * n];
        for i in 0..m {
            for p in 0..k {
                let av = am[i * k + p];
                for j in 0..n {
                    om[i * n + j] += av * bm[p * n + j];
                }
            }
        }
    }
    let mut shape = batch;
    shape.push(m);
    shape.push(n);
    Ok(Tensor::new(shape, out)?)
}

/// An error naming `op` at the first non-finite value of `t`.
pub(crate) fn check_finite_tensor(op: &'static str, t: &Tensor) -> Result<()> {
    if let Some(i) = t.data().iter().position(|v| !v.is_finite()) {
        return Err(bad(
            op,
            format!("value [{i}] = {} is not finite", t.data()[i]),
        ));
    }
    Ok(())
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

// ---------------------------------------------------------------- stubs and FloatFunctional

/// `nn.Identity` (also what fusion leaves in place of the modules it folded).
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

/// `QuantStub`: identity in float; observed by `prepare`, it becomes
/// [`crate::quantized::Quantize`] at convert.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuantStub;

/// `DeQuantStub`: identity in float; becomes
/// [`crate::quantized::DeQuantize`] at convert.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeQuantStub;

/// `nn.quantized.FloatFunctional`: add, mul, cat, add_relu in float, with an
/// output observer (fake quant under QAT) after prepare.
#[derive(Debug, Clone, Default)]
pub struct FloatFunctional {
    pub post: Option<crate::post::ActPost>,
    pub qconfig: Option<QConfig>,
    pub(crate) training: bool,
}

impl FloatFunctional {
    pub fn new() -> Self {
        Self::default()
    }
    /// `add` / `add_relu` / `mul` of float tensors, broadcasting as PyTorch
    /// (trailing dimensions aligned; size-1 dimensions stretched), e.g. a
    /// squeeze-excitation scale `[N, C, 1, 1]` times `[N, C, H, W]`.
    pub fn binary(&mut self, a: Value, b: Value, op: BinaryOp) -> Result<Value> {
        let (a, b) = (a.float("FloatFunctional")?, b.float("FloatFunctional")?);
        let f = |x: f32, y: f32| match op {
            BinaryOp::Add => x + y,
            BinaryOp::AddRelu => (x + y).max(0.0),
            BinaryOp::Mul => x * y,
        };
        let y = if a.shape() == b.shape() {
            let data = a
                .data()
                .iter()
                .zip(b.data())
                .map(|(&x, &y)| f(x, y))
                .collect();
            Tensor::new(a.shape().to_vec(), data)?
        } else {
            broadcast_binary(&a, &b, f)?
        };
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

/// `f(a, b)` element-wise with NumPy / PyTorch broadcasting.
fn broadcast_binary(a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32) -> Result<Tensor> {
    let nd = a.ndim().max(b.ndim());
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut v = vec![1; nd - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (sa, sb) = (pad(a.shape()), pad(b.shape()));
    let mut out = Vec::with_capacity(nd);
    for d in 0..nd {
        out.push(match (sa[d], sb[d]) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(bad(
                    "FloatFunctional",
                    format!(
                        "shapes {:?} and {:?} do not broadcast",
                        a.shape(),
                        b.shape()
                    ),
                ))
            }
        });
    }
    // Row-major strides, 0 along broadcast dimensions.
    let strides = |s: &[usize]| -> Vec<usize> {
        let mut st = vec![0; nd];
        let mut acc = 1;
        for d in (0..nd).rev() {
            st[d] = if s[d] == 1 { 0 } else { acc };
            acc *= s[d];
        }
        st
    };
    let (ta, tb) = (strides(&sa), strides(&sb));
    let n: usize = out.iter().product();
    let mut data = Vec::with_capacity(n);
    let mut idx = vec![0usize; nd];
    let (mut ia, mut ib) = (0usize, 0usize);
    for _ in 0..n {
        data.push(f(a.data()[ia], b.data()[ib]));
        for d in (0..nd).rev() {
            idx[d] += 1;
            ia += ta[d];
            ib += tb[d];
            if idx[d] < out[d] {
                break;
            }
            ia -= ta[d] * out[d];
            ib -= tb[d] * out[d];
            idx[d] = 0;
        }
    }
    Ok(Tensor::new(out, data)?)
}

impl Module {
    /// `nn.Identity()`.
    pub fn identity() -> Self {
        Module::new(Identity)
    }
    /// `QuantStub()`.
    pub fn quant_stub() -> Self {
        Module::new(QuantStub)
    }
    /// `DeQuantStub()`.
    pub fn dequant_stub() -> Self {
        Module::new(DeQuantStub)
    }
    /// `FloatFunctional()`.
    pub fn float_functional() -> Self {
        Module::new(FloatFunctional::default())
    }
    pub fn relu() -> Self {
        Module::new(Activation::new(ActKind::ReLU))
    }
    pub fn relu6() -> Self {
        Module::new(Activation::new(ActKind::ReLU6))
    }
    pub fn hardswish() -> Self {
        Module::new(Activation::new(ActKind::Hardswish))
    }
    /// `nn.BatchNorm1d(num_features)`.
    pub fn batch_norm1d(num_features: usize) -> Self {
        Module::new(BatchNorm2d::new_1d(num_features))
    }
    /// `nn.BatchNorm3d(num_features)`.
    pub fn batch_norm3d(num_features: usize) -> Self {
        Module::new(BatchNorm2d::new_3d(num_features))
    }
    /// `nn.Flatten()` (start_dim 1).
    pub fn flatten() -> Self {
        Module::new(Flatten::default())
    }
}

// ---------------------------------------------------------------- Layer impls

fn empty() -> J {
    J::Object(Default::default())
}

impl Layer for Linear {
    fn type_name(&self) -> String {
        let base = match (self.relu, self.bn.is_some()) {
            (false, false) => "Linear",
            (true, false) => "LinearReLU",
            (_, true) => "LinearBn1d",
        };
        if self.weight_fake_quant.is_some() {
            format!("QAT{base}")
        } else {
            base.to_string()
        }
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::F(Linear::forward(self, x.float("Linear")?)?))
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        Linear::backward(self, g)
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
        let mut j = json!({ "bias": b });
        save_qat_parts(
            &mut j,
            out,
            self.bn.as_ref(),
            self.freeze_bn,
            self.weight_fake_quant.as_ref(),
        )?;
        Ok(j)
    }
}

/// A QAT or fused module's batch norm and weight fake quant, for resumable files.
fn save_qat_parts(
    j: &mut J,
    out: &mut Saver,
    bn: Option<&BatchNorm2d>,
    freeze_bn: bool,
    fq: Option<&FakeQuantize>,
) -> Result<()> {
    if let Some(bn) = bn {
        j["bn"] = out.within("bn", |o| crate::resume::save_bn(bn, o));
        j["freeze_bn"] = json!(freeze_bn);
    }
    if let Some(fq) = fq {
        j["weight_fake_quant"] = out.within("weight_fake_quant", |o| {
            crate::resume::save_fake_quant(fq, o)
        })?;
    }
    Ok(())
}

/// The batch norm and weight fake quant [`save_qat_parts`] wrote.
fn load_qat_parts(
    n: &Node,
    c: usize,
    bn: bool,
    qat: bool,
) -> Result<(Option<BatchNorm2d>, bool, Option<FakeQuantize>)> {
    let b = if bn {
        Some(crate::resume::load_bn(n, "bn", c)?)
    } else {
        None
    };
    let freeze = n.get_bool_opt("freeze_bn")?.unwrap_or(false);
    let fq = if qat {
        Some(crate::resume::load_fake_quant(
            n,
            "weight_fake_quant",
            n.field("weight_fake_quant")?,
        )?)
    } else {
        None
    };
    Ok((b, freeze, fq))
}

impl Layer for Conv2d {
    fn type_name(&self) -> String {
        if self.clamp.is_some() {
            return match (self.bn.is_some(), self.weight_fake_quant.is_some()) {
                (false, false) => "ConvHardtanh2d",
                (true, false) => "ConvBnHardtanh2d",
                (false, true) => "QATConvHardtanh2d",
                (true, true) => "QATConvBnHardtanh2d",
            }
            .into();
        }
        match (
            self.bn.is_some(),
            self.relu,
            self.weight_fake_quant.is_some(),
        ) {
            (false, false, false) => "Conv2d",
            (false, true, false) => "ConvReLU2d",
            (true, false, false) => "ConvBn2d",
            (true, true, false) => "ConvBnReLU2d",
            (false, false, true) => "QATConv2d",
            (false, true, true) => "QATConvReLU2d",
            (true, false, true) => "QATConvBn2d",
            (true, true, true) => "QATConvBnReLU2d",
        }
        .into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::F(Conv2d::forward(self, x.float("Conv2d")?)?))
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        Conv2d::backward(self, g)
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
    /// The conv weight (None with an unfolded batch norm: it is not the
    /// weight a quantized conv holds).
    fn weight(&self) -> Option<Tensor> {
        self.bn.is_none().then(|| self.weight.value.clone())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        out.f32("weight", &self.weight.value);
        let b = out.bias(self.bias.as_ref().map(|b| b.value.data()));
        let mut j = json!({ "bias": b, "params": conv_json(self.params) });
        if let Some((lo, hi)) = self.clamp {
            j["clamp"] = json!([lo, hi]);
        }
        save_qat_parts(
            &mut j,
            out,
            self.bn.as_ref(),
            self.freeze_bn,
            self.weight_fake_quant.as_ref(),
        )?;
        Ok(j)
    }
}

pub(crate) fn conv_json(p: Conv2dParams) -> J {
    json!({"stride": p.stride, "padding": p.padding, "dilation": p.dilation, "groups": p.groups})
}

impl Layer for BatchNorm2d {
    fn type_name(&self) -> String {
        match (self.one_d, self.three_d, self.relu) {
            (true, _, _) => "BatchNorm1d",
            (false, true, true) => "BNReLU3d",
            (false, true, false) => "BatchNorm3d",
            (false, false, true) => "BNReLU2d",
            (false, false, false) => "BatchNorm2d",
        }
        .into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::F(BatchNorm2d::forward(
            self,
            x.float("BatchNorm2d")?,
        )?))
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        BatchNorm2d::backward(self, g)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        vec![
            ("weight".to_string(), &mut self.weight),
            ("bias".to_string(), &mut self.bias),
        ]
    }
    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        vec![
            ("running_mean".to_string(), &mut self.running_mean),
            ("running_var".to_string(), &mut self.running_var),
        ]
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        out.f32("weight", &self.weight.value);
        out.f32("bias", &self.bias.value);
        out.f32("running_mean", &self.running_mean);
        out.f32("running_var", &self.running_var);
        Ok(json!({ "eps": self.eps, "relu": self.relu }))
    }
}

impl Layer for Activation {
    fn type_name(&self) -> String {
        match self.kind {
            ActKind::ReLU => "ReLU",
            ActKind::ReLU6 => "ReLU6",
            ActKind::Hardswish => "Hardswish",
        }
        .into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        match x {
            Value::F(t) => Ok(Value::F(self.forward_float(t)?)),
            Value::Q(q) => Ok(Value::Q(self.forward_quant(q)?)),
        }
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        Activation::backward(self, g)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = Some(engine.clone());
        Ok(())
    }
    fn save(&self, _: &mut Saver) -> Result<J> {
        Ok(empty())
    }
}

macro_rules! pool_layer {
    ($t:ty, $name:literal, $save:expr) => {
        impl Layer for $t {
            fn type_name(&self) -> String {
                $name.into()
            }
            fn forward(&mut self, x: Value) -> Result<Value> {
                match x {
                    Value::F(t) => Ok(Value::F(self.forward_float(t)?)),
                    Value::Q(q) => Ok(Value::Q(self.forward_quant(q)?)),
                }
            }
            fn backward(&mut self, g: Tensor) -> Result<Tensor> {
                <$t>::backward(self, g)
            }
            fn set_training(&mut self, on: bool) {
                self.training = on;
            }
            fn engine(&self) -> Option<&Engine> {
                self.engine.as_ref()
            }
            fn to_engine(&mut self, engine: &Engine) -> Result<()> {
                self.engine = Some(engine.clone());
                Ok(())
            }
            fn save(&self, _: &mut Saver) -> Result<J> {
                let f: fn(&$t) -> J = $save;
                Ok(f(self))
            }
        }
    };
}

pool_layer!(MaxPool2d, "MaxPool2d", |m| json!({
    "kernel": m.kernel, "stride": m.stride, "padding": m.padding,
    "dilation": m.dilation, "ceil_mode": m.ceil_mode
}));
pool_layer!(AvgPool2d, "AvgPool2d", |m| json!({
    "kernel": m.kernel, "stride": m.stride, "padding": m.padding,
    "ceil_mode": m.ceil_mode, "count_include_pad": m.count_include_pad,
    "divisor_override": m.divisor_override
}));
pool_layer!(AdaptiveAvgPool2d, "AdaptiveAvgPool2d", |m| json!({
    "output_size": m.output_size
}));

impl Layer for Flatten {
    fn type_name(&self) -> String {
        "Flatten".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Flatten::forward(self, x)
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        Flatten::backward(self, g)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn save(&self, _: &mut Saver) -> Result<J> {
        Ok(json!({ "start_dim": self.start_dim }))
    }
}

impl Layer for Dropout {
    fn type_name(&self) -> String {
        "Dropout".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Dropout::forward(self, x)
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        Dropout::backward(self, g)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn save(&self, _: &mut Saver) -> Result<J> {
        Ok(json!({ "p": self.p, "rng": self.rng.0 }))
    }
}

macro_rules! identity_layer {
    ($t:ty, $name:literal) => {
        impl Layer for $t {
            fn type_name(&self) -> String {
                $name.into()
            }
            fn forward(&mut self, x: Value) -> Result<Value> {
                Ok(x)
            }
            fn backward(&mut self, g: Tensor) -> Result<Tensor> {
                Ok(g)
            }
            fn save(&self, _: &mut Saver) -> Result<J> {
                Ok(empty())
            }
        }
    };
}
identity_layer!(Identity, "Identity");
identity_layer!(QuantStub, "QuantStub");
identity_layer!(DeQuantStub, "DeQuantStub");

impl Layer for FloatFunctional {
    fn type_name(&self) -> String {
        "FloatFunctional".into()
    }
    fn forward(&mut self, _: Value) -> Result<Value> {
        Err(bad(
            "FloatFunctional",
            "call add / mul / cat / add_relu instead of forward",
        ))
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn fake_quants_mut(&mut self) -> Vec<&mut FakeQuantize> {
        self.post
            .as_mut()
            .and_then(|p| p.fake_quant_mut())
            .into_iter()
            .collect()
    }
    fn observe_output(&mut self, obs: Observation) -> Option<Observation> {
        self.post = Some(obs.post);
        self.qconfig = Some(obs.qconfig);
        None
    }
    fn take_observation(&mut self) -> Option<Observation> {
        match (self.post.take(), self.qconfig.take()) {
            (Some(post), Some(qconfig)) => Some(Observation { post, qconfig }),
            (post, qconfig) => {
                self.post = post;
                self.qconfig = qconfig;
                None
            }
        }
    }
    fn binary(&mut self, op: BinaryOp, a: Value, b: Value) -> Result<Value> {
        FloatFunctional::binary(self, a, b, op)
    }
    fn cat(&mut self, xs: Vec<Value>, dim: usize) -> Result<Value> {
        FloatFunctional::cat(self, xs, dim)
    }
    fn scalar(&mut self, op: crate::module::ScalarOp, x: Value, c: f64) -> Result<Value> {
        let mut t = x.float("FloatFunctional")?;
        let c = c as f32;
        for v in t.data_mut() {
            *v = match op {
                crate::module::ScalarOp::Add => *v + c,
                crate::module::ScalarOp::Mul => *v * c,
            };
        }
        Ok(Value::F(t))
    }
    fn matmul(&mut self, a: Value, b: Value) -> Result<Value> {
        let y = matmul_float(
            &a.float("FloatFunctional.matmul")?,
            &b.float("FloatFunctional.matmul")?,
        )?;
        Ok(Value::F(match &mut self.post {
            Some(p) => p.apply(y)?,
            None => y,
        }))
    }
    fn functional_backward(&mut self, g: Tensor) -> Result<Tensor> {
        match &mut self.post {
            Some(p) => p.backward(g),
            None => Ok(g),
        }
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        let mut j = empty();
        if let (Some(post), Some(qc)) = (&self.post, &self.qconfig) {
            j["activation_post_process"] = out.within("activation_post_process", |o| {
                crate::resume::save_act_post(post, o)
            })?;
            j["qconfig"] = crate::resume::qconfig_to_json(qc);
        }
        Ok(j)
    }
}

// ---------------------------------------------------------------- registration

/// QAT forms (`DEFAULT_QAT_MODULE_MAPPINGS`): Linear and Conv2d, plain and
/// fused, get a weight fake quant from the qconfig.
pub(crate) fn register_mappings(m: &mut Mappings) {
    fn qat(mut m: Module, qc: &QConfig) -> Result<Module> {
        let fq = qc.weight.build_fake_quant()?;
        if let Some(l) = m.downcast_mut::<Linear>() {
            l.weight_fake_quant = Some(fq);
        } else if let Some(c) = m.downcast_mut::<Conv2d>() {
            c.weight_fake_quant = Some(fq);
        } else {
            return Err(NnError::module(
                "",
                format!("{} has no QAT form", m.type_name()),
            ));
        }
        Ok(m)
    }
    for t in [
        "Linear",
        "LinearReLU",
        "LinearBn1d",
        "Conv2d",
        "ConvReLU2d",
        "ConvBn2d",
        "ConvBnReLU2d",
        "ConvHardtanh2d",
        "ConvBnHardtanh2d",
    ] {
        m.qat.insert(t.to_string(), std::sync::Arc::new(qat));
    }
}

/// The `clamp` attribute of a fused conv: `[min, max]`, finite, min <= max.
pub(crate) fn clamp_attr(n: &Node) -> Result<Option<(f32, f32)>> {
    match n.attrs().get("clamp") {
        None | Some(J::Null) => Ok(None),
        Some(J::Array(a)) if a.len() == 2 => {
            let lo = a[0].as_f64().map(|v| v as f32);
            let hi = a[1].as_f64().map(|v| v as f32);
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo.is_finite() && hi.is_finite() && lo <= hi => {
                    Ok(Some((lo, hi)))
                }
                _ => Err(n.attr_error("clamp", "not finite [min, max] with min <= max")),
            }
        }
        Some(_) => Err(n.attr_error("clamp", "not a [min, max] pair")),
    }
}

/// Loaders of the float modules (a partly quantized model keeps some).
pub(crate) fn register_loaders(r: &mut ModuleRegistry) {
    fn relu_of(n: &Node) -> Result<bool> {
        // Version-1 files wrote `relu` beside the plain tag.
        Ok(n.type_name().ends_with("ReLU") || n.get_bool_opt("relu")?.unwrap_or(false))
    }
    fn linear(n: &mut Node) -> Result<Module> {
        let b = n.bias(n.get_bool("bias")?)?;
        let mut l = Linear::from_weights(
            n.f32("weight")?,
            b.map(|b| Tensor::new([b.len()], b)).transpose()?,
        )
        .map_err(|e| n.tensor_error("", e.to_string()))?;
        l.relu = relu_of(n)?;
        let tag = n.type_name().to_string();
        let (bn, freeze, fq) = load_qat_parts(
            n,
            l.out_features,
            tag.contains("Bn1d"),
            tag.starts_with("QAT"),
        )?;
        if let Some(mut bn) = bn {
            bn.one_d = true;
            l.bn = Some(bn);
        }
        l.freeze_bn = freeze;
        l.weight_fake_quant = fq;
        Ok(l.into())
    }
    fn conv(n: &mut Node) -> Result<Module> {
        let b = n.bias(n.get_bool("bias")?)?;
        let mut c = Conv2d::from_weights(
            n.f32("weight")?,
            b.map(|b| Tensor::new([b.len()], b)).transpose()?,
            n.get_conv()?,
        )
        .map_err(|e| n.tensor_error("", e.to_string()))?;
        let tag = n.type_name().to_string();
        c.relu = tag.contains("ReLU") || n.get_bool_opt("relu")?.unwrap_or(false);
        c.clamp = clamp_attr(n)?;
        let (bn, freeze, fq) = load_qat_parts(
            n,
            c.out_channels,
            tag.contains("Bn"),
            tag.starts_with("QAT"),
        )?;
        c.bn = bn;
        c.freeze_bn = freeze;
        c.weight_fake_quant = fq;
        Ok(c.into())
    }
    fn batch_norm(n: &mut Node) -> Result<Module> {
        let w = n.f32("weight")?;
        let mut b = BatchNorm2d::new(w.numel());
        let check = |t: Tensor, name: &str| -> Result<Tensor> {
            if t.numel() != w.numel() {
                return Err(n.tensor_error(name, "length differs from the weight"));
            }
            Ok(t)
        };
        b.bias.value = check(n.f32("bias")?, "bias")?;
        b.running_mean = check(n.f32("running_mean")?, "running_mean")?;
        b.running_var = check(n.f32("running_var")?, "running_var")?;
        b.weight.value = w;
        b.eps = n.get_f64("eps")? as f32;
        b.relu = n.type_name().starts_with("BNReLU") || n.get_bool_opt("relu")?.unwrap_or(false);
        b.one_d = n.type_name() == "BatchNorm1d";
        b.three_d = n.type_name().ends_with("3d");
        Ok(b.into())
    }
    fn max_pool(n: &mut Node) -> Result<Module> {
        let mut m = MaxPool2d::new(1, 1);
        m.kernel = n.get_pair("kernel")?;
        m.stride = n.get_pair("stride")?;
        m.padding = n.get_pair("padding")?;
        m.dilation = n.get_pair("dilation")?;
        m.ceil_mode = n.get_bool("ceil_mode")?;
        Ok(m.into())
    }
    fn avg_pool(n: &mut Node) -> Result<Module> {
        let mut m = AvgPool2d::new(1, 1);
        m.kernel = n.get_pair("kernel")?;
        m.stride = n.get_pair("stride")?;
        m.padding = n.get_pair("padding")?;
        m.ceil_mode = n.get_bool("ceil_mode")?;
        m.count_include_pad = n.get_bool("count_include_pad")?;
        m.divisor_override = match n.attrs().get("divisor_override") {
            None | Some(J::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|v| usize::try_from(v).ok())
                    .filter(|&v| v > 0)
                    .ok_or_else(|| {
                        n.attr_error("divisor_override", "not null or a positive integer")
                    })?,
            ),
        };
        Ok(m.into())
    }
    for t in [
        "Linear",
        "LinearReLU",
        "LinearBn1d",
        "QATLinear",
        "QATLinearReLU",
        "QATLinearBn1d",
    ] {
        r.register(t, linear);
    }
    for t in [
        "Conv2d",
        "ConvReLU2d",
        "ConvBn2d",
        "ConvBnReLU2d",
        "QATConv2d",
        "QATConvReLU2d",
        "QATConvBn2d",
        "QATConvBnReLU2d",
        "ConvHardtanh2d",
        "ConvBnHardtanh2d",
        "QATConvHardtanh2d",
        "QATConvBnHardtanh2d",
    ] {
        r.register(t, conv);
    }
    r.register("BatchNorm2d", batch_norm);
    r.register("BNReLU2d", batch_norm);
    r.register("BatchNorm1d", batch_norm);
    r.register("BatchNorm3d", batch_norm);
    r.register("BNReLU3d", batch_norm);
    r.register("ReLU", |_| Ok(Module::relu()));
    r.register("ReLU6", |_| Ok(Module::relu6()));
    r.register("Hardswish", |_| Ok(Module::hardswish()));
    r.register("MaxPool2d", max_pool);
    r.register("AvgPool2d", avg_pool);
    r.register("AdaptiveAvgPool2d", |n| {
        Ok(AdaptiveAvgPool2d::new(n.get_pair("output_size")?).into())
    });
    r.register("Flatten", |n| {
        Ok(Flatten {
            start_dim: n.get_usize("start_dim")?,
            ..Default::default()
        }
        .into())
    });
    r.register("Dropout", |n| {
        let seed = n.attrs().get("rng").and_then(J::as_u64).unwrap_or(0);
        Ok(Dropout::new(n.get_f64("p")? as f32, seed).into())
    });
    r.register("Identity", |_| Ok(Module::identity()));
    r.register("QuantStub", |_| Ok(Module::quant_stub()));
    r.register("DeQuantStub", |_| Ok(Module::dequant_stub()));
    r.register("FloatFunctional", |n| {
        let mut f = FloatFunctional::new();
        if let Some(j) = n.attrs().get("activation_post_process") {
            f.post = Some(crate::resume::load_act_post(
                n,
                "activation_post_process",
                j,
            )?);
            let qc = crate::resume::qconfig_from_json(n.field("qconfig")?)
                .map_err(|d| n.attr_error("qconfig", d))?;
            f.qconfig = Some(qc);
        }
        Ok(f.into())
    });
}
