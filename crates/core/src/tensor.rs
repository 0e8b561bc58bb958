//! Float and quantized tensors. They are distinct types, so a float tensor
//! cannot reach a quantized kernel (PyTorch's "Could not run 'quantized::…'
//! with arguments from the 'CPU' backend" becomes a compile error).

use crate::dtype::{QDType, QType};
use crate::error::{QuantError, Result};

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// A dense, row-major f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// A tensor from a shape and row-major data; errors if the lengths disagree.
    pub fn new(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Result<Self> {
        let shape = shape.into();
        if numel(&shape) != data.len() {
            return Err(QuantError::InvalidShape {
                op: "Tensor::new",
                shape,
                detail: format!("holds {} elements of data", data.len()),
            });
        }
        Ok(Tensor { shape, data })
    }
    pub fn zeros(shape: impl Into<Vec<usize>>) -> Self {
        let shape = shape.into();
        let n = numel(&shape);
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }
    /// Same data under another shape with the same number of elements.
    pub fn reshape(self, shape: impl Into<Vec<usize>>) -> Result<Self> {
        Tensor::new(shape, self.data)
    }
}

/// How a quantized tensor maps integers to reals (`torch.qscheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QScheme {
    PerTensorAffine,
    PerTensorSymmetric,
    PerChannelAffine,
    PerChannelSymmetric,
    /// Per-channel with float zero points (embeddings): `q = rne(x/scale + zp)`.
    PerChannelAffineFloatQParams,
}

impl QScheme {
    pub fn is_per_channel(self) -> bool {
        matches!(
            self,
            QScheme::PerChannelAffine
                | QScheme::PerChannelSymmetric
                | QScheme::PerChannelAffineFloatQParams
        )
    }
    pub fn is_symmetric(self) -> bool {
        matches!(
            self,
            QScheme::PerTensorSymmetric | QScheme::PerChannelSymmetric
        )
    }
    pub fn name(self) -> &'static str {
        match self {
            QScheme::PerTensorAffine => "per_tensor_affine",
            QScheme::PerTensorSymmetric => "per_tensor_symmetric",
            QScheme::PerChannelAffine => "per_channel_affine",
            QScheme::PerChannelSymmetric => "per_channel_symmetric",
            QScheme::PerChannelAffineFloatQParams => "per_channel_affine_float_qparams",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s.trim_start_matches("torch.") {
            "per_tensor_affine" => QScheme::PerTensorAffine,
            "per_tensor_symmetric" => QScheme::PerTensorSymmetric,
            "per_channel_affine" => QScheme::PerChannelAffine,
            "per_channel_symmetric" => QScheme::PerChannelSymmetric,
            "per_channel_affine_float_qparams" => QScheme::PerChannelAffineFloatQParams,
            _ => return None,
        })
    }
}

/// Quantization parameters of a tensor. Scales are kept in f64 and zero points
/// in i64, as PyTorch stores them; kernels cast scales to f32 where PyTorch does.
#[derive(Debug, Clone, PartialEq)]
pub enum QParams {
    PerTensor {
        scale: f64,
        zero_point: i64,
    },
    PerChannel {
        scales: Vec<f64>,
        zero_points: Vec<i64>,
        axis: usize,
    },
    /// Per-channel with float zero points (`per_channel_affine_float_qparams`).
    PerChannelFloat {
        scales: Vec<f32>,
        zero_points: Vec<f32>,
        axis: usize,
    },
}

impl QParams {
    pub fn per_tensor(scale: f64, zero_point: i64) -> Self {
        QParams::PerTensor { scale, zero_point }
    }
    /// (scale, zero point) of a per-tensor qparams, None when per-channel.
    pub fn as_per_tensor(&self) -> Option<(f64, i64)> {
        match *self {
            QParams::PerTensor { scale, zero_point } => Some((scale, zero_point)),
            _ => None,
        }
    }
    pub fn is_per_channel(&self) -> bool {
        !matches!(self, QParams::PerTensor { .. })
    }
    /// Scale and zero point for channel `c` (per-tensor: the same for every c).
    pub fn channel(&self, c: usize) -> (f64, i64) {
        match self {
            QParams::PerTensor { scale, zero_point } => (*scale, *zero_point),
            QParams::PerChannel {
                scales,
                zero_points,
                ..
            } => (scales[c], zero_points[c]),
            QParams::PerChannelFloat { scales, .. } => (scales[c] as f64, 0),
        }
    }
    /// Check every scale and zero point for `dtype` on a tensor of `shape`.
    pub fn validate(&self, op: &'static str, dtype: QDType, shape: &[usize]) -> Result<()> {
        match self {
            QParams::PerTensor { scale, zero_point } => {
                check_scale(op, *scale)?;
                check_zero_point(op, *zero_point, dtype)
            }
            QParams::PerChannel {
                scales,
                zero_points,
                axis,
            } => {
                let c = channel_dim(op, shape, *axis)?;
                check_len(op, "scales", c, scales.len())?;
                check_len(op, "zero_points", c, zero_points.len())?;
                for &s in scales {
                    check_scale(op, s)?;
                }
                for &z in zero_points {
                    check_zero_point(op, z, dtype)?;
                }
                Ok(())
            }
            QParams::PerChannelFloat {
                scales,
                zero_points,
                axis,
            } => {
                let c = channel_dim(op, shape, *axis)?;
                check_len(op, "scales", c, scales.len())?;
                check_len(op, "zero_points", c, zero_points.len())?;
                for &s in scales {
                    check_scale(op, s as f64)?;
                }
                for &z in zero_points {
                    if !z.is_finite() {
                        return Err(QuantError::invalid(
                            op,
                            format!("zero point {z} is not finite"),
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

fn channel_dim(op: &'static str, shape: &[usize], axis: usize) -> Result<usize> {
    shape.get(axis).copied().ok_or(QuantError::AxisOutOfRange {
        op,
        axis: axis as i64,
        ndim: shape.len(),
    })
}

pub(crate) fn check_len(
    op: &'static str,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<()> {
    if expected != got {
        return Err(QuantError::ChannelCount {
            op,
            what,
            expected,
            got,
        });
    }
    Ok(())
}

/// A scale must be finite and strictly positive.
pub fn check_scale(op: &'static str, scale: f64) -> Result<()> {
    // Also reject scales that vanish or overflow as f32, since kernels use f32.
    let s32 = scale as f32;
    if !(scale.is_finite() && scale > 0.0 && s32 > 0.0 && s32.is_finite()) {
        return Err(QuantError::InvalidScale { op, scale });
    }
    Ok(())
}

/// A zero point must lie inside the dtype's range.
pub fn check_zero_point(op: &'static str, zero_point: i64, dtype: QDType) -> Result<()> {
    if zero_point < dtype.min() || zero_point > dtype.max() {
        return Err(QuantError::ZeroPointOutOfRange {
            op,
            zero_point,
            dtype,
            min: dtype.min(),
            max: dtype.max(),
        });
    }
    Ok(())
}

/// How a 4-D tensor's elements are laid out in memory, as PyTorch's
/// `torch.memory_format`. The shape is always the logical NCHW one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MemoryFormat {
    /// Row-major in the logical shape (NCHW for 4-D).
    #[default]
    Contiguous,
    /// `torch.channels_last`: a 4-D NCHW tensor stored as NHWC, so the
    /// channels of one pixel are adjacent (what int8 convolutions want).
    ChannelsLast,
}

impl MemoryFormat {
    pub fn name(self) -> &'static str {
        match self {
            MemoryFormat::Contiguous => "contiguous",
            MemoryFormat::ChannelsLast => "channels_last",
        }
    }
}

/// Permute one `[n][c][plane]` block of `T`s to `[n][plane][c]` (NCHW → NHWC).
pub fn nchw_to_nhwc<T: Copy>(src: &[T], n: usize, c: usize, plane: usize, dst: &mut [T]) {
    for b in 0..n {
        transpose_blocked(
            &src[b * c * plane..][..c * plane],
            c,
            plane,
            &mut dst[b * c * plane..][..c * plane],
        );
    }
}

/// Permute `[n][plane][c]` back to `[n][c][plane]` (NHWC → NCHW).
pub fn nhwc_to_nchw<T: Copy>(src: &[T], n: usize, c: usize, plane: usize, dst: &mut [T]) {
    for b in 0..n {
        transpose_blocked(
            &src[b * c * plane..][..c * plane],
            plane,
            c,
            &mut dst[b * c * plane..][..c * plane],
        );
    }
}

/// `dst[j·rows + i] = src[i·cols + j]`, in 32×32 blocks so that both the
/// reads and the strided writes stay within a few cache lines per block
/// (the plain double loop ran at half the speed on 144 × 56² bytes).
fn transpose_blocked<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    // A few rows (an RGB image's planes to pixels): one pass over the
    // columns with the row count known to the compiler, which interleaves
    // with vector shuffles (the blocked loop stored one byte at a time:
    // 1.2 ms of ResNet-18's 59 ms batch of 8 went to its input's 3 planes).
    match rows {
        1 => return dst[..cols].copy_from_slice(&src[..cols]),
        2 => return interleave::<T, 2>(src, cols, dst),
        3 => return interleave::<T, 3>(src, cols, dst),
        4 => return interleave::<T, 4>(src, cols, dst),
        _ => {}
    }
    const B: usize = 32;
    for i0 in (0..rows).step_by(B) {
        for j0 in (0..cols).step_by(B) {
            for i in i0..(i0 + B).min(rows) {
                let row = &src[i * cols..][..cols];
                for j in j0..(j0 + B).min(cols) {
                    dst[j * rows + i] = row[j];
                }
            }
        }
    }
}

/// [`transpose_blocked`] for `R` rows: `dst[j·R + i] = src[i·cols + j]`.
fn interleave<T: Copy, const R: usize>(src: &[T], cols: usize, dst: &mut [T]) {
    let planes: [&[T]; R] = std::array::from_fn(|i| &src[i * cols..][..cols]);
    for (j, px) in dst[..R * cols].chunks_exact_mut(R).enumerate() {
        for (i, v) in px.iter_mut().enumerate() {
            *v = planes[i][j];
        }
    }
}

/// A quantized tensor: integer storage `T` (u8, i8 or i32) plus its qparams.
/// A 4-D tensor may be stored channels-last ([`MemoryFormat`]); its shape is
/// still the logical NCHW one, and [`QTensor::int_repr`] is the storage.
#[derive(Debug, Clone, PartialEq)]
pub struct QTensor<T: QType> {
    shape: Vec<usize>,
    data: Vec<T>,
    qparams: QParams,
    qscheme: QScheme,
    format: MemoryFormat,
}

impl<T: QType> QTensor<T> {
    /// A quantized tensor from its integer representation; validates the
    /// shape, the scales and the zero points.
    pub fn from_int_repr(
        shape: impl Into<Vec<usize>>,
        data: Vec<T>,
        qparams: QParams,
    ) -> Result<Self> {
        let shape = shape.into();
        let scheme = match &qparams {
            QParams::PerTensor { .. } => QScheme::PerTensorAffine,
            QParams::PerChannel { .. } => QScheme::PerChannelAffine,
            QParams::PerChannelFloat { .. } => QScheme::PerChannelAffineFloatQParams,
        };
        Self::with_qscheme(shape, data, qparams, scheme)
    }

    /// As [`QTensor::from_int_repr`], recording a symmetric qscheme when asked.
    pub fn with_qscheme(
        shape: impl Into<Vec<usize>>,
        data: Vec<T>,
        qparams: QParams,
        qscheme: QScheme,
    ) -> Result<Self> {
        let shape = shape.into();
        const OP: &str = "QTensor::from_int_repr";
        if numel(&shape) != data.len() {
            return Err(QuantError::InvalidShape {
                op: OP,
                shape,
                detail: format!("holds {} elements of data", data.len()),
            });
        }
        qparams.validate(OP, T::DTYPE, &shape)?;
        if qscheme.is_per_channel() != qparams.is_per_channel() {
            return Err(QuantError::invalid(
                OP,
                format!("qscheme {} does not match the qparams", qscheme.name()),
            ));
        }
        Ok(QTensor {
            shape,
            data,
            qparams,
            qscheme,
            format: MemoryFormat::Contiguous,
        })
    }

    /// A 4-D tensor of logical shape NCHW from data stored NHWC
    /// (channels-last); validates like [`QTensor::from_int_repr`].
    pub fn from_int_repr_channels_last(
        shape: impl Into<Vec<usize>>,
        data: Vec<T>,
        qparams: QParams,
    ) -> Result<Self> {
        let shape = shape.into();
        if shape.len() != 4 {
            return Err(QuantError::InvalidShape {
                op: "QTensor::from_int_repr_channels_last",
                shape,
                detail: "channels-last needs 4 dimensions (NCHW)".into(),
            });
        }
        let mut t = Self::from_int_repr(shape, data, qparams)?;
        t.format = MemoryFormat::ChannelsLast;
        Ok(t)
    }

    /// Internal constructor for already-validated parts.
    pub(crate) fn from_parts_unchecked(
        shape: Vec<usize>,
        data: Vec<T>,
        qparams: QParams,
        qscheme: QScheme,
    ) -> Self {
        debug_assert_eq!(numel(&shape), data.len());
        QTensor {
            shape,
            data,
            qparams,
            qscheme,
            format: MemoryFormat::Contiguous,
        }
    }

    /// A per-tensor tensor whose data and parameters were validated by the
    /// caller (engines producing outputs of validated ops).
    pub fn new_per_tensor_unchecked(
        shape: Vec<usize>,
        data: Vec<T>,
        scale: f64,
        zero_point: i64,
    ) -> Self {
        Self::from_parts_unchecked(
            shape,
            data,
            QParams::PerTensor { scale, zero_point },
            QScheme::PerTensorAffine,
        )
    }

    /// A per-tensor tensor in `format` whose data (in that format's order)
    /// and parameters were validated by the caller.
    pub fn new_per_tensor_unchecked_in(
        shape: Vec<usize>,
        data: Vec<T>,
        scale: f64,
        zero_point: i64,
        format: MemoryFormat,
    ) -> Self {
        debug_assert!(format == MemoryFormat::Contiguous || shape.len() == 4);
        let mut t = Self::new_per_tensor_unchecked(shape, data, scale, zero_point);
        t.format = format;
        t
    }

    /// The logical shape (NCHW for 4-D tensors in either format).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    /// How the storage is laid out.
    pub fn memory_format(&self) -> MemoryFormat {
        self.format
    }
    /// Shape in storage order: NHWC for a channels-last tensor.
    pub fn storage_shape(&self) -> Vec<usize> {
        match (self.format, self.shape.as_slice()) {
            (MemoryFormat::ChannelsLast, &[n, c, h, w]) => vec![n, h, w, c],
            _ => self.shape.clone(),
        }
    }
    /// The same tensor stored in `format` (a copy when the format changes;
    /// only 4-D tensors can be channels-last, others are returned as they are).
    pub fn to_format(&self, format: MemoryFormat) -> Self {
        let &[n, c, h, w] = self.shape.as_slice() else {
            return self.clone();
        };
        if format == self.format || h * w == 1 || c == 1 {
            // The same bytes in either order: only the label changes.
            return QTensor {
                data: self.data.clone(),
                format,
                ..self.clone_meta()
            };
        }
        let mut data = self.data.clone();
        match format {
            MemoryFormat::ChannelsLast => nchw_to_nhwc(&self.data, n, c, h * w, &mut data),
            MemoryFormat::Contiguous => nhwc_to_nchw(&self.data, n, c, h * w, &mut data),
        }
        QTensor {
            data,
            format,
            ..self.clone_meta()
        }
    }
    /// [`QTensor::to_format`] consuming `self` (no copy when the format is already right).
    pub fn into_format(mut self, format: MemoryFormat) -> Self {
        match self.shape.as_slice() {
            &[_, c, h, w] if format != self.format => {
                if c == 1 || h * w == 1 {
                    self.format = format; // the same bytes in either order
                    self
                } else {
                    self.to_format(format)
                }
            }
            _ => self,
        }
    }
    /// The tensor stored row-major in its logical shape.
    pub fn contiguous(self) -> Self {
        self.into_format(MemoryFormat::Contiguous)
    }
    fn clone_meta(&self) -> Self {
        QTensor {
            shape: self.shape.clone(),
            data: Vec::new(),
            qparams: self.qparams.clone(),
            qscheme: self.qscheme,
            format: self.format,
        }
    }
    /// The integer representation in storage order (NHWC for a
    /// channels-last tensor), without a copy.
    pub fn int_repr(&self) -> &[T] {
        &self.data
    }
    pub fn into_int_repr(self) -> Vec<T> {
        self.data
    }
    pub fn qparams(&self) -> &QParams {
        &self.qparams
    }
    pub fn qscheme(&self) -> QScheme {
        self.qscheme
    }
    pub fn dtype(&self) -> QDType {
        T::DTYPE
    }
    /// (scale, zero point) when per-tensor.
    pub fn q_per_tensor(&self) -> Option<(f64, i64)> {
        self.qparams.as_per_tensor()
    }
    /// Same data and qparams under another shape (per-tensor only, since a
    /// reshape moves the channel axis of a per-channel tensor). A channels-last
    /// tensor is made contiguous first, so the logical order is kept.
    pub fn reshape(self, shape: impl Into<Vec<usize>>) -> Result<Self> {
        let shape = shape.into();
        let t = self.contiguous();
        if numel(&shape) != t.data.len() || t.qparams.is_per_channel() {
            return Err(QuantError::InvalidShape {
                op: "QTensor::reshape",
                shape,
                detail: format!("cannot view {:?} ({}) this way", t.shape, t.qscheme.name()),
            });
        }
        Ok(QTensor {
            shape,
            format: MemoryFormat::Contiguous,
            ..t
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked transpose and its few-row interleave equal the
    /// definition, and NCHW → NHWC → NCHW is the identity.
    #[test]
    fn transposes_match_the_definition() {
        for rows in [1, 2, 3, 4, 5, 33] {
            for cols in [1, 7, 32, 45] {
                let src: Vec<u16> = (0..rows * cols).map(|v| v as u16 * 3 + 1).collect();
                let mut dst = vec![0u16; rows * cols];
                transpose_blocked(&src, rows, cols, &mut dst);
                for i in 0..rows {
                    for j in 0..cols {
                        assert_eq!(
                            dst[j * rows + i],
                            src[i * cols + j],
                            "{rows}x{cols} ({i},{j})"
                        );
                    }
                }
                let mut back = vec![0u16; rows * cols];
                nchw_to_nhwc(&src, 1, rows, cols, &mut dst);
                nhwc_to_nchw(&dst, 1, rows, cols, &mut back);
                assert_eq!(back, src, "{rows}x{cols}");
            }
        }
    }
}
