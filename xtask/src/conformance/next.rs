//! The runner's code for the ops of CONFORMANCE.md's second table ("Ops
//! added for the next releases"): each reads its case's inputs and
//! attributes and calls the engine's op.

use rquant_core::{
    BatchNormParams, Conv1dParams, Conv3dParams, ConvTranspose2dParams, EmbeddingBagTable,
    GeluApproximate, NormParams, QParams, QTensor, QType, QuantError, UpsampleSize,
};

use super::case::{Case, CaseError, Data};
use super::ops::{bias, one, quint8, u8_out, weight, Engine, Outputs};

pub(super) fn qe(c: &Case) -> impl Fn(QuantError) -> CaseError + '_ {
    move |r| c.err(r.to_string())
}

pub(super) fn x_in(c: &Case) -> Result<QTensor<u8>, CaseError> {
    quint8(c, "x", "scale", "zero_point")
}

pub(super) fn out_qp(c: &Case) -> Result<(f64, i64), CaseError> {
    Ok((c.f64("out_scale")?, c.i64("out_zero_point")?))
}

pub(super) fn f32_attr(c: &Case, name: &str, default: f64) -> Result<f32, CaseError> {
    Ok(c.opt_f64(name)?.unwrap_or(default) as f32)
}

fn opt_f32_in(c: &Case, name: &str) -> Result<Option<Vec<f32>>, CaseError> {
    if c.has_input(name) {
        Ok(Some(c.in_f32(name)?.1))
    } else {
        Ok(None)
    }
}

/// `n` non-negative integers (a list of `n`, or of one repeated).
pub(super) fn usizes<const N: usize>(
    c: &Case,
    name: &str,
    default: Option<[usize; N]>,
) -> Result<[usize; N], CaseError> {
    if c.attrs.get(name).is_none() {
        let _ = c.opt_i64(name);
        return default.ok_or_else(|| c.err(format!("attr {name:?} missing")));
    }
    let v = c.i64s(name)?;
    let bad = || {
        c.err(format!(
            "attr {name:?} must be {N} non-negative integers, got {v:?}"
        ))
    };
    if v.iter().any(|&x| x < 0) {
        return Err(bad());
    }
    match v.len() {
        1 => Ok([v[0] as usize; N]),
        l if l == N => Ok(std::array::from_fn(|i| v[i] as usize)),
        _ => Err(bad()),
    }
}

pub(super) fn groups(c: &Case) -> Result<usize, CaseError> {
    let g = c.i64("groups")?;
    usize::try_from(g).map_err(|_| c.err(format!("groups {g} is negative")))
}

pub(super) fn hardtanh_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let (lo, hi) = (f32_attr(c, "min_val", -1.0)?, f32_attr(c, "max_val", 1.0)?);
    Ok(u8_out(e.hardtanh(&x, lo, hi).map_err(qe(c))?))
}

pub(super) fn relu6_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    Ok(u8_out(e.relu6(&x_in(c)?).map_err(qe(c))?))
}

pub(super) fn leaky_relu_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let slope = f32_attr(c, "negative_slope", 0.01)?;
    let (s, z) = out_qp(c)?;
    Ok(u8_out(e.leaky_relu(&x, slope, s, z).map_err(qe(c))?))
}

pub(super) fn elu_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let alpha = f32_attr(c, "alpha", 1.0)?;
    let (s, z) = out_qp(c)?;
    Ok(u8_out(e.elu(&x, alpha, s, z).map_err(qe(c))?))
}

pub(super) fn hardsigmoid_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    Ok(u8_out(e.hardsigmoid(&x_in(c)?).map_err(qe(c))?))
}

pub(super) fn tanh_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    Ok(u8_out(e.tanh(&x_in(c)?).map_err(qe(c))?))
}

pub(super) fn gelu_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let name = c.opt_str("approximate")?.unwrap_or_else(|| "none".into());
    let a = GeluApproximate::from_name(&name)
        .ok_or_else(|| c.err(format!("unknown approximate {name:?} (none or tanh)")))?;
    Ok(u8_out(e.gelu(&x, a).map_err(qe(c))?))
}

fn norm_params<'a>(
    c: &Case,
    w: &'a Option<Vec<f32>>,
    b: &'a Option<Vec<f32>>,
) -> Result<NormParams<'a>, CaseError> {
    Ok(NormParams {
        weight: w.as_deref(),
        bias: b.as_deref(),
        eps: c.opt_f64("eps")?.unwrap_or(1e-5),
    })
}

pub(super) fn layer_norm_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let (w, b) = (opt_f32_in(c, "weight")?, opt_f32_in(c, "bias")?);
    let p = norm_params(c, &w, &b)?;
    let ns = c.i64s("normalized_shape")?;
    let ns: Vec<usize> = ns
        .iter()
        .map(|&v| usize::try_from(v).map_err(|_| c.err(format!("normalized_shape {ns:?}"))))
        .collect::<Result<_, _>>()?;
    let (s, z) = out_qp(c)?;
    Ok(u8_out(
        e.layer_norm(&x, &ns, &p, s, z).map_err(qe(c))?.contiguous(),
    ))
}

pub(super) fn group_norm_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let (w, b) = (opt_f32_in(c, "weight")?, opt_f32_in(c, "bias")?);
    let p = norm_params(c, &w, &b)?;
    let g = c.i64("num_groups")?;
    let g = usize::try_from(g).map_err(|_| c.err(format!("num_groups {g} is negative")))?;
    let (s, z) = out_qp(c)?;
    Ok(u8_out(
        e.group_norm(&x, g, &p, s, z).map_err(qe(c))?.contiguous(),
    ))
}

pub(super) fn instance_norm_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let (w, b) = (opt_f32_in(c, "weight")?, opt_f32_in(c, "bias")?);
    let p = norm_params(c, &w, &b)?;
    let (s, z) = out_qp(c)?;
    Ok(u8_out(
        e.instance_norm(&x, &p, s, z).map_err(qe(c))?.contiguous(),
    ))
}

/// The batch-norm inputs (F32 [C] each).
pub(super) struct BnInputs {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

pub(super) fn bn_inputs(c: &Case) -> Result<BnInputs, CaseError> {
    Ok(BnInputs {
        weight: c.in_f32("weight")?.1,
        bias: c.in_f32("bias")?.1,
        mean: c.in_f32("mean")?.1,
        var: c.in_f32("var")?.1,
    })
}

fn batch_norm(c: &Case, e: &Engine, relu: bool) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let bn = bn_inputs(c)?;
    let p = BatchNormParams {
        weight: &bn.weight,
        bias: &bn.bias,
        mean: &bn.mean,
        var: &bn.var,
        eps: c.opt_f64("eps")?.unwrap_or(1e-5),
    };
    let (s, z) = out_qp(c)?;
    let y = e.batch_norm2d(&x, &p, s, z, relu).map_err(qe(c))?;
    Ok(u8_out(y.contiguous()))
}

pub(super) fn batch_norm2d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    batch_norm(c, e, false)
}

pub(super) fn batch_norm2d_relu_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    batch_norm(c, e, true)
}

pub(super) fn conv1d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = quint8(c, "x", "x_scale", "x_zero_point")?;
    let p = Conv1dParams {
        stride: usizes::<1>(c, "stride", None)?[0],
        padding: usizes::<1>(c, "padding", None)?[0],
        dilation: usizes::<1>(c, "dilation", None)?[0],
        groups: groups(c)?,
    };
    let w = e.pack_conv1d(weight(c)?, bias(c)?, p).map_err(qe(c))?;
    let (s, z) = out_qp(c)?;
    let y = e
        .conv1d(&x, &w, s, z, c.bool_or("relu", false)?)
        .map_err(qe(c))?;
    Ok(u8_out(y))
}

pub(super) fn conv3d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = quint8(c, "x", "x_scale", "x_zero_point")?;
    let p = Conv3dParams {
        stride: usizes(c, "stride", None)?,
        padding: usizes(c, "padding", None)?,
        dilation: usizes(c, "dilation", None)?,
        groups: groups(c)?,
    };
    let w = e.pack_conv3d(weight(c)?, bias(c)?, p).map_err(qe(c))?;
    let (s, z) = out_qp(c)?;
    let y = e
        .conv3d(&x, &w, s, z, c.bool_or("relu", false)?)
        .map_err(qe(c))?;
    Ok(u8_out(y))
}

pub(super) fn conv_transpose2d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = quint8(c, "x", "x_scale", "x_zero_point")?;
    let p = ConvTranspose2dParams {
        stride: usizes(c, "stride", None)?,
        padding: usizes(c, "padding", None)?,
        output_padding: usizes(c, "output_padding", Some([0, 0]))?,
        dilation: usizes(c, "dilation", None)?,
        groups: groups(c)?,
    };
    let w = e
        .pack_conv_transpose2d(weight(c)?, bias(c)?, p)
        .map_err(qe(c))?;
    let (s, z) = out_qp(c)?;
    Ok(u8_out(e.conv_transpose2d(&x, &w, s, z).map_err(qe(c))?))
}

/// Exactly one of `output_size` and `scale_factors`.
fn upsample_size(c: &Case) -> Result<UpsampleSize, CaseError> {
    let has = |n: &str| c.attrs.get(n).is_some_and(|v| !v.is_null());
    match (has("output_size"), has("scale_factors")) {
        (true, false) => {
            let _ = c.opt_f64("scale_factors");
            Ok(UpsampleSize::OutputSize(c.pair("output_size", None)?))
        }
        (false, true) => {
            let _ = c.opt_i64("output_size");
            let v = c.f64s("scale_factors")?;
            match v.as_slice() {
                [h, w] => Ok(UpsampleSize::ScaleFactors([*h, *w])),
                [s] => Ok(UpsampleSize::ScaleFactors([*s, *s])),
                _ => Err(c.err(format!("scale_factors {v:?}: expected two numbers"))),
            }
        }
        _ => Err(c.err("exactly one of output_size and scale_factors must be given")),
    }
}

pub(super) fn upsample_nearest2d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    // Nearest upsampling moves codes: any valid qparams do.
    let (shape, v) = c.in_u8("x")?;
    let x = QTensor::from_int_repr(shape, v, QParams::per_tensor(1.0, 0)).map_err(qe(c))?;
    let y = e.upsample_nearest2d(&x, upsample_size(c)?).map_err(qe(c))?;
    Ok(u8_out(y))
}

pub(super) fn upsample_bilinear2d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let size = upsample_size(c)?;
    let y = e
        .upsample_bilinear2d(&x, size, c.bool_or("align_corners", false)?)
        .map_err(qe(c))?;
    Ok(u8_out(y))
}

pub(super) fn constant_pad2d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let pad = c.i64s("pad")?;
    let pad: [i64; 4] = pad
        .as_slice()
        .try_into()
        .map_err(|_| c.err(format!("pad {pad:?}: expected [left, right, top, bottom]")))?;
    let value = f32_attr(c, "value", 0.0)?;
    Ok(u8_out(e.constant_pad2d(&x, pad, value).map_err(qe(c))?))
}

pub(super) fn channel_shuffle_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let (shape, v) = c.in_u8("x")?;
    let x = QTensor::from_int_repr(shape, v, QParams::per_tensor(1.0, 0)).map_err(qe(c))?;
    Ok(u8_out(e.channel_shuffle(&x, groups(c)?).map_err(qe(c))?))
}

pub(super) fn mean_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let dims = c.i64s("dim")?;
    let y = e
        .mean(&x, &dims, c.bool_or("keepdim", false)?)
        .map_err(qe(c))?;
    Ok(u8_out(y.contiguous()))
}

pub(super) fn softmax_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let (s, z) = out_qp(c)?;
    Ok(u8_out(e.softmax(&x, c.i64("dim")?, s, z).map_err(qe(c))?))
}

fn matmul_t<T: QType>(
    c: &Case,
    e: &Engine,
    a: (Vec<usize>, Vec<T>),
    b: (Vec<usize>, Vec<T>),
) -> Result<Outputs, CaseError> {
    let qa = QTensor::from_int_repr(
        a.0,
        a.1,
        QParams::per_tensor(c.f64("a_scale")?, c.i64("a_zero_point")?),
    )
    .map_err(qe(c))?;
    let qb = QTensor::from_int_repr(
        b.0,
        b.1,
        QParams::per_tensor(c.f64("b_scale")?, c.i64("b_zero_point")?),
    )
    .map_err(qe(c))?;
    let (s, z) = out_qp(c)?;
    let y = e.matmul(&qa, &qb, s, z).map_err(qe(c))?;
    let shape = y.shape().to_vec();
    let data = y.into_int_repr();
    let data = match T::DTYPE {
        rquant_core::QDType::QUInt8 => Data::U8(bytemuck_u8(&data)),
        _ => Data::I8(bytemuck_u8(&data).into_iter().map(|b| b as i8).collect()),
    };
    Ok(one("y", shape, data))
}

fn bytemuck_u8<T: QType>(v: &[T]) -> Vec<u8> {
    v.iter().map(|x| x.to_i64() as u8).collect()
}

pub(super) fn matmul_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    match c.input("a")?.data {
        Data::U8(_) => matmul_t(c, e, c.in_u8("a")?, c.in_u8("b")?),
        Data::I8(_) => matmul_t(c, e, c.in_i8("a")?, c.in_i8("b")?),
        ref d => Err(c.err(format!("in.a has dtype {}, expected U8 or I8", d.dtype()))),
    }
}

/// `embedding_bag_{byte,4bit,2bit}` (`bits` 8, 4 or 2): the 4- and 2-bit
/// tables hold F16 scales and biases.
pub(super) fn embedding_bag(c: &Case, e: &Engine, bits: u8) -> Result<Outputs, CaseError> {
    let (shape, codes) = c.in_u8("weight")?;
    let &[rows, dim] = shape.as_slice() else {
        return Err(c.err(format!(
            "in.weight has shape {shape:?}, expected [rows, dim]"
        )));
    };
    let table = match bits {
        8 => EmbeddingBagTable::byte(
            rows,
            dim,
            codes,
            c.in_f32("weight_scales")?.1,
            c.in_f32("weight_biases")?.1,
        ),
        4 => EmbeddingBagTable::four_bit(
            rows,
            dim,
            codes,
            &c.in_f16("weight_scales")?.1,
            &c.in_f16("weight_biases")?.1,
        ),
        _ => EmbeddingBagTable::two_bit(
            rows,
            dim,
            codes,
            &c.in_f16("weight_scales")?.1,
            &c.in_f16("weight_biases")?.1,
        ),
    }
    .map_err(qe(c))?;
    let mode = c.opt_str("mode")?.unwrap_or_else(|| "sum".into());
    if mode != "sum" {
        return Err(c.err(format!("mode {mode:?}: only sum is supported")));
    }
    let (_, indices) = c.in_i64("indices")?;
    let (_, offsets) = c.in_i64("offsets")?;
    let psw = opt_f32_in(c, "per_sample_weights")?;
    let last = c.bool_or("include_last_offset", false)?;
    let y = match bits {
        8 => e.embedding_bag_byte(&table, &indices, &offsets, psw.as_deref(), last),
        4 => e.embedding_bag_4bit(&table, &indices, &offsets, psw.as_deref(), last),
        _ => e.embedding_bag_2bit(&table, &indices, &offsets, psw.as_deref(), last),
    }
    .map_err(qe(c))?;
    Ok(one("y", y.shape().to_vec(), Data::F32(y.into_data())))
}

pub(super) fn embedding_bag_byte_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    embedding_bag(c, e, 8)
}

pub(super) fn embedding_bag_4bit_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    embedding_bag(c, e, 4)
}
