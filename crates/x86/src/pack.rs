//! Activation packing for the x86 int8 GEMM kernels (weights are packed by
//! `rquant_core::gemm::PackedB`, in `[N/NR][ku][NR][4 bytes]` micro-panels).
//!
//! Both operands are cut into "k-units" of 4 bytes per row (activations) or
//! per column (weights): 4 consecutive k as u8/s8 for the `c4` kernels
//! (`vpdpbusd`, `vpmaddubsw`, scalar), or 2 consecutive k widened to int16
//! for the `c2` kernels (`vpmaddwd`). Activations stay row-major
//! (`[m][ku][4 bytes]`: the kernels broadcast each row's unit through a
//! per-row pointer, so no interleaving pass). K is padded with zeros (a zero
//! weight makes every padded product zero).
//!
//! Zero points are handled by sums computed while packing: the weight column
//! sums when the weight is packed (`rquant_core::output::ZeroPointTerms`),
//! the activation row sums here; the output stage forms
//! `Σ(x−zx)(w−zw) = Σxw − zw·Σx − zx·Σw + K·zx·zw` in wrapping int32.

use rquant_core::gemm::APanel;

/// Pack rows for the `c4` kernels: each row's K bytes as they come, zero
/// padding to whole k-units; row sums when asked.
pub(crate) fn pack_rows_u8(p: &mut APanel<'_>) {
    let lda = p.dst.len() / rows_in(p);
    let k = p.k;
    for r in 0..p.nrows {
        let row = &mut p.dst[r * lda..(r + 1) * lda];
        (p.fill)(p.row0 + r, &mut row[..k]);
        p.sums[r] = if p.need_sums { row_sum(&row[..k]) } else { 0 };
        row[k..].fill(0);
    }
}

/// Pack rows for the `c2` kernels: each u8 widened to a little-endian int16,
/// zero padding to whole k-units; row sums when asked.
pub(crate) fn pack_rows_i16(p: &mut APanel<'_>) {
    let lda = p.dst.len() / rows_in(p);
    let k = p.k;
    p.scratch.resize(k, 0);
    for r in 0..p.nrows {
        let row = &mut p.dst[r * lda..(r + 1) * lda];
        (p.fill)(p.row0 + r, p.scratch);
        p.sums[r] = if p.need_sums { row_sum(p.scratch) } else { 0 };
        for (d, &v) in row.chunks_exact_mut(2).zip(p.scratch.iter()) {
            d[0] = v;
            d[1] = 0;
        }
        row[2 * k..].fill(0);
    }
}

/// Rows of the panel (its `mr`): one row sum slot per row.
fn rows_in(p: &APanel<'_>) -> usize {
    p.sums.len()
}

fn row_sum(x: &[u8]) -> i32 {
    // At most 255·K: exact in u64, then wrapped to i32 like the accumulator.
    let (simd, done) = row_sum_simd(x);
    let total = simd + x[done..].iter().map(|&v| v as u64).sum::<u64>();
    total as u32 as i32
}

/// Sum of the leading 16-byte blocks of `x` (psadbw), and how many bytes they cover.
#[cfg(target_arch = "x86_64")]
fn row_sum_simd(x: &[u8]) -> (u64, usize) {
    use std::arch::x86_64::*;
    let chunks = x.len() / 16;
    // SAFETY: SSE2 is part of x86_64; each load reads 16 bytes inside x.
    unsafe {
        let mut acc = _mm_setzero_si128();
        for i in 0..chunks {
            let v = _mm_loadu_si128(x.as_ptr().add(i * 16) as *const __m128i);
            acc = _mm_add_epi64(acc, _mm_sad_epu8(v, _mm_setzero_si128()));
        }
        let mut lanes = [0u64; 2];
        _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, acc);
        (lanes[0] + lanes[1], chunks * 16)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn row_sum_simd(_x: &[u8]) -> (u64, usize) {
    (0, 0)
}
