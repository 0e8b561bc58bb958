//! The demo's MNIST CNN (pretrained weights, fused, static PTQ with the x86
//! per-channel qconfig, converted on the default engine), timed forward at
//! batch 100 and batch 1: ms per image, median over `--reps` passes, for the
//! thread count in `RQUANT_NUM_THREADS` (or `--threads N`). One line per
//! (variant, batch) with `/proc/loadavg` beside it, so alternated runs of
//! this process at 1 and 2 threads can be compared:
//!
//! ```text
//! for i in 1 2 3 4 5; do for t in 1 2; do
//!   RQUANT_NUM_THREADS=$t cargo run -q --release -p rquant-benches --example mnist_threads
//! done; done
//! ```
//!
//! `--fp32` also times the float model (the float path's threads follow
//! `RQUANT_NUM_THREADS` too).

use std::time::Instant;

use rquant_core::{qconfig::get_default_qconfig, registry, Tensor};
use rquant_nn::mnist::{self, Dataset};
use rquant_nn::{convert, fuse_modules, prepare, Module, QConfigMap, Value};

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "-".into())
}

fn batches(ds: &Dataset, batch: usize, images: usize) -> Vec<Tensor> {
    (0..images.min(ds.len()))
        .step_by(batch)
        .map(|s| ds.batch(s, (s + batch).min(images), mnist::MEAN, mnist::STD))
        .collect()
}

/// Median ms per image of `reps` passes over `xs`.
fn time(m: &mut Module, xs: &[Tensor], reps: usize) -> f64 {
    let images: usize = xs.iter().map(|x| x.shape()[0]).sum();
    for x in xs.iter().take(3) {
        m.forward(Value::F(x.clone())).unwrap();
    }
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            for x in xs {
                std::hint::black_box(m.forward(Value::F(x.clone())).unwrap());
            }
            t0.elapsed().as_secs_f64() * 1e3 / images as f64
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<usize>())
            .transpose()
    };
    let reps = value("--reps")?.unwrap_or(9);
    if let Some(t) = value("--threads")? {
        registry::set_num_threads(t);
    }
    let fp32_too = args.iter().any(|a| a == "--fp32");
    rquant_nn::engines::init();
    let engine = registry::engine()?;
    let dir = mnist::committed_dir();
    let test = Dataset::load(&dir, "t10k", Some(1000))?;
    let calib = Dataset::load(&dir, "train", Some(200))?;

    let mut fp32 = mnist::pretrained(&mnist::committed_weights())?;
    fp32.train(false);
    let mut q = fp32.clone();
    fuse_modules(&mut q, &mnist::FUSE_GROUPS)?;
    prepare(&mut q, &QConfigMap::global(get_default_qconfig("x86")?))?;
    mnist::calibrate(&mut q, &calib, 100, &mut |_| {})?;
    convert(&mut q)?;

    let threads = registry::num_threads();
    let b100 = batches(&test, 100, 1000);
    let b1 = batches(&test, 1, 200);
    let mut models: Vec<(&str, &mut Module)> = vec![("int8", &mut q)];
    if fp32_too {
        models.push(("fp32", &mut fp32));
    }
    for (variant, m) in models {
        for (batch, xs) in [(100, &b100), (1, &b1)] {
            let ms = time(m, xs, reps);
            println!(
                "mnist_cnn {variant} engine={}/{} batch={batch:<3} threads={threads} ms/img={ms:.4} loadavg={}",
                engine.name(),
                engine.isa(),
                loadavg()
            );
        }
    }
    Ok(())
}
