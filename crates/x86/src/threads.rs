//! Threading: the engine's parallel loops, on rquant's one pool
//! ([`rquant_core::threads`]: the caller is one of the threads, at most
//! `registry::num_threads()` in all, tasks handed out dynamically, nested
//! calls inline). Work is split into tasks whose results do not depend on
//! which thread runs them, so every thread count gives the same bits.

use rquant_core::threads as pool;

/// Threads to use for `tasks` tasks (1 inside another parallel region).
pub(crate) fn threads_for(tasks: usize) -> usize {
    pool::threads_for(tasks)
}

/// Run `f(state, i)` for i in 0..count, on the engine's threads; `init`
/// makes per-thread scratch state.
pub(crate) fn par_for<S, I, F>(count: usize, init: I, f: F)
where
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize) + Sync + Send,
{
    pool::par_for(count, init, f)
}

/// Bytes of `a` per thread below which [`par_chunks2`] (activation packing)
/// stays on the calling thread: packing one image of a small conv (a few
/// tens of KiB, a few µs) costs less than handing half of it to another
/// thread.
const PACK_BYTES_PER_THREAD: usize = 64 << 10;

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
    if std::mem::size_of_val(a) < 2 * PACK_BYTES_PER_THREAD {
        let mut s = None;
        for (i, (x, y)) in a.chunks_mut(ca).zip(b.chunks_mut(cb)).enumerate() {
            f(s.get_or_insert_with(&init), i, x, y);
        }
        return;
    }
    pool::par_chunks2_mut(a, ca, b, cb, init, f)
}

/// Run `f(state, i, chunk)` over the `c`-element chunks of `a`.
pub(crate) fn par_chunks1<A, S, I, F>(a: &mut [A], c: usize, init: I, f: F)
where
    A: Send,
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize, &mut [A]) + Sync + Send,
{
    pool::par_chunks_mut(a, c, init, f)
}
