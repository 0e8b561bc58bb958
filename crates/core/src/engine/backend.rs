//! The backend traits engines implement, split by op family. They are for
//! engine crates, not for users: every method takes a [`Checked`] token or a
//! call value carrying one, which only the front end ([`super::Engine`]) can
//! make after validating, so a backend can assume its input is valid and no
//! caller can skip the validation.
//!
//! - [`GemmBackend`]: pack and run linear, dynamic linear, fp16 linear, conv.
//! - [`MemoryBackend`]: the memory-bound ops, each defaulting to the plain
//!   loops of [`crate::portable`] (the oracle); an engine overrides what it
//!   vectorises.
//! - [`Backend`]: identity and capabilities.

use crate::error::Result;
use crate::membound as mb;
use crate::ops::{AvgPool2dParams, BinaryOp, ConvGeometry, MaxPool2dParams, OutQ, PoolGeometry};
use crate::output::{Dequant, Requant, ResidualAdd};
use crate::params::{EmbeddingBagMode, NormParams};
use crate::portable::{self, Code8};
use crate::portable::{Bags, EmbeddingBagTable, MatmulGeometry, UpsampleGeometry};
use crate::tensor::{MemoryFormat, QTensor, Tensor};
use crate::Conv2dParams;

use super::packed::{Int8Panels, PackedConv2d, PackedLinear, PackedLinearFp16, Panels};

/// Proof that the front end validated the call. Only `rquant_core` makes one.
#[derive(Debug, Clone, Copy)]
pub struct Checked(());

impl Checked {
    pub(crate) fn new() -> Self {
        Checked(())
    }
}

/// Static linear: `x` is `[m, K]` quint8 per-tensor (any leading shape,
/// `m` rows); the result is `[m, N]` quint8, every element through `requant`.
#[derive(Debug)]
pub struct LinearCall<'a> {
    pub x: &'a QTensor<u8>,
    pub m: usize,
    pub w: &'a PackedLinear,
    /// The output qparams `requant` was computed for.
    pub out: OutQ,
    pub requant: &'a Requant,
    pub checked: Checked,
}

/// Dynamic linear: `x` is `[m, K]` finite f32, quantized with `code` while
/// it is packed (its largest code is `x_max`); the result is `[m, N]` f32
/// through `dequant` and the weight's bias.
#[derive(Debug)]
pub struct DynamicCall<'a> {
    pub x: &'a [f32],
    pub m: usize,
    pub w: &'a PackedLinear,
    pub code: Code8,
    pub x_max: u8,
    pub dequant: &'a Dequant,
    pub checked: Checked,
}

/// Static conv2d: `x` quint8 NCHW per-tensor with geometry `g`; the result
/// is quint8 NCHW `[n, o, oh, ow]` through `requant`.
#[derive(Debug)]
pub struct ConvCall<'a> {
    pub x: &'a QTensor<u8>,
    pub g: &'a ConvGeometry,
    pub w: &'a PackedConv2d,
    /// The output qparams `requant` was computed for.
    pub out: OutQ,
    pub requant: &'a Requant,
    pub checked: Checked,
}

/// Static conv2d followed by a residual add ([`ResidualAdd`]): `conv` as
/// for [`GemmBackend::conv2d`] (its `requant` gives the conv's own output
/// codes), then each output code `q` becomes `add.apply(q, other[i])`, `i`
/// the same storage index. `other` has the conv output's shape and is
/// stored in the same memory format as `conv.x`.
#[derive(Debug)]
pub struct ConvAddCall<'a> {
    pub conv: ConvCall<'a>,
    pub other: &'a QTensor<u8>,
    pub add: &'a ResidualAdd,
}

/// Min, max and finiteness of a float slice, in one pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinMax {
    /// Smallest and largest values (0, 0 for an empty slice); meaningful
    /// only when `finite`.
    pub lo: f32,
    pub hi: f32,
    /// No NaN and no infinity.
    pub finite: bool,
}

/// The GEMM-like ops: packing and running linear and conv.
pub trait GemmBackend {
    /// Pack a validated `[N, K]` qint8 weight (per-tensor or per-channel on axis 0).
    fn pack_linear(&self, w: &QTensor<i8>, c: Checked) -> Result<Box<dyn Int8Panels>>;
    fn linear(&self, call: &LinearCall<'_>) -> Result<Vec<u8>>;
    fn linear_dynamic(&self, call: &DynamicCall<'_>) -> Result<Vec<f32>>;
    /// Pack a validated f32 `[N, K]` weight as fp16 (clamped to ±65504, then
    /// rounded), with its bias (which a backend may lay out with the panels).
    fn pack_linear_fp16(
        &self,
        w: &Tensor,
        bias: Option<&[f32]>,
        c: Checked,
    ) -> Result<Box<dyn Panels>>;
    /// Dynamic linear with fp16 weights: `x` is `[m, K]` f32.
    fn linear_dynamic_fp16(
        &self,
        x: &[f32],
        m: usize,
        w: &PackedLinearFp16,
        c: Checked,
    ) -> Result<Vec<f32>>;
    /// Pack a validated `[O, I/groups, kH, kW]` conv weight.
    fn pack_conv2d(
        &self,
        w: &QTensor<i8>,
        params: Conv2dParams,
        c: Checked,
    ) -> Result<Box<dyn Int8Panels>>;
    /// Static conv2d. The input is in a memory format [`GemmBackend::conv2d_reads`]
    /// accepts; the output must be in the same format.
    fn conv2d(&self, call: &ConvCall<'_>) -> Result<Vec<u8>>;
    /// Whether [`GemmBackend::conv2d`] (and [`GemmBackend::conv2d_add`])
    /// reads and writes `format` directly; otherwise the front end hands it
    /// contiguous NCHW and converts.
    fn conv2d_reads(&self, format: MemoryFormat) -> bool {
        format == MemoryFormat::Contiguous
    }
    /// Conv2d with a residual add in its output stage. The default runs the
    /// two ops one after the other (the definition); an engine may fuse the
    /// add into the conv's output stage, with the same bits.
    fn conv2d_add(&self, call: &ConvAddCall<'_>) -> Result<Vec<u8>> {
        let mut y = self.conv2d(&call.conv)?;
        call.add.apply_in_place(&mut y, call.other.int_repr());
        Ok(y)
    }
    /// Quantized matmul of contiguous quint8 operands (geometry validated).
    fn matmul_u8(
        &self,
        a: &QTensor<u8>,
        b: &QTensor<u8>,
        g: &MatmulGeometry,
        out: OutQ,
        _: Checked,
    ) -> Result<Vec<u8>> {
        portable::matmul(a, b, g, out)
    }
    /// Quantized matmul of contiguous qint8 operands (geometry validated).
    fn matmul_i8(
        &self,
        a: &QTensor<i8>,
        b: &QTensor<i8>,
        g: &MatmulGeometry,
        out: OutQ,
        _: Checked,
    ) -> Result<Vec<i8>> {
        portable::matmul(a, b, g, out)
    }
    /// The int8 GEMM microkernels of this path ([`crate::gemm`]), preferred
    /// first; empty for a backend without kernel tables (the reference).
    fn gemm_kernels(&self) -> &'static [crate::gemm::Kernel] {
        &[]
    }
}

/// The memory-bound ops, on validated per-tensor quint8 tensors. Each
/// default is the portable oracle, or, for a backend that hands out a
/// row-kernel table ([`MemoryBackend::row_kernels`]), the shared drivers of
/// [`crate::membound`] over that table.
pub trait MemoryBackend {
    /// This path's row kernels for the shared memory-bound drivers (None:
    /// the portable definitions, as the reference engine runs them).
    fn row_kernels(&self) -> Option<&'static mb::Kernels> {
        None
    }
    /// `a` and `b` have the same shape.
    fn binary(
        &self,
        op: BinaryOp,
        a: &QTensor<u8>,
        b: &QTensor<u8>,
        out: OutQ,
        _: Checked,
    ) -> Result<Vec<u8>> {
        let table = self.row_kernels().and_then(|k| {
            mb::try_filled(a.numel(), |y| mb::binary(k, &mb::Pool, op, a, b, out, y))
        });
        table.map_or_else(|| portable::binary(op, a, b, out), Ok)
    }
    /// `b` broadcast to `a`'s logical shape (validated); the output in `a`'s
    /// storage order.
    fn binary_broadcast(
        &self,
        op: BinaryOp,
        a: &QTensor<u8>,
        b: &QTensor<u8>,
        out: OutQ,
        _: Checked,
    ) -> Result<Vec<u8>> {
        let table = self.row_kernels().and_then(|k| {
            mb::try_filled(a.numel(), |y| {
                mb::binary_broadcast(k, &mb::Pool, op, a, b, out, y)
            })
        });
        table.map_or_else(|| portable::binary_broadcast(op, a, b, out), Ok)
    }
    /// Concatenation of `[outer, d_i, inner]` blocks along the middle axis
    /// (in storage order: the front end maps the logical dimension).
    fn cat(
        &self,
        xs: &[&QTensor<u8>],
        outer: usize,
        inner: usize,
        out: OutQ,
        _: Checked,
    ) -> Result<Vec<u8>> {
        let Some(k) = self.row_kernels() else {
            return portable::cat(xs, outer, inner, out);
        };
        let len = xs.iter().map(|x| x.numel()).sum();
        Ok(mb::filled(len, |y| {
            mb::cat(k, &mb::Pool, xs, outer, out, y)
        }))
    }
    fn relu(&self, x: &QTensor<u8>, c: Checked) -> Result<Vec<u8>> {
        if self.row_kernels().is_none() {
            return portable::relu(x);
        }
        let z = x.q_per_tensor().expect("validated").1 as u8;
        self.clamp(x, z, 255, c)
    }
    fn max_pool2d(
        &self,
        x: &QTensor<u8>,
        g: &PoolGeometry,
        p: &MaxPool2dParams,
        _: Checked,
    ) -> Result<Vec<u8>> {
        let Some(k) = self.row_kernels() else {
            return portable::max_pool2d(x, g, p);
        };
        Ok(mb::filled(g.n * g.c * g.oh * g.ow, |y| {
            mb::max_pool2d(k, &mb::Pool, x, g, p, y)
        }))
    }
    /// The table drivers read channels-last input; contiguous input takes
    /// the portable definition.
    fn avg_pool2d(
        &self,
        x: &QTensor<u8>,
        g: &PoolGeometry,
        p: &AvgPool2dParams,
        _: Checked,
    ) -> Result<Vec<u8>> {
        match self.row_kernels() {
            Some(k) if x.memory_format() == MemoryFormat::ChannelsLast => {
                Ok(mb::filled(g.n * g.c * g.oh * g.ow, |y| {
                    mb::avg_pool2d(k, &mb::Pool, x, g, p, y)
                }))
            }
            _ => portable::avg_pool2d(x, g, p),
        }
    }
    /// As [`MemoryBackend::avg_pool2d`]: the table drivers on channels-last input.
    fn adaptive_avg_pool2d(
        &self,
        x: &QTensor<u8>,
        g: &PoolGeometry,
        _: Checked,
    ) -> Result<Vec<u8>> {
        match self.row_kernels() {
            Some(k) if x.memory_format() == MemoryFormat::ChannelsLast => {
                Ok(mb::filled(g.n * g.c * g.oh * g.ow, |y| {
                    mb::adaptive_avg_pool2d(k, &mb::Pool, x, g, y)
                }))
            }
            _ => portable::adaptive_avg_pool2d(x, g),
        }
    }
    fn hardswish(&self, x: &QTensor<u8>, out: OutQ, c: Checked) -> Result<Vec<u8>> {
        if self.row_kernels().is_none() {
            return portable::hardswish(x, out);
        }
        let (s, z) = x.q_per_tensor().expect("validated");
        self.lut(x, &portable::hardswish_lut(s, z, out), c)
    }
    fn sigmoid(&self, x: &QTensor<u8>, out: OutQ, c: Checked) -> Result<Vec<u8>> {
        if self.row_kernels().is_none() {
            return portable::sigmoid(x, out);
        }
        let (s, z) = x.q_per_tensor().expect("validated");
        self.lut(x, &portable::sigmoid_lut(s, z, out), c)
    }
    /// Quantize `src` into `dst` (equal lengths); returns whether `src` holds a NaN.
    fn quantize8(&self, src: &[f32], c: Code8, dst: &mut [u8], _: Checked) -> bool {
        portable::quantize8(src, c, dst)
    }
    /// Dequantize `src` into `dst` (equal lengths).
    fn dequantize8(&self, src: &[u8], c: Code8, dst: &mut [f32], _: Checked) {
        portable::dequantize8(src, c, dst)
    }
    /// Min, max and finiteness of `x` in one pass (dynamic linear's input scan).
    fn min_max(&self, x: &[f32], _: Checked) -> MinMax {
        portable::min_max_finite(x)
    }

    // Ops added for the next releases; `x` in either memory format unless
    // said, the output in `x`'s storage order.

    /// `min(max(q, lo), hi)` (hardtanh, relu6).
    fn clamp(&self, x: &QTensor<u8>, lo: u8, hi: u8, _: Checked) -> Result<Vec<u8>> {
        let Some(k) = self.row_kernels() else {
            return portable::clamp(x, lo, hi);
        };
        Ok(mb::filled(x.numel(), |y| {
            mb::clamp(k, &mb::Pool, x.int_repr(), lo, hi, y)
        }))
    }
    /// `table[q]` for every element: every activation that is a function of
    /// one code (hardsigmoid, leaky_relu, elu, tanh, gelu).
    fn lut(&self, x: &QTensor<u8>, table: &[u8; 256], c: Checked) -> Result<Vec<u8>> {
        Ok(self.lut_bytes(x.int_repr(), table, c))
    }
    /// `table[b]` for every byte of `src`, whatever the 8-bit dtype the
    /// bytes encode: requantize between quint8 / qint8 per-tensor codes.
    fn lut_bytes(&self, src: &[u8], table: &[u8; 256], _: Checked) -> Vec<u8> {
        match self.row_kernels() {
            Some(k) => mb::filled(src.len(), |y| mb::lut(k, &mb::Pool, src, table, y)),
            None => portable::apply_lut(table, src),
        }
    }
    /// Channel shuffle of a 4-D tensor (`groups` divides C).
    fn channel_shuffle(&self, x: &QTensor<u8>, groups: usize, _: Checked) -> Result<Vec<u8>> {
        portable::channel_shuffle(x, groups)
    }
    /// Constant padding of the last two dimensions (`[left, right, top,
    /// bottom]`, negative crops; the output shape is validated).
    fn constant_pad2d(
        &self,
        x: &QTensor<u8>,
        pad: [i64; 4],
        fill: u8,
        _: Checked,
    ) -> Result<Vec<u8>> {
        portable::constant_pad2d(x, pad, fill)
    }
    fn upsample_nearest2d(
        &self,
        x: &QTensor<u8>,
        g: &UpsampleGeometry,
        _: Checked,
    ) -> Result<Vec<u8>> {
        portable::upsample_nearest2d(x, g)
    }
    fn upsample_bilinear2d(
        &self,
        x: &QTensor<u8>,
        g: &UpsampleGeometry,
        align_corners: bool,
        _: Checked,
    ) -> Result<Vec<u8>> {
        portable::upsample_bilinear2d(x, g, align_corners)
    }
    /// Mean over the flagged dimensions of a contiguous tensor.
    fn mean(&self, x: &QTensor<u8>, reduce: &[bool], _: Checked) -> Result<Vec<u8>> {
        portable::mean(x, reduce)
    }
    /// Softmax along `dim` of a contiguous tensor.
    fn softmax(&self, x: &QTensor<u8>, dim: usize, out: OutQ, _: Checked) -> Result<Vec<u8>> {
        portable::softmax(x, dim, out)
    }
    /// Batch norm of a 4-D tensor with fused per-channel coefficients.
    fn batch_norm(
        &self,
        x: &QTensor<u8>,
        alpha: &[f32],
        beta: &[f32],
        out_zero_point: i64,
        relu: bool,
        _: Checked,
    ) -> Result<Vec<u8>> {
        portable::batch_norm(x, alpha, beta, out_zero_point, relu)
    }
    /// Layer norm of a contiguous tensor over groups of `n` trailing elements.
    fn layer_norm(
        &self,
        x: &QTensor<u8>,
        n: usize,
        p: &NormParams<'_>,
        out: OutQ,
        _: Checked,
    ) -> Result<Vec<u8>> {
        portable::layer_norm(x, n, p.weight, p.bias, p.eps, out)
    }
    /// Group norm of a contiguous `[N, C, *]` tensor.
    fn group_norm(
        &self,
        x: &QTensor<u8>,
        groups: usize,
        p: &NormParams<'_>,
        out: OutQ,
        _: Checked,
    ) -> Result<Vec<u8>> {
        portable::group_norm(x, groups, p.weight, p.bias, p.eps, out)
    }
    /// Row-wise quantized embedding bags; `[bags, dim]` f32.
    fn embedding_bag(
        &self,
        table: &EmbeddingBagTable,
        bags: &Bags<'_>,
        per_sample_weights: Option<&[f32]>,
        mode: EmbeddingBagMode,
        _: Checked,
    ) -> Result<Vec<f32>> {
        portable::embedding_bag(table, bags, per_sample_weights, mode)
    }
}

/// An engine backend: identity, capabilities and both op families.
pub trait Backend: GemmBackend + MemoryBackend + Send + Sync + 'static {
    /// The engine's name, as `torch.backends.quantized.engine` ("reference", "x86", "qnnpack").
    fn name(&self) -> &'static str;
    /// Other names accepted by `set_engine` (e.g. "fbgemm" for "x86").
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// The ISA path this backend resolved at construction (e.g. "avx2", "scalar").
    fn isa(&self) -> &'static str;
    /// Higher wins when the registry picks a default.
    fn priority(&self) -> i32 {
        0
    }
    /// Int8 products are accumulated in int32 without any intermediate
    /// saturation, for every input (fbgemm's and ONNX Runtime's AVX2
    /// `vpmaddubsw` paths are not). Every rquant backend says yes.
    fn accumulates_exactly(&self) -> bool {
        true
    }
    /// Whether PyTorch's dynamic quantized Linear/RNN modules halve the
    /// activation range (`reduce_range`) under this engine: yes under
    /// x86/fbgemm, no under qnnpack.
    fn dynamic_reduce_range(&self) -> bool {
        true
    }
}
