//! AVX512-VNNI int8 GEMM microkernel, 8×32 tile, k-units of 4 u8/s8.
//!
//! Exactness: `vpdpbusd` multiplies u8 by s8 and adds the four products of
//! each 32-bit lane to the int32 accumulator without intermediate saturation
//! (the non-`s` form wraps in int32, exactly the reference's accumulator).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub const MR: usize = 8;
pub const NR: usize = 32;

/// # Safety
/// AVX-512F/BW and AVX512-VNNI must be available; `a` points at `mrows` activation
/// rows `lda` bytes apart, each with `ku·4` readable bytes; `b` holds `ku·NR·4` bytes, `c` has room for `mrows·NR` i32 (row
/// stride NR); `1 <= mrows <= MR`. `init`: start from zero, else accumulate
/// onto the tile already in `c`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn dispatch(
    mrows: usize,
    ku: usize,
    a: *const u8,
    lda: usize,
    b: *const u8,
    c: *mut i32,
    init: bool,
) {
    match mrows {
        1 => kernel_few::<1>(ku, a, lda, b, c, init),
        2 => kernel_few::<2>(ku, a, lda, b, c, init),
        3 => kernel_few::<3>(ku, a, lda, b, c, init),
        4 => kernel::<4>(ku, a, lda, b, c, init),
        5 => kernel::<5>(ku, a, lda, b, c, init),
        6 => kernel::<6>(ku, a, lda, b, c, init),
        7 => kernel::<7>(ku, a, lda, b, c, init),
        _ => kernel::<8>(ku, a, lda, b, c, init),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
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
            acc_i[0] = _mm512_dpbusd_epi32(acc_i[0], x, b0);
            acc_i[1] = _mm512_dpbusd_epi32(acc_i[1], x, b1);
        }
        off += 4;
        b = b.add(NR * 4);
    }
    for (i, acc_i) in acc.iter().enumerate() {
        _mm512_storeu_si512(c.add(i * NR) as *mut __m512i, acc_i[0]);
        _mm512_storeu_si512(c.add(i * NR + 16) as *mut __m512i, acc_i[1]);
    }
}

/// Few rows (M <= 3): with only 2·M accumulators the `vpdpbusd` latency
/// would bound the loop, so four k-units run on separate accumulator sets,
/// summed at the end (wrapping int32 addition is associative: same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
#[allow(clippy::needless_range_loop)]
unsafe fn kernel_few<const M: usize>(
    ku: usize,
    a: *const u8,
    lda: usize,
    b: *const u8,
    c: *mut i32,
    init: bool,
) {
    let z = _mm512_setzero_si512();
    let mut acc = [[[z; 2]; 4]; M];
    let mut rows = [a; M];
    for (i, r) in rows.iter_mut().enumerate() {
        *r = a.add(i * lda);
    }
    let mut u = 0usize;
    let mut b = b;
    // SAFETY (both loops): a and b advance by whole k-units and stay
    // within the ku units the caller guarantees.
    while u + 4 <= ku {
        for q in 0..4 {
            let b0 = _mm512_loadu_si512(b.add(q * NR * 4) as *const __m512i);
            let b1 = _mm512_loadu_si512(b.add(q * NR * 4 + 64) as *const __m512i);
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let x =
                    _mm512_set1_epi32((rows[i].add(4 * (u + q)) as *const i32).read_unaligned());
                acc_i[q][0] = _mm512_dpbusd_epi32(acc_i[q][0], x, b0);
                acc_i[q][1] = _mm512_dpbusd_epi32(acc_i[q][1], x, b1);
            }
        }
        u += 4;
        b = b.add(4 * NR * 4);
    }
    while u < ku {
        let b0 = _mm512_loadu_si512(b as *const __m512i);
        let b1 = _mm512_loadu_si512(b.add(64) as *const __m512i);
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_epi32((rows[i].add(4 * u) as *const i32).read_unaligned());
            acc_i[0][0] = _mm512_dpbusd_epi32(acc_i[0][0], x, b0);
            acc_i[0][1] = _mm512_dpbusd_epi32(acc_i[0][1], x, b1);
        }
        u += 1;
        b = b.add(NR * 4);
    }
    for (i, acc_i) in acc.iter().enumerate() {
        for j in 0..2 {
            let mut v = _mm512_add_epi32(
                _mm512_add_epi32(acc_i[0][j], acc_i[1][j]),
                _mm512_add_epi32(acc_i[2][j], acc_i[3][j]),
            );
            if !init {
                v = _mm512_add_epi32(
                    v,
                    _mm512_loadu_si512(c.add(i * NR + 16 * j) as *const __m512i),
                );
            }
            _mm512_storeu_si512(c.add(i * NR + 16 * j) as *mut __m512i, v);
        }
    }
}
