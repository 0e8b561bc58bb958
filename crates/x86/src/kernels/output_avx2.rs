//! AVX2 output stages and activation quantization, lane-for-lane the
//! operations of `rquant_core::numerics` (each f32 operation rounded
//! separately, no contraction except where numerics itself uses an FMA).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use rquant_core::numerics::{dynamic_out, requantize_u8};

/// Corrected accumulators `raw + colterm − zw·rs` of 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn corrected(
    raw: *const i32,
    ct: *const i32,
    zw: *const i32,
    zw_zero: bool,
    rs: __m256i,
) -> __m256i {
    let v = _mm256_add_epi32(
        _mm256_loadu_si256(raw as *const __m256i),
        _mm256_loadu_si256(ct as *const __m256i),
    );
    if zw_zero {
        v
    } else {
        _mm256_sub_epi32(
            v,
            _mm256_mullo_epi32(_mm256_loadu_si256(zw as *const __m256i), rs),
        )
    }
}

/// Requantize one row of `acc.len()` accumulators to quint8 at `out`, `ldn` apart.
///
/// # Safety
/// AVX2 must be available; all slices have `acc.len()` elements; `out` is
/// valid for writes at `j·ldn` for every `j < acc.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn requant_row(
    acc: &[i32],
    colterm: &[i32],
    zw: &[i32],
    zw_zero: bool,
    rs: i32,
    bt: &[f32],
    mult: &[f32],
    zp: i32,
    relu: bool,
    out: *mut u8,
    ldn: usize,
) {
    let n = acc.len();
    debug_assert!(colterm.len() == n && zw.len() == n && bt.len() == n && mult.len() == n);
    let lo = if relu { zp } else { 0 };
    let rsv = _mm256_set1_epi32(rs);
    let two63 = _mm256_set1_ps(9.223_372e18);
    let limit = _mm256_set1_ps(1024.0);
    let nlimit = _mm256_set1_ps(-1024.0);
    let zpv = _mm256_set1_epi32(zp);
    let lov = _mm256_set1_epi32(lo);
    let hiv = _mm256_set1_epi32(255);
    let mut j = 0;
    while j + 8 <= n {
        let v = corrected(
            acc.as_ptr().add(j),
            colterm.as_ptr().add(j),
            zw.as_ptr().add(j),
            zw_zero,
            rsv,
        );
        let f = _mm256_cvtepi32_ps(v);
        let y = _mm256_mul_ps(
            _mm256_add_ps(f, _mm256_loadu_ps(bt.as_ptr().add(j))),
            _mm256_loadu_ps(mult.as_ptr().add(j)),
        );
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
        // numerics: clamp(sat_i64(r) + zp, lo, 255). NaN saturates to 0;
        // beyond ±1024 the clamp decides alone — except r ≥ 2^63 with zp > 0,
        // where numerics' i64 addition overflows: those lanes take the scalar
        // formula itself.
        let huge = _mm256_cmp_ps::<_CMP_GE_OQ>(r, two63);
        if zp == 0 || _mm256_movemask_ps(huge) == 0 {
            let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
            let r = _mm256_min_ps(_mm256_max_ps(r, nlimit), limit);
            let q = _mm256_add_epi32(_mm256_cvtps_epi32(r), zpv);
            let q = _mm256_min_epi32(_mm256_max_epi32(q, lov), hiv);
            let p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            let p8 = _mm_packus_epi16(p16, p16);
            if ldn == 1 {
                _mm_storel_epi64(out.add(j) as *mut __m128i, p8);
            } else {
                let bytes = (_mm_cvtsi128_si64(p8) as u64).to_le_bytes();
                for (l, &b) in bytes.iter().enumerate() {
                    *out.add((j + l) * ldn) = b;
                }
            }
        } else {
            let mut a = [0i32; 8];
            _mm256_storeu_si256(a.as_mut_ptr() as *mut __m256i, v);
            for (l, &al) in a.iter().enumerate() {
                *out.add((j + l) * ldn) = requantize_u8(al, bt[j + l], mult[j + l], zp, relu);
            }
        }
        j += 8;
    }
    while j < n {
        let a = acc[j]
            .wrapping_add(colterm[j])
            .wrapping_sub(zw[j].wrapping_mul(rs));
        *out.add(j * ldn) = requantize_u8(a, bt[j], mult[j], zp, relu);
        j += 1;
    }
}

/// Float output of one row: `fma(f32(acc), sp, bias)` (or `f32(acc)·sp`).
///
/// # Safety
/// AVX2 and FMA must be available; all slices have `acc.len()` elements;
/// `out` is valid for writes at `j·ldn` for every `j < acc.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn float_row(
    acc: &[i32],
    colterm: &[i32],
    zw: &[i32],
    zw_zero: bool,
    rs: i32,
    sp: &[f32],
    bias: Option<&[f32]>,
    out: *mut f32,
    ldn: usize,
) {
    let n = acc.len();
    let rsv = _mm256_set1_epi32(rs);
    let mut j = 0;
    while j + 8 <= n {
        let v = corrected(
            acc.as_ptr().add(j),
            colterm.as_ptr().add(j),
            zw.as_ptr().add(j),
            zw_zero,
            rsv,
        );
        let f = _mm256_cvtepi32_ps(v);
        let s = _mm256_loadu_ps(sp.as_ptr().add(j));
        let y = match bias {
            Some(b) => _mm256_fmadd_ps(f, s, _mm256_loadu_ps(b.as_ptr().add(j))),
            None => _mm256_mul_ps(f, s),
        };
        if ldn == 1 {
            _mm256_storeu_ps(out.add(j), y);
        } else {
            let mut t = [0f32; 8];
            _mm256_storeu_ps(t.as_mut_ptr(), y);
            for (l, &tv) in t.iter().enumerate() {
                *out.add((j + l) * ldn) = tv;
            }
        }
        j += 8;
    }
    while j < n {
        let a = acc[j]
            .wrapping_add(colterm[j])
            .wrapping_sub(zw[j].wrapping_mul(rs));
        *out.add(j * ldn) = dynamic_out(a, sp[j], bias.map(|b| b[j]));
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

/// [`requant_row`] over `mrows` rows of a tile (`acc` rows `nr` apart, output
/// rows `ldm` apart), in one call.
///
/// # Safety
/// As [`requant_row`] for every row; `rs` holds `mrows` row sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn requant_tile(
    acc: &[i32],
    nr: usize,
    mrows: usize,
    colterm: &[i32],
    zw: &[i32],
    zw_zero: bool,
    rs: &[i32],
    bt: &[f32],
    mult: &[f32],
    zp: i32,
    relu: bool,
    out: *mut u8,
    ldm: usize,
    ldn: usize,
) {
    let n = colterm.len();
    for r in 0..mrows {
        requant_row(
            &acc[r * nr..r * nr + n],
            colterm,
            zw,
            zw_zero,
            rs[r],
            bt,
            mult,
            zp,
            relu,
            out.add(r * ldm),
            ldn,
        );
    }
}

/// [`requant_tile`] when every `(f32(acc) + bt)·mult` is finite and below
/// 2^62 (the caller's `tame` range check), with contiguous output rows:
/// column-vector outer, row inner (constants loaded once per tile), `y`
/// clamped to the integers that land in [lo, 255] after adding zp, and the
/// magic-number rounding adding zp in the same subtraction (as the AVX-512
/// stage). Columns past the last full vector of 8 take the scalar formula.
///
/// # Safety
/// As [`requant_tile`], with `ldn == 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn requant_tile_tame(
    acc: &[i32],
    nr: usize,
    mrows: usize,
    colterm: &[i32],
    zw: &[i32],
    zw_zero: bool,
    rs: &[i32],
    bt: &[f32],
    mult: &[f32],
    zp: i32,
    relu: bool,
    out: *mut u8,
    ldm: usize,
) {
    let n = colterm.len();
    debug_assert!(acc.len() >= (mrows.max(1) - 1) * nr + n && rs.len() >= mrows);
    debug_assert!(zw.len() == n && bt.len() == n && mult.len() == n);
    let lo = if relu { zp } else { 0 };
    let ylo = _mm256_set1_ps((lo - zp) as f32);
    let yhi = _mm256_set1_ps((255 - zp) as f32);
    let magic = _mm256_set1_ps(12_582_912.0);
    let bias = _mm256_set1_epi32(12_582_912.0f32.to_bits() as i32 - zp);
    let mut j = 0;
    while j + 8 <= n {
        // SAFETY (loads and stores below): columns j..j + 8 lie inside the
        // slices and each output row of the tile.
        let ct = _mm256_loadu_si256(colterm.as_ptr().add(j) as *const __m256i);
        let zwv = _mm256_loadu_si256(zw.as_ptr().add(j) as *const __m256i);
        let btv = _mm256_loadu_ps(bt.as_ptr().add(j));
        let mv = _mm256_loadu_ps(mult.as_ptr().add(j));
        for (r, &rsr) in rs[..mrows].iter().enumerate() {
            let mut v = _mm256_add_epi32(
                _mm256_loadu_si256(acc.as_ptr().add(r * nr + j) as *const __m256i),
                ct,
            );
            if !zw_zero {
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
    for (r, &rsr) in rs[..mrows].iter().enumerate() {
        for jj in j..n {
            let a = acc[r * nr + jj]
                .wrapping_add(colterm[jj])
                .wrapping_sub(zw[jj].wrapping_mul(rsr));
            *out.add(r * ldm + jj) = requantize_u8(a, bt[jj], mult[jj], zp, relu);
        }
    }
}

/// [`float_row`] over `mrows` rows of a tile, in one call.
///
/// # Safety
/// As [`float_row`] for every row; `rs` holds `mrows` row sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn float_tile(
    acc: &[i32],
    nr: usize,
    mrows: usize,
    colterm: &[i32],
    zw: &[i32],
    zw_zero: bool,
    rs: &[i32],
    sp: &[f32],
    bias: Option<&[f32]>,
    out: *mut f32,
    ldm: usize,
    ldn: usize,
) {
    let n = colterm.len();
    for r in 0..mrows {
        float_row(
            &acc[r * nr..r * nr + n],
            colterm,
            zw,
            zw_zero,
            rs[r],
            sp,
            bias,
            out.add(r * ldm),
            ldn,
        );
    }
}
