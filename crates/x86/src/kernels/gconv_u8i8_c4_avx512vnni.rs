//! Grouped conv with `G` = 4, 8 or 16 input and output channels per group
//! (ResNeXt's 3×3 convs), NHWC, AVX-512 VNNI: one output row of one image.
//!
//! Sixteen output channels fill a zmm of int32 lanes; their groups read 16
//! consecutive input channels, so each tap loads those 16 bytes once into
//! every 128-bit lane, and `vpshufb` hands lane `l` the 4 bytes
//! `4q .. 4q + 4` of its group (`q < G/4`) for one `vpdpbusd` against the
//! matching 4 weights. Every multiply-accumulate is a useful one, where the
//! per-group GEMM pads `G` output columns to the kernel's 32. Taps in the
//! padding read the zero point, so the accumulators are the raw
//! `Σ x·w` the GEMM output stage expects (exact: `vpdpbusd` does not
//! saturate).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// One output row to compute.
#[derive(Debug)]
pub struct GRow<'a> {
    /// One image, NHWC, `h · w · c` bytes.
    pub x: &'a [u8],
    pub h: usize,
    pub w: usize,
    /// Channels, in and out (`groups · G`, a multiple of 16).
    pub c: usize,
    pub xz: u8,
    pub oy: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
    /// Channels per group: 4, 8 or 16.
    pub g: usize,
    /// Packed weights ([`packed_len`]).
    pub wts: &'a [i8],
    /// `ow · c` raw accumulators, pixel-major.
    pub acc: &'a mut [i32],
}

impl GRow<'_> {
    /// Panics unless the operands have the sizes the kernel assumes.
    pub fn assert_fits(&self) {
        assert!(matches!(self.g, 4 | 8 | 16) && self.c.is_multiple_of(16));
        assert!(self.x.len() >= self.h * self.w * self.c);
        assert!(self.wts.len() >= packed_len(self.c, self.g, self.kh * self.kw));
        assert!(self.acc.len() >= self.ow * self.c);
        assert!(self.stride[0] >= 1 && self.stride[1] >= 1);
    }
}

/// Bytes of the packed weights: `[O/16][tap][G/4][16 lanes][4]` int8, lane
/// `l` of block `b` being output channel `16b + l` and its 4 bytes the
/// weights of input channels `4q .. 4q + 4` of its group at that tap
/// (`crate::gconv` packs them).
pub fn packed_len(c: usize, g: usize, taps: usize) -> usize {
    c / 16 * taps * (g / 4) * 64
}

/// Output pixels computed together (independent accumulator chains).
const PX: usize = 4;

/// Compute the row's raw accumulators.
///
/// # Safety
/// AVX-512F/BW and AVX-512 VNNI must be available; `t` fits
/// ([`GRow::assert_fits`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn run(t: &mut GRow<'_>) {
    let (c, g, nq) = (t.c, t.g, t.g / 4);
    let taps = t.kh * t.kw;
    let zrow = [t.xz; 16];
    // vpshufb control per q: byte 4i + j of 128-bit lane k (output lane
    // l = 4k + i, group-local index l / G) picks input byte
    // (l / G)·G + 4q + j of the 16 loaded.
    let mut ctrl = [_mm512_setzero_si512(); 4];
    for (q, cq) in ctrl.iter_mut().enumerate().take(nq) {
        let mut b = [0u8; 64];
        for (i, v) in b.iter_mut().enumerate() {
            let (l, j) = (i / 4, i % 4);
            *v = ((l % 16 / g) * g + 4 * q + j) as u8;
        }
        // SAFETY: 64 bytes read from a 64-byte array.
        *cq = _mm512_loadu_si512(b.as_ptr() as *const __m512i);
    }
    let iy0 = (t.oy * t.stride[0]) as isize - t.pad[0] as isize;
    for blk in 0..c / 16 {
        // SAFETY: block `blk`'s weights lie inside `wts` (asserted length).
        let wb = t.wts.as_ptr().add(blk * taps * nq * 64);
        let mut ox = 0;
        while ox < t.ow {
            let np = (t.ow - ox).min(PX);
            let mut acc = [_mm512_setzero_si512(); PX];
            for ky in 0..t.kh {
                let iy = iy0 + (ky * t.dil[0]) as isize;
                let row_in = iy >= 0 && (iy as usize) < t.h;
                for kx in 0..t.kw {
                    let mut xv = [_mm512_setzero_si512(); PX];
                    for (p, v) in xv.iter_mut().enumerate().take(np) {
                        let ix =
                            ((ox + p) * t.stride[1] + kx * t.dil[1]) as isize - t.pad[1] as isize;
                        let src = if row_in && ix >= 0 && (ix as usize) < t.w {
                            // SAFETY: pixel (iy, ix) is inside the image and
                            // channels 16·blk .. + 16 inside its c.
                            t.x.as_ptr()
                                .add((iy as usize * t.w + ix as usize) * c + blk * 16)
                        } else {
                            zrow.as_ptr()
                        };
                        // SAFETY: 16 bytes at `src` (an inside pixel's
                        // block, or the 16-byte zero-point row).
                        *v = _mm512_broadcast_i32x4(_mm_loadu_si128(src as *const __m128i));
                    }
                    let tap = ky * t.kw + kx;
                    for (q, &cq) in ctrl.iter().enumerate().take(nq) {
                        // SAFETY: (tap, q) of this block: inside `wts`.
                        let wv = _mm512_loadu_si512(wb.add((tap * nq + q) * 64) as *const __m512i);
                        for p in 0..np {
                            acc[p] =
                                _mm512_dpbusd_epi32(acc[p], _mm512_shuffle_epi8(xv[p], cq), wv);
                        }
                    }
                }
            }
            for (p, a) in acc.iter().enumerate().take(np) {
                // SAFETY: pixel ox + p < ow, channels 16·blk .. + 16 < c:
                // inside `acc` (asserted ow·c).
                _mm512_storeu_si512(
                    t.acc.as_mut_ptr().add((ox + p) * c + blk * 16) as *mut __m512i,
                    *a,
                );
            }
            ox += np;
        }
    }
}
