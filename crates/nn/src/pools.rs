//! `MaxPool1d`, `MaxPool3d`, `AvgPool3d`, `AdaptiveAvgPool3d` and
//! `Upsample` / `interpolate` (nearest, bilinear): float forward and
//! backward, and on quantized input what PyTorch's float modules do on a
//! quint8 tensor (the quantized ops of [`crate::qops`] and the engine's
//! upsampling; qparams kept).

use rquant_core::{Engine, QTensor, Tensor, UpsampleSize};
use serde_json::{json, Value as J};

use crate::error::{bad, NnError, Result};
use crate::format::Saver;
use crate::functional as F;
use crate::module::{Layer, Module};
use crate::qops::{self, Pool3dParams};
use crate::registry::{ModuleRegistry, Node};
use crate::value::Value;

fn no_engine(op: &str) -> NnError {
    NnError::module(
        "",
        format!("{op} on a quantized input needs an engine: convert the model, load it with an engine, or call rquant_nn::to_engine"),
    )
}

/// Which pooling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PoolKind {
    /// `nn.MaxPool1d(kernel, stride, padding, dilation, ceil_mode)` (entry 0 of the params).
    Max1d,
    /// `nn.MaxPool3d`.
    Max3d,
    /// `nn.AvgPool3d(…, count_include_pad, divisor_override)`.
    Avg3d {
        count_include_pad: bool,
        divisor_override: Option<usize>,
    },
    /// `nn.AdaptiveAvgPool3d(output_size)` (the output size in `params.kernel`).
    AdaptiveAvg3d,
}

/// A pooling module.
#[derive(Debug, Clone)]
pub struct Pool {
    pub kind: PoolKind,
    pub params: Pool3dParams,
    pub engine: Option<Engine>,
    pub(crate) training: bool,
    cache: Option<(Vec<usize>, Vec<u32>)>,
}

impl Pool {
    /// `nn.MaxPool1d(kernel, stride)`.
    pub fn max1d(kernel: usize, stride: usize, padding: usize) -> Self {
        Self::new(
            PoolKind::Max1d,
            Pool3dParams {
                kernel: [kernel, 1, 1],
                stride: [stride, 1, 1],
                padding: [padding, 0, 0],
                dilation: [1; 3],
                ceil_mode: false,
            },
        )
    }
    /// `nn.MaxPool3d(kernel, stride, padding)`.
    pub fn max3d(kernel: [usize; 3], stride: [usize; 3], padding: [usize; 3]) -> Self {
        Self::new(
            PoolKind::Max3d,
            Pool3dParams {
                kernel,
                stride,
                padding,
                dilation: [1; 3],
                ceil_mode: false,
            },
        )
    }
    /// `nn.AvgPool3d(kernel, stride, padding)`.
    pub fn avg3d(kernel: [usize; 3], stride: [usize; 3], padding: [usize; 3]) -> Self {
        Self::new(
            PoolKind::Avg3d {
                count_include_pad: true,
                divisor_override: None,
            },
            Pool3dParams {
                kernel,
                stride,
                padding,
                dilation: [1; 3],
                ceil_mode: false,
            },
        )
    }
    /// `nn.AdaptiveAvgPool3d(output_size)`.
    pub fn adaptive_avg3d(output_size: [usize; 3]) -> Self {
        Self::new(
            PoolKind::AdaptiveAvg3d,
            Pool3dParams {
                kernel: output_size,
                stride: [1; 3],
                padding: [0; 3],
                dilation: [1; 3],
                ceil_mode: false,
            },
        )
    }
    pub fn new(kind: PoolKind, params: Pool3dParams) -> Self {
        Pool {
            kind,
            params,
            engine: None,
            training: false,
            cache: None,
        }
    }

    fn p2(&self) -> ([usize; 2], [usize; 2], [usize; 2], [usize; 2]) {
        let p = &self.params;
        (
            [1, p.kernel[0]],
            [1, p.stride[0]],
            [0, p.padding[0]],
            [1, p.dilation[0]],
        )
    }

    pub fn forward_float(&mut self, x: Tensor) -> Result<Tensor> {
        let shape = x.shape().to_vec();
        match self.kind {
            PoolKind::Max1d => {
                let (n, c, l) = match *x.shape() {
                    [c, l] => (1, c, l),
                    [n, c, l] => (n, c, l),
                    _ => {
                        return Err(bad(
                            "MaxPool1d",
                            format!("expected [N, C, L], got {shape:?}"),
                        ))
                    }
                };
                let (k, s, p, d) = self.p2();
                let (y, idx) = F::max_pool2d(
                    &x.reshape([n, c, 1, l])?,
                    k,
                    s,
                    p,
                    d,
                    self.params.ceil_mode,
                    self.training,
                )?;
                if self.training {
                    self.cache = Some((vec![n, c, 1, l], idx));
                }
                let lo = y.shape()[3];
                let mut os = shape;
                *os.last_mut().expect("2-D or 3-D") = lo;
                Ok(y.reshape(os)?)
            }
            _ => {
                let (y, idx) = pool3d_float(&x, self.kind, &self.params)?;
                if self.training {
                    self.cache = Some((shape, idx));
                }
                Ok(y)
            }
        }
    }

    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let (shape, idx) = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        match self.kind {
            PoolKind::Max1d => {
                let gs = g.shape().to_vec();
                let lo = *gs.last().expect("shape");
                let g4 = g.reshape([shape[0], shape[1], 1, lo])?;
                let dx = F::max_pool2d_backward(&shape, &idx, &g4)?;
                let mut xs = gs;
                *xs.last_mut().expect("shape") = shape[3];
                Ok(dx.reshape(xs)?)
            }
            _ => pool3d_backward(&shape, &g, self.kind, &self.params, &idx),
        }
    }

    pub fn forward_quant(&self, x: QTensor<u8>) -> Result<QTensor<u8>> {
        let e = self
            .engine
            .as_ref()
            .ok_or_else(|| no_engine(&self.type_name()))?;
        let p = &self.params;
        match self.kind {
            PoolKind::Max1d => qops::max_pool1d(
                e,
                &x,
                p.kernel[0],
                p.stride[0],
                p.padding[0],
                p.dilation[0],
                p.ceil_mode,
            ),
            PoolKind::Max3d => qops::max_pool3d(e, &x, p),
            PoolKind::Avg3d {
                count_include_pad,
                divisor_override,
            } => qops::avg_pool3d(e, &x, p, count_include_pad, divisor_override),
            PoolKind::AdaptiveAvg3d => qops::adaptive_avg_pool3d(e, &x, p.kernel),
        }
    }
}

/// `(window start, end)` of output `o` along an axis (clipped to the
/// input), and for average pooling the unclipped window size.
fn window(o: usize, p: &Pool3dParams, a: usize, len: usize, kind: PoolKind) -> (i64, i64, i64) {
    if kind == PoolKind::AdaptiveAvg3d {
        let (s, e) = rquant_core::ops::adaptive_window(o, len, p.kernel[a]);
        return (s as i64, e as i64, (e - s) as i64);
    }
    let d = p.dilation[a] as i64;
    let mut s = (o * p.stride[a]) as i64 - p.padding[a] as i64;
    let e = (s + ((p.kernel[a] - 1) * p.dilation[a]) as i64 + 1).min((len + p.padding[a]) as i64);
    let pool = e - s;
    while s < 0 {
        s += d;
    }
    (s, e.min(len as i64), pool)
}

fn pool3d_dims(x: &[usize], kind: PoolKind, p: &Pool3dParams) -> Result<([usize; 5], [usize; 3])> {
    let full: [usize; 5] = match *x {
        [c, d, h, w] => [1, c, d, h, w],
        [n, c, d, h, w] => [n, c, d, h, w],
        _ => {
            return Err(bad(
                "pool3d",
                format!("expected [N, C, D, H, W], got {x:?}"),
            ))
        }
    };
    let mut out = [0usize; 3];
    for a in 0..3 {
        out[a] = if kind == PoolKind::AdaptiveAvg3d {
            p.kernel[a]
        } else {
            rquant_core::ops::pool_out_len(
                full[2 + a],
                p.kernel[a],
                p.stride[a],
                p.padding[a],
                p.dilation[a],
                p.ceil_mode,
            )
            .ok_or_else(|| {
                bad(
                    "pool3d",
                    format!("kernel {:?} does not fit input {x:?}", p.kernel),
                )
            })?
        };
        if out[a] == 0 {
            return Err(bad("pool3d", "empty output"));
        }
    }
    Ok((full, out))
}

fn pool3d_float(x: &Tensor, kind: PoolKind, p: &Pool3dParams) -> Result<(Tensor, Vec<u32>)> {
    let (full, out) = pool3d_dims(x.shape(), kind, p)?;
    let [n, c, d, h, w] = full;
    let dims = [d, h, w];
    let mut y = Vec::new();
    let mut idx = Vec::new();
    for plane in x.data().chunks_exact(d * h * w).take(n * c) {
        for od in 0..out[0] {
            for oh in 0..out[1] {
                for ow in 0..out[2] {
                    let o = [od, oh, ow];
                    let wins: Vec<(i64, i64, i64)> =
                        (0..3).map(|a| window(o[a], p, a, dims[a], kind)).collect();
                    let step = |a: usize| {
                        if kind == PoolKind::AdaptiveAvg3d {
                            1
                        } else {
                            p.dilation[a] as i64
                        }
                    };
                    let mut best = f32::NEG_INFINITY;
                    let mut bi = 0u32;
                    let mut sum = 0.0f32;
                    let mut cnt = 0i64;
                    let mut zd = wins[0].0;
                    while zd < wins[0].1 {
                        let mut zh = wins[1].0;
                        while zh < wins[1].1 {
                            let mut zw = wins[2].0;
                            while zw < wins[2].1 {
                                let i = ((zd as usize) * h + zh as usize) * w + zw as usize;
                                let v = plane[i];
                                if cnt == 0 || v > best {
                                    best = v;
                                    bi = i as u32;
                                }
                                sum += v;
                                cnt += 1;
                                zw += step(2);
                            }
                            zh += step(1);
                        }
                        zd += step(0);
                    }
                    match kind {
                        PoolKind::Max1d | PoolKind::Max3d => {
                            y.push(best);
                            idx.push(bi);
                        }
                        PoolKind::Avg3d {
                            count_include_pad,
                            divisor_override,
                        } => {
                            let div = match divisor_override {
                                Some(v) => v as f32,
                                None if count_include_pad => {
                                    (wins[0].2 * wins[1].2 * wins[2].2) as f32
                                }
                                None => cnt as f32,
                            };
                            y.push(sum / div);
                        }
                        PoolKind::AdaptiveAvg3d => y.push(sum / cnt as f32),
                    }
                }
            }
        }
    }
    let mut shape = if x.ndim() == 5 { vec![n, c] } else { vec![c] };
    shape.extend_from_slice(&out);
    Ok((Tensor::new(shape, y)?, idx))
}

fn pool3d_backward(
    shape: &[usize],
    g: &Tensor,
    kind: PoolKind,
    p: &Pool3dParams,
    idx: &[u32],
) -> Result<Tensor> {
    let (full, out) = pool3d_dims(shape, kind, p)?;
    let [n, c, d, h, w] = full;
    let dims = [d, h, w];
    let vol = d * h * w;
    let ovol: usize = out.iter().product();
    let mut dx = vec![0.0f32; n * c * vol];
    for pl in 0..n * c {
        let gx = &mut dx[pl * vol..(pl + 1) * vol];
        let gy = &g.data()[pl * ovol..(pl + 1) * ovol];
        if matches!(kind, PoolKind::Max1d | PoolKind::Max3d) {
            for (j, &gv) in gy.iter().enumerate() {
                gx[idx[pl * ovol + j] as usize] += gv;
            }
            continue;
        }
        let mut j = 0;
        for od in 0..out[0] {
            for oh in 0..out[1] {
                for ow in 0..out[2] {
                    let o = [od, oh, ow];
                    let wins: Vec<(i64, i64, i64)> =
                        (0..3).map(|a| window(o[a], p, a, dims[a], kind)).collect();
                    let cnt =
                        (wins[0].1 - wins[0].0) * (wins[1].1 - wins[1].0) * (wins[2].1 - wins[2].0);
                    let div = match kind {
                        PoolKind::Avg3d {
                            count_include_pad,
                            divisor_override,
                        } => match divisor_override {
                            Some(v) => v as f32,
                            None if count_include_pad => (wins[0].2 * wins[1].2 * wins[2].2) as f32,
                            None => cnt as f32,
                        },
                        _ => cnt as f32,
                    };
                    for zd in wins[0].0..wins[0].1 {
                        for zh in wins[1].0..wins[1].1 {
                            for zw in wins[2].0..wins[2].1 {
                                gx[((zd as usize) * h + zh as usize) * w + zw as usize] +=
                                    gy[j] / div;
                            }
                        }
                    }
                    j += 1;
                }
            }
        }
    }
    Ok(Tensor::new(shape.to_vec(), dx)?)
}

impl Layer for Pool {
    fn type_name(&self) -> String {
        match self.kind {
            PoolKind::Max1d => "MaxPool1d",
            PoolKind::Max3d => "MaxPool3d",
            PoolKind::Avg3d { .. } => "AvgPool3d",
            PoolKind::AdaptiveAvg3d => "AdaptiveAvgPool3d",
        }
        .into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        match x {
            Value::F(t) => Ok(Value::F(self.forward_float(t)?)),
            Value::Q(q) => Ok(Value::Q(self.forward_quant(q)?)),
        }
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        Pool::backward(self, g)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = Some(engine.clone());
        Ok(())
    }
    fn save(&self, _: &mut Saver) -> Result<J> {
        let p = &self.params;
        let mut j = json!({"kernel": p.kernel, "stride": p.stride, "padding": p.padding,
                           "dilation": p.dilation, "ceil_mode": p.ceil_mode});
        if let PoolKind::Avg3d {
            count_include_pad,
            divisor_override,
        } = self.kind
        {
            j["count_include_pad"] = json!(count_include_pad);
            j["divisor_override"] = json!(divisor_override);
        }
        Ok(j)
    }
}

// ---------------------------------------------------------------- Upsample

/// `nn.Upsample(size | scale_factor, mode, align_corners)` /
/// `F.interpolate` on 4-D input, nearest (PyTorch's legacy `nearest`) or
/// bilinear.
#[derive(Debug, Clone)]
pub struct Upsample {
    pub size: UpsampleSize,
    pub bilinear: bool,
    pub align_corners: bool,
    pub engine: Option<Engine>,
    pub(crate) training: bool,
    cache: Option<Vec<usize>>,
}

/// Per axis: source index pairs and weights for each output position.
fn axis_map(
    inp: usize,
    out: usize,
    scale: Option<f64>,
    bilinear: bool,
    align_corners: bool,
) -> Vec<(usize, usize, f32, f32)> {
    if inp == out {
        return (0..out).map(|i| (i, i, 1.0, 0.0)).collect();
    }
    let step = match scale {
        Some(s) => (1.0 / s) as f32,
        None => inp as f32 / out as f32,
    };
    (0..out)
        .map(|dst| {
            if !bilinear {
                let src = ((dst as f32 * step).floor() as usize).min(inp - 1);
                return (src, src, 1.0, 0.0);
            }
            let (st, src) = if align_corners {
                let st = if out > 1 {
                    (inp - 1) as f32 / (out - 1) as f32
                } else {
                    0.0
                };
                (st, st * dst as f32)
            } else {
                (step, (step * (dst as f32 + 0.5) - 0.5).max(0.0))
            };
            let _ = st;
            let i0 = src as usize;
            let i1 = i0 + usize::from(i0 < inp - 1);
            let l1 = src - i0 as f32;
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

impl Upsample {
    pub fn new(size: UpsampleSize, bilinear: bool, align_corners: bool) -> Self {
        Upsample {
            size,
            bilinear,
            align_corners,
            engine: None,
            training: false,
            cache: None,
        }
    }
    fn out_hw(&self, h: usize, w: usize) -> Result<([usize; 2], Option<[f64; 2]>)> {
        let r = match self.size {
            UpsampleSize::OutputSize(s) => (s, None),
            UpsampleSize::ScaleFactors(sf) => (
                [
                    (h as f64 * sf[0]).floor() as usize,
                    (w as f64 * sf[1]).floor() as usize,
                ],
                Some(sf),
            ),
        };
        if r.0.contains(&0) {
            return Err(bad("Upsample", format!("empty output for input {h}x{w}")));
        }
        Ok(r)
    }
    pub fn forward_float(&mut self, x: Tensor) -> Result<Tensor> {
        let &[n, c, h, w] = x.shape() else {
            return Err(bad(
                "Upsample",
                format!("expected [N, C, H, W], got {:?}", x.shape()),
            ));
        };
        let ([oh, ow], sf) = self.out_hw(h, w)?;
        let mh = axis_map(h, oh, sf.map(|s| s[0]), self.bilinear, self.align_corners);
        let mw = axis_map(w, ow, sf.map(|s| s[1]), self.bilinear, self.align_corners);
        let mut y = Vec::with_capacity(n * c * oh * ow);
        for plane in x.data().chunks_exact(h * w) {
            for &(h0, h1, a0, a1) in &mh {
                for &(w0, w1, b0, b1) in &mw {
                    y.push(
                        a0 * (b0 * plane[h0 * w + w0] + b1 * plane[h0 * w + w1])
                            + a1 * (b0 * plane[h1 * w + w0] + b1 * plane[h1 * w + w1]),
                    );
                }
            }
        }
        if self.training {
            self.cache = Some(x.shape().to_vec());
        }
        Ok(Tensor::new([n, c, oh, ow], y)?)
    }
    pub fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let s = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        let ([oh, ow], sf) = self.out_hw(h, w)?;
        let mh = axis_map(h, oh, sf.map(|s| s[0]), self.bilinear, self.align_corners);
        let mw = axis_map(w, ow, sf.map(|s| s[1]), self.bilinear, self.align_corners);
        let mut dx = vec![0.0f32; n * c * h * w];
        for (plane, gp) in dx
            .chunks_exact_mut(h * w)
            .zip(g.data().chunks_exact(oh * ow))
        {
            let mut j = 0;
            for &(h0, h1, a0, a1) in &mh {
                for &(w0, w1, b0, b1) in &mw {
                    let gv = gp[j];
                    plane[h0 * w + w0] += a0 * b0 * gv;
                    plane[h0 * w + w1] += a0 * b1 * gv;
                    plane[h1 * w + w0] += a1 * b0 * gv;
                    plane[h1 * w + w1] += a1 * b1 * gv;
                    j += 1;
                }
            }
        }
        Ok(Tensor::new(s, dx)?)
    }
    pub fn forward_quant(&self, x: QTensor<u8>) -> Result<QTensor<u8>> {
        let e = self.engine.as_ref().ok_or_else(|| no_engine("Upsample"))?;
        Ok(if self.bilinear {
            e.upsample_bilinear2d(&x, self.size, self.align_corners)?
        } else {
            e.upsample_nearest2d(&x, self.size)?
        })
    }
}

impl Layer for Upsample {
    fn type_name(&self) -> String {
        "Upsample".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        match x {
            Value::F(t) => Ok(Value::F(self.forward_float(t)?)),
            Value::Q(q) => Ok(Value::Q(self.forward_quant(q)?)),
        }
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        Upsample::backward(self, g)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = Some(engine.clone());
        Ok(())
    }
    fn save(&self, _: &mut Saver) -> Result<J> {
        let mut j = json!({"mode": if self.bilinear { "bilinear" } else { "nearest" },
                           "align_corners": self.align_corners});
        match self.size {
            UpsampleSize::OutputSize(s) => j["size"] = json!(s),
            UpsampleSize::ScaleFactors(s) => j["scale_factor"] = json!(s),
        }
        Ok(j)
    }
}

pub(crate) fn register_loaders(r: &mut ModuleRegistry) {
    fn trip(n: &Node, k: &str) -> Result<[usize; 3]> {
        n.field(k)?
            .as_array()
            .and_then(|a| {
                let v: Option<Vec<usize>> = a
                    .iter()
                    .map(|x| {
                        x.as_u64()
                            .filter(|&u| u <= i32::MAX as u64)
                            .map(|u| u as usize)
                    })
                    .collect();
                v.and_then(|v| v.try_into().ok())
            })
            .ok_or_else(|| n.attr_error(k, "expected three integers"))
    }
    fn pool(n: &mut Node) -> Result<Module> {
        let params = Pool3dParams {
            kernel: trip(n, "kernel")?,
            stride: trip(n, "stride")?,
            padding: trip(n, "padding")?,
            dilation: trip(n, "dilation")?,
            ceil_mode: n.get_bool("ceil_mode")?,
        };
        let kind = match n.type_name() {
            "MaxPool1d" => PoolKind::Max1d,
            "MaxPool3d" => PoolKind::Max3d,
            "AvgPool3d" => PoolKind::Avg3d {
                count_include_pad: n.get_bool("count_include_pad")?,
                divisor_override: match n.attrs().get("divisor_override") {
                    None | Some(J::Null) => None,
                    Some(v) => Some(v.as_u64().filter(|&v| v > 0).ok_or_else(|| {
                        n.attr_error("divisor_override", "not null or a positive integer")
                    })? as usize),
                },
            },
            _ => PoolKind::AdaptiveAvg3d,
        };
        Ok(Pool::new(kind, params).into())
    }
    for t in ["MaxPool1d", "MaxPool3d", "AvgPool3d", "AdaptiveAvgPool3d"] {
        r.register(t, pool);
    }
    r.register("Upsample", |n| {
        let size = if let Some(s) = n.attrs().get("size") {
            let v: Vec<usize> = s
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|u| u as usize)).collect())
                .ok_or_else(|| n.attr_error("size", "expected two sizes"))?;
            let [a, b] = v[..] else {
                return Err(n.attr_error("size", "expected two sizes"));
            };
            UpsampleSize::OutputSize([a, b])
        } else {
            let v: Vec<f64> = n
                .field("scale_factor")?
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_f64()).collect())
                .ok_or_else(|| n.attr_error("scale_factor", "expected two numbers"))?;
            let [a, b] = v[..] else {
                return Err(n.attr_error("scale_factor", "expected two numbers"));
            };
            UpsampleSize::ScaleFactors([a, b])
        };
        let bilinear = match n.get_str("mode")? {
            "nearest" => false,
            "bilinear" => true,
            m => return Err(n.attr_error("mode", format!("unsupported mode {m:?}"))),
        };
        Ok(Upsample::new(size, bilinear, n.get_bool("align_corners")?).into())
    });
}
