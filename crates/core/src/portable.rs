//! Portable scalar implementations of the memory-bound ops (element-wise,
//! pooling, cat, lookup tables). The reference engine is built from them, and
//! every engine uses them for the ops it does not vectorise, so these ops give
//! the same bits everywhere by construction. Inputs are validated by the
//! engine front end (`rquant_core::Engine`) before they get here.

pub mod activation;
pub mod embedding;
pub mod matmul;
pub mod norm;
pub mod reduce;
pub mod shape;

pub use activation::{clamp, hardsigmoid, tanh};
pub use embedding::{embedding_bag, Bags, EmbeddingBagTable};
pub use matmul::{matmul, MatmulGeometry};
pub use norm::{
    batch_norm, batch_norm_coefficients, group_norm, layer_norm, norm_stats, NormStats,
};
pub use reduce::{mean, softmax};
pub use shape::{
    channel_shuffle, constant_pad2d, upsample_bilinear2d, upsample_nearest2d, UpsampleGeometry,
};

use crate::numerics::{self, dequantize_val, div_rne, inv_scale, quantize_val, rne};
use crate::ops::{adaptive_window, AvgPool2dParams, BinaryOp, MaxPool2dParams, OutQ, PoolGeometry};
use crate::{MemoryFormat, QTensor, Result};

/// An 8-bit per-tensor affine code in the unsigned domain, so that one
/// quantize / dequantize kernel serves both 8-bit dtypes: quint8 as it is;
/// qint8 as quint8 with the zero point moved up by 128 and the top bit of each
/// byte flipped (the i8 `v` is the byte `(v + 128) ^ 0x80`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Code8 {
    /// `1 / f32(scale)`, PyTorch's quantize multiplier.
    pub inv: f32,
    /// `f32(scale)`, the dequantize multiplier.
    pub scale: f32,
    /// The zero point in the unsigned domain, 0..=255.
    pub zp: i32,
    /// 0 for quint8, 0x80 for qint8.
    pub flip: u8,
}

impl Code8 {
    /// The code of (`dtype`, scale, zero point); None for qint32. The
    /// zero point must already be validated for `dtype`.
    pub fn new(dtype: crate::QDType, scale: f64, zero_point: i64) -> Option<Code8> {
        let (shift, flip) = match dtype {
            crate::QDType::QUInt8 => (0, 0),
            crate::QDType::QInt8 => (128, 0x80),
            crate::QDType::QInt32 => return None,
        };
        Some(Code8 {
            inv: inv_scale(scale),
            scale: scale as f32,
            zp: (zero_point + shift) as i32,
            flip,
        })
    }
}

/// Quantize `src` into `dst` (equal lengths) with `c`; the same bits as
/// `quantize_val` element by element. Returns whether `src` holds a NaN (the
/// caller turns that into an error; the NaN's byte is unspecified). One pass:
/// the NaN test rides along instead of scanning the input twice.
pub fn quantize8(src: &[f32], c: Code8, dst: &mut [u8]) -> bool {
    let zp = c.zp as i64;
    let mut nan = false;
    for (d, &x) in dst.iter_mut().zip(src) {
        nan |= x.is_nan();
        *d = quantize_val::<u8>(c.inv, zp, x) ^ c.flip;
    }
    nan
}

/// Dequantize `src` into `dst` (equal lengths): `f32(q − zp) · f32(scale)`.
pub fn dequantize8(src: &[u8], c: Code8, dst: &mut [f32]) {
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = ((b ^ c.flip) as i32 - c.zp) as f32 * c.scale;
    }
}

/// Min, max and finiteness of `x` in one pass (dynamic linear's input scan):
/// min and max as [`numerics::find_min_max`] for finite input. Sixteen
/// independent lanes so the compiler vectorises it; `v·0` is NaN exactly for
/// an infinite or NaN `v`, so one sum of them tells finiteness.
pub fn min_max_finite(x: &[f32]) -> crate::engine::MinMax {
    const L: usize = 16;
    let Some(&first) = x.first() else {
        return crate::engine::MinMax {
            lo: 0.0,
            hi: 0.0,
            finite: true,
        };
    };
    let (mut lo, mut hi, mut bad) = ([first; L], [first; L], [0f32; L]);
    let mut chunks = x.chunks_exact(L);
    for c in &mut chunks {
        for j in 0..L {
            lo[j] = if c[j] < lo[j] { c[j] } else { lo[j] };
            hi[j] = if c[j] > hi[j] { c[j] } else { hi[j] };
            bad[j] += c[j] * 0.0;
        }
    }
    for &v in chunks.remainder() {
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
        bad[0] += v * 0.0;
    }
    let finite = bad.iter().sum::<f32>() == 0.0;
    crate::engine::MinMax {
        lo: lo.iter().fold(lo[0], |a, &b| a.min(b)),
        hi: hi.iter().fold(hi[0], |a, &b| a.max(b)),
        finite,
    }
}

/// Quantized mul's requantization of one exact product (PyTorch's
/// `requantize_from_int`): `clamp(rne(f32(p) · mult) + out_zp, 0, 255)`.
#[inline(always)]
pub fn requantize_from_int(p: i32, mult: f32, out_zp: i64) -> u8 {
    numerics::f32_to_i64_sat(rne(p as f32 * mult))
        .saturating_add(out_zp)
        .clamp(0, 255) as u8
}

/// Quantized mul's multiplier `f32(a_scale)·f32(b_scale)·(1/f32(out_scale))`, left to right.
#[inline]
pub fn mul_multiplier(a_scale: f64, b_scale: f64, out_scale: f64) -> f32 {
    (a_scale as f32) * (b_scale as f32) * inv_scale(out_scale)
}

/// The 256-entry table of `f(dequantize(q))` quantized to `out`.
pub fn lut_u8(scale: f64, zero_point: i64, out: OutQ, f: impl Fn(f32) -> f32) -> [u8; 256] {
    let inv = inv_scale(out.scale);
    let mut t = [0u8; 256];
    for (q, v) in t.iter_mut().enumerate() {
        *v = quantize_val::<u8>(
            inv,
            out.zero_point,
            f(dequantize_val(scale as f32, zero_point, q as i64)),
        );
    }
    t
}

/// The hardswish table for input qparams (scale, zp) and output qparams `out`.
pub fn hardswish_lut(scale: f64, zero_point: i64, out: OutQ) -> [u8; 256] {
    lut_u8(scale, zero_point, out, numerics::hardswish_f32)
}

/// The sigmoid table for input qparams (scale, zp) and output qparams `out`.
pub fn sigmoid_lut(scale: f64, zero_point: i64, out: OutQ) -> [u8; 256] {
    lut_u8(scale, zero_point, out, numerics::sigmoid_f32)
}

/// Quantized add / add_relu (exact dequantize, f32 add, quantize) and mul (exact product, requantize).
pub fn binary(op: BinaryOp, a: &QTensor<u8>, b: &QTensor<u8>, out: OutQ) -> Result<Vec<u8>> {
    let (sa, za) = a.q_per_tensor().expect("validated");
    let (sb, zb) = b.q_per_tensor().expect("validated");
    let inv = inv_scale(out.scale);
    let it = a.int_repr().iter().zip(b.int_repr());
    Ok(match op {
        BinaryOp::Add | BinaryOp::AddRelu => it
            .map(|(&qa, &qb)| {
                let mut c = dequantize_val(sa as f32, za, qa as i64)
                    + dequantize_val(sb as f32, zb, qb as i64);
                if op == BinaryOp::AddRelu {
                    c = c.max(0.0);
                }
                quantize_val::<u8>(inv, out.zero_point, c)
            })
            .collect(),
        BinaryOp::Mul => {
            let mult = mul_multiplier(sa, sb, out.scale);
            it.map(|(&qa, &qb)| {
                let c = (qa as i32 - za as i32) * (qb as i32 - zb as i32);
                requantize_from_int(c, mult, out.zero_point)
            })
            .collect()
        }
    })
}

/// [`binary`] with `b` broadcast to `a`'s logical shape (PyTorch's rules,
/// right-aligned; every dimension of `b` is 1 or `a`'s). The output has
/// `a`'s shape and memory format; `b` may be stored in either format.
/// Element by element the arithmetic is [`binary`]'s.
pub fn binary_broadcast(
    op: BinaryOp,
    a: &QTensor<u8>,
    b: &QTensor<u8>,
    out: OutQ,
) -> Result<Vec<u8>> {
    let (sa, za) = a.q_per_tensor().expect("validated");
    let (sb, zb) = b.q_per_tensor().expect("validated");
    let strides = broadcast_strides(a, b);
    let shape = a.storage_shape();
    let inv = inv_scale(out.scale);
    let mult = mul_multiplier(sa, sb, out.scale);
    let f = |qa: u8, qb: u8| -> u8 {
        match op {
            BinaryOp::Add | BinaryOp::AddRelu => {
                let mut c = dequantize_val(sa as f32, za, qa as i64)
                    + dequantize_val(sb as f32, zb, qb as i64);
                if op == BinaryOp::AddRelu {
                    c = c.max(0.0);
                }
                quantize_val::<u8>(inv, out.zero_point, c)
            }
            BinaryOp::Mul => {
                let c = (qa as i32 - za as i32) * (qb as i32 - zb as i32);
                requantize_from_int(c, mult, out.zero_point)
            }
        }
    };
    let bd = b.int_repr();
    let mut idx = vec![0usize; shape.len()];
    let mut off = 0usize;
    let mut y = Vec::with_capacity(a.numel());
    for &qa in a.int_repr() {
        y.push(f(qa, bd[off]));
        // Odometer over a's storage shape, moving b's offset along.
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            off += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
    Ok(y)
}

/// For each storage dimension of `a`, the step of `b`'s offset (0 where `b`
/// is broadcast). `b` is broadcastable to `a` (validated).
fn broadcast_strides(a: &QTensor<u8>, b: &QTensor<u8>) -> Vec<usize> {
    let nd = a.ndim();
    // b's logical shape right-aligned to a's rank, and its logical strides
    // in its own storage.
    let mut bshape = vec![1usize; nd];
    bshape[nd - b.ndim()..].copy_from_slice(b.shape());
    let bst = b.storage_shape();
    let mut storage_stride = vec![0usize; bst.len()];
    let mut acc = 1;
    for d in (0..bst.len()).rev() {
        storage_stride[d] = acc;
        acc *= bst[d];
    }
    let perm_b = storage_perm(b);
    let mut logical_stride_b = vec![0usize; nd];
    for (j, &l) in perm_b.iter().enumerate() {
        logical_stride_b[nd - b.ndim() + l] = storage_stride[j];
    }
    storage_perm(a)
        .iter()
        .map(|&l| {
            if bshape[l] == 1 {
                0
            } else {
                logical_stride_b[l]
            }
        })
        .collect()
}

/// Storage dimension j of `x` holds logical dimension `perm[j]`.
pub fn storage_perm<T: crate::QType>(x: &QTensor<T>) -> Vec<usize> {
    match x.memory_format() {
        MemoryFormat::ChannelsLast => vec![0, 2, 3, 1],
        MemoryFormat::Contiguous => (0..x.ndim()).collect(),
    }
}

/// Concatenation of `[outer, d_i, inner]` blocks: each input dequantized, then quantized to `out`.
pub fn cat(xs: &[&QTensor<u8>], outer: usize, inner: usize, out: OutQ) -> Result<Vec<u8>> {
    let inv = inv_scale(out.scale);
    let total: usize = xs.iter().map(|x| x.numel()).sum();
    let mut y = Vec::with_capacity(total);
    for o in 0..outer {
        for x in xs {
            let (s, z) = x.q_per_tensor().expect("validated");
            let len = x.numel() / outer;
            debug_assert_eq!(len % inner.max(1), 0);
            y.extend(x.int_repr()[o * len..(o + 1) * len].iter().map(|&q| {
                quantize_val::<u8>(inv, out.zero_point, dequantize_val(s as f32, z, q as i64))
            }));
        }
    }
    Ok(y)
}

/// `max(q, zero_point)`.
pub fn relu(x: &QTensor<u8>) -> Result<Vec<u8>> {
    let z = x.q_per_tensor().expect("validated").1 as u8;
    Ok(x.int_repr().iter().map(|&q| q.max(z)).collect())
}

/// In-bounds window of max-pool output position `o` along `axis` (input
/// length `len`): `[start, end)` over input indices, stepping by the
/// dilation; `(0, 0)` when every tap falls in the padding.
pub fn max_pool_window(p: &MaxPool2dParams, o: usize, axis: usize, len: usize) -> (usize, usize) {
    let first = (o * p.stride[axis]) as isize - p.padding[axis] as isize;
    let d = p.dilation[axis] as isize;
    let lo = if first < 0 { (-first + d - 1) / d } else { 0 };
    let hi_excl = (len as isize - first + d - 1) / d;
    let k_lo = lo.min(p.kernel[axis] as isize);
    let k_hi = hi_excl.clamp(k_lo, p.kernel[axis] as isize);
    if k_hi <= k_lo {
        return (0, 0);
    }
    // One past the last tap (not first + k_hi·d, which may pass the input's end).
    (
        (first + k_lo * d) as usize,
        (first + (k_hi - 1) * d + 1) as usize,
    )
}

/// In-bounds window of avg-pool output position `o` along `axis`: the
/// clipped `[start, end)` and the unclipped window size PyTorch divides by
/// with `count_include_pad` (clipped at the padded end only).
pub fn avg_pool_window(
    p: &AvgPool2dParams,
    o: usize,
    axis: usize,
    len: usize,
) -> (usize, usize, i64) {
    let (len, pad) = (len as i64, p.padding[axis] as i64);
    let start = o as i64 * p.stride[axis] as i64 - pad;
    let end = (start + p.kernel[axis] as i64).min(len + pad);
    let padded = end - start;
    (start.max(0) as usize, end.min(len) as usize, padded)
}

/// Maximum over each window's in-bounds positions (NCHW or channels-last).
pub fn max_pool2d(x: &QTensor<u8>, g: &PoolGeometry, p: &MaxPool2dParams) -> Result<Vec<u8>> {
    if x.memory_format() == MemoryFormat::ChannelsLast {
        return Ok(max_pool2d_nhwc(x.int_repr(), g, p));
    }
    let xd = x.int_repr();
    let mut y = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
    let window = |o: usize, axis: usize, len: usize| max_pool_window(p, o, axis, len);
    let cols: Vec<(usize, usize)> = (0..g.ow).map(|ox| window(ox, 1, g.w)).collect();
    let (dy, dx) = (p.dilation[0], p.dilation[1]);
    for plane in 0..g.n * g.c {
        let src = &xd[plane * g.h * g.w..(plane + 1) * g.h * g.w];
        for oy in 0..g.oh {
            let (y0, y1) = window(oy, 0, g.h);
            for &(x0, x1) in &cols {
                let mut m = 0u8;
                for iy in (y0..y1).step_by(dy) {
                    let row = &src[iy * g.w..(iy + 1) * g.w];
                    m = row[x0..x1].iter().step_by(dx).fold(m, |a, &b| a.max(b));
                }
                y.push(m);
            }
        }
    }
    Ok(y)
}

/// Max pooling on NHWC data: per output pixel, the channel vector's running
/// maximum over the window's in-bounds taps (the same values as NCHW).
pub fn max_pool2d_nhwc(xd: &[u8], g: &PoolGeometry, p: &MaxPool2dParams) -> Vec<u8> {
    let c = g.c;
    let mut y = vec![0u8; g.n * g.oh * g.ow * c];
    let cols: Vec<(usize, usize)> = (0..g.ow).map(|ox| max_pool_window(p, ox, 1, g.w)).collect();
    for (b, yimg) in y.chunks_exact_mut(g.oh * g.ow * c).enumerate() {
        let img = &xd[b * g.h * g.w * c..][..g.h * g.w * c];
        for oy in 0..g.oh {
            let (y0, y1) = max_pool_window(p, oy, 0, g.h);
            for (ox, &(x0, x1)) in cols.iter().enumerate() {
                let m = &mut yimg[(oy * g.ow + ox) * c..][..c];
                for iy in (y0..y1).step_by(p.dilation[0]) {
                    for ix in (x0..x1).step_by(p.dilation[1]) {
                        let px = &img[(iy * g.w + ix) * c..][..c];
                        for (a, &v) in m.iter_mut().zip(px) {
                            *a = (*a).max(v);
                        }
                    }
                }
            }
        }
    }
    y
}

/// The divisor and zero-point term of one avg-pool window.
pub fn avg_div(p: &AvgPool2dParams, size: i64, padded: i64) -> i64 {
    match p.divisor_override {
        Some(d) => d as i64,
        None if p.count_include_pad => padded,
        None => size,
    }
}

/// Average pooling on NHWC data, the same values as the NCHW kernel.
pub fn avg_pool2d_nhwc(xd: &[u8], z: i64, g: &PoolGeometry, p: &AvgPool2dParams) -> Vec<u8> {
    let c = g.c;
    let mut y = vec![0u8; g.n * g.oh * g.ow * c];
    let mut sum = vec![0i64; c];
    for (b, yimg) in y.chunks_exact_mut(g.oh * g.ow * c).enumerate() {
        let img = &xd[b * g.h * g.w * c..][..g.h * g.w * c];
        for oy in 0..g.oh {
            let (hs, he, ph) = avg_pool_window(p, oy, 0, g.h);
            for ox in 0..g.ow {
                let (ws, we, pw) = avg_pool_window(p, ox, 1, g.w);
                sum.fill(0);
                for iy in hs..he {
                    for ix in ws..we {
                        let px = &img[(iy * g.w + ix) * c..][..c];
                        for (a, &v) in sum.iter_mut().zip(px) {
                            *a += v as i64;
                        }
                    }
                }
                // As the NCHW kernel: i64, so a window that misses the input is empty.
                let size = (he as i64 - hs as i64) * (we as i64 - ws as i64);
                let div = avg_div(p, size, ph * pw);
                let out = &mut yimg[(oy * g.ow + ox) * c..][..c];
                for (o, &sm) in out.iter_mut().zip(&sum) {
                    *o = div_rne(sm - size * z + z * div, div).clamp(0, 255) as u8;
                }
            }
        }
    }
    y
}

/// Adaptive average pooling on NHWC data, the same values as the NCHW kernel.
pub fn adaptive_avg_pool2d_nhwc(xd: &[u8], g: &PoolGeometry) -> Vec<u8> {
    let c = g.c;
    let mut y = vec![0u8; g.n * g.oh * g.ow * c];
    let mut sum = vec![0i64; c];
    for (b, yimg) in y.chunks_exact_mut(g.oh * g.ow * c).enumerate() {
        let img = &xd[b * g.h * g.w * c..][..g.h * g.w * c];
        for oy in 0..g.oh {
            let (hs, he) = adaptive_window(oy, g.h, g.oh);
            for ox in 0..g.ow {
                let (ws, we) = adaptive_window(ox, g.w, g.ow);
                sum.fill(0);
                for iy in hs..he {
                    for ix in ws..we {
                        let px = &img[(iy * g.w + ix) * c..][..c];
                        for (a, &v) in sum.iter_mut().zip(px) {
                            *a += v as i64;
                        }
                    }
                }
                let recip = 1.0f32 / ((he - hs) * (we - ws)) as f32;
                let out = &mut yimg[(oy * g.ow + ox) * c..][..c];
                for (o, &sm) in out.iter_mut().zip(&sum) {
                    let v = numerics::f32_to_i64_sat(rne(sm as f32 * recip));
                    *o = v.clamp(0, 255) as u8;
                }
            }
        }
    }
    y
}

/// `rne((Σq − size·zp)/div + zp)`, exact (PyTorch's NCHW kernel).
pub fn avg_pool2d(x: &QTensor<u8>, g: &PoolGeometry, p: &AvgPool2dParams) -> Result<Vec<u8>> {
    let z = x.q_per_tensor().expect("validated").1;
    if x.memory_format() == MemoryFormat::ChannelsLast {
        return Ok(avg_pool2d_nhwc(x.int_repr(), z, g, p));
    }
    let xd = x.int_repr();
    let mut y = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
    let (h, w) = (g.h as i64, g.w as i64);
    let (ph, pw) = (p.padding[0] as i64, p.padding[1] as i64);
    for plane in 0..g.n * g.c {
        let src = &xd[plane * g.h * g.w..(plane + 1) * g.h * g.w];
        for oy in 0..g.oh as i64 {
            for ox in 0..g.ow as i64 {
                let hs = oy * p.stride[0] as i64 - ph;
                let ws = ox * p.stride[1] as i64 - pw;
                let he = (hs + p.kernel[0] as i64).min(h + ph);
                let we = (ws + p.kernel[1] as i64).min(w + pw);
                let pool_size = (he - hs) * (we - ws);
                let (hs, ws, he, we) = (hs.max(0), ws.max(0), he.min(h), we.min(w));
                let size = (he - hs) * (we - ws);
                let mut sum = 0i64;
                for iy in hs..he {
                    for ix in ws..we {
                        sum += src[(iy * w + ix) as usize] as i64;
                    }
                }
                let div = match p.divisor_override {
                    Some(d) => d as i64,
                    None if p.count_include_pad => pool_size,
                    None => size,
                };
                // rne((Σq − size·zp)/div + zp), exact, zp added before rounding.
                let v = div_rne(sum - size * z + z * div, div);
                y.push(v.clamp(0, 255) as u8);
            }
        }
    }
    Ok(y)
}

/// `rne(f32(Σq) · f32(1/n))` per adaptive window (a reciprocal multiply, as PyTorch).
pub fn adaptive_avg_pool2d(x: &QTensor<u8>, g: &PoolGeometry) -> Result<Vec<u8>> {
    if x.memory_format() == MemoryFormat::ChannelsLast {
        return Ok(adaptive_avg_pool2d_nhwc(x.int_repr(), g));
    }
    let xd = x.int_repr();
    let mut y = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
    for plane in 0..g.n * g.c {
        let src = &xd[plane * g.h * g.w..(plane + 1) * g.h * g.w];
        for oy in 0..g.oh {
            let (hs, he) = adaptive_window(oy, g.h, g.oh);
            for ox in 0..g.ow {
                let (ws, we) = adaptive_window(ox, g.w, g.ow);
                let mut sum = 0i64;
                for iy in hs..he {
                    for ix in ws..we {
                        sum += src[iy * g.w + ix] as i64;
                    }
                }
                // rne(f32(Σq) · f32(1/(kh·kw))): a reciprocal multiply, as PyTorch.
                let recip = 1.0f32 / ((he - hs) * (we - ws)) as f32;
                let v = numerics::f32_to_i64_sat(rne(sum as f32 * recip));
                y.push(v.clamp(0, 255) as u8);
            }
        }
    }
    Ok(y)
}

/// Hardswish through its 256-entry table.
pub fn hardswish(x: &QTensor<u8>, out: OutQ) -> Result<Vec<u8>> {
    let (s, z) = x.q_per_tensor().expect("validated");
    Ok(apply_lut(&hardswish_lut(s, z, out), x.int_repr()))
}

/// Sigmoid through its 256-entry table.
pub fn sigmoid(x: &QTensor<u8>, out: OutQ) -> Result<Vec<u8>> {
    let (s, z) = x.q_per_tensor().expect("validated");
    Ok(apply_lut(&sigmoid_lut(s, z, out), x.int_repr()))
}

/// `y[i] = table[x[i]]`.
pub fn apply_lut(table: &[u8; 256], x: &[u8]) -> Vec<u8> {
    x.iter().map(|&q| table[q as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::pool_out_len;
    use crate::QParams;

    /// The window loop written the obvious way, to check the clipped-window version.
    fn naive_max_pool(
        src: &[u8],
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
        p: &MaxPool2dParams,
    ) -> Vec<u8> {
        let mut y = Vec::new();
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = 0u8;
                for ky in 0..p.kernel[0] {
                    let iy =
                        (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                    for kx in 0..p.kernel[1] {
                        let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                            - p.padding[1] as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            m = m.max(src[iy as usize * w + ix as usize]);
                        }
                    }
                }
                y.push(m);
            }
        }
        y
    }

    #[test]
    fn max_pool_matches_the_naive_loop() {
        let mut seed = 12345u32;
        let mut next = |m: u32| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) % m
        };
        let mut checked = 0;
        // Miri interprets ~1000x slower: a smaller sample there.
        for _ in 0..if cfg!(miri) { 100 } else { 3000 } {
            let (h, w) = (1 + next(9) as usize, 1 + next(9) as usize);
            let kernel = [1 + next(4) as usize, 1 + next(4) as usize];
            let p = MaxPool2dParams {
                kernel,
                stride: [1 + next(3) as usize, 1 + next(3) as usize],
                padding: [
                    next(kernel[0] as u32 / 2 + 1) as usize,
                    next(kernel[1] as u32 / 2 + 1) as usize,
                ],
                dilation: [1 + next(3) as usize, 1 + next(3) as usize],
                ceil_mode: next(2) == 1,
            };
            let oh = pool_out_len(
                h,
                p.kernel[0],
                p.stride[0],
                p.padding[0],
                p.dilation[0],
                p.ceil_mode,
            );
            let ow = pool_out_len(
                w,
                p.kernel[1],
                p.stride[1],
                p.padding[1],
                p.dilation[1],
                p.ceil_mode,
            );
            let (Some(oh), Some(ow)) = (oh, ow) else {
                continue;
            };
            let data: Vec<u8> = (0..h * w).map(|_| next(256) as u8).collect();
            let x =
                QTensor::from_int_repr(vec![1, 1, h, w], data.clone(), QParams::per_tensor(1.0, 0))
                    .unwrap();
            let g = PoolGeometry {
                n: 1,
                c: 1,
                h,
                w,
                oh,
                ow,
            };
            assert_eq!(
                max_pool2d(&x, &g, &p).unwrap(),
                naive_max_pool(&data, h, w, oh, ow, &p),
                "{h}x{w} {p:?}"
            );
            checked += 1;
        }
        assert!(checked > if cfg!(miri) { 30 } else { 1000 });
    }
}
