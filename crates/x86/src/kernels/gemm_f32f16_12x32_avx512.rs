//! fp16-weight f32 GEMM microkernel (AVX-512F), 12×32 tile; with few rows,
//! up to 4 column panels at once so that enough FMA chains are in flight.
//!
//! Vectorised across N: each lane is one output column, and each column's
//! value is the reference's single sequential chain over k — a plain product
//! `x0·w0`, then `fma(x_k, w_k, acc)` for k = 1.., then `+ bias` — so the bits
//! are the reference's. fp16 → f32 (`vcvtph2ps`) is exact.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub const MR: usize = 12;
pub const NR: usize = 32;
/// Panels processed together when `mrows <= 2`.
pub const FEW_PANELS: usize = 4;

/// # Safety
/// AVX-512F must be available; `x` points at `mrows` rows of `k` f32 each,
/// `ldx` apart; `w` holds `panels` weight panels of `k·NR` fp16 values
/// (`[k][NR]`) `wstride` values apart; `bias` is null or holds
/// `panels·NR` f32; `c` has room for `mrows` rows of `panels·NR` f32;
/// `k >= 1`; `1 <= mrows <= MR`; `panels` is 1, or `FEW_PANELS` with `mrows <= 2`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn dispatch(
    mrows: usize,
    panels: usize,
    k: usize,
    x: *const f32,
    ldx: usize,
    w: *const u16,
    wstride: usize,
    bias: *const f32,
    c: *mut f32,
) {
    if panels == FEW_PANELS {
        match mrows {
            1 => kernel::<1, FEW_PANELS>(k, x, ldx, w, wstride, bias, c),
            _ => kernel::<2, FEW_PANELS>(k, x, ldx, w, wstride, bias, c),
        }
        return;
    }
    match mrows {
        1 => kernel::<1, 1>(k, x, ldx, w, wstride, bias, c),
        2 => kernel::<2, 1>(k, x, ldx, w, wstride, bias, c),
        3 => kernel::<3, 1>(k, x, ldx, w, wstride, bias, c),
        4 => kernel::<4, 1>(k, x, ldx, w, wstride, bias, c),
        5 => kernel::<5, 1>(k, x, ldx, w, wstride, bias, c),
        6 => kernel::<6, 1>(k, x, ldx, w, wstride, bias, c),
        7 => kernel::<7, 1>(k, x, ldx, w, wstride, bias, c),
        8 => kernel::<8, 1>(k, x, ldx, w, wstride, bias, c),
        9 => kernel::<9, 1>(k, x, ldx, w, wstride, bias, c),
        10 => kernel::<10, 1>(k, x, ldx, w, wstride, bias, c),
        11 => kernel::<11, 1>(k, x, ldx, w, wstride, bias, c),
        _ => kernel::<12, 1>(k, x, ldx, w, wstride, bias, c),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_w(p: *const u16) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::needless_range_loop)]
unsafe fn kernel<const M: usize, const P: usize>(
    k: usize,
    x: *const f32,
    ldx: usize,
    w: *const u16,
    wstride: usize,
    bias: *const f32,
    c: *mut f32,
) {
    // SAFETY (whole body): reads stay within the k values of each row and
    // the P panels of k·NR weights the caller guarantees; writes within
    // M rows of P·NR outputs.
    let mut wv = [[_mm512_setzero_ps(); 2]; P];
    for p in 0..P {
        wv[p][0] = load_w(w.add(p * wstride));
        wv[p][1] = load_w(w.add(p * wstride + 16));
    }
    let mut acc = [[[_mm512_setzero_ps(); 2]; P]; M];
    for i in 0..M {
        let xv = _mm512_set1_ps(*x.add(i * ldx));
        for p in 0..P {
            acc[i][p][0] = _mm512_mul_ps(xv, wv[p][0]);
            acc[i][p][1] = _mm512_mul_ps(xv, wv[p][1]);
        }
    }
    for kk in 1..k {
        for p in 0..P {
            let wp = w.add(p * wstride + kk * NR);
            wv[p][0] = load_w(wp);
            wv[p][1] = load_w(wp.add(16));
        }
        for i in 0..M {
            let xv = _mm512_set1_ps(*x.add(i * ldx + kk));
            for p in 0..P {
                acc[i][p][0] = _mm512_fmadd_ps(xv, wv[p][0], acc[i][p][0]);
                acc[i][p][1] = _mm512_fmadd_ps(xv, wv[p][1], acc[i][p][1]);
            }
        }
    }
    let ldc = P * NR;
    for i in 0..M {
        for p in 0..P {
            for j in 0..2 {
                let mut v = acc[i][p][j];
                if !bias.is_null() {
                    v = _mm512_add_ps(v, _mm512_loadu_ps(bias.add(p * NR + 16 * j)));
                }
                _mm512_storeu_ps(c.add(i * ldc + p * NR + 16 * j), v);
            }
        }
    }
}
