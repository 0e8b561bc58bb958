//! rquant's ARM engine ("qnnpack"): int8 GEMM microkernels for baseline NEON
//! (`smlal` on i16), dotprod (`sdot`) and i8mm (`usmmla`), bit-exact with the
//! reference engine (exact int32 accumulation, fbgemm's float requantization).
//!
//! [`engine`] returns the engine on AArch64 only, with the best path this CPU
//! has (detected once), capped by `RQUANT_ISA=scalar|neon|dotprod|i8mm`.
//! The portable scalar path ([`ArmEngine::with_isa`]`(Isa::Scalar)`) runs on
//! any architecture, which lets the packing and pipelines be tested natively.

use std::sync::Arc;

use rquant_core::engine::Payload;
use rquant_core::ops::{BinaryOp, ConvGeometry, MaxPool2dParams, OutQ, PoolGeometry};
use rquant_core::registry::num_threads;
use rquant_core::{
    Conv2dParams, PackedConv2d, PackedLinear, PackedLinearFp16, QTensor, QuantEngine, QuantError,
    Result, Tensor,
};

mod elementwise;
mod epilogue;
mod fp16;
mod gemm;
mod isa;
pub mod kernels;
mod linear;
mod pack;

pub use isa::{kernel_calls, Isa};

use linear::{ConvPack, LinearPack};

/// The ARM engine on one ISA path.
#[derive(Debug, Clone, Copy)]
pub struct ArmEngine {
    isa: Isa,
}

impl ArmEngine {
    /// The engine on this CPU's best path (capped by `RQUANT_ISA`); None
    /// off AArch64.
    pub fn new() -> Option<ArmEngine> {
        if cfg!(target_arch = "aarch64") {
            Some(ArmEngine {
                isa: isa::resolved(),
            })
        } else {
            None
        }
    }

    /// The engine forced to `isa`, if this CPU can run it. `Isa::Scalar`
    /// exists on every architecture (portable code, for testing).
    pub fn with_isa(isa: Isa) -> Option<ArmEngine> {
        isa::supported(isa).then_some(ArmEngine { isa })
    }

    /// The path this engine value runs.
    pub fn path(&self) -> Isa {
        self.isa
    }
}

/// The ARM engine if this CPU and build support it (AArch64 only).
pub fn engine() -> Option<Arc<dyn QuantEngine>> {
    ArmEngine::new().map(|e| Arc::new(e) as Arc<dyn QuantEngine>)
}

/// The engine once per ISA path this CPU has, scalar included (AArch64
/// only; empty elsewhere).
pub fn all_paths() -> Vec<Arc<dyn QuantEngine>> {
    if !cfg!(target_arch = "aarch64") {
        return Vec::new();
    }
    Isa::ALL
        .into_iter()
        .filter_map(ArmEngine::with_isa)
        .map(|e| Arc::new(e) as Arc<dyn QuantEngine>)
        .collect()
}

fn x_q(x: &QTensor<u8>) -> (f64, i32) {
    let (s, z) = x.q_per_tensor().expect("validated per-tensor");
    (s, z as i32)
}

fn not_ours(op: &'static str) -> QuantError {
    QuantError::invalid(op, "weights were not packed by the qnnpack engine")
}

impl ArmEngine {
    /// The packed linear weight for this path (repacked when another path of
    /// this engine packed it).
    fn linear_pack<'a>(
        &self,
        op: &'static str,
        w: &'a PackedLinear,
        tmp: &'a mut Option<LinearPack>,
    ) -> Result<&'a LinearPack> {
        let p = w.payload::<LinearPack>().ok_or_else(|| not_ours(op))?;
        if p.b.isa == self.isa {
            return Ok(p);
        }
        Ok(tmp.insert(LinearPack::new(self.isa, w.weight())))
    }
}

impl QuantEngine for ArmEngine {
    fn name(&self) -> &'static str {
        "qnnpack"
    }
    fn isa(&self) -> &'static str {
        self.isa.name()
    }
    fn priority(&self) -> i32 {
        100
    }

    fn pack_linear_impl(&self, w: &QTensor<i8>, _bias: Option<&[f32]>) -> Result<Payload> {
        Ok(Box::new(LinearPack::new(self.isa, w)))
    }

    fn linear_impl(
        &self,
        x: &QTensor<u8>,
        m: usize,
        w: &PackedLinear,
        out: OutQ,
        relu: bool,
    ) -> Result<Vec<u8>> {
        let mut tmp = None;
        let p = self.linear_pack("linear", w, &mut tmp)?;
        Ok(linear::linear(
            p,
            x.int_repr(),
            m,
            x_q(x),
            w.bias(),
            out,
            relu,
            num_threads(),
        ))
    }

    fn linear_dynamic_impl(
        &self,
        x: &[f32],
        m: usize,
        w: &PackedLinear,
        reduce_range: bool,
    ) -> Result<Vec<f32>> {
        let mut tmp = None;
        let p = self.linear_pack("linear_dynamic", w, &mut tmp)?;
        Ok(linear::linear_dynamic(
            p,
            x,
            m,
            w.bias(),
            reduce_range,
            num_threads(),
        ))
    }

    fn pack_linear_fp16_impl(&self, w: &Tensor, bias: Option<&[f32]>) -> Result<Payload> {
        let (n, k) = (w.shape()[0], w.shape()[1]);
        Ok(Box::new(fp16::PackedF16::new(w.data(), n, k, bias)))
    }

    fn linear_dynamic_fp16_impl(
        &self,
        x: &[f32],
        m: usize,
        w: &PackedLinearFp16,
    ) -> Result<Vec<f32>> {
        let p = w
            .payload::<fp16::PackedF16>()
            .ok_or_else(|| not_ours("linear_dynamic_fp16"))?;
        Ok(p.run(self.isa, x, m, num_threads()))
    }

    fn pack_conv2d_impl(
        &self,
        w: &QTensor<i8>,
        _bias: Option<&[f32]>,
        params: Conv2dParams,
    ) -> Result<Payload> {
        Ok(Box::new(ConvPack::new(self.isa, w, params.groups)))
    }

    fn conv2d_impl(
        &self,
        x: &QTensor<u8>,
        g: &ConvGeometry,
        w: &PackedConv2d,
        out: OutQ,
        relu: bool,
    ) -> Result<Vec<u8>> {
        let p = w.payload::<ConvPack>().ok_or_else(|| not_ours("conv2d"))?;
        let repacked;
        let p = if p.isa == self.isa {
            p
        } else {
            repacked = ConvPack::new(self.isa, w.weight(), g.params.groups);
            &repacked
        };
        Ok(linear::conv2d(
            p,
            x.int_repr(),
            g,
            x_q(x),
            w.bias(),
            out,
            relu,
            num_threads(),
        ))
    }

    fn binary_impl(
        &self,
        op: BinaryOp,
        a: &QTensor<u8>,
        b: &QTensor<u8>,
        out: OutQ,
    ) -> Result<Vec<u8>> {
        elementwise::binary(self.isa, op, a, b, out)
    }

    fn relu_impl(&self, x: &QTensor<u8>) -> Result<Vec<u8>> {
        elementwise::relu(self.isa, x)
    }

    fn max_pool2d_impl(
        &self,
        x: &QTensor<u8>,
        g: &PoolGeometry,
        p: &MaxPool2dParams,
    ) -> Result<Vec<u8>> {
        elementwise::max_pool2d(self.isa, x, g, p)
    }

    fn hardswish_impl(&self, x: &QTensor<u8>, out: OutQ) -> Result<Vec<u8>> {
        elementwise::hardswish(self.isa, x, out)
    }

    fn sigmoid_impl(&self, x: &QTensor<u8>, out: OutQ) -> Result<Vec<u8>> {
        elementwise::sigmoid(self.isa, x, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_only_on_aarch64() {
        assert_eq!(engine().is_some(), cfg!(target_arch = "aarch64"));
        assert_eq!(all_paths().is_empty(), !cfg!(target_arch = "aarch64"));
        assert!(ArmEngine::with_isa(Isa::Scalar).is_some());
    }
}
