//! The ARM side of the shared int8 GEMM driver (`rquant_core::gemm::run`):
//! its tasks run on rquant's one thread pool (`rquant_core::threads`,
//! `registry::num_threads()` threads at most, the caller among them). Every
//! output element is computed by the same instructions whatever the split,
//! so results never depend on the thread count.

use rquant_core::gemm::{self as cgemm, Blocking, ChunkFn, Gemm, Stage, TaskFn, Workers};
use rquant_core::threads as pool;

/// Run `f` over `tasks` on rquant's pool (in order on this thread when
/// `threads` is 1), collecting in order.
pub fn run_tasks<T: Send, R: Send>(
    threads: usize,
    tasks: Vec<T>,
    f: impl Fn(T) -> R + Sync + Send,
) -> Vec<R> {
    if threads <= 1 || tasks.len() <= 1 {
        tasks.into_iter().map(f).collect()
    } else {
        pool::par_map_vec(tasks, f)
    }
}

/// The driver's tasks on at most `threads` threads of rquant's pool (on
/// the calling thread alone when 1).
pub(crate) struct ArmWorkers {
    pub threads: usize,
}

impl Workers for ArmWorkers {
    fn threads(&self) -> usize {
        self.threads
    }
    fn chunks(&self, a: &mut [u8], ca: usize, s: &mut [i32], cs: usize, f: &ChunkFn<'_>) {
        if self.threads <= 1 {
            let mut scratch = Vec::new();
            for (i, (x, y)) in a.chunks_mut(ca).zip(s.chunks_mut(cs)).enumerate() {
                f(&mut scratch, i, x, y);
            }
            return;
        }
        pool::par_chunks2_mut(a, ca, s, cs, Vec::new, |scratch, i, x, y| {
            f(scratch, i, x, y)
        });
    }
    fn tasks(&self, count: usize, buf_len: usize, f: &TaskFn<'_>) {
        if self.threads <= 1 {
            let mut buf = vec![0i32; buf_len];
            (0..count).for_each(|i| f(&mut buf, i));
            return;
        }
        pool::par_for(count, || vec![0i32; buf_len], |buf, i| f(buf, i));
    }
}

/// The shared driver's blocking, with the ARM engine's own threshold for
/// splitting work over threads (64K multiply-accumulates, as before the
/// driver was shared; never measured on hardware).
const BLOCKING: Blocking = Blocking {
    serial_macs: 1 << 16,
    ..Blocking::DEFAULT
};

/// Run one GEMM on `threads` threads.
pub(crate) fn run<S: Stage>(g: &Gemm<'_, S>, threads: usize) {
    cgemm::run(g, &ArmWorkers { threads }, &BLOCKING);
}

#[cfg(test)]
mod tests {
    //! Every packed layout through the shared driver against a naive loop,
    //! zero points included (off AArch64 the SIMD layouts run on their
    //! scalar twins).
    use super::*;
    use crate::output::{shifted, FloatStage, RawOut};
    use rquant_core::gemm::{PackedB, Store};
    use rquant_core::output::Dequant;

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn layouts_match_naive() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut tables: Vec<(crate::isa::Isa, rquant_core::gemm::Table)> =
            crate::table::twin_tables().into();
        if cfg!(target_arch = "aarch64") {
            tables.extend(
                crate::isa::Isa::ALL
                    .into_iter()
                    .filter(|i| i.detected())
                    .map(|i| (i, crate::table::gemm_table(i))),
            );
        }
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (8, 8, 8),
            (9, 17, 33),
            (17, 9, 4),
            (16, 24, 100),
            // Several of the driver's k-blocks (1536 k for c1, 3072 for c4/c8).
            (5, 9, 3100),
        ];
        for &(m, n, k) in &shapes {
            for &xz in &[0i32, 128, 255, 37] {
                let a: Vec<u8> = (0..m * k).map(|_| rng(&mut seed) as u8).collect();
                let w: Vec<i8> = (0..n * k).map(|_| rng(&mut seed) as i8).collect();
                let wz: Vec<i64> = (0..n).map(|_| (rng(&mut seed) as i8) as i64).collect();
                let mut want = vec![0f32; m * n];
                for i in 0..m {
                    for j in 0..n {
                        let mut acc = 0i32;
                        for t in 0..k {
                            acc = acc.wrapping_add(
                                (a[i * k + t] as i32 - xz) * (w[j * k + t] as i32 - wz[j] as i32),
                            );
                        }
                        want[i * n + j] = acc as f32;
                    }
                }
                let col_sums = rquant_core::output::col_sums(&w, k);
                let qp: Vec<(f64, i64)> = wz.iter().map(|&z| (1.0, z)).collect();
                let d = Dequant::new(k, &col_sums, &qp, 1.0, xz as i64);
                for (isa, table) in &tables {
                    let b = PackedB::new(*table, &w, n, k);
                    let layout = b.select(|| 255);
                    for threads in [1, 3] {
                        let mut got = Vec::with_capacity(m * n);
                        let stage = FloatStage {
                            caps: isa.caps(),
                            d: &d,
                            colterm: shifted(&d.zp, layout.kernel.a_shift, &col_sums),
                            bias: None,
                            out: RawOut::uninit(&mut got.spare_capacity_mut()[..m * n]),
                            store: Store::Rows { base: 0, ld: n },
                        };
                        let fill = |i: usize, dst: &mut [u8]| dst.copy_from_slice(&a[i * k..][..k]);
                        run(
                            &Gemm {
                                b: &b,
                                layout,
                                m,
                                fill: &fill,
                                row_sums: true,
                                stage: &stage,
                            },
                            threads,
                        );
                        // SAFETY: the GEMM wrote every element.
                        unsafe { got.set_len(m * n) };
                        assert_eq!(
                            got, want,
                            "{isa:?} {} m={m} n={n} k={k} xz={xz}",
                            layout.kernel.name
                        );
                    }
                }
            }
        }
    }
}
