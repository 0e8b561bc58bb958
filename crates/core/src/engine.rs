//! The `QuantEngine` trait: the ops every engine implements, with weights
//! prepacked once. The trait's provided methods are the public API: they
//! validate every argument (so every engine rejects bad input with the same
//! error) and then call the engine's `*_impl` method, which may assume
//! validated input and must produce the numbers of docs/numerics.md exactly.

use std::any::Any;

use crate::dtype::{QDType, QType};
use crate::error::{QuantError, Result};
use crate::ops::*;
use crate::tensor::{check_scale, check_zero_point, numel, QParams, QTensor, Tensor};

/// Engine-owned packed weights (opaque to everyone but the engine).
pub type Payload = Box<dyn Any + Send + Sync>;

/// A prepacked quantized linear weight `[N, K]` with its optional float bias.
/// Keeps the original weight so a model can be saved or moved to another engine.
pub struct PackedLinear {
    weight: QTensor<i8>,
    bias: Option<Vec<f32>>,
    engine: &'static str,
    payload: Payload,
}

/// A prepacked quantized conv2d weight `[O, I/groups, kH, kW]`.
pub struct PackedConv2d {
    weight: QTensor<i8>,
    bias: Option<Vec<f32>>,
    params: Conv2dParams,
    engine: &'static str,
    payload: Payload,
}

/// A prepacked fp16 linear weight (dynamic linear with fp16 weights).
pub struct PackedLinearFp16 {
    /// The f32 weight as given, `[N, K]`.
    weight: Tensor,
    bias: Option<Vec<f32>>,
    engine: &'static str,
    payload: Payload,
}

macro_rules! packed_common {
    ($t:ty) => {
        impl $t {
            pub fn bias(&self) -> Option<&[f32]> {
                self.bias.as_deref()
            }
            /// Name of the engine that packed these weights.
            pub fn engine(&self) -> &'static str {
                self.engine
            }
            /// The engine's packed form; None if `P` is not what this engine stored.
            pub fn payload<P: 'static>(&self) -> Option<&P> {
                self.payload.downcast_ref::<P>()
            }
            fn check_engine(&self, op: &'static str, engine: &'static str) -> Result<()> {
                if self.engine != engine {
                    return Err(QuantError::WrongEngine {
                        op,
                        packed_by: self.engine,
                        engine,
                    });
                }
                Ok(())
            }
        }
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("shape", &self.weight.shape())
                    .field("engine", &self.engine)
                    .finish_non_exhaustive()
            }
        }
    };
}
packed_common!(PackedLinear);
packed_common!(PackedConv2d);
packed_common!(PackedLinearFp16);

impl PackedLinear {
    pub fn weight(&self) -> &QTensor<i8> {
        &self.weight
    }
    /// Output features N.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
    /// Input features K.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }
}

impl PackedConv2d {
    pub fn weight(&self) -> &QTensor<i8> {
        &self.weight
    }
    pub fn params(&self) -> Conv2dParams {
        self.params
    }
}

impl PackedLinearFp16 {
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }
}

fn check_nonempty(op: &'static str, shape: &[usize]) -> Result<()> {
    if numel(shape) == 0 {
        return Err(QuantError::EmptyTensor {
            op,
            shape: shape.to_vec(),
        });
    }
    Ok(())
}

fn check_out(op: &'static str, out: OutQ) -> Result<()> {
    check_scale(op, out.scale)?;
    check_zero_point(op, out.zero_point, QDType::QUInt8)
}

fn per_tensor_q<T: crate::QType>(op: &'static str, x: &QTensor<T>) -> Result<(f64, i64)> {
    x.q_per_tensor().ok_or_else(|| {
        QuantError::invalid(
            op,
            format!("activation must be per-tensor, got {}", x.qscheme().name()),
        )
    })
}

fn check_finite(op: &'static str, what: &str, v: &[f32]) -> Result<()> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(QuantError::invalid(
            op,
            format!("{what}[{i}] = {} is not finite", v[i]),
        ));
    }
    Ok(())
}

fn check_weight_qparams(op: &'static str, w: &QTensor<i8>) -> Result<()> {
    match w.qparams() {
        QParams::PerTensor { .. } => Ok(()),
        QParams::PerChannel { axis: 0, .. } => Ok(()),
        QParams::PerChannel { axis, .. } => Err(QuantError::invalid(
            op,
            format!("per-channel weight must use axis 0 (output channels), got axis {axis}"),
        )),
        QParams::PerChannelFloat { .. } => Err(QuantError::Unsupported {
            op,
            detail: "float zero points for weights".into(),
        }),
    }
}

fn check_bias(op: &'static str, bias: Option<&[f32]>, n: usize) -> Result<()> {
    if let Some(b) = bias {
        if b.len() != n {
            return Err(QuantError::ChannelCount {
                op,
                what: "bias",
                expected: n,
                got: b.len(),
            });
        }
        check_finite(op, "bias", b)?;
    }
    Ok(())
}

/// Rows M of a `[..., K]` activation with the given K, validated.
fn rows_for_k(op: &'static str, shape: &[usize], k: usize) -> Result<usize> {
    match shape.last() {
        Some(&last) if last == k => Ok(numel(&shape[..shape.len() - 1])),
        _ => Err(QuantError::shape(
            op,
            format!("input of shape {shape:?} does not end in in_features {k}"),
        )),
    }
}

fn check_4d(op: &'static str, shape: &[usize]) -> Result<[usize; 4]> {
    match shape {
        [n, c, h, w] => Ok([*n, *c, *h, *w]),
        _ => Err(QuantError::InvalidShape {
            op,
            shape: shape.to_vec(),
            detail: "expected NCHW (4 dimensions)".into(),
        }),
    }
}

/// An int8 engine. See the module docs for the provided/impl split.
pub trait QuantEngine: Send + Sync + 'static {
    /// The engine's name, as `torch.backends.quantized.engine` ("reference", "x86", "qnnpack").
    fn name(&self) -> &'static str;
    /// Other names accepted by `set_engine` (e.g. "fbgemm" for "x86").
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// The ISA path this engine resolved at construction (e.g. "avx2", "scalar").
    fn isa(&self) -> &'static str;
    /// Higher wins when the registry picks a default.
    fn priority(&self) -> i32 {
        0
    }

    // ---- engine-side methods, called only with validated arguments ----

    #[doc(hidden)]
    fn pack_linear_impl(&self, w: &QTensor<i8>, bias: Option<&[f32]>) -> Result<Payload>;
    /// Static linear: x is `[m, K]` quint8 per-tensor; returns `[m, N]` quint8.
    #[doc(hidden)]
    fn linear_impl(
        &self,
        x: &QTensor<u8>,
        m: usize,
        w: &PackedLinear,
        out: OutQ,
        relu: bool,
    ) -> Result<Vec<u8>>;
    /// Dynamic linear: x is `[m, K]` f32 without NaN; returns `[m, N]` f32.
    #[doc(hidden)]
    fn linear_dynamic_impl(
        &self,
        x: &[f32],
        m: usize,
        w: &PackedLinear,
        reduce_range: bool,
    ) -> Result<Vec<f32>>;
    #[doc(hidden)]
    fn pack_linear_fp16_impl(&self, w: &Tensor, bias: Option<&[f32]>) -> Result<Payload>;
    #[doc(hidden)]
    fn linear_dynamic_fp16_impl(
        &self,
        x: &[f32],
        m: usize,
        w: &PackedLinearFp16,
    ) -> Result<Vec<f32>>;
    #[doc(hidden)]
    fn pack_conv2d_impl(
        &self,
        w: &QTensor<i8>,
        bias: Option<&[f32]>,
        params: Conv2dParams,
    ) -> Result<Payload>;
    #[doc(hidden)]
    fn conv2d_impl(
        &self,
        x: &QTensor<u8>,
        g: &ConvGeometry,
        w: &PackedConv2d,
        out: OutQ,
        relu: bool,
    ) -> Result<Vec<u8>>;
    // The memory-bound ops default to the portable scalar code of
    // `crate::portable`; an engine overrides the ones it vectorises.

    /// a and b have the same shape.
    #[doc(hidden)]
    fn binary_impl(
        &self,
        op: BinaryOp,
        a: &QTensor<u8>,
        b: &QTensor<u8>,
        out: OutQ,
    ) -> Result<Vec<u8>> {
        crate::portable::binary(op, a, b, out)
    }
    /// Concatenation of `[outer, d_i, inner]` blocks along the middle axis.
    #[doc(hidden)]
    fn cat_impl(
        &self,
        xs: &[&QTensor<u8>],
        outer: usize,
        inner: usize,
        out: OutQ,
    ) -> Result<Vec<u8>> {
        crate::portable::cat(xs, outer, inner, out)
    }
    #[doc(hidden)]
    fn relu_impl(&self, x: &QTensor<u8>) -> Result<Vec<u8>> {
        crate::portable::relu(x)
    }
    #[doc(hidden)]
    fn max_pool2d_impl(
        &self,
        x: &QTensor<u8>,
        g: &PoolGeometry,
        p: &MaxPool2dParams,
    ) -> Result<Vec<u8>> {
        crate::portable::max_pool2d(x, g, p)
    }
    #[doc(hidden)]
    fn avg_pool2d_impl(
        &self,
        x: &QTensor<u8>,
        g: &PoolGeometry,
        p: &AvgPool2dParams,
    ) -> Result<Vec<u8>> {
        crate::portable::avg_pool2d(x, g, p)
    }
    #[doc(hidden)]
    fn adaptive_avg_pool2d_impl(&self, x: &QTensor<u8>, g: &PoolGeometry) -> Result<Vec<u8>> {
        crate::portable::adaptive_avg_pool2d(x, g)
    }
    #[doc(hidden)]
    fn hardswish_impl(&self, x: &QTensor<u8>, out: OutQ) -> Result<Vec<u8>> {
        crate::portable::hardswish(x, out)
    }
    #[doc(hidden)]
    fn sigmoid_impl(&self, x: &QTensor<u8>, out: OutQ) -> Result<Vec<u8>> {
        crate::portable::sigmoid(x, out)
    }

    /// Quantize `src` into `dst` (equal lengths); returns whether `src` holds a NaN.
    #[doc(hidden)]
    fn quantize8_impl(&self, src: &[f32], c: crate::portable::Code8, dst: &mut [u8]) -> bool {
        crate::portable::quantize8(src, c, dst)
    }
    /// Dequantize `src` into `dst` (equal lengths).
    #[doc(hidden)]
    fn dequantize8_impl(&self, src: &[u8], c: crate::portable::Code8, dst: &mut [f32]) {
        crate::portable::dequantize8(src, c, dst)
    }

    // ---- the public API ----

    /// Prepack a quantized linear weight `[N, K]` (qint8, per-tensor or
    /// per-channel along axis 0) with an optional f32 bias `[N]`.
    fn pack_linear(&self, w: QTensor<i8>, bias: Option<Vec<f32>>) -> Result<PackedLinear> {
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
        let payload = self.pack_linear_impl(&w, bias.as_deref())?;
        Ok(PackedLinear {
            weight: w,
            bias,
            engine: self.name(),
            payload,
        })
    }

    /// Static quantized linear (`torch.ops.quantized.linear`): quint8 `[..., K]`
    /// in, quint8 `[..., N]` out with the given output qparams; `relu` fuses
    /// `LinearReLU`.
    fn linear(
        &self,
        x: &QTensor<u8>,
        w: &PackedLinear,
        out_scale: f64,
        out_zero_point: i64,
        relu: bool,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "linear";
        w.check_engine(OP, self.name())?;
        per_tensor_q(OP, x)?;
        let out = OutQ {
            scale: out_scale,
            zero_point: out_zero_point,
        };
        check_out(OP, out)?;
        let m = rows_for_k(OP, x.shape(), w.in_features())?;
        check_nonempty(OP, x.shape())?;
        let data = self.linear_impl(x, m, w, out, relu)?;
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
    fn linear_dynamic(&self, x: &Tensor, w: &PackedLinear, reduce_range: bool) -> Result<Tensor> {
        const OP: &str = "linear_dynamic";
        w.check_engine(OP, self.name())?;
        let m = rows_for_k(OP, x.shape(), w.in_features())?;
        check_nonempty(OP, x.shape())?;
        // One vectorisable pass; the index is searched for only on failure.
        if !x.data().iter().fold(true, |ok, v| ok & v.is_finite()) {
            if let Some(index) = x.data().iter().position(|v| v.is_nan()) {
                return Err(QuantError::NaN { op: OP, index });
            }
            let i = x.data().iter().position(|v| v.is_infinite()).unwrap_or(0);
            return Err(QuantError::invalid(
                OP,
                format!("input[{i}] is infinite: no finite qparams cover it"),
            ));
        }
        let data = self.linear_dynamic_impl(x.data(), m, w, reduce_range)?;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("validated") = w.out_features();
        Tensor::new(shape, data)
    }

    /// Prepack an f32 weight `[N, K]` as fp16 (clamped to ±65504, then rounded).
    fn pack_linear_fp16(&self, w: Tensor, bias: Option<Vec<f32>>) -> Result<PackedLinearFp16> {
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
        let payload = self.pack_linear_fp16_impl(&w, bias.as_deref())?;
        Ok(PackedLinearFp16 {
            weight: w,
            bias,
            engine: self.name(),
            payload,
        })
    }

    /// Dynamic linear with fp16 weights: f32 in and out.
    fn linear_dynamic_fp16(&self, x: &Tensor, w: &PackedLinearFp16) -> Result<Tensor> {
        const OP: &str = "linear_dynamic_fp16";
        w.check_engine(OP, self.name())?;
        let m = rows_for_k(OP, x.shape(), w.in_features())?;
        check_nonempty(OP, x.shape())?;
        let data = self.linear_dynamic_fp16_impl(x.data(), m, w)?;
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("validated") = w.out_features();
        Tensor::new(shape, data)
    }

    /// Prepack a conv2d weight `[O, I/groups, kH, kW]` with optional bias `[O]`.
    fn pack_conv2d(
        &self,
        w: QTensor<i8>,
        bias: Option<Vec<f32>>,
        params: Conv2dParams,
    ) -> Result<PackedConv2d> {
        const OP: &str = "pack_conv2d";
        let [o, _, kh, kw] = check_4d(OP, w.shape())?;
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
        let _ = (kh, kw);
        check_bias(OP, bias.as_deref(), o)?;
        let payload = self.pack_conv2d_impl(&w, bias.as_deref(), params)?;
        Ok(PackedConv2d {
            weight: w,
            bias,
            params,
            engine: self.name(),
            payload,
        })
    }

    /// Static quantized conv2d: quint8 NCHW in and out; `relu` fuses `ConvReLU2d`.
    fn conv2d(
        &self,
        x: &QTensor<u8>,
        w: &PackedConv2d,
        out_scale: f64,
        out_zero_point: i64,
        relu: bool,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "conv2d";
        w.check_engine(OP, self.name())?;
        per_tensor_q(OP, x)?;
        let out = OutQ {
            scale: out_scale,
            zero_point: out_zero_point,
        };
        check_out(OP, out)?;
        let [n, c, h, wd] = check_4d(OP, x.shape())?;
        check_nonempty(OP, x.shape())?;
        let [o, cg, kh, kw] = check_4d(OP, w.weight().shape())?;
        let p = w.params();
        if cg * p.groups != c {
            return Err(QuantError::shape(
                OP,
                format!(
                    "input has {c} channels but the weight {:?} with groups {} expects {}",
                    w.weight().shape(),
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
        let data = self.conv2d_impl(x, &g, w, out, relu)?;
        Ok(QTensor::new_per_tensor_unchecked(
            g.out_shape(),
            data,
            out_scale,
            out_zero_point,
        ))
    }

    /// Quantized element-wise add / add_relu / mul of same-shape tensors
    /// (`torch.ops.quantized.add` …).
    fn binary(
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
        let out = OutQ {
            scale: out_scale,
            zero_point: out_zero_point,
        };
        check_out(name, out)?;
        if a.shape() != b.shape() {
            return Err(QuantError::shape(
                name,
                format!("a {:?} vs b {:?}", a.shape(), b.shape()),
            ));
        }
        check_nonempty(name, a.shape())?;
        let data = self.binary_impl(op, a, b, out)?;
        Ok(QTensor::new_per_tensor_unchecked(
            a.shape().to_vec(),
            data,
            out_scale,
            out_zero_point,
        ))
    }
    fn add(
        &self,
        a: &QTensor<u8>,
        b: &QTensor<u8>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        self.binary(BinaryOp::Add, a, b, out_scale, out_zero_point)
    }
    fn add_relu(
        &self,
        a: &QTensor<u8>,
        b: &QTensor<u8>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        self.binary(BinaryOp::AddRelu, a, b, out_scale, out_zero_point)
    }
    fn mul(
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
    fn cat(
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
        let out = OutQ {
            scale: out_scale,
            zero_point: out_zero_point,
        };
        check_out(OP, out)?;
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
        let outer = numel(&shape[..dim]);
        let inner = numel(&shape[dim + 1..]);
        let data = self.cat_impl(xs, outer, inner, out)?;
        Ok(QTensor::new_per_tensor_unchecked(
            shape,
            data,
            out_scale,
            out_zero_point,
        ))
    }

    /// Quantized relu: `max(q, zero_point)`, qparams kept.
    fn relu(&self, x: &QTensor<u8>) -> Result<QTensor<u8>> {
        const OP: &str = "relu";
        let (s, z) = per_tensor_q(OP, x)?;
        check_nonempty(OP, x.shape())?;
        let data = self.relu_impl(x)?;
        Ok(QTensor::new_per_tensor_unchecked(
            x.shape().to_vec(),
            data,
            s,
            z,
        ))
    }

    /// Quantized max pooling (NCHW), qparams kept.
    fn max_pool2d(&self, x: &QTensor<u8>, p: &MaxPool2dParams) -> Result<QTensor<u8>> {
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
        let data = self.max_pool2d_impl(x, &g, p)?;
        Ok(QTensor::new_per_tensor_unchecked(g.out_shape(), data, s, z))
    }

    /// Quantized average pooling (NCHW), qparams kept.
    fn avg_pool2d(&self, x: &QTensor<u8>, p: &AvgPool2dParams) -> Result<QTensor<u8>> {
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
        let data = self.avg_pool2d_impl(x, &g, p)?;
        Ok(QTensor::new_per_tensor_unchecked(g.out_shape(), data, s, z))
    }

    /// Quantized adaptive average pooling to `output_size` (NCHW), qparams kept.
    fn adaptive_avg_pool2d(&self, x: &QTensor<u8>, output_size: [usize; 2]) -> Result<QTensor<u8>> {
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
        let data = self.adaptive_avg_pool2d_impl(x, &g)?;
        Ok(QTensor::new_per_tensor_unchecked(g.out_shape(), data, s, z))
    }

    /// Quantized hardswish to the given output qparams.
    fn hardswish(
        &self,
        x: &QTensor<u8>,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "hardswish";
        per_tensor_q(OP, x)?;
        let out = OutQ {
            scale: out_scale,
            zero_point: out_zero_point,
        };
        check_out(OP, out)?;
        check_nonempty(OP, x.shape())?;
        let data = self.hardswish_impl(x, out)?;
        Ok(QTensor::new_per_tensor_unchecked(
            x.shape().to_vec(),
            data,
            out_scale,
            out_zero_point,
        ))
    }

    /// Quantized sigmoid to the given output qparams (PyTorch's module uses 1/256, 0).
    fn sigmoid(&self, x: &QTensor<u8>, out_scale: f64, out_zero_point: i64) -> Result<QTensor<u8>> {
        const OP: &str = "sigmoid";
        per_tensor_q(OP, x)?;
        let out = OutQ {
            scale: out_scale,
            zero_point: out_zero_point,
        };
        check_out(OP, out)?;
        check_nonempty(OP, x.shape())?;
        let data = self.sigmoid_impl(x, out)?;
        Ok(QTensor::new_per_tensor_unchecked(
            x.shape().to_vec(),
            data,
            out_scale,
            out_zero_point,
        ))
    }
}

fn pool_geometry(
    op: &'static str,
    shape: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
) -> Result<PoolGeometry> {
    let [n, c, h, w] = check_4d(op, shape)?;
    check_nonempty(op, shape)?;
    nonzero(op, "kernel_size", &kernel)?;
    nonzero(op, "stride", &stride)?;
    nonzero(op, "dilation", &dilation)?;
    for d in 0..2 {
        if padding[d] * 2 > kernel[d] {
            return Err(QuantError::invalid(
                op,
                format!("padding {padding:?} must be at most half of kernel_size {kernel:?}"),
            ));
        }
    }
    let oh = pool_out_len(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode);
    let ow = pool_out_len(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode);
    match (oh, ow) {
        (Some(oh), Some(ow)) => Ok(PoolGeometry { n, c, h, w, oh, ow }),
        _ => Err(QuantError::shape(
            op,
            format!("kernel {kernel:?} (dilation {dilation:?}, padding {padding:?}) gives an empty output for input {h}x{w}"),
        )),
    }
}

/// Quantize and dequantize through an engine's vectorised kernels, into
/// caller-provided buffers: no allocation, so a loop that reuses its buffers
/// pays no page faults (PyTorch's `dequantize` allocates a fresh output per
/// call). Implemented for every engine, `dyn QuantEngine` included; the bits
/// are those of [`crate::quantize_per_tensor`] and [`crate::dequantize`].
pub trait QuantizeInto {
    /// `torch.quantize_per_tensor(x, scale, zero_point, dtype)` into `out`
    /// (`T` = u8 for quint8, i8 for qint8). A NaN in `x` is an error, and
    /// `out` is then unspecified.
    fn quantize_per_tensor_into<T: QType>(
        &self,
        x: &[f32],
        scale: f64,
        zero_point: i64,
        out: &mut [T],
    ) -> Result<()>;
    /// `q.dequantize()` into `out` (any qscheme; per-tensor 8-bit is vectorised).
    fn dequantize_into<T: QType>(&self, q: &QTensor<T>, out: &mut [f32]) -> Result<()>;
}

impl<E: QuantEngine + ?Sized> QuantizeInto for E {
    fn quantize_per_tensor_into<T: QType>(
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
        let Some(code) = crate::portable::Code8::new(T::DTYPE, scale, zero_point) else {
            return Err(QuantError::Unsupported {
                op: OP,
                detail: format!("{} (use rquant_core::quantize_per_tensor)", T::DTYPE),
            });
        };
        if self.quantize8_impl(x, code, bytemuck::cast_slice_mut(out)) {
            let index = x.iter().position(|v| v.is_nan()).unwrap_or(0);
            return Err(QuantError::NaN { op: OP, index });
        }
        Ok(())
    }

    fn dequantize_into<T: QType>(&self, q: &QTensor<T>, out: &mut [f32]) -> Result<()> {
        const OP: &str = "dequantize_into";
        crate::tensor::check_len(OP, "output buffer", q.numel(), out.len())?;
        if let QParams::PerTensor { scale, zero_point } = q.qparams() {
            if let Some(code) = crate::portable::Code8::new(T::DTYPE, *scale, *zero_point) {
                self.dequantize8_impl(bytemuck::cast_slice(q.int_repr()), code, out);
                return Ok(());
            }
        }
        crate::quant::dequantize_into(q, out);
        Ok(())
    }
}
