//! `rquant bits VALUE [--scale S --zero-point Z --dtype qint8|quint8]`: the
//! IEEE 754 fields of VALUE in fp64, fp32, fp16 and bf16, the value each
//! format stores and its error, and its integer code under given qparams.

use rquant_core::numerics::{dequantize_val, inv_scale, quantize_val};
use rquant_core::tensor::{check_scale, check_zero_point};
use rquant_core::QDType;

type Res = Result<(), Box<dyn std::error::Error>>;

/// (sign, exponent bits, mantissa bits, bias) of a format's raw bits.
fn fields(bits: u64, exp_bits: u32, man_bits: u32) -> (u64, u64, u64) {
    let man = bits & ((1u64 << man_bits) - 1);
    let exp = (bits >> man_bits) & ((1u64 << exp_bits) - 1);
    let sign = bits >> (man_bits + exp_bits);
    (sign, exp, man)
}

fn describe(exp: u64, exp_bits: u32) -> String {
    let bias = (1i64 << (exp_bits - 1)) - 1;
    let max = (1u64 << exp_bits) - 1;
    if exp == 0 {
        format!("{exp} (subnormal/zero, 2^{})", 1 - bias)
    } else if exp == max {
        format!("{exp} (inf/NaN)")
    } else {
        format!("{exp} (2^{})", exp as i64 - bias)
    }
}

pub fn run(args: &[String]) -> Res {
    let mut it = args.iter();
    let value: f64 = it
        .next()
        .ok_or("bits: usage: rquant bits VALUE [--scale S --zero-point Z --dtype qint8|quint8]")?
        .parse()
        .map_err(|e| format!("bits: VALUE: {e}"))?;
    let (mut scale, mut zp, mut dtype) = (None, 0i64, QDType::QUInt8);
    while let Some(a) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| format!("bits: {a} needs a value"))?;
        match a.as_str() {
            "--scale" => {
                scale = Some(
                    v.parse::<f64>()
                        .map_err(|e| format!("bits: --scale: {e}"))?,
                )
            }
            "--zero-point" => zp = v.parse().map_err(|e| format!("bits: --zero-point: {e}"))?,
            "--dtype" => {
                dtype = match v.as_str() {
                    "quint8" => QDType::QUInt8,
                    "qint8" => QDType::QInt8,
                    other => {
                        return Err(format!("bits: --dtype {other:?}: use qint8 or quint8").into())
                    }
                }
            }
            other => return Err(format!("bits: unexpected argument {other:?}").into()),
        }
    }
    say!("value {value}\n");
    say!(
        "{:<6} {:>4}  {:<24} {:<54} {:>26} {:>12}",
        "format",
        "sign",
        "exponent (biased)",
        "mantissa",
        "stored value",
        "error"
    );
    let f32v = value as f32;
    let rows: [(&str, u64, u32, u32, f64); 4] = [
        ("fp64", value.to_bits(), 11, 52, value),
        ("fp32", f32v.to_bits() as u64, 8, 23, f32v as f64),
        (
            "fp16",
            half::f16::from_f64(value).to_bits() as u64,
            5,
            10,
            half::f16::from_f64(value).to_f64(),
        ),
        (
            "bf16",
            half::bf16::from_f64(value).to_bits() as u64,
            8,
            7,
            half::bf16::from_f64(value).to_f64(),
        ),
    ];
    for (name, bits, e, m, stored) in rows {
        let (s, ex, man) = fields(bits, e, m);
        say!(
            "{:<6} {:>4}  {:<24} {:<54} {:>26.20e} {:>12.3e}",
            name,
            s,
            format!("{:0w$b} {}", ex, describe(ex, e), w = e as usize),
            format!("{:0w$b}", man, w = m as usize),
            stored,
            stored - value
        );
    }
    if let Some(scale) = scale {
        check_scale("bits", scale)?;
        check_zero_point("bits", zp, dtype)?;
        let x = value as f32;
        let inv = inv_scale(scale);
        let q = match dtype {
            QDType::QInt8 => quantize_val::<i8>(inv, zp, x) as i64,
            _ => quantize_val::<u8>(inv, zp, x) as i64,
        };
        let back = dequantize_val(scale as f32, zp, q);
        say!(
            "\n{dtype} with scale {scale} and zero point {zp}: code {q} = zp + rne(x · (1/scale)) clamped to [{}, {}]; dequantized {back} (error {:.3e})",
            dtype.min(),
            dtype.max(),
            back as f64 - value
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ieee_fields() {
        // 1.5 = +1.1b × 2^0
        assert_eq!(fields(1.5f64.to_bits(), 11, 52), (0, 1023, 1 << 51));
        assert_eq!(fields((-1.5f32).to_bits() as u64, 8, 23), (1, 127, 1 << 22));
        assert_eq!(
            fields(half::f16::from_f32(-2.0).to_bits() as u64, 5, 10),
            (1, 16, 0)
        );
        assert_eq!(describe(0, 5), "0 (subnormal/zero, 2^-14)");
        assert!(run(&["0.1".into(), "--scale".into(), "0".into()]).is_err());
        assert!(run(&["x".into()]).is_err());
        assert!(run(&[
            "0.1".into(),
            "--scale".into(),
            "0.02".into(),
            "--dtype".into(),
            "qint8".into()
        ])
        .is_ok());
    }
}
