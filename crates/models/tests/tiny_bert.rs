//! A tiny randomly initialised BERT written to a temporary directory
//! (config.json, model.safetensors, tokenizer.json, sentence_bert_config.json)
//! and run through the whole path: tokenizer, encoder, pooling; fp32 against
//! a naive independent implementation, padding-mask invariance, dynamic int8
//! on every engine, quint8 embedding tables against the hand-dequantized
//! tables, and the loader's errors. No downloads.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rquant_core::qconfig::float_qparams_weight_only_qconfig;
use rquant_core::registry;
use rquant_core::Tensor;
use rquant_models::bert::{Batch, Precision, SentenceEncoder};
use rquant_models::math::erf_slow;
use safetensors::tensor::{Dtype, TensorView};

const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "quick", "brown", "fox", "jump", "##s", "##ed",
    "over", "lazy", "dog", ",", ".", "hello", "world", "a", "b", "c", "emb", "##ed", "##ding",
];
const H: usize = 16;
const HEADS: usize = 4;
const INTER: usize = 32;
const LAYERS: usize = 2;
const MAXPOS: usize = 40;
const MAXLEN: usize = 12;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * a).collect()
    }
}

fn tokenizer_json() -> String {
    // Duplicate pieces ("##ed") keep their first id.
    let mut vocab = serde_json::Map::new();
    for (i, t) in VOCAB.iter().enumerate() {
        vocab.entry(t.to_string()).or_insert(i.into());
    }
    let special = |id: usize, s: &str| {
        serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0",
        "truncation": {"max_length": 128, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
    .to_string()
}

/// HF-named tensors of the tiny model.
fn tensors(seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut r = Rng(seed);
    let mut t = Vec::new();
    let v = VOCAB.len();
    t.push((
        "embeddings.word_embeddings.weight".into(),
        vec![v, H],
        r.vec(v * H, 1.0),
    ));
    t.push((
        "embeddings.position_embeddings.weight".into(),
        vec![MAXPOS, H],
        r.vec(MAXPOS * H, 0.5),
    ));
    t.push((
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, H],
        r.vec(2 * H, 0.5),
    ));
    let ln = |t: &mut Vec<(String, Vec<usize>, Vec<f32>)>, r: &mut Rng, p: &str| {
        t.push((
            format!("{p}.weight"),
            vec![H],
            r.vec(H, 0.2).iter().map(|x| 1.0 + x).collect(),
        ));
        t.push((format!("{p}.bias"), vec![H], r.vec(H, 0.1)));
    };
    ln(&mut t, &mut r, "embeddings.LayerNorm");
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        for (name, n, k) in [
            ("attention.self.query", H, H),
            ("attention.self.key", H, H),
            ("attention.self.value", H, H),
            ("attention.output.dense", H, H),
            ("intermediate.dense", INTER, H),
            ("output.dense", H, INTER),
        ] {
            let a = 1.0 / (k as f32).sqrt();
            t.push((format!("{p}.{name}.weight"), vec![n, k], r.vec(n * k, a)));
            t.push((format!("{p}.{name}.bias"), vec![n], r.vec(n, a)));
        }
        ln(&mut t, &mut r, &format!("{p}.attention.output.LayerNorm"));
        ln(&mut t, &mut r, &format!("{p}.output.LayerNorm"));
    }
    t
}

fn write_model(dir: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": H,
        "intermediate_size": INTER, "layer_norm_eps": 1e-12, "max_position_embeddings": MAXPOS,
        "model_type": "bert", "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
        "pad_token_id": 0, "position_embedding_type": "absolute", "type_vocab_size": 2,
        "vocab_size": VOCAB.len()
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        format!("{{\"max_seq_length\": {MAXLEN}, \"do_lower_case\": false}}"),
    )
    .unwrap();
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                d.iter().flat_map(|x| x.to_le_bytes()).collect(),
                s.clone(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let st = safetensors::serialize(views, &None).unwrap();
    std::fs::write(dir.join("model.safetensors"), st).unwrap();
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rquant-tiny-bert-{}-{name}", std::process::id()))
}

fn model_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tmp("model");
        write_model(&d, &tensors(7));
        d
    })
    .clone()
}

/// The naive model: plain loops, f64 where convenient, independent of the crate.
fn naive_embed(ts: &[(String, Vec<usize>, Vec<f32>)], ids: &[u32]) -> Vec<f32> {
    let get = |n: &str| {
        &ts.iter()
            .find(|t| t.0 == n)
            .unwrap_or_else(|| panic!("{n}"))
            .2
    };
    let t = ids.len();
    let ln = |x: &mut Vec<f64>, p: &str| {
        let (g, b) = (get(&format!("{p}.weight")), get(&format!("{p}.bias")));
        for row in x.chunks_mut(H) {
            let mean = row.iter().sum::<f64>() / H as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / H as f64;
            for (j, v) in row.iter_mut().enumerate() {
                *v = (*v - mean) / (var + 1e-12).sqrt() * g[j] as f64 + b[j] as f64;
            }
        }
    };
    let lin = |x: &[f64], p: &str, n: usize, k: usize| -> Vec<f64> {
        let (w, b) = (get(&format!("{p}.weight")), get(&format!("{p}.bias")));
        let m = x.len() / k;
        let mut y = vec![0.0; m * n];
        for i in 0..m {
            for o in 0..n {
                y[i * n + o] = b[o] as f64
                    + (0..k)
                        .map(|q| x[i * k + q] * w[o * k + q] as f64)
                        .sum::<f64>();
            }
        }
        y
    };
    let (we, pe, te) = (
        get("embeddings.word_embeddings.weight"),
        get("embeddings.position_embeddings.weight"),
        get("embeddings.token_type_embeddings.weight"),
    );
    let mut x: Vec<f64> = (0..t * H)
        .map(|i| {
            let (p, j) = (i / H, i % H);
            (we[ids[p] as usize * H + j] + te[j] + pe[p * H + j]) as f64
        })
        .collect();
    ln(&mut x, "embeddings.LayerNorm");
    let d = H / HEADS;
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        let q = lin(&x, &format!("{p}.attention.self.query"), H, H);
        let k = lin(&x, &format!("{p}.attention.self.key"), H, H);
        let v = lin(&x, &format!("{p}.attention.self.value"), H, H);
        let mut ctx = vec![0.0; t * H];
        for hh in 0..HEADS {
            for i in 0..t {
                let s: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..d)
                            .map(|c| q[i * H + hh * d + c] * k[j * H + hh * d + c])
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..d {
                    ctx[i * H + hh * d + c] = (0..t)
                        .map(|j| e[j] / z * v[j * H + hh * d + c])
                        .sum::<f64>();
                }
            }
        }
        let mut a = lin(&ctx, &format!("{p}.attention.output.dense"), H, H);
        a.iter_mut().zip(&x).for_each(|(y, r)| *y += r);
        ln(&mut a, &format!("{p}.attention.output.LayerNorm"));
        let mut i = lin(&a, &format!("{p}.intermediate.dense"), INTER, H);
        i.iter_mut()
            .for_each(|v| *v = *v * 0.5 * (1.0 + erf_slow(*v / std::f64::consts::SQRT_2)));
        let mut o = lin(&i, &format!("{p}.output.dense"), H, INTER);
        o.iter_mut().zip(&a).for_each(|(y, r)| *y += r);
        ln(&mut o, &format!("{p}.output.LayerNorm"));
        x = o;
    }
    let mut e = [0.0f64; H];
    for row in x.chunks(H) {
        e.iter_mut().zip(row).for_each(|(a, b)| *a += b / t as f64);
    }
    let n = e.iter().map(|v| v * v).sum::<f64>().sqrt();
    e.iter().map(|v| (v / n) as f32).collect()
}

fn cos(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    d / (na * nb)
}

const TEXTS: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world",
    "",
    "embedding a b c",
    "the fox jumped over the dog, the dog jumped over the fox, a b c a b c",
    "unknownword hello",
];

#[test]
fn tokenizer_specials_subwords_truncation() {
    let enc = SentenceEncoder::from_dir(&model_dir(), Precision::Fp32, None).unwrap();
    assert_eq!(enc.max_seq_length, MAXLEN);
    let (ids, tt) = enc.tokenize("Hello, World").unwrap();
    assert_eq!(ids, vec![2, 16, 14, 17, 3]);
    assert_eq!(tt, vec![0; 5]);
    let (ids, _) = enc.tokenize("embedding jumps").unwrap();
    assert_eq!(ids, vec![2, 21, 10, 23, 8, 9, 3]);
    assert_eq!(enc.tokenize("zzz").unwrap().0, vec![2, 1, 3]);
    assert_eq!(enc.tokenize("").unwrap().0, vec![2, 3]);
    // Truncated to max_seq_length tokens, [SEP] kept last.
    let (ids, _) = enc.tokenize(TEXTS[4]).unwrap();
    assert_eq!(ids.len(), MAXLEN);
    assert_eq!(ids[0], 2);
    assert_eq!(*ids.last().unwrap(), 3);
}

#[test]
fn fp32_matches_a_naive_implementation() {
    let ts = tensors(7);
    let enc = SentenceEncoder::from_dir(&model_dir(), Precision::Fp32, None).unwrap();
    let got = enc.embed_each(TEXTS).unwrap();
    for (text, e) in TEXTS.iter().zip(&got) {
        let (ids, _) = enc.tokenize(text).unwrap();
        let want = naive_embed(&ts, &ids);
        let c = cos(e, &want);
        let maxd = e
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            c > 0.999_999 && maxd < 2e-5,
            "{text:?}: cos {c}, max |d| {maxd}"
        );
        let norm: f64 = e.iter().map(|x| (*x as f64).powi(2)).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

#[test]
fn padded_batch_equals_texts_one_by_one() {
    let enc = SentenceEncoder::from_dir(&model_dir(), Precision::Fp32, None).unwrap();
    let each = enc.embed_each(TEXTS).unwrap();
    let batch = enc.embed_batch(TEXTS).unwrap();
    for (a, b) in each.iter().zip(&batch) {
        let maxd = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(maxd < 1e-5, "padding changed an embedding by {maxd}");
    }
    // The mask really matters: padding attended to would change the short texts.
    let seqs: Vec<_> = TEXTS.iter().map(|t| enc.tokenize(t).unwrap()).collect();
    let mut b = Batch::pad(&seqs);
    b.mask.iter_mut().for_each(|m| *m = true);
    let unmasked = enc.bert.embed(&b).unwrap();
    assert!(cos(&unmasked[1], &each[1]) < 0.9999);
}

#[test]
fn int8_close_to_fp32_and_identical_on_every_engine() {
    rquant_nn::engines::init();
    let dir = model_dir();
    let fp = SentenceEncoder::from_dir(&dir, Precision::Fp32, None)
        .unwrap()
        .embed_each(TEXTS)
        .unwrap();
    for per_channel in [false, true] {
        for reduce_range in [false, true] {
            let p = Precision::Int8 {
                per_channel,
                reduce_range,
            };
            let mut first: Option<Vec<Vec<f32>>> = None;
            for name in registry::supported_engines() {
                let e = registry::engine_by_name(name).unwrap();
                let enc = SentenceEncoder::from_dir(&dir, p, Some(&e)).unwrap();
                let (n, bytes) = enc.bert.linear_weight_bytes();
                assert_eq!(n, 6 * LAYERS);
                let f32_bytes = 4 * LAYERS * (4 * (H * H + H) + 2 * H * INTER + INTER + H);
                // What the PackedLinears hold: the engine's panels plus
                // per-channel data. At these tiny sizes (16, 32) tile padding
                // and per-channel data are a large share (73% of fp32 on AVX-512)
                // (26% for MiniLM's 384 / 1536). The reference engine, an
                // oracle, keeps its weights as i32 (w − zp) and holds more.
                if name != "reference" {
                    assert!(bytes < f32_bytes, "{name}: {bytes} vs {f32_bytes}");
                }
                let q = enc.embed_each(TEXTS).unwrap();
                for (a, b) in q.iter().zip(&fp) {
                    assert!(cos(a, b) > 0.97, "{p:?} on {name}: cos {}", cos(a, b));
                }
                match &first {
                    None => first = Some(q),
                    Some(f) => assert!(
                        f.iter()
                            .flatten()
                            .zip(q.iter().flatten())
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{p:?}: {name} differs from the first engine"
                    ),
                }
            }
        }
    }
}

/// Bit patterns of a list of embeddings.
fn bits(v: &[Vec<f32>]) -> Vec<u32> {
    v.iter().flatten().map(|x| x.to_bits()).collect()
}

#[test]
fn int8_embeddings_equal_the_hand_dequantized_tables() {
    rquant_nn::engines::init();
    let dir = model_dir();
    let ts = tensors(7);
    let spec = float_qparams_weight_only_qconfig().weight;
    // Word and position tables quantized; the token-type table stays fp32.
    let tables = [
        ("embeddings.word_embeddings.weight", VOCAB.len()),
        ("embeddings.position_embeddings.weight", MAXPOS),
    ];
    let mut first: Option<Vec<u32>> = None;
    for name in registry::supported_engines() {
        let e = registry::engine_by_name(name).unwrap();
        // fp32 Linear layers: only the embedding tables differ from fp32.
        let q = SentenceEncoder::from_dir_with(&dir, Precision::Fp32, true, Some(&e)).unwrap();
        let mut deq = ts.clone();
        let [word, position, token_type] = q.bert.embedding_tables();
        assert!(token_type.quantized().is_none());
        assert_eq!(token_type.bytes(), 4 * 2 * H);
        for (t, &(tname, rows)) in [word, position].iter().zip(&tables) {
            let tab = t.quantized().expect("a quantized table");
            // 1 byte per weight, an f32 scale and an f32 bias per row.
            assert_eq!((tab.bits(), tab.rows(), tab.dim()), (8, rows, H));
            assert_eq!(tab.codes().len(), rows * H);
            assert_eq!((tab.scales().len(), tab.biases().len()), (rows, rows));
            assert_eq!(t.bytes(), rows * H + 8 * rows);
            let w = &ts.iter().find(|x| x.0 == tname).unwrap().2;
            // The table the quantized nn.Embedding makes from the whole weight
            // (read and quantized in slices of rows here).
            let whole = rquant_nn::embeddings::quantize_embedding_weight(
                &Tensor::new([rows, H], w.clone()).unwrap(),
                &spec,
                None,
            )
            .unwrap();
            assert_eq!(tab, &whole, "{tname}");
            // float_qparams_weight_only_qconfig by hand: per-row min/max,
            // scale (max − min)/255, float zero point −min/scale, codes
            // rne(x·(1/scale) + zp), bias −(zp·scale).
            for (r, row) in w.chunks(H).enumerate() {
                let mn = row.iter().copied().fold(f32::INFINITY, f32::min);
                let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let s = (mx - mn) / 255.0;
                let z = -mn / s;
                assert_eq!(tab.scales()[r].to_bits(), s.to_bits(), "{tname} row {r}");
                assert_eq!(tab.biases()[r].to_bits(), (-(z * s)).to_bits());
                for (j, &x) in row.iter().enumerate() {
                    let c = (x * (1.0 / s) + z).round_ties_even().clamp(0.0, 255.0);
                    assert_eq!(tab.codes()[r * H + j], c as u8, "{tname}[{r}, {j}]");
                }
            }
            // Dequantized by hand as embedding_byte does: fma(scale, code, bias).
            let hand: Vec<f32> = tab
                .codes()
                .chunks(H)
                .zip(tab.scales().iter().zip(tab.biases()))
                .flat_map(|(c, (&s, &b))| c.iter().map(move |&c| s.mul_add(c as f32, b)))
                .collect();
            deq.iter_mut().find(|x| x.0 == tname).unwrap().2 = hand;
        }
        // Quantizing an fp32-loaded model's tables gives the same tables.
        let mut later = SentenceEncoder::from_dir(&dir, Precision::Fp32, None).unwrap();
        assert!(later.bert.embedding_tables()[0].quantized().is_none());
        later.bert.quantize_embeddings(&e).unwrap();
        for (a, b) in later
            .bert
            .embedding_tables()
            .iter()
            .zip(q.bert.embedding_tables())
        {
            assert_eq!(a.quantized(), b.quantized());
        }
        let d = tmp(&format!("dequantized-{name}"));
        write_model(&d, &deq);
        // fp32 Linear layers over the hand-dequantized tables: bit-equal.
        let f = SentenceEncoder::from_dir(&d, Precision::Fp32, None).unwrap();
        let got = q.embed_each(TEXTS).unwrap();
        assert_eq!(bits(&got), bits(&f.embed_each(TEXTS).unwrap()), "{name}");
        let seqs: Vec<_> = TEXTS.iter().map(|t| q.tokenize(t).unwrap()).collect();
        let batch = Batch::pad(&seqs);
        let (a, b) = (
            q.bert.forward(&batch).unwrap(),
            f.bert.forward(&batch).unwrap(),
        );
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        // The default int8 path (dynamic int8 Linear + quint8 tables) equals
        // int8 Linear layers over the hand-dequantized fp32 tables.
        for per_channel in [false, true] {
            let p = Precision::Int8 {
                per_channel,
                reduce_range: false,
            };
            let qq = SentenceEncoder::from_dir(&dir, p, Some(&e)).unwrap();
            let [w, pos, tt] = qq.bert.embedding_tables();
            assert!(w.quantized().is_some() && pos.quantized().is_some());
            assert!(tt.quantized().is_none());
            let fq = SentenceEncoder::from_dir_with(&d, p, false, Some(&e)).unwrap();
            assert!(fq
                .bert
                .embedding_tables()
                .iter()
                .all(|t| t.quantized().is_none()));
            assert_eq!(
                bits(&qq.embed_each(TEXTS).unwrap()),
                bits(&fq.embed_each(TEXTS).unwrap()),
                "{name}, per_channel {per_channel}"
            );
        }
        // Every engine looks the tables up identically.
        match &first {
            None => first = Some(bits(&got)),
            Some(f) => assert_eq!(f, &bits(&got), "{name} differs from the first engine"),
        }
        std::fs::remove_dir_all(&d).ok();
        // Bytes held: 1 per quantized embedding weight plus 8 per row (the
        // fp32 token-type table 4 per weight), against 4 per weight.
        let (held, f32) = (q.bert.weight_bytes(), q.bert.fp32_bytes());
        let rows = VOCAB.len() + MAXPOS;
        assert_eq!(held.embeddings, rows * H + 8 * rows + 4 * 2 * H);
        assert_eq!(f32.embeddings, 4 * (rows + 2) * H);
        assert_eq!(held.linear, f32.linear);
        assert_eq!(held.layer_norm, f32.layer_norm);
    }
}

#[test]
fn loader_errors_name_file_and_tensor() {
    let mut ts = tensors(7);
    let i = ts
        .iter()
        .position(|t| t.0 == "encoder.layer.1.intermediate.dense.weight")
        .unwrap();
    ts[i].1 = vec![INTER, H + 1];
    ts[i].2 = vec![0.0; INTER * (H + 1)];
    let d = tmp("badshape");
    write_model(&d, &ts);
    let err = SentenceEncoder::from_dir(&d, Precision::Fp32, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.safetensors")
            && err.contains("encoder.layer.1.intermediate.dense.weight")
            && err.contains("[32, 17]"),
        "{err}"
    );
    let mut ts = tensors(7);
    ts.retain(|t| t.0 != "embeddings.LayerNorm.bias");
    let d = tmp("missing");
    write_model(&d, &ts);
    let err = SentenceEncoder::from_dir(&d, Precision::Fp32, None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("embeddings.LayerNorm.bias") && err.contains("missing"),
        "{err}"
    );
    let err = SentenceEncoder::from_dir(Path::new("/nonexistent/dir"), Precision::Fp32, None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/dir/config.json"), "{err}");
}
