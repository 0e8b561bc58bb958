//! Pair rows for the NHWC depthwise kernels, AVX-512: one input row of
//! `W` pixels × `C` channels (u8) into `[cblocks][pairs][16]` int32 lanes,
//! lane `l` of pair `j` of block `cb` holding the int16 pair
//! `(X(col), X(col + 1))` of channel `ch = 16·cb + l`, `col = j·step − left`,
//! where `X` is the input byte, the zero point `zx` in the padding (a column
//! outside the row, or a row outside the image), and 0 past the last
//! channel. The scalar definition is `crate::dwconv::fill_pairs_scalar`.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// One pair row to fill.
#[derive(Debug)]
pub struct PairRow<'a> {
    /// The input row (`w · c` bytes), or None for a row of padding.
    pub x: Option<&'a [u8]>,
    pub w: usize,
    pub c: usize,
    pub cblocks: usize,
    pub xz: u8,
    /// Padding columns on the left.
    pub left: usize,
    pub pairs: usize,
    /// Padded column of pair `j`: `j · step`.
    pub step: usize,
    /// `cblocks · pairs · 16` lanes.
    pub out: &'a mut [i32],
}

impl PairRow<'_> {
    /// Panics unless the operands have the sizes the fill assumes.
    pub fn assert_fits(&self) {
        assert!(self.cblocks == self.c.div_ceil(16) && self.step >= 1);
        assert!(self.out.len() >= self.cblocks * self.pairs * 16);
        if let Some(x) = self.x {
            assert!(x.len() >= self.w * self.c);
        }
    }
}

/// Fill the pair row.
///
/// # Safety
/// AVX-512F/BW/VL must be available; `t` fits ([`PairRow::assert_fits`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn fill(t: &mut PairRow<'_>) {
    let out = t.out.as_mut_ptr();
    let (w, c) = (t.w as isize, t.c);
    for cb in 0..t.cblocks {
        let m: __mmask16 = (((1u32 << (c - cb * 16).min(16)) - 1) & 0xffff) as __mmask16;
        let zx = _mm512_maskz_mov_epi32(m, _mm512_set1_epi32(t.xz as i32));
        // The 16 lanes of column `col`.
        let lanes = |col: isize| -> __m512i {
            match t.x {
                Some(x) if col >= 0 && col < w => {
                    // SAFETY: pixel `col` of the row, channels 16·cb ..
                    // (masked to C), is inside `x` (asserted w·c bytes).
                    _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(
                        m,
                        x.as_ptr().add(col as usize * c + cb * 16) as *const i8,
                    ))
                }
                _ => zx,
            }
        };
        let o = out.add(cb * t.pairs * 16);
        let col0 = -(t.left as isize);
        // SAFETY (stores): lane block (cb, j) is inside `out` (asserted).
        if t.step == 1 {
            // Each column is the high half of one pair and the low half of
            // the next: loaded once.
            let mut cur = lanes(col0);
            for j in 0..t.pairs {
                let next = lanes(col0 + j as isize + 1);
                let pair = _mm512_or_si512(cur, _mm512_slli_epi32::<16>(next));
                _mm512_storeu_si512(o.add(j * 16) as *mut __m512i, pair);
                cur = next;
            }
        } else {
            for j in 0..t.pairs {
                let col = col0 + (j * t.step) as isize;
                let pair = _mm512_or_si512(lanes(col), _mm512_slli_epi32::<16>(lanes(col + 1)));
                _mm512_storeu_si512(o.add(j * 16) as *mut __m512i, pair);
            }
        }
    }
}
