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
