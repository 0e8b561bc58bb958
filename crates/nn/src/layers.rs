//! Float layers with forward and backward: Linear, Conv2d (optionally with a
//! fused BatchNorm2d / ReLU and, after `prepare_qat`, a weight fake-quant),
//! BatchNorm2d, activations, pooling, Flatten, Dropout.

use rquant_core::qconfig::FakeQuantize;
use rquant_core::{Conv2dParams, QTensor, Tensor};

use crate::error::{bad, NnError, Result};
use crate::functional as F;
use crate::value::Value;

/// A trainable tensor and its accumulated gradient.
#[derive(Debug, Clone)]
pub struct Param {
    pub value: Tensor,
    pub grad: Option<Tensor>,
}

impl Param {
    pub fn new(value: Tensor) -> Self {
        Param { value, grad: None }
    }
    /// Add `g` to the gradient.
    pub fn accumulate(&mut self, g: Vec<f32>) -> Result<()> {
        match &mut self.grad {
            Some(t) => {
                for (a, b) in t.data_mut().iter_mut().zip(g) {
                    *a += b;
                }
            }
            None => self.grad = Some(Tensor::new(self.value.shape().to_vec(), g)?),
        }
        Ok(())
    }
}

/// Deterministic generator (SplitMix64) for initialisation and dropout.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32) / (1u64 << 24) as f32
    }
    /// Uniform in [-a, a) (PyTorch's kaiming-uniform style bound).
    pub fn sym(&mut self, a: f32) -> f32 {
        (self.uniform() * 2.0 - 1.0) * a
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
    pub(crate) training: bool,
    cache_x: Option<Tensor>,
    cache_y: Option<Tensor>,
    cache_fq: Option<FqCache>,
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
            training: false,
            cache_x: None,
            cache_y: None,
            cache_fq: None,
        })
    }
    pub fn forward(&mut self, x: Tensor) -> Result<Tensor> {
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
        let x = self
            .cache_x
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        if let Some(y) = self.cache_y.take() {
            relu_mask(&mut g, &y);
        }
        let fq = self.cache_fq.take();
        let w = fq.as_ref().map_or(&self.weight.value, |c| &c.w);
        let (dx, mut dw, db) =
            F::linear_backward(&x, w.data(), self.out_features, self.in_features, &g, true)?;
        if let Some(c) = &fq {
            for (d, &m) in dw.iter_mut().zip(&c.mask) {
                *d *= if m { 1.0 } else { 0.0 };
            }
        }
        self.weight.accumulate(dw)?;
        if let Some(b) = &mut self.bias {
            b.accumulate(db)?;
        }
        Ok(dx.expect("requested"))
    }
    pub fn type_name(&self) -> &'static str {
        match (self.relu, self.weight_fake_quant.is_some()) {
            (false, false) => "Linear",
            (true, false) => "LinearReLU",
            (false, true) => "QATLinear",
            (true, true) => "QATLinearReLU",
        }
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
    /// Forward (batch statistics in training mode, running ones in eval).
    pub fn forward(&mut self, x: Tensor) -> Result<Tensor> {
        if self.one_d && (x.ndim() == 2 || x.ndim() == 3) {
            let s = x.shape().to_vec();
            let l = if s.len() == 3 { s[2] } else { 1 };
            let y = self.forward(x.reshape([s[0], s[1], l, 1])?)?;
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
        if self.one_d && (g.ndim() == 2 || g.ndim() == 3) {
            let s = g.shape().to_vec();
            let l = if s.len() == 3 { s[2] } else { 1 };
            let dx = self.backward(g.reshape([s[0], s[1], l, 1])?)?;
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
    pub fn type_name(&self) -> &'static str {
        match (self.one_d, self.relu) {
            (true, _) => "BatchNorm1d",
            (false, true) => "BNReLU2d",
            (false, false) => "BatchNorm2d",
        }
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
        if self.relu {
            relu_inplace(&mut y);
        }
        if self.training {
            self.cache_x = Some(x);
            self.cache_y = self.relu.then(|| y.clone());
        }
        Ok(y)
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
        if self.relu {
            relu_inplace(&mut y);
        }
        if self.training {
            self.cache_x = Some(x);
            self.cache_y = self.relu.then(|| y.clone());
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
            relu_mask(&mut g, &y);
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
        let mut dw = vec![0.0f32; dws.len()];
        for (i, (&d, &m)) in dws.iter().zip(&fq.mask).enumerate() {
            let ch = i / per;
            let d = d * if m { 1.0 } else { 0.0 };
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
            relu_mask(&mut g, &y);
        }
        if let Some(bn) = &mut self.bn {
            g = bn.backward(g)?;
        }
        let fq = self.cache_fq.take();
        let w = fq.as_ref().map_or(&self.weight.value, |c| &c.w);
        let (dx, mut dw, db) = F::conv2d_backward(&x, w.data(), w.shape(), self.params, &g, true)?;
        if let Some(c) = &fq {
            for (d, &m) in dw.iter_mut().zip(&c.mask) {
                *d *= if m { 1.0 } else { 0.0 };
            }
        }
        self.weight.accumulate(dw)?;
        if let Some(b) = &mut self.bias {
            b.accumulate(db)?;
        }
        Ok(dx.expect("requested"))
    }

    pub fn type_name(&self) -> &'static str {
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
    }
}

/// Eval-mode batch norm that still records what the backward pass needs.
fn bn_eval_with_cache(bn: &mut BatchNorm2d, y0: Tensor) -> Result<Tensor> {
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
    pub(crate) training: bool,
    cache_x: Option<Tensor>,
}

impl Activation {
    pub fn new(kind: ActKind) -> Self {
        Activation {
            kind,
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
    pub fn forward_quant(&self, x: QTensor<u8>) -> Result<QTensor<u8>> {
        match self.kind {
            ActKind::ReLU => Ok(rquant_core::engine()?.relu(&x)?),
            ActKind::ReLU6 => {
                let (scale, zp) = x.q_per_tensor().ok_or_else(|| bad("ReLU6", "per-tensor input required"))?;
                let six = rquant_core::numerics::quantize_val::<u8>(
                    rquant_core::numerics::inv_scale(scale),
                    zp,
                    6.0,
                );
                let data = x.int_repr().iter().map(|&q| q.clamp(zp as u8, six.max(zp as u8))).collect();
                Ok(QTensor::from_int_repr(x.shape().to_vec(), data, x.qparams().clone())?)
            }
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
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            ActKind::ReLU => "ReLU",
            ActKind::ReLU6 => "ReLU6",
            ActKind::Hardswish => "Hardswish",
        }
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
        Ok(rquant_core::engine()?.max_pool2d(&x, &p)?)
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
        Ok(rquant_core::engine()?.avg_pool2d(&x, &p)?)
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
    pub(crate) training: bool,
    cache: Option<Vec<usize>>,
}

impl AdaptiveAvgPool2d {
    pub fn new(output_size: [usize; 2]) -> Self {
        AdaptiveAvgPool2d {
            output_size,
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
        Ok(rquant_core::engine()?.adaptive_avg_pool2d(&x, self.output_size)?)
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
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten {
            start_dim: 1,
            training: false,
            cache: None,
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
    pub fn forward(&mut self, x: Value) -> Result<Value> {
        let shape = self.out_shape(x.shape())?;
        if self.training {
            self.cache = Some(x.shape().to_vec());
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
