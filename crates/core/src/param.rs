//! Trainable tensors: a value and its accumulated gradient. Modules expose
//! theirs by name (`weight`, `bias`, `weight_fake_quant.scale`) so one
//! optimizer updates weights and learnable quantization parameters alike.

use crate::error::Result;
use crate::tensor::Tensor;

/// A trainable tensor and its accumulated gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub value: Tensor,
    pub grad: Option<Tensor>,
}

impl Param {
    pub fn new(value: Tensor) -> Self {
        Param { value, grad: None }
    }
    /// Add `g` to the gradient.
    pub fn accumulate(&mut self, g: Vec<f32>) -> Result<()> {
        match &mut self.grad {
            Some(t) => {
                for (a, b) in t.data_mut().iter_mut().zip(g) {
                    *a += b;
                }
            }
            None => self.grad = Some(Tensor::new(self.value.shape().to_vec(), g)?),
        }
        Ok(())
    }
}
