//! AVX-512BW int8 GEMM microkernel with `vpmaddubsw` (no VNNI), 8×32 tile,
//! k-units of 4 u8/s8: the AVX2 `6x16c4` kernel at twice the width.
//!
//! Exactness is conditional, as for the AVX2 kernel: `vpmaddubsw` forms
//! `sat16(x0·w0 + x1·w1)`, exact for activations up to the bound its table
//! entry's check computes (`gemm_u8i8_6x16c4_avx2::exact`), and for every u8
//! input on the bounded part of a split weight matrix (the two-pass entry:
//! [`run_tall`], then `remainder_u8i8_16x32c2_avx512`). `vpmaddwd` with ones
//! then adds the two int16 pairs exactly into int32 and `vpaddd` wraps like
//! the reference's accumulator. For AVX-512 CPUs without VNNI (Skylake-SP).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::gemm::{ALayout, Elem, Micro, Shape};

/// The tile and operand layout ([`crate::pack`] packs activations for it).
pub const SHAPE: Shape = Shape {
    mr: 8,
    nr: 32,
    kr: 4,
    elem: Elem::I8,
    a: ALayout::Rows,
};
/// The two-pass entry's 16-row panels ([`run_tall`]).
pub const SHAPE_TALL: Shape = Shape { mr: 16, ..SHAPE };
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
    rows(t.mrows, ku, a, lda, b, c, init);
}

/// [`run`] over a panel of up to 16 rows ([`SHAPE_TALL`]): the 8×32 tile at
/// rows 0 and 8, the weight k-block read from L1 twice.
///
/// # Safety
/// As [`run`], with `t` fitting [`SHAPE_TALL`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn run_tall(t: Micro<'_>) {
    let (ku, a, lda, b, c, init) = (
        t.ku,
        t.a.as_ptr(),
        t.lda,
        t.b.as_ptr(),
        t.c.as_mut_ptr(),
        t.init,
    );
    rows(t.mrows.min(MR), ku, a, lda, b, c, init);
    if t.mrows > MR {
        // SAFETY: rows 8.. of the panel and of the tile (row stride NR),
        // inside the operands the caller guarantees.
        rows(
            t.mrows - MR,
            ku,
            a.add(MR * lda),
            lda,
            b,
            c.add(MR * NR),
            init,
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn rows(
    m: usize,
    ku: usize,
    a: *const u8,
    lda: usize,
    b: *const u8,
    c: *mut i32,
    init: bool,
) {
    match m {
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
    let ones = _mm512_set1_epi16(1);
    let mut rows = [a; M];
    for (i, r) in rows.iter_mut().enumerate() {
        *r = a.add(i * lda);
    }
    let mut off = 0usize;
    let mut b = b;
    for _ in 0..ku {
        // SAFETY (whole loop body): the rows and b advance by one k-unit per
        // iteration and stay within the ku units the caller guarantees.
        let b0 = _mm512_loadu_si512(b as *const __m512i);
        let b1 = _mm512_loadu_si512(b.add(64) as *const __m512i);
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_epi32((rows[i].add(off) as *const i32).read_unaligned());
            let p0 = _mm512_madd_epi16(_mm512_maddubs_epi16(x, b0), ones);
            let p1 = _mm512_madd_epi16(_mm512_maddubs_epi16(x, b1), ones);
            acc_i[0] = _mm512_add_epi32(acc_i[0], p0);
            acc_i[1] = _mm512_add_epi32(acc_i[1], p1);
        }
        off += 4;
        b = b.add(NR * 4);
    }
    for (i, acc_i) in acc.iter().enumerate() {
        _mm512_storeu_si512(c.add(i * NR) as *mut __m512i, acc_i[0]);
        _mm512_storeu_si512(c.add(i * NR + 16) as *mut __m512i, acc_i[1]);
    }
}
