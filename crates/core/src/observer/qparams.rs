//! Quantization-range and qparam computation shared by the observers
//! (`calculate_qmin_qmax`, `validate_qmin_qmax`, `_calculate_qparams`).

use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::tensor::QScheme;

/// Scales and zero points chosen by an observer. Per-tensor observers return
/// one entry; per-channel observers one per channel. For
/// `per_channel_affine_float_qparams` the zero points are floats and are kept
/// in `float_zero_points` (`zero_points` then holds their truncation toward zero,
/// which is what a `.to(int)` would give).
#[derive(Debug, Clone, PartialEq)]
pub struct ObserverQParams {
    pub scales: Vec<f32>,
    pub zero_points: Vec<i64>,
    pub float_zero_points: Option<Vec<f32>>,
}

impl ObserverQParams {
    /// The "not observed yet" answer: scale 1.0, zero point 0.
    pub fn uninitialized() -> Self {
        ObserverQParams {
            scales: vec![1.0],
            zero_points: vec![0],
            float_zero_points: None,
        }
    }
    /// (scale, zero point) when there is exactly one entry.
    pub fn per_tensor(&self) -> Option<(f32, i64)> {
        (self.scales.len() == 1).then(|| (self.scales[0], self.zero_points[0]))
    }
}

/// `validate_qmin_qmax`: a user range must include 0 and satisfy qmin < qmax.
pub fn validate_qmin_qmax(op: &'static str, quant_min: i64, quant_max: i64) -> Result<()> {
    if !(quant_min <= 0 && 0 <= quant_max) {
        return Err(QuantError::invalid(
            op,
            format!("user-specified quantization range [{quant_min}, {quant_max}] must include 0"),
        ));
    }
    if quant_min >= quant_max {
        return Err(QuantError::invalid(
            op,
            format!("quant_min {quant_min} must be strictly less than quant_max {quant_max}"),
        ));
    }
    Ok(())
}

/// `torch.ao.quantization.utils.calculate_qmin_qmax`. A customized range is
/// used as given (torch 2.15 no longer re-centres it), only checked for its
/// length and halved with floor division when `reduce_range`.
pub fn calculate_qmin_qmax(
    quant_min: i64,
    quant_max: i64,
    has_customized_qrange: bool,
    dtype: QDType,
    reduce_range: bool,
) -> Result<(i64, i64)> {
    const OP: &str = "calculate_qmin_qmax";
    if has_customized_qrange {
        let len = quant_max - quant_min + 1;
        match dtype {
            QDType::QInt8 if !(0 < len && len <= 256) => {
                return Err(QuantError::invalid(
                    OP,
                    format!("quantization range length {len} must be positive and at most 256"),
                ))
            }
            QDType::QInt32 if !(0 < len && len <= 1 << 32) => {
                return Err(QuantError::invalid(
                    OP,
                    format!("quantization range length {len} must be positive and at most 2^32"),
                ))
            }
            _ => {}
        }
        if reduce_range {
            return Ok((quant_min.div_euclid(2), quant_max.div_euclid(2)));
        }
        Ok((quant_min, quant_max))
    } else {
        Ok(match (dtype, reduce_range) {
            (QDType::QInt8, true) => (-64, 63),
            (QDType::QInt8, false) => (-128, 127),
            (QDType::QUInt8, true) => (0, 127),
            (QDType::QUInt8, false) => (0, 255),
            (QDType::QInt32, _) => (i32::MIN as i64, i32::MAX as i64),
        })
    }
}

/// The qparam rule of `UniformQuantizationObserverBase._calculate_qparams`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParamRule {
    pub dtype: QDType,
    pub qscheme: QScheme,
    pub quant_min: i64,
    pub quant_max: i64,
    pub has_customized_qrange: bool,
    /// The `eps` buffer (f32).
    pub eps: f32,
}

impl QParamRule {
    /// `_calculate_qparams(min_val, max_val)`, float32 math in torch's order.
    ///
    /// * `min`/`max` empty, or a single `+inf`/`-inf` pair: not observed →
    ///   scale 1.0, zero point 0.
    /// * any `min > max`: error (torch asserts).
    /// * The affine zero point `qmin - round(min_neg / scale)` is computed in
    ///   i64 and then clamped. torch converts the rounded value with
    ///   `.to(torch.int)` (int32), which overflows for qint32 observers when
    ///   `|min_neg/scale| >= 2^31`; rquant does not replicate that overflow.
    pub fn calculate(&self, min: &[f32], max: &[f32]) -> Result<ObserverQParams> {
        const OP: &str = "observer calculate_qparams";
        if min.is_empty() || max.is_empty() {
            return Ok(ObserverQParams::uninitialized());
        }
        if min.len() != max.len() {
            return Err(QuantError::shape(
                OP,
                format!("min has {} entries, max {}", min.len(), max.len()),
            ));
        }
        if min.len() == 1 && min[0] == f32::INFINITY && max[0] == f32::NEG_INFINITY {
            return Ok(ObserverQParams::uninitialized());
        }
        if let Some(i) = (0..min.len()).find(|&i| min[i] > max[i]) {
            return Err(QuantError::invalid(
                OP,
                format!(
                    "min {} should be less than max {} (entry {i})",
                    min[i], max[i]
                ),
            ));
        }
        let (qmin, qmax) = (self.quant_min, self.quant_max);
        let n = min.len();
        let mut scales = Vec::with_capacity(n);
        let mut zps = Vec::with_capacity(n);
        match self.qscheme {
            QScheme::PerTensorSymmetric | QScheme::PerChannelSymmetric => {
                let denom = ((qmax - qmin) as f64 / 2.0) as f32;
                let zp = match self.dtype {
                    QDType::QUInt8 if self.has_customized_qrange => (qmin + qmax).div_euclid(2),
                    QDType::QUInt8 => 128,
                    _ => 0,
                };
                for i in 0..n {
                    let min_neg = fmin(min[i], 0.0);
                    let max_pos = fmax(max[i], 0.0);
                    let amax = fmax(-min_neg, max_pos);
                    scales.push(fmax(amax / denom, self.eps));
                    zps.push(zp);
                }
                Ok(ObserverQParams {
                    scales,
                    zero_points: zps,
                    float_zero_points: None,
                })
            }
            QScheme::PerChannelAffineFloatQParams => {
                let denom = (qmax - qmin) as f32;
                let mut fzps = Vec::with_capacity(n);
                for i in 0..n {
                    let s = (max[i] - min[i]) / denom;
                    let s = if s > self.eps { s } else { 1.0 };
                    let z = -min[i] / s;
                    scales.push(s);
                    fzps.push(z);
                    zps.push(z as i64);
                }
                Ok(ObserverQParams {
                    scales,
                    zero_points: zps,
                    float_zero_points: Some(fzps),
                })
            }
            QScheme::PerTensorAffine | QScheme::PerChannelAffine => {
                let denom = (qmax - qmin) as f32;
                for i in 0..n {
                    let min_neg = fmin(min[i], 0.0);
                    let max_pos = fmax(max[i], 0.0);
                    let s = fmax((max_pos - min_neg) / denom, self.eps);
                    let r = (min_neg / s).round_ties_even();
                    let zp = if r.is_nan() {
                        qmin
                    } else {
                        (qmin as f64 - r as f64).clamp(qmin as f64, qmax as f64) as i64
                    };
                    scales.push(s);
                    zps.push(zp);
                }
                Ok(ObserverQParams {
                    scales,
                    zero_points: zps,
                    float_zero_points: None,
                })
            }
        }
    }
}

/// `torch.min` of two floats (NaN-propagating).
#[inline]
pub(crate) fn fmin(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if b < a {
        b
    } else {
        a
    }
}

/// `torch.max` of two floats (NaN-propagating).
#[inline]
pub(crate) fn fmax(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if b > a {
        b
    } else {
        a
    }
}
