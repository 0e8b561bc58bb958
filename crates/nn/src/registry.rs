//! The registry from a model file's type tag (a module's
//! [`Layer::type_name`](crate::module::Layer::type_name)) to the function
//! that rebuilds the module, and the [`Node`] such a function reads: the
//! module's attributes, its tensors, its already-loaded children and the
//! engine to pack for. `ModuleRegistry::default()` knows every rquant
//! module; register your own types (or [`crate::block::Block`] forwards)
//! and pass the registry to [`crate::io::load_quantized_with`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rquant_core::{Conv2dParams, Engine, QParams, QScheme, QTensor, QuantError, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde_json::Value as J;

use crate::error::{NnError, Result};
use crate::format::join;
use crate::module::Module;

/// Rebuilds one module from its node.
pub type LoadFn = Arc<dyn Fn(&mut Node) -> Result<Module> + Send + Sync>;

/// Type tag → loader.
#[derive(Clone)]
pub struct ModuleRegistry {
    loaders: HashMap<String, LoadFn>,
}

impl fmt::Debug for ModuleRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut k: Vec<&String> = self.loaders.keys().collect();
        k.sort();
        f.debug_struct("ModuleRegistry").field("tags", &k).finish()
    }
}

impl ModuleRegistry {
    /// A registry with no loaders (`ModuleRegistry::default()` has rquant's).
    pub fn empty() -> Self {
        ModuleRegistry {
            loaders: HashMap::new(),
        }
    }
    /// Insert or replace the loader of `tag`.
    pub fn register(
        &mut self,
        tag: &str,
        f: impl Fn(&mut Node) -> Result<Module> + Send + Sync + 'static,
    ) {
        self.loaders.insert(tag.to_string(), Arc::new(f));
    }
    /// [`register`](ModuleRegistry::register), by value.
    pub fn with(
        mut self,
        tag: &str,
        f: impl Fn(&mut Node) -> Result<Module> + Send + Sync + 'static,
    ) -> Self {
        self.register(tag, f);
        self
    }
    pub fn get(&self, tag: &str) -> Option<&LoadFn> {
        self.loaders.get(tag)
    }
    pub fn contains(&self, tag: &str) -> bool {
        self.loaders.contains_key(tag)
    }
    /// Every registered tag, sorted.
    pub fn tags(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.loaders.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

/// The tensors of the file being loaded.
pub(crate) struct Source<'a> {
    pub st: SafeTensors<'a>,
    pub file: &'a str,
    pub engine: Engine,
}

/// One module of a file being loaded: its type tag, attributes, tensors
/// (named `{path}.{name}`), loaded children, and the engine to pack for.
/// Every error names the file and the field or tensor.
pub struct Node<'a> {
    path: String,
    tag: String,
    attrs: &'a J,
    children: Vec<(String, Module)>,
    src: &'a Source<'a>,
}

impl<'a> Node<'a> {
    pub(crate) fn new(
        path: String,
        tag: String,
        attrs: &'a J,
        children: Vec<(String, Module)>,
        src: &'a Source<'a>,
    ) -> Self {
        Node {
            path,
            tag,
            attrs,
            children,
            src,
        }
    }
    /// The module's dotted path ("" for the root).
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The type tag the loader was found under.
    pub fn type_name(&self) -> &str {
        &self.tag
    }
    pub fn file(&self) -> &str {
        self.src.file
    }
    /// The engine to pack weights for and run on.
    pub fn engine(&self) -> &Engine {
        &self.src.engine
    }
    /// The module's JSON object (`type`, attributes, `children`).
    pub fn attrs(&self) -> &J {
        self.attrs
    }

    // ---- errors ----

    /// An error about attribute `field` (`FILE: modules/PATH.FIELD: detail`).
    pub fn attr_error(&self, field: &str, detail: impl Into<String>) -> NnError {
        NnError::file(
            self.src.file,
            format!("modules/{}.{field}", self.path),
            detail,
        )
    }
    /// An error about tensor `{path}.{name}` (`name` "" is the module itself).
    pub fn tensor_error(&self, name: &str, detail: impl Into<String>) -> NnError {
        NnError::file(self.src.file, join(&self.path, name), detail)
    }
    /// An engine error while rebuilding this module (e.g. packing), named by its path.
    pub fn quant_error(&self, e: QuantError) -> NnError {
        NnError::file(self.src.file, &self.path, e.to_string())
    }

    // ---- attributes ----

    /// Attribute `k`, required.
    pub fn field(&self, k: &str) -> Result<&'a J> {
        self.attrs.get(k).ok_or_else(|| {
            NnError::file(
                self.src.file,
                format!("modules/{}", self.path),
                format!("missing field {k:?}"),
            )
        })
    }
    pub fn get_f64(&self, k: &str) -> Result<f64> {
        self.field(k)?
            .as_f64()
            .ok_or_else(|| self.attr_error(k, "not a number"))
    }
    /// A size or index: negative numbers are errors, never clamped.
    pub fn get_usize(&self, k: &str) -> Result<usize> {
        get_usize(self.src.file, &self.path, self.field(k)?, k)
    }
    pub fn get_bool(&self, k: &str) -> Result<bool> {
        self.field(k)?
            .as_bool()
            .ok_or_else(|| self.attr_error(k, "not a boolean"))
    }
    /// An optional boolean attribute (absent: None).
    pub fn get_bool_opt(&self, k: &str) -> Result<Option<bool>> {
        match self.attrs.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.attr_error(k, "not a boolean")),
        }
    }
    pub fn get_str(&self, k: &str) -> Result<&'a str> {
        self.field(k)?
            .as_str()
            .ok_or_else(|| self.attr_error(k, "not a string"))
    }
    /// A kernel, stride, padding, dilation or output size: two integers in
    /// `0..=i32::MAX` (a larger one overflowed the shape arithmetic when run).
    pub fn get_pair(&self, k: &str) -> Result<[usize; 2]> {
        get_pair(self.src.file, &self.path, self.field(k)?, k)
    }
    /// Conv2d parameters from attribute `params`.
    pub fn get_conv(&self) -> Result<Conv2dParams> {
        let c = self.field("params")?;
        let f = self.src.file;
        let get = |k: &str| {
            c.get(k).ok_or_else(|| {
                NnError::file(
                    f,
                    format!("modules/{}", self.path),
                    format!("missing field {k:?}"),
                )
            })
        };
        Ok(Conv2dParams {
            stride: get_pair(f, &self.path, get("stride")?, "stride")?,
            padding: get_pair(f, &self.path, get("padding")?, "padding")?,
            dilation: get_pair(f, &self.path, get("dilation")?, "dilation")?,
            groups: get_usize(f, &self.path, get("groups")?, "groups")?,
        })
    }

    // ---- tensors ----

    fn view(&self, full: &str, dtype: Dtype) -> Result<TensorView<'a>> {
        let v = self
            .src
            .st
            .tensor(full)
            .map_err(|_| NnError::file(self.src.file, full, "missing tensor"))?;
        if v.dtype() != dtype {
            return Err(NnError::file(
                self.src.file,
                full,
                format!("dtype {:?}, expected {dtype:?}", v.dtype()),
            ));
        }
        Ok(v)
    }
    /// Whether the file holds tensor `{path}.{name}`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.src.st.tensor(&join(&self.path, name)).is_ok()
    }
    /// A quint8 tensor `{path}.{name}` (U8) with per-tensor qparams
    /// `{name}_scale` (F64) and `{name}_zero_point` (I64).
    pub fn qweight_u8(&self, name: &str) -> Result<QTensor<u8>> {
        let full = join(&self.path, name);
        let v = self.view(&full, Dtype::U8)?;
        let sn = join(&self.path, &format!("{name}_scale"));
        let zn = join(&self.path, &format!("{name}_zero_point"));
        let s = f64::from_le_bytes(self.scalar8(&sn, Dtype::F64)?);
        let z = i64::from_le_bytes(self.scalar8(&zn, Dtype::I64)?);
        QTensor::from_int_repr(
            v.shape().to_vec(),
            v.data().to_vec(),
            QParams::per_tensor(s, z),
        )
        .map_err(|e| NnError::file(self.src.file, &full, e.to_string()))
    }
    /// A U8 tensor `{path}.{name}`: its shape and bytes.
    pub fn u8_tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<u8>)> {
        let full = join(&self.path, name);
        let v = self.view(&full, Dtype::U8)?;
        Ok((v.shape().to_vec(), v.data().to_vec()))
    }
    /// Float32 tensor `{path}.{name}`.
    pub fn f32(&self, name: &str) -> Result<Tensor> {
        let full = join(&self.path, name);
        f32_of(self.src.file, &full, &self.view(&full, Dtype::F32)?)
    }
    /// Check tensor `{path}.{name}` is F32 of `shape` without reading it.
    pub fn expect_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        let full = join(&self.path, name);
        let v = self.view(&full, Dtype::F32)?;
        if v.shape() != shape {
            return Err(NnError::file(
                self.src.file,
                full,
                format!("shape {:?}, expected {shape:?}", v.shape()),
            ));
        }
        Ok(())
    }
    /// `{path}.{sub}.bias` when `has` (sub "" is the module itself).
    pub fn bias_at(&self, sub: &str, has: bool) -> Result<Option<Vec<f32>>> {
        if !has {
            return Ok(None);
        }
        Ok(Some(self.f32(&join(sub, "bias"))?.into_data()))
    }
    /// `{path}.bias` when `has`.
    pub fn bias(&self, has: bool) -> Result<Option<Vec<f32>>> {
        self.bias_at("", has)
    }
    fn scalar8(&self, full: &str, dtype: Dtype) -> Result<[u8; 8]> {
        let v = self.view(full, dtype)?;
        v.data()
            .try_into()
            .map_err(|_| NnError::file(self.src.file, full, "expected exactly one value"))
    }
    /// Output scale `{path}.scale` (F64, checked).
    pub fn scale(&self) -> Result<f64> {
        let n = join(&self.path, "scale");
        let s = f64::from_le_bytes(self.scalar8(&n, Dtype::F64)?);
        rquant_core::tensor::check_scale("load", s)
            .map_err(|e| NnError::file(self.src.file, &n, e.to_string()))?;
        Ok(s)
    }
    /// Output zero point `{path}.zero_point` (I64, checked for quint8).
    pub fn zero_point(&self) -> Result<i64> {
        let n = join(&self.path, "zero_point");
        let z = i64::from_le_bytes(self.scalar8(&n, Dtype::I64)?);
        rquant_core::tensor::check_zero_point("load", z, rquant_core::QDType::QUInt8)
            .map_err(|e| NnError::file(self.src.file, &n, e.to_string()))?;
        Ok(z)
    }
    /// Output scale and zero point.
    pub fn qparams(&self) -> Result<(f64, i64)> {
        Ok((self.scale()?, self.zero_point()?))
    }
    /// The int8 weight `{path}.{sub}.weight` with its scales and zero points
    /// (sub "" is the module itself), in `qscheme` (the attribute's JSON).
    pub fn qweight_at(&self, sub: &str, qscheme: &J) -> Result<QTensor<i8>> {
        let p = join(&self.path, sub);
        let wn = join(&p, "weight");
        let v = self.view(&wn, Dtype::I8)?;
        let data: Vec<i8> = v.data().iter().map(|&b| b as i8).collect();
        let sn = join(&p, "weight_scale");
        let zn = join(&p, "weight_zero_point");
        let s: Vec<f64> = self
            .view(&sn, Dtype::F64)?
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        let z: Vec<i64> = self
            .view(&zn, Dtype::I64)?
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        let scheme = qscheme
            .as_str()
            .and_then(QScheme::from_name)
            .ok_or_else(|| {
                NnError::file(self.src.file, &wn, format!("unknown qscheme {qscheme}"))
            })?;
        let qp = if scheme.is_per_channel() {
            QParams::PerChannel {
                scales: s,
                zero_points: z,
                axis: 0,
            }
        } else {
            if s.len() != 1 || z.len() != 1 {
                return Err(NnError::file(
                    self.src.file,
                    &sn,
                    "per-tensor weight needs exactly one scale and zero point",
                ));
            }
            QParams::per_tensor(s[0], z[0])
        };
        QTensor::with_qscheme(v.shape().to_vec(), data, qp, scheme)
            .map_err(|e| NnError::file(self.src.file, &wn, e.to_string()))
    }
    /// The module's own int8 weight, its qscheme in attribute `qscheme`.
    pub fn qweight(&self) -> Result<QTensor<i8>> {
        self.qweight_at("", self.field("qscheme")?)
    }

    // ---- children ----

    /// Take the loaded child `name` (an error naming it when absent).
    pub fn take_child(&mut self, name: &str) -> Result<Module> {
        let i = self
            .children
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| self.attr_error("children", format!("no child named {name:?}")))?;
        Ok(self.children.remove(i).1)
    }
    /// Take every loaded child, in file order.
    pub fn take_children(&mut self) -> Vec<(String, Module)> {
        std::mem::take(&mut self.children)
    }
    /// Children not taken yet (a loader for a leaf checks there are none).
    pub fn remaining_children(&self) -> Vec<&str> {
        self.children.iter().map(|(n, _)| n.as_str()).collect()
    }
}

pub(crate) fn f32_of(file: &str, name: &str, v: &TensorView) -> Result<Tensor> {
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

fn get_usize(file: &str, p: &str, v: &J, k: &str) -> Result<usize> {
    v.as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| {
            NnError::file(
                file,
                format!("modules/{p}.{k}"),
                "not a non-negative integer",
            )
        })
}

fn get_pair(file: &str, p: &str, v: &J, k: &str) -> Result<[usize; 2]> {
    let one = |x: &J| {
        x.as_u64()
            .filter(|&u| u <= i32::MAX as u64)
            .map(|u| u as usize)
    };
    if let Some([a, b]) = v.as_array().map(Vec::as_slice) {
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
