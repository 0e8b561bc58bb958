//! The int8 GEMM driver: pack the activations (row sums fused, optionally
//! quantizing on the fly), then run the microkernel over cache blocks of
//! output tiles on the engine's threads, finishing each tile with the output
//! pipeline while it is in L1.

use crate::kernels::output::Epilogue;
use crate::kernels::{gemm_u8i8, AccTile};
use crate::pack::{pack_a_panel, PackedB, MAX_MR, MAX_NR};
use crate::threads::{par_chunks2, par_for};

/// Rows per cache block of activations (a multiple of every MR).
const MC: usize = 96;
/// Columns per cache block of weights (a multiple of every NR).
const NC: usize = 128;

/// `C[m, n] = epilogue(Σ_k A[m,k]·B[n,k])` for `m` activation rows produced
/// by `fill(row, dst)` (K u8 values each) and the prepacked weights `b`.
pub(crate) fn gemm<E: Epilogue>(
    b: &PackedB,
    m: usize,
    fill: &(dyn Fn(usize, &mut [u8]) + Sync),
    epi: &E,
) {
    let t = b.tile;
    let k = b.k;
    let ku = t.units(k);
    let mpanels = m.div_ceil(t.mr);
    let pa = t.a_panel_bytes(k);
    let mut a = vec![0u8; mpanels * pa];
    let mut sums = vec![0i32; mpanels * t.mr];
    par_chunks2(
        &mut a,
        pa,
        &mut sums,
        t.mr,
        Vec::new,
        |scratch, p, panel, s| {
            let row0 = p * t.mr;
            pack_a_panel(t, k, row0, t.mr.min(m - row0), fill, panel, s, scratch);
        },
    );

    let mc = MC.div_ceil(t.mr) * t.mr;
    let nc = NC.div_ceil(t.nr) * t.nr;
    let mblocks = m.div_ceil(mc);
    let nblocks = b.n.div_ceil(nc);
    let (a, sums) = (&a, &sums);
    par_for(
        mblocks * nblocks,
        || Box::new([0i32; MAX_MR * MAX_NR]) as Box<AccTile>,
        |acc, task| {
            let (mb, nb) = (task / nblocks, task % nblocks);
            let (m_lo, m_hi) = (mb * mc, (mb * mc + mc).min(m));
            let (n_lo, n_hi) = (nb * nc, (nb * nc + nc).min(b.n));
            for n0 in (n_lo..n_hi).step_by(t.nr) {
                let ncols = t.nr.min(n_hi - n0);
                let bp = b.panel(n0 / t.nr);
                for m0 in (m_lo..m_hi).step_by(t.mr) {
                    let mrows = t.mr.min(m_hi - m0);
                    let p = m0 / t.mr;
                    gemm_u8i8(b.isa, mrows, ku, &a[p * pa..(p + 1) * pa], bp, acc);
                    epi.apply(acc, t.nr, m0, mrows, n0, ncols, &sums[m0..m0 + mrows]);
                }
            }
        },
    );
}
