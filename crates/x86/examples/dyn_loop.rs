//! Fixed-count loop of one linear op for `perf stat` (page faults, cycles).
//! `dyn_loop M K N OP REPS`, OP = static | dynamic.
use rquant_core::{quantize_per_channel, quantize_per_tensor, Tensor};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (m, k, n): (usize, usize, usize) = (
        a[1].parse().unwrap(),
        a[2].parse().unwrap(),
        a[3].parse().unwrap(),
    );
    let reps: usize = a[5].parse().unwrap();
    if std::env::var_os("RQUANT_NUM_THREADS").is_none() {
        rquant_core::registry::set_num_threads(1);
    }
    let e = rquant_x86::engine().unwrap();
    let x = Tensor::new(
        [m, k],
        (0..m * k).map(|i| ((i * 37 % 101) as f32) / 25.0).collect(),
    )
    .unwrap();
    let w = Tensor::new(
        [n, k],
        (0..n * k)
            .map(|i| ((i * 53 % 97) as f32) / 48.0 - 1.0)
            .collect(),
    )
    .unwrap();
    let wq = quantize_per_channel::<i8>(&w, &vec![1.0 / 127.0; n], &vec![0; n], 0).unwrap();
    let p = e.pack_linear(wq, None).unwrap();
    let xq = quantize_per_tensor::<u8>(&x, 4.0 / 255.0, 0).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..reps {
        if a[4] == "static" {
            std::hint::black_box(e.linear(&xq, &p, 0.05, 128, false).unwrap());
        } else {
            std::hint::black_box(e.linear_dynamic(&x, &p, false).unwrap());
        }
    }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "{} {}: {:.1} GOP/s",
        e.isa(),
        a[4],
        2.0 * (m * k * n) as f64 / dt / 1e9
    );
}
