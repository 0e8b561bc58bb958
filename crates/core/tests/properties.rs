//! Property tests of the core numerics.

use proptest::prelude::*;
use rquant_core::{dequantize, quantize_per_channel, quantize_per_tensor, Tensor};

proptest! {
    /// Inside the representable range, dequantize(quantize(x)) is within scale/2 of x
    /// (plus the f32 rounding of the product x·(1/scale)).
    #[test]
    fn round_trip_within_half_a_step(
        scale in 1e-4f64..10.0,
        zp in 0i64..=255,
        frac in proptest::collection::vec(0.0f64..1.0, 1..64),
    ) {
        let lo = (0 - zp) as f64 * scale;
        let hi = (255 - zp) as f64 * scale;
        let xs: Vec<f32> = frac.iter().map(|f| (lo + f * (hi - lo)) as f32).collect();
        let x = Tensor::new([xs.len()], xs.clone()).unwrap();
        let q = quantize_per_tensor::<u8>(&x, scale, zp).unwrap();
        let y = dequantize(&q);
        for (&a, &b) in xs.iter().zip(y.data()) {
            let tol = scale / 2.0 * (1.0 + 1e-5) + a.abs() as f64 * 1e-6;
            prop_assert!(((a - b) as f64).abs() <= tol, "x={a} got {b} scale={scale} zp={zp}");
        }
    }

    /// The same property per channel for qint8.
    #[test]
    fn per_channel_round_trip(
        s0 in 1e-3f64..1.0, s1 in 1e-3f64..1.0,
        z0 in -128i64..=127, z1 in -128i64..=127,
        frac in proptest::collection::vec(0.0f64..1.0, 2..32),
    ) {
        let n = frac.len() / 2;
        let scales = [s0, s1];
        let zps = [z0, z1];
        let mut xs = Vec::new();
        for c in 0..2 {
            let lo = (-128 - zps[c]) as f64 * scales[c];
            let hi = (127 - zps[c]) as f64 * scales[c];
            xs.extend(frac[c * n..(c + 1) * n].iter().map(|f| (lo + f * (hi - lo)) as f32));
        }
        let x = Tensor::new([2, n], xs.clone()).unwrap();
        let q = quantize_per_channel::<i8>(&x, &scales, &zps, 0).unwrap();
        let y = dequantize(&q);
        for (i, (&a, &b)) in xs.iter().zip(y.data()).enumerate() {
            let s = scales[i / n.max(1)];
            prop_assert!(((a - b) as f64).abs() <= s / 2.0 * (1.0 + 1e-5) + a.abs() as f64 * 1e-6);
        }
    }

    /// Quantize is monotone: x ≤ y ⇒ q(x) ≤ q(y).
    #[test]
    fn quantize_is_monotone(scale in 1e-3f64..5.0, zp in -128i64..=127, a in -1e3f32..1e3, b in -1e3f32..1e3) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let x = Tensor::new([2], vec![lo, hi]).unwrap();
        let q = quantize_per_tensor::<i8>(&x, scale, zp).unwrap();
        prop_assert!(q.int_repr()[0] <= q.int_repr()[1]);
    }
}
