//! Float convolutions over 1, 2 or 3 spatial dimensions, plain and
//! transposed, with forward and backward: the arithmetic of `Conv1d`,
//! `Conv3d` and `ConvTranspose1d/2d/3d` ([`crate::convs`]). One im2col over
//! `[D, H, W]` (1-d and 2-d inputs are `[1, 1, L]` and `[1, H, W]`) and
//! single-threaded SGEMMs; a transposed convolution is the data gradient of
//! the convolution it transposes, and its gradients are that convolution's
//! forward and weight gradient.

use rquant_core::Tensor;

use crate::error::{bad, Result};
use crate::gemm::{sgemm, Mat};

/// The geometry of one regular convolution: input `[c, i]`, output
/// `[o, out]`, kernel `k`, stride, padding, dilation, groups. The output
/// size is given (a transposed convolution may ask for more or fewer
/// positions than the formula gives; positions outside the input read 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geo {
    pub c: usize,
    pub o: usize,
    pub groups: usize,
    pub i: [usize; 3],
    pub k: [usize; 3],
    pub out: [usize; 3],
    pub s: [usize; 3],
    pub p: [usize; 3],
    pub d: [usize; 3],
}

impl Geo {
    pub fn kvol(&self) -> usize {
        self.k.iter().product()
    }
    pub fn ivol(&self) -> usize {
        self.i.iter().product()
    }
    pub fn ovol(&self) -> usize {
        self.out.iter().product()
    }
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }
    pub fn og(&self) -> usize {
        self.o / self.groups
    }
}

/// The conv output length `(i + 2p − d(k − 1) − 1)/s + 1`, None when the
/// kernel does not fit.
pub fn out_len(i: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    let span = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = i.checked_add(2 * p)?;
    if s == 0 || padded < span {
        return None;
    }
    Some((padded - span) / s + 1)
}

/// The transposed-conv output length `(i − 1)s − 2p + d(k − 1) + op + 1`.
pub fn transposed_out_len(
    i: usize,
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    op: usize,
) -> Option<usize> {
    let v = (i as i64 - 1) * s as i64 - 2 * p as i64 + d as i64 * (k as i64 - 1) + op as i64 + 1;
    (v > 0).then_some(v as usize)
}

/// `col[(c·kvol + kk), pos]` = the input value under tap `kk` of output
/// position `pos` (0 outside the input).
fn im2col(g: &Geo, x: &[f32], col: &mut [f32]) {
    let (kvol, ovol) = (g.kvol(), g.ovol());
    for c in 0..g.cg() {
        let xc = &x[c * g.ivol()..(c + 1) * g.ivol()];
        for kd in 0..g.k[0] {
            for kh in 0..g.k[1] {
                for kw in 0..g.k[2] {
                    let kk = (kd * g.k[1] + kh) * g.k[2] + kw;
                    let row = &mut col[(c * kvol + kk) * ovol..(c * kvol + kk + 1) * ovol];
                    let mut pos = 0;
                    for od in 0..g.out[0] {
                        let id = (od * g.s[0] + kd * g.d[0]) as i64 - g.p[0] as i64;
                        for oh in 0..g.out[1] {
                            let ih = (oh * g.s[1] + kh * g.d[1]) as i64 - g.p[1] as i64;
                            for ow in 0..g.out[2] {
                                let iw = (ow * g.s[2] + kw * g.d[2]) as i64 - g.p[2] as i64;
                                row[pos] = if (0..g.i[0] as i64).contains(&id)
                                    && (0..g.i[1] as i64).contains(&ih)
                                    && (0..g.i[2] as i64).contains(&iw)
                                {
                                    xc[((id as usize) * g.i[1] + ih as usize) * g.i[2]
                                        + iw as usize]
                                } else {
                                    0.0
                                };
                                pos += 1;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: accumulates `col` into `dx`.
fn col2im(g: &Geo, col: &[f32], dx: &mut [f32]) {
    let (kvol, ovol) = (g.kvol(), g.ovol());
    for c in 0..g.cg() {
        let xc = &mut dx[c * g.ivol()..(c + 1) * g.ivol()];
        for kd in 0..g.k[0] {
            for kh in 0..g.k[1] {
                for kw in 0..g.k[2] {
                    let kk = (kd * g.k[1] + kh) * g.k[2] + kw;
                    let row = &col[(c * kvol + kk) * ovol..(c * kvol + kk + 1) * ovol];
                    let mut pos = 0;
                    for od in 0..g.out[0] {
                        let id = (od * g.s[0] + kd * g.d[0]) as i64 - g.p[0] as i64;
                        for oh in 0..g.out[1] {
                            let ih = (oh * g.s[1] + kh * g.d[1]) as i64 - g.p[1] as i64;
                            for ow in 0..g.out[2] {
                                let iw = (ow * g.s[2] + kw * g.d[2]) as i64 - g.p[2] as i64;
                                if (0..g.i[0] as i64).contains(&id)
                                    && (0..g.i[1] as i64).contains(&ih)
                                    && (0..g.i[2] as i64).contains(&iw)
                                {
                                    xc[((id as usize) * g.i[1] + ih as usize) * g.i[2]
                                        + iw as usize] += row[pos];
                                }
                                pos += 1;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Regular convolution: `x [n, c·ivol]`, `w [o, cg·kvol]` → `[n, o·ovol]`.
pub fn conv_forward(g: &Geo, n: usize, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (kd, ovol, og, cg) = (g.cg() * g.kvol(), g.ovol(), g.og(), g.cg());
    let mut y = vec![0.0f32; n * g.o * ovol];
    let mut col = vec![0.0f32; kd * ovol];
    for b in 0..n {
        for gi in 0..g.groups {
            let xg = &x[(b * g.c + gi * cg) * g.ivol()..(b * g.c + (gi + 1) * cg) * g.ivol()];
            im2col(g, xg, &mut col);
            let yg = &mut y[(b * g.o + gi * og) * ovol..(b * g.o + (gi + 1) * og) * ovol];
            if let Some(bv) = bias {
                for (oc, row) in yg.chunks_mut(ovol).enumerate() {
                    row.fill(bv[gi * og + oc]);
                }
            }
            let wg = &w[gi * og * kd..(gi + 1) * og * kd];
            sgemm(
                og,
                kd,
                ovol,
                Mat::rows(wg, kd),
                Mat::rows(&col, ovol),
                if bias.is_some() { 1.0 } else { 0.0 },
                yg,
                ovol,
            );
        }
    }
    y
}

/// The data gradient of [`conv_forward`]: `gy [n, o·ovol]` → `[n, c·ivol]`.
pub fn conv_backward_data(g: &Geo, n: usize, w: &[f32], gy: &[f32]) -> Vec<f32> {
    let (kd, ovol, og, cg) = (g.cg() * g.kvol(), g.ovol(), g.og(), g.cg());
    let mut dx = vec![0.0f32; n * g.c * g.ivol()];
    let mut dcol = vec![0.0f32; kd * ovol];
    for b in 0..n {
        for gi in 0..g.groups {
            let gyg = &gy[(b * g.o + gi * og) * ovol..(b * g.o + (gi + 1) * og) * ovol];
            let wg = &w[gi * og * kd..(gi + 1) * og * kd];
            sgemm(
                kd,
                og,
                ovol,
                Mat::t(wg, kd),
                Mat::rows(gyg, ovol),
                0.0,
                &mut dcol,
                ovol,
            );
            let dxg = &mut dx[(b * g.c + gi * cg) * g.ivol()..(b * g.c + (gi + 1) * cg) * g.ivol()];
            col2im(g, &dcol, dxg);
        }
    }
    dx
}

/// The weight gradient of [`conv_forward`] (`[o, cg·kvol]`).
pub fn conv_backward_weight(g: &Geo, n: usize, x: &[f32], gy: &[f32]) -> Vec<f32> {
    let (kd, ovol, og, cg) = (g.cg() * g.kvol(), g.ovol(), g.og(), g.cg());
    let mut dw = vec![0.0f32; g.o * kd];
    let mut col = vec![0.0f32; kd * ovol];
    for b in 0..n {
        for gi in 0..g.groups {
            let xg = &x[(b * g.c + gi * cg) * g.ivol()..(b * g.c + (gi + 1) * cg) * g.ivol()];
            im2col(g, xg, &mut col);
            let gyg = &gy[(b * g.o + gi * og) * ovol..(b * g.o + (gi + 1) * og) * ovol];
            let dwg = &mut dw[gi * og * kd..(gi + 1) * og * kd];
            sgemm(
                og,
                ovol,
                kd,
                Mat::rows(gyg, ovol),
                Mat::t(&col, ovol),
                1.0,
                dwg,
                kd,
            );
        }
    }
    dw
}

/// Bias gradient: the sum of `gy [n, o, vol]` over batch and positions.
pub fn bias_grad(n: usize, o: usize, vol: usize, gy: &[f32]) -> Vec<f32> {
    let mut db = vec![0.0f32; o];
    for b in 0..n {
        for (oc, d) in db.iter_mut().enumerate() {
            *d += gy[(b * o + oc) * vol..(b * o + oc + 1) * vol]
                .iter()
                .sum::<f32>();
        }
    }
    db
}

/// Hyper-parameters of an N-d (transposed) convolution, in PyTorch's terms,
/// one entry per spatial dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvNdParams {
    pub stride: Vec<usize>,
    pub padding: Vec<usize>,
    pub dilation: Vec<usize>,
    /// Transposed convolutions only (0 for the others).
    pub output_padding: Vec<usize>,
    pub groups: usize,
}

impl ConvNdParams {
    /// stride 1, padding 0, dilation 1, output_padding 0, groups 1.
    pub fn new(dims: usize) -> Self {
        ConvNdParams {
            stride: vec![1; dims],
            padding: vec![0; dims],
            dilation: vec![1; dims],
            output_padding: vec![0; dims],
            groups: 1,
        }
    }
    pub fn dims(&self) -> usize {
        self.stride.len()
    }
    /// Check lengths, positive strides / dilations, groups.
    pub fn check(&self, op: &'static str, dims: usize) -> Result<()> {
        for (name, v) in [
            ("stride", &self.stride),
            ("padding", &self.padding),
            ("dilation", &self.dilation),
            ("output_padding", &self.output_padding),
        ] {
            if v.len() != dims {
                return Err(bad(op, format!("{name} {v:?} must have {dims} entries")));
            }
        }
        if self.stride.contains(&0) || self.dilation.contains(&0) || self.groups == 0 {
            return Err(bad(
                op,
                format!(
                    "stride {:?}, dilation {:?} and groups {} must be positive",
                    self.stride, self.dilation, self.groups
                ),
            ));
        }
        Ok(())
    }
}

/// `v` (one entry per spatial dim) as `[D, H, W]`, missing leading dims `fill`.
pub fn as3(v: &[usize], fill: usize) -> [usize; 3] {
    let mut a = [fill; 3];
    let off = 3 - v.len();
    a[off..].copy_from_slice(v);
    a
}

/// The regular convolution of `x [N, C, *sp]` with `w [O, C/g, *k]`.
pub fn geometry(
    op: &'static str,
    xshape: &[usize],
    wshape: &[usize],
    p: &ConvNdParams,
) -> Result<(usize, Geo)> {
    let dims = p.dims();
    p.check(op, dims)?;
    if xshape.len() != dims + 2 || wshape.len() != dims + 2 {
        return Err(bad(
            op,
            format!(
                "input {xshape:?} and weight {wshape:?} must have {} dimensions",
                dims + 2
            ),
        ));
    }
    let (n, c, o, cg) = (xshape[0], xshape[1], wshape[0], wshape[1]);
    if cg * p.groups != c || o % p.groups != 0 {
        return Err(bad(
            op,
            format!(
                "input has {c} channels, weight {wshape:?} with groups {} expects {}",
                p.groups,
                cg * p.groups
            ),
        ));
    }
    let mut out = Vec::with_capacity(dims);
    for a in 0..dims {
        out.push(
            out_len(
                xshape[2 + a],
                wshape[2 + a],
                p.stride[a],
                p.padding[a],
                p.dilation[a],
            )
            .ok_or_else(|| {
                bad(
                    op,
                    format!(
                        "kernel {:?} (dilation {:?}) does not fit input {:?} with padding {:?}",
                        &wshape[2..],
                        p.dilation,
                        &xshape[2..],
                        p.padding
                    ),
                )
            })?,
        );
    }
    Ok((
        n,
        Geo {
            c,
            o,
            groups: p.groups,
            i: as3(&xshape[2..], 1),
            k: as3(&wshape[2..], 1),
            out: as3(&out, 1),
            s: as3(&p.stride, 1),
            p: as3(&p.padding, 0),
            d: as3(&p.dilation, 1),
        },
    ))
}

/// The regular convolution a transposed one of `x [N, C, *sp]` and
/// `w [C, O/g, *k]` is the data gradient of: its input is the transposed
/// output (`O` channels), its output the transposed input.
pub fn transposed_geometry(
    op: &'static str,
    xshape: &[usize],
    wshape: &[usize],
    p: &ConvNdParams,
) -> Result<(usize, Geo)> {
    let dims = p.dims();
    p.check(op, dims)?;
    if xshape.len() != dims + 2 || wshape.len() != dims + 2 {
        return Err(bad(
            op,
            format!(
                "input {xshape:?} and weight {wshape:?} must have {} dimensions",
                dims + 2
            ),
        ));
    }
    let (n, c, og) = (xshape[0], xshape[1], wshape[1]);
    if wshape[0] != c || c % p.groups != 0 {
        return Err(bad(
            op,
            format!(
                "input has {c} channels, the weight {wshape:?} (groups {}) expects {}",
                p.groups, wshape[0]
            ),
        ));
    }
    for a in 0..dims {
        if p.output_padding[a] >= p.stride[a].max(p.dilation[a]) {
            return Err(bad(
                op,
                format!(
                    "output_padding {:?} must be smaller than stride {:?} or dilation {:?}",
                    p.output_padding, p.stride, p.dilation
                ),
            ));
        }
    }
    let mut out = Vec::with_capacity(dims);
    for a in 0..dims {
        out.push(
            transposed_out_len(
                xshape[2 + a],
                wshape[2 + a],
                p.stride[a],
                p.padding[a],
                p.dilation[a],
                p.output_padding[a],
            )
            .ok_or_else(|| {
                bad(
                    op,
                    format!(
                        "input {:?} with stride {:?}, padding {:?}, dilation {:?} and kernel {:?} gives an empty output",
                        &xshape[2..],
                        p.stride,
                        p.padding,
                        p.dilation,
                        &wshape[2..]
                    ),
                )
            })?,
        );
    }
    Ok((
        n,
        Geo {
            c: og * p.groups,
            o: c,
            groups: p.groups,
            i: as3(&out, 1),
            k: as3(&wshape[2..], 1),
            out: as3(&xshape[2..], 1),
            s: as3(&p.stride, 1),
            p: as3(&p.padding, 0),
            d: as3(&p.dilation, 1),
        },
    ))
}

/// Output shape `[n, ch, *sp]` from a 3-entry spatial size and `dims`.
pub fn shape_of(n: usize, ch: usize, sp: [usize; 3], dims: usize) -> Vec<usize> {
    let mut s = vec![n, ch];
    s.extend_from_slice(&sp[3 - dims..]);
    s
}

/// Float conv (`F.conv1d/2d/3d`).
pub fn conv(x: &Tensor, w: &Tensor, bias: Option<&[f32]>, p: &ConvNdParams) -> Result<Tensor> {
    let (n, g) = geometry("conv", x.shape(), w.shape(), p)?;
    let y = conv_forward(&g, n, x.data(), w.data(), bias);
    Ok(Tensor::new(shape_of(n, g.o, g.out, p.dims()), y)?)
}

/// Gradients of [`conv`]: (dx, dw, db).
pub fn conv_backward(
    x: &Tensor,
    w: &Tensor,
    p: &ConvNdParams,
    gy: &Tensor,
) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
    let (n, g) = geometry("conv backward", x.shape(), w.shape(), p)?;
    let dx = conv_backward_data(&g, n, w.data(), gy.data());
    let dw = conv_backward_weight(&g, n, x.data(), gy.data());
    let db = bias_grad(n, g.o, g.ovol(), gy.data());
    Ok((Tensor::new(x.shape().to_vec(), dx)?, dw, db))
}

/// Float transposed conv (`F.conv_transpose1d/2d/3d`), weight `[C, O/g, *k]`.
pub fn conv_transpose(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&[f32]>,
    p: &ConvNdParams,
) -> Result<Tensor> {
    let (n, g) = transposed_geometry("conv_transpose", x.shape(), w.shape(), p)?;
    let mut y = conv_backward_data(&g, n, w.data(), x.data());
    if let Some(b) = bias {
        let vol = g.ivol();
        for (i, plane) in y.chunks_mut(vol).enumerate() {
            let bv = b[i % g.c];
            for v in plane {
                *v += bv;
            }
        }
    }
    Ok(Tensor::new(shape_of(n, g.c, g.i, p.dims()), y)?)
}

/// Gradients of [`conv_transpose`]: (dx, dw, db).
pub fn conv_transpose_backward(
    x: &Tensor,
    w: &Tensor,
    p: &ConvNdParams,
    gy: &Tensor,
) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
    let (n, g) = transposed_geometry("conv_transpose backward", x.shape(), w.shape(), p)?;
    let dx = conv_forward(&g, n, gy.data(), w.data(), None);
    let dw = conv_backward_weight(&g, n, gy.data(), x.data());
    let db = bias_grad(n, g.c, g.ivol(), gy.data());
    Ok((Tensor::new(x.shape().to_vec(), dx)?, dw, db))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_conv1d(
        x: &[f32],
        w: &[f32],
        l: usize,
        k: usize,
        s: usize,
        p: usize,
        d: usize,
    ) -> Vec<f32> {
        let lo = out_len(l, k, s, p, d).unwrap();
        (0..lo)
            .map(|o| {
                (0..k)
                    .map(|t| {
                        let i = (o * s + t * d) as i64 - p as i64;
                        if (0..l as i64).contains(&i) {
                            x[i as usize] * w[t]
                        } else {
                            0.0
                        }
                    })
                    .sum()
            })
            .collect()
    }

    #[test]
    fn conv1d_matches_loops_and_transpose_is_its_adjoint() {
        let l = 11;
        let x: Vec<f32> = (0..l).map(|i| (i as f32 * 0.37).sin()).collect();
        let w = vec![0.5, -1.0, 0.25];
        let mut p = ConvNdParams::new(1);
        p.stride = vec![2];
        p.padding = vec![1];
        p.dilation = vec![2];
        let xt = Tensor::new([1, 1, l], x.clone()).unwrap();
        let wt = Tensor::new([1, 1, 3], w.clone()).unwrap();
        let y = conv(&xt, &wt, None, &p).unwrap();
        assert_eq!(y.data(), naive_conv1d(&x, &w, l, 3, 2, 1, 2).as_slice());
        // <conv(x), g> == <x, conv_transpose(g)> for the matching output padding.
        let g: Vec<f32> = (0..y.numel()).map(|i| (i as f32 * 0.71).cos()).collect();
        let gt = Tensor::new(y.shape().to_vec(), g.clone()).unwrap();
        let lhs: f32 = y.data().iter().zip(&g).map(|(a, b)| a * b).sum();
        let op = l - transposed_out_len(y.shape()[2], 3, 2, 1, 2, 0).unwrap();
        p.output_padding = vec![op];
        let xt2 = conv_transpose(&gt, &wt, None, &p).unwrap();
        assert_eq!(xt2.shape(), &[1, 1, l]);
        let rhs: f32 = xt2.data().iter().zip(&x).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-5, "{lhs} vs {rhs}");
    }
}
