//! Op parameters and the geometry that validation derives from them, shared
//! by every engine so that every engine computes the same output shapes.

use crate::error::{QuantError, Result};

/// Parameters of a 2-D convolution (NCHW at the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

/// Everything a conv kernel needs to know, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub params: Conv2dParams,
}

impl ConvGeometry {
    pub fn c_per_group(&self) -> usize {
        self.c / self.params.groups
    }
    pub fn o_per_group(&self) -> usize {
        self.o / self.params.groups
    }
    pub fn out_shape(&self) -> Vec<usize> {
        vec![self.n, self.o, self.oh, self.ow]
    }
}

/// Output length of a convolution along one dimension, or None if the
/// (dilated) kernel does not fit in the padded input.
pub fn conv_out_len(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    let padded = input.checked_add(pad.checked_mul(2)?)?;
    if padded < span || stride == 0 {
        return None;
    }
    Some((padded - span) / stride + 1)
}

/// Parameters of max pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaxPool2dParams {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub ceil_mode: bool,
}

/// Parameters of average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AvgPool2dParams {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub ceil_mode: bool,
    pub count_include_pad: bool,
    pub divisor_override: Option<usize>,
}

/// PyTorch's `pooling_output_shape`: floor or ceil mode, where in ceil mode the
/// last window must start inside the input or the left padding.
pub fn pool_out_len(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return None;
    }
    let num = input as i64 + 2 * pad as i64 - dilation as i64 * (kernel as i64 - 1) - 1
        + if ceil_mode { stride as i64 - 1 } else { 0 };
    if num < 0 {
        return None;
    }
    let mut out = num / stride as i64 + 1;
    if ceil_mode && (out - 1) * stride as i64 >= input as i64 + pad as i64 {
        out -= 1;
    }
    if out < 1 {
        None
    } else {
        Some(out as usize)
    }
}

/// Validated 4-D pooling geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

impl PoolGeometry {
    pub fn out_shape(&self) -> Vec<usize> {
        vec![self.n, self.c, self.oh, self.ow]
    }
}

/// Start (inclusive) and end (exclusive) of adaptive-pooling window `o`:
/// `[floor(o·in/out), ceil((o+1)·in/out))`.
pub fn adaptive_window(o: usize, input: usize, output: usize) -> (usize, usize) {
    let start = (o * input) / output;
    let end = ((o + 1) * input).div_ceil(output);
    (start, end)
}

/// Element-wise binary ops on quantized tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    AddRelu,
    Mul,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::AddRelu => "add_relu",
            BinaryOp::Mul => "mul",
        }
    }
}

/// Output qparams of an op: per-tensor quint8.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutQ {
    pub scale: f64,
    pub zero_point: i64,
}

pub(crate) fn nonzero(op: &'static str, what: &str, v: &[usize]) -> Result<()> {
    if v.contains(&0) {
        return Err(QuantError::invalid(
            op,
            format!("{what} {v:?} must be positive"),
        ));
    }
    Ok(())
}
