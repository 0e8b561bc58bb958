//! The shared XNNPACK-style testers (rquant-testkit) on every ISA path of the
//! ARM engine this CPU has (off AArch64: the portable scalar path only).
//! Bit equality with the reference engine, tolerance zero.

use std::sync::Arc;

use rquant_arm::{ArmEngine, Isa};
use rquant_core::QuantEngine;

fn paths() -> Vec<Arc<dyn QuantEngine>> {
    Isa::ALL
        .into_iter()
        .filter_map(|i| match ArmEngine::with_isa(i) {
            Some(e) => Some(Arc::new(e) as Arc<dyn QuantEngine>),
            None => {
                eprintln!("ARM path {} not available on this CPU: skipped", i.name());
                None
            }
        })
        .collect()
}

rquant_testkit::sweep_tests!(paths);
