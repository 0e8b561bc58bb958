//! Scalar numerics shared by every engine: rounding, quantize/dequantize of
//! one value, requantization of int32 accumulators, and the qparam chooser of
//! dynamic quantization. docs/numerics.md is the normative text; these
//! functions are its executable form. Engines may vectorise them but must
//! produce the same bits.

use crate::dtype::{QDType, QType};

/// Round half to even, as `std::nearbyint` under the default FP environment.
/// Never `f32::round` (half away from zero).
///
/// Computed as `(x + m) − m` with `m = ±2^23`: for |x| < 2^23 the addition
/// leaves no fraction bits and rounds to nearest even; larger |x| are already
/// integers. The same value as `round_ties_even` (up to the sign of a zero
/// result, which every caller turns into an integer), but branch-free and
/// vectorisable: without SSE4.1 `round_ties_even` is a libm call.
#[inline(always)]
pub fn rne(x: f32) -> f32 {
    const TWO23: f32 = 8_388_608.0;
    let m = TWO23.copysign(x);
    let r = (x + m) - m;
    if x.abs() < TWO23 {
        r
    } else {
        x
    }
}

/// `1.0f / (float)scale`: PyTorch multiplies by the f32 reciprocal of the scale.
#[inline(always)]
pub fn inv_scale(scale: f64) -> f32 {
    1.0f32 / (scale as f32)
}

/// f32 → i64, saturating (NaN → 0; callers reject NaN before).
#[inline(always)]
pub fn f32_to_i64_sat(v: f32) -> i64 {
    v as i64
}

/// Quantize one value with an integer zero point:
/// `clamp(zp + rne(x * inv_scale))`, the zero point added after rounding.
/// For qint32 the addition is f32 (PyTorch's arithmetic: results above 2^24
/// lose bits); for 8-bit dtypes it is exact and saturating (PyTorch's AVX2
/// path may wrap in int32 for |x/scale| ≥ 2^31; rquant clamps instead).
#[inline(always)]
pub fn quantize_val<T: QType>(inv_scale: f32, zero_point: i64, x: f32) -> T {
    match T::DTYPE {
        QDType::QInt32 => T::saturate(f32_to_i64_sat(zero_point as f32 + rne(x * inv_scale))),
        // 8-bit: clamping x/scale to the integers [qmin − zp, qmax − zp] before
        // rounding equals clamping after it (rounding is monotone and the bounds
        // are integers), and in that small range adding 1.5·2^23 rounds to
        // nearest even and leaves the integer in the low mantissa bits: the
        // whole quantize is a few vectorisable float and integer operations.
        // (NaN never gets here: callers reject it; `max` would map it to qmin.)
        _ => {
            const MAGIC: f32 = 12_582_912.0; // 1.5·2^23
            let lo = (T::DTYPE.min() - zero_point) as f32;
            let hi = (T::DTYPE.max() - zero_point) as f32;
            let c = (x * inv_scale).max(lo).min(hi);
            let r = (c + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32;
            T::from_i32_in_range(r + zero_point as i32)
        }
    }
}

/// Quantize one value with a float zero point (per-channel float qparams):
/// `clamp(rne(x * inv_scale + zp))`, the zero point added before rounding.
#[inline(always)]
pub fn quantize_val_float_zp<T: QType>(inv_scale: f32, zero_point: f32, x: f32) -> T {
    T::saturate(f32_to_i64_sat(rne(x * inv_scale + zero_point)))
}

/// Dequantize one value per-tensor: `f32(q - zp) * f32(scale)`.
#[inline(always)]
pub fn dequantize_val(scale: f32, zero_point: i64, q: i64) -> f32 {
    ((q - zero_point) as f32) * scale
}

/// Dequantize one value per-channel: `f32(f32(q) - zp)` times the f64 scale,
/// rounded to f32 (PyTorch's per-channel kernel, which differs from per-tensor).
#[inline(always)]
pub fn dequantize_val_per_channel(scale: f64, zero_point: i64, q: i64) -> f32 {
    (((q as f32) - (zero_point as f32)) as f64 * scale) as f32
}

/// The per-output-channel constants of fbgemm's `ReQuantizeOutput` with a float bias.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequantChannel {
    /// `f32(x_scale) * f32(w_scale[c])`
    pub act_times_w_scale: f32,
    /// `act_times_w_scale / f32(out_scale)`
    pub multiplier: f32,
}

impl RequantChannel {
    pub fn new(x_scale: f64, w_scale: f64, out_scale: f64) -> Self {
        let atws = (x_scale as f32) * (w_scale as f32);
        RequantChannel {
            act_times_w_scale: atws,
            multiplier: atws / (out_scale as f32),
        }
    }
}

/// The float bias in accumulator units. PyTorch adds it differently for
/// per-tensor weights (multiply by the f32 of the f64 reciprocal) and
/// per-channel weights (a true f32 division); the two differ in the last bit.
#[inline(always)]
pub fn bias_term(bias: f32, act_times_w_scale: f32, per_channel: bool) -> f32 {
    if per_channel {
        bias / act_times_w_scale
    } else {
        bias * ((1.0f64 / act_times_w_scale as f64) as f32)
    }
}

/// Requantize one exact int32 accumulator to quint8:
/// `clamp(rne((f32(acc) + bias_term) * multiplier) + out_zp, relu ? out_zp : 0, 255)`.
#[inline(always)]
pub fn requantize_u8(acc: i32, bias_term: f32, multiplier: f32, out_zp: i32, relu: bool) -> u8 {
    let v = rne(((acc as f32) + bias_term) * multiplier);
    let lo = if relu { out_zp as i64 } else { 0 };
    f32_to_i64_sat(v)
        .saturating_add(out_zp as i64)
        .clamp(lo, 255) as u8
}

/// [`requantize_u8`] with an explicit clamp `[lo, hi]` in the quantized
/// domain (a fused ReLU is `lo = out_zp`; a fused ReLU6 also lowers `hi`).
/// Clamping to `[0, 255]` first and then to `[lo, hi]` is the same as this one
/// clamp, so a fused activation gives the bits of the unfused pair.
#[inline(always)]
pub fn requantize_u8_clamped(
    acc: i32,
    bias_term: f32,
    multiplier: f32,
    out_zp: i32,
    clamp: crate::output::Clamp,
) -> u8 {
    let v = rne(((acc as f32) + bias_term) * multiplier);
    f32_to_i64_sat(v)
        .saturating_add(out_zp as i64)
        .clamp(clamp.lo as i64, clamp.hi as i64) as u8
}

/// Float output of dynamic linear for one accumulator (fbgemm `ReQuantizeForFloat`):
/// `fma(f32(acc), f32(x_scale)·f32(w_scale), bias)`, one rounding; without a bias
/// a plain product.
#[inline(always)]
pub fn dynamic_out(acc: i32, scale_product: f32, bias: Option<f32>) -> f32 {
    match bias {
        Some(b) => (acc as f32).mul_add(scale_product, b),
        None => (acc as f32) * scale_product,
    }
}

/// Per-tensor qparams chosen by PyTorch's C++ `ChooseQuantizationParams`
/// (dynamic quantization): double precision, scale floored at `(float)6.1e-5`,
/// zero point taken from whichever end of the range has the smaller error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicQParams {
    pub scale: f64,
    pub zero_point: i64,
}

/// fbgemm's `SMALL_SCALE_THRESHOLD` (the smallest normal fp16), as an f32.
pub const SMALL_SCALE_THRESHOLD: f32 = 6.1e-5;

/// `ChooseQuantizationParams(min, max, qmin, qmax, preserve_sparsity=false,
/// force_scale_power_of_two=false, reduce_range)`. `min <= max`, both finite.
pub fn choose_qparams(
    min: f32,
    max: f32,
    qmin: i32,
    qmax: i32,
    reduce_range: bool,
) -> DynamicQParams {
    let (qmin, qmax) = if reduce_range {
        (qmin / 2, qmax / 2)
    } else {
        (qmin, qmax)
    };
    let mut min = min.min(0.0);
    let mut max = max.max(0.0);
    let mut scale = (max as f64 - min as f64) / (qmax - qmin) as f64;
    if scale as f32 == 0.0 || (1.0f32 / scale as f32).is_infinite() {
        scale = 0.1;
    }
    if scale < SMALL_SCALE_THRESHOLD as f64 {
        let org_scale = scale as f32;
        scale = SMALL_SCALE_THRESHOLD as f64;
        if min == 0.0 {
            max = SMALL_SCALE_THRESHOLD * (qmax - qmin) as f32;
        } else if max == 0.0 {
            min = -SMALL_SCALE_THRESHOLD * (qmax - qmin) as f32;
        } else {
            let amplifier = SMALL_SCALE_THRESHOLD / org_scale;
            min *= amplifier;
            max *= amplifier;
        }
    }
    let zp_from_min = qmin as f64 - min as f64 / scale;
    let zp_from_max = qmax as f64 - max as f64 / scale;
    let zp_from_min_error = (qmin as f64).abs() - (min as f64 / scale).abs();
    let zp_from_max_error = (qmax as f64).abs() - (max as f64 / scale).abs();
    let initial = if zp_from_min_error < zp_from_max_error {
        zp_from_min
    } else {
        zp_from_max
    };
    let zero_point = if initial < qmin as f64 {
        qmin as i64
    } else if initial > qmax as f64 {
        qmax as i64
    } else {
        initial.round_ties_even() as i64
    };
    DynamicQParams { scale, zero_point }
}

/// Min and max of a slice as fbgemm's `FindMinMax` sees them (empty → 0, 0).
pub fn find_min_max(x: &[f32]) -> (f32, f32) {
    if x.is_empty() {
        return (0.0, 0.0);
    }
    let mut lo = x[0];
    let mut hi = x[0];
    for &v in &x[1..] {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo, hi)
}

/// Sigmoid of an f32, computed in f64 with rquant's own [`crate::exp::exp_f64`]
/// (IEEE operations only), so every platform gets the same bits; then rounded to f32.
#[inline]
pub fn sigmoid_f32(x: f32) -> f32 {
    (1.0 / (1.0 + crate::exp::exp_f64(-(x as f64)))) as f32
}

/// Hardswish of an f32: `x · clamp(x + 3, 0, 6) / 6`, in that order.
#[inline(always)]
pub fn hardswish_f32(x: f32) -> f32 {
    x * (x + 3.0).clamp(0.0, 6.0) / 6.0
}

/// Exact `rne(num / den)` for integers, den > 0 (ties to even).
#[inline]
pub fn div_rne(num: i64, den: i64) -> i64 {
    debug_assert!(den > 0);
    let q = num.div_euclid(den);
    let r = num.rem_euclid(den);
    match (2 * r).cmp(&den) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

#[cfg(test)]
#[allow(clippy::excessive_precision)] // PyTorch's decimal literals, verbatim
mod tests {
    use super::*;

    #[test]
    // Pure float arithmetic (nothing for Miri to check), and 400 000 values
    // are far too slow to interpret.
    #[cfg_attr(miri, ignore = "arithmetic only; too slow under Miri")]
    fn rne_equals_round_ties_even() {
        let mut v = vec![
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            4194303.5,
            4194304.5,
            8388607.5,
            8388608.0,
            8388609.0,
            1e10,
            -1e10,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            1e-40,
        ];
        let mut s = 1u32;
        for _ in 0..200_000 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let x = f32::from_bits(s);
            v.push(x);
            v.push((s >> 8) as f32 / 256.0 - 32768.0); // many exact ties
        }
        for x in v {
            let (a, b) = (rne(x), x.round_ties_even());
            assert!(a == b || (a.is_nan() && b.is_nan()), "x={x}: {a} vs {b}");
        }
    }

    #[test]
    fn rne_ties_go_to_even() {
        assert_eq!(rne(0.5), 0.0);
        assert_eq!(rne(1.5), 2.0);
        assert_eq!(rne(2.5), 2.0);
        assert_eq!(rne(-0.5), -0.0);
        assert_eq!(rne(-1.5), -2.0);
    }

    #[test]
    fn reciprocal_multiply_not_division() {
        // fbgemm's own example: x*inv = 127.5 → 128 while x/scale = 127.4999 → 127.
        let scale = 0.00214854861f32 as f64;
        let q: u8 = quantize_val(inv_scale(scale), 0, 0.273939937);
        assert_eq!(q, 128);
        assert_eq!(rne(0.273939937f32 / scale as f32), 127.0);
    }

    #[test]
    fn qint32_zero_point_added_in_f32() {
        let q: i32 = quantize_val(inv_scale(1.0), 1000, 123456789.0);
        assert_eq!(q, 123457792);
    }

    #[test]
    fn div_rne_exact() {
        assert_eq!(div_rne(5, 2), 2);
        assert_eq!(div_rne(7, 2), 4);
        assert_eq!(div_rne(-5, 2), -2);
        assert_eq!(div_rne(-7, 2), -4);
        assert_eq!(div_rne(10, 4), 2);
        assert_eq!(div_rne(11, 4), 3);
    }

    #[test]
    fn small_scale_floor() {
        let p = choose_qparams(0.0, 1e-9, 0, 255, false);
        assert_eq!(p.scale, 6.1e-5f32 as f64);
        assert_eq!(p.zero_point, 0);
    }
}
