//! The pretrained MNIST CNN (digit-recognizer-py 0.1.0, MIT) and MNIST IDX
//! data: reading, normalising, evaluating.

use std::path::{Path, PathBuf};

use rquant_core::Tensor;

use crate::error::{NnError, Result};
use crate::layers::{Conv2d, Linear, MaxPool2d, Rng};
use crate::module::{Module, Sequential};
use crate::quantize::conv_params;
use crate::train::argmax_rows;
use crate::value::Value;

/// `data/mnist` in this repository (committed weights and image subset).
pub fn committed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")
}

/// The committed weights file.
pub fn committed_weights() -> PathBuf {
    committed_dir().join("mnist_cnn.safetensors")
}

/// The largest IDX file [`read_idx`] reads, after decompression (MNIST's
/// largest is 47 MB): a gzip bomb or a device file is an error, not an
/// out-of-memory.
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// Read an IDX file (big-endian magic `0x08 0x0N`, N u32 dims, u8 data);
/// `path.gz` is read (and gunzipped) when `path` does not exist.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    read_idx_capped(path, MAX_IDX_BYTES)
}

fn read_idx_capped(path: &Path, max_bytes: u64) -> Result<(Vec<usize>, Vec<u8>)> {
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    let (path, zipped) = if !path.exists() && gz.exists() {
        (gz.as_path(), true)
    } else {
        (path, false)
    };
    let file = path.display().to_string();
    let io = |source| NnError::Io {
        path: file.clone(),
        source,
    };
    let f = crate::io::open_regular(path)?;
    let reader: Box<dyn std::io::Read> = if zipped {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    // Read one byte past the cap, so that reaching it is detected.
    let mut b = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(reader, max_bytes + 1), &mut b)
        .map_err(io)?;
    if b.len() as u64 > max_bytes {
        return Err(NnError::file(
            &file,
            "size",
            format!(
                "more than {max_bytes} bytes{}",
                if zipped { " after decompression" } else { "" }
            ),
        ));
    }
    parse_idx(&b, &file)
}

/// An unsigned-byte IDX file from its bytes (`file` names it in errors):
/// the dimensions and the data, checked against each other before anything
/// is allocated.
pub fn parse_idx(b: &[u8], file: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    if b.len() < 4 || b[0] != 0 || b[1] != 0 || b[2] != 0x08 {
        return Err(NnError::file(
            file,
            "magic",
            "not an unsigned-byte IDX file",
        ));
    }
    let nd = b[3] as usize;
    if b.len() < 4 + 4 * nd {
        return Err(NnError::file(file, "dims", "truncated header"));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    // A forged header can declare dimensions whose product overflows: that is
    // an error, never a wrapped size that happens to match the data.
    let n = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| NnError::file(file, "dims", format!("{dims:?} overflow")))?;
    let body = &b[4 + 4 * nd..];
    if body.len() != n {
        return Err(NnError::file(
            file,
            "data",
            format!("holds {} bytes, dims {dims:?} need {n}", body.len()),
        ));
    }
    Ok((dims, body.to_vec()))
}

/// Images (u8, 28×28) with labels.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl Dataset {
    /// `{dir}/{kind}-images-idx3-ubyte` and labels; `kind` is "train" or "t10k";
    /// keeps the first `limit` images when given.
    pub fn load(dir: &Path, kind: &str, limit: Option<usize>) -> Result<Self> {
        let (ip, lp) = (
            dir.join(format!("{kind}-images-idx3-ubyte")),
            dir.join(format!("{kind}-labels-idx1-ubyte")),
        );
        let (d, mut images) = read_idx(&ip)?;
        let (ld, mut labels) = read_idx(&lp)?;
        if d.len() != 3 {
            return Err(NnError::file(
                ip.display().to_string(),
                "dims",
                format!("{d:?}, expected [images, rows, cols]"),
            ));
        }
        if ld.len() != 1 || d[0] != ld[0] {
            return Err(NnError::file(
                lp.display().to_string(),
                "dims",
                format!("{ld:?}, expected [{}] (one label per image)", d[0]),
            ));
        }
        let n = limit.map_or(d[0], |l| l.min(d[0]));
        images.truncate(n * d[1] * d[2]);
        labels.truncate(n);
        Ok(Dataset {
            images,
            labels,
            rows: d[1],
            cols: d[2],
        })
    }
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Images `[start, end)` as `[n, 1, 28, 28]`, normalised `(x/255 − mean)/std`.
    pub fn batch(&self, start: usize, end: usize, mean: f32, std: f32) -> Tensor {
        let px = self.rows * self.cols;
        let data = self.images[start * px..end * px]
            .iter()
            .map(|&v| (v as f32 / 255.0 - mean) / std)
            .collect();
        Tensor::new([end - start, 1, self.rows, self.cols], data).expect("shape")
    }
    /// A copy with the images in a seeded random order (Fisher–Yates), as a
    /// shuffling DataLoader would present them for one epoch.
    pub fn shuffled(&self, seed: u64) -> Dataset {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        let mut rng = crate::layers::Rng(seed);
        for i in (1..idx.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            idx.swap(i, j);
        }
        let px = self.rows * self.cols;
        let mut images = Vec::with_capacity(self.images.len());
        for &i in &idx {
            images.extend_from_slice(&self.images[i * px..(i + 1) * px]);
        }
        Dataset {
            images,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            rows: self.rows,
            cols: self.cols,
        }
    }
    pub fn labels(&self, start: usize, end: usize) -> Vec<usize> {
        self.labels[start..end]
            .iter()
            .map(|&l| l as usize)
            .collect()
    }
}

/// MNIST normalisation.
pub const MEAN: f32 = 0.1307;
pub const STD: f32 = 0.3081;

/// The CNN of digit-recognizer-py (`digit_recognizer/model.py`) with
/// QuantStub / DeQuantStub around it; children named as its state_dict
/// (`conv_layers.{0,3,6}`, `fc_layers.{0,2}`). Random (seeded) weights.
pub fn model() -> Module {
    let mut rng = Rng(0x5EED);
    let p = conv_params(1, 1, 1, 1);
    let conv =
        |i, o, rng: &mut Rng| Module::new(Conv2d::new(i, o, [3, 3], p, true, rng).expect("valid"));
    let convs = Sequential::from_modules(vec![
        conv(1, 32, &mut rng),
        Module::relu(),
        Module::new(MaxPool2d::new(2, 2)),
        conv(32, 64, &mut rng),
        Module::relu(),
        Module::new(MaxPool2d::new(2, 2)),
        conv(64, 128, &mut rng),
        Module::relu(),
        Module::new(MaxPool2d::new(2, 2)),
    ]);
    let fcs = Sequential::from_modules(vec![
        Module::new(Linear::new(128 * 3 * 3, 256, true, &mut rng)),
        Module::relu(),
        Module::new(Linear::new(256, 10, true, &mut rng)),
    ]);
    Sequential::new()
        .push("quant", Module::quant_stub())
        .push("conv_layers", convs)
        .push("flatten", Module::flatten())
        .push("fc_layers", fcs)
        .push("dequant", Module::dequant_stub())
        .into()
}

/// The pretrained model from a safetensors state_dict.
pub fn pretrained(path: &Path) -> Result<Module> {
    let mut m = model();
    crate::io::load_float(&mut m, &path.display().to_string())?;
    Ok(m)
}

/// The fusion list PyTorch users write for this model.
pub const FUSE_GROUPS: [&[&str]; 4] = [
    &["conv_layers.0", "conv_layers.1"],
    &["conv_layers.3", "conv_layers.4"],
    &["conv_layers.6", "conv_layers.7"],
    &["fc_layers.0", "fc_layers.1"],
];

/// Logits of every image, in batches.
pub fn logits(model: &mut Module, ds: &Dataset, batch: usize) -> Result<Vec<Tensor>> {
    logits_with(model, ds, batch, MEAN, STD)
}

/// [`logits`] with another normalisation (e.g. Fashion-MNIST's 0.2860, 0.3530).
pub fn logits_with(
    model: &mut Module,
    ds: &Dataset,
    batch: usize,
    mean: f32,
    std: f32,
) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    let mut s = 0;
    while s < ds.len() {
        let e = (s + batch).min(ds.len());
        let y = model.forward(Value::F(ds.batch(s, e, mean, std)))?;
        out.push(y.to_float());
        s = e;
    }
    Ok(out)
}

/// Predicted class of every image.
pub fn predict(model: &mut Module, ds: &Dataset, batch: usize) -> Result<Vec<usize>> {
    Ok(logits(model, ds, batch)?
        .iter()
        .flat_map(argmax_rows)
        .collect())
}

/// Fraction of predictions equal to the labels.
pub fn accuracy(pred: &[usize], ds: &Dataset) -> f64 {
    let hits = pred
        .iter()
        .zip(&ds.labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    hits as f64 / pred.len().max(1) as f64
}

/// Fraction of equal predictions.
pub fn agreement(a: &[usize], b: &[usize]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

/// Run calibration data through a prepared model in batches of `batch`;
/// `progress` is told how many images each batch held.
pub fn calibrate(
    model: &mut Module,
    ds: &Dataset,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<()> {
    calibrate_with(model, ds, batch, MEAN, STD, progress)
}

/// [`calibrate`] with another normalisation.
pub fn calibrate_with(
    model: &mut Module,
    ds: &Dataset,
    batch: usize,
    mean: f32,
    std: f32,
    progress: &mut dyn FnMut(usize),
) -> Result<()> {
    let mut s = 0;
    while s < ds.len() {
        let e = (s + batch).min(ds.len());
        model.forward(Value::F(ds.batch(s, e, mean, std)))?;
        progress(e - s);
        s = e;
    }
    Ok(())
}

/// The demo's QAT recipe: `prepare_qat` with the given qconfig on a copy of
/// the fused float model, Adam 1e-5, batch 50, two passes over `ds`, fake-quant
/// observers frozen (`disable_observer`) for the second pass; returns the
/// model in eval mode, ready for `convert`.
pub fn qat_finetune(
    fused: &Module,
    ds: &Dataset,
    qconfig: rquant_core::qconfig::QConfig,
    progress: &mut dyn FnMut(usize),
) -> Result<Module> {
    let mut m = fused.clone();
    m.train(true);
    crate::quantize::prepare_qat(&mut m, &crate::quantize::QConfigMap::global(qconfig))?;
    let mut opt = crate::train::Adam::new(1e-5);
    for epoch in 0..2 {
        if epoch == 1 {
            crate::quantize::disable_observer(&mut m);
        }
        train_epoch(&mut m, ds, 0..ds.len(), 50, MEAN, STD, &mut opt, progress)?;
    }
    m.train(false);
    Ok(m)
}

/// One pass of mini-batch training over images `range` (in order): forward,
/// cross-entropy, backward, optimizer step. Returns the mean loss. The model
/// must be in training mode.
#[allow(clippy::too_many_arguments)]
pub fn train_epoch(
    m: &mut Module,
    ds: &Dataset,
    range: std::ops::Range<usize>,
    batch: usize,
    mean: f32,
    std: f32,
    opt: &mut dyn crate::train::Optimizer,
    progress: &mut dyn FnMut(usize),
) -> Result<f32> {
    let (mut s, mut total, mut steps) = (range.start, 0.0f64, 0usize);
    while s < range.end {
        let e = (s + batch).min(range.end);
        m.zero_grad();
        let y = m.forward(Value::F(ds.batch(s, e, mean, std)))?;
        let (loss, g) = crate::train::cross_entropy(&y.float("cross_entropy")?, &ds.labels(s, e))?;
        m.backward(g)?;
        opt.step(m)?;
        total += loss as f64;
        steps += 1;
        progress(e - s);
        s = e;
    }
    Ok((total / steps.max(1) as f64) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_bomb_stops_at_the_cap() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("rquant-idx-bomb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A valid 1-D IDX file of 10 000 bytes, 10 000 : ~30 compressed.
        let mut raw = vec![0, 0, 8, 1];
        raw.extend_from_slice(&10_000u32.to_be_bytes());
        raw.resize(8 + 10_000, 0);
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&raw).unwrap();
        std::fs::write(dir.join("x.gz"), z.finish().unwrap()).unwrap();
        let p = dir.join("x");
        assert_eq!(read_idx_capped(&p, 10_008).unwrap().1.len(), 10_000);
        let msg = read_idx_capped(&p, 10_007).unwrap_err().to_string();
        assert!(
            msg.contains("x.gz: size: more than 10007 bytes after decompression"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
