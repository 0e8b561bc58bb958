//! AVX-512 output stages (16 lanes) for the AVX-512 paths: the requantizing
//! tile when the per-call constants guarantee no lane can be NaN or beyond
//! ±2^62 (`Requant::tame`, the common case; otherwise the AVX2 stage with its
//! per-lane fallbacks runs), and the float tile of dynamic linear.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::output::{FloatTile, ReqTile};

/// Requantize the tile's rows into `out` (rows `ldm` apart, contiguous
/// columns) when every `(f32(acc) + bt)·mult` is finite and below 2^62 in
/// magnitude. Column-vector outer, row inner: each column's constants
/// (column term, zero point, bias term, multiplier) are loaded once per
/// tile, and the column tail is masked. Same signature as the AVX2 twin.
///
/// # Safety
/// AVX-512F/BW/VL must be available; `out` is valid for `t.mrows` rows of
/// `t.ncols()` bytes, `ldm` apart; the tame range holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn requant_tile_tame(t: &ReqTile<'_>, out: *mut u8, ldm: usize) {
    let n = t.ncols();
    let (mrows, nr, zp) = (t.mrows, t.nr, t.out_zp);
    assert!(t.acc.len() >= (mrows.max(1) - 1) * nr + n && t.rs.len() >= mrows);
    assert!(t.zp.zw.len() == n && t.bt.len() == n && t.mult.len() == n);
    // Clamp y to the integers that land in [lo, hi] once zp is added:
    // clamping to integer bounds commutes with rounding, so this equals
    // clamp(rne(y) + zp, lo, hi); the magic-number rounding then adds zp
    // for free (as `quantize_val`).
    let ylo = _mm512_set1_ps((t.clamp.lo as i32 - zp) as f32);
    let yhi = _mm512_set1_ps((t.clamp.hi as i32 - zp) as f32);
    let magic = _mm512_set1_ps(12_582_912.0);
    let bias = _mm512_set1_epi32(12_582_912.0f32.to_bits() as i32 - zp);
    let mut j = 0;
    while j < n {
        let k = (n - j).min(16);
        let m = lanes(k);
        // SAFETY (loads and stores below): lanes j..j + k of each row lie
        // inside the slices (n columns) and the tile's output row.
        let ct = _mm512_maskz_loadu_epi32(m, t.zp.colterm.as_ptr().add(j));
        let zwv = _mm512_maskz_loadu_epi32(m, t.zp.zw.as_ptr().add(j));
        let btv = _mm512_maskz_loadu_ps(m, t.bt.as_ptr().add(j));
        let mv = _mm512_maskz_loadu_ps(m, t.mult.as_ptr().add(j));
        for (r, &rsr) in t.rs[..mrows].iter().enumerate() {
            let mut v = _mm512_add_epi32(
                _mm512_maskz_loadu_epi32(m, t.acc.as_ptr().add(r * nr + j)),
                ct,
            );
            if !t.zp.zw_zero {
                v = _mm512_sub_epi32(v, _mm512_mullo_epi32(zwv, _mm512_set1_epi32(rsr)));
            }
            let y = _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepi32_ps(v), btv), mv);
            let c = _mm512_add_ps(clamp_ps(y, ylo, yhi), magic);
            let q = _mm512_sub_epi32(_mm512_castps_si512(c), bias);
            // (Narrow, then a masked byte store: Miri implements these two,
            // not the fused masked vpmovdb-to-memory.)
            _mm_mask_storeu_epi8(out.add(r * ldm + j) as *mut i8, m, _mm512_cvtepi32_epi8(q));
        }
        j += 16;
    }
}

/// Float output of the tile's rows into `out` (rows `ldm` apart, contiguous
/// columns): `fma(f32(acc), sp, bias)` or `f32(acc)·sp`, the column tail
/// masked.
///
/// A row that does not start on a 64-byte line (a `Vec<f32>` is only
/// 16-byte aligned) is stored as line-aligned vectors, the partial first
/// and last lines masked: a 16-float store at a 16-byte offset straddles two
/// lines, and the 128×768×3072 dynamic linear ran 1.2× slower on such an
/// output than on an aligned one.
///
/// # Safety
/// AVX-512F must be available; `out` is valid for `t.mrows` rows of
/// `t.ncols()` floats, `ldm` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn float_tile(t: &FloatTile<'_>, out: *mut f32, ldm: usize) {
    let n = t.ncols();
    let (mrows, nr) = (t.mrows, t.nr);
    assert!(t.acc.len() >= (mrows.max(1) - 1) * nr + n && t.rs.len() >= mrows);
    assert!(t.zp.zw.len() == n && t.sp.len() == n && t.bias.is_none_or(|b| b.len() == n));
    // Row r's floats at columns j.. (lanes of m), before the store.
    let value = |r: usize, j: usize, m: __mmask16| {
        // SAFETY: lanes j..j + popcount(m) lie inside the slices (n columns)
        // and the accumulator row (asserted above).
        unsafe {
            let mut v = _mm512_add_epi32(
                _mm512_maskz_loadu_epi32(m, t.acc.as_ptr().add(r * nr + j)),
                _mm512_maskz_loadu_epi32(m, t.zp.colterm.as_ptr().add(j)),
            );
            if !t.zp.zw_zero {
                let zwv = _mm512_maskz_loadu_epi32(m, t.zp.zw.as_ptr().add(j));
                v = _mm512_sub_epi32(v, _mm512_mullo_epi32(zwv, _mm512_set1_epi32(t.rs[r])));
            }
            let f = _mm512_cvtepi32_ps(v);
            let spv = _mm512_maskz_loadu_ps(m, t.sp.as_ptr().add(j));
            match t.bias {
                Some(b) => _mm512_fmadd_ps(f, spv, _mm512_maskz_loadu_ps(m, b.as_ptr().add(j))),
                None => _mm512_mul_ps(f, spv),
            }
        }
    };
    for r in 0..mrows {
        let row = out.wrapping_add(r * ldm);
        // Floats past the start of the row's first line.
        let o = (row as usize / 4) % 16;
        if o == 0 || !n.is_multiple_of(16) || !(row as usize).is_multiple_of(4) {
            let mut j = 0;
            while j < n {
                let m = lanes(n - j);
                // SAFETY: lanes j..j + k of the row are the tile's outputs.
                unsafe { _mm512_mask_storeu_ps(row.add(j), m, value(r, j, m)) };
                j += 16;
            }
            continue;
        }
        // SAFETY: as above; o is the row's offset in floats from its line.
        unsafe {
            match o {
                1 => aligned_row::<15>(row, n, &value, r),
                2 => aligned_row::<14>(row, n, &value, r),
                3 => aligned_row::<13>(row, n, &value, r),
                4 => aligned_row::<12>(row, n, &value, r),
                5 => aligned_row::<11>(row, n, &value, r),
                6 => aligned_row::<10>(row, n, &value, r),
                7 => aligned_row::<9>(row, n, &value, r),
                8 => aligned_row::<8>(row, n, &value, r),
                9 => aligned_row::<7>(row, n, &value, r),
                10 => aligned_row::<6>(row, n, &value, r),
                11 => aligned_row::<5>(row, n, &value, r),
                12 => aligned_row::<4>(row, n, &value, r),
                13 => aligned_row::<3>(row, n, &value, r),
                14 => aligned_row::<2>(row, n, &value, r),
                _ => aligned_row::<1>(row, n, &value, r),
            }
        }
    }
}

/// Row `r` of a float tile (`n` columns, a multiple of 16, from `value`)
/// at `row`, which starts `16 − S` floats past a 64-byte line, as
/// line-aligned vectors: vector c holds columns `16c − o .. 16c + 16 − o`
/// (o = 16 − S), its low o lanes from the previous 16 columns (`valignd`
/// by S: a shuffle Miri can run, unlike `vpermt2ps`), the first and last
/// lines masked to the row's own columns.
///
/// # Safety
/// AVX-512F must be available; `row` is valid for `n` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn aligned_row<const S: i32>(
    row: *mut f32,
    n: usize,
    value: &impl Fn(usize, usize, __mmask16) -> __m512,
    r: usize,
) {
    let o = 16 - S as usize;
    let line = row.wrapping_sub(o);
    let low = lanes(o);
    let mut prev = _mm512_setzero_si512();
    for c in 0..n / 16 {
        let y = _mm512_castps_si512(value(r, 16 * c, 0xffff));
        let v = _mm512_castsi512_ps(_mm512_alignr_epi32::<S>(y, prev));
        let m = if c == 0 { !low } else { 0xffff };
        // SAFETY: the stored lanes are columns 16c − o + l ≥ 0 of this row
        // (the first vector's low o lanes, before column 0, are masked off).
        unsafe { _mm512_mask_storeu_ps(line.wrapping_add(16 * c), m, v) };
        prev = y;
    }
    let last = _mm512_alignr_epi32::<S>(_mm512_setzero_si512(), prev);
    // SAFETY: the last line's low o lanes are the row's last o columns.
    unsafe { _mm512_mask_storeu_ps(line.wrapping_add(n), low, _mm512_castsi512_ps(last)) };
}

/// `min(max(x, lo), hi)` with NaN lanes giving `lo` (vmaxps returns its
/// second operand).
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn clamp_ps(x: __m512, lo: __m512, hi: __m512) -> __m512 {
    _mm512_min_ps(_mm512_max_ps(x, lo), hi)
}

/// Under Miri, which lacks `vmaxps`/`vminps` on zmm: the same clamp on the
/// floats' bits mapped to an order-preserving integer (NaN lanes need not
/// match: NaN input is an error either way). The loads and stores, where
/// undefined behaviour could hide, are the same code.
#[cfg(all(target_arch = "x86_64", miri))]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn clamp_ps(x: __m512, lo: __m512, hi: __m512) -> __m512 {
    let key = |v: __m512| {
        let b = _mm512_castps_si512(v);
        _mm512_xor_si512(b, _mm512_srli_epi32::<1>(_mm512_srai_epi32::<31>(b)))
    };
    let k = _mm512_min_epi32(_mm512_max_epi32(key(x), key(lo)), key(hi));
    // The map is its own inverse.
    _mm512_castsi512_ps(_mm512_xor_si512(
        k,
        _mm512_srli_epi32::<1>(_mm512_srai_epi32::<31>(k)),
    ))
}

/// `max(x, 0)` with `vmaxps`'s operand order (a −0 or NaN lane gives +0).
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn relu_ps(x: __m512) -> __m512 {
    _mm512_max_ps(x, _mm512_setzero_ps())
}

/// Under Miri (no `vmaxps` on zmm): [`clamp_ps`]'s integer twin to
/// `[0, +inf]`, the same value for every non-NaN lane (−0 gives +0).
#[cfg(all(target_arch = "x86_64", miri))]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn relu_ps(x: __m512) -> __m512 {
    clamp_ps(x, _mm512_setzero_ps(), _mm512_set1_ps(f32::INFINITY))
}

/// The mask of the first `min(k, 16)` lanes (column and row tails).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn lanes(k: usize) -> __mmask16 {
    ((1u32 << k.min(16)) - 1) as __mmask16
}
