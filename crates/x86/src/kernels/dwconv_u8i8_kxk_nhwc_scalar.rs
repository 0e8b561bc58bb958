//! Depthwise conv on NHWC activations in plain Rust: the scalar twin of
//! the `dwconv_u8i8_kxk_nhwc_*` kernels and the scalar path's kernel. Any
//! kernel size, stride, padding and dilation; exact int32
//! `Σ (x − zx)(w − zw)` per channel (padding contributes 0), requantized by
//! core's `Requant` (tame or not).

use std::mem::MaybeUninit;

use rquant_core::output::Requant;

/// Output rows `oy0 .. oy0 + rows` of one image.
#[derive(Debug)]
pub struct DwPlain<'a> {
    /// The image, NHWC: `h × w` pixels of `c` channels.
    pub x: &'a [u8],
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub xz: i32,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
    pub ow: usize,
    /// `w − zw`, `[c][kh·kw]`.
    pub taps: &'a [i32],
    pub requant: &'a Requant,
    pub oy0: usize,
    pub rows: usize,
    /// The rows' outputs, NHWC (`rows × ow × c`; every byte is written).
    pub out: &'a mut [MaybeUninit<u8>],
}

/// Fill `t.out`.
pub fn run(t: &mut DwPlain<'_>) {
    let (c, ntaps) = (t.c, t.kh * t.kw);
    assert!(t.x.len() >= t.h * t.w * c && t.taps.len() >= c * ntaps);
    assert!(t.out.len() >= t.rows * t.ow * c && t.requant.len() >= c);
    let mut acc = vec![0i32; c];
    for r in 0..t.rows {
        let oy = t.oy0 + r;
        for ox in 0..t.ow {
            acc.fill(0);
            for ky in 0..t.kh {
                let iy = (oy * t.stride[0] + ky * t.dil[0]) as isize - t.pad[0] as isize;
                if iy < 0 || iy >= t.h as isize {
                    continue;
                }
                for kx in 0..t.kw {
                    let ix = (ox * t.stride[1] + kx * t.dil[1]) as isize - t.pad[1] as isize;
                    if ix < 0 || ix >= t.w as isize {
                        continue;
                    }
                    let px = &t.x[(iy as usize * t.w + ix as usize) * c..][..c];
                    let tap = ky * t.kw + kx;
                    for (ch, (a, &v)) in acc.iter_mut().zip(px).enumerate() {
                        *a = a.wrapping_add((v as i32 - t.xz) * t.taps[ch * ntaps + tap]);
                    }
                }
            }
            let o = &mut t.out[(r * t.ow + ox) * c..][..c];
            for (ch, (dst, &a)) in o.iter_mut().zip(&acc).enumerate() {
                dst.write(t.requant.requantize(ch, a));
            }
        }
    }
}
