//! Microkernel throughput with L1-resident panels (no packing, no output
//! stage), for every kernel of every x86 path this CPU has, next to the
//! register-only peak of its instruction sequence.

use rquant_core::gemm::{Micro, Shape};

fn main() {
    for e in rquant_x86::all_paths() {
        for kern in e.gemm_kernels() {
            let s: Shape = kern.shape;
            // 192 k-units: a 24 KiB weight panel for the 32-wide kernels.
            let ku = 192;
            let unit = s.unit_bytes();
            let a = vec![1u8; ku * unit * s.mr];
            let b = vec![1u8; ku * unit * s.nr];
            let mut c = vec![0i32; s.mr * s.nr];
            let reps = 50_000;
            let mut best = 0f64;
            for _ in 0..3 {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    (kern.run)(Micro {
                        a: std::hint::black_box(&a),
                        lda: ku * unit,
                        b: &b,
                        c: &mut c,
                        ku,
                        mrows: s.mr,
                        init: true,
                    });
                }
                let macs = (reps * ku * s.kr * s.mr * s.nr) as f64;
                best = best.max(2.0 * macs / t.elapsed().as_secs_f64() / 1e9);
            }
            let peak = kern.peak.map(|p| p());
            println!(
                "{:<32} {:>7.1} GOP/s  (register-only peak {})",
                kern.name,
                best,
                peak.map_or("-".into(), |p| format!(
                    "{p:.1} GOP/s, {:.0}%",
                    100.0 * best / p
                ))
            );
        }
    }
}
