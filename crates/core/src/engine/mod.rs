//! The engine front end: [`Engine`], a cheap handle over one backend on one
//! ISA path. Its methods are the public API of every int8 op. Each validates
//! its arguments (so every engine rejects bad input with the same error),
//! computes what docs/numerics.md derives from them (output geometry, the
//! output stage, dynamic qparams), and only then calls the backend through
//! the traits of [`backend`], whose calls carry a [`Checked`] token nobody
//! else can make. Nothing here can be overridden by an engine.
//!
//! Packed weights record the path they were packed for; running them on
//! another path is an error naming both, and [`Engine::repack_linear`] (and
//! friends) moves them visibly.

use std::fmt;
use std::sync::Arc;

use crate::dtype::{QDType, QType};
use crate::error::{QuantError, Result};
use crate::numerics::{self, choose_qparams};
use crate::ops::*;
use crate::output::Clamp;
use crate::portable::Code8;
use crate::tensor::{check_scale, check_zero_point, MemoryFormat, QParams, QTensor, Tensor};

mod activation;
pub mod backend;
mod checks;
mod conv;
mod embedding;
mod norm;
mod packed;
mod reduce;
mod shape;

pub use backend::{
    Backend, Checked, ConvCall, DynamicCall, GemmBackend, LinearCall, MemoryBackend, MinMax,
};
pub use conv::{PackedConv1d, PackedConv3d, PackedConvTranspose2d};
pub use packed::{Int8Panels, PackedConv2d, PackedLinear, PackedLinearFp16, Panels, PathId};

use checks::*;
use packed::Int8Meta;

/// An int8 engine on one ISA path (`x86` on `avx512vnni`, `reference`, …).
/// Clone it freely: it is a reference-counted handle.
#[derive(Clone)]
pub struct Engine {
    b: Arc<dyn Backend>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Engine({})", self.path())
    }
}

impl PartialEq for Engine {
    /// Two handles are equal when they run the same path.
    fn eq(&self, other: &Self) -> bool {
        self.path() == other.path()
    }
}

fn ensure_packed_for(op: &'static str, packed_for: PathId, e: &Engine) -> Result<()> {
    if packed_for != e.path() {
        return Err(QuantError::WrongEngine {
            op,
            packed_for: packed_for.to_string(),
            engine: e.path().to_string(),
        });
    }
    Ok(())
}

/// Whether shape `b` broadcasts to shape `a` (right-aligned, each of `b`'s
/// dimensions 1 or equal to `a`'s).
fn broadcasts_to(b: &[usize], a: &[usize]) -> bool {
    b.len() <= a.len()
        && b.iter()
            .rev()
            .zip(a.iter().rev())
            .all(|(&x, &y)| x == 1 || x == y)
}

fn check_clamp(op: &'static str, c: Clamp) -> Result<()> {
    if c.lo > c.hi {
        return Err(QuantError::invalid(
            op,
            format!("clamp [{}, {}] is empty", c.lo, c.hi),
        ));
    }
    Ok(())
}

fn out_q(op: &'static str, scale: f64, zero_point: i64) -> Result<OutQ> {
    let out = OutQ { scale, zero_point };
    check_out(op, out)?;
    Ok(out)
}

impl Engine {
    /// The handle of a backend (engine crates call this once per path).
    pub fn new(backend: impl Backend) -> Engine {
        Engine {
            b: Arc::new(backend),
        }
    }

    /// The engine's name, as `torch.backends.quantized.engine` ("reference", "x86", "qnnpack").
    pub fn name(&self) -> &'static str {
        self.b.name()
    }
    /// Other names `set_engine` accepts (e.g. "fbgemm" for "x86").
    pub fn aliases(&self) -> &'static [&'static str] {
        self.b.aliases()
    }
    /// The ISA path the engine resolved (e.g. "avx2", "scalar").
    pub fn isa(&self) -> &'static str {
        self.b.isa()
    }
    /// Engine and ISA path together.
    pub fn path(&self) -> PathId {
        PathId {
            engine: self.b.name(),
            isa: self.b.isa(),
        }
    }
    /// Higher wins when the registry picks a default.
    pub fn priority(&self) -> i32 {
        self.b.priority()
    }
    /// Int8 products accumulate exactly in int32 for every input.
    pub fn accumulates_exactly(&self) -> bool {
        self.b.accumulates_exactly()
    }
    /// The int8 GEMM microkernels of this path, preferred first (empty for
    /// the reference): their tiles, exactness checks and call counters.
    pub fn gemm_kernels(&self) -> &'static [crate::gemm::Kernel] {
        self.b.gemm_kernels()
    }
    /// Whether dynamic quantized Linear/RNN modules use `reduce_range` under
    /// this engine (PyTorch: yes under x86/fbgemm, no under qnnpack).
    pub fn dynamic_reduce_range(&self) -> bool {
        self.b.dynamic_reduce_range()
    }

    // ---- GEMM-like ops ----

    /// Prepack a quantized linear weight `[N, K]` (qint8, per-tensor or
    /// per-channel along axis 0) with an optional f32 bias `[N]`.
    pub fn pack_linear(&self, w: QTensor<i8>, bias: Option<Vec<f32>>) -> Result<PackedLinear> {
        const OP: &str = "pack_linear";
        if w.ndim() != 2 {
            return Err(QuantError::InvalidShape {
                op: OP,
                shape: w.shape().to_vec(),
                detail: "linear weight must be [out_features, in_features]".into(),
            });
        }
        check_nonempty(OP, w.shape())?;
        check_weight_qparams(OP, &w)?;
        check_bias(OP, bias.as_deref(), w.shape()[0])?;
        let panels = self.b.pack_linear(&w, Checked::new())?;
        Ok(PackedLinear {
            meta: Int8Meta::new(&w, bias, self.path(), panels),
        })
    }

    /// The same weights packed for this engine's path (unpacked from the
    /// panels of whichever path packed them).
    pub fn repack_linear(&self, w: &PackedLinear) -> Result<PackedLinear> {
        self.pack_linear(w.weight(), w.bias().map(<[f32]>::to_vec))
    }

    /// Static quantized linear (`torch.ops.quantized.linear`): quint8 `[..., K]`
    /// in, quint8 `[..., N]` out with the given output qparams; `relu` fuses
    /// `LinearReLU`.
    pub fn linear(
        &self,
        x: &QTensor<u8>,
        w: &PackedLinear,
        out_scale: f64,
        out_zero_point: i64,
        relu: bool,
    ) -> Result<QTensor<u8>> {
        let clamp = Clamp::relu(out_zero_point, relu);
        self.linear_clamped(x, w, out_scale, out_zero_point, clamp)
    }

    /// [`Engine::linear`] with the output clamped to `[clamp.lo, clamp.hi]`
    /// (quantized domain) instead of a fused ReLU: a fused ReLU6 or hardtanh.
    pub fn linear_clamped(
        &self,
        x: &QTensor<u8>,
        w: &PackedLinear,
        out_scale: f64,
        out_zero_point: i64,
        clamp: Clamp,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "linear";
        check_clamp(OP, clamp)?;
        ensure_packed_for(OP, w.packed_for(), self)?;
        let xq = per_tensor_q(OP, x)?;
        // Linear reads rows of the logical last dimension.
        let xc;
        let x = if x.memory_format() == MemoryFormat::Contiguous {
            x
        } else {
            xc = x.to_format(MemoryFormat::Contiguous);
            &xc
        };
        let out = out_q(OP, out_scale, out_zero_point)?;
        let m = rows_for_k(OP, x.shape(), w.in_features())?;
        check_nonempty(OP, x.shape())?;
        let requant = w.meta.requant(xq, (out_scale, out_zero_point), clamp);
        let data = self.b.linear(&LinearCall {
            x,
            m,
            w,
            out,
            requant: &requant,
            checked: Checked::new(),
        })?;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("validated") = w.out_features();
        Ok(QTensor::new_per_tensor_unchecked(
            shape,
            data,
            out_scale,
            out_zero_point,
        ))
    }

    /// Dynamic quantized linear (`torch.ops.quantized.linear_dynamic`): f32 in
    /// and out; the activation is quantized per call with the qparams PyTorch's
    /// C++ chooser picks (`reduce_range` halves the activation range).
    pub fn linear_dynamic(
        &self,
        x: &Tensor,
        w: &PackedLinear,
        reduce_range: bool,
    ) -> Result<Tensor> {
        const OP: &str = "linear_dynamic";
        ensure_packed_for(OP, w.packed_for(), self)?;
        let m = rows_for_k(OP, x.shape(), w.in_features())?;
        check_nonempty(OP, x.shape())?;
        // One pass over the input: range and finiteness together; the
        // offending index is searched for only on failure.
        let mm = self.b.min_max(x.data(), Checked::new());
        if !mm.finite {
            if let Some(index) = x.data().iter().position(|v| v.is_nan()) {
                return Err(QuantError::NaN { op: OP, index });
            }
            let i = x.data().iter().position(|v| v.is_infinite()).unwrap_or(0);
            return Err(QuantError::invalid(
                OP,
                format!("input[{i}] is infinite: no finite qparams cover it"),
            ));
        }
        let qp = choose_qparams(mm.lo, mm.hi, 0, 255, reduce_range);
        let code = Code8::new(QDType::QUInt8, qp.scale, qp.zero_point).expect("8-bit");
        // Quantization is monotonic: the largest input gives the largest code.
        let x_max = numerics::quantize_val::<u8>(code.inv, qp.zero_point, mm.hi);
        let dequant = w.meta.dequant(qp.scale, qp.zero_point);
        let data = self.b.linear_dynamic(&DynamicCall {
            x: x.data(),
            m,
            w,
            code,
            x_max,
            dequant: &dequant,
            checked: Checked::new(),
        })?;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("validated") = w.out_features();
        Tensor::new(shape, data)
    }

    /// Prepack an f32 weight `[N, K]` as fp16 (clamped to ±65504, then rounded).
    pub fn pack_linear_fp16(&self, w: Tensor, bias: Option<Vec<f32>>) -> Result<PackedLinearFp16> {
        const OP: &str = "pack_linear_fp16";
        if w.ndim() != 2 {
            return Err(QuantError::InvalidShape {
                op: OP,
                shape: w.shape().to_vec(),
                detail: "linear weight must be [out_features, in_features]".into(),
            });
        }
        check_nonempty(OP, w.shape())?;
        if let Some(index) = w.data().iter().position(|v| v.is_nan()) {
            return Err(QuantError::NaN { op: OP, index });
        }
        check_bias(OP, bias.as_deref(), w.shape()[0])?;
        let panels = self
            .b
            .pack_linear_fp16(&w, bias.as_deref(), Checked::new())?;
        Ok(PackedLinearFp16 {
            weight: w,
            bias,
            packed_for: self.path(),
            panels,
        })
    }

    /// The same fp16 weights packed for this engine's path.
    pub fn repack_linear_fp16(&self, w: &PackedLinearFp16) -> Result<PackedLinearFp16> {
        self.pack_linear_fp16(w.weight().clone(), w.bias().map(<[f32]>::to_vec))
    }

    /// Dynamic linear with fp16 weights: f32 in and out.
    pub fn linear_dynamic_fp16(&self, x: &Tensor, w: &PackedLinearFp16) -> Result<Tensor> {
        const OP: &str = "linear_dynamic_fp16";
        ensure_packed_for(OP, w.packed_for(), self)?;
        let m = rows_for_k(OP, x.shape(), w.in_features())?;
        check_nonempty(OP, x.shape())?;
        let data = self.b.linear_dynamic_fp16(x.data(), m, w, Checked::new())?;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("validated") = w.out_features();
        Tensor::new(shape, data)
    }

    /// Prepack a conv2d weight `[O, I/groups, kH, kW]` with optional bias `[O]`.
    pub fn pack_conv2d(
        &self,
        w: QTensor<i8>,
        bias: Option<Vec<f32>>,
        params: Conv2dParams,
    ) -> Result<PackedConv2d> {
        const OP: &str = "pack_conv2d";
        let [o, _, _, _] = check_4d(OP, w.shape())?;
        check_nonempty(OP, w.shape())?;
        check_weight_qparams(OP, &w)?;
        nonzero(OP, "stride", &params.stride)?;
        nonzero(OP, "dilation", &params.dilation)?;
        if params.groups == 0 || o % params.groups != 0 {
            return Err(QuantError::invalid(
                OP,
                format!(
                    "groups {} must be positive and divide out_channels {o}",
                    params.groups
                ),
            ));
        }
        check_bias(OP, bias.as_deref(), o)?;
        let panels = self.b.pack_conv2d(&w, params, Checked::new())?;
        Ok(PackedConv2d {
            meta: Int8Meta::new(&w, bias, self.path(), panels),
            params,
        })
    }

    /// The same conv weights packed for this engine's path.
    pub fn repack_conv2d(&self, w: &PackedConv2d) -> Result<PackedConv2d> {
        self.pack_conv2d(w.weight(), w.bias().map(<[f32]>::to_vec), w.params())
    }

    /// Static quantized conv2d: quint8 NCHW in and out; `relu` fuses `ConvReLU2d`.
    pub fn conv2d(
        &self,
        x: &QTensor<u8>,
        w: &PackedConv2d,
        out_scale: f64,
        out_zero_point: i64,
        relu: bool,
    ) -> Result<QTensor<u8>> {
        let clamp = Clamp::relu(out_zero_point, relu);
        self.conv2d_clamped(x, w, out_scale, out_zero_point, clamp)
    }

    /// [`Engine::conv2d`] with the output clamped to `[clamp.lo, clamp.hi]`
    /// (quantized domain) instead of a fused ReLU.
    pub fn conv2d_clamped(
        &self,
        x: &QTensor<u8>,
        w: &PackedConv2d,
        out_scale: f64,
        out_zero_point: i64,
        clamp: Clamp,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "conv2d";
        check_clamp(OP, clamp)?;
        ensure_packed_for(OP, w.packed_for(), self)?;
        let xq = per_tensor_q(OP, x)?;
        let out = out_q(OP, out_scale, out_zero_point)?;
        let [n, c, h, wd] = check_4d(OP, x.shape())?;
        check_nonempty(OP, x.shape())?;
        let [o, cg, kh, kw] = check_4d(OP, w.weight_shape())?;
        let p = w.params();
        if cg * p.groups != c {
            return Err(QuantError::shape(
                OP,
                format!(
                    "input has {c} channels but the weight {:?} with groups {} expects {}",
                    w.weight_shape(),
                    p.groups,
                    cg * p.groups
                ),
            ));
        }
        let oh = conv_out_len(h, kh, p.stride[0], p.padding[0], p.dilation[0]);
        let ow = conv_out_len(wd, kw, p.stride[1], p.padding[1], p.dilation[1]);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(QuantError::shape(
                OP,
                format!("kernel {kh}x{kw} (dilation {:?}) does not fit input {h}x{wd} with padding {:?}", p.dilation, p.padding),
            ));
        };
        let g = ConvGeometry {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            oh,
            ow,
            params: p,
        };
        let requant = w.meta.requant(xq, (out_scale, out_zero_point), clamp);
        // The output keeps the input's memory format (as PyTorch's). A
        // backend that cannot read this format gets a contiguous copy.
        let format = x.memory_format();
        let xc;
        let x_in = if self.b.conv2d_reads(format) {
            x
        } else {
            xc = x.to_format(MemoryFormat::Contiguous);
            &xc
        };
        let data = self.b.conv2d(&ConvCall {
            x: x_in,
            g: &g,
            w,
            out,
            requant: &requant,
            checked: Checked::new(),
        })?;
        let y = QTensor::new_per_tensor_unchecked_in(
            g.out_shape(),
            data,
            out_scale,
            out_zero_point,
            x_in.memory_format(),
        );
        Ok(y.into_format(format))
    }

    // ---- memory-bound ops ----

    /// Quantized element-wise add / add_relu / mul (`torch.ops.quantized.add`
    /// …), with PyTorch's broadcasting when one operand's shape broadcasts to
    /// the other's (`[N,C,1,1]` against `[N,C,H,W]`, as squeeze-excitation
    /// does). The output has the larger operand's shape and memory format.
    pub fn binary(
        &self,
        op: BinaryOp,
        a: &QTensor<u8>,
        b: &QTensor<u8>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        let name = op.name();
        per_tensor_q(name, a)?;
        per_tensor_q(name, b)?;
        let out = out_q(name, out_scale, out_zero_point)?;
        check_nonempty(name, a.shape())?;
        check_nonempty(name, b.shape())?;
        let data;
        // Add and mul are symmetric bit for bit (an f32 sum, an exact
        // product and a symmetric multiplier), so the larger operand goes first.
        let (a, b) = if a.shape() != b.shape() && broadcasts_to(a.shape(), b.shape()) {
            (b, a)
        } else {
            (a, b)
        };
        if a.shape() == b.shape() {
            let bc;
            let b = if b.memory_format() == a.memory_format() {
                b
            } else {
                bc = b.to_format(a.memory_format());
                &bc
            };
            data = self.b.binary(op, a, b, out, Checked::new())?;
        } else if broadcasts_to(b.shape(), a.shape()) {
            data = self.b.binary_broadcast(op, a, b, out, Checked::new())?;
        } else {
            return Err(QuantError::shape(
                name,
                format!(
                    "a {:?} and b {:?} do not broadcast (one must broadcast to the other)",
                    a.shape(),
                    b.shape()
                ),
            ));
        }
        Ok(QTensor::new_per_tensor_unchecked_in(
            a.shape().to_vec(),
            data,
            out_scale,
            out_zero_point,
            a.memory_format(),
        ))
    }
    pub fn add(
        &self,
        a: &QTensor<u8>,
        b: &QTensor<u8>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        self.binary(BinaryOp::Add, a, b, out_scale, out_zero_point)
    }
    pub fn add_relu(
        &self,
        a: &QTensor<u8>,
        b: &QTensor<u8>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        self.binary(BinaryOp::AddRelu, a, b, out_scale, out_zero_point)
    }
    pub fn mul(
        &self,
        a: &QTensor<u8>,
        b: &QTensor<u8>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        self.binary(BinaryOp::Mul, a, b, out_scale, out_zero_point)
    }

    /// Quantized concatenation along `dim` (negative counts from the end),
    /// requantized to the output qparams.
    pub fn cat(
        &self,
        xs: &[&QTensor<u8>],
        dim: i64,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "cat";
        let first = xs
            .first()
            .ok_or_else(|| QuantError::invalid(OP, "no inputs"))?;
        let out = out_q(OP, out_scale, out_zero_point)?;
        let dim = crate::quant::normalize_axis(OP, dim, first.ndim())?;
        let mut total = 0usize;
        for (i, x) in xs.iter().enumerate() {
            per_tensor_q(OP, x)?;
            let same_rank = x.ndim() == first.ndim();
            let same_other = same_rank
                && x.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(d, (a, b))| d == dim || a == b);
            if !same_other {
                return Err(QuantError::shape(
                    OP,
                    format!(
                        "input {i} has shape {:?}, incompatible with {:?} along dim {dim}",
                        x.shape(),
                        first.shape()
                    ),
                ));
            }
            total += x.shape()[dim];
        }
        let mut shape = first.shape().to_vec();
        shape[dim] = total;
        check_nonempty(OP, &shape)?;
        // Every input in the first one's format; then the concatenation is
        // along the storage dimension that holds `dim` (channels of a
        // channels-last tensor are the innermost).
        let format = first.memory_format();
        let converted: Vec<QTensor<u8>>;
        let xs: Vec<&QTensor<u8>> = if xs.iter().all(|x| x.memory_format() == format) {
            xs.to_vec()
        } else {
            converted = xs.iter().map(|x| x.to_format(format)).collect();
            converted.iter().collect()
        };
        let perm = crate::portable::storage_perm(first);
        let sd = perm.iter().position(|&l| l == dim).expect("a permutation");
        let storage: Vec<usize> = perm.iter().map(|&l| shape[l]).collect();
        let outer = crate::tensor::numel(&storage[..sd]);
        let inner = crate::tensor::numel(&storage[sd + 1..]);
        let data = self.b.cat(&xs, outer, inner, out, Checked::new())?;
        Ok(QTensor::new_per_tensor_unchecked_in(
            shape,
            data,
            out_scale,
            out_zero_point,
            format,
        ))
    }

    /// Quantized relu: `max(q, zero_point)`, qparams kept.
    pub fn relu(&self, x: &QTensor<u8>) -> Result<QTensor<u8>> {
        const OP: &str = "relu";
        let (s, z) = per_tensor_q(OP, x)?;
        check_nonempty(OP, x.shape())?;
        let data = self.b.relu(x, Checked::new())?;
        Ok(QTensor::new_per_tensor_unchecked_in(
            x.shape().to_vec(),
            data,
            s,
            z,
            x.memory_format(),
        ))
    }

    /// Quantized max pooling (NCHW), qparams kept.
    pub fn max_pool2d(&self, x: &QTensor<u8>, p: &MaxPool2dParams) -> Result<QTensor<u8>> {
        const OP: &str = "max_pool2d";
        let (s, z) = per_tensor_q(OP, x)?;
        let g = pool_geometry(
            OP,
            x.shape(),
            p.kernel,
            p.stride,
            p.padding,
            p.dilation,
            p.ceil_mode,
        )?;
        let data = self.b.max_pool2d(x, &g, p, Checked::new())?;
        Ok(QTensor::new_per_tensor_unchecked_in(
            g.out_shape(),
            data,
            s,
            z,
            x.memory_format(),
        ))
    }

    /// Quantized average pooling (NCHW), qparams kept.
    pub fn avg_pool2d(&self, x: &QTensor<u8>, p: &AvgPool2dParams) -> Result<QTensor<u8>> {
        const OP: &str = "avg_pool2d";
        let (s, z) = per_tensor_q(OP, x)?;
        if p.divisor_override == Some(0) {
            return Err(QuantError::invalid(OP, "divisor_override must be positive"));
        }
        let g = pool_geometry(
            OP,
            x.shape(),
            p.kernel,
            p.stride,
            p.padding,
            [1, 1],
            p.ceil_mode,
        )?;
        let data = self.b.avg_pool2d(x, &g, p, Checked::new())?;
        Ok(QTensor::new_per_tensor_unchecked_in(
            g.out_shape(),
            data,
            s,
            z,
            x.memory_format(),
        ))
    }

    /// Quantized adaptive average pooling to `output_size` (NCHW), qparams kept.
    pub fn adaptive_avg_pool2d(
        &self,
        x: &QTensor<u8>,
        output_size: [usize; 2],
    ) -> Result<QTensor<u8>> {
        const OP: &str = "adaptive_avg_pool2d";
        let (s, z) = per_tensor_q(OP, x)?;
        let [n, c, h, w] = check_4d(OP, x.shape())?;
        check_nonempty(OP, x.shape())?;
        nonzero(OP, "output_size", &output_size)?;
        let g = PoolGeometry {
            n,
            c,
            h,
            w,
            oh: output_size[0],
            ow: output_size[1],
        };
        let data = self.b.adaptive_avg_pool2d(x, &g, Checked::new())?;
        Ok(QTensor::new_per_tensor_unchecked_in(
            g.out_shape(),
            data,
            s,
            z,
            x.memory_format(),
        ))
    }

    /// Quantized hardswish to the given output qparams.
    pub fn hardswish(
        &self,
        x: &QTensor<u8>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "hardswish";
        per_tensor_q(OP, x)?;
        let out = out_q(OP, out_scale, out_zero_point)?;
        check_nonempty(OP, x.shape())?;
        let data = self.b.hardswish(x, out, Checked::new())?;
        Ok(QTensor::new_per_tensor_unchecked_in(
            x.shape().to_vec(),
            data,
            out_scale,
            out_zero_point,
            x.memory_format(),
        ))
    }

    /// Quantized sigmoid to the given output qparams (PyTorch's module uses 1/256, 0).
    pub fn sigmoid(
        &self,
        x: &QTensor<u8>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "sigmoid";
        per_tensor_q(OP, x)?;
        let out = out_q(OP, out_scale, out_zero_point)?;
        check_nonempty(OP, x.shape())?;
        let data = self.b.sigmoid(x, out, Checked::new())?;
        Ok(QTensor::new_per_tensor_unchecked_in(
            x.shape().to_vec(),
            data,
            out_scale,
            out_zero_point,
            x.memory_format(),
        ))
    }

    // ---- quantize / dequantize into caller buffers ----

    /// `torch.quantize_per_tensor(x, scale, zero_point, dtype)` into `out`
    /// (`T` = u8 for quint8, i8 for qint8), through the engine's vectorised,
    /// threaded kernels, with no allocation (PyTorch allocates a fresh output
    /// per call). The bits are those of [`crate::quantize_per_tensor`]. A NaN
    /// in `x` is an error, and `out` is then unspecified.
    pub fn quantize_per_tensor_into<T: QType>(
        &self,
        x: &[f32],
        scale: f64,
        zero_point: i64,
        out: &mut [T],
    ) -> Result<()> {
        const OP: &str = "quantize_per_tensor_into";
        check_scale(OP, scale)?;
        check_zero_point(OP, zero_point, T::DTYPE)?;
        crate::tensor::check_len(OP, "output buffer", x.len(), out.len())?;
        let Some(code) = Code8::new(T::DTYPE, scale, zero_point) else {
            return Err(QuantError::Unsupported {
                op: OP,
                detail: format!("{} (use rquant_core::quantize_per_tensor)", T::DTYPE),
            });
        };
        if self
            .b
            .quantize8(x, code, bytemuck::cast_slice_mut(out), Checked::new())
        {
            let index = x.iter().position(|v| v.is_nan()).unwrap_or(0);
            return Err(QuantError::NaN { op: OP, index });
        }
        Ok(())
    }

    /// `q.dequantize()` into `out` (any qscheme; per-tensor 8-bit is vectorised),
    /// the bits of [`crate::dequantize`].
    pub fn dequantize_into<T: QType>(&self, q: &QTensor<T>, out: &mut [f32]) -> Result<()> {
        const OP: &str = "dequantize_into";
        crate::tensor::check_len(OP, "output buffer", q.numel(), out.len())?;
        if let QParams::PerTensor { scale, zero_point } = q.qparams() {
            if let Some(code) = Code8::new(T::DTYPE, *scale, *zero_point) {
                let src: &[u8] = bytemuck::cast_slice(q.int_repr());
                if let (MemoryFormat::ChannelsLast, &[n, c, h, w]) = (q.memory_format(), q.shape())
                {
                    // Back to NCHW: a u8 transpose, then the vectorised pass.
                    let mut nchw = vec![0u8; src.len()];
                    crate::tensor::nhwc_to_nchw(src, n, c, h * w, &mut nchw);
                    self.b.dequantize8(&nchw, code, out, Checked::new());
                } else {
                    self.b.dequantize8(src, code, out, Checked::new());
                }
                return Ok(());
            }
        }
        crate::quant::dequantize_into(q, out);
        Ok(())
    }

    /// `torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)` of a
    /// float tensor, stored in `format` (channels-last needs a 4-D NCHW
    /// `x`): the float↔quant boundary of a channels-last network, where the
    /// layout changes once. The bits are those of [`crate::quantize_per_tensor`].
    pub fn quantize(
        &self,
        x: &Tensor,
        scale: f64,
        zero_point: i64,
        format: MemoryFormat,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "quantize_per_tensor";
        check_nonempty(OP, x.shape())?;
        let mut codes = vec![0u8; x.numel()];
        self.quantize_per_tensor_into(x.data(), scale, zero_point, &mut codes)?;
        let shape = x.shape().to_vec();
        match (format, x.shape()) {
            (MemoryFormat::Contiguous, _) => Ok(QTensor::new_per_tensor_unchecked(
                shape, codes, scale, zero_point,
            )),
            (MemoryFormat::ChannelsLast, &[n, c, h, w]) => {
                let mut nhwc = vec![0u8; codes.len()];
                crate::tensor::nchw_to_nhwc(&codes, n, c, h * w, &mut nhwc);
                Ok(QTensor::new_per_tensor_unchecked_in(
                    shape, nhwc, scale, zero_point, format,
                ))
            }
            (MemoryFormat::ChannelsLast, other) => Err(QuantError::InvalidShape {
                op: OP,
                shape: other.to_vec(),
                detail: "channels-last needs a 4-D NCHW tensor".into(),
            }),
        }
    }

    /// `q.dequantize()` through the engine's kernels: a contiguous f32
    /// tensor in the logical (NCHW) order, whatever `q`'s memory format.
    pub fn dequantize<T: QType>(&self, q: &QTensor<T>) -> Result<Tensor> {
        let mut out = vec![0f32; q.numel()];
        self.dequantize_into(q, &mut out)?;
        Tensor::new(q.shape().to_vec(), out)
    }
}
