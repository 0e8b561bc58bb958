//! Row-wise quantized embedding bags (`embedding_bag_byte_rowwise_offsets`,
//! `embedding_bag_4bit_rowwise_offsets`; docs/numerics.md §17): fbgemm's
//! accumulation order, f32 with a fused multiply-add per element.

use crate::params::EmbeddingBagMode;
use crate::Result;

/// A row-wise quantized embedding table: `rows × dim` codes (8-bit: 0..255;
/// 4-bit: 0..15, one per element) with a float scale and bias per row, the
/// dequantized value being `code · scale + bias`. 4-bit tables keep PyTorch's
/// f16 scales and biases (widened exactly to f32).
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingBagTable {
    pub(crate) bits: u8,
    pub(crate) rows: usize,
    pub(crate) dim: usize,
    pub(crate) codes: Vec<u8>,
    pub(crate) scales: Vec<f32>,
    pub(crate) biases: Vec<f32>,
}

impl EmbeddingBagTable {
    /// Bits per code: 8, 4 or 2.
    pub fn bits(&self) -> u8 {
        self.bits
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// The codes, row-major `[rows, dim]`.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }
    pub fn biases(&self) -> &[f32] {
        &self.biases
    }
}

/// The bags, validated: `indices` in range; bag `b` is
/// `indices[starts[b]..ends[b]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bags<'a> {
    pub indices: &'a [i64],
    pub starts: Vec<usize>,
    pub ends: Vec<usize>,
}

/// Per bag, from `acc = 0` and for each index `p` in order (row `r`, weight
/// `w_p`, 1 without per-sample weights): `s = f32(w_p·scale[r])`,
/// `t = f32(w_p·bias[r])`, `acc[d] = fma(s, f32(code[r,d]), f32(acc[d] + t))`.
/// Empty bags are 0. The result is `[bags, dim]` f32.
pub fn embedding_bag(
    t: &EmbeddingBagTable,
    bags: &Bags<'_>,
    per_sample_weights: Option<&[f32]>,
    mode: EmbeddingBagMode,
) -> Result<Vec<f32>> {
    let EmbeddingBagMode::Sum = mode;
    let d = t.dim;
    let mut y = vec![0f32; bags.starts.len() * d];
    for (b, acc) in y
        .chunks_exact_mut(d.max(1))
        .enumerate()
        .take(bags.starts.len())
    {
        for p in bags.starts[b]..bags.ends[b] {
            let r = bags.indices[p] as usize;
            let w = per_sample_weights.map_or(1.0, |v| v[p]);
            let s = w * t.scales[r];
            let bias = w * t.biases[r];
            for (a, &q) in acc.iter_mut().zip(&t.codes[r * d..][..d]) {
                *a = s.mul_add(q as f32, *a + bias);
            }
        }
    }
    Ok(y)
}

fn table_error(op: &'static str, detail: String) -> crate::QuantError {
    crate::QuantError::invalid(op, detail)
}

impl EmbeddingBagTable {
    /// An 8-bit table (`embedding_bag_byte_prepack`'s rows: `dim` codes, an
    /// f32 scale and an f32 bias per row), validated.
    pub fn byte(
        rows: usize,
        dim: usize,
        codes: Vec<u8>,
        scales: Vec<f32>,
        biases: Vec<f32>,
    ) -> Result<Self> {
        Self::new("embedding_bag_byte", 8, rows, dim, codes, scales, biases)
    }

    /// A 4-bit table (`embedding_bag_4bit_prepack`: codes 0..15, `dim` even,
    /// an f16 scale and bias per row), validated.
    pub fn four_bit(
        rows: usize,
        dim: usize,
        codes: Vec<u8>,
        scales: &[half::f16],
        biases: &[half::f16],
    ) -> Result<Self> {
        const OP: &str = "embedding_bag_4bit";
        if !dim.is_multiple_of(2) {
            return Err(table_error(
                OP,
                format!("dim {dim} must be even (two codes per byte)"),
            ));
        }
        if let Some(i) = codes.iter().position(|&c| c > 15) {
            return Err(table_error(
                OP,
                format!("code[{i}] = {} exceeds 15", codes[i]),
            ));
        }
        let widen = |v: &[half::f16]| v.iter().map(|h| h.to_f32()).collect();
        Self::new(OP, 4, rows, dim, codes, widen(scales), widen(biases))
    }

    /// A 2-bit table (`embedding_bag_2bit_prepack`: codes 0..3, `dim` a
    /// multiple of 4, an f16 scale and bias per row), validated.
    pub fn two_bit(
        rows: usize,
        dim: usize,
        codes: Vec<u8>,
        scales: &[half::f16],
        biases: &[half::f16],
    ) -> Result<Self> {
        const OP: &str = "embedding_bag_2bit";
        if !dim.is_multiple_of(4) {
            return Err(table_error(
                OP,
                format!("dim {dim} must be a multiple of 4 (four codes per byte)"),
            ));
        }
        if let Some(i) = codes.iter().position(|&c| c > 3) {
            return Err(table_error(
                OP,
                format!("code[{i}] = {} exceeds 3", codes[i]),
            ));
        }
        let widen = |v: &[half::f16]| v.iter().map(|h| h.to_f32()).collect();
        Self::new(OP, 2, rows, dim, codes, widen(scales), widen(biases))
    }

    fn new(
        op: &'static str,
        bits: u8,
        rows: usize,
        dim: usize,
        codes: Vec<u8>,
        scales: Vec<f32>,
        biases: Vec<f32>,
    ) -> Result<Self> {
        if rows == 0 || dim == 0 {
            return Err(crate::QuantError::EmptyTensor {
                op,
                shape: vec![rows, dim],
            });
        }
        if codes.len() != rows * dim {
            return Err(crate::QuantError::InvalidShape {
                op,
                shape: vec![rows, dim],
                detail: format!("holds {} codes", codes.len()),
            });
        }
        for (what, v) in [("weight_scales", &scales), ("weight_biases", &biases)] {
            if v.len() != rows {
                return Err(crate::QuantError::ChannelCount {
                    op,
                    what,
                    expected: rows,
                    got: v.len(),
                });
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(table_error(
                    op,
                    format!("{what}[{i}] = {} is not finite", v[i]),
                ));
            }
        }
        Ok(EmbeddingBagTable {
            bits,
            rows,
            dim,
            codes,
            scales,
            biases,
        })
    }
}
