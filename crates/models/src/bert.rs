//! A BERT encoder (Hugging Face `BertModel` names) and the sentence-transformers
//! pipeline on top of it: tokenize (truncate to `max_seq_length`), encode,
//! mean-pool over the attention mask, L2-normalise.
//!
//! Every Linear is either fp32 (`rquant_nn`'s packed SGEMM) or, after
//! [`Bert::quantize_dynamic`], a dynamic int8 Linear made by
//! `rquant_nn::quantize_dynamic_with` and run by the engine's `linear_dynamic`
//! (activations quantized per call over the whole input, as PyTorch's
//! `nnqd.Linear`).
//!
//! The word and position embedding tables are fp32 or weight-only quint8
//! per row ([`EmbTable::Q8`]), as PyTorch quantizes `nn.Embedding` under
//! `float_qparams_weight_only_qconfig`: per-row min/max observer, float
//! scale and zero point, looked up by the engine's `embedding_byte` (each
//! element `fma(scale, code, bias)`). Quantized while read from the
//! memory-mapped file, a slice of rows at a time, so no fp32 copy of a
//! table is ever held. The token-type table stays fp32: it has 2 rows
//! (3 KB for MiniLM), and the row a single-segment text uses is added to
//! every token, so its rounding error would shift every token the same way
//! (on the Lee corpus, per-channel Linear: mean cosine to PyTorch fp32
//! 0.99445 with word and position quantized, 0.99420 with the token-type
//! table too; PyTorch's own quantized tables likewise 0.97894 and 0.97852).

use std::path::Path;
use std::sync::Arc;

use rquant_core::qconfig::{
    default_dynamic_qconfig, float_qparams_weight_only_qconfig, per_channel_dynamic_qconfig,
};
use rquant_core::{threads, EmbeddingBagTable, Engine, PackedLinear, Tensor};
use rquant_nn::embeddings::{embedding_lookup, quantize_embedding_weight};
use rquant_nn::gemm::{par_sgemm, sgemm, Mat};
use rquant_nn::quantized::{DynWeight, QDynLinear};
use rquant_nn::{quantize_dynamic_with, DynamicDType, DynamicType, Linear, Module};
use serde_json::Value as J;
use tokenizers::{Tokenizer, TruncationParams};

use crate::math::{gelu_inplace, layer_norm, masked_softmax};
use crate::weights::Weights;
use crate::{bail, Error, Result};

/// The fields of `config.json` the encoder uses.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
}

impl BertConfig {
    /// Parse a Hugging Face `config.json` (only BERT with erf GELU and
    /// absolute positions is supported; anything else is an error).
    pub fn from_json(text: &str, file: &str) -> Result<Self> {
        let j: J =
            serde_json::from_str(text).map_err(|e| Error::new(format!("{file}: not JSON: {e}")))?;
        let num = |k: &str| -> Result<usize> {
            j.get(k)
                .and_then(J::as_u64)
                .map(|v| v as usize)
                .filter(|&v| v > 0)
                .ok_or_else(|| Error::new(format!("{file}: missing or invalid \"{k}\"")))
        };
        if let Some(act) = j.get("hidden_act").and_then(J::as_str) {
            if act != "gelu" {
                bail!(
                    "{file}: hidden_act \"{act}\" is not supported (only \"gelu\", the erf form)"
                );
            }
        }
        if let Some(p) = j.get("position_embedding_type").and_then(J::as_str) {
            if p != "absolute" {
                bail!("{file}: position_embedding_type \"{p}\" is not supported");
            }
        }
        let c = BertConfig {
            vocab_size: num("vocab_size")?,
            hidden_size: num("hidden_size")?,
            num_hidden_layers: num("num_hidden_layers")?,
            num_attention_heads: num("num_attention_heads")?,
            intermediate_size: num("intermediate_size")?,
            max_position_embeddings: num("max_position_embeddings")?,
            type_vocab_size: num("type_vocab_size")?,
            layer_norm_eps: j.get("layer_norm_eps").and_then(J::as_f64).unwrap_or(1e-12) as f32,
        };
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            bail!(
                "{file}: hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden_size,
                c.num_attention_heads
            );
        }
        Ok(c)
    }
}

/// How the Linear layers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    /// Dynamic int8: qint8 weights (per-tensor symmetric MinMax, or per-channel),
    /// activations quint8 chosen per call; `reduce_range` uses 0..127 as
    /// PyTorch's x86/fbgemm dynamic Linear does.
    Int8 {
        per_channel: bool,
        reduce_range: bool,
    },
}

/// One Linear layer, fp32 or dynamic int8.
pub enum Lin {
    F32 {
        w: Vec<f32>,
        b: Vec<f32>,
        n: usize,
        k: usize,
    },
    Int8 {
        engine: Engine,
        packed: Arc<PackedLinear>,
        reduce_range: bool,
    },
}

impl Lin {
    pub fn out_features(&self) -> usize {
        match self {
            Lin::F32 { n, .. } => *n,
            Lin::Int8 { packed, .. } => packed.out_features(),
        }
    }
    pub fn in_features(&self) -> usize {
        match self {
            Lin::F32 { k, .. } => *k,
            Lin::Int8 { packed, .. } => packed.in_features(),
        }
    }

    /// `x · Wᵀ + b` for `m` rows of `x`.
    pub fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            Lin::F32 { w, b, n, k } => {
                let mut y = Vec::with_capacity(m * n);
                for _ in 0..m {
                    y.extend_from_slice(b);
                }
                par_sgemm(m, *k, *n, Mat::rows(x, *k), Mat::t(w, *k), 1.0, &mut y);
                Ok(y)
            }
            Lin::Int8 {
                engine,
                packed,
                reduce_range,
            } => {
                let t = Tensor::new([m, packed.in_features()], x.to_vec())?;
                Ok(engine
                    .linear_dynamic(&t, packed, *reduce_range)?
                    .into_data())
            }
        }
    }

    /// Replace an fp32 layer by its dynamic int8 form (the fp32 weight is dropped).
    pub fn quantize(
        &mut self,
        engine: &Engine,
        per_channel: bool,
        reduce_range: bool,
    ) -> Result<()> {
        let Lin::F32 { w, b, n, k } = self else {
            return Ok(());
        };
        let (n, k) = (*n, *k);
        let lin = Linear::from_weights(
            Tensor::new([n, k], std::mem::take(w))?,
            Some(Tensor::new([n], std::mem::take(b))?),
        )?;
        let mut m = Module::new(lin);
        let q = if per_channel {
            per_channel_dynamic_qconfig()
        } else {
            default_dynamic_qconfig()
        };
        quantize_dynamic_with(
            &mut m,
            &[DynamicType::Linear],
            DynamicDType::QInt8,
            &q,
            engine,
        )?;
        let Ok(d) = m.into_inner::<QDynLinear>() else {
            bail!("quantize_dynamic did not produce a dynamic Linear");
        };
        let DynWeight::Int8 { packed, .. } = d.weight else {
            bail!("quantize_dynamic did not produce int8 weights");
        };
        *self = Lin::Int8 {
            engine: engine.clone(),
            packed,
            reduce_range,
        };
        Ok(())
    }

    /// Bytes of weights and bias this layer holds: f32 weights and bias, or
    /// what the `PackedLinear` holds ([`PackedLinear::bytes`]: the engine's
    /// packed int8 panels, the only copy of the int8 weights, plus the
    /// per-channel qparams, column sums and the f32 bias).
    pub fn weight_bytes(&self) -> usize {
        match self {
            Lin::F32 { w, b, .. } => 4 * (w.len() + b.len()),
            Lin::Int8 { packed, .. } => packed.bytes(),
        }
    }
}

/// An embedding table `[rows, dim]`: fp32, or weight-only quint8 per row
/// (`float_qparams_weight_only_qconfig`) looked up by `engine`.
pub enum EmbTable {
    F32 {
        data: Vec<f32>,
        dim: usize,
    },
    Q8 {
        engine: Engine,
        table: EmbeddingBagTable,
    },
}

/// Rows quantized per call while a table is converted (1.5 MB of f32 at
/// MiniLM's 384 columns).
const QUANT_ROWS: usize = 1024;

impl EmbTable {
    /// A quint8 table made from `rows × dim` f32 values that `read` returns
    /// a range of rows at a time: each slice goes through
    /// `rquant_nn::embeddings::quantize_embedding_weight` under
    /// `float_qparams_weight_only_qconfig` (the quantized `nn.Embedding`'s
    /// own path; its observer is per row, so slices give the same table as
    /// the whole). Errors of `read` are passed on as they are; quantization
    /// errors name `what` and the rows.
    pub fn quantize_rows(
        rows: usize,
        dim: usize,
        engine: &Engine,
        what: &str,
        mut read: impl FnMut(std::ops::Range<usize>) -> Result<Vec<f32>>,
    ) -> Result<EmbTable> {
        let spec = float_qparams_weight_only_qconfig().weight;
        let mut codes = Vec::with_capacity(rows * dim);
        let (mut scales, mut biases) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
        let mut start = 0;
        while start < rows {
            let end = (start + QUANT_ROWS).min(rows);
            let x = read(start..end)?;
            let t = Tensor::new([end - start, dim], x)
                .map_err(Error::from)
                .and_then(|x| Ok(quantize_embedding_weight(&x, &spec, None)?))
                .map_err(|e| Error::new(format!("{what}: rows {start}..{end}: {e}")))?;
            codes.extend_from_slice(t.codes());
            scales.extend_from_slice(t.scales());
            biases.extend_from_slice(t.biases());
            start = end;
        }
        let table = EmbeddingBagTable::byte(rows, dim, codes, scales, biases)
            .map_err(|e| Error::new(format!("{what}: {e}")))?;
        Ok(EmbTable::Q8 {
            engine: engine.clone(),
            table,
        })
    }

    /// This table quantized (an fp32 table is replaced; a quantized one kept).
    fn quantize(&mut self, engine: &Engine, what: &str) -> Result<()> {
        // Left as it was on an error.
        if let EmbTable::F32 { data, dim } = self {
            let dim = *dim;
            *self = Self::quantize_rows(data.len() / dim, dim, engine, what, |r| {
                Ok(data[r.start * dim..r.end * dim].to_vec())
            })?;
        }
        Ok(())
    }

    /// The quint8 table, if quantized.
    pub fn quantized(&self) -> Option<&EmbeddingBagTable> {
        match self {
            EmbTable::F32 { .. } => None,
            EmbTable::Q8 { table, .. } => Some(table),
        }
    }

    /// Bytes held: 4 per weight, or 1 per weight plus an f32 scale and an
    /// f32 bias per row.
    pub fn bytes(&self) -> usize {
        match self {
            EmbTable::F32 { data, .. } => 4 * data.len(),
            EmbTable::Q8 { table, .. } => {
                table.codes().len() + 4 * (table.scales().len() + table.biases().len())
            }
        }
    }

    /// The rows `ids` (checked by the caller), `[ids.len(), dim]`.
    fn rows(&self, ids: &[usize]) -> Result<Vec<f32>> {
        match self {
            EmbTable::F32 { data, dim } => {
                let mut y = Vec::with_capacity(ids.len() * dim);
                for &i in ids {
                    y.extend_from_slice(&data[i * dim..(i + 1) * dim]);
                }
                Ok(y)
            }
            EmbTable::Q8 { engine, table } => {
                let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
                Ok(embedding_lookup(engine, table, &ids, &[ids.len()])?.into_data())
            }
        }
    }
}

struct Layer {
    query: Lin,
    key: Lin,
    value: Lin,
    attn_out: Lin,
    ln1: (Vec<f32>, Vec<f32>),
    inter: Lin,
    out: Lin,
    ln2: (Vec<f32>, Vec<f32>),
}

impl Layer {
    fn lins_mut(&mut self) -> [&mut Lin; 6] {
        [
            &mut self.query,
            &mut self.key,
            &mut self.value,
            &mut self.attn_out,
            &mut self.inter,
            &mut self.out,
        ]
    }
    fn lins(&self) -> [&Lin; 6] {
        [
            &self.query,
            &self.key,
            &self.value,
            &self.attn_out,
            &self.inter,
            &self.out,
        ]
    }
}

/// A BERT encoder (`BertModel` without the pooler).
pub struct Bert {
    pub config: BertConfig,
    word: EmbTable,
    position: EmbTable,
    token_type: EmbTable,
    emb_ln: (Vec<f32>, Vec<f32>),
    layers: Vec<Layer>,
}

/// Bytes of a model's parameters by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelBytes {
    pub linear: usize,
    pub embeddings: usize,
    pub layer_norm: usize,
}

impl ModelBytes {
    pub fn total(&self) -> usize {
        self.linear + self.embeddings + self.layer_norm
    }
}

/// A padded batch: ids and token types `[b, t]`, `mask[b·t]` true on real tokens.
#[derive(Debug, Clone)]
pub struct Batch {
    pub b: usize,
    pub t: usize,
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub mask: Vec<bool>,
}

impl Batch {
    /// Pad sequences of (ids, type ids) on the right to the longest.
    pub fn pad(seqs: &[(Vec<u32>, Vec<u32>)]) -> Batch {
        let b = seqs.len();
        let t = seqs.iter().map(|s| s.0.len()).max().unwrap_or(0);
        let mut batch = Batch {
            b,
            t,
            ids: vec![0; b * t],
            type_ids: vec![0; b * t],
            mask: vec![false; b * t],
        };
        for (i, (ids, tt)) in seqs.iter().enumerate() {
            batch.ids[i * t..i * t + ids.len()].copy_from_slice(ids);
            batch.type_ids[i * t..i * t + tt.len()].copy_from_slice(tt);
            batch.mask[i * t..i * t + ids.len()].fill(true);
        }
        batch
    }
}

impl Bert {
    /// Read every tensor by its Hugging Face name (optionally under `bert.`),
    /// checking dtypes and shapes against `config`.
    pub fn load(w: &Weights, config: BertConfig) -> Result<Bert> {
        Self::load_with(w, config, None)
    }

    /// [`Bert::load`]; with `quantize_embeddings` the word and position
    /// embedding tables are quantized to quint8 per row for that engine while
    /// they are read (a slice of rows at a time: no fp32 copy of a table is
    /// made); the token-type table stays fp32 (see the module doc).
    pub fn load_with(
        w: &Weights,
        config: BertConfig,
        quantize_embeddings: Option<&Engine>,
    ) -> Result<Bert> {
        let c = &config;
        let h = c.hidden_size;
        let lin = |name: &str, n: usize, k: usize| -> Result<Lin> {
            Ok(Lin::F32 {
                w: w.f32(&format!("{name}.weight"), &[n, k])?,
                b: w.f32(&format!("{name}.bias"), &[n])?,
                n,
                k,
            })
        };
        let ln = |name: &str| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((
                w.f32(&format!("{name}.weight"), &[h])?,
                w.f32(&format!("{name}.bias"), &[h])?,
            ))
        };
        let layers = (0..c.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                Ok(Layer {
                    query: lin(&format!("{p}.attention.self.query"), h, h)?,
                    key: lin(&format!("{p}.attention.self.key"), h, h)?,
                    value: lin(&format!("{p}.attention.self.value"), h, h)?,
                    attn_out: lin(&format!("{p}.attention.output.dense"), h, h)?,
                    ln1: ln(&format!("{p}.attention.output.LayerNorm"))?,
                    inter: lin(&format!("{p}.intermediate.dense"), c.intermediate_size, h)?,
                    out: lin(&format!("{p}.output.dense"), h, c.intermediate_size)?,
                    ln2: ln(&format!("{p}.output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let table = |name: &str, rows: usize, quantize: Option<&Engine>| -> Result<EmbTable> {
            let name = format!("embeddings.{name}.weight");
            match quantize {
                None => Ok(EmbTable::F32 {
                    data: w.f32(&name, &[rows, h])?,
                    dim: h,
                }),
                Some(e) => {
                    EmbTable::quantize_rows(rows, h, e, &name, |r| w.f32_rows(&name, &[rows, h], r))
                }
            }
        };
        Ok(Bert {
            word: table("word_embeddings", c.vocab_size, quantize_embeddings)?,
            position: table(
                "position_embeddings",
                c.max_position_embeddings,
                quantize_embeddings,
            )?,
            token_type: table("token_type_embeddings", c.type_vocab_size, None)?,
            emb_ln: ln("embeddings.LayerNorm")?,
            layers,
            config,
        })
    }

    /// Quantize every Linear (6 per layer) to dynamic int8 for `engine`.
    pub fn quantize_dynamic(
        &mut self,
        engine: &Engine,
        per_channel: bool,
        reduce_range: bool,
    ) -> Result<()> {
        for (l, layer) in self.layers.iter_mut().enumerate() {
            for lin in layer.lins_mut() {
                lin.quantize(engine, per_channel, reduce_range)
                    .map_err(|e| Error::new(format!("encoder.layer.{l}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Quantize the word and position embedding tables to quint8 per row
    /// (`float_qparams_weight_only_qconfig`) for `engine`; their fp32 values
    /// are dropped. The token-type table stays fp32 (see the module doc).
    pub fn quantize_embeddings(&mut self, engine: &Engine) -> Result<()> {
        for (name, t) in [
            ("word_embeddings", &mut self.word),
            ("position_embeddings", &mut self.position),
        ] {
            t.quantize(engine, &format!("embeddings.{name}.weight"))?;
        }
        Ok(())
    }

    /// The word, position and token-type embedding tables.
    pub fn embedding_tables(&self) -> [&EmbTable; 3] {
        [&self.word, &self.position, &self.token_type]
    }

    /// Number of Linear layers and their weight bytes (see [`Lin::weight_bytes`]).
    pub fn linear_weight_bytes(&self) -> (usize, usize) {
        let lins: Vec<&Lin> = self.layers.iter().flat_map(|l| l.lins()).collect();
        (lins.len(), lins.iter().map(|l| l.weight_bytes()).sum())
    }

    /// Bytes the model holds: Linear layers ([`Lin::weight_bytes`]),
    /// embedding tables ([`EmbTable::bytes`]) and LayerNorm parameters.
    pub fn weight_bytes(&self) -> ModelBytes {
        let ln = |p: &(Vec<f32>, Vec<f32>)| 4 * (p.0.len() + p.1.len());
        ModelBytes {
            linear: self.linear_weight_bytes().1,
            embeddings: self.embedding_tables().iter().map(|t| t.bytes()).sum(),
            layer_norm: ln(&self.emb_ln)
                + self
                    .layers
                    .iter()
                    .map(|l| ln(&l.ln1) + ln(&l.ln2))
                    .sum::<usize>(),
        }
    }

    /// Bytes of the same model held entirely as fp32 (4 per parameter).
    pub fn fp32_bytes(&self) -> ModelBytes {
        let c = &self.config;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let per_layer = 4 * (h * h + h) + (i * h + i) + (h * i + h);
        ModelBytes {
            linear: 4 * c.num_hidden_layers * per_layer,
            embeddings: 4 * h * (c.vocab_size + c.max_position_embeddings + c.type_vocab_size),
            layer_norm: 4 * 2 * h * (1 + 2 * c.num_hidden_layers),
        }
    }

    /// Hidden states of the last layer, `[b·t, hidden]`.
    pub fn forward(&self, batch: &Batch) -> Result<Vec<f32>> {
        let c = &self.config;
        let (b, t, h) = (batch.b, batch.t, c.hidden_size);
        if t > c.max_position_embeddings {
            bail!(
                "sequence of {t} tokens exceeds max_position_embeddings {}",
                c.max_position_embeddings
            );
        }
        for (&id, &tt) in batch.ids.iter().zip(&batch.type_ids) {
            let (id, tt) = (id as usize, tt as usize);
            if id >= c.vocab_size {
                bail!("token id {id} is outside the vocabulary ({})", c.vocab_size);
            }
            if tt >= c.type_vocab_size {
                bail!(
                    "token type {tt} is outside type_vocab_size {}",
                    c.type_vocab_size
                );
            }
        }
        let ids: Vec<usize> = batch.ids.iter().map(|&i| i as usize).collect();
        let type_ids: Vec<usize> = batch.type_ids.iter().map(|&i| i as usize).collect();
        let positions: Vec<usize> = (0..b * t).map(|i| i % t.max(1)).collect();
        // (word + token type) + position, as BertEmbeddings.
        let mut x = self.word.rows(&ids)?;
        let te = self.token_type.rows(&type_ids)?;
        let pe = self.position.rows(&positions)?;
        for ((x, t), p) in x.iter_mut().zip(&te).zip(&pe) {
            *x = (*x + t) + p;
        }
        layer_norm(&mut x, h, &self.emb_ln.0, &self.emb_ln.1, c.layer_norm_eps);
        for layer in &self.layers {
            x = self.layer_forward(layer, x, batch)?;
        }
        Ok(x)
    }

    fn layer_forward(&self, l: &Layer, x: Vec<f32>, batch: &Batch) -> Result<Vec<f32>> {
        let c = &self.config;
        let (b, t, h) = (batch.b, batch.t, c.hidden_size);
        let m = b * t;
        let q = l.query.forward(&x, m)?;
        let k = l.key.forward(&x, m)?;
        let v = l.value.forward(&x, m)?;
        let ctx = attention(&q, &k, &v, batch, h, c.num_attention_heads);
        let mut a = l.attn_out.forward(&ctx, m)?;
        for (y, r) in a.iter_mut().zip(&x) {
            *y += r;
        }
        layer_norm(&mut a, h, &l.ln1.0, &l.ln1.1, c.layer_norm_eps);
        let mut i = l.inter.forward(&a, m)?;
        gelu_inplace(&mut i);
        let mut o = l.out.forward(&i, m)?;
        for (y, r) in o.iter_mut().zip(&a) {
            *y += r;
        }
        layer_norm(&mut o, h, &l.ln2.0, &l.ln2.1, c.layer_norm_eps);
        Ok(o)
    }

    /// Sentence embeddings `[b][hidden]`: mean over the mask, then L2-normalised.
    pub fn embed(&self, batch: &Batch) -> Result<Vec<Vec<f32>>> {
        let hs = self.forward(batch)?;
        let h = self.config.hidden_size;
        Ok((0..batch.b)
            .map(|i| {
                let mut e = vec![0.0f32; h];
                let mut count = 0.0f32;
                for j in 0..batch.t {
                    if batch.mask[i * batch.t + j] {
                        count += 1.0;
                        let row = &hs[(i * batch.t + j) * h..(i * batch.t + j + 1) * h];
                        e.iter_mut().zip(row).for_each(|(a, b)| *a += b);
                    }
                }
                let inv = 1.0 / count.max(1e-9);
                e.iter_mut().for_each(|a| *a *= inv);
                l2_normalize(&mut e);
                e
            })
            .collect())
    }
}

/// `v / max(‖v‖₂, 1e-12)` (torch.nn.functional.normalize).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt() as f32;
    let inv = 1.0 / norm.max(1e-12);
    v.iter_mut().for_each(|x| *x *= inv);
}

/// Multi-head scaled dot-product attention with a key padding mask.
/// q, k, v are `[b·t, h]` (heads interleaved as `[t, heads, d]`); returns `[b·t, h]`.
fn attention(q: &[f32], k: &[f32], v: &[f32], batch: &Batch, h: usize, heads: usize) -> Vec<f32> {
    let (b, t) = (batch.b, batch.t);
    let d = h / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let per_head: Vec<Vec<f32>> = threads::par_map(b * heads, |bh| {
        let (bi, hi) = (bh / heads, bh % heads);
        let off = bi * t * h + hi * d;
        let keep = &batch.mask[bi * t..(bi + 1) * t];
        let mut s = vec![0.0f32; t * t];
        let qv = Mat {
            data: &q[off..],
            rs: h,
            cs: 1,
        };
        let kt = Mat {
            data: &k[off..],
            rs: 1,
            cs: h,
        };
        sgemm(t, d, t, qv, kt, 0.0, &mut s, t);
        for row in s.chunks_mut(t) {
            row.iter_mut().for_each(|x| *x *= scale);
            masked_softmax(row, keep);
        }
        let vv = Mat {
            data: &v[off..],
            rs: h,
            cs: 1,
        };
        let mut o = vec![0.0f32; t * d];
        sgemm(t, t, d, Mat::rows(&s, t), vv, 0.0, &mut o, d);
        o
    });
    let mut ctx = vec![0.0f32; b * t * h];
    for (bh, o) in per_head.iter().enumerate() {
        let (bi, hi) = (bh / heads, bh % heads);
        for ti in 0..t {
            let dst = (bi * t + ti) * h + hi * d;
            ctx[dst..dst + d].copy_from_slice(&o[ti * d..(ti + 1) * d]);
        }
    }
    ctx
}

/// The sentence-transformers pipeline: tokenizer + BERT + mean pooling + L2 norm.
pub struct SentenceEncoder {
    pub bert: Bert,
    pub tokenizer: Tokenizer,
    pub max_seq_length: usize,
}

impl SentenceEncoder {
    /// Load `config.json`, `model.safetensors` (memory-mapped; unmapped once
    /// the weights are taken) and `tokenizer.json` from `dir`;
    /// `max_seq_length` from `sentence_bert_config.json` if present, else 256,
    /// capped at `max_position_embeddings`. With `Precision::Int8` the word
    /// and position embedding tables are quantized too (quint8 per row); see
    /// [`SentenceEncoder::from_dir_with`] to keep them fp32.
    pub fn from_dir(dir: &Path, precision: Precision, engine: Option<&Engine>) -> Result<Self> {
        let int8 = matches!(precision, Precision::Int8 { .. });
        Self::from_dir_with(dir, precision, int8, engine)
    }

    /// [`SentenceEncoder::from_dir`] with the word and position embedding
    /// tables quantized (quint8 per row, while read from the map) or not, for
    /// any `precision` of the Linear layers.
    pub fn from_dir_with(
        dir: &Path,
        precision: Precision,
        int8_embeddings: bool,
        engine: Option<&Engine>,
    ) -> Result<Self> {
        let engine = match (engine, int8_embeddings, precision) {
            (Some(e), _, _) => Some(e.clone()),
            (None, false, Precision::Fp32) => None,
            (None, _, _) => Some(rquant_core::registry::engine()?),
        };
        let file = |n: &str| dir.join(n).to_string_lossy().into_owned();
        let read = |n: &str| read_text_capped(&file(n), JSON_CAP);
        let config = BertConfig::from_json(&read("config.json")?, &file("config.json"))?;
        let mut max_seq_length = 256;
        if dir.join("sentence_bert_config.json").exists() {
            let f = file("sentence_bert_config.json");
            let j: J = serde_json::from_str(&read("sentence_bert_config.json")?)
                .map_err(|e| Error::new(format!("{f}: not JSON: {e}")))?;
            if let Some(v) = j.get("max_seq_length").and_then(J::as_u64) {
                max_seq_length = v as usize;
            }
        }
        let max_seq_length = max_seq_length.min(config.max_position_embeddings);
        let bert = {
            let mut w = Weights::open(&file("model.safetensors"))?;
            if !w.contains("embeddings.word_embeddings.weight") {
                w.set_prefix("bert.");
            }
            let emb_engine = engine.as_ref().filter(|_| int8_embeddings);
            Bert::load_with(&w, config, emb_engine)?
        };
        let tokenizer = load_tokenizer(&file("tokenizer.json"), max_seq_length)?;
        let mut enc = SentenceEncoder {
            bert,
            tokenizer,
            max_seq_length,
        };
        // `engine` is Some for Int8 (chosen above).
        if let (
            Precision::Int8 {
                per_channel,
                reduce_range,
            },
            Some(engine),
        ) = (precision, &engine)
        {
            enc.bert
                .quantize_dynamic(engine, per_channel, reduce_range)?;
        }
        Ok(enc)
    }

    /// Token ids and type ids of one text ([CLS] … [SEP], truncated).
    pub fn tokenize(&self, text: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let e = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::new(format!("tokenizer: {e}")))?;
        Ok((e.get_ids().to_vec(), e.get_type_ids().to_vec()))
    }

    /// Embed texts as one padded batch (one forward; for int8 the dynamic
    /// activation ranges then span the whole batch, padding included).
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let seqs = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        self.bert.embed(&Batch::pad(&seqs))
    }

    /// Embed each text on its own (no padding; a text's embedding never
    /// depends on the other texts), texts spread over rquant's threads (each
    /// text's own ops then run on its thread).
    pub fn embed_each(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        threads::par_map(texts.len(), |i| {
            let s = self.tokenize(texts[i])?;
            Ok(self.bert.embed(&Batch::pad(&[s]))?.remove(0))
        })
        .into_iter()
        .collect()
    }
}

/// `tokenizer.json` with truncation to `max_len` tokens (special tokens
/// included, as sentence-transformers) and no padding.
pub fn load_tokenizer(path: &str, max_len: usize) -> Result<Tokenizer> {
    let text = read_text_capped(path, TOKENIZER_CAP)?;
    let mut tok: Tokenizer = text
        .parse()
        .map_err(|e| Error::new(format!("{path}: {e}")))?;
    tok.with_truncation(Some(TruncationParams {
        max_length: max_len,
        ..Default::default()
    }))
    .map_err(|e| Error::new(format!("{path}: {e}")))?;
    tok.with_padding(None);
    // rquant's threads are its own pool's: the tokenizer's batch methods must
    // not start rayon's (single texts never use it).
    tokenizers::utils::parallelism::set_parallelism(false);
    Ok(tok)
}

/// Largest `config.json` / `sentence_bert_config.json` read (real ones are < 1 KiB).
const JSON_CAP: u64 = 16 << 20;
/// Largest `tokenizer.json` read (real ones are a few MiB; the biggest
/// multilingual vocabularies stay under 100 MiB).
const TOKENIZER_CAP: u64 = 512 << 20;

/// A regular UTF-8 text file of at most `cap` bytes, checked before reading
/// (a device or a forged multi-GiB file is an error, not an out-of-memory).
fn read_text_capped(path: &str, cap: u64) -> Result<String> {
    use std::io::Read;
    let err = |m: String| Error::new(format!("{path}: {m}"));
    let f = crate::weights::open_regular(path)?;
    let meta = f.metadata().map_err(|e| err(e.to_string()))?;
    if meta.len() > cap {
        return Err(err(format!(
            "{} bytes, more than the {cap}-byte limit",
            meta.len()
        )));
    }
    let mut text = String::new();
    f.take(cap)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    Ok(text)
}
