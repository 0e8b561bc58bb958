//! Pair rows for the NHWC depthwise kernels, AVX-512: one input row of
//! `W` pixels × `C` channels (u8) into `[cblocks][pairs][16]` int32 lanes,
//! lane `l` of pair `j` of block `cb` holding the int16 pair
//! `(x[col][ch] − zx, x[col + 1][ch] − zx)`, `col = j·step − left`,
//! `ch = 16·cb + l`, with 0 for columns in the padding and channels past
//! `C`. The scalar definition is `crate::dwconv::fill_pairs_scalar`.

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
    pub xz: i32,
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
        assert!(self.cblocks == self.c.div_ceil(16));
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
    let Some(x) = t.x else {
        t.out[..t.cblocks * t.pairs * 16].fill(0);
        return;
    };
    let zx = _mm512_set1_epi32(t.xz);
    let low = _mm512_set1_epi32(0xffff);
    let (w, c) = (t.w as isize, t.c);
    // Lanes of column `col`, block `cb`: `x − zx` (0 outside the row and
    // past the last channel).
    let lanes = |col: isize, cb: usize| -> __m512i {
        if col < 0 || col >= w {
            return _mm512_setzero_si512();
        }
        let m: __mmask16 = (((1u32 << (c - cb * 16).min(16)) - 1) & 0xffff) as __mmask16;
        // SAFETY: pixel `col` of the row, channels 16·cb .. (masked to C),
        // is inside `x` (asserted length w·c).
        let v = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(
            m,
            x.as_ptr().add(col as usize * c + cb * 16) as *const i8,
        ));
        _mm512_maskz_sub_epi32(m, v, zx)
    };
    for j in 0..t.pairs {
        let col = (j * t.step) as isize - t.left as isize;
        for cb in 0..t.cblocks {
            let pair = _mm512_or_si512(
                _mm512_and_si512(lanes(col, cb), low),
                _mm512_slli_epi32::<16>(lanes(col + 1, cb)),
            );
            // SAFETY: lane block (cb, j) is inside `out` (asserted).
            _mm512_storeu_si512(out.add((cb * t.pairs + j) * 16) as *mut __m512i, pair);
        }
    }
}
