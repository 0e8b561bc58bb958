//! The argument checks of the front end: every engine rejects bad input with
//! the same error because only the front end checks.

use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::ops::*;
use crate::tensor::{check_scale, check_zero_point, numel, QParams, QTensor};

pub(super) fn check_nonempty(op: &'static str, shape: &[usize]) -> Result<()> {
    if numel(shape) == 0 {
        return Err(QuantError::EmptyTensor {
            op,
            shape: shape.to_vec(),
        });
    }
    Ok(())
}

pub(super) fn check_out(op: &'static str, out: OutQ) -> Result<()> {
    check_scale(op, out.scale)?;
    check_zero_point(op, out.zero_point, QDType::QUInt8)
}

pub(super) fn per_tensor_q<T: crate::QType>(
    op: &'static str,
    x: &QTensor<T>,
) -> Result<(f64, i64)> {
    x.q_per_tensor().ok_or_else(|| {
        QuantError::invalid(
            op,
            format!("activation must be per-tensor, got {}", x.qscheme().name()),
        )
    })
}

pub(super) fn check_finite(op: &'static str, what: &str, v: &[f32]) -> Result<()> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(QuantError::invalid(
            op,
            format!("{what}[{i}] = {} is not finite", v[i]),
        ));
    }
    Ok(())
}

pub(super) fn check_weight_qparams(op: &'static str, w: &QTensor<i8>) -> Result<()> {
    match w.qparams() {
        QParams::PerTensor { .. } => Ok(()),
        QParams::PerChannel { axis: 0, .. } => Ok(()),
        QParams::PerChannel { axis, .. } => Err(QuantError::invalid(
            op,
            format!("per-channel weight must use axis 0 (output channels), got axis {axis}"),
        )),
        QParams::PerChannelFloat { .. } => Err(QuantError::Unsupported {
            op,
            detail: "float zero points for weights".into(),
        }),
    }
}

pub(super) fn check_bias(op: &'static str, bias: Option<&[f32]>, n: usize) -> Result<()> {
    if let Some(b) = bias {
        if b.len() != n {
            return Err(QuantError::ChannelCount {
                op,
                what: "bias",
                expected: n,
                got: b.len(),
            });
        }
        check_finite(op, "bias", b)?;
    }
    Ok(())
}

/// Rows M of a `[..., K]` activation with the given K, validated.
pub(super) fn rows_for_k(op: &'static str, shape: &[usize], k: usize) -> Result<usize> {
    match shape.last() {
        Some(&last) if last == k => Ok(numel(&shape[..shape.len() - 1])),
        _ => Err(QuantError::shape(
            op,
            format!("input of shape {shape:?} does not end in in_features {k}"),
        )),
    }
}

pub(super) fn check_4d(op: &'static str, shape: &[usize]) -> Result<[usize; 4]> {
    match shape {
        [n, c, h, w] => Ok([*n, *c, *h, *w]),
        _ => Err(QuantError::InvalidShape {
            op,
            shape: shape.to_vec(),
            detail: "expected NCHW (4 dimensions)".into(),
        }),
    }
}

pub(super) fn pool_geometry(
    op: &'static str,
    shape: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> Result<PoolGeometry> {
    let [n, c, h, w] = check_4d(op, shape)?;
    check_nonempty(op, shape)?;
    nonzero(op, "kernel_size", &kernel)?;
    nonzero(op, "stride", &stride)?;
    nonzero(op, "dilation", &dilation)?;
    for d in 0..2 {
        if padding[d] * 2 > kernel[d] {
            return Err(QuantError::invalid(
                op,
                format!("padding {padding:?} must be at most half of kernel_size {kernel:?}"),
            ));
        }
    }
    let oh = pool_out_len(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode);
    let ow = pool_out_len(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode);
    match (oh, ow) {
        (Some(oh), Some(ow)) => Ok(PoolGeometry { n, c, h, w, oh, ow }),
        _ => Err(QuantError::shape(
            op,
            format!("kernel {kernel:?} (dilation {dilation:?}, padding {padding:?}) gives an empty output for input {h}x{w}"),
        )),
    }
}
