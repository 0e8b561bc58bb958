//! The one error type of rquant. Every variant names the op that failed and
//! the offending values, so a user can tell what to fix without a debugger.

use crate::dtype::QDType;

/// Result alias used throughout rquant.
pub type Result<T, E = QuantError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    #[error("{op}: invalid scale {scale} (must be finite and > 0)")]
    InvalidScale { op: &'static str, scale: f64 },

    #[error("{op}: zero point {zero_point} outside the range [{min}, {max}] of {dtype}")]
    ZeroPointOutOfRange {
        op: &'static str,
        zero_point: i64,
        dtype: QDType,
        min: i64,
        max: i64,
    },

    #[error("{op}: shape mismatch: {detail}")]
    ShapeMismatch { op: &'static str, detail: String },

    #[error("{op}: invalid shape {shape:?}: {detail}")]
    InvalidShape {
        op: &'static str,
        shape: Vec<usize>,
        detail: String,
    },

    #[error("{op}: empty tensor of shape {shape:?}")]
    EmptyTensor { op: &'static str, shape: Vec<usize> },

    #[error("{op}: axis {axis} out of range for a tensor with {ndim} dimensions")]
    AxisOutOfRange {
        op: &'static str,
        axis: i64,
        ndim: usize,
    },

    #[error("{op}: {what} has {got} entries, expected {expected}")]
    ChannelCount {
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    },

    #[error("{op}: dtype mismatch: expected {expected}, got {got}")]
    DTypeMismatch {
        op: &'static str,
        expected: String,
        got: String,
    },

    #[error("{op}: invalid argument: {detail}")]
    InvalidArgument { op: &'static str, detail: String },

    #[error("{op}: input holds NaN at index {index}")]
    NaN { op: &'static str, index: usize },

    #[error("{op}: not supported: {detail}")]
    Unsupported { op: &'static str, detail: String },

    #[error("engine {name:?} is not available on this machine (available: {available})")]
    EngineUnavailable { name: String, available: String },

    #[error("{op}: weights were packed for {packed_for}, not {engine} (repack them for this engine: Engine::repack_linear / repack_conv2d)")]
    WrongEngine {
        op: &'static str,
        /// Engine/ISA path the weights were packed for, e.g. `x86/avx2`.
        packed_for: String,
        /// Engine/ISA path of the call.
        engine: String,
    },

    #[error("{file}: {field}: {detail}")]
    Format {
        file: String,
        field: String,
        detail: String,
    },
}

impl QuantError {
    pub fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        QuantError::InvalidArgument {
            op,
            detail: detail.into(),
        }
    }
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        QuantError::ShapeMismatch {
            op,
            detail: detail.into(),
        }
    }
}
