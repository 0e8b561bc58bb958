//! The second pass of the two-pass AVX2 kernel: the sparse remainder of a
//! split weight matrix (`crate::pack::split_pairs`) against 16-row panels
//! of activations, added onto the accumulator tiles of the first pass
//! (`gemm_u8i8_6x16c4_avx2::run_tall` on the bounded weights).
//!
//! Rows run in lanes: a panel's second operand holds, for each pair `q`,
//! the 16 rows' byte pairs `(x[r][2q], x[r][2q+1])` (`crate::pack::pack_pairs`),
//! so one `vpmaddubsw` with the broadcast remainder pair `(r0, r1)` forms
//! `x0·r0 + x1·r1` for 16 rows at once (exact: every remainder pair is within
//! the pair bound), and `vpaddw` sums a group's entries (exact: the split
//! ends a group before its positive or negative remainders pass 128 in sum,
//! so `|Σ| <= 255·128`). Up to 8 row panels share each entry's broadcast.
//! A column's first group lands in a block of 16 column vectors that is
//! transposed (8×8 16-bit blocks, in-lane) into rows, widened to int32 and
//! added onto the tile; later groups of a column are added lane by lane.
//! Everything after the int16 sums is wrapping int32, like every kernel.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::gemm::{ALayout, Elem, PairMicro, Shape};

/// The pass's tile: 16 rows (the lanes of its int16 vectors) × 16 columns,
/// pairs of k (its weights are the remainder, its activations `[q][16][2]`).
pub const SHAPE: Shape = Shape {
    mr: 16,
    nr: 16,
    kr: 2,
    elem: Elem::I8,
    a: ALayout::Rows,
};
const ROWS: usize = 16;

/// Panics unless `t` holds everything a pass over `nr`-column panels reads
/// and writes: the bounds [`run`] relies on.
pub fn check(t: &PairMicro<'_>, nr: usize) {
    assert!(t.panels >= 1 && (1..=ROWS).contains(&t.last_rows), "rows");
    let second = t.rem.q_end() * 32;
    assert!(t.pa >= t.a_off + second, "second operand too short");
    assert!(
        t.a.len() >= (t.panels - 1) * t.pa + t.a_off + second,
        "activations too short"
    );
    assert!(t.c.len() >= t.panels * ROWS * nr, "tiles too short");
    // The one-row form reads the pairs from the panel's first row.
    assert!(t.a_off >= 2 * t.rem.q_end(), "first row too short");
    let n = t.rem.entries().len() as u32;
    for g in t.rem.groups() {
        assert!((g.col as usize) < nr && g.start <= g.end && g.end <= n);
    }
}

/// Adds the remainder's products of one 16-column weight panel onto the
/// tiles of `t.panels` row panels.
///
/// # Safety
/// AVX2 must be available and `t` must pass [`check`] with `nr` 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn run(t: PairMicro<'_>) {
    body::<16>(t)
}

/// [`run`] for `NR`-column panels (16 here, 32 on the AVX-512 path).
///
/// # Safety
/// AVX2 must be available and `t` must pass [`check`] with `NR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn body<const NR: usize>(t: PairMicro<'_>) {
    let c = t.c.as_mut_ptr();
    if t.panels == 1 && t.last_rows == 1 {
        // SAFETY: the panel's first row holds 2·q_end bytes (`check`).
        return one_row(t.a.as_ptr(), &t.rem, c);
    }
    let a = t.a.as_ptr().add(t.a_off);
    let mut p = 0;
    while p < t.panels {
        let g = (t.panels - p).min(8);
        let last = if p + g == t.panels { t.last_rows } else { ROWS };
        // SAFETY: panels p .. p + g of the operands `check` bounded.
        let (ap, cp) = (a.add(p * t.pa), c.add(p * ROWS * NR));
        let (pa, rem) = (t.pa, &t.rem);
        match g {
            1 => block::<1, NR>(ap, pa, rem, cp, last),
            2 => block::<2, NR>(ap, pa, rem, cp, last),
            3 => block::<3, NR>(ap, pa, rem, cp, last),
            4 => block::<4, NR>(ap, pa, rem, cp, last),
            5 => block::<5, NR>(ap, pa, rem, cp, last),
            6 => block::<6, NR>(ap, pa, rem, cp, last),
            7 => block::<7, NR>(ap, pa, rem, cp, last),
            _ => block::<8, NR>(ap, pa, rem, cp, last),
        }
        p += g;
    }
}

/// One activation row (M = 1: decoding, one token): the pairs come straight
/// from the packed row `x` (`x[2q], x[2q+1]`, broadcast to every 16-bit lane
/// by `vpbroadcastw`), so the panel's second operand — 16 lanes for one row,
/// 64 KiB at K = 4096, out of L1 beside the streaming weights — is not read;
/// each group's sum (lane 0, exact as in [`block`]) is widened onto row 0 of
/// the tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn one_row(x: *const u8, rem: &rquant_core::gemm::PairPanel<'_>, c: *mut i32) {
    let entries = rem.entries();
    for grp in rem.groups() {
        let mut acc = _mm_setzero_si128();
        // SAFETY (loop): start <= end <= entries.len() and 2q + 1 < 2·q_end
        // bytes of the row (check).
        for e in entries.get_unchecked(grp.start as usize..grp.end as usize) {
            let rv = _mm_set1_epi32(i32::from_ne_bytes([
                e.r[0] as u8,
                e.r[1] as u8,
                e.r[2] as u8,
                e.r[3] as u8,
            ]));
            let xv = _mm_set1_epi16((x.add(2 * e.q as usize) as *const i16).read_unaligned());
            acc = _mm_add_epi16(acc, _mm_maddubs_epi16(xv, rv));
        }
        let p = c.add(grp.col as usize);
        *p = (*p).wrapping_add(_mm_extract_epi16::<0>(acc) as i16 as i32);
    }
}

/// `G` row panels (the last with `last_rows` rows), second operands `pa`
/// bytes apart from `a`, tiles `16·NR` int32 apart from `c`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn block<const G: usize, const NR: usize>(
    a: *const u8,
    pa: usize,
    rem: &rquant_core::gemm::PairPanel<'_>,
    c: *mut i32,
    last_rows: usize,
) {
    let rows = |g: usize| if g + 1 == G { last_rows } else { ROWS };
    let mut cols = [[_mm256_setzero_si256(); NR]; G];
    let mut used = 0u64;
    let mut base = [a; G];
    for (g, b) in base.iter_mut().enumerate() {
        *b = a.add(g * pa);
    }
    let entries = rem.entries();
    for grp in rem.groups() {
        let mut acc = [_mm256_setzero_si256(); G];
        // SAFETY (loop): start <= end <= entries.len() (check); every q <
        // q_end, so bytes 32q .. 32q + 32 of each panel's second operand are
        // inside it.
        for e in entries.get_unchecked(grp.start as usize..grp.end as usize) {
            let rv = _mm256_set1_epi32(i32::from_ne_bytes([
                e.r[0] as u8,
                e.r[1] as u8,
                e.r[2] as u8,
                e.r[3] as u8,
            ]));
            let off = e.q as usize * 32;
            for (acc_g, b) in acc.iter_mut().zip(base) {
                let x = _mm256_loadu_si256(b.add(off) as *const __m256i);
                *acc_g = _mm256_add_epi16(*acc_g, _mm256_maddubs_epi16(x, rv));
            }
        }
        let col = grp.col as usize;
        if grp.first != 0 {
            for (cg, acc_g) in cols.iter_mut().zip(acc) {
                *cg.get_unchecked_mut(col) = acc_g;
            }
            used |= 1 << col;
        } else {
            for (g, acc_g) in acc.into_iter().enumerate() {
                add_column(acc_g, c.add(g * ROWS * NR + col), NR, rows(g));
            }
        }
    }
    for (g, cg) in cols.iter().enumerate() {
        for h in 0..NR / 16 {
            if (used >> (16 * h)) & 0xffff != 0 {
                let dst = c.add(g * ROWS * NR + 16 * h);
                transpose_add(
                    cg[16 * h..16 * h + 16].try_into().unwrap(),
                    dst,
                    NR,
                    rows(g),
                );
            }
        }
    }
}

/// `c[r·ldc] += v[r]` (int16 lanes widened) for rows `r < rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn add_column(v: __m256i, c: *mut i32, ldc: usize, rows: usize) {
    let mut lanes = [0i16; ROWS];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, v);
    for (r, &l) in lanes.iter().enumerate().take(rows) {
        let p = c.add(r * ldc);
        *p = (*p).wrapping_add(l as i32);
    }
}

/// Rows `r < rows` of the 16×16 block whose column `j` is `cols[j]` (row
/// `r` in 16-bit lane `r`), widened and added onto `c[r·ldc .. r·ldc + 16]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn transpose_add(cols: &[__m256i; 16], c: *mut i32, ldc: usize, rows: usize) {
    if rows <= 4 {
        for (j, &v) in cols.iter().enumerate() {
            add_column(v, c.add(j), ldc, rows);
        }
        return;
    }
    // In-lane 8×8 transposes: lo[i] holds row i (low lane) and row i + 8
    // (high lane) of columns 0–7, hi[i] the same of columns 8–15.
    let lo = transpose8(&cols[..8]);
    let hi = transpose8(&cols[8..]);
    for i in 0..8 {
        let top = _mm256_permute2x128_si256::<0x20>(lo[i], hi[i]);
        let bottom = _mm256_permute2x128_si256::<0x31>(lo[i], hi[i]);
        if i < rows {
            add_row(top, c.add(i * ldc));
        }
        if i + 8 < rows {
            add_row(bottom, c.add((i + 8) * ldc));
        }
    }
}

/// `c[0..16] += v` (16 int16 lanes widened to int32, wrapping).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn add_row(v: __m256i, c: *mut i32) {
    let l = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(v));
    let h = _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(v));
    let c0 = _mm256_loadu_si256(c as *const __m256i);
    let c1 = _mm256_loadu_si256(c.add(8) as *const __m256i);
    _mm256_storeu_si256(c as *mut __m256i, _mm256_add_epi32(c0, l));
    _mm256_storeu_si256(c.add(8) as *mut __m256i, _mm256_add_epi32(c1, h));
}

/// Transposes the 8×8 16-bit block in each 128-bit lane of `v[0..8]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn transpose8(v: &[__m256i]) -> [__m256i; 8] {
    let t0 = _mm256_unpacklo_epi16(v[0], v[1]);
    let t1 = _mm256_unpackhi_epi16(v[0], v[1]);
    let t2 = _mm256_unpacklo_epi16(v[2], v[3]);
    let t3 = _mm256_unpackhi_epi16(v[2], v[3]);
    let t4 = _mm256_unpacklo_epi16(v[4], v[5]);
    let t5 = _mm256_unpackhi_epi16(v[4], v[5]);
    let t6 = _mm256_unpacklo_epi16(v[6], v[7]);
    let t7 = _mm256_unpackhi_epi16(v[6], v[7]);
    let u0 = _mm256_unpacklo_epi32(t0, t2);
    let u1 = _mm256_unpackhi_epi32(t0, t2);
    let u2 = _mm256_unpacklo_epi32(t1, t3);
    let u3 = _mm256_unpackhi_epi32(t1, t3);
    let u4 = _mm256_unpacklo_epi32(t4, t6);
    let u5 = _mm256_unpackhi_epi32(t4, t6);
    let u6 = _mm256_unpacklo_epi32(t5, t7);
    let u7 = _mm256_unpackhi_epi32(t5, t7);
    [
        _mm256_unpacklo_epi64(u0, u4),
        _mm256_unpackhi_epi64(u0, u4),
        _mm256_unpacklo_epi64(u1, u5),
        _mm256_unpackhi_epi64(u1, u5),
        _mm256_unpacklo_epi64(u2, u6),
        _mm256_unpackhi_epi64(u2, u6),
        _mm256_unpacklo_epi64(u3, u7),
        _mm256_unpackhi_epi64(u3, u7),
    ]
}
