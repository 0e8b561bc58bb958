//! Parameter-free modules for the functional pieces of vision models, float
//! and quantized: [`ChannelShuffle`] (`nn.ChannelShuffle`, torchvision's
//! `channel_shuffle`), [`Mean`] (`x.mean(dims, keepdim)`) and [`chunk`]
//! (`x.chunk(n, dim)`, which returns several values, so a function a
//! block's forward calls). Quantized inputs keep their qparams (and, for
//! chunk and shuffle, their memory format); the shuffle and the mean run on
//! the module's engine, set by `convert`, `to_engine` and loading.

use rquant_core::{Engine, MemoryFormat, QTensor, Tensor};
use serde_json::{json, Value as J};

use crate::error::{bad, NnError, Result};
use crate::format::Saver;
use crate::module::{Layer, Module};
use crate::registry::{ModuleRegistry, Node};
use crate::value::Value;

fn no_engine(op: &str) -> NnError {
    NnError::module(
        "",
        format!("{op} on a quantized input needs an engine: convert the model, load it with an engine, or call rquant_nn::to_engine"),
    )
}

/// Channel shuffle with `groups` groups on `[N, C, H, W]`: output channel
/// `i·groups + g` is input channel `g·(C/groups) + i`.
#[derive(Debug, Clone)]
pub struct ChannelShuffle {
    pub groups: usize,
    pub engine: Option<Engine>,
}

impl ChannelShuffle {
    pub fn new(groups: usize) -> Self {
        ChannelShuffle {
            groups,
            engine: None,
        }
    }
    fn float(&self, x: Tensor) -> Result<Tensor> {
        let &[n, c, h, w] = x.shape() else {
            return Err(bad(
                "ChannelShuffle",
                format!("expected [N, C, H, W], got {:?}", x.shape()),
            ));
        };
        let g = self.groups;
        if g == 0 || !c.is_multiple_of(g) {
            return Err(bad(
                "ChannelShuffle",
                format!("groups {g} must be positive and divide the {c} channels"),
            ));
        }
        let (per, plane) = (c / g, h * w);
        let src = x.data();
        let mut out = vec![0f32; src.len()];
        for b in 0..n {
            for gi in 0..g {
                for i in 0..per {
                    let (o, s) = ((b * c + i * g + gi) * plane, (b * c + gi * per + i) * plane);
                    out[o..o + plane].copy_from_slice(&src[s..s + plane]);
                }
            }
        }
        Ok(Tensor::new(x.shape().to_vec(), out)?)
    }
}

impl Layer for ChannelShuffle {
    fn type_name(&self) -> String {
        "ChannelShuffle".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        match x {
            Value::F(t) => Ok(Value::F(self.float(t)?)),
            Value::Q(q) => Ok(Value::Q(
                self.engine
                    .as_ref()
                    .ok_or_else(|| no_engine("ChannelShuffle"))?
                    .channel_shuffle(&q, self.groups)?,
            )),
        }
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        // The inverse permutation: shuffling with C/groups groups.
        let c = g.shape().get(1).copied().unwrap_or(0);
        if self.groups == 0 || !c.is_multiple_of(self.groups) {
            return Err(bad("ChannelShuffle", "backward: bad gradient shape"));
        }
        ChannelShuffle::new(c / self.groups).float(g)
    }
    fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = Some(engine.clone());
        Ok(())
    }
    fn save(&self, _: &mut Saver) -> Result<J> {
        Ok(json!({ "groups": self.groups }))
    }
}

/// `x.mean(dims, keepdim)` (an empty `dims` reduces every dimension).
/// Quantized: the engine's mean (exact integer sum, `rne(f32(Σq)/f32(n))`,
/// qparams kept; docs/numerics.md §13).
#[derive(Debug, Clone)]
pub struct Mean {
    pub dims: Vec<usize>,
    pub keepdim: bool,
    pub engine: Option<Engine>,
    cache: Option<Vec<usize>>,
    pub(crate) training: bool,
}

impl Mean {
    pub fn new(dims: &[usize], keepdim: bool) -> Self {
        Mean {
            dims: dims.to_vec(),
            keepdim,
            engine: None,
            cache: None,
            training: false,
        }
    }
    fn reduced(&self, nd: usize) -> Result<Vec<bool>> {
        let mut r = vec![self.dims.is_empty(); nd];
        for &d in &self.dims {
            if d >= nd || r[d] {
                return Err(bad(
                    "Mean",
                    format!("dims {:?} do not fit a {nd}-D input", self.dims),
                ));
            }
            r[d] = true;
        }
        Ok(r)
    }
    fn out_shape(&self, s: &[usize], r: &[bool]) -> Vec<usize> {
        s.iter()
            .zip(r)
            .filter_map(|(&d, &red)| match (red, self.keepdim) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect()
    }
    /// Output index of every input element (row-major) and the count reduced.
    fn index_map(s: &[usize], r: &[bool]) -> (Vec<usize>, usize, usize) {
        let numel: usize = s.iter().product();
        let kept: Vec<usize> = (0..s.len()).filter(|&d| !r[d]).collect();
        let out_n: usize = kept.iter().map(|&d| s[d]).product();
        let n = numel / out_n.max(1);
        let mut map = Vec::with_capacity(numel);
        let mut idx = vec![0usize; s.len()];
        for _ in 0..numel {
            let o = kept.iter().fold(0, |acc, &d| acc * s[d] + idx[d]);
            map.push(o);
            for d in (0..s.len()).rev() {
                idx[d] += 1;
                if idx[d] < s[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        (map, out_n, n)
    }
}

impl Layer for Mean {
    fn type_name(&self) -> String {
        "Mean".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let r = self.reduced(x.shape().len())?;
        match x {
            Value::F(t) => {
                let (map, out_n, n) = Self::index_map(t.shape(), &r);
                let mut acc = vec![0f64; out_n];
                for (&o, &v) in map.iter().zip(t.data()) {
                    acc[o] += v as f64;
                }
                let data = acc.iter().map(|&a| (a / n as f64) as f32).collect();
                if self.training {
                    self.cache = Some(t.shape().to_vec());
                }
                Ok(Value::F(Tensor::new(self.out_shape(t.shape(), &r), data)?))
            }
            Value::Q(q) => {
                let dims: Vec<i64> = (0..r.len()).filter(|&d| r[d]).map(|d| d as i64).collect();
                Ok(Value::Q(
                    self.engine
                        .as_ref()
                        .ok_or_else(|| no_engine("Mean"))?
                        .mean(&q, &dims, self.keepdim)?,
                ))
            }
        }
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let s = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        let r = self.reduced(s.len())?;
        let (map, _, n) = Self::index_map(&s, &r);
        let data = map.iter().map(|&o| g.data()[o] / n as f32).collect();
        Ok(Tensor::new(s, data)?)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = Some(engine.clone());
        Ok(())
    }
    fn save(&self, _: &mut Saver) -> Result<J> {
        Ok(json!({ "dims": self.dims, "keepdim": self.keepdim }))
    }
}

/// `x.chunk(chunks, dim)`: pieces of `ceil(D / chunks)` along `dim` (the
/// last may be smaller; fewer pieces when D is small), float or quantized.
/// A channels-last quantized input split along channels stays channels-last.
pub fn chunk(x: Value, chunks: usize, dim: usize) -> Result<Vec<Value>> {
    let shape = x.shape().to_vec();
    if chunks == 0 || dim >= shape.len() {
        return Err(bad(
            "chunk",
            format!("{chunks} chunks along dim {dim} of {shape:?}"),
        ));
    }
    let d = shape[dim];
    let cs = d.div_ceil(chunks).max(1);
    let pieces: Vec<(usize, usize)> = (0..d).step_by(cs).map(|s| (s, cs.min(d - s))).collect();
    // Split `data` seen as [outer, d, inner] into the pieces.
    fn split<T: Copy>(
        data: &[T],
        outer: usize,
        d: usize,
        inner: usize,
        pieces: &[(usize, usize)],
    ) -> Vec<Vec<T>> {
        pieces
            .iter()
            .map(|&(s, len)| {
                let mut v = Vec::with_capacity(outer * len * inner);
                for o in 0..outer {
                    let base = (o * d + s) * inner;
                    v.extend_from_slice(&data[base..base + len * inner]);
                }
                v
            })
            .collect()
    }
    let piece_shape = |len: usize| {
        let mut s = shape.clone();
        s[dim] = len;
        s
    };
    match x {
        Value::F(t) => {
            let outer: usize = shape[..dim].iter().product();
            let inner: usize = shape[dim + 1..].iter().product();
            split(t.data(), outer, d, inner, &pieces)
                .into_iter()
                .zip(&pieces)
                .map(|(v, &(_, len))| Ok(Value::F(Tensor::new(piece_shape(len), v)?)))
                .collect()
        }
        Value::Q(q) => {
            let (s, z) = q
                .q_per_tensor()
                .ok_or_else(|| bad("chunk", "a per-channel quantized input"))?;
            let cl =
                q.memory_format() == MemoryFormat::ChannelsLast && shape.len() == 4 && dim == 1;
            let q = if cl {
                q
            } else {
                q.into_format(MemoryFormat::Contiguous)
            };
            let (outer, inner, format) = if cl {
                (
                    shape[0] * shape[2] * shape[3],
                    1,
                    MemoryFormat::ChannelsLast,
                )
            } else {
                (
                    shape[..dim].iter().product(),
                    shape[dim + 1..].iter().product(),
                    MemoryFormat::Contiguous,
                )
            };
            Ok(split(q.int_repr(), outer, d, inner, &pieces)
                .into_iter()
                .zip(&pieces)
                .map(|(v, &(_, len))| {
                    Value::Q(QTensor::new_per_tensor_unchecked_in(
                        piece_shape(len),
                        v,
                        s,
                        z,
                        format,
                    ))
                })
                .collect())
        }
    }
}

impl Module {
    /// `nn.ChannelShuffle(groups)`.
    pub fn channel_shuffle(groups: usize) -> Self {
        Module::new(ChannelShuffle::new(groups))
    }
    /// `x.mean(dims, keepdim)` as a module.
    pub fn mean(dims: &[usize], keepdim: bool) -> Self {
        Module::new(Mean::new(dims, keepdim))
    }
}

pub(crate) fn register_loaders(r: &mut ModuleRegistry) {
    r.register("ChannelShuffle", |n: &mut Node| {
        let g = n.get_usize("groups")?;
        if g == 0 {
            return Err(n.attr_error("groups", "must be positive"));
        }
        Ok(Module::channel_shuffle(g))
    });
    r.register("Mean", |n: &mut Node| {
        let dims = match n.attrs().get("dims") {
            Some(J::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|v| usize::try_from(v).ok())
                        .filter(|&v| v < 8)
                })
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| n.attr_error("dims", "not a list of dimensions"))?,
            _ => return Err(n.attr_error("dims", "missing or not a list")),
        };
        Ok(Module::mean(&dims, n.get_bool("keepdim")?))
    });
}
