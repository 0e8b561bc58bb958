//! Depthwise conv on NHWC activations with AVX-512, channels in the 16
//! int32 lanes: the `KH × KW` microkernel (instantiated for 3×3 and 5×5,
//! strides 1 and 2).
//!
//! The input arrives as pair rows (packed by `dwpack_u8i16_pairs_avx512`):
//! lane `c` of pair `j` of an input row holds the int16 pair
//! `(x[j][c], x[j+1][c])` (the zero point `zx` in the padding), and the
//! weights as int16 pairs `(w[ky][2p][c] − zw[c], w[ky][2p+1][c] − zw[c])`
//! (zero past the kernel's last column). One `vpdpwssd` (AVX512-VNNI;
//! `vpmaddwd` + `vpaddd` on AVX-512BW) multiplies two taps of 16 channels
//! and adds them to int32: `⌈KW/2⌉·KH` instructions per 16 outputs. The
//! accumulators start at `−zx·Σ_taps (w − zw)`, so they end at
//! `Σ (x − zx)(w − zw)` (padding: `x = zx`, contributing 0).
//!
//! Exactness: the int16 factors lie in [0, 255] and [−255, 255], each pair
//! sum fits int32, and the total is the reference's accumulator, far inside
//! int32 for these kernel sizes (|sum| ≤ 25·255·255 + 255·25·255). The
//! requantization is core's `Requant` formula, in registers, for tame
//! constants (the driver runs the scalar twin otherwise).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

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
    /// Weight pairs `[cblocks][KH][⌈KW/2⌉][16]`.
    pub w: &'a [i32],
    /// Per channel (`cblocks·16`, padded): the accumulators' start
    /// `−zx·Σ_taps (w − zw)`, the bias term and the multiplier.
    pub init: &'a [i32],
    pub bt: &'a [f32],
    pub mult: &'a [f32],
    pub out_zp: i32,
    pub lo: u8,
    pub hi: u8,
    /// The band's outputs, NHWC: `rows × ow` pixels of `c` channels (every
    /// byte is written).
    pub out: &'a mut [MaybeUninit<u8>],
}

impl DwBand<'_> {
    /// Panics unless every read and write of a `KH × KW` kernel whose pair
    /// `p` of output column `ox` is pair `ox·step_ox + p·step_p` is in
    /// bounds.
    pub fn assert_fits(&self, kh: usize, kw: usize, step_ox: usize, step_p: usize) {
        let np = kw.div_ceil(2);
        assert!(self.cblocks == self.c.div_ceil(16) && self.rows >= 1 && self.ow >= 1);
        assert!(self.row_len >= self.cblocks * self.pairs * 16);
        let last_pair = (self.ow - 1) * step_ox + (np - 1) * step_p;
        assert!(last_pair < self.pairs, "pairs per row");
        let last_row = (self.rows - 1) * self.sy + kh - 1;
        assert!(self.r.len() >= (last_row + 1) * self.row_len, "pair rows");
        assert!(self.w.len() >= self.cblocks * kh * np * 16, "weights");
        let lanes = self.cblocks * 16;
        assert!(self.init.len() >= lanes && self.bt.len() >= lanes && self.mult.len() >= lanes);
        assert!(self.out.len() >= self.rows * self.ow * self.c, "outputs");
    }
}

/// The band through a `KH × KW` kernel (`NP = ⌈KW/2⌉` pairs per kernel
/// row; pair `p` of column `ox` at `ox·SO + p·SP`) with `vpdpwssd`.
///
/// # Safety
/// AVX-512F/BW/VL and AVX512-VNNI must be available; `t` fits
/// ([`DwBand::assert_fits`] with `KH, KW, SO, SP`); the requantization
/// constants are tame.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn run_vnni<const KH: usize, const NP: usize, const SO: usize, const SP: usize>(
    t: &mut DwBand<'_>,
) {
    band::<KH, NP, SO, SP, true>(t)
}

/// [`run_vnni`] with `vpmaddwd` + `vpaddd` (AVX-512BW without VNNI).
///
/// # Safety
/// AVX-512F/BW/VL must be available; as [`run_vnni`] otherwise.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn run<const KH: usize, const NP: usize, const SO: usize, const SP: usize>(
    t: &mut DwBand<'_>,
) {
    band::<KH, NP, SO, SP, false>(t)
}

/// `acc + Σ pairs x·w` (one tap pair of 16 channels).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn madd<const VNNI: bool>(acc: __m512i, x: __m512i, w: __m512i) -> __m512i {
    // Miri has no vpdpwssd; vpmaddwd + vpaddd is its exact twin (vpdpwssd
    // does not saturate), so the rest of the VNNI kernel still runs there.
    if VNNI && !cfg!(miri) {
        _mm512_dpwssd_epi32(acc, x, w)
    } else {
        _mm512_add_epi32(acc, _mm512_madd_epi16(x, w))
    }
}

/// Output pixels computed together (independent accumulator chains).
const PX: usize = 4;

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn band<
    const KH: usize,
    const NP: usize,
    const SO: usize,
    const SP: usize,
    const VNNI: bool,
>(
    t: &mut DwBand<'_>,
) {
    let (c, ow) = (t.c, t.ow);
    let ylo = _mm512_set1_ps((t.lo as i32 - t.out_zp) as f32);
    let yhi = _mm512_set1_ps((t.hi as i32 - t.out_zp) as f32);
    let magic = _mm512_set1_ps(12_582_912.0);
    let bias = _mm512_set1_epi32(12_582_912.0f32.to_bits() as i32 - t.out_zp);
    let r = t.r.as_ptr();
    let out = t.out.as_mut_ptr() as *mut u8;
    for cb in 0..t.cblocks {
        let m: __mmask16 = (((1u32 << (c - cb * 16).min(16)) - 1) & 0xffff) as __mmask16;
        // SAFETY (every load and store below): the indices stay inside the
        // operands (DwBand::assert_fits): pair rows up to
        // (rows−1)·sy + KH−1, pairs up to (ow−1)·SO + (NP−1)·SP, weight
        // block cb, output pixels of the band with the channel tail masked.
        let mut wv = [[_mm512_setzero_si512(); NP]; KH];
        for (ky, wk) in wv.iter_mut().enumerate() {
            for (p, v) in wk.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(
                    t.w.as_ptr().add(((cb * KH + ky) * NP + p) * 16) as *const __m512i
                );
            }
        }
        let a0 = _mm512_loadu_si512(t.init.as_ptr().add(cb * 16) as *const __m512i);
        let btv = _mm512_loadu_ps(t.bt.as_ptr().add(cb * 16));
        let mv = _mm512_loadu_ps(t.mult.as_ptr().add(cb * 16));
        let store = |dst: *mut u8, acc: __m512i| {
            let y = _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepi32_ps(acc), btv), mv);
            let q = _mm512_add_ps(clamp_ps(y, ylo, yhi), magic);
            let q = _mm512_sub_epi32(_mm512_castps_si512(q), bias);
            _mm_mask_storeu_epi8(dst as *mut i8, m, _mm512_cvtepi32_epi8(q));
        };
        for oy in 0..t.rows {
            let mut rows = [r; KH];
            for (ky, row) in rows.iter_mut().enumerate() {
                *row = r.add((oy * t.sy + ky) * t.row_len + cb * t.pairs * 16);
            }
            let mut o = out.add(oy * ow * c + cb * 16);
            // The steps wrap: past the band's last pixel (a later channel
            // block's offset) the pointers leave the operands, unread.
            let mut left = ow;
            while left >= PX {
                let mut acc = [a0; PX];
                for (ky, row) in rows.iter().enumerate() {
                    for (p, &w) in wv[ky].iter().enumerate() {
                        for (u, a) in acc.iter_mut().enumerate() {
                            let x = _mm512_loadu_si512(
                                row.add((u * SO + p * SP) * 16) as *const __m512i
                            );
                            *a = madd::<VNNI>(*a, x, w);
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
                    for (p, &w) in wv[ky].iter().enumerate() {
                        let x = _mm512_loadu_si512(row.add(p * SP * 16) as *const __m512i);
                        a = madd::<VNNI>(a, x, w);
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
