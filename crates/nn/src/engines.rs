//! Registers every engine this build and CPU support.

use std::sync::Once;

use rquant_core::registry::register_engine;
use rquant_core::Engine;

/// Every engine available here, the reference engine last.
pub fn available() -> Vec<Engine> {
    let mut v: Vec<Engine> = Vec::new();
    v.extend(rquant_x86::engine());
    v.extend(rquant_arm::engine());
    v.push(rquant_reference::engine());
    v
}

/// Register every available engine with the core registry (idempotent).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for e in available() {
            register_engine(e);
        }
    });
}

/// Every available engine once per ISA path it can be forced to, for the
/// conformance runner and tests (engines with one path appear once).
pub fn all_paths() -> Vec<Engine> {
    let mut v: Vec<Engine> = Vec::new();
    v.extend(rquant_x86::all_paths());
    v.extend(rquant_arm::all_paths());
    v.push(rquant_reference::engine());
    v
}
