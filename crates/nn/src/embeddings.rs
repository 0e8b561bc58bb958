//! Embeddings: float `Embedding` / `EmbeddingBag` (with backward; QAT forms
//! with a weight fake quant, `nnqat.Embedding` / `nnqat.EmbeddingBag`) and
//! the weight-only quantized modules `nnq.Embedding` / `nnq.EmbeddingBag`
//! (8-bit `quint8`, 4-bit `quint4x2`, 2-bit `quint2x4` rows, each with a
//! float scale and bias, as `float_qparams_weight_only_qconfig` makes them),
//! the row-wise prepack ops (`embedding_bag_{byte,4bit,2bit}_prepack`) and
//! the lookups (`embedding_byte` / `_4bit` / `_2bit`, bags with sum, mean
//! and max, offsets, per-sample weights).
//!
//! Numerics (docs/numerics.md §17): a module's table is its weight observed
//! by the qconfig's float-qparams observer (`scale = (max − min)/(qmax − qmin)`,
//! `zp = −min/scale` per row), quantized as `clamp(rne(f32(x·(1/scale)) + zp))`,
//! and packed with `bias = f32(−(zp·scale))` (4- and 2-bit: scale and bias
//! rounded to f16), as `embedding_bag_prepack`. A lookup is §17's sum of one
//! row (`fma(scale, code, bias)`); mean is the bag's sum times
//! `f32(1/len)` (fbgemm's `normalize_by_lengths`; PyTorch's quantized
//! EmbeddingBag module passes mode 0 to its op and so always sums); max is
//! the element-wise maximum of the bag's looked-up rows (empty bags 0).

use rquant_core::observer::ObserverDType;
use rquant_core::qconfig::{FakeQuantize, ObserverSpec, QConfig, QSpec};
use rquant_core::{EmbeddingBagTable, Engine, QScheme, Tensor};
use serde_json::{json, Value as J};

use crate::error::{bad, NnError, Result};
use crate::format::Saver;
use crate::mapping::{DynamicConfig, Mappings};
use crate::module::{Layer, Module};
use crate::param::{Param, Rng};
use crate::post::Observation;
use crate::registry::{ModuleRegistry, Node};
use crate::value::Value;

// ---------------------------------------------------------------- tables

fn f16(v: f32) -> half::f16 {
    half::f16::from_f32(v)
}

/// A table from per-row codes, scales and biases (`bits` 8, 4 or 2; for 4
/// and 2 the scales and biases are rounded to f16).
pub fn table_from_parts(
    bits: u8,
    rows: usize,
    dim: usize,
    codes: Vec<u8>,
    scales: &[f32],
    biases: &[f32],
) -> Result<EmbeddingBagTable> {
    Ok(match bits {
        8 => EmbeddingBagTable::byte(rows, dim, codes, scales.to_vec(), biases.to_vec())?,
        4 | 2 => {
            let s: Vec<half::f16> = scales.iter().map(|&v| f16(v)).collect();
            let b: Vec<half::f16> = biases.iter().map(|&v| f16(v)).collect();
            if bits == 4 {
                EmbeddingBagTable::four_bit(rows, dim, codes, &s, &b)?
            } else {
                EmbeddingBagTable::two_bit(rows, dim, codes, &s, &b)?
            }
        }
        _ => {
            return Err(bad(
                "embedding",
                format!("{bits}-bit tables are not supported"),
            ))
        }
    })
}

fn weight_2d(op: &'static str, w: &Tensor) -> Result<(usize, usize)> {
    match *w.shape() {
        [r, d] if r > 0 && d > 0 => Ok((r, d)),
        _ => Err(bad(
            op,
            format!(
                "weight must be a non-empty [rows, dim], got {:?}",
                w.shape()
            ),
        )),
    }
}

/// `torch.ops.quantized.embedding_bag_byte_prepack(weight)` (fbgemm's
/// `FloatToFused8BitRowwiseQuantizedSBFloat`): per row `min`, `max`,
/// `scale = (max − min)/255`, `bias = min`, codes
/// `rne((x − min)·(255/(max − min + 1e-8)))`.
pub fn embedding_bag_byte_prepack(weight: &Tensor) -> Result<EmbeddingBagTable> {
    const OP: &str = "embedding_bag_byte_prepack";
    let (rows, dim) = weight_2d(OP, weight)?;
    crate::layers::check_finite_tensor(OP, weight)?;
    let (mut codes, mut scales, mut biases) =
        (Vec::with_capacity(rows * dim), Vec::new(), Vec::new());
    for row in weight.data().chunks_exact(dim) {
        let mn = row.iter().copied().fold(f32::INFINITY, f32::min);
        let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let range = mx - mn;
        scales.push(range / 255.0);
        biases.push(mn);
        let inv = 255.0f32 / (range + 1e-8);
        for &x in row {
            codes.push(rquant_core::numerics::rne((x - mn) * inv).clamp(0.0, 255.0) as u8);
        }
    }
    Ok(EmbeddingBagTable::byte(rows, dim, codes, scales, biases)?)
}

/// `torch.ops.quantized.embedding_bag_4bit_prepack` / `_2bit_prepack`
/// (fbgemm's `FloatToFusedNBitRowwiseQuantizedSBHalf`): per row the minimum
/// rounded to f16 (the bias), `scale = f16((max − min)/(2^bits − 1))` (1
/// when the range is 0), codes `clamp(rne((x − min)·(1/scale)), 0, 2^bits − 1)`.
pub fn embedding_bag_nbit_prepack(weight: &Tensor, bits: u8) -> Result<EmbeddingBagTable> {
    let op = if bits == 4 {
        "embedding_bag_4bit_prepack"
    } else {
        "embedding_bag_2bit_prepack"
    };
    if bits != 4 && bits != 2 {
        return Err(bad(op, format!("{bits} bits: only 4 and 2")));
    }
    let (rows, dim) = weight_2d(op, weight)?;
    crate::layers::check_finite_tensor(op, weight)?;
    let per_byte = 8 / bits as usize;
    if dim % per_byte != 0 {
        return Err(bad(
            op,
            format!("dim {dim} must be a multiple of {per_byte}"),
        ));
    }
    let qmax = ((1u32 << bits) - 1) as f32;
    let (mut codes, mut scales, mut biases) =
        (Vec::with_capacity(rows * dim), Vec::new(), Vec::new());
    for row in weight.data().chunks_exact(dim) {
        let mn = row.iter().copied().fold(f32::INFINITY, f32::min);
        let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mn16 = f16(mn);
        let mn = mn16.to_f32();
        let range = mx - mn;
        let mut scale = if range == 0.0 { 1.0 } else { range / qmax };
        scale = f16(scale).to_f32();
        if scale == 0.0 {
            scale = 1.0;
        }
        let mut inv = 1.0f32 / scale;
        if inv.is_infinite() {
            scale = 1.0;
            inv = 1.0;
        }
        scales.push(f16(scale));
        biases.push(mn16);
        for &x in row {
            codes.push(rquant_core::numerics::rne((x - mn) * inv).clamp(0.0, qmax) as u8);
        }
    }
    Ok(if bits == 4 {
        EmbeddingBagTable::four_bit(rows, dim, codes, &scales, &biases)?
    } else {
        EmbeddingBagTable::two_bit(rows, dim, codes, &scales, &biases)?
    })
}

/// The bits of a float-qparams weight observer spec: 8 (`quint8`), 4
/// (`quint4x2`) or 2 (`quint2x4`); an error for any other qconfig.
pub fn table_bits(spec: &ObserverSpec) -> Result<u8> {
    if spec.config.qscheme != QScheme::PerChannelAffineFloatQParams {
        return Err(bad(
            "Embedding",
            format!(
                "embedding quantization needs float_qparams_weight_only_qconfig (per_channel_affine_float_qparams weights), got {}",
                spec.config.qscheme.name()
            ),
        ));
    }
    Ok(match spec.placeholder_dtype {
        Some(ObserverDType::QUInt4x2) => 4,
        Some(ObserverDType::QUInt2x4) => 2,
        _ => 8,
    })
}

/// The table of a quantized Embedding / EmbeddingBag module, as
/// `nnq.Embedding.from_float` makes it: the weight observed per row by
/// float-qparams `(scales, float zero points)` (from a fresh observer of
/// `spec`, or a QAT weight fake quant), quantized per row, packed.
pub fn quantize_embedding_weight(
    weight: &Tensor,
    spec: &QSpec,
    fake_quant: Option<&mut FakeQuantize>,
) -> Result<EmbeddingBagTable> {
    const OP: &str = "quantize_embedding_weight";
    let (rows, dim) = weight_2d(OP, weight)?;
    let bits = table_bits(match &fake_quant {
        Some(fq) => &fq.spec().observer,
        None => spec.observer_spec(),
    })?;
    let qp = match fake_quant {
        Some(fq) => {
            if fq.observer_enabled {
                fq.forward(weight)?;
            }
            fq.calculate_qparams()?
        }
        None => {
            let mut o = spec.build_observer()?;
            o.observe(weight)?;
            o.calculate_qparams()?
        }
    };
    let fzp = qp
        .float_zero_points
        .clone()
        .ok_or_else(|| bad(OP, "the observer gave no float zero points"))?;
    if qp.scales.len() != rows || fzp.len() != rows {
        return Err(bad(
            OP,
            format!("{} qparams for {rows} rows", qp.scales.len()),
        ));
    }
    let qmax = ((1u32 << bits) - 1) as f32;
    let mut codes = Vec::with_capacity(rows * dim);
    let mut biases = Vec::with_capacity(rows);
    for (r, row) in weight.data().chunks_exact(dim).enumerate() {
        let (s, z) = (qp.scales[r], fzp[r]);
        let inv = if s == 0.0 { 1.0 } else { 1.0f32 / s };
        for &x in row {
            // quantize_val_float_qparams: rne(x·inv + zp), not fused.
            let v = rquant_core::numerics::rne(x * inv + z).clamp(0.0, qmax);
            codes.push(v as u8);
        }
        biases.push(-(z * s));
    }
    table_from_parts(bits, rows, dim, codes, &qp.scales, &biases)
}

// ---------------------------------------------------------------- lookups

/// How a bag reduces its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BagMode {
    #[default]
    Sum,
    Mean,
    Max,
}

impl BagMode {
    pub fn name(self) -> &'static str {
        match self {
            BagMode::Sum => "sum",
            BagMode::Mean => "mean",
            BagMode::Max => "max",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "sum" => BagMode::Sum,
            "mean" => BagMode::Mean,
            "max" => BagMode::Max,
            _ => return None,
        })
    }
}

fn sum_op(
    engine: &Engine,
    t: &EmbeddingBagTable,
    indices: &[i64],
    offsets: &[i64],
    psw: Option<&[f32]>,
    include_last_offset: bool,
) -> Result<Tensor> {
    Ok(match t.bits() {
        8 => engine.embedding_bag_byte(t, indices, offsets, psw, include_last_offset)?,
        4 => engine.embedding_bag_4bit(t, indices, offsets, psw, include_last_offset)?,
        _ => engine.embedding_bag_2bit(t, indices, offsets, psw, include_last_offset)?,
    })
}

/// `torch.ops.quantized.embedding_byte` / `embedding_4bit` (and 2-bit): the
/// dequantized rows of `indices` (shape `[*indices_shape, dim]`).
pub fn embedding_lookup(
    engine: &Engine,
    t: &EmbeddingBagTable,
    indices: &[i64],
    shape: &[usize],
) -> Result<Tensor> {
    if indices.is_empty() {
        let mut s = shape.to_vec();
        s.push(t.dim());
        return Ok(Tensor::new(s, Vec::new())?);
    }
    let offsets: Vec<i64> = (0..indices.len() as i64).collect();
    let y = sum_op(engine, t, indices, &offsets, None, false)?;
    let mut s = shape.to_vec();
    s.push(t.dim());
    Ok(y.reshape(s)?)
}

/// A quantized embedding bag: `mode` sum (§17, per-sample weights allowed),
/// mean (the sum times `f32(1/len)`) or max (element-wise over the bag's
/// rows, 0 for an empty bag), bags given by `offsets`.
#[allow(clippy::too_many_arguments)]
pub fn embedding_bag(
    engine: &Engine,
    t: &EmbeddingBagTable,
    indices: &[i64],
    offsets: &[i64],
    mode: BagMode,
    per_sample_weights: Option<&[f32]>,
    include_last_offset: bool,
) -> Result<Tensor> {
    const OP: &str = "embedding_bag";
    if per_sample_weights.is_some() && mode != BagMode::Sum {
        return Err(bad(
            OP,
            "per_sample_weights are only supported with mode sum (as PyTorch)",
        ));
    }
    // The sum validates indices and offsets.
    let sum = sum_op(
        engine,
        t,
        indices,
        offsets,
        per_sample_weights,
        include_last_offset,
    )?;
    let bounds = bag_bounds(offsets, indices.len(), include_last_offset);
    let d = t.dim();
    match mode {
        BagMode::Sum => Ok(sum),
        BagMode::Mean => {
            let mut y = sum;
            for (b, row) in y.data_mut().chunks_mut(d).enumerate() {
                let len = bounds[b + 1] - bounds[b];
                if len > 0 {
                    let r = 1.0f32 / len as f32;
                    for v in row {
                        *v *= r;
                    }
                }
            }
            Ok(y)
        }
        BagMode::Max => {
            let rows = embedding_lookup(engine, t, indices, &[indices.len()])?;
            let nb = bounds.len() - 1;
            let mut y = vec![0.0f32; nb * d];
            for b in 0..nb {
                let out = &mut y[b * d..(b + 1) * d];
                for (k, p) in (bounds[b]..bounds[b + 1]).enumerate() {
                    let r = &rows.data()[p * d..(p + 1) * d];
                    for (o, &v) in out.iter_mut().zip(r) {
                        *o = if k == 0 { v } else { o.max(v) };
                    }
                }
            }
            Ok(Tensor::new([nb, d], y)?)
        }
    }
}

fn bag_bounds(offsets: &[i64], n: usize, include_last_offset: bool) -> Vec<usize> {
    let mut b: Vec<usize> = offsets.iter().map(|&o| o as usize).collect();
    if !include_last_offset {
        b.push(n);
    }
    b
}

/// Indices (f32 integer values, as rquant's float `Embedding` takes them)
/// as i64, checked.
fn ids_of(op: &'static str, t: &Tensor, rows: usize) -> Result<Vec<i64>> {
    t.data()
        .iter()
        .map(|&v| {
            if v < 0.0 || v.fract() != 0.0 || v as usize >= rows {
                Err(bad(op, format!("id {v} is not an integer in [0, {rows})")))
            } else {
                Ok(v as i64)
            }
        })
        .collect()
}

// ---------------------------------------------------------------- float modules

/// `nn.Embedding` (input: integer ids as f32 values); with
/// `weight_fake_quant` it is `nnqat.Embedding`.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub num_embeddings: usize,
    pub embedding_dim: usize,
    pub weight: Param,
    pub weight_fake_quant: Option<FakeQuantize>,
    pub(crate) training: bool,
    cache: Option<(Vec<i64>, Vec<bool>)>,
}

impl Embedding {
    pub fn new(num_embeddings: usize, embedding_dim: usize, rng: &mut Rng) -> Self {
        let w = (0..num_embeddings * embedding_dim)
            .map(|_| rng.sym(1.0))
            .collect();
        Self::from_weight(Tensor::new([num_embeddings, embedding_dim], w).expect("shape"))
            .expect("2-D")
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
            weight_fake_quant: None,
            training: false,
            cache: None,
        })
    }
    fn effective_weight(&mut self) -> Result<(Tensor, Option<Vec<bool>>)> {
        match &mut self.weight_fake_quant {
            Some(fq) => {
                let o = fq.forward(&self.weight.value)?;
                Ok((o.y, Some(o.mask)))
            }
            None => Ok((self.weight.value.clone(), None)),
        }
    }
    /// The rows of `ids` (`[*shape, dim]`).
    pub fn lookup(&self, ids: &[f32], shape: &[usize]) -> Result<Tensor> {
        gather(&self.weight.value, ids, shape)
    }
    pub fn forward(&mut self, x: Value) -> Result<Value> {
        let t = x.float("Embedding")?;
        let ids = ids_of("Embedding", &t, self.num_embeddings)?;
        let (w, mask) = self.effective_weight()?;
        let y = gather(&w, t.data(), t.shape())?;
        if self.training {
            self.cache = Some((ids, mask.unwrap_or_default()));
        }
        Ok(Value::F(y))
    }
    /// Backward: scatter-adds the output gradient into the weight's (through
    /// the fake quant's mask under QAT); ids have no gradient (a zero tensor
    /// of the ids' shape is returned).
    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let (ids, mask) = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        let d = self.embedding_dim;
        let mut dw = vec![0.0f32; self.num_embeddings * d];
        for (k, &i) in ids.iter().enumerate() {
            let i = i as usize;
            for j in 0..d {
                dw[i * d + j] += g.data()[k * d + j];
            }
        }
        if !mask.is_empty() {
            let dwt = Tensor::new([self.num_embeddings, d], dw)?;
            let fq = self.weight_fake_quant.as_mut().expect("qat");
            dw = fq.backward(&self.weight.value, &dwt, &mask)?.into_data();
        }
        self.weight.accumulate(dw)?;
        let n = ids.len();
        Ok(Tensor::new([n], vec![0.0; n])?)
    }
}

fn gather(w: &Tensor, ids: &[f32], shape: &[usize]) -> Result<Tensor> {
    let (rows, d) = (w.shape()[0], w.shape()[1]);
    let mut out = Vec::with_capacity(ids.len() * d);
    for &v in ids {
        if v < 0.0 || v.fract() != 0.0 || v as usize >= rows {
            return Err(bad(
                "Embedding",
                format!("id {v} is not an integer in [0, {rows})"),
            ));
        }
        let i = v as usize;
        out.extend_from_slice(&w.data()[i * d..(i + 1) * d]);
    }
    let mut s = shape.to_vec();
    s.push(d);
    Ok(Tensor::new(s, out)?)
}

/// `nn.EmbeddingBag(mode, include_last_offset)`; with `weight_fake_quant`
/// it is `nnqat.EmbeddingBag`. `forward` takes `[B, L]` ids (each row a
/// bag); [`EmbeddingBag::forward_bags`] takes flat indices with offsets and
/// optional per-sample weights.
#[derive(Debug, Clone)]
pub struct EmbeddingBag {
    pub num_embeddings: usize,
    pub embedding_dim: usize,
    pub mode: BagMode,
    pub include_last_offset: bool,
    pub weight: Param,
    pub weight_fake_quant: Option<FakeQuantize>,
    pub(crate) training: bool,
    cache: Option<BagCache>,
}

#[derive(Debug, Clone)]
struct BagCache {
    indices: Vec<i64>,
    bounds: Vec<usize>,
    psw: Option<Vec<f32>>,
    /// Max mode: the winning index position per output element.
    argmax: Vec<usize>,
    mask: Vec<bool>,
}

impl EmbeddingBag {
    pub fn new(num_embeddings: usize, embedding_dim: usize, mode: BagMode, rng: &mut Rng) -> Self {
        let e = Embedding::new(num_embeddings, embedding_dim, rng);
        Self::from_weight(e.weight.value, mode).expect("2-D")
    }
    pub fn from_weight(w: Tensor, mode: BagMode) -> Result<Self> {
        let e = Embedding::from_weight(w)?;
        Ok(EmbeddingBag {
            num_embeddings: e.num_embeddings,
            embedding_dim: e.embedding_dim,
            mode,
            include_last_offset: false,
            weight: e.weight,
            weight_fake_quant: None,
            training: false,
            cache: None,
        })
    }
    /// Bags of `indices` split at `offsets` (PyTorch's 1-D input with
    /// `offsets`; `include_last_offset` as set on the module).
    pub fn forward_bags(
        &mut self,
        indices: &[i64],
        offsets: &[i64],
        per_sample_weights: Option<&[f32]>,
    ) -> Result<Tensor> {
        const OP: &str = "EmbeddingBag";
        let n = indices.len();
        if let Some(p) = indices
            .iter()
            .position(|&i| i < 0 || i as usize >= self.num_embeddings)
        {
            return Err(bad(
                OP,
                format!("indices[{p}] = {} out of range", indices[p]),
            ));
        }
        let bounds = bag_bounds(offsets, n, self.include_last_offset);
        if bounds.len() < 2
            || bounds[0] != 0
            || bounds.windows(2).any(|w| w[1] < w[0])
            || *bounds.last().expect("non-empty") != n
        {
            return Err(bad(
                OP,
                format!("offsets {offsets:?} do not split {n} indices"),
            ));
        }
        if let Some(w) = per_sample_weights {
            if self.mode != BagMode::Sum || w.len() != n {
                return Err(bad(
                    OP,
                    "per_sample_weights need mode sum and one weight per index",
                ));
            }
        }
        let (w, mask) = match &mut self.weight_fake_quant {
            Some(fq) => {
                let o = fq.forward(&self.weight.value)?;
                (o.y, o.mask)
            }
            None => (self.weight.value.clone(), Vec::new()),
        };
        let d = self.embedding_dim;
        let nb = bounds.len() - 1;
        let mut y = vec![0.0f32; nb * d];
        let mut argmax = vec![usize::MAX; if self.mode == BagMode::Max { nb * d } else { 0 }];
        for b in 0..nb {
            let out = &mut y[b * d..(b + 1) * d];
            for (k, p) in (bounds[b]..bounds[b + 1]).enumerate() {
                let r = &w.data()[indices[p] as usize * d..(indices[p] as usize + 1) * d];
                let s = per_sample_weights.map_or(1.0, |w| w[p]);
                for (j, (o, &v)) in out.iter_mut().zip(r).enumerate() {
                    match self.mode {
                        BagMode::Sum | BagMode::Mean => *o += s * v,
                        BagMode::Max => {
                            if k == 0 || v > *o {
                                *o = v;
                                argmax[b * d + j] = p;
                            }
                        }
                    }
                }
            }
            let len = bounds[b + 1] - bounds[b];
            if self.mode == BagMode::Mean && len > 0 {
                for o in out.iter_mut() {
                    *o /= len as f32;
                }
            }
        }
        if self.training {
            self.cache = Some(BagCache {
                indices: indices.to_vec(),
                bounds,
                psw: per_sample_weights.map(<[f32]>::to_vec),
                argmax,
                mask,
            });
        }
        Ok(Tensor::new([nb, d], y)?)
    }
    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let c = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        let d = self.embedding_dim;
        let mut dw = vec![0.0f32; self.num_embeddings * d];
        for b in 0..c.bounds.len() - 1 {
            let len = c.bounds[b + 1] - c.bounds[b];
            let gb = &g.data()[b * d..(b + 1) * d];
            match self.mode {
                BagMode::Max => {
                    for j in 0..d {
                        let p = c.argmax[b * d + j];
                        if p != usize::MAX {
                            dw[c.indices[p] as usize * d + j] += gb[j];
                        }
                    }
                }
                _ => {
                    for p in c.bounds[b]..c.bounds[b + 1] {
                        let s = match (&c.psw, self.mode) {
                            (Some(w), _) => w[p],
                            (None, BagMode::Mean) => 1.0 / len as f32,
                            _ => 1.0,
                        };
                        let row = c.indices[p] as usize;
                        for j in 0..d {
                            dw[row * d + j] += s * gb[j];
                        }
                    }
                }
            }
        }
        if !c.mask.is_empty() {
            let dwt = Tensor::new([self.num_embeddings, d], dw)?;
            let fq = self.weight_fake_quant.as_mut().expect("qat");
            dw = fq.backward(&self.weight.value, &dwt, &c.mask)?.into_data();
        }
        self.weight.accumulate(dw)?;
        let n = c.indices.len();
        Ok(Tensor::new([n], vec![0.0; n])?)
    }
}

/// 2-D ids `[B, L]` as flat indices and offsets (each row a bag).
fn rows_as_bags(op: &'static str, t: &Tensor, rows: usize) -> Result<(Vec<i64>, Vec<i64>)> {
    let &[b, l] = t.shape() else {
        return Err(bad(
            op,
            format!(
                "forward takes [bags, length] ids (use forward_bags for offsets), got {:?}",
                t.shape()
            ),
        ));
    };
    let ids = ids_of(op, t, rows)?;
    Ok((ids, (0..b).map(|i| (i * l) as i64).collect()))
}

impl Layer for Embedding {
    fn type_name(&self) -> String {
        if self.weight_fake_quant.is_some() {
            "QATEmbedding"
        } else {
            "Embedding"
        }
        .into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Embedding::forward(self, x)
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        Embedding::backward(self, g)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut v = vec![("weight".to_string(), &mut self.weight)];
        if let Some(fq) = &mut self.weight_fake_quant {
            for (n, p) in fq.params_mut() {
                v.push((format!("weight_fake_quant.{n}"), p));
            }
        }
        v
    }
    fn fake_quants_mut(&mut self) -> Vec<&mut FakeQuantize> {
        self.weight_fake_quant.iter_mut().collect()
    }
    fn weight(&self) -> Option<Tensor> {
        Some(self.weight.value.clone())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        out.f32("weight", &self.weight.value);
        let mut j = json!({});
        if let Some(fq) = &self.weight_fake_quant {
            j["weight_fake_quant"] = out.within("weight_fake_quant", |o| {
                crate::resume::save_fake_quant(fq, o)
            })?;
        }
        Ok(j)
    }
}

impl Layer for EmbeddingBag {
    fn type_name(&self) -> String {
        if self.weight_fake_quant.is_some() {
            "QATEmbeddingBag"
        } else {
            "EmbeddingBag"
        }
        .into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let t = x.float("EmbeddingBag")?;
        let (ids, offs) = rows_as_bags("EmbeddingBag", &t, self.num_embeddings)?;
        let saved = self.include_last_offset;
        self.include_last_offset = false;
        let y = self.forward_bags(&ids, &offs, None);
        self.include_last_offset = saved;
        Ok(Value::F(y?))
    }
    fn bags(&mut self, indices: &[i64], offsets: &[i64], psw: Option<&[f32]>) -> Result<Tensor> {
        self.forward_bags(indices, offsets, psw)
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        EmbeddingBag::backward(self, g)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut v = vec![("weight".to_string(), &mut self.weight)];
        if let Some(fq) = &mut self.weight_fake_quant {
            for (n, p) in fq.params_mut() {
                v.push((format!("weight_fake_quant.{n}"), p));
            }
        }
        v
    }
    fn fake_quants_mut(&mut self) -> Vec<&mut FakeQuantize> {
        self.weight_fake_quant.iter_mut().collect()
    }
    fn weight(&self) -> Option<Tensor> {
        Some(self.weight.value.clone())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        out.f32("weight", &self.weight.value);
        let mut j =
            json!({"mode": self.mode.name(), "include_last_offset": self.include_last_offset});
        if let Some(fq) = &self.weight_fake_quant {
            j["weight_fake_quant"] = out.within("weight_fake_quant", |o| {
                crate::resume::save_fake_quant(fq, o)
            })?;
        }
        Ok(j)
    }
}

// ---------------------------------------------------------------- quantized modules

/// `nnq.Embedding` (weight-only, 8-, 4- or 2-bit rows): f32 out.
#[derive(Debug, Clone)]
pub struct QEmbedding {
    pub engine: Engine,
    pub table: EmbeddingBagTable,
}

/// `nnq.EmbeddingBag` (weight-only, 8-, 4- or 2-bit rows).
#[derive(Debug, Clone)]
pub struct QEmbeddingBag {
    pub engine: Engine,
    pub table: EmbeddingBagTable,
    pub mode: BagMode,
    pub include_last_offset: bool,
}

fn weight_qconfig(obs: Option<&Observation>, dynamic: Option<&QConfig>) -> QSpec {
    if let Some(q) = dynamic {
        return q.weight.clone();
    }
    match obs {
        Some(o) => o.qconfig.weight.clone(),
        None => rquant_core::qconfig::float_qparams_weight_only_qconfig().weight,
    }
}

impl QEmbedding {
    /// From an observed (or QAT) Embedding.
    pub fn from_float(m: Module, obs: Option<Observation>, engine: &Engine) -> Result<Module> {
        Self::build(m, weight_qconfig(obs.as_ref(), None), engine)
    }
    /// `quantize_dynamic` with a float-qparams qconfig (under any other
    /// qconfig, e.g. the one `quantize_dynamic` applies to Linear and LSTM,
    /// the embedding stays float).
    pub fn from_float_dynamic(m: Module, cfg: &DynamicConfig) -> Result<Module> {
        if !float_qparams(&cfg.qconfig) {
            return Ok(m);
        }
        Self::build(m, weight_qconfig(None, Some(&cfg.qconfig)), &cfg.engine)
    }
    fn build(m: Module, spec: QSpec, engine: &Engine) -> Result<Module> {
        let mut e: Embedding = m.expect_type("QEmbedding::from_float")?;
        let table =
            quantize_embedding_weight(&e.weight.value, &spec, e.weight_fake_quant.as_mut())?;
        Ok(QEmbedding {
            engine: engine.clone(),
            table,
        }
        .into())
    }
    /// The dequantized weight `[rows, dim]` (each row looked up once).
    pub fn dequantized(&self) -> Result<Tensor> {
        let ids: Vec<i64> = (0..self.table.rows() as i64).collect();
        embedding_lookup(&self.engine, &self.table, &ids, &[self.table.rows()])
    }
}

impl QEmbeddingBag {
    pub fn from_float(m: Module, obs: Option<Observation>, engine: &Engine) -> Result<Module> {
        Self::build(m, weight_qconfig(obs.as_ref(), None), engine)
    }
    /// As [`QEmbedding::from_float_dynamic`].
    pub fn from_float_dynamic(m: Module, cfg: &DynamicConfig) -> Result<Module> {
        if !float_qparams(&cfg.qconfig) {
            return Ok(m);
        }
        Self::build(m, weight_qconfig(None, Some(&cfg.qconfig)), &cfg.engine)
    }
    fn build(m: Module, spec: QSpec, engine: &Engine) -> Result<Module> {
        let mut e: EmbeddingBag = m.expect_type("QEmbeddingBag::from_float")?;
        let table =
            quantize_embedding_weight(&e.weight.value, &spec, e.weight_fake_quant.as_mut())?;
        Ok(QEmbeddingBag {
            engine: engine.clone(),
            table,
            mode: e.mode,
            include_last_offset: e.include_last_offset,
        }
        .into())
    }
    /// Bags of `indices` split at `offsets`.
    pub fn forward_bags(
        &self,
        indices: &[i64],
        offsets: &[i64],
        per_sample_weights: Option<&[f32]>,
    ) -> Result<Tensor> {
        embedding_bag(
            &self.engine,
            &self.table,
            indices,
            offsets,
            self.mode,
            per_sample_weights,
            self.include_last_offset,
        )
    }
}

fn save_table(t: &EmbeddingBagTable, out: &mut Saver) -> J {
    out.raw(
        "weight",
        safetensors::tensor::Dtype::U8,
        vec![t.rows(), t.dim()],
        t.codes().to_vec(),
    );
    out.f32_slice("weight_scales", t.scales());
    out.f32_slice("weight_biases", t.biases());
    json!({"bits": t.bits()})
}

fn load_table(n: &Node) -> Result<EmbeddingBagTable> {
    let bits = n.get_usize("bits")?;
    let codes = n.u8_tensor("weight")?;
    let (shape, codes) = codes;
    let [rows, dim] = shape[..] else {
        return Err(n.tensor_error("weight", "expected [rows, dim]"));
    };
    let scales = n.f32("weight_scales")?.into_data();
    let biases = n.f32("weight_biases")?.into_data();
    if bits == 4 || bits == 2 {
        // Stored widened from f16: they must round-trip exactly.
        for (name, v) in [("weight_scales", &scales), ("weight_biases", &biases)] {
            if v.iter().any(|&x| f16(x).to_f32() != x) {
                return Err(n.tensor_error(name, "not float16 values"));
            }
        }
    }
    table_from_parts(bits as u8, rows, dim, codes, &scales, &biases)
        .map_err(|e| n.tensor_error("weight", e.to_string()))
}

impl Layer for QEmbedding {
    fn type_name(&self) -> String {
        "QuantizedEmbedding".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let t = x.float("QuantizedEmbedding")?;
        let ids = ids_of("QuantizedEmbedding", &t, self.table.rows())?;
        Ok(Value::F(embedding_lookup(
            &self.engine,
            &self.table,
            &ids,
            t.shape(),
        )?))
    }
    fn weight(&self) -> Option<Tensor> {
        self.dequantized().ok()
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        Ok(save_table(&self.table, out))
    }
}

impl Layer for QEmbeddingBag {
    fn type_name(&self) -> String {
        "QuantizedEmbeddingBag".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let t = x.float("QuantizedEmbeddingBag")?;
        let (ids, offs) = rows_as_bags("QuantizedEmbeddingBag", &t, self.table.rows())?;
        Ok(Value::F(embedding_bag(
            &self.engine,
            &self.table,
            &ids,
            &offs,
            self.mode,
            None,
            false,
        )?))
    }
    fn bags(&mut self, indices: &[i64], offsets: &[i64], psw: Option<&[f32]>) -> Result<Tensor> {
        self.forward_bags(indices, offsets, psw)
    }
    fn weight(&self) -> Option<Tensor> {
        let ids: Vec<i64> = (0..self.table.rows() as i64).collect();
        embedding_lookup(&self.engine, &self.table, &ids, &[self.table.rows()]).ok()
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        let mut j = save_table(&self.table, out);
        j["mode"] = json!(self.mode.name());
        j["include_last_offset"] = json!(self.include_last_offset);
        Ok(j)
    }
}

// ---------------------------------------------------------------- registration

/// Whether a qconfig quantizes weights with float qparams (the only
/// embedding quantization PyTorch has).
fn float_qparams(q: &QConfig) -> bool {
    q.weight.observer_spec().config.qscheme == QScheme::PerChannelAffineFloatQParams
}

pub(crate) fn register_mappings(m: &mut Mappings) {
    m.set_static("Embedding", true, QEmbedding::from_float);
    m.set_static("QATEmbedding", true, QEmbedding::from_float);
    m.set_static("EmbeddingBag", true, QEmbeddingBag::from_float);
    m.set_static("QATEmbeddingBag", true, QEmbeddingBag::from_float);
    m.dynamic.insert(
        "Embedding".into(),
        std::sync::Arc::new(QEmbedding::from_float_dynamic),
    );
    m.dynamic.insert(
        "EmbeddingBag".into(),
        std::sync::Arc::new(QEmbeddingBag::from_float_dynamic),
    );
    // PyTorch's embedding QAT mappings (`get_embedding_qat_module_mappings`):
    // only with a float-qparams weight fake quant (`default_embedding_qat_qconfig`);
    // under any other qconfig the module stays float, as it would in
    // PyTorch's default QAT mappings, which do not list embeddings.
    fn qat(mut m: Module, qc: &QConfig) -> Result<Module> {
        if !float_qparams(qc) {
            return Ok(m);
        }
        let fq = qc.weight.build_fake_quant()?;
        if let Some(e) = m.downcast_mut::<Embedding>() {
            e.weight_fake_quant = Some(fq);
        } else if let Some(e) = m.downcast_mut::<EmbeddingBag>() {
            e.weight_fake_quant = Some(fq);
        }
        Ok(m)
    }
    m.qat.insert("Embedding".into(), std::sync::Arc::new(qat));
    m.qat
        .insert("EmbeddingBag".into(), std::sync::Arc::new(qat));
}

pub(crate) fn register_loaders(r: &mut ModuleRegistry) {
    fn fq_of(n: &Node) -> Result<Option<FakeQuantize>> {
        if n.type_name().starts_with("QAT") {
            Ok(Some(crate::resume::load_fake_quant(
                n,
                "weight_fake_quant",
                n.field("weight_fake_quant")?,
            )?))
        } else {
            Ok(None)
        }
    }
    fn emb(n: &mut Node) -> Result<Module> {
        let mut e = Embedding::from_weight(n.f32("weight")?)
            .map_err(|e| n.tensor_error("", e.to_string()))?;
        e.weight_fake_quant = fq_of(n)?;
        Ok(e.into())
    }
    fn bag(n: &mut Node) -> Result<Module> {
        let mode = BagMode::from_name(n.get_str("mode")?)
            .ok_or_else(|| n.attr_error("mode", "expected sum, mean or max"))?;
        let mut e = EmbeddingBag::from_weight(n.f32("weight")?, mode)
            .map_err(|e| n.tensor_error("", e.to_string()))?;
        e.include_last_offset = n.get_bool("include_last_offset")?;
        e.weight_fake_quant = fq_of(n)?;
        Ok(e.into())
    }
    r.register("Embedding", emb);
    r.register("QATEmbedding", emb);
    r.register("EmbeddingBag", bag);
    r.register("QATEmbeddingBag", bag);
    r.register("QuantizedEmbedding", |n| {
        Ok(QEmbedding {
            engine: n.engine().clone(),
            table: load_table(n)?,
        }
        .into())
    });
    r.register("QuantizedEmbeddingBag", |n| {
        Ok(QEmbeddingBag {
            engine: n.engine().clone(),
            table: load_table(n)?,
            mode: BagMode::from_name(n.get_str("mode")?)
                .ok_or_else(|| n.attr_error("mode", "expected sum, mean or max"))?,
            include_last_offset: n.get_bool("include_last_offset")?,
        }
        .into())
    });
}

impl Module {
    /// `EmbeddingBag(indices, offsets, per_sample_weights)` on a float,
    /// QAT or quantized embedding bag.
    pub fn embedding_bag(
        &mut self,
        indices: &[i64],
        offsets: &[i64],
        per_sample_weights: Option<&[f32]>,
    ) -> Result<Tensor> {
        self.layer_mut().bags(indices, offsets, per_sample_weights)
    }
}
