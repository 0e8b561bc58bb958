//! The observers that choose nothing from data: [`FixedQParamsObserver`]
//! (fixed output qparams for sigmoid, tanh, hardsigmoid, softmax),
//! [`NoopObserver`] (float16 / float32 placeholders of weight-only and
//! activation-only qconfigs), [`RecordingObserver`] (keeps every tensor it
//! sees, `default_debug_observer`) and [`ReuseInputObserver`] (an output that
//! reuses its input's qparams) — `torch.ao.quantization.observer` 2.15.

use super::{Observer, ObserverDType, ObserverKind, ObserverQParams, ObserverState};
use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::tensor::{check_scale, QScheme, Tensor};

/// `FixedQParamsObserver(scale, zero_point, dtype=quint8,
/// qscheme=per_tensor_affine, quant_min=0, quant_max=255)`: observes
/// nothing and always answers the given (f32) scale and zero point.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedQParamsObserver {
    pub scale: f32,
    pub zero_point: i64,
    pub dtype: QDType,
    pub qscheme: QScheme,
    pub quant_min: i64,
    pub quant_max: i64,
}

impl FixedQParamsObserver {
    pub fn new(
        scale: f32,
        zero_point: i64,
        dtype: QDType,
        qscheme: QScheme,
        quant_min: i64,
        quant_max: i64,
    ) -> Result<Self> {
        const OP: &str = "FixedQParamsObserver";
        check_scale(OP, scale as f64)?;
        if qscheme.is_per_channel() {
            return Err(QuantError::Unsupported {
                op: OP,
                detail: format!("qscheme {} (fixed qparams are per tensor)", qscheme.name()),
            });
        }
        if quant_min > quant_max || quant_min < dtype.min() || quant_max > dtype.max() {
            return Err(QuantError::invalid(
                OP,
                format!("quant range [{quant_min}, {quant_max}] is not inside {dtype}"),
            ));
        }
        if !(quant_min..=quant_max).contains(&zero_point) {
            return Err(QuantError::invalid(
                OP,
                format!("zero point {zero_point} outside [{quant_min}, {quant_max}]"),
            ));
        }
        Ok(FixedQParamsObserver {
            scale,
            zero_point,
            dtype,
            qscheme,
            quant_min,
            quant_max,
        })
    }
}

impl Observer for FixedQParamsObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::FixedQParams
    }
    fn observe(&mut self, _x: &Tensor) -> Result<()> {
        Ok(())
    }
    fn calculate_qparams(&self) -> Result<ObserverQParams> {
        Ok(ObserverQParams {
            scales: vec![self.scale],
            zero_points: vec![self.zero_point],
            float_zero_points: None,
        })
    }
    fn min_val(&self) -> &[f32] {
        &[]
    }
    fn max_val(&self) -> &[f32] {
        &[]
    }
    fn dtype(&self) -> ObserverDType {
        ObserverDType::Quantized(self.dtype)
    }
    fn qscheme(&self) -> QScheme {
        self.qscheme
    }
    fn quant_range(&self) -> Option<(i64, i64)> {
        Some((self.quant_min, self.quant_max))
    }
    fn reset(&mut self) {}
    fn box_clone(&self) -> Box<dyn Observer> {
        Box::new(self.clone())
    }
}

fn no_qparams(op: &'static str, what: &str) -> QuantError {
    QuantError::Unsupported {
        op,
        detail: format!("calculate_qparams should not be called for {what}"),
    }
}

/// `NoopObserver(dtype=float16)`: passes values through and records
/// nothing; the weight observer of the weight-only and activation-only
/// qconfigs' float side and of `default_reuse_input_qconfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct NoopObserver {
    pub dtype: ObserverDType,
}

impl Observer for NoopObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::Noop
    }
    fn observe(&mut self, _x: &Tensor) -> Result<()> {
        Ok(())
    }
    fn calculate_qparams(&self) -> Result<ObserverQParams> {
        Err(no_qparams(
            "NoopObserver::calculate_qparams",
            "NoopObserver",
        ))
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
        QScheme::PerTensorAffine
    }
    fn quant_range(&self) -> Option<(i64, i64)> {
        None
    }
    fn reset(&mut self) {}
    fn box_clone(&self) -> Box<dyn Observer> {
        Box::new(self.clone())
    }
}

/// `RecordingObserver(dtype=quint8)` (`default_debug_observer`): keeps a
/// copy of every tensor it observes, for debugging; it chooses no qparams.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingObserver {
    pub dtype: QDType,
    pub tensors: Vec<Tensor>,
}

impl RecordingObserver {
    pub fn new(dtype: QDType) -> Self {
        RecordingObserver {
            dtype,
            tensors: Vec::new(),
        }
    }
    /// Every tensor observed so far (`get_tensor_value`).
    pub fn get_tensor_value(&self) -> &[Tensor] {
        &self.tensors
    }
}

impl Observer for RecordingObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::Recording
    }
    fn observe(&mut self, x: &Tensor) -> Result<()> {
        self.tensors.push(x.clone());
        Ok(())
    }
    fn calculate_qparams(&self) -> Result<ObserverQParams> {
        Err(no_qparams(
            "RecordingObserver::calculate_qparams",
            "RecordingObserver",
        ))
    }
    fn min_val(&self) -> &[f32] {
        &[]
    }
    fn max_val(&self) -> &[f32] {
        &[]
    }
    fn dtype(&self) -> ObserverDType {
        ObserverDType::Quantized(self.dtype)
    }
    fn qscheme(&self) -> QScheme {
        QScheme::PerTensorAffine
    }
    fn quant_range(&self) -> Option<(i64, i64)> {
        None
    }
    fn reset(&mut self) {
        self.tensors.clear();
    }
    fn recorded(&self) -> Option<&[Tensor]> {
        Some(&self.tensors)
    }
    fn box_clone(&self) -> Box<dyn Observer> {
        Box::new(self.clone())
    }
}

/// `ReuseInputObserver`: the output reuses its input's qparams (an op that
/// only moves values); it observes nothing and chooses no qparams itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReuseInputObserver;

impl Observer for ReuseInputObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::ReuseInput
    }
    fn observe(&mut self, _x: &Tensor) -> Result<()> {
        Ok(())
    }
    fn calculate_qparams(&self) -> Result<ObserverQParams> {
        Err(no_qparams(
            "ReuseInputObserver::calculate_qparams",
            "ReuseInputObserver",
        ))
    }
    fn min_val(&self) -> &[f32] {
        &[]
    }
    fn max_val(&self) -> &[f32] {
        &[]
    }
    fn dtype(&self) -> ObserverDType {
        ObserverDType::Quantized(QDType::QUInt8)
    }
    fn qscheme(&self) -> QScheme {
        QScheme::PerTensorAffine
    }
    fn quant_range(&self) -> Option<(i64, i64)> {
        None
    }
    fn reset(&mut self) {}
    fn box_clone(&self) -> Box<dyn Observer> {
        Box::new(self.clone())
    }
}

/// `torch.nn.Identity` where a qconfig expects an observer
/// (`default_weight_only_qconfig`'s activation, `default_activation_only_qconfig`'s
/// weight): values pass through unobserved; there are no qparams.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IdentityObserver;

impl Observer for IdentityObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::Identity
    }
    fn observe(&mut self, _x: &Tensor) -> Result<()> {
        Ok(())
    }
    fn calculate_qparams(&self) -> Result<ObserverQParams> {
        Err(no_qparams("Identity::calculate_qparams", "Identity"))
    }
    fn min_val(&self) -> &[f32] {
        &[]
    }
    fn max_val(&self) -> &[f32] {
        &[]
    }
    fn dtype(&self) -> ObserverDType {
        ObserverDType::Float32
    }
    fn qscheme(&self) -> QScheme {
        QScheme::PerTensorAffine
    }
    fn quant_range(&self) -> Option<(i64, i64)> {
        None
    }
    fn reset(&mut self) {}
    fn box_clone(&self) -> Box<dyn Observer> {
        Box::new(self.clone())
    }
}

/// Observers without statistics have an empty state; restoring one checks
/// that the saved state is empty too.
pub(crate) fn stateless(op: &'static str, s: &ObserverState) -> Result<()> {
    if s.min.is_empty() && s.max.is_empty() && s.histogram.is_empty() {
        Ok(())
    } else {
        Err(QuantError::invalid(
            op,
            "this observer keeps no statistics, but the saved state has some",
        ))
    }
}
