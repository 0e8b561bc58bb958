//! The x86 side of the shared int8 GEMM driver (`rquant_core::gemm::run`):
//! its tasks run on the engine's threads (`crate::threads`), with the
//! default blocking (tuned here). Also the reused per-thread byte buffers
//! of conv.

use std::cell::RefCell;
use std::thread::LocalKey;

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
