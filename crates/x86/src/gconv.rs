//! Grouped conv with 4, 8 or 16 channels per group in and out (ResNeXt) on
//! the AVX-512 VNNI path: weights packed for
//! [`crate::kernels::gconv_u8i8_c4_avx512vnni`], one task per output row,
//! the GEMM's output stage over each row's raw accumulators.

use std::mem::MaybeUninit;

use rquant_core::engine::ConvCall;
use rquant_core::gemm::{AccTile, Stage, Store};
use rquant_core::{Conv2dParams, QTensor};

use crate::isa::Caps;
use crate::kernels::gconv_u8i8_c4_avx512vnni as kern;
use crate::kernels::output::{RawOut, RequantStage, Residual};
use crate::threads::par_for;

/// Packed weights of a grouped conv the kernel takes.
#[derive(Debug)]
pub(crate) struct GroupedWeights {
    /// Channels per group (in and out).
    g: usize,
    /// Channels (in and out).
    c: usize,
    taps: usize,
    packed: Vec<i8>,
}

impl GroupedWeights {
    /// The packed form when the kernel takes this conv: groups of 4, 8 or
    /// 16 channels in and out, 16-channel blocks, and zero weight zero
    /// points (the raw `Σ x·w` then needs no row sums). The kernel's
    /// `vpshufb`/`vpdpbusd` run on the AVX-512 VNNI path only, not under
    /// Miri.
    pub(crate) fn try_new(vnni512: bool, w: &QTensor<i8>, p: Conv2dParams) -> Option<Self> {
        let [o, cg, kh, kw] = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
        let fits = vnni512
            && !cfg!(miri)
            && cfg!(target_arch = "x86_64")
            && p.groups > 1
            && o / p.groups == cg
            && matches!(cg, 4 | 8 | 16)
            && o.is_multiple_of(16)
            && (0..o).all(|oc| w.qparams().channel(oc).1 == 0);
        if !fits {
            return None;
        }
        let taps = kh * kw;
        Some(GroupedWeights {
            g: cg,
            c: o,
            taps,
            packed: pack(w.int_repr(), o, cg, taps),
        })
    }

    /// The raw `[O, G, kh, kw]` weight.
    pub(crate) fn unpack(&self) -> Vec<i8> {
        let (c, g, taps) = (self.c, self.g, self.taps);
        let nq = g / 4;
        let mut w = vec![0i8; c * g * taps];
        for (oc, t, q, j) in indices(c, g, taps) {
            w[(oc * g + 4 * q + j) * taps + t] = self.packed[at(oc, t, q, j, taps, nq)];
        }
        w
    }

    pub(crate) fn bytes(&self) -> usize {
        self.packed.len()
    }
}

/// Every (output channel, tap, q, byte) of a packed weight.
fn indices(c: usize, g: usize, taps: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..c).flat_map(move |oc| {
        (0..taps)
            .flat_map(move |t| (0..g / 4).flat_map(move |q| (0..4).map(move |j| (oc, t, q, j))))
    })
}

/// Index in the packed layout of output channel `oc`'s weight for input
/// channel `4q + j` of its group at tap `t`.
fn at(oc: usize, t: usize, q: usize, j: usize, taps: usize, nq: usize) -> usize {
    let (blk, l) = (oc / 16, oc % 16);
    (((blk * taps + t) * nq + q) * 16 + l) * 4 + j
}

/// `[O, G, kh, kw]` into the kernel's layout ([`kern::packed_len`]).
fn pack(w: &[i8], c: usize, g: usize, taps: usize) -> Vec<i8> {
    let nq = g / 4;
    let mut out = vec![0i8; kern::packed_len(c, g, taps)];
    for (oc, t, q, j) in indices(c, g, taps) {
        out[at(oc, t, q, j, taps, nq)] = w[(oc * g + 4 * q + j) * taps + t];
    }
    out
}

/// The grouped conv of NHWC pixels `src` into NHWC output, requantized by
/// the call's `Requant` (with the residual add when given).
pub(crate) fn run(
    caps: Caps,
    c: &ConvCall<'_>,
    gw: &GroupedWeights,
    src: &[u8],
    res: Option<Residual<'_>>,
) -> Vec<u8> {
    let (g, p) = (c.g, c.g.params);
    let (_, xz) = c.x.q_per_tensor().expect("validated per-tensor");
    let (ch, oh, ow) = (gw.c, g.oh, g.ow);
    let img = g.h * g.w * ch;
    let len = g.n * oh * ow * ch;
    let mut y: Vec<u8> = Vec::with_capacity(len);
    let spare: &mut [MaybeUninit<u8>] = &mut y.spare_capacity_mut()[..len];
    let out = RawOut::uninit(spare);
    let stage = RequantStage::new(
        caps,
        c.requant,
        0,
        out.share(),
        Store::Rows { base: 0, ld: ch },
    )
    .with_residual(res);
    let zeros = vec![0i32; ow];
    par_for(g.n * oh, Vec::new, |acc: &mut Vec<i32>, row| {
        let (b, oy) = (row / oh, row % oh);
        acc.resize(ow * ch, 0);
        let mut t = kern::GRow {
            x: &src[b * img..(b + 1) * img],
            h: g.h,
            w: g.w,
            c: ch,
            xz: xz as u8,
            oy,
            ow,
            kh: g.kh,
            kw: g.kw,
            stride: p.stride,
            pad: p.padding,
            dil: p.dilation,
            g: gw.g,
            wts: &gw.packed,
            acc,
        };
        t.assert_fits();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: GroupedWeights exist only on the AVX-512 VNNI path, whose
        // caller detected AVX-512F/BW and VNNI; the operands fit (asserted).
        unsafe {
            kern::run(&mut t)
        };
        stage.finish(&AccTile {
            acc,
            nr: ch,
            m0: row * ow,
            mrows: ow,
            n0: 0,
            ncols: ch,
            rowsums: &zeros,
        });
    });
    // SAFETY: the tasks cover every output row once and the stage stores
    // every element of each.
    unsafe { y.set_len(len) };
    y
}
