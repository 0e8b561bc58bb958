//! `cargo xtask bench`: int8 op timings on every engine, as a table and JSON.
//!
//! Medians of repeated runs in one process, so engines are compared in one
//! run as ratios (this machine is shared and noisy: never compare absolute
//! figures across runs). Criterion benches under benches/ give the detailed view.

use std::time::{Duration, Instant};

use rquant_core::{quantize_per_channel, quantize_per_tensor, Conv2dParams, QuantEngine, Tensor};

/// One measured record.
#[derive(Debug, Clone)]
pub struct Record {
    pub op: String,
    pub engine: String,
    pub shape: String,
    pub threads: usize,
    pub median_s: f64,
    pub gops: f64,
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "op": self.op, "impl": self.engine, "shape": self.shape, "threads": self.threads,
            "median_s": self.median_s, "gops": self.gops,
        })
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

/// Conv shapes (C, O, H=W, k, groups) from ResNet / MobileNet.
pub const CONV_SHAPES: &[(usize, usize, usize, usize, usize)] = &[
    (64, 64, 56, 3, 1),
    (128, 128, 28, 3, 1),
    (256, 1024, 14, 1, 1),
    (144, 144, 56, 3, 144),
];

pub fn linear(
    e: &dyn QuantEngine,
    m: usize,
    k: usize,
    n: usize,
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
    // Full-range activations: the case where fbgemm's AVX2 kernels saturate.
    let xq = quantize_per_tensor::<u8>(&x, 4.0 / 255.0, 0).unwrap();
    let ops = 2.0 * (m * k * n) as f64;
    let shape = format!("{m}x{k}x{n}");
    let label = format!("{}/{}", e.name(), e.isa());
    let t_static = median_time(budget, || {
        std::hint::black_box(e.linear(&xq, &packed, 0.05, 128, false).unwrap());
    });
    let t_dyn = median_time(budget, || {
        std::hint::black_box(e.linear_dynamic(&x, &packed, false).unwrap());
    });
    vec![
        Record {
            op: "linear_static".into(),
            engine: label.clone(),
            shape: shape.clone(),
            threads,
            median_s: t_static,
            gops: ops / t_static / 1e9,
        },
        Record {
            op: "linear_dynamic".into(),
            engine: label,
            shape,
            threads,
            median_s: t_dyn,
            gops: ops / t_dyn / 1e9,
        },
    ]
}

pub fn conv(
    e: &dyn QuantEngine,
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
    let t = median_time(budget, || {
        std::hint::black_box(e.conv2d(&xq, &packed, 0.05, 0, true).unwrap());
    });
    let ops = 2.0 * (o * hw * hw * cg * k * k) as f64;
    Record {
        op: "conv2d".into(),
        engine: format!("{}/{}", e.name(), e.isa()),
        shape: format!("{c}->{o}@{hw}x{hw} k{k} g{groups}"),
        threads,
        median_s: t,
        gops: ops / t / 1e9,
    }
}
