//! The pieces of rquant's model file that a module writes itself: its
//! tensors (named `{module path}.{name}`, as a PyTorch state_dict) through a
//! [`Saver`], and its attributes as a JSON object. The file-level layout
//! (metadata, module tree, type tags) is in [`crate::io`]; reading back is
//! [`crate::registry::Node`].

use rquant_core::{QParams, QTensor, Tensor};
use safetensors::tensor::Dtype;
use serde_json::{json, Value as J};

use crate::error::{NnError, Result};

pub(crate) fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}.{b}")
    }
}

pub(crate) fn to_bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Collects the tensors of the module being saved, under its path.
#[derive(Debug, Default)]
pub struct Saver {
    path: String,
    pub(crate) tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
}

impl Saver {
    /// The dotted path of the module being saved ("" for the root).
    pub fn path(&self) -> &str {
        &self.path
    }
    pub(crate) fn set_path(&mut self, p: &str) {
        self.path = p.to_string();
    }
    /// Run `f` with the path extended by `sub` (e.g. `ih_l0` for one RNN projection).
    pub fn within<R>(&mut self, sub: &str, f: impl FnOnce(&mut Saver) -> R) -> R {
        let saved = std::mem::take(&mut self.path);
        self.path = join(&saved, sub);
        let r = f(self);
        self.path = saved;
        r
    }
    fn push(&mut self, name: &str, dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) {
        self.tensors
            .push((join(&self.path, name), dtype, shape, bytes));
    }
    /// A float32 tensor `{path}.{name}`.
    pub fn f32(&mut self, name: &str, t: &Tensor) {
        self.push(name, Dtype::F32, t.shape().to_vec(), to_bytes_f32(t.data()));
    }
    /// A float32 vector `{path}.{name}`.
    pub fn f32_slice(&mut self, name: &str, v: &[f32]) {
        self.push(name, Dtype::F32, vec![v.len()], to_bytes_f32(v));
    }
    /// Output qparams as `{path}.scale` (F64) and `{path}.zero_point` (I64), exact.
    pub fn qparams(&mut self, scale: f64, zero_point: i64) {
        self.push("scale", Dtype::F64, vec![1], scale.to_le_bytes().to_vec());
        self.push(
            "zero_point",
            Dtype::I64,
            vec![1],
            zero_point.to_le_bytes().to_vec(),
        );
    }
    /// An int8 weight as `{path}.weight` (I8) with `weight_scale` (F64) and
    /// `weight_zero_point` (I64), one per channel or one in all; returns its
    /// qscheme's name for the attributes.
    pub fn qweight(&mut self, w: &QTensor<i8>) -> Result<J> {
        let (scales, zps): (Vec<f64>, Vec<i64>) = match w.qparams() {
            QParams::PerTensor { scale, zero_point } => (vec![*scale], vec![*zero_point]),
            QParams::PerChannel {
                scales,
                zero_points,
                ..
            } => (scales.clone(), zero_points.clone()),
            QParams::PerChannelFloat { .. } => {
                return Err(NnError::module(
                    &self.path,
                    "weights with float zero points cannot be saved",
                ))
            }
        };
        self.push(
            "weight",
            Dtype::I8,
            w.shape().to_vec(),
            w.int_repr().iter().map(|&v| v as u8).collect(),
        );
        let n = scales.len();
        self.push(
            "weight_scale",
            Dtype::F64,
            vec![n],
            scales.iter().flat_map(|x| x.to_le_bytes()).collect(),
        );
        self.push(
            "weight_zero_point",
            Dtype::I64,
            vec![n],
            zps.iter().flat_map(|x| x.to_le_bytes()).collect(),
        );
        Ok(json!(w.qscheme().name()))
    }
    /// A per-tensor quint8 tensor as `{path}.{name}` (U8) with
    /// `{name}_scale` (F64) and `{name}_zero_point` (I64).
    pub fn qweight_u8(&mut self, name: &str, w: &QTensor<u8>) {
        let (s, z) = w.q_per_tensor().unwrap_or((1.0, 0));
        self.push(name, Dtype::U8, w.shape().to_vec(), w.int_repr().to_vec());
        self.push(
            &format!("{name}_scale"),
            Dtype::F64,
            vec![1],
            s.to_le_bytes().to_vec(),
        );
        self.push(
            &format!("{name}_zero_point"),
            Dtype::I64,
            vec![1],
            z.to_le_bytes().to_vec(),
        );
    }
    /// Raw bytes `{path}.{name}` of any dtype.
    pub fn raw(&mut self, name: &str, dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) {
        self.push(name, dtype, shape, bytes);
    }
    /// An optional float bias `{path}.bias`; returns whether there is one.
    pub fn bias(&mut self, b: Option<&[f32]>) -> bool {
        if let Some(b) = b {
            self.f32_slice("bias", b);
        }
        b.is_some()
    }
}
