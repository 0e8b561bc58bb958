//! Project automation: the conformance runner (`cargo xtask conformance`),
//! benchmarks and CI helpers. The library part is what the tests call.

pub mod bench;
pub mod bench_models;
pub mod conformance;
