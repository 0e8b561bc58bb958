//! Cross-entropy loss and the SGD (momentum) and Adam optimizers, with
//! PyTorch's update rules.

use std::collections::HashMap;

use rquant_core::Tensor;

use crate::error::{bad, Result};
use crate::module::Module;

/// Mean cross-entropy of logits `[N, C]` against class ids; returns the loss
/// and the gradient of the logits.
pub fn cross_entropy(logits: &Tensor, labels: &[usize]) -> Result<(f32, Tensor)> {
    if logits.ndim() != 2 || logits.shape()[0] != labels.len() {
        return Err(bad(
            "cross_entropy",
            format!("logits {:?} vs {} labels", logits.shape(), labels.len()),
        ));
    }
    let (n, c) = (logits.shape()[0], logits.shape()[1]);
    let mut grad = vec![0.0f32; n * c];
    let mut loss = 0.0f64;
    for (i, &y) in labels.iter().enumerate() {
        if y >= c {
            return Err(bad(
                "cross_entropy",
                format!("label {y} out of range for {c} classes"),
            ));
        }
        let row = &logits.data()[i * c..(i + 1) * c];
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let s: f32 = row.iter().map(|&v| (v - m).exp()).sum();
        let lse = m + s.ln();
        loss += (lse - row[y]) as f64;
        for j in 0..c {
            let p = (row[j] - lse).exp();
            grad[i * c + j] = (p - if j == y { 1.0 } else { 0.0 }) / n as f32;
        }
    }
    Ok(((loss / n as f64) as f32, Tensor::new([n, c], grad)?))
}

/// Index of the largest logit of each row.
pub fn argmax_rows(logits: &Tensor) -> Vec<usize> {
    let c = *logits.shape().last().unwrap_or(&1);
    logits
        .data()
        .chunks(c.max(1))
        .map(|r| {
            let mut best = 0;
            for (j, &v) in r.iter().enumerate() {
                if v > r[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}

/// An optimizer over a model's named parameters.
pub trait Optimizer {
    fn step(&mut self, model: &mut Module) -> Result<()>;
}

/// `torch.optim.SGD(lr, momentum, dampening=0, weight_decay, nesterov=false)`.
#[derive(Debug, Clone)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    bufs: HashMap<String, Vec<f32>>,
}

impl Sgd {
    pub fn new(lr: f32, momentum: f32, weight_decay: f32) -> Self {
        Sgd {
            lr,
            momentum,
            weight_decay,
            bufs: HashMap::new(),
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, model: &mut Module) -> Result<()> {
        let bufs = &mut self.bufs;
        let (lr, momentum, weight_decay) = (self.lr, self.momentum, self.weight_decay);
        model.for_each_param_mut(&mut |name, p| {
            let Some(g) = &p.grad else { return Ok(()) };
            let mut d: Vec<f32> = g.data().to_vec();
            if weight_decay != 0.0 {
                for (dv, &w) in d.iter_mut().zip(p.value.data()) {
                    *dv += weight_decay * w;
                }
            }
            if momentum != 0.0 {
                match bufs.get_mut(name) {
                    Some(buf) => {
                        for (b, dv) in buf.iter_mut().zip(d.iter_mut()) {
                            *b = momentum * *b + *dv;
                            *dv = *b;
                        }
                    }
                    None => {
                        bufs.insert(name.to_string(), d.clone());
                    }
                }
            }
            for (w, dv) in p.value.data_mut().iter_mut().zip(&d) {
                *w -= lr * dv;
            }
            Ok(())
        })
    }
}

/// `torch.optim.Adam(lr, betas, eps, weight_decay)` (not AMSGrad).
#[derive(Debug, Clone)]
pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    step: HashMap<String, (i32, Vec<f32>, Vec<f32>)>,
}

impl Adam {
    pub fn new(lr: f32) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            step: HashMap::new(),
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, model: &mut Module) -> Result<()> {
        let Adam {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            step,
        } = self;
        let (lr, beta1, beta2, eps, weight_decay) = (*lr, *beta1, *beta2, *eps, *weight_decay);
        model.for_each_param_mut(&mut |name, p| {
            let Some(g) = &p.grad else { return Ok(()) };
            let n = g.numel();
            let st = step
                .entry(name.to_string())
                .or_insert_with(|| (0, vec![0.0; n], vec![0.0; n]));
            st.0 += 1;
            let t = st.0;
            let bc1 = 1.0 - beta1.powi(t);
            let bc2 = 1.0 - beta2.powi(t);
            let step_size = lr / bc1;
            let bc2_sqrt = bc2.sqrt();
            for i in 0..n {
                let mut gi = g.data()[i];
                if weight_decay != 0.0 {
                    gi += weight_decay * p.value.data()[i];
                }
                st.1[i] = beta1 * st.1[i] + (1.0 - beta1) * gi;
                st.2[i] = beta2 * st.2[i] + (1.0 - beta2) * gi * gi;
                let denom = st.2[i].sqrt() / bc2_sqrt + eps;
                p.value.data_mut()[i] -= step_size * st.1[i] / denom;
            }
            Ok(())
        })
    }
}
