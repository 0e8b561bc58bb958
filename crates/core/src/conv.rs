//! The ISA-independent parts of the engines' convolutions, written once:
//!
//! - the (ky, kx, c) order of a conv as a GEMM: each group's weights
//!   reordered to `[og][kh·kw·cg]` ([`weights_khwc`], and back with
//!   [`weights_from_khwc`] for `unpack`);
//! - one activation row of that GEMM — one output pixel's taps — gathered
//!   straight from the NHWC input ([`Im2Row::row`]), the input zero point in
//!   the padded taps (they contribute `(zx − zx)·w = 0`). The rows of a 1×1,
//!   stride-1, unpadded, one-group conv are the NHWC pixels themselves;
//! - depthwise conv on NHWC rows in plain Rust ([`dw_rows`]): the scalar
//!   path's kernel and the twin the engines' vector kernels are tested
//!   against.
//!
//! The engines' own code (microkernels, indirection, output stages) reads
//! these; nothing here depends on an ISA.

use std::mem::MaybeUninit;

use crate::ops::ConvGeometry;
use crate::output::Requant;

/// `[O, cg, kh, kw]` weights in the GEMM's `[O][kh][kw][cg]` order: group
/// `g`'s `[og][kh·kw·cg]` matrix is the `g`-th `og·kh·kw·cg` slice.
pub fn weights_khwc(raw: &[i8], shape: [usize; 4]) -> Vec<i8> {
    reorder(raw, shape, true)
}

/// The inverse of [`weights_khwc`]: `[O][kh][kw][cg]` back to `[O, cg, kh, kw]`.
pub fn weights_from_khwc(w: &[i8], shape: [usize; 4]) -> Vec<i8> {
    reorder(w, shape, false)
}

/// Moves element (oc, ic, tap) between `[O][cg][taps]` and `[O][taps][cg]`.
fn reorder(src: &[i8], shape: [usize; 4], to_khwc: bool) -> Vec<i8> {
    let [o, cg, kh, kw] = shape;
    let (taps, rest) = (kh * kw, cg * kh * kw);
    assert_eq!(src.len(), o * rest, "weight length");
    let mut dst = vec![0i8; src.len()];
    for oc in 0..o {
        for ic in 0..cg {
            for t in 0..taps {
                let (a, b) = (oc * rest + ic * taps + t, oc * rest + t * cg + ic);
                if to_khwc {
                    dst[b] = src[a];
                } else {
                    dst[a] = src[b];
                }
            }
        }
    }
    dst
}

/// The activation rows of a conv's GEMM, read from the NHWC input of the
/// whole batch: row (image `b`, output pixel `pix`) of group `gi` holds, for
/// every tap (ky, kx) in order, the group's `cg` channels of the input
/// pixel under it (or `cg` zero points where the tap falls in the padding).
#[derive(Debug, Clone, Copy)]
pub struct Im2Row<'a> {
    g: &'a ConvGeometry,
    x: &'a [u8],
    xz: u8,
    /// Division by `ow` and by `oh·ow` as multiplications: a row of a
    /// 1-channel 3×3 conv is 9 bytes, and its four divisions cost more
    /// than the copies (MNIST's first conv).
    by_ow: DivBy,
    by_plane: DivBy,
    /// Channels per group and the row length (their divisions, once).
    cg: usize,
    k: usize,
    /// One group and unit dilation across: a kernel row's taps are one
    /// contiguous run of `kw·c` bytes, `row_step` bytes after the last.
    runs: bool,
    row_step: usize,
}

/// Exact `n / d` for `n, d < 2³²` as a 64×64 → high-64 product
/// (`m = ⌈2⁶⁴ / d⌉`; Lemire, Kaser, Kurz 2019), and a plain division
/// beyond.
#[derive(Debug, Clone, Copy)]
struct DivBy {
    d: u64,
    m: u64,
}

impl DivBy {
    fn new(d: usize) -> DivBy {
        let d = d.max(1) as u64;
        let m = if d < 1 << 32 {
            (u64::MAX / d).wrapping_add(1)
        } else {
            0
        };
        DivBy { d, m }
    }
    /// `(n / d, n % d)`.
    #[inline(always)]
    fn divmod(&self, n: usize) -> (usize, usize) {
        let n = n as u64;
        let q = if n < 1 << 32 && self.d < 1 << 32 && self.d > 1 {
            ((self.m as u128 * n as u128) >> 64) as u64
        } else {
            n / self.d
        };
        (q as usize, (n - q * self.d) as usize)
    }
}

impl<'a> Im2Row<'a> {
    /// Over `x`, the `[n, h, w, c]` input of geometry `g`, zero point `xz`.
    pub fn new(g: &'a ConvGeometry, x: &'a [u8], xz: u8) -> Self {
        assert_eq!(x.len(), g.n * g.h * g.w * g.c, "NHWC input length");
        Im2Row {
            g,
            x,
            xz,
            by_ow: DivBy::new(g.ow),
            by_plane: DivBy::new(g.oh * g.ow),
            cg: g.c_per_group(),
            k: g.c_per_group() * g.kh * g.kw,
            runs: g.params.groups == 1 && g.params.dilation[1] == 1,
            row_step: g.params.dilation[0] * g.w * g.c,
        }
    }

    /// The GEMM's reduction length per group, `cg·kh·kw`.
    pub fn k(&self) -> usize {
        self.k
    }

    /// A 1×1, stride-1, unpadded, one-group conv: row `b·oh·ow + pix` is
    /// input pixel `b·h·w + pix` (the NHWC pixels are the GEMM rows).
    pub fn direct(&self) -> bool {
        let (g, p) = (self.g, self.g.params);
        g.kh == 1 && g.kw == 1 && p.stride == [1, 1] && p.padding == [0, 0] && p.groups == 1
    }

    /// Input row and column under tap (ky, kx) of output pixel `pix`,
    /// signed (negative or past the edge: padding).
    #[inline]
    pub fn tap(&self, pix: usize, ky: usize, kx: usize) -> (isize, isize) {
        let p = self.g.params;
        let (oy, ox) = self.by_ow.divmod(pix);
        (
            (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize,
            (ox * p.stride[1] + kx * p.dilation[1]) as isize - p.padding[1] as isize,
        )
    }

    /// Byte of channel `ch` of input pixel (iy, ix) of image `b` (inside).
    #[inline]
    fn at(&self, b: usize, iy: usize, ix: usize, ch: usize) -> usize {
        ((b * self.g.h + iy) * self.g.w + ix) * self.g.c + ch
    }

    /// Row `row` of the batch's GEMM (image `row / (oh·ow)`, its pixel
    /// `row % (oh·ow)`) of group `gi`: [`Im2Row::row`].
    pub fn batch_row(&self, row: usize, gi: usize, dst: &mut [u8]) {
        let (b, pix) = self.by_plane.divmod(row);
        self.row(b, pix, gi, dst);
    }

    /// Row (image `b`, output pixel `pix`) of group `gi` into `dst`
    /// ([`Im2Row::k`] bytes). Per-row work matters: a 3-channel stem gathers
    /// 147 bytes for 64 outputs, so the divisions are done once per row and
    /// short runs are copied without a memcpy call (the x86 ResNet-18 stem
    /// spent 52% of its time here with a division pair per kernel row and
    /// one memcpy per run, 36% after).
    pub fn row(&self, b: usize, pix: usize, gi: usize, dst: &mut [u8]) {
        let g = self.g;
        let p = g.params;
        let cg = self.cg;
        let dst = &mut dst[..self.k()];
        if self.direct() {
            let s = (b * g.h * g.w + pix) * g.c;
            copy_short(dst, &self.x[s..s + g.c]);
            return;
        }
        let ch0 = gi * cg;
        let (h, w) = (g.h as isize, g.w as isize);
        let (iy0, ix0) = self.tap(pix, 0, 0);
        let run = g.kw * cg;
        // With one group and unit dilation the kw taps of a kernel row are
        // one contiguous NHWC run: one copy when the row is inside.
        let cols_in = self.runs && ix0 >= 0 && ix0 + g.kw as isize <= w;
        let span_y = ((g.kh - 1) * p.dilation[0]) as isize;
        if cols_in && iy0 >= 0 && iy0 + span_y < h {
            // Every tap inside (most pixels): kh runs, no per-row tests.
            let s0 = self.at(b, iy0 as usize, ix0 as usize, 0);
            for ky in 0..g.kh {
                let s = s0 + ky * self.row_step;
                copy_short(&mut dst[ky * run..(ky + 1) * run], &self.x[s..s + run]);
            }
            return;
        }
        // (Index loops, not chunks_exact: its length division per call and
        // per kernel row was a fifth of a 1-channel conv's gather.)
        for ky in 0..g.kh {
            let row = &mut dst[ky * run..(ky + 1) * run];
            let iy = iy0 + (ky * p.dilation[0]) as isize;
            if iy < 0 || iy >= h {
                row.fill(self.xz);
            } else if cols_in {
                let s = self.at(b, iy as usize, ix0 as usize, 0);
                copy_short(row, &self.x[s..s + run]);
            } else {
                for kx in 0..g.kw {
                    let d = &mut row[kx * cg..(kx + 1) * cg];
                    let ix = ix0 + (kx * p.dilation[1]) as isize;
                    if ix >= 0 && ix < w {
                        let s = self.at(b, iy as usize, ix as usize, ch0);
                        copy_short(d, &self.x[s..s + cg]);
                    } else {
                        d.fill(self.xz);
                    }
                }
            }
        }
    }
}

/// `d.copy_from_slice(s)` for the short runs of a gather: two fixed-size,
/// possibly overlapping moves (2 to 32 bytes) instead of a call into
/// memcpy (a 1-channel 3×3 conv's 3-byte runs called it). (No loop: LLVM turned an 8-byte loop back into a memcpy call.)
#[inline(always)]
fn copy_short(d: &mut [u8], s: &[u8]) {
    fn two<const B: usize>(d: &mut [u8], s: &[u8]) {
        let n = d.len();
        d[..B].copy_from_slice(&s[..B]);
        d[n - B..].copy_from_slice(&s[n - B..n]);
    }
    match d.len() {
        0 => {}
        1 => d[0] = s[0],
        2..=3 => two::<2>(d, s),
        4..=7 => two::<4>(d, s),
        8..=16 => two::<8>(d, s),
        17..=32 => two::<16>(d, s),
        33..=64 => two::<32>(d, s),
        _ => d.copy_from_slice(s),
    }
}

/// Output rows `oy0 .. oy0 + rows` of one image of a depthwise conv on
/// NHWC activations: `c` input channels, `mult` output channels per input
/// channel (output channel `oc` reads input channel `oc / mult`).
#[derive(Debug)]
pub struct DwRows<'a> {
    /// The image, NHWC: `h × w` pixels of `c` channels.
    pub x: &'a [u8],
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// Channel multiplier (output channels per group).
    pub mult: usize,
    pub xz: i32,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
    pub ow: usize,
    /// `w − zw`, `[c·mult][kh·kw]`.
    pub taps: &'a [i32],
    pub requant: &'a Requant,
    pub oy0: usize,
    pub rows: usize,
    /// The rows' outputs, NHWC (`rows × ow × c·mult`; every byte is written).
    pub out: &'a mut [MaybeUninit<u8>],
}

impl<'a> DwRows<'a> {
    /// Rows `oy0 .. oy0 + rows` of image `x` (NHWC, zero point `xz`) of
    /// the depthwise conv `g` (one input channel per group), with taps
    /// `w − zw` as `[O][kh·kw]`, into `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        g: &ConvGeometry,
        x: &'a [u8],
        xz: i32,
        taps: &'a [i32],
        requant: &'a Requant,
        oy0: usize,
        rows: usize,
        out: &'a mut [MaybeUninit<u8>],
    ) -> Self {
        assert_eq!(g.c_per_group(), 1, "depthwise: one input channel per group");
        let p = g.params;
        DwRows {
            x,
            h: g.h,
            w: g.w,
            c: g.c,
            mult: g.o_per_group(),
            xz,
            kh: g.kh,
            kw: g.kw,
            stride: p.stride,
            pad: p.padding,
            dil: p.dilation,
            ow: g.ow,
            taps,
            requant,
            oy0,
            rows,
            out,
        }
    }
}

/// Fill `t.out`: the exact wrapping int32 `Σ (x − zx)(w − zw)` of every
/// output over its in-bounds taps (padding contributes 0), requantized by
/// the call's `Requant` (tame or not). Any kernel size, stride, padding,
/// dilation and channel multiplier.
pub fn dw_rows(t: &mut DwRows<'_>) {
    let (c, m, ntaps) = (t.c, t.mult, t.kh * t.kw);
    let co = c * m;
    assert!(m >= 1 && t.x.len() >= t.h * t.w * c && t.taps.len() >= co * ntaps);
    assert!(t.out.len() >= t.rows * t.ow * co && t.requant.len() >= co);
    let mut acc = vec![0i32; co];
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
                    for (oc, a) in acc.iter_mut().enumerate() {
                        let v = px[oc / m] as i32 - t.xz;
                        *a = a.wrapping_add(v * t.taps[oc * ntaps + tap]);
                    }
                }
            }
            let o = &mut t.out[(r * t.ow + ox) * co..][..co];
            for (oc, (dst, &a)) in o.iter_mut().zip(&acc).enumerate() {
                dst.write(t.requant.requantize(oc, a));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The multiplicative division equals `/` and `%` on every divisor up to
    /// 3000 for dividends near multiples and at the 2³² edge, and on large
    /// divisors and dividends (the plain-division fallback).
    #[test]
    fn div_by_multiplication_is_exact() {
        let big = [
            u32::MAX as usize - 1,
            u32::MAX as usize,
            1 << 32,
            1 << 40,
            usize::MAX,
        ];
        // (Fewer cases under Miri, which runs this thousands of times slower.)
        let (divisors, quotients, spread) = if cfg!(miri) {
            (40, 5, 20)
        } else {
            (3000, 50, 4000)
        };
        for d in (1..divisors).chain([65_536, 1 << 31, u32::MAX as usize, 1 << 33]) {
            let by = DivBy::new(d);
            let near = (0..quotients).flat_map(|q| [q * d, (q * d).wrapping_sub(1), q * d + 1]);
            for n in near.chain(big).chain((0..spread).map(|i| i * 7919)) {
                assert_eq!(by.divmod(n), (n / d, n % d), "{n} / {d}");
            }
        }
    }
    use crate::Conv2dParams;

    #[test]
    fn weights_round_trip() {
        let shape = [6, 3, 2, 5];
        let raw: Vec<i8> = (0..6 * 3 * 2 * 5).map(|i| (i * 37 % 251) as i8).collect();
        let w = weights_khwc(&raw, shape);
        // Channel ic of tap (ky, kx) of output channel oc.
        let (oc, ic, ky, kx) = (4, 2, 1, 3);
        assert_eq!(
            w[oc * 30 + (ky * 5 + kx) * 3 + ic],
            raw[((oc * 3 + ic) * 2 + ky) * 5 + kx]
        );
        assert_eq!(weights_from_khwc(&w, shape), raw);
    }

    /// Every row against the definition, one tap and channel at a time:
    /// padding, stride, dilation, groups, batches, and the direct case.
    #[test]
    fn rows_match_the_definition() {
        let cases = [
            // (n, c, h, w, kh, kw, stride, pad, dil, groups)
            (2, 5, 6, 7, 3, 3, 1, 1, 1, 1),
            (1, 4, 9, 8, 3, 3, 2, 1, 1, 1),
            (2, 6, 7, 7, 3, 3, 1, 2, 2, 1),
            (1, 6, 5, 6, 3, 2, 1, 1, 1, 3),
            (2, 8, 4, 5, 1, 1, 1, 0, 1, 1),
            (1, 8, 5, 5, 1, 1, 2, 0, 1, 2),
            (1, 3, 4, 4, 5, 5, 1, 2, 1, 1),
            // 1 channel (3-byte runs) and an RGB stem (7×7, stride 2).
            (2, 1, 6, 7, 3, 3, 1, 1, 1, 1),
            (2, 3, 12, 11, 7, 7, 2, 3, 1, 1),
        ];
        for (n, c, h, w, kh, kw, s, pad, d, groups) in cases {
            let params = Conv2dParams {
                stride: [s, s],
                padding: [pad, pad],
                dilation: [d, d],
                groups,
            };
            let out = |i: usize, k: usize| (i + 2 * pad - d * (k - 1) - 1) / s + 1;
            let g = ConvGeometry {
                n,
                c,
                h,
                w,
                o: groups,
                kh,
                kw,
                oh: out(h, kh),
                ow: out(w, kw),
                params,
            };
            let x: Vec<u8> = (0..n * h * w * c).map(|i| (i * 7 % 256) as u8).collect();
            let xz = 201u8;
            let rows = Im2Row::new(&g, &x, xz);
            let cg = c / groups;
            let mut dst = vec![0u8; rows.k()];
            for b in 0..n {
                for pix in 0..g.oh * g.ow {
                    for gi in 0..groups {
                        rows.row(b, pix, gi, &mut dst);
                        let mut again = vec![0u8; rows.k()];
                        rows.batch_row(b * g.oh * g.ow + pix, gi, &mut again);
                        assert_eq!(again, dst, "batch_row of image {b} pixel {pix}");
                        let (oy, ox) = (pix / g.ow, pix % g.ow);
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * s + ky * d) as isize - pad as isize;
                                let ix = (ox * s + kx * d) as isize - pad as isize;
                                for ic in 0..cg {
                                    let want = if iy >= 0
                                        && ix >= 0
                                        && (iy as usize) < h
                                        && (ix as usize) < w
                                    {
                                        x[((b * h + iy as usize) * w + ix as usize) * c
                                            + gi * cg
                                            + ic]
                                    } else {
                                        xz
                                    };
                                    assert_eq!(
                                        dst[(ky * kw + kx) * cg + ic],
                                        want,
                                        "{:?} b{b} pix{pix} g{gi} tap ({ky},{kx}) ch {ic}",
                                        (n, c, h, w, kh, kw, s, pad, d, groups)
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
