//! What a parallel region of `rquant_core::threads` costs: back-to-back
//! regions of two trivial tasks, regions of 64 tasks of ~1 µs, and regions
//! separated by serial work of a given length (so idle workers have gone to
//! sleep, or not, when the next region starts). Median µs per region over
//! repeated batches, at 1 and 2 threads (or `--threads N`).
//!
//! `cargo run --release -p rquant-benches --example pool_overhead`

use std::hint::black_box;
use std::time::{Duration, Instant};

use rquant_core::{registry, threads};

fn spin_for(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// ~`ns` nanoseconds of arithmetic.
fn work(ns: u64) -> u64 {
    let mut x = 1u64;
    for _ in 0..ns / 2 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    x
}

/// Median µs per call of `f` (batches of `reps` calls, 15 batches).
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / reps as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let counts: Vec<usize> = match args.iter().position(|a| a == "--threads") {
        Some(i) => vec![args[i + 1].parse().expect("--threads N")],
        None => vec![1, 2],
    };
    for n in counts {
        registry::set_num_threads(n);
        let tiny = time(2000, || {
            threads::par_for(
                2,
                || (),
                |_, i| {
                    black_box(i);
                },
            )
        });
        let t64 = time(200, || {
            threads::par_for(
                64,
                || (),
                |_, i| {
                    black_box(work(1000) + i as u64);
                },
            )
        });
        let serial64 = 64.0
            * time(2000, || {
                black_box(work(1000));
            });
        println!(
            "threads={n} back-to-back 2 trivial tasks: {tiny:.2} us/region; 64 x ~1us tasks: {t64:.2} us/region (serial {serial64:.2} us)"
        );
        // Share of the tasks run by the caller in 64-task regions.
        let me = std::thread::current().id();
        let mine = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..2000 {
            threads::par_for(
                64,
                || (),
                |_, i| {
                    black_box(work(1000) + i as u64);
                    if std::thread::current().id() == me {
                        mine.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                },
            );
        }
        println!(
            "threads={n} caller ran {:.1}% of the tasks",
            mine.into_inner() as f64 / (2000.0 * 64.0) * 100.0
        );
        for gap in [5u64, 20, 50, 200] {
            let gap_d = Duration::from_micros(gap);
            let with = time(200, || {
                spin_for(gap_d);
                threads::par_for(
                    64,
                    || (),
                    |_, i| {
                        black_box(work(1000) + i as u64);
                    },
                );
            });
            println!(
                "threads={n} after {gap:>3} us of serial work: 64 x ~1us tasks {:.2} us/region",
                with - gap as f64
            );
        }
    }
}
