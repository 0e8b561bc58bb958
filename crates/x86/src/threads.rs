//! Threading: rayon pools sized by `rquant_core::registry::num_threads()`.
//! Work is split into tasks whose results do not depend on which thread runs
//! them, so every thread count gives the same bits.

use std::sync::{Arc, Mutex};

use rayon::prelude::*;

fn pool(n: usize) -> Arc<rayon::ThreadPool> {
    static POOLS: Mutex<Vec<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = pools.iter().find(|(k, _)| *k == n) {
        return p.clone();
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("rquant-x86-{i}"))
            .build()
            .expect("building a rayon thread pool"),
    );
    pools.push((n, p.clone()));
    p
}

/// Threads to use for `tasks` tasks.
pub(crate) fn threads_for(tasks: usize) -> usize {
    rquant_core::registry::num_threads().min(tasks).max(1)
}

/// Run `f(state, i)` for i in 0..count, on the engine's threads; `init`
/// makes per-thread scratch state.
pub(crate) fn par_for<S, I, F>(count: usize, init: I, f: F)
where
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize) + Sync + Send,
{
    let n = threads_for(count);
    if n <= 1 {
        let mut s = init();
        for i in 0..count {
            f(&mut s, i);
        }
        return;
    }
    pool(n).install(|| {
        (0..count)
            .into_par_iter()
            .for_each_init(&init, |s, i| f(s, i))
    });
}

/// Run `f(state, i, chunk_a, chunk_b)` over matching chunks of two buffers.
pub(crate) fn par_chunks2<A, B, S, I, F>(
    a: &mut [A],
    ca: usize,
    b: &mut [B],
    cb: usize,
    init: I,
    f: F,
) where
    A: Send,
    B: Send,
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize, &mut [A], &mut [B]) + Sync + Send,
{
    let count = a.len().div_ceil(ca.max(1));
    let n = threads_for(count);
    if n <= 1 {
        let mut s = init();
        for (i, (x, y)) in a.chunks_mut(ca).zip(b.chunks_mut(cb)).enumerate() {
            f(&mut s, i, x, y);
        }
        return;
    }
    pool(n).install(|| {
        a.par_chunks_mut(ca)
            .zip(b.par_chunks_mut(cb))
            .enumerate()
            .for_each_init(&init, |s, (i, (x, y))| f(s, i, x, y))
    });
}

/// Run `f(state, i, chunk)` over the `c`-element chunks of `a`.
pub(crate) fn par_chunks1<A, S, I, F>(a: &mut [A], c: usize, init: I, f: F)
where
    A: Send,
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize, &mut [A]) + Sync + Send,
{
    let count = a.len().div_ceil(c.max(1));
    let n = threads_for(count);
    if n <= 1 {
        let mut s = init();
        for (i, x) in a.chunks_mut(c).enumerate() {
            f(&mut s, i, x);
        }
        return;
    }
    pool(n).install(|| {
        a.par_chunks_mut(c)
            .enumerate()
            .for_each_init(&init, |s, (i, x)| f(s, i, x))
    });
}
