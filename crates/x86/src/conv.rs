//! Conv2d on the int8 GEMM: the input is transposed once to NHWC, and each
//! activation row (one output pixel) is gathered straight into the packed
//! panel from it — im2col fused into packing, with padded taps filled with
//! the input zero point (they contribute `(zx − zx)·w = 0`). Weights are
//! prepacked per group in the matching (ky, kx, c) order. A 1×1 stride-1
//! convolution is a plain GEMM over the NHWC pixels.

use std::cell::{OnceCell, RefCell};

use rquant_core::engine::ConvCall;
use rquant_core::gemm::{Gemm, PackedB, Store, Table};
use rquant_core::{Conv2dParams, QTensor};

use crate::gemm::{give_back, take_buffer};
use crate::isa::{Caps, Isa};
#[cfg(target_arch = "x86_64")]
use crate::kernels::dwconv_f32_row_avx2::dw_row as dw_row_f32;
use crate::kernels::dwconv_f32_row_avx2::{MAX_TAPS, SLACK};
use crate::kernels::dwconv_i16_row_avx2::row as dw_scalar;
#[cfg(target_arch = "x86_64")]
use crate::kernels::dwconv_u8i8_plane_avx512 as dw512;
use crate::kernels::output::{requant_run, Channel, RawOut, RequantStage};
use crate::threads::par_chunks1;

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
}

/// Depthwise weights, zero points subtracted.
#[derive(Debug, Clone)]
pub struct DwWeights {
    w: Vec<i32>,
    zps: Vec<i32>,
}

impl PackedConv {
    pub(crate) fn new(isa: Isa, table: Table, w: &QTensor<i8>, p: Conv2dParams) -> Self {
        let [o, cg, kh, kw] = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
        let og = o / p.groups;
        let k = cg * kh * kw;
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
                dw: Some(DwWeights { w: wd, zps }),
            };
        }
        let groups = (0..p.groups)
            .map(|g| {
                let mut wr = vec![0i8; og * k];
                for ol in 0..og {
                    let oc = g * og + ol;
                    for c in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                wr[ol * k + (ky * kw + kx) * cg + c] =
                                    raw[((oc * cg + c) * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
                PackedB::new(table, &wr, og, k)
            })
            .collect();
        PackedConv {
            isa,
            shape: [o, cg, kh, kw],
            groups,
            dw: None,
        }
    }

    /// The raw `[O, I/groups, kH, kW]` weight, read back from the panels.
    fn unpack(&self) -> Vec<i8> {
        let [o, cg, kh, kw] = self.shape;
        if let Some(dw) = &self.dw {
            let taps = kh * kw;
            return dw
                .w
                .chunks_exact(taps)
                .zip(&dw.zps)
                .flat_map(|(t, &z)| t.iter().map(move |&v| (v + z) as i8))
                .collect();
        }
        let og = o / self.groups.len();
        let k = cg * kh * kw;
        let mut raw = vec![0i8; o * k];
        for (g, pb) in self.groups.iter().enumerate() {
            let wr = pb.unpack();
            for ol in 0..og {
                let oc = g * og + ol;
                for c in 0..cg {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            raw[((oc * cg + c) * kh + ky) * kw + kx] =
                                wr[ol * k + (ky * kw + kx) * cg + c];
                        }
                    }
                }
            }
        }
        raw
    }
}

impl rquant_core::engine::Panels for PackedConv {
    fn bytes(&self) -> usize {
        self.groups.iter().map(PackedB::bytes).sum::<usize>()
            + self
                .dw
                .as_ref()
                .map_or(0, |d| d.w.len() * 4 + d.zps.len() * 12)
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

/// Conv2d through the GEMM (or the depthwise kernels), NCHW in and out,
/// requantized by the call's `Requant`.
pub(crate) fn conv2d(caps: Caps, c: &ConvCall<'_>, pw: &PackedConv) -> Vec<u8> {
    if let Some(dw) = &pw.dw {
        return depthwise(caps, c, dw);
    }
    let (x, g, r) = (c.x, c.g, c.requant);
    let (_, xz) = x.q_per_tensor().expect("validated per-tensor");
    let xz8 = xz as u8;
    let p = g.params;
    let (cg, og) = (g.c_per_group(), g.o_per_group());
    let ohw = g.oh * g.ow;
    let xd = x.int_repr();
    let len = g.n * g.o * ohw;
    let mut y: Vec<u8> = Vec::with_capacity(len);
    // Padded taps hold the zero point: it bounds the activations too.
    // (Only a kernel with a bounded exactness asks for it.)
    let x_max = OnceCell::new();
    let x_max = || *x_max.get_or_init(|| xd.iter().fold(xz8, |a, &b| a.max(b)));
    let mut nhwc = take_buffer(&NHWC_IN, g.h * g.w * g.c);
    let mut ynhwc = take_buffer(&NHWC_OUT, ohw * g.o);
    let plane = g.h * g.w;
    for b in 0..g.n {
        let img = &xd[b * g.c * plane..(b + 1) * g.c * plane];
        nchw_to_nhwc(img, g.c, plane, &mut nhwc);
        let nhwc = &nhwc;
        for (gi, pb) in pw.groups.iter().enumerate() {
            // With one group and unit dilation the kw taps of a kernel row are
            // one contiguous NHWC run: one copy per kernel row when inside.
            let runs = p.groups == 1 && p.dilation[1] == 1;
            let fill = |pix: usize, dst: &mut [u8]| {
                let (oy, ox) = (pix / g.ow, pix % g.ow);
                let ix0 = (ox * p.stride[1]) as isize - p.padding[1] as isize;
                for ky in 0..g.kh {
                    let iy =
                        (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                    let row_in = iy >= 0 && iy < g.h as isize;
                    if runs && row_in && ix0 >= 0 && ix0 as usize + g.kw <= g.w {
                        let s = (iy as usize * g.w + ix0 as usize) * g.c;
                        dst[ky * g.kw * cg..(ky + 1) * g.kw * cg]
                            .copy_from_slice(&nhwc[s..s + g.kw * cg]);
                        continue;
                    }
                    for kx in 0..g.kw {
                        let ix = ix0 + (kx * p.dilation[1]) as isize;
                        let d = &mut dst[(ky * g.kw + kx) * cg..][..cg];
                        if !row_in || ix < 0 || ix >= g.w as isize {
                            d.fill(xz8);
                        } else {
                            let s = (iy as usize * g.w + ix as usize) * g.c + gi * cg;
                            d.copy_from_slice(&nhwc[s..s + cg]);
                        }
                    }
                }
            };
            // Pixel-major (NHWC) output with contiguous channel runs (the
            // group's columns of the requantization); one blocked transpose
            // to NCHW per image afterwards.
            let stage = RequantStage::new(
                caps,
                r,
                gi * og,
                RawOut::new(&mut ynhwc),
                Store::Rows {
                    base: gi * og,
                    ld: g.o,
                },
            );
            crate::run_gemm(&Gemm {
                b: pb,
                layout: pb.select(x_max),
                m: ohw,
                fill: &fill,
                row_sums: !r.zp.zw_all_zero,
                stage: &stage,
            });
        }
        let img_out = &mut y.spare_capacity_mut()[b * g.o * ohw..(b + 1) * g.o * ohw];
        crate::kernels::transpose_u8_16x16_sse2::transpose_uninit(&ynhwc, ohw, g.o, img_out);
    }
    give_back(&NHWC_IN, nhwc);
    give_back(&NHWC_OUT, ynhwc);
    // SAFETY: every image's o·oh·ow outputs were written by its transpose,
    // which writes every element of its destination.
    unsafe { y.set_len(len) };
    y
}

thread_local! {
    static NHWC_IN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static NHWC_OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Depthwise conv (channel multiplier 1): per (image, channel) plane, a
/// zero-padded copy of `x − zx`, then each output row is the sum of the
/// taps' shifted rows, requantized with the channel's column of the call's
/// `Requant`.
fn depthwise(caps: Caps, c: &ConvCall<'_>, dw: &DwWeights) -> Vec<u8> {
    let (x, g, r) = (c.x, c.g, c.requant);
    let (_, xz) = x.q_per_tensor().expect("validated per-tensor");
    let p = g.params;
    let (hp, wp) = (g.h + 2 * p.padding[0], g.w + 2 * p.padding[1]);
    let (oh, ow) = (g.oh, g.ow);
    let ntaps = g.kh * g.kw;
    let xd = x.int_repr();
    let mut y = vec![0u8; g.n * g.o * oh * ow];
    let fast = cfg!(target_arch = "x86_64") && caps.avx2 && ntaps <= MAX_TAPS;
    let wide = caps.avx512 && fast;
    // The vector of the last output of a row may read up to 16 lanes further.
    let slack = 2 * SLACK * p.stride[1] + 2 * SLACK;
    par_chunks1(
        &mut y,
        oh * ow,
        || DwScratch {
            xpad: vec![0i16; if fast { 0 } else { hp * wp }],
            xf: vec![0f32; if fast { hp * wp + slack } else { 0 }],
            acc: vec![0i32; ow],
            bt: vec![0f32; ow],
            mult: vec![0f32; ow],
            zeros: vec![0i32; ow],
            taps: Vec::with_capacity(ntaps),
            tapsf: Vec::with_capacity(ntaps),
        },
        |st, plane, out| {
            let c = plane % g.c;
            let src = &xd[plane * g.h * g.w..(plane + 1) * g.h * g.w];
            #[cfg(target_arch = "x86_64")]
            if wide {
                let at = dw512::FillAt {
                    h: g.h,
                    w: g.w,
                    xz: xz as i32,
                    wp,
                    top: p.padding[0],
                    left: p.padding[1],
                };
                // SAFETY: AVX-512F detected (caps come from an engine value);
                // the plane fits the padded buffer (hp·wp + slack elements).
                unsafe { dw512::fill_plane(src, &at, &mut st.xf) };
            }
            for (iy, row) in src.chunks_exact(g.w).enumerate() {
                if wide {
                    break;
                }
                let at = (iy + p.padding[0]) * wp + p.padding[1];
                if fast {
                    for (dv, &v) in st.xf[at..at + g.w].iter_mut().zip(row) {
                        *dv = (v as i32 - xz as i32) as f32;
                    }
                } else {
                    for (dv, &v) in st.xpad[at..at + g.w].iter_mut().zip(row) {
                        *dv = (v as i32 - xz as i32) as i16;
                    }
                }
            }
            st.taps.clear();
            st.tapsf.clear();
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let off = ky * p.dilation[0] * wp + kx * p.dilation[1];
                    let wv = dw.w[c * ntaps + ky * g.kw + kx];
                    st.taps.push((off, wv));
                    st.tapsf.push((off, wv as f32));
                }
            }
            let (bt, mult) = (r.bias_term[c], r.mult[c]);
            #[cfg(target_arch = "x86_64")]
            if wide && r.tame {
                let pl = dw512::Plane {
                    xf: &st.xf,
                    wp,
                    taps: &st.tapsf,
                    oh,
                    ow,
                    stride: p.stride,
                };
                let ch = dw512::ChannelOut {
                    bt,
                    mult,
                    zp: r.out_zp,
                    lo: r.clamp.lo,
                    hi: r.clamp.hi,
                };
                // SAFETY: AVX-512F/BW detected; ntaps <= MAX_TAPS; reads stay
                // inside the padded plane plus `slack`; `tame` is the range
                // condition.
                unsafe { dw512::plane(&pl, &ch, out) };
                return;
            }
            st.bt.fill(bt);
            st.mult.fill(mult);
            let ch = Channel {
                bt: &st.bt,
                mult: &st.mult,
                zeros: &st.zeros,
                out_zp: r.out_zp,
                clamp: r.clamp,
            };
            for oy in 0..oh {
                let base = oy * p.stride[0] * wp;
                if fast {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: AVX2+FMA detected (caps come from an engine
                    // value); ntaps <= MAX_TAPS; the last vector reads at most
                    // 8·stride past a row inside the padded plane, and the
                    // buffer has `slack` extra elements.
                    unsafe {
                        dw_row_f32(&st.xf, base, &st.tapsf, p.stride[1], &mut st.acc)
                    };
                } else {
                    dw_scalar(&st.xpad, base, &st.taps, p.stride[1], &mut st.acc);
                }
                requant_run(caps, &st.acc, &ch, &mut out[oy * ow..(oy + 1) * ow]);
            }
        },
    );
    y
}

struct DwScratch {
    xpad: Vec<i16>,
    xf: Vec<f32>,
    tapsf: Vec<(usize, f32)>,
    acc: Vec<i32>,
    bt: Vec<f32>,
    mult: Vec<f32>,
    zeros: Vec<i32>,
    taps: Vec<(usize, i32)>,
}

/// Transpose one image `[c][plane]` to `[plane][c]`.
fn nchw_to_nhwc(img: &[u8], c: usize, plane: usize, out: &mut [u8]) {
    crate::kernels::transpose_u8_16x16_sse2::transpose(img, c, plane, out);
}
