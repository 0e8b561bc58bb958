//! Front end of the data-movement ops: channel shuffle, constant padding
//! (negative pads crop), nearest and bilinear upsampling. The output keeps
//! the input's qparams and memory format.

use super::activation::like;
use super::backend::Checked;
use super::checks::*;
use super::Engine;
use crate::error::{QuantError, Result};
use crate::numerics::{inv_scale, quantize_val};
use crate::params::UpsampleSize;
use crate::portable::shape::padded_len;
use crate::portable::UpsampleGeometry;
use crate::tensor::QTensor;

/// The output geometry of a 2-D upsampling of `shape` (NCHW), validated.
fn upsample_geometry(
    op: &'static str,
    shape: &[usize],
    size: UpsampleSize,
) -> Result<UpsampleGeometry> {
    let [n, c, h, w] = check_4d(op, shape)?;
    check_nonempty(op, shape)?;
    let (oh, ow, scales) = match size {
        UpsampleSize::OutputSize([oh, ow]) => (oh, ow, None),
        UpsampleSize::ScaleFactors(sf) => {
            if let Some(bad) = sf.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
                return Err(QuantError::invalid(
                    op,
                    format!("scale_factors {sf:?}: {bad} is not a finite positive number"),
                ));
            }
            // PyTorch: floor(f64(in) · scale).
            let out = |len: usize, s: f64| (len as f64 * s).floor();
            let (oh, ow) = (out(h, sf[0]), out(w, sf[1]));
            if oh > u32::MAX as f64 || ow > u32::MAX as f64 {
                return Err(QuantError::invalid(
                    op,
                    format!("scale_factors {sf:?} give an output of {oh}x{ow} for input {h}x{w}"),
                ));
            }
            (oh as usize, ow as usize, Some(sf))
        }
    };
    if oh == 0 || ow == 0 {
        return Err(QuantError::shape(
            op,
            format!("input {h}x{w} gives an empty output {oh}x{ow} ({size:?})"),
        ));
    }
    Ok(UpsampleGeometry {
        n,
        c,
        h,
        w,
        oh,
        ow,
        scales,
    })
}

fn out_like(x: &QTensor<u8>, shape: Vec<usize>, data: Vec<u8>) -> QTensor<u8> {
    let (s, z) = x.q_per_tensor().expect("validated");
    QTensor::new_per_tensor_unchecked_in(shape, data, s, z, x.memory_format())
}

impl Engine {
    /// Quantized channel shuffle (`F.channel_shuffle` / `nn.ChannelShuffle`
    /// on a quint8 NCHW tensor): output channel `i·groups + g` is input
    /// channel `g·(C/groups) + i`. 4-D only, as PyTorch's quantized kernel.
    pub fn channel_shuffle(&self, x: &QTensor<u8>, groups: usize) -> Result<QTensor<u8>> {
        const OP: &str = "channel_shuffle";
        let (s, z) = per_tensor_q(OP, x)?;
        let [_, c, _, _] = check_4d(OP, x.shape())?;
        check_nonempty(OP, x.shape())?;
        if groups == 0 || !c.is_multiple_of(groups) {
            return Err(QuantError::invalid(
                OP,
                format!("groups {groups} must be positive and divide the {c} channels"),
            ));
        }
        let data = self.b.channel_shuffle(x, groups, Checked::new())?;
        Ok(like(x, data, s, z))
    }

    /// Quantized constant padding of the last two dimensions
    /// (`torch.constant_pad_nd` / `nn.ConstantPad2d` / `nn.ZeroPad2d` on a
    /// 3-D or 4-D quint8 tensor): `pad = [left, right, top, bottom]`, a
    /// negative entry crops; new positions hold `quantize(value)` under the
    /// input's qparams (value 0 → the zero point).
    pub fn constant_pad2d(
        &self,
        x: &QTensor<u8>,
        pad: [i64; 4],
        value: f32,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "constant_pad2d";
        let (s, z) = per_tensor_q(OP, x)?;
        let nd = x.ndim();
        if nd != 3 && nd != 4 {
            return Err(QuantError::InvalidShape {
                op: OP,
                shape: x.shape().to_vec(),
                detail: "expected a 3-D or 4-D tensor (padding the last two dimensions)".into(),
            });
        }
        check_nonempty(OP, x.shape())?;
        if value.is_nan() {
            return Err(QuantError::invalid(OP, "value is NaN"));
        }
        let (h, w) = (x.shape()[nd - 2], x.shape()[nd - 1]);
        let (Some(oh), Some(ow)) = (padded_len(h, pad[2], pad[3]), padded_len(w, pad[0], pad[1]))
        else {
            return Err(QuantError::shape(
                OP,
                format!("pad {pad:?} (left, right, top, bottom) leaves nothing of input {h}x{w}"),
            ));
        };
        let fill = quantize_val::<u8>(inv_scale(s), z, value);
        let data = self.b.constant_pad2d(x, pad, fill, Checked::new())?;
        let mut shape = x.shape().to_vec();
        shape[nd - 2] = oh;
        shape[nd - 1] = ow;
        Ok(out_like(x, shape, data))
    }

    /// Quantized nearest upsampling (`aten::upsample_nearest2d.vec` on a
    /// quint8 NCHW tensor, `F.interpolate(mode="nearest")`): source index
    /// `min(floor(f32(dst)·step), in − 1)`, `step = f32(in)/f32(out)` for an
    /// output size, `f32(1/scale)` for scale factors; equal sizes copy.
    pub fn upsample_nearest2d(&self, x: &QTensor<u8>, size: UpsampleSize) -> Result<QTensor<u8>> {
        const OP: &str = "upsample_nearest2d";
        per_tensor_q(OP, x)?;
        let g = upsample_geometry(OP, x.shape(), size)?;
        let data = self.b.upsample_nearest2d(x, &g, Checked::new())?;
        Ok(out_like(x, g.out_shape(), data))
    }

    /// Quantized bilinear upsampling (`aten::upsample_bilinear2d.vec`,
    /// `F.interpolate(mode="bilinear")`): PyTorch's NCHW kernel in f32 on
    /// the codes (docs/numerics.md), the output keeping the input's qparams.
    pub fn upsample_bilinear2d(
        &self,
        x: &QTensor<u8>,
        size: UpsampleSize,
        align_corners: bool,
    ) -> Result<QTensor<u8>> {
        const OP: &str = "upsample_bilinear2d";
        per_tensor_q(OP, x)?;
        let g = upsample_geometry(OP, x.shape(), size)?;
        let data = self
            .b
            .upsample_bilinear2d(x, &g, align_corners, Checked::new())?;
        Ok(out_like(x, g.out_shape(), data))
    }
}
