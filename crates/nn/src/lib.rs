//! rquant-nn: float modules with forward and backward, and PyTorch's
//! eager-mode quantization workflows on top of them.
//!
//! * **An open module set** ([`module`]): every module — float, fused,
//!   observed, QAT, quantized, rquant's or yours — is a type implementing
//!   [`Layer`] (`type_name`, `forward`, and optionally backward, named
//!   children, parameters and buffers, engine, `save`); a model is a tree of
//!   [`Module`]s (boxed layers) whose dotted paths are PyTorch's state_dict
//!   keys. [`Block`] writes a user block (a ResNet BasicBlock) as named
//!   children plus a forward function. [`Mappings`] holds the float → QAT →
//!   quantized tables (PyTorch's `DEFAULT_*_MODULE_MAPPINGS`) and
//!   [`ModuleRegistry`] the file's type tag → loader table; extend both to
//!   add a quantized module of your own without editing rquant
//!   (`tests/custom_module.rs` does it in one file).
//! * **rquant's modules**: Linear, Conv2d (stride, padding, dilation,
//!   groups), BatchNorm2d, ReLU / ReLU6 / Hardswish, MaxPool2d, AvgPool2d,
//!   AdaptiveAvgPool2d, Flatten, Dropout, Embedding, LSTM / GRU, Sequential,
//!   QuantStub / DeQuantStub, FloatFunctional; quantized ([`quantized`]):
//!   Quantize / DeQuantize, Linear(ReLU), Conv(ReLU)2d, Hardswish, ReLU6,
//!   QFunctional, dynamic Linear / LSTM / GRU. Float math: im2col + packed
//!   SGEMM, batch-parallel.
//! * **Training**: layer-by-layer backward, [`train::cross_entropy`],
//!   [`train::Sgd`] (momentum) and [`train::Adam`], PyTorch's update rules.
//! * **Workflows**: [`fuse_modules`] / [`fuse_modules_qat`] (PyTorch's exact
//!   folding arithmetic), [`prepare`] (observers from a [`QConfigMap`]; `None`
//!   keeps a module float), calibration by running data, [`convert_with`]
//!   (weights packed once by the given engine; every module of the converted
//!   model, pooling and ReLU on quantized values included, runs on it),
//!   [`quantize_dynamic`] ({Linear, LSTM, GRU} × {qint8, float16}),
//!   [`prepare_qat`] with [`disable_observer`] / [`freeze_bn_stats`],
//!   [`to_engine`] (moves a whole model); `*_mapped` forms take your tables;
//!   [`set_activation_qparams`] gives the observers of a prepared model fixed
//!   output qparams (another tool's exported scales and zero points) instead
//!   of calibrating.
//! * **Files** ([`io`]): float weights from safetensors by PyTorch name
//!   (PyTorch's int64 `num_batches_tracked` buffers are read and skipped);
//!   quantized models saved with engine, qconfig, module tree and qparams,
//!   loadable on any engine with identical outputs.
//! * **Numeric suite** ([`numeric_suite`]): weight and per-layer output SQNR.
//!
//! ```no_run
//! use rquant_nn::{convert, fuse_modules, mnist, prepare, QConfigMap, Value};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! rquant_nn::engines::init();
//! let mut model = mnist::pretrained(&mnist::committed_weights())?;
//! fuse_modules(&mut model, &mnist::FUSE_GROUPS)?;
//! prepare(&mut model, &QConfigMap::global(rquant_core::qconfig::get_default_qconfig("x86")?))?;
//! let calib = mnist::Dataset::load(&mnist::committed_dir(), "train", Some(1000))?;
//! mnist::calibrate(&mut model, &calib, 100, &mut |_| {})?;
//! convert(&mut model)?;
//! let logits = model.forward(Value::F(calib.batch(0, 8, mnist::MEAN, mnist::STD)))?;
//! # Ok(()) }
//! ```
//!
//! The README's quick start, the engine API underneath the modules:
//!
//! ```
//! use rquant_core::{dequantize, quantize_per_channel, quantize_per_tensor, registry, Tensor};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! rquant_nn::engines::init();
//! let engine = registry::engine()?;
//! let w = Tensor::new([2, 3], vec![0.5, -1.0, 0.25, 1.0, 0.0, -0.5])?;
//! let wq = quantize_per_channel::<i8>(&w, &[1.0 / 127.5, 1.0 / 127.5], &[0, 0], 0)?;
//! let packed = engine.pack_linear(wq, Some(vec![0.1, -0.1]))?;
//! let x = Tensor::new([1, 3], vec![0.2, 0.4, 0.6])?;
//! let xq = quantize_per_tensor::<u8>(&x, 1.0 / 255.0, 0)?;
//! let yq = engine.linear(&xq, &packed, 0.01, 128, false)?;
//! let y = dequantize(&yq);
//! let y_dyn = engine.linear_dynamic(&x, &packed, false)?;
//! assert_eq!(y.shape(), &[1, 2]);
//! assert!((y.data()[0] - y_dyn.data()[0]).abs() < 0.02);
//!
//! let (xs, mut codes, mut back) = (vec![0.5f32; 1 << 20], vec![0u8; 1 << 20], vec![0f32; 1 << 20]);
//! engine.quantize_per_tensor_into(&xs, 1.0 / 255.0, 0, &mut codes)?;
//! let q = rquant_core::QTensor::from_int_repr(vec![1 << 20], codes, rquant_core::QParams::per_tensor(1.0 / 255.0, 0))?;
//! engine.dequantize_into(&q, &mut back)?;
//! let small = quantize_per_tensor::<u8>(&Tensor::new([1], vec![0.5])?, 1.0 / 255.0, 0)?;
//! assert_eq!(q.int_repr()[0], small.int_repr()[0]); // 127: 0.5 · f32(1/f32(1/255)) < 127.5
//! assert_eq!(back[0], dequantize(&small).data()[0]);
//! # Ok(()) }
//! ```

pub mod acts;
pub mod block;
mod builtins;
pub mod channels_last;
pub mod convnd;
pub mod convs;
pub mod embeddings;
pub mod engines;
pub mod error;
pub mod format;
pub mod functional;
pub mod gemm;
pub mod io;
pub mod layers;
pub mod mapping;
pub mod mnist;
pub mod module;
pub mod movement;
pub mod norms;
pub mod numeric_suite;
pub mod observed;
pub mod param;
pub mod pools;
pub mod post;
pub mod qops;
pub mod quantize;
pub mod quantized;
pub mod registry;
pub mod resume;
pub mod rnn;
pub mod train;
pub mod value;
pub mod workflow;

pub use block::Block;
pub use error::{NnError, Result};
pub use layers::{
    ActKind, Activation, BatchNorm2d, Conv2d, DeQuantStub, FloatFunctional, Identity, Linear,
    QuantStub,
};
pub use mapping::Mappings;
pub use module::{Layer, Module, Sequential};
pub use movement::{chunk, ChannelShuffle, Mean};
pub use observed::Observed;
pub use param::{Param, Rng};
pub use quantize::*;
pub use registry::{ModuleRegistry, Node};
/// The JSON crate module attributes are written with (`save` returns a
/// `serde_json::Value`).
pub use serde_json;
pub use value::Value;
pub use workflow::{
    add_quant_dequant, quantize_dynamic_spec, quantize_qat, swap_module, DynamicSpec,
    DynamicSpecDType, QuantWrapper,
};
