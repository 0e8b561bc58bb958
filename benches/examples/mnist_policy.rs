//! The int8 MNIST CNN (as in `mnist_threads`) at batch 100 and 1, with the
//! thread pool's wait policies interleaved pass by pass in one process, so
//! load from other processes hits every configuration alike. Median ms/img.
//! For choosing the defaults of `rquant_core::threads` (worker poll µs /
//! caller poll µs, with or without `sched_yield` between polls); also prints
//! the share of wall time the caller and the workers spent on a CPU and
//! waiting on a run queue (`/proc/self/task/*/schedstat`), which shows
//! when the kernel put a worker on its caller's CPU.
//!
//! `cargo run --release -p rquant-benches --example mnist_policy [-- REPS]`

use std::time::Instant;

use rquant_core::threads::{set_wait_policy, WaitPolicy};
use rquant_core::{qconfig::get_default_qconfig, registry, Tensor};
use rquant_nn::mnist::{self, Dataset};
use rquant_nn::{convert, fuse_modules, prepare, QConfigMap, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reps: usize = std::env::args().nth(1).map_or(Ok(15), |s| s.parse())?;
    rquant_nn::engines::init();
    let dir = mnist::committed_dir();
    let test = Dataset::load(&dir, "t10k", Some(1000))?;
    let calib = Dataset::load(&dir, "train", Some(200))?;
    let mut q = mnist::pretrained(&mnist::committed_weights())?;
    q.train(false);
    fuse_modules(&mut q, &mnist::FUSE_GROUPS)?;
    prepare(&mut q, &QConfigMap::global(get_default_qconfig("x86")?))?;
    mnist::calibrate(&mut q, &calib, 100, &mut |_| {})?;
    convert(&mut q)?;
    let batches = |b: usize, n: usize| -> Vec<Tensor> {
        (0..n)
            .step_by(b)
            .map(|s| test.batch(s, s + b, mnist::MEAN, mnist::STD))
            .collect()
    };
    let (b100, b1) = (batches(100, 1000), batches(1, 200));
    let p = |w, c, y| WaitPolicy {
        worker_spin_us: w,
        caller_spin_us: c,
        yield_between_polls: y,
    };
    let configs: Vec<(String, usize, WaitPolicy)> = vec![
        ("1 thread".into(), 1, p(50, 50, true)),
        ("default: yield-poll 50/50".into(), 2, p(50, 50, true)),
        ("yield-poll 20/10".into(), 2, p(20, 10, true)),
        ("yield-poll 100/20".into(), 2, p(100, 20, true)),
        ("spin 20/50, no yield".into(), 2, p(20, 50, false)),
        ("sleep at once 0/0".into(), 2, p(0, 0, false)),
    ];
    let mut t = vec![(Vec::new(), Vec::new()); configs.len()];
    // Per thread: (ns on CPU, ns waiting on a run queue), summed per config.
    let schedstat = || -> Vec<(String, u64, u64)> {
        std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.filter_map(|e| {
                    let p = e.ok()?.path();
                    let name = std::fs::read_to_string(p.join("comm")).ok()?;
                    let st = std::fs::read_to_string(p.join("schedstat")).ok()?;
                    let mut it = st.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
                    Some((name.trim().to_string(), it.next()?, it.next()?))
                })
                .collect()
            })
            .unwrap_or_default()
    };
    let mut sched = vec![(0u64, 0u64, 0u64, 0u64, 0.0f64); configs.len()];
    for _ in 0..reps {
        for (i, (_, n, pol)) in configs.iter().enumerate() {
            registry::set_num_threads(*n);
            set_wait_policy(*pol);
            let s0 = schedstat();
            let w0 = Instant::now();
            for (k, xs) in [&b100, &b1].into_iter().enumerate() {
                q.forward(Value::F(xs[0].clone()))?;
                let t0 = Instant::now();
                for x in xs.iter() {
                    std::hint::black_box(q.forward(Value::F(x.clone()))?);
                }
                let ms = t0.elapsed().as_secs_f64() * 1e3 / (xs.len() * xs[0].shape()[0]) as f64;
                if k == 0 {
                    t[i].0.push(ms)
                } else {
                    t[i].1.push(ms)
                }
            }
            let wall = w0.elapsed().as_secs_f64();
            for (a, b) in schedstat().iter().zip(s0.iter()) {
                let (run, wait) = (a.1 - b.1, a.2 - b.2);
                if a.0.starts_with("rquant-") {
                    sched[i].2 += run;
                    sched[i].3 += wait;
                } else if a.0.starts_with("mnist_policy") {
                    sched[i].0 += run;
                    sched[i].1 += wait;
                }
            }
            sched[i].4 += wall;
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("loadavg after: {}", load.trim());
    for (((name, _, _), (a, b)), st) in configs.iter().zip(t.iter_mut()).zip(&sched) {
        let pc = |ns: u64| 100.0 * ns as f64 / 1e9 / st.4;
        println!(
            "{name:<26} batch 100: {:.4} ms/img   batch 1: {:.4} ms/img   (% of wall: caller on CPU {:.0} waiting {:.0}, workers on CPU {:.0} waiting {:.0})",
            med(a),
            med(b),
            pc(st.0),
            pc(st.1),
            pc(st.2),
            pc(st.3)
        );
    }
    Ok(())
}
