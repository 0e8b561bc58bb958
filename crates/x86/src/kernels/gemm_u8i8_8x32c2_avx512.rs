//! AVX-512BW int8 GEMM microkernel (no VNNI), 8×32 tile, k-units of 2
//! int16-widened values: the AVX2 `6x16c2` kernel at twice the width.
//!
//! Exactness: both operands are widened to int16 at packing time, so
//! `vpmaddwd` forms `x0·w0 + x1·w1` exactly in int32 and `vpaddd` wraps like
//! the reference's accumulator. For AVX-512 CPUs without VNNI (Skylake-SP).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::gemm::{ALayout, Elem, Micro, Shape};

/// The tile and operand layout ([`crate::pack`] packs activations for it).
pub const SHAPE: Shape = Shape {
    mr: 8,
    nr: 32,
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
#[target_feature(enable = "avx512f,avx512bw")]
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
        6 => kernel::<6>(ku, a, lda, b, c, init),
        7 => kernel::<7>(ku, a, lda, b, c, init),
        _ => kernel::<8>(ku, a, lda, b, c, init),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn kernel<const M: usize>(
    ku: usize,
    a: *const u8,
    lda: usize,
    b: *const u8,
    c: *mut i32,
    init: bool,
) {
    let mut acc = [[_mm512_setzero_si512(); 2]; M];
    if !init {
        for (i, acc_i) in acc.iter_mut().enumerate() {
            acc_i[0] = _mm512_loadu_si512(c.add(i * NR) as *const __m512i);
            acc_i[1] = _mm512_loadu_si512(c.add(i * NR + 16) as *const __m512i);
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
        let b0 = _mm512_loadu_si512(b as *const __m512i);
        let b1 = _mm512_loadu_si512(b.add(64) as *const __m512i);
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_epi32((rows[i].add(off) as *const i32).read_unaligned());
            acc_i[0] = _mm512_add_epi32(acc_i[0], _mm512_madd_epi16(x, b0));
            acc_i[1] = _mm512_add_epi32(acc_i[1], _mm512_madd_epi16(x, b1));
        }
        off += 4;
        b = b.add(NR * 4);
    }
    for (i, acc_i) in acc.iter().enumerate() {
        _mm512_storeu_si512(c.add(i * NR) as *mut __m512i, acc_i[0]);
        _mm512_storeu_si512(c.add(i * NR + 16) as *mut __m512i, acc_i[1]);
    }
}
