//! The x86 side of the shared int8 GEMM driver (`rquant_core::gemm::run`):
//! its tasks run on the engine's threads (`crate::threads`), with the
//! default blocking (tuned here).

use rquant_core::gemm::{ChunkFn, TaskFn, Workers};

use crate::threads::{par_chunks2, par_for, threads_for};

/// The engine's threads.
pub(crate) struct X86Workers;

impl Workers for X86Workers {
    fn threads(&self) -> usize {
        threads_for(usize::MAX)
    }
    fn chunks(&self, a: &mut [u8], ca: usize, s: &mut [i32], cs: usize, f: &ChunkFn<'_>) {
        par_chunks2(a, ca, s, cs, Vec::new, |scratch, i, x, y| {
            f(scratch, i, x, y)
        });
    }
    fn tasks(&self, count: usize, buf_len: usize, f: &TaskFn<'_>) {
        par_for(count, || vec![0i32; buf_len], |buf, i| f(buf, i));
    }
}
