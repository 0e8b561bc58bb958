//! # rquant-core
//!
//! PyTorch's int8 quantization numerics, bit for bit: quantized tensors,
//! quantize/dequantize, observers and qparam choice, fake quantization,
//! qconfig presets, and the [`Engine`] front end over every engine's backend.
//! `docs/numerics.md` in the repository is the normative specification.
//!
//! ```
//! use rquant_core::{quantize_per_tensor, dequantize, Tensor};
//! let x = Tensor::new([3], vec![-0.5, 0.0, 1.0]).unwrap();
//! let q = quantize_per_tensor::<u8>(&x, 0.25, 4).unwrap();
//! assert_eq!(q.int_repr(), &[2, 4, 8]);
//! assert_eq!(dequantize(&q).data(), x.data());
//! ```

pub mod conv;
pub mod dtype;
pub mod engine;
pub mod error;
pub mod exp;
pub mod fake_quant;
pub mod gemm;
pub mod lsq;
pub mod membound;
pub mod numerics;
pub mod observer;
pub mod ops;
pub mod output;
pub mod param;
pub mod params;
pub mod portable;
pub mod qconfig;
pub mod quant;
pub mod registry;
pub mod special;
pub mod tensor;
pub mod threads;

pub use dtype::{QDType, QType};
pub use engine::{
    Engine, PackedConv1d, PackedConv2d, PackedConv3d, PackedConvTranspose2d, PackedLinear,
    PackedLinearFp16, PathId,
};
pub use error::{QuantError, Result};
pub use fake_quant::{
    fake_quantize_per_channel, fake_quantize_per_channel_float_qparams, fake_quantize_per_tensor,
    FakeQuantOutput,
};
pub use ops::{AvgPool2dParams, BinaryOp, Conv2dParams, MaxPool2dParams, OutQ};
pub use params::{
    BatchNormParams, Conv1dParams, Conv3dParams, ConvTranspose2dParams, EmbeddingBagMode,
    GeluApproximate, NormParams, UpsampleSize,
};
pub use portable::EmbeddingBagTable;
pub use quant::{dequantize, quantize_per_channel, quantize_per_tensor, requantize};
pub use registry::{engine, set_engine, supported_engines};
pub use tensor::{MemoryFormat, QParams, QScheme, QTensor, Tensor};
