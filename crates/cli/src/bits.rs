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

/// Options of `rquant bits`.
#[derive(clap::Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct Args {
    /// The value to take apart
    #[arg(value_name = "VALUE")]
    value: f64,
    /// Scale of the int8 code to show (with --zero-point and --dtype)
    #[arg(long, value_name = "S")]
    scale: Option<f64>,
    /// Zero point of the int8 code
    #[arg(long, value_name = "Z", default_value_t = 0)]
    zero_point: i64,
    /// Integer type of the code
    #[arg(long, value_name = "DTYPE", default_value = "quint8", value_parser = ["quint8", "qint8"])]
    dtype: String,
}

pub fn run(args: Args) -> Res {
    let Args {
        value,
        scale,
        zero_point: zp,
        dtype,
    } = args;
    let dtype = if dtype == "qint8" {
        QDType::QInt8
    } else {
        QDType::QUInt8
    };
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
        let parse = |a: &[&str]| {
            use clap::Parser;
            match crate::Cli::try_parse_from([&["rquant", "bits"], a].concat()) {
                Ok(crate::Cli {
                    command: crate::Command::Bits(b),
                }) => Ok(b),
                Ok(_) => unreachable!("parsed as another command"),
                Err(e) => Err(e),
            }
        };
        assert!(run(parse(&["0.1", "--scale", "0"]).unwrap()).is_err());
        assert!(parse(&["x"]).is_err());
        assert!(run(parse(&["0.1", "--scale", "0.02", "--dtype", "qint8"]).unwrap()).is_ok());
        // Negative numbers are values, not options.
        let b = parse(&[
            "-0.5",
            "--scale",
            "0.1",
            "--zero-point",
            "-3",
            "--dtype",
            "qint8",
        ])
        .unwrap();
        assert_eq!((b.value, b.zero_point), (-0.5, -3));
    }
}
