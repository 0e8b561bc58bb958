//! rquant-models: real models built from rquant's modules and engines.
//!
//! - [`bert`]: a BERT encoder read from a Hugging Face checkpoint directory
//!   (`config.json`, `model.safetensors`, `tokenizer.json`), run as the
//!   sentence-transformers pipeline (mean pooling over the attention mask, L2
//!   normalisation), in fp32 or with every Linear dynamically quantized to
//!   int8 and run by the current engine's `linear_dynamic`.
//! - [`charlstm`]: textgenrnn's character LSTM (converted once to
//!   safetensors), fp32 or through `rquant_nn::quantize_dynamic`.
//! - [`math`]: the float pieces the encoder needs that `rquant-nn` does not
//!   have: an accurate `erf`/GELU, LayerNorm, masked softmax.
//! - [`vision`]: torchvision's quantizable vision models (ResNet, ResNeXt,
//!   MobileNetV2, GoogLeNet, Inception-v3) with their state_dict names and `fuse_model` recipes, fp32
//!   weights from safetensors or the seeded formula ([`seeded`]).
//! - [`weights`]: a memory-mapped safetensors reader that validates every
//!   tensor's dtype and shape and names the file and tensor in its errors.

pub mod bert;
pub mod charlstm;
pub mod error;
pub mod math;
pub mod npy;
pub mod seeded;
pub mod vision;
pub mod weights;

pub use error::{Error, Result};
