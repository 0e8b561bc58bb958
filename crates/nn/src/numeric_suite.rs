//! Numeric suite (`torch.ao.ns._numeric_suite`): weight and per-layer
//! output SQNR between a float model and its quantized version.

use rquant_core::Tensor;

use crate::error::Result;
use crate::format::join;
use crate::module::{Module, Sequential};
use crate::value::Value;

/// `compute_SQNR`: `20 · log10(‖x‖ / ‖x − y‖)` in dB (∞ when equal).
pub fn sqnr(x: &[f32], y: &[f32]) -> f64 {
    let ps: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let pn: f64 = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    if pn == 0.0 {
        f64::INFINITY
    } else {
        20.0 * (ps / pn).log10()
    }
}

/// One row of a comparison.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub name: String,
    pub float_type: String,
    pub quant_type: String,
    pub shape: Vec<usize>,
    pub sqnr_db: f64,
}

/// The float weight of an unconverted module.
fn float_weight(m: &Module) -> Option<Tensor> {
    m.engine().is_none().then(|| m.layer().weight()).flatten()
}

/// The (dequantized) weight of a quantized module.
fn quant_weight(m: &Module) -> Option<Tensor> {
    m.engine().and(m.layer().weight())
}

/// `compare_weights`: SQNR of every quantized weight against the float
/// weight at the same path (use the fused float model for fused layers).
pub fn compare_weights(float: &Module, quant: &Module) -> Vec<Comparison> {
    let mut out = Vec::new();
    for (path, qm) in quant.named_modules() {
        let (Some(qw), Some(fm)) = (quant_weight(qm), float.get(&path)) else {
            continue;
        };
        if let Some(fw) = float_weight(fm) {
            let fw = &fw;
            if fw.shape() == qw.shape() {
                out.push(Comparison {
                    name: join(&path, "weight"),
                    float_type: fm.type_name(),
                    quant_type: qm.type_name(),
                    shape: fw.shape().to_vec(),
                    sqnr_db: sqnr(fw.data(), qw.data()),
                });
            }
        }
    }
    out
}

/// Forward `x`, logging the output of every leaf module by path (children of
/// Sequential containers are visited one by one; custom modules are leaves).
pub fn forward_logged(
    m: &mut Module,
    x: Value,
    path: &str,
    log: &mut Vec<(String, String, Tensor)>,
) -> Result<Value> {
    if let Some(s) = m.downcast_mut::<Sequential>() {
        let mut x = x;
        for (n, c) in &mut s.children {
            let p = join(path, n);
            x = forward_logged(c, x, &p, log).map_err(|e| e.within(n))?;
        }
        return Ok(x);
    }
    let y = m.forward(x)?;
    if !m.is::<crate::layers::Identity>() {
        log.push((path.to_string(), m.type_name(), y.to_float()));
    }
    Ok(y)
}

/// `compare_model_outputs`: SQNR of each layer's output (quantized outputs
/// dequantized) against the float model's output at the same path.
pub fn compare_model_outputs(
    float: &mut Module,
    quant: &mut Module,
    x: &Tensor,
) -> Result<Vec<Comparison>> {
    let (mut lf, mut lq) = (Vec::new(), Vec::new());
    forward_logged(float, Value::F(x.clone()), "", &mut lf)?;
    forward_logged(quant, Value::F(x.clone()), "", &mut lq)?;
    let mut out = Vec::new();
    for (p, qt, qy) in &lq {
        if let Some((_, ft, fy)) = lf.iter().find(|(fp, _, _)| fp == p) {
            if fy.shape() == qy.shape() {
                out.push(Comparison {
                    name: p.clone(),
                    float_type: ft.clone(),
                    quant_type: qt.clone(),
                    shape: fy.shape().to_vec(),
                    sqnr_db: sqnr(fy.data(), qy.data()),
                });
            }
        }
    }
    Ok(out)
}

/// The comparison as a printable table.
pub fn table(title: &str, rows: &[Comparison]) -> String {
    let mut s = format!(
        "{title}\n{:<22} {:<18} {:<26} {:>18} {:>10}\n",
        "name", "float", "quantized", "shape", "SQNR (dB)"
    );
    for r in rows {
        s += &format!(
            "{:<22} {:<18} {:<26} {:>18} {:>10.2}\n",
            r.name,
            r.float_type,
            r.quant_type,
            format!("{:?}", r.shape),
            r.sqnr_db
        );
    }
    s
}
