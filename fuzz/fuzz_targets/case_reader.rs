//! Any bytes given to the conformance case reader, and any case it accepts run
//! on every engine: errors are fine, panics and aborts are findings.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(case) = xtask::conformance::case::Case::parse("fuzz", data) {
        for e in rquant_nn::engines::all_paths() {
            let _ = xtask::conformance::ops::run(&case, &e);
        }
    }
});
