//! Criterion benches of int8 Linear on the x86 engine (best ISA path, and
//! every other path this CPU has), static and dynamic, 1 thread, on the 7
//! shapes of ../shared/peers. Throughput is reported in elements = 2·M·K·N
//! operations, so criterion's "Gelem/s" reads as GOP/s.
//! `cargo bench -p rquant-benches --bench linear [-- FILTER]`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rquant_core::{quantize_per_channel, quantize_per_tensor, Tensor};

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 768, 768),
    (8, 768, 768),
    (128, 768, 768),
    (128, 768, 3072),
    (128, 3072, 768),
    (512, 1024, 1024),
    (1, 4096, 4096),
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

fn linear(c: &mut Criterion) {
    rquant_core::registry::set_num_threads(1);
    let paths = rquant_x86::all_paths();
    if paths.is_empty() {
        eprintln!("x86 engine unavailable on this CPU: nothing to bench");
        return;
    }
    for e in paths.iter().filter(|e| e.isa() != "scalar") {
        let mut g = c.benchmark_group(format!("linear/x86-{}", e.isa()));
        g.sample_size(20);
        g.warm_up_time(std::time::Duration::from_millis(300));
        g.measurement_time(std::time::Duration::from_secs(1));
        for &(m, k, n) in SHAPES {
            let shape = format!("{m}x{k}x{n}");
            // Full-range activations (0..255): the case where vpmaddubsw saturates.
            let x = Tensor::new(
                [m, k],
                data(m * k, 1).iter().map(|v| v.abs() * 4.0).collect(),
            )
            .unwrap();
            let xq = quantize_per_tensor::<u8>(&x, 4.0 / 255.0, 0).unwrap();
            let w = Tensor::new([n, k], data(n * k, 2)).unwrap();
            let wq = quantize_per_channel::<i8>(&w, &vec![1.0 / 127.0; n], &vec![0; n], 0).unwrap();
            let packed = e.pack_linear(wq, Some(data(n, 3))).unwrap();
            g.throughput(Throughput::Elements(2 * (m * k * n) as u64));
            g.bench_function(BenchmarkId::new("static", &shape), |b| {
                b.iter(|| e.linear(&xq, &packed, 0.05, 128, false).unwrap())
            });
            g.bench_function(BenchmarkId::new("dynamic", &shape), |b| {
                b.iter(|| e.linear_dynamic(&x, &packed, false).unwrap())
            });
        }
        g.finish();
    }
}

criterion_group!(benches, linear);
criterion_main!(benches);
