//! Float pieces of a transformer that `rquant-nn` does not provide: an
//! accurate `erf` and the erf GELU, LayerNorm, masked softmax.

use std::sync::OnceLock;

const TWO_OVER_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;

/// erf in f64 by series / continued fraction: slow, accurate to ~1e-16;
/// used to build the table of [`erf`] (and as its oracle in tests).
pub fn erf_slow(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 3.0 {
        // erf(a) = 2/√π e^{-a²} Σ 2ⁿ a^{2n+1} / (1·3·…·(2n+1)): all terms positive.
        let mut term = a;
        let mut sum = a;
        let mut n = 0.0;
        while term > sum * 1e-18 {
            n += 1.0;
            term *= 2.0 * a * a / (2.0 * n + 1.0);
            sum += term;
        }
        TWO_OVER_SQRT_PI * (-a * a).exp() * sum
    } else {
        1.0 - erfc_cf(a)
    };
    r.copysign(x)
}

/// erfc(a) for a ≥ 3 by its continued fraction (evaluated bottom-up).
fn erfc_cf(a: f64) -> f64 {
    let mut t = a;
    for n in (1..=80).rev() {
        t = a + (n as f64 / 2.0) / t;
    }
    (-a * a).exp() / (std::f64::consts::PI.sqrt() * t)
}

/// Grid of the table: x0 = i/64, i = 0..=256 (x0 ≤ 4). Each entry holds
/// erf(x0) and the Taylor coefficients of erf about x0: erf^(n)(x0)/n! for
/// n = 1..6, i.e. 2/√π·e^{-x0²} times Hermite-like polynomials in x0.
const STEPS: f64 = 64.0;
const ENTRIES: usize = 257;

fn table() -> &'static [[f64; 7]; ENTRIES] {
    static T: OnceLock<Box<[[f64; 7]; ENTRIES]>> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = Box::new([[0.0; 7]; ENTRIES]);
        for (i, e) in t.iter_mut().enumerate() {
            let x0 = i as f64 / STEPS;
            let c = TWO_OVER_SQRT_PI * (-x0 * x0).exp();
            let x2 = x0 * x0;
            *e = [
                erf_slow(x0),
                c,
                c * -x0,
                c * (4.0 * x2 - 2.0) / 6.0,
                c * (12.0 * x0 - 8.0 * x0 * x2) / 24.0,
                c * (12.0 - 48.0 * x2 + 16.0 * x2 * x2) / 120.0,
                c * (-120.0 * x0 + 160.0 * x0 * x2 - 32.0 * x0 * x2 * x2) / 720.0,
            ];
        }
        t
    })
}

/// The Taylor expansion of erf about a table point, `h = a − x0`.
#[inline(always)]
fn taylor(e: &[f64; 7], h: f64) -> f64 {
    e[0] + h * (e[1] + h * (e[2] + h * (e[3] + h * (e[4] + h * (e[5] + h * e[6])))))
}

/// erf in f64 (absolute error below 5e-15): the nearest table point x0
/// (spacing 1/64) and a 6-term Taylor expansion of erf about it. |x| ≥ 4
/// gives ±(1 − 1.5e-8) or closer, i.e. ±1 once rounded to f32.
pub fn erf64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a >= (ENTRIES - 1) as f64 / STEPS {
        return if a > 6.0 {
            1.0f64.copysign(x)
        } else {
            erf_slow(x)
        };
    }
    // The nearest grid point (ties to even) by the 1.5·2^52 trick, as in `gelu_chunks`.
    let k = a * STEPS + 6_755_399_441_055_744.0;
    let i = k - 6_755_399_441_055_744.0;
    taylor(&table()[(k.to_bits() & 0x1FF) as usize], a - i / STEPS).copysign(x)
}

/// erf rounded to f32 (correctly rounded except within ~1e-15 of a tie).
pub fn erf(x: f32) -> f32 {
    // erf(3.9921875) = 1 − 1.6e-8 already rounds to 1 in f32.
    if x.abs() >= 4.0 {
        return 1.0f32.copysign(x);
    }
    erf64(x as f64) as f32
}

/// GELU with the exact (erf) form, in PyTorch's f32 operation order:
/// `x · 0.5 · (1 + erf(x · 1/√2))`.
pub fn gelu(x: f32) -> f32 {
    x * 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// [`gelu`] over a slice, in place, with the same results: the erf table
/// lookups are split from the arithmetic so the Taylor polynomials of many
/// elements run side by side in SIMD lanes (one element at a time, the
/// polynomial's dependency chain made GELU half of a MiniLM forward).
pub fn gelu_inplace(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { gelu_avx2(v) };
    }
    gelu_chunks(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(v: &mut [f32]) {
    gelu_chunks(v)
}

#[inline(always)]
fn gelu_chunks(v: &mut [f32]) {
    const N: usize = 64;
    let t = table();
    let last = (ENTRIES - 1) as f64;
    let (mut h, mut idx) = ([0f64; N], [0usize; N]);
    let mut coef = [[0f64; 7]; N];
    for chunk in v.chunks_mut(N) {
        let n = chunk.len();
        for j in 0..n {
            let a = (chunk[j] * std::f32::consts::FRAC_1_SQRT_2).abs() as f64;
            // Nearest grid point, capped at the table's end (|z| ≥ 4 is handled below).
            // Round to the nearest grid index with the 1.5·2^52 trick (the
            // integer lands in the low mantissa bits): no float-to-int
            // conversion, so the loop stays in SIMD lanes.
            let k = (a * STEPS).min(last) + 6_755_399_441_055_744.0;
            let i = k - 6_755_399_441_055_744.0;
            idx[j] = (k.to_bits() & 0x1FF) as usize;
            h[j] = a - i / STEPS;
        }
        for j in 0..n {
            coef[j] = t[idx[j]];
        }
        for j in 0..n {
            let x = chunk[j];
            let z = x * std::f32::consts::FRAC_1_SQRT_2;
            let e = taylor(&coef[j], h[j]) as f32;
            let e = if z.abs() >= 4.0 { 1.0 } else { e };
            chunk[j] = x * 0.5 * (1.0 + e.copysign(z));
        }
    }
}

/// LayerNorm over the last dimension (rows of `h`), in place: mean and
/// biased variance accumulated in f64, `(x − mean)·rstd·γ + β` in f32.
pub fn layer_norm(x: &mut [f32], h: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_mut(h) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
        let var = row
            .iter()
            .map(|&v| {
                let d = v as f64 - mean;
                d * d
            })
            .sum::<f64>()
            / h as f64;
        let rstd = (1.0 / (var + eps as f64).sqrt()) as f32;
        let mean = mean as f32;
        for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * rstd * g + b;
        }
    }
}

/// Softmax of one row over the positions where `keep` is true; masked
/// positions get exactly 0 (as adding the dtype's minimum before softmax does).
/// The exponentials use [`exp_fast`] (within 2 ulp); the max and the sum run
/// in 8 lanes so the loops vectorize.
pub fn masked_softmax(row: &mut [f32], keep: &[bool]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { softmax_avx2(row, keep) };
    }
    softmax_lanes(row, keep)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(row: &mut [f32], keep: &[bool]) {
    softmax_lanes(row, keep)
}

#[inline(always)]
fn softmax_lanes(row: &mut [f32], keep: &[bool]) {
    let keep = &keep[..row.len()];
    // Masked positions become -inf (so they never win the max and exp gives 0).
    for (v, &k) in row.iter_mut().zip(keep) {
        *v = if k { *v } else { f32::NEG_INFINITY };
    }
    let mut mx = [f32::NEG_INFINITY; 8];
    let mut it = row.chunks_exact(8);
    for c in &mut it {
        for l in 0..8 {
            mx[l] = if c[l] > mx[l] { c[l] } else { mx[l] };
        }
    }
    let mut m = mx
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for &v in it.remainder() {
        m = if v > m { v } else { m };
    }
    if m == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let mut sums = [0.0f32; 8];
    let mut it = row.chunks_exact_mut(8);
    for c in &mut it {
        for l in 0..8 {
            // exp_fast clamps -inf to e^-87 ≈ 1.6e-38: zero it explicitly.
            let e = exp_fast(c[l] - m);
            c[l] = if c[l] == f32::NEG_INFINITY { 0.0 } else { e };
            sums[l] += c[l];
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for v in it.into_remainder() {
        *v = if *v == f32::NEG_INFINITY {
            0.0
        } else {
            exp_fast(*v - m)
        };
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// e^x in f32 without libm: Cephes' expf (range reduction by ln 2 in two
/// parts, degree-6 polynomial, 2^n through the exponent bits), within 2 ulp
/// of the correctly rounded value on [-87, 88]; branch-free, so loops over
/// slices vectorize. Inputs are clamped to that range (no inf / subnormals).
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // round(x·log2 e) by the 1.5·2^23 trick (ties to even, no branch).
    let k = x * std::f32::consts::LOG2_E + 12_582_912.0;
    let n = k - 12_582_912.0;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    // k's low mantissa bits hold n (two's complement): 2^n without a
    // float-to-int conversion, so the whole function stays in SIMD lanes.
    let bits = k.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23;
    y * f32::from_bits(bits)
}

/// [`exp_fast`] with fused multiply-adds (`f32::mul_add`, one rounding
/// each): fewer instructions where the CPU has FMA, the same bits everywhere
/// (without FMA hardware `mul_add` is a slower exact libm call). Within 2 ulp.
#[inline(always)]
pub fn exp_fma(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let k = x.mul_add(std::f32::consts::LOG2_E, 12_582_912.0);
    let n = k - 12_582_912.0;
    let r = n.mul_add(2.121_944_4e-4, n.mul_add(-0.693_359_4, x));
    let p = 1.987_569_1e-4f32
        .mul_add(r, 1.398_199_9e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 0.166_666_65)
        .mul_add(r, 0.5);
    let y = p.mul_add(r * r, r) + 1.0;
    let bits = k.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23;
    y * f32::from_bits(bits)
}

/// Logistic sigmoid `1 / (1 + e^-x)` with [`exp_fma`].
#[inline(always)]
pub fn sigmoid_fast(x: f32) -> f32 {
    1.0 / (1.0 + exp_fma(-x))
}

/// tanh with [`exp_fma`]: `sign(x)·(1 − e)/(1 + e)`, `e = e^{−2|x|}`
/// (absolute error ~1e-7, as f32 near 1).
#[inline(always)]
pub fn tanh_fast(x: f32) -> f32 {
    let e = exp_fma(-2.0 * x.abs());
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Reference values (Abramowitz & Stegun / high-precision tables).
        let cases = [
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (1.5, 0.9661051464753108),
            (2.0, 0.9953222650189527),
            (2.5, 0.999_593_047_982_555),
            (3.0, 0.9999779095030014),
            (3.5, 0.9999992569016276),
        ];
        for (x, want) in cases {
            for got in [erf_slow(x), erf64(x), -erf64(-x)] {
                assert!((got - want).abs() < 2e-15, "erf({x}) = {got}, want {want}");
            }
        }
        // The continued fraction's tail, relatively.
        let e3 = erfc_cf(3.0);
        assert!((e3 / 2.209049699858544e-05 - 1.0).abs() < 1e-13, "{e3}");
    }

    #[test]
    fn fast_erf_agrees_with_series_everywhere() {
        let mut worst = 0.0f64;
        for i in 0..=40_000 {
            let x = -5.0 + i as f64 * 2.5e-4;
            worst = worst.max((erf64(x) - erf_slow(x)).abs());
        }
        assert!(worst < 5e-15, "worst |erf64 - erf_slow| = {worst}");
        assert!(erf(f32::NAN).is_nan());
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn fast_exp_sigmoid_tanh() {
        let mut worst = (0.0f64, 0.0f64, 0.0f64);
        for i in 0..=200_000 {
            let x = -80.0 + i as f32 * 8e-4;
            let e = exp_fast(x) as f64 / (x as f64).exp() - 1.0;
            let e2 = exp_fma(x) as f64 / (x as f64).exp() - 1.0;
            worst.0 = worst.0.max(e.abs()).max(e2.abs());
            let s = sigmoid_fast(x) as f64 - 1.0 / (1.0 + (-(x as f64)).exp());
            worst.1 = worst.1.max(s.abs());
            let t = tanh_fast(x) as f64 - (x as f64).tanh();
            worst.2 = worst.2.max(t.abs());
        }
        assert!(worst.0 < 2.5e-7, "exp relative error {}", worst.0);
        assert!(worst.1 < 1.2e-7 && worst.2 < 2.5e-7, "{worst:?}");
        assert_eq!(tanh_fast(0.0), 0.0);
        let s = sigmoid_fast(-200.0);
        assert!((0.0..1e-37).contains(&s), "{s}");
        assert_eq!(sigmoid_fast(200.0), 1.0);
    }

    #[test]
    fn gelu_slice_equals_scalar() {
        let mut v: Vec<f32> = (0..5000).map(|i| (i as f32 - 2500.0) * 0.0037).collect();
        v.extend([
            0.0, -0.0, 5.657, -5.657, 5.6568, -5.6568, 30.0, -30.0, 1e-30, -1e-30,
        ]);
        let want: Vec<f32> = v.iter().map(|&x| gelu(x)).collect();
        gelu_inplace(&mut v);
        for (a, b) in v.iter().zip(&want) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
        }
    }

    #[test]
    fn gelu_values() {
        // torch.nn.functional.gelu (approximate='none') in float32.
        assert_eq!(gelu(0.0), 0.0);
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-7);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-7);
        assert!((gelu(3.0) - 2.995_950_5).abs() < 3e-7);
    }

    #[test]
    fn layer_norm_and_softmax() {
        let mut x = vec![1.0f32, 2.0, 3.0, 4.0];
        layer_norm(&mut x, 4, &[1.0; 4], &[0.0; 4], 1e-12);
        let want = [-1.3416408, -0.4472136, 0.4472136, 1.3416408];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-6);
        }
        let mut r = vec![1.0f32, 2.0, 100.0];
        masked_softmax(&mut r, &[true, true, false]);
        assert_eq!(r[2], 0.0);
        assert!((r[0] + r[1] - 1.0).abs() < 1e-7 && r[1] > r[0]);
    }
}
