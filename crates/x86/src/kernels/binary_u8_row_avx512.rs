//! Quantized add / add_relu / mul of quint8 rows, AVX-512F/BW, 64 elements
//! a step, the tail in masked 16-element steps: the operations of
//! `binary_u8_row_avx2` (and of `BinaryParams::apply`) on 16 lanes,
//! narrowed with `vpmovdb`.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::membound::{BinaryParams, Operand, Out};
use rquant_core::ops::BinaryOp;

#[cfg(target_arch = "x86_64")]
use super::output_avx512::{clamp_ps, lanes};

const MAGIC: f32 = 12_582_912.0;

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Consts {
    sa: __m512,
    sb: __m512,
    inv: __m512,
    mult: __m512,
    za: __m512i,
    zb: __m512i,
    lo: __m512,
    hi: __m512,
    magic: __m512,
    bias: __m512i,
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
enum B {
    Ptr(*const u8),
    Splat(__m512),
}

/// # Safety
/// AVX-512F/BW/VL available; `b.check(a.len(), dst.len())` holds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn binary(p: &BinaryParams, a: &[u8], b: Operand<'_>, dst: &mut [Out]) {
    let n = a.len();
    let (lo, hi) = p.bounds();
    let k = Consts {
        sa: _mm512_set1_ps(p.sa),
        sb: _mm512_set1_ps(p.sb),
        inv: _mm512_set1_ps(p.inv),
        mult: _mm512_set1_ps(p.mult),
        za: _mm512_set1_epi32(p.za),
        zb: _mm512_set1_epi32(p.zb),
        lo: _mm512_set1_ps(lo),
        hi: _mm512_set1_ps(hi),
        magic: _mm512_set1_ps(MAGIC),
        bias: _mm512_set1_epi32(MAGIC.to_bits() as i32 - p.oz),
    };
    let (pa, pd) = (a.as_ptr(), dst.as_mut_ptr() as *mut u8);
    let run = |pa: *const u8, b: B, pd: *mut u8, len: usize| match p.op {
        BinaryOp::Add => segment::<0>(&k, pa, b, pd, len),
        BinaryOp::AddRelu => segment::<1>(&k, pa, b, pd, len),
        BinaryOp::Mul => segment::<2>(&k, pa, b, pd, len),
    };
    // SAFETY (the calls below): each segment's `len` elements of a, b and
    // dst lie inside their slices (the operand check).
    match b {
        Operand::Same(bs) => run(pa, B::Ptr(bs.as_ptr()), pd, n),
        Operand::Splat(v) => run(
            pa,
            B::Splat(_mm512_set1_ps((v as i32 - p.zb) as f32)),
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn segment<const OP: u8>(k: &Consts, pa: *const u8, b: B, pd: *mut u8, len: usize) {
    // SAFETY (loads and stores below): every access is within the first
    // `len` elements of the segment (the caller's contract); masked-off
    // lanes are not accessed.
    let widen = |p: *const u8, m: __mmask16, z: __m512i| {
        _mm512_cvtepi32_ps(_mm512_sub_epi32(
            _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, p as *const i8)),
            z,
        ))
    };
    let inf = _mm512_set1_ps(f32::INFINITY);
    let step = |i: usize, m: __mmask16| -> __m128i {
        let fa = widen(pa.add(i), m, k.za);
        let fb = match b {
            B::Ptr(pb) => widen(pb.add(i), m, k.zb),
            B::Splat(v) => v,
        };
        let y = match OP {
            0 => _mm512_mul_ps(
                _mm512_add_ps(_mm512_mul_ps(fa, k.sa), _mm512_mul_ps(fb, k.sb)),
                k.inv,
            ),
            1 => _mm512_mul_ps(
                // max(·, 0) (as a clamp to [0, ∞]: Miri has no zmm vmaxps).
                clamp_ps(
                    _mm512_add_ps(_mm512_mul_ps(fa, k.sa), _mm512_mul_ps(fb, k.sb)),
                    _mm512_setzero_ps(),
                    inf,
                ),
                k.inv,
            ),
            _ => _mm512_mul_ps(_mm512_mul_ps(fa, fb), k.mult),
        };
        let c = clamp_ps(y, k.lo, k.hi);
        _mm512_cvtepi32_epi8(_mm512_sub_epi32(
            _mm512_castps_si512(_mm512_add_ps(c, k.magic)),
            k.bias,
        ))
    };
    let mut i = 0;
    while i + 64 <= len {
        for u in 0..4 {
            _mm_storeu_si128(pd.add(i + 16 * u) as *mut __m128i, step(i + 16 * u, !0));
        }
        i += 64;
    }
    while i < len {
        let m = lanes(len - i);
        _mm_mask_storeu_epi8(pd.add(i) as *mut i8, m, step(i, m));
        i += 16;
    }
}
