//! Quantized normalization (docs/numerics.md §14): batch norm with fused
//! per-channel coefficients, and layer / group / instance norm from exact
//! integer sums. The arithmetic is PyTorch's AVX2/AVX-512 build, whose
//! compiler fuses `a·b + c` into one fused multiply-add where the text says
//! *fma* (its scalar build does not, and differs by one step in a few outputs).

use crate::numerics::{f32_to_i64_sat, inv_scale, quantize_val, rne};
use crate::ops::OutQ;
use crate::params::BatchNormParams;
use crate::{MemoryFormat, QTensor, Result};

/// Batch norm folded into `y = alpha[c]·(q − zp) + beta[c]` in output units
/// (PyTorch's `compute_fused_params`, f32 unless said): `inv_sigma =
/// f32(1 / f64(sqrt(var + f32(eps))))`; `alpha = f32(f64(inv_sigma·weight)
/// · (in_scale / out_scale))` (the ratio in f64); `beta = f32(f64(bias −
/// (mean·inv_sigma)·weight) / out_scale)`.
pub fn batch_norm_coefficients(
    p: &BatchNormParams<'_>,
    in_scale: f64,
    out_scale: f64,
) -> (Vec<f32>, Vec<f32>) {
    let ratio = in_scale / out_scale;
    let eps = p.eps as f32;
    let mut alpha = Vec::with_capacity(p.var.len());
    let mut beta = Vec::with_capacity(p.var.len());
    for c in 0..p.var.len() {
        let inv_sigma = (1.0f64 / (p.var[c] + eps).sqrt() as f64) as f32;
        let w = p.weight[c];
        alpha.push(((inv_sigma * w) as f64 * ratio) as f32);
        beta.push(((p.bias[c] - p.mean[c] * inv_sigma * w) as f64 / out_scale) as f32);
    }
    (alpha, beta)
}

/// Apply fused batch-norm coefficients to a 4-D tensor in either format:
/// `y = clamp(rne(fma(alpha[c], f32(q − zp), beta[c])) + out_zp, relu ? out_zp : 0, 255)`.
pub fn batch_norm(
    x: &QTensor<u8>,
    alpha: &[f32],
    beta: &[f32],
    out_zp: i64,
    relu: bool,
) -> Result<Vec<u8>> {
    let (_, zp) = x.q_per_tensor().expect("validated");
    let &[_, c, h, w] = x.shape() else {
        unreachable!("validated: 4-D")
    };
    let lo = if relu { out_zp } else { 0 };
    let f = |q: u8, ch: usize| -> u8 {
        let v = alpha[ch].mul_add((q as i64 - zp) as f32, beta[ch]);
        f32_to_i64_sat(rne(v)).saturating_add(out_zp).clamp(lo, 255) as u8
    };
    let xd = x.int_repr();
    Ok(match x.memory_format() {
        MemoryFormat::Contiguous => xd
            .iter()
            .enumerate()
            .map(|(i, &q)| f(q, (i / (h * w)) % c))
            .collect(),
        MemoryFormat::ChannelsLast => xd.iter().enumerate().map(|(i, &q)| f(q, i % c)).collect(),
    })
}

/// The statistics of one normalization group, in units of the input scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormStats {
    /// `mean(q) − zp`: the group's mean over `x_scale`.
    pub mean: f32,
    /// `x_scale / sqrt(var + eps)`.
    pub rstd: f32,
}

/// Mean and reciprocal deviation of one group of codes (PyTorch's
/// `quantized_normalize_kernel`): exact integer sums `S = Σq`, `Q = Σq²`;
/// `m = f32(S) / f32(n)`; `var = max(fma(−m, m, f32(Q) / f32(n)), 0)`;
/// `mean = m − f32(zp)`; with `xs = f32(x_scale)`,
/// `rstd = f32(f64(xs) / sqrt(f64(f32(var·xs)·xs) + eps))`.
pub fn norm_stats(q: impl Iterator<Item = u8>, x_scale: f64, zp: i64, eps: f64) -> NormStats {
    let (mut s, mut s2, mut n) = (0i64, 0i64, 0u64);
    for v in q {
        s += v as i64;
        s2 += (v as i64) * (v as i64);
        n += 1;
    }
    let nf = n as f32;
    let m = s as f32 / nf;
    let var = (-m).mul_add(m, s2 as f32 / nf).max(0.0);
    let xs = x_scale as f32;
    let t = ((var * xs) * xs) as f64 + eps;
    NormStats {
        mean: m - zp as f32,
        rstd: (xs as f64 / t.sqrt()) as f32,
    }
}

/// Layer norm of a contiguous tensor: `m` groups of `n` consecutive elements,
/// elementwise `gamma`, `beta` (length `n`, or absent: 1 and 0):
/// `y = quantize(fma((f32(q − zp) − mean)·rstd, gamma[j], beta[j]))`.
pub fn layer_norm(
    x: &QTensor<u8>,
    n: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f64,
    out: OutQ,
) -> Result<Vec<u8>> {
    let (s, zp) = x.q_per_tensor().expect("validated");
    let inv = inv_scale(out.scale);
    let mut y = Vec::with_capacity(x.numel());
    for group in x.int_repr().chunks_exact(n) {
        let st = norm_stats(group.iter().copied(), s, zp, eps);
        for (j, &q) in group.iter().enumerate() {
            let t = ((q as i64 - zp) as f32 - st.mean) * st.rstd;
            let g = gamma.map_or(1.0, |g| g[j]);
            let b = beta.map_or(0.0, |b| b[j]);
            y.push(quantize_val::<u8>(inv, out.zero_point, t.mul_add(g, b)));
        }
    }
    Ok(y)
}

/// Group norm of a contiguous `[N, C, *]` tensor with `groups` groups of
/// `C/groups` channels, per-channel `gamma`, `beta` (or 1 and 0): per group
/// [`norm_stats`], then per channel `gp = rstd·gamma[c]` and
/// `y = quantize(fma(f32(q − zp) − mean, gp, beta[c]))`. Instance norm is
/// `groups = C`.
pub fn group_norm(
    x: &QTensor<u8>,
    groups: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f64,
    out: OutQ,
) -> Result<Vec<u8>> {
    let (s, zp) = x.q_per_tensor().expect("validated");
    let shape = x.shape();
    let c = shape[1];
    let spatial: usize = shape[2..].iter().product();
    let cpg = c / groups;
    let inv = inv_scale(out.scale);
    let mut y = Vec::with_capacity(x.numel());
    for (gi, group) in x.int_repr().chunks_exact(cpg * spatial).enumerate() {
        let st = norm_stats(group.iter().copied(), s, zp, eps);
        for (k, chan) in group.chunks_exact(spatial).enumerate() {
            let ch = (gi % groups) * cpg + k;
            let gp = st.rstd * gamma.map_or(1.0, |g| g[ch]);
            let b = beta.map_or(0.0, |b| b[ch]);
            for &q in chan {
                let t = (q as i64 - zp) as f32 - st.mean;
                y.push(quantize_val::<u8>(inv, out.zero_point, t.mul_add(gp, b)));
            }
        }
    }
    Ok(y)
}
