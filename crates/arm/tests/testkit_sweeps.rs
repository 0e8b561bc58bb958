//! The shared XNNPACK-style testers (rquant-testkit) on every ISA path of the
//! ARM engine this CPU has (off AArch64: the portable scalar path only).
//! Bit equality with the reference engine, tolerance zero.

use rquant_arm::{ArmEngine, Isa};
use rquant_core::Engine;

fn paths() -> Vec<Engine> {
    Isa::ALL
        .into_iter()
        .filter_map(|i| match ArmEngine::with_isa(i) {
            Some(e) => Some(Engine::new(e)),
            None => {
                eprintln!("ARM path {} not available on this CPU: skipped", i.name());
                None
            }
        })
        .collect()
}

rquant_testkit::sweep_tests!(paths);

/// Every memory-bound row kernel of every path's table runs in the sweeps
/// (its call counter moves), so the bit-equality above covers it.
#[test]
fn memory_kernels_of_every_path_ran() {
    use rquant_core::membound::Kind;
    for isa in Isa::ALL {
        let Some(e) = ArmEngine::with_isa(isa).map(Engine::new) else {
            continue;
        };
        let k = rquant_arm::membound::kernels(isa).expect("detected");
        let before: Vec<usize> = Kind::ALL.iter().map(|&kd| k.calls(kd)).collect();
        rquant_testkit::sweep_memory_small(&e);
        for (kd, b) in Kind::ALL.iter().zip(before) {
            assert!(
                k.calls(*kd) > b,
                "{}: the {kd:?} kernel of table {} did not run",
                e.isa(),
                k.path
            );
        }
        eprintln!("{}: memory-bound kernels of table {} ran", e.isa(), k.path);
    }
}

#[test]
fn memory_ops_same_bits_for_every_thread_count() {
    for e in paths() {
        for threads in [1, 2, 3] {
            rquant_core::registry::set_num_threads(threads);
            rquant_testkit::sweep_memory_threaded(&e);
        }
        rquant_core::registry::set_num_threads(0);
    }
}
