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

use rquant_core::gemm::{APanel, PairA, PairEntry, Split};

/// Pack rows for the `c4` kernels: each row's K bytes as they come, zero
/// padding to whole k-units; row sums when asked.
pub(crate) fn pack_rows_u8(p: &mut APanel<'_>) {
    let lda = p.dst.len() / rows_in(p);
    let k = p.k;
    for r in 0..p.nrows {
        let row = &mut p.dst[r * lda..(r + 1) * lda];
        // Zero the padding first as the last whole k-unit (a fixed-size
        // store; `fill` of the 1-3 padding bytes was a memset call per
        // row), then let the row overwrite its part of it.
        if lda - k <= 4 {
            if k < lda {
                row[lda - 4..].fill(0);
            }
        } else {
            row[k..].fill(0);
        }
        (p.fill)(p.row0 + r, &mut row[..k]);
        p.sums[r] = if p.need_sums { row_sum(&row[..k]) } else { 0 };
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

/// The pair bound of `vpmaddubsw` on any u8 input: in each adjacent weight
/// pair the positive weights sum to at most 128 and the negative ones to at
/// most 128 in magnitude (`255·128 = 32640` fits int16 either way).
pub const PAIR_BOUND: i32 = 128;

/// Split `w` (`[n, k]`) for the two-pass `vpmaddubsw` kernels: a bounded
/// part whose every adjacent pair `(2q, 2q+1)` meets [`PAIR_BOUND`], and the
/// excess of the pairs that break it as a sparse remainder.
///
/// Only pairs of one sign can break the bound (a mixed pair has `P <= 127`,
/// `N <= 128`). A pair with `P = w0 + w1 > 128` keeps `P = 128` (the excess
/// `P − 128`, at most 126, comes off its larger weight) and a pair with
/// `N > 128` keeps `N = 128` (at most −128 off its more negative one), so
/// every remainder pair has one nonzero value, within the bound itself.
///
/// Groups: the second pass sums a column's remainder products over 16 rows
/// in int16 (`vpmaddubsw` then `vpaddw`), exact while the group's positive
/// remainders sum to at most 128 and its negative ones to at most 128 in
/// magnitude; a new group starts where the next entry would break that.
///
/// The split pays when the second pass costs less than the widened kernel
/// would lose: [`split_worth`].
pub fn split_pairs(w: &[i8], n: usize, k: usize) -> Split {
    let mut bounded = w.to_vec();
    let mut entries = Vec::new();
    let qn = k.div_ceil(2);
    for (c, row) in bounded.chunks_exact_mut(k.max(1)).enumerate().take(n) {
        let (mut gp, mut gn) = (0i32, 0i32);
        let mut in_col = false;
        for q in 0..qn {
            let w0 = row[2 * q] as i32;
            let w1 = if 2 * q + 1 < k {
                row[2 * q + 1] as i32
            } else {
                0
            };
            let (pos, neg) = (w0.max(0) + w1.max(0), (-w0).max(0) + (-w1).max(0));
            // At most one of the two can break the bound (both need one sign).
            let (excess, at) = if pos > PAIR_BOUND {
                (pos - PAIR_BOUND, if w0 >= w1 { 0 } else { 1 })
            } else if neg > PAIR_BOUND {
                (-(neg - PAIR_BOUND), if w0 <= w1 { 0 } else { 1 })
            } else {
                continue;
            };
            row[2 * q + at] = (row[2 * q + at] as i32 - excess) as i8;
            let mut r = [0i8; 2];
            r[at] = excess as i8;
            let (ep, en) = (excess.max(0), (-excess).max(0));
            let new_group = in_col && (gp + ep > PAIR_BOUND || gn + en > PAIR_BOUND);
            if new_group || !in_col {
                (gp, gn) = (0, 0);
            }
            gp += ep;
            gn += en;
            in_col = true;
            entries.push(PairEntry {
                col: c as u32,
                q: q as u32,
                r,
                new_group,
            });
        }
    }
    let worth = split_worth(n, k, &entries);
    Split {
        bounded,
        entries,
        worth,
    }
}

/// Whether the two passes beat the widened `vpmaddwd` kernel on these
/// weights, from a cost model per activation row in issue slots of the
/// AVX2 kernels: the `vpmaddubsw` pass takes 6 per 64 multiply-accumulates,
/// the widened one 4 per 32 (both bound by the same two multiply ports);
/// the remainder pass about 3.5 per entry per 16 rows, 3 more per 16 rows
/// for each group that is not its column's first (its sum leaves the
/// transposed block), and about 0.7 per output to transpose its sums.
pub fn split_worth(n: usize, k: usize, entries: &[PairEntry]) -> bool {
    let extra = entries.iter().filter(|e| e.new_group).count() as f64;
    let main = (n * k) as f64 * 6.0 / 64.0;
    let widened = (n * k) as f64 * 4.0 / 32.0;
    let second = entries.len() as f64 * 3.5 / 16.0 + extra * 3.0 + n as f64 * 0.7;
    main + second < 0.95 * widened
}

/// Bytes of one 16-row panel's second operand ([`pack_pairs`]).
pub fn pairs_bytes(k: usize) -> usize {
    k.div_ceil(2) * 32
}

/// The remainder pass's activations of one 16-row panel: for each pair `q`,
/// the 16 rows' `(x[r][2q], x[r][2q+1])` as byte pairs (`[q][16][2]`, 32
/// bytes: one `vpmaddubsw` operand with a row in each 16-bit lane), taken
/// from the panel's packed rows; rows past `nrows` are zero.
pub fn pack_pairs(mut p: PairA<'_>) {
    const ROWS: usize = 16;
    let qn = p.k.div_ceil(2);
    assert!(p.nrows <= ROWS && p.dst.len() >= qn * 32);
    assert!(p.lda >= 2 * qn && p.rows.len() >= p.nrows * p.lda);
    // Whole blocks of 8 pairs: 16 bytes of each row, transposed as 16-bit words.
    let blocks = (2 * qn).min(p.lda) / 16;
    pack_pairs_blocks(&mut p, blocks);
    for q in blocks * 8..qn {
        let d = &mut p.dst[q * 32..q * 32 + 32];
        for r in 0..ROWS {
            let (x0, x1) = if r < p.nrows {
                let row = &p.rows[r * p.lda..];
                // 2q + 1 < lda: K is padded with zeros to whole 4-byte units.
                (row[2 * q], row[2 * q + 1])
            } else {
                (0, 0)
            };
            d[2 * r] = x0;
            d[2 * r + 1] = x1;
        }
    }
}

/// The first `blocks` blocks of 8 pairs of [`pack_pairs`] (SSE2: an 8×8
/// transpose of 16-bit words for rows 0–7 and one for rows 8–15).
#[cfg(target_arch = "x86_64")]
fn pack_pairs_blocks(p: &mut PairA<'_>, blocks: usize) {
    use std::arch::x86_64::*;
    for blk in 0..blocks {
        // SAFETY: SSE2 is part of x86_64. Row r < nrows is read at bytes
        // r·lda + 16·blk .. + 16 <= r·lda + lda (blocks ≤ lda / 16), inside
        // `rows` (the panel holds nrows rows of lda bytes); dst is written at
        // bytes 256·blk .. 256·blk + 256 <= 32·qn (blocks·8 ≤ qn), asserted
        // by the caller.
        unsafe {
            for half in 0..2 {
                let mut v = [_mm_setzero_si128(); 8];
                for (i, vi) in v.iter_mut().enumerate() {
                    let r = half * 8 + i;
                    if r < p.nrows {
                        *vi = _mm_loadu_si128(
                            p.rows.as_ptr().add(r * p.lda + 16 * blk) as *const __m128i
                        );
                    }
                }
                let t = transpose8x16(v);
                for (j, tj) in t.iter().enumerate() {
                    let q = blk * 8 + j;
                    _mm_storeu_si128(
                        p.dst.as_mut_ptr().add(q * 32 + half * 16) as *mut __m128i,
                        *tj,
                    );
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn pack_pairs_blocks(_p: &mut PairA<'_>, blocks: usize) {
    assert_eq!(blocks, 0);
}

/// Transpose an 8×8 matrix of 16-bit words (row i in `v[i]`).
#[cfg(target_arch = "x86_64")]
#[inline]
fn transpose8x16(v: [std::arch::x86_64::__m128i; 8]) -> [std::arch::x86_64::__m128i; 8] {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of x86_64; register-only shuffles.
    unsafe {
        let t0 = _mm_unpacklo_epi16(v[0], v[1]);
        let t1 = _mm_unpackhi_epi16(v[0], v[1]);
        let t2 = _mm_unpacklo_epi16(v[2], v[3]);
        let t3 = _mm_unpackhi_epi16(v[2], v[3]);
        let t4 = _mm_unpacklo_epi16(v[4], v[5]);
        let t5 = _mm_unpackhi_epi16(v[4], v[5]);
        let t6 = _mm_unpacklo_epi16(v[6], v[7]);
        let t7 = _mm_unpackhi_epi16(v[6], v[7]);
        let u0 = _mm_unpacklo_epi32(t0, t2);
        let u1 = _mm_unpackhi_epi32(t0, t2);
        let u2 = _mm_unpacklo_epi32(t1, t3);
        let u3 = _mm_unpackhi_epi32(t1, t3);
        let u4 = _mm_unpacklo_epi32(t4, t6);
        let u5 = _mm_unpackhi_epi32(t4, t6);
        let u6 = _mm_unpacklo_epi32(t5, t7);
        let u7 = _mm_unpackhi_epi32(t5, t7);
        [
            _mm_unpacklo_epi64(u0, u4),
            _mm_unpackhi_epi64(u0, u4),
            _mm_unpacklo_epi64(u1, u5),
            _mm_unpackhi_epi64(u1, u5),
            _mm_unpacklo_epi64(u2, u6),
            _mm_unpackhi_epi64(u2, u6),
            _mm_unpacklo_epi64(u3, u7),
            _mm_unpackhi_epi64(u3, u7),
        ]
    }
}
