//! `rquant embed`: sentence embeddings from a Hugging Face BERT checkpoint
//! directory (sentence-transformers pipeline), fp32 or dynamic int8.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rquant_core::registry;
use rquant_models::bert::{Precision, SentenceEncoder};
use rquant_models::npy::npy_f32;

use crate::files::{check_output, write_atomic};

type Res = Result<(), Box<dyn std::error::Error>>;

/// What `rquant embed --help` says beyond the options.
pub const LONG_ABOUT: &str =
    "BERT sentence embeddings (sentence-transformers pipeline) from a Hugging Face \
checkpoint directory, fp32 or dynamic int8.

Texts are read one per line (UTF-8) from FILE or stdin; embeddings are written \
in input order to --out (.npy: float32 [n, dim]; .jsonl: one array per line) \
or as JSON lines to stdout. --int8 (default) quantizes every Linear to qint8 \
(per-tensor, or --per-channel) with dynamic quint8 activations over the full \
0..255 range (--reduce-range: 0..127, PyTorch's x86 default), and the word \
and position embedding tables weight-only to quint8 per row \
(float_qparams_weight_only_qconfig: per-row min/max, float scale and zero \
point), quantized while read so that no fp32 table stays in memory \
(--fp32-embeddings: keep them fp32; the 2-row token-type table, added to \
every token, always stays fp32). Throughput, resident memory and the \
model's bytes (against fp32) on stderr.";

/// Options of `rquant embed`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory with config.json, model.safetensors and tokenizer.json
    #[arg(long, value_name = "DIR")]
    model_dir: PathBuf,
    /// Dynamic int8 Linear layers (the default)
    #[arg(long, overrides_with = "fp32")]
    int8: bool,
    /// Float32 throughout
    #[arg(long, overrides_with = "int8")]
    fp32: bool,
    /// int8 weights per output channel (per_channel_dynamic_qconfig)
    #[arg(long, conflicts_with = "fp32")]
    per_channel: bool,
    /// int8 activations in 0..127, PyTorch's x86 recipe
    #[arg(long, conflicts_with = "fp32")]
    reduce_range: bool,
    /// With --int8: keep the word and position embedding tables fp32 (by
    /// default they are quint8 per row, float_qparams_weight_only_qconfig)
    #[arg(long, conflicts_with = "fp32")]
    fp32_embeddings: bool,
    /// Engine (reference, x86, qnnpack, ...; default: the best for this CPU)
    #[arg(long, value_name = "NAME")]
    engine: Option<String>,
    /// Threads (default: RQUANT_NUM_THREADS or all cores)
    #[arg(long, value_name = "N", value_parser = crate::positive)]
    threads: Option<usize>,
    /// Output file, .npy or .jsonl (default: JSON lines on stdout)
    #[arg(long, value_name = "PATH", value_parser = out_path)]
    out: Option<PathBuf>,
    /// Texts, one per line ("-" or none: stdin)
    #[arg(value_name = "FILE")]
    input: Option<PathBuf>,
}

/// `--out` names its format by its extension.
fn out_path(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    match p.extension().and_then(|e| e.to_str()) {
        Some("npy" | "jsonl") => Ok(p),
        _ => Err("the name must end in .npy or .jsonl".into()),
    }
}

impl Args {
    fn precision(&self) -> Precision {
        // overrides_with leaves only the last of --int8 / --fp32 set.
        if self.fp32 && !self.int8 {
            Precision::Fp32
        } else {
            Precision::Int8 {
                per_channel: self.per_channel,
                reduce_range: self.reduce_range,
            }
        }
    }
    fn int8_embeddings(&self) -> bool {
        matches!(self.precision(), Precision::Int8 { .. }) && !self.fp32_embeddings
    }
    fn input(&self) -> Option<&Path> {
        self.input.as_deref().filter(|p| *p != Path::new("-"))
    }
}

/// The most text `embed` reads (1 GiB).
const MAX_INPUT_BYTES: u64 = 1 << 30;

/// Lines of UTF-8 text (a final newline does not add an empty text).
fn read_lines(input: Option<&Path>) -> Result<Vec<String>, String> {
    let (reader, name): (Box<dyn Read>, String) = match input {
        Some(p) => (
            Box::new(std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?),
            p.display().to_string(),
        ),
        None => (Box::new(std::io::stdin()), "stdin".to_string()),
    };
    // Read one byte past the cap, so that an endless input (/dev/zero) is an
    // error rather than an out-of-memory.
    let mut bytes = Vec::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!("{name}: more than {MAX_INPUT_BYTES} bytes of text"));
    }
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            String::from_utf8(l.to_vec()).map_err(|_| {
                format!(
                    "{name}: line {} is not valid UTF-8 (convert it first, e.g. iconv -f latin1 -t utf-8)",
                    i + 1
                )
            })
        })
        .collect()
}

fn rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn jsonl(rows: &[Vec<f32>]) -> Vec<u8> {
    let mut s = String::new();
    for r in rows {
        s.push('[');
        for (i, v) in r.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            // Shortest round-trip form of the f32.
            s.push_str(&format!("{v:?}"));
        }
        s.push_str("]\n");
    }
    s.into_bytes()
}

pub fn run(o: Args) -> Res {
    rquant_nn::engines::init();
    if let Some(e) = &o.engine {
        registry::set_engine(e)?;
    }
    if let Some(t) = o.threads {
        registry::set_num_threads(t);
    }
    let threads = registry::num_threads();
    if let Some(p) = &o.out {
        check_output(p)?;
    }
    let texts = read_lines(o.input())?;
    // Texts run in parallel, one per thread (a text's ops then run on its
    // thread); a lone text's ops use every thread.

    let rss0 = rss_mb();
    let t0 = Instant::now();
    let engine = registry::engine()?;
    let enc = SentenceEncoder::from_dir_with(
        &o.model_dir,
        o.precision(),
        o.int8_embeddings(),
        Some(&engine),
    )?;
    let load = t0.elapsed().as_secs_f64();
    let rss1 = rss_mb();

    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens: usize = refs
        .iter()
        .map(|t| enc.tokenize(t).map(|s| s.0.len()))
        .sum::<Result<usize, _>>()?;
    let t1 = Instant::now();
    let rows = enc.embed_each(&refs)?;
    let secs = t1.elapsed().as_secs_f64();

    let dim = enc.bert.config.hidden_size;
    match &o.out {
        Some(p) if p.extension().and_then(|e| e.to_str()) == Some("npy") => {
            let flat: Vec<f32> = rows.iter().flatten().copied().collect();
            write_atomic(p, &npy_f32(&[rows.len(), dim], &flat))?
        }
        Some(p) => write_atomic(p, &jsonl(&rows))?,
        None => std::io::stdout().write_all(&jsonl(&rows))?,
    }
    let mode = match o.precision() {
        Precision::Fp32 => "fp32".to_string(),
        Precision::Int8 {
            per_channel,
            reduce_range,
        } => format!(
            "int8 {}{}{} on {} ({})",
            if per_channel {
                "per-channel"
            } else {
                "per-tensor"
            },
            if reduce_range { ", reduce_range" } else { "" },
            if o.int8_embeddings() {
                ", quint8 embeddings"
            } else {
                ", fp32 embeddings"
            },
            engine.name(),
            engine.isa()
        ),
    };
    let (nl, _) = enc.bert.linear_weight_bytes();
    let (held, f32) = (enc.bert.weight_bytes(), enc.bert.fp32_bytes());
    let mb = |b: usize| b as f64 / 1e6;
    eprintln!(
        "embedded {} texts ({tokens} tokens) in {secs:.3} s: {:.1} texts/s, {:.0} tokens/s [{mode}, {threads} threads; load {load:.2} s]",
        rows.len(),
        rows.len() as f64 / secs,
        tokens as f64 / secs,
    );
    if let (Some(a), Some(b)) = (rss0, rss1) {
        eprintln!(
            "memory: resident {b:.1} MB after loading (+{:.1} MB for the model and tokenizer)",
            b - a,
        );
    }
    eprintln!(
        "model holds {:.2} MB = {:.1}% of fp32 {:.2} MB: {nl} Linear layers {:.2} MB ({:.1}%), embedding tables {:.2} MB ({:.1}%), LayerNorms {:.3} MB",
        mb(held.total()),
        100.0 * held.total() as f64 / f32.total() as f64,
        mb(f32.total()),
        mb(held.linear),
        100.0 * held.linear as f64 / f32.linear as f64,
        mb(held.embeddings),
        100.0 * held.embeddings as f64 / f32.embeddings as f64,
        mb(held.layer_norm),
    );
    Ok(())
}
