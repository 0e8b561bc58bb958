//! rquant's ARM engine ("qnnpack"): int8 GEMM microkernels for baseline NEON
//! (`smlal` on i16), dotprod (`sdot`) and i8mm (`usmmla`), bit-exact with the
//! reference engine (exact int32 accumulation, fbgemm's float requantization).
//!
//! [`engine`] returns the engine on AArch64 only, with the best path this CPU
//! has (detected once), capped by `RQUANT_ISA=scalar|neon|dotprod|i8mm`.
//! The portable scalar path ([`ArmEngine::with_isa`]`(Isa::Scalar)`) runs on
//! any architecture, which lets the packing and pipelines be tested natively.

use rquant_core::engine::{
    Backend, Checked, ConvAddCall, ConvCall, DynamicCall, GemmBackend, Int8Panels, LinearCall,
    MemoryBackend, Panels,
};
use rquant_core::gemm::{Kernel, Table};
use rquant_core::membound as mb;
use rquant_core::registry::num_threads;
use rquant_core::{
    Conv2dParams, Engine, MemoryFormat, PackedLinear, PackedLinearFp16, QTensor, QuantError,
    Result, Tensor,
};

mod conv;
mod fp16;
mod gemm;
mod isa;
pub mod kernels;
mod linear;
pub mod membound;
mod output;
mod pack;
mod table;

pub use isa::{Caps, Isa};

use conv::ConvPack;
use linear::LinearPack;
use output::Residual;

/// The ARM engine on one ISA path: the path, what its code may use, and its
/// GEMM kernel table (all proved by detection when the value was made).
#[derive(Debug, Clone, Copy)]
pub struct ArmEngine {
    isa: Isa,
    caps: Caps,
    gemm: Table,
    mem: &'static rquant_core::membound::Kernels,
}

impl ArmEngine {
    /// The engine on this CPU's best path (capped by `RQUANT_ISA`); None
    /// off AArch64.
    pub fn new() -> Option<ArmEngine> {
        if cfg!(target_arch = "aarch64") {
            ArmEngine::with_isa(isa::resolved())
        } else {
            None
        }
    }

    /// The engine forced to `isa`, if this CPU can run it. `Isa::Scalar`
    /// exists on every architecture (portable code, for testing).
    pub fn with_isa(isa: Isa) -> Option<ArmEngine> {
        if !isa::supported(isa) {
            return None;
        }
        Some(ArmEngine {
            isa,
            caps: isa.caps(),
            gemm: table::gemm_table(isa),
            mem: membound::kernels(isa)?,
        })
    }

    /// The path this engine value runs.
    pub fn path(&self) -> Isa {
        self.isa
    }
}

/// The ARM engine if this CPU and build support it (AArch64 only).
pub fn engine() -> Option<Engine> {
    ArmEngine::new().map(Engine::new)
}

/// The engine once per ISA path this CPU has, scalar included (AArch64
/// only; empty elsewhere).
pub fn all_paths() -> Vec<Engine> {
    if !cfg!(target_arch = "aarch64") {
        return Vec::new();
    }
    Isa::ALL
        .into_iter()
        .filter_map(ArmEngine::with_isa)
        .map(Engine::new)
        .collect()
}

fn not_ours(op: &'static str) -> QuantError {
    QuantError::invalid(op, "weights were not packed by the qnnpack engine")
}

impl ArmEngine {
    /// This path's packed form of `w`. The front end only lets weights packed
    /// for this path through, so anything else is an internal error.
    fn linear_pack<'a>(&self, op: &'static str, w: &'a PackedLinear) -> Result<&'a LinearPack> {
        match w.panels::<LinearPack>() {
            Some(p) if p.isa == self.isa => Ok(p),
            _ => Err(not_ours(op)),
        }
    }
}

impl ArmEngine {
    /// This path's packed form of a conv weight.
    fn conv_pack<'a>(&self, op: &'static str, c: &ConvCall<'a>) -> Result<&'a ConvPack> {
        match c.w.panels::<ConvPack>() {
            Some(p) if p.isa == self.isa => Ok(p),
            _ => Err(not_ours(op)),
        }
    }
}

impl Backend for ArmEngine {
    fn name(&self) -> &'static str {
        "qnnpack"
    }
    fn isa(&self) -> &'static str {
        self.isa.name()
    }
    fn priority(&self) -> i32 {
        100
    }
    /// PyTorch's dynamic Linear ignores `reduce_range` under qnnpack.
    fn dynamic_reduce_range(&self) -> bool {
        false
    }
}

impl GemmBackend for ArmEngine {
    fn pack_linear(&self, w: &QTensor<i8>, _: Checked) -> Result<Box<dyn Int8Panels>> {
        Ok(Box::new(LinearPack::new(self.isa, self.gemm, w)))
    }

    fn linear(&self, c: &LinearCall<'_>) -> Result<Vec<u8>> {
        let p = self.linear_pack("linear", c.w)?;
        Ok(linear::linear(self.caps, p, c, num_threads()))
    }

    fn linear_dynamic(&self, c: &DynamicCall<'_>) -> Result<Vec<f32>> {
        let p = self.linear_pack("linear_dynamic", c.w)?;
        Ok(linear::linear_dynamic(self.caps, p, c, num_threads()))
    }

    fn pack_linear_fp16(
        &self,
        w: &Tensor,
        bias: Option<&[f32]>,
        _: Checked,
    ) -> Result<Box<dyn Panels>> {
        let (n, k) = (w.shape()[0], w.shape()[1]);
        Ok(Box::new(fp16::PackedF16::new(w.data(), n, k, bias)))
    }

    fn linear_dynamic_fp16(
        &self,
        x: &[f32],
        m: usize,
        w: &PackedLinearFp16,
        _: Checked,
    ) -> Result<Vec<f32>> {
        let p = w
            .panels::<fp16::PackedF16>()
            .ok_or_else(|| not_ours("linear_dynamic_fp16"))?;
        Ok(p.run(self.caps, x, m, num_threads()))
    }

    fn pack_conv2d(
        &self,
        w: &QTensor<i8>,
        params: Conv2dParams,
        _: Checked,
    ) -> Result<Box<dyn Int8Panels>> {
        Ok(Box::new(ConvPack::new(
            self.isa,
            self.gemm,
            w,
            params.groups,
        )))
    }

    fn conv2d(&self, c: &ConvCall<'_>) -> Result<Vec<u8>> {
        let p = self.conv_pack("conv2d", c)?;
        Ok(conv::conv2d(self.caps, p, c, None, num_threads()))
    }

    /// NCHW and NHWC (channels-last) both: the conv reads NHWC pixels in
    /// place (an NCHW input is transposed once per call) and writes the
    /// input's format.
    fn conv2d_reads(&self, format: MemoryFormat) -> bool {
        matches!(
            format,
            MemoryFormat::Contiguous | MemoryFormat::ChannelsLast
        )
    }

    /// The residual add in the GEMM's output stage, on each tile.
    fn conv2d_add(&self, c: &ConvAddCall<'_>) -> Result<Vec<u8>> {
        let p = self.conv_pack("conv2d_add", &c.conv)?;
        let res = Residual {
            data: c.other.int_repr(),
            add: c.add,
        };
        Ok(conv::conv2d(
            self.caps,
            p,
            &c.conv,
            Some(res),
            num_threads(),
        ))
    }

    fn gemm_kernels(&self) -> &'static [Kernel] {
        self.gemm.kernels()
    }
}

// Element-wise ops, pooling, clamps, tables, cat and requantize run the
// shared drivers of `rquant_core::membound` on this path's row kernels
// (`membound`); the other memory-bound ops are the trait's defaults.
impl MemoryBackend for ArmEngine {
    fn row_kernels(&self) -> Option<&'static mb::Kernels> {
        Some(self.mem)
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

    /// The conv reads and writes channels-last itself: the front end must
    /// not transpose NHWC activations around it.
    #[test]
    fn conv_reads_both_formats() {
        let e = ArmEngine::with_isa(Isa::Scalar).unwrap();
        assert!(e.conv2d_reads(MemoryFormat::ChannelsLast));
        assert!(e.conv2d_reads(MemoryFormat::Contiguous));
    }
}
