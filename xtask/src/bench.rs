//! `cargo xtask bench`: int8 op timings on every engine next to rquant's own
//! fp32 Linear, as a table and JSON records
//! `{"op", "shape": {dims}, "engine", "isa", "threads", "median_s", "gops"}`.
//!
//! Medians of repeated runs in one process, so implementations are compared in
//! one run, as ratios (this machine is shared and noisy: never compare
//! absolute figures across runs). Criterion benches under benches/ give the
//! detailed view.
//!
//! Weights ([`Weights`], `--weights`): per-channel Gaussian (the default,
//! as tools/bench/torch_peers.py draws them), uniform, or the real Linear
//! matrices of a MiniLM checkpoint. Activations always span the full u8
//! range. For every weight matrix the bench prints its remainder density:
//! the share of adjacent weight pairs over the `vpmaddubsw` pair bound,
//! which the two-pass x86 kernels add in a second pass
//! (`rquant_x86::pack::split_pairs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rquant_core::{
    quantize_per_channel, quantize_per_tensor, Conv2dParams, Engine, QTensor, Tensor,
};
use serde_json::json;

/// One measured record.
#[derive(Debug, Clone)]
pub struct Record {
    pub op: &'static str,
    pub shape: Vec<(&'static str, usize)>,
    pub engine: String,
    pub isa: String,
    pub threads: usize,
    pub median_s: f64,
    /// Giga-operations per second (2 per multiply-accumulate; 1 per element
    /// for quantize/dequantize).
    pub gops: f64,
    /// For quantize / dequantize: the streaming-copy bandwidth measured beside
    /// it (GB/s of source bytes), the yardstick of the % column. Not in the JSON.
    pub copy_gbs: Option<f64>,
    /// The GEMM kernel that ran (from the engine's kernel table and its call
    /// counters), if any: its peak is the yardstick of the % column.
    pub kernel: Option<&'static str>,
    /// Where the weights came from ([`Weights::label`], plus the matrix name
    /// for a checkpoint's), for GEMM records.
    pub weights: Option<String>,
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        let shape: serde_json::Map<String, serde_json::Value> = self
            .shape
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({
            "op": self.op, "shape": shape, "engine": self.engine, "isa": self.isa,
            "threads": self.threads, "median_s": self.median_s, "gops": self.gops,
            "kernel": self.kernel, "weights": self.weights,
        })
    }
    pub fn shape_text(&self) -> String {
        self.shape
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

static CPU_CLOCK: AtomicBool = AtomicBool::new(false);

/// Time with the calling thread's CPU clock instead of the wall clock
/// (`--cpu-time`, 1 thread only): on a shared machine a run that the
/// scheduler preempts then costs only what it ran. Milliseconds-long runs
/// are preempted on nearly every call under load, sub-millisecond ones
/// rarely, which skews wall-clock medians by shape. tools/bench/torch_peers.py
/// has the same option.
pub fn use_cpu_clock(on: bool) {
    CPU_CLOCK.store(on, Ordering::Relaxed);
}

/// Seconds on the clock [`median_time`] uses.
fn clock() -> f64 {
    if CPU_CLOCK.load(Ordering::Relaxed) {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
    } else {
        thread_local! {
            static EPOCH: Instant = Instant::now();
        }
        EPOCH.with(|e| e.elapsed().as_secs_f64())
    }
}

/// Median time of `f` (wall, or the thread's CPU time under
/// [`use_cpu_clock`]) over enough runs to fill `budget` of wall time (at
/// least 5 runs).
pub fn median_time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: page faults, lazy packing, thread pool start
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < budget && times.len() < 1000) {
        let t = clock();
        f();
        times.push(clock() - t);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

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

/// The Linear shapes of ../shared/peers (M, K, N).
pub const LINEAR_SHAPES: &[(usize, usize, usize)] = &[
    (1, 768, 768),
    (8, 768, 768),
    (128, 768, 768),
    (128, 768, 3072),
    (128, 3072, 768),
    (512, 1024, 1024),
    (1, 4096, 4096),
];

/// Rows (tokens) each MiniLM matrix is benched with: one token, a short
/// text, a long one.
pub const MINILM_ROWS: &[usize] = &[1, 8, 128];

/// Conv layers (C, O, H=W, k, groups): ResNet 3×3, a 1×1, a MobileNet depthwise.
pub const CONV_SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (64, 64, 56, 3, 1),
    (128, 128, 28, 3, 1),
    (256, 256, 14, 3, 1),
    (256, 1024, 14, 1, 1),
    (144, 144, 56, 3, 144),
];

/// Elements of the quantize / dequantize cases.
pub const QUANTIZE_LEN: usize = 16 << 20;

fn record(
    op: &'static str,
    shape: Vec<(&'static str, usize)>,
    engine: &str,
    isa: &str,
    threads: usize,
    t: f64,
    ops: f64,
) -> Record {
    Record {
        op,
        shape,
        engine: engine.into(),
        isa: isa.into(),
        threads,
        median_s: t,
        gops: ops / t / 1e9,
        copy_gbs: None,
        kernel: None,
        weights: None,
    }
}

/// Run `f` and name the GEMM kernel of `e` that ran in it (the one whose
/// call counter moved most), if any.
fn kernel_of<T>(e: &Engine, f: impl FnOnce() -> T) -> (T, Option<&'static str>) {
    let ks = e.gemm_kernels();
    let before: Vec<usize> = ks.iter().map(|k| k.calls()).collect();
    let v = f();
    let ran = ks
        .iter()
        .zip(before)
        .map(|(k, b)| (k.calls() - b, k.name))
        .filter(|&(d, _)| d > 0)
        .max()
        .map(|(_, name)| name);
    (v, ran)
}

/// Where the benchmark's weights come from (`--weights`).
#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// N(0, 0.05²) floats quantized per channel, symmetric (scale
    /// `max|w| / 127.5`, zero point 0), as tools/bench/torch_peers.py and
    /// PyTorch's per-channel observers do.
    Gaussian,
    /// Uniform floats in [−1, 1) at scale 1/127: about a quarter of the
    /// adjacent pairs break the `vpmaddubsw` bound — a worst case, not a model.
    Uniform,
    /// The Linear matrices of a MiniLM checkpoint (`DIR/model.safetensors`),
    /// quantized per channel like [`Weights::Gaussian`].
    MiniLm(PathBuf),
}

impl Weights {
    /// `gaussian`, `uniform` or `minilm:DIR`.
    pub fn parse(s: &str) -> Result<Weights, String> {
        match s {
            "gaussian" => Ok(Weights::Gaussian),
            "uniform" => Ok(Weights::Uniform),
            _ => match s.strip_prefix("minilm:") {
                Some(d) if !d.is_empty() => Ok(Weights::MiniLm(PathBuf::from(d))),
                _ => Err(format!(
                    "--weights {s:?}: expected gaussian, uniform or minilm:DIR"
                )),
            },
        }
    }
    pub fn label(&self) -> &'static str {
        match self {
            Weights::Gaussian => "gaussian",
            Weights::Uniform => "uniform",
            Weights::MiniLm(_) => "minilm",
        }
    }
}

/// N(0, 0.05²) floats (Box–Muller on the bench's generator).
pub fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let u = data(n + 1, seed ^ 0x5eed);
    let v = data(n + 1, seed ^ 0xface);
    (0..n)
        .map(|i| {
            let a = ((u[i] + 1.0) * 0.5).max(1e-7);
            let b = (v[i] + 1.0) * 0.5;
            0.05 * (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos()
        })
        .collect()
}

/// Quantize `w` (`[rows, rest…]` floats) per output channel, symmetric:
/// scale `max|w| / 127.5` per row (PyTorch's per-channel symmetric qint8
/// observer), zero point 0.
pub fn per_channel_symmetric(w: &Tensor) -> QTensor<i8> {
    let rows = w.shape()[0];
    let per = w.data().len() / rows.max(1);
    let scales: Vec<f64> = w
        .data()
        .chunks(per.max(1))
        .map(|r| {
            let m = r.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 / 127.5;
            if m > 0.0 {
                m
            } else {
                1.0
            }
        })
        .collect();
    quantize_per_channel::<i8>(w, &scales, &vec![0; rows], 0).expect("per-channel weights")
}

/// One Linear weight matrix to bench: `[n, k]` int8, per channel.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// `gaussian`, `uniform`, or `minilm:<tensor name>`.
    pub label: String,
    pub w: QTensor<i8>,
}

impl Matrix {
    pub fn n(&self) -> usize {
        self.w.shape()[0]
    }
    pub fn k(&self) -> usize {
        self.w.shape()[1]
    }
}

/// The `[n, k]` weight of a Linear shape under `weights` (Gaussian or
/// uniform; a checkpoint's matrices come from [`minilm_matrices`]).
pub fn linear_weights(weights: &Weights, n: usize, k: usize) -> Matrix {
    let seed = 2 + (n * 7919 + k) as u64;
    let w = match weights {
        Weights::Uniform => {
            let w = Tensor::new([n, k], data(n * k, 2)).unwrap();
            quantize_per_channel::<i8>(&w, &vec![1.0 / 127.0; n], &vec![0; n], 0).unwrap()
        }
        _ => per_channel_symmetric(&Tensor::new([n, k], gaussian(n * k, seed)).unwrap()),
    };
    Matrix {
        label: weights.label().into(),
        w,
    }
}

/// Every Linear weight of a BERT-family checkpoint (`DIR/model.safetensors`:
/// 2-D `*.weight` tensors outside the embeddings), per channel.
pub fn minilm_matrices(dir: &Path) -> Result<Vec<Matrix>, String> {
    let path = dir.join("model.safetensors");
    let mut out = Vec::new();
    for (name, w) in float_weights(&path)? {
        if w.shape().len() != 2 || !name.ends_with(".weight") || name.contains("embeddings") {
            continue;
        }
        out.push(Matrix {
            label: format!("minilm:{}", name.trim_end_matches(".weight")),
            w: per_channel_symmetric(&w),
        });
    }
    if out.is_empty() {
        return Err(format!("{}: no Linear weights", path.display()));
    }
    Ok(out)
}

/// Every f32 tensor of a safetensors file with at least 2 dimensions and
/// `weight` in its name, in layer order.
pub fn float_weights(path: &Path) -> Result<Vec<(String, Tensor)>, String> {
    use safetensors::{Dtype, SafeTensors};
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| n.contains("weight"))
        .cloned()
        .collect();
    names.sort_by_key(|n| natural_key(n));
    let mut out = Vec::new();
    for name in names {
        let t = st.tensor(&name).map_err(|e| format!("{name}: {e}"))?;
        if t.shape().len() < 2 || t.dtype() != Dtype::F32 {
            continue;
        }
        let w: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let w = Tensor::new(t.shape().to_vec(), w).map_err(|e| format!("{name}: {e}"))?;
        out.push((name, w));
    }
    Ok(out)
}

/// One weight's remainder densities ([`file_densities`]).
#[derive(Debug, Clone)]
pub struct WeightDensity {
    pub name: String,
    pub shape: Vec<usize>,
    pub per_channel: Density,
    pub per_tensor: Density,
}

/// The remainder density of every GEMM weight of a safetensors file
/// (`cargo xtask density`): 2-D weights (Linear, LSTM gates) as `[n, k]`,
/// 4-D ones as the x86 engine packs an ungrouped conv, each quantized per
/// channel and per tensor (both symmetric: the per-channel observer of
/// PyTorch's fbgemm qconfigs and the per-tensor one of its default dynamic
/// qconfig). Embedding tables are skipped (no GEMM).
pub fn file_densities(path: &Path) -> Result<Vec<WeightDensity>, String> {
    let mut out = Vec::new();
    for (name, w) in float_weights(path)? {
        if name.contains("embedding") {
            continue;
        }
        let shape = w.shape().to_vec();
        let max = w.data().iter().fold(0f32, |m, v| m.max(v.abs())) as f64 / 127.5;
        let pt = quantize_per_tensor::<i8>(&w, if max > 0.0 { max } else { 1.0 }, 0)
            .map_err(|e| format!("{name}: {e}"))?;
        let pc = per_channel_symmetric(&w);
        let d = |q: &QTensor<i8>| -> Density {
            if shape.len() == 4 {
                conv_density(q, 1)
            } else {
                let n = shape[0];
                Density::of(q.int_repr(), n, q.int_repr().len() / n.max(1))
            }
        };
        out.push(WeightDensity {
            per_channel: d(&pc),
            per_tensor: d(&pt),
            name,
            shape,
        });
    }
    Ok(out)
}

/// Sort key putting `layer.10` after `layer.9`.
fn natural_key(s: &str) -> Vec<(String, u64)> {
    s.split('.')
        .map(|p| match p.parse::<u64>() {
            Ok(v) => (String::new(), v),
            Err(_) => (p.to_string(), 0),
        })
        .collect()
}

/// The remainder of a weight matrix under the two-pass x86 split.
#[derive(Debug, Clone, Copy)]
pub struct Density {
    /// Adjacent pairs over the `vpmaddubsw` bound (each one remainder entry).
    pub over: usize,
    /// Adjacent pairs of the matrix (`n · ⌈k / 2⌉`).
    pub pairs: usize,
    /// Remainder groups beyond each column's first.
    pub extra_groups: usize,
    /// Whether the split pays (else the widened kernel runs these weights).
    pub pays: bool,
}

impl Density {
    /// Of `w` (`[n, k]` int8) in the order its K is packed in.
    pub fn of(w: &[i8], n: usize, k: usize) -> Density {
        let s = rquant_x86::pack::split_pairs(w, n, k);
        Density {
            over: s.entries.len(),
            pairs: n * k.div_ceil(2),
            extra_groups: s.entries.iter().filter(|e| e.new_group).count(),
            pays: s.worth,
        }
    }
    pub fn fraction(&self) -> f64 {
        self.over as f64 / self.pairs.max(1) as f64
    }
    pub fn text(&self) -> String {
        format!(
            "remainder {:.2}% of pairs ({} of {}; {} extra groups), split {}",
            100.0 * self.fraction(),
            self.over,
            self.pairs,
            self.extra_groups,
            if self.pays { "pays" } else { "does not pay" }
        )
    }
}

/// Static and dynamic int8 Linear with full-range activations (the case where
/// fbgemm's AVX2 kernels saturate) on `m` rows and the weight `w`.
pub fn linear(e: &Engine, m: usize, w: &Matrix, threads: usize, budget: Duration) -> Vec<Record> {
    let (k, n) = (w.k(), w.n());
    let x = Tensor::new(
        [m, k],
        data(m * k, 1).iter().map(|v| v.abs() * 4.0).collect(),
    )
    .unwrap();
    let packed = e.pack_linear(w.w.clone(), Some(data(n, 3))).unwrap();
    let xq = quantize_per_tensor::<u8>(&x, 4.0 / 255.0, 0).unwrap();
    let ops = 2.0 * (m * k * n) as f64;
    let shape = vec![("M", m), ("K", k), ("N", n)];
    let (t_static, k_static) = kernel_of(e, || {
        median_time(budget, || {
            std::hint::black_box(e.linear(&xq, &packed, 0.05, 128, false).unwrap());
        })
    });
    let (t_dyn, k_dyn) = kernel_of(e, || {
        median_time(budget, || {
            std::hint::black_box(e.linear_dynamic(&x, &packed, false).unwrap());
        })
    });
    vec![
        Record {
            kernel: k_static,
            weights: Some(w.label.clone()),
            ..record(
                "linear_static",
                shape.clone(),
                e.name(),
                e.isa(),
                threads,
                t_static,
                ops,
            )
        },
        Record {
            kernel: k_dyn,
            weights: Some(w.label.clone()),
            ..record(
                "linear_dynamic",
                shape,
                e.name(),
                e.isa(),
                threads,
                t_dyn,
                ops,
            )
        },
    ]
}

/// rquant's fp32 Linear (the float baseline of crates/nn: packed SGEMM).
pub fn fp32_linear((m, k, n): (usize, usize, usize), threads: usize, budget: Duration) -> Record {
    use rquant_nn::gemm::{par_sgemm, Mat};
    let x = data(m * k, 1);
    let w = data(n * k, 2);
    let mut y = vec![0f32; m * n];
    let t = median_time(budget, || {
        par_sgemm(m, k, n, Mat::rows(&x, k), Mat::t(&w, k), 0.0, &mut y);
        std::hint::black_box(&y);
    });
    record(
        "fp32_linear",
        vec![("M", m), ("K", k), ("N", n)],
        "fp32",
        "sgemm",
        threads,
        t,
        2.0 * (m * k * n) as f64,
    )
}

/// The weight of a conv layer (`[o, c/groups, k, k]`) under `weights`:
/// uniform as [`Weights::Uniform`], else per-channel Gaussian.
pub fn conv_weights(
    weights: &Weights,
    (c, o, _hw, k, groups): (usize, usize, usize, usize, usize),
) -> QTensor<i8> {
    let cg = c / groups;
    let len = o * cg * k * k;
    match weights {
        Weights::Uniform => {
            let w = Tensor::new([o, cg, k, k], data(len, 5)).unwrap();
            quantize_per_channel::<i8>(&w, &vec![1.0 / 127.0; o], &vec![0; o], 0).unwrap()
        }
        _ => {
            per_channel_symmetric(&Tensor::new([o, cg, k, k], gaussian(len, 5 + c as u64)).unwrap())
        }
    }
}

/// [`Density`] of a conv weight (`[o, c/g, kh, kw]`) as the x86 engine packs
/// it: per group, K in `[ky][kx][c]` order.
pub fn conv_density(w: &QTensor<i8>, groups: usize) -> Density {
    let [o, cg, kh, kw] = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
    let (og, k) = (o / groups, cg * kh * kw);
    let raw = w.int_repr();
    let mut total = Density {
        over: 0,
        pairs: 0,
        extra_groups: 0,
        pays: true,
    };
    for g in 0..groups {
        let mut wr = vec![0i8; og * k];
        for ol in 0..og {
            let oc = g * og + ol;
            for c in 0..cg {
                for ky in 0..kh {
                    for kx in 0..kw {
                        wr[ol * k + (ky * kw + kx) * cg + c] =
                            raw[((oc * cg + c) * kh + ky) * kw + kx];
                    }
                }
            }
        }
        let d = Density::of(&wr, og, k);
        total.over += d.over;
        total.pairs += d.pairs;
        total.extra_groups += d.extra_groups;
        total.pays &= d.pays;
    }
    total
}

pub fn conv(
    e: &Engine,
    (c, o, hw, k, groups): (usize, usize, usize, usize, usize),
    wq: &QTensor<i8>,
    weights: &Weights,
    threads: usize,
    budget: Duration,
) -> Record {
    let x = Tensor::new(
        [1, c, hw, hw],
        data(c * hw * hw, 4).iter().map(|v| v.abs()).collect(),
    )
    .unwrap();
    let xq = quantize_per_tensor::<u8>(&x, 1.0 / 255.0, 0).unwrap();
    let cg = c / groups;
    let p = Conv2dParams {
        padding: [k / 2, k / 2],
        groups,
        ..Default::default()
    };
    let packed = e.pack_conv2d(wq.clone(), None, p).unwrap();
    let (t, kernel) = kernel_of(e, || {
        median_time(budget, || {
            std::hint::black_box(e.conv2d(&xq, &packed, 0.05, 0, true).unwrap());
        })
    });
    let shape = vec![
        ("C", c),
        ("O", o),
        ("H", hw),
        ("W", hw),
        ("k", k),
        ("groups", groups),
    ];
    Record {
        kernel,
        weights: Some(match weights {
            Weights::Uniform => "uniform".into(),
            _ => "gaussian".into(),
        }),
        ..record(
            "conv2d",
            shape,
            e.name(),
            e.isa(),
            threads,
            t,
            2.0 * (o * hw * hw * cg * k * k) as f64,
        )
    }
}

/// Streaming copy of `len` f32 (`copy_from_slice`, split over rquant's
/// threads): the memory-bandwidth yardstick of quantize and dequantize.
/// Returns GB/s of source bytes.
pub fn copy_gbs(len: usize, budget: Duration) -> f64 {
    use rquant_core::threads;
    let src = data(len, 5);
    let mut dst = vec![0f32; len];
    let chunk = len.div_ceil(threads::num_threads()).max(1);
    let t = median_time(budget, || {
        threads::par_chunks_mut(
            &mut dst,
            chunk,
            || (),
            |_, i, d| d.copy_from_slice(&src[i * chunk..][..d.len()]),
        );
        std::hint::black_box(&mut dst);
    });
    (len * 4) as f64 / t / 1e9
}

/// quantize_per_tensor (f32 → quint8) and dequantize of `len` elements through
/// the engine's kernels, into reused caller-provided buffers (no page faults).
pub fn quantize(e: &Engine, len: usize, threads: usize, budget: Duration) -> Vec<Record> {
    let x = data(len, 6);
    let mut q = vec![0u8; len];
    let tq = median_time(budget, || {
        e.quantize_per_tensor_into(&x, 2.0 / 255.0, 128, &mut q)
            .unwrap();
        std::hint::black_box(&mut q);
    });
    let qt = rquant_core::QTensor::from_int_repr(
        vec![len],
        q,
        rquant_core::QParams::PerTensor {
            scale: 2.0 / 255.0,
            zero_point: 128,
        },
    )
    .unwrap();
    let mut d = vec![0f32; len];
    let td = median_time(budget, || {
        e.dequantize_into(&qt, &mut d).unwrap();
        std::hint::black_box(&mut d);
    });
    vec![
        record(
            "quantize",
            vec![("len", len)],
            e.name(),
            e.isa(),
            threads,
            tq,
            len as f64,
        ),
        record(
            "dequantize",
            vec![("len", len)],
            e.name(),
            e.isa(),
            threads,
            td,
            len as f64,
        ),
    ]
}
