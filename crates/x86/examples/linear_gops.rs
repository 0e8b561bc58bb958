//! Quick single-process timing of the x86 engine's linear ops (GOP/s medians).
//! `cargo run --release -p rquant-x86 --example linear_gops [-- FILTER]`;
//! thread count from RQUANT_NUM_THREADS (default 1 here). Criterion benches
//! live in benches/.

use std::time::Instant;

use rquant_core::{quantize_per_channel, quantize_per_tensor, Tensor};

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

fn median(mut f: impl FnMut()) -> f64 {
    f();
    let mut t = Vec::new();
    let start = Instant::now();
    while t.len() < 7 || (start.elapsed().as_secs_f64() < 0.4 && t.len() < 2000) {
        let s = Instant::now();
        f();
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    if std::env::var_os("RQUANT_NUM_THREADS").is_none() {
        rquant_core::registry::set_num_threads(1);
    }
    let shapes = [
        (1, 768, 768),
        (8, 768, 768),
        (128, 768, 768),
        (128, 768, 3072),
        (128, 3072, 768),
        (512, 1024, 1024),
        (1, 4096, 4096),
    ];
    for e in rquant_x86::all_paths() {
        if e.isa() == "scalar" && !filter.contains("scalar") {
            continue;
        }
        if filter == "best" && e.isa() != rquant_x86::Isa::best().name() {
            continue;
        }
        for &(m, k, n) in &shapes {
            let shape = format!("{m}x{k}x{n}");
            // Comma-separated filter terms: each must name the shape or the path.
            if !filter.is_empty()
                && filter != "best"
                && !filter
                    .split(',')
                    .all(|f| shape.contains(f) || e.isa().contains(f))
            {
                continue;
            }
            let x = Tensor::new(
                [m, k],
                data(m * k, 1).iter().map(|v| v.abs() * 4.0).collect(),
            )
            .unwrap();
            let w = Tensor::new([n, k], data(n * k, 2)).unwrap();
            let wq = quantize_per_channel::<i8>(&w, &vec![1.0 / 127.0; n], &vec![0; n], 0).unwrap();
            let p = e.pack_linear(wq, Some(data(n, 3))).unwrap();
            // X7=1: 7-bit activations (0..127, PyTorch's reduce_range), else full range.
            let xs = if std::env::var_os("X7").is_some() {
                4.0 / 127.0
            } else {
                4.0 / 255.0
            };
            let xq = quantize_per_tensor::<u8>(&x, xs, 0).unwrap();
            let ops = 2.0 * (m * k * n) as f64;
            let only = std::env::var("OP").unwrap_or_default();
            let ts = median(|| {
                if only == "dynamic" {
                    return;
                }
                std::hint::black_box(e.linear(&xq, &p, 0.05, 128, false).unwrap());
            });
            let td = median(|| {
                if only == "static" {
                    return;
                }
                std::hint::black_box(e.linear_dynamic(&x, &p, false).unwrap());
            });
            println!(
                "{:<12} {:<16} static {:7.1} GOP/s  dynamic {:7.1} GOP/s",
                e.isa(),
                shape,
                ops / ts / 1e9,
                ops / td / 1e9
            );
        }
    }
}
