//! The fake-quantize modules of QAT, one type for the four PyTorch classes:
//! `FakeQuantize`, `FusedMovingAvgObsFakeQuantize`,
//! `FixedQParamsFakeQuantize` and `_LearnableFakeQuantize` (LSQ), with the
//! float-zero-point scheme of embedding QAT, and the standalone
//! `torch.fused_moving_avg_obs_fake_quant`.

use super::{choose_qparams_fused, FakeQuantKind, FakeQuantizeSpec, LsqSpec, ObserverSpec};
use crate::error::{QuantError, Result};
use crate::fake_quant::{
    fake_quantize_per_channel, fake_quantize_per_channel_float_qparams, fake_quantize_per_tensor,
    FakeQuantOutput,
};
use crate::lsq;
use crate::observer::{torch_ops::aminmax, Observer, ObserverKind, ObserverQParams, ObserverState};
use crate::param::Param;
use crate::tensor::{QScheme, Tensor};

/// The learnable state of an LSQ fake quant (`_LearnableFakeQuantize`):
/// `scale` and `zero_point` parameters (one entry, or one per channel) and
/// its three switches.
#[derive(Debug, Clone, PartialEq)]
pub struct Learnable {
    pub scale: Param,
    /// A float parameter, rounded when used.
    pub zero_point: Param,
    /// `static_enabled`: the observer sets scale and zero point each forward.
    pub static_enabled: bool,
    /// `learning_enabled`: the backward accumulates scale and zero-point gradients.
    pub learning_enabled: bool,
    pub use_grad_scaling: bool,
}

/// A fake-quantize module: the observer, the current scale / zero point,
/// and the enable flags (`fake_quant_enabled`, `observer_enabled`).
#[derive(Debug, Clone)]
pub struct FakeQuantize {
    spec: FakeQuantizeSpec,
    kind: FakeQuantKind,
    observer: Box<dyn Observer>,
    pub fake_quant_enabled: bool,
    pub observer_enabled: bool,
    scale: Vec<f32>,
    zero_point: Vec<i64>,
    /// `per_channel_affine_float_qparams`: the float zero points.
    float_zero_point: Option<Vec<f32>>,
    quant_min: i64,
    quant_max: i64,
    qscheme: QScheme,
    ch_axis: Option<i64>,
    learnable: Option<Learnable>,
    /// LSQ: the last forward's input, for [`FakeQuantize::backward_last`].
    last_input: Option<Tensor>,
}

fn tensor1(v: Vec<f32>) -> Tensor {
    let n = v.len();
    Tensor::new([n], v).expect("1-D")
}

impl FakeQuantize {
    /// `FakeQuantize(observer)` / `FusedMovingAvgObsFakeQuantize(observer)` /
    /// `FixedQParamsFakeQuantize(observer)` (a `FixedQParamsObserver`).
    /// Learnable fake quants take their initial values from
    /// [`FakeQuantize::learnable`].
    pub fn new(kind: FakeQuantKind, observer: &ObserverSpec) -> Result<Self> {
        Self::with_lsq(kind, observer, &LsqSpec::default())
    }

    /// `_LearnableFakeQuantize(observer, quant_min, quant_max, scale,
    /// zero_point, channel_len, use_grad_scaling)`.
    pub fn learnable(observer: &ObserverSpec, lsq: &LsqSpec) -> Result<Self> {
        Self::with_lsq(FakeQuantKind::Learnable, observer, lsq)
    }

    pub(super) fn from_spec(spec: &FakeQuantizeSpec) -> Result<Self> {
        Self::with_lsq(spec.kind, &spec.observer, &spec.lsq)
    }

    fn with_lsq(kind: FakeQuantKind, observer: &ObserverSpec, lsq: &LsqSpec) -> Result<Self> {
        const OP: &str = "FakeQuantize";
        let cfg = &observer.config;
        if let (Some(lo), Some(hi)) = (cfg.quant_min, cfg.quant_max) {
            if lo > hi {
                return Err(QuantError::invalid(OP, "quant_min must be <= quant_max"));
            }
            if lo < cfg.dtype.min() || hi > cfg.dtype.max() {
                return Err(QuantError::invalid(
                    OP,
                    format!("[{lo}, {hi}] is out of the bounds of {}", cfg.dtype),
                ));
            }
        }
        let moving = matches!(
            observer.kind,
            ObserverKind::MovingAverageMinMax | ObserverKind::MovingAveragePerChannelMinMax
        );
        if kind == FakeQuantKind::FusedMovingAvgObs && !moving {
            return Err(QuantError::Unsupported {
                op: OP,
                detail: format!(
                    "the fused fake quant only works with moving-average observers, not {}",
                    observer.kind
                ),
            });
        }
        if (kind == FakeQuantKind::FixedQParams) != (observer.kind == ObserverKind::FixedQParams) {
            return Err(QuantError::invalid(
                OP,
                format!(
                    "FixedQParamsFakeQuantize needs a FixedQParamsObserver (and only it): got {kind:?} with {}",
                    observer.kind
                ),
            ));
        }
        let obs = observer.build()?;
        let (quant_min, quant_max) = obs.quant_range().ok_or_else(|| {
            QuantError::invalid(OP, format!("{} has no quantization range", obs.kind()))
        })?;
        let qscheme = obs.qscheme();
        let float_qparams = qscheme == QScheme::PerChannelAffineFloatQParams;
        if float_qparams && kind != FakeQuantKind::FakeQuantize {
            return Err(QuantError::Unsupported {
                op: OP,
                detail: format!("per_channel_affine_float_qparams with {kind:?}"),
            });
        }
        let ch_axis = obs.ch_axis();
        let (mut scale, mut zero_point) = (vec![1.0], vec![0]);
        if kind == FakeQuantKind::FixedQParams {
            let qp = obs.calculate_qparams()?;
            scale = qp.scales;
            zero_point = qp.zero_points;
        }
        let learnable = if kind == FakeQuantKind::Learnable {
            if !(lsq.scale.is_finite() && lsq.scale > 0.0 && lsq.zero_point.is_finite()) {
                return Err(QuantError::invalid(
                    OP,
                    format!(
                        "learnable scale {} must be finite and positive, zero point {} finite",
                        lsq.scale, lsq.zero_point
                    ),
                ));
            }
            let per_channel = qscheme.is_per_channel();
            let n = match (per_channel, lsq.channel_len) {
                (false, _) => 1,
                (true, Some(n)) if n > 0 => n,
                (true, c) => {
                    return Err(QuantError::invalid(
                        OP,
                        format!(
                            "a per-channel learnable fake quant needs channel_len > 0, got {c:?}"
                        ),
                    ))
                }
            };
            Some(Learnable {
                scale: Param::new(tensor1(vec![lsq.scale; n])),
                zero_point: Param::new(tensor1(vec![lsq.zero_point; n])),
                static_enabled: true,
                learning_enabled: false,
                use_grad_scaling: lsq.use_grad_scaling,
            })
        } else {
            None
        };
        Ok(FakeQuantize {
            spec: FakeQuantizeSpec {
                kind,
                observer: observer.clone(),
                lsq: lsq.clone(),
            },
            kind,
            observer: obs,
            fake_quant_enabled: true,
            observer_enabled: true,
            scale,
            zero_point,
            float_zero_point: float_qparams.then(|| vec![0.0]),
            quant_min,
            quant_max,
            qscheme,
            ch_axis,
            learnable,
            last_input: None,
        })
    }

    pub fn kind(&self) -> FakeQuantKind {
        self.kind
    }
    /// The spec this fake quant was built from (files save it).
    pub fn spec(&self) -> &FakeQuantizeSpec {
        &self.spec
    }
    pub fn observer(&self) -> &dyn Observer {
        self.observer.as_ref()
    }
    pub fn observer_mut(&mut self) -> &mut dyn Observer {
        self.observer.as_mut()
    }
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }
    pub fn zero_point(&self) -> &[i64] {
        &self.zero_point
    }
    /// The float zero points of a `per_channel_affine_float_qparams` fake quant.
    pub fn float_zero_point(&self) -> Option<&[f32]> {
        self.float_zero_point.as_deref()
    }
    pub fn quant_range(&self) -> (i64, i64) {
        (self.quant_min, self.quant_max)
    }
    pub fn qscheme(&self) -> QScheme {
        self.qscheme
    }
    pub fn ch_axis(&self) -> Option<i64> {
        self.ch_axis
    }
    /// The LSQ parameters and switches (learnable fake quants only).
    pub fn learnable_state(&self) -> Option<&Learnable> {
        self.learnable.as_ref()
    }
    pub fn learnable_state_mut(&mut self) -> Option<&mut Learnable> {
        self.learnable.as_mut()
    }

    /// The qparams `convert` uses (`calculate_qparams`): the observer's for
    /// `FakeQuantize` and the fused module, the fixed ones for
    /// `FixedQParamsFakeQuantize`, and for LSQ the learned scale (clamped at
    /// f32 epsilon) and zero point (rounded half to even, clamped).
    pub fn calculate_qparams(&self) -> Result<ObserverQParams> {
        match (&self.kind, &self.learnable) {
            (FakeQuantKind::FixedQParams, _) => Ok(ObserverQParams {
                scales: self.scale.clone(),
                zero_points: self.zero_point.clone(),
                float_zero_points: None,
            }),
            (_, Some(l)) => Ok(ObserverQParams {
                scales: l
                    .scale
                    .value
                    .data()
                    .iter()
                    .map(|&s| s.max(f32::EPSILON))
                    .collect(),
                zero_points: l
                    .zero_point
                    .value
                    .data()
                    .iter()
                    .map(|&z| (z.round_ties_even() as i64).clamp(self.quant_min, self.quant_max))
                    .collect(),
                float_zero_points: None,
            }),
            _ => self.observer.calculate_qparams(),
        }
    }

    fn fake_quant(&self, x: &Tensor) -> Result<FakeQuantOutput> {
        if let Some(fz) = &self.float_zero_point {
            return fake_quantize_per_channel_float_qparams(
                x,
                &self.scale,
                fz,
                self.ch_axis.unwrap_or(0),
                self.quant_min,
                self.quant_max,
            );
        }
        if self.qscheme.is_per_channel() {
            fake_quantize_per_channel(
                x,
                &self.scale,
                &self.zero_point,
                self.ch_axis.unwrap_or(0),
                self.quant_min,
                self.quant_max,
            )
        } else {
            fake_quantize_per_tensor(
                x,
                self.scale[0],
                self.zero_point[0],
                self.quant_min,
                self.quant_max,
            )
        }
    }

    fn identity(x: &Tensor) -> FakeQuantOutput {
        FakeQuantOutput {
            y: x.clone(),
            mask: vec![true; x.numel()],
        }
    }

    /// One forward: observe (if enabled), update scale/zero point, fake
    /// quantize (if enabled). Returns the output and its gradient mask.
    pub fn forward(&mut self, x: &Tensor) -> Result<FakeQuantOutput> {
        match self.kind {
            FakeQuantKind::FakeQuantize => {
                if self.observer_enabled {
                    self.observer.observe(x)?;
                    let qp = self.observer.calculate_qparams()?;
                    self.scale = qp.scales;
                    self.zero_point = qp.zero_points;
                    if self.float_zero_point.is_some() {
                        self.float_zero_point = qp.float_zero_points;
                    }
                }
                if self.fake_quant_enabled {
                    self.fake_quant(x)
                } else {
                    Ok(Self::identity(x))
                }
            }
            FakeQuantKind::FixedQParams => {
                if self.fake_quant_enabled {
                    self.fake_quant(x)
                } else {
                    Ok(Self::identity(x))
                }
            }
            FakeQuantKind::FusedMovingAvgObs => {
                if self.observer_enabled {
                    self.observer.observe(x)?;
                }
                if !self.fake_quant_enabled {
                    return Ok(Self::identity(x));
                }
                let sym = self.qscheme.is_symmetric();
                let (mins, maxs) = (self.observer.min_val(), self.observer.max_val());
                let mut scales = Vec::with_capacity(mins.len());
                let mut zps = Vec::with_capacity(mins.len());
                for (&lo, &hi) in mins.iter().zip(maxs) {
                    let (s, z) = choose_qparams_fused(lo, hi, self.quant_min, self.quant_max, sym)?;
                    scales.push(s);
                    zps.push(z);
                }
                if !scales.is_empty() {
                    self.scale = scales;
                    self.zero_point = zps;
                }
                self.fake_quant(x)
            }
            FakeQuantKind::Learnable => self.forward_learnable(x),
        }
    }

    /// `_LearnableFakeQuantize.forward`.
    fn forward_learnable(&mut self, x: &Tensor) -> Result<FakeQuantOutput> {
        let l = self.learnable.as_mut().expect("learnable kind");
        if l.static_enabled {
            self.observer.observe(x)?;
            let qp = self.observer.calculate_qparams()?;
            let n = l.scale.value.numel();
            if qp.scales.len() != n && !(qp.scales.len() == 1 && n == 1) {
                return Err(QuantError::ChannelCount {
                    op: "_LearnableFakeQuantize",
                    what: "observer qparams",
                    expected: n,
                    got: qp.scales.len(),
                });
            }
            l.scale.value = tensor1(qp.scales);
            l.zero_point.value = tensor1(qp.zero_points.iter().map(|&z| z as f32).collect());
        } else {
            for s in l.scale.value.data_mut() {
                *s = s.max(f32::EPSILON);
            }
        }
        if !self.fake_quant_enabled {
            return Ok(Self::identity(x));
        }
        if self.qscheme.is_symmetric() {
            for z in l.zero_point.value.data_mut() {
                *z = 0.0;
            }
        }
        let y = if self.qscheme.is_per_channel() {
            lsq::fake_quantize_learnable_per_channel(
                x,
                l.scale.value.data(),
                l.zero_point.value.data(),
                self.ch_axis.unwrap_or(0),
                self.quant_min,
                self.quant_max,
            )?
        } else {
            lsq::fake_quantize_learnable_per_tensor(
                x,
                l.scale.value.data()[0],
                l.zero_point.value.data()[0],
                self.quant_min,
                self.quant_max,
            )?
        };
        self.last_input = Some(x.clone());
        // The mask of the input gradient is the backward's (computed there).
        Ok(FakeQuantOutput {
            mask: vec![true; x.numel()],
            y,
        })
    }

    /// Backward through this fake quant: `x` is the forward's input, `mask`
    /// the forward's mask. Plain fake quants multiply by the mask (the
    /// straight-through estimator); an enabled LSQ fake quant computes
    /// `torch._fake_quantize_learnable_*`'s gradients and, when learning is
    /// on, accumulates the scale and zero-point gradients into its parameters.
    pub fn backward(&mut self, x: &Tensor, grad_y: &Tensor, mask: &[bool]) -> Result<Tensor> {
        if grad_y.shape() != x.shape() || mask.len() != x.numel() {
            return Err(QuantError::shape(
                "FakeQuantize backward",
                format!(
                    "grad {:?}, input {:?}, mask of {}",
                    grad_y.shape(),
                    x.shape(),
                    mask.len()
                ),
            ));
        }
        let learn = self.fake_quant_enabled && self.kind == FakeQuantKind::Learnable;
        if !learn {
            let g = grad_y
                .data()
                .iter()
                .zip(mask)
                .map(|(&g, &m)| g * if m { 1.0 } else { 0.0 })
                .collect();
            return Tensor::new(grad_y.shape().to_vec(), g);
        }
        let l = self.learnable.as_mut().expect("learnable kind");
        let gf = lsq::lsq_grad_factor(x.numel(), self.quant_max, l.use_grad_scaling);
        let grads = if self.qscheme.is_per_channel() {
            lsq::fake_quantize_learnable_per_channel_backward(
                grad_y,
                x,
                l.scale.value.data(),
                l.zero_point.value.data(),
                self.ch_axis.unwrap_or(0),
                self.quant_min,
                self.quant_max,
                gf,
            )?
        } else {
            lsq::fake_quantize_learnable_per_tensor_backward(
                grad_y,
                x,
                l.scale.value.data()[0],
                l.zero_point.value.data()[0],
                self.quant_min,
                self.quant_max,
                gf,
            )?
        };
        if l.learning_enabled {
            l.scale.accumulate(grads.dscale)?;
            l.zero_point.accumulate(grads.dzero_point)?;
        }
        Ok(grads.dx)
    }

    /// [`FakeQuantize::backward`] with the last forward's input (kept by
    /// LSQ fake quants; the others only need the mask).
    pub fn backward_last(&mut self, grad_y: &Tensor, mask: &[bool]) -> Result<Tensor> {
        match self.last_input.take() {
            Some(x) if self.kind == FakeQuantKind::Learnable => self.backward(&x, grad_y, mask),
            _ => {
                let x = Tensor::zeros(grad_y.shape().to_vec());
                let learn = self.kind == FakeQuantKind::Learnable && self.fake_quant_enabled;
                if learn {
                    return Err(QuantError::invalid(
                        "FakeQuantize backward",
                        "backward without a training forward",
                    ));
                }
                self.backward(&x, grad_y, mask)
            }
        }
    }

    /// `enable_param_learning`: learn scale and zero point, stop observing,
    /// fake quantize (LSQ only).
    pub fn enable_param_learning(&mut self) -> Result<()> {
        self.set_lsq_mode(true, false, true)
    }
    /// `enable_static_estimate`: observer-driven scale and zero point, fake
    /// quantize, no learning (LSQ only).
    pub fn enable_static_estimate(&mut self) -> Result<()> {
        self.set_lsq_mode(false, true, true)
    }
    /// `enable_static_observation`: observe only, no fake quantization, no
    /// learning (LSQ only).
    pub fn enable_static_observation(&mut self) -> Result<()> {
        self.set_lsq_mode(false, true, false)
    }

    fn set_lsq_mode(&mut self, learning: bool, static_on: bool, fq: bool) -> Result<()> {
        let l = self.learnable.as_mut().ok_or_else(|| {
            QuantError::invalid("FakeQuantize", "not a learnable (LSQ) fake quant")
        })?;
        l.learning_enabled = learning;
        l.static_enabled = static_on;
        self.fake_quant_enabled = fq;
        Ok(())
    }

    /// `enable_observer` / `disable_observer` (for LSQ: `toggle_observer_update`).
    pub fn set_observer_enabled(&mut self, on: bool) {
        self.observer_enabled = on;
        if let Some(l) = &mut self.learnable {
            l.static_enabled = on;
        }
    }

    /// The learnable parameters (`scale`, `zero_point`) of an LSQ fake
    /// quant, for optimizers; empty for the others.
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        match &mut self.learnable {
            Some(l) => vec![
                ("scale".to_string(), &mut l.scale),
                ("zero_point".to_string(), &mut l.zero_point),
            ],
            None => Vec::new(),
        }
    }

    /// Everything a resumed QAT run needs: scale, zero point, switches and
    /// the observer's statistics.
    pub fn state(&self) -> FakeQuantState {
        FakeQuantState {
            scale: match &self.learnable {
                Some(l) => l.scale.value.data().to_vec(),
                None => self.scale.clone(),
            },
            zero_point: match &self.learnable {
                Some(l) => l.zero_point.value.data().to_vec(),
                None => match &self.float_zero_point {
                    Some(f) => f.clone(),
                    None => self.zero_point.iter().map(|&z| z as f32).collect(),
                },
            },
            fake_quant_enabled: self.fake_quant_enabled,
            observer_enabled: self.observer_enabled,
            static_enabled: self.learnable.as_ref().map(|l| l.static_enabled),
            learning_enabled: self.learnable.as_ref().map(|l| l.learning_enabled),
            observer: self.observer.state(),
        }
    }

    /// Restore a [`FakeQuantize::state`] into a fake quant built from the
    /// same spec.
    pub fn set_state(&mut self, st: &FakeQuantState) -> Result<()> {
        const OP: &str = "FakeQuantize::set_state";
        if st.scale.len() != st.zero_point.len() || st.scale.is_empty() {
            return Err(QuantError::invalid(
                OP,
                format!(
                    "{} scales and {} zero points",
                    st.scale.len(),
                    st.zero_point.len()
                ),
            ));
        }
        if let Some(i) = st.scale.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(QuantError::invalid(
                OP,
                format!("scale[{i}] = {} is not finite and positive", st.scale[i]),
            ));
        }
        if let Some(i) = st.zero_point.iter().position(|z| !z.is_finite()) {
            return Err(QuantError::invalid(
                OP,
                format!("zero_point[{i}] = {} is not finite", st.zero_point[i]),
            ));
        }
        self.observer.set_state(&st.observer)?;
        match &mut self.learnable {
            Some(l) => {
                if l.scale.value.numel() != st.scale.len() {
                    return Err(QuantError::ChannelCount {
                        op: OP,
                        what: "learnable scale",
                        expected: l.scale.value.numel(),
                        got: st.scale.len(),
                    });
                }
                l.scale.value = tensor1(st.scale.clone());
                l.zero_point.value = tensor1(st.zero_point.clone());
                l.static_enabled = st.static_enabled.unwrap_or(l.static_enabled);
                l.learning_enabled = st.learning_enabled.unwrap_or(l.learning_enabled);
            }
            None => {
                self.scale = st.scale.clone();
                if self.float_zero_point.is_some() {
                    self.float_zero_point = Some(st.zero_point.clone());
                    self.zero_point = st.zero_point.iter().map(|&z| z as i64).collect();
                } else {
                    if let Some(z) = st.zero_point.iter().find(|z| z.fract() != 0.0) {
                        return Err(QuantError::invalid(
                            OP,
                            format!("zero point {z} is not an integer"),
                        ));
                    }
                    self.zero_point = st.zero_point.iter().map(|&z| z as i64).collect();
                }
            }
        }
        self.fake_quant_enabled = st.fake_quant_enabled;
        self.observer_enabled = st.observer_enabled;
        Ok(())
    }
}

/// What [`FakeQuantize::state`] saves. Zero points are stored as floats
/// (integers for the integer schemes).
#[derive(Debug, Clone, PartialEq)]
pub struct FakeQuantState {
    pub scale: Vec<f32>,
    pub zero_point: Vec<f32>,
    pub fake_quant_enabled: bool,
    pub observer_enabled: bool,
    pub static_enabled: Option<bool>,
    pub learning_enabled: Option<bool>,
    pub observer: ObserverState,
}

/// `torch.fused_moving_avg_obs_fake_quant(x, observer_on, fake_quant_on,
/// running_min, running_max, scale, zero_point, averaging_const,
/// quant_min, quant_max, ch_axis, per_row_fake_quant, symmetric_quant)`:
/// updates the running min / max (the first batch sets them, later ones
/// move them by `averaging_const`) when `observer_on`, chooses the qparams
/// with fbgemm's chooser and fake quantizes when `fake_quant_on`. The
/// running statistics, scale and zero point are updated in place, as
/// PyTorch's buffers are.
#[allow(clippy::too_many_arguments)]
pub fn fused_moving_avg_obs_fake_quant(
    x: &Tensor,
    observer_on: bool,
    fake_quant_on: bool,
    running_min: &mut [f32],
    running_max: &mut [f32],
    scale: &mut Vec<f32>,
    zero_point: &mut Vec<i64>,
    averaging_const: f32,
    quant_min: i64,
    quant_max: i64,
    ch_axis: i64,
    per_row_fake_quant: bool,
    symmetric_quant: bool,
) -> Result<FakeQuantOutput> {
    const OP: &str = "fused_moving_avg_obs_fake_quant";
    if observer_on && x.numel() > 0 {
        let (lo, hi): (Vec<f32>, Vec<f32>) = if per_row_fake_quant {
            let axis = crate::quant::normalize_axis(OP, ch_axis, x.ndim())?;
            let (outer, c, inner) = crate::quant::split_axis(x.shape(), axis);
            let (mut lo, mut hi) = (vec![f32::INFINITY; c], vec![f32::NEG_INFINITY; c]);
            for o in 0..outer {
                for ch in 0..c {
                    let base = (o * c + ch) * inner;
                    let (a, b) = aminmax(&x.data()[base..base + inner]);
                    lo[ch] = lo[ch].min(a);
                    hi[ch] = hi[ch].max(b);
                }
            }
            (lo, hi)
        } else {
            let (a, b) = aminmax(x.data());
            (vec![a], vec![b])
        };
        if running_min.len() != lo.len() || running_max.len() != hi.len() {
            return Err(QuantError::ChannelCount {
                op: OP,
                what: "running_min / running_max",
                expected: lo.len(),
                got: running_min.len(),
            });
        }
        for i in 0..lo.len() {
            let (m, n) = (&mut running_min[i], &mut running_max[i]);
            if m.is_infinite() {
                *m = lo[i];
            } else {
                *m += averaging_const * (lo[i] - *m);
            }
            if n.is_infinite() {
                *n = hi[i];
            } else {
                *n += averaging_const * (hi[i] - *n);
            }
        }
    }
    if !fake_quant_on {
        return Ok(FakeQuantOutput {
            y: x.clone(),
            mask: vec![true; x.numel()],
        });
    }
    let mut s = Vec::with_capacity(running_min.len());
    let mut z = Vec::with_capacity(running_min.len());
    for (&lo, &hi) in running_min.iter().zip(running_max.iter()) {
        let (a, b) = choose_qparams_fused(lo, hi, quant_min, quant_max, symmetric_quant)?;
        s.push(a);
        z.push(b);
    }
    *scale = s;
    *zero_point = z;
    if per_row_fake_quant {
        fake_quantize_per_channel(x, scale, zero_point, ch_axis, quant_min, quant_max)
    } else {
        fake_quantize_per_tensor(x, scale[0], zero_point[0], quant_min, quant_max)
    }
}
