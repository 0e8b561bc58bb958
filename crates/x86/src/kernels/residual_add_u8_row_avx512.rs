//! AVX-512 residual add over a run of output codes: `a[i] =
//! add.apply(a[i], b[i])` (`rquant_core::output::ResidualAdd`: dequantize
//! both, add in f32, `max(·, 0)` for add_relu, quantize), 16 lanes at a
//! time with the tail masked. The conv's fused output stage runs it on each
//! stored tile row while it is in L1.
//!
//! Bits: the scalar definition's operations in the same order on each lane
//! (int32 subtract, convert, multiply, add; `vmaxps` returns its second
//! operand for a NaN lane, as Rust's `f32::max` returns the non-NaN one;
//! the magic-number rounding of `numerics::quantize_val`).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use rquant_core::output::ResidualAdd;

#[cfg(target_arch = "x86_64")]
use super::output_avx512::{clamp_ps, lanes, relu_ps};

/// `a[i] = add.apply(a[i], b[i])` for `i < n`.
///
/// # Safety
/// AVX-512F/BW/VL must be available; `a` is valid for reads and writes of
/// `n` bytes and `b` for reads of `n` bytes (no other thread writes them).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn add_row(a: *mut u8, b: *const u8, n: usize, add: &ResidualAdd) {
    let sa = _mm512_set1_ps(add.a_scale);
    let za = _mm512_set1_epi32(add.a_zp);
    let sb = _mm512_set1_ps(add.b_scale);
    let zb = _mm512_set1_epi32(add.b_zp);
    let inv = _mm512_set1_ps(add.inv_out);
    let lo = _mm512_set1_ps((0 - add.out_zp) as f32);
    let hi = _mm512_set1_ps((255 - add.out_zp) as f32);
    let magic = _mm512_set1_ps(12_582_912.0);
    let bias = _mm512_set1_epi32(12_582_912.0f32.to_bits() as i32 - add.out_zp);
    let mut j = 0;
    while j < n {
        let m = lanes(n - j);
        // SAFETY: lanes j..min(j + 16, n) are inside both runs (masked).
        let qa = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, a.add(j) as *const i8));
        let qb = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, b.add(j) as *const i8));
        let fa = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(qa, za)), sa);
        let fb = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(qb, zb)), sb);
        let mut c = _mm512_add_ps(fa, fb);
        if add.relu {
            c = relu_ps(c);
        }
        let y = _mm512_add_ps(clamp_ps(_mm512_mul_ps(c, inv), lo, hi), magic);
        let q = _mm512_sub_epi32(_mm512_castps_si512(y), bias);
        _mm_mask_storeu_epi8(a.add(j) as *mut i8, m, _mm512_cvtepi32_epi8(q));
        j += 16;
    }
}
