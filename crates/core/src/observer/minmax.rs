//! Min/max observers: running (MinMax) and exponential moving average
//! (MovingAverage), per tensor and per channel.

use super::qparams::{fmax, fmin, ObserverQParams, QParamRule};
use super::torch_ops::aminmax;
use super::{check_no_nan, Observer, ObserverConfig, ObserverDType, ObserverKind, ObserverState};
use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::quant::normalize_axis;
use crate::tensor::{QScheme, Tensor};

fn check_per_tensor(op: &'static str, cfg: &ObserverConfig) -> Result<()> {
    if cfg.qscheme.is_per_channel() {
        return Err(QuantError::Unsupported {
            op,
            detail: format!(
                "qscheme {} is not supported; use per_tensor_affine or per_tensor_symmetric",
                cfg.qscheme.name()
            ),
        });
    }
    Ok(())
}

fn check_per_channel(op: &'static str, cfg: &ObserverConfig) -> Result<()> {
    if !cfg.qscheme.is_per_channel() {
        return Err(QuantError::Unsupported {
            op,
            detail: format!(
                "qscheme {} is not supported; use per_channel_affine, per_channel_symmetric \
                 or per_channel_affine_float_qparams",
                cfg.qscheme.name()
            ),
        });
    }
    if cfg.is_dynamic {
        return Err(QuantError::Unsupported {
            op,
            detail: "per-channel observers do not support dynamic quantization".into(),
        });
    }
    Ok(())
}

fn check_symmetric_reduce(op: &'static str, cfg: &ObserverConfig) -> Result<()> {
    if cfg.qscheme.is_symmetric() && cfg.reduce_range && cfg.dtype == QDType::QUInt8 {
        return Err(QuantError::Unsupported {
            op,
            detail: "cannot reduce range for symmetric quantization of quint8".into(),
        });
    }
    Ok(())
}

/// State shared by the per-tensor min/max observers.
#[derive(Debug, Clone, PartialEq)]
struct PerTensorState {
    rule: QParamRule,
    min: [f32; 1],
    max: [f32; 1],
    reduce_range: bool,
    is_dynamic: bool,
}

impl PerTensorState {
    fn new(op: &'static str, cfg: &ObserverConfig) -> Result<Self> {
        check_per_tensor(op, cfg)?;
        let rule = cfg.rule(op)?;
        check_symmetric_reduce(op, cfg)?;
        Ok(PerTensorState {
            rule,
            min: [f32::INFINITY],
            max: [f32::NEG_INFINITY],
            reduce_range: cfg.reduce_range,
            is_dynamic: cfg.is_dynamic,
        })
    }
    fn is_uninit(&self) -> bool {
        self.min[0] == f32::INFINITY && self.max[0] == f32::NEG_INFINITY
    }
}

macro_rules! per_tensor_common {
    () => {
        fn calculate_qparams(&self) -> Result<ObserverQParams> {
            self.s.rule.calculate(&self.s.min, &self.s.max)
        }
        fn min_val(&self) -> &[f32] {
            &self.s.min
        }
        fn max_val(&self) -> &[f32] {
            &self.s.max
        }
        fn dtype(&self) -> ObserverDType {
            ObserverDType::Quantized(self.s.rule.dtype)
        }
        fn qscheme(&self) -> QScheme {
            self.s.rule.qscheme
        }
        fn quant_range(&self) -> Option<(i64, i64)> {
            Some((self.s.rule.quant_min, self.s.rule.quant_max))
        }
        fn is_dynamic(&self) -> bool {
            self.s.is_dynamic
        }
        fn reduce_range(&self) -> bool {
            self.s.reduce_range
        }
        fn reset(&mut self) {
            self.s.min = [f32::INFINITY];
            self.s.max = [f32::NEG_INFINITY];
        }
        fn set_state(&mut self, st: &ObserverState) -> Result<()> {
            if st.min.len() != 1 || st.max.len() != 1 || !st.histogram.is_empty() {
                return Err(QuantError::invalid(
                    "Observer::set_state",
                    format!(
                        "{} keeps one min and one max, the saved state has {} and {}",
                        self.kind(),
                        st.min.len(),
                        st.max.len()
                    ),
                ));
            }
            self.s.min = [st.min[0]];
            self.s.max = [st.max[0]];
            Ok(())
        }
        fn box_clone(&self) -> Box<dyn Observer> {
            Box::new(self.clone())
        }
    };
}

/// `MinMaxObserver`: running min and max of everything observed.
#[derive(Debug, Clone, PartialEq)]
pub struct MinMaxObserver {
    s: PerTensorState,
}

impl MinMaxObserver {
    pub fn new(cfg: ObserverConfig) -> Result<Self> {
        Ok(MinMaxObserver {
            s: PerTensorState::new("MinMaxObserver", &cfg)?,
        })
    }
    /// The qparam rule (effective range, eps, scheme).
    pub fn rule(&self) -> &QParamRule {
        &self.s.rule
    }
}

impl Observer for MinMaxObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::MinMax
    }
    fn observe(&mut self, x: &Tensor) -> Result<()> {
        if x.numel() == 0 {
            return Ok(());
        }
        check_no_nan("MinMaxObserver::observe", x)?;
        let (lo, hi) = aminmax(x.data());
        self.s.min[0] = fmin(lo, self.s.min[0]);
        self.s.max[0] = fmax(hi, self.s.max[0]);
        Ok(())
    }
    per_tensor_common!();
}

/// `MovingAverageMinMaxObserver`: first batch sets min/max, later batches
/// move them by `min += c * (batch_min - min)` (f32).
#[derive(Debug, Clone, PartialEq)]
pub struct MovingAverageMinMaxObserver {
    s: PerTensorState,
    averaging_constant: f64,
}

impl MovingAverageMinMaxObserver {
    pub fn new(cfg: ObserverConfig) -> Result<Self> {
        const OP: &str = "MovingAverageMinMaxObserver";
        check_per_tensor(OP, &cfg)?;
        if cfg.is_dynamic && cfg.averaging_constant != 1.0 {
            return Err(QuantError::Unsupported {
                op: OP,
                detail: format!(
                    "dynamic quantization needs averaging_constant 1, got {}",
                    cfg.averaging_constant
                ),
            });
        }
        Ok(MovingAverageMinMaxObserver {
            s: PerTensorState::new(OP, &cfg)?,
            averaging_constant: cfg.averaging_constant,
        })
    }
    pub fn averaging_constant(&self) -> f64 {
        self.averaging_constant
    }
    pub fn rule(&self) -> &QParamRule {
        &self.s.rule
    }
}

impl Observer for MovingAverageMinMaxObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::MovingAverageMinMax
    }
    fn observe(&mut self, x: &Tensor) -> Result<()> {
        if x.numel() == 0 {
            return Ok(());
        }
        check_no_nan("MovingAverageMinMaxObserver::observe", x)?;
        let (lo, hi) = aminmax(x.data());
        if self.s.is_uninit() {
            self.s.min[0] = lo;
            self.s.max[0] = hi;
        } else {
            let c = self.averaging_constant as f32;
            self.s.min[0] += c * (lo - self.s.min[0]);
            self.s.max[0] += c * (hi - self.s.max[0]);
        }
        Ok(())
    }
    per_tensor_common!();
}

/// Per-channel min and max of `x` along `axis` (torch: permute the axis to
/// the front, flatten the rest, `aminmax(dim=1)`).
fn channel_aminmax(op: &'static str, x: &Tensor, ch_axis: i64) -> Result<(Vec<f32>, Vec<f32>)> {
    if x.ndim() < 2 {
        return Err(QuantError::InvalidShape {
            op,
            shape: x.shape().to_vec(),
            detail: "per-channel observers need at least 2 dimensions".into(),
        });
    }
    let axis = normalize_axis(op, ch_axis, x.ndim())?;
    let shape = x.shape();
    let c = shape[axis];
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut lo = vec![f32::INFINITY; c];
    let mut hi = vec![f32::NEG_INFINITY; c];
    let d = x.data();
    for o in 0..outer {
        for ch in 0..c {
            let base = (o * c + ch) * inner;
            for &v in &d[base..base + inner] {
                if v < lo[ch] {
                    lo[ch] = v;
                }
                if v > hi[ch] {
                    hi[ch] = v;
                }
            }
        }
    }
    Ok((lo, hi))
}

#[derive(Debug, Clone, PartialEq)]
struct PerChannelState {
    rule: QParamRule,
    ch_axis: i64,
    min: Vec<f32>,
    max: Vec<f32>,
    reduce_range: bool,
}

impl PerChannelState {
    /// This batch's per-channel (min, max) to merge into the state, or None
    /// when there is nothing to merge: an empty batch, or the first batch,
    /// which becomes the state as it is (both observers start that way).
    fn batch(&mut self, op: &'static str, x: &Tensor) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        if x.numel() == 0 {
            return Ok(None);
        }
        check_no_nan(op, x)?;
        let (lo, hi) = channel_aminmax(op, x, self.ch_axis)?;
        self.check_channels(op, lo.len())?;
        if self.min.is_empty() {
            self.min = lo;
            self.max = hi;
            return Ok(None);
        }
        Ok(Some((lo, hi)))
    }

    fn new(op: &'static str, cfg: &ObserverConfig) -> Result<Self> {
        check_per_channel(op, cfg)?;
        let rule = cfg.rule(op)?;
        check_symmetric_reduce(op, cfg)?;
        Ok(PerChannelState {
            rule,
            ch_axis: cfg.ch_axis,
            min: Vec::new(),
            max: Vec::new(),
            reduce_range: cfg.reduce_range,
        })
    }
    fn check_channels(&self, op: &'static str, c: usize) -> Result<()> {
        if !self.min.is_empty() && self.min.len() != c {
            return Err(QuantError::ChannelCount {
                op,
                what: "input channels",
                expected: self.min.len(),
                got: c,
            });
        }
        Ok(())
    }
}

macro_rules! per_channel_common {
    () => {
        fn calculate_qparams(&self) -> Result<ObserverQParams> {
            self.s.rule.calculate(&self.s.min, &self.s.max)
        }
        fn min_val(&self) -> &[f32] {
            &self.s.min
        }
        fn max_val(&self) -> &[f32] {
            &self.s.max
        }
        fn dtype(&self) -> ObserverDType {
            ObserverDType::Quantized(self.s.rule.dtype)
        }
        fn qscheme(&self) -> QScheme {
            self.s.rule.qscheme
        }
        fn quant_range(&self) -> Option<(i64, i64)> {
            Some((self.s.rule.quant_min, self.s.rule.quant_max))
        }
        fn ch_axis(&self) -> Option<i64> {
            Some(self.s.ch_axis)
        }
        fn reduce_range(&self) -> bool {
            self.s.reduce_range
        }
        fn reset(&mut self) {
            self.s.min.clear();
            self.s.max.clear();
        }
        fn set_state(&mut self, st: &ObserverState) -> Result<()> {
            if st.min.len() != st.max.len() || !st.histogram.is_empty() {
                return Err(QuantError::invalid(
                    "Observer::set_state",
                    format!(
                        "{} keeps one min and max per channel, the saved state has {} and {}",
                        self.kind(),
                        st.min.len(),
                        st.max.len()
                    ),
                ));
            }
            self.s.min = st.min.clone();
            self.s.max = st.max.clone();
            Ok(())
        }
        fn box_clone(&self) -> Box<dyn Observer> {
            Box::new(self.clone())
        }
    };
}

/// `PerChannelMinMaxObserver`: running min/max per channel along `ch_axis`.
#[derive(Debug, Clone, PartialEq)]
pub struct PerChannelMinMaxObserver {
    s: PerChannelState,
}

impl PerChannelMinMaxObserver {
    pub fn new(cfg: ObserverConfig) -> Result<Self> {
        Ok(PerChannelMinMaxObserver {
            s: PerChannelState::new("PerChannelMinMaxObserver", &cfg)?,
        })
    }
    pub fn rule(&self) -> &QParamRule {
        &self.s.rule
    }
}

impl Observer for PerChannelMinMaxObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::PerChannelMinMax
    }
    fn observe(&mut self, x: &Tensor) -> Result<()> {
        let Some((lo, hi)) = self.s.batch("PerChannelMinMaxObserver::observe", x)? else {
            return Ok(());
        };
        for (m, v) in self.s.min.iter_mut().zip(lo) {
            *m = fmin(v, *m);
        }
        for (m, v) in self.s.max.iter_mut().zip(hi) {
            *m = fmax(v, *m);
        }
        Ok(())
    }
    per_channel_common!();
}

/// `MovingAveragePerChannelMinMaxObserver`: the moving-average rule per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct MovingAveragePerChannelMinMaxObserver {
    s: PerChannelState,
    averaging_constant: f64,
}

impl MovingAveragePerChannelMinMaxObserver {
    pub fn new(cfg: ObserverConfig) -> Result<Self> {
        Ok(MovingAveragePerChannelMinMaxObserver {
            s: PerChannelState::new("MovingAveragePerChannelMinMaxObserver", &cfg)?,
            averaging_constant: cfg.averaging_constant,
        })
    }
    pub fn averaging_constant(&self) -> f64 {
        self.averaging_constant
    }
    pub fn rule(&self) -> &QParamRule {
        &self.s.rule
    }
}

impl Observer for MovingAveragePerChannelMinMaxObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::MovingAveragePerChannelMinMax
    }
    fn observe(&mut self, x: &Tensor) -> Result<()> {
        let op = "MovingAveragePerChannelMinMaxObserver::observe";
        let Some((lo, hi)) = self.s.batch(op, x)? else {
            return Ok(());
        };
        let c = self.averaging_constant as f32;
        for (m, v) in self.s.min.iter_mut().zip(lo) {
            *m += c * (v - *m);
        }
        for (m, v) in self.s.max.iter_mut().zip(hi) {
            *m += c * (v - *m);
        }
        Ok(())
    }
    per_channel_common!();
}
