//! Observers: collect statistics of float tensors and choose quantization
//! parameters exactly as `torch.ao.quantization.observer` (torch 2.15).
//!
//! * [`MinMaxObserver`], [`MovingAverageMinMaxObserver`] (per tensor),
//! * [`PerChannelMinMaxObserver`], [`MovingAveragePerChannelMinMaxObserver`],
//! * [`HistogramObserver`] (L2-minimising range search),
//! * [`PlaceholderObserver`] (carries dtype / dynamic flag only),
//! * [`FixedQParamsObserver`], [`NoopObserver`], [`RecordingObserver`],
//!   [`ReuseInputObserver`] (choose nothing from data).
//!
//! Every observer's statistics can be read and restored
//! ([`Observer::state`], [`Observer::set_state`]), so calibration can stop
//! and resume with identical results.
//!
//! All math is float32 in torch's operation order. Decisions where rquant
//! differs from torch on purpose:
//! * **NaN input**: torch lets a NaN poison the running min/max (`aminmax`
//!   and `torch.min` propagate NaN) and later produces a NaN scale. rquant's
//!   `observe` returns [`QuantError::NaN`] and leaves the state untouched.
//! * **qint32 zero point overflow** in `_calculate_qparams` is not replicated
//!   (see [`QParamRule::calculate`]).
//! * Empty tensors are ignored, as in torch.

mod extra;
mod histogram;
mod minmax;
mod qparams;
pub mod torch_ops;

pub use extra::{
    FixedQParamsObserver, IdentityObserver, NoopObserver, RecordingObserver, ReuseInputObserver,
};
pub use histogram::HistogramObserver;
pub use minmax::{
    MinMaxObserver, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
};
pub use qparams::{calculate_qmin_qmax, validate_qmin_qmax, ObserverQParams, QParamRule};

use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::tensor::{QScheme, Tensor};
use std::fmt;

/// The dtype an observer describes: a quantized dtype, or a float type for
/// placeholder observers (fp16 dynamic / static configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObserverDType {
    Quantized(QDType),
    Float16,
    Float32,
    /// `torch.quint4x2`: 4-bit codes 0..15, two per byte (4-bit embeddings).
    QUInt4x2,
    /// `torch.quint2x4`: 2-bit codes 0..3, four per byte.
    QUInt2x4,
}

impl ObserverDType {
    pub fn name(self) -> &'static str {
        match self {
            ObserverDType::Quantized(d) => d.name(),
            ObserverDType::Float16 => "float16",
            ObserverDType::Float32 => "float32",
            ObserverDType::QUInt4x2 => "quint4x2",
            ObserverDType::QUInt2x4 => "quint2x4",
        }
    }
    pub fn quantized(self) -> Option<QDType> {
        match self {
            ObserverDType::Quantized(d) => Some(d),
            _ => None,
        }
    }
    /// Bits per code of the sub-byte dtypes (None for the others).
    pub fn sub_byte_bits(self) -> Option<u8> {
        match self {
            ObserverDType::QUInt4x2 => Some(4),
            ObserverDType::QUInt2x4 => Some(2),
            _ => None,
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        let s = s.strip_prefix("torch.").unwrap_or(s);
        Some(match s {
            "float16" => ObserverDType::Float16,
            "float32" => ObserverDType::Float32,
            "quint4x2" => ObserverDType::QUInt4x2,
            "quint2x4" => ObserverDType::QUInt2x4,
            q => ObserverDType::Quantized(QDType::from_name(q)?),
        })
    }
}

/// Which observer class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObserverKind {
    MinMax,
    MovingAverageMinMax,
    PerChannelMinMax,
    MovingAveragePerChannelMinMax,
    Histogram,
    Placeholder,
    FixedQParams,
    Noop,
    Recording,
    ReuseInput,
    /// `torch.nn.Identity` in an observer slot (`default_weight_only_qconfig`'s
    /// activation): passes values through, chooses no qparams.
    Identity,
}

impl ObserverKind {
    /// The torch class name, e.g. `MinMaxObserver`.
    pub fn name(self) -> &'static str {
        match self {
            ObserverKind::MinMax => "MinMaxObserver",
            ObserverKind::MovingAverageMinMax => "MovingAverageMinMaxObserver",
            ObserverKind::PerChannelMinMax => "PerChannelMinMaxObserver",
            ObserverKind::MovingAveragePerChannelMinMax => "MovingAveragePerChannelMinMaxObserver",
            ObserverKind::Histogram => "HistogramObserver",
            ObserverKind::Placeholder => "PlaceholderObserver",
            ObserverKind::FixedQParams => "FixedQParamsObserver",
            ObserverKind::Noop => "NoopObserver",
            ObserverKind::Recording => "RecordingObserver",
            ObserverKind::ReuseInput => "ReuseInputObserver",
            ObserverKind::Identity => "Identity",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        let s = s.rsplit('.').next().unwrap_or(s);
        Some(match s {
            "MinMaxObserver" => ObserverKind::MinMax,
            "MovingAverageMinMaxObserver" => ObserverKind::MovingAverageMinMax,
            "PerChannelMinMaxObserver" => ObserverKind::PerChannelMinMax,
            "MovingAveragePerChannelMinMaxObserver" => ObserverKind::MovingAveragePerChannelMinMax,
            "HistogramObserver" => ObserverKind::Histogram,
            "PlaceholderObserver" => ObserverKind::Placeholder,
            "FixedQParamsObserver" => ObserverKind::FixedQParams,
            "NoopObserver" => ObserverKind::Noop,
            "RecordingObserver" => ObserverKind::Recording,
            "ReuseInputObserver" => ObserverKind::ReuseInput,
            "Identity" => ObserverKind::Identity,
            _ => return None,
        })
    }
    pub fn is_per_channel(self) -> bool {
        matches!(
            self,
            ObserverKind::PerChannelMinMax | ObserverKind::MovingAveragePerChannelMinMax
        )
    }
    /// torch's constructor defaults for this class (per-channel classes
    /// default to `per_channel_affine`).
    pub fn default_config(self) -> ObserverConfig {
        let mut c = ObserverConfig::default();
        if self.is_per_channel() {
            c.qscheme = QScheme::PerChannelAffine;
        }
        c
    }
}

impl fmt::Display for ObserverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Constructor arguments shared by the observers (torch's keyword arguments).
/// Fields that a class does not use are ignored by it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObserverConfig {
    pub dtype: QDType,
    pub qscheme: QScheme,
    pub reduce_range: bool,
    pub quant_min: Option<i64>,
    pub quant_max: Option<i64>,
    /// Moving-average constant (Python float; applied as f32). Default 0.01.
    pub averaging_constant: f64,
    /// Channel axis of per-channel observers (may be negative). Default 0.
    pub ch_axis: i64,
    /// Histogram bins. Default 2048.
    pub bins: usize,
    /// The eps buffer, default `torch.finfo(torch.float32).eps`.
    pub eps: f32,
    pub is_dynamic: bool,
    /// `FixedQParamsObserver` only: its scale (a Python float, kept as f32).
    pub fixed_scale: f32,
    /// `FixedQParamsObserver` only: its zero point.
    pub fixed_zero_point: i64,
}

impl Default for ObserverConfig {
    fn default() -> Self {
        ObserverConfig {
            dtype: QDType::QUInt8,
            qscheme: QScheme::PerTensorAffine,
            reduce_range: false,
            quant_min: None,
            quant_max: None,
            averaging_constant: 0.01,
            ch_axis: 0,
            bins: 2048,
            eps: f32::EPSILON,
            is_dynamic: false,
            fixed_scale: 1.0,
            fixed_zero_point: 0,
        }
    }
}

impl ObserverConfig {
    /// Validate the common arguments and build the qparam rule
    /// (`UniformQuantizationObserverBase.__init__`).
    pub(crate) fn rule(&self, op: &'static str) -> Result<QParamRule> {
        let custom = self.quant_min.is_some() && self.quant_max.is_some();
        if custom {
            validate_qmin_qmax(op, self.quant_min.unwrap(), self.quant_max.unwrap())?;
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(QuantError::invalid(
                op,
                format!("eps {} must be finite and >= 0", self.eps),
            ));
        }
        let (qmin, qmax) = calculate_qmin_qmax(
            self.quant_min.unwrap_or(0),
            self.quant_max.unwrap_or(0),
            custom,
            self.dtype,
            self.reduce_range,
        )?;
        Ok(QParamRule {
            dtype: self.dtype,
            qscheme: self.qscheme,
            quant_min: qmin,
            quant_max: qmax,
            has_customized_qrange: custom,
            eps: self.eps,
        })
    }
}

/// An observer: sees float tensors, then proposes qparams.
pub trait Observer: Send + Sync + fmt::Debug {
    fn kind(&self) -> ObserverKind;
    /// Record statistics of `x` (torch's `forward`). Empty tensors are ignored.
    fn observe(&mut self, x: &Tensor) -> Result<()>;
    /// The qparams for the statistics seen so far.
    fn calculate_qparams(&self) -> Result<ObserverQParams>;
    /// Running minimum (per-tensor: one value, `+inf` before any data;
    /// per-channel: one per channel, empty before any data).
    fn min_val(&self) -> &[f32];
    /// Running maximum (see [`Observer::min_val`]).
    fn max_val(&self) -> &[f32];
    fn dtype(&self) -> ObserverDType;
    fn qscheme(&self) -> QScheme;
    /// The effective `(quant_min, quant_max)` after `calculate_qmin_qmax`
    /// (None for a placeholder without a range).
    fn quant_range(&self) -> Option<(i64, i64)>;
    /// Channel axis for per-channel observers.
    fn ch_axis(&self) -> Option<i64> {
        None
    }
    fn is_dynamic(&self) -> bool {
        false
    }
    fn reduce_range(&self) -> bool {
        false
    }
    /// Forget all statistics (`reset_min_max_vals`).
    fn reset(&mut self);
    fn box_clone(&self) -> Box<dyn Observer>;
    /// The statistics seen so far (min/max, and the histogram of a
    /// `HistogramObserver`), to save a calibration and resume it.
    fn state(&self) -> ObserverState {
        ObserverState {
            min: self.min_val().to_vec(),
            max: self.max_val().to_vec(),
            histogram: Vec::new(),
        }
    }
    /// Restore statistics saved by [`Observer::state`] (checked against this
    /// observer's shape: one value per tensor, one per channel, `bins` counts).
    fn set_state(&mut self, s: &ObserverState) -> Result<()> {
        extra::stateless("Observer::set_state", s)
    }
    /// The tensors a `RecordingObserver` kept (None for other observers).
    fn recorded(&self) -> Option<&[Tensor]> {
        None
    }
    /// The spec this observer was built from (observers built by
    /// [`crate::qconfig::ObserverSpec::build`] know it; files save it).
    fn spec(&self) -> Option<&crate::qconfig::ObserverSpec> {
        None
    }
}

/// An observer together with the spec that built it
/// ([`crate::qconfig::ObserverSpec::build`] returns these).
#[derive(Debug, Clone)]
pub struct SpecObserver {
    pub spec: crate::qconfig::ObserverSpec,
    pub inner: Box<dyn Observer>,
}

impl Observer for SpecObserver {
    fn kind(&self) -> ObserverKind {
        self.inner.kind()
    }
    fn observe(&mut self, x: &Tensor) -> Result<()> {
        self.inner.observe(x)
    }
    fn calculate_qparams(&self) -> Result<ObserverQParams> {
        self.inner.calculate_qparams()
    }
    fn min_val(&self) -> &[f32] {
        self.inner.min_val()
    }
    fn max_val(&self) -> &[f32] {
        self.inner.max_val()
    }
    fn dtype(&self) -> ObserverDType {
        self.inner.dtype()
    }
    fn qscheme(&self) -> QScheme {
        self.inner.qscheme()
    }
    fn quant_range(&self) -> Option<(i64, i64)> {
        self.inner.quant_range()
    }
    fn ch_axis(&self) -> Option<i64> {
        self.inner.ch_axis()
    }
    fn is_dynamic(&self) -> bool {
        self.inner.is_dynamic()
    }
    fn reduce_range(&self) -> bool {
        self.inner.reduce_range()
    }
    fn reset(&mut self) {
        self.inner.reset()
    }
    fn box_clone(&self) -> Box<dyn Observer> {
        Box::new(self.clone())
    }
    fn state(&self) -> ObserverState {
        self.inner.state()
    }
    fn set_state(&mut self, s: &ObserverState) -> Result<()> {
        self.inner.set_state(s)
    }
    fn recorded(&self) -> Option<&[Tensor]> {
        self.inner.recorded()
    }
    fn spec(&self) -> Option<&crate::qconfig::ObserverSpec> {
        Some(&self.spec)
    }
}

/// An observer's statistics ([`Observer::state`]): empty vectors for
/// observers that keep none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObserverState {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    pub histogram: Vec<f32>,
}

impl Clone for Box<dyn Observer> {
    fn clone(&self) -> Self {
        self.box_clone()
    }
}

/// Build an observer from its torch class name and arguments. Accepted
/// names: `MinMaxObserver`, `MovingAverageMinMaxObserver`,
/// `PerChannelMinMaxObserver`, `MovingAveragePerChannelMinMaxObserver`,
/// `HistogramObserver`, `PlaceholderObserver`, `FixedQParamsObserver`,
/// `NoopObserver`, `RecordingObserver`, `ReuseInputObserver` (optionally
/// module-qualified).
pub fn build_observer(kind: &str, cfg: ObserverConfig) -> Result<Box<dyn Observer>> {
    let k = ObserverKind::from_name(kind).ok_or_else(|| {
        QuantError::invalid("build_observer", format!("unknown observer class {kind:?}"))
    })?;
    build_observer_kind(k, cfg)
}

/// [`build_observer`] with a typed kind.
pub fn build_observer_kind(kind: ObserverKind, cfg: ObserverConfig) -> Result<Box<dyn Observer>> {
    Ok(match kind {
        ObserverKind::MinMax => Box::new(MinMaxObserver::new(cfg)?),
        ObserverKind::MovingAverageMinMax => Box::new(MovingAverageMinMaxObserver::new(cfg)?),
        ObserverKind::PerChannelMinMax => Box::new(PerChannelMinMaxObserver::new(cfg)?),
        ObserverKind::MovingAveragePerChannelMinMax => {
            Box::new(MovingAveragePerChannelMinMaxObserver::new(cfg)?)
        }
        ObserverKind::Histogram => Box::new(HistogramObserver::new(cfg)?),
        ObserverKind::Placeholder => Box::new(PlaceholderObserver::new(
            ObserverDType::Quantized(cfg.dtype),
            cfg.quant_min,
            cfg.quant_max,
            cfg.is_dynamic,
        )),
        ObserverKind::FixedQParams => Box::new(FixedQParamsObserver::new(
            cfg.fixed_scale,
            cfg.fixed_zero_point,
            cfg.dtype,
            cfg.qscheme,
            cfg.quant_min.unwrap_or(0),
            cfg.quant_max.unwrap_or(255),
        )?),
        ObserverKind::Noop => Box::new(NoopObserver {
            dtype: ObserverDType::Float16,
        }),
        ObserverKind::Recording => Box::new(RecordingObserver::new(cfg.dtype)),
        ObserverKind::ReuseInput => Box::new(ReuseInputObserver),
        ObserverKind::Identity => Box::new(IdentityObserver),
    })
}

/// Reject NaN before it reaches the statistics.
pub(crate) fn check_no_nan(op: &'static str, x: &Tensor) -> Result<()> {
    if let Some(index) = x.data().iter().position(|v| v.is_nan()) {
        return Err(QuantError::NaN { op, index });
    }
    Ok(())
}

/// `PlaceholderObserver`: records nothing and only carries its dtype,
/// optional range and `is_dynamic` to the convert step (fp16 and dynamic
/// quantization). `calculate_qparams` is an error, as in torch.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaceholderObserver {
    pub dtype: ObserverDType,
    pub quant_min: Option<i64>,
    pub quant_max: Option<i64>,
    pub is_dynamic: bool,
    pub qscheme: QScheme,
    pub eps: f32,
}

impl PlaceholderObserver {
    pub fn new(
        dtype: ObserverDType,
        quant_min: Option<i64>,
        quant_max: Option<i64>,
        is_dynamic: bool,
    ) -> Self {
        PlaceholderObserver {
            dtype,
            quant_min,
            quant_max,
            is_dynamic,
            qscheme: QScheme::PerTensorAffine,
            eps: f32::EPSILON,
        }
    }
}

impl Observer for PlaceholderObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::Placeholder
    }
    fn observe(&mut self, _x: &Tensor) -> Result<()> {
        Ok(())
    }
    fn calculate_qparams(&self) -> Result<ObserverQParams> {
        Err(QuantError::Unsupported {
            op: "PlaceholderObserver::calculate_qparams",
            detail: "calculate_qparams should not be called for PlaceholderObserver".into(),
        })
    }
    fn min_val(&self) -> &[f32] {
        &[]
    }
    fn max_val(&self) -> &[f32] {
        &[]
    }
    fn dtype(&self) -> ObserverDType {
        self.dtype
    }
    fn qscheme(&self) -> QScheme {
        self.qscheme
    }
    fn quant_range(&self) -> Option<(i64, i64)> {
        Some((self.quant_min?, self.quant_max?))
    }
    fn is_dynamic(&self) -> bool {
        self.is_dynamic
    }
    fn reset(&mut self) {}
    fn box_clone(&self) -> Box<dyn Observer> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests;
