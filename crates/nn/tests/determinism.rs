//! Determinism of the demo model (the pretrained MNIST CNN, static PTQ
//! per-channel and dynamic int8) on real MNIST test images: the same output
//! bits on every engine and every x86 ISA path, for 1, 2, 3 and 5 engine
//! threads, calibrated under 1 or 5 threads, converted afresh, run twice.
//!
//! The thread count is a process-wide setting, so everything runs in this
//! one test function (and this file holds no other test).

use rquant_core::qconfig::{default_dynamic_qconfig, get_default_qconfig};
use rquant_core::{registry, Engine};
use rquant_nn::mnist::{self, Dataset};
use rquant_nn::{
    convert_with, fuse_modules, prepare, quantize_dynamic_with, DynamicDType, DynamicType, Module,
    QConfigMap, Value,
};

const THREADS: [usize; 4] = [1, 2, 3, 5];
/// An odd batch, so work splits unevenly over the threads.
const IMAGES: usize = 21;

fn bits(m: &mut Module, x: &rquant_core::Tensor) -> Vec<u32> {
    let y = m.forward(Value::F(x.clone())).unwrap().to_float();
    y.data().iter().map(|v| v.to_bits()).collect()
}

/// Fused, observed on 200 training images with `threads` engine threads.
fn calibrated(fp32: &Module, calib: &Dataset, threads: usize) -> Module {
    registry::set_num_threads(threads);
    let mut m = fp32.clone();
    fuse_modules(&mut m, &mnist::FUSE_GROUPS).unwrap();
    prepare(
        &mut m,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    mnist::calibrate(&mut m, calib, 50, &mut |_| {}).unwrap();
    m
}

fn convert(observed: &Module, variant: &str, fp32: &Module, e: &Engine) -> Module {
    match variant {
        "static" => {
            let mut q = observed.clone();
            convert_with(&mut q, e).unwrap();
            q
        }
        _ => {
            let mut d = fp32.clone();
            quantize_dynamic_with(
                &mut d,
                &[DynamicType::Linear],
                DynamicDType::QInt8,
                &default_dynamic_qconfig(),
                e,
            )
            .unwrap();
            d
        }
    }
}

#[test]
fn demo_model_same_bits_on_every_engine_path_and_thread_count() {
    rquant_nn::engines::init();
    let test = Dataset::load(&mnist::committed_dir(), "t10k", Some(IMAGES)).unwrap();
    let calib = Dataset::load(&mnist::committed_dir(), "train", Some(200)).unwrap();
    let x = test.batch(0, test.len(), mnist::MEAN, mnist::STD);
    let mut fp32 = mnist::pretrained(&mnist::committed_weights()).unwrap();
    fp32.train(false);

    // Every engine path: each x86 ISA this CPU has, any ARM path, the
    // reference engine. Every registered engine must be among them.
    let paths = rquant_nn::engines::all_paths();
    let reference = paths
        .iter()
        .find(|e| e.name() == "reference")
        .expect("the reference engine")
        .clone();
    for name in registry::supported_engines() {
        assert!(
            paths.iter().any(|e| e.name() == name),
            "registered engine {name} has no path here"
        );
    }
    assert!(
        paths.len() >= 2,
        "only {} engine path(s) to compare: {:?}",
        paths.len(),
        paths.iter().map(|e| e.isa()).collect::<Vec<_>>()
    );

    // Calibration under 1 and 5 threads observes the same qparams.
    let observed = calibrated(&fp32, &calib, 1);
    let observed5 = calibrated(&fp32, &calib, 5);
    registry::set_num_threads(1);
    registry::set_engine(reference.name()).unwrap();
    let want_static = bits(&mut convert(&observed, "static", &fp32, &reference), &x);
    let want_dynamic = bits(&mut convert(&observed, "dynamic", &fp32, &reference), &x);
    assert_eq!(
        bits(&mut convert(&observed5, "static", &fp32, &reference), &x),
        want_static,
        "calibrated under 5 threads"
    );
    assert!(want_static.iter().any(|&b| b != 0));

    let mut runs = 0;
    for e in &paths {
        registry::set_engine(e.name()).unwrap();
        for (variant, want) in [("static", &want_static), ("dynamic", &want_dynamic)] {
            // Converted afresh for each run.
            for run in 0..2 {
                let mut m = convert(&observed, variant, &fp32, e);
                for t in THREADS {
                    registry::set_num_threads(t);
                    assert!(
                        bits(&mut m, &x) == *want,
                        "{variant} on {}/{} with {t} threads (run {run}) differs from reference/1 thread",
                        e.name(),
                        e.isa()
                    );
                    runs += 1;
                }
            }
        }
    }
    registry::set_num_threads(0);
    // Engine worker threads that exist now (Linux): evidence that the
    // thread counts took effect.
    let workers = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter(|t| {
                t.as_ref().is_ok_and(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("rquant-"))
                })
            })
            .count()
        })
        .unwrap_or(0);
    eprintln!(
        "{runs} runs identical ({workers} engine worker threads seen) on {} engine paths ({})",
        paths.len(),
        paths
            .iter()
            .map(|e| format!("{}/{}", e.name(), e.isa()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
