//! Per-layer conv timing on the shapes of torchvision's quantized ResNet-18
//! and MobileNetV2 at batch 8 (224×224), channels-last activations (as
//! rquant's quantized CNNs run them), on the best x86 path: median ms per
//! batch, GOP/s (2 × multiply-accumulates), % of the path's register-only
//! int8 peak, and, given PyTorch's per-layer records
//! (`tools/bench/torch_models.py --per-layer`), PyTorch's x86 and fbgemm
//! engines on the same layer and the speed ratios.
//!
//! ```text
//! cargo run --release -p rquant-x86 --example conv_layers -- \
//!     [--torch tools/bench/results/torch_layers_b8_t1.json] [--model resnet18|mobilenet_v2|all]
//!     [--threads N] [--batch B] [--budget SECONDS] [--rounds R] [--fused] [--filter SUBSTR|=NAME]
//! ```
//! Times are wall-clock medians (examples hold no `unsafe`, so no
//! thread-CPU clock; this machine's /proc schedstat reads zero).
//! `--fused` also times `conv2d_add` (the conv with torchvision's residual
//! `add_relu` fused) on the layers whose output feeds it. Layers are timed
//! round-robin in `--rounds` rounds so that a change of the shared machine's
//! load hits all of them alike; the load average is printed before and after.

use std::collections::HashMap;
use std::time::Instant;

use rquant_core::{
    quantize_per_channel, Conv2dParams, Engine, MemoryFormat, QParams, QTensor, Tensor,
};

/// (layer, C, O, H=W input, k, stride, groups)
type Layer = (&'static str, usize, usize, usize, usize, usize, usize);

const RESNET18: &[Layer] = &[
    ("conv1", 3, 64, 224, 7, 2, 1),
    ("layer1.0.conv1", 64, 64, 56, 3, 1, 1),
    ("layer1.0.conv2", 64, 64, 56, 3, 1, 1),
    ("layer2.0.conv1", 64, 128, 56, 3, 2, 1),
    ("layer2.0.conv2", 128, 128, 28, 3, 1, 1),
    ("layer2.0.downsample.0", 64, 128, 56, 1, 2, 1),
    ("layer3.0.conv1", 128, 256, 28, 3, 2, 1),
    ("layer3.0.conv2", 256, 256, 14, 3, 1, 1),
    ("layer3.0.downsample.0", 128, 256, 28, 1, 2, 1),
    ("layer4.0.conv1", 256, 512, 14, 3, 2, 1),
    ("layer4.0.conv2", 512, 512, 7, 3, 1, 1),
    ("layer4.0.downsample.0", 256, 512, 14, 1, 2, 1),
];

/// Layers whose output feeds a residual `add_relu` (ResNet-18: every block's conv2).
const RESIDUAL: &[&str] = &[
    "layer1.0.conv2",
    "layer2.0.conv2",
    "layer3.0.conv2",
    "layer4.0.conv2",
];

const MOBILENET_V2: &[Layer] = &[
    ("features.0.0", 3, 32, 224, 3, 2, 1),
    ("features.1.conv.0.0", 32, 32, 112, 3, 1, 32),
    ("features.1.conv.1", 32, 16, 112, 1, 1, 1),
    ("features.2.conv.0.0", 16, 96, 112, 1, 1, 1),
    ("features.2.conv.1.0", 96, 96, 112, 3, 2, 96),
    ("features.2.conv.2", 96, 24, 56, 1, 1, 1),
    ("features.3.conv.0.0", 24, 144, 56, 1, 1, 1),
    ("features.3.conv.1.0", 144, 144, 56, 3, 1, 144),
    ("features.3.conv.2", 144, 24, 56, 1, 1, 1),
    ("features.4.conv.1.0", 144, 144, 56, 3, 2, 144),
    ("features.4.conv.2", 144, 32, 28, 1, 1, 1),
    ("features.5.conv.0.0", 32, 192, 28, 1, 1, 1),
    ("features.5.conv.1.0", 192, 192, 28, 3, 1, 192),
    ("features.5.conv.2", 192, 32, 28, 1, 1, 1),
    ("features.7.conv.1.0", 192, 192, 28, 3, 2, 192),
    ("features.7.conv.2", 192, 64, 14, 1, 1, 1),
    ("features.8.conv.0.0", 64, 384, 14, 1, 1, 1),
    ("features.8.conv.1.0", 384, 384, 14, 3, 1, 384),
    ("features.8.conv.2", 384, 64, 14, 1, 1, 1),
    ("features.11.conv.2", 384, 96, 14, 1, 1, 1),
    ("features.12.conv.0.0", 96, 576, 14, 1, 1, 1),
    ("features.12.conv.1.0", 576, 576, 14, 3, 1, 576),
    ("features.12.conv.2", 576, 96, 14, 1, 1, 1),
    ("features.14.conv.1.0", 576, 576, 14, 3, 2, 576),
    ("features.14.conv.2", 576, 160, 7, 1, 1, 1),
    ("features.15.conv.0.0", 160, 960, 7, 1, 1, 1),
    ("features.15.conv.1.0", 960, 960, 7, 3, 1, 960),
    ("features.15.conv.2", 960, 160, 7, 1, 1, 1),
    ("features.17.conv.2", 960, 320, 7, 1, 1, 1),
    ("features.18.0", 320, 1280, 7, 1, 1, 1),
];

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

struct Case {
    model: &'static str,
    layer: Layer,
    fused: bool,
    run: Box<dyn Fn()>,
    macs: f64,
    samples: Vec<f64>,
}

fn case(e: &Engine, model: &'static str, l: Layer, batch: usize, fused: bool) -> Case {
    let (_, c, o, hw, k, stride, groups) = l;
    let x: Vec<u8> = data(batch * c * hw * hw, 4)
        .iter()
        .map(|v| (v.abs() * 255.0) as u8)
        .collect();
    let x = QTensor::from_int_repr(vec![batch, c, hw, hw], x, QParams::per_tensor(0.02, 3))
        .unwrap()
        .into_format(MemoryFormat::ChannelsLast);
    let cg = c / groups;
    let w = Tensor::new([o, cg, k, k], data(o * cg * k * k, 5)).unwrap();
    let wq = quantize_per_channel::<i8>(&w, &vec![1.0 / 127.0; o], &vec![0; o], 0).unwrap();
    let p = Conv2dParams {
        stride: [stride, stride],
        padding: [k / 2, k / 2],
        groups,
        ..Default::default()
    };
    let bias = Some(data(o, 6));
    let packed = e.pack_conv2d(wq, bias, p).unwrap();
    let oh = (hw + 2 * (k / 2) - k) / stride + 1;
    let macs = (batch * o * oh * oh * cg * k * k) as f64;
    let e = e.clone();
    let run: Box<dyn Fn()> = if fused {
        let other = e.conv2d(&x, &packed, 0.05, 120, false).unwrap();
        Box::new(move || {
            std::hint::black_box(
                e.conv2d_add(&x, &packed, (0.05, 120), &other, (0.07, 0), true)
                    .unwrap(),
            );
        })
    } else {
        Box::new(move || {
            std::hint::black_box(e.conv2d(&x, &packed, 0.05, 0, true).unwrap());
        })
    };
    Case {
        model,
        layer: l,
        fused,
        run,
        macs,
        samples: Vec::new(),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// PyTorch's per-layer medians: (model, layer) → (engine → seconds).
fn torch_records(path: &str) -> HashMap<(String, String), HashMap<String, f64>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let rows: serde_json::Value = serde_json::from_str(&text).expect("JSON records");
    let mut m: HashMap<(String, String), HashMap<String, f64>> = HashMap::new();
    for r in rows.as_array().expect("a list of records") {
        if r["op"] != "conv_layer" {
            continue;
        }
        let s = &r["shape"];
        let key = (
            s["model"].as_str().unwrap_or_default().to_string(),
            s["layer"].as_str().unwrap_or_default().to_string(),
        );
        m.entry(key).or_default().insert(
            r["engine"].as_str().unwrap_or_default().to_string(),
            r["median_s"].as_f64().unwrap_or(f64::NAN),
        );
    }
    m
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let threads: usize = opt("--threads").map_or(1, |v| v.parse().expect("--threads N"));
    let batch: usize = opt("--batch").map_or(8, |v| v.parse().expect("--batch B"));
    let budget: f64 = opt("--budget").map_or(1.0, |v| v.parse().expect("--budget S"));
    let rounds: usize = opt("--rounds").map_or(3, |v| v.parse().expect("--rounds R"));
    let model = opt("--model").unwrap_or_else(|| "all".into());
    let filter = opt("--filter").unwrap_or_default();
    let fused = args.iter().any(|a| a == "--fused");
    let torch = opt("--torch").map(|p| torch_records(&p));
    rquant_core::registry::set_num_threads(threads);
    let e = rquant_x86::all_paths()
        .into_iter()
        .next()
        .expect("an x86 path (AVX2 or better)");
    let peak = e.gemm_kernels()[0].peak.map(|f| f()).unwrap_or(f64::NAN);
    let mut cases = Vec::new();
    for (name, layers) in [("resnet18", RESNET18), ("mobilenet_v2", MOBILENET_V2)] {
        if model != "all" && model != name {
            continue;
        }
        for &l in layers {
            // `--filter =NAME` matches one layer exactly.
            let hit = match filter.strip_prefix('=') {
                Some(exact) => l.0 == exact,
                None => l.0.contains(filter.as_str()),
            };
            if !hit {
                continue;
            }
            cases.push(case(&e, name, l, batch, false));
            if fused && RESIDUAL.contains(&l.0) && name == "resnet18" {
                cases.push(case(&e, name, l, batch, true));
            }
        }
    }
    println!(
        "x86/{} {} thread(s), batch {batch}, channels-last; register-only int8 peak {peak:.0} GOP/s; load average before: {}",
        e.isa(),
        threads,
        loadavg()
    );
    for c in &mut cases {
        (c.run)();
        (c.run)();
    }
    for _ in 0..rounds {
        for c in &mut cases {
            let end = Instant::now() + std::time::Duration::from_secs_f64(budget / rounds as f64);
            let mut n = 0;
            while Instant::now() < end || n < 3 {
                let t = Instant::now();
                (c.run)();
                c.samples.push(t.elapsed().as_secs_f64());
                n += 1;
            }
        }
    }
    println!("rquant times: median wall time per batch");
    println!(
        "| model | layer | C→O | k | s | g | H | rquant ms | GOP/s | % peak | PyTorch x86 ms | ratio | fbgemm ms | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for c in &mut cases {
        let (name, ci, o, hw, k, s, g) = c.layer;
        let t = median(&mut c.samples);
        let gops = 2.0 * c.macs / t / 1e9;
        let (tx, tf) = torch
            .as_ref()
            .and_then(|m| m.get(&(c.model.to_string(), name.to_string())))
            .map_or((f64::NAN, f64::NAN), |v| {
                (
                    v.get("torch-x86").copied().unwrap_or(f64::NAN),
                    v.get("torch-fbgemm").copied().unwrap_or(f64::NAN),
                )
            });
        let label = if c.fused {
            format!("{name} + add_relu")
        } else {
            name.to_string()
        };
        println!(
            "| {} | {label} | {ci}→{o} | {k} | {s} | {g} | {hw} | {:.3} | {gops:.0} | {:.0}% | {:.3} | {:.2}× | {:.3} | {:.2}× |",
            c.model,
            t * 1e3,
            100.0 * gops / peak,
            tx * 1e3,
            tx / t,
            tf * 1e3,
            tf / t
        );
    }
    println!("load average after: {}", loadavg());
}
