//! `rquant classify`: top-5 ImageNet classes of JPEG/PNG images (or already
//! preprocessed tensors) with one of torchvision's quantizable models, fp32
//! or int8; and the pieces `rquant quantize` shares with it (weights, inputs,
//! calibration).

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rquant_core::qconfig::{default_weight_observer, get_default_qconfig, QSpec};
use rquant_core::{registry, Engine, Tensor};
use rquant_models::vision::{self, VisionModel};
use rquant_nn::io::QuantizedMeta;
use rquant_nn::{convert_with, prepare, Linear, Module, QConfigMap, Value};
use serde_json::json;

use crate::files::{check_output, write_atomic};
use crate::imagenet::{self, read_file};

type Res = Result<(), Box<dyn std::error::Error>>;

/// What `rquant classify --help` says beyond the options.
pub const LONG_ABOUT: &str = "Top-5 ImageNet classes of JPEG/PNG images with one of \
torchvision's quantizable models (torchvision.models.quantization names), fp32 or int8.

--weights is a float state_dict in torchvision's names (safetensors; e.g. converted \
from torchvision's IMAGENET1K weights) or a quantized model written by `rquant \
quantize`. With float weights, --int8 quantizes in memory (static PTQ, x86 qconfig) \
calibrated on the images in --calibrate DIR, or on the images being classified. \
Images get torchvision's preprocessing for the model (resize the shorter side to 256, \
center crop 224; Inception-v3 342 / 299; ImageNet mean and std) on the decoded uint8 \
image, as its tensor path does (PIL's resampling differs slightly). \
--input-tensors takes already preprocessed float32 batches [N, 3, H, W] instead, to \
compare with PyTorch exactly.";

/// Options of `rquant classify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model (resnet18, resnet50, resnext101_32x8d, resnext101_64x4d, mobilenet_v2, mobilenet_v3_large, shufflenet_v2_x0_5 … x2_0, googlenet, inception_v3)
    #[arg(long, value_name = "NAME", value_parser = model_name)]
    model: String,
    /// Float state_dict (torchvision names) or rquant quantized model (.safetensors)
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// Run int8: quantize float weights in memory (a quantized file is always int8)
    #[arg(long)]
    int8: bool,
    /// Calibration images for --int8 (default: the images being classified)
    #[arg(long, value_name = "DIR", requires = "int8")]
    calibrate: Option<PathBuf>,
    /// Engine (reference, x86, qnnpack, ...; default: the best for this CPU)
    #[arg(long, value_name = "NAME")]
    engine: Option<String>,
    /// Threads (default: RQUANT_NUM_THREADS or all cores)
    #[arg(long, value_name = "N", value_parser = crate::positive)]
    threads: Option<usize>,
    /// Write the logits (and top-5) of every image as JSON to this file
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// Already preprocessed float32 batches [N, 3, H, W] (every tensor of the file, in name order)
    #[arg(long, value_name = "FILE", conflicts_with = "images")]
    input_tensors: Option<PathBuf>,
    /// Write the preprocessed input batch (float32 [N, 3, H, W], tensor "input") to this safetensors file
    #[arg(long, value_name = "FILE")]
    save_input: Option<PathBuf>,
    /// GoogLeNet / Inception-v3: leave transform_input off (torchvision turns it on with its pretrained weights)
    #[arg(long)]
    no_transform_input: bool,
    /// JPEG or PNG images
    #[arg(value_name = "IMAGE", required_unless_present = "input_tensors")]
    images: Vec<PathBuf>,
}

/// `--model`: one of the zoo's names.
pub(crate) fn model_name(s: &str) -> Result<String, String> {
    if vision::MODELS.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "unknown model (known: {})",
            vision::MODELS.join(", ")
        ))
    }
}

/// Select the engine and thread count; returns the engine.
pub(crate) fn setup(engine: Option<&str>, threads: Option<usize>) -> Result<Engine, String> {
    rquant_nn::engines::init();
    if let Some(e) = engine {
        registry::set_engine(e).map_err(|e| format!("--engine: {e}"))?;
    }
    if let Some(t) = threads {
        registry::set_num_threads(t);
    }
    registry::engine().map_err(|e| e.to_string())
}

/// The largest weights file read (ResNeXt-101 64x4d in fp32 is 334 MB).
const MAX_WEIGHTS_BYTES: u64 = 4 << 30;

/// A model ready to run.
pub(crate) enum Loaded {
    /// Float weights loaded into the built model (eval mode, unfused).
    Float(VisionModel),
    /// A quantized model file.
    Quantized(Module, QuantizedMeta),
}

/// The metadata key naming the zoo model in files `rquant quantize` writes.
pub(crate) const MODEL_KEY: &str = "model";

/// Load `--weights` for `--model`: a quantized rquant file (its metadata
/// has `format`) or a float state_dict in torchvision's names (strict:
/// every missing, unexpected or mis-shaped tensor is an error naming it).
/// `transform_input`: GoogLeNet's and Inception-v3's float re-normalisation
/// before the QuantStub, which torchvision switches on whenever it loads its
/// pretrained weights (a quantized file carries its own choice).
pub(crate) fn load_weights(
    name: &str,
    path: &Path,
    engine: &Engine,
    transform_input: bool,
) -> Result<Loaded, String> {
    let shown = path.display().to_string();
    let bytes = read_file(path, MAX_WEIGHTS_BYTES)?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| rquant_nn::io::header_error(&bytes, &shown, e).to_string())?;
    let md = meta.metadata().clone().unwrap_or_default();
    if md.contains_key("format") {
        if let Some(m) = md.get(MODEL_KEY).filter(|m| *m != name) {
            return Err(format!(
                "{shown}: __metadata__.{MODEL_KEY}: the file holds {m:?}, not --model {name}"
            ));
        }
        let (q, meta) = rquant_nn::io::quantized_from_bytes_with(
            &bytes,
            &shown,
            Some(engine.clone()),
            &vision::registry(),
        )
        .map_err(|e| e.to_string())?;
        // A file without our metadata key: at least the architecture's
        // top-level type must match (QuantizableResNet, …).
        let want = vision::build(name, 1)
            .map_err(|e| e.to_string())?
            .module
            .type_name();
        if q.type_name() != want {
            return Err(format!(
                "{shown}: modules: the file holds a {}, --model {name} is a {want}",
                q.type_name()
            ));
        }
        return Ok(Loaded::Quantized(q, meta));
    }
    let sd = rquant_nn::io::state_dict_from_bytes(&bytes, &shown).map_err(|e| e.to_string())?;
    // The class count comes from the classifier's weight in the file (a
    // fine-tuned model may have other than 1000); every other shape is
    // checked by the strict load.
    let mut m = vision::build(name, 1000).map_err(|e| e.to_string())?;
    let classifier = m
        .module
        .named_modules()
        .into_iter()
        .filter(|(_, l)| l.is::<Linear>())
        .map(|(p, _)| format!("{p}.weight"))
        .next_back();
    let classes = classifier
        .as_ref()
        .and_then(|k| sd.iter().find(|(n, _)| n == k))
        .map(|(_, t)| t.shape())
        .filter(|s| s.len() == 2 && s[0] > 0)
        .map_or(1000, |s| s[0]);
    if classes != 1000 {
        m = vision::build(name, classes).map_err(|e| e.to_string())?;
    }
    m.module
        .load_state_dict(&sd, true, &shown)
        .map_err(|e| e.to_string())?;
    if transform_input && matches!(name, "googlenet" | "inception_v3") {
        m = m.with_transform_input().map_err(|e| e.to_string())?;
    }
    m.module.train(false);
    Ok(Loaded::Float(m))
}

/// One batch of model inputs and the names of its images.
pub(crate) struct Batch {
    pub names: Vec<String>,
    pub x: Tensor,
}

/// The most images one forward takes (bounds memory for long image lists).
const BATCH: usize = 8;

/// Decode and preprocess images for a model of input size `input_size`, in
/// batches of up to [`BATCH`].
pub(crate) fn image_batches(paths: &[PathBuf], input_size: usize) -> Result<Vec<Batch>, String> {
    let (resize, crop) = imagenet::sizes(input_size);
    let mut out = Vec::new();
    for chunk in paths.chunks(BATCH) {
        let mut data = Vec::with_capacity(chunk.len() * 3 * crop * crop);
        for p in chunk {
            let img = imagenet::decode(p)?;
            data.extend(imagenet::preprocess(&img, resize, crop));
        }
        let x = Tensor::new([chunk.len(), 3, crop, crop], data).map_err(|e| e.to_string())?;
        out.push(Batch {
            names: chunk.iter().map(|p| p.display().to_string()).collect(),
            x,
        });
    }
    Ok(out)
}

/// `--input-tensors`: every tensor of the file, in name order, each a
/// float32 batch [N, 3, H, W]; images are named `FILE:TENSOR[i]`.
pub(crate) fn tensor_batches(path: &Path) -> Result<Vec<Batch>, String> {
    use safetensors::tensor::Dtype;
    let shown = path.display().to_string();
    let bytes = read_file(path, MAX_WEIGHTS_BYTES)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{shown}: header: not a valid safetensors file: {e}"))?;
    let mut names = st.names();
    names.sort();
    if names.is_empty() {
        return Err(format!("{shown}: no tensors"));
    }
    names
        .into_iter()
        .map(|n| {
            let v = st.tensor(n).map_err(|e| format!("{shown}: {n}: {e}"))?;
            if v.dtype() != Dtype::F32 {
                return Err(format!(
                    "{shown}: {n}: dtype {:?}, expected F32 (a preprocessed float32 batch)",
                    v.dtype()
                ));
            }
            let s = v.shape().to_vec();
            if s.len() != 4 || s[0] == 0 || s[1] != 3 || s[2] == 0 || s[3] == 0 {
                return Err(format!(
                    "{shown}: {n}: shape {s:?}, expected a batch [N, 3, H, W] of RGB images"
                ));
            }
            let data: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(format!("{shown}: {n}: value {i} is {}", data[i]));
            }
            let x = Tensor::new(s.clone(), data).map_err(|e| format!("{shown}: {n}: {e}"))?;
            Ok(Batch {
                names: (0..s[0]).map(|i| format!("{shown}:{n}[{i}]")).collect(),
                x,
            })
        })
        .collect()
}

/// Image files of a calibration directory: regular files named *.jpg,
/// *.jpeg or *.png (any case), sorted by name; at least one.
pub(crate) fn calibration_images(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let shown = dir.display();
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{shown}: {e}"))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e.map_err(|e| format!("{shown}: {e}"))?.path();
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")) {
            v.push(p);
        }
    }
    if v.is_empty() {
        return Err(format!(
            "{shown}: no .jpg, .jpeg or .png images to calibrate on"
        ));
    }
    v.sort();
    Ok(v)
}

/// A progress bar on stderr (drawn only on a terminal).
fn bar(len: u64, msg: &'static str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{bar:30}] {pos}/{len} images {elapsed} (eta {eta}) {per_sec}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg);
    pb
}

/// The x86 qconfig (histogram activations with reduce_range, per-channel
/// symmetric weights), or with per-tensor weights.
pub(crate) fn qconfig(per_tensor: bool) -> Result<(QConfigMap, &'static str), String> {
    let mut q = get_default_qconfig("x86").map_err(|e| e.to_string())?;
    if per_tensor {
        q.weight = QSpec::Observer(default_weight_observer());
        Ok((
            QConfigMap::global(q),
            "x86 (HistogramObserver reduce_range activations, per-tensor symmetric qint8 weights)",
        ))
    } else {
        Ok((
            QConfigMap::global(q),
            "x86 (HistogramObserver reduce_range activations, per-channel symmetric qint8 weights)",
        ))
    }
}

/// Static PTQ of a float model: torchvision's `fuse_model(False)`, prepare
/// with `qconfig`, one forward per calibration batch (images: one image per
/// forward; tensors: one tensor per forward), convert for `engine`.
pub(crate) fn quantize(
    mut m: VisionModel,
    qconfig: &QConfigMap,
    calib: Calibration,
    engine: &Engine,
) -> Result<Module, String> {
    m.module.train(false);
    m.fuse_model(false).map_err(|e| e.to_string())?;
    prepare(&mut m.module, qconfig).map_err(|e| e.to_string())?;
    let input_size = m.input_size;
    match calib {
        Calibration::Images(paths) => {
            let (resize, crop) = imagenet::sizes(input_size);
            let pb = bar(paths.len() as u64, "calibrate");
            for p in &paths {
                let img = imagenet::decode(p)?;
                let x = Tensor::new([1, 3, crop, crop], imagenet::preprocess(&img, resize, crop))
                    .map_err(|e| e.to_string())?;
                m.module
                    .forward(Value::F(x))
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                pb.inc(1);
            }
            pb.finish_and_clear();
        }
        Calibration::Tensors(batches) => {
            let n: usize = batches.iter().map(|b| b.names.len()).sum();
            let pb = bar(n as u64, "calibrate");
            for b in batches {
                let what = b.names.first().cloned().unwrap_or_default();
                m.module
                    .forward(Value::F(b.x))
                    .map_err(|e| format!("{what}: {e}"))?;
                pb.inc(b.names.len() as u64);
            }
            pb.finish_and_clear();
        }
    }
    let mut q = m.module;
    convert_with(&mut q, engine).map_err(|e| e.to_string())?;
    Ok(q)
}

/// What calibrates a static PTQ.
pub(crate) enum Calibration {
    Images(Vec<PathBuf>),
    Tensors(Vec<Batch>),
}

/// Softmax of `logits` in float64 (probabilities for display only).
fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = logits.iter().map(|&v| (v as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// The `k` largest logits' indices, largest first (ties: lower index first).
fn top_k(logits: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

pub fn run(o: Args) -> Res {
    let engine = setup(o.engine.as_deref(), o.threads)?;
    for p in [&o.json, &o.save_input].into_iter().flatten() {
        check_output(p)?;
    }
    let loaded = load_weights(&o.model, &o.weights, &engine, !o.no_transform_input)?;
    let input_size = match &loaded {
        Loaded::Float(m) => m.input_size,
        Loaded::Quantized(..) => vision::build(&o.model, 1)?.input_size,
    };
    if let (Loaded::Quantized(..), Some(_)) = (&loaded, &o.calibrate) {
        return Err(format!(
            "{}: already quantized; --calibrate needs float weights",
            o.weights.display()
        )
        .into());
    }
    let batches = match &o.input_tensors {
        Some(p) => tensor_batches(p)?,
        None => image_batches(&o.images, input_size)?,
    };
    if let Some(p) = &o.save_input {
        save_input(p, &batches)?;
    }
    // What quantized the model (JSON only; empty for fp32).
    let mut qconfig_desc = String::new();
    let (mut model, precision) = match loaded {
        Loaded::Float(m) if o.int8 => {
            let calib = match &o.calibrate {
                Some(dir) => Calibration::Images(calibration_images(dir)?),
                None => {
                    eprintln!(
                        "note: calibrating on the {} input image(s) (--calibrate DIR to use others)",
                        batches.iter().map(|b| b.names.len()).sum::<usize>()
                    );
                    Calibration::Tensors(
                        batches
                            .iter()
                            .map(|b| Batch {
                                names: b.names.clone(),
                                x: b.x.clone(),
                            })
                            .collect(),
                    )
                }
            };
            let (qc, desc) = qconfig(false)?;
            qconfig_desc = desc.to_string();
            (
                quantize(m, &qc, calib, &engine)?,
                format!("int8 ({}/{})", engine.name(), engine.isa()),
            )
        }
        Loaded::Float(m) => (m.module, "fp32".to_string()),
        Loaded::Quantized(q, meta) => {
            qconfig_desc = meta.qconfig;
            (q, format!("int8 ({}/{})", engine.name(), engine.isa()))
        }
    };
    let mut results = Vec::new();
    for b in batches {
        let what = b.names.first().cloned().unwrap_or_default();
        let y = model
            .forward(Value::F(b.x))
            .map_err(|e| format!("{what}: {e}"))?
            .to_float();
        let s = y.shape().to_vec();
        if s.len() != 2 || s[0] != b.names.len() {
            return Err(format!("{what}: the model gave logits of shape {s:?}").into());
        }
        for (name, row) in b.names.into_iter().zip(y.data().chunks(s[1])) {
            results.push((name, row.to_vec()));
        }
    }
    let mut json_rows = Vec::new();
    for (name, logits) in &results {
        let p = softmax(logits);
        say!("{name}: {} {precision}", o.model);
        let mut top = Vec::new();
        for (rank, i) in top_k(logits, 5).into_iter().enumerate() {
            let label = imagenet::class_name(i);
            say!("  {}. {:6.2}%  {label} ({i})", rank + 1, 100.0 * p[i]);
            top.push(json!({"class": i, "label": label, "probability": p[i]}));
        }
        json_rows.push(json!({"input": name, "top5": top, "logits": logits}));
    }
    if let Some(p) = &o.json {
        let doc = json!({
            "model": o.model,
            "weights": o.weights.display().to_string(),
            "precision": precision,
            "qconfig": qconfig_desc,
            "results": json_rows,
        });
        let mut text = serde_json::to_string_pretty(&doc)?;
        text.push('\n');
        write_atomic(p, text.as_bytes())?;
    }
    Ok(())
}

/// `--save-input`: every batch concatenated into one float32 tensor "input".
fn save_input(path: &Path, batches: &[Batch]) -> Result<(), String> {
    use safetensors::tensor::{Dtype, TensorView};
    let first = batches[0].x.shape().to_vec();
    if batches.iter().any(|b| b.x.shape()[1..] != first[1..]) {
        return Err(format!(
            "{}: the input batches differ in image size",
            path.display()
        ));
    }
    let n: usize = batches.iter().map(|b| b.x.shape()[0]).sum();
    let bytes: Vec<u8> = batches
        .iter()
        .flat_map(|b| b.x.data().iter().flat_map(|v| v.to_le_bytes()))
        .collect();
    let shape = vec![n, first[1], first[2], first[3]];
    let view = TensorView::new(Dtype::F32, shape, &bytes).map_err(|e| e.to_string())?;
    let out = safetensors::serialize([("input", view)], &None).map_err(|e| e.to_string())?;
    write_atomic(path, &out).map_err(|e| e.to_string())
}
