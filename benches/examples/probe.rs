use rquant_core::{registry, threads};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};
fn work(ns: u64) -> u64 {
    let mut x = 1u64;
    for _ in 0..ns / 2 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    x
}
fn cpu() -> u32 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    after.split_whitespace().nth(36).unwrap().parse().unwrap()
}
fn main() {
    registry::set_num_threads(2);
    let gap: u64 = std::env::args().nth(1).map_or(50, |s| s.parse().unwrap());
    let me = std::thread::current().id();
    let (mut same, mut diff, mut alone, mut total) = (0, 0, 0, 0.0);
    for _ in 0..500 {
        let s = Instant::now();
        while s.elapsed() < Duration::from_micros(gap) {
            std::hint::spin_loop();
        }
        let cpus = Mutex::new((None, None));
        let a = Instant::now();
        threads::par_for(
            64,
            || (),
            |_, i| {
                let mut c = cpus.lock().unwrap();
                if std::thread::current().id() == me {
                    if c.0.is_none() {
                        c.0 = Some(cpu());
                    }
                } else if c.1.is_none() {
                    c.1 = Some(cpu());
                }
                drop(c);
                black_box(work(1000) + i as u64);
            },
        );
        total += a.elapsed().as_secs_f64();
        match cpus.into_inner().unwrap() {
            (Some(x), Some(y)) if x == y => same += 1,
            (Some(_), Some(_)) => diff += 1,
            _ => alone += 1,
        }
    }
    println!("gap {gap}us: worker on the caller's cpu {same}, other cpu {diff}, one thread only {alone}; {:.1} us/region", total / 500.0 * 1e6);
}
