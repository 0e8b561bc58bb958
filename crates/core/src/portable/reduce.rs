//! Reductions over dimensions of a quint8 tensor: mean and softmax
//! (docs/numerics.md §13). Both work on the logical (row-major) order; the
//! front end hands them contiguous tensors.

use crate::exp::exp_f64;
use crate::numerics::{dequantize_val, f32_to_i64_sat, inv_scale, quantize_val, rne};
use crate::ops::OutQ;
use crate::{QTensor, Result};

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Mean of a contiguous tensor over the dimensions flagged in `reduce`
/// (one flag per dimension): `rne(f32(Σq) / f32(n))` over the raw codes,
/// `n` the number of reduced elements (PyTorch's inner-dimension kernel; the
/// output keeps the input's qparams). The result is in the row-major order
/// of the kept dimensions.
pub fn mean(x: &QTensor<u8>, reduce: &[bool]) -> Result<Vec<u8>> {
    let shape = x.shape();
    let kept: Vec<usize> = shape
        .iter()
        .zip(reduce)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let n: usize = shape
        .iter()
        .zip(reduce)
        .filter(|(_, &r)| r)
        .map(|(&d, _)| d)
        .product();
    let out_strides = strides(&kept);
    let mut sums = vec![0i64; kept.iter().product()];
    let mut idx = vec![0usize; shape.len()];
    for &q in x.int_repr() {
        let o: usize = idx
            .iter()
            .zip(&out_strides)
            .zip(reduce)
            .map(|((&i, &s), &r)| if r { 0 } else { i * s })
            .sum();
        sums[o] += q as i64;
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    let nf = n as f32;
    Ok(sums
        .iter()
        .map(|&s| f32_to_i64_sat(rne(s as f32 / nf)).clamp(0, 255) as u8)
        .collect())
}

/// Softmax of a contiguous tensor along `dim`, quantized to `out`: per line,
/// `v` the dequantized values (§2), `m = max v`, `e_j = exp(v_j − m)` and
/// `y_j = f32(e_j / Σ e)` in f64 (the sum in index order), then quantize.
pub fn softmax(x: &QTensor<u8>, dim: usize, out: OutQ) -> Result<Vec<u8>> {
    let (s, z) = x.q_per_tensor().expect("validated");
    let shape = x.shape();
    let len = shape[dim];
    let inner: usize = shape[dim + 1..].iter().product();
    let outer: usize = shape[..dim].iter().product();
    let xd = x.int_repr();
    let inv = inv_scale(out.scale);
    let mut y = vec![0u8; xd.len()];
    let mut e = vec![0f64; len];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            let v = |j: usize| dequantize_val(s as f32, z, xd[at(j)] as i64) as f64;
            let m = (0..len).map(v).fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0f64;
            for (j, ej) in e.iter_mut().enumerate() {
                *ej = exp_f64(v(j) - m);
                sum += *ej;
            }
            for (j, &ej) in e.iter().enumerate() {
                y[at(j)] = quantize_val::<u8>(inv, out.zero_point, (ej / sum) as f32);
            }
        }
    }
    Ok(y)
}
