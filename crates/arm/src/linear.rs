//! Quantized linear and conv2d on top of the GEMM driver.

use rquant_core::numerics::{self, bias_term, inv_scale, quantize_val, RequantChannel};
use rquant_core::ops::{ConvGeometry, OutQ};
use rquant_core::QTensor;

use crate::epilogue::Output;
use crate::gemm;
use crate::isa::Isa;
use crate::pack::{PackedB, NR};

/// Engine payload of a packed linear weight.
#[derive(Debug)]
pub struct LinearPack {
    pub b: PackedB,
    pub scales: Vec<f64>,
    pub per_channel: bool,
}

/// Engine payload of a packed conv2d weight: one packed GEMM weight per group.
#[derive(Debug)]
pub struct ConvPack {
    pub isa: Isa,
    pub groups: Vec<PackedB>,
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
    pub fn new(isa: Isa, w: &QTensor<i8>, groups: usize) -> ConvPack {
        let o = w.shape()[0];
        let rest = w.numel() / o;
        let og = o / groups;
        let (scales, wz, per_channel) = qparams_of(w);
        let packs = (0..groups)
            .map(|g| {
                let rows = g * og..(g + 1) * og;
                PackedB::new(
                    isa,
                    &w.int_repr()[rows.start * rest..rows.end * rest],
                    og,
                    rest,
                    &wz[rows],
                )
            })
            .collect();
        ConvPack {
            isa,
            groups: packs,
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
    gemm::gemm::<u8>(x, m, x_q.1, &p.b, &pipe, threads)
}

/// Dynamic linear: quantize x with PyTorch's chooser, GEMM, float output.
pub fn linear_dynamic(
    p: &LinearPack,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    reduce_range: bool,
    threads: usize,
) -> Vec<f32> {
    let (lo, hi) = numerics::find_min_max(x);
    let qp = numerics::choose_qparams(lo, hi, 0, 255, reduce_range);
    let inv = inv_scale(qp.scale);
    let xq: Vec<u8> = x
        .iter()
        .map(|&v| quantize_val::<u8>(inv, qp.zero_point, v))
        .collect();
    let len = p.b.panels * NR;
    let mut sp = vec![0f32; len];
    for (s, &ws) in sp.iter_mut().zip(&p.scales) {
        *s = (qp.scale as f32) * (ws as f32);
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
    gemm::gemm::<f32>(&xq, m, qp.zero_point as i32, &p.b, &pipe, threads)
}

/// im2col of one image and group: `[oh*ow][cg*kh*kw]`, padding = x_zp.
fn im2col(xd: &[u8], g: &ConvGeometry, b: usize, grp: usize, xz: u8) -> Vec<u8> {
    let p = g.params;
    let cg = g.c_per_group();
    let k = cg * g.kh * g.kw;
    let np = g.oh * g.ow;
    let mut a = vec![xz; np * k];
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let row = &mut a[(oy * g.ow + ox) * k..(oy * g.ow + ox + 1) * k];
            for icg in 0..cg {
                let plane = &xd[(b * g.c + grp * cg + icg) * g.h * g.w..][..g.h * g.w];
                for ky in 0..g.kh {
                    let iy =
                        (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    for kx in 0..g.kw {
                        let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                            - p.padding[1] as isize;
                        if ix < 0 || ix >= g.w as isize {
                            continue;
                        }
                        row[(icg * g.kh + ky) * g.kw + kx] = plane[iy as usize * g.w + ix as usize];
                    }
                }
            }
        }
    }
    a
}

/// Static quantized conv2d (NCHW): im2col per image and group onto the GEMM.
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
    let og = g.o_per_group();
    let np = g.oh * g.ow;
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
            let a = im2col(x, g, b, grp, x_q.1 as u8);
            let c = gemm::gemm::<u8>(&a, np, x_q.1, pb, &pipe, threads);
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
