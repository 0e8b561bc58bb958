//! AVX2 int8 GEMM microkernel, 6×16 tile, k-units of 2 int16-widened values.
//!
//! Exactness: both operands are widened to int16 at packing time (u8
//! activations 0..255, s8 weights −128..127), so `vpmaddwd` forms
//! `x0·w0 + x1·w1` exactly in int32 (|·| ≤ 65 280) and `vpaddd` accumulates
//! in wrapping int32 — the reference's semantics. No `vpmaddubsw`: its int16
//! saturation makes it inexact on full-range activations.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::gemm::{ALayout, Elem, Micro, Shape};

/// The tile and operand layout ([`crate::pack`] packs activations for it).
pub const SHAPE: Shape = Shape {
    mr: 6,
    nr: 16,
    kr: 2,
    elem: Elem::I16,
    a: ALayout::Rows,
};
pub const MR: usize = SHAPE.mr;
pub const NR: usize = SHAPE.nr;

/// `t.c` (+)= the raw `Σ x·w` of `t.mrows` activation rows and one weight
/// panel over `t.ku` k-units (`t.init`: from zero, else onto `t.c`).
///
/// # Safety
/// The target features below must be available and `t` must fit [`SHAPE`]
/// ([`Micro::assert_fits`]: rows `lda` apart with `ku` units each, a panel of
/// `ku` units × NR columns, an MR×NR tile).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn run(t: Micro<'_>) {
    let (ku, a, lda, b, c, init) = (
        t.ku,
        t.a.as_ptr(),
        t.lda,
        t.b.as_ptr(),
        t.c.as_mut_ptr(),
        t.init,
    );
    match t.mrows {
        1 => kernel::<1>(ku, a, lda, b, c, init),
        2 => kernel::<2>(ku, a, lda, b, c, init),
        3 => kernel::<3>(ku, a, lda, b, c, init),
        4 => kernel::<4>(ku, a, lda, b, c, init),
        5 => kernel::<5>(ku, a, lda, b, c, init),
        _ => kernel::<6>(ku, a, lda, b, c, init),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn kernel<const M: usize>(
    ku: usize,
    a: *const u8,
    lda: usize,
    b: *const u8,
    c: *mut i32,
    init: bool,
) {
    let mut acc = [[_mm256_setzero_si256(); 2]; M];
    if !init {
        for (i, acc_i) in acc.iter_mut().enumerate() {
            acc_i[0] = _mm256_loadu_si256(c.add(i * NR) as *const __m256i);
            acc_i[1] = _mm256_loadu_si256(c.add(i * NR + 8) as *const __m256i);
        }
    }
    let mut rows = [a; M];
    for (i, r) in rows.iter_mut().enumerate() {
        *r = a.add(i * lda);
    }
    let mut off = 0usize;
    let mut b = b;
    for _ in 0..ku {
        // SAFETY (whole loop body): a and b advance by one k-unit per
        // iteration and stay within the ku units the caller guarantees.
        let b0 = _mm256_loadu_si256(b as *const __m256i);
        let b1 = _mm256_loadu_si256(b.add(32) as *const __m256i);
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let x = _mm256_set1_epi32((rows[i].add(off) as *const i32).read_unaligned());
            acc_i[0] = _mm256_add_epi32(acc_i[0], _mm256_madd_epi16(x, b0));
            acc_i[1] = _mm256_add_epi32(acc_i[1], _mm256_madd_epi16(x, b1));
        }
        off += 4;
        b = b.add(NR * 4);
    }
    for (i, acc_i) in acc.iter().enumerate() {
        _mm256_storeu_si256(c.add(i * NR) as *mut __m256i, acc_i[0]);
        _mm256_storeu_si256(c.add(i * NR + 8) as *mut __m256i, acc_i[1]);
    }
}
