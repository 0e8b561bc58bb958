//! Quantized matmul (`torch.ops.quantized.matmul`; docs/numerics.md §16):
//! exact integer products, one rounding to f32, then quantize.

use crate::numerics::{inv_scale, quantize_val};
use crate::ops::OutQ;
use crate::{QTensor, QType, Result};

/// Validated geometry of a batched matmul `[batch.., m, k] × [batch.., k, n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatmulGeometry {
    /// The broadcast batch shape of the output.
    pub batch: Vec<usize>,
    /// For each output batch (row-major over `batch`), the batch index into `a` and `b`.
    pub a_batch: Vec<usize>,
    pub b_batch: Vec<usize>,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

impl MatmulGeometry {
    pub fn out_shape(&self) -> Vec<usize> {
        let mut s = self.batch.clone();
        s.extend([self.m, self.n]);
        s
    }
}

/// `y[.., i, j] = quantize(f32(f64(acc) · (f64(f32(a_scale)) · f64(f32(b_scale)))))`
/// with `acc = Σ_k (a[i,k] − a_zp)(b[k,j] − b_zp)` exact in i64, quantized
/// to `out` in `T` (a's dtype). Where PyTorch's dequantize → float matmul is
/// exact (every dequantized value, product and partial sum representable),
/// this is its result.
pub fn matmul<T: QType>(
    a: &QTensor<T>,
    b: &QTensor<T>,
    g: &MatmulGeometry,
    out: OutQ,
) -> Result<Vec<T>> {
    let (sa, za) = a.q_per_tensor().expect("validated");
    let (sb, zb) = b.q_per_tensor().expect("validated");
    let scale = (sa as f32 as f64) * (sb as f32 as f64);
    let inv = inv_scale(out.scale);
    let (ad, bd) = (a.int_repr(), b.int_repr());
    let (m, k, n) = (g.m, g.k, g.n);
    let mut y = Vec::with_capacity(g.a_batch.len() * m * n);
    for (&ab, &bb) in g.a_batch.iter().zip(&g.b_batch) {
        let am = &ad[ab * m * k..][..m * k];
        let bm = &bd[bb * k * n..][..k * n];
        for i in 0..m {
            for j in 0..n {
                let acc: i64 = (0..k)
                    .map(|l| (am[i * k + l].to_i64() - za) * (bm[l * n + j].to_i64() - zb))
                    .sum();
                let v = (acc as f64 * scale) as f32;
                y.push(quantize_val::<T>(inv, out.zero_point, v));
            }
        }
    }
    Ok(y)
}
