//! `rquant qat --dataset fashion-mnist --data DIR`: train the MNIST CNN from
//! scratch on Fashion-MNIST (fp32), then static PTQ, then QAT, and report the
//! three accuracies (PyTorch's recipe: Adam 1e-3, batch 128, x86 qconfigs).

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rquant_core::qconfig::{get_default_qat_qconfig, get_default_qconfig};
use rquant_core::registry;
use rquant_nn::mnist::{self, Dataset};

use crate::files::load_28x28;
use rquant_nn::train::Adam;
use rquant_nn::{convert, fuse_modules, prepare, prepare_qat, Module, QConfigMap};

type Res = Result<(), Box<dyn std::error::Error>>;

const MEAN: f32 = 0.2860;
const STD: f32 = 0.3530;
const BATCH: usize = 128;

fn bar(len: u64, msg: &'static str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {pos}/{len} images {elapsed} (eta {eta}) {per_sec}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

fn accuracy(m: &mut Module, test: &Dataset) -> Result<f64, Box<dyn std::error::Error>> {
    let logits = mnist::logits_with(m, test, 500, MEAN, STD)?;
    let pred: Vec<usize> = logits
        .iter()
        .flat_map(rquant_nn::train::argmax_rows)
        .collect();
    Ok(mnist::accuracy(&pred, test))
}

/// Options of `rquant qat`.
#[derive(clap::Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct Args {
    /// The dataset (only Fashion-MNIST)
    #[arg(long, value_name = "NAME", default_value = "fashion-mnist",
          value_parser = ["fashion-mnist"])]
    dataset: String,
    /// Directory of the IDX files (plain or .gz), e.g. from Debian's dataset-fashion-mnist
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/usr/share/datasets/fashion-mnist"
    )]
    data: PathBuf,
    /// fp32 training epochs
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = crate::positive)]
    epochs: usize,
    /// Training images for the QAT fine-tune
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = crate::positive)]
    qat_images: usize,
    /// Use only the first N training images
    #[arg(long, value_name = "N", value_parser = crate::positive)]
    train_limit: Option<usize>,
}

pub fn run(args: Args) -> Res {
    let Args {
        data: dir,
        epochs,
        qat_images,
        train_limit: limit,
        ..
    } = args;
    rquant_nn::engines::init();
    let engine = registry::engine()?;
    let train = load_28x28(&dir, "train", limit)?;
    let test = load_28x28(&dir, "t10k", None)?;
    say!(
        "Fashion-MNIST from {}: {} training, {} test images; engine {}/{}",
        dir.display(),
        train.len(),
        test.len(),
        engine.name(),
        engine.isa()
    );

    // 1. fp32 from scratch (seeded initialisation).
    let mut m = mnist::model();
    m.train(true);
    let mut opt = Adam::new(1e-3);
    let t = Instant::now();
    for epoch in 0..epochs {
        let pb = bar(train.len() as u64, "fp32");
        let data = train.shuffled(1000 + epoch as u64);
        let loss = mnist::train_epoch(
            &mut m,
            &data,
            0..data.len(),
            BATCH,
            MEAN,
            STD,
            &mut opt,
            &mut |n| pb.inc(n as u64),
        )?;
        pb.finish_and_clear();
        say!("epoch {}: mean loss {loss:.4}", epoch + 1);
    }
    let train_s = t.elapsed().as_secs_f64();
    m.train(false);
    let fp32 = accuracy(&mut m, &test)?;
    say!(
        "fp32: accuracy {fp32:.4} after {epochs} epoch(s), {train_s:.1} s ({:.0} images/s)",
        (epochs * train.len()) as f64 / train_s
    );

    // 2. static PTQ, per-channel x86 qconfig, 1000 calibration images.
    let mut fused = m.clone();
    fuse_modules(&mut fused, &mnist::FUSE_GROUPS)?;
    let mut ptq = fused.clone();
    prepare(&mut ptq, &QConfigMap::global(get_default_qconfig("x86")?))?;
    let calib = Dataset {
        images: train.images[..1000.min(train.len()) * 784].to_vec(),
        labels: train.labels[..1000.min(train.len())].to_vec(),
        rows: 28,
        cols: 28,
    };
    mnist::calibrate_with(&mut ptq, &calib, 100, MEAN, STD, &mut |_| {})?;
    convert(&mut ptq)?;
    let ptq_acc = accuracy(&mut ptq, &test)?;
    say!("static PTQ int8 (per-channel, 1000 calibration images): accuracy {ptq_acc:.4}");

    // 3. QAT fine-tune on qat_images more images at lr 1e-4, then convert.
    let mut q = fused.clone();
    q.train(true);
    prepare_qat(&mut q, &QConfigMap::global(get_default_qat_qconfig("x86")?))?;
    let mut opt = Adam::new(1e-4);
    let n = qat_images.min(train.len());
    let pb = bar(n as u64, "QAT");
    let t = Instant::now();
    let data = train.shuffled(2000);
    mnist::train_epoch(&mut q, &data, 0..n, BATCH, MEAN, STD, &mut opt, &mut |k| {
        pb.inc(k as u64)
    })?;
    pb.finish_and_clear();
    let qat_s = t.elapsed().as_secs_f64();
    q.train(false);
    convert(&mut q)?;
    let qat_acc = accuracy(&mut q, &test)?;
    say!("QAT int8 ({n} images, {qat_s:.1} s): accuracy {qat_acc:.4}");
    say!(
        "\n{:<24} {:>9}\n{:<24} {:>9.4}\n{:<24} {:>9.4}\n{:<24} {:>9.4}",
        "variant",
        "accuracy",
        "fp32",
        fp32,
        "static PTQ int8",
        ptq_acc,
        "QAT int8",
        qat_acc
    );
    Ok(())
}
