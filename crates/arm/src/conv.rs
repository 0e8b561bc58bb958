//! Quantized conv2d on the shared GEMM driver, in the input's memory
//! format: NHWC (channels-last) read and written in place, contiguous NCHW
//! transposed once to NHWC pixels and written back as NCHW planes.
//!
//! - GEMM convs: each activation row (one output pixel's taps, in the
//!   weights' (ky, kx, c) order) is gathered from the NHWC pixels by core's
//!   `conv::Im2Row` while the driver packs it, the zero point in padded
//!   taps; a 1×1 stride-1 conv's rows are the pixels themselves, copied
//!   straight into the panel. NHWC: one GEMM per group over the pixels of
//!   every image, its tiles stored as NHWC rows; NCHW: one per image and
//!   group, stored transposed into the planes.
//! - Depthwise (one input channel per group): NHWC on the NEON kernel with
//!   channels in lanes (`kernels/dwconv_u8i8_kxk_nhwc_neon.rs`; core's
//!   scalar rows on the scalar path and for channel multipliers above 1);
//!   NCHW plane by plane (`kernels/dwconv_u8i8_kxk_neon.rs`).
//! - A residual add (`conv2d_add`) runs in the GEMM's output stage, on each
//!   tile; after the depthwise kernels, on their output.

use std::borrow::Cow;

use rquant_core::conv::{dw_rows, weights_from_khwc, weights_khwc, DwRows, Im2Row};
use rquant_core::engine::ConvCall;
use rquant_core::gemm::{Gemm, PackedB, Store, Table};
use rquant_core::tensor::nchw_to_nhwc;
use rquant_core::{MemoryFormat, QTensor};

use crate::gemm;
use crate::isa::{Caps, Isa};
use crate::output::{requant_run, shifted, Channel, RawOut, RequantStage, Residual};

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
    /// Depthwise only.
    pub dw: Option<DwTaps>,
}

/// Depthwise weights `w − w_zp` (each in [−255, 255]) in the layouts of the
/// depthwise routes.
#[derive(Debug)]
pub struct DwTaps {
    /// `[O][kh·kw]`: the NCHW plane kernels.
    pub planes: Vec<i16>,
    /// The same as int32, for core's scalar NHWC rows.
    pub wide: Vec<i32>,
    /// `[kh·kw][O rounded up to 8]` (zeros past O): the NHWC lanes.
    pub lanes: Vec<i16>,
}

impl DwTaps {
    fn new(planes: Vec<i16>, o: usize, taps: usize) -> DwTaps {
        let opad = o.div_ceil(8) * 8;
        let mut lanes = vec![0i16; taps * opad];
        for oc in 0..o {
            for t in 0..taps {
                lanes[t * opad + oc] = planes[oc * taps + t];
            }
        }
        DwTaps {
            wide: planes.iter().map(|&v| v as i32).collect(),
            planes,
            lanes,
        }
    }
    fn bytes(&self) -> usize {
        self.planes.len() * 2 + self.wide.len() * 4 + self.lanes.len() * 2
    }
}

impl rquant_core::engine::Panels for ConvPack {
    fn bytes(&self) -> usize {
        self.groups.iter().map(PackedB::bytes).sum::<usize>()
            + self.dw.as_ref().map_or(0, DwTaps::bytes)
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
        let [_, cg, kh, kw] = self.shape;
        let rest = cg * kh * kw;
        if let Some(dw) = &self.dw {
            return dw
                .planes
                .iter()
                .enumerate()
                .map(|(i, &v)| (v as i32 + self.wz[i / rest]) as i8)
                .collect();
        }
        let reordered: Vec<i8> = self.groups.iter().flat_map(PackedB::unpack).collect();
        weights_from_khwc(&reordered, self.shape)
    }
}

impl ConvPack {
    /// Weights `[O][cg][kh][kw]` reordered to `[O][kh][kw][cg]` (the order of
    /// the gathered rows) and packed per group.
    pub fn new(isa: Isa, table: Table, w: &QTensor<i8>, groups: usize) -> ConvPack {
        let [o, cg, kh, kw] = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
        let rest = cg * kh * kw;
        let og = o / groups;
        let wz: Vec<i32> = (0..o).map(|c| w.qparams().channel(c).1 as i32).collect();
        let wd = w.int_repr();
        if cg == 1 {
            let planes = wd
                .iter()
                .enumerate()
                .map(|(i, &v)| (v as i32 - wz[i / rest]) as i16)
                .collect();
            return ConvPack {
                isa,
                shape: [o, cg, kh, kw],
                wz,
                groups: Vec::new(),
                dw: Some(DwTaps::new(planes, o, kh * kw)),
            };
        }
        let reordered = weights_khwc(wd, [o, cg, kh, kw]);
        let packs = reordered
            .chunks_exact(og * rest)
            .map(|wg| PackedB::new(table, wg, og, rest))
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

/// Static quantized conv2d in the input's memory format, with the residual
/// add `res` fused when given.
pub fn conv2d(
    caps: Caps,
    p: &ConvPack,
    c: &ConvCall<'_>,
    res: Option<Residual<'_>>,
    threads: usize,
) -> Vec<u8> {
    let nhwc = c.x.memory_format() == MemoryFormat::ChannelsLast;
    if let Some(dw) = &p.dw {
        let mut y = if nhwc {
            depthwise_nhwc(caps, dw, c, threads)
        } else {
            depthwise_planes(caps, &dw.planes, c, threads)
        };
        if let Some(r) = res {
            r.add.apply_in_place(&mut y, r.data);
        }
        return y;
    }
    let (g, r) = (c.g, c.requant);
    let xz = c.x.q_per_tensor().expect("validated per-tensor").1 as u8;
    let xd = c.x.int_repr();
    let np = g.oh * g.ow;
    let tmp;
    let src: &[u8] = if nhwc {
        xd
    } else {
        // NCHW input: one NHWC copy of the batch (the rows read pixels).
        let mut t = vec![0u8; xd.len()];
        nchw_to_nhwc(xd, g.n, g.c, g.h * g.w, &mut t);
        tmp = t;
        &tmp
    };
    let rows = Im2Row::new(g, src, xz);
    let og = g.o_per_group();
    // NHWC: one row space of every image's pixels; NCHW: one per image
    // (its planes are the transposed store's columns).
    let (spaces, m) = if nhwc { (1, g.n * np) } else { (g.n, np) };
    let len = g.n * g.o * np;
    let mut y: Vec<u8> = Vec::with_capacity(len);
    for (grp, b) in p.groups.iter().enumerate() {
        let layout = b.select(|| 255);
        let colterm = shifted(&r.zp, layout.kernel.a_shift, c.w.col_sums());
        for sp in 0..spaces {
            let fill = |row: usize, dst: &mut [u8]| {
                if nhwc {
                    rows.batch_row(row, grp, dst);
                } else {
                    rows.row(sp, row, grp, dst);
                }
            };
            let store = if nhwc {
                // Pixel rows, channel columns: the group's channels of each pixel.
                Store::Rows {
                    base: grp * og,
                    ld: g.o,
                }
            } else {
                // Pixel rows, channel columns: the group's planes of the image.
                Store::Cols {
                    base: (sp * g.o + grp * og) * np,
                    ld: np,
                }
            };
            let stage = RequantStage {
                caps,
                r,
                colterm: Cow::Borrowed(&colterm[..]),
                col0: grp * og,
                out: RawOut::uninit(&mut y.spare_capacity_mut()[..len]),
                store,
                res,
            };
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
        }
    }
    // SAFETY: each group's GEMMs stored all of its og channels of every
    // output pixel of every image; together they cover the n·o·oh·ow
    // outputs once.
    unsafe { y.set_len(len) };
    y
}

/// Depthwise conv2d of NCHW planes (one input channel per group, any
/// channel multiplier): per output plane, exact accumulators row by row,
/// then the channel's requantization; planes are spread over the threads.
fn depthwise_planes(caps: Caps, dw: &[i16], c: &ConvCall<'_>, threads: usize) -> Vec<u8> {
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

/// Depthwise conv2d of NHWC input into NHWC output: tasks of (image, band
/// of output rows), each on the NEON lanes kernel (channel multiplier 1)
/// or core's scalar rows; the bands' outputs are consecutive NHWC runs.
fn depthwise_nhwc(caps: Caps, dw: &DwTaps, c: &ConvCall<'_>, threads: usize) -> Vec<u8> {
    let (g, r) = (c.g, c.requant);
    let xz = c.x.q_per_tensor().expect("validated per-tensor").1;
    let x = c.x.int_repr();
    let (img_in, row_out) = (g.h * g.w * g.c, g.ow * g.o);
    // Bands of output rows, a few per thread.
    let mut band = g.oh;
    while threads > 1 && g.n * g.oh.div_ceil(band) < 4 * threads && band > 1 {
        band = band.div_ceil(2);
    }
    let tasks: Vec<(usize, usize)> = (0..g.n)
        .flat_map(|b| (0..g.oh).step_by(band).map(move |oy0| (b, oy0)))
        .collect();
    let lanes = caps.neon && g.o_per_group() == 1;
    // The lanes kernel's per-channel constants, padded to whole blocks.
    let opad = g.o.div_ceil(8) * 8;
    let pad_to = |v: &[f32]| {
        let mut p = vec![0f32; opad];
        p[..v.len()].copy_from_slice(v);
        p
    };
    let (bt, mu) = (pad_to(&r.bias_term), pad_to(&r.mult));
    let parts = gemm::run_tasks(threads, tasks, |(b, oy0)| {
        let rows = band.min(g.oh - oy0);
        let img = &x[b * img_in..(b + 1) * img_in];
        let n = rows * row_out;
        #[cfg(target_arch = "aarch64")]
        if lanes {
            use crate::kernels::dwconv_u8i8_kxk_nhwc_neon::{self as k, DwNhwc};
            let mut out = vec![0u8; n];
            // SAFETY: NEON detected (caps come from an engine value); the
            // kernel checks its operands' bounds (`DwNhwc::assert_fits`).
            unsafe {
                k::run(&mut DwNhwc {
                    x: img,
                    h: g.h,
                    w: g.w,
                    c: g.c,
                    xz: xz as u8,
                    kh: g.kh,
                    kw: g.kw,
                    stride: g.params.stride,
                    pad: g.params.padding,
                    dil: g.params.dilation,
                    ow: g.ow,
                    lanes: &dw.lanes,
                    bt: &bt,
                    mult: &mu,
                    out_zp: r.out_zp,
                    clamp: r.clamp,
                    oy0,
                    rows,
                    out: &mut out,
                })
            };
            return out;
        }
        let _ = (lanes, &bt, &mu);
        let mut out = Vec::with_capacity(n);
        dw_rows(&mut DwRows::new(
            g,
            img,
            xz as i32,
            &dw.wide,
            r,
            oy0,
            rows,
            &mut out.spare_capacity_mut()[..n],
        ));
        // SAFETY: `dw_rows` writes every byte of its `rows × ow × o` outputs.
        unsafe { out.set_len(n) };
        out
    });
    parts.concat()
}
