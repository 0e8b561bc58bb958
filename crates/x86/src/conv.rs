//! Conv2d on the int8 GEMM: the input is transposed once to NHWC, and each
//! activation row (one output pixel) is gathered straight into the packed
//! panel from it — im2col fused into packing, with padded taps filled with
//! the input zero point (they contribute `(zx − zx)·w = 0`). Weights are
//! prepacked per group in the matching (ky, kx, c) order. A 1×1 stride-1
//! convolution is a plain GEMM over the NHWC pixels.

use rquant_core::ops::ConvGeometry;
use rquant_core::{Conv2dParams, QTensor};

use crate::gemm::gemm;
use crate::isa::Isa;
use crate::kernels::output::{OutLayout, RequantOut};
use crate::pack::PackedB;

/// Prepacked conv weights: one GEMM weight matrix per group.
#[derive(Debug, Clone)]
pub struct PackedConv {
    pub(crate) isa: Isa,
    pub(crate) groups: Vec<PackedB>,
}

impl PackedConv {
    pub(crate) fn new(isa: Isa, w: &QTensor<i8>, p: Conv2dParams) -> Self {
        let [o, cg, kh, kw] = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
        let og = o / p.groups;
        let k = cg * kh * kw;
        let raw = w.int_repr();
        let per_channel = w.qparams().is_per_channel();
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
                let qp: Vec<(f64, i64)> =
                    (0..og).map(|ol| w.qparams().channel(g * og + ol)).collect();
                let mut b = PackedB::new(isa, &wr, og, k, &qp);
                b.per_channel = per_channel;
                b
            })
            .collect();
        PackedConv { isa, groups }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d(
    isa: Isa,
    x: &QTensor<u8>,
    g: &ConvGeometry,
    pw: &PackedConv,
    bias: Option<&[f32]>,
    out_scale: f64,
    out_zp: i32,
    relu: bool,
) -> Vec<u8> {
    let (xs, xz) = x.q_per_tensor().expect("validated per-tensor");
    let xz8 = xz as u8;
    let p = g.params;
    let (cg, og) = (g.c_per_group(), g.o_per_group());
    let ohw = g.oh * g.ow;
    let xd = x.int_repr();
    let mut y = vec![0u8; g.n * g.o * ohw];
    let mut nhwc = vec![0u8; g.h * g.w * g.c];
    let plane = g.h * g.w;
    for b in 0..g.n {
        let img = &xd[b * g.c * plane..(b + 1) * g.c * plane];
        for c in 0..g.c {
            for (s, &v) in img[c * plane..(c + 1) * plane].iter().enumerate() {
                nhwc[s * g.c + c] = v;
            }
        }
        let nhwc = &nhwc;
        for (gi, pb) in pw.groups.iter().enumerate() {
            let fill = |pix: usize, dst: &mut [u8]| {
                let (oy, ox) = (pix / g.ow, pix % g.ow);
                for ky in 0..g.kh {
                    let iy =
                        (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                    for kx in 0..g.kw {
                        let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                            - p.padding[1] as isize;
                        let d = &mut dst[(ky * g.kw + kx) * cg..][..cg];
                        if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                            d.fill(xz8);
                        } else {
                            let s = (iy as usize * g.w + ix as usize) * g.c + gi * cg;
                            d.copy_from_slice(&nhwc[s..s + cg]);
                        }
                    }
                }
            };
            let gbias = bias.map(|bv| &bv[gi * og..(gi + 1) * og]);
            let layout = OutLayout {
                base: (b * g.o + gi * og) * ohw,
                ldm: 1,
                ldn: ohw,
            };
            let epi = RequantOut::new(
                isa, pb, xs, xz as i32, gbias, out_scale, out_zp, relu, &mut y, layout,
            );
            gemm(pb, ohw, &fill, &epi);
        }
    }
    y
}
