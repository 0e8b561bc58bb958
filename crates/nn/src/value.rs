//! What flows between modules: a float tensor or a quint8 tensor.

use rquant_core::{QTensor, QuantError, Tensor};

use crate::error::Result;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    F(Tensor),
    Q(QTensor<u8>),
}

impl Value {
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::F(t) => t.shape(),
            Value::Q(q) => q.shape(),
        }
    }
    pub fn is_quantized(&self) -> bool {
        matches!(self, Value::Q(_))
    }
    /// The float tensor; an error naming `op` if quantized.
    pub fn float(self, op: &'static str) -> Result<Tensor> {
        match self {
            Value::F(t) => Ok(t),
            Value::Q(_) => Err(QuantError::DTypeMismatch {
                op,
                expected: "float32 (insert a DeQuantStub before this module)".into(),
                got: "quint8".into(),
            }
            .into()),
        }
    }
    /// The quantized tensor; an error naming `op` if float.
    pub fn quant(self, op: &'static str) -> Result<QTensor<u8>> {
        match self {
            Value::Q(q) => Ok(q),
            Value::F(_) => Err(QuantError::DTypeMismatch {
                op,
                expected: "quint8 (insert a QuantStub before this module)".into(),
                got: "float32".into(),
            }
            .into()),
        }
    }
    /// Float view: dequantizes quantized values.
    pub fn to_float(&self) -> Tensor {
        match self {
            Value::F(t) => t.clone(),
            Value::Q(q) => rquant_core::dequantize(q),
        }
    }
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Self {
        Value::F(t)
    }
}
impl From<QTensor<u8>> for Value {
    fn from(q: QTensor<u8>) -> Self {
        Value::Q(q)
    }
}
