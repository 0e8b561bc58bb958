//! PyTorch's quantized global mean on channels-last input, shared by
//! tests/vision.rs and tests/torch_checkpoint.rs (`#[path]` module).

use rquant_core::QTensor;
use rquant_nn::Value;

/// PyTorch's quantized `x.mean([2, 3])` on a channels-last input: the tensor
/// dequantized with its vectorised FMA form, averaged in float (summed in
/// order here), quantized back with the input's qparams. rquant's engines
/// compute PyTorch's contiguous-input kernel, `rne(f32(Σq) / f32(n))`
/// (docs/numerics.md §13), which differs on ties.
#[derive(Debug, Clone)]
pub struct TorchNhwcMean;

impl rquant_nn::Layer for TorchNhwcMean {
    fn type_name(&self) -> String {
        "TorchNhwcMean".into()
    }
    fn forward(&mut self, x: Value) -> rquant_nn::Result<Value> {
        let q = x.quant("mean")?.contiguous();
        let (s, z) = q.q_per_tensor().unwrap();
        let &[n, c, h, w] = q.shape() else { panic!() };
        assert_eq!((n * c * h * w) % 64, 0, "the FMA form covers every element");
        let (sf, premul) = (s as f32, s as f32 * -(z as f32));
        let inv = 1.0f32 / sf;
        let data = q
            .int_repr()
            .chunks(h * w)
            .map(|p| {
                let sum = p
                    .iter()
                    .fold(0f32, |acc, &v| acc + (v as f32).mul_add(sf, premul));
                let m = sum / (h * w) as f32;
                ((m * inv).round_ties_even() as i64 + z).clamp(0, 255) as u8
            })
            .collect();
        Ok(Value::Q(QTensor::new_per_tensor_unchecked(
            vec![n, c],
            data,
            s,
            z,
        )))
    }
}
