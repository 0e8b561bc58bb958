//! Trainable tensors and the seeded generator used to initialise them.

use rquant_core::Tensor;

use crate::error::Result;

/// A trainable tensor and its accumulated gradient.
#[derive(Debug, Clone)]
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

/// Deterministic generator (SplitMix64) for initialisation and dropout.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32) / (1u64 << 24) as f32
    }
    /// Uniform in [-a, a) (PyTorch's kaiming-uniform style bound).
    pub fn sym(&mut self, a: f32) -> f32 {
        (self.uniform() * 2.0 - 1.0) * a
    }
}
