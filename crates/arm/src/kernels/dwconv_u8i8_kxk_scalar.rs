//! Scalar depthwise convolution of one plane (any kernel size, stride,
//! padding, dilation): exact wrapping int32 accumulators of
//! `Σ (x - x_zp)(w - w_zp)` over the in-bounds taps (padding holds x_zp and
//! contributes zero), like the reference.

/// Geometry of one depthwise plane.
#[derive(Debug, Clone, Copy)]
pub struct DwGeom {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

/// Input row index of output row `oy` and tap row `ky`, if inside.
#[inline]
pub fn in_y(g: &DwGeom, oy: usize, ky: usize) -> Option<usize> {
    let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.padding[0] as isize;
    (iy >= 0 && iy < g.h as isize).then_some(iy as usize)
}

/// Input column index of output column `ox` and tap column `kx`, if inside.
#[inline]
pub fn in_x(g: &DwGeom, ox: usize, kx: usize) -> Option<usize> {
    let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize - g.padding[1] as isize;
    (ix >= 0 && ix < g.w as isize).then_some(ix as usize)
}

/// Accumulator of output pixel (oy, ox); `w` holds `w - w_zp` per tap.
#[inline]
pub fn pixel(g: &DwGeom, plane: &[u8], xz: i32, w: &[i16], oy: usize, ox: usize) -> i32 {
    let mut acc = 0i32;
    for ky in 0..g.kh {
        let Some(iy) = in_y(g, oy, ky) else { continue };
        for kx in 0..g.kw {
            let Some(ix) = in_x(g, ox, kx) else { continue };
            let xv = plane[iy * g.w + ix] as i32 - xz;
            acc = acc.wrapping_add(xv * w[ky * g.kw + kx] as i32);
        }
    }
    acc
}

/// Accumulators of output row `oy` (`acc.len() == ow`).
pub fn row(g: &DwGeom, plane: &[u8], xz: i32, w: &[i16], oy: usize, acc: &mut [i32]) {
    for (ox, a) in acc.iter_mut().enumerate() {
        *a = pixel(g, plane, xz, w, oy, ox);
    }
}
