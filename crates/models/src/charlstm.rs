//! textgenrnn's pretrained character LSTM (converted once to safetensors by
//! `tools/textgenrnn/convert.py`): Embedding(465,100) → LSTM(128) → LSTM(128)
//! → concat[emb, h1, h2] (356) → attention-weighted average over the 40
//! timesteps → Dense(465). fp32, or dynamic int8 LSTMs (`rquant_nn`'s
//! `quantize_dynamic_with`, i.e. `nnqd.LSTM` weights) and output Linear.

use std::collections::HashMap;

use rquant_core::qconfig::{default_dynamic_qconfig, per_channel_dynamic_qconfig};
use rquant_core::{threads, Engine, Tensor};
use rquant_nn::quantized::{DynWeight, QDynRnn};
use rquant_nn::rnn::{Rnn, RnnKind, RnnLayer};
use rquant_nn::{quantize_dynamic_with, DynamicDType, DynamicType, Module, Param};

use crate::bert::{Lin, Precision};
use crate::math::{sigmoid_fast, tanh_fast};
use crate::weights::Weights;
use crate::{bail, Error, Result};

/// Characters of context per prediction.
pub const MAXLEN: usize = 40;
const HIDDEN: usize = 128;

enum Lstm {
    F32(Rnn),
    Int8(QDynRnn),
}

impl Lstm {
    /// `x · Wᵀ + b` of the input (`hh = false`) or hidden projection.
    fn proj(&self, hh: bool, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Lstm::F32(r) => {
                let l = &r.layers[0];
                let (w, b) = if hh {
                    (&l.w_hh, &l.b_hh)
                } else {
                    (&l.w_ih, &l.b_ih)
                };
                let (n, k) = (w.value.shape()[0], w.value.shape()[1]);
                rquant_nn::functional::linear(
                    x,
                    w.value.data(),
                    n,
                    k,
                    b.as_ref().map(|b| b.value.data()),
                )?
            }
            Lstm::Int8(q) => {
                let l = &q.layers[0];
                (if hh { &l.hh } else { &l.ih }).apply(&q.engine, x)?
            }
        })
    }

    /// One batch-first LSTM layer `[b, t, in] → [b, t, H]` from zero state,
    /// as `torch.nn.LSTM` (and `rquant_nn::rnn::run_rnn`): the input
    /// projection over the whole sequence at once, the hidden projection per
    /// step; gate nonlinearities by [`sigmoid_fast`] / [`tanh_fast`]
    /// (vectorizable, ~1e-7 absolute error) instead of libm calls, which
    /// took two thirds of the time.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, inp) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let mut seq = Vec::with_capacity(b * t * inp);
        for ti in 0..t {
            for bi in 0..b {
                let r = bi * t + ti;
                seq.extend_from_slice(&x.data()[r * inp..(r + 1) * inp]);
            }
        }
        let gi_all = self.proj(false, &Tensor::new([t * b, inp], seq)?)?;
        let g = 4 * HIDDEN;
        let mut h = vec![0.0f32; b * HIDDEN];
        let mut c = vec![0.0f32; b * HIDDEN];
        let mut out = vec![0.0f32; b * t * HIDDEN];
        let mut s = vec![0.0f32; g];
        for ti in 0..t {
            let gi = &gi_all.data()[ti * b * g..(ti + 1) * b * g];
            let gh = self.proj(true, &Tensor::new([b, HIDDEN], h.clone())?)?;
            for bi in 0..b {
                let o = bi * g;
                for ((sv, a), bb) in s.iter_mut().zip(&gi[o..o + g]).zip(&gh.data()[o..o + g]) {
                    *sv = a + bb;
                }
                let hr = &mut h[bi * HIDDEN..(bi + 1) * HIDDEN];
                let cr = &mut c[bi * HIDDEN..(bi + 1) * HIDDEN];
                lstm_cell(&s, cr, hr);
                let r = bi * t + ti;
                out[r * HIDDEN..(r + 1) * HIDDEN].copy_from_slice(hr);
            }
        }
        Ok(Tensor::new([b, t, HIDDEN], out)?)
    }
}

/// `c = σ(f)·c + σ(i)·tanh(g)`, `h = σ(o)·tanh(c)` for one row of gate
/// pre-activations `s = [i | f | g | o]`.
#[inline(always)]
fn cell(s: &[f32], c: &mut [f32], h: &mut [f32]) {
    let s: &[f32; 4 * HIDDEN] = s.try_into().expect("gates");
    let c: &mut [f32; HIDDEN] = c.try_into().expect("cell row");
    let h: &mut [f32; HIDDEN] = h.try_into().expect("hidden row");
    for j in 0..HIDDEN {
        let cv =
            sigmoid_fast(s[HIDDEN + j]) * c[j] + sigmoid_fast(s[j]) * tanh_fast(s[2 * HIDDEN + j]);
        c[j] = cv;
        h[j] = sigmoid_fast(s[3 * HIDDEN + j]) * tanh_fast(cv);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn cell_avx2(s: &[f32], c: &mut [f32], h: &mut [f32]) {
    cell(s, c, h)
}

/// [`cell`], compiled for AVX2 when the CPU has it (same operations, same results).
fn lstm_cell(s: &[f32], c: &mut [f32], h: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { cell_avx2(s, c, h) };
    }
    cell(s, c, h)
}

/// The textgenrnn model.
pub struct CharLstm {
    pub classes: usize,
    pub dim: usize,
    embedding: Vec<f32>,
    lstm1: Lstm,
    lstm2: Lstm,
    attention: Vec<f32>,
    output: Lin,
}

fn lstm(w: &Weights, p: &str, input: usize) -> Result<Rnn> {
    let t = |n: &str, s: &[usize]| -> Result<Param> {
        Ok(Param::new(Tensor::new(
            s.to_vec(),
            w.f32(&format!("{p}.{n}"), s)?,
        )?))
    };
    let g = 4 * HIDDEN;
    let mut r = Rnn::new(
        RnnKind::Lstm,
        input,
        HIDDEN,
        1,
        true,
        &mut rquant_nn::Rng(0),
    );
    r.layers = vec![RnnLayer {
        w_ih: t("weight_ih_l0", &[g, input])?,
        w_hh: t("weight_hh_l0", &[g, HIDDEN])?,
        b_ih: Some(t("bias_ih_l0", &[g])?),
        b_hh: Some(t("bias_hh_l0", &[g])?),
        w_hr: None,
    }];
    Ok(r)
}

impl CharLstm {
    /// Load the converted weights; with `Precision::Int8` quantize both LSTMs
    /// and the output Linear for `engine`.
    pub fn load(path: &str, precision: Precision, engine: &Engine) -> Result<Self> {
        let w = Weights::open(path)?;
        let Some(&[classes, dim]) = w.shape("embedding.weight") else {
            bail!("{path}: tensor embedding.weight is missing or not 2-D");
        };
        // An empty [0, huge] embedding holds no bytes: its width is unchecked so far.
        let Some(cat) = dim.checked_add(2 * HIDDEN) else {
            bail!("{path}: tensor embedding.weight has shape [{classes}, {dim}], too wide");
        };
        let mut m = CharLstm {
            classes,
            dim,
            embedding: w.f32("embedding.weight", &[classes, dim])?,
            lstm1: Lstm::F32(lstm(&w, "lstm1", dim)?),
            lstm2: Lstm::F32(lstm(&w, "lstm2", HIDDEN)?),
            attention: w.f32("attention.weight", &[cat])?,
            output: Lin::F32 {
                w: w.f32("output.weight", &[classes, cat])?,
                b: w.f32("output.bias", &[classes])?,
                n: classes,
                k: cat,
            },
        };
        if let Precision::Int8 {
            per_channel,
            reduce_range,
        } = precision
        {
            let q = if per_channel {
                per_channel_dynamic_qconfig()
            } else {
                default_dynamic_qconfig()
            };
            for l in [&mut m.lstm1, &mut m.lstm2] {
                let Lstm::F32(r) = l else { continue };
                let mut module = Module::new(r.clone());
                quantize_dynamic_with(
                    &mut module,
                    &[DynamicType::Lstm],
                    DynamicDType::QInt8,
                    &q,
                    engine,
                )?;
                let Ok(mut d) = module.into_inner::<QDynRnn>() else {
                    bail!("quantize_dynamic did not produce a dynamic LSTM");
                };
                for l in &mut d.layers {
                    for dw in [&mut l.ih, &mut l.hh] {
                        if let DynWeight::Int8 {
                            reduce_range: r, ..
                        } = dw
                        {
                            *r = reduce_range;
                        }
                    }
                }
                *l = Lstm::Int8(d);
            }
            m.output.quantize(engine, per_channel, reduce_range)?;
        }
        Ok(m)
    }

    /// Logits `[b, classes]` for `b` contexts of [`MAXLEN`] ids each.
    pub fn forward(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let b = ids.len() / MAXLEN;
        if b * MAXLEN != ids.len() || b == 0 {
            bail!(
                "expected a non-empty batch of {MAXLEN}-id contexts, got {} ids",
                ids.len()
            );
        }
        let d = self.dim;
        let mut e = Vec::with_capacity(ids.len() * d);
        for &i in ids {
            let i = i as usize;
            if i >= self.classes {
                bail!(
                    "character id {i} is outside the vocabulary ({})",
                    self.classes
                );
            }
            e.extend_from_slice(&self.embedding[i * d..(i + 1) * d]);
        }
        let e = Tensor::new([b, MAXLEN, d], e)?;
        let h1 = self.lstm1.forward(&e)?;
        let h2 = self.lstm2.forward(&h1)?;
        let cat = d + 2 * HIDDEN;
        let mut pooled = vec![0.0f32; b * cat];
        let mut x = vec![0.0f32; MAXLEN * cat];
        for bi in 0..b {
            for t in 0..MAXLEN {
                let r = bi * MAXLEN + t;
                let row = &mut x[t * cat..(t + 1) * cat];
                row[..d].copy_from_slice(&e.data()[r * d..(r + 1) * d]);
                row[d..d + HIDDEN].copy_from_slice(&h1.data()[r * HIDDEN..(r + 1) * HIDDEN]);
                row[d + HIDDEN..].copy_from_slice(&h2.data()[r * HIDDEN..(r + 1) * HIDDEN]);
            }
            // AttentionWeightedAverage: softmax over time of x·W, with Keras' epsilon.
            let logits: Vec<f32> = x
                .chunks(cat)
                .map(|row| row.iter().zip(&self.attention).map(|(a, w)| a * w).sum())
                .collect();
            let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let a: Vec<f32> = logits.iter().map(|l| (l - m).exp()).collect();
            let z: f32 = a.iter().sum::<f32>() + 1e-7;
            let out = &mut pooled[bi * cat..(bi + 1) * cat];
            for (row, ai) in x.chunks(cat).zip(&a) {
                let wgt = ai / z;
                out.iter_mut().zip(row).for_each(|(o, v)| *o += v * wgt);
            }
        }
        self.output.forward(&pooled, b)
    }
}

/// Next-character evaluation: top-1 accuracy and mean cross-entropy (nats).
#[derive(Debug, Clone, Copy)]
pub struct NextCharEval {
    pub chars: usize,
    pub top1: f64,
    pub cross_entropy: f64,
}

/// textgenrnn's character ids (`textgenrnn_vocab.json`; unknown characters are 0).
/// Error messages name the file.
pub fn load_vocab(path: &str) -> Result<HashMap<char, u32>> {
    let s = std::fs::read_to_string(path).map_err(|e| Error::new(format!("{path}: {e}")))?;
    let j: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&s)
        .map_err(|e| Error::new(format!("{path}: not a JSON object: {e}")))?;
    let mut v = HashMap::new();
    for (k, id) in j {
        let Some(id) = id.as_u64() else {
            bail!("{path}: entry {k:?} does not have an integer id");
        };
        // Multi-character entries (the meta token "<s>") never match one character.
        let mut cs = k.chars();
        if let (Some(c), None) = (cs.next(), cs.next()) {
            v.insert(c, id as u32);
        }
    }
    Ok(v)
}

/// Predict each of `ids[i]` from the up to [`MAXLEN`] ids before it
/// (left-padded with 0), in batches of `batch` spread over rquant's threads.
pub fn evaluate(model: &CharLstm, ids: &[u32], batch: usize) -> Result<NextCharEval> {
    let n = ids.len();
    let ctx: Vec<u32> = (0..n)
        .flat_map(|i| {
            let start = i.saturating_sub(MAXLEN);
            std::iter::repeat_n(0, MAXLEN - (i - start)).chain(ids[start..i].iter().copied())
        })
        .collect();
    let parts: Vec<(usize, &[u32])> = ctx.chunks(batch * MAXLEN).enumerate().collect();
    let chunks: Vec<(usize, f64)> = threads::par_map_vec(parts, |(ci, c)| {
        let logits = model.forward(c)?;
        let (mut hits, mut ce) = (0usize, 0.0f64);
        for (r, row) in logits.chunks(model.classes).enumerate() {
            let y = ids[ci * batch + r] as usize;
            let (arg, max) = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (j, &v)| {
                        if v > acc.1 {
                            (j, v)
                        } else {
                            acc
                        }
                    },
                );
            hits += (arg == y) as usize;
            let lse = row
                .iter()
                .map(|&v| ((v - max) as f64).exp())
                .sum::<f64>()
                .ln()
                + max as f64;
            ce += lse - row[y] as f64;
        }
        Ok((hits, ce))
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    let hits: usize = chunks.iter().map(|c| c.0).sum();
    let ce: f64 = chunks.iter().map(|c| c.1).sum();
    Ok(NextCharEval {
        chars: n,
        top1: hits as f64 / n as f64,
        cross_entropy: ce / n as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rquant_nn::Rng;

    #[test]
    fn lstm_layer_matches_rquant_nn() {
        let mut rng = Rng(3);
        let rnn = Rnn::new(RnnKind::Lstm, 24, HIDDEN, 1, true, &mut rng);
        let (b, t) = (5, 7);
        let x = Tensor::new([b, t, 24], (0..b * t * 24).map(|_| rng.sym(2.0)).collect()).unwrap();
        let want = rnn.forward(&x, None).unwrap().0;
        let got = Lstm::F32(rnn.clone()).forward(&x).unwrap();
        let d = want
            .data()
            .iter()
            .zip(got.data())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 2e-6, "max |d| = {d}");
        // Dynamic int8 through quantize_dynamic: the same projections as nnqd.LSTM.
        rquant_nn::engines::init();
        let engine = rquant_core::registry::engine_by_name("reference").unwrap();
        let mut m = Module::new(rnn);
        quantize_dynamic_with(
            &mut m,
            &[DynamicType::Lstm],
            DynamicDType::QInt8,
            &default_dynamic_qconfig(),
            &engine,
        )
        .unwrap();
        let Ok(q) = m.into_inner::<QDynRnn>() else {
            panic!("not quantized")
        };
        let want = q.forward_full(&x, None).unwrap().0;
        let got = Lstm::Int8(q).forward(&x).unwrap();
        let d = want
            .data()
            .iter()
            .zip(got.data())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 2e-6, "int8: max |d| = {d}");
    }

    #[test]
    fn vocab_skips_meta_tokens_and_names_the_file() {
        let p = std::env::temp_dir().join(format!("rquant-vocab-{}.json", std::process::id()));
        std::fs::write(&p, r#"{"a": 1, "<s>": 2, "£": 3}"#).unwrap();
        let v = load_vocab(p.to_str().unwrap()).unwrap();
        assert_eq!((v[&'a'], v[&'£'], v.len()), (1, 3, 2));
        std::fs::write(&p, r#"{"a": "x"}"#).unwrap();
        let e = load_vocab(p.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("rquant-vocab") && e.contains("\"a\""), "{e}");
        let _ = std::fs::remove_file(p);
    }
}
