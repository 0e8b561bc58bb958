//! Dev timing of one x86 path on per-channel Gaussian weights (uniform with
//! `UNIFORM=1`), full-range and 7-bit static activations and dynamic, medians:
//! `cargo run --release -p rquant-x86 --example pair_gops -- ISA [MxKxN,...]`.
//! `cargo xtask bench --weights` is the reported benchmark; this isolates one
//! path and shows what the full-range byte costs against 7-bit activations.

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

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
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

fn median(mut f: impl FnMut()) -> f64 {
    f();
    let mut t = Vec::new();
    let start = std::time::Instant::now();
    while t.len() < 9 || (start.elapsed().as_secs_f64() < 0.5 && t.len() < 3000) {
        let s = std::time::Instant::now();
        f();
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let isa = args.get(1).cloned().unwrap_or("avx2".into());
    let uniform = std::env::var_os("UNIFORM").is_some();
    rquant_core::registry::set_num_threads(1);
    let shapes = [
        (1, 768, 768),
        (8, 768, 768),
        (128, 768, 768),
        (128, 768, 3072),
        (128, 3072, 768),
        (512, 1024, 1024),
        (1, 4096, 4096),
    ];
    let filt = args.get(2).cloned().unwrap_or_default();
    let e = rquant_x86::all_paths()
        .into_iter()
        .find(|e| e.isa() == isa)
        .expect("path");
    for &(m, k, n) in &shapes {
        let shape = format!("{m}x{k}x{n}");
        if !filt.is_empty() && !filt.split(',').any(|f| f == shape) {
            continue;
        }
        let wq = if uniform {
            let w = Tensor::new([n, k], data(n * k, 2)).unwrap();
            quantize_per_channel::<i8>(&w, &vec![1.0 / 127.0; n], &vec![0; n], 0).unwrap()
        } else {
            let w = gaussian(n * k, 2 + (n * 7919 + k) as u64);
            let scales: Vec<f64> = w
                .chunks(k)
                .map(|r| r.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 / 127.5)
                .collect();
            quantize_per_channel::<i8>(&Tensor::new([n, k], w).unwrap(), &scales, &vec![0; n], 0)
                .unwrap()
        };
        let x = Tensor::new(
            [m, k],
            data(m * k, 1).iter().map(|v| v.abs() * 4.0).collect(),
        )
        .unwrap();
        let xq = quantize_per_tensor::<u8>(&x, 4.0 / 255.0, 0).unwrap();
        let x7 = quantize_per_tensor::<u8>(&x, 4.0 / 127.0, 0).unwrap();
        let p = e.pack_linear(wq, Some(data(n, 3))).unwrap();
        let ops = 2.0 * (m * k * n) as f64;
        let ts = median(|| {
            std::hint::black_box(e.linear(&xq, &p, 0.05, 128, false).unwrap());
        });
        let t7 = median(|| {
            std::hint::black_box(e.linear(&x7, &p, 0.05, 128, false).unwrap());
        });
        let td = median(|| {
            std::hint::black_box(e.linear_dynamic(&x, &p, false).unwrap());
        });
        println!(
            "{isa} {shape:<14} static {:7.1}  7bit {:7.1}  dynamic {:7.1} GOP/s",
            ops / ts / 1e9,
            ops / t7 / 1e9,
            ops / td / 1e9
        );
    }
}
