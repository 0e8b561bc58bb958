//! Benchmarks (criterion) live in benches/benches.
