//! Float kernels with their backward passes: linear, conv2d (im2col + SGEMM),
//! pooling, batch norm. Batch- or plane-parallel on rquant's threads
//! (`rquant_core::threads`); NCHW layout.

use rquant_core::ops::{adaptive_window, conv_out_len, pool_out_len};
use rquant_core::threads;
use rquant_core::{Conv2dParams, Tensor};

use crate::error::{bad, Result};
use crate::gemm::{par_sgemm, sgemm, Mat};

/// Elements per task of the plane-parallel loops (pooling, batch norm):
/// with less work a task costs more to hand out than it saves.
const PLANE_TASK_ELEMS: usize = 8192;

/// `f(pl, plane)` for every `len`-element plane of `y`, consecutive planes
/// grouped into tasks of about [`PLANE_TASK_ELEMS`] elements.
fn par_planes<T: Send>(y: &mut [T], len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let len = len.max(1);
    let per = (PLANE_TASK_ELEMS / len).max(1);
    threads::par_chunks_mut(
        y,
        per * len,
        || (),
        |_, t, chunk| {
            for (j, p) in chunk.chunks_mut(len).enumerate() {
                f(t * per + j, p);
            }
        },
    );
}

/// [`par_planes`] over two buffers with planes of the same length.
fn par_planes2<A: Send, B: Send>(
    a: &mut [A],
    b: &mut [B],
    len: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    let len = len.max(1);
    let per = (PLANE_TASK_ELEMS / len).max(1);
    threads::par_chunks2_mut(
        a,
        per * len,
        b,
        per * len,
        || (),
        |_, t, ca, cb| {
            for (j, (pa, pb)) in ca.chunks_mut(len).zip(cb.chunks_mut(len)).enumerate() {
                f(t * per + j, pa, pb);
            }
        },
    );
}

fn dims4(op: &'static str, s: &[usize]) -> Result<[usize; 4]> {
    match s {
        [n, c, h, w] => Ok([*n, *c, *h, *w]),
        _ => Err(bad(op, format!("expected an NCHW input, got shape {s:?}"))),
    }
}

// ---------------------------------------------------------------- linear

/// `y = x · wᵀ + b`; x `[..., K]`, w `[N, K]`.
pub fn linear(x: &Tensor, w: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Result<Tensor> {
    if x.shape().last() != Some(&k) || w.len() != n * k {
        return Err(bad(
            "linear",
            format!("input {:?} does not end in in_features {k}", x.shape()),
        ));
    }
    let m = x.numel() / k.max(1);
    let mut y = vec![0.0f32; m * n];
    if let Some(b) = bias {
        for row in y.chunks_mut(n) {
            row.copy_from_slice(b);
        }
    }
    par_sgemm(
        m,
        k,
        n,
        Mat::rows(x.data(), k),
        Mat::t(w, k),
        if bias.is_some() { 1.0 } else { 0.0 },
        &mut y,
    );
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap() = n;
    Ok(Tensor::new(shape, y)?)
}

/// Gradients of [`linear`]: (dx, dw, db).
pub fn linear_backward(
    x: &Tensor,
    w: &[f32],
    n: usize,
    k: usize,
    gy: &Tensor,
    need_dx: bool,
) -> Result<(Option<Tensor>, Vec<f32>, Vec<f32>)> {
    let m = x.numel() / k.max(1);
    if gy.numel() != m * n {
        return Err(bad(
            "linear backward",
            "gradient shape does not match the output",
        ));
    }
    let g = gy.data();
    // dw[N, K] = gyᵀ[N, M] · x[M, K]
    let mut dw = vec![0.0f32; n * k];
    par_sgemm(n, m, k, Mat::t(g, n), Mat::rows(x.data(), k), 0.0, &mut dw);
    let mut db = vec![0.0f32; n];
    for row in g.chunks(n) {
        for (d, v) in db.iter_mut().zip(row) {
            *d += v;
        }
    }
    let dx = if need_dx {
        let mut dx = vec![0.0f32; m * k];
        par_sgemm(m, n, k, Mat::rows(g, n), Mat::rows(w, k), 0.0, &mut dx);
        Some(Tensor::new(x.shape().to_vec(), dx)?)
    } else {
        None
    };
    Ok((dx, dw, db))
}

// ---------------------------------------------------------------- conv2d

/// Geometry of a float conv.
#[derive(Clone, Copy, Debug)]
pub struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub p: Conv2dParams,
}

impl ConvShape {
    pub fn new(x: &[usize], wshape: &[usize], p: Conv2dParams) -> Result<Self> {
        const OP: &str = "conv2d";
        let [n, c, h, w] = dims4(OP, x)?;
        let [o, cg, kh, kw] = dims4(OP, wshape)?;
        if p.groups == 0 || cg * p.groups != c || o % p.groups != 0 {
            return Err(bad(
                OP,
                format!(
                    "input has {c} channels but weight {wshape:?} with groups {} expects {}",
                    p.groups,
                    cg * p.groups
                ),
            ));
        }
        let oh = conv_out_len(h, kh, p.stride[0], p.padding[0], p.dilation[0]);
        let ow = conv_out_len(w, kw, p.stride[1], p.padding[1], p.dilation[1]);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(bad(
                OP,
                format!(
                    "kernel {kh}x{kw} does not fit input {h}x{w} with padding {:?}",
                    p.padding
                ),
            ));
        };
        Ok(ConvShape {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            oh,
            ow,
            p,
        })
    }
    fn cg(&self) -> usize {
        self.c / self.p.groups
    }
    fn og(&self) -> usize {
        self.o / self.p.groups
    }
    fn kdim(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    fn pix(&self) -> usize {
        self.oh * self.ow
    }
    /// 1x1, stride 1, no padding: the input is its own im2col matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.p.stride == [1, 1] && self.p.padding == [0, 0]
    }
}

/// im2col of one group of one image: `col[K, P]`.
fn im2col(s: &ConvShape, x: &[f32], col: &mut [f32]) {
    let (p, pix) = (s.p, s.pix());
    for c in 0..s.cg() {
        let xc = &x[c * s.h * s.w..(c + 1) * s.h * s.w];
        for ki in 0..s.kh {
            for kj in 0..s.kw {
                let row = (c * s.kh + ki) * s.kw + kj;
                let dst = &mut col[row * pix..(row + 1) * pix];
                for oy in 0..s.oh {
                    let iy =
                        (oy * p.stride[0] + ki * p.dilation[0]) as isize - p.padding[0] as isize;
                    let d = &mut dst[oy * s.ow..(oy + 1) * s.ow];
                    if iy < 0 || iy >= s.h as isize {
                        d.fill(0.0);
                        continue;
                    }
                    let xr = &xc[iy as usize * s.w..(iy as usize + 1) * s.w];
                    let off = (kj * p.dilation[1]) as isize - p.padding[1] as isize;
                    if p.stride[1] == 1 {
                        // Valid ox: 0 <= ox + off < w; copy that run, zero the rest.
                        let lo = (-off).clamp(0, s.ow as isize) as usize;
                        let hi = (s.w as isize - off).clamp(lo as isize, s.ow as isize) as usize;
                        d[..lo].fill(0.0);
                        d[hi..].fill(0.0);
                        let src = (lo as isize + off) as usize;
                        d[lo..hi].copy_from_slice(&xr[src..src + (hi - lo)]);
                    } else {
                        for (ox, v) in d.iter_mut().enumerate() {
                            let ix = (ox * p.stride[1]) as isize + off;
                            *v = if ix >= 0 && ix < s.w as isize {
                                xr[ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
    }
}

/// col2im (accumulating) of one group of one image.
fn col2im(s: &ConvShape, col: &[f32], x: &mut [f32]) {
    let (p, pix) = (s.p, s.pix());
    for c in 0..s.cg() {
        let xc = &mut x[c * s.h * s.w..(c + 1) * s.h * s.w];
        for ki in 0..s.kh {
            for kj in 0..s.kw {
                let row = (c * s.kh + ki) * s.kw + kj;
                let src = &col[row * pix..(row + 1) * pix];
                for oy in 0..s.oh {
                    let iy =
                        (oy * p.stride[0] + ki * p.dilation[0]) as isize - p.padding[0] as isize;
                    if iy < 0 || iy >= s.h as isize {
                        continue;
                    }
                    let xr = &mut xc[iy as usize * s.w..(iy as usize + 1) * s.w];
                    let off = (kj * p.dilation[1]) as isize - p.padding[1] as isize;
                    for (ox, &v) in src[oy * s.ow..(oy + 1) * s.ow].iter().enumerate() {
                        let ix = (ox * p.stride[1]) as isize + off;
                        if ix >= 0 && ix < s.w as isize {
                            xr[ix as usize] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Float conv2d: x `[N, C, H, W]`, w `[O, C/groups, kH, kW]`.
pub fn conv2d(
    x: &Tensor,
    w: &[f32],
    wshape: &[usize],
    bias: Option<&[f32]>,
    p: Conv2dParams,
) -> Result<Tensor> {
    let s = ConvShape::new(x.shape(), wshape, p)?;
    let (img_in, img_out) = (s.c * s.h * s.w, s.o * s.pix());
    let mut y = vec![0.0f32; s.n * img_out];
    if s.n == 0 || img_out == 0 {
        return Ok(Tensor::new(vec![s.n, s.o, s.oh, s.ow], y)?);
    }
    let (kd, pix, og, cg) = (s.kdim(), s.pix(), s.og(), s.cg());
    let per_image = |xi: &[f32], yi: &mut [f32], col: &mut Vec<f32>| {
        for g in 0..p.groups {
            let xg = &xi[g * cg * s.h * s.w..(g + 1) * cg * s.h * s.w];
            let yg = &mut yi[g * og * pix..(g + 1) * og * pix];
            let wg = &w[g * og * kd..(g + 1) * og * kd];
            let beta = if let Some(b) = bias {
                for (oc, row) in yg.chunks_mut(pix).enumerate() {
                    row.fill(b[g * og + oc]);
                }
                1.0
            } else {
                0.0
            };
            let colm: &[f32] = if s.pointwise() {
                xg
            } else {
                col.resize(kd * pix, 0.0);
                im2col(&s, xg, col);
                col
            };
            sgemm(
                og,
                kd,
                pix,
                Mat::rows(wg, kd),
                Mat::rows(colm, pix),
                beta,
                yg,
                pix,
            );
        }
    };
    if s.n == 1 && threads::threads_for(usize::MAX) > 1 && s.o * pix * kd > 1 << 18 {
        // One image: split the output channels (within groups) across threads.
        single_image_conv(&s, x.data(), w, bias, &mut y);
    } else {
        threads::par_chunks_mut(&mut y, img_out, Vec::new, |col, i, yi| {
            per_image(&x.data()[i * img_in..(i + 1) * img_in], yi, col)
        });
    }
    Ok(Tensor::new(vec![s.n, s.o, s.oh, s.ow], y)?)
}

fn single_image_conv(s: &ConvShape, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let (kd, pix, og, cg) = (s.kdim(), s.pix(), s.og(), s.cg());
    for g in 0..s.p.groups {
        let xg = &x[g * cg * s.h * s.w..(g + 1) * cg * s.h * s.w];
        let mut col = Vec::new();
        let colm: &[f32] = if s.pointwise() {
            xg
        } else {
            col.resize(kd * pix, 0.0);
            im2col(s, xg, &mut col);
            &col
        };
        let yg = &mut y[g * og * pix..(g + 1) * og * pix];
        if let Some(b) = bias {
            for (oc, row) in yg.chunks_mut(pix).enumerate() {
                row.fill(b[g * og + oc]);
            }
        }
        let wg = &w[g * og * kd..(g + 1) * og * kd];
        par_sgemm(
            og,
            kd,
            pix,
            Mat::rows(wg, kd),
            Mat::rows(colm, pix),
            if bias.is_some() { 1.0 } else { 0.0 },
            yg,
        );
    }
}

/// Gradients of [`conv2d`]: (dx, dw, db).
pub fn conv2d_backward(
    x: &Tensor,
    w: &[f32],
    wshape: &[usize],
    p: Conv2dParams,
    gy: &Tensor,
    need_dx: bool,
) -> Result<(Option<Tensor>, Vec<f32>, Vec<f32>)> {
    let s = ConvShape::new(x.shape(), wshape, p)?;
    let (img_in, img_out) = (s.c * s.h * s.w, s.o * s.pix());
    if gy.numel() != s.n * img_out {
        return Err(bad(
            "conv2d backward",
            "gradient shape does not match the output",
        ));
    }
    let (kd, pix, og, cg) = (s.kdim(), s.pix(), s.og(), s.cg());
    let mut dx = if need_dx {
        vec![0.0f32; s.n * img_in]
    } else {
        Vec::new()
    };
    let wlen = s.o * kd;
    let step = |(mut dw, mut db, mut col, mut dcol): (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>),
                xi: &[f32],
                gi: &[f32],
                dxi: Option<&mut [f32]>| {
        let mut dxi = dxi;
        for g in 0..p.groups {
            let xg = &xi[g * cg * s.h * s.w..(g + 1) * cg * s.h * s.w];
            let gg = &gi[g * og * pix..(g + 1) * og * pix];
            for (oc, row) in gg.chunks(pix).enumerate() {
                db[g * og + oc] += row.iter().sum::<f32>();
            }
            let colm: &[f32] = if s.pointwise() {
                xg
            } else {
                col.resize(kd * pix, 0.0);
                im2col(&s, xg, &mut col);
                &col
            };
            // dw_g[og, K] += gy_g[og, P] · colᵀ[P, K]
            sgemm(
                og,
                pix,
                kd,
                Mat::rows(gg, pix),
                Mat::t(colm, pix),
                1.0,
                &mut dw[g * og * kd..(g + 1) * og * kd],
                kd,
            );
            if let Some(dxi) = dxi.as_deref_mut() {
                let wg = &w[g * og * kd..(g + 1) * og * kd];
                let dxg = &mut dxi[g * cg * s.h * s.w..(g + 1) * cg * s.h * s.w];
                if s.pointwise() {
                    sgemm(
                        kd,
                        og,
                        pix,
                        Mat::t(wg, kd),
                        Mat::rows(gg, pix),
                        1.0,
                        dxg,
                        pix,
                    );
                } else {
                    dcol.resize(kd * pix, 0.0);
                    sgemm(
                        kd,
                        og,
                        pix,
                        Mat::t(wg, kd),
                        Mat::rows(gg, pix),
                        0.0,
                        &mut dcol,
                        pix,
                    );
                    col2im(&s, &dcol, dxg);
                }
            }
        }
        (dw, db, col, dcol)
    };
    let init = || {
        (
            vec![0.0f32; wlen],
            vec![0.0f32; s.o],
            Vec::new(),
            Vec::new(),
        )
    };
    let reduce = |a: (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>),
                  b: (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>)| {
        let (mut dw, mut db, c, d) = a;
        for (x, y) in dw.iter_mut().zip(&b.0) {
            *x += y;
        }
        for (x, y) in db.iter_mut().zip(&b.1) {
            *x += y;
        }
        (dw, db, c, d)
    };
    // Fixed groups of images, each summed in order, then the partial sums
    // added in group order: the same bits whatever the thread count or
    // scheduling (training with fixed seeds is reproducible).
    const GROUP: usize = 8;
    type Acc = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);
    let group = |g: usize, dxg: Option<&mut [f32]>| {
        let xg = &x.data()[g * GROUP * img_in..((g + 1) * GROUP).min(s.n) * img_in];
        let gg = &gy.data()[g * GROUP * img_out..((g + 1) * GROUP).min(s.n) * img_out];
        let mut acc = init();
        match dxg {
            Some(dxg) => {
                for ((dxi, xi), gi) in dxg
                    .chunks_mut(img_in)
                    .zip(xg.chunks(img_in))
                    .zip(gg.chunks(img_out))
                {
                    acc = step(acc, xi, gi, Some(dxi));
                }
            }
            None => {
                for (xi, gi) in xg.chunks(img_in).zip(gg.chunks(img_out)) {
                    acc = step(acc, xi, gi, None);
                }
            }
        }
        acc
    };
    let partials: Vec<Acc> = if need_dx {
        let groups: Vec<&mut [f32]> = dx.chunks_mut(GROUP * img_in).collect();
        let groups: Vec<(usize, &mut [f32])> = groups.into_iter().enumerate().collect();
        threads::par_map_vec(groups, |(g, dxg)| group(g, Some(dxg)))
    } else {
        threads::par_map(s.n.div_ceil(GROUP), |g| group(g, None))
    };
    let (dw, db, _, _) = partials.into_iter().fold(init(), reduce);
    let dx = if need_dx {
        Some(Tensor::new(x.shape().to_vec(), dx)?)
    } else {
        None
    };
    Ok((dx, dw, db))
}

// ---------------------------------------------------------------- pooling

/// Max pooling; returns the output and, when asked, the flat input index of
/// each output's maximum (for the backward pass).
#[allow(clippy::too_many_arguments)]
pub fn max_pool2d(
    x: &Tensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
    want_idx: bool,
) -> Result<(Tensor, Vec<u32>)> {
    const OP: &str = "max_pool2d";
    let [n, c, h, w] = dims4(OP, x.shape())?;
    let oh = pool_out_len(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode);
    let ow = pool_out_len(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        return Err(bad(
            OP,
            format!("kernel {kernel:?} does not fit input {h}x{w}"),
        ));
    };
    if padding[0] * 2 > kernel[0] || padding[1] * 2 > kernel[1] {
        return Err(bad(OP, "padding must be at most half the kernel"));
    }
    let planes = n * c;
    let mut y = vec![0.0f32; planes * oh * ow];
    let mut idx = if want_idx {
        vec![0u32; planes * oh * ow]
    } else {
        Vec::new()
    };
    let simple = padding == [0, 0] && dilation == [1, 1];
    let body = |pl: usize, yp: &mut [f32], ip: Option<&mut [u32]>| {
        let xp = &x.data()[pl * h * w..(pl + 1) * h * w];
        let mut ip = ip;
        if simple && kernel == [2, 2] && stride == [2, 2] && oh * 2 <= h && ow * 2 <= w {
            // The common 2x2 / stride 2 pool, unrolled; scan order (and so
            // the index of a tie or a NaN) as the general path.
            for oy in 0..oh {
                let r0 = &xp[2 * oy * w..2 * oy * w + 2 * ow];
                let r1 = &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow];
                for ox in 0..ow {
                    let c = [r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]];
                    let mut k = 0;
                    for j in 1..4 {
                        if c[k].is_nan() {
                            break;
                        }
                        if c[j] > c[k] || c[j].is_nan() {
                            k = j;
                        }
                    }
                    yp[oy * ow + ox] = c[k];
                    if let Some(ip) = ip.as_deref_mut() {
                        let (dy, dx) = (k / 2, k % 2);
                        ip[oy * ow + ox] = (pl * h * w + (2 * oy + dy) * w + 2 * ox + dx) as u32;
                    }
                }
            }
            return;
        }
        if simple {
            // No padding, no dilation: windows are plain sub-rectangles
            // (clipped at the far edges in ceil mode).
            for oy in 0..oh {
                let y0 = oy * stride[0];
                let y1 = (y0 + kernel[0]).min(h);
                for ox in 0..ow {
                    let x0 = ox * stride[1];
                    let x1 = (x0 + kernel[1]).min(w);
                    let mut bi = y0 * w + x0;
                    let mut best = xp[bi];
                    'win: for iy in y0..y1 {
                        let row = &xp[iy * w + x0..iy * w + x1];
                        for (k, &v) in row.iter().enumerate() {
                            if v > best || v.is_nan() {
                                best = v;
                                bi = iy * w + x0 + k;
                                if v.is_nan() {
                                    break 'win;
                                }
                            }
                        }
                    }
                    yp[oy * ow + ox] = best;
                    if let Some(ip) = ip.as_deref_mut() {
                        ip[oy * ow + ox] = (pl * h * w + bi) as u32;
                    }
                }
            }
            return;
        }
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = f32::NEG_INFINITY;
                let mut bi = usize::MAX;
                for ki in 0..kernel[0] {
                    let iy = (oy * stride[0] + ki * dilation[0]) as isize - padding[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kj in 0..kernel[1] {
                        let ix = (ox * stride[1] + kj * dilation[1]) as isize - padding[1] as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let j = iy as usize * w + ix as usize;
                        let v = xp[j];
                        if v > best || v.is_nan() || bi == usize::MAX {
                            best = v;
                            bi = j;
                            if v.is_nan() {
                                break;
                            }
                        }
                    }
                }
                yp[oy * ow + ox] = best;
                if let Some(ip) = ip.as_deref_mut() {
                    ip[oy * ow + ox] = (pl * h * w + bi) as u32;
                }
            }
        }
    };
    if want_idx {
        par_planes2(&mut y, &mut idx, oh * ow, |pl, yp, ip| {
            body(pl, yp, Some(ip))
        });
    } else {
        par_planes(&mut y, oh * ow, |pl, yp| body(pl, yp, None));
    }
    Ok((Tensor::new(vec![n, c, oh, ow], y)?, idx))
}

/// Scatter the output gradient to the argmax positions.
pub fn max_pool2d_backward(in_shape: &[usize], idx: &[u32], gy: &Tensor) -> Result<Tensor> {
    let mut dx = vec![0.0f32; in_shape.iter().product()];
    for (&i, &g) in idx.iter().zip(gy.data()) {
        dx[i as usize] += g;
    }
    Ok(Tensor::new(in_shape.to_vec(), dx)?)
}

/// Average-pooling windows: for each output, (hs, he, ws, we, divisor).
#[allow(clippy::too_many_arguments)]
fn avg_windows(
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    count_include_pad: bool,
    divisor_override: Option<usize>,
) -> Vec<(usize, usize, usize, usize, f32)> {
    let mut v = Vec::with_capacity(oh * ow);
    for oy in 0..oh {
        for ox in 0..ow {
            let hs = (oy * stride[0]) as isize - padding[0] as isize;
            let ws = (ox * stride[1]) as isize - padding[1] as isize;
            let he = (hs + kernel[0] as isize).min((h + padding[0]) as isize);
            let we = (ws + kernel[1] as isize).min((w + padding[1]) as isize);
            let pool = ((he - hs) * (we - ws)) as usize;
            let (hs, ws) = (hs.max(0) as usize, ws.max(0) as usize);
            let (he, we) = (he.min(h as isize) as usize, we.min(w as isize) as usize);
            let size = (he - hs) * (we - ws);
            let div = divisor_override.unwrap_or(if count_include_pad { pool } else { size });
            v.push((hs, he, ws, we, div as f32));
        }
    }
    v
}

/// Average pooling (PyTorch semantics for padding, ceil mode, divisor).
#[allow(clippy::too_many_arguments)]
pub fn avg_pool2d(
    x: &Tensor,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: Option<usize>,
) -> Result<Tensor> {
    const OP: &str = "avg_pool2d";
    let [n, c, h, w] = dims4(OP, x.shape())?;
    let oh = pool_out_len(h, kernel[0], stride[0], padding[0], 1, ceil_mode);
    let ow = pool_out_len(w, kernel[1], stride[1], padding[1], 1, ceil_mode);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        return Err(bad(
            OP,
            format!("kernel {kernel:?} does not fit input {h}x{w}"),
        ));
    };
    let wins = avg_windows(
        h,
        w,
        oh,
        ow,
        kernel,
        stride,
        padding,
        count_include_pad,
        divisor_override,
    );
    let mut y = vec![0.0f32; n * c * oh * ow];
    par_planes(&mut y, oh * ow, |pl, yp| {
        let xp = &x.data()[pl * h * w..(pl + 1) * h * w];
        for (o, &(hs, he, ws, we, div)) in wins.iter().enumerate() {
            let mut s = 0.0f32;
            for iy in hs..he {
                for v in &xp[iy * w + ws..iy * w + we] {
                    s += v;
                }
            }
            yp[o] = s / div;
        }
    });
    Ok(Tensor::new(vec![n, c, oh, ow], y)?)
}

#[allow(clippy::too_many_arguments)]
pub fn avg_pool2d_backward(
    in_shape: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    count_include_pad: bool,
    divisor_override: Option<usize>,
    gy: &Tensor,
) -> Result<Tensor> {
    let [n, c, h, w] = dims4("avg_pool2d backward", in_shape)?;
    let (oh, ow) = (gy.shape()[2], gy.shape()[3]);
    let wins = avg_windows(
        h,
        w,
        oh,
        ow,
        kernel,
        stride,
        padding,
        count_include_pad,
        divisor_override,
    );
    let mut dx = vec![0.0f32; n * c * h * w];
    par_planes(&mut dx, h * w, |pl, dp| {
        let gp = &gy.data()[pl * oh * ow..(pl + 1) * oh * ow];
        for (o, &(hs, he, ws, we, div)) in wins.iter().enumerate() {
            let g = gp[o] / div;
            for iy in hs..he {
                for v in &mut dp[iy * w + ws..iy * w + we] {
                    *v += g;
                }
            }
        }
    });
    Ok(Tensor::new(in_shape.to_vec(), dx)?)
}

/// Adaptive average pooling to `[oh, ow]`.
pub fn adaptive_avg_pool2d(x: &Tensor, out: [usize; 2]) -> Result<Tensor> {
    const OP: &str = "adaptive_avg_pool2d";
    let [n, c, h, w] = dims4(OP, x.shape())?;
    let [oh, ow] = out;
    if oh == 0 || ow == 0 {
        return Err(bad(OP, "output size must be positive"));
    }
    let mut y = vec![0.0f32; n * c * oh * ow];
    par_planes(&mut y, oh * ow, |pl, yp| {
        let xp = &x.data()[pl * h * w..(pl + 1) * h * w];
        for oy in 0..oh {
            let (hs, he) = adaptive_window(oy, h, oh);
            for ox in 0..ow {
                let (ws, we) = adaptive_window(ox, w, ow);
                let mut s = 0.0f32;
                for iy in hs..he {
                    for v in &xp[iy * w + ws..iy * w + we] {
                        s += v;
                    }
                }
                yp[oy * ow + ox] = s / ((he - hs) * (we - ws)) as f32;
            }
        }
    });
    Ok(Tensor::new(vec![n, c, oh, ow], y)?)
}

pub fn adaptive_avg_pool2d_backward(in_shape: &[usize], gy: &Tensor) -> Result<Tensor> {
    let [n, c, h, w] = dims4("adaptive_avg_pool2d backward", in_shape)?;
    let (oh, ow) = (gy.shape()[2], gy.shape()[3]);
    let mut dx = vec![0.0f32; n * c * h * w];
    par_planes(&mut dx, h * w, |pl, dp| {
        let gp = &gy.data()[pl * oh * ow..(pl + 1) * oh * ow];
        for oy in 0..oh {
            let (hs, he) = adaptive_window(oy, h, oh);
            for ox in 0..ow {
                let (ws, we) = adaptive_window(ox, w, ow);
                let g = gp[oy * ow + ox] / ((he - hs) * (we - ws)) as f32;
                for iy in hs..he {
                    for v in &mut dp[iy * w + ws..iy * w + we] {
                        *v += g;
                    }
                }
            }
        }
    });
    Ok(Tensor::new(in_shape.to_vec(), dx)?)
}

// ---------------------------------------------------------------- batch norm

/// Per-channel mean and biased variance over N, H, W (f64 accumulation).
pub fn channel_stats(x: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
    let [n, c, h, w] = dims4("batch_norm", x.shape())?;
    let hw = h * w;
    let cnt = (n * hw) as f64;
    let stats: Vec<(f32, f32)> = threads::par_map(c, |ch| {
        let (mut s, mut s2) = (0.0f64, 0.0f64);
        for b in 0..n {
            for &v in &x.data()[(b * c + ch) * hw..(b * c + ch + 1) * hw] {
                s += v as f64;
            }
        }
        let mean = s / cnt;
        for b in 0..n {
            for &v in &x.data()[(b * c + ch) * hw..(b * c + ch + 1) * hw] {
                let d = v as f64 - mean;
                s2 += d * d;
            }
        }
        (mean as f32, (s2 / cnt) as f32)
    });
    Ok(stats.into_iter().unzip())
}

/// `y = (x - mean[c]) * scale[c] + shift[c]` with precomputed scale/shift.
pub fn channel_affine(x: &Tensor, scale: &[f32], shift: &[f32]) -> Result<Tensor> {
    let [_, c, h, w] = dims4("batch_norm", x.shape())?;
    let hw = h * w;
    let mut y = x.data().to_vec();
    par_planes(&mut y, hw, |i, p| {
        let ch = i % c;
        for v in p {
            *v = *v * scale[ch] + shift[ch];
        }
    });
    Ok(Tensor::new(x.shape().to_vec(), y)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pool_fast_path_matches_naive_including_ceil_mode() {
        let (h, w) = (7usize, 9usize);
        let data: Vec<f32> = (0..2 * h * w)
            .map(|i| ((i * 37 % 23) as f32) - 11.0)
            .collect();
        let x = Tensor::new([1, 2, h, w], data.clone()).unwrap();
        for (k, st, ceil) in [
            (2, 2, false),
            (2, 2, true),
            (3, 2, true),
            (2, 1, false),
            (3, 3, true),
        ] {
            let (y, idx) = max_pool2d(&x, [k, k], [st, st], [0, 0], [1, 1], ceil, true).unwrap();
            let (oh, ow) = (y.shape()[2], y.shape()[3]);
            for c in 0..2 {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut best = f32::NEG_INFINITY;
                        for iy in oy * st..(oy * st + k).min(h) {
                            for ix in ox * st..(ox * st + k).min(w) {
                                best = best.max(data[c * h * w + iy * w + ix]);
                            }
                        }
                        let o = (c * oh + oy) * ow + ox;
                        assert_eq!(y.data()[o], best);
                        assert_eq!(data[idx[o] as usize], best);
                    }
                }
            }
        }
    }

    #[test]
    fn conv2d_matches_direct_convolution() {
        let (n, c, h, w, o, k) = (2usize, 4usize, 6usize, 7usize, 8usize, 3usize);
        let x: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 13 % 17) as f32) - 8.0)
            .collect();
        let xt = Tensor::new([n, c, h, w], x.clone()).unwrap();
        for (stride, pad, dil, groups) in [
            (1, 1, 1, 1),
            (1, 2, 2, 2),
            (2, 1, 1, 1),
            (1, 0, 1, 4),
            (2, 3, 2, 2),
        ] {
            let cg = c / groups;
            let wv: Vec<f32> = (0..o * cg * k * k)
                .map(|i| ((i * 7 % 11) as f32) - 5.0)
                .collect();
            let p = Conv2dParams {
                stride: [stride; 2],
                padding: [pad; 2],
                dilation: [dil; 2],
                groups,
            };
            let y = conv2d(&xt, &wv, &[o, cg, k, k], None, p).unwrap();
            let (oh, ow) = (y.shape()[2], y.shape()[3]);
            for b in 0..n {
                for oc in 0..o {
                    let g = oc / (o / groups);
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut acc = 0.0f32;
                            for ci in 0..cg {
                                for ki in 0..k {
                                    for kj in 0..k {
                                        let iy = (oy * stride + ki * dil) as isize - pad as isize;
                                        let ix = (ox * stride + kj * dil) as isize - pad as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize
                                        {
                                            continue;
                                        }
                                        let xi = ((b * c + g * cg + ci) * h + iy as usize) * w
                                            + ix as usize;
                                        acc += x[xi] * wv[((oc * cg + ci) * k + ki) * k + kj];
                                    }
                                }
                            }
                            assert_eq!(y.data()[((b * o + oc) * oh + oy) * ow + ox], acc);
                        }
                    }
                }
            }
        }
    }
}
