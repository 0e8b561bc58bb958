//! Quantized add / add_relu / mul of quint8 rows, AVX2, 32 elements a step
//! (`rquant_core::membound::BinaryParams`): codes widened to int32, zero
//! points subtracted (exact), converted to f32; add: `(a·sa + b·sb)·inv`
//! (relu before the `·inv`), mul: `(a·b)·mult` (the product of two codes is
//! exact in f32); then clamped to `[−oz, 255 − oz]` and rounded half to
//! even with the 1.5·2^23 magic number, which also adds the zero point —
//! `BinaryParams::apply`'s operations in the same order. The second
//! operand is a row as long as the first, one row repeated (NHWC pixels
//! against a channel vector) or one code. Tails end with one overlapping
//! 8-element step; fewer than 8 elements run the scalar loop.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::membound::{binary_scalar_part, BinaryParams, Operand, Out};
use rquant_core::ops::BinaryOp;

const MAGIC: f32 = 12_582_912.0;

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Consts {
    sa: __m256,
    sb: __m256,
    inv: __m256,
    mult: __m256,
    za: __m256i,
    zb: __m256i,
    lo: __m256,
    hi: __m256,
    magic: __m256,
    bias: __m256i,
}

/// The second operand of one segment: codes at a pointer, or one value.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
enum B {
    Ptr(*const u8),
    Splat(__m256),
}

/// # Safety
/// AVX2 available; `b.check(a.len(), dst.len())` holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn binary(p: &BinaryParams, a: &[u8], b: Operand<'_>, dst: &mut [Out]) {
    let n = a.len();
    let short = match b {
        Operand::Rows(r) => r.len() < 8,
        _ => n < 8,
    };
    if short {
        return binary_scalar_part(p, a, b, dst, 0);
    }
    let (lo, hi) = p.bounds();
    let k = Consts {
        sa: _mm256_set1_ps(p.sa),
        sb: _mm256_set1_ps(p.sb),
        inv: _mm256_set1_ps(p.inv),
        mult: _mm256_set1_ps(p.mult),
        za: _mm256_set1_epi32(p.za),
        zb: _mm256_set1_epi32(p.zb),
        lo: _mm256_set1_ps(lo),
        hi: _mm256_set1_ps(hi),
        magic: _mm256_set1_ps(MAGIC),
        bias: _mm256_set1_epi32(MAGIC.to_bits() as i32 - p.oz),
    };
    let (pa, pd) = (a.as_ptr(), dst.as_mut_ptr() as *mut u8);
    let run = |pa: *const u8, b: B, pd: *mut u8, len: usize| match p.op {
        BinaryOp::Add => segment::<0>(&k, pa, b, pd, len),
        BinaryOp::AddRelu => segment::<1>(&k, pa, b, pd, len),
        BinaryOp::Mul => segment::<2>(&k, pa, b, pd, len),
    };
    // SAFETY (the calls below): each segment's `len` elements of a, b and
    // dst lie inside their slices (the operand check), and len ≥ 8.
    match b {
        Operand::Same(bs) => run(pa, B::Ptr(bs.as_ptr()), pd, n),
        Operand::Splat(v) => run(
            pa,
            B::Splat(_mm256_set1_ps((v as i32 - p.zb) as f32)),
            pd,
            n,
        ),
        Operand::Rows(r) => {
            let l = r.len();
            for i in 0..n / l {
                run(pa.add(i * l), B::Ptr(r.as_ptr()), pd.add(i * l), l);
            }
        }
    }
}

/// `len ≥ 8` elements: 32 a step, then 8 a step, the last 8 overlapping.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn segment<const OP: u8>(k: &Consts, pa: *const u8, b: B, pd: *mut u8, len: usize) {
    // SAFETY (loads and stores below): every access is within the first
    // `len` elements of the segment (the caller's contract).
    let widen = |p: *const u8, z: __m256i| {
        _mm256_cvtepi32_ps(_mm256_sub_epi32(
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i)),
            z,
        ))
    };
    let step = |i: usize| -> __m256i {
        let fa = widen(pa.add(i), k.za);
        let fb = match b {
            B::Ptr(pb) => widen(pb.add(i), k.zb),
            B::Splat(v) => v,
        };
        let y = match OP {
            0 => _mm256_mul_ps(
                _mm256_add_ps(_mm256_mul_ps(fa, k.sa), _mm256_mul_ps(fb, k.sb)),
                k.inv,
            ),
            1 => _mm256_mul_ps(
                _mm256_max_ps(
                    _mm256_add_ps(_mm256_mul_ps(fa, k.sa), _mm256_mul_ps(fb, k.sb)),
                    _mm256_setzero_ps(),
                ),
                k.inv,
            ),
            _ => _mm256_mul_ps(_mm256_mul_ps(fa, fb), k.mult),
        };
        let c = _mm256_min_ps(_mm256_max_ps(y, k.lo), k.hi);
        _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(c, k.magic)), k.bias)
    };
    let store8 = |i: usize, q: __m256i| {
        let w = _mm256_permute4x64_epi64::<0xD8>(_mm256_packus_epi32(q, q));
        let b = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_castsi256_si128(w));
        _mm_storel_epi64(pd.add(i) as *mut __m128i, b);
    };
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut i = 0;
    while i + 32 <= len {
        let (q0, q1, q2, q3) = (step(i), step(i + 8), step(i + 16), step(i + 24));
        let b = _mm256_packus_epi16(_mm256_packus_epi32(q0, q1), _mm256_packus_epi32(q2, q3));
        _mm256_storeu_si256(
            pd.add(i) as *mut __m256i,
            _mm256_permutevar8x32_epi32(b, order),
        );
        i += 32;
    }
    while i + 8 <= len {
        store8(i, step(i));
        i += 8;
    }
    if i < len {
        store8(len - 8, step(len - 8));
    }
}
