//! Quantized activations of one quint8 input with per-tensor qparams: the
//! clamps (hardtanh, relu6) in the integer domain, and the smooth ones as
//! 256-entry tables of `quantize(f(dequantize(q)))` (docs/numerics.md §11).
//! The `*_f32` functions are the definitions of `f`; the tables and the
//! oracles below only apply them.

use super::{apply_lut, lut_u8};
use crate::numerics::{inv_scale, quantize_val};
use crate::ops::OutQ;
use crate::params::GeluApproximate;
use crate::special::{erf_f64, expm1_f64, tanh_f64};
use crate::{QTensor, Result};

/// PyTorch's fixed output qparams of quantized hardsigmoid on quint8: 1/256, 0.
pub const HARDSIGMOID_OUT: OutQ = OutQ {
    scale: 0.00390625,
    zero_point: 0,
};

/// PyTorch's fixed output qparams of quantized tanh on quint8: 2/256, 128.
pub const TANH_OUT: OutQ = OutQ {
    scale: 0.0078125,
    zero_point: 128,
};

/// The codes of hardtanh's bounds under the input's qparams:
/// `(quantize(min_val), quantize(max_val))` (PyTorch's `qclamp` kernel).
/// The values must not be NaN (the front end checks).
pub fn hardtanh_bounds(scale: f64, zero_point: i64, min_val: f32, max_val: f32) -> (u8, u8) {
    let inv = inv_scale(scale);
    (
        quantize_val::<u8>(inv, zero_point, min_val),
        quantize_val::<u8>(inv, zero_point, max_val),
    )
}

/// `min(max(q, lo), hi)`, in that order (so `lo > hi` gives `hi`, as PyTorch).
pub fn clamp(x: &QTensor<u8>, lo: u8, hi: u8) -> Result<Vec<u8>> {
    Ok(x.int_repr().iter().map(|&q| q.max(lo).min(hi)).collect())
}

/// Hardsigmoid: `clamp(v + 3, 0, 6) / 6` in f32.
#[inline]
pub fn hardsigmoid_f32(v: f32) -> f32 {
    (v + 3.0).clamp(0.0, 6.0) / 6.0
}

/// Leaky ReLU: `v` if `v > 0`, else `v · slope` (f32).
#[inline]
pub fn leaky_relu_f32(v: f32, slope: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        v * slope
    }
}

/// ELU: `v` if `v ≥ 0`, else `f32(expm1(v)) · alpha` (expm1 in f64, rounded to f32).
#[inline]
pub fn elu_f32(v: f32, alpha: f32) -> f32 {
    if v >= 0.0 {
        v
    } else {
        (expm1_f64(v as f64) as f32) * alpha
    }
}

/// `f32(tanh(v))`, tanh in f64.
#[inline]
pub fn tanh_f32(v: f32) -> f32 {
    tanh_f64(v as f64) as f32
}

/// GELU in f64, rounded to f32, as PyTorch's scalar kernel: `none`:
/// `v·0.5·(1 + erf(v·√½))`; `tanh`: with `c = f32(f32(v·v)·v)`,
/// `0.5·v·(1 + tanh(√2·(2/√π)·0.5 · (v + 0.044715·c)))`.
pub fn gelu_f32(v: f32, approximate: GeluApproximate) -> f32 {
    let x = v as f64;
    match approximate {
        GeluApproximate::None => {
            (x * 0.5 * (1.0 + erf_f64(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
        }
        GeluApproximate::Tanh => {
            const BETA: f64 = std::f64::consts::SQRT_2 * std::f64::consts::FRAC_2_SQRT_PI * 0.5;
            let cube = (v * v * v) as f64;
            let inner = BETA * (x + 0.044715 * cube);
            (0.5 * x * (1.0 + tanh_f64(inner))) as f32
        }
    }
}

/// The hardsigmoid table for input qparams (scale, zp), to [`HARDSIGMOID_OUT`].
pub fn hardsigmoid_lut(scale: f64, zero_point: i64) -> [u8; 256] {
    lut_u8(scale, zero_point, HARDSIGMOID_OUT, hardsigmoid_f32)
}

/// The leaky-ReLU table.
pub fn leaky_relu_lut(scale: f64, zero_point: i64, slope: f32, out: OutQ) -> [u8; 256] {
    lut_u8(scale, zero_point, out, |v| leaky_relu_f32(v, slope))
}

/// The ELU table.
pub fn elu_lut(scale: f64, zero_point: i64, alpha: f32, out: OutQ) -> [u8; 256] {
    lut_u8(scale, zero_point, out, |v| elu_f32(v, alpha))
}

/// The tanh table, to [`TANH_OUT`].
pub fn tanh_lut(scale: f64, zero_point: i64) -> [u8; 256] {
    lut_u8(scale, zero_point, TANH_OUT, tanh_f32)
}

/// GELU's output qparams: the input's zero point and `f32(scale)` (PyTorch
/// stores the kernel's f32 scale in the output tensor).
pub fn gelu_out(scale: f64, zero_point: i64) -> OutQ {
    OutQ {
        scale: scale as f32 as f64,
        zero_point,
    }
}

/// The GELU table, to [`gelu_out`].
pub fn gelu_lut(scale: f64, zero_point: i64, approximate: GeluApproximate) -> [u8; 256] {
    lut_u8(scale, zero_point, gelu_out(scale, zero_point), |v| {
        gelu_f32(v, approximate)
    })
}

/// Quantized hardsigmoid of a per-tensor quint8 tensor (output qparams [`HARDSIGMOID_OUT`]).
pub fn hardsigmoid(x: &QTensor<u8>) -> Result<Vec<u8>> {
    let (s, z) = x.q_per_tensor().expect("validated");
    Ok(apply_lut(&hardsigmoid_lut(s, z), x.int_repr()))
}

/// Quantized tanh (output qparams [`TANH_OUT`]).
pub fn tanh(x: &QTensor<u8>) -> Result<Vec<u8>> {
    let (s, z) = x.q_per_tensor().expect("validated");
    Ok(apply_lut(&tanh_lut(s, z), x.int_repr()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::dequantize_val;

    #[test]
    fn tables_are_quantize_of_f_of_dequantize() {
        let (s, z) = (0.0473, 131);
        let out = OutQ {
            scale: 0.031,
            zero_point: 77,
        };
        let t = leaky_relu_lut(s, z, -0.5, out);
        for (q, &got) in t.iter().enumerate() {
            let v = ((q as i64 - z) as f32) * (s as f32);
            let y = if v > 0.0 { v } else { v * -0.5 };
            let want =
                (((y * (1.0f32 / 0.031f64 as f32)).round_ties_even() as i64) + 77).clamp(0, 255);
            assert_eq!(got as i64, want, "q {q}");
        }
        let t = hardsigmoid_lut(s, z);
        for (q, &got) in t.iter().enumerate() {
            let v = dequantize_val(s as f32, z, q as i64);
            let y = (v + 3.0).clamp(0.0, 6.0) / 6.0;
            assert_eq!(
                got as f32,
                (y * 256.0).round_ties_even().min(255.0),
                "q {q}"
            );
        }
    }

    #[test]
    fn clamp_order_is_max_then_min() {
        let x = QTensor::from_int_repr(
            vec![4],
            vec![0u8, 5, 9, 200],
            crate::QParams::per_tensor(1.0, 0),
        )
        .unwrap();
        assert_eq!(clamp(&x, 3, 10).unwrap(), [3, 5, 9, 10]);
        // lo > hi: everything becomes hi.
        assert_eq!(clamp(&x, 10, 3).unwrap(), [3, 3, 3, 3]);
    }
}
