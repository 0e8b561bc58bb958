//! Data movement on quint8 tensors, bit-exact by construction: channel
//! shuffle, constant padding (negative pads crop), and nearest / bilinear
//! upsampling (docs/numerics.md §12). Every op reads and writes either memory
//! format; the output is in the input's format.

use crate::numerics::{f32_to_i64_sat, rne};
use crate::{MemoryFormat, QTensor, Result};

/// Channel shuffle of an NCHW tensor (4-D, validated, `groups` divides C):
/// output channel `i·groups + g` is input channel `g·(C/groups) + i`.
pub fn channel_shuffle(x: &QTensor<u8>, groups: usize) -> Result<Vec<u8>> {
    let &[n, c, h, w] = x.shape() else {
        unreachable!("validated: 4-D")
    };
    let cpg = c / groups;
    let src_channel = |co: usize| (co % groups) * cpg + co / groups;
    let xd = x.int_repr();
    let mut y = vec![0u8; xd.len()];
    match x.memory_format() {
        MemoryFormat::Contiguous => {
            let plane = h * w;
            for b in 0..n {
                for co in 0..c {
                    let src = &xd[(b * c + src_channel(co)) * plane..][..plane];
                    y[(b * c + co) * plane..][..plane].copy_from_slice(src);
                }
            }
        }
        MemoryFormat::ChannelsLast => {
            for (px, out) in xd.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
                for (co, o) in out.iter_mut().enumerate() {
                    *o = px[src_channel(co)];
                }
            }
        }
    }
    Ok(y)
}

/// The output extent of one padded dimension: `len + before + after`
/// (negative pads crop). None when it is not positive.
pub fn padded_len(len: usize, before: i64, after: i64) -> Option<usize> {
    let v = len as i64 + before + after;
    (v > 0).then_some(v as usize)
}

/// `constant_pad_nd` over the last two dimensions of a 3-D or 4-D tensor:
/// `pad = [left, right, top, bottom]` (negative crops), new positions hold
/// `fill`. The output shape is validated by the front end.
pub fn constant_pad2d(x: &QTensor<u8>, pad: [i64; 4], fill: u8) -> Result<Vec<u8>> {
    let shape = x.shape();
    let nd = shape.len();
    let (h, w) = (shape[nd - 2], shape[nd - 1]);
    let outer: usize = shape[..nd - 2].iter().product();
    let oh = padded_len(h, pad[2], pad[3]).expect("validated");
    let ow = padded_len(w, pad[0], pad[1]).expect("validated");
    // Source row / column of each output row / column, if any.
    let src = |o: usize, before: i64, len: usize| -> Option<usize> {
        let i = o as i64 - before;
        (0..len as i64).contains(&i).then_some(i as usize)
    };
    let rows: Vec<Option<usize>> = (0..oh).map(|o| src(o, pad[2], h)).collect();
    let cols: Vec<Option<usize>> = (0..ow).map(|o| src(o, pad[0], w)).collect();
    let xd = x.int_repr();
    match x.memory_format() {
        MemoryFormat::Contiguous => {
            let mut y = Vec::with_capacity(outer * oh * ow);
            for plane in xd.chunks_exact(h * w) {
                for r in &rows {
                    for cidx in &cols {
                        y.push(match (r, cidx) {
                            (Some(iy), Some(ix)) => plane[iy * w + ix],
                            _ => fill,
                        });
                    }
                }
            }
            Ok(y)
        }
        MemoryFormat::ChannelsLast => {
            // NHWC storage of a 4-D tensor: pixels of C channels.
            let (n, c) = (shape[0], shape[1]);
            let mut y = Vec::with_capacity(n * oh * ow * c);
            for img in xd.chunks_exact(h * w * c) {
                for r in &rows {
                    for cidx in &cols {
                        match (r, cidx) {
                            (Some(iy), Some(ix)) => {
                                y.extend_from_slice(&img[(iy * w + ix) * c..][..c])
                            }
                            _ => y.extend(std::iter::repeat_n(fill, c)),
                        }
                    }
                }
            }
            Ok(y)
        }
    }
}

/// Validated geometry of a 2-D upsampling: input `[n, c, h, w]`, output
/// `oh × ow`, and the scale factors when the caller gave them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpsampleGeometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    /// `[scale_h, scale_w]` from `scale_factors`, or None with `output_size`.
    pub scales: Option<[f64; 2]>,
}

impl UpsampleGeometry {
    pub fn out_shape(&self) -> Vec<usize> {
        vec![self.n, self.c, self.oh, self.ow]
    }
}

/// PyTorch's `compute_scales_value<float>`: `f32(1.0 / scale)` when a
/// positive scale factor was given, else `f32(in) / f32(out)`.
pub fn compute_scales_value(scale: Option<f64>, input: usize, output: usize) -> f32 {
    match scale {
        Some(s) if s > 0.0 => (1.0 / s) as f32,
        _ => input as f32 / output as f32,
    }
}

/// Nearest source index: `min(floor(f32(dst) · step), in − 1)`.
pub fn nearest_source_index(step: f32, dst: usize, input: usize) -> usize {
    let v = (dst as f32 * step).floor();
    (f32_to_i64_sat(v).max(0) as usize).min(input - 1)
}

/// Source row / column of each output row / column of a nearest upsampling,
/// per axis (0 = H, 1 = W).
fn nearest_indices(g: &UpsampleGeometry, axis: usize) -> Vec<usize> {
    let (input, output) = if axis == 0 { (g.h, g.oh) } else { (g.w, g.ow) };
    let step = compute_scales_value(g.scales.map(|s| s[axis]), input, output);
    (0..output)
        .map(|o| nearest_source_index(step, o, input))
        .collect()
}

/// Gather of a 2-D resampling: output pixel (oy, ox) is input pixel
/// (rows[oy], cols[ox]), in either memory format.
fn gather2d(x: &QTensor<u8>, g: &UpsampleGeometry, rows: &[usize], cols: &[usize]) -> Vec<u8> {
    let xd = x.int_repr();
    let mut y = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
    match x.memory_format() {
        MemoryFormat::Contiguous => {
            for plane in xd.chunks_exact(g.h * g.w) {
                for &iy in rows {
                    let row = &plane[iy * g.w..][..g.w];
                    y.extend(cols.iter().map(|&ix| row[ix]));
                }
            }
        }
        MemoryFormat::ChannelsLast => {
            for img in xd.chunks_exact(g.h * g.w * g.c) {
                for &iy in rows {
                    for &ix in cols {
                        y.extend_from_slice(&img[(iy * g.w + ix) * g.c..][..g.c]);
                    }
                }
            }
        }
    }
    y
}

/// Nearest upsampling (`upsample_nearest2d`, PyTorch's legacy `nearest`
/// mode); equal input and output sizes copy.
pub fn upsample_nearest2d(x: &QTensor<u8>, g: &UpsampleGeometry) -> Result<Vec<u8>> {
    if g.h == g.oh && g.w == g.ow {
        return Ok(x.int_repr().to_vec());
    }
    Ok(gather2d(
        x,
        g,
        &nearest_indices(g, 0),
        &nearest_indices(g, 1),
    ))
}

/// One axis of a bilinear resampling: the lower source index, the offset to
/// the upper one (0 at the last row/column), and the two weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BilinearTap {
    pub i0: usize,
    pub step: usize,
    pub l0: f32,
    pub l1: f32,
}

/// PyTorch's `area_pixel_compute_scale<float>`.
pub fn area_pixel_scale(
    input: usize,
    output: usize,
    align_corners: bool,
    scale: Option<f64>,
) -> f32 {
    if align_corners {
        if output > 1 {
            (input - 1) as f32 / (output - 1) as f32
        } else {
            0.0
        }
    } else {
        compute_scales_value(scale, input, output)
    }
}

/// The taps of one axis: `src = step·dst` (align_corners) or
/// `max(step·(dst + 0.5) − 0.5, 0)` (f32, no fused multiply-add);
/// `i0 = trunc(src)`, `l1 = src − i0`, `l0 = 1 − l1`.
pub fn bilinear_taps(
    input: usize,
    output: usize,
    align_corners: bool,
    scale: Option<f64>,
) -> Vec<BilinearTap> {
    let step = area_pixel_scale(input, output, align_corners, scale);
    (0..output)
        .map(|o| {
            let src = if align_corners {
                step * o as f32
            } else {
                let s = step * (o as f32 + 0.5) - 0.5;
                if s < 0.0 {
                    0.0
                } else {
                    s
                }
            };
            let i0 = (f32_to_i64_sat(src).max(0) as usize).min(input - 1);
            let l1 = src - i0 as f32;
            BilinearTap {
                i0,
                step: usize::from(i0 < input - 1),
                l0: 1.0 - l1,
                l1,
            }
        })
        .collect()
}

/// The bilinear value of one output element from its four neighbours
/// (PyTorch's NCHW kernel, f32, left to right, no fused multiply-add):
/// `h0·(w0·p00 + w1·p01) + h1·(w0·p10 + w1·p11) − zp`, then `rne(·) + zp`
/// clamped (the output has the input's qparams).
#[inline]
pub fn bilinear_value(ty: &BilinearTap, tx: &BilinearTap, p: [u8; 4], zp: i64) -> u8 {
    let [p00, p01, p10, p11] = p.map(|v| v as f32);
    let r = ty.l0 * (tx.l0 * p00 + tx.l1 * p01) + ty.l1 * (tx.l0 * p10 + tx.l1 * p11) - zp as f32;
    f32_to_i64_sat(rne(r)).saturating_add(zp).clamp(0, 255) as u8
}

/// Bilinear upsampling (`upsample_bilinear2d`); equal input and output
/// sizes copy. The same values in either memory format.
pub fn upsample_bilinear2d(
    x: &QTensor<u8>,
    g: &UpsampleGeometry,
    align_corners: bool,
) -> Result<Vec<u8>> {
    if g.h == g.oh && g.w == g.ow {
        return Ok(x.int_repr().to_vec());
    }
    let zp = x.q_per_tensor().expect("validated").1;
    let sc = |a: usize| g.scales.map(|s| s[a]);
    let ty = bilinear_taps(g.h, g.oh, align_corners, sc(0));
    let tx = bilinear_taps(g.w, g.ow, align_corners, sc(1));
    let xd = x.int_repr();
    let mut y = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
    match x.memory_format() {
        MemoryFormat::Contiguous => {
            for plane in xd.chunks_exact(g.h * g.w) {
                for a in &ty {
                    for b in &tx {
                        let at = |dy: usize, dx: usize| plane[(a.i0 + dy) * g.w + b.i0 + dx];
                        let p = [at(0, 0), at(0, b.step), at(a.step, 0), at(a.step, b.step)];
                        y.push(bilinear_value(a, b, p, zp));
                    }
                }
            }
        }
        MemoryFormat::ChannelsLast => {
            let c = g.c;
            for img in xd.chunks_exact(g.h * g.w * c) {
                for a in &ty {
                    for b in &tx {
                        let at = |dy: usize, dx: usize, ch: usize| {
                            img[((a.i0 + dy) * g.w + b.i0 + dx) * c + ch]
                        };
                        for ch in 0..c {
                            let p = [
                                at(0, 0, ch),
                                at(0, b.step, ch),
                                at(a.step, 0, ch),
                                at(a.step, b.step, ch),
                            ];
                            y.push(bilinear_value(a, b, p, zp));
                        }
                    }
                }
            }
        }
    }
    Ok(y)
}
