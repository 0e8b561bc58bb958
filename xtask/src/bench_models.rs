//! `cargo xtask bench --models`: whole models, fp32 and static int8, as a
//! user runs them (float in, float out: quantize and dequantize included),
//! JSON records `{"op": "model", "shape": {"model", "batch"}, "variant":
//! "fp32"|"int8", "engine", "isa", "threads", "median_s"}` (`median_s` per
//! batch), the same records as tools/bench/torch_models.py writes for
//! PyTorch, so tools/bench/compare.py joins them.
//!
//! Models: the demo's MNIST CNN (pretrained, calibrated on the 1000
//! committed training images in batches of 100, timed on test images, batch
//! 1 and 100), torchvision's quantizable ResNet-18 and MobileNetV2 (224²,
//! batch 1 and 8) and, with `--zoo`, the rest of `rquant_models::vision`;
//! zoo models use the seeded weights (tools/vision/README.md), `fuse_model`,
//! the x86 qconfig, calibration on the four seeded calibration batches and
//! the seeded input of seed 7 for timing, as torch_models.py.
//!
//! `--per-layer` times every int8 conv of ResNet-18 and MobileNetV2 at batch
//! 8 alone on its captured input (records `{"op": "conv_layer", …}` as
//! torch_models.py's); `--profile` wraps every module of the int8 models in a
//! timing hook and prints where a forward's time goes, by op kind.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rquant_core::qconfig::get_default_qconfig;
use rquant_core::{BinaryOp, Engine, Tensor};
use rquant_models::{seeded, vision};
use rquant_nn::quantized::QConv2d;
use rquant_nn::{convert_with, fuse_modules, mnist, prepare, Layer, Module, QConfigMap, Value};
use serde_json::json;

/// The default models, and the ones `--per-layer` and `--profile` look at.
pub const DEFAULT_MODELS: &[&str] = &["mnist_cnn", "resnet18", "mobilenet_v2"];
pub const LAYER_MODELS: &[&str] = &["resnet18", "mobilenet_v2"];

/// A model to time: its fp32 and int8 forms and its inputs.
pub struct ModelCase {
    pub name: String,
    pub batches: Vec<usize>,
    pub fp32: Module,
    pub int8: Module,
    pub input: Box<dyn Fn(usize) -> Tensor + Send + Sync>,
}

type Res<T> = Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The demo's MNIST CNN: fp32, and static int8 exactly as the demo makes it.
pub fn mnist_case(engine: &Engine) -> Res<ModelCase> {
    let fp32 = mnist::pretrained(&mnist::committed_weights()).map_err(err)?;
    let mut q = fp32.clone();
    q.train(false);
    fuse_modules(&mut q, &mnist::FUSE_GROUPS).map_err(err)?;
    prepare(
        &mut q,
        &QConfigMap::global(get_default_qconfig("x86").map_err(err)?),
    )
    .map_err(err)?;
    let calib = mnist::Dataset::load(&mnist::committed_dir(), "train", Some(1000)).map_err(err)?;
    for s in (0..1000).step_by(100) {
        q.forward(Value::F(calib.batch(s, s + 100, mnist::MEAN, mnist::STD)))
            .map_err(err)?;
    }
    convert_with(&mut q, engine).map_err(err)?;
    let test = mnist::Dataset::load(&mnist::committed_dir(), "t10k", Some(100)).map_err(err)?;
    Ok(ModelCase {
        name: "mnist_cnn".into(),
        batches: vec![1, 100],
        fp32,
        int8: q,
        input: Box::new(move |b| test.batch(0, b, mnist::MEAN, mnist::STD)),
    })
}

/// A zoo model: seeded weights, fused and calibrated as tools/vision does.
pub fn zoo_case(name: &str, engine: &Engine) -> Res<ModelCase> {
    let mut m = vision::build(name, 1000).map_err(err)?;
    m.load_seeded(0).map_err(err)?;
    m.module.train(false);
    let fp32 = m.module.clone();
    m.fuse_model(false).map_err(err)?;
    prepare(
        &mut m.module,
        &QConfigMap::global(get_default_qconfig("x86").map_err(err)?),
    )
    .map_err(err)?;
    let size = m.input_size;
    for seed in 100..104 {
        let x = Tensor::new([2, 3, size, size], seeded::input([2, 3, size, size], seed))
            .map_err(err)?;
        m.module.forward(Value::F(x)).map_err(err)?;
    }
    convert_with(&mut m.module, engine).map_err(err)?;
    Ok(ModelCase {
        name: name.into(),
        batches: vec![1, 8],
        fp32,
        int8: m.module,
        input: Box::new(move |b| {
            Tensor::new([b, 3, size, size], seeded::input([b, 3, size, size], 7)).expect("shape")
        }),
    })
}

/// Median time of each function, measured round-robin in `rounds` rounds of
/// `budget / rounds` per function (at least `min_runs / rounds` runs each
/// per round; three warm-up runs first), so that a change in the shared
/// machine's load hits every variant alike (torch_models.py's scheme).
pub fn interleaved_medians(
    fns: &mut [&mut dyn FnMut()],
    budget: Duration,
    rounds: usize,
    min_runs: usize,
) -> Vec<f64> {
    let rounds = rounds.max(1);
    let per = min_runs.div_ceil(rounds).max(1);
    let mut samples = vec![Vec::new(); fns.len()];
    for r in 0..rounds {
        for (f, ts) in fns.iter_mut().zip(samples.iter_mut()) {
            for _ in 0..if r == 0 { 3 } else { 1 } {
                f();
            }
            let (end, n0) = (Instant::now() + budget / rounds as u32, ts.len());
            while Instant::now() < end || ts.len() - n0 < per {
                let t = Instant::now();
                f();
                ts.push(t.elapsed().as_secs_f64());
            }
        }
    }
    samples
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

fn run(m: &mut Module, x: &Tensor) {
    std::hint::black_box(m.forward(Value::F(x.clone())).expect("forward"));
}

/// fp32 and int8 of one case at every batch size: one record per variant.
pub fn time_case(
    case: &mut ModelCase,
    engine: &Engine,
    threads: usize,
    budget: Duration,
    rounds: usize,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for &b in &case.batches.clone() {
        let x = (case.input)(b);
        let (fp32, int8) = (&mut case.fp32, &mut case.int8);
        let mut f32run = || run(fp32, &x);
        let mut i8run = || run(int8, &x);
        let med = interleaved_medians(&mut [&mut f32run, &mut i8run], budget, rounds, 5);
        for (variant, eng, isa, t) in [
            ("fp32", "fp32", "sgemm", med[0]),
            ("int8", engine.name(), engine.isa(), med[1]),
        ] {
            out.push(json!({
                "op": "model", "shape": {"model": case.name, "batch": b}, "variant": variant,
                "engine": eng, "isa": isa, "threads": threads, "median_s": t,
            }));
        }
    }
    out
}

/// For each (model, batch, variant): the median over rounds of each thread
/// count's median time, and the speed-up of every count over the first.
pub fn print_thread_scaling(records: &[serde_json::Value], counts: &[usize]) {
    let mut keys: Vec<(String, u64, String)> = Vec::new();
    for r in records.iter().filter(|r| r["op"] == "model") {
        let k = (
            r["shape"]["model"].as_str().unwrap_or("").to_string(),
            r["shape"]["batch"].as_u64().unwrap_or(1),
            r["variant"].as_str().unwrap_or("").to_string(),
        );
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    println!("thread scaling (median over rounds of each run's median, ms/img; speed-up over {} thread):", counts[0]);
    for (model, b, variant) in keys {
        let med = |nt: usize| {
            let mut v: Vec<f64> = records
                .iter()
                .filter(|r| {
                    r["shape"]["model"] == model.as_str()
                        && r["shape"]["batch"] == b
                        && r["variant"] == variant.as_str()
                        && r["threads"] == nt
                })
                .filter_map(|r| r["median_s"].as_f64())
                .collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).map(|t| t * 1e3 / b as f64)
        };
        let base = med(counts[0]);
        let mut line = format!("  {model:<18} b={b:<4} {variant:<5}");
        for &nt in counts {
            if let (Some(t), Some(t0)) = (med(nt), base) {
                line += &format!("  thr={nt} {t:>9.3} ms/img ({:.2}x)", t0 / t);
            }
        }
        println!("{line}");
    }
}

// ---------------------------------------------------------------- hooks

/// A timing / capturing hook around one module: forwards (and
/// FloatFunctional ops) run the wrapped module; the wall time is added to
/// `times[path]` and, when `capture` is set, the input is kept.
#[derive(Debug, Clone)]
pub struct Hook {
    pub inner: Module,
    pub path: String,
    pub times: Arc<Mutex<BTreeMap<String, (f64, usize)>>>,
    pub captured: Arc<Mutex<Vec<(String, Value)>>>,
    pub capture: bool,
}

impl Layer for Hook {
    fn type_name(&self) -> String {
        self.inner.type_name()
    }
    fn forward(&mut self, x: Value) -> rquant_nn::Result<Value> {
        if self.capture {
            self.captured
                .lock()
                .expect("lock")
                .push((self.path.clone(), x.clone()));
        }
        let inner = &mut self.inner;
        let t = Instant::now();
        let y = inner.forward(x);
        self.add(t);
        y
    }
    fn binary(&mut self, op: BinaryOp, a: Value, b: Value) -> rquant_nn::Result<Value> {
        let inner = &mut self.inner;
        let t = Instant::now();
        let y = inner.layer_mut().binary(op, a, b);
        self.add(t);
        y
    }
    fn cat(&mut self, xs: Vec<Value>, dim: usize) -> rquant_nn::Result<Value> {
        let inner = &mut self.inner;
        let t = Instant::now();
        let y = inner.layer_mut().cat(xs, dim);
        self.add(t);
        y
    }
}

impl Hook {
    /// Add the time since `t` to this module's entry.
    fn add(&self, t: Instant) {
        let dt = t.elapsed().as_secs_f64();
        let mut g = self.times.lock().expect("lock");
        let e = g.entry(self.path.clone()).or_insert((0.0, 0));
        e.0 += dt;
        e.1 += 1;
    }
}

/// Wrap every leaf module whose path `want` accepts in a [`Hook`]; returns
/// the shared time table and capture list.
#[allow(clippy::type_complexity)]
pub fn hook_leaves(
    m: &mut Module,
    capture: bool,
    want: impl Fn(&str, &Module) -> bool,
) -> (
    Arc<Mutex<BTreeMap<String, (f64, usize)>>>,
    Arc<Mutex<Vec<(String, Value)>>>,
) {
    let times = Arc::new(Mutex::new(BTreeMap::new()));
    let captured = Arc::new(Mutex::new(Vec::new()));
    let paths: Vec<String> = m
        .named_modules()
        .into_iter()
        .filter(|(p, x)| !p.is_empty() && x.children().is_empty() && want(p, x))
        .map(|(p, _)| p)
        .collect();
    for p in paths {
        let slot = m.get_mut(&p).expect("path");
        let inner = std::mem::replace(slot, Module::identity());
        *slot = Hook {
            inner,
            path: p,
            times: times.clone(),
            captured: captured.clone(),
            capture,
        }
        .into();
    }
    (times, captured)
}

/// The op kind of a converted model's leaf, for the profile.
pub fn op_kind(m: &Module) -> String {
    if let Some(c) = m.downcast_ref::<QConv2d>() {
        let s = c.packed.weight_shape().to_vec();
        let p = c.packed.params();
        let (o, ig, kh, kw) = (s[0], s[1], s[2], s[3]);
        let kind = if p.groups > 1 && ig == 1 && p.groups == o {
            "depthwise"
        } else if p.groups > 1 {
            "grouped"
        } else {
            "dense"
        };
        return format!("conv {kh}x{kw} {kind} s{}", p.stride[0]);
    }
    m.type_name()
}

/// Every int8 conv of `case` at batch `b`, alone on its captured input:
/// `conv_layer` records as torch_models.py's `--per-layer`.
pub fn conv_layers(
    case: &ModelCase,
    b: usize,
    engine: &Engine,
    threads: usize,
    budget: Duration,
) -> Vec<serde_json::Value> {
    let mut m = case.int8.clone();
    let (_, captured) = hook_leaves(&mut m, true, |_, x| x.is::<QConv2d>());
    run(&mut m, &(case.input)(b));
    let captured = captured.lock().expect("lock").clone();
    let mut out = Vec::new();
    for (path, x) in captured {
        let Value::Q(xq) = x else { continue };
        let c = case
            .int8
            .get(&path)
            .and_then(|m| m.downcast_ref::<QConv2d>())
            .expect("a quantized conv");
        let s = c.packed.weight_shape().to_vec();
        let p = c.packed.params();
        let (cin, h, w) = (xq.shape()[1], xq.shape()[2], xq.shape()[3]);
        let y = c
            .engine
            .conv2d(&xq, &c.packed, c.scale, c.zero_point, c.relu)
            .expect("conv");
        let macs = b * s[0] * y.shape()[2] * y.shape()[3] * s[1] * s[2] * s[3];
        let mut f = || {
            std::hint::black_box(
                c.engine
                    .conv2d(&xq, &c.packed, c.scale, c.zero_point, c.relu)
                    .expect("conv"),
            );
        };
        let t = interleaved_medians(&mut [&mut f], budget, 1, 5)[0];
        out.push(json!({
            "op": "conv_layer",
            "shape": {"model": case.name, "batch": b, "layer": path, "C_in": cin, "C_out": s[0],
                      "k": s[2], "stride": p.stride[0], "groups": p.groups, "H": h, "W": w},
            "variant": "int8", "engine": engine.name(), "isa": engine.isa(), "threads": threads,
            "median_s": t, "macs": macs, "gops": 2.0 * macs as f64 / t / 1e9,
        }));
    }
    out
}

/// Where one int8 forward's time goes: every leaf timed by a hook over
/// `runs` forwards; returns (op kind, seconds per forward, calls per
/// forward) sorted by time, and the whole forward's time.
pub fn profile(case: &ModelCase, b: usize, runs: usize) -> (Vec<(String, f64, usize)>, f64) {
    let mut m = case.int8.clone();
    let kinds: BTreeMap<String, String> = m
        .named_modules()
        .into_iter()
        .map(|(p, x)| (p, op_kind(x)))
        .collect();
    let (times, _) = hook_leaves(&mut m, false, |_, _| true);
    let x = (case.input)(b);
    run(&mut m, &x); // warm-up
    times.lock().expect("lock").clear();
    let t = Instant::now();
    for _ in 0..runs {
        run(&mut m, &x);
    }
    let total = t.elapsed().as_secs_f64() / runs as f64;
    let mut by: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (p, (s, n)) in times.lock().expect("lock").iter() {
        let e = by.entry(kinds[p].clone()).or_insert((0.0, 0));
        e.0 += s / runs as f64;
        e.1 += n / runs;
    }
    let mut v: Vec<(String, f64, usize)> = by.into_iter().map(|(k, (s, n))| (k, s, n)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    (v, total)
}
