//! Next-character top-1 of textgenrnn's char-LSTM on a Latin-1 text.
//!
//! cargo run --release -p rquant-models --example charlstm -- \
//!     [--int8] [--per-channel] [--reduce-range] [--threads N] [--chars N] [--batch N] [--engine NAME] \
//!     data/textgenrnn/textgenrnn.safetensors data/textgenrnn/textgenrnn_vocab.json lee.cor

use std::time::Instant;

use rquant_core::registry;
use rquant_models::bert::Precision;
use rquant_models::charlstm::{evaluate, load_vocab, CharLstm};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |f: &str| {
        let p = args.iter().position(|a| a == f);
        p.map(|i| args.remove(i)).is_some()
    };
    let (int8, per_channel, reduce_range) = (
        flag("--int8"),
        flag("--per-channel"),
        flag("--reduce-range"),
    );
    let mut value = |f: &str| -> Option<String> {
        let i = args.iter().position(|a| a == f)?;
        args.remove(i);
        (i < args.len()).then(|| args.remove(i))
    };
    let threads: usize = value("--threads").map_or(Ok(2), |v| v.parse())?;
    let chars: usize = value("--chars").map_or(Ok(20_000), |v| v.parse())?;
    let batch: usize = value("--batch").map_or(Ok(100), |v| v.parse())?;
    let engine_name = value("--engine");
    let [model, vocab, text] = <[String; 3]>::try_from(args)
        .map_err(|_| "usage: charlstm [flags] MODEL.safetensors VOCAB.json TEXT")?;
    rquant_nn::engines::init();
    if let Some(e) = engine_name {
        registry::set_engine(&e)?;
    }
    // Batches run in parallel, one per thread (a batch's ops then run on its thread).
    registry::set_num_threads(threads);
    let engine = registry::engine()?;
    let precision = if int8 {
        Precision::Int8 {
            per_channel,
            reduce_range,
        }
    } else {
        Precision::Fp32
    };
    let m = CharLstm::load(&model, precision, &engine)?;
    let vocab = load_vocab(&vocab)?;
    // Latin-1: each byte is the code point.
    let bytes = std::fs::read(&text).map_err(|e| format!("{text}: {e}"))?;
    let ids: Vec<u32> = bytes
        .iter()
        .take(chars)
        .map(|&b| vocab.get(&(b as char)).copied().unwrap_or(0))
        .collect();
    let t0 = Instant::now();
    let r = evaluate(&m, &ids, batch.max(1))?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{{\"variant\": \"{}\", \"top1\": {:.4}, \"ce\": {:.4}, \"chars\": {}, \"threads\": {threads}, \"seconds\": {secs:.3}}}",
        match precision {
            Precision::Fp32 => "fp32".to_string(),
            Precision::Int8 { per_channel, reduce_range } => format!(
                "int8{}{} {}",
                if per_channel { " per-channel" } else { "" },
                if reduce_range { " reduce_range" } else { "" },
                engine.name()
            ),
        },
        r.top1,
        r.cross_entropy,
        r.chars
    );
    Ok(())
}
