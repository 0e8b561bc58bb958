//! A deterministic `exp` in f64 built from IEEE +, ×, ÷ only, so that
//! sigmoid gives the same bits on every platform (libm `exp` differs between
//! C libraries and architectures).

/// e^x for any f64; relative error about 1e-16 (far below the f32 rounding
/// that follows in every caller).
pub fn exp_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    if x < -745.0 {
        return 0.0;
    }
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // fdlibm ln2_hi
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // fdlibm ln2_lo
    let k = (x * std::f64::consts::LOG2_E).round_ties_even();
    // Cody–Waite reduction: r = x − k·ln2 in two steps, |r| ≤ ln2/2.
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Taylor series to degree 20 in Horner form: the remainder is below 2^-60.
    let mut p = 1.0f64;
    for i in (1..=20).rev() {
        p = 1.0 + p * r / i as f64;
    }
    scale_pow2(p, k as i32)
}

fn scale_pow2(v: f64, k: i32) -> f64 {
    // Split the power so each factor is a normal f64.
    let mut v = v;
    let mut k = k;
    while k > 1000 {
        v *= f64::from_bits(((1023 + 1000) as u64) << 52);
        k -= 1000;
    }
    while k < -1000 {
        v *= f64::from_bits(((1023 - 1000) as u64) << 52);
        k += 1000;
    }
    v * f64::from_bits(((1023 + k) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::exp_f64;

    /// Correctly rounded values (computed in high precision), independent of any libm.
    #[test]
    fn matches_correctly_rounded_values() {
        let cases = [
            (1.0, std::f64::consts::E),
            (-1.0, 0.36787944117144233),
            (0.5, 1.6487212707001282),
            (10.0, 22026.465794806718),
            (-20.0, 2.061153622438558e-9),
            (700.0, 1.0142320547350045e304),
        ];
        for (x, want) in cases {
            let got = exp_f64(x);
            assert!(
                ((got - want) / want).abs() <= 2.0 * f64::EPSILON,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri perturbs libm results on purpose")]
    fn close_to_libm() {
        let mut x = -50.0f64;
        while x < 50.0 {
            let (a, b) = (exp_f64(x), x.exp());
            assert!(((a - b) / b).abs() < 4e-16, "x={x} ours={a} libm={b}");
            x += 0.0137;
        }
        assert_eq!(exp_f64(0.0), 1.0);
        assert_eq!(exp_f64(-1000.0), 0.0);
        assert_eq!(exp_f64(1000.0), f64::INFINITY);
    }
}
