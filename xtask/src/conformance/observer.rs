//! The `observer` op: feed batches x0, x1, … to an observer, then calculate_qparams.

use rquant_core::observer::{build_observer, ObserverConfig};
use rquant_core::{QDType, QScheme, Tensor as FTensor};

use super::case::{Case, CaseError, Data, Tensor};
use super::ops::Outputs;

pub fn run(c: &Case) -> Result<Outputs, CaseError> {
    let e = |r: rquant_core::QuantError| c.err(r.to_string());
    let kind = c.str("observer")?;
    let dtype_s = c.str("dtype")?;
    let qscheme_s = c.str("qscheme")?;
    let mut cfg = ObserverConfig {
        dtype: QDType::from_name(&dtype_s)
            .ok_or_else(|| c.err(format!("unknown dtype {dtype_s:?}")))?,
        qscheme: QScheme::from_name(&qscheme_s)
            .ok_or_else(|| c.err(format!("unknown qscheme {qscheme_s:?}")))?,
        reduce_range: c.bool_or("reduce_range", false)?,
        quant_min: c.opt_i64("quant_min")?,
        quant_max: c.opt_i64("quant_max")?,
        ..ObserverConfig::default()
    };
    if let Some(a) = c.opt_f64("averaging_constant")? {
        cfg.averaging_constant = a;
    }
    if let Some(a) = c.opt_i64("ch_axis")? {
        cfg.ch_axis = a;
    }
    if let Some(b) = c.opt_i64("bins")? {
        cfg.bins = usize::try_from(b).map_err(|_| c.err(format!("bins {b} is negative")))?;
    }
    if let Some(eps) = c.opt_f64("eps")? {
        cfg.eps = eps as f32;
    }
    let mut obs = build_observer(&kind, cfg).map_err(e)?;
    let batches = c.inputs.keys().filter(|k| k.starts_with('x')).count();
    if batches == 0 {
        return Err(c.err("observer case has no x0 input"));
    }
    for i in 0..batches {
        let (shape, v) = c.in_f32(&format!("x{i}"))?;
        obs.observe(&FTensor::new(shape, v).map_err(e)?)
            .map_err(e)?;
    }
    let qp = obs.calculate_qparams().map_err(e)?;
    let mut m = Outputs::new();
    m.insert(
        "scale".into(),
        Tensor {
            shape: vec![qp.scales.len()],
            data: Data::F32(qp.scales),
        },
    );
    m.insert(
        "zero_point".into(),
        Tensor {
            shape: vec![qp.zero_points.len()],
            data: Data::I64(qp.zero_points),
        },
    );
    Ok(m)
}
