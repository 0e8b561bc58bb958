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

pub const HELP: &str =
    "usage: rquant embed --model-dir DIR [--int8 | --fp32] [--per-channel] [--reduce-range]\n\
       [--engine NAME] [--threads N] [--out PATH.npy|PATH.jsonl] [FILE]\n\
\n\
Texts are read one per line (UTF-8) from FILE or stdin; embeddings are written\n\
in input order to --out (.npy: float32 [n, dim]; .jsonl: one array per line)\n\
or as JSON lines to stdout. --int8 (default) quantizes every Linear to qint8\n\
(per-tensor, or --per-channel) with dynamic quint8 activations over the full\n\
0..255 range (--reduce-range: 0..127, PyTorch's x86 default). Throughput on stderr.\n";

struct Opts {
    model_dir: PathBuf,
    precision: Precision,
    engine: Option<String>,
    threads: Option<usize>,
    out: Option<PathBuf>,
    input: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut model_dir = None;
    let (mut int8, mut per_channel, mut reduce_range) = (true, false, false);
    let (mut engine, mut threads, mut out, mut input) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--model-dir" => model_dir = Some(PathBuf::from(val(a)?)),
            "--int8" => int8 = true,
            "--fp32" => int8 = false,
            "--per-channel" => per_channel = true,
            "--reduce-range" => reduce_range = true,
            "--engine" => engine = Some(val(a)?),
            "--threads" => {
                let v = val(a)?;
                threads = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("--threads {v}: expected a positive integer"))?,
                )
            }
            "--out" => out = Some(PathBuf::from(val(a)?)),
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') && s != "-" => return Err(format!("unknown option {s}")),
            s => {
                if input.is_some() {
                    return Err(format!("more than one input file ({s})"));
                }
                if s != "-" {
                    input = Some(PathBuf::from(s));
                }
            }
        }
    }
    let model_dir = model_dir.ok_or("--model-dir DIR is required")?;
    if !int8 && (per_channel || reduce_range) {
        return Err("--per-channel and --reduce-range apply to --int8 only".into());
    }
    if let Some(o) = &out {
        match o.extension().and_then(|e| e.to_str()) {
            Some("npy" | "jsonl") => {}
            _ => {
                return Err(format!(
                    "--out {}: the name must end in .npy or .jsonl",
                    o.display()
                ))
            }
        }
    }
    Ok(Opts {
        model_dir,
        precision: if int8 {
            Precision::Int8 {
                per_channel,
                reduce_range,
            }
        } else {
            Precision::Fp32
        },
        engine,
        threads,
        out,
        input,
    })
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

pub fn run(args: &[String]) -> Res {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            say_raw!("{HELP}");
            return Ok(());
        }
        Err(e) => return Err(format!("embed: {e} (rquant embed --help)").into()),
    };
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
    let texts = read_lines(o.input.as_deref())?;
    // Texts run in parallel, one per thread (a text's ops then run on its
    // thread); a lone text's ops use every thread.

    let rss0 = rss_mb();
    let t0 = Instant::now();
    let engine = registry::engine()?;
    let enc = SentenceEncoder::from_dir(&o.model_dir, o.precision, Some(&engine))?;
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
    let mode = match o.precision {
        Precision::Fp32 => "fp32".to_string(),
        Precision::Int8 {
            per_channel,
            reduce_range,
        } => format!(
            "int8 {}{} on {} ({})",
            if per_channel {
                "per-channel"
            } else {
                "per-tensor"
            },
            if reduce_range { ", reduce_range" } else { "" },
            engine.name(),
            engine.isa()
        ),
    };
    let (nl, lb) = enc.bert.linear_weight_bytes();
    eprintln!(
        "embedded {} texts ({tokens} tokens) in {secs:.3} s: {:.1} texts/s, {:.0} tokens/s [{mode}, {threads} threads; load {load:.2} s]",
        rows.len(),
        rows.len() as f64 / secs,
        tokens as f64 / secs,
    );
    if let (Some(a), Some(b)) = (rss0, rss1) {
        eprintln!(
            "memory: resident {b:.1} MB (+{:.1} MB for the model); {nl} Linear layers hold {:.1} MB of weights",
            b - a,
            lb as f64 / 1e6
        );
    }
    Ok(())
}
