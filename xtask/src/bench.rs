//! `cargo xtask bench`: int8 op timings on every engine next to rquant's own
//! fp32 Linear, as a table and JSON records
//! `{"op", "shape": {dims}, "engine", "isa", "threads", "median_s", "gops"}`.
//!
//! Medians of repeated runs in one process, so implementations are compared in
//! one run, as ratios (this machine is shared and noisy: never compare
//! absolute figures across runs). Criterion benches under benches/ give the
//! detailed view.

use std::time::{Duration, Instant};

use rquant_core::{quantize_per_channel, quantize_per_tensor, Conv2dParams, Engine, Tensor};
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
            "kernel": self.kernel,
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

/// Median wall time of `f` over enough runs to fill `budget` (at least 5 runs).
pub fn median_time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: page faults, lazy packing, thread pool start
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < budget && times.len() < 1000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
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

/// Static and dynamic int8 Linear with full-range activations (the case where
/// fbgemm's AVX2 kernels saturate).
pub fn linear(
    e: &Engine,
    (m, k, n): (usize, usize, usize),
    threads: usize,
    budget: Duration,
) -> Vec<Record> {
    let x = Tensor::new(
        [m, k],
        data(m * k, 1).iter().map(|v| v.abs() * 4.0).collect(),
    )
    .unwrap();
    let w = Tensor::new([n, k], data(n * k, 2)).unwrap();
    let wq = quantize_per_channel::<i8>(&w, &vec![1.0 / 127.0; n], &vec![0; n], 0).unwrap();
    let packed = e.pack_linear(wq, Some(data(n, 3))).unwrap();
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

pub fn conv(
    e: &Engine,
    (c, o, hw, k, groups): (usize, usize, usize, usize, usize),
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
    let w = Tensor::new([o, cg, k, k], data(o * cg * k * k, 5)).unwrap();
    let wq = quantize_per_channel::<i8>(&w, &vec![1.0 / 127.0; o], &vec![0; o], 0).unwrap();
    let p = Conv2dParams {
        padding: [k / 2, k / 2],
        groups,
        ..Default::default()
    };
    let packed = e.pack_conv2d(wq, None, p).unwrap();
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

/// Streaming copy of `len` f32 (`copy_from_slice`, split over the current
/// rayon pool's threads): the memory-bandwidth yardstick of quantize and
/// dequantize. Returns GB/s of source bytes.
pub fn copy_gbs(len: usize, budget: Duration) -> f64 {
    use rayon::prelude::*;
    let src = data(len, 5);
    let mut dst = vec![0f32; len];
    let chunk = len.div_ceil(rayon::current_num_threads()).max(1);
    let t = median_time(budget, || {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
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
