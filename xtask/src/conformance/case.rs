//! Reading one golden case: a safetensors file whose `__metadata__.case`
//! holds `{"op", "attrs", "source", ["atol", "rtol"]}` (../shared/CONFORMANCE.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// A tensor of a case: shape and typed data.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    U8(Vec<u8>),
    I8(Vec<i8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    /// IEEE half floats (the scales and biases of 4-bit embedding bags).
    F16(Vec<half::f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Data {
    pub fn dtype(&self) -> &'static str {
        match self {
            Data::U8(_) => "U8",
            Data::I8(_) => "I8",
            Data::I32(_) => "I32",
            Data::I64(_) => "I64",
            Data::F16(_) => "F16",
            Data::F32(_) => "F32",
            Data::F64(_) => "F64",
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Data::U8(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::F16(v) => v.len(),
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

/// One parsed case.
#[derive(Debug, Clone)]
pub struct Case {
    pub file: String,
    pub op: String,
    pub attrs: serde_json::Map<String, Value>,
    pub source: String,
    pub atol: Option<f64>,
    pub rtol: Option<f64>,
    pub inputs: BTreeMap<String, Tensor>,
    pub outputs: BTreeMap<String, Tensor>,
    /// Attributes read so far, to report the ones nobody read.
    used: std::cell::RefCell<BTreeSet<String>>,
}

/// An error while reading or running a case; names the file and the field.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseError {
    pub file: String,
    pub msg: String,
}

impl std::fmt::Display for CaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.msg)
    }
}

fn to_vec<T: Copy, const N: usize>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk of N")))
        .collect()
}

impl Case {
    pub fn read(path: &Path) -> Result<Case, CaseError> {
        let file = path.display().to_string();
        let err = |msg: String| CaseError {
            file: file.clone(),
            msg,
        };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Case::parse(&file, &bytes)
    }

    pub fn parse(file: &str, bytes: &[u8]) -> Result<Case, CaseError> {
        let err = |msg: String| CaseError {
            file: file.to_string(),
            msg,
        };
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let case_json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("case"))
            .ok_or_else(|| err("__metadata__ has no \"case\" key".into()))?;
        let case: Value = serde_json::from_str(case_json)
            .map_err(|e| err(format!("case metadata is not JSON: {e}")))?;
        let obj = case
            .as_object()
            .ok_or_else(|| err("case metadata is not a JSON object".into()))?;
        for k in obj.keys() {
            if !["op", "attrs", "source", "atol", "rtol"].contains(&k.as_str()) {
                return Err(err(format!("unknown key {k:?} in case metadata")));
            }
        }
        let op = obj
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| err("case metadata has no string \"op\"".into()))?
            .to_string();
        let attrs = match obj.get("attrs") {
            None => serde_json::Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(err("\"attrs\" is not an object".into())),
        };
        let num = |k: &str| -> Result<Option<f64>, CaseError> {
            match obj.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .map(Some)
                    .ok_or_else(|| err(format!("\"{k}\" must be a non-negative number"))),
            }
        };
        let (atol, rtol) = (num("atol")?, num("rtol")?);
        let mut inputs = BTreeMap::new();
        let mut outputs = BTreeMap::new();
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data = match view.dtype() {
                Dtype::U8 => Data::U8(raw.to_vec()),
                Dtype::I8 => Data::I8(raw.iter().map(|&b| b as i8).collect()),
                Dtype::I32 => Data::I32(to_vec(raw, i32::from_le_bytes)),
                Dtype::I64 => Data::I64(to_vec(raw, i64::from_le_bytes)),
                Dtype::F16 => Data::F16(to_vec(raw, half::f16::from_le_bytes)),
                Dtype::F32 => Data::F32(to_vec(raw, f32::from_le_bytes)),
                Dtype::F64 => Data::F64(to_vec(raw, f64::from_le_bytes)),
                d => return Err(err(format!("tensor {name:?}: unsupported dtype {d:?}"))),
            };
            let t = Tensor {
                shape: view.shape().to_vec(),
                data,
            };
            if let Some(n) = name.strip_prefix("in.") {
                inputs.insert(n.to_string(), t);
            } else if let Some(n) = name.strip_prefix("out.") {
                outputs.insert(n.to_string(), t);
            } else {
                return Err(err(format!("tensor {name:?} is neither in.* nor out.*")));
            }
        }
        if outputs.is_empty() {
            return Err(err("case has no out.* tensor".into()));
        }
        Ok(Case {
            file: file.to_string(),
            op,
            attrs,
            source: obj
                .get("source")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            atol,
            rtol,
            inputs,
            outputs,
            used: Default::default(),
        })
    }

    pub fn err(&self, msg: impl Into<String>) -> CaseError {
        CaseError {
            file: self.file.clone(),
            msg: msg.into(),
        }
    }

    fn attr(&self, name: &str) -> Option<&Value> {
        self.used.borrow_mut().insert(name.to_string());
        self.attrs.get(name)
    }

    /// Attributes present in the case that the op did not read.
    pub fn unused_attrs(&self) -> Vec<String> {
        let used = self.used.borrow();
        self.attrs
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect()
    }

    pub fn f64(&self, name: &str) -> Result<f64, CaseError> {
        self.attr(name)
            .and_then(Value::as_f64)
            .ok_or_else(|| self.err(format!("attr {name:?} missing or not a number")))
    }
    pub fn i64(&self, name: &str) -> Result<i64, CaseError> {
        self.attr(name)
            .and_then(Value::as_i64)
            .ok_or_else(|| self.err(format!("attr {name:?} missing or not an integer")))
    }
    pub fn opt_i64(&self, name: &str) -> Result<Option<i64>, CaseError> {
        match self.attr(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.err(format!("attr {name:?} is not an integer"))),
        }
    }
    pub fn opt_f64(&self, name: &str) -> Result<Option<f64>, CaseError> {
        match self.attr(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(format!("attr {name:?} is not a number"))),
        }
    }
    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, CaseError> {
        match self.attr(name) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("attr {name:?} is not a boolean"))),
        }
    }
    pub fn str(&self, name: &str) -> Result<String, CaseError> {
        self.attr(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.err(format!("attr {name:?} missing or not a string")))
    }
    pub fn opt_str(&self, name: &str) -> Result<Option<String>, CaseError> {
        match self.attr(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| self.err(format!("attr {name:?} is not a string"))),
        }
    }
    /// A list of numbers.
    pub fn f64s(&self, name: &str) -> Result<Vec<f64>, CaseError> {
        let v = self
            .attr(name)
            .and_then(Value::as_array)
            .ok_or_else(|| self.err(format!("attr {name:?} missing or not a list")))?;
        v.iter()
            .map(|x| {
                x.as_f64()
                    .ok_or_else(|| self.err(format!("attr {name:?} holds a non-number")))
            })
            .collect()
    }
    pub fn i64s(&self, name: &str) -> Result<Vec<i64>, CaseError> {
        let v = self
            .attr(name)
            .and_then(Value::as_array)
            .ok_or_else(|| self.err(format!("attr {name:?} missing or not a list")))?;
        v.iter()
            .map(|x| {
                x.as_i64()
                    .ok_or_else(|| self.err(format!("attr {name:?} holds a non-integer")))
            })
            .collect()
    }
    /// A pair of non-negative integers (`[h, w]`), or the default when absent.
    pub fn pair(&self, name: &str, default: Option<[usize; 2]>) -> Result<[usize; 2], CaseError> {
        if self.attrs.get(name).is_none() {
            self.attr(name);
            return default.ok_or_else(|| self.err(format!("attr {name:?} missing")));
        }
        let v = self.i64s(name)?;
        match v.as_slice() {
            [a, b] if *a >= 0 && *b >= 0 => Ok([*a as usize, *b as usize]),
            [a] if *a >= 0 => Ok([*a as usize, *a as usize]),
            _ => Err(self.err(format!(
                "attr {name:?} must be two non-negative integers, got {v:?}"
            ))),
        }
    }

    pub fn input(&self, name: &str) -> Result<&Tensor, CaseError> {
        self.inputs
            .get(name)
            .ok_or_else(|| self.err(format!("missing tensor in.{name}")))
    }
    pub fn has_input(&self, name: &str) -> bool {
        self.inputs.contains_key(name)
    }
}

macro_rules! typed_input {
    ($fn:ident, $variant:ident, $t:ty) => {
        impl Case {
            pub fn $fn(&self, name: &str) -> Result<(Vec<usize>, Vec<$t>), CaseError> {
                let t = self.input(name)?;
                match &t.data {
                    Data::$variant(v) => Ok((t.shape.clone(), v.clone())),
                    d => Err(self.err(format!(
                        "in.{name} has dtype {}, expected {}",
                        d.dtype(),
                        stringify!($variant)
                    ))),
                }
            }
        }
    };
}
typed_input!(in_u8, U8, u8);
typed_input!(in_i8, I8, i8);
typed_input!(in_i32, I32, i32);
typed_input!(in_i64, I64, i64);
typed_input!(in_f16, F16, half::f16);
typed_input!(in_f32, F32, f32);
typed_input!(in_f64, F64, f64);
