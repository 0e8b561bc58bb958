//! Quantized ops of the module layer, exactly (their numerics are written
//! down in docs/numerics.md §19): transposed conv1d and conv3d, 1-d and 3-d
//! pooling, PReLU, scalar add / mul, cat + relu, clamp and threshold, CELU,
//! batch norm 1d / 3d. Each validates its arguments; those with an engine
//! op underneath (clamp, cat_relu, max_pool1d, the transposed convs, batch
//! norm) run it on the given engine, the others compute directly (the
//! same bits on every engine). All are covered by golden cases from torch
//! 2.15 (`tests/golden`; the conformance runner calls these functions).

use rquant_core::{
    Conv3dParams, ConvTranspose2dParams, Engine, MemoryFormat, PackedConv3d, PackedConvTranspose2d,
    QParams, QTensor, QuantError,
};

use crate::error::Result;

fn invalid(op: &'static str, detail: impl Into<String>) -> crate::NnError {
    QuantError::invalid(op, detail).into()
}

fn per_tensor(op: &'static str, x: &QTensor<u8>) -> Result<(f64, i64)> {
    x.q_per_tensor()
        .ok_or_else(|| invalid(op, "per-tensor quantized input required"))
}

// ---------------------------------------------------------------- transposed conv

/// Prepack a transposed-conv1d weight `[C, O/groups, k]` (per-tensor qint8,
/// as PyTorch's) with an optional bias `[O]`: the transposed conv2d of
/// height 1.
#[allow(clippy::too_many_arguments)]
pub fn pack_conv_transpose1d(
    engine: &Engine,
    w: QTensor<i8>,
    bias: Option<Vec<f32>>,
    stride: usize,
    padding: usize,
    output_padding: usize,
    dilation: usize,
    groups: usize,
) -> Result<PackedConvTranspose2d> {
    const OP: &str = "pack_conv_transpose1d";
    let &[c, og, k] = w.shape() else {
        return Err(QuantError::InvalidShape {
            op: OP,
            shape: w.shape().to_vec(),
            detail: "transposed conv1d weight must be [in_channels, out_channels/groups, kernel]"
                .into(),
        }
        .into());
    };
    let w4 = QTensor::with_qscheme(
        vec![c, og, 1, k],
        w.int_repr().to_vec(),
        w.qparams().clone(),
        w.qscheme(),
    )?;
    Ok(engine.pack_conv_transpose2d(
        w4,
        bias,
        ConvTranspose2dParams {
            stride: [1, stride],
            padding: [0, padding],
            output_padding: [0, output_padding],
            dilation: [1, dilation],
            groups,
        },
    )?)
}

/// Quantized transposed conv1d (`torch.ops.quantized.conv_transpose1d`):
/// `[N, C, L]` in, `[N, O, L']` out; transposed conv2d on `[N, C, 1, L]`.
pub fn conv_transpose1d(
    engine: &Engine,
    x: &QTensor<u8>,
    w: &PackedConvTranspose2d,
    out_scale: f64,
    out_zero_point: i64,
) -> Result<QTensor<u8>> {
    const OP: &str = "conv_transpose1d";
    let &[n, c, l] = x.shape() else {
        return Err(QuantError::InvalidShape {
            op: OP,
            shape: x.shape().to_vec(),
            detail: "expected [N, C, L] (3 dimensions)".into(),
        }
        .into());
    };
    if w.weight().shape()[2] != 1 {
        return Err(invalid(
            OP,
            "the packed weight is not a conv_transpose1d weight",
        ));
    }
    let x4 = x.clone().contiguous().reshape(vec![n, c, 1, l])?;
    let y = engine.conv_transpose2d(&x4, w, out_scale, out_zero_point)?;
    let y = y.contiguous();
    let (o, lo) = (y.shape()[1], y.shape()[3]);
    Ok(y.reshape(vec![n, o, lo])?)
}

/// A prepacked quantized transposed-conv3d weight `[C, O/groups, kD, kH,
/// kW]` (per-tensor), held as the equivalent conv3d weight (flipped and
/// transposed per group) at stride 1.
#[derive(Debug)]
pub struct PackedConvTranspose3d {
    inner: PackedConv3d,
    weight: QTensor<i8>,
    bias: Option<Vec<f32>>,
    params: ConvTranspose3dParams,
}

/// Parameters of a 3-D transposed convolution, `[d, h, w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvTranspose3dParams {
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    pub output_padding: [usize; 3],
    pub dilation: [usize; 3],
    pub groups: usize,
}

impl Default for ConvTranspose3dParams {
    fn default() -> Self {
        ConvTranspose3dParams {
            stride: [1; 3],
            padding: [0; 3],
            output_padding: [0; 3],
            dilation: [1; 3],
            groups: 1,
        }
    }
}

impl PackedConvTranspose3d {
    pub fn params(&self) -> ConvTranspose3dParams {
        self.params
    }
    /// The weight as given, `[C, O/groups, kD, kH, kW]`.
    pub fn weight(&self) -> &QTensor<i8> {
        &self.weight
    }
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }
    pub fn packed_for(&self) -> rquant_core::PathId {
        self.inner.packed_for()
    }
}

/// Prepack a transposed-conv3d weight (per-tensor qint8) with an optional bias `[O]`.
pub fn pack_conv_transpose3d(
    engine: &Engine,
    w: QTensor<i8>,
    bias: Option<Vec<f32>>,
    params: ConvTranspose3dParams,
) -> Result<PackedConvTranspose3d> {
    const OP: &str = "pack_conv_transpose3d";
    let &[c, og, kd, kh, kw] = w.shape() else {
        return Err(QuantError::InvalidShape {
            op: OP,
            shape: w.shape().to_vec(),
            detail:
                "transposed conv3d weight must be [in_channels, out_channels/groups, kD, kH, kW]"
                    .into(),
        }
        .into());
    };
    if w.numel() == 0 {
        return Err(QuantError::EmptyTensor {
            op: OP,
            shape: w.shape().to_vec(),
        }
        .into());
    }
    if w.qparams().is_per_channel() {
        return Err(QuantError::Unsupported {
            op: OP,
            detail: "per-channel weights for transposed convolution (PyTorch refuses them too)"
                .into(),
        }
        .into());
    }
    if params.stride.contains(&0) || params.dilation.contains(&0) {
        return Err(invalid(
            OP,
            format!(
                "stride {:?} and dilation {:?} must be positive",
                params.stride, params.dilation
            ),
        ));
    }
    let g = params.groups;
    if g == 0 || c % g != 0 {
        return Err(invalid(
            OP,
            format!("groups {g} must be positive and divide in_channels {c}"),
        ));
    }
    for a in 0..3 {
        if params.output_padding[a] >= params.stride[a].max(params.dilation[a]) {
            return Err(invalid(
                OP,
                format!(
                    "output_padding {:?} must be smaller than stride {:?} or dilation {:?}",
                    params.output_padding, params.stride, params.dilation
                ),
            ));
        }
    }
    let cg = c / g;
    let o = og * g;
    let src = w.int_repr();
    let mut w2 = Vec::with_capacity(src.len());
    for gi in 0..g {
        for oo in 0..og {
            for cc in 0..cg {
                for z in 0..kd {
                    for y in 0..kh {
                        for x in 0..kw {
                            let s = ((((gi * cg + cc) * og + oo) * kd + (kd - 1 - z)) * kh
                                + (kh - 1 - y))
                                * kw
                                + (kw - 1 - x);
                            w2.push(src[s]);
                        }
                    }
                }
            }
        }
    }
    let (s, z) = w.q_per_tensor().expect("per-tensor");
    let w2 = QTensor::with_qscheme(
        vec![o, cg, kd, kh, kw],
        w2,
        QParams::per_tensor(s, z),
        w.qscheme(),
    )?;
    let inner = engine.pack_conv3d(
        w2,
        bias.clone(),
        Conv3dParams {
            stride: [1; 3],
            padding: [0; 3],
            dilation: params.dilation,
            groups: g,
        },
    )?;
    Ok(PackedConvTranspose3d {
        inner,
        weight: w,
        bias,
        params,
    })
}

/// The same weights packed for `engine`.
pub fn repack_conv_transpose3d(
    engine: &Engine,
    w: &PackedConvTranspose3d,
) -> Result<PackedConvTranspose3d> {
    pack_conv_transpose3d(engine, w.weight.clone(), w.bias.clone(), w.params)
}

/// Quantized transposed conv3d (`torch.ops.quantized.conv_transpose3d`):
/// NCDHW quint8 in and out. As §15's transposed conv2d, in three
/// dimensions: the input spread `stride` apart and padded by
/// `d·(k − 1) − p` before (and that plus `output_padding` after), the gaps
/// holding the input zero point, then conv3d at stride 1 with the flipped
/// weight.
pub fn conv_transpose3d(
    engine: &Engine,
    x: &QTensor<u8>,
    w: &PackedConvTranspose3d,
    out_scale: f64,
    out_zero_point: i64,
) -> Result<QTensor<u8>> {
    const OP: &str = "conv_transpose3d";
    let (s, xz) = per_tensor(OP, x)?;
    let &[n, c, d, h, wd] = x.shape() else {
        return Err(QuantError::InvalidShape {
            op: OP,
            shape: x.shape().to_vec(),
            detail: "expected NCDHW (5 dimensions)".into(),
        }
        .into());
    };
    if x.numel() == 0 {
        return Err(QuantError::EmptyTensor {
            op: OP,
            shape: x.shape().to_vec(),
        }
        .into());
    }
    let ws = w.weight.shape();
    if ws[0] != c {
        return Err(QuantError::shape(
            OP,
            format!(
                "input has {c} channels but the weight {ws:?} expects {}",
                ws[0]
            ),
        )
        .into());
    }
    let p = w.params;
    let len = [d, h, wd];
    let mut src: [Vec<Option<usize>>; 3] = Default::default();
    for a in 0..3 {
        let k = ws[2 + a];
        let span = (p.dilation[a] * (k - 1)) as i64;
        let lo = span - p.padding[a] as i64;
        let spread = (len[a] as i64 - 1) * p.stride[a] as i64 + 1;
        let total = spread + 2 * lo + p.output_padding[a] as i64;
        if total < span + 1 {
            return Err(QuantError::shape(
                OP,
                format!(
                    "input {len:?} with stride {:?}, padding {:?}, dilation {:?}, output_padding {:?} and kernel {:?} gives an empty output",
                    p.stride, p.padding, p.dilation, p.output_padding, &ws[2..]
                ),
            )
            .into());
        }
        src[a] = (0..total)
            .map(|r| {
                let v = r - lo;
                let st = p.stride[a] as i64;
                (v >= 0 && v % st == 0 && v / st < len[a] as i64).then(|| (v / st) as usize)
            })
            .collect();
    }
    let (d2, h2, w2) = (src[0].len(), src[1].len(), src[2].len());
    let xc = x.to_format(MemoryFormat::Contiguous);
    let xd = xc.int_repr();
    let fill = xz as u8;
    let mut g = Vec::with_capacity(n * c * d2 * h2 * w2);
    for vol in xd.chunks_exact(d * h * wd) {
        for zz in &src[0] {
            for yy in &src[1] {
                for xx in &src[2] {
                    g.push(match (zz, yy, xx) {
                        (Some(iz), Some(iy), Some(ix)) => vol[(iz * h + iy) * wd + ix],
                        _ => fill,
                    });
                }
            }
        }
    }
    let x2 = QTensor::new_per_tensor_unchecked(vec![n, c, d2, h2, w2], g, s, xz);
    Ok(engine.conv3d(&x2, &w.inner, out_scale, out_zero_point, false)?)
}

// ---------------------------------------------------------------- helpers

fn out_qparams(op: &'static str, scale: f64, zero_point: i64) -> Result<()> {
    rquant_core::tensor::check_scale(op, scale)?;
    rquant_core::tensor::check_zero_point(op, zero_point, rquant_core::QDType::QUInt8)?;
    Ok(())
}

fn nonempty(op: &'static str, x: &QTensor<u8>) -> Result<()> {
    if x.numel() == 0 {
        return Err(QuantError::EmptyTensor {
            op,
            shape: x.shape().to_vec(),
        }
        .into());
    }
    Ok(())
}

/// `at::native::requantize_from_int<quint8>(multiplier, zp, v)`:
/// `clamp(zp + rne(f32(v)·multiplier), 0, 255)`, f32 arithmetic.
#[inline]
fn requantize_from_int(multiplier: f32, zero_point: i64, v: i64) -> u8 {
    let r = rquant_core::numerics::rne(v as f32 * multiplier) as i64;
    (zero_point + r).clamp(0, 255) as u8
}

fn like(x: &QTensor<u8>, data: Vec<u8>, scale: f64, zero_point: i64) -> QTensor<u8> {
    QTensor::new_per_tensor_unchecked_in(
        x.shape().to_vec(),
        data,
        scale,
        zero_point,
        x.memory_format(),
    )
}

// ---------------------------------------------------------------- element-wise

/// Quantized CELU (`torch.celu` / `quantized::celu` with the input's
/// qparams): PyTorch's generalised ELU with `input_scale = f32(1/alpha)`:
/// `v ≥ 0 ? v : f32(expm1(f64(f32(v·input_scale))))·alpha` (the expm1 of
/// §11's ELU), quantized to the input's qparams. `alpha` must be finite and
/// not 0.
pub fn celu(engine: &Engine, x: &QTensor<u8>, alpha: f32) -> Result<QTensor<u8>> {
    let (s, z) = per_tensor("celu", x)?;
    celu_out(engine, x, alpha, s, z)
}

/// [`celu`] with output qparams (`quantized::celu(x, scale, zero_point, alpha)`).
pub fn celu_out(
    engine: &Engine,
    x: &QTensor<u8>,
    alpha: f32,
    out_scale: f64,
    out_zero_point: i64,
) -> Result<QTensor<u8>> {
    const OP: &str = "celu";
    let (s, z) = per_tensor(OP, x)?;
    out_qparams(OP, out_scale, out_zero_point)?;
    nonempty(OP, x)?;
    if !alpha.is_finite() || alpha == 0.0 {
        return Err(invalid(
            OP,
            format!("alpha {alpha} must be finite and not 0"),
        ));
    }
    let _ = engine;
    let in_scale = (1.0f64 / alpha as f64) as f32;
    let inv_out = rquant_core::numerics::inv_scale(out_scale);
    let mut lut = [0u8; 256];
    for (q, o) in lut.iter_mut().enumerate() {
        let v = rquant_core::numerics::dequantize_val(s as f32, z, q as i64);
        let y = if v >= 0.0 {
            v
        } else {
            (rquant_core::special::expm1_f64((v * in_scale) as f64) as f32) * alpha
        };
        *o = rquant_core::numerics::quantize_val::<u8>(inv_out, out_zero_point, y);
    }
    let data = x.int_repr().iter().map(|&q| lut[q as usize]).collect();
    Ok(like(x, data, out_scale, out_zero_point))
}

/// Quantized threshold (`torch.threshold` on a quint8 tensor):
/// `v > threshold ? v : value` on the exact dequantized value, requantized
/// with the input's qparams (which the output keeps).
pub fn threshold(engine: &Engine, x: &QTensor<u8>, thr: f32, value: f32) -> Result<QTensor<u8>> {
    const OP: &str = "threshold";
    let (s, z) = per_tensor(OP, x)?;
    nonempty(OP, x)?;
    if !thr.is_finite() || !value.is_finite() {
        return Err(invalid(
            OP,
            format!("threshold {thr} and value {value} must be finite"),
        ));
    }
    let _ = engine;
    let inv = rquant_core::numerics::inv_scale(s);
    let mut lut = [0u8; 256];
    for (q, o) in lut.iter_mut().enumerate() {
        let v = rquant_core::numerics::dequantize_val(s as f32, z, q as i64);
        let y = if v > thr { v } else { value };
        *o = rquant_core::numerics::quantize_val::<u8>(inv, z, y);
    }
    let data = x.int_repr().iter().map(|&q| lut[q as usize]).collect();
    Ok(like(x, data, s, z))
}

/// Quantized clamp (`torch.clamp(q, min, max)` on a quint8 tensor): the
/// bounds quantized with the input's qparams, an integer clamp (max first,
/// then min), qparams kept; a missing bound does not clamp (PyTorch's
/// `clamp_min` / `clamp_max`).
pub fn clamp(
    engine: &Engine,
    x: &QTensor<u8>,
    min: Option<f32>,
    max: Option<f32>,
) -> Result<QTensor<u8>> {
    if min.is_none() && max.is_none() {
        return Err(invalid("clamp", "at least one of min and max is needed"));
    }
    Ok(engine.hardtanh(
        x,
        min.unwrap_or(f32::NEG_INFINITY),
        max.unwrap_or(f32::INFINITY),
    )?)
}

/// Quantized PReLU (`quantized::prelu(x, weight, scale, zero_point)`):
/// the weight (quint8, per-tensor, one value or one per channel of
/// dimension 1) multiplies the negative side in the integer domain, as
/// PyTorch's kernel: with `w1 = quantize(1.0)` under the weight's qparams,
/// `acc = (max(q, zp) − zp)·(w1 − w_zp) + (min(q, zp) − zp)·(w − w_zp)`
/// (int32), `m = f32(f32(x_scale)·f32(w_scale))·f32(1/f32(out_scale))`,
/// `y = clamp(out_zp + rne(f32(acc)·m), 0, 255)`.
pub fn prelu(
    engine: &Engine,
    x: &QTensor<u8>,
    weight: &QTensor<u8>,
    out_scale: f64,
    out_zero_point: i64,
) -> Result<QTensor<u8>> {
    const OP: &str = "prelu";
    let (s, z) = per_tensor(OP, x)?;
    let (ws, wz) = weight
        .q_per_tensor()
        .ok_or_else(|| invalid(OP, "the weight must be per-tensor quantized"))?;
    out_qparams(OP, out_scale, out_zero_point)?;
    nonempty(OP, x)?;
    let _ = engine;
    let nw = weight.numel();
    let channels = if nw == 1 {
        1
    } else {
        if x.ndim() < 2 || x.shape()[1] != nw {
            return Err(QuantError::shape(
                OP,
                format!(
                    "{nw} weights but the input {:?} has no matching dimension 1",
                    x.shape()
                ),
            )
            .into());
        }
        nw
    };
    let multiplier = (s as f32 * ws as f32) * (1.0f32 / out_scale as f32);
    let w1 =
        rquant_core::numerics::quantize_val::<u8>(rquant_core::numerics::inv_scale(ws), wz, 1.0)
            as i64
            - wz;
    let xc = x.to_format(MemoryFormat::Contiguous);
    let inner: usize = x.shape().iter().skip(2).product();
    let wd = weight.int_repr();
    let data: Vec<u8> = xc
        .int_repr()
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let ch = if channels == 1 {
                0
            } else {
                (i / inner.max(1)) % channels
            };
            let q = q as i64;
            let acc = (q.max(z) - z) * w1 + (q.min(z) - z) * (wd[ch] as i64 - wz);
            requantize_from_int(multiplier, out_zero_point, acc)
        })
        .collect();
    let y = QTensor::new_per_tensor_unchecked(x.shape().to_vec(), data, out_scale, out_zero_point);
    Ok(y.into_format(x.memory_format()))
}

/// Quantized add of a scalar (`quantized::add_scalar`, `QFunctional.add_scalar`):
/// PyTorch moves the qparams instead of the values where it can. With
/// `c_q = rne(f64(c)/scale)`: if `zp − c_q` is a valid zero point the
/// output is the input's codes with zero point `zp − c_q`; otherwise the
/// zero point saturates (0 or 255), the scale grows to
/// `(255 − (zp − c_q))/255·scale` (or `(zp − c_q)/255·scale`), and each
/// code is `requantize_from_int(f32(scale)/f32(scale'), zp', q − zp + c_q)`.
/// `relu` (`add_scalar_relu`) then clamps below at the output zero point.
pub fn add_scalar(engine: &Engine, x: &QTensor<u8>, c: f64, relu: bool) -> Result<QTensor<u8>> {
    const OP: &str = "add_scalar";
    let (s, z) = per_tensor(OP, x)?;
    nonempty(OP, x)?;
    if !c.is_finite() {
        return Err(invalid(OP, format!("the scalar {c} is not finite")));
    }
    let _ = engine;
    let cq = (c / s).round_ties_even();
    if cq.abs() > 1e15 {
        return Err(invalid(
            OP,
            format!("the scalar {c} is out of range for scale {s}"),
        ));
    }
    let cq = cq as i64;
    let (qmin, qmax) = (0i64, 255i64);
    let shifted = z - cq;
    let (sp, zp, data): (f64, i64, Vec<u8>) = if qmin > shifted || qmax < shifted {
        let (sp, zp) = if qmin > shifted {
            (
                (qmax as f64 - shifted as f64) / (qmax as f64 - qmin as f64) * s,
                qmin,
            )
        } else {
            (
                (shifted as f64 - qmin as f64) / (qmax as f64 - qmin as f64) * s,
                qmax,
            )
        };
        rquant_core::tensor::check_scale(OP, sp)?;
        let multiplier = (s as f32) * (1.0f32 / sp as f32);
        let data = x
            .int_repr()
            .iter()
            .map(|&q| {
                let v = requantize_from_int(multiplier, zp, q as i64 - z + cq);
                if relu {
                    v.max(zp as u8)
                } else {
                    v
                }
            })
            .collect();
        (sp, zp, data)
    } else {
        let data = x
            .int_repr()
            .iter()
            .map(|&q| if relu { q.max(shifted as u8) } else { q })
            .collect();
        (s, shifted, data)
    };
    Ok(like(x, data, sp, zp))
}

/// Quantized multiply by a scalar (`quantized::mul_scalar`,
/// `QFunctional.mul_scalar`): only the qparams change for `c > 0`
/// (scale `c·scale`); `c = 0` gives zeros with scale 1, zero point 0; `c < 0`
/// reflects the codes (`255 − q`, zero point `255 − zp`, scale `|c|·scale`).
/// `relu` (`mul_scalar_relu`) clamps below at the output zero point.
pub fn mul_scalar(engine: &Engine, x: &QTensor<u8>, c: f64, relu: bool) -> Result<QTensor<u8>> {
    const OP: &str = "mul_scalar";
    let (s, z) = per_tensor(OP, x)?;
    nonempty(OP, x)?;
    if !c.is_finite() {
        return Err(invalid(OP, format!("the scalar {c} is not finite")));
    }
    let _ = engine;
    let (sp, zp, data): (f64, i64, Vec<u8>) = if c > 0.0 {
        let sp = c * s;
        rquant_core::tensor::check_scale(OP, sp)?;
        let data = x
            .int_repr()
            .iter()
            .map(|&q| if relu { q.max(z as u8) } else { q })
            .collect();
        (sp, z, data)
    } else if c == 0.0 {
        (1.0, 0, vec![0; x.numel()])
    } else {
        let sp = c.abs() * s;
        rquant_core::tensor::check_scale(OP, sp)?;
        let zp = 255 - z;
        let data = x
            .int_repr()
            .iter()
            .map(|&q| {
                let v = 255 - q;
                if relu {
                    v.max(zp as u8)
                } else {
                    v
                }
            })
            .collect();
        (sp, zp, data)
    };
    Ok(like(x, data, sp, zp))
}

/// Quantized multiply followed by ReLU (`quantized::mul_relu`): §5's
/// multiply to the output qparams, then `max(q, out_zero_point)` (PyTorch's
/// fused kernel clamps the requantized value below at the zero point).
pub fn mul_relu(
    engine: &Engine,
    a: &QTensor<u8>,
    b: &QTensor<u8>,
    out_scale: f64,
    out_zero_point: i64,
) -> Result<QTensor<u8>> {
    let y = engine.binary(rquant_core::BinaryOp::Mul, a, b, out_scale, out_zero_point)?;
    Ok(engine.relu(&y)?)
}

/// Quantized concatenation followed by ReLU (`quantized::cat_relu`):
/// [`Engine::cat`], then `max(q, out_zero_point)`.
pub fn cat_relu(
    engine: &Engine,
    xs: &[&QTensor<u8>],
    dim: i64,
    out_scale: f64,
    out_zero_point: i64,
) -> Result<QTensor<u8>> {
    let y = engine.cat(xs, dim, out_scale, out_zero_point)?;
    Ok(engine.relu(&y)?)
}

// ---------------------------------------------------------------- batch norm 1d / 3d

/// Quantized batch norm of `[N, C]` / `[N, C, L]` input
/// (`quantized::batch_norm1d(_relu)`): §14's batch norm on `[N, C, L, 1]`.
pub fn batch_norm1d(
    engine: &Engine,
    x: &QTensor<u8>,
    p: &rquant_core::BatchNormParams<'_>,
    out_scale: f64,
    out_zero_point: i64,
    relu: bool,
) -> Result<QTensor<u8>> {
    const OP: &str = "batch_norm1d";
    let s = x.shape().to_vec();
    let l = match s.len() {
        2 => 1,
        3 => s[2],
        _ => {
            return Err(QuantError::InvalidShape {
                op: OP,
                shape: s,
                detail: "expected [N, C] or [N, C, L]".into(),
            }
            .into())
        }
    };
    let x4 = x.clone().contiguous().reshape(vec![s[0], s[1], l, 1])?;
    let y = engine.batch_norm2d(&x4, p, out_scale, out_zero_point, relu)?;
    Ok(y.contiguous().reshape(s)?)
}

/// Quantized batch norm of NCDHW input (`quantized::batch_norm3d(_relu)`):
/// §14's batch norm on `[N, C, D·H, W]` (the same per-channel arithmetic);
/// the output is contiguous.
pub fn batch_norm3d(
    engine: &Engine,
    x: &QTensor<u8>,
    p: &rquant_core::BatchNormParams<'_>,
    out_scale: f64,
    out_zero_point: i64,
    relu: bool,
) -> Result<QTensor<u8>> {
    const OP: &str = "batch_norm3d";
    let &[n, c, d, h, w] = x.shape() else {
        return Err(QuantError::InvalidShape {
            op: OP,
            shape: x.shape().to_vec(),
            detail: "expected NCDHW (5 dimensions)".into(),
        }
        .into());
    };
    let x4 = x.clone().contiguous().reshape(vec![n, c, d * h, w])?;
    let y = engine.batch_norm2d(&x4, p, out_scale, out_zero_point, relu)?;
    Ok(y.contiguous().reshape(vec![n, c, d, h, w])?)
}

// ---------------------------------------------------------------- pooling

/// Quantized 1-d max pooling (`torch.max_pool1d` on a quint8 `[N, C, L]` /
/// `[C, L]` tensor): max_pool2d of height 1 (the maximum over the window's
/// in-bounds positions), qparams kept.
#[allow(clippy::too_many_arguments)]
pub fn max_pool1d(
    engine: &Engine,
    x: &QTensor<u8>,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Result<QTensor<u8>> {
    const OP: &str = "max_pool1d";
    let s = x.shape().to_vec();
    let (n, c, l) = match *s.as_slice() {
        [c, l] => (1, c, l),
        [n, c, l] => (n, c, l),
        _ => {
            return Err(QuantError::InvalidShape {
                op: OP,
                shape: s,
                detail: "expected [N, C, L] or [C, L]".into(),
            }
            .into())
        }
    };
    // Checked here so the error speaks of the 1-d window, not the 2-d one
    // the op runs as.
    let span = dilation.saturating_mul(kernel.saturating_sub(1)) + 1;
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err(QuantError::InvalidArgument {
            op: OP,
            detail: format!(
                "kernel {kernel}, stride {stride} and dilation {dilation} must be positive"
            ),
        }
        .into());
    }
    if l + 2 * padding < span {
        return Err(QuantError::ShapeMismatch {
            op: OP,
            detail: format!(
                "kernel {kernel} (dilation {dilation}, padding {padding}) gives an empty output for length {l}"
            ),
        }
        .into());
    }
    let x4 = x.clone().contiguous().reshape(vec![n, c, 1, l])?;
    let p = rquant_core::MaxPool2dParams {
        kernel: [1, kernel],
        stride: [1, stride],
        padding: [0, padding],
        dilation: [1, dilation],
        ceil_mode,
    };
    let y = engine.max_pool2d(&x4, &p)?.contiguous();
    let lo = y.shape()[3];
    let mut shape = s;
    *shape.last_mut().expect("2-D or 3-D") = lo;
    Ok(y.reshape(shape)?)
}

/// Pooling parameters over `[D, H, W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool3dParams {
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    /// Max pooling only (1 for average pooling).
    pub dilation: [usize; 3],
    pub ceil_mode: bool,
}

fn pool3d_shape(
    op: &'static str,
    x: &QTensor<u8>,
    p: &Pool3dParams,
) -> Result<([usize; 5], [usize; 3])> {
    let s = x.shape();
    let full: [usize; 5] = match *s {
        [c, d, h, w] => [1, c, d, h, w],
        [n, c, d, h, w] => [n, c, d, h, w],
        _ => {
            return Err(QuantError::InvalidShape {
                op,
                shape: s.to_vec(),
                detail: "expected [N, C, D, H, W] or [C, D, H, W]".into(),
            }
            .into())
        }
    };
    nonempty(op, x)?;
    let mut out = [0; 3];
    for a in 0..3 {
        if p.padding[a] * 2 > p.kernel[a] {
            return Err(invalid(
                op,
                format!(
                    "padding {:?} must be at most half the kernel {:?}",
                    p.padding, p.kernel
                ),
            ));
        }
        out[a] = rquant_core::ops::pool_out_len(
            full[2 + a],
            p.kernel[a],
            p.stride[a],
            p.padding[a],
            p.dilation[a],
            p.ceil_mode,
        )
        .ok_or_else(|| {
            invalid(
                op,
                format!(
                    "kernel {:?} (stride {:?}, padding {:?}, dilation {:?}) gives an empty output for input {:?}",
                    p.kernel, p.stride, p.padding, p.dilation, &full[2..]
                ),
            )
        })?;
    }
    Ok((full, out))
}

fn out_shape_like(x: &QTensor<u8>, full: [usize; 5], out: [usize; 3]) -> Vec<usize> {
    let mut v = if x.ndim() == 5 {
        vec![full[0], full[1]]
    } else {
        vec![full[1]]
    };
    v.extend_from_slice(&out);
    v
}

/// Quantized 3-d max pooling (`torch.max_pool3d` on a quint8 tensor): the
/// maximum over the window's in-bounds positions, qparams kept.
pub fn max_pool3d(engine: &Engine, x: &QTensor<u8>, p: &Pool3dParams) -> Result<QTensor<u8>> {
    const OP: &str = "max_pool3d";
    let (s, z) = per_tensor(OP, x)?;
    let _ = engine;
    let (full, out) = pool3d_shape(OP, x, p)?;
    let [n, c, d, h, w] = full;
    let xc = x.to_format(MemoryFormat::Contiguous);
    let xd = xc.int_repr();
    let mut y = Vec::with_capacity(n * c * out.iter().product::<usize>());
    for plane in xd.chunks_exact(d * h * w).take(n * c) {
        for od in 0..out[0] {
            for oh in 0..out[1] {
                for ow in 0..out[2] {
                    let mut m = 0u8;
                    for kd in 0..p.kernel[0] {
                        let id =
                            (od * p.stride[0] + kd * p.dilation[0]) as i64 - p.padding[0] as i64;
                        if !(0..d as i64).contains(&id) {
                            continue;
                        }
                        for kh in 0..p.kernel[1] {
                            let ih = (oh * p.stride[1] + kh * p.dilation[1]) as i64
                                - p.padding[1] as i64;
                            if !(0..h as i64).contains(&ih) {
                                continue;
                            }
                            for kw in 0..p.kernel[2] {
                                let iw = (ow * p.stride[2] + kw * p.dilation[2]) as i64
                                    - p.padding[2] as i64;
                                if (0..w as i64).contains(&iw) {
                                    m = m.max(
                                        plane[((id as usize) * h + ih as usize) * w + iw as usize],
                                    );
                                }
                            }
                        }
                    }
                    y.push(m);
                }
            }
        }
    }
    Ok(QTensor::new_per_tensor_unchecked(
        out_shape_like(x, full, out),
        y,
        s,
        z,
    ))
}

/// Quantized 3-d average pooling (`torch.avg_pool3d` on a quint8 tensor;
/// PyTorch's channels-last kernel, the only one it has): per window, with
/// `pool_size` and `size` as §9's avg_pool2d and `div` the divisor,
/// `m = f32(f32(f32(scale)/f32(scale))/f32(div))`,
/// `acc = Σq − zp·size` (int32), `y = clamp(zp + rne(f32(acc)·(1/f32(1/m))), 0, 255)`
/// — the zero point added after rounding. qparams kept.
pub fn avg_pool3d(
    engine: &Engine,
    x: &QTensor<u8>,
    p: &Pool3dParams,
    count_include_pad: bool,
    divisor_override: Option<usize>,
) -> Result<QTensor<u8>> {
    const OP: &str = "avg_pool3d";
    let (s, z) = per_tensor(OP, x)?;
    let _ = engine;
    if p.dilation != [1; 3] {
        return Err(invalid(OP, "average pooling has no dilation"));
    }
    if divisor_override == Some(0) {
        return Err(invalid(OP, "divisor_override must be positive"));
    }
    let (full, out) = pool3d_shape(OP, x, p)?;
    let [n, c, d, h, w] = full;
    let xc = x.to_format(MemoryFormat::Contiguous);
    let xd = xc.int_repr();
    let mut y = Vec::with_capacity(n * c * out.iter().product::<usize>());
    let dims = [d, h, w];
    for plane in xd.chunks_exact(d * h * w).take(n * c) {
        for od in 0..out[0] {
            for oh in 0..out[1] {
                for ow in 0..out[2] {
                    let o = [od, oh, ow];
                    let mut st = [0i64; 3];
                    let mut en = [0i64; 3];
                    let mut pool = 1i64;
                    for a in 0..3 {
                        st[a] = (o[a] * p.stride[a]) as i64 - p.padding[a] as i64;
                        en[a] = (st[a] + p.kernel[a] as i64).min((dims[a] + p.padding[a]) as i64);
                        pool *= en[a] - st[a];
                        st[a] = st[a].max(0);
                        en[a] = en[a].min(dims[a] as i64);
                    }
                    let size = (en[0] - st[0]) * (en[1] - st[1]) * (en[2] - st[2]);
                    let div = match divisor_override {
                        Some(v) => v as i64,
                        None if count_include_pad => pool,
                        None => size,
                    };
                    let mut acc = -z * size;
                    for id in st[0]..en[0] {
                        for ih in st[1]..en[1] {
                            for iw in st[2]..en[2] {
                                acc += plane[((id as usize) * h + ih as usize) * w + iw as usize]
                                    as i64;
                            }
                        }
                    }
                    // PyTorch's in_scale / out_scale / divisor; the scales
                    // are equal, so the ratio is exactly 1.
                    let m = 1.0f32 / div as f32;
                    let inv = 1.0f32 / (1.0f32 / m);
                    y.push(rquant_core::numerics::quantize_val::<u8>(
                        inv, z, acc as f32,
                    ));
                }
            }
        }
    }
    Ok(QTensor::new_per_tensor_unchecked(
        out_shape_like(x, full, out),
        y,
        s,
        z,
    ))
}

/// Quantized 3-d adaptive average pooling (`torch.adaptive_avg_pool3d` on
/// a contiguous quint8 tensor, PyTorch's NCDHW kernel): windows
/// `[⌊o·in/out⌋, ⌈(o+1)·in/out⌉)` per axis; with `rD = f32(1/kD)`,
/// `rDH = f32(rD/kH)`, `r = f32(rDH/kW)`: `y = rne(f32(Σq)·r)`, qparams kept.
pub fn adaptive_avg_pool3d(
    engine: &Engine,
    x: &QTensor<u8>,
    output_size: [usize; 3],
) -> Result<QTensor<u8>> {
    const OP: &str = "adaptive_avg_pool3d";
    let (s, z) = per_tensor(OP, x)?;
    let _ = engine;
    let full: [usize; 5] = match *x.shape() {
        [c, d, h, w] => [1, c, d, h, w],
        [n, c, d, h, w] => [n, c, d, h, w],
        _ => {
            return Err(QuantError::InvalidShape {
                op: OP,
                shape: x.shape().to_vec(),
                detail: "expected [N, C, D, H, W] or [C, D, H, W]".into(),
            }
            .into())
        }
    };
    nonempty(OP, x)?;
    if output_size.contains(&0) {
        return Err(invalid(
            OP,
            format!("output_size {output_size:?} must be positive"),
        ));
    }
    let [n, c, d, h, w] = full;
    let xc = x.to_format(MemoryFormat::Contiguous);
    let xd = xc.int_repr();
    let win = |o: usize, inp: usize, out: usize| rquant_core::ops::adaptive_window(o, inp, out);
    let mut y = Vec::with_capacity(n * c * output_size.iter().product::<usize>());
    for plane in xd.chunks_exact(d * h * w).take(n * c) {
        for od in 0..output_size[0] {
            let (d0, d1) = win(od, d, output_size[0]);
            let rd = (1.0f64 / (d1 - d0) as f64) as f32;
            for oh in 0..output_size[1] {
                let (h0, h1) = win(oh, h, output_size[1]);
                let rdh = rd / (h1 - h0) as f32;
                for ow in 0..output_size[2] {
                    let (w0, w1) = win(ow, w, output_size[2]);
                    let r = rdh / (w1 - w0) as f32;
                    let mut sum = 0i64;
                    for id in d0..d1 {
                        for ih in h0..h1 {
                            for iw in w0..w1 {
                                sum += plane[(id * h + ih) * w + iw] as i64;
                            }
                        }
                    }
                    let v = rquant_core::numerics::rne(sum as f32 * r) as i64;
                    y.push(v.clamp(0, 255) as u8);
                }
            }
        }
    }
    Ok(QTensor::new_per_tensor_unchecked(
        out_shape_like(x, full, output_size),
        y,
        s,
        z,
    ))
}
