//! safetensors in and out: float state_dicts by PyTorch name, and quantized
//! models with metadata (format, engine, qconfig, module tree with qparams)
//! so a model converted once loads on any engine with identical outputs.

use std::collections::HashMap;
use std::sync::Arc;

use rquant_core::{registry, Conv2dParams, Engine, QParams, QScheme, QTensor, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde_json::{json, Value as J};

use crate::error::{NnError, Result};
use crate::layers::{
    ActKind, Activation, AdaptiveAvgPool2d, AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d,
};
use crate::module::{join, Module, Sequential};
use crate::quantized::*;
use crate::rnn::RnnKind;

/// The format tag written to (and required in) quantized model files.
pub const FORMAT: &str = "rquant.quantized.v1";

/// Open `path` for reading if it is a regular file: a directory is an error
/// anyway, and a device such as /dev/zero would be read until memory runs out.
pub(crate) fn open_regular(path: &std::path::Path) -> Result<std::fs::File> {
    let shown = path.display().to_string();
    let io = |source| NnError::Io {
        path: shown.clone(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    if !f.metadata().map_err(io)?.is_file() {
        return Err(NnError::file(&shown, "file", "not a regular file"));
    }
    Ok(f)
}

fn read(path: &str) -> Result<Vec<u8>> {
    let io = |source| NnError::Io {
        path: path.to_string(),
        source,
    };
    let mut f = open_regular(std::path::Path::new(path))?;
    let mut b = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut b).map_err(io)?;
    Ok(b)
}

/// Write `bytes` to `path` through a temporary file in the same directory
/// and a rename, so `path` holds either its old contents or all the new
/// ones, never a part; on any error the temporary file is removed.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let shown = path.display().to_string();
    let Some(name) = path.file_name() else {
        return Err(NnError::file(shown, "path", "not a file name"));
    };
    let tmp = path.with_file_name(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let res = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    res.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        NnError::Io {
            path: shown,
            source,
        }
    })
}

fn parse<'a>(bytes: &'a [u8], file: &str) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| NnError::file(file, "header", format!("not a valid safetensors file: {e}")))
}

fn f32_of(file: &str, name: &str, v: &TensorView) -> Result<Tensor> {
    if v.dtype() != Dtype::F32 {
        return Err(NnError::file(
            file,
            name,
            format!("dtype {:?}, expected F32", v.dtype()),
        ));
    }
    let data: Vec<f32> = v
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Tensor::new(v.shape().to_vec(), data)?)
}

/// Read every F32 tensor of a safetensors file (a PyTorch state_dict), in file order.
pub fn read_state_dict(path: &str) -> Result<Vec<(String, Tensor)>> {
    let bytes = read(path)?;
    state_dict_from_bytes(&bytes, path)
}

pub fn state_dict_from_bytes(bytes: &[u8], file: &str) -> Result<Vec<(String, Tensor)>> {
    let st = parse(bytes, file)?;
    let mut names: Vec<(usize, String)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (v.data().as_ptr() as usize, n))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|(_, n)| {
            let v = st
                .tensor(&n)
                .map_err(|e| NnError::file(file, &n, e.to_string()))?;
            Ok((n.clone(), f32_of(file, &n, &v)?))
        })
        .collect()
}

/// Load float weights into `model` by PyTorch name (strict: missing and
/// unexpected keys are errors naming the key).
pub fn load_float(model: &mut Module, path: &str) -> Result<()> {
    let sd = read_state_dict(path)?;
    model.load_state_dict(&sd, true, path)
}

fn to_bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialize a float model's state_dict.
pub fn float_bytes(model: &mut Module) -> Result<Vec<u8>> {
    let sd = model.state_dict();
    let bufs: Vec<(String, Vec<usize>, Vec<u8>)> = sd
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec(), to_bytes_f32(t.data())))
        .collect();
    let views = bufs
        .iter()
        .map(|(n, s, b)| {
            Ok((
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b)
                    .map_err(|e| NnError::file("<memory>", n, e.to_string()))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, &None)
        .map_err(|e| NnError::file("<memory>", "serialize", e.to_string()))
}

// ---------------------------------------------------------------- quantized save

struct Out {
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
}

impl Out {
    /// Output qparams as `{p}.scale` (F64) and `{p}.zero_point` (I64), exact.
    fn qparams(&mut self, p: &str, scale: f64, zero_point: i64) {
        self.tensors.push((
            join(p, "scale"),
            Dtype::F64,
            vec![1],
            scale.to_le_bytes().to_vec(),
        ));
        self.tensors.push((
            join(p, "zero_point"),
            Dtype::I64,
            vec![1],
            zero_point.to_le_bytes().to_vec(),
        ));
    }
    fn f32(&mut self, name: String, shape: Vec<usize>, v: &[f32]) {
        self.tensors
            .push((name, Dtype::F32, shape, to_bytes_f32(v)));
    }
    fn qweight(&mut self, p: &str, w: &QTensor<i8>) -> J {
        self.tensors.push((
            join(p, "weight"),
            Dtype::I8,
            w.shape().to_vec(),
            w.int_repr().iter().map(|&v| v as u8).collect(),
        ));
        let (scales, zps): (Vec<f64>, Vec<i64>) = match w.qparams() {
            QParams::PerTensor { scale, zero_point } => (vec![*scale], vec![*zero_point]),
            QParams::PerChannel {
                scales,
                zero_points,
                ..
            } => (scales.clone(), zero_points.clone()),
            QParams::PerChannelFloat { .. } => unreachable!("weights are never float-zp"),
        };
        let n = scales.len();
        self.tensors.push((
            join(p, "weight_scale"),
            Dtype::F64,
            vec![n],
            scales.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
        self.tensors.push((
            join(p, "weight_zero_point"),
            Dtype::I64,
            vec![n],
            zps.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ));
        json!(w.qscheme().name())
    }
    fn bias(&mut self, p: &str, b: Option<&[f32]>) -> bool {
        if let Some(b) = b {
            self.f32(join(p, "bias"), vec![b.len()], b);
        }
        b.is_some()
    }
}

fn conv_json(p: Conv2dParams) -> J {
    json!({"stride": p.stride, "padding": p.padding, "dilation": p.dilation, "groups": p.groups})
}

fn dyn_json(out: &mut Out, p: &str, w: &DynWeight) -> J {
    match w {
        DynWeight::Int8 {
            packed,
            reduce_range,
        } => {
            let qs = out.qweight(p, &packed.weight());
            let has_bias = out.bias(p, packed.bias());
            json!({"dtype": "qint8", "qscheme": qs, "reduce_range": reduce_range, "bias": has_bias})
        }
        DynWeight::Fp16(pk) => {
            out.f32(
                join(p, "weight"),
                pk.weight().shape().to_vec(),
                pk.weight().data(),
            );
            let has_bias = out.bias(p, pk.bias());
            json!({"dtype": "float16", "bias": has_bias})
        }
    }
}

fn node(m: &Module, p: &str, out: &mut Out) -> Result<J> {
    Ok(match m {
        Module::Sequential(s) => {
            let ch = s
                .children
                .iter()
                .map(|(n, c)| Ok(json!([n, node(c, &join(p, n), out)?])))
                .collect::<Result<Vec<_>>>()?;
            json!({"type": "Sequential", "children": ch})
        }
        Module::Identity => json!({"type": "Identity"}),
        Module::QuantStub => json!({"type": "QuantStub"}),
        Module::DeQuantStub => json!({"type": "DeQuantStub"}),
        Module::Flatten(f) => json!({"type": "Flatten", "start_dim": f.start_dim}),
        Module::Dropout(d) => json!({"type": "Dropout", "p": d.p}),
        Module::Act(a) => json!({"type": a.type_name()}),
        Module::MaxPool2d(m) => {
            json!({"type": "MaxPool2d", "kernel": m.kernel, "stride": m.stride, "padding": m.padding, "dilation": m.dilation, "ceil_mode": m.ceil_mode})
        }
        Module::AvgPool2d(m) => {
            json!({"type": "AvgPool2d", "kernel": m.kernel, "stride": m.stride, "padding": m.padding, "ceil_mode": m.ceil_mode, "count_include_pad": m.count_include_pad, "divisor_override": m.divisor_override})
        }
        Module::AdaptiveAvgPool2d(m) => {
            json!({"type": "AdaptiveAvgPool2d", "output_size": m.output_size})
        }
        Module::Linear(l) if l.weight_fake_quant.is_none() => {
            out.f32(
                join(p, "weight"),
                l.weight.value.shape().to_vec(),
                l.weight.value.data(),
            );
            let b = out.bias(p, l.bias.as_ref().map(|b| b.value.data()));
            json!({"type": "Linear", "relu": l.relu, "bias": b})
        }
        Module::Embedding(e) => {
            out.f32(
                join(p, "weight"),
                e.weight.value.shape().to_vec(),
                e.weight.value.data(),
            );
            json!({"type": "Embedding"})
        }
        Module::BatchNorm2d(b) => {
            out.f32(
                join(p, "weight"),
                vec![b.num_features],
                b.weight.value.data(),
            );
            out.f32(join(p, "bias"), vec![b.num_features], b.bias.value.data());
            out.f32(
                join(p, "running_mean"),
                vec![b.num_features],
                b.running_mean.data(),
            );
            out.f32(
                join(p, "running_var"),
                vec![b.num_features],
                b.running_var.data(),
            );
            json!({"type": b.type_name(), "eps": b.eps, "relu": b.relu})
        }
        Module::Rnn(r) => {
            let mut r2 = r.clone();
            let bias = r.layers.first().is_some_and(|l| l.b_ih.is_some());
            for (n, prm) in r2.params_mut() {
                out.f32(join(p, &n), prm.value.shape().to_vec(), prm.value.data());
            }
            json!({"type": r.type_name(), "input_size": r.input_size, "hidden_size": r.hidden_size,
                   "num_layers": r.layers.len(), "batch_first": r.batch_first, "bias": bias})
        }
        Module::Conv2d(c) if c.weight_fake_quant.is_none() && c.bn.is_none() => {
            out.f32(
                join(p, "weight"),
                c.weight.value.shape().to_vec(),
                c.weight.value.data(),
            );
            let b = out.bias(p, c.bias.as_ref().map(|b| b.value.data()));
            json!({"type": "Conv2d", "relu": c.relu, "bias": b, "params": conv_json(c.params)})
        }
        Module::Quantized(q) => match q {
            QModule::Quantize { scale, zero_point } => {
                out.qparams(p, *scale, *zero_point);
                json!({"type": "Quantize"})
            }
            QModule::DeQuantize => json!({"type": "DeQuantize"}),
            QModule::Linear(l) => {
                let qs = out.qweight(p, &l.packed.weight());
                let b = out.bias(p, l.packed.bias());
                {
                    out.qparams(p, l.scale, l.zero_point);
                    json!({"type": "QuantizedLinear", "relu": l.relu, "qscheme": qs, "bias": b})
                }
            }
            QModule::Conv2d(c) => {
                let qs = out.qweight(p, &c.packed.weight());
                let b = out.bias(p, c.packed.bias());
                {
                    out.qparams(p, c.scale, c.zero_point);
                    json!({"type": "QuantizedConv2d", "relu": c.relu, "qscheme": qs, "bias": b, "params": conv_json(c.packed.params())})
                }
            }
            QModule::DynamicLinear(d) => {
                let w = dyn_json(out, p, &d.weight);
                json!({"type": "DynamicQuantizedLinear", "relu": d.relu, "weight": w})
            }
            QModule::DynamicRnn(r) => {
                let layers = r
                    .layers
                    .iter()
                    .enumerate()
                    .map(|(l, (a, b))| {
                        json!([
                            dyn_json(out, &join(p, &format!("ih_l{l}")), a),
                            dyn_json(out, &join(p, &format!("hh_l{l}")), b)
                        ])
                    })
                    .collect::<Vec<_>>();
                json!({"type": "DynamicQuantizedRNN", "kind": r.type_name_short(), "input_size": r.input_size, "hidden_size": r.hidden_size, "batch_first": r.batch_first, "layers": layers})
            }
            QModule::Functional(f) => {
                out.qparams(p, f.scale, f.zero_point);
                json!({"type": "QFunctional"})
            }
            QModule::Hardswish {
                scale, zero_point, ..
            } => {
                out.qparams(p, *scale, *zero_point);
                json!({"type": "QuantizedHardswish"})
            }
        },
        other => {
            return Err(NnError::module(
                p,
                format!(
                    "{} cannot be saved in a quantized model file (convert it first)",
                    other.type_name()
                ),
            ))
        }
    })
}

impl QDynRnn {
    fn type_name_short(&self) -> &'static str {
        match self.kind {
            RnnKind::Lstm => "LSTM",
            RnnKind::Gru => "GRU",
        }
    }
}

/// Serialize a converted model (module tree, int8 weights, qparams) with the
/// engine that packed it and a free-form qconfig description as metadata.
pub fn quantized_bytes(model: &Module, qconfig: &str) -> Result<Vec<u8>> {
    let mut out = Out {
        tensors: Vec::new(),
    };
    let tree = node(model, "", &mut out)?;
    let engine = model
        .named_modules()
        .iter()
        .find_map(|(_, m)| match m {
            Module::Quantized(q) => q.engine_name(),
            _ => None,
        })
        .unwrap_or("none");
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("engine".to_string(), engine.to_string());
    meta.insert("qconfig".to_string(), qconfig.to_string());
    meta.insert("modules".to_string(), tree.to_string());
    let views = out
        .tensors
        .iter()
        .map(|(n, d, s, b)| {
            Ok((
                n.clone(),
                TensorView::new(*d, s.clone(), b)
                    .map_err(|e| NnError::file("<memory>", n, e.to_string()))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, &Some(meta))
        .map_err(|e| NnError::file("<memory>", "serialize", e.to_string()))
}

/// Save a converted model to `path` (see [`quantized_bytes`]; written with
/// [`write_atomic`]).
pub fn save_quantized(model: &Module, path: &str, qconfig: &str) -> Result<()> {
    write_atomic(path.as_ref(), &quantized_bytes(model, qconfig)?)
}

// ---------------------------------------------------------------- quantized load

/// Metadata of a loaded quantized model.
#[derive(Debug, Clone)]
pub struct QuantizedMeta {
    pub engine: String,
    pub qconfig: String,
}

struct In<'a> {
    st: SafeTensors<'a>,
    file: &'a str,
    engine: Engine,
}

impl In<'_> {
    fn scalar8(&self, name: &str, dtype: Dtype) -> Result<[u8; 8]> {
        let v = self.view(name, dtype)?;
        v.data()
            .try_into()
            .map_err(|_| NnError::file(self.file, name, "expected exactly one value"))
    }
    fn scale(&self, p: &str) -> Result<f64> {
        let n = join(p, "scale");
        let s = f64::from_le_bytes(self.scalar8(&n, Dtype::F64)?);
        rquant_core::tensor::check_scale("load", s)
            .map_err(|e| NnError::file(self.file, &n, e.to_string()))?;
        Ok(s)
    }
    fn zero_point(&self, p: &str) -> Result<i64> {
        let n = join(p, "zero_point");
        let z = i64::from_le_bytes(self.scalar8(&n, Dtype::I64)?);
        rquant_core::tensor::check_zero_point("load", z, rquant_core::QDType::QUInt8)
            .map_err(|e| NnError::file(self.file, &n, e.to_string()))?;
        Ok(z)
    }
    fn view(&self, name: &str, dtype: Dtype) -> Result<TensorView<'_>> {
        let v = self
            .st
            .tensor(name)
            .map_err(|_| NnError::file(self.file, name, "missing tensor"))?;
        if v.dtype() != dtype {
            return Err(NnError::file(
                self.file,
                name,
                format!("dtype {:?}, expected {dtype:?}", v.dtype()),
            ));
        }
        Ok(v)
    }
    /// Check tensor `name` is F32 of `shape` without reading it.
    fn expect_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        let v = self.view(name, Dtype::F32)?;
        if v.shape() != shape {
            return Err(NnError::file(
                self.file,
                name,
                format!("shape {:?}, expected {shape:?}", v.shape()),
            ));
        }
        Ok(())
    }
    fn f32(&self, name: &str) -> Result<Tensor> {
        f32_of(self.file, name, &self.view(name, Dtype::F32)?)
    }
    fn bias(&self, p: &str, has: bool) -> Result<Option<Vec<f32>>> {
        if !has {
            return Ok(None);
        }
        Ok(Some(self.f32(&join(p, "bias"))?.into_data()))
    }
    fn qweight(&self, p: &str, qscheme: &J) -> Result<QTensor<i8>> {
        let wn = join(p, "weight");
        let v = self.view(&wn, Dtype::I8)?;
        let data: Vec<i8> = v.data().iter().map(|&b| b as i8).collect();
        let sn = join(p, "weight_scale");
        let zn = join(p, "weight_zero_point");
        let s: Vec<f64> = self
            .view(&sn, Dtype::F64)?
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let z: Vec<i64> = self
            .view(&zn, Dtype::I64)?
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let scheme = qscheme
            .as_str()
            .and_then(QScheme::from_name)
            .ok_or_else(|| NnError::file(self.file, &wn, format!("unknown qscheme {qscheme}")))?;
        let qp = if scheme.is_per_channel() {
            QParams::PerChannel {
                scales: s,
                zero_points: z,
                axis: 0,
            }
        } else {
            if s.len() != 1 || z.len() != 1 {
                return Err(NnError::file(
                    self.file,
                    &sn,
                    "per-tensor weight needs exactly one scale and zero point",
                ));
            }
            QParams::per_tensor(s[0], z[0])
        };
        QTensor::with_qscheme(v.shape().to_vec(), data, qp, scheme)
            .map_err(|e| NnError::file(self.file, &wn, e.to_string()))
    }
}

fn field<'a>(file: &str, p: &str, j: &'a J, k: &str) -> Result<&'a J> {
    j.get(k)
        .ok_or_else(|| NnError::file(file, format!("modules/{p}"), format!("missing field {k:?}")))
}

fn get_f64(file: &str, p: &str, j: &J, k: &str) -> Result<f64> {
    field(file, p, j, k)?
        .as_f64()
        .ok_or_else(|| NnError::file(file, format!("modules/{p}.{k}"), "not a number"))
}
/// A size or index: negative numbers are errors, never clamped.
fn get_usize(file: &str, p: &str, j: &J, k: &str) -> Result<usize> {
    field(file, p, j, k)?
        .as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| {
            NnError::file(
                file,
                format!("modules/{p}.{k}"),
                "not a non-negative integer",
            )
        })
}
fn get_bool(file: &str, p: &str, j: &J, k: &str) -> Result<bool> {
    field(file, p, j, k)?
        .as_bool()
        .ok_or_else(|| NnError::file(file, format!("modules/{p}.{k}"), "not a boolean"))
}
/// A kernel, stride, padding, dilation or output size: two integers in
/// `0..=i32::MAX` (a larger one overflowed the shape arithmetic when run).
fn get_pair(file: &str, p: &str, j: &J, k: &str) -> Result<[usize; 2]> {
    let one = |x: &J| {
        x.as_u64()
            .filter(|&u| u <= i32::MAX as u64)
            .map(|u| u as usize)
    };
    if let Some([a, b]) = field(file, p, j, k)?.as_array().map(Vec::as_slice) {
        if let (Some(a), Some(b)) = (one(a), one(b)) {
            return Ok([a, b]);
        }
    }
    Err(NnError::file(
        file,
        format!("modules/{p}.{k}"),
        format!("expected two integers in [0, {}]", i32::MAX),
    ))
}
fn get_conv(file: &str, p: &str, j: &J) -> Result<Conv2dParams> {
    let c = field(file, p, j, "params")?;
    Ok(Conv2dParams {
        stride: get_pair(file, p, c, "stride")?,
        padding: get_pair(file, p, c, "padding")?,
        dilation: get_pair(file, p, c, "dilation")?,
        groups: get_usize(file, p, c, "groups")?,
    })
}

/// The weight shapes of RNN layer `l`: `[gates·hidden, in]` and `[gates·hidden, hidden]`.
fn rnn_shapes(
    file: &str,
    p: &str,
    kind: RnnKind,
    input_size: usize,
    hidden_size: usize,
    l: usize,
) -> Result<([usize; 2], [usize; 2])> {
    let g = kind
        .gates()
        .checked_mul(hidden_size)
        .ok_or_else(|| NnError::file(file, format!("modules/{p}.hidden_size"), "too large"))?;
    let inp = if l == 0 { input_size } else { hidden_size };
    Ok(([g, inp], [g, hidden_size]))
}

fn load_dyn(inp: &In, p: &str, j: &J) -> Result<DynWeight> {
    let f = inp.file;
    let e = &inp.engine;
    let has_bias = get_bool(f, p, j, "bias")?;
    Ok(match field(f, p, j, "dtype")?.as_str() {
        Some("qint8") => DynWeight::Int8 {
            packed: Arc::new(
                e.pack_linear(
                    inp.qweight(p, field(f, p, j, "qscheme")?)?,
                    inp.bias(p, has_bias)?,
                )
                .map_err(|x| NnError::file(f, p, x.to_string()))?,
            ),
            reduce_range: get_bool(f, p, j, "reduce_range")? && e.dynamic_reduce_range(),
        },
        Some("float16") => DynWeight::Fp16(Arc::new(
            e.pack_linear_fp16(inp.f32(&join(p, "weight"))?, inp.bias(p, has_bias)?)
                .map_err(|x| NnError::file(f, p, x.to_string()))?,
        )),
        _ => {
            return Err(NnError::file(
                f,
                format!("modules/{p}.dtype"),
                "expected \"qint8\" or \"float16\"",
            ))
        }
    })
}

fn build(inp: &In, p: &str, j: &J) -> Result<Module> {
    let f = inp.file;
    let e = &inp.engine;
    let ty = field(f, p, j, "type")?.as_str().unwrap_or("");
    let packerr = |x: rquant_core::QuantError| NnError::file(f, p, x.to_string());
    Ok(match ty {
        "Sequential" => {
            let ch = field(f, p, j, "children")?
                .as_array()
                .ok_or_else(|| NnError::file(f, format!("modules/{p}.children"), "not an array"))?;
            let mut s = Sequential::new();
            for c in ch {
                let (Some(n), Some(sub)) = (c.get(0).and_then(|n| n.as_str()), c.get(1)) else {
                    return Err(NnError::file(
                        f,
                        format!("modules/{p}.children"),
                        "entries must be [name, module]",
                    ));
                };
                s.children
                    .push((n.to_string(), build(inp, &join(p, n), sub)?));
            }
            Module::Sequential(s)
        }
        "Identity" => Module::Identity,
        "Embedding" => Module::Embedding(
            crate::rnn::Embedding::from_weight(inp.f32(&join(p, "weight"))?)
                .map_err(|x| NnError::file(f, p, x.to_string()))?,
        ),
        "BatchNorm2d" | "BNReLU2d" | "BatchNorm1d" => {
            let w = inp.f32(&join(p, "weight"))?;
            let mut b = crate::layers::BatchNorm2d::new(w.numel());
            let check = |t: Tensor, n: &str| -> Result<Tensor> {
                if t.numel() != w.numel() {
                    return Err(NnError::file(
                        f,
                        join(p, n),
                        "length differs from the weight",
                    ));
                }
                Ok(t)
            };
            b.bias.value = check(inp.f32(&join(p, "bias"))?, "bias")?;
            b.running_mean = check(inp.f32(&join(p, "running_mean"))?, "running_mean")?;
            b.running_var = check(inp.f32(&join(p, "running_var"))?, "running_var")?;
            b.weight.value = w;
            b.eps = get_f64(f, p, j, "eps")? as f32;
            b.relu = get_bool(f, p, j, "relu")?;
            b.one_d = ty == "BatchNorm1d";
            Module::BatchNorm2d(b)
        }
        "LSTM" | "GRU" => {
            let kind = if ty == "LSTM" {
                RnnKind::Lstm
            } else {
                RnnKind::Gru
            };
            let (input_size, hidden_size, num_layers) = (
                get_usize(f, p, j, "input_size")?,
                get_usize(f, p, j, "hidden_size")?,
                get_usize(f, p, j, "num_layers")?,
            );
            // The sizes are the file's claim: check them against the weights
            // it holds before `Rnn::new` allocates what they declare.
            for l in 0..num_layers {
                let (ih, hh) = rnn_shapes(f, p, kind, input_size, hidden_size, l)?;
                inp.expect_shape(&join(p, &format!("weight_ih_l{l}")), &ih)?;
                inp.expect_shape(&join(p, &format!("weight_hh_l{l}")), &hh)?;
            }
            let mut r = crate::rnn::Rnn::new(
                kind,
                input_size,
                hidden_size,
                num_layers,
                get_bool(f, p, j, "batch_first")?,
                &mut crate::layers::Rng(0),
            );
            if !get_bool(f, p, j, "bias")? {
                for l in &mut r.layers {
                    l.b_ih = None;
                    l.b_hh = None;
                }
            }
            for (name, prm) in r.params_mut() {
                let full = join(p, &name);
                let t = inp.f32(&full)?;
                if t.shape() != prm.value.shape() {
                    return Err(NnError::file(
                        f,
                        full,
                        format!("shape {:?}, expected {:?}", t.shape(), prm.value.shape()),
                    ));
                }
                prm.value = t;
            }
            Module::Rnn(r)
        }
        "QuantStub" => Module::QuantStub,
        "DeQuantStub" => Module::DeQuantStub,
        "Flatten" => {
            let mut fl = Flatten::default();
            fl.start_dim = get_usize(f, p, j, "start_dim")?;
            Module::Flatten(fl)
        }
        "Dropout" => Module::Dropout(Dropout::new(get_f64(f, p, j, "p")? as f32, 0)),
        "ReLU" => Module::Act(Activation::new(ActKind::ReLU)),
        "ReLU6" => Module::Act(Activation::new(ActKind::ReLU6)),
        "Hardswish" => Module::Act(Activation::new(ActKind::Hardswish)),
        "MaxPool2d" => {
            let mut m = MaxPool2d::new(1, 1);
            m.kernel = get_pair(f, p, j, "kernel")?;
            m.stride = get_pair(f, p, j, "stride")?;
            m.padding = get_pair(f, p, j, "padding")?;
            m.dilation = get_pair(f, p, j, "dilation")?;
            m.ceil_mode = get_bool(f, p, j, "ceil_mode")?;
            Module::MaxPool2d(m)
        }
        "AvgPool2d" => {
            let mut m = AvgPool2d::new(1, 1);
            m.kernel = get_pair(f, p, j, "kernel")?;
            m.stride = get_pair(f, p, j, "stride")?;
            m.padding = get_pair(f, p, j, "padding")?;
            m.ceil_mode = get_bool(f, p, j, "ceil_mode")?;
            m.count_include_pad = get_bool(f, p, j, "count_include_pad")?;
            m.divisor_override = match j.get("divisor_override") {
                None | Some(J::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|v| usize::try_from(v).ok())
                        .filter(|&v| v > 0)
                        .ok_or_else(|| {
                            NnError::file(
                                f,
                                format!("modules/{p}.divisor_override"),
                                "not null or a positive integer",
                            )
                        })?,
                ),
            };
            Module::AvgPool2d(m)
        }
        "AdaptiveAvgPool2d" => {
            Module::AdaptiveAvgPool2d(AdaptiveAvgPool2d::new(get_pair(f, p, j, "output_size")?))
        }
        "Linear" | "LinearReLU" => {
            let b = inp.bias(p, get_bool(f, p, j, "bias")?)?;
            let mut l = Linear::from_weights(
                inp.f32(&join(p, "weight"))?,
                b.map(|b| Tensor::new([b.len()], b).unwrap()),
            )
            .map_err(|x| NnError::file(f, p, x.to_string()))?;
            l.relu = get_bool(f, p, j, "relu")?;
            Module::Linear(l)
        }
        "Conv2d" | "ConvReLU2d" => {
            let b = inp.bias(p, get_bool(f, p, j, "bias")?)?;
            let mut c = Conv2d::from_weights(
                inp.f32(&join(p, "weight"))?,
                b.map(|b| Tensor::new([b.len()], b).unwrap()),
                get_conv(f, p, j)?,
            )
            .map_err(|x| NnError::file(f, p, x.to_string()))?;
            c.relu = get_bool(f, p, j, "relu")?;
            Module::Conv2d(c)
        }
        "Quantize" => {
            let (scale, zero_point) = (inp.scale(p)?, inp.zero_point(p)?);
            rquant_core::tensor::check_scale("Quantize", scale).map_err(packerr)?;
            rquant_core::tensor::check_zero_point(
                "Quantize",
                zero_point,
                rquant_core::QDType::QUInt8,
            )
            .map_err(packerr)?;
            Module::Quantized(QModule::Quantize { scale, zero_point })
        }
        "DeQuantize" => Module::Quantized(QModule::DeQuantize),
        "QuantizedLinear" => {
            let w = inp.qweight(p, field(f, p, j, "qscheme")?)?;
            let b = inp.bias(p, get_bool(f, p, j, "bias")?)?;
            Module::Quantized(QModule::Linear(QLinear {
                engine: inp.engine.clone(),
                packed: Arc::new(e.pack_linear(w, b).map_err(packerr)?),
                scale: inp.scale(p)?,
                zero_point: inp.zero_point(p)?,
                relu: get_bool(f, p, j, "relu")?,
            }))
        }
        "QuantizedConv2d" => {
            let w = inp.qweight(p, field(f, p, j, "qscheme")?)?;
            let b = inp.bias(p, get_bool(f, p, j, "bias")?)?;
            Module::Quantized(QModule::Conv2d(QConv2d {
                engine: inp.engine.clone(),
                packed: Arc::new(e.pack_conv2d(w, b, get_conv(f, p, j)?).map_err(packerr)?),
                scale: inp.scale(p)?,
                zero_point: inp.zero_point(p)?,
                relu: get_bool(f, p, j, "relu")?,
            }))
        }
        "DynamicQuantizedLinear" => Module::Quantized(QModule::DynamicLinear(QDynLinear {
            engine: inp.engine.clone(),
            weight: load_dyn(inp, p, field(f, p, j, "weight")?)?,
            relu: get_bool(f, p, j, "relu")?,
        })),
        "DynamicQuantizedRNN" => {
            let kind = match field(f, p, j, "kind")?.as_str() {
                Some("LSTM") => RnnKind::Lstm,
                Some("GRU") => RnnKind::Gru,
                _ => {
                    return Err(NnError::file(
                        f,
                        format!("modules/{p}.kind"),
                        "expected LSTM or GRU",
                    ))
                }
            };
            let layers = field(f, p, j, "layers")?
                .as_array()
                .ok_or_else(|| NnError::file(f, format!("modules/{p}.layers"), "not an array"))?
                .iter()
                .enumerate()
                .map(|(l, v)| {
                    let (Some(a), Some(b)) = (v.get(0), v.get(1)) else {
                        return Err(NnError::file(
                            f,
                            format!("modules/{p}.layers"),
                            "entries must be [ih, hh]",
                        ));
                    };
                    Ok((
                        load_dyn(inp, &join(p, &format!("ih_l{l}")), a)?,
                        load_dyn(inp, &join(p, &format!("hh_l{l}")), b)?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let (input_size, hidden_size) = (
                get_usize(f, p, j, "input_size")?,
                get_usize(f, p, j, "hidden_size")?,
            );
            for (l, (a, b)) in layers.iter().enumerate() {
                let (ih, hh) = rnn_shapes(f, p, kind, input_size, hidden_size, l)?;
                for (w, want, n) in [(a, ih, "ih"), (b, hh, "hh")] {
                    let got = match w {
                        DynWeight::Int8 { packed, .. } => packed.weight_shape(),
                        DynWeight::Fp16(pk) => pk.weight().shape(),
                    };
                    if got != want {
                        return Err(NnError::file(
                            f,
                            join(p, &format!("{n}_l{l}.weight")),
                            format!("shape {got:?}, expected {want:?}"),
                        ));
                    }
                }
            }
            Module::Quantized(QModule::DynamicRnn(QDynRnn {
                engine: inp.engine.clone(),
                kind,
                input_size,
                hidden_size,
                batch_first: get_bool(f, p, j, "batch_first")?,
                layers,
            }))
        }
        "QFunctional" => Module::Quantized(QModule::Functional(QFunctional {
            engine: inp.engine.clone(),
            scale: inp.scale(p)?,
            zero_point: inp.zero_point(p)?,
        })),
        "QuantizedHardswish" => Module::Quantized(QModule::Hardswish {
            engine: inp.engine.clone(),
            scale: inp.scale(p)?,
            zero_point: inp.zero_point(p)?,
        }),
        other => {
            return Err(NnError::file(
                f,
                format!("modules/{p}.type"),
                format!("unknown module type {other:?}"),
            ))
        }
    })
}

/// Load a quantized model, packing its weights with `engine` (None: the
/// current engine). Any engine gives the same outputs.
pub fn quantized_from_bytes(
    bytes: &[u8],
    file: &str,
    engine: Option<Engine>,
) -> Result<(Module, QuantizedMeta)> {
    let engine = match engine {
        Some(e) => e,
        None => registry::engine()?,
    };
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| NnError::file(file, "header", format!("not a valid safetensors file: {e}")))?;
    let md = meta.metadata().clone().unwrap_or_default();
    let fmt = md.get("format").map(String::as_str).unwrap_or("<missing>");
    if fmt != FORMAT {
        return Err(NnError::file(
            file,
            "__metadata__.format",
            format!("{fmt:?} is not {FORMAT:?} (a float state_dict? use load_float)"),
        ));
    }
    let tree: J = serde_json::from_str(
        md.get("modules")
            .ok_or_else(|| NnError::file(file, "__metadata__.modules", "missing"))?,
    )
    .map_err(|e| NnError::file(file, "__metadata__.modules", format!("invalid JSON: {e}")))?;
    let st = parse(bytes, file)?;
    let inp = In { st, file, engine };
    let m = build(&inp, "", &tree)?;
    Ok((
        m,
        QuantizedMeta {
            engine: md.get("engine").cloned().unwrap_or_default(),
            qconfig: md.get("qconfig").cloned().unwrap_or_default(),
        },
    ))
}

pub fn load_quantized(path: &str, engine: Option<Engine>) -> Result<(Module, QuantizedMeta)> {
    let b = read(path)?;
    quantized_from_bytes(&b, path, engine)
}
