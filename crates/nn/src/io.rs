//! safetensors in and out: float state_dicts by PyTorch name, and quantized
//! models with metadata (format, engine, qconfig, module tree) so a model
//! converted once loads on any engine with identical outputs.
//!
//! A quantized model file is a safetensors file whose `__metadata__` holds
//! `format` ([`FORMAT`]), `engine`, `qconfig` and `modules`: the module tree
//! as JSON, one object per module, `{"type": TAG, …attributes, "children":
//! [[name, module], …]}`. `TAG` is the module's
//! [`Layer::type_name`](crate::module::Layer::type_name); its tensors are
//! named `{path}.{name}` as in a PyTorch state_dict. Loading looks each tag
//! up in a [`ModuleRegistry`] (`ModuleRegistry::default()` for rquant's
//! modules; add your own). Files of format `rquant.quantized.v1` (whose
//! fused modules were tagged by their unfused names plus a `relu`
//! attribute) still load.

use std::collections::HashMap;

use rquant_core::{Engine, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde_json::{json, Value as J};

use crate::error::{NnError, Result};
use crate::format::{join, to_bytes_f32, Saver};
use crate::module::Module;
use crate::registry::{f32_of, ModuleRegistry, Node, Source};

/// The format tag written to (and required in) quantized model files.
pub const FORMAT: &str = "rquant.quantized.v2";
/// The previous format tag, still read.
pub const FORMAT_V1: &str = "rquant.quantized.v1";

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
    SafeTensors::deserialize(bytes).map_err(|e| header_error(bytes, file, e))
}

/// A safetensors parse error of `file` as an error naming it; for a cut-short
/// file (a header whose offsets run past the data), the first tensor in data
/// order that is not all there is named.
pub fn header_error(bytes: &[u8], file: &str, e: safetensors::SafeTensorError) -> NnError {
    if matches!(e, safetensors::SafeTensorError::MetadataIncompleteBuffer) {
        let cut = bytes
            .get(..8)
            .and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok())
            .and_then(|n| Some((n, bytes.get(8..8usize.checked_add(n)?)?)))
            .and_then(|(n, h)| Some((n, serde_json::from_slice::<J>(h).ok()?)));
        if let Some((n, J::Object(h))) = cut {
            let have = (bytes.len() - 8 - n) as u64;
            let first = h
                .iter()
                .filter_map(|(k, v)| {
                    let o = v.get("data_offsets")?.as_array()?;
                    Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?, k))
                })
                .filter(|&(_, end, _)| end > have)
                .min();
            if let Some((start, end, name)) = first {
                return NnError::file(
                    file,
                    name.as_str(),
                    format!(
                        "data bytes {start}..{end}, but the file holds only {have} bytes of \
                         data (truncated?)"
                    ),
                );
            }
        }
    }
    NnError::file(file, "header", format!("not a valid safetensors file: {e}"))
}

/// Integer dtypes PyTorch state_dicts hold buffers in (`num_batches_tracked`
/// is int64).
fn is_integer(d: Dtype) -> bool {
    matches!(
        d,
        Dtype::BOOL
            | Dtype::U8
            | Dtype::I8
            | Dtype::I16
            | Dtype::U16
            | Dtype::I32
            | Dtype::U32
            | Dtype::I64
            | Dtype::U64
    )
}

/// Read the float tensors of a safetensors file (a PyTorch state_dict), in
/// file order. Integer buffers, such as BatchNorm's int64
/// `num_batches_tracked`, are checked and skipped: rquant's float modules
/// keep no integer state (a `num_batches_tracked` must hold one value).
/// Other dtypes (float16, bfloat16, float64) are errors naming the tensor.
pub fn read_state_dict(path: &str) -> Result<Vec<(String, Tensor)>> {
    let bytes = read(path)?;
    state_dict_from_bytes(&bytes, path)
}

/// [`read_state_dict`] from bytes (`file` names them in errors).
pub fn state_dict_from_bytes(bytes: &[u8], file: &str) -> Result<Vec<(String, Tensor)>> {
    let st = parse(bytes, file)?;
    let mut names: Vec<(usize, String)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (v.data().as_ptr() as usize, n))
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for (_, n) in names {
        let v = st
            .tensor(&n)
            .map_err(|e| NnError::file(file, &n, e.to_string()))?;
        if is_integer(v.dtype()) {
            let count: usize = v.shape().iter().product();
            if n.ends_with("num_batches_tracked") && count != 1 {
                return Err(NnError::file(
                    file,
                    &n,
                    format!("shape {:?}: num_batches_tracked holds one count", v.shape()),
                ));
            }
            continue;
        }
        out.push((n.clone(), f32_of(file, &n, &v)?));
    }
    Ok(out)
}

/// Load float weights into `model` by PyTorch name (strict: missing and
/// unexpected keys are errors naming the key).
pub fn load_float(model: &mut Module, path: &str) -> Result<()> {
    let sd = read_state_dict(path)?;
    model.load_state_dict(&sd, true, path)
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

fn node(m: &Module, p: &str, out: &mut Saver) -> Result<J> {
    out.set_path(p);
    let ctx = |e: NnError| if p.is_empty() { e } else { e.within(p) };
    let attrs = m.layer().save(out).map_err(ctx)?;
    let mut obj = match attrs {
        J::Object(o) => o,
        J::Null => Default::default(),
        other => {
            return Err(ctx(NnError::module(
                "",
                format!(
                    "{}: save returned {other}, not a JSON object",
                    m.type_name()
                ),
            )))
        }
    };
    let children = m.children();
    if !children.is_empty() {
        let ch = children
            .into_iter()
            .map(|(n, c)| Ok(json!([n, node(c, &join(p, n), out)?])))
            .collect::<Result<Vec<_>>>()?;
        obj.insert("children".into(), J::Array(ch));
    }
    obj.insert("type".into(), J::String(m.type_name()));
    Ok(J::Object(obj))
}

/// Serialize a converted model (module tree, int8 weights, qparams) with the
/// engine that packed it and a free-form qconfig description as metadata.
pub fn quantized_bytes(model: &Module, qconfig: &str) -> Result<Vec<u8>> {
    let mut out = Saver::default();
    let tree = node(model, "", &mut out)?;
    let engine = model
        .named_modules()
        .iter()
        .find_map(|(_, m)| m.engine().map(|e| e.name()))
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

fn build(src: &Source, reg: &ModuleRegistry, p: &str, j: &J) -> Result<Module> {
    let f = src.file;
    let ty = j
        .get("type")
        .ok_or_else(|| NnError::file(f, format!("modules/{p}"), "missing field \"type\""))?
        .as_str()
        .unwrap_or("");
    let mut children = Vec::new();
    if let Some(ch) = j.get("children") {
        let ch = ch
            .as_array()
            .ok_or_else(|| NnError::file(f, format!("modules/{p}.children"), "not an array"))?;
        for c in ch {
            let (Some(n), Some(sub)) = (c.get(0).and_then(|n| n.as_str()), c.get(1)) else {
                return Err(NnError::file(
                    f,
                    format!("modules/{p}.children"),
                    "entries must be [name, module]",
                ));
            };
            children.push((n.to_string(), build(src, reg, &join(p, n), sub)?));
        }
    }
    let load = reg.get(ty).ok_or_else(|| {
        NnError::file(
            f,
            format!("modules/{p}.type"),
            format!("unknown module type {ty:?} (register a loader for it)"),
        )
    })?;
    let mut n = Node::new(p.to_string(), ty.to_string(), j, children, src);
    let mut m = load(&mut n)?;
    if let Some(o) = j.get("observed") {
        // A prepared model's observed module: wrap it again with its
        // observer (or fake quant) and qconfig, state restored.
        let post = crate::resume::load_act_post(
            &n,
            "activation_post_process",
            o.get("post")
                .ok_or_else(|| n.attr_error("observed", "missing post"))?,
        )?;
        let qconfig = crate::resume::qconfig_from_json(
            o.get("qconfig")
                .ok_or_else(|| n.attr_error("observed", "missing qconfig"))?,
        )
        .map_err(|d| n.attr_error("observed.qconfig", d))?;
        m = crate::observed::Observed {
            module: m,
            post,
            qconfig,
        }
        .into();
    }
    let left = n.remaining_children();
    if !left.is_empty() {
        return Err(NnError::file(
            f,
            format!("modules/{p}.children"),
            format!("{ty} does not take children {left:?}"),
        ));
    }
    Ok(m)
}

/// Load a quantized model, packing its weights with `engine` (None: the
/// current engine). Any engine gives the same outputs.
pub fn quantized_from_bytes(
    bytes: &[u8],
    file: &str,
    engine: Option<Engine>,
) -> Result<(Module, QuantizedMeta)> {
    quantized_from_bytes_with(bytes, file, engine, &ModuleRegistry::default())
}

/// [`quantized_from_bytes`] with your own registry (your modules' loaders).
pub fn quantized_from_bytes_with(
    bytes: &[u8],
    file: &str,
    engine: Option<Engine>,
    registry: &ModuleRegistry,
) -> Result<(Module, QuantizedMeta)> {
    let engine = match engine {
        Some(e) => e,
        None => rquant_core::registry::engine()?,
    };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| header_error(bytes, file, e))?;
    let md = meta.metadata().clone().unwrap_or_default();
    let fmt = md.get("format").map(String::as_str).unwrap_or("<missing>");
    if fmt != FORMAT && fmt != FORMAT_V1 {
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
    let src = Source {
        st,
        file,
        engine: engine.clone(),
    };
    let mut m = build(&src, registry, "", &tree)?;
    // Modules without weights of their own (pooling, ReLU) run on it too.
    crate::quantize::to_engine(&mut m, &engine)
        .map_err(|e| NnError::file(file, "modules", e.to_string()))?;
    Ok((
        m,
        QuantizedMeta {
            engine: md.get("engine").cloned().unwrap_or_default(),
            qconfig: md.get("qconfig").cloned().unwrap_or_default(),
        },
    ))
}

/// Load a quantized model file (see [`quantized_from_bytes`]).
pub fn load_quantized(path: &str, engine: Option<Engine>) -> Result<(Module, QuantizedMeta)> {
    load_quantized_with(path, engine, &ModuleRegistry::default())
}

/// [`load_quantized`] with your own registry.
pub fn load_quantized_with(
    path: &str,
    engine: Option<Engine>,
    registry: &ModuleRegistry,
) -> Result<(Module, QuantizedMeta)> {
    let b = read(path)?;
    quantized_from_bytes_with(&b, path, engine, registry)
}
