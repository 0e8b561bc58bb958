//! Quick timing of fp16-weight dynamic linear (GOP/s medians, 1 thread).
use std::time::Instant;

use rquant_core::Tensor;

fn main() {
    rquant_core::registry::set_num_threads(1);
    for e in rquant_x86::all_paths() {
        if e.isa() == "scalar" {
            continue;
        }
        for &(m, k, n) in &[
            (1, 768, 768),
            (8, 768, 768),
            (128, 768, 768),
            (128, 768, 3072),
        ] {
            let x = Tensor::new(
                [m, k],
                (0..m * k)
                    .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
                    .collect(),
            )
            .unwrap();
            let w = Tensor::new(
                [n, k],
                (0..n * k)
                    .map(|i| ((i * 53 % 97) as f32) / 48.0 - 1.0)
                    .collect(),
            )
            .unwrap();
            let p = e.pack_linear_fp16(w, Some(vec![0.5; n])).unwrap();
            let mut ts = Vec::new();
            let start = Instant::now();
            while ts.len() < 7 || start.elapsed().as_secs_f64() < 0.4 {
                let t = Instant::now();
                std::hint::black_box(e.linear_dynamic_fp16(&x, &p).unwrap());
                ts.push(t.elapsed().as_secs_f64());
            }
            ts.sort_by(f64::total_cmp);
            println!(
                "{:<12} fp16 {m}x{k}x{n}: {:.1} GFLOP/s",
                e.isa(),
                2.0 * (m * k * n) as f64 / ts[ts.len() / 2] / 1e9
            );
        }
    }
}
