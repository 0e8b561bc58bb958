//! One thread pool for all of rquant: the engines' GEMMs and convolutions,
//! the float path (calibration, fp32 inference, training) and the models'
//! batch- or text-level parallelism all run their parallel regions here.
//!
//! The contract:
//! - **The caller is one of the workers.** A region with `n` threads runs on
//!   the calling thread plus at most `n − 1` pool workers; the caller starts
//!   on the tasks at once and never waits for a worker to wake up.
//! - **`n` is bounded by [`num_threads`]** (`RQUANT_NUM_THREADS`, or
//!   [`registry::set_num_threads`](crate::registry::set_num_threads)), and the
//!   pool starts at most `num_threads() − 1` workers (the largest count ever
//!   asked for): no other thread runs rquant work.
//! - **Tasks are handed out dynamically**, one at a time, from a counter
//!   shared by the region's threads. A worker that is descheduled (another
//!   process busy on its core) holds back at most the one task it is running:
//!   the caller and the other workers take the rest.
//! - **Results never depend on which thread runs which task.** Every user
//!   splits its work into tasks whose results are independent of the split
//!   and of the order; per-thread state (`init`) is scratch only.
//! - **Nested regions run inline**: a parallel call made from inside a task
//!   (or from a pool worker) runs serially on that thread, so regions never
//!   wait on each other. A region asked for while another caller's region is
//!   running also runs serially on its caller.
//! - **Panics propagate**: a panic in a task (on any thread) stops the
//!   region from handing out further tasks; the caller waits for the threads
//!   still inside the region, then resumes the first panic. Workers survive.
//! - **Idle workers sleep promptly**: after a region a worker polls for the
//!   next one for a short, bounded time ([`DEFAULT_SPIN_US`] µs), then sleeps
//!   on a condition variable until a region needs it. Between polls it gives
//!   its CPU away (`sched_yield`), so it never delays a thread that shares
//!   that CPU: the kernel may well put a woken worker on its caller's CPU
//!   (measured on this repository's 2-vCPU VM: with plain spinning there, 2
//!   threads ran the MNIST CNN 6–40% slower than 1). A caller waiting for
//!   its workers' last tasks polls the same way, then sleeps.
//!
//! Written with `std` only (a mutex, two condition variables and atomics).

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Microseconds an idle worker polls for the next region before it sleeps
/// (`RQUANT_SPIN_US` overrides; 0 sleeps at once). Regions of one op follow
/// each other within a few microseconds (packing, then the GEMM); a worker
/// woken from sleep joins 20–40 µs late on a VM.
pub const DEFAULT_SPIN_US: u64 = 50;

/// Microseconds a caller polls for the tasks its workers still run before it
/// sleeps until the last one leaves (sleeping also frees its core, to which
/// the kernel may then move a worker that another process preempted).
const CALLER_SPIN_US: u64 = 50;

/// Claims per thread a region aims at: consecutive tasks are claimed
/// together when there are more than this many per thread, so tiny tasks
/// (a packed activation panel) do not each pay for a claim, while a thread
/// that stalls holds back at most about 1/(this × threads) of the work.
const CLAIMS_PER_THREAD: usize = 16;

/// Tasks per claim for `count` tasks on `n` threads.
fn grain(count: usize, n: usize) -> usize {
    (count / (CLAIMS_PER_THREAD * n)).max(1)
}

/// Threads a parallel region may use: [`crate::registry::num_threads`].
pub fn num_threads() -> usize {
    crate::registry::num_threads()
}

/// Threads a region of `tasks` tasks would use (1 when it runs inline).
pub fn threads_for(tasks: usize) -> usize {
    if in_parallel() {
        1
    } else {
        num_threads().min(tasks).max(1)
    }
}

/// True on a thread that is running a task of a parallel region (parallel
/// calls made here run inline).
pub fn in_parallel() -> bool {
    IN_REGION.with(Cell::get)
}

/// Worker threads the pool has started and not stopped.
pub fn pool_threads() -> usize {
    lock(&POOL.state).workers.len()
}

/// Run `f(state, i)` for every `i` in `0..count`, on up to
/// [`threads_for`]`(count)` threads. Each thread that runs at least one task
/// makes its own `state` with `init` first.
pub fn par_for<S, I, F>(count: usize, init: I, f: F)
where
    I: Fn() -> S + Sync,
    F: Fn(&mut S, usize) + Sync,
{
    let n = threads_for(count);
    if n <= 1 {
        let mut s = None;
        for i in 0..count {
            f(s.get_or_insert_with(&init), i);
        }
        return;
    }
    let per = grain(count, n);
    let next = Line(AtomicUsize::new(0));
    drive(
        n,
        &|| {
            let lo = next.fetch_add(1, Ordering::Relaxed).saturating_mul(per);
            (lo < count).then(|| lo..count.min(lo + per))
        },
        &init,
        &|s, r| r.for_each(|i| f(s, i)),
    );
}

/// Run `f(state, item)` for every item of `items`, handed out one at a time
/// to up to [`threads_for`]`(items.len())` threads (one lock per item: for
/// few, coarse items).
pub fn par_items<T, It, S, I, F>(items: It, init: I, f: F)
where
    It: ExactSizeIterator<Item = T> + Send,
    I: Fn() -> S + Sync,
    F: Fn(&mut S, T) + Sync,
{
    let n = threads_for(items.len());
    if n <= 1 {
        let mut s = None;
        for t in items {
            f(s.get_or_insert_with(&init), t);
        }
        return;
    }
    let items = Mutex::new(items);
    drive(n, &|| lock(&items).next(), &init, &f);
}

/// Run `f(state, i, chunk)` over the `chunk`-element chunks of `a` (the last
/// may be shorter).
pub fn par_chunks_mut<A, S, I, F>(a: &mut [A], chunk: usize, init: I, f: F)
where
    A: Send,
    I: Fn() -> S + Sync,
    F: Fn(&mut S, usize, &mut [A]) + Sync,
{
    let chunk = chunk.max(1);
    let per = grain(a.len().div_ceil(chunk), num_threads());
    par_items(
        a.chunks_mut(per * chunk).enumerate(),
        init,
        |s, (b, block)| {
            for (j, c) in block.chunks_mut(chunk).enumerate() {
                f(s, b * per + j, c)
            }
        },
    );
}

/// Run `f(state, i, chunk_a, chunk_b)` over matching chunks of two buffers
/// (as many tasks as the shorter chunk sequence).
pub fn par_chunks2_mut<A, B, S, I, F>(a: &mut [A], ca: usize, b: &mut [B], cb: usize, init: I, f: F)
where
    A: Send,
    B: Send,
    I: Fn() -> S + Sync,
    F: Fn(&mut S, usize, &mut [A], &mut [B]) + Sync,
{
    let (ca, cb) = (ca.max(1), cb.max(1));
    let count = a.len().div_ceil(ca).min(b.len().div_ceil(cb));
    let per = grain(count, num_threads());
    let it = a.chunks_mut(per * ca).zip(b.chunks_mut(per * cb));
    par_items(it.enumerate(), init, |s, (k, (x, y))| {
        for (j, (x, y)) in x.chunks_mut(ca).zip(y.chunks_mut(cb)).enumerate() {
            f(s, k * per + j, x, y)
        }
    });
}

/// `[f(0), f(1), …, f(count − 1)]`, computed in parallel.
pub fn par_map<T, F>(count: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize) -> T + Sync,
{
    let mut out: Vec<Option<T>> = (0..count).map(|_| None).collect();
    par_chunks_mut(&mut out, 1, || (), |_, i, o| o[0] = Some(f(i)));
    out.into_iter()
        .map(|o| o.expect("every task of a finished region ran"))
        .collect()
}

/// `items` mapped through `f` in parallel, in order.
pub fn par_map_vec<T, R, F>(items: Vec<T>, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    par_items(
        items.into_iter().zip(out.iter_mut()),
        || (),
        |_, (t, o)| *o = Some(f(t)),
    );
    out.into_iter()
        .map(|o| o.expect("every task of a finished region ran"))
        .collect()
}

/// Stop the pool's workers and wait for them to exit (a region running on
/// another thread finishes first; regions asked for meanwhile run inline).
/// The next parallel region starts workers again. Useful where threads must
/// not outlive a phase, e.g. at the end of a test under Miri, which reports
/// threads still running when `main` returns.
pub fn shutdown() {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = lock(&ONE_AT_A_TIME);
    let handles = {
        let mut st = lock(&POOL.state);
        st.stop = true;
        POOL.epoch.fetch_add(1, Ordering::Release);
        std::mem::take(&mut st.workers)
    };
    POOL.wake.notify_all();
    for h in handles {
        let _ = h.join();
    }
    lock(&POOL.state).stop = false;
}

// ------------------------------------------------------------------ the pool

thread_local! {
    /// True while this thread runs tasks of a region; always on a worker.
    static IN_REGION: Cell<bool> = const { Cell::new(false) };
}

/// One parallel region, on its caller's stack.
struct Region<'a> {
    /// Every participant calls it once: it claims and runs tasks until none
    /// are left (or a task panicked).
    work: &'a (dyn Fn() + Sync + 'a),
    /// Workers that joined and have not left.
    active: AtomicUsize,
    /// The first panic of a worker.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// The region workers may join.
struct Open {
    region: &'static Region<'static>,
    /// Worker slots left (the region's thread count − 1 − joined).
    free: usize,
    /// The region's number (`Pool::epoch` when it opened).
    epoch: u64,
}

struct State {
    open: Option<Open>,
    workers: Vec<JoinHandle<()>>,
    /// Workers waiting on `Pool::wake`.
    sleeping: usize,
    /// Callers waiting on `Pool::done`.
    waiting: usize,
    /// Set by [`shutdown`]: workers exit.
    stop: bool,
}

struct Pool {
    state: Mutex<State>,
    /// Idle workers sleep here.
    wake: Condvar,
    /// A caller sleeps here until its region's last worker leaves.
    done: Condvar,
    /// Bumped (under `state`) when a region opens or the pool stops; idle
    /// workers poll it before they sleep.
    epoch: AtomicU64,
}

static POOL: Pool = Pool {
    state: Mutex::new(State {
        open: None,
        workers: Vec::new(),
        sleeping: 0,
        waiting: 0,
        stop: false,
    }),
    wake: Condvar::new(),
    done: Condvar::new(),
    epoch: AtomicU64::new(0),
};

/// Nothing runs user code while holding a lock of this module, so a
/// poisoned lock still guards consistent data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How the pool waits; see [`set_wait_policy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitPolicy {
    /// Microseconds an idle worker polls for the next region before sleeping.
    pub worker_spin_us: u64,
    /// Microseconds a caller polls for its workers' last tasks before sleeping.
    pub caller_spin_us: u64,
    /// Give the CPU away (`sched_yield`) between polls, so a thread that
    /// shares this CPU runs meanwhile.
    pub yield_between_polls: bool,
}

static WORKER_SPIN: AtomicU64 = AtomicU64::new(u64::MAX);
static CALLER_SPIN: AtomicU64 = AtomicU64::new(CALLER_SPIN_US);
static POLL_YIELD: AtomicBool = AtomicBool::new(true);

/// Change how the pool waits (for measurements; the defaults are measured).
#[doc(hidden)]
pub fn set_wait_policy(p: WaitPolicy) {
    WORKER_SPIN.store(p.worker_spin_us, Ordering::Relaxed);
    CALLER_SPIN.store(p.caller_spin_us, Ordering::Relaxed);
    POLL_YIELD.store(p.yield_between_polls, Ordering::Relaxed);
}

/// The current wait policy.
#[doc(hidden)]
pub fn wait_policy() -> WaitPolicy {
    WaitPolicy {
        worker_spin_us: spin_limit().as_micros() as u64,
        caller_spin_us: CALLER_SPIN.load(Ordering::Relaxed),
        yield_between_polls: POLL_YIELD.load(Ordering::Relaxed),
    }
}

fn spin_limit() -> Duration {
    let mut us = WORKER_SPIN.load(Ordering::Relaxed);
    if us == u64::MAX {
        us = std::env::var("RQUANT_SPIN_US")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&v| v != u64::MAX)
            .unwrap_or(DEFAULT_SPIN_US);
        WORKER_SPIN.store(us, Ordering::Relaxed);
    }
    Duration::from_micros(us)
}

fn caller_spin() -> Duration {
    Duration::from_micros(CALLER_SPIN.load(Ordering::Relaxed))
}

/// Poll `done()` for up to `limit`; true if it became true.
fn spin_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    if limit.is_zero() {
        return done();
    }
    let y = POLL_YIELD.load(Ordering::Relaxed);
    let t0 = Instant::now();
    loop {
        for _ in 0..16 {
            if done() {
                return true;
            }
            std::hint::spin_loop();
        }
        if y {
            thread::yield_now();
        }
        if t0.elapsed() >= limit {
            return done();
        }
    }
}

/// Sets the flag for the current thread and restores it on drop (also when
/// unwinding).
struct InRegion(bool);
impl InRegion {
    fn enter() -> Self {
        InRegion(IN_REGION.with(|f| f.replace(true)))
    }
}
impl Drop for InRegion {
    fn drop(&mut self) {
        IN_REGION.with(|f| f.set(self.0));
    }
}

/// A value alone on its cache line (the task counter is written by every
/// claim; the stop flag is read before each).
#[repr(align(128))]
struct Line<T>(T);
impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// On unwinding out of a participant, stop the region handing out tasks.
struct StopOnPanic<'a>(&'a AtomicBool);
impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// Run a region of `n ≥ 2` threads whose tasks come from `claim`.
fn drive<T, S>(
    n: usize,
    claim: &(dyn Fn() -> Option<T> + Sync),
    init: &(dyn Fn() -> S + Sync),
    f: &(dyn Fn(&mut S, T) + Sync),
) {
    let stopped = Line(AtomicBool::new(false));
    let work = || {
        let _stop = StopOnPanic(&stopped);
        let mut s = None;
        while !stopped.load(Ordering::Relaxed) {
            let Some(t) = claim() else { break };
            f(s.get_or_insert_with(init), t);
        }
    };
    run(n, &work);
}

/// Run `work` on the caller and on up to `n − 1` workers; returns when every
/// thread has left it, resuming the first panic.
fn run(n: usize, work: &(dyn Fn() + Sync)) {
    let region = Region {
        work,
        active: AtomicUsize::new(0),
        panic: Mutex::new(None),
    };
    // SAFETY: the `'static` reference is only stored in `POOL.state.open` and
    // used by workers that joined through it. Before this function returns or
    // unwinds past `region` it (1) removes it from `open` under the lock, so
    // no worker joins afterwards (joining happens under the same lock), and
    // (2) waits until `active` is 0, i.e. every worker that joined has
    // finished calling `work` and will not touch the region again (a worker
    // reads nothing of the region after its decrement of `active`). Nothing
    // between opening and those two steps can unwind: the caller's own call of
    // `work` runs under `catch_unwind`.
    let shared = unsafe { std::mem::transmute::<&Region<'_>, &'static Region<'static>>(&region) };
    let slots = {
        let mut st = lock(&POOL.state);
        if st.open.is_some() || st.stop {
            // Another caller's region is running (or the pool is stopping):
            // run this one inline.
            drop(st);
            let _in = InRegion::enter();
            work();
            return;
        }
        while st.workers.len() < n - 1 {
            let i = st.workers.len();
            match thread::Builder::new()
                .name(format!("rquant-{i}"))
                .spawn(worker)
            {
                Ok(h) => st.workers.push(h),
                Err(_) => break,
            }
        }
        let slots = (n - 1).min(st.workers.len());
        if slots > 0 {
            let epoch = POOL.epoch.fetch_add(1, Ordering::Release) + 1;
            st.open = Some(Open {
                region: shared,
                free: slots,
                epoch,
            });
        }
        let wake = st.sleeping.min(slots);
        drop(st);
        for _ in 0..wake {
            POOL.wake.notify_one();
        }
        slots
    };
    let mine = {
        let _in = InRegion::enter();
        panic::catch_unwind(AssertUnwindSafe(work))
    };
    if slots > 0 {
        lock(&POOL.state).open = None;
        let left = || region.active.load(Ordering::Acquire) == 0;
        if !spin_until(caller_spin(), left) {
            let mut st = lock(&POOL.state);
            st.waiting += 1;
            while !left() {
                st = POOL.done.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            st.waiting -= 1;
        }
    }
    if let Err(p) = mine {
        panic::resume_unwind(p);
    }
    let theirs = lock(&region.panic).take();
    if let Some(p) = theirs {
        panic::resume_unwind(p);
    }
}

/// A pool worker: join open regions, poll briefly after each, sleep.
fn worker() {
    IN_REGION.with(|f| f.set(true));
    let mut seen = 0u64;
    let mut st = lock(&POOL.state);
    loop {
        if st.stop {
            return;
        }
        let joined = match st.open.as_mut() {
            Some(o) if o.epoch != seen && o.free > 0 => {
                seen = o.epoch;
                o.free -= 1;
                o.region.active.fetch_add(1, Ordering::Relaxed);
                Some(o.region)
            }
            _ => None,
        };
        let Some(r) = joined else {
            st.sleeping += 1;
            st = POOL.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.sleeping -= 1;
            continue;
        };
        drop(st);
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(r.work)) {
            lock(&r.panic).get_or_insert(p);
        }
        // Leave: after this decrement the region may be gone.
        if r.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            let st = lock(&POOL.state);
            if st.waiting > 0 {
                POOL.done.notify_all();
            }
        }
        spin_until(spin_limit(), || POOL.epoch.load(Ordering::Acquire) != seen);
        st = lock(&POOL.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicU32;

    /// The thread count is process-wide: the pool tests run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn with_threads(n: usize, body: impl FnOnce()) {
        let _one = lock(&SERIAL);
        crate::registry::set_num_threads(n);
        body();
        crate::registry::set_num_threads(0);
        shutdown();
        assert_eq!(pool_threads(), 0);
    }

    const TASKS: usize = if cfg!(miri) { 24 } else { 400 };

    /// Some work whose result is independent of the thread.
    fn work(i: usize) -> u64 {
        let mut x = i as u64 + 1;
        for _ in 0..if cfg!(miri) { 10 } else { 2000 } {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
        x
    }

    #[test]
    fn same_results_for_every_thread_count() {
        let want: Vec<u64> = (0..TASKS).map(work).collect();
        for n in [1, 2, 3, 5] {
            with_threads(n, || {
                assert_eq!(par_map(TASKS, work), want, "{n} threads");
                let mut out = vec![0u64; TASKS];
                par_chunks_mut(
                    &mut out,
                    7,
                    || (),
                    |_, c, chunk| {
                        for (j, o) in chunk.iter_mut().enumerate() {
                            *o = work(c * 7 + j);
                        }
                    },
                );
                assert_eq!(out, want, "{n} threads, chunks");
                let v = par_map_vec((0..TASKS).collect(), work);
                assert_eq!(v, want, "{n} threads, map_vec");
            });
        }
    }

    #[test]
    fn no_more_threads_than_asked_and_the_caller_works() {
        let caller = thread::current().id();
        // Start more workers first: a smaller region must still use only its n.
        with_threads(5, || {
            for n in [5, 3, 2] {
                crate::registry::set_num_threads(n);
                let seen = Mutex::new(HashSet::new());
                par_for(
                    TASKS,
                    || (),
                    |_, _| {
                        lock(&seen).insert(thread::current().id());
                        thread::sleep(Duration::from_micros(50));
                    },
                );
                let s = lock(&seen);
                assert!(s.len() <= n, "{} threads ran a {n}-thread region", s.len());
                assert!(s.contains(&caller), "the caller ran no task");
                assert!(
                    pool_threads() <= 4,
                    "{} workers for at most 5 threads",
                    pool_threads()
                );
            }
        });
    }

    #[test]
    fn nested_regions_run_inline() {
        with_threads(3, || {
            let total = AtomicU32::new(0);
            par_for(
                8,
                || (),
                |_, _| {
                    let me = thread::current().id();
                    let inner = Mutex::new(HashSet::new());
                    par_for(
                        16,
                        || (),
                        |_, _| {
                            lock(&inner).insert(thread::current().id());
                            total.fetch_add(1, Ordering::Relaxed);
                        },
                    );
                    assert_eq!(*lock(&inner), HashSet::from([me]));
                    assert_eq!(threads_for(100), 1);
                },
            );
            assert_eq!(total.load(Ordering::Relaxed), 8 * 16);
        });
    }

    #[test]
    fn a_panic_in_a_task_reaches_the_caller() {
        with_threads(3, || {
            // On the caller's thread.
            let r = panic::catch_unwind(|| {
                par_for(
                    TASKS,
                    || (),
                    |_, i| {
                        if i == TASKS / 2 {
                            panic!("task {i} failed");
                        }
                    },
                )
            });
            let msg = r.expect_err("the panic must reach the caller");
            assert!(msg.downcast_ref::<String>().unwrap().contains("failed"));
            // On a worker's thread.
            let caller = thread::current().id();
            let r = panic::catch_unwind(|| {
                par_for(
                    TASKS,
                    || (),
                    |_, _| {
                        if thread::current().id() != caller {
                            panic!("worker task failed");
                        }
                        thread::sleep(Duration::from_micros(200));
                    },
                )
            });
            let msg = r.expect_err("a worker's panic must reach the caller");
            assert_eq!(*msg.downcast_ref::<&str>().unwrap(), "worker task failed");
            // The pool still works.
            let want: Vec<u64> = (0..TASKS).map(work).collect();
            assert_eq!(par_map(TASKS, work), want);
        });
    }

    #[test]
    fn a_stalled_thread_does_not_hold_the_region() {
        // The first worker to run a task stalls in it (as if descheduled)
        // until the caller and the other worker have run every task but the
        // ones of its own claim; with a static split they never could.
        with_threads(3, || {
            let caller = thread::current().id();
            let per = grain(TASKS, 3);
            let stalled = Mutex::new(None);
            let done = AtomicUsize::new(0);
            let others_finished = AtomicBool::new(false);
            let by_stalled = AtomicUsize::new(0);
            par_for(
                TASKS,
                || (),
                |_, _| {
                    let me = thread::current().id();
                    let first = me != caller && {
                        let mut s = lock(&stalled);
                        s.is_none() && s.insert(me) == &me
                    };
                    if first {
                        let t0 = Instant::now();
                        while t0.elapsed() < Duration::from_secs(60) {
                            if done.load(Ordering::SeqCst) == TASKS - per {
                                others_finished.store(true, Ordering::SeqCst);
                                break;
                            }
                            thread::sleep(Duration::from_micros(100));
                        }
                    } else {
                        thread::sleep(Duration::from_micros(20));
                    }
                    if Some(me) == *lock(&stalled) {
                        by_stalled.fetch_add(1, Ordering::SeqCst);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                },
            );
            assert_eq!(done.into_inner(), TASKS);
            if lock(&stalled).is_none() {
                // (Miri's scheduler may let the caller run every task.)
                if cfg!(miri) {
                    return;
                }
                panic!("no worker ran a task");
            }
            assert!(
                others_finished.into_inner(),
                "the other threads did not take the stalled worker's tasks"
            );
            assert_eq!(by_stalled.into_inner(), per);
        });
    }

    #[test]
    fn concurrent_callers_each_finish() {
        with_threads(3, || {
            let want: Vec<u64> = (0..TASKS).map(work).collect();
            thread::scope(|s| {
                for _ in 0..3 {
                    s.spawn(|| {
                        for _ in 0..if cfg!(miri) { 2 } else { 20 } {
                            assert_eq!(par_map(TASKS, work), want);
                        }
                    });
                }
            });
        });
    }
}
