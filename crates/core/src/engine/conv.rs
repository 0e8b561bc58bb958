//! Conv1d, Conv3d and ConvTranspose2d as exact compositions of conv2d.
//!
//! Each is a gather of the input (a view, the depth taps stacked as
//! channels, or the stride-dilated and padded input), then [`Engine::conv2d`]
//! with a rearranged weight. Positions a gather invents hold the input zero
//! point, so they contribute `(x_zp − x_zp)·w = 0`: the int32 sum is the same
//! set of products as the direct convolution, exact on every engine, and the
//! requantization (bias, multiplier, clamp) depends only on the scales and the
//! bias, so the output is the direct convolution's, bit for bit
//! (docs/numerics.md §15).

use super::checks::*;
use super::{ensure_packed_for, out_q, Engine, PackedConv2d, PathId};
use crate::error::{QuantError, Result};
use crate::ops::{conv_out_len, nonzero, Conv2dParams};
use crate::params::{Conv1dParams, Conv3dParams, ConvTranspose2dParams};
use crate::tensor::{MemoryFormat, QParams, QTensor};

/// The same weight under another shape with the same output channels (axis
/// 0 keeps its qparams).
fn reshape_weight(w: &QTensor<i8>, shape: Vec<usize>) -> Result<QTensor<i8>> {
    QTensor::with_qscheme(
        shape,
        w.int_repr().to_vec(),
        w.qparams().clone(),
        w.qscheme(),
    )
}

fn groups_ok(op: &'static str, groups: usize, out: usize) -> Result<()> {
    if groups == 0 || !out.is_multiple_of(groups) {
        return Err(QuantError::invalid(
            op,
            format!("groups {groups} must be positive and divide out_channels {out}"),
        ));
    }
    Ok(())
}

/// A prepacked quantized conv1d weight `[O, C/groups, k]`.
#[derive(Debug)]
pub struct PackedConv1d {
    inner: PackedConv2d,
    params: Conv1dParams,
}

impl PackedConv1d {
    pub fn params(&self) -> Conv1dParams {
        self.params
    }
    /// The weight `[O, C/groups, k]`.
    pub fn weight(&self) -> QTensor<i8> {
        let w = self.inner.weight();
        let s = w.shape();
        reshape_weight(&w, vec![s[0], s[1], s[3]]).expect("same data")
    }
    pub fn bias(&self) -> Option<&[f32]> {
        self.inner.bias()
    }
    pub fn packed_for(&self) -> PathId {
        self.inner.packed_for()
    }
}

/// A prepacked quantized conv3d weight `[O, C/groups, kD, kH, kW]`.
#[derive(Debug)]
pub struct PackedConv3d {
    /// The weight viewed as `[O, (C/groups)·kD, kH, kW]`.
    inner: PackedConv2d,
    kd: usize,
    params: Conv3dParams,
}

impl PackedConv3d {
    pub fn params(&self) -> Conv3dParams {
        self.params
    }
    /// The weight `[O, C/groups, kD, kH, kW]`.
    pub fn weight(&self) -> QTensor<i8> {
        let w = self.inner.weight();
        let s = w.shape();
        reshape_weight(&w, vec![s[0], s[1] / self.kd, self.kd, s[2], s[3]]).expect("same data")
    }
    pub fn bias(&self) -> Option<&[f32]> {
        self.inner.bias()
    }
    pub fn packed_for(&self) -> PathId {
        self.inner.packed_for()
    }
}

/// A prepacked quantized transposed-conv2d weight `[C, O/groups, kH, kW]`
/// (PyTorch's layout), per-tensor.
#[derive(Debug)]
pub struct PackedConvTranspose2d {
    /// The equivalent conv2d weight `[O, C/groups, kH, kW]`, flipped.
    inner: PackedConv2d,
    weight: QTensor<i8>,
    params: ConvTranspose2dParams,
}

impl PackedConvTranspose2d {
    pub fn params(&self) -> ConvTranspose2dParams {
        self.params
    }
    /// The weight as given, `[C, O/groups, kH, kW]`.
    pub fn weight(&self) -> &QTensor<i8> {
        &self.weight
    }
    pub fn bias(&self) -> Option<&[f32]> {
        self.inner.bias()
    }
    pub fn packed_for(&self) -> PathId {
        self.inner.packed_for()
    }
}

impl Engine {
    /// Prepack a conv1d weight `[O, C/groups, k]` (qint8, per-tensor or
    /// per-channel on axis 0) with an optional bias `[O]`.
    pub fn pack_conv1d(
        &self,
        w: QTensor<i8>,
        bias: Option<Vec<f32>>,
        params: Conv1dParams,
    ) -> Result<PackedConv1d> {
        const OP: &str = "pack_conv1d";
        let &[o, cg, k] = w.shape() else {
            return Err(QuantError::InvalidShape {
                op: OP,
                shape: w.shape().to_vec(),
                detail: "conv1d weight must be [out_channels, in_channels/groups, kernel]".into(),
            });
        };
        check_nonempty(OP, w.shape())?;
        check_weight_qparams(OP, &w)?;
        check_bias(OP, bias.as_deref(), o)?;
        nonzero(OP, "stride", &[params.stride])?;
        nonzero(OP, "dilation", &[params.dilation])?;
        groups_ok(OP, params.groups, o)?;
        let p2 = Conv2dParams {
            stride: [1, params.stride],
            padding: [0, params.padding],
            dilation: [1, params.dilation],
            groups: params.groups,
        };
        let inner = self.pack_conv2d(reshape_weight(&w, vec![o, cg, 1, k])?, bias, p2)?;
        Ok(PackedConv1d { inner, params })
    }

    /// Static quantized conv1d (`torch.ops.quantized.conv1d`, `relu` for
    /// `conv1d_relu`): quint8 `[N, C, L]` in, `[N, O, L']` out; conv2d on
    /// `[N, C, 1, L]`.
    pub fn conv1d(
        &self,
        x: &QTensor<u8>,
        w: &PackedConv1d,
        out_scale: f64,
        out_zero_point: i64,
        relu: bool,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "conv1d";
        ensure_packed_for(OP, w.packed_for(), self)?;
        per_tensor_q(OP, x)?;
        out_q(OP, out_scale, out_zero_point)?;
        let &[n, c, l] = x.shape() else {
            return Err(QuantError::InvalidShape {
                op: OP,
                shape: x.shape().to_vec(),
                detail: "expected [N, C, L] (3 dimensions)".into(),
            });
        };
        check_nonempty(OP, x.shape())?;
        let ws = w.inner.weight_shape();
        if ws[1] * w.params.groups != c {
            return Err(QuantError::shape(
                OP,
                format!(
                    "input has {c} channels but the weight [{}, {}, {}] with groups {} expects {}",
                    ws[0],
                    ws[1],
                    ws[3],
                    w.params.groups,
                    ws[1] * w.params.groups
                ),
            ));
        }
        let p = w.params;
        if conv_out_len(l, ws[3], p.stride, p.padding, p.dilation).is_none() {
            return Err(QuantError::shape(
                OP,
                format!(
                    "kernel {} (dilation {}) does not fit input length {l} with padding {}",
                    ws[3], p.dilation, p.padding
                ),
            ));
        }
        let x4 = x.clone().reshape(vec![n, c, 1, l])?;
        let y = self.conv2d(&x4, &w.inner, out_scale, out_zero_point, relu)?;
        let (o, lo) = (y.shape()[1], y.shape()[3]);
        y.reshape(vec![n, o, lo])
    }

    /// Prepack a conv3d weight `[O, C/groups, kD, kH, kW]` (per-tensor or
    /// per-channel on axis 0) with an optional bias `[O]`.
    pub fn pack_conv3d(
        &self,
        w: QTensor<i8>,
        bias: Option<Vec<f32>>,
        params: Conv3dParams,
    ) -> Result<PackedConv3d> {
        const OP: &str = "pack_conv3d";
        let &[o, cg, kd, kh, kw] = w.shape() else {
            return Err(QuantError::InvalidShape {
                op: OP,
                shape: w.shape().to_vec(),
                detail: "conv3d weight must be [out_channels, in_channels/groups, kD, kH, kW]"
                    .into(),
            });
        };
        check_nonempty(OP, w.shape())?;
        check_weight_qparams(OP, &w)?;
        check_bias(OP, bias.as_deref(), o)?;
        nonzero(OP, "stride", &params.stride)?;
        nonzero(OP, "dilation", &params.dilation)?;
        groups_ok(OP, params.groups, o)?;
        let p2 = Conv2dParams {
            stride: [params.stride[1], params.stride[2]],
            padding: [params.padding[1], params.padding[2]],
            dilation: [params.dilation[1], params.dilation[2]],
            groups: params.groups,
        };
        // [O][c][kd][kh][kw] is [O][c·kD + kd][kh][kw] in memory.
        let inner = self.pack_conv2d(reshape_weight(&w, vec![o, cg * kd, kh, kw])?, bias, p2)?;
        Ok(PackedConv3d { inner, kd, params })
    }

    /// Static quantized conv3d (`torch.ops.quantized.conv3d`, `relu` for
    /// `conv3d_relu`): quint8 NCDHW in and out. Output depth `od` reads the
    /// input depths `od·sD − pD + kd·dD` (the input zero point outside),
    /// stacked as channels `c·kD + kd` of one conv2d batch entry.
    pub fn conv3d(
        &self,
        x: &QTensor<u8>,
        w: &PackedConv3d,
        out_scale: f64,
        out_zero_point: i64,
        relu: bool,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "conv3d";
        ensure_packed_for(OP, w.packed_for(), self)?;
        let (_, xz) = per_tensor_q(OP, x)?;
        out_q(OP, out_scale, out_zero_point)?;
        let &[n, c, d, h, wd] = x.shape() else {
            return Err(QuantError::InvalidShape {
                op: OP,
                shape: x.shape().to_vec(),
                detail: "expected NCDHW (5 dimensions)".into(),
            });
        };
        check_nonempty(OP, x.shape())?;
        let ws = w.inner.weight_shape();
        let (cg, kd, kh, kw) = (ws[1] / w.kd, w.kd, ws[2], ws[3]);
        let p = w.params;
        if cg * p.groups != c {
            return Err(QuantError::shape(
                OP,
                format!(
                    "input has {c} channels but the weight [{}, {cg}, {kd}, {kh}, {kw}] with groups {} expects {}",
                    ws[0],
                    p.groups,
                    cg * p.groups
                ),
            ));
        }
        let od = conv_out_len(d, kd, p.stride[0], p.padding[0], p.dilation[0]);
        let oh = conv_out_len(h, kh, p.stride[1], p.padding[1], p.dilation[1]);
        let ow = conv_out_len(wd, kw, p.stride[2], p.padding[2], p.dilation[2]);
        let (Some(od), Some(_), Some(_)) = (od, oh, ow) else {
            return Err(QuantError::shape(
                OP,
                format!(
                    "kernel {kd}x{kh}x{kw} (dilation {:?}) does not fit input {d}x{h}x{wd} with padding {:?}",
                    p.dilation, p.padding
                ),
            ));
        };
        // Gather [N·OD, C·kD, H, W].
        let plane = h * wd;
        let xd = x.int_repr();
        let fill = xz as u8;
        let mut g = Vec::with_capacity(n * od * c * kd * plane);
        for b in 0..n {
            for o in 0..od {
                for ch in 0..c {
                    for t in 0..kd {
                        let z = (o * p.stride[0] + t * p.dilation[0]) as i64 - p.padding[0] as i64;
                        if (0..d as i64).contains(&z) {
                            let src = ((b * c + ch) * d + z as usize) * plane;
                            g.extend_from_slice(&xd[src..src + plane]);
                        } else {
                            g.extend(std::iter::repeat_n(fill, plane));
                        }
                    }
                }
            }
        }
        let (s, _) = per_tensor_q(OP, x)?;
        let x2 = QTensor::new_per_tensor_unchecked(vec![n * od, c * kd, h, wd], g, s, xz);
        let y2 = self
            .conv2d(&x2, &w.inner, out_scale, out_zero_point, relu)?
            .contiguous();
        // [N·OD, O, OH, OW] → [N, O, OD, OH, OW].
        let (o_ch, oh, ow) = (y2.shape()[1], y2.shape()[2], y2.shape()[3]);
        let yd = y2.int_repr();
        let mut y = vec![0u8; yd.len()];
        let op = oh * ow;
        for b in 0..n {
            for t in 0..od {
                for oc in 0..o_ch {
                    let src = ((b * od + t) * o_ch + oc) * op;
                    let dst = ((b * o_ch + oc) * od + t) * op;
                    y[dst..dst + op].copy_from_slice(&yd[src..src + op]);
                }
            }
        }
        Ok(QTensor::new_per_tensor_unchecked(
            vec![n, o_ch, od, oh, ow],
            y,
            out_scale,
            out_zero_point,
        ))
    }

    /// Prepack a transposed-conv2d weight `[C, O/groups, kH, kW]` (qint8,
    /// per-tensor: PyTorch refuses per-channel weights here) with an
    /// optional bias `[O]`.
    pub fn pack_conv_transpose2d(
        &self,
        w: QTensor<i8>,
        bias: Option<Vec<f32>>,
        params: ConvTranspose2dParams,
    ) -> Result<PackedConvTranspose2d> {
        const OP: &str = "pack_conv_transpose2d";
        let [c, og, kh, kw] = check_4d(OP, w.shape())?;
        check_nonempty(OP, w.shape())?;
        if w.qparams().is_per_channel() {
            return Err(QuantError::Unsupported {
                op: OP,
                detail: "per-channel weights for transposed convolution (PyTorch refuses them too)"
                    .into(),
            });
        }
        nonzero(OP, "stride", &params.stride)?;
        nonzero(OP, "dilation", &params.dilation)?;
        let g = params.groups;
        if g == 0 || !c.is_multiple_of(g) {
            return Err(QuantError::invalid(
                OP,
                format!("groups {g} must be positive and divide in_channels {c}"),
            ));
        }
        for a in 0..2 {
            if params.output_padding[a] >= params.stride[a].max(params.dilation[a]) {
                return Err(QuantError::invalid(
                    OP,
                    format!(
                        "output_padding {:?} must be smaller than stride {:?} or dilation {:?}",
                        params.output_padding, params.stride, params.dilation
                    ),
                ));
            }
        }
        let cg = c / g;
        let o = og * g;
        check_bias(OP, bias.as_deref(), o)?;
        // w2[gi·og + oo][cc][kh][kw] = w[gi·cg + cc][oo][kH−1−kh][kW−1−kw].
        let wd = w.int_repr();
        let mut w2 = Vec::with_capacity(wd.len());
        for gi in 0..g {
            for oo in 0..og {
                for cc in 0..cg {
                    for y in 0..kh {
                        for x in 0..kw {
                            let src = (((gi * cg + cc) * og + oo) * kh + (kh - 1 - y)) * kw
                                + (kw - 1 - x);
                            w2.push(wd[src]);
                        }
                    }
                }
            }
        }
        let (s, z) = w.q_per_tensor().expect("per-tensor");
        let w2 = QTensor::with_qscheme(
            vec![o, cg, kh, kw],
            w2,
            QParams::per_tensor(s, z),
            w.qscheme(),
        )?;
        let p2 = Conv2dParams {
            stride: [1, 1],
            padding: [0, 0],
            dilation: params.dilation,
            groups: g,
        };
        let inner = self.pack_conv2d(w2, bias, p2)?;
        Ok(PackedConvTranspose2d {
            inner,
            weight: w,
            params,
        })
    }

    /// Static quantized transposed conv2d (`torch.ops.quantized.conv_transpose2d`):
    /// quint8 NCHW in and out, output size
    /// `(H − 1)·s − 2p + d·(k − 1) + output_padding + 1`. The input is spread
    /// `stride` apart and padded by `d·(k − 1) − p` (plus `output_padding`
    /// after), the gaps holding the input zero point, then convolved with the
    /// flipped weight at stride 1. The output keeps the input's memory format.
    pub fn conv_transpose2d(
        &self,
        x: &QTensor<u8>,
        w: &PackedConvTranspose2d,
        out_scale: f64,
        out_zero_point: i64,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "conv_transpose2d";
        ensure_packed_for(OP, w.packed_for(), self)?;
        let (s, xz) = per_tensor_q(OP, x)?;
        out_q(OP, out_scale, out_zero_point)?;
        let [n, c, h, wd] = check_4d(OP, x.shape())?;
        check_nonempty(OP, x.shape())?;
        let ws = w.weight.shape();
        if ws[0] != c {
            return Err(QuantError::shape(
                OP,
                format!(
                    "input has {c} channels but the weight {ws:?} expects {}",
                    ws[0]
                ),
            ));
        }
        let p = w.params;
        let k = [ws[2], ws[3]];
        // Rows (cols) of the spread and padded input: virtual position
        // r − lo of the spread input, holding input row (r − lo)/s when divisible.
        let mut src = [Vec::new(), Vec::new()];
        for a in 0..2 {
            let len = [h, wd][a] as i64;
            let span = (p.dilation[a] * (k[a] - 1)) as i64;
            let lo = span - p.padding[a] as i64;
            let spread = (len - 1) * p.stride[a] as i64 + 1;
            let total = spread + 2 * lo + p.output_padding[a] as i64;
            if total < span + 1 {
                return Err(QuantError::shape(
                    OP,
                    format!(
                        "input {h}x{wd} with stride {:?}, padding {:?}, dilation {:?}, output_padding {:?} and kernel {k:?} gives an empty output",
                        p.stride, p.padding, p.dilation, p.output_padding
                    ),
                ));
            }
            src[a] = (0..total)
                .map(|r| {
                    let v = r - lo;
                    (v >= 0 && v % p.stride[a] as i64 == 0 && v / (p.stride[a] as i64) < len)
                        .then(|| (v / p.stride[a] as i64) as usize)
                })
                .collect::<Vec<Option<usize>>>();
        }
        let (h2, w2) = (src[0].len(), src[1].len());
        let xc = x.to_format(MemoryFormat::Contiguous);
        let xd = xc.int_repr();
        let fill = xz as u8;
        let mut g = Vec::with_capacity(n * c * h2 * w2);
        for plane in xd.chunks_exact(h * wd) {
            for r in &src[0] {
                for q in &src[1] {
                    g.push(match (r, q) {
                        (Some(iy), Some(ix)) => plane[iy * wd + ix],
                        _ => fill,
                    });
                }
            }
        }
        let x2 = QTensor::new_per_tensor_unchecked(vec![n, c, h2, w2], g, s, xz);
        let y = self.conv2d(&x2, &w.inner, out_scale, out_zero_point, false)?;
        Ok(y.into_format(x.memory_format()))
    }
}
