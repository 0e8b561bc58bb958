//! Learnable fake quantization (LSQ, `_LearnableFakeQuantize`): forward and
//! gradients of `torch._fake_quantize_learnable_per_tensor_affine` and
//! `torch._fake_quantize_learnable_per_channel_affine` as torch 2.15's CPU
//! kernels compute them.
//!
//! * Forward: the zero point parameter (a float) is rounded — per tensor with
//!   `nearbyint` then clamped, per channel with `round` then clamped — and the
//!   ordinary fake quant runs (`zp + rne(x * (1/scale))`).
//! * Backward per tensor: the zero point is `trunc(clamp(zp + 0.5))` (not the
//!   forward's rounding); per channel it is the forward's rounded value.
//!   Per element `xq = rne(zp + x * inv_scale)` — note the zero point is added
//!   *before* rounding here, unlike the forward:
//!   `dX = dY * [qmin <= xq <= qmax]`; in range
//!   `dScale = dY * (xfq - x) * inv_scale * gf`, `dZp = 0`; below/above
//!   `dScale = dY * (qmin|qmax - zp) * gf`, `dZp = dY * -1 * scale * gf`.
//!   The per-element vectors are reduced with torch's float `sum`
//!   ([`crate::observer::torch_ops`]), which is bit-exact for single-threaded
//!   sums (fewer than 32768 elements).

use crate::error::{QuantError, Result};
use crate::fake_quant::{fake_quantize_per_channel, fake_quantize_per_tensor};
use crate::observer::torch_ops::{torch_sum, torch_sum_per_channel};
use crate::quant::{normalize_axis, split_axis};
use crate::tensor::{check_len, Tensor};

/// Gradients of a learnable fake quant.
#[derive(Debug, Clone, PartialEq)]
pub struct LsqGrads {
    pub dx: Tensor,
    /// One entry per tensor (per-tensor) or per channel.
    pub dscale: Vec<f32>,
    pub dzero_point: Vec<f32>,
}

/// LSQ's gradient scale: `1 / sqrt(numel * quant_max)` when `use_grad_scaling`
/// (Python float math), else 1.0. For per-channel use, torch's module passes
/// `X.numel()` too.
pub fn lsq_grad_factor(numel: usize, quant_max: i64, use_grad_scaling: bool) -> f64 {
    if use_grad_scaling {
        // Python's `** 0.5` is a correctly rounded pow, which equals the (exact-rounding)
        // sqrt; `powf` would depend on the platform's libm.
        1.0 / ((numel as f64) * quant_max as f64).sqrt()
    } else {
        1.0
    }
}

/// Forward `_fake_quantize_learnable_per_tensor_affine(x, scale, zp, qmin, qmax, gf)`.
pub fn fake_quantize_learnable_per_tensor(
    x: &Tensor,
    scale: f32,
    zero_point: f32,
    quant_min: i64,
    quant_max: i64,
) -> Result<Tensor> {
    let zp = (zero_point.round_ties_even())
        .max(quant_min as f32)
        .min(quant_max as f32) as i64;
    Ok(fake_quantize_per_tensor(x, scale, zp, quant_min, quant_max)?.y)
}

fn check_lsq_range(op: &'static str, quant_min: i64, quant_max: i64) -> Result<()> {
    if !(quant_min <= 0 && quant_max >= 0) || quant_min > quant_max {
        return Err(QuantError::invalid(
            op,
            format!("quantization range [{quant_min}, {quant_max}] must include 0"),
        ));
    }
    Ok(())
}

/// One element of the learnable gradient kernels: (dx, dscale, dzp).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lsq_elem(
    x: f32,
    dy: f32,
    scale: f32,
    inv: f32,
    zp: f32,
    qmin: i64,
    qmax: i64,
    gf: f32,
) -> (f32, f32, f32) {
    // torch's CPU kernel is built with FMA contraction: both `zp + x * inv`
    // and `xfq - x` (with `xfq = q * scale`) are single fused operations.
    let xqi = x.mul_add(inv, zp).round_ties_even() as i64;
    let inside = xqi >= qmin && xqi <= qmax;
    let dx = dy * if inside { 1.0 } else { 0.0 };
    if inside {
        let err = (xqi.clamp(qmin, qmax) as f32 - zp).mul_add(scale, -x);
        (dx, dy * err * inv * gf, 0.0)
    } else {
        let small = qmin as f32 - zp;
        let big = qmax as f32 - zp;
        let ds = if xqi < qmin { dy * small } else { dy * big } * gf;
        (dx, ds, -dy * scale * gf)
    }
}

/// Backward of the per-tensor learnable fake quant for upstream gradient `dy`.
pub fn fake_quantize_learnable_per_tensor_backward(
    dy: &Tensor,
    x: &Tensor,
    scale: f32,
    zero_point: f32,
    quant_min: i64,
    quant_max: i64,
    grad_factor: f64,
) -> Result<LsqGrads> {
    const OP: &str = "fake_quantize_learnable_per_tensor_backward";
    if dy.numel() != x.numel() {
        return Err(QuantError::shape(
            OP,
            format!("dY has {} elements, X {}", dy.numel(), x.numel()),
        ));
    }
    check_lsq_range(OP, quant_min, quant_max)?;
    let inv = 1.0f32 / scale;
    // `_get_zero_point_from_tensor(..., is_forward=false)`
    let zp_i = (zero_point + 0.5f32)
        .max(quant_min as f32)
        .min(quant_max as f32) as i64;
    let zp = zp_i as f32;
    let gf = grad_factor as f32;
    let n = x.numel();
    let (mut dx, mut ds, mut dz) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (&xv, &g) in x.data().iter().zip(dy.data()) {
        let (a, b, c) = lsq_elem(xv, g, scale, inv, zp, quant_min, quant_max, gf);
        dx.push(a);
        ds.push(b);
        dz.push(c);
    }
    if n == 0 {
        return Ok(LsqGrads {
            dx: x.clone(),
            dscale: vec![scale],
            dzero_point: vec![zero_point],
        });
    }
    Ok(LsqGrads {
        dx: Tensor::new(x.shape().to_vec(), dx)?,
        dscale: vec![torch_sum(&ds)],
        dzero_point: vec![torch_sum(&dz)],
    })
}

fn rounded_channel_zps(zero_points: &[f32], quant_min: i64, quant_max: i64) -> Vec<f32> {
    zero_points
        .iter()
        .map(|z| {
            z.round_ties_even()
                .max(quant_min as f32)
                .min(quant_max as f32)
        })
        .collect()
}

/// Forward `_fake_quantize_learnable_per_channel_affine(x, scales, zps, axis, qmin, qmax, gf)`.
pub fn fake_quantize_learnable_per_channel(
    x: &Tensor,
    scales: &[f32],
    zero_points: &[f32],
    axis: i64,
    quant_min: i64,
    quant_max: i64,
) -> Result<Tensor> {
    let zps: Vec<i64> = rounded_channel_zps(zero_points, quant_min, quant_max)
        .into_iter()
        .map(|z| z as i64)
        .collect();
    Ok(fake_quantize_per_channel(x, scales, &zps, axis, quant_min, quant_max)?.y)
}

/// Backward of the per-channel learnable fake quant. Channel sums follow
/// torch's reduction order for a contiguous `x`.
#[allow(clippy::too_many_arguments)]
pub fn fake_quantize_learnable_per_channel_backward(
    dy: &Tensor,
    x: &Tensor,
    scales: &[f32],
    zero_points: &[f32],
    axis: i64,
    quant_min: i64,
    quant_max: i64,
    grad_factor: f64,
) -> Result<LsqGrads> {
    const OP: &str = "fake_quantize_learnable_per_channel_backward";
    if dy.shape() != x.shape() {
        return Err(QuantError::shape(
            OP,
            format!("dY {:?} vs X {:?}", dy.shape(), x.shape()),
        ));
    }
    check_lsq_range(OP, quant_min, quant_max)?;
    let axis = normalize_axis(OP, axis, x.ndim())?;
    let (outer, c, inner) = split_axis(x.shape(), axis);
    check_len(OP, "scales", c, scales.len())?;
    check_len(OP, "zero_points", c, zero_points.len())?;
    if x.numel() == 0 {
        return Ok(LsqGrads {
            dx: x.clone(),
            dscale: scales.to_vec(),
            dzero_point: zero_points.to_vec(),
        });
    }
    let zps = rounded_channel_zps(zero_points, quant_min, quant_max);
    let gf = grad_factor as f32;
    let n = x.numel();
    let (mut dx, mut ds, mut dz) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let (xd, gd) = (x.data(), dy.data());
    for o in 0..outer {
        for ch in 0..c {
            let s = scales[ch];
            let inv = 1.0f32 / s;
            let base = (o * c + ch) * inner;
            for i in base..base + inner {
                let (a, b, cz) = lsq_elem(xd[i], gd[i], s, inv, zps[ch], quant_min, quant_max, gf);
                dx[i] = a;
                ds[i] = b;
                dz[i] = cz;
            }
        }
    }
    Ok(LsqGrads {
        dx: Tensor::new(x.shape().to_vec(), dx)?,
        dscale: torch_sum_per_channel(&ds, x.shape(), axis),
        dzero_point: torch_sum_per_channel(&dz, x.shape(), axis),
    })
}

#[cfg(test)]
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

    fn x_dy() -> (Tensor, Tensor) {
        (
            Tensor::new([2, 3], vec![-0.3, 0.11, 0.9, 0.05, -1.2, 0.4]).unwrap(),
            Tensor::new([2, 3], vec![0.5, -1.0, 0.25, 2.0, 0.75, -0.5]).unwrap(),
        )
    }

    #[test]
    fn per_tensor_matches_torch() {
        // torch: s=tensor([0.01]); z=tensor([20.6]);
        // y = torch._fake_quantize_learnable_per_tensor_affine(x, s, z, 0, 63, 0.125); y.backward(dy)
        let (x, dy) = x_dy();
        let y = fake_quantize_learnable_per_tensor(&x, 0.01, 20.6, 0, 63).unwrap();
        assert_eq!(
            y.data(),
            &[
                -0.209_999_993_443_489_07f32,
                0.109_999_999_403_953_55,
                0.419_999_986_886_978_15,
                0.049_999_997_019_767_76,
                -0.209_999_993_443_489_07,
                0.399_999_976_158_142_1
            ]
        );
        let g =
            fake_quantize_learnable_per_tensor_backward(&dy, &x, 0.01, 20.6, 0, 63, 0.125).unwrap();
        assert_eq!(g.dx.data(), &[0.0, -1.0, 0.0, 2.0, 0.0, -0.5]);
        assert_eq!(g.dscale, vec![-1.968_75f32]);
        assert_eq!(g.dzero_point, vec![-0.001_874_999_841_675_162_3f32]);
    }

    #[test]
    fn per_channel_matches_torch() {
        // torch: s=tensor([0.01,0.02]); z=tensor([-3.4,2.5]);
        // torch._fake_quantize_learnable_per_channel_affine(x, s, z, 0, -8, 7, 1.0).backward(dy)
        let (x, dy) = x_dy();
        let (s, z) = ([0.01f32, 0.02], [-3.4f32, 2.5]);
        let y = fake_quantize_learnable_per_channel(&x, &s, &z, 0, -8, 7).unwrap();
        assert_eq!(
            y.data(),
            &[
                -0.049_999_997_019_767_76f32,
                0.099_999_994_039_535_52,
                0.099_999_994_039_535_52,
                0.039_999_999_105_930_33,
                -0.199_999_988_079_071_04,
                0.099_999_994_039_535_52
            ]
        );
        let g =
            fake_quantize_learnable_per_channel_backward(&dy, &x, &s, &z, 0, -8, 7, 1.0).unwrap();
        let dx: Vec<u32> = g.dx.data().iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = [0.0f32, -0.0, 0.0, 2.0, 0.0, -0.0]
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(dx, want);
        assert_eq!(g.dscale, vec![-10.0f32, -11.0]);
        assert_eq!(
            g.dzero_point,
            vec![0.002_499_999_944_120_645_5f32, -0.004_999_999_888_241_291]
        );
    }

    #[test]
    fn bad_inputs() {
        let (x, dy) = x_dy();
        assert!(fake_quantize_learnable_per_tensor_backward(&dy, &x, 0.1, 0.0, 1, 5, 1.0).is_err());
        let short = Tensor::new([2], vec![1.0, 2.0]).unwrap();
        assert!(
            fake_quantize_learnable_per_tensor_backward(&short, &x, 0.1, 0.0, 0, 5, 1.0).is_err()
        );
        assert!(fake_quantize_learnable_per_channel_backward(
            &dy,
            &x,
            &[0.1],
            &[0.0],
            0,
            -8,
            7,
            1.0
        )
        .is_err());
        assert!(fake_quantize_learnable_per_channel_backward(
            &dy, &x, &[0.1; 2], &[0.0; 2], 5, -8, 7, 1.0
        )
        .is_err());
        assert_eq!(lsq_grad_factor(4, 255, false), 1.0);
        assert_eq!(lsq_grad_factor(4, 255, true), 1.0 / (1020f64).sqrt());
    }

    /// Bulk comparison with a case file written by torch
    /// (`RQUANT_LSQ_CASES=/path cargo test -- --ignored`).
    #[test]
    #[ignore]
    fn bulk_cases_from_torch() {
        let Ok(path) = std::env::var("RQUANT_LSQ_CASES") else {
            return;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let nums = |s: &str| -> Vec<f32> {
            s.split(',')
                .filter(|v| !v.is_empty())
                .map(|v| v.parse::<f64>().unwrap() as f32)
                .collect()
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut failures = 0;
        for (ln, line) in text.lines().enumerate() {
            let kv: Vec<(&str, &str)> = line
                .split(';')
                .map(|p| p.split_once('=').unwrap())
                .collect();
            let get = |k: &str| kv.iter().find(|(a, _)| *a == k).unwrap().1;
            let q: Vec<i64> = get("q").split(',').map(|v| v.parse().unwrap()).collect();
            let shape: Vec<usize> = get("shape")
                .split(',')
                .map(|v| v.parse().unwrap())
                .collect();
            let gf: f64 = get("gf").parse().unwrap();
            let axis: i64 = get("axis").parse().unwrap();
            let x = Tensor::new(shape.clone(), nums(get("x"))).unwrap();
            let dy = Tensor::new(shape.clone(), nums(get("dy"))).unwrap();
            let (s, z) = (nums(get("s")), nums(get("z")));
            let (y, g) = if get("pc") == "1" {
                (
                    fake_quantize_learnable_per_channel(&x, &s, &z, axis, q[0], q[1]).unwrap(),
                    fake_quantize_learnable_per_channel_backward(
                        &dy, &x, &s, &z, axis, q[0], q[1], gf,
                    )
                    .unwrap(),
                )
            } else {
                (
                    fake_quantize_learnable_per_tensor(&x, s[0], z[0], q[0], q[1]).unwrap(),
                    fake_quantize_learnable_per_tensor_backward(
                        &dy, &x, s[0], z[0], q[0], q[1], gf,
                    )
                    .unwrap(),
                )
            };
            let checks = [
                ("y", bits(y.data()), bits(&nums(get("y")))),
                ("dx", bits(g.dx.data()), bits(&nums(get("dx")))),
                ("ds", bits(&g.dscale), bits(&nums(get("ds")))),
                ("dz", bits(&g.dzero_point), bits(&nums(get("dz")))),
            ];
            for (name, a, b) in checks {
                if a != b {
                    failures += 1;
                    let f = |v: &[u32]| v.iter().map(|&u| f32::from_bits(u)).collect::<Vec<_>>();
                    eprintln!(
                        "case {ln} pc={} shape={shape:?} axis={axis} {name}: {:?} vs {:?}",
                        get("pc"),
                        f(&a),
                        f(&b)
                    );
                }
            }
        }
        assert_eq!(failures, 0);
    }
}
