//! Front end of the row-wise quantized embedding bags.

use super::backend::Checked;
use super::Engine;
use crate::error::{QuantError, Result};
use crate::params::EmbeddingBagMode;
use crate::portable::{Bags, EmbeddingBagTable};
use crate::tensor::Tensor;

/// The bags of `offsets` over `n` indices (PyTorch's `offsets` /
/// `include_last_offset`), validated as fbgemm does: starting at 0,
/// non-decreasing, covering every index.
fn bags<'a>(
    op: &'static str,
    indices: &'a [i64],
    offsets: &[i64],
    include_last_offset: bool,
    rows: usize,
) -> Result<Bags<'a>> {
    let n = indices.len();
    if let Some(p) = indices
        .iter()
        .position(|&i| i < 0 || i as u64 >= rows as u64)
    {
        return Err(QuantError::invalid(
            op,
            format!(
                "indices[{p}] = {} is outside the table's {rows} rows",
                indices[p]
            ),
        ));
    }
    let mut bounds: Vec<i64> = offsets.to_vec();
    if !include_last_offset {
        bounds.push(n as i64);
    }
    if bounds.len() < 2 {
        return Err(QuantError::EmptyTensor { op, shape: vec![0] });
    }
    if bounds[0] != 0 {
        return Err(QuantError::invalid(
            op,
            format!("offsets must start at 0, got {}", bounds[0]),
        ));
    }
    if let Some(b) = bounds.windows(2).position(|w| w[1] < w[0]) {
        return Err(QuantError::invalid(
            op,
            format!("offsets {offsets:?} decrease at bag {b}"),
        ));
    }
    let last = *bounds.last().expect("non-empty");
    if last != n as i64 {
        return Err(QuantError::invalid(
            op,
            format!("offsets {offsets:?} end at {last}, not at the {n} indices"),
        ));
    }
    Ok(Bags {
        indices,
        starts: bounds[..bounds.len() - 1]
            .iter()
            .map(|&v| v as usize)
            .collect(),
        ends: bounds[1..].iter().map(|&v| v as usize).collect(),
    })
}

impl Engine {
    #[allow(clippy::too_many_arguments)] // private: the two public ops name their arguments
    fn embedding_bag_op(
        &self,
        op: &'static str,
        bits: u8,
        table: &EmbeddingBagTable,
        indices: &[i64],
        offsets: &[i64],
        per_sample_weights: Option<&[f32]>,
        include_last_offset: bool,
    ) -> Result<Tensor> {
        if table.bits() != bits {
            return Err(QuantError::invalid(
                op,
                format!("the table holds {}-bit codes, not {bits}-bit", table.bits()),
            ));
        }
        let b = bags(op, indices, offsets, include_last_offset, table.rows())?;
        if let Some(w) = per_sample_weights {
            if w.len() != indices.len() {
                return Err(QuantError::ChannelCount {
                    op,
                    what: "per_sample_weights",
                    expected: indices.len(),
                    got: w.len(),
                });
            }
            super::checks::check_finite(op, "per_sample_weights", w)?;
        }
        let data = self.b.embedding_bag(
            table,
            &b,
            per_sample_weights,
            EmbeddingBagMode::Sum,
            Checked::new(),
        )?;
        Tensor::new([b.starts.len(), table.dim()], data)
    }

    /// `torch.ops.quantized.embedding_bag_byte_rowwise_offsets` (mode sum):
    /// the sum of each bag's dequantized rows, optionally weighted per index.
    pub fn embedding_bag_byte(
        &self,
        table: &EmbeddingBagTable,
        indices: &[i64],
        offsets: &[i64],
        per_sample_weights: Option<&[f32]>,
        include_last_offset: bool,
    ) -> Result<Tensor> {
        self.embedding_bag_op(
            "embedding_bag_byte",
            8,
            table,
            indices,
            offsets,
            per_sample_weights,
            include_last_offset,
        )
    }

    /// `torch.ops.quantized.embedding_bag_2bit_rowwise_offsets` (mode sum):
    /// §17's arithmetic on a 2-bit table.
    pub fn embedding_bag_2bit(
        &self,
        table: &EmbeddingBagTable,
        indices: &[i64],
        offsets: &[i64],
        per_sample_weights: Option<&[f32]>,
        include_last_offset: bool,
    ) -> Result<Tensor> {
        self.embedding_bag_op(
            "embedding_bag_2bit",
            2,
            table,
            indices,
            offsets,
            per_sample_weights,
            include_last_offset,
        )
    }

    /// `torch.ops.quantized.embedding_bag_4bit_rowwise_offsets` (mode sum).
    pub fn embedding_bag_4bit(
        &self,
        table: &EmbeddingBagTable,
        indices: &[i64],
        offsets: &[i64],
        per_sample_weights: Option<&[f32]>,
        include_last_offset: bool,
    ) -> Result<Tensor> {
        self.embedding_bag_op(
            "embedding_bag_4bit",
            4,
            table,
            indices,
            offsets,
            per_sample_weights,
            include_last_offset,
        )
    }
}
