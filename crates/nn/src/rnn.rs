//! Embedding, LSTM and GRU (multi-layer, optionally batch_first): float
//! forward, and the projections pluggable so `quantize_dynamic` can swap in
//! int8 / fp16 dynamic linears (PyTorch's `nnqd.LSTM` / `nnqd.GRU`).

use rquant_core::Tensor;

use serde_json::{json, Value as J};

use crate::error::{bad, Result};
use crate::format::Saver;
use crate::functional as F;
use crate::module::{Layer, Module};
use crate::param::{Param, Rng};
use crate::registry::{ModuleRegistry, Node};
use crate::value::Value;

/// `nn.Embedding`: input holds integer ids (as f32 values).
#[derive(Debug, Clone)]
pub struct Embedding {
    pub num_embeddings: usize,
    pub embedding_dim: usize,
    pub weight: Param,
}

impl Embedding {
    pub fn new(num_embeddings: usize, embedding_dim: usize, rng: &mut Rng) -> Self {
        let w = (0..num_embeddings * embedding_dim)
            .map(|_| rng.sym(1.0))
            .collect();
        Embedding {
            num_embeddings,
            embedding_dim,
            weight: Param::new(Tensor::new([num_embeddings, embedding_dim], w).expect("shape")),
        }
    }
    pub fn from_weight(w: Tensor) -> Result<Self> {
        if w.ndim() != 2 {
            return Err(bad(
                "Embedding",
                format!("weight must be 2-D, got {:?}", w.shape()),
            ));
        }
        Ok(Embedding {
            num_embeddings: w.shape()[0],
            embedding_dim: w.shape()[1],
            weight: Param::new(w),
        })
    }
    pub fn lookup(&self, ids: &[f32], shape: &[usize]) -> Result<Tensor> {
        let d = self.embedding_dim;
        let mut out = Vec::with_capacity(ids.len() * d);
        for &v in ids {
            if v < 0.0 || v.fract() != 0.0 || v as usize >= self.num_embeddings {
                return Err(bad(
                    "Embedding",
                    format!("id {v} is not an integer in [0, {})", self.num_embeddings),
                ));
            }
            let i = v as usize;
            out.extend_from_slice(&self.weight.value.data()[i * d..(i + 1) * d]);
        }
        let mut s = shape.to_vec();
        s.push(d);
        Ok(Tensor::new(s, out)?)
    }
    pub fn forward(&self, x: Value) -> Result<Value> {
        let t = x.float("Embedding")?;
        Ok(Value::F(self.lookup(t.data(), t.shape())?))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RnnKind {
    Lstm,
    Gru,
}

impl RnnKind {
    /// "LSTM" or "GRU".
    pub fn name(self) -> &'static str {
        match self {
            RnnKind::Lstm => "LSTM",
            RnnKind::Gru => "GRU",
        }
    }
    pub fn gates(self) -> usize {
        match self {
            RnnKind::Lstm => 4,
            RnnKind::Gru => 3,
        }
    }
}

/// Weights of one layer (`weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`).
#[derive(Debug, Clone)]
pub struct RnnLayer {
    pub w_ih: Param,
    pub w_hh: Param,
    pub b_ih: Option<Param>,
    pub b_hh: Option<Param>,
}

/// `nn.LSTM` / `nn.GRU` (unidirectional).
#[derive(Debug, Clone)]
pub struct Rnn {
    pub kind: RnnKind,
    pub input_size: usize,
    pub hidden_size: usize,
    pub batch_first: bool,
    pub layers: Vec<RnnLayer>,
}

/// Which projection of which layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proj {
    Ih,
    Hh,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Rnn {
    pub fn new(
        kind: RnnKind,
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        batch_first: bool,
        rng: &mut Rng,
    ) -> Self {
        let k = 1.0 / (hidden_size as f32).sqrt();
        let g = kind.gates() * hidden_size;
        let mut t = |s: Vec<usize>| {
            let n = s.iter().product();
            Param::new(Tensor::new(s, (0..n).map(|_| rng.sym(k)).collect()).expect("shape"))
        };
        let layers = (0..num_layers)
            .map(|l| {
                let inp = if l == 0 { input_size } else { hidden_size };
                RnnLayer {
                    w_ih: t(vec![g, inp]),
                    w_hh: t(vec![g, hidden_size]),
                    b_ih: Some(t(vec![g])),
                    b_hh: Some(t(vec![g])),
                }
            })
            .collect();
        Rnn {
            kind,
            input_size,
            hidden_size,
            batch_first,
            layers,
        }
    }
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut v = Vec::new();
        for (l, layer) in self.layers.iter_mut().enumerate() {
            v.push((format!("weight_ih_l{l}"), &mut layer.w_ih));
            v.push((format!("weight_hh_l{l}"), &mut layer.w_hh));
            if let Some(b) = &mut layer.b_ih {
                v.push((format!("bias_ih_l{l}"), b));
            }
            if let Some(b) = &mut layer.b_hh {
                v.push((format!("bias_hh_l{l}"), b));
            }
        }
        v
    }
    /// Float forward. Returns the output sequence and (h_n, c_n) stacked
    /// over layers (`c_n` empty for GRU).
    pub fn forward(
        &self,
        x: &Tensor,
        h0: Option<(&Tensor, &Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let proj = |l: usize, p: Proj, v: &Tensor| -> Result<Tensor> {
            let layer = &self.layers[l];
            let (w, b) = match p {
                Proj::Ih => (&layer.w_ih, &layer.b_ih),
                Proj::Hh => (&layer.w_hh, &layer.b_hh),
            };
            let (n, k) = (w.value.shape()[0], w.value.shape()[1]);
            F::linear(v, w.value.data(), n, k, b.as_ref().map(|b| b.value.data()))
        };
        run_rnn(
            self.kind,
            self.input_size,
            self.hidden_size,
            self.layers.len(),
            self.batch_first,
            x,
            h0,
            &proj,
        )
    }
}

/// The recurrence with pluggable projections (`proj(layer, which, x)` returns
/// `x · Wᵀ + b` for that layer's input or hidden weights).
#[allow(clippy::too_many_arguments)]
pub fn run_rnn(
    kind: RnnKind,
    input_size: usize,
    hidden: usize,
    num_layers: usize,
    batch_first: bool,
    x: &Tensor,
    h0: Option<(&Tensor, &Tensor)>,
    proj: &dyn Fn(usize, Proj, &Tensor) -> Result<Tensor>,
) -> Result<(Tensor, (Tensor, Tensor))> {
    let op = match kind {
        RnnKind::Lstm => "LSTM",
        RnnKind::Gru => "GRU",
    };
    if x.ndim() != 3 || x.shape()[2] != input_size {
        return Err(bad(
            op,
            format!(
                "input {:?} must be 3-D ending in input_size {input_size}",
                x.shape()
            ),
        ));
    }
    let (b, t) = if batch_first {
        (x.shape()[0], x.shape()[1])
    } else {
        (x.shape()[1], x.shape()[0])
    };
    let at = |ti: usize, bi: usize| {
        if batch_first {
            bi * t + ti
        } else {
            ti * b + bi
        }
    };
    // Time-major sequence [t·b, in]. The input projection of a layer is
    // computed for all timesteps at once, as PyTorch does (so a dynamic
    // quantized projection sees the whole sequence's range).
    let mut seq = Vec::with_capacity(t * b * input_size);
    for ti in 0..t {
        for bi in 0..b {
            let r = at(ti, bi);
            seq.extend_from_slice(&x.data()[r * input_size..(r + 1) * input_size]);
        }
    }
    let mut seq = Tensor::new([t * b, input_size], seq)?;
    let mut hn = Vec::new();
    let mut cn = Vec::new();
    let g = kind.gates() * hidden;
    for l in 0..num_layers {
        let mut h = vec![0.0f32; b * hidden];
        let mut c = vec![0.0f32; b * hidden];
        if let Some((h0, c0)) = h0 {
            if h0.numel() != num_layers * b * hidden {
                return Err(bad(
                    op,
                    format!(
                        "h0 {:?} does not match [{num_layers}, {b}, {hidden}]",
                        h0.shape()
                    ),
                ));
            }
            h.copy_from_slice(&h0.data()[l * b * hidden..(l + 1) * b * hidden]);
            if kind == RnnKind::Lstm {
                c.copy_from_slice(&c0.data()[l * b * hidden..(l + 1) * b * hidden]);
            }
        }
        let gi_all = proj(l, Proj::Ih, &seq)?;
        let mut out = vec![0.0f32; t * b * hidden];
        for ti in 0..t {
            let gi = &gi_all.data()[ti * b * g..(ti + 1) * b * g];
            let gh = proj(l, Proj::Hh, &Tensor::new([b, hidden], h.clone())?)?;
            let gh = gh.data();
            for bi in 0..b {
                let o = bi * g;
                for j in 0..hidden {
                    match kind {
                        RnnKind::Lstm => {
                            let s = |k: usize| gi[o + k * hidden + j] + gh[o + k * hidden + j];
                            let (ig, fg, gg, og) =
                                (sigmoid(s(0)), sigmoid(s(1)), s(2).tanh(), sigmoid(s(3)));
                            let cv = fg * c[bi * hidden + j] + ig * gg;
                            c[bi * hidden + j] = cv;
                            h[bi * hidden + j] = og * cv.tanh();
                        }
                        RnnKind::Gru => {
                            let r = sigmoid(gi[o + j] + gh[o + j]);
                            let z = sigmoid(gi[o + hidden + j] + gh[o + hidden + j]);
                            let n = (gi[o + 2 * hidden + j] + r * gh[o + 2 * hidden + j]).tanh();
                            h[bi * hidden + j] = (1.0 - z) * n + z * h[bi * hidden + j];
                        }
                    }
                }
            }
            out[ti * b * hidden..(ti + 1) * b * hidden].copy_from_slice(&h);
        }
        seq = Tensor::new([t * b, hidden], out)?;
        hn.extend_from_slice(&h);
        if kind == RnnKind::Lstm {
            cn.extend_from_slice(&c);
        }
    }
    let mut out = vec![0.0f32; b * t * hidden];
    for ti in 0..t {
        for bi in 0..b {
            let r = at(ti, bi);
            out[r * hidden..(r + 1) * hidden]
                .copy_from_slice(&seq.data()[(ti * b + bi) * hidden..(ti * b + bi + 1) * hidden]);
        }
    }
    let oshape = if batch_first {
        [b, t, hidden]
    } else {
        [t, b, hidden]
    };
    let cshape = if kind == RnnKind::Lstm {
        vec![num_layers, b, hidden]
    } else {
        vec![0]
    };
    Ok((
        Tensor::new(oshape, out)?,
        (
            Tensor::new([num_layers, b, hidden], hn)?,
            Tensor::new(cshape, cn)?,
        ),
    ))
}

impl Layer for Embedding {
    fn type_name(&self) -> String {
        "Embedding".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Embedding::forward(self, x)
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        vec![("weight".to_string(), &mut self.weight)]
    }
    fn weight(&self) -> Option<Tensor> {
        Some(self.weight.value.clone())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        out.f32("weight", &self.weight.value);
        Ok(json!({}))
    }
}

impl Layer for Rnn {
    fn type_name(&self) -> String {
        self.kind.name().into()
    }
    /// The output sequence (use [`Rnn::forward`] for initial and final states).
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::F(Rnn::forward(self, &x.float("LSTM/GRU")?, None)?.0))
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        Rnn::params_mut(self)
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        let bias = self.layers.first().is_some_and(|l| l.b_ih.is_some());
        let mut r = self.clone();
        for (n, p) in r.params_mut() {
            out.f32(&n, &p.value);
        }
        Ok(
            json!({"input_size": self.input_size, "hidden_size": self.hidden_size,
                  "num_layers": self.layers.len(), "batch_first": self.batch_first, "bias": bias}),
        )
    }
}

/// The weight shapes of RNN layer `l`: `[gates·hidden, in]` and `[gates·hidden, hidden]`.
pub(crate) fn rnn_shapes(
    n: &Node,
    kind: RnnKind,
    input_size: usize,
    hidden_size: usize,
    l: usize,
) -> Result<([usize; 2], [usize; 2])> {
    let g = kind
        .gates()
        .checked_mul(hidden_size)
        .ok_or_else(|| n.attr_error("hidden_size", "too large"))?;
    let inp = if l == 0 { input_size } else { hidden_size };
    Ok(([g, inp], [g, hidden_size]))
}

pub(crate) fn register_loaders(r: &mut ModuleRegistry) {
    fn rnn(n: &mut Node) -> Result<Module> {
        let kind = if n.type_name() == "LSTM" {
            RnnKind::Lstm
        } else {
            RnnKind::Gru
        };
        let (input_size, hidden_size, num_layers) = (
            n.get_usize("input_size")?,
            n.get_usize("hidden_size")?,
            n.get_usize("num_layers")?,
        );
        // The sizes are the file's claim: check them against the weights
        // it holds before `Rnn::new` allocates what they declare.
        for l in 0..num_layers {
            let (ih, hh) = rnn_shapes(n, kind, input_size, hidden_size, l)?;
            n.expect_shape(&format!("weight_ih_l{l}"), &ih)?;
            n.expect_shape(&format!("weight_hh_l{l}"), &hh)?;
        }
        let mut r = Rnn::new(
            kind,
            input_size,
            hidden_size,
            num_layers,
            n.get_bool("batch_first")?,
            &mut Rng(0),
        );
        if !n.get_bool("bias")? {
            for l in &mut r.layers {
                l.b_ih = None;
                l.b_hh = None;
            }
        }
        for (name, prm) in r.params_mut() {
            let t = n.f32(&name)?;
            if t.shape() != prm.value.shape() {
                return Err(n.tensor_error(
                    &name,
                    format!("shape {:?}, expected {:?}", t.shape(), prm.value.shape()),
                ));
            }
            prm.value = t;
        }
        Ok(r.into())
    }
    r.register("LSTM", rnn);
    r.register("GRU", rnn);
    r.register("Embedding", |n| {
        Ok(Embedding::from_weight(n.f32("weight")?)
            .map_err(|e| n.tensor_error("", e.to_string()))?
            .into())
    });
}
