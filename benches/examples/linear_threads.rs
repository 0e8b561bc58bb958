//! Static and dynamic int8 Linear on `cargo xtask bench`'s shapes, on the
//! x86 engine's best path, at the thread count of `RQUANT_NUM_THREADS`:
//! one line per shape with the median µs of ~0.2 s of calls. Small and
//! quick, so runs at 1 and 2 threads (and of two builds) can be alternated
//! many times on a shared machine:
//!
//! ```text
//! for i in $(seq 10); do for t in 1 2; do
//!   RQUANT_NUM_THREADS=$t cargo run -q --release -p rquant-benches --example linear_threads
//! done; done
//! ```

use std::time::Instant;

use rquant_core::{quantize_per_channel, quantize_per_tensor, registry, Tensor};

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

fn median_us(mut f: impl FnMut()) -> f64 {
    f();
    let mut t = Vec::new();
    let start = Instant::now();
    while t.len() < 7 || (start.elapsed().as_secs_f64() < 0.2 && t.len() < 2000) {
        let s = Instant::now();
        f();
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    t[t.len() / 2] * 1e6
}

fn main() {
    let e = rquant_x86::all_paths()
        .into_iter()
        .next()
        .expect("an x86 path");
    let threads = registry::num_threads();
    for (m, k, n) in [
        (1, 768, 768),
        (8, 768, 768),
        (128, 768, 768),
        (128, 768, 3072),
        (128, 3072, 768),
        (512, 1024, 1024),
        (1, 4096, 4096),
    ] {
        let w = Tensor::new([n, k], data(n * k, 1)).unwrap();
        let wq = quantize_per_channel::<i8>(&w, &vec![1.0 / 127.0; n], &vec![0; n], 0).unwrap();
        let p = e.pack_linear(wq, Some(data(n, 2))).unwrap();
        let x = Tensor::new([m, k], data(m * k, 3)).unwrap();
        let xq = quantize_per_tensor::<u8>(&x, 2.0 / 255.0, 128).unwrap();
        let st = median_us(|| {
            std::hint::black_box(e.linear(&xq, &p, 0.05, 128, false).unwrap());
        });
        let dy = median_us(|| {
            std::hint::black_box(e.linear_dynamic(&x, &p, false).unwrap());
        });
        println!(
            "linear {m}x{k}x{n} isa={} threads={threads} static_us={st:.1} dynamic_us={dy:.1}",
            e.isa()
        );
    }
}
