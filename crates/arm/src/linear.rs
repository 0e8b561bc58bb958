//! Quantized linear and conv2d on top of the GEMM driver.

use rquant_core::numerics::{bias_term, quantize_val, RequantChannel};
use rquant_core::ops::{ConvGeometry, OutQ};
use rquant_core::QTensor;

use crate::epilogue::Output;
use crate::gemm::{self, ASource};
use crate::isa::Isa;
use crate::pack::{PackedB, NR};

/// Engine payload of a packed linear weight.
#[derive(Debug)]
pub struct LinearPack {
    pub b: PackedB,
    pub scales: Vec<f64>,
    pub per_channel: bool,
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
    pub scales: Vec<f64>,
    pub per_channel: bool,
}

fn qparams_of(w: &QTensor<i8>) -> (Vec<f64>, Vec<i32>, bool) {
    let n = w.shape()[0];
    let (mut s, mut z) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for c in 0..n {
        let (sc, zp) = w.qparams().channel(c);
        s.push(sc);
        z.push(zp as i32);
    }
    (s, z, w.qparams().is_per_channel())
}

impl rquant_core::engine::Panels for LinearPack {
    fn bytes(&self) -> usize {
        self.b.bytes() + self.scales.len() * 8
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
            + self.scales.len() * 12
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
    pub fn new(isa: Isa, w: &QTensor<i8>) -> LinearPack {
        let (n, k) = (w.shape()[0], w.shape()[1]);
        let (scales, wz, per_channel) = qparams_of(w);
        LinearPack {
            b: PackedB::new(isa, w.int_repr(), n, k, &wz),
            scales,
            per_channel,
        }
    }
}

impl ConvPack {
    /// Weights `[O][cg][kh][kw]` reordered to `[O][kh][kw][cg]` (the order of
    /// the indirection rows) and packed per group.
    pub fn new(isa: Isa, w: &QTensor<i8>, groups: usize) -> ConvPack {
        let [o, cg, kh, kw] = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
        let rest = cg * kh * kw;
        let og = o / groups;
        let (scales, wz, per_channel) = qparams_of(w);
        let wd = w.int_repr();
        let mut reordered = vec![0i8; wd.len()];
        for oc in 0..o {
            for ic in 0..cg {
                for t in 0..kh * kw {
                    reordered[oc * rest + t * cg + ic] = wd[oc * rest + ic * kh * kw + t];
                }
            }
        }
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
                scales,
                per_channel,
            };
        }
        let packs = (0..groups)
            .map(|g| {
                let rows = g * og..(g + 1) * og;
                PackedB::new(
                    isa,
                    &reordered[rows.start * rest..rows.end * rest],
                    og,
                    rest,
                    &wz[rows],
                )
            })
            .collect();
        ConvPack {
            isa,
            shape: [o, cg, kh, kw],
            wz,
            groups: packs,
            dw: None,
            scales,
            per_channel,
        }
    }
}

/// Per-column bias terms and multipliers of the static pipeline for output
/// channels `c0..c0+n`, zero-padded to whole panels.
fn static_columns(
    x_scale: f64,
    scales: &[f64],
    per_channel: bool,
    bias: Option<&[f32]>,
    out: OutQ,
    c0: usize,
    n: usize,
) -> (Vec<f32>, Vec<f32>) {
    let len = n.div_ceil(NR) * NR;
    let (mut bt, mut mult) = (vec![0f32; len], vec![0f32; len]);
    for j in 0..n {
        let ch = RequantChannel::new(x_scale, scales[c0 + j], out.scale);
        mult[j] = ch.multiplier;
        bt[j] = bias.map_or(0.0, |b| {
            bias_term(b[c0 + j], ch.act_times_w_scale, per_channel)
        });
    }
    (bt, mult)
}

/// Static quantized linear: `[m][n]` quint8.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    p: &LinearPack,
    x: &[u8],
    m: usize,
    x_q: (f64, i32),
    bias: Option<&[f32]>,
    out: OutQ,
    relu: bool,
    threads: usize,
) -> Vec<u8> {
    let (bt, mult) = static_columns(x_q.0, &p.scales, p.per_channel, bias, out, 0, p.b.n);
    let pipe = Output::Static {
        bias: &bt,
        mult: &mult,
        zp: out.zero_point as i32,
        relu,
    };
    gemm::gemm::<u8>(ASource::Dense(x), m, x_q.1, &p.b, &pipe, threads)
}

/// Dynamic linear: quantize x with PyTorch's chooser, GEMM, float output.
pub fn linear_dynamic(
    p: &LinearPack,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    code: rquant_core::portable::Code8,
    threads: usize,
) -> Vec<f32> {
    // The front end chose the activation's qparams (`code`) from its range.
    let xq = quantize_u8(p.b.isa, x, code.inv, code.zp as i64);
    let len = p.b.panels * NR;
    let mut sp = vec![0f32; len];
    for (s, &ws) in sp.iter_mut().zip(&p.scales) {
        *s = code.scale * (ws as f32);
    }
    let bias_p = bias.map(|b| {
        let mut v = b.to_vec();
        v.resize(len, 0.0);
        v
    });
    let pipe = Output::Dynamic {
        sp: &sp,
        bias: bias_p.as_deref(),
    };
    gemm::gemm::<f32>(ASource::Dense(&xq), m, code.zp, &p.b, &pipe, threads)
}

/// `quantize_val::<u8>(inv, zp, v)` for every v (NEON: 8 per step, `fmul`
/// then `fcvtns` round half to even, saturating `+ zp`, clamp to [0, 255] —
/// the scalar formula's bits, its i64 saturation included, since every value
/// beyond i32 clamps to 0 or 255 either way).
fn quantize_u8(isa: Isa, x: &[f32], inv: f32, zp: i64) -> Vec<u8> {
    let mut y = vec![0u8; x.len()];
    #[cfg(target_arch = "aarch64")]
    let done = if isa >= Isa::Neon {
        // SAFETY: isa >= Neon was detected by the engine.
        unsafe { quantize_u8_neon(x, inv, zp as i32, &mut y) }
    } else {
        0
    };
    #[cfg(not(target_arch = "aarch64"))]
    let done = {
        let _ = isa;
        0
    };
    for (d, &v) in y[done..].iter_mut().zip(&x[done..]) {
        *d = quantize_val::<u8>(inv, zp, v);
    }
    y
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
fn nhwc_group(xd: &[u8], g: &ConvGeometry, b: usize, grp: usize, xz: u8, dst: &mut Vec<u8>) {
    let cg = g.c_per_group();
    let hw = g.h * g.w;
    dst.clear();
    dst.resize((hw + 1) * cg, xz);
    for icg in 0..cg {
        let plane = &xd[(b * g.c + grp * cg + icg) * hw..][..hw];
        for (px, &v) in plane.iter().enumerate() {
            dst[px * cg + icg] = v;
        }
    }
}

/// Static quantized conv2d (NCHW): per image and group, a pixel-major copy of
/// the input and a shared indirection buffer feed the GEMM's A packing (no
/// im2col matrix); weights are packed in the matching `[ky][kx][ic]` order.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    p: &ConvPack,
    x: &[u8],
    g: &ConvGeometry,
    x_q: (f64, i32),
    bias: Option<&[f32]>,
    out: OutQ,
    relu: bool,
    threads: usize,
) -> Vec<u8> {
    if let Some(dw) = &p.dw {
        return depthwise(p, dw, x, g, x_q, bias, out, relu, threads);
    }
    let og = g.o_per_group();
    let np = g.oh * g.ow;
    let taps = g.kh * g.kw;
    let cg = g.c_per_group();
    let offsets = indirection(g);
    let mut src = Vec::new();
    let mut y = vec![0u8; g.n * g.o * np];
    for (grp, pb) in p.groups.iter().enumerate() {
        let (bt, mult) = static_columns(x_q.0, &p.scales, p.per_channel, bias, out, grp * og, og);
        let pipe = Output::Static {
            bias: &bt,
            mult: &mult,
            zp: out.zero_point as i32,
            relu,
        };
        for b in 0..g.n {
            nhwc_group(x, g, b, grp, x_q.1 as u8, &mut src);
            let a = ASource::Indirect {
                src: &src,
                offsets: &offsets,
                taps,
                cg,
            };
            let c = gemm::gemm::<u8>(a, np, x_q.1, pb, &pipe, threads);
            for j in 0..og {
                let dst = &mut y[(b * g.o + grp * og + j) * np..][..np];
                for (px, d) in dst.iter_mut().enumerate() {
                    *d = c[px * og + j];
                }
            }
        }
    }
    y
}

/// Depthwise conv2d (one input channel per group, any channel multiplier):
/// per output plane, exact accumulators row by row, then the per-channel
/// requantization; planes are spread over the threads.
#[allow(clippy::too_many_arguments)]
fn depthwise(
    p: &ConvPack,
    dw: &[i16],
    x: &[u8],
    g: &ConvGeometry,
    x_q: (f64, i32),
    bias: Option<&[f32]>,
    out: OutQ,
    relu: bool,
    threads: usize,
) -> Vec<u8> {
    use crate::kernels::dwconv_u8i8_kxk_scalar::{self as dws, DwGeom};
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
    let (bt, mult) = static_columns(x_q.0, &p.scales, p.per_channel, bias, out, 0, g.o);
    let taps = g.kh * g.kw;
    let np = g.oh * g.ow;
    let planes: Vec<usize> = (0..g.n * g.o).collect();
    let chunk = planes.len().div_ceil(threads.max(1) * 4).max(1);
    let tasks: Vec<&[usize]> = planes.chunks(chunk).collect();
    let isa = p.isa;
    let parts = crate::gemm::run_tasks(threads, tasks, |ps| {
        let mut y = vec![0u8; ps.len() * np];
        let mut acc = vec![0i32; g.ow];
        for (t, &pl) in ps.iter().enumerate() {
            let (b, oc) = (pl / g.o, pl % g.o);
            let ic = oc / og;
            let plane = &x[(b * g.c + ic) * g.h * g.w..][..g.h * g.w];
            let w = &dw[oc * taps..(oc + 1) * taps];
            for oy in 0..g.oh {
                let dst = &mut y[t * np + oy * g.ow..][..g.ow];
                #[cfg(target_arch = "aarch64")]
                if isa >= Isa::Neon {
                    // SAFETY: isa >= Neon was detected by the engine.
                    unsafe {
                        crate::kernels::dwconv_u8i8_kxk_neon::row(
                            &geom, plane, x_q.1, w, oy, &mut acc,
                        );
                        crate::epilogue::neon::requant_run(
                            &acc,
                            bt[oc],
                            mult[oc],
                            out.zero_point as i32,
                            relu,
                            dst,
                        );
                    }
                    continue;
                }
                let _ = isa;
                dws::row(&geom, plane, x_q.1, w, oy, &mut acc);
                crate::epilogue::requant_run_scalar(
                    &acc,
                    bt[oc],
                    mult[oc],
                    out.zero_point as i32,
                    relu,
                    dst,
                );
            }
        }
        y
    });
    parts.concat()
}
