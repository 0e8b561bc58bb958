//! Quantized linear and conv2d on the shared GEMM driver.

use rquant_core::engine::{ConvCall, DynamicCall, LinearCall};
use rquant_core::gemm::{Gemm, PackedB, Store, Table};
use rquant_core::numerics::quantize_val;
use rquant_core::ops::ConvGeometry;
use rquant_core::portable::Code8;
use rquant_core::QTensor;

use crate::gemm;
use crate::isa::{Caps, Isa};
use crate::output::{requant_run, shifted, Channel, FloatStage, RawOut, RequantStage};

/// Engine payload of a packed linear weight: the shared GEMM panels of this
/// path's kernel.
#[derive(Debug)]
pub struct LinearPack {
    pub isa: Isa,
    pub b: PackedB,
}

/// Engine payload of a packed conv2d weight: one packed GEMM weight per
/// group, or for depthwise convs (one input channel per group) the taps.
#[derive(Debug)]
pub struct ConvPack {
    pub isa: Isa,
    /// `[O, I/groups, kH, kW]`.
    pub shape: [usize; 4],
    /// Weight zero point per output channel.
    pub wz: Vec<i32>,
    pub groups: Vec<PackedB>,
    /// Depthwise only: `[O][kh*kw]` of `w - w_zp`.
    pub dw: Option<Vec<i16>>,
}

impl rquant_core::engine::Panels for LinearPack {
    fn bytes(&self) -> usize {
        self.b.bytes()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl rquant_core::engine::Int8Panels for LinearPack {
    fn unpack(&self) -> Vec<i8> {
        self.b.unpack()
    }
}

impl rquant_core::engine::Panels for ConvPack {
    fn bytes(&self) -> usize {
        self.groups.iter().map(PackedB::bytes).sum::<usize>()
            + self.dw.as_ref().map_or(0, |d| d.len() * 2)
            + self.wz.len() * 4
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl rquant_core::engine::Int8Panels for ConvPack {
    /// `[O, cg, kh, kw]` back from the per-group `[O][kh·kw][cg]` panels (or
    /// the depthwise taps, zero points added back).
    fn unpack(&self) -> Vec<i8> {
        let [o, cg, kh, kw] = self.shape;
        let rest = cg * kh * kw;
        if let Some(dw) = &self.dw {
            return dw
                .iter()
                .enumerate()
                .map(|(i, &v)| (v as i32 + self.wz[i / rest]) as i8)
                .collect();
        }
        let reordered: Vec<i8> = self.groups.iter().flat_map(PackedB::unpack).collect();
        let mut w = vec![0i8; o * rest];
        for oc in 0..o {
            for ic in 0..cg {
                for t in 0..kh * kw {
                    w[oc * rest + ic * kh * kw + t] = reordered[oc * rest + t * cg + ic];
                }
            }
        }
        w
    }
}

impl LinearPack {
    pub fn new(isa: Isa, table: Table, w: &QTensor<i8>) -> LinearPack {
        let (n, k) = (w.shape()[0], w.shape()[1]);
        LinearPack {
            isa,
            b: PackedB::new(table, w.int_repr(), n, k),
        }
    }
}

impl ConvPack {
    /// Weights `[O][cg][kh][kw]` reordered to `[O][kh][kw][cg]` (the order of
    /// the indirection rows) and packed per group.
    pub fn new(isa: Isa, table: Table, w: &QTensor<i8>, groups: usize) -> ConvPack {
        let [o, cg, kh, kw] = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
        let rest = cg * kh * kw;
        let og = o / groups;
        let wz: Vec<i32> = (0..o).map(|c| w.qparams().channel(c).1 as i32).collect();
        let wd = w.int_repr();
        if cg == 1 {
            let dw = wd
                .iter()
                .enumerate()
                .map(|(i, &v)| (v as i32 - wz[i / rest]) as i16)
                .collect();
            return ConvPack {
                isa,
                shape: [o, cg, kh, kw],
                wz,
                groups: Vec::new(),
                dw: Some(dw),
            };
        }
        let mut reordered = vec![0i8; wd.len()];
        for oc in 0..o {
            for ic in 0..cg {
                for t in 0..kh * kw {
                    reordered[oc * rest + t * cg + ic] = wd[oc * rest + ic * kh * kw + t];
                }
            }
        }
        let packs = (0..groups)
            .map(|g| {
                PackedB::new(
                    table,
                    &reordered[g * og * rest..(g + 1) * og * rest],
                    og,
                    rest,
                )
            })
            .collect();
        ConvPack {
            isa,
            shape: [o, cg, kh, kw],
            wz,
            groups: packs,
            dw: None,
        }
    }
}

/// Static quantized linear: `[m][n]` quint8.
pub fn linear(caps: Caps, p: &LinearPack, c: &LinearCall<'_>, threads: usize) -> Vec<u8> {
    let (b, r) = (&p.b, c.requant);
    let (m, n, k) = (c.m, b.n(), b.k());
    let x = c.x.int_repr();
    // Every ARM kernel is exact for every input: the activations' maximum
    // is never asked for.
    let layout = b.select(|| 255);
    let len = m * n;
    let mut y = Vec::with_capacity(len);
    let stage = RequantStage {
        caps,
        r,
        colterm: shifted(&r.zp, layout.kernel.a_shift, c.w.col_sums()),
        col0: 0,
        out: RawOut::uninit(&mut y.spare_capacity_mut()[..len]),
        store: Store::Rows { base: 0, ld: n },
    };
    let fill = |i: usize, dst: &mut [u8]| dst.copy_from_slice(&x[i * k..(i + 1) * k]);
    gemm::run(
        &Gemm {
            b,
            layout,
            m,
            fill: &fill,
            row_sums: !r.zp.zw_all_zero,
            stage: &stage,
        },
        threads,
    );
    // SAFETY: the GEMM's tiles cover every (row, column) of the m×n output
    // once, and the stage stores every element of each tile.
    unsafe { y.set_len(len) };
    y
}

/// Dynamic linear: the activations quantized (with the front end's qparams)
/// while they are packed, GEMM, float output.
pub fn linear_dynamic(caps: Caps, p: &LinearPack, c: &DynamicCall<'_>, threads: usize) -> Vec<f32> {
    let (b, d) = (&p.b, c.dequant);
    let (m, n, k) = (c.m, b.n(), b.k());
    let layout = b.select(|| c.x_max);
    let len = m * n;
    let mut y = Vec::with_capacity(len);
    let stage = FloatStage {
        caps,
        d,
        colterm: shifted(&d.zp, layout.kernel.a_shift, c.w.col_sums()),
        bias: c.w.bias(),
        out: RawOut::uninit(&mut y.spare_capacity_mut()[..len]),
        store: Store::Rows { base: 0, ld: n },
    };
    let (x, code) = (c.x, c.code);
    let fill = |i: usize, dst: &mut [u8]| quantize_u8(caps, &x[i * k..(i + 1) * k], code, dst);
    gemm::run(
        &Gemm {
            b,
            layout,
            m,
            fill: &fill,
            row_sums: !d.zp.zw_all_zero,
            stage: &stage,
        },
        threads,
    );
    // SAFETY: the GEMM's tiles cover every (row, column) of the m×n output
    // once, and the stage stores every element of each tile.
    unsafe { y.set_len(len) };
    y
}

/// `quantize_val::<u8>(inv, zp, v)` for every v (NEON: 8 per step, `fmul`
/// then `fcvtns` round half to even, saturating `+ zp`, clamp to [0, 255] —
/// the scalar formula's bits, its i64 saturation included, since every value
/// beyond i32 clamps to 0 or 255 either way).
fn quantize_u8(caps: Caps, x: &[f32], code: Code8, y: &mut [u8]) {
    let (inv, zp) = (code.inv, code.zp as i64);
    #[cfg(target_arch = "aarch64")]
    let done = if caps.neon {
        // SAFETY: NEON detected (caps come from an engine value).
        unsafe { quantize_u8_neon(x, inv, zp as i32, y) }
    } else {
        0
    };
    #[cfg(not(target_arch = "aarch64"))]
    let done = {
        let _ = caps;
        0
    };
    for (d, &v) in y[done..].iter_mut().zip(&x[done..]) {
        *d = quantize_val::<u8>(inv, zp, v);
    }
}

/// The leading multiple of 8 of [`quantize_u8`]; returns how many were done.
///
/// # Safety
/// NEON available.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn quantize_u8_neon(x: &[f32], inv: f32, zp: i32, y: &mut [u8]) -> usize {
    use core::arch::aarch64::*;
    assert_eq!(x.len(), y.len());
    let n8 = x.len() / 8 * 8;
    let (vinv, vzp) = (vdupq_n_f32(inv), vdupq_n_s32(zp));
    let (v0, v255) = (vdupq_n_s32(0), vdupq_n_s32(255));
    let q = |v: float32x4_t| {
        vminq_s32(
            vmaxq_s32(vqaddq_s32(vcvtnq_s32_f32(vmulq_f32(v, vinv)), vzp), v0),
            v255,
        )
    };
    for i in (0..n8).step_by(8) {
        // SAFETY: i + 8 <= len of x and y.
        unsafe {
            let a = q(vld1q_f32(x.as_ptr().add(i)));
            let b = q(vld1q_f32(x.as_ptr().add(i + 4)));
            let u = vqmovun_s16(vcombine_s16(vmovn_s32(a), vmovn_s32(b)));
            vst1_u8(y.as_mut_ptr().add(i), u);
        }
    }
    n8
}

/// The indirection buffer of a convolution geometry: for output pixel `p`
/// and tap `t = ky * kw + kx`, the offset of that input pixel's `cg` channels
/// in a pixel-major (NHWC) copy of one image and group, or of the trailing
/// row of zero points when the tap falls in the padding. The same for every
/// image and group.
fn indirection(g: &ConvGeometry) -> Vec<usize> {
    let p = g.params;
    let cg = g.c_per_group();
    let zero = g.h * g.w * cg;
    let mut off = Vec::with_capacity(g.oh * g.ow * g.kh * g.kw);
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            for ky in 0..g.kh {
                let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                for kx in 0..g.kw {
                    let ix =
                        (ox * p.stride[1] + kx * p.dilation[1]) as isize - p.padding[1] as isize;
                    let inside = iy >= 0 && ix >= 0 && iy < g.h as isize && ix < g.w as isize;
                    off.push(if inside {
                        (iy as usize * g.w + ix as usize) * cg
                    } else {
                        zero
                    });
                }
            }
        }
    }
    off
}

/// One image's group of channels, pixel-major (`[h*w][cg]`), followed by
/// one row of `cg` zero points for the padding taps.
fn nhwc_group(xd: &[u8], g: &ConvGeometry, img: usize, grp: usize, xz: u8, dst: &mut Vec<u8>) {
    let cg = g.c_per_group();
    let hw = g.h * g.w;
    dst.clear();
    dst.resize((hw + 1) * cg, xz);
    for icg in 0..cg {
        let plane = &xd[(img * g.c + grp * cg + icg) * hw..][..hw];
        for (px, &v) in plane.iter().enumerate() {
            dst[px * cg + icg] = v;
        }
    }
}

/// Static quantized conv2d (NCHW): per image and group, a pixel-major copy of
/// the input and a shared indirection buffer feed the GEMM's A packing (no
/// im2col matrix); weights are packed in the matching `[ky][kx][ic]` order;
/// the output tiles are stored transposed, straight into the NCHW planes.
pub fn conv2d(caps: Caps, p: &ConvPack, c: &ConvCall<'_>, threads: usize) -> Vec<u8> {
    if let Some(dw) = &p.dw {
        return depthwise(caps, dw, c, threads);
    }
    let (g, r) = (c.g, c.requant);
    let xz = c.x.q_per_tensor().expect("validated per-tensor").1 as u8;
    let x = c.x.int_repr();
    let og = g.o_per_group();
    let np = g.oh * g.ow;
    let taps = g.kh * g.kw;
    let cg = g.c_per_group();
    let offsets = indirection(g);
    let mut src = Vec::new();
    let len = g.n * g.o * np;
    let mut y: Vec<u8> = Vec::with_capacity(len);
    for (grp, b) in p.groups.iter().enumerate() {
        let layout = b.select(|| 255);
        let colterm = shifted(&r.zp, layout.kernel.a_shift, c.w.col_sums());
        for img in 0..g.n {
            nhwc_group(x, g, img, grp, xz, &mut src);
            let src = &src;
            let fill = |px: usize, dst: &mut [u8]| {
                for (t, &off) in offsets[px * taps..(px + 1) * taps].iter().enumerate() {
                    dst[t * cg..(t + 1) * cg].copy_from_slice(&src[off..off + cg]);
                }
            };
            let stage = RequantStage {
                caps,
                r,
                colterm: std::borrow::Cow::Borrowed(&colterm[..]),
                col0: grp * og,
                out: RawOut::uninit(&mut y.spare_capacity_mut()[..len]),
                // Pixel rows, channel columns: the group's planes of the image.
                store: Store::Cols {
                    base: (img * g.o + grp * og) * np,
                    ld: np,
                },
            };
            gemm::run(
                &Gemm {
                    b,
                    layout,
                    m: np,
                    fill: &fill,
                    row_sums: !r.zp.zw_all_zero,
                    stage: &stage,
                },
                threads,
            );
        }
    }
    // SAFETY: each (image, group) GEMM stored all of its og planes of np
    // pixels; together they cover the n·o planes once.
    unsafe { y.set_len(len) };
    y
}

/// Depthwise conv2d (one input channel per group, any channel multiplier):
/// per output plane, exact accumulators row by row, then the channel's
/// requantization; planes are spread over the threads.
fn depthwise(caps: Caps, dw: &[i16], c: &ConvCall<'_>, threads: usize) -> Vec<u8> {
    use crate::kernels::dwconv_u8i8_kxk_scalar::{self as dws, DwGeom};
    let (g, r) = (c.g, c.requant);
    let xz = c.x.q_per_tensor().expect("validated per-tensor").1 as i32;
    let x = c.x.int_repr();
    let geom = DwGeom {
        h: g.h,
        w: g.w,
        oh: g.oh,
        ow: g.ow,
        kh: g.kh,
        kw: g.kw,
        stride: g.params.stride,
        padding: g.params.padding,
        dilation: g.params.dilation,
    };
    let og = g.o_per_group();
    let taps = g.kh * g.kw;
    let np = g.oh * g.ow;
    let planes: Vec<usize> = (0..g.n * g.o).collect();
    let chunk = planes.len().div_ceil(threads.max(1) * 4).max(1);
    let tasks: Vec<&[usize]> = planes.chunks(chunk).collect();
    let parts = gemm::run_tasks(threads, tasks, |ps| {
        let mut y = vec![0u8; ps.len() * np];
        let mut acc = vec![0i32; g.ow];
        for (t, &pl) in ps.iter().enumerate() {
            let (b, oc) = (pl / g.o, pl % g.o);
            let ic = oc / og;
            let plane = &x[(b * g.c + ic) * g.h * g.w..][..g.h * g.w];
            let w = &dw[oc * taps..(oc + 1) * taps];
            let ch = Channel {
                bt: r.bias_term[oc],
                mult: r.mult[oc],
                zp: r.out_zp,
                clamp: r.clamp,
            };
            for oy in 0..g.oh {
                let dst = &mut y[t * np + oy * g.ow..][..g.ow];
                #[cfg(target_arch = "aarch64")]
                if caps.neon {
                    // SAFETY: NEON detected (caps come from an engine value).
                    unsafe {
                        crate::kernels::dwconv_u8i8_kxk_neon::row(&geom, plane, xz, w, oy, &mut acc)
                    };
                    requant_run(caps, &acc, &ch, dst);
                    continue;
                }
                dws::row(&geom, plane, xz, w, oy, &mut acc);
                requant_run(caps, &acc, &ch, dst);
            }
        }
        y
    });
    parts.concat()
}
