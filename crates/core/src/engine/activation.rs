//! Front end of the quantized activations added for the next releases:
//! hardtanh / relu6 (integer clamps, qparams kept), hardsigmoid and tanh
//! (PyTorch's fixed output qparams), leaky_relu and elu (output qparams
//! given), gelu (qparams kept). Each validates, builds its bounds or table
//! (`crate::portable::activation`), and runs the backend's clamp or lookup.

use super::backend::Checked;
use super::checks::*;
use super::{out_q, Engine};
use crate::error::{QuantError, Result};
use crate::ops::OutQ;
use crate::params::GeluApproximate;
use crate::portable::activation as act;
use crate::tensor::QTensor;

/// `data` with `x`'s shape and memory format and the given qparams.
pub(super) fn like(x: &QTensor<u8>, data: Vec<u8>, scale: f64, zero_point: i64) -> QTensor<u8> {
    QTensor::new_per_tensor_unchecked_in(
        x.shape().to_vec(),
        data,
        scale,
        zero_point,
        x.memory_format(),
    )
}

fn finite_arg(op: &'static str, name: &str, v: f32) -> Result<()> {
    if !v.is_finite() {
        return Err(QuantError::invalid(
            op,
            format!("{name} = {v} is not finite"),
        ));
    }
    Ok(())
}

impl Engine {
    fn clamp_op(
        &self,
        op: &'static str,
        x: &QTensor<u8>,
        min_val: f32,
        max_val: f32,
    ) -> Result<QTensor<u8>> {
        let (s, z) = per_tensor_q(op, x)?;
        check_nonempty(op, x.shape())?;
        if min_val.is_nan() || max_val.is_nan() {
            return Err(QuantError::invalid(
                op,
                format!("min_val {min_val} and max_val {max_val} must not be NaN"),
            ));
        }
        let (lo, hi) = act::hardtanh_bounds(s, z, min_val, max_val);
        let data = self.b.clamp(x, lo, hi, Checked::new())?;
        Ok(like(x, data, s, z))
    }

    fn lut_op(&self, x: &QTensor<u8>, table: &[u8; 256], out: OutQ) -> Result<QTensor<u8>> {
        let data = self.b.lut(x, table, Checked::new())?;
        Ok(like(x, data, out.scale, out.zero_point))
    }

    /// Quantized hardtanh (`torch.ao.nn.quantized.functional.hardtanh`):
    /// `min(max(q, quantize(min_val)), quantize(max_val))` with the input's
    /// qparams, which the output keeps. `min_val > max_val` gives
    /// `quantize(max_val)` everywhere, as PyTorch; ±∞ bounds clamp to the
    /// code range.
    pub fn hardtanh(&self, x: &QTensor<u8>, min_val: f32, max_val: f32) -> Result<QTensor<u8>> {
        self.clamp_op("hardtanh", x, min_val, max_val)
    }

    /// Quantized relu6 (`torch.ops.quantized.relu6`): hardtanh(0, 6).
    pub fn relu6(&self, x: &QTensor<u8>) -> Result<QTensor<u8>> {
        self.clamp_op("relu6", x, 0.0, 6.0)
    }

    /// Quantized hardsigmoid (`F.hardsigmoid` on a quint8 tensor): output
    /// qparams fixed at 1/256, 0 as PyTorch's.
    pub fn hardsigmoid(&self, x: &QTensor<u8>) -> Result<QTensor<u8>> {
        const OP: &str = "hardsigmoid";
        let (s, z) = per_tensor_q(OP, x)?;
        check_nonempty(OP, x.shape())?;
        self.lut_op(x, &act::hardsigmoid_lut(s, z), act::HARDSIGMOID_OUT)
    }

    /// Quantized tanh (`torch.tanh` on a quint8 tensor): output qparams
    /// fixed at 2/256, 128 as PyTorch's.
    pub fn tanh(&self, x: &QTensor<u8>) -> Result<QTensor<u8>> {
        const OP: &str = "tanh";
        let (s, z) = per_tensor_q(OP, x)?;
        check_nonempty(OP, x.shape())?;
        self.lut_op(x, &act::tanh_lut(s, z), act::TANH_OUT)
    }

    /// Quantized leaky ReLU (`torch.ops.quantized.leaky_relu` with output
    /// qparams): `v > 0 ? v : v·negative_slope`.
    pub fn leaky_relu(
        &self,
        x: &QTensor<u8>,
        negative_slope: f32,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "leaky_relu";
        let (s, z) = per_tensor_q(OP, x)?;
        let out = out_q(OP, out_scale, out_zero_point)?;
        check_nonempty(OP, x.shape())?;
        finite_arg(OP, "negative_slope", negative_slope)?;
        self.lut_op(x, &act::leaky_relu_lut(s, z, negative_slope, out), out)
    }

    /// Quantized ELU (`torch.ao.nn.quantized.functional.elu`):
    /// `v ≥ 0 ? v : expm1(v)·alpha`.
    pub fn elu(
        &self,
        x: &QTensor<u8>,
        alpha: f32,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "elu";
        let (s, z) = per_tensor_q(OP, x)?;
        let out = out_q(OP, out_scale, out_zero_point)?;
        check_nonempty(OP, x.shape())?;
        finite_arg(OP, "alpha", alpha)?;
        self.lut_op(x, &act::elu_lut(s, z, alpha, out), out)
    }

    /// Quantized GELU (`F.gelu` on a quint8 tensor): the output keeps the
    /// input's zero point and `f32(scale)`, as PyTorch's.
    pub fn gelu(&self, x: &QTensor<u8>, approximate: GeluApproximate) -> Result<QTensor<u8>> {
        const OP: &str = "gelu";
        let (s, z) = per_tensor_q(OP, x)?;
        check_nonempty(OP, x.shape())?;
        self.lut_op(x, &act::gelu_lut(s, z, approximate), act::gelu_out(s, z))
    }
}
