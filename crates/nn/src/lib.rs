//! rquant-nn: float modules with forward and backward, and PyTorch's
//! eager-mode quantization workflows on top of them — `fuse_modules`,
//! `prepare` / calibrate / `convert`, `quantize_dynamic`, `prepare_qat` —
//! plus the numeric suite, safetensors loading/saving, and the MNIST model.

pub mod engines;
pub mod error;
pub mod functional;
pub mod gemm;
pub mod io;
pub mod layers;
pub mod mnist;
pub mod module;
pub mod numeric_suite;
pub mod quantize;
pub mod quantized;
pub mod rnn;
pub mod train;
pub mod value;

pub use error::{NnError, Result};
pub use layers::{ActKind, BatchNorm2d, Conv2d, Linear, Param, Rng};
pub use module::{CustomModule, Module, Sequential};
pub use quantize::*;
pub use value::Value;
