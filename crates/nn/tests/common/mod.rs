//! Shared helpers of the API tests: reading the reference cases that
//! tools/api/gen_api_cases.py (torch 2.15) wrote to tests/data/api.
#![allow(dead_code)]

use std::collections::BTreeMap;

use rquant_core::{QParams, QTensor, Tensor};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

/// One reference case: its tensors and its `meta` JSON.
pub struct Case {
    pub name: String,
    pub tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    pub meta: serde_json::Value,
}

pub fn case(name: &str) -> Case {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/api")
        .join(format!("{name}.safetensors"));
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let (_, md) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: serde_json::Value = serde_json::from_str(
        md.metadata()
            .as_ref()
            .and_then(|m| m.get("meta"))
            .map(String::as_str)
            .unwrap_or("{}"),
    )
    .unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = BTreeMap::new();
    for (n, v) in st.tensors() {
        tensors.insert(
            n.clone(),
            (v.dtype(), v.shape().to_vec(), v.data().to_vec()),
        );
    }
    Case {
        name: name.to_string(),
        tensors,
        meta,
    }
}

impl Case {
    pub fn has(&self, k: &str) -> bool {
        self.tensors.contains_key(k)
    }
    fn get(&self, k: &str) -> &(Dtype, Vec<usize>, Vec<u8>) {
        self.tensors
            .get(k)
            .unwrap_or_else(|| panic!("{}: no tensor {k}", self.name))
    }
    pub fn shape(&self, k: &str) -> Vec<usize> {
        self.get(k).1.clone()
    }
    pub fn f32(&self, k: &str) -> Tensor {
        let (d, s, b) = self.get(k);
        let v: Vec<f32> = match d {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            other => panic!("{}: {k} is {other:?}, not float", self.name),
        };
        Tensor::new(s.clone(), v).unwrap()
    }
    pub fn f64s(&self, k: &str) -> Vec<f64> {
        let (d, _, b) = self.get(k);
        match d {
            Dtype::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            other => panic!("{}: {k} is {other:?}", self.name),
        }
    }
    pub fn i64s(&self, k: &str) -> Vec<i64> {
        let (d, _, b) = self.get(k);
        match d {
            Dtype::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::U8 => b.iter().map(|&v| v as i64).collect(),
            Dtype::I8 => b.iter().map(|&v| v as i8 as i64).collect(),
            other => panic!("{}: {k} is {other:?}", self.name),
        }
    }
    pub fn u8s(&self, k: &str) -> Vec<u8> {
        let (d, _, b) = self.get(k);
        assert!(matches!(d, Dtype::U8), "{}: {k} is {d:?}", self.name);
        b.clone()
    }
    pub fn i8s(&self, k: &str) -> Vec<i8> {
        let (d, _, b) = self.get(k);
        assert!(matches!(d, Dtype::I8), "{}: {k} is {d:?}", self.name);
        b.iter().map(|&v| v as i8).collect()
    }
    /// A quint8 tensor stored as codes `k` with qparams `[scale, zp]` from `meta[qp]`.
    pub fn quint8(&self, k: &str, scale: f64, zp: i64) -> QTensor<u8> {
        QTensor::from_int_repr(self.shape(k), self.u8s(k), QParams::per_tensor(scale, zp)).unwrap()
    }
    pub fn qp(&self, key: &str) -> (f64, i64) {
        let v = &self.meta[key];
        (v[0].as_f64().unwrap(), v[1].as_i64().unwrap())
    }
}

/// Every engine and ISA path this machine has.
pub fn engines() -> Vec<rquant_core::Engine> {
    rquant_nn::engines::init();
    rquant_nn::engines::all_paths()
}

/// Max |a − b| / max(1, |b|).
pub fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}
