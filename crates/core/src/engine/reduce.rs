//! Front end of the reductions and products: mean over dimensions, softmax
//! along one, and quantized matmul.

use super::backend::Checked;
use super::checks::*;
use super::{out_q, Engine};
use crate::error::{QuantError, Result};
use crate::portable::MatmulGeometry;
use crate::quant::normalize_axis;
use crate::tensor::{check_zero_point, MemoryFormat, QTensor};
use crate::QType;

/// Broadcast two batch shapes (right-aligned, each dimension 1 or equal).
fn broadcast_batch(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        let pad = n - s.len();
        if i < pad {
            1
        } else {
            s[i - pad]
        }
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// For each element of `batch` (row-major), the row-major index into a
/// right-aligned operand batch shape `s` that broadcasts to it.
fn batch_index(batch: &[usize], s: &[usize]) -> Vec<usize> {
    let total: usize = batch.iter().product();
    let pad = batch.len() - s.len();
    (0..total)
        .map(|mut flat| {
            let (mut idx, mut stride) = (0, 1);
            for d in (0..batch.len()).rev() {
                let coord = flat % batch[d];
                flat /= batch[d];
                if d >= pad {
                    let sd = s[d - pad];
                    if sd != 1 {
                        idx += coord * stride;
                    }
                    stride *= sd;
                }
            }
            idx
        })
        .collect()
}

fn matmul_geometry(a: &[usize], b: &[usize]) -> Result<MatmulGeometry> {
    const OP: &str = "matmul";
    if a.len() < 2 || b.len() < 2 {
        return Err(QuantError::shape(
            OP,
            format!("a {a:?} and b {b:?} must both have at least 2 dimensions"),
        ));
    }
    let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
    let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
    if k != k2 {
        return Err(QuantError::shape(
            OP,
            format!("a {a:?} has {k} columns but b {b:?} has {k2} rows"),
        ));
    }
    let (ab, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
    let batch = broadcast_batch(ab, bb).ok_or_else(|| {
        QuantError::shape(
            OP,
            format!("batch dimensions of a {a:?} and b {b:?} do not broadcast"),
        )
    })?;
    Ok(MatmulGeometry {
        a_batch: batch_index(&batch, ab),
        b_batch: batch_index(&batch, bb),
        batch,
        m,
        k,
        n,
    })
}

impl Engine {
    /// Quantized mean over `dims` (`torch.mean(x, dim, keepdim)` on a quint8
    /// tensor; negative dims count from the end, an empty list reduces every
    /// dimension): `rne(f32(Σq) / f32(n))`, the output keeping the input's
    /// qparams. A 4-D channels-last input with `keepdim` gives a
    /// channels-last output.
    pub fn mean(&self, x: &QTensor<u8>, dims: &[i64], keepdim: bool) -> Result<QTensor<u8>> {
        const OP: &str = "mean";
        let (s, z) = per_tensor_q(OP, x)?;
        check_nonempty(OP, x.shape())?;
        let nd = x.ndim();
        let mut reduce = vec![dims.is_empty(); nd];
        for &d in dims {
            let a = normalize_axis(OP, d, nd)?;
            if reduce[a] {
                return Err(QuantError::invalid(
                    OP,
                    format!("dim {a} appears more than once in {dims:?}"),
                ));
            }
            reduce[a] = true;
        }
        let xc;
        let xin = if x.memory_format() == MemoryFormat::Contiguous {
            x
        } else {
            xc = x.to_format(MemoryFormat::Contiguous);
            &xc
        };
        let data = self.b.mean(xin, &reduce, Checked::new())?;
        let shape: Vec<usize> = x
            .shape()
            .iter()
            .zip(&reduce)
            .filter_map(|(&d, &r)| match (r, keepdim) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        let y = QTensor::new_per_tensor_unchecked(shape, data, s, z);
        Ok(if keepdim {
            y.into_format(x.memory_format())
        } else {
            y
        })
    }

    /// Quantized softmax along `dim` (`torch.ops.quantized.softmax`), to the
    /// given output qparams; the output keeps the input's memory format.
    pub fn softmax(
        &self,
        x: &QTensor<u8>,
        dim: i64,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "softmax";
        per_tensor_q(OP, x)?;
        let out = out_q(OP, out_scale, out_zero_point)?;
        check_nonempty(OP, x.shape())?;
        let dim = normalize_axis(OP, dim, x.ndim())?;
        let xc;
        let xin = if x.memory_format() == MemoryFormat::Contiguous {
            x
        } else {
            xc = x.to_format(MemoryFormat::Contiguous);
            &xc
        };
        let data = self.b.softmax(xin, dim, out, Checked::new())?;
        let y =
            QTensor::new_per_tensor_unchecked(x.shape().to_vec(), data, out_scale, out_zero_point);
        Ok(y.into_format(x.memory_format()))
    }

    /// Quantized matmul (`torch.ops.quantized.matmul`) of two quint8 or two
    /// qint8 tensors `[.., M, K] × [.., K, N]` (batch dimensions broadcast),
    /// quantized to the output qparams in the operands' dtype.
    pub fn matmul<T: QType>(
        &self,
        a: &QTensor<T>,
        b: &QTensor<T>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<T>> {
        const OP: &str = "matmul";
        per_tensor_q(OP, a)?;
        per_tensor_q(OP, b)?;
        crate::tensor::check_scale(OP, out_scale)?;
        check_zero_point(OP, out_zero_point, T::DTYPE)?;
        let out = crate::ops::OutQ {
            scale: out_scale,
            zero_point: out_zero_point,
        };
        let g = matmul_geometry(a.shape(), b.shape())?;
        check_nonempty(OP, a.shape())?;
        check_nonempty(OP, b.shape())?;
        let (a, b) = (a.clone().contiguous(), b.clone().contiguous());
        let data: Vec<T> = match T::DTYPE {
            crate::QDType::QUInt8 => {
                let (a, b) = (cast::<T, u8>(&a), cast::<T, u8>(&b));
                let y = self.b.matmul_u8(&a, &b, &g, out, Checked::new())?;
                bytemuck::cast_slice::<_, T>(&y).to_vec()
            }
            crate::QDType::QInt8 => {
                let (a, b) = (cast::<T, i8>(&a), cast::<T, i8>(&b));
                let y = self.b.matmul_i8(&a, &b, &g, out, Checked::new())?;
                bytemuck::cast_slice::<_, T>(&y).to_vec()
            }
            crate::QDType::QInt32 => {
                return Err(QuantError::Unsupported {
                    op: OP,
                    detail: "qint32 operands (quint8 or qint8 only)".into(),
                })
            }
        };
        Ok(QTensor::new_per_tensor_unchecked(
            g.out_shape(),
            data,
            out_scale,
            out_zero_point,
        ))
    }
}

/// The same tensor viewed with storage type `U` (same dtype, checked by the caller).
fn cast<T: QType, U: QType>(x: &QTensor<T>) -> QTensor<U> {
    debug_assert_eq!(T::DTYPE, U::DTYPE);
    let (s, z) = x.q_per_tensor().expect("validated");
    QTensor::new_per_tensor_unchecked(
        x.shape().to_vec(),
        bytemuck::cast_slice(x.int_repr()).to_vec(),
        s,
        z,
    )
}
