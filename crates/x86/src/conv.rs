//! Conv2d on the int8 GEMM over NHWC pixels (contiguous input is transposed
//! to NHWC and the output back): each activation row (one output pixel) is
//! read in place by an indirect kernel or gathered straight into the packed
//! panel — im2col fused into packing, with padded taps filled with the input
//! zero point (they contribute `(zx − zx)·w = 0`; core's `conv::Im2Row`).
//! Weights are prepacked per group in the matching (ky, kx, c) order
//! (`conv::weights_khwc`). A 1×1 stride-1 convolution is a plain GEMM over
//! the NHWC pixels.

use std::cell::OnceCell;

use rquant_core::conv::{weights_from_khwc, weights_khwc, Im2Row};
use rquant_core::engine::ConvCall;
use rquant_core::gemm::{
    ALayout, APanel, AccTile, Blocking, Elem, Kernel, Layout, Micro, PackedB, PairA, PairMicro,
    PairPass, Remainder, Stage, Store, Table,
};
use rquant_core::ops::ConvGeometry;
use rquant_core::{Conv2dParams, MemoryFormat, QTensor};

use crate::dwconv::{self, DwWeights};
use crate::gconv::{self, GroupedWeights};
use crate::igemm::{IMicro, Seg, SegList, Segs, MR_MAX};
use crate::isa::{Caps, Isa};
use crate::kernels::output::{residual_add_slice, RawOut, RequantStage, Residual};
use crate::threads::{par_chunks1, par_for, threads_for};

/// Prepacked conv weights: one GEMM weight matrix per group.
#[derive(Debug)]
pub struct PackedConv {
    pub(crate) isa: Isa,
    /// `[O, I/groups, kH, kW]`.
    shape: [usize; 4],
    pub(crate) groups: Vec<PackedB>,
    /// Depthwise (one input and one output channel per group): `w − zw` per
    /// channel and tap, used instead of the per-group GEMMs.
    pub(crate) dw: Option<DwWeights>,
    /// Groups of 4, 8 or 16 channels in and out on the AVX-512 VNNI path:
    /// the grouped kernel's weights, used instead of the per-group GEMMs.
    grouped: Option<GroupedWeights>,
    /// Input channels per group as packed: `I/groups`, or 4 for a conv with
    /// 1–3 input channels on a path with an indirect kernel ([`WIDE_C`]).
    cw: usize,
}

/// A one-group conv with fewer input channels (an RGB stem: 21-byte kernel
/// rows; MNIST's 1-channel first conv: 3-byte rows) runs as a conv with 4
/// channels on an input copy padded to 4 channels and by its spatial
/// padding: every kernel row is then a whole number of the indirect
/// kernel's 4-byte k-units, read in place, instead of a gather per output
/// pixel that cost more than the GEMM (ResNet-18's stem: 36% gather). The
/// extra channel holds the input zero point and its weights the weight zero
/// point, so it adds `(zx − zx)·(zw − zw) = 0` to every output.
const WIDE_C: usize = 4;

impl PackedConv {
    pub(crate) fn new(isa: Isa, table: Table, w: &QTensor<i8>, p: Conv2dParams) -> Self {
        let [o, cg, kh, kw] = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
        let og = o / p.groups;
        let raw = w.int_repr();
        if cg == 1 && og == 1 {
            let taps = kh * kw;
            let mut wd = Vec::with_capacity(o * taps);
            let mut zps = Vec::with_capacity(o);
            for oc in 0..o {
                let (_, z) = w.qparams().channel(oc);
                zps.push(z as i32);
                wd.extend(
                    raw[oc * taps..(oc + 1) * taps]
                        .iter()
                        .map(|&v| v as i32 - z as i32),
                );
            }
            return PackedConv {
                isa,
                shape: [o, cg, kh, kw],
                groups: Vec::new(),
                dw: Some(DwWeights::new(wd, zps, kh, kw)),
                grouped: None,
                cw: cg,
            };
        }
        if let Some(gw) = GroupedWeights::try_new(isa == Isa::Avx512Vnni, w, p) {
            return PackedConv {
                isa,
                shape: [o, cg, kh, kw],
                groups: Vec::new(),
                dw: None,
                grouped: Some(gw),
                cw: cg,
            };
        }
        let wide = p.groups == 1
            && cg < WIDE_C
            && table.kernels().iter().all(|k| indirect_of(k).is_some());
        let (cw, wr) = if wide {
            let zw: Vec<i8> = (0..o).map(|oc| w.qparams().channel(oc).1 as i8).collect();
            (WIDE_C, widen_weights(raw, [o, cg, kh, kw], &zw))
        } else {
            (cg, weights_khwc(raw, [o, cg, kh, kw]))
        };
        let k = cw * kh * kw;
        let groups = wr
            .chunks_exact(og * k)
            .map(|wg| PackedB::new(table, wg, og, k))
            .collect();
        PackedConv {
            isa,
            shape: [o, cg, kh, kw],
            groups,
            dw: None,
            grouped: None,
            cw,
        }
    }

    /// The raw `[O, I/groups, kH, kW]` weight, read back from the panels.
    fn unpack(&self) -> Vec<i8> {
        let [o, cg, kh, kw] = self.shape;
        if let Some(dw) = &self.dw {
            let taps = kh * kw;
            return dw
                .taps
                .chunks_exact(taps)
                .zip(&dw.zps)
                .flat_map(|(t, &z)| t.iter().map(move |&v| (v + z) as i8))
                .collect();
        }
        if let Some(gw) = &self.grouped {
            return gw.unpack();
        }
        let wr: Vec<i8> = self.groups.iter().flat_map(PackedB::unpack).collect();
        if self.cw != cg {
            // Drop the zero-point channels of a widened conv.
            let narrow: Vec<i8> = wr
                .chunks_exact(self.cw)
                .flat_map(|px| px[..cg].iter().copied())
                .collect();
            return weights_from_khwc(&narrow, [o, cg, kh, kw]);
        }
        weights_from_khwc(&wr, [o, cg, kh, kw])
    }
}

impl rquant_core::engine::Panels for PackedConv {
    fn bytes(&self) -> usize {
        self.groups.iter().map(PackedB::bytes).sum::<usize>()
            + self.dw.as_ref().map_or(0, DwWeights::bytes)
            + self.grouped.as_ref().map_or(0, GroupedWeights::bytes)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl rquant_core::engine::Int8Panels for PackedConv {
    fn unpack(&self) -> Vec<i8> {
        PackedConv::unpack(self)
    }
}

/// Conv2d through the GEMM (or the depthwise or grouped kernels), in the input's
/// memory format (NHWC for channels-last, NCHW for contiguous), requantized
/// by the call's `Requant`, with the residual add `res` fused into the
/// output stage when given.
pub(crate) fn conv2d(
    caps: Caps,
    c: &ConvCall<'_>,
    pw: &PackedConv,
    res: Option<Residual<'_>>,
) -> Vec<u8> {
    let nhwc = c.x.memory_format() == MemoryFormat::ChannelsLast;
    if let Some(dw) = &pw.dw {
        let vnni = pw.isa == Isa::Avx512Vnni;
        let mut y = if nhwc {
            dwconv::depthwise_nhwc(caps, vnni, c, dw)
        } else if dwconv::nhwc_kernel_fits(caps, c) {
            // The NHWC kernels beat the plane kernels by more than the two
            // transposes cost (1.3x on 144 channels at 56², AVX-512).
            let g = c.g;
            let (xs, xz) = c.x.q_per_tensor().expect("validated per-tensor");
            let xl = QTensor::new_per_tensor_unchecked_in(
                c.x.shape().to_vec(),
                planes_to_pixels(c.x.int_repr(), g.n, g.c, g.h * g.w),
                xs,
                xz,
                MemoryFormat::ChannelsLast,
            );
            let y = dwconv::depthwise_nhwc(caps, vnni, &ConvCall { x: &xl, ..*c }, dw);
            planes_to_pixels(&y, g.n, g.oh * g.ow, g.o)
        } else {
            dwconv::depthwise_planes(caps, c, dw)
        };
        if let Some(r) = res {
            residual_add_slice(caps, &mut y, r.data, r.add);
        }
        return y;
    }
    let g = c.g;
    let xd = c.x.int_repr();
    let run = |src: &[u8], res: Option<Residual<'_>>| match &pw.grouped {
        Some(gw) => gconv::run(caps, c, gw, src, res),
        None if pw.cw != pw.shape[1] => {
            let (gw, xw) = widen_input(
                g,
                src,
                c.x.q_per_tensor().expect("per-tensor").1 as u8,
                pw.cw,
            );
            gemm_conv(caps, &ConvCall { g: &gw, ..*c }, pw, &xw, res)
        }
        None => gemm_conv(caps, c, pw, src, res),
    };
    if nhwc {
        return run(xd, res);
    }
    // Contiguous (NCHW) input: the GEMM reads and writes pixels, so the
    // images go to NHWC, the output comes back with one blocked transpose
    // per image, and a fused residual (NCHW like the output) goes to NHWC
    // too. A transposed store from each tile instead (a scalar byte store
    // per element) made the 1x1 256->1024 conv at 14² 1.3x slower.
    let x = planes_to_pixels(xd, g.n, g.c, g.h * g.w);
    let ohw = g.oh * g.ow;
    let res_px = res.map(|r| planes_to_pixels(r.data, g.n, g.o, ohw));
    let res = res
        .zip(res_px.as_deref())
        .map(|(r, data)| Residual { data, add: r.add });
    let y = run(&x, res);
    planes_to_pixels(&y, g.n, ohw, g.o)
}

/// `[O, cg, kh, kw]` weights as the GEMM's `[O][kh][kw][cw]` rows (`cw > cg`),
/// the extra channels holding each output channel's zero point `zw[oc]`.
fn widen_weights(raw: &[i8], [o, cg, kh, kw]: [usize; 4], zw: &[i8]) -> Vec<i8> {
    let taps = kh * kw;
    let mut out = Vec::with_capacity(o * taps * WIDE_C);
    for oc in 0..o {
        for t in 0..taps {
            for ch in 0..WIDE_C {
                out.push(if ch < cg {
                    raw[(oc * cg + ch) * taps + t]
                } else {
                    zw[oc]
                });
            }
        }
    }
    out
}

/// The NHWC input of `g` (1–3 channels) copied to `cw` channels with the
/// spatial padding made explicit (zero point `xz` in the border and the
/// extra channels), and the geometry of the unpadded conv on it.
fn widen_input(g: &ConvGeometry, x: &[u8], xz: u8, cw: usize) -> (ConvGeometry, Vec<u8>) {
    let [ph, pw] = g.params.padding;
    let (h, w) = (g.h + 2 * ph, g.w + 2 * pw);
    let mut out = vec![xz; g.n * h * w * cw];
    for b in 0..g.n {
        for iy in 0..g.h {
            let src = &x[(b * g.h + iy) * g.w * g.c..][..g.w * g.c];
            let dst = &mut out[((b * h + iy + ph) * w + pw) * cw..][..g.w * cw];
            match g.c {
                1 => copy_pixels::<1>(src, dst, cw),
                2 => copy_pixels::<2>(src, dst, cw),
                _ => copy_pixels::<3>(src, dst, cw),
            }
        }
    }
    let geo = ConvGeometry {
        c: cw,
        h,
        w,
        params: Conv2dParams {
            padding: [0, 0],
            ..g.params
        },
        ..*g
    };
    (geo, out)
}

/// Pixels of `C` bytes from `src` into the first `C` bytes of each `cw`-byte
/// pixel of `dst` (a fixed-size copy per pixel, no memcpy call).
fn copy_pixels<const C: usize>(src: &[u8], dst: &mut [u8], cw: usize) {
    for (s, d) in src.chunks_exact(C).zip(dst.chunks_exact_mut(cw)) {
        d[..C].copy_from_slice(s);
    }
}

/// `n` images `[rows][cols]` transposed to `[cols][rows]` each (NCHW to
/// NHWC with `rows` = channels; back with `rows` = pixels), one image per task.
fn planes_to_pixels(x: &[u8], n: usize, rows: usize, cols: usize) -> Vec<u8> {
    let len = n * rows * cols;
    let mut t: Vec<u8> = Vec::with_capacity(len);
    par_chunks1(
        &mut t.spare_capacity_mut()[..len],
        rows * cols,
        || (),
        |_, b, img| {
            crate::kernels::transpose_u8_16x16_sse2::transpose_uninit(
                &x[b * rows * cols..][..rows * cols],
                rows,
                cols,
                img,
            )
        },
    );
    // SAFETY: every image's rows·cols bytes were written by transpose_uninit.
    unsafe { t.set_len(len) };
    t
}

/// How the rows of one group's GEMM are read.
#[derive(Clone, Copy)]
enum Mode {
    /// 1×1, stride 1, no padding: the NHWC pixels are the activation rows
    /// (`lda = C`), read by the GEMM microkernel in place.
    Direct,
    /// The path's indirect microkernel reads each row as segments of the
    /// NHWC input ([`crate::igemm`]): no copy.
    Indirect(fn(IMicro<'_>)),
    /// Rows gathered (im2col of one row block) into the kernel's packed
    /// panel, for kernels without an indirect twin or `C/groups` not a
    /// multiple of 4.
    Gather,
}

/// The indirect twin of a GEMM kernel (same tile and weight layout).
fn indirect_of(k: &Kernel) -> Option<fn(IMicro<'_>)> {
    match k.name {
        #[cfg(target_arch = "x86_64")]
        "gemm_u8i8_8x32c4_avx512vnni" => Some(run_igemm_vnni512),
        "gemm_u8i8_4x8c4_scalar" => Some(crate::kernels::igemm_u8i8_4x8c4_scalar::run),
        _ => None,
    }
}

#[cfg(target_arch = "x86_64")]
fn run_igemm_vnni512(t: IMicro<'_>) {
    use crate::kernels::igemm_u8i8_8x32c4_avx512vnni as k;
    t.assert_fits(&k::SHAPE);
    // SAFETY: this twin is chosen only for the GEMM kernel
    // `gemm_u8i8_8x32c4_avx512vnni`, whose table is handed out only to a
    // path that detected AVX-512F/BW and AVX512-VNNI; the operands fit
    // (asserted; the segments were checked when built).
    unsafe { k::run(t) }
}

/// The conv's shape, in the terms of the GEMM.
struct Geo {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: [usize; 2],
    pad: [usize; 2],
    dil: [usize; 2],
    groups: usize,
    cg: usize,
    og: usize,
    /// Reduction length per group: `cg·kh·kw`, in (ky, kx, c) order.
    k: usize,
}

/// Per-thread buffers of the conv tasks, reused from task to task.
#[derive(Default)]
struct Scratch {
    acc: Vec<i32>,
    segs: Vec<Seg>,
    /// Segment ranges, `[tile][k-block]`.
    ranges: Vec<(usize, usize)>,
    panels: Vec<u8>,
    sums: Vec<i32>,
    pack: Vec<u8>,
}

/// The GEMM conv on NHWC pixels `src`: one parallel region over (row space,
/// row block, group, column block) tasks; each task reads its rows in place
/// (or gathers one row block), runs every column panel over them with K in
/// L1-sized blocks, and hands each tile to the output stage, which writes
/// NHWC rows (`nhwc_out`) or NCHW planes (a transposed store).
fn gemm_conv(
    caps: Caps,
    c: &ConvCall<'_>,
    pw: &PackedConv,
    src: &[u8],
    res: Option<Residual<'_>>,
) -> Vec<u8> {
    let (g0, r) = (c.g, c.requant);
    let p = g0.params;
    let geo = Geo {
        c: g0.c,
        h: g0.h,
        w: g0.w,
        o: g0.o,
        kh: g0.kh,
        kw: g0.kw,
        oh: g0.oh,
        ow: g0.ow,
        stride: p.stride,
        pad: p.padding,
        dil: p.dilation,
        groups: p.groups,
        cg: g0.c_per_group(),
        og: g0.o_per_group(),
        k: g0.c_per_group() * g0.kh * g0.kw,
    };
    let geo = &geo;
    let (_, xz) = c.x.q_per_tensor().expect("validated per-tensor");
    let xz8 = xz as u8;
    // Padded taps hold the zero point: it bounds the activations too.
    // (Only a kernel with a bounded exactness asks for it.)
    let x_max = OnceCell::new();
    let x_max = || *x_max.get_or_init(|| src.iter().fold(xz8, |a, &b| a.max(b)));
    let layouts: Vec<&Layout> = pw.groups.iter().map(|pb| pb.select(x_max)).collect();
    let direct_ok =
        geo.kh == 1 && geo.kw == 1 && geo.stride == [1, 1] && geo.pad == [0, 0] && geo.groups == 1;
    let modes: Vec<Mode> = layouts
        .iter()
        .map(|l| {
            let s = l.kernel.shape;
            let rows_u8 = s.elem == Elem::I8 && s.a == ALayout::Rows;
            match indirect_of(l.kernel) {
                // A two-pass kernel's second operand is packed from its
                // gathered panels (the shared driver's order).
                _ if pair_pass(l).is_some() => Mode::Gather,
                _ if direct_ok && rows_u8 && geo.c.is_multiple_of(s.kr) => Mode::Direct,
                Some(f) if geo.cg.is_multiple_of(4) && s.kr == 4 => Mode::Indirect(f),
                _ => Mode::Gather,
            }
        })
        .collect();
    let ohw = g0.oh * g0.ow;
    // Rows are the output pixels of the whole batch, `b·oh·ow + pixel`.
    let m = g0.n * ohw;
    // Blocking (the shared driver's rules): columns in blocks of `nc`, rows
    // in blocks whose packed activations would fit the L2 budget, split
    // further until every thread has a few tasks.
    let blk = Blocking::DEFAULT;
    let s0 = layouts[0].kernel.shape;
    let (mr, nr) = (s0.mr, s0.nr);
    let small = m.saturating_mul(geo.k).saturating_mul(geo.o) < blk.serial_macs;
    let nc = if small { geo.og } else { blk.nc }.div_ceil(nr) * nr;
    let nblocks = geo.og.div_ceil(nc);
    let mpanels = m.div_ceil(mr);
    let pa = s0.a_panel_bytes(geo.k);
    let threads = threads_for(usize::MAX);
    let want = if threads > 1 && !small {
        4 * threads
    } else {
        1
    };
    let per_block = blk.panels_per_block(pa, mr * nr * 4, mpanels, geo.groups * nblocks, want);
    let mc = per_block * mr;
    let mblocks = m.div_ceil(mc);
    let tasks = mblocks * geo.groups * nblocks;
    // The zero-point row that segments of padding taps point into.
    let zrow = vec![xz8; geo.kw * geo.c];
    let zrow = &zrow[..];
    let im2row = Im2Row::new(g0, src, xz8);
    let len = g0.n * geo.o * ohw;
    let mut y: Vec<u8> = Vec::with_capacity(len);
    let out = RawOut::uninit(&mut y.spare_capacity_mut()[..len]);
    let (layouts, modes) = (&layouts[..], &modes[..]);
    par_for(tasks, Scratch::default, |st, task| {
        let nb = task % nblocks;
        let gi = task / nblocks % geo.groups;
        let mb = task / nblocks / geo.groups;
        let store = Store::Rows {
            base: gi * geo.og,
            ld: geo.o,
        };
        let stage = RequantStage::new(caps, r, gi * geo.og, out.share(), store).with_residual(res);
        let lay = layouts[gi];
        let t = Task {
            geo,
            ohw,
            gi,
            m_lo: mb * mc,
            m_hi: (mb * mc + mc).min(m),
            n_lo: nb * nc,
            n_hi: (nb * nc + nc).min(geo.og),
            lay,
            src,
            zrow,
            im2row,
            row_sums: !r.zp.zw_all_zero,
            kub: (blk.b_block_bytes / (nr * lay.kernel.shape.unit_bytes())).max(1),
        };
        match modes[gi] {
            Mode::Indirect(f) => t.indirect(st, f, &stage),
            Mode::Direct => t.packed(st, true, &stage),
            Mode::Gather => t.packed(st, false, &stage),
        }
    });
    // SAFETY: the tasks cover every (row, column) of every group once, and
    // the stage stores every element of each tile.
    unsafe { y.set_len(len) };
    y
}

/// The second pass of `l`'s two-pass kernel and its remainder, when the
/// weights have one.
fn pair_pass(l: &Layout) -> Option<(&'static PairPass, &Remainder)> {
    match (l.kernel.pair, l.remainder()) {
        (Some(p), Some(r)) if r.pairs() > 0 => Some((p, r)),
        _ => None,
    }
}

/// One task of [`gemm_conv`]: rows (output pixels of the batch)
/// `m_lo..m_hi`, columns `n_lo..n_hi` of group `gi`.
struct Task<'a> {
    geo: &'a Geo,
    /// Output pixels per image.
    ohw: usize,
    gi: usize,
    m_lo: usize,
    m_hi: usize,
    n_lo: usize,
    n_hi: usize,
    lay: &'a Layout,
    src: &'a [u8],
    zrow: &'a [u8],
    im2row: Im2Row<'a>,
    row_sums: bool,
    /// k-units per k-block (weights kept in L1).
    kub: usize,
}

impl Task<'_> {
    /// Rows of the tile at `m0`.
    fn tile_rows(&self, m0: usize) -> usize {
        self.lay.kernel.shape.mr.min(self.m_hi - m0)
    }

    /// The accumulator tiles of the row block, starting on a cache line.
    fn tiles<'s>(&self, acc: &'s mut Vec<i32>) -> &'s mut [i32] {
        let s = self.lay.kernel.shape;
        let need = (self.m_hi - self.m_lo).div_ceil(s.mr) * s.mr * s.nr;
        acc.resize(need + 15, 0);
        let off = acc.as_ptr().align_offset(64).min(15);
        &mut acc[off..off + need]
    }

    /// Hand every tile of the row block for columns `n0..` to the stage.
    fn finish(&self, stage: &RequantStage<'_>, cbuf: &[i32], sums: &[i32], n0: usize) {
        // The block's tiles lie one after the other in `cbuf`, so its rows
        // are `nr` apart throughout: one call for the whole row block (x86's
        // stage takes any row count; per-tile calls cost a K = 16 conv ~15%).
        let rows = self.m_hi - self.m_lo;
        let nr = self.lay.kernel.shape.nr;
        stage.finish(&AccTile {
            acc: &cbuf[..rows * nr],
            nr,
            m0: self.m_lo,
            mrows: rows,
            n0,
            ncols: nr.min(self.n_hi - n0),
            rowsums: &sums[..rows],
        });
    }

    /// Indirect: the segments of every tile (per k-block), then the column
    /// panels over them.
    fn indirect(&self, st: &mut Scratch, run: fn(IMicro<'_>), stage: &RequantStage<'_>) {
        let geo = self.geo;
        let s = self.lay.kernel.shape;
        let (mr, nr, unit) = (s.mr, s.nr, s.unit_bytes());
        let nkb = s.units(geo.k).div_ceil(self.kub);
        let mut list = SegList::new(self.src, self.zrow, unit, std::mem::take(&mut st.segs));
        st.ranges.clear();
        st.sums.clear();
        for m0 in (self.m_lo..self.m_hi).step_by(mr) {
            let mrows = self.tile_rows(m0);
            let first = list.len();
            self.tile_segments(&mut list, &mut st.ranges, m0, mrows, nkb);
            if self.row_sums {
                let segs = list.view(first..list.len());
                for r in 0..mrows {
                    st.sums.push(row_sum(&segs, r, unit));
                }
            } else {
                st.sums.extend(std::iter::repeat_n(0, mrows));
            }
        }
        let tile = mr * nr;
        let cbuf = self.tiles(&mut st.acc);
        for n0 in (self.n_lo..self.n_hi).step_by(nr) {
            let bp = self.lay.panel(n0 / nr);
            for kb in 0..nkb {
                let b = &bp[kb * self.kub * nr * unit..];
                for (i, m0) in (self.m_lo..self.m_hi).step_by(mr).enumerate() {
                    let (a, z) = st.ranges[i * nkb + kb];
                    run(IMicro {
                        segs: list.view(a..z),
                        b,
                        c: &mut cbuf[i * tile..(i + 1) * tile],
                        mrows: self.tile_rows(m0),
                        init: kb == 0,
                    });
                }
            }
            self.finish(stage, cbuf, &st.sums, n0);
        }
        st.segs = list.into_buffer();
    }

    /// Push the segments of the tile at `m0` (`mrows` rows), split at the
    /// k-block boundaries, and record one range per k-block.
    fn tile_segments(
        &self,
        list: &mut SegList<'_>,
        ranges: &mut Vec<(usize, usize)>,
        m0: usize,
        mrows: usize,
        nkb: usize,
    ) {
        let geo = self.geo;
        let alen = self.src.len();
        // Each row's image and the input position of its (0, 0) tap, one
        // pixel after the other (no division per row).
        let (mut b, pix) = (m0 / self.ohw, m0 % self.ohw);
        let (mut oy, mut ox) = (pix / geo.ow, pix % geo.ow);
        let mut iy0 = [0isize; MR_MAX];
        let mut ix0 = [0isize; MR_MAX];
        let mut base = [0isize; MR_MAX];
        let (h, w, c) = (geo.h as isize, geo.w as isize, geo.c as isize);
        for r in 0..mrows {
            iy0[r] = (oy * geo.stride[0]) as isize - geo.pad[0] as isize;
            ix0[r] = (ox * geo.stride[1]) as isize - geo.pad[1] as isize;
            base[r] = ((b as isize * h + iy0[r]) * w + ix0[r]) * c + (self.gi * geo.cg) as isize;
            ox += 1;
            if ox == geo.ow {
                ox = 0;
                oy += 1;
                if oy == geo.oh {
                    oy = 0;
                    b += 1;
                }
            }
        }
        let kw_span = ((geo.kw - 1) * geo.dil[1] + 1) as isize;
        // A whole kernel row is one contiguous run when it lies inside the
        // image for every row of the tile (one group, unit dilation
        // across); otherwise one segment per tap.
        let whole_rows = geo.groups == 1
            && geo.dil[1] == 1
            && (0..mrows).all(|r| ix0[r] >= 0 && ix0[r] + kw_span <= w);
        let mut cur = Cursor {
            start: list.len(),
            list,
            ranges,
            kub: self.kub,
            u: 0,
            block_end: self.kub,
        };
        let mut off = [0usize; MR_MAX];
        for ky in 0..geo.kh {
            let dy = (ky * geo.dil[0]) as isize;
            if whole_rows {
                for r in 0..mrows {
                    let iy = iy0[r] + dy;
                    off[r] = if iy >= 0 && iy < h {
                        (base[r] + dy * w * c) as usize
                    } else {
                        alen
                    };
                }
                cur.push(&mut off, mrows, geo.kw * geo.c / 4);
            } else {
                for kx in 0..geo.kw {
                    let dx = (kx * geo.dil[1]) as isize;
                    for r in 0..mrows {
                        let (iy, ix) = (iy0[r] + dy, ix0[r] + dx);
                        off[r] = if iy >= 0 && iy < h && ix >= 0 && ix < w {
                            (base[r] + (dy * w + dx) * c) as usize
                        } else {
                            alen
                        };
                    }
                    cur.push(&mut off, mrows, geo.cg / 4);
                }
            }
        }
        cur.finish();
        debug_assert_eq!(ranges.len() % nkb, 0);
    }

    /// Packed rows (the shared driver's inner loops on one row block):
    /// `direct` reads the NHWC pixels in place (1×1, stride 1), otherwise
    /// the row block is gathered into the kernel's panels first.
    fn packed(&self, st: &mut Scratch, direct: bool, stage: &RequantStage<'_>) {
        let geo = self.geo;
        let kern = self.lay.kernel;
        let s = kern.shape;
        let (mr, nr) = (s.mr, s.nr);
        let ku = s.units(geo.k);
        let unit = s.unit_bytes();
        let pass = pair_pass(self.lay);
        debug_assert!(!(direct && pass.is_some()), "two-pass kernels gather");
        // A two-pass kernel's panels carry its second operand after the rows.
        let pa_main = s.a_panel_bytes(geo.k);
        let pa = pa_main + pass.map_or(0, |(p, _)| (p.a_bytes)(geo.k));
        let npanels = (self.m_hi - self.m_lo).div_ceil(mr);
        st.sums.clear();
        st.sums.resize(npanels * mr, 0);
        if direct {
            if self.row_sums {
                for (i, sum) in st.sums[..self.m_hi - self.m_lo].iter_mut().enumerate() {
                    // Row m is output pixel m of the batch (for a 1×1
                    // stride-1 conv, input pixel m too).
                    let gp = self.m_lo + i;
                    *sum = byte_sum(&self.src[gp * geo.c..(gp + 1) * geo.c]);
                }
            }
        } else {
            st.panels.resize(npanels * pa, 0);
            let fill = |row: usize, dst: &mut [u8]| self.gather(row, dst);
            for (p, (dst, sums)) in st
                .panels
                .chunks_mut(pa)
                .zip(st.sums.chunks_mut(mr))
                .enumerate()
            {
                let row0 = self.m_lo + p * mr;
                let nrows = mr.min(self.m_hi - row0);
                let (main, second) = dst.split_at_mut(pa_main);
                (kern.pack_a)(&mut APanel {
                    k: geo.k,
                    row0,
                    nrows,
                    fill: &fill,
                    dst: main,
                    sums,
                    need_sums: self.row_sums,
                    scratch: &mut st.pack,
                });
                if let Some((pp, _)) = pass {
                    (pp.pack_a)(PairA {
                        rows: main,
                        lda: ku * unit,
                        nrows,
                        k: geo.k,
                        dst: second,
                    });
                }
            }
        }
        let tile = mr * nr;
        let a_step = s.a_unit_stride();
        let cbuf = self.tiles(&mut st.acc);
        for n0 in (self.n_lo..self.n_hi).step_by(nr) {
            let bp = self.lay.panel(n0 / nr);
            for kb in (0..ku).step_by(self.kub) {
                let kn = self.kub.min(ku - kb);
                for (i, m0) in (self.m_lo..self.m_hi).step_by(mr).enumerate() {
                    let (a, lda) = if direct {
                        (&self.src[m0 * geo.c + kb * a_step..], geo.c)
                    } else {
                        (
                            &st.panels[i * pa + kb * a_step..i * pa + pa_main],
                            ku * unit,
                        )
                    };
                    (kern.run)(Micro {
                        a,
                        lda,
                        b: &bp[kb * nr * unit..],
                        c: &mut cbuf[i * tile..(i + 1) * tile],
                        ku: kn,
                        mrows: self.tile_rows(m0),
                        init: kb == 0,
                    });
                }
            }
            if let Some((pp, rem)) = pass {
                let panel = rem.panel(n0 / nr);
                if !panel.is_empty() {
                    (pp.run)(PairMicro {
                        a: &st.panels[..npanels * pa],
                        pa,
                        a_off: pa_main,
                        panels: npanels,
                        last_rows: self.m_hi - self.m_lo - (npanels - 1) * mr,
                        rem: panel,
                        c: &mut cbuf[..npanels * tile],
                    });
                }
            }
            self.finish(stage, cbuf, &st.sums, n0);
        }
    }

    /// Row `row`'s K values (im2col of one output pixel, core's gather),
    /// the zero point where a tap falls in the padding.
    fn gather(&self, row: usize, dst: &mut [u8]) {
        self.im2row.batch_row(row, self.gi, dst);
    }
}

/// Appends a tile's segments in K order, splitting them at k-block
/// boundaries and recording each k-block's range of segments.
struct Cursor<'l, 'a> {
    list: &'l mut SegList<'a>,
    ranges: &'l mut Vec<(usize, usize)>,
    kub: usize,
    /// k-units pushed so far for the tile.
    u: usize,
    /// Where the current k-block ends (kept, not divided out per segment:
    /// the division was 4% of a 64-channel 3×3 conv).
    block_end: usize,
    /// First segment of the current k-block.
    start: usize,
}

impl Cursor<'_, '_> {
    /// A run of `units` k-units starting at byte `off[r]` for row `r`;
    /// rows past `mrows` repeat row 0.
    fn push(&mut self, off: &mut [usize; MR_MAX], mrows: usize, units: usize) {
        let first = off[0];
        off[mrows..].fill(first);
        let mut done = 0;
        while done < units {
            let take = (units - done).min(self.block_end - self.u);
            let mut o = *off;
            for v in o.iter_mut() {
                *v += done * 4;
            }
            self.list.push(Seg {
                units: take,
                off: o,
            });
            done += take;
            self.u += take;
            if self.u == self.block_end {
                self.close();
                self.block_end += self.kub;
            }
        }
    }
    fn close(&mut self) {
        let end = self.list.len();
        self.ranges.push((self.start, end));
        self.start = end;
    }
    /// Close the last (partial) k-block.
    fn finish(mut self) {
        if self.u > self.block_end - self.kub {
            self.close();
        }
    }
}

/// `Σ` of row `r`'s bytes over the segments (wrapping into int32 like the
/// accumulator).
fn row_sum(segs: &Segs<'_>, r: usize, unit: usize) -> i32 {
    let mut total = 0u64;
    for s in segs.segs {
        let o = s.off[r];
        let len = s.units * unit;
        let run = if o < segs.a.len() {
            &segs.a[o..o + len]
        } else {
            &segs.z[o - segs.a.len()..o - segs.a.len() + len]
        };
        total += run.iter().map(|&v| v as u64).sum::<u64>();
    }
    total as u32 as i32
}

/// `Σ` of the bytes, wrapped into int32 like the accumulator.
fn byte_sum(x: &[u8]) -> i32 {
    x.iter().map(|&v| v as u64).sum::<u64>() as u32 as i32
}
