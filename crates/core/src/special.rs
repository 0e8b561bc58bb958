//! Deterministic `expm1`, `tanh` and `erf` in f64, built like
//! [`crate::exp::exp_f64`] from IEEE +, ×, ÷ only, so that the smooth
//! quantized activations (ELU, tanh, GELU) give the same bits on every
//! platform (libm and SIMD implementations differ between C libraries,
//! architectures and PyTorch's own vector and scalar paths). Each is accurate
//! to a few units in the last place of an f64, far below the f32 rounding and
//! the quantization that follow in every caller.

use crate::exp::exp_f64;

/// e^x − 1, accurate also near 0.
pub fn expm1_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x.abs() < 0.5 {
        // Taylor series Σ_{k≥1} x^k/k! in Horner form; |x| < 0.5 makes the
        // remainder after degree 24 below 2^-80 relative.
        let mut p = 1.0f64;
        for k in (2..=24).rev() {
            p = 1.0 + p * x / k as f64;
        }
        return x * p;
    }
    // |e^x − 1| ≥ 0.39 here: the subtraction loses at most two bits.
    exp_f64(x) - 1.0
}

/// Hyperbolic tangent: `expm1(2x) / (expm1(2x) + 2)`, ±1 beyond |x| = 20
/// (where tanh rounds to ±1 in f64).
pub fn tanh_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 20.0 {
        return 1.0;
    }
    if x < -20.0 {
        return -1.0;
    }
    let t = expm1_f64(2.0 * x);
    t / (t + 2.0)
}

/// The error function. For |x| < 6 the series with positive terms
/// `erf(x) = 2/√π · e^(−x²) · Σ_{n≥0} 2^n x^(2n+1) / (1·3·…·(2n+1))`
/// (no cancellation, unlike the alternating Taylor series); beyond, ±1
/// (erfc(6) ≈ 2e-17 is below half an ulp of 1).
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a >= 6.0 {
        return 1.0f64.copysign(x);
    }
    const TWO_OVER_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;
    let x2 = a * a;
    let mut term = a;
    let mut sum = a;
    let mut n = 0u32;
    // Terms grow until 2n+1 > 2x² (at most ~36 for |x| < 6), then shrink
    // geometrically; stop once they no longer change the sum.
    loop {
        n += 1;
        term *= 2.0 * x2 / (2 * n + 1) as f64;
        let next = sum + term;
        if next == sum || n > 400 {
            break;
        }
        sum = next;
    }
    (TWO_OVER_SQRT_PI * exp_f64(-x2) * sum).min(1.0).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        a == b || ((a - b) / b).abs() <= rel
    }

    /// Values from high-precision references (mpmath), independent of any libm.
    #[test]
    fn matches_reference_values() {
        let cases = [
            (1e-10, 1.00000000005e-10),
            (-0.3, -0.2591817793182821),
            (0.25, 0.2840254166877415),
            (1.0, 1.7182818284590453),
            (-2.0, -0.8646647167633873),
            (10.0, 22025.465794806718),
        ];
        for (x, want) in cases {
            assert!(close(expm1_f64(x), want, 4e-16), "expm1({x})");
        }
        let cases = [
            (1e-9, 1e-9),
            (0.1, 0.09966799462495582),
            (-0.5, -0.46211715726000974),
            (1.0, 0.7615941559557649),
            (3.0, 0.9950547536867305),
            (-7.5, -0.9999993881955461),
        ];
        for (x, want) in cases {
            assert!(close(tanh_f64(x), want, 4e-16), "tanh({x})");
        }
        let cases = [
            (1e-8, 1.1283791670955126e-8),
            (0.1, 0.1124629160182849),
            (-0.5, -0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.5, 0.999593047982555),
            (-4.0, -0.9999999845827421),
            (5.9, 0.9999999999999999),
        ];
        for (x, want) in cases {
            // The series sums up to ~40 rounded terms: a few ulps.
            assert!(close(erf_f64(x), want, 4e-15), "erf({x}) = {}", erf_f64(x));
        }
        assert_eq!(erf_f64(7.0), 1.0);
        assert_eq!(erf_f64(-7.0), -1.0);
        assert_eq!(tanh_f64(25.0), 1.0);
        assert_eq!(expm1_f64(0.0), 0.0);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri perturbs libm results on purpose")]
    fn close_to_libm() {
        let mut x = -12.0f64;
        while x < 12.0 {
            assert!(close(expm1_f64(x), x.exp_m1(), 1e-15), "expm1 {x}");
            assert!(close(tanh_f64(x), x.tanh(), 1e-15), "tanh {x}");
            x += 0.00731;
        }
    }
}
