//! AVX2 output stages and activation quantization, lane-for-lane the
//! operations of `rquant_core::numerics` (each f32 operation rounded
//! separately, no contraction except where numerics itself uses an FMA).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::output::{FloatTile, ReqTile, ZpCols};

/// Corrected accumulators `raw + colterm − zw·rs` of the 8 lanes from
/// column `j` (`raw` points at column `j` of the row).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn corrected(raw: *const i32, zp: &ZpCols<'_>, j: usize, rs: __m256i) -> __m256i {
    let v = _mm256_add_epi32(
        _mm256_loadu_si256(raw as *const __m256i),
        _mm256_loadu_si256(zp.colterm.as_ptr().add(j) as *const __m256i),
    );
    if zp.zw_zero {
        v
    } else {
        _mm256_sub_epi32(
            v,
            _mm256_mullo_epi32(
                _mm256_loadu_si256(zp.zw.as_ptr().add(j) as *const __m256i),
                rs,
            ),
        )
    }
}

/// Requantize row `r` of the tile into `out` (its `ncols` bytes).
///
/// # Safety
/// AVX2 must be available; `out` is valid for `t.ncols()` writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn requant_row(t: &ReqTile<'_>, r: usize, out: *mut u8) {
    let n = t.ncols();
    debug_assert!(t.zp.zw.len() == n && t.bt.len() == n && t.mult.len() == n);
    assert!(t.acc.len() >= r * t.nr + n && t.rs.len() > r);
    let acc = t.acc.as_ptr().add(r * t.nr);
    let zp = t.out_zp;
    let rsv = _mm256_set1_epi32(t.rs[r]);
    let two63 = _mm256_set1_ps(9.223_372e18);
    let limit = _mm256_set1_ps(1024.0);
    let nlimit = _mm256_set1_ps(-1024.0);
    let zpv = _mm256_set1_epi32(zp);
    let lov = _mm256_set1_epi32(t.clamp.lo as i32);
    let hiv = _mm256_set1_epi32(t.clamp.hi as i32);
    let mut j = 0;
    while j + 8 <= n {
        // SAFETY (loads and the store): columns j..j + 8 lie inside the
        // tile's row, the column slices and the output row.
        let v = corrected(acc.add(j), &t.zp, j, rsv);
        let f = _mm256_cvtepi32_ps(v);
        let y = _mm256_mul_ps(
            _mm256_add_ps(f, _mm256_loadu_ps(t.bt.as_ptr().add(j))),
            _mm256_loadu_ps(t.mult.as_ptr().add(j)),
        );
        let rv = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
        // numerics: clamp(sat_i64(r) + zp, lo, hi). NaN saturates to 0;
        // beyond ±1024 the clamp decides alone. Lanes at or beyond 2^63 with
        // zp > 0 take the scalar formula itself.
        let huge = _mm256_cmp_ps::<_CMP_GE_OQ>(rv, two63);
        if zp == 0 || _mm256_movemask_ps(huge) == 0 {
            let rv = _mm256_and_ps(rv, _mm256_cmp_ps::<_CMP_ORD_Q>(rv, rv));
            let rv = _mm256_min_ps(_mm256_max_ps(rv, nlimit), limit);
            let q = _mm256_add_epi32(_mm256_cvtps_epi32(rv), zpv);
            let q = _mm256_min_epi32(_mm256_max_epi32(q, lov), hiv);
            let p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            _mm_storel_epi64(out.add(j) as *mut __m128i, _mm_packus_epi16(p16, p16));
        } else {
            for l in 0..8 {
                *out.add(j + l) = t.scalar(r, j + l);
            }
        }
        j += 8;
    }
    while j < n {
        *out.add(j) = t.scalar(r, j);
        j += 1;
    }
}

/// The floats of row `r`, columns `j .. j + 8`: `fma(f32(acc), sp, bias)`
/// (or `f32(acc)·sp`).
///
/// # Safety
/// AVX2 and FMA must be available; columns `j .. j + 8` lie inside the
/// tile's row and its column slices.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn float_vec(t: &FloatTile<'_>, r: usize, j: usize, rsv: __m256i) -> __m256 {
    let v = corrected(t.acc.as_ptr().add(r * t.nr + j), &t.zp, j, rsv);
    let f = _mm256_cvtepi32_ps(v);
    let s = _mm256_loadu_ps(t.sp.as_ptr().add(j));
    match t.bias {
        Some(b) => _mm256_fmadd_ps(f, s, _mm256_loadu_ps(b.as_ptr().add(j))),
        None => _mm256_mul_ps(f, s),
    }
}

/// Float output of row `r` of the tile into `out` (its `ncols` floats).
///
/// A row 16 bytes off a 32-byte boundary (a `Vec<f32>` is only 16-byte
/// aligned) would split every other 32-byte store across two cache lines;
/// such a row of whole 8-column groups is stored as a 16-byte head,
/// 32-byte aligned vectors (each the high half of one group and the low
/// half of the next) and a 16-byte tail.
///
/// # Safety
/// AVX2 and FMA must be available; `out` is valid for `t.ncols()` writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn float_row(t: &FloatTile<'_>, r: usize, out: *mut f32) {
    let n = t.ncols();
    debug_assert!(t.zp.zw.len() == n && t.sp.len() == n && t.bias.is_none_or(|b| b.len() == n));
    assert!(t.acc.len() >= r * t.nr + n && t.rs.len() > r);
    let rsv = _mm256_set1_epi32(t.rs[r]);
    if n >= 8 && n.is_multiple_of(8) && out as usize % 32 == 16 {
        // SAFETY (loads and stores): columns 0..n of the row, the slices
        // and the output row (n floats).
        let y = float_vec(t, r, 0, rsv);
        _mm_storeu_ps(out, _mm256_castps256_ps128(y));
        let mut hi = _mm256_extractf128_ps::<1>(y);
        for j in (8..n).step_by(8) {
            let y = float_vec(t, r, j, rsv);
            _mm256_storeu_ps(
                out.add(j - 4),
                _mm256_set_m128(_mm256_castps256_ps128(y), hi),
            );
            hi = _mm256_extractf128_ps::<1>(y);
        }
        _mm_storeu_ps(out.add(n - 4), hi);
        return;
    }
    let mut j = 0;
    while j + 8 <= n {
        // SAFETY (loads and the store): columns j..j + 8 lie inside the
        // tile's row, the column slices and the output row.
        _mm256_storeu_ps(out.add(j), float_vec(t, r, j, rsv));
        j += 8;
    }
    while j < n {
        *out.add(j) = t.scalar(r, j);
        j += 1;
    }
}

/// Min, max and finiteness of a non-empty slice in one pass (dynamic
/// linear's input scan). Min and max may differ from a scalar scan only in
/// the sign of a zero, which no qparam choice can see, and are meaningful
/// only when the slice is finite: `v·0` is NaN exactly for an infinite or NaN
/// `v`, so one running sum of those tells finiteness (min/max alone can drop
/// a NaN, depending on operand order).
///
/// # Safety
/// AVX must be available; `x` is non-empty.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn min_max_finite(x: &[f32]) -> (f32, f32, bool) {
    let n = x.len();
    let mut lo = [_mm256_set1_ps(x[0]); 4];
    let mut hi = lo;
    let mut bad = [_mm256_setzero_ps(); 4];
    let zero = _mm256_setzero_ps();
    let mut j = 0;
    while j + 32 <= n {
        for u in 0..4 {
            let v = _mm256_loadu_ps(x.as_ptr().add(j + 8 * u));
            lo[u] = _mm256_min_ps(lo[u], v);
            hi[u] = _mm256_max_ps(hi[u], v);
            bad[u] = _mm256_add_ps(bad[u], _mm256_mul_ps(v, zero));
        }
        j += 32;
    }
    while j + 8 <= n {
        let v = _mm256_loadu_ps(x.as_ptr().add(j));
        lo[0] = _mm256_min_ps(lo[0], v);
        hi[0] = _mm256_max_ps(hi[0], v);
        bad[0] = _mm256_add_ps(bad[0], _mm256_mul_ps(v, zero));
        j += 8;
    }
    let lo = _mm256_min_ps(_mm256_min_ps(lo[0], lo[1]), _mm256_min_ps(lo[2], lo[3]));
    let hi = _mm256_max_ps(_mm256_max_ps(hi[0], hi[1]), _mm256_max_ps(hi[2], hi[3]));
    let bad = _mm256_add_ps(_mm256_add_ps(bad[0], bad[1]), _mm256_add_ps(bad[2], bad[3]));
    let mut l = [0f32; 8];
    let mut h = [0f32; 8];
    let mut b = [0f32; 8];
    _mm256_storeu_ps(l.as_mut_ptr(), lo);
    _mm256_storeu_ps(h.as_mut_ptr(), hi);
    _mm256_storeu_ps(b.as_mut_ptr(), bad);
    let mut mn = l.iter().copied().fold(x[0], f32::min);
    let mut mx = h.iter().copied().fold(x[0], f32::max);
    let mut sum = b.iter().sum::<f32>();
    for &v in &x[j..] {
        mn = mn.min(v);
        mx = mx.max(v);
        sum += v * 0.0;
    }
    (mn, mx, sum == 0.0)
}

/// [`requant_row`] over the tile's rows (output rows `ldm` apart).
///
/// # Safety
/// AVX2 must be available; `out` is valid for `t.mrows` rows of
/// `t.ncols()` bytes, `ldm` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn requant_tile(t: &ReqTile<'_>, out: *mut u8, ldm: usize) {
    for r in 0..t.mrows {
        requant_row(t, r, out.add(r * ldm));
    }
}

/// [`requant_tile`] when every `(f32(acc) + bt)·mult` is finite and below
/// 2^62 (`Requant::tame`): column-vector outer, row inner (constants loaded
/// once per tile), `y` clamped to the integers that land in `[lo, hi]` after
/// adding zp, and the magic-number rounding adding zp in the same
/// subtraction (as the AVX-512 stage). Columns past the last full vector of
/// 8 take the scalar formula.
///
/// # Safety
/// As [`requant_tile`], and the tame range holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn requant_tile_tame(t: &ReqTile<'_>, out: *mut u8, ldm: usize) {
    let n = t.ncols();
    let (mrows, nr, zp) = (t.mrows, t.nr, t.out_zp);
    assert!(t.acc.len() >= (mrows.max(1) - 1) * nr + n && t.rs.len() >= mrows);
    debug_assert!(t.zp.zw.len() == n && t.bt.len() == n && t.mult.len() == n);
    // Clamping to integer bounds commutes with rounding, so clamping y to
    // [lo − zp, hi − zp] first equals clamp(rne(y) + zp, lo, hi).
    let ylo = _mm256_set1_ps((t.clamp.lo as i32 - zp) as f32);
    let yhi = _mm256_set1_ps((t.clamp.hi as i32 - zp) as f32);
    let magic = _mm256_set1_ps(12_582_912.0);
    let bias = _mm256_set1_epi32(12_582_912.0f32.to_bits() as i32 - zp);
    let mut j = 0;
    while j + 8 <= n {
        // SAFETY (loads and stores below): columns j..j + 8 lie inside the
        // slices and each output row of the tile.
        let ct = _mm256_loadu_si256(t.zp.colterm.as_ptr().add(j) as *const __m256i);
        let zwv = _mm256_loadu_si256(t.zp.zw.as_ptr().add(j) as *const __m256i);
        let btv = _mm256_loadu_ps(t.bt.as_ptr().add(j));
        let mv = _mm256_loadu_ps(t.mult.as_ptr().add(j));
        for (r, &rsr) in t.rs[..mrows].iter().enumerate() {
            let mut v = _mm256_add_epi32(
                _mm256_loadu_si256(t.acc.as_ptr().add(r * nr + j) as *const __m256i),
                ct,
            );
            if !t.zp.zw_zero {
                v = _mm256_sub_epi32(v, _mm256_mullo_epi32(zwv, _mm256_set1_epi32(rsr)));
            }
            let y = _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(v), btv), mv);
            let c = _mm256_add_ps(_mm256_min_ps(_mm256_max_ps(y, ylo), yhi), magic);
            let q = _mm256_sub_epi32(_mm256_castps_si256(c), bias);
            // Every lane is in 0..=255: the saturating packs only narrow.
            let p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            _mm_storel_epi64(
                out.add(r * ldm + j) as *mut __m128i,
                _mm_packus_epi16(p16, p16),
            );
        }
        j += 8;
    }
    for r in 0..mrows {
        for jj in j..n {
            *out.add(r * ldm + jj) = t.scalar(r, jj);
        }
    }
}

/// [`float_row`] over the tile's rows (output rows `ldm` apart).
///
/// # Safety
/// AVX2 and FMA must be available; `out` is valid for `t.mrows` rows of
/// `t.ncols()` floats, `ldm` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn float_tile(t: &FloatTile<'_>, out: *mut f32, ldm: usize) {
    for r in 0..t.mrows {
        float_row(t, r, out.add(r * ldm));
    }
}
