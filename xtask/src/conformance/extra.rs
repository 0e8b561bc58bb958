//! The runner's code for the quantized ops rquant has beyond CONFORMANCE.md's
//! two tables: the module layer's ops (`rquant_nn::qops`) and the 2-bit
//! embedding bag (an engine op). Each reads its case's inputs and
//! attributes and calls rquant's function; tests/golden/README.md lists the
//! attributes.

use rquant_core::{BatchNormParams, QParams, QTensor};
use rquant_nn::qops::{self, ConvTranspose3dParams, Pool3dParams};

use super::case::{Case, CaseError, Data};
use super::next::{bn_inputs, embedding_bag, f32_attr, groups, out_qp, qe, usizes, x_in, BnInputs};
use super::ops::{bias, cat_inputs, one, quint8, u8_out, weight, Engine, Outputs};

fn ne(c: &Case) -> impl Fn(rquant_nn::NnError) -> CaseError + '_ {
    move |r| c.err(r.to_string())
}

/// A finite f32 attribute, `None` when absent.
fn opt_f32_attr(c: &Case, name: &str) -> Result<Option<f32>, CaseError> {
    Ok(c.opt_f64(name)?.map(|v| v as f32))
}

/// `y` and its qparams (`y_scale` F64 [1], `y_zero_point` I64 [1]), for ops
/// that choose their output qparams.
fn u8_out_with_qparams(c: &Case, y: QTensor<u8>) -> Result<Outputs, CaseError> {
    let (s, z) = y
        .q_per_tensor()
        .ok_or_else(|| c.err("the output is not per-tensor quantized"))?;
    let mut m = u8_out(y);
    m.extend(one("y_scale", vec![1], Data::F64(vec![s])));
    m.extend(one("y_zero_point", vec![1], Data::I64(vec![z])));
    Ok(m)
}

// ---------------------------------------------------------------- scalar add / mul

/// `qops::add_scalar` or `qops::mul_scalar`.
type ScalarFn = fn(&Engine, &QTensor<u8>, f64, bool) -> rquant_nn::Result<QTensor<u8>>;

fn scalar_op(c: &Case, e: &Engine, f: ScalarFn, relu: bool) -> Result<Outputs, CaseError> {
    let a = quint8(c, "a", "a_scale", "a_zero_point")?;
    let y = f(e, &a, c.f64("b")?, relu).map_err(ne(c))?;
    u8_out_with_qparams(c, y)
}

pub(super) fn add_scalar_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    scalar_op(c, e, qops::add_scalar, false)
}

pub(super) fn add_scalar_relu_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    scalar_op(c, e, qops::add_scalar, true)
}

pub(super) fn mul_scalar_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    scalar_op(c, e, qops::mul_scalar, false)
}

pub(super) fn mul_scalar_relu_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    scalar_op(c, e, qops::mul_scalar, true)
}

// ---------------------------------------------------------------- cat_relu

pub(super) fn cat_relu_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let xs = cat_inputs(c, "cat_relu")?;
    let refs: Vec<&QTensor<u8>> = xs.iter().collect();
    let (s, z) = out_qp(c)?;
    let y = qops::cat_relu(e, &refs, c.i64("dim")?, s, z).map_err(ne(c))?;
    Ok(u8_out(y))
}

// ---------------------------------------------------------------- one-code activations

pub(super) fn prelu_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let w = quint8(c, "weight", "weight_scale", "weight_zero_point")?;
    let (s, z) = out_qp(c)?;
    Ok(u8_out(qops::prelu(e, &x, &w, s, z).map_err(ne(c))?))
}

pub(super) fn celu_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let alpha = f32_attr(c, "alpha", 1.0)?;
    let (s, z) = out_qp(c)?;
    Ok(u8_out(qops::celu_out(e, &x, alpha, s, z).map_err(ne(c))?))
}

pub(super) fn threshold_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let thr = c.f64("threshold")? as f32;
    let value = c.f64("value")? as f32;
    Ok(u8_out(qops::threshold(e, &x, thr, value).map_err(ne(c))?))
}

pub(super) fn clamp_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let (lo, hi) = (opt_f32_attr(c, "min")?, opt_f32_attr(c, "max")?);
    Ok(u8_out(qops::clamp(e, &x, lo, hi).map_err(ne(c))?))
}

// ---------------------------------------------------------------- pooling

/// Max pooling moves codes: any valid qparams do.
fn codes_in(c: &Case) -> Result<QTensor<u8>, CaseError> {
    let (shape, v) = c.in_u8("x")?;
    QTensor::from_int_repr(shape, v, QParams::per_tensor(1.0, 0)).map_err(qe(c))
}

pub(super) fn max_pool1d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = codes_in(c)?;
    let y = qops::max_pool1d(
        e,
        &x,
        usizes::<1>(c, "kernel_size", None)?[0],
        usizes::<1>(c, "stride", None)?[0],
        usizes::<1>(c, "padding", Some([0]))?[0],
        usizes::<1>(c, "dilation", Some([1]))?[0],
        c.bool_or("ceil_mode", false)?,
    )
    .map_err(ne(c))?;
    Ok(u8_out(y))
}

fn pool3d_params(c: &Case, dilation: bool) -> Result<Pool3dParams, CaseError> {
    Ok(Pool3dParams {
        kernel: usizes(c, "kernel_size", None)?,
        stride: usizes(c, "stride", None)?,
        padding: usizes(c, "padding", Some([0; 3]))?,
        dilation: if dilation {
            usizes(c, "dilation", Some([1; 3]))?
        } else {
            [1; 3]
        },
        ceil_mode: c.bool_or("ceil_mode", false)?,
    })
}

pub(super) fn max_pool3d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = codes_in(c)?;
    let p = pool3d_params(c, true)?;
    Ok(u8_out(qops::max_pool3d(e, &x, &p).map_err(ne(c))?))
}

pub(super) fn avg_pool3d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let p = pool3d_params(c, false)?;
    let divisor_override = match c.opt_i64("divisor_override")? {
        None => None,
        Some(d) if d > 0 => Some(d as usize),
        Some(d) => return Err(c.err(format!("divisor_override {d} must be positive"))),
    };
    let y = qops::avg_pool3d(
        e,
        &x,
        &p,
        c.bool_or("count_include_pad", true)?,
        divisor_override,
    )
    .map_err(ne(c))?;
    Ok(u8_out(y))
}

pub(super) fn adaptive_avg_pool3d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let size = usizes(c, "output_size", None)?;
    Ok(u8_out(
        qops::adaptive_avg_pool3d(e, &x, size).map_err(ne(c))?,
    ))
}

// ---------------------------------------------------------------- transposed convolutions

pub(super) fn conv_transpose1d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = quint8(c, "x", "x_scale", "x_zero_point")?;
    let w = qops::pack_conv_transpose1d(
        e,
        weight(c)?,
        bias(c)?,
        usizes::<1>(c, "stride", None)?[0],
        usizes::<1>(c, "padding", None)?[0],
        usizes::<1>(c, "output_padding", Some([0]))?[0],
        usizes::<1>(c, "dilation", None)?[0],
        groups(c)?,
    )
    .map_err(ne(c))?;
    let (s, z) = out_qp(c)?;
    Ok(u8_out(
        qops::conv_transpose1d(e, &x, &w, s, z).map_err(ne(c))?,
    ))
}

pub(super) fn conv_transpose3d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    let x = quint8(c, "x", "x_scale", "x_zero_point")?;
    let p = ConvTranspose3dParams {
        stride: usizes(c, "stride", None)?,
        padding: usizes(c, "padding", None)?,
        output_padding: usizes(c, "output_padding", Some([0; 3]))?,
        dilation: usizes(c, "dilation", None)?,
        groups: groups(c)?,
    };
    let w = qops::pack_conv_transpose3d(e, weight(c)?, bias(c)?, p).map_err(ne(c))?;
    let (s, z) = out_qp(c)?;
    Ok(u8_out(
        qops::conv_transpose3d(e, &x, &w, s, z).map_err(ne(c))?,
    ))
}

// ---------------------------------------------------------------- batch norm 1d / 3d

fn batch_norm_nd(c: &Case, e: &Engine, three_d: bool, relu: bool) -> Result<Outputs, CaseError> {
    let x = x_in(c)?;
    let BnInputs {
        weight,
        bias,
        mean,
        var,
    } = bn_inputs(c)?;
    let p = BatchNormParams {
        weight: &weight,
        bias: &bias,
        mean: &mean,
        var: &var,
        eps: c.opt_f64("eps")?.unwrap_or(1e-5),
    };
    let (s, z) = out_qp(c)?;
    let y = if three_d {
        qops::batch_norm3d(e, &x, &p, s, z, relu)
    } else {
        qops::batch_norm1d(e, &x, &p, s, z, relu)
    }
    .map_err(ne(c))?;
    Ok(u8_out(y.contiguous()))
}

pub(super) fn batch_norm1d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    batch_norm_nd(c, e, false, false)
}

pub(super) fn batch_norm1d_relu_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    batch_norm_nd(c, e, false, true)
}

pub(super) fn batch_norm3d_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    batch_norm_nd(c, e, true, false)
}

pub(super) fn batch_norm3d_relu_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    batch_norm_nd(c, e, true, true)
}

// ---------------------------------------------------------------- embedding bag

pub(super) fn embedding_bag_2bit_op(c: &Case, e: &Engine) -> Result<Outputs, CaseError> {
    embedding_bag(c, e, 2)
}
