//! Depthwise conv (one input and one output channel per group):
//! - NHWC input (channels-last): channels in vector lanes, the
//!   `dwconv_u8i8_kxk_nhwc_*` microkernels for 3×3 and 5×5 with unit
//!   dilation (any stride), on pair rows packed per band of output rows
//!   (`dwpack_u8i16_pairs_*`): one parallel region over (image, band);
//!   other kernels through core's scalar rows (`rquant_core::conv::dw_rows`,
//!   scalar path) or NCHW planes;
//! - NCHW input: per (image, channel) plane, a padded f32 copy of `x − zx`
//!   and the taps' shifted rows (`dwconv_u8i8_plane_avx512`, AVX2 rows).
//!
//! Every path computes the exact `Σ (x − zx)(w − zw)` of each output and
//! requantizes it with the call's `Requant`.

use std::mem::MaybeUninit;
use std::sync::Mutex;

use rquant_core::conv::{dw_rows, DwRows};
use rquant_core::engine::ConvCall;
use rquant_core::MemoryFormat;

use crate::isa::Caps;
#[cfg(target_arch = "x86_64")]
use crate::kernels::dwconv_f32_row_avx2::dw_row as dw_row_f32;
use crate::kernels::dwconv_f32_row_avx2::{MAX_TAPS, SLACK};
use crate::kernels::dwconv_i16_row_avx2::row as dw_scalar;
use crate::kernels::dwconv_u8i8_kxk_nhwc_avx512::DwBand;
#[cfg(target_arch = "x86_64")]
use crate::kernels::dwconv_u8i8_plane_avx512 as dw512;
use crate::kernels::dwpack_u8i16_pairs_avx512::PairRow;
use crate::kernels::output::{requant_run, Channel};
use crate::threads::{par_chunks1, par_for, threads_for};

/// Depthwise weights: `w − zw` per channel and tap, and the same as int16
/// pairs for the NHWC kernels.
#[derive(Debug, Clone)]
pub struct DwWeights {
    /// `[c][kh·kw]`.
    pub(crate) taps: Vec<i32>,
    pub(crate) zps: Vec<i32>,
    /// `Σ_taps (w − zw)` per channel.
    sums: Vec<i32>,
    /// `[⌈c/16⌉][kh][⌈kw/2⌉][16]`: lane `l` of pair `p` is
    /// `(w[2p] − zw, w[2p+1] − zw)` of channel `16·cb + l` (0 past the
    /// kernel's last column and the last channel).
    pairs: Vec<i32>,
}

impl DwWeights {
    pub(crate) fn new(taps: Vec<i32>, zps: Vec<i32>, kh: usize, kw: usize) -> Self {
        let c = zps.len();
        let (cblocks, np, nt) = (c.div_ceil(16), kw.div_ceil(2), kh * kw);
        let mut pairs = vec![0i32; cblocks * kh * np * 16];
        for ch in 0..c {
            let (cb, l) = (ch / 16, ch % 16);
            for ky in 0..kh {
                for p in 0..np {
                    let lo = taps[ch * nt + ky * kw + 2 * p];
                    let hi = if 2 * p + 1 < kw {
                        taps[ch * nt + ky * kw + 2 * p + 1]
                    } else {
                        0
                    };
                    pairs[((cb * kh + ky) * np + p) * 16 + l] = pack_pair(lo, hi);
                }
            }
        }
        let sums = taps.chunks_exact(nt).map(|t| t.iter().sum()).collect();
        DwWeights {
            taps,
            zps,
            sums,
            pairs,
        }
    }
    pub(crate) fn bytes(&self) -> usize {
        self.taps.len() * 4 + self.zps.len() * 16 + self.pairs.len() * 4
    }
}

/// Two values in [−32768, 32767] as the int16 pair (lo, hi) of an int32 lane.
fn pack_pair(lo: i32, hi: i32) -> i32 {
    ((lo as i16 as u16 as u32) | ((hi as i16 as u16 as u32) << 16)) as i32
}

/// The pair row `t` (the definition of the `dwpack_u8i16_pairs_*` kernels).
pub(crate) fn fill_pairs_scalar(t: &mut PairRow<'_>) {
    t.assert_fits();
    let v = |col: isize, ch: usize| -> i32 {
        match t.x {
            _ if ch >= t.c => 0,
            Some(x) if col >= 0 && col < t.w as isize => x[col as usize * t.c + ch] as i32,
            _ => t.xz as i32,
        }
    };
    for j in 0..t.pairs {
        let col = (j * t.step) as isize - t.left as isize;
        for cb in 0..t.cblocks {
            for l in 0..16 {
                let ch = cb * 16 + l;
                t.out[(cb * t.pairs + j) * 16 + l] = pack_pair(v(col, ch), v(col + 1, ch));
            }
        }
    }
}

/// Fill a pair row with the path's kernel.
fn fill_pairs(caps: Caps, t: &mut PairRow<'_>) {
    t.assert_fits();
    #[cfg(target_arch = "x86_64")]
    if caps.avx512 {
        // SAFETY: AVX-512F/BW/VL detected (caps come from an engine value);
        // the row fits (asserted).
        return unsafe { crate::kernels::dwpack_u8i16_pairs_avx512::fill(t) };
    } else if caps.avx2 {
        // SAFETY: AVX2 detected; the row fits (asserted).
        return unsafe { crate::kernels::dwpack_u8i16_pairs_avx2::fill(t) };
    }
    let _ = caps;
    fill_pairs_scalar(t)
}

/// Run a band through the path's kernel for `kh × kw` (3×3 or 5×5),
/// horizontal stride `sx` (1 or 2).
fn run_band(caps: Caps, vnni: bool, kh: usize, kw: usize, sx: usize, t: &mut DwBand<'_>) {
    let (so, sp) = pair_steps(sx).1;
    t.assert_fits(kh, kw, so, sp);
    #[cfg(target_arch = "x86_64")]
    {
        use crate::kernels::dwconv_u8i8_kxk_nhwc_avx2 as k2;
        use crate::kernels::dwconv_u8i8_kxk_nhwc_avx512 as k512;
        // SAFETY (each arm): the features come from the detected path
        // (`vnni`: the path's GEMM kernels use AVX512-VNNI); the band fits
        // the kernel's shape and steps (asserted); the caller checked that
        // the requantization is tame.
        unsafe {
            match (kh, kw, sx, caps.avx512, vnni) {
                (3, 3, 1, true, true) => k512::run_vnni::<3, 2, 1, 2>(t),
                (3, 3, 2, true, true) => k512::run_vnni::<3, 2, 1, 1>(t),
                (5, 5, 1, true, true) => k512::run_vnni::<5, 3, 1, 2>(t),
                (5, 5, 2, true, true) => k512::run_vnni::<5, 3, 1, 1>(t),
                (3, 3, 1, true, false) => k512::run::<3, 2, 1, 2>(t),
                (3, 3, 2, true, false) => k512::run::<3, 2, 1, 1>(t),
                (5, 5, 1, true, false) => k512::run::<5, 3, 1, 2>(t),
                (5, 5, 2, true, false) => k512::run::<5, 3, 1, 1>(t),
                (3, 3, 1, false, _) if caps.avx2 => k2::run::<3, 2, 1, 2>(t),
                (3, 3, 2, false, _) if caps.avx2 => k2::run::<3, 2, 1, 1>(t),
                (5, 5, 1, false, _) if caps.avx2 => k2::run::<5, 3, 1, 2>(t),
                (5, 5, 2, false, _) if caps.avx2 => k2::run::<5, 3, 1, 1>(t),
                _ => unreachable!("no NHWC depthwise kernel for {kh}x{kw} stride {sx} on {caps:?}"),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no NHWC depthwise kernel off x86_64: {caps:?} {vnni} {kh}x{kw} {sx} {t:?}");
}

/// For horizontal stride `sx`: the padded column step between stored pairs,
/// and the pair index steps (per output column, per tap pair): pairs start
/// at padded columns `ox·sx + 2p`, every column for an odd stride, the even
/// ones for an even stride.
fn pair_steps(sx: usize) -> (usize, (usize, usize)) {
    if sx.is_multiple_of(2) {
        (2, (sx / 2, 1))
    } else {
        (1, (sx, 2))
    }
}

/// Per-thread buffers of the NHWC depthwise tasks.
#[derive(Default)]
struct BandScratch {
    rows: Vec<i32>,
}

/// Whether the vector NHWC depthwise kernels take this call (3×3 and 5×5,
/// stride 1 or 2, no dilation, a tame output stage).
pub(crate) fn nhwc_kernel_fits(caps: Caps, c: &ConvCall<'_>) -> bool {
    let (g, p) = (c.g, c.g.params);
    cfg!(target_arch = "x86_64")
        && caps.avx2
        && c.requant.tame
        && matches!((g.kh, g.kw), (3, 3) | (5, 5))
        && matches!(p.stride[1], 1 | 2)
        && p.dilation == [1, 1]
}

/// Depthwise conv of NHWC `c.x` into NHWC output.
pub(crate) fn depthwise_nhwc(caps: Caps, vnni: bool, c: &ConvCall<'_>, dw: &DwWeights) -> Vec<u8> {
    let (g, r) = (c.g, c.requant);
    let p = g.params;
    let fast = nhwc_kernel_fits(caps, c);
    if !fast && caps.avx2 {
        // Other kernels: through NCHW planes.
        let xc = c.x.to_format(MemoryFormat::Contiguous);
        let y = depthwise_planes(caps, &ConvCall { x: &xc, ..*c }, dw);
        let mut t = vec![0u8; y.len()];
        rquant_core::tensor::nchw_to_nhwc(&y, g.n, g.o, g.oh * g.ow, &mut t);
        return t;
    }
    let (_, xz) = c.x.q_per_tensor().expect("validated per-tensor");
    let xd = c.x.int_repr();
    let (ch, oh, ow) = (g.c, g.oh, g.ow);
    let img_in = g.h * g.w * ch;
    let img_out = oh * ow * ch;
    let len = g.n * img_out;
    let mut y: Vec<u8> = Vec::with_capacity(len);
    // Bands of output rows: a band's pair rows stay within an L2-sized
    // budget, and every thread gets a few bands.
    let (sy, sx) = (p.stride[0], p.stride[1]);
    let np = g.kw.div_ceil(2);
    let (step, (step_ox, step_p)) = pair_steps(sx);
    let pairs = (ow - 1) * step_ox + (np - 1) * step_p + 1;
    let cblocks = ch.div_ceil(16);
    let row_len = cblocks * pairs * 16;
    const BAND_BYTES: usize = 256 << 10;
    let rows_fit = (BAND_BYTES / (row_len * 4)).max(g.kh);
    let mut band = ((rows_fit - g.kh) / sy + 1).min(oh);
    let threads = threads_for(usize::MAX);
    while threads > 1 && g.n * oh.div_ceil(band) < 4 * threads && band > 1 {
        band = band.div_ceil(2);
    }
    let nbands = oh.div_ceil(band);
    // Each task's outputs: rows oy0 .. of image b, a disjoint slice.
    let slices: Vec<Mutex<&mut [MaybeUninit<u8>]>> = y.spare_capacity_mut()[..len]
        .chunks_mut(img_out)
        .flat_map(|img| img.chunks_mut(band * ow * ch))
        .map(Mutex::new)
        .collect();
    let mut bt = vec![0f32; cblocks * 16];
    let mut mult = vec![0f32; cblocks * 16];
    let mut init = vec![0i32; cblocks * 16];
    bt[..ch].copy_from_slice(&r.bias_term[..ch]);
    mult[..ch].copy_from_slice(&r.mult[..ch]);
    // The accumulators start at −zx·Σ(w − zw): the pair rows hold x itself.
    for (i, &s) in init.iter_mut().zip(&dw.sums) {
        *i = s.wrapping_mul(-(xz as i32));
    }
    let (bt, mult, init, slices) = (&bt[..], &mult[..], &init[..], &slices[..]);
    par_for(g.n * nbands, BandScratch::default, |st, task| {
        let (b, bi) = (task / nbands, task % nbands);
        let oy0 = bi * band;
        let rows = band.min(oh - oy0);
        let mut out = slices[task].lock().unwrap_or_else(|e| e.into_inner());
        let x = &xd[b * img_in..(b + 1) * img_in];
        if !fast {
            dw_rows(&mut DwRows::new(
                g, x, xz as i32, &dw.taps, r, oy0, rows, &mut out,
            ));
            return;
        }
        let in_rows = (rows - 1) * sy + g.kh;
        st.rows.resize(in_rows * row_len, 0);
        for (i, dst) in st.rows.chunks_exact_mut(row_len).enumerate() {
            let iy = (oy0 * sy + i) as isize - p.padding[0] as isize;
            let src = (iy >= 0 && (iy as usize) < g.h)
                .then(|| &x[iy as usize * g.w * ch..(iy as usize + 1) * g.w * ch]);
            fill_pairs(
                caps,
                &mut PairRow {
                    x: src,
                    w: g.w,
                    c: ch,
                    cblocks,
                    xz: xz as u8,
                    left: p.padding[1],
                    pairs,
                    step,
                    out: dst,
                },
            );
        }
        run_band(
            caps,
            vnni,
            g.kh,
            g.kw,
            sx,
            &mut DwBand {
                r: &st.rows,
                row_len,
                pairs,
                c: ch,
                cblocks,
                rows,
                ow,
                sy,
                w: &dw.pairs,
                init,
                bt,
                mult,
                out_zp: r.out_zp,
                lo: r.clamp.lo,
                hi: r.clamp.hi,
                out: &mut out,
            },
        );
    });
    // SAFETY: the bands cover every output row of every image, and each
    // band's kernel (or the scalar twin) writes every byte of its rows.
    unsafe { y.set_len(len) };
    y
}

/// Depthwise conv (channel multiplier 1): per (image, channel) plane, a
/// zero-padded copy of `x − zx`, then each output row is the sum of the
/// taps' shifted rows, requantized with the channel's column of the call's
/// `Requant`.
pub(crate) fn depthwise_planes(caps: Caps, c: &ConvCall<'_>, dw: &DwWeights) -> Vec<u8> {
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
                    let wv = dw.taps[c * ntaps + ky * g.kw + kx];
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
