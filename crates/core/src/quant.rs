//! quantize / dequantize / requantize of whole tensors, per-tensor and per-channel.

use crate::dtype::QType;
use crate::error::{QuantError, Result};
use crate::numerics::{
    dequantize_val, dequantize_val_per_channel, inv_scale, quantize_val, quantize_val_float_zp,
};
use crate::tensor::{check_len, check_scale, check_zero_point, QParams, QScheme, QTensor, Tensor};

fn reject_nan(op: &'static str, x: &[f32]) -> Result<()> {
    match x.iter().position(|v| v.is_nan()) {
        Some(index) => Err(QuantError::NaN { op, index }),
        None => Ok(()),
    }
}

/// (outer, channels, inner) sizes around `axis`, for per-channel loops.
pub fn split_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// The runs of `inner` consecutive elements that share one channel along
/// `axis`, as (channel, output run, input run): no division per element.
fn channel_runs<'a, T>(
    shape: &[usize],
    axis: usize,
    src: &'a [T],
    out: &'a mut [f32],
) -> impl Iterator<Item = (usize, &'a mut [f32], &'a [T])> {
    let (_, c, inner) = split_axis(shape, axis);
    // An empty tensor has no runs (and chunks of 0 are not allowed).
    let run = inner.max(1);
    out.chunks_mut(run)
        .zip(src.chunks(run))
        .enumerate()
        .map(move |(i, (o, s))| (i % c.max(1), o, s))
}

/// `torch.quantize_per_tensor(x, scale, zero_point, dtype)`.
/// NaN inputs are an error (PyTorch's result differs by dtype and path); ±inf clamp.
pub fn quantize_per_tensor<T: QType>(
    x: &Tensor,
    scale: f64,
    zero_point: i64,
) -> Result<QTensor<T>> {
    const OP: &str = "quantize_per_tensor";
    check_scale(OP, scale)?;
    check_zero_point(OP, zero_point, T::DTYPE)?;
    let data = match crate::portable::Code8::new(T::DTYPE, scale, zero_point) {
        // 8-bit: one fused pass (quantize and NaN test), bytes reinterpreted as T.
        Some(code) => {
            let mut data = vec![T::zeroed(); x.numel()];
            if crate::portable::quantize8(x.data(), code, bytemuck::cast_slice_mut(&mut data)) {
                reject_nan(OP, x.data())?;
            }
            data
        }
        None => {
            reject_nan(OP, x.data())?;
            let inv = inv_scale(scale);
            x.data()
                .iter()
                .map(|&v| quantize_val::<T>(inv, zero_point, v))
                .collect()
        }
    };
    Ok(QTensor::from_parts_unchecked(
        x.shape().to_vec(),
        data,
        QParams::PerTensor { scale, zero_point },
        QScheme::PerTensorAffine,
    ))
}

/// Validate an axis given as PyTorch allows (negative counts from the end).
pub fn normalize_axis(op: &'static str, axis: i64, ndim: usize) -> Result<usize> {
    let a = if axis < 0 { axis + ndim as i64 } else { axis };
    if a < 0 || a >= ndim as i64 {
        return Err(QuantError::AxisOutOfRange { op, axis, ndim });
    }
    Ok(a as usize)
}

/// `torch.quantize_per_channel(x, scales, zero_points, axis, dtype)`.
pub fn quantize_per_channel<T: QType>(
    x: &Tensor,
    scales: &[f64],
    zero_points: &[i64],
    axis: i64,
) -> Result<QTensor<T>> {
    const OP: &str = "quantize_per_channel";
    let axis = normalize_axis(OP, axis, x.ndim())?;
    let qparams = QParams::PerChannel {
        scales: scales.to_vec(),
        zero_points: zero_points.to_vec(),
        axis,
    };
    qparams.validate(OP, T::DTYPE, x.shape())?;
    reject_nan(OP, x.data())?;
    let (outer, c, inner) = split_axis(x.shape(), axis);
    let invs: Vec<f32> = scales.iter().map(|&s| inv_scale(s)).collect();
    let src = x.data();
    let mut data = Vec::with_capacity(src.len());
    for o in 0..outer {
        for ch in 0..c {
            let base = (o * c + ch) * inner;
            data.extend(
                src[base..base + inner]
                    .iter()
                    .map(|&v| quantize_val::<T>(invs[ch], zero_points[ch], v)),
            );
        }
    }
    Ok(QTensor::from_parts_unchecked(
        x.shape().to_vec(),
        data,
        qparams,
        QScheme::PerChannelAffine,
    ))
}

/// Per-channel quantization with float zero points
/// (`per_channel_affine_float_qparams`, used for embeddings).
pub fn quantize_per_channel_float_qparams<T: QType>(
    x: &Tensor,
    scales: &[f32],
    zero_points: &[f32],
    axis: i64,
) -> Result<QTensor<T>> {
    const OP: &str = "quantize_per_channel_float_qparams";
    let axis = normalize_axis(OP, axis, x.ndim())?;
    let qparams = QParams::PerChannelFloat {
        scales: scales.to_vec(),
        zero_points: zero_points.to_vec(),
        axis,
    };
    qparams.validate(OP, T::DTYPE, x.shape())?;
    reject_nan(OP, x.data())?;
    let (outer, c, inner) = split_axis(x.shape(), axis);
    let src = x.data();
    let mut data = Vec::with_capacity(src.len());
    for o in 0..outer {
        for ch in 0..c {
            let inv = inv_scale(scales[ch] as f64);
            let base = (o * c + ch) * inner;
            data.extend(
                src[base..base + inner]
                    .iter()
                    .map(|&v| quantize_val_float_zp::<T>(inv, zero_points[ch], v)),
            );
        }
    }
    Ok(QTensor::from_parts_unchecked(
        x.shape().to_vec(),
        data,
        qparams,
        QScheme::PerChannelAffineFloatQParams,
    ))
}

/// `q.dequantize()`. Per-tensor: `f32(q - zp) * f32(scale)`; per-channel:
/// `f32(f32(q) - zp) * f64 scale` rounded to f32 (PyTorch's two kernels).
/// A channels-last tensor comes back as a contiguous NCHW float tensor.
pub fn dequantize<T: QType>(q: &QTensor<T>) -> Tensor {
    let mut data = vec![0.0f32; q.numel()];
    dequantize_into(q, &mut data);
    Tensor::new(q.shape().to_vec(), data).expect("shape preserved")
}

/// [`dequantize`] into `out` (logical, contiguous order), which must hold
/// `q.numel()` values.
pub(crate) fn dequantize_into<T: QType>(q: &QTensor<T>, out: &mut [f32]) {
    if q.memory_format() == crate::MemoryFormat::ChannelsLast {
        let mut nhwc = vec![0f32; q.numel()];
        dequantize_storage(q, &mut nhwc);
        let s = q.shape();
        crate::tensor::nhwc_to_nchw(&nhwc, s[0], s[1], s[2] * s[3], out);
        return;
    }
    dequantize_storage(q, out);
}

/// Dequantize in storage order (per-channel tensors must be contiguous).
pub(crate) fn dequantize_storage<T: QType>(q: &QTensor<T>, out: &mut [f32]) {
    if q.qparams().is_per_channel() && q.memory_format() != crate::MemoryFormat::Contiguous {
        // Channel runs follow the logical layout: go through a contiguous copy.
        let c = q.to_format(crate::MemoryFormat::Contiguous);
        let mut tmp = vec![0f32; q.numel()];
        dequantize_storage(&c, &mut tmp);
        let s = q.shape();
        crate::tensor::nchw_to_nhwc(&tmp, s[0], s[1], s[2] * s[3], out);
        return;
    }
    let src = q.int_repr();
    assert_eq!(out.len(), src.len(), "dequantize_into: output length");
    match q.qparams() {
        QParams::PerTensor { scale, zero_point } => {
            match crate::portable::Code8::new(T::DTYPE, *scale, *zero_point) {
                Some(code) => crate::portable::dequantize8(bytemuck::cast_slice(src), code, out),
                None => {
                    let s = *scale as f32;
                    for (o, &v) in out.iter_mut().zip(src) {
                        *o = dequantize_val(s, *zero_point, v.to_i64());
                    }
                }
            }
        }
        QParams::PerChannel {
            scales,
            zero_points,
            axis,
        } => {
            for (ch, o, s) in channel_runs(q.shape(), *axis, src, out) {
                for (o, &v) in o.iter_mut().zip(s) {
                    *o = dequantize_val_per_channel(scales[ch], zero_points[ch], v.to_i64());
                }
            }
        }
        QParams::PerChannelFloat {
            scales,
            zero_points,
            axis,
        } => {
            // PyTorch: (q - zp) * scale in f32 for float qparams.
            for (ch, o, s) in channel_runs(q.shape(), *axis, src, out) {
                for (o, &v) in o.iter_mut().zip(s) {
                    *o = (v.to_i64() as f32 - zero_points[ch]) * scales[ch];
                }
            }
        }
    }
}

/// Requantize to new per-tensor qparams (and possibly another dtype):
/// dequantize, then quantize, as PyTorch's `requantize_val`.
pub fn requantize<T: QType, U: QType>(
    q: &QTensor<T>,
    scale: f64,
    zero_point: i64,
) -> Result<QTensor<U>> {
    const OP: &str = "requantize";
    check_scale(OP, scale)?;
    check_zero_point(OP, zero_point, U::DTYPE)?;
    // 8-bit per-tensor in and out: each of the 256 input codes maps to one
    // output code, so a table of the composition below gives the same bits
    // with one lookup per element (no float tensor in between).
    let eight_bit = |d: crate::QDType| d != crate::QDType::QInt32;
    if let (
        true,
        true,
        QParams::PerTensor {
            scale: s_in,
            zero_point: z_in,
        },
    ) = (eight_bit(T::DTYPE), eight_bit(U::DTYPE), q.qparams())
    {
        let inv = inv_scale(scale);
        let mut table = [U::zeroed(); 256];
        for (b, t) in table.iter_mut().enumerate() {
            // b is the byte of a T code: u8 as is, i8 through its two's complement.
            let v = if T::DTYPE == crate::QDType::QInt8 {
                b as u8 as i8 as i64
            } else {
                b as i64
            };
            *t = quantize_val::<U>(inv, zero_point, dequantize_val(*s_in as f32, *z_in, v));
        }
        let bytes: &[u8] = bytemuck::cast_slice(q.int_repr());
        let data = bytes.iter().map(|&b| table[b as usize]).collect();
        // Element-wise: the storage order (and so the memory format) is kept.
        return Ok(QTensor::new_per_tensor_unchecked_in(
            q.shape().to_vec(),
            data,
            scale,
            zero_point,
            q.memory_format(),
        ));
    }
    Ok(quantize_per_tensor(&dequantize(q), scale, zero_point)?.into_format(q.memory_format()))
}

/// The 256-entry table of [`requantize`] between 8-bit per-tensor codes:
/// entry `b` is the byte of the `U` code that the `T` code with byte `b`
/// (u8 as is, i8 through its two's complement) requantizes to — the same
/// composition `requantize` applies, so a lookup gives its bits. `T` and
/// `U` must be 8-bit (quint8 or qint8).
pub fn requantize_lut<T: QType, U: QType>(
    in_scale: f64,
    in_zero_point: i64,
    scale: f64,
    zero_point: i64,
) -> [u8; 256] {
    debug_assert!(T::DTYPE != crate::QDType::QInt32 && U::DTYPE != crate::QDType::QInt32);
    let inv = inv_scale(scale);
    let mut table = [0u8; 256];
    for (b, t) in table.iter_mut().enumerate() {
        let v = if T::DTYPE == crate::QDType::QInt8 {
            b as u8 as i8 as i64
        } else {
            b as i64
        };
        let u: U = quantize_val::<U>(
            inv,
            zero_point,
            dequantize_val(in_scale as f32, in_zero_point, v),
        );
        *t = bytemuck::bytes_of(&u)[0];
    }
    table
}

/// `torch.dequantize` for a per-channel int representation given apart (used by readers).
pub fn check_per_channel_lengths(
    op: &'static str,
    c: usize,
    scales: usize,
    zps: usize,
) -> Result<()> {
    check_len(op, "scales", c, scales)?;
    check_len(op, "zero_points", c, zps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 8-bit table path equals dequantize-then-quantize for every code.
    #[test]
    fn requantize_table_equals_the_composition() {
        let all_u8: Vec<u8> = (0..=255).collect();
        let all_i8: Vec<i8> = (-128..=127).collect();
        for (si, zi, so, zo) in [
            (0.1, 3, 0.07, 200),
            (1e-3, 255, 2.5, 0),
            (0.02, 128, 0.02, 128),
        ] {
            let qu = QTensor::<u8>::from_int_repr(
                vec![256],
                all_u8.clone(),
                QParams::per_tensor(si, zi),
            )
            .unwrap();
            let qi = QTensor::<i8>::from_int_repr(
                vec![256],
                all_i8.clone(),
                QParams::per_tensor(si, zi - 128),
            )
            .unwrap();
            let a: QTensor<u8> = requantize(&qu, so, zo).unwrap();
            let b: QTensor<u8> = quantize_per_tensor(&dequantize(&qu), so, zo).unwrap();
            assert_eq!(a.int_repr(), b.int_repr());
            let a: QTensor<i8> = requantize(&qi, so, zo - 128).unwrap();
            let b: QTensor<i8> = quantize_per_tensor(&dequantize(&qi), so, zo - 128).unwrap();
            assert_eq!(a.int_repr(), b.int_repr());
            let a: QTensor<i8> = requantize(&qu, so, zo - 128).unwrap();
            let b: QTensor<i8> = quantize_per_tensor(&dequantize(&qu), so, zo - 128).unwrap();
            assert_eq!(a.int_repr(), b.int_repr());
        }
    }

    #[test]
    fn per_tensor_round_trip() {
        let x = Tensor::new([5], vec![-1.0, -0.5, 0.0, 0.25, 1.0]).unwrap();
        let q = quantize_per_tensor::<u8>(&x, 0.5, 2).unwrap();
        assert_eq!(q.int_repr(), &[0, 1, 2, 2, 4]); // 0.25/0.5 = 0.5 → 0 (ties to even)
        let y = dequantize(&q);
        assert_eq!(y.data(), &[-1.0, -0.5, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = Tensor::new([2], vec![0.0, 1.0]).unwrap();
        for s in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-60] {
            assert!(matches!(
                quantize_per_tensor::<u8>(&x, s, 0),
                Err(QuantError::InvalidScale { .. })
            ));
        }
        assert!(matches!(
            quantize_per_tensor::<u8>(&x, 1.0, 256),
            Err(QuantError::ZeroPointOutOfRange { .. })
        ));
        assert!(matches!(
            quantize_per_tensor::<i8>(&x, 1.0, -129),
            Err(QuantError::ZeroPointOutOfRange { .. })
        ));
        let n = Tensor::new([2], vec![0.0, f32::NAN]).unwrap();
        assert!(matches!(
            quantize_per_tensor::<u8>(&n, 1.0, 0),
            Err(QuantError::NaN { index: 1, .. })
        ));
        assert!(matches!(
            quantize_per_channel::<i8>(&x, &[1.0], &[0], 1),
            Err(QuantError::AxisOutOfRange { .. })
        ));
        assert!(matches!(
            quantize_per_channel::<i8>(&x, &[1.0], &[0], 0),
            Err(QuantError::ChannelCount { .. })
        ));
    }

    #[test]
    fn infinities_clamp() {
        let x = Tensor::new([2], vec![f32::INFINITY, f32::NEG_INFINITY]).unwrap();
        let q = quantize_per_tensor::<i8>(&x, 0.1, 3).unwrap();
        assert_eq!(q.int_repr(), &[127, -128]);
    }

    #[test]
    fn per_channel_uses_each_channels_params() {
        let x = Tensor::new([2, 2], vec![1.0, 2.0, 1.0, 2.0]).unwrap();
        let q = quantize_per_channel::<i8>(&x, &[1.0, 0.5], &[0, 1], 0).unwrap();
        assert_eq!(q.int_repr(), &[1, 2, 3, 5]);
        let q = quantize_per_channel::<i8>(&x, &[1.0, 0.5], &[0, 1], -1).unwrap();
        assert_eq!(q.int_repr(), &[1, 5, 1, 5]);
        assert_eq!(dequantize(&q).data(), x.data());
    }
}
