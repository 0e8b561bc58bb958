//! Depthwise conv on NHWC activations with AVX-512, channels in the 16
//! int32 lanes: the `KH × KW` microkernel (instantiated for 3×3 and 5×5).
//!
//! The input arrives as pair rows (packed by `dwpack_u8i16_pairs_avx512`):
//! lane `c` of pair `j` of an input row holds the int16 pair
//! `(x[j][c] − zx, x[j+1][c] − zx)` (zero in the padding), and the weights
//! as int16 pairs `(w[ky][2p][c] − zw[c], w[ky][2p+1][c] − zw[c])` (zero
//! past the kernel's last column). One `vpdpwssd` (AVX512-VNNI; `vpmaddwd`
//! + `vpaddd` on AVX-512BW) multiplies two taps of 16 channels and adds
//! them to int32: `⌈KW/2⌉·KH` instructions per 16 outputs.
//!
//! Exactness: both int16 factors lie in [−255, 255], each product and the
//! pair's sum fit int32 with room to spare, and the sum over taps is
//! `Σ (x − zx)(w − zw)` — the reference's accumulator, which stays far
//! inside int32 for these kernel sizes (|sum| ≤ 25·255·255). The
//! requantization is core's `Requant` formula, done in registers when the
//! constants are tame (the driver runs the scalar twin otherwise).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use super::output_avx512::clamp_ps;

/// One band of output rows of one image: the operands of [`run`].
#[derive(Debug)]
pub struct DwBand<'a> {
    /// Pair rows of the band's input rows: row `i` at `r[i·row_len..]`,
    /// laid out `[cblocks][pairs][16]`.
    pub r: &'a [i32],
    pub row_len: usize,
    /// Pairs per row and channel block.
    pub pairs: usize,
    /// Channels (the last block may be partial) and 16-channel blocks.
    pub c: usize,
    pub cblocks: usize,
    /// Output rows of the band and output pixels per row.
    pub rows: usize,
    pub ow: usize,
    /// Input rows between output rows (the vertical stride).
    pub sy: usize,
    /// Pair index of output column `ox`, tap pair `p`: `ox·step_ox + p·step_p`.
    pub step_ox: usize,
    pub step_p: usize,
    /// Weight pairs `[cblocks][KH][⌈KW/2⌉][16]`.
    pub w: &'a [i32],
    /// Per channel (`cblocks·16`, padded): bias term and multiplier.
    pub bt: &'a [f32],
    pub mult: &'a [f32],
    pub out_zp: i32,
    pub lo: u8,
    pub hi: u8,
    /// The band's outputs, NHWC: `rows × ow` pixels of `c` channels.
    pub out: &'a mut [u8],
}

impl DwBand<'_> {
    /// Panics unless every read and write of a `KH × KW` kernel on these
    /// operands is in bounds.
    pub fn assert_fits(&self, kh: usize, kw: usize) {
        let np = kw.div_ceil(2);
        assert!(self.cblocks == self.c.div_ceil(16) && self.rows >= 1 && self.ow >= 1);
        assert!(self.row_len >= self.cblocks * self.pairs * 16);
        let last_pair = (self.ow - 1) * self.step_ox + (np - 1) * self.step_p;
        assert!(last_pair < self.pairs, "pairs per row");
        let last_row = (self.rows - 1) * self.sy + kh - 1;
        assert!(self.r.len() >= (last_row + 1) * self.row_len, "pair rows");
        assert!(self.w.len() >= self.cblocks * kh * np * 16, "weights");
        assert!(self.bt.len() >= self.cblocks * 16 && self.mult.len() >= self.cblocks * 16);
        assert!(self.out.len() >= self.rows * self.ow * self.c, "outputs");
    }
}

/// The band through a `KH × KW` kernel with `vpdpwssd`.
///
/// # Safety
/// AVX-512F/BW/VL and AVX512-VNNI must be available; `t` fits
/// ([`DwBand::assert_fits`]); the requantization constants are tame.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn run_vnni<const KH: usize, const KW: usize, const NP: usize>(t: &mut DwBand<'_>) {
    band::<KH, NP, true>(t)
}

/// The band through a `KH × KW` kernel with `vpmaddwd` + `vpaddd`.
///
/// # Safety
/// AVX-512F/BW/VL must be available; `t` fits ([`DwBand::assert_fits`]);
/// the requantization constants are tame.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn run<const KH: usize, const KW: usize, const NP: usize>(t: &mut DwBand<'_>) {
    band::<KH, NP, false>(t)
}

/// `acc + Σ pairs x·w` (one tap pair of 16 channels).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn madd<const VNNI: bool>(acc: __m512i, x: __m512i, w: __m512i) -> __m512i {
    if VNNI {
        _mm512_dpwssd_epi32(acc, x, w)
    } else {
        _mm512_add_epi32(acc, _mm512_madd_epi16(x, w))
    }
}

/// Output pixels computed together (independent accumulator chains).
const PX: usize = 4;

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn band<const KH: usize, const NP: usize, const VNNI: bool>(t: &mut DwBand<'_>) {
    let (c, ow) = (t.c, t.ow);
    let ylo = _mm512_set1_ps((t.lo as i32 - t.out_zp) as f32);
    let yhi = _mm512_set1_ps((t.hi as i32 - t.out_zp) as f32);
    let magic = _mm512_set1_ps(12_582_912.0);
    let bias = _mm512_set1_epi32(12_582_912.0f32.to_bits() as i32 - t.out_zp);
    let r = t.r.as_ptr();
    let out = t.out.as_mut_ptr();
    for cb in 0..t.cblocks {
        let m: __mmask16 = (((1u32 << (c - cb * 16).min(16)) - 1) & 0xffff) as __mmask16;
        // SAFETY (every load and store below): the indices stay inside the
        // operands' bounds (DwBand::assert_fits): pair rows up to
        // (rows−1)·sy + KH−1, pairs up to (ow−1)·step_ox + (NP−1)·step_p,
        // weight block cb, output pixels of the band with the channel
        // tail masked.
        let mut wv = [[_mm512_setzero_si512(); NP]; KH];
        for (ky, wk) in wv.iter_mut().enumerate() {
            for (p, v) in wk.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(t.w.as_ptr().add(((cb * KH + ky) * NP + p) * 16) as *const __m512i);
            }
        }
        let btv = _mm512_loadu_ps(t.bt.as_ptr().add(cb * 16));
        let mv = _mm512_loadu_ps(t.mult.as_ptr().add(cb * 16));
        let requant = |acc: __m512i| -> __m128i {
            let y = _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepi32_ps(acc), btv), mv);
            let q = _mm512_add_ps(clamp_ps(y, ylo, yhi), magic);
            _mm512_cvtepi32_epi8(_mm512_sub_epi32(_mm512_castps_si512(q), bias))
        };
        for oy in 0..t.rows {
            let mut rows = [r; KH];
            for (ky, row) in rows.iter_mut().enumerate() {
                *row = r.add((oy * t.sy + ky) * t.row_len + cb * t.pairs * 16);
            }
            let o_row = out.add(oy * ow * c + cb * 16);
            let mut ox = 0;
            while ox + PX <= ow {
                let mut acc = [_mm512_setzero_si512(); PX];
                for (ky, row) in rows.iter().enumerate() {
                    for (p, &w) in wv[ky].iter().enumerate() {
                        for (u, a) in acc.iter_mut().enumerate() {
                            let j = (ox + u) * t.step_ox + p * t.step_p;
                            let x = _mm512_loadu_si512(row.add(j * 16) as *const __m512i);
                            *a = madd::<VNNI>(*a, x, w);
                        }
                    }
                }
                for (u, &a) in acc.iter().enumerate() {
                    _mm_mask_storeu_epi8(o_row.add((ox + u) * c) as *mut i8, m, requant(a));
                }
                ox += PX;
            }
            while ox < ow {
                let mut a = _mm512_setzero_si512();
                for (ky, row) in rows.iter().enumerate() {
                    for (p, &w) in wv[ky].iter().enumerate() {
                        let j = ox * t.step_ox + p * t.step_p;
                        let x = _mm512_loadu_si512(row.add(j * 16) as *const __m512i);
                        a = madd::<VNNI>(a, x, w);
                    }
                }
                _mm_mask_storeu_epi8(o_row.add(ox * c) as *mut i8, m, requant(a));
                ox += 1;
            }
        }
    }
}
