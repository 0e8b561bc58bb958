//! Front end of quantized normalization: BatchNorm2d (with fused ReLU),
//! LayerNorm, GroupNorm, InstanceNorm.

use super::backend::Checked;
use super::checks::*;
use super::{out_q, Engine};
use crate::error::{QuantError, Result};
use crate::params::{BatchNormParams, NormParams};
use crate::portable::batch_norm_coefficients;
use crate::tensor::{MemoryFormat, QTensor};

fn check_eps(op: &'static str, eps: f64) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(QuantError::invalid(
            op,
            format!("eps {eps} must be finite and not negative"),
        ));
    }
    Ok(())
}

fn check_vec(op: &'static str, what: &'static str, v: &[f32], n: usize) -> Result<()> {
    if v.len() != n {
        return Err(QuantError::ChannelCount {
            op,
            what,
            expected: n,
            got: v.len(),
        });
    }
    check_finite(op, what, v)
}

/// Weight and bias of a layer / group / instance norm, each of length `n` when present.
fn check_affine(op: &'static str, p: &NormParams<'_>, n: usize) -> Result<()> {
    check_eps(op, p.eps)?;
    if let Some(w) = p.weight {
        check_vec(op, "weight", w, n)?;
    }
    if let Some(b) = p.bias {
        check_vec(op, "bias", b, n)?;
    }
    Ok(())
}

impl Engine {
    /// Quantized BatchNorm2d (`torch.ops.quantized.batch_norm2d`, with
    /// `relu` `batch_norm2d_relu`) of a 4-D quint8 tensor, to the given
    /// output qparams. As PyTorch's, the output is channels-last whatever
    /// the input's format.
    pub fn batch_norm2d(
        &self,
        x: &QTensor<u8>,
        p: &BatchNormParams<'_>,
        out_scale: f64,
        out_zero_point: i64,
        relu: bool,
    ) -> Result<QTensor<u8>> {
        let op = if relu {
            "batch_norm2d_relu"
        } else {
            "batch_norm2d"
        };
        let (s, _) = per_tensor_q(op, x)?;
        let out = out_q(op, out_scale, out_zero_point)?;
        let [_, c, _, _] = check_4d(op, x.shape())?;
        check_nonempty(op, x.shape())?;
        check_vec(op, "weight", p.weight, c)?;
        check_vec(op, "bias", p.bias, c)?;
        check_vec(op, "mean", p.mean, c)?;
        check_vec(op, "var", p.var, c)?;
        check_eps(op, p.eps)?;
        let positive =
            |v: f32| (v + p.eps as f32).partial_cmp(&0.0) == Some(std::cmp::Ordering::Greater);
        if let Some(ch) = p.var.iter().position(|&v| !positive(v)) {
            return Err(QuantError::invalid(
                op,
                format!(
                    "var[{ch}] + eps = {} + {} is not positive",
                    p.var[ch], p.eps
                ),
            ));
        }
        let (alpha, beta) = batch_norm_coefficients(p, s, out.scale);
        if let Some(ch) = alpha
            .iter()
            .zip(&beta)
            .position(|(a, b)| !(a.is_finite() && b.is_finite()))
        {
            return Err(QuantError::invalid(
                op,
                format!(
                    "channel {ch}: the folded coefficients {} and {} overflow f32",
                    alpha[ch], beta[ch]
                ),
            ));
        }
        let xc;
        let x = if x.memory_format() == MemoryFormat::ChannelsLast {
            x
        } else {
            xc = x.to_format(MemoryFormat::ChannelsLast);
            &xc
        };
        let data = self
            .b
            .batch_norm(x, &alpha, &beta, out_zero_point, relu, Checked::new())?;
        Ok(QTensor::new_per_tensor_unchecked_in(
            x.shape().to_vec(),
            data,
            out_scale,
            out_zero_point,
            MemoryFormat::ChannelsLast,
        ))
    }

    /// Quantized LayerNorm (`torch.ops.quantized.layer_norm`) over the
    /// trailing dimensions `normalized_shape`, with elementwise weight and
    /// bias of that shape. The output is contiguous, as PyTorch's.
    pub fn layer_norm(
        &self,
        x: &QTensor<u8>,
        normalized_shape: &[usize],
        p: &NormParams<'_>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "layer_norm";
        per_tensor_q(OP, x)?;
        let out = out_q(OP, out_scale, out_zero_point)?;
        check_nonempty(OP, x.shape())?;
        let nd = x.ndim();
        if normalized_shape.is_empty()
            || normalized_shape.len() > nd
            || x.shape()[nd - normalized_shape.len()..] != *normalized_shape
        {
            return Err(QuantError::shape(
                OP,
                format!(
                    "normalized_shape {normalized_shape:?} is not a non-empty suffix of the input shape {:?}",
                    x.shape()
                ),
            ));
        }
        let n: usize = normalized_shape.iter().product();
        check_affine(OP, p, n)?;
        let xc;
        let x = if x.memory_format() == MemoryFormat::Contiguous {
            x
        } else {
            xc = x.to_format(MemoryFormat::Contiguous);
            &xc
        };
        let data = self.b.layer_norm(x, n, p, out, Checked::new())?;
        Ok(QTensor::new_per_tensor_unchecked(
            x.shape().to_vec(),
            data,
            out_scale,
            out_zero_point,
        ))
    }

    /// Quantized GroupNorm (`torch.ops.quantized.group_norm`) of an
    /// `[N, C, *]` quint8 tensor (at least 3-D) with per-channel weight and
    /// bias; the output keeps the input's memory format.
    pub fn group_norm(
        &self,
        x: &QTensor<u8>,
        num_groups: usize,
        p: &NormParams<'_>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        self.group_norm_op("group_norm", x, num_groups, p, out_scale, out_zero_point)
    }

    /// Quantized InstanceNorm (`torch.ops.quantized.instance_norm`): group
    /// norm with one group per channel.
    pub fn instance_norm(
        &self,
        x: &QTensor<u8>,
        p: &NormParams<'_>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        let c = x.shape().get(1).copied().unwrap_or(0);
        self.group_norm_op("instance_norm", x, c, p, out_scale, out_zero_point)
    }

    fn group_norm_op(
        &self,
        op: &'static str,
        x: &QTensor<u8>,
        groups: usize,
        p: &NormParams<'_>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        per_tensor_q(op, x)?;
        let out = out_q(op, out_scale, out_zero_point)?;
        if x.ndim() < 3 {
            return Err(QuantError::InvalidShape {
                op,
                shape: x.shape().to_vec(),
                detail: "expected [N, C, *] with at least 3 dimensions".into(),
            });
        }
        check_nonempty(op, x.shape())?;
        let c = x.shape()[1];
        if groups == 0 || !c.is_multiple_of(groups) {
            return Err(QuantError::invalid(
                op,
                format!("num_groups {groups} must be positive and divide the {c} channels"),
            ));
        }
        check_affine(op, p, c)?;
        let xc;
        let xin = if x.memory_format() == MemoryFormat::Contiguous {
            x
        } else {
            xc = x.to_format(MemoryFormat::Contiguous);
            &xc
        };
        let data = self.b.group_norm(xin, groups, p, out, Checked::new())?;
        let y =
            QTensor::new_per_tensor_unchecked(x.shape().to_vec(), data, out_scale, out_zero_point);
        Ok(y.into_format(x.memory_format()))
    }
}
