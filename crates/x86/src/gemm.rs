//! The int8 GEMM driver: pack the activations (row sums fused, optionally
//! quantizing on the fly), then run the microkernel over cache blocks of
//! output tiles on the engine's threads, finishing each tile with the output
//! pipeline while it is hot.
//!
//! Blocking: a task owns a block of columns (NC) × a block of rows (as many
//! as fit [`A_BLOCK_BYTES`] of packed activations, which stay in L2). For
//! each weight micro-panel it walks K in blocks of [`B_BLOCK_BYTES`] (which
//! stay in L1 across all row panels), accumulating onto the int32 tiles; the
//! epilogue runs once K is done. Tasks are numbered column-block major, so
//! consecutive tasks reuse the same weights.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::kernels::output::Epilogue;
use crate::kernels::{gemm_u8i8, gemm_u8i8_narrow};
use crate::pack::{pack_a_rows, PackedB};
use crate::threads::{par_chunks2, par_for, threads_for};

/// Weight bytes of one micro-panel k-block (kept in L1 with an activation panel).
const B_BLOCK_BYTES: usize = 24 * 1024;
/// Packed activation bytes of one row block (kept in L2).
const A_BLOCK_BYTES: usize = 384 * 1024;
/// Columns per task (a multiple of every NR).
const NC: usize = 128;
/// GEMMs smaller than this (in multiply-accumulates) run as one task.
const SERIAL_MACS: usize = 8 << 20;

/// `C[m, n] = epilogue(Σ_k A[m,k]·B[n,k])` for `m` activation rows produced
/// by `fill(row, dst)` (K u8 values each, none above `x_max`) and the
/// prepacked weights `b`.
pub(crate) fn gemm<E: Epilogue>(
    b: &PackedB,
    m: usize,
    x_max: u8,
    fill: &(dyn Fn(usize, &mut [u8]) + Sync),
    epi: &E,
) {
    // AVX2: the `vpmaddubsw` kernel when it provably cannot saturate.
    let narrow = b.narrow.as_ref().filter(|nw| nw.exact_for(x_max));
    let t = narrow.map_or(b.tile, |nw| nw.tile);
    let k = b.k;
    let ku = t.units(k);
    let mpanels = m.div_ceil(t.mr);
    let lda = t.a_row_bytes(k);
    let pa = lda * t.mr;
    // Reused per-thread buffers: a fresh multi-MB allocation per call costs
    // page faults whenever the allocator returns it to the OS.
    let mut abuf = take_buffer(&A_BUF, mpanels * pa);
    let mut sums = vec![0i32; mpanels * t.mr];
    par_chunks2(
        &mut abuf,
        pa,
        &mut sums,
        t.mr,
        Vec::new,
        |scratch, p, panel, s| {
            let row0 = p * t.mr;
            pack_a_rows(
                t,
                k,
                row0,
                t.mr.min(m - row0),
                fill,
                panel,
                s,
                !b.zw_all_zero,
                scratch,
            );
        },
    );

    let kub = (B_BLOCK_BYTES / (t.nr * 4)).max(1);
    // Below ~8M multiply-accumulates (M = 8 at 768²) waking a second thread
    // costs more than it saves: one task then covers every column.
    let small = m * k * b.n < SERIAL_MACS;
    let nc = if small { b.n } else { NC }.div_ceil(t.nr) * t.nr;
    let nblocks = b.n.div_ceil(nc);
    let mut panels_per_block = (A_BLOCK_BYTES / pa).clamp(1, mpanels);
    // Enough tasks to balance the threads: at least four per thread (with
    // one or two per thread, 3 tasks on 2 threads capped the speed-up at 1.5).
    let threads = threads_for(usize::MAX);
    let want = if threads > 1 && !small {
        4 * threads
    } else {
        1
    };
    while nblocks * mpanels.div_ceil(panels_per_block) < want && panels_per_block > 1 {
        panels_per_block = panels_per_block.div_ceil(2);
    }
    let mc = panels_per_block * t.mr;
    let mblocks = m.div_ceil(mc);
    let (a, sums) = (&abuf, &sums);
    let ub = t.nr * 4;
    par_for(
        mblocks * nblocks,
        || vec![0i32; mc * t.nr],
        |cbuf, task| {
            let (nb, mb) = (task / mblocks, task % mblocks);
            let (m_lo, m_hi) = (mb * mc, (mb * mc + mc).min(m));
            let (n_lo, n_hi) = (nb * nc, (nb * nc + nc).min(b.n));
            for n0 in (n_lo..n_hi).step_by(t.nr) {
                let ncols = t.nr.min(n_hi - n0);
                let bp = match narrow {
                    Some(nw) => nw.panel(n0 / t.nr, k),
                    None => b.panel(n0 / t.nr),
                };
                for kb in (0..ku).step_by(kub) {
                    let kn = kub.min(ku - kb);
                    for (i, m0) in (m_lo..m_hi).step_by(t.mr).enumerate() {
                        let p = m0 / t.mr;
                        let kernel = if narrow.is_some() {
                            gemm_u8i8_narrow
                        } else {
                            gemm_u8i8
                        };
                        kernel(
                            b.isa,
                            t.mr.min(m_hi - m0),
                            kn,
                            &a[p * pa + kb * 4..],
                            lda,
                            &bp[kb * ub..],
                            &mut cbuf[i * t.mr * t.nr..(i + 1) * t.mr * t.nr],
                            kb == 0,
                        );
                    }
                }
                for (i, m0) in (m_lo..m_hi).step_by(t.mr).enumerate() {
                    let mrows = t.mr.min(m_hi - m0);
                    let tile = &cbuf[i * t.mr * t.nr..(i + 1) * t.mr * t.nr];
                    epi.apply(tile, t.nr, m0, mrows, n0, ncols, &sums[m0..m0 + mrows]);
                }
            }
        },
    );
    give_back(&A_BUF, abuf);
}

thread_local! {
    /// The packed-activation buffer of the last GEMM on this thread.
    pub(crate) static A_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The thread's buffer in `key`, resized to `len` (contents unspecified).
pub(crate) fn take_buffer(key: &'static LocalKey<RefCell<Vec<u8>>>, len: usize) -> Vec<u8> {
    let mut v = key.with(|c| std::mem::take(&mut *c.borrow_mut()));
    v.resize(len, 0);
    v
}

/// Return a buffer taken with [`take_buffer`] for the next call.
pub(crate) fn give_back(key: &'static LocalKey<RefCell<Vec<u8>>>, v: Vec<u8>) {
    key.with(|c| *c.borrow_mut() = v);
}
