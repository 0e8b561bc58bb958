//! Fake quantization (QAT): quantize-dequantize in float with the
//! straight-through gradient mask, per-tensor and per-channel.

use crate::error::{QuantError, Result};
use crate::numerics::{f32_to_i64_sat, rne};
use crate::quant::{normalize_axis, split_axis};
use crate::tensor::{check_len, check_scale, Tensor};

/// Output of a fake-quant forward: `y` and the mask that the backward applies.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeQuantOutput {
    pub y: Tensor,
    /// `quant_min <= zp + rne(x/scale) <= quant_max` on the unclamped value.
    pub mask: Vec<bool>,
}

impl FakeQuantOutput {
    /// `grad_x = grad_y * mask` — a product, so masked negative gradients give -0.0.
    pub fn backward(&self, grad_y: &Tensor) -> Result<Tensor> {
        if grad_y.shape() != self.y.shape() {
            return Err(QuantError::shape(
                "fake_quantize backward",
                format!("grad_y {:?} vs y {:?}", grad_y.shape(), self.y.shape()),
            ));
        }
        let g = grad_y
            .data()
            .iter()
            .zip(&self.mask)
            .map(|(&g, &m)| g * if m { 1.0 } else { 0.0 })
            .collect();
        Tensor::new(grad_y.shape().to_vec(), g)
    }
}

fn check_range(op: &'static str, zero_point: i64, quant_min: i64, quant_max: i64) -> Result<()> {
    if quant_min > quant_max {
        return Err(QuantError::invalid(
            op,
            format!("quant_min {quant_min} > quant_max {quant_max}"),
        ));
    }
    if zero_point < quant_min || zero_point > quant_max {
        return Err(QuantError::invalid(
            op,
            format!(
                "zero point {zero_point} outside [quant_min {quant_min}, quant_max {quant_max}]"
            ),
        ));
    }
    Ok(())
}

/// One element: (y, mask). `qval = zp + rne(x * inv)` in f32, as PyTorch's kernel.
#[inline(always)]
fn fq_val(x: f32, scale: f32, inv: f32, zp: i64, qmin: i64, qmax: i64) -> (f32, bool) {
    let qval = f32_to_i64_sat(zp as f32 + rne(x * inv));
    let y = ((qval.clamp(qmin, qmax) - zp) as f32) * scale;
    (y, qmin <= qval && qval <= qmax)
}

/// `torch.fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max)`.
pub fn fake_quantize_per_tensor(
    x: &Tensor,
    scale: f32,
    zero_point: i64,
    quant_min: i64,
    quant_max: i64,
) -> Result<FakeQuantOutput> {
    const OP: &str = "fake_quantize_per_tensor";
    check_scale(OP, scale as f64)?;
    check_range(OP, zero_point, quant_min, quant_max)?;
    let inv = 1.0f32 / scale;
    let (y, mask): (Vec<f32>, Vec<bool>) = x
        .data()
        .iter()
        .map(|&v| fq_val(v, scale, inv, zero_point, quant_min, quant_max))
        .unzip();
    Ok(FakeQuantOutput {
        y: Tensor::new(x.shape().to_vec(), y)?,
        mask,
    })
}

/// `torch.fake_quantize_per_channel_affine(x, scales, zero_points, axis, quant_min, quant_max)`.
pub fn fake_quantize_per_channel(
    x: &Tensor,
    scales: &[f32],
    zero_points: &[i64],
    axis: i64,
    quant_min: i64,
    quant_max: i64,
) -> Result<FakeQuantOutput> {
    const OP: &str = "fake_quantize_per_channel";
    let axis = normalize_axis(OP, axis, x.ndim())?;
    let (outer, c, inner) = split_axis(x.shape(), axis);
    check_len(OP, "scales", c, scales.len())?;
    check_len(OP, "zero_points", c, zero_points.len())?;
    for (&s, &z) in scales.iter().zip(zero_points) {
        check_scale(OP, s as f64)?;
        check_range(OP, z, quant_min, quant_max)?;
    }
    let src = x.data();
    let mut y = Vec::with_capacity(src.len());
    let mut mask = Vec::with_capacity(src.len());
    for o in 0..outer {
        for ch in 0..c {
            let (s, z) = (scales[ch], zero_points[ch]);
            let inv = 1.0f32 / s;
            let base = (o * c + ch) * inner;
            for &v in &src[base..base + inner] {
                let (yv, m) = fq_val(v, s, inv, z, quant_min, quant_max);
                y.push(yv);
                mask.push(m);
            }
        }
    }
    Ok(FakeQuantOutput {
        y: Tensor::new(x.shape().to_vec(), y)?,
        mask,
    })
}

/// `torch.fake_quantize_per_channel_affine` with float zero points (the
/// `per_channel_affine_float_qparams` scheme of embedding QAT), as
/// PyTorch's AVX2 / AVX-512 builds compute it: `qval = rne(fma(x, 1/scale,
/// zp))` (the compiler contracts `zp + x·inv` into a fused multiply-add
/// there; ATen's scalar build does not, and differs in the last place on a
/// few inputs), `y = f32((clamp(qval) − f64(zp)) · f64(scale))` — the
/// clamp goes through `std::fmax` on doubles, so the output arithmetic is
/// f64, rounded once. `mask` is `qmin ≤ qval ≤ qmax`.
pub fn fake_quantize_per_channel_float_qparams(
    x: &Tensor,
    scales: &[f32],
    zero_points: &[f32],
    axis: i64,
    quant_min: i64,
    quant_max: i64,
) -> Result<FakeQuantOutput> {
    const OP: &str = "fake_quantize_per_channel_float_qparams";
    let axis = normalize_axis(OP, axis, x.ndim())?;
    let (outer, c, inner) = split_axis(x.shape(), axis);
    check_len(OP, "scales", c, scales.len())?;
    check_len(OP, "zero_points", c, zero_points.len())?;
    if quant_min > quant_max {
        return Err(QuantError::invalid(
            OP,
            format!("quant_min {quant_min} > quant_max {quant_max}"),
        ));
    }
    for (&s, &z) in scales.iter().zip(zero_points) {
        check_scale(OP, s as f64)?;
        if !z.is_finite() {
            return Err(QuantError::invalid(
                OP,
                format!("zero point {z} is not finite"),
            ));
        }
    }
    let src = x.data();
    let mut y = Vec::with_capacity(src.len());
    let mut mask = Vec::with_capacity(src.len());
    for o in 0..outer {
        for ch in 0..c {
            let (s, z) = (scales[ch], zero_points[ch]);
            let inv = 1.0f32 / s;
            let base = (o * c + ch) * inner;
            for &v in &src[base..base + inner] {
                let qval = f32_to_i64_sat(rne(v.mul_add(inv, z)));
                let q = qval.clamp(quant_min, quant_max) as f64;
                y.push(((q - z as f64) * s as f64) as f32);
                mask.push(quant_min <= qval && qval <= quant_max);
            }
        }
    }
    Ok(FakeQuantOutput {
        y: Tensor::new(x.shape().to_vec(), y)?,
        mask,
    })
}
