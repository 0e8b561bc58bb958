//! Memory-mapped safetensors: the file is mapped once, its header parsed
//! once, and each tensor validated (dtype F32, exact shape) when taken.
//! Errors name the file and the tensor.

use std::collections::HashMap;
use std::ops::Range;

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

use crate::{bail, Error, Result};

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Range<usize>,
}

/// A memory-mapped safetensors file.
pub struct Weights {
    path: String,
    map: memmap2::Mmap,
    entries: HashMap<String, Entry>,
    /// A prefix tried before each name (e.g. "bert." for a BertForX checkpoint).
    prefix: String,
}

/// Open `path` for reading if it is a regular file (errors name the file):
/// a directory or device cannot be mapped, and a device such as /dev/zero
/// would be read until memory runs out.
pub(crate) fn open_regular(path: &str) -> Result<std::fs::File> {
    let f = std::fs::File::open(path).map_err(|e| Error::new(format!("{path}: {e}")))?;
    let meta = f
        .metadata()
        .map_err(|e| Error::new(format!("{path}: {e}")))?;
    if !meta.is_file() {
        bail!("{path}: not a regular file");
    }
    Ok(f)
}

impl Weights {
    pub fn open(path: &str) -> Result<Self> {
        // A directory or device cannot be mapped ("No such device"): say so.
        let f = open_regular(path)?;
        // SAFETY: the file is opened read-only and only read through the map;
        // a concurrent truncation by another process would be a user error
        // (as with any mmap-based loader) and is outside this program's control.
        let map =
            unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::new(format!("{path}: {e}")))?;
        let entries = {
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| Error::new(format!("{path}: not a valid safetensors file: {e}")))?;
            let base = map.as_ptr() as usize;
            st.tensors()
                .into_iter()
                .map(|(name, v)| {
                    let start = v.data().as_ptr() as usize - base;
                    (
                        name,
                        Entry {
                            dtype: v.dtype(),
                            shape: v.shape().to_vec(),
                            bytes: start..start + v.data().len(),
                        },
                    )
                })
                .collect()
        };
        Ok(Weights {
            path: path.to_string(),
            map,
            entries,
            prefix: String::new(),
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Look names up under `prefix` when they are not found bare.
    pub fn set_prefix(&mut self, prefix: &str) {
        self.prefix = prefix.to_string();
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries
            .get(name)
            .or_else(|| self.entries.get(&format!("{}{name}", self.prefix)))
    }

    /// The shape of tensor `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entry(name).map(|e| e.shape.as_slice())
    }

    /// Tensor `name` as f32, checked to be F32 of exactly `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let rows = shape.first().copied().unwrap_or(1);
        self.f32_rows(name, shape, 0..rows)
    }

    /// Rows `rows` (along the first dimension) of tensor `name` as f32,
    /// checked as [`Weights::f32`] does. Only those rows' bytes of the map
    /// are read, so a large table can be converted a slice at a time
    /// without an f32 copy of the whole.
    pub fn f32_rows(&self, name: &str, shape: &[usize], rows: Range<usize>) -> Result<Vec<f32>> {
        let Some(e) = self.entry(name) else {
            bail!("{}: tensor {name} is missing", self.path);
        };
        if e.dtype != Dtype::F32 {
            bail!(
                "{}: tensor {name} has dtype {:?}, expected F32",
                self.path,
                e.dtype
            );
        }
        if e.shape != shape {
            bail!(
                "{}: tensor {name} has shape {:?}, expected {shape:?}",
                self.path,
                e.shape
            );
        }
        let n0 = shape.first().copied().unwrap_or(1);
        if rows.start > rows.end || rows.end > n0 {
            bail!(
                "{}: rows {rows:?} of tensor {name} are outside its {n0} rows",
                self.path
            );
        }
        // The shape matched: the entry holds exactly n0 rows of `row` bytes.
        let row = e.bytes.len().checked_div(n0).unwrap_or(0);
        let start = e.bytes.start + rows.start * row;
        let end = e.bytes.start + rows.end * row;
        Ok(self.map[start..end]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}
