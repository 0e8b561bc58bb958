//! What `prepare` attaches to a module's output (an observer, or for QAT a
//! fake quant), and how `convert` turns observations into qparams and int8
//! weights. Below every module: it knows tensors and qconfigs, not modules.

use rquant_core::observer::{Observer, ObserverQParams};
use rquant_core::qconfig::{FakeQuantize, QConfig, QSpec};
use rquant_core::{quantize_per_channel, quantize_per_tensor, QTensor, Tensor};

use crate::error::{bad, Result};

/// An activation post-process: an observer (PTQ), a fake quant (QAT, with
/// the gradient mask of the last forward), or fixed output qparams given by
/// the user ([`crate::set_activation_qparams`]: values pass through
/// unobserved and `convert` uses exactly these qparams).
#[derive(Debug, Clone)]
pub enum ActPost {
    Observer(Box<dyn Observer>),
    FakeQuant {
        fq: Box<FakeQuantize>,
        mask: Option<Vec<bool>>,
    },
    Fixed {
        scale: f32,
        zero_point: i64,
    },
}

impl ActPost {
    pub fn observer(spec: &QSpec) -> Result<Self> {
        Ok(ActPost::Observer(spec.build_observer()?))
    }
    pub fn fake_quant(spec: &QSpec) -> Result<Self> {
        Ok(ActPost::FakeQuant {
            fq: Box::new(spec.build_fake_quant()?),
            mask: None,
        })
    }
    /// Observe (and for fake quant, quantize-dequantize) a module's output.
    pub fn apply(&mut self, y: Tensor) -> Result<Tensor> {
        match self {
            ActPost::Observer(o) => {
                o.observe(&y)?;
                Ok(y)
            }
            ActPost::FakeQuant { fq, mask } => {
                let out = fq.forward(&y)?;
                *mask = Some(out.mask);
                Ok(out.y)
            }
            ActPost::Fixed { .. } => Ok(y),
        }
    }
    /// Straight-through gradient of a fake quant (zero where it clamped);
    /// a learnable (LSQ) fake quant computes its own gradients and
    /// accumulates those of its scale and zero point.
    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        if let ActPost::FakeQuant { fq, mask: Some(m) } = self {
            return Ok(fq.backward_last(&g, m)?);
        }
        Ok(g)
    }
    /// Per-tensor output qparams (`calculate_qparams`).
    pub fn qparams(&self) -> Result<(f64, i64)> {
        let qp = match self {
            ActPost::Observer(o) => o.calculate_qparams()?,
            ActPost::FakeQuant { fq, .. } => fq.calculate_qparams()?,
            &ActPost::Fixed { scale, zero_point } => return Ok((scale as f64, zero_point)),
        };
        let (s, z) = qp
            .per_tensor()
            .ok_or_else(|| bad("convert", "activation qparams must be per-tensor"))?;
        Ok((s as f64, z))
    }
    pub fn fake_quant_mut(&mut self) -> Option<&mut FakeQuantize> {
        match self {
            ActPost::FakeQuant { fq, .. } => Some(fq),
            _ => None,
        }
    }
}

/// What `prepare` recorded for one module: its output post-process and the
/// qconfig `convert` quantizes its weights with.
#[derive(Debug, Clone)]
pub struct Observation {
    pub post: ActPost,
    pub qconfig: QConfig,
}

impl Observation {
    /// A fresh observer (`qat`: a fake quant) from the qconfig's activation
    /// spec. A QAT qconfig whose activation is an observer (the embedding
    /// QAT qconfigs' NoopObserver) gets that observer, as in PyTorch.
    pub fn new(qconfig: QConfig, qat: bool) -> Result<Self> {
        let post = if qat && matches!(qconfig.activation, QSpec::FakeQuant(_)) {
            ActPost::fake_quant(&qconfig.activation)?
        } else {
            ActPost::observer(&qconfig.activation)?
        };
        Ok(Observation { post, qconfig })
    }
    /// An observation whose post-process comes from `spec` (a module's
    /// special fixed-qparams observer) while weights use `qconfig`.
    pub fn with_spec(qconfig: QConfig, spec: &QSpec, qat: bool) -> Result<Self> {
        let post = match (qat, spec) {
            (true, QSpec::FakeQuant(_)) => ActPost::fake_quant(spec)?,
            _ => ActPost::observer(spec)?,
        };
        Ok(Observation { post, qconfig })
    }
    /// The output scale and zero point the observer chose.
    pub fn qparams(&self) -> Result<(f64, i64)> {
        self.post.qparams()
    }
}

/// Quantize a float weight with the qparams an observer (or a QAT weight
/// fake quant) chose, as PyTorch's `_quantize_weight`.
fn quantize_with(w: &Tensor, qp: &ObserverQParams, per_channel: bool) -> Result<QTensor<i8>> {
    if per_channel {
        let scales: Vec<f64> = qp.scales.iter().map(|&s| s as f64).collect();
        Ok(quantize_per_channel::<i8>(w, &scales, &qp.zero_points, 0)?)
    } else {
        let (s, z) = qp.per_tensor().ok_or_else(|| {
            bad(
                "convert",
                "per-tensor weight observer returned several qparams",
            )
        })?;
        Ok(quantize_per_tensor::<i8>(w, s as f64, z)?)
    }
}

/// The int8 weight `convert` packs: observed by a fresh observer of `spec`
/// (PTQ, dynamic), or with the qparams of the module's QAT weight fake quant.
pub fn quantize_weight(
    w: &Tensor,
    spec: &QSpec,
    fake_quant: Option<&mut FakeQuantize>,
) -> Result<QTensor<i8>> {
    match fake_quant {
        Some(fq) => {
            if fq.observer_enabled {
                fq.forward(w)?;
            }
            let qp = fq.calculate_qparams()?;
            quantize_with(w, &qp, fq.qscheme().is_per_channel())
        }
        None => {
            let mut o = spec.build_observer()?;
            o.observe(w)?;
            let qp = o.calculate_qparams()?;
            quantize_with(w, &qp, o.qscheme().is_per_channel())
        }
    }
}
