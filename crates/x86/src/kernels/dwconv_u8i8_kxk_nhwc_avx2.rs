//! Depthwise conv on NHWC activations with AVX2: the `KH × KW`
//! microkernel of `dwconv_u8i8_kxk_nhwc_avx512.rs` (same pair rows, weight
//! pairs and accumulator start, same exact int32 sums) with 8 int32 lanes:
//! each 16-channel block in two halves, `vpmaddwd` + `vpaddd` per tap pair,
//! the weight pairs read from L1.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub use super::dwconv_u8i8_kxk_nhwc_avx512::DwBand;

/// Output pixels computed together (independent accumulator chains).
const PX: usize = 4;

/// The band through a `KH × KW` kernel (`NP = ⌈KW/2⌉`; pair `p` of column
/// `ox` at `ox·SO + p·SP`).
///
/// # Safety
/// AVX2 must be available; `t` fits ([`DwBand::assert_fits`] with
/// `KH, KW, SO, SP`); the requantization constants are tame.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn run<const KH: usize, const NP: usize, const SO: usize, const SP: usize>(
    t: &mut DwBand<'_>,
) {
    let (c, ow) = (t.c, t.ow);
    let ylo = _mm256_set1_ps((t.lo as i32 - t.out_zp) as f32);
    let yhi = _mm256_set1_ps((t.hi as i32 - t.out_zp) as f32);
    let magic = _mm256_set1_ps(12_582_912.0);
    let bias = _mm256_set1_epi32(12_582_912.0f32.to_bits() as i32 - t.out_zp);
    let r = t.r.as_ptr();
    let out = t.out.as_mut_ptr() as *mut u8;
    for h in 0..t.cblocks * 2 {
        let (cb, half) = (h / 2, (h % 2) * 8);
        let ch0 = cb * 16 + half;
        if ch0 >= c {
            break;
        }
        let valid = (c - ch0).min(8);
        // SAFETY (every load and store below): indices inside the operands
        // (DwBand::assert_fits); outputs past the last channel are not
        // written (`valid` lanes only).
        let wb = t.w.as_ptr().add(cb * KH * NP * 16 + half);
        let a0 = _mm256_loadu_si256(t.init.as_ptr().add(ch0) as *const __m256i);
        let btv = _mm256_loadu_ps(t.bt.as_ptr().add(ch0));
        let mv = _mm256_loadu_ps(t.mult.as_ptr().add(ch0));
        let store = |dst: *mut u8, acc: __m256i| {
            let y = _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(acc), btv), mv);
            let y = _mm256_add_ps(_mm256_min_ps(_mm256_max_ps(y, ylo), yhi), magic);
            let q = _mm256_sub_epi32(_mm256_castps_si256(y), bias);
            // Every lane is in 0..=255: the saturating packs only narrow.
            let p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            let p8 = _mm_packus_epi16(p16, p16);
            if valid == 8 {
                _mm_storel_epi64(dst as *mut __m128i, p8);
            } else {
                let mut tmp = [0u8; 16];
                _mm_storeu_si128(tmp.as_mut_ptr() as *mut __m128i, p8);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, valid);
            }
        };
        for oy in 0..t.rows {
            let mut rows = [r; KH];
            for (ky, row) in rows.iter_mut().enumerate() {
                *row = r.add((oy * t.sy + ky) * t.row_len + cb * t.pairs * 16 + half);
            }
            let mut o = out.add(oy * ow * c + ch0);
            // The steps wrap: past the band's last pixel (a later channel
            // block's offset) the pointers leave the operands, unread.
            let mut left = ow;
            while left >= PX {
                let mut acc = [a0; PX];
                for (ky, row) in rows.iter().enumerate() {
                    for p in 0..NP {
                        let w = _mm256_loadu_si256(wb.add((ky * NP + p) * 16) as *const __m256i);
                        for (u, a) in acc.iter_mut().enumerate() {
                            let x = _mm256_loadu_si256(
                                row.add((u * SO + p * SP) * 16) as *const __m256i
                            );
                            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(x, w));
                        }
                    }
                }
                for (u, &a) in acc.iter().enumerate() {
                    store(o.add(u * c), a);
                }
                for row in rows.iter_mut() {
                    *row = row.wrapping_add(PX * SO * 16);
                }
                o = o.wrapping_add(PX * c);
                left -= PX;
            }
            for _ in 0..left {
                let mut a = a0;
                for (ky, row) in rows.iter().enumerate() {
                    for p in 0..NP {
                        let w = _mm256_loadu_si256(wb.add((ky * NP + p) * 16) as *const __m256i);
                        let x = _mm256_loadu_si256(row.add(p * SP * 16) as *const __m256i);
                        a = _mm256_add_epi32(a, _mm256_madd_epi16(x, w));
                    }
                }
                store(o, a);
                for row in rows.iter_mut() {
                    *row = row.wrapping_add(SO * 16);
                }
                o = o.wrapping_add(c);
            }
        }
    }
}
