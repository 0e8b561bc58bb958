//! Channels-last quantized CNNs: the activations between quantized layers
//! stay NHWC (`QTensor` in [`MemoryFormat::ChannelsLast`]), so no layer
//! transposes; the layout changes only where the model quantizes its float
//! input (the `Quantize` module) and where it dequantizes its output.
//!
//! The one place where NHWC storage would need a transpose is `flatten`
//! before a `Linear`: PyTorch flattens in (C, H, W) order. Instead of
//! transposing the activations, [`fold_flatten_into_linear`] permutes that
//! Linear's weight columns once, at convert time, into (H, W, C) order and
//! replaces the `Flatten` with a [`FlattenChannelsLast`] that reads the NHWC
//! storage as it is: the products are the same, summed in the same exact
//! int32 arithmetic, so the bits are unchanged.

use std::sync::Arc;

use rquant_core::{MemoryFormat, QParams, QTensor};
use serde_json::{json, Value as J};

use crate::error::{bad, NnError, Result};
use crate::format::Saver;
use crate::layers::Flatten;
use crate::module::{Layer, Module, Sequential};
use crate::quantized::QLinear;
use crate::registry::{ModuleRegistry, Node};
use crate::value::Value;

/// `flatten(start_dim=1)` of a `[N, C, H, W]` quantized activation into
/// `[N, H·W·C]`, (H, W, C) order, for a following Linear whose weight
/// columns were permuted to match. A channels-last input is reshaped without
/// a copy; a contiguous one is made channels-last first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlattenChannelsLast {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Layer for FlattenChannelsLast {
    fn type_name(&self) -> String {
        "FlattenChannelsLast".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let q = x.quant("FlattenChannelsLast")?;
        let &[n, c, h, w] = q.shape() else {
            return Err(bad(
                "FlattenChannelsLast",
                format!("expected a 4-D [N, C, H, W] input, got {:?}", q.shape()),
            ));
        };
        if [c, h, w] != [self.c, self.h, self.w] {
            return Err(bad(
                "FlattenChannelsLast",
                format!(
                    "input {:?}: the following Linear was permuted for C, H, W = {}, {}, {}",
                    q.shape(),
                    self.c,
                    self.h,
                    self.w
                ),
            ));
        }
        let q = q.into_format(MemoryFormat::ChannelsLast);
        let (s, z) = q
            .q_per_tensor()
            .ok_or_else(|| bad("FlattenChannelsLast", "a per-channel activation"))?;
        // NHWC storage read as [N, H·W·C]: the same bytes.
        Ok(Value::Q(QTensor::new_per_tensor_unchecked(
            vec![n, c * h * w],
            q.into_int_repr(),
            s,
            z,
        )))
    }
    fn save(&self, _: &mut Saver) -> Result<J> {
        Ok(json!({ "c": self.c, "h": self.h, "w": self.w }))
    }
}

fn load(n: &mut Node) -> Result<Module> {
    let (c, h, w) = (n.get_usize("c")?, n.get_usize("h")?, n.get_usize("w")?);
    if c.checked_mul(h).and_then(|v| v.checked_mul(w)).is_none() || c * h * w == 0 {
        return Err(n.attr_error(
            "c",
            format!("C, H, W = {c}, {h}, {w} is not a valid activation"),
        ));
    }
    Ok(FlattenChannelsLast { c, h, w }.into())
}

pub(crate) fn register_loaders(r: &mut ModuleRegistry) {
    r.register("FlattenChannelsLast", load);
}

/// Permute the `[N, C·H·W]` columns of a linear weight (C, H, W order) to
/// (H, W, C) order.
fn permute_columns(w: &QTensor<i8>, c: usize, h: usize, wd: usize) -> Result<QTensor<i8>> {
    let k = c * h * wd;
    let (n, src) = (w.shape()[0], w.int_repr());
    let mut data = vec![0i8; n * k];
    for (o, row) in data.chunks_exact_mut(k).enumerate() {
        let s = &src[o * k..(o + 1) * k];
        for ch in 0..c {
            for p in 0..h * wd {
                row[p * c + ch] = s[ch * h * wd + p];
            }
        }
    }
    let qp: QParams = w.qparams().clone();
    Ok(QTensor::with_qscheme(
        w.shape().to_vec(),
        data,
        qp,
        w.qscheme(),
    )?)
}

/// The first leaf of `m`, descending into first children of Sequentials.
fn first_leaf_mut(m: &mut Module) -> &mut Module {
    let descend = m
        .downcast_ref::<Sequential>()
        .is_some_and(|s| !s.children.is_empty());
    if descend {
        let s = m.downcast_mut::<Sequential>().expect("checked");
        return first_leaf_mut(&mut s.children[0].1);
    }
    m
}

/// After convert: every `Flatten` (start_dim 1) of a Sequential that saw a
/// `[N, C, H, W]` input with H·W > 1 during calibration, followed by a
/// quantized Linear over C·H·W features, becomes a [`FlattenChannelsLast`],
/// and that Linear's weight columns are permuted to (H, W, C) order.
pub fn fold_flatten_into_linear(model: &mut Module) -> Result<()> {
    model.visit_mut("", &mut |path, m| {
        let Some(s) = m.downcast_mut::<Sequential>() else {
            return Ok(());
        };
        for i in 0..s.children.len().saturating_sub(1) {
            let Some(f) = s.children[i].1.downcast_ref::<Flatten>() else {
                continue;
            };
            let Some([_, c, h, w]) = f.seen_input() else {
                continue;
            };
            if f.start_dim != 1 || h * w == 1 {
                continue; // nothing to permute (a 1x1 plane is the same either way)
            }
            let next = first_leaf_mut(&mut s.children[i + 1].1);
            let Some(l) = next.downcast_mut::<QLinear>() else {
                continue;
            };
            if l.packed.in_features() != c * h * w {
                continue;
            }
            let wq = permute_columns(&l.packed.weight(), c, h, w).map_err(|e| {
                NnError::module(path, format!("permuting the Linear after flatten: {e}"))
            })?;
            let b = l.packed.bias().map(<[f32]>::to_vec);
            l.packed = Arc::new(l.engine.pack_linear(wq, b)?);
            s.children[i].1 = FlattenChannelsLast { c, h, w }.into();
        }
        Ok(())
    })
}
