//! rquant's x86 engine ("x86", alias "fbgemm"): exact int8 kernels for AVX2,
//! AVX-VNNI, AVX-512BW and AVX512-VNNI, bit-identical to the reference engine.
//!
//! The engine is a value that proves its ISA path ([`X86Engine::new`]
//! returns None when the CPU lacks it), resolved once at runtime from
//! `is_x86_feature_detected!` and `RQUANT_ISA` (a ceiling: `scalar`, `avx2`,
//! `avxvnni`, `avx512`, `avx512vnni`). Layout:
//! - [`table`]: each path's int8 GEMM kernel table (tile, activation
//!   packing, pack-time exactness check, microkernel, peak), built when the
//!   path is detected; the GEMM driver itself is `rquant_core::gemm`;
//! - [`pack`]: activation packing (row sums fused);
//! - [`kernels`]: one microkernel per file (`gemm_u8i8_6x16c2_avx2.rs`, …)
//!   and the output stages (`kernels/output*.rs`), which consume core's
//!   `Requant` / `Dequant`;
//! - `gemm`: the engine's threads for the driver; `conv`, `fp16`: ops;
//!   quantize / dequantize here;
//! - [`membound`]: each path's row kernels for the shared drivers of the
//!   memory-bound ops (`rquant_core::membound`: pooling, add / mul,
//!   clamps, tables, cat, requantize).

// Off x86_64 only the scalar path exists: the SIMD plumbing is unused there.
#![cfg_attr(not(target_arch = "x86_64"), allow(unused, dead_code))]

use std::sync::atomic::{AtomicBool, Ordering};

use rquant_core::engine::{
    Backend, Checked, ConvAddCall, ConvCall, DynamicCall, GemmBackend, Int8Panels, LinearCall,
    MemoryBackend, MinMax, Panels,
};
use rquant_core::gemm::{self as cgemm, Blocking, Gemm, Kernel, PackedB, Store, Table};
use rquant_core::membound as mb;
use rquant_core::portable::{self, Code8};
use rquant_core::{
    Conv2dParams, Engine, MemoryFormat, PackedLinear, PackedLinearFp16, QTensor, QuantError,
    Result, Tensor,
};

mod conv;
mod dwconv;
mod fp16;
mod gconv;
mod gemm;
pub mod igemm;
pub mod isa;
pub mod kernels;
pub mod membound;
pub mod pack;
pub mod peak;
pub mod table;
mod threads;

pub use isa::{Caps, Isa};

use conv::PackedConv;
use fp16::PackedFp16;
use gemm::X86Workers;
use kernels::output::{FloatStage, RawOut, RequantStage, Residual};

/// The x86 engine on one ISA path: the path, what its code may use, and its
/// GEMM kernel table (all proved by detection when the value was made).
#[derive(Debug, Clone, Copy)]
pub struct X86Engine {
    isa: Isa,
    caps: Caps,
    gemm: Table,
    mem: &'static rquant_core::membound::Kernels,
}

impl X86Engine {
    /// The engine on path `isa`, if this CPU has it.
    pub fn new(isa: Isa) -> Option<Self> {
        if !isa.detected() {
            return None;
        }
        Some(X86Engine {
            isa,
            caps: isa.caps(),
            gemm: table::gemm_table(isa),
            mem: membound::kernels(isa)?,
        })
    }
    /// The engine on the path `RQUANT_ISA` and the CPU allow.
    pub fn resolved() -> Option<Self> {
        let req = rquant_core::registry::requested_isa();
        X86Engine::new(Isa::resolve(req.as_deref()))
    }
    /// The resolved path.
    pub fn path(&self) -> Isa {
        self.isa
    }

    /// This engine's panels of a conv weight.
    fn packed_conv<'a>(&self, op: &'static str, c: &ConvCall<'a>) -> Result<&'a PackedConv> {
        match c.w.panels::<PackedConv>() {
            Some(p) if p.isa == self.isa => Ok(p),
            _ => Err(not_ours(op)),
        }
    }

    /// This engine's panels of `w`. The front end only lets weights packed
    /// for this path through, so anything else is an internal error.
    fn packed_b<'a>(&self, op: &'static str, w: &'a PackedLinear) -> Result<&'a PackedB> {
        match w.panels::<LinearPanels>() {
            Some(p) if p.isa == self.isa => Ok(&p.b),
            _ => Err(not_ours(op)),
        }
    }
}

/// A packed linear weight: the shared GEMM panels of this path's kernels.
#[derive(Debug)]
pub struct LinearPanels {
    isa: Isa,
    b: PackedB,
}

impl Panels for LinearPanels {
    fn bytes(&self) -> usize {
        self.b.bytes()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Int8Panels for LinearPanels {
    fn unpack(&self) -> Vec<i8> {
        self.b.unpack()
    }
}

impl LinearPanels {
    /// The packed layouts and the kernels' exactness verdicts for these weights.
    pub fn gemm(&self) -> &PackedB {
        &self.b
    }
}

/// Run one GEMM on the engine's threads with the default blocking.
fn run_gemm<S: cgemm::Stage>(g: &Gemm<'_, S>) {
    cgemm::run(g, &X86Workers, &Blocking::DEFAULT);
}

fn not_ours(op: &'static str) -> QuantError {
    QuantError::invalid(op, "weights were not packed by this x86 path")
}

/// The x86 engine on the best path this CPU has (honouring `RQUANT_ISA`);
/// None off x86_64 or without AVX2.
pub fn engine() -> Option<Engine> {
    let e = X86Engine::resolved()?;
    if !e.caps.avx2 && rquant_core::registry::requested_isa().as_deref() != Some("scalar") {
        // Without AVX2 the engine has nothing over the reference.
        return None;
    }
    Some(Engine::new(e))
}

/// The engine once per ISA path this CPU supports, the fastest first.
pub fn all_paths() -> Vec<Engine> {
    if !Isa::Avx2.detected() {
        return Vec::new();
    }
    Isa::ALL
        .iter()
        .rev()
        .filter_map(|&i| X86Engine::new(i))
        .map(Engine::new)
        .collect()
}

/// Paths this build knows but the CPU lacks (for testers to report).
pub fn missing_paths() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| !i.detected()).collect()
}

/// Largest byte (0 for an empty slice).
fn max_u8(x: &[u8]) -> u8 {
    x.chunks(64)
        .fold(0u8, |m, c| m.max(c.iter().fold(0u8, |a, &b| a.max(b))))
}

/// Quantize one row with the path's kernel; returns whether `src` holds a NaN.
fn quantize8(caps: Caps, src: &[f32], c: Code8, dst: &mut [u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if caps.avx512 {
        // SAFETY: the path's detection proved AVX-512F/BW/VL.
        return unsafe { kernels::quantize_f32u8_row_avx512::quantize_row(src, c, dst) };
    } else if caps.avx2 {
        // SAFETY: the path's detection proved AVX2.
        return unsafe { kernels::quantize_f32u8_row_avx2::quantize_row(src, c, dst) };
    }
    let _ = caps;
    portable::quantize8(src, c, dst)
}

/// Dequantize one row with the path's kernel.
fn dequantize8(caps: Caps, src: &[u8], c: Code8, dst: &mut [f32], stream: bool) {
    #[cfg(target_arch = "x86_64")]
    if caps.avx512 {
        // SAFETY: the path's detection proved AVX-512F/BW/VL.
        return unsafe {
            kernels::dequantize_u8f32_row_avx512::dequantize_row(src, c, dst, stream)
        };
    } else if caps.avx2 {
        // SAFETY: the path's detection proved AVX2.
        return unsafe { kernels::dequantize_u8f32_row_avx2::dequantize_row(src, c, dst) };
    }
    let _ = (caps, stream);
    portable::dequantize8(src, c, dst)
}

/// Elements per task of the threaded quantize / dequantize: large enough to
/// amortise a task, small enough to spread 1M+ element tensors over threads.
const QUANTIZE_CHUNK: usize = 1 << 16;

/// Dequantize calls that move at least this many bytes (1 per code plus 4 per
/// f32) write with non-temporal stores: the output would not stay in cache
/// anyway, and skipping the read-for-ownership of its lines doubled the
/// throughput here. (Quantize writes a quarter of what it reads; streaming
/// its output measured no clear gain.)
const STREAM_BYTES: usize = 32 << 20;

impl Backend for X86Engine {
    fn name(&self) -> &'static str {
        "x86"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["fbgemm"]
    }
    fn isa(&self) -> &'static str {
        self.isa.name()
    }
    fn priority(&self) -> i32 {
        100
    }
}

// Element-wise ops, pooling, clamps, tables, cat and requantize run the
// shared drivers of `rquant_core::membound` on this path's row kernels
// (`membound`); the other memory-bound ops are the trait's defaults.
impl MemoryBackend for X86Engine {
    fn row_kernels(&self) -> Option<&'static mb::Kernels> {
        Some(self.mem)
    }

    fn quantize8(&self, src: &[f32], c: Code8, dst: &mut [u8], _: Checked) -> bool {
        let caps = self.caps;
        if src.len() < 4 * QUANTIZE_CHUNK {
            return quantize8(caps, src, c, dst);
        }
        let nan = AtomicBool::new(false);
        threads::par_chunks1(
            dst,
            QUANTIZE_CHUNK,
            || (),
            |_, i, d| {
                let s = &src[i * QUANTIZE_CHUNK..][..d.len()];
                if quantize8(caps, s, c, d) {
                    nan.store(true, Ordering::Relaxed);
                }
            },
        );
        nan.into_inner()
    }

    fn dequantize8(&self, src: &[u8], c: Code8, dst: &mut [f32], _: Checked) {
        let caps = self.caps;
        if src.len() < 4 * QUANTIZE_CHUNK {
            return dequantize8(caps, src, c, dst, false);
        }
        let stream = src.len() * 5 >= STREAM_BYTES;
        threads::par_chunks1(
            dst,
            QUANTIZE_CHUNK,
            || (),
            |_, i, d| dequantize8(caps, &src[i * QUANTIZE_CHUNK..][..d.len()], c, d, stream),
        );
    }

    fn min_max(&self, x: &[f32], _: Checked) -> MinMax {
        #[cfg(target_arch = "x86_64")]
        if self.caps.avx2 && !x.is_empty() {
            // SAFETY: AVX2 detected (caps come from an engine value); x non-empty.
            let (lo, hi, finite) = unsafe { kernels::output_avx2::min_max_finite(x) };
            return MinMax { lo, hi, finite };
        }
        portable::min_max_finite(x)
    }
}

impl GemmBackend for X86Engine {
    fn pack_linear(&self, w: &QTensor<i8>, _: Checked) -> Result<Box<dyn Int8Panels>> {
        let (n, k) = (w.shape()[0], w.shape()[1]);
        Ok(Box::new(LinearPanels {
            isa: self.isa,
            b: PackedB::new(self.gemm, w.int_repr(), n, k),
        }))
    }

    fn linear(&self, c: &LinearCall<'_>) -> Result<Vec<u8>> {
        let (x, m, w) = (c.x, c.m, c.w);
        let b = self.packed_b("linear", w)?;
        let (n, k) = (w.out_features(), w.in_features());
        let xd = x.int_repr();
        let len = m * n;
        let mut y = Vec::with_capacity(len);
        let stage = RequantStage::new(
            self.caps,
            c.requant,
            0,
            RawOut::uninit(&mut y.spare_capacity_mut()[..len]),
            Store::Rows { base: 0, ld: n },
        );
        let fill = |i: usize, dst: &mut [u8]| dst.copy_from_slice(&xd[i * k..(i + 1) * k]);
        run_gemm(&Gemm {
            b,
            layout: b.select(|| max_u8(xd)),
            m,
            fill: &fill,
            row_sums: !c.requant.zp.zw_all_zero,
            stage: &stage,
        });
        // SAFETY: the GEMM's tiles cover every (row, column) of the m×n
        // output once, and the stage stores every element of each tile.
        unsafe { y.set_len(len) };
        Ok(y)
    }

    fn linear_dynamic(&self, c: &DynamicCall<'_>) -> Result<Vec<f32>> {
        let (x, m, w) = (c.x, c.m, c.w);
        let b = self.packed_b("linear_dynamic", w)?;
        let (n, k) = (w.out_features(), w.in_features());
        let code = c.code;
        let len = m * n;
        let mut y = Vec::with_capacity(len);
        let stage = FloatStage::new(
            self.caps,
            c.dequant,
            w.bias(),
            RawOut::uninit(&mut y.spare_capacity_mut()[..len]),
            Store::Rows { base: 0, ld: n },
        );
        let caps = self.caps;
        // The activation is quantized while it is packed (no NaN here: the
        // front end rejected it).
        let fill = |i: usize, dst: &mut [u8]| {
            quantize8(caps, &x[i * k..(i + 1) * k], code, dst);
        };
        run_gemm(&Gemm {
            b,
            layout: b.select(|| c.x_max),
            m,
            fill: &fill,
            row_sums: !c.dequant.zp.zw_all_zero,
            stage: &stage,
        });
        // SAFETY: the GEMM's tiles cover every (row, column) of the m×n
        // output once, and the stage stores every element of each tile.
        unsafe { y.set_len(len) };
        Ok(y)
    }

    fn pack_linear_fp16(
        &self,
        w: &Tensor,
        bias: Option<&[f32]>,
        _: Checked,
    ) -> Result<Box<dyn Panels>> {
        let (n, k) = (w.shape()[0], w.shape()[1]);
        Ok(Box::new(PackedFp16::new(
            self.isa,
            self.caps,
            w.data(),
            [n, k],
            bias,
        )))
    }

    fn linear_dynamic_fp16(
        &self,
        x: &[f32],
        m: usize,
        w: &PackedLinearFp16,
        _: Checked,
    ) -> Result<Vec<f32>> {
        let p = match w.panels::<PackedFp16>() {
            Some(p) if p.isa == self.isa => p,
            _ => return Err(not_ours("linear_dynamic_fp16")),
        };
        Ok(fp16::linear_fp16(p, x, m, w.bias()))
    }

    fn pack_conv2d(
        &self,
        w: &QTensor<i8>,
        params: Conv2dParams,
        _: Checked,
    ) -> Result<Box<dyn Int8Panels>> {
        Ok(Box::new(PackedConv::new(self.isa, self.gemm, w, params)))
    }

    fn conv2d(&self, c: &ConvCall<'_>) -> Result<Vec<u8>> {
        let p = self.packed_conv("conv2d", c)?;
        Ok(conv::conv2d(self.caps, c, p, None))
    }

    /// NCHW and NHWC (channels-last) both: the conv reads NHWC pixels (an
    /// NCHW input is transposed once per call) and writes the input's format.
    fn conv2d_reads(&self, format: MemoryFormat) -> bool {
        matches!(
            format,
            MemoryFormat::Contiguous | MemoryFormat::ChannelsLast
        )
    }

    /// The residual add in the conv's output stage, on each tile while it
    /// is in L1 (`kernels/residual_add_u8_row_*.rs`).
    fn conv2d_add(&self, c: &ConvAddCall<'_>) -> Result<Vec<u8>> {
        let p = self.packed_conv("conv2d_add", &c.conv)?;
        let res = Residual {
            data: c.other.int_repr(),
            add: c.add,
        };
        Ok(conv::conv2d(self.caps, &c.conv, p, Some(res)))
    }

    fn gemm_kernels(&self) -> &'static [Kernel] {
        self.gemm.kernels()
    }
}
