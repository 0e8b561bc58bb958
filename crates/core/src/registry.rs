//! The engine registry, mirroring `torch.backends.quantized`:
//! `supported_engines()`, `set_engine(name)`, `engine()`.
//!
//! Engines live in their own crates (which depend on core), so they are
//! registered at start-up (`rquant_nn::engines::init()` registers every engine
//! this build has). The default is the registered engine with the highest
//! priority — the fastest one the CPU supports — unless `RQUANT_ENGINE` names
//! another.

use std::sync::RwLock;

use crate::engine::Engine;
use crate::error::{QuantError, Result};

struct Registry {
    engines: Vec<Engine>,
    current: Option<Engine>,
}

static REGISTRY: RwLock<Registry> = RwLock::new(Registry {
    engines: Vec::new(),
    current: None,
});

fn read() -> std::sync::RwLockReadGuard<'static, Registry> {
    REGISTRY.read().unwrap_or_else(|e| e.into_inner())
}
fn write() -> std::sync::RwLockWriteGuard<'static, Registry> {
    REGISTRY.write().unwrap_or_else(|e| e.into_inner())
}

fn matches(e: &Engine, name: &str) -> bool {
    e.name() == name || e.aliases().contains(&name)
}

/// Register an engine (once per name; a second registration is ignored).
pub fn register_engine(engine: Engine) {
    let mut r = write();
    if r.engines.iter().any(|e| e.name() == engine.name()) {
        return;
    }
    r.engines.push(engine);
    r.engines.sort_by_key(|e| std::cmp::Reverse(e.priority()));
}

/// Names of the registered engines, the default first.
pub fn supported_engines() -> Vec<&'static str> {
    read().engines.iter().map(|e| e.name()).collect()
}

/// The registered engine called `name` (or one of its aliases).
pub fn engine_by_name(name: &str) -> Result<Engine> {
    let r = read();
    r.engines
        .iter()
        .find(|e| matches(e, name))
        .cloned()
        .ok_or_else(|| QuantError::EngineUnavailable {
            name: name.to_string(),
            available: r
                .engines
                .iter()
                .map(|e| e.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Make `name` the current engine.
pub fn set_engine(name: &str) -> Result<()> {
    let e = engine_by_name(name)?;
    write().current = Some(e);
    Ok(())
}

/// The current engine: the one set last, else `RQUANT_ENGINE`, else the
/// highest-priority registered engine.
pub fn engine() -> Result<Engine> {
    if let Some(e) = read().current.clone() {
        return Ok(e);
    }
    let e = match std::env::var("RQUANT_ENGINE") {
        Ok(name) if !name.is_empty() => engine_by_name(&name)?,
        _ => read()
            .engines
            .first()
            .cloned()
            .ok_or_else(|| QuantError::EngineUnavailable {
                name: "<default>".into(),
                available: "none registered; call rquant_nn::engines::init()".into(),
            })?,
    };
    write().current = Some(e.clone());
    Ok(e)
}

/// The ISA an engine should use at most, from `RQUANT_ISA` (lower-case).
pub fn requested_isa() -> Option<String> {
    std::env::var("RQUANT_ISA")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase())
}

static NUM_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Threads rquant may use (every parallel region, engines and float path
/// alike; see [`crate::threads`]): set by [`set_num_threads`], else
/// `RQUANT_NUM_THREADS`, else the number of CPUs (both read once, at the
/// first call). Results never depend on it.
pub fn num_threads() -> usize {
    let n = NUM_THREADS.load(std::sync::atomic::Ordering::Relaxed);
    if n > 0 {
        return n;
    }
    // Cached: `available_parallelism` reads cgroup files on every call, and
    // this is asked once per parallel region.
    static DEFAULT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::env::var("RQUANT_NUM_THREADS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// Set the number of threads rquant may use (0 restores the default).
pub fn set_num_threads(n: usize) {
    NUM_THREADS.store(n, std::sync::atomic::Ordering::Relaxed);
}
