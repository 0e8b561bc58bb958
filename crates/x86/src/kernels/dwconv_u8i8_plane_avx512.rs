//! Depthwise convolution of one channel plane with AVX-512: exact f32 FMAs
//! over the taps (integer sums below 2^24, see `dwconv_f32_row_avx2`) and
//! the requantization done in registers, 16 output pixels per vector.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Where [`fill_plane`] writes: an `h × w` input plane into an f32 plane of
/// row stride `wp`, at (`top`, `left`) (the padding around it untouched).
#[derive(Debug, Clone, Copy)]
pub struct FillAt {
    pub h: usize,
    pub w: usize,
    pub xz: i32,
    pub wp: usize,
    pub top: usize,
    pub left: usize,
}

/// Write `x − zx` of the u8 plane `src` into the f32 plane `xf` at `at`.
///
/// # Safety
/// AVX-512F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn fill_plane(src: &[u8], at: &FillAt, xf: &mut [f32]) {
    let FillAt {
        h,
        w,
        xz,
        wp,
        top,
        left,
    } = *at;
    assert!(src.len() >= h * w && xf.len() >= (top + h - 1) * wp + left + w);
    let zv = _mm512_set1_epi32(xz);
    for y in 0..h {
        // SAFETY (loads and stores): row y of src and row top + y of xf,
        // columns left .. left + w, are inside the slices (asserted).
        let s = src.as_ptr().add(y * w);
        let d = xf.as_mut_ptr().add((top + y) * wp + left);
        let mut x = 0;
        while x + 16 <= w {
            let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(s.add(x) as *const __m128i));
            _mm512_storeu_ps(d.add(x), _mm512_cvtepi32_ps(_mm512_sub_epi32(v, zv)));
            x += 16;
        }
        while x < w {
            *d.add(x) = (*s.add(x) as i32 - xz) as f32;
            x += 1;
        }
    }
}

/// One padded input plane and the taps over it.
pub struct Plane<'a> {
    /// `x − zx` as f32, row stride `wp`, with the padding and some slack.
    pub xf: &'a [f32],
    pub wp: usize,
    /// (offset in `xf`, weight `w − zw`) of each tap.
    pub taps: &'a [(usize, f32)],
    pub oh: usize,
    pub ow: usize,
    pub stride: [usize; 2],
}

/// One channel's requantization (`rquant_core::output::Requant`'s column).
#[derive(Debug, Clone, Copy)]
pub struct ChannelOut {
    pub bt: f32,
    pub mult: f32,
    pub zp: i32,
    pub lo: u8,
    pub hi: u8,
}

/// Requantized depthwise output of one plane: `out[oy·ow + ox] =
/// requantize(Σ_t w_t·xf[oy·s0·wp + off_t + ox·s1])` with the channel's
/// bias term, multiplier, zero point and clamp.
///
/// # Safety
/// AVX-512F/BW must be available; `p.taps.len() <= MAX_TAPS` of
/// `dwconv_f32_row_avx2`; every read index (up to 16 lanes past each row's
/// last output, times `s1`) is inside `p.xf`; `out.len() >= oh·ow`;
/// `(2^31 + |bt|)·|mult| < 2^62` (no NaN or overflow lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn plane(p: &Plane<'_>, ch: &ChannelOut, out: &mut [u8]) {
    let (wp, oh, ow, stride) = (p.wp, p.oh, p.ow, p.stride);
    assert!(out.len() >= oh * ow);
    let (btv, multv) = (_mm512_set1_ps(ch.bt), _mm512_set1_ps(ch.mult));
    let (lim, nlim) = (_mm512_set1_ps(1024.0), _mm512_set1_ps(-1024.0));
    let (zpv, lov, hiv) = (
        _mm512_set1_epi32(ch.zp),
        _mm512_set1_epi32(ch.lo as i32),
        _mm512_set1_epi32(ch.hi as i32),
    );
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(stride[1] as i32),
    );
    for oy in 0..oh {
        let base = p.xf.as_ptr().add(oy * stride[0] * wp);
        let mut ox = 0;
        while ox < ow {
            let mut s = _mm512_setzero_ps();
            for &(off, w) in p.taps {
                // SAFETY: inside xf (the caller's contract).
                let at = base.add(off + ox * stride[1]);
                let x = if stride[1] == 1 {
                    _mm512_loadu_ps(at)
                } else {
                    _mm512_i32gather_ps::<4>(idx, at)
                };
                s = _mm512_fmadd_ps(x, _mm512_set1_ps(w), s);
            }
            // s is the exact accumulator as f32: numerics' (f32(acc) + bt)·mult,
            // clamped (commutes with rounding), rne, + zp, clamp to [lo, hi].
            let y = _mm512_mul_ps(_mm512_add_ps(s, btv), multv);
            let y = _mm512_min_ps(_mm512_max_ps(y, nlim), lim);
            let q =
                _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
            let q = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(q, zpv), lov), hiv);
            let b = _mm512_cvtepi32_epi8(q);
            let n = 16.min(ow - ox);
            if n == 16 {
                _mm_storeu_si128(out.as_mut_ptr().add(oy * ow + ox) as *mut __m128i, b);
            } else {
                let mut t = [0u8; 16];
                _mm_storeu_si128(t.as_mut_ptr() as *mut __m128i, b);
                out[oy * ow + ox..oy * ow + ox + n].copy_from_slice(&t[..n]);
            }
            ox += 16;
        }
    }
}
