//! AVX2 int8 GEMM microkernel with `vpmaddubsw`, 6×16 tile, k-units of 4 u8/s8.
//!
//! Exactness is conditional: `vpmaddubsw` forms `sat16(x0·w0 + x1·w1)`,
//! which equals the exact sum whenever it lies in int16 for every input:
//! `x_max · P <= 32767` and `x_max · N <= 32768`, where `P` and `N` are the
//! positive weights' sum and the negative ones' magnitude in an adjacent
//! weight pair (a mixed-sign pair spans at most `x_max·127` and `-x_max·128`).
//! [`exact`] turns those sums of a weight matrix into the largest activation
//! the kernel is exact for; it runs when the weights are packed, and the
//! driver picks this kernel only for activations up to that value (static:
//! the largest byte; dynamic: the largest code; conv: also the padding zero
//! point). On weights whose every pair has `P, N <= 128` it is exact for every
//! u8 input; the two-pass entry of the table (`crate::pack::split_pairs`)
//! runs it on such a bounded part of any weight matrix, taller panels
//! ([`run_tall`]) and the remainder's pass after it. `vpmaddwd` with ones then
//! adds the two int16 pairs exactly into int32 and `vpaddd` accumulates in
//! wrapping int32 — the reference's semantics.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::gemm::{ALayout, Elem, Micro, Shape};

/// The tile and operand layout ([`crate::pack`] packs activations for it).
pub const SHAPE: Shape = Shape {
    mr: 6,
    nr: 16,
    kr: 4,
    elem: Elem::I8,
    a: ALayout::Rows,
};
pub const MR: usize = SHAPE.mr;
pub const NR: usize = SHAPE.nr;

/// Rows of the two-pass entry's panels: 6 + 6 + 4 rows of this tile
/// ([`run_tall`]), the 16 lanes of the remainder pass's int16 vectors.
pub const SHAPE_TALL: Shape = Shape { mr: 16, ..SHAPE };

/// The largest activation for which `vpmaddubsw` is exact with weights `w`
/// (`[n, k]`): the largest `x` with `x·P <= 32767` and `x·N <= 32768` for the
/// positive sum `P` and negative magnitude `N` of every pair `(w[2j],
/// w[2j+1])` of a column (k pairs start at even k, the K padding is zero).
/// 7-bit activations always qualify (`P <= 254`, `N <= 256`).
pub fn exact(w: &[i8], _n: usize, k: usize) -> u8 {
    let (mut p_max, mut n_max) = (0i32, 0i32);
    for r in w.chunks_exact(k.max(1)) {
        for p in r.chunks(2) {
            let (mut pos, mut neg) = (0i32, 0i32);
            for &v in p {
                let v = v as i32;
                if v > 0 {
                    pos += v;
                } else {
                    neg -= v;
                }
            }
            p_max = p_max.max(pos);
            n_max = n_max.max(neg);
        }
    }
    let by_pos = (i16::MAX as i32).checked_div(p_max).unwrap_or(255);
    let by_neg = (-(i16::MIN as i32)).checked_div(n_max).unwrap_or(255);
    by_pos.min(by_neg).min(255) as u8
}

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

/// [`run`] over a panel of up to 16 rows ([`SHAPE_TALL`]): the 6×16 tile
/// at rows 0, 6 and 12 (the last 4 rows wide), the weight k-block read from
/// L1 each time.
///
/// # Safety
/// As [`run`], with `t` fitting [`SHAPE_TALL`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn run_tall(t: Micro<'_>) {
    let (ku, a, lda, b, c, init) = (
        t.ku,
        t.a.as_ptr(),
        t.lda,
        t.b.as_ptr(),
        t.c.as_mut_ptr(),
        t.init,
    );
    let mut r0 = 0;
    while r0 < t.mrows {
        // SAFETY: rows r0.. of the panel and of the tile (row stride NR),
        // inside the operands the caller guarantees.
        let (a, c) = (a.add(r0 * lda), c.add(r0 * NR));
        match t.mrows - r0 {
            1 => kernel::<1>(ku, a, lda, b, c, init),
            2 => kernel::<2>(ku, a, lda, b, c, init),
            3 => kernel::<3>(ku, a, lda, b, c, init),
            4 => kernel::<4>(ku, a, lda, b, c, init),
            5 => kernel::<5>(ku, a, lda, b, c, init),
            7 => {
                // 4 + 3 rather than 6 + 1.
                kernel::<4>(ku, a, lda, b, c, init);
                r0 += 4;
                continue;
            }
            _ => kernel::<6>(ku, a, lda, b, c, init),
        }
        r0 += 6;
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
    let ones = _mm256_set1_epi16(1);
    let mut rows = [a; M];
    for (i, r) in rows.iter_mut().enumerate() {
        *r = a.add(i * lda);
    }
    let mut off = 0usize;
    let mut b = b;
    for _ in 0..ku {
        // SAFETY (whole loop body): the rows and b advance by one k-unit per
        // iteration and stay within the ku units the caller guarantees.
        let b0 = _mm256_loadu_si256(b as *const __m256i);
        let b1 = _mm256_loadu_si256(b.add(32) as *const __m256i);
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let x = _mm256_set1_epi32((rows[i].add(off) as *const i32).read_unaligned());
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b0), ones);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b1), ones);
            acc_i[0] = _mm256_add_epi32(acc_i[0], p0);
            acc_i[1] = _mm256_add_epi32(acc_i[1], p1);
        }
        off += 4;
        b = b.add(NR * 4);
    }
    for (i, acc_i) in acc.iter().enumerate() {
        _mm256_storeu_si256(c.add(i * NR) as *mut __m256i, acc_i[0]);
        _mm256_storeu_si256(c.add(i * NR + 8) as *mut __m256i, acc_i[1]);
    }
}
