//! `rquant quantize`: static post-training quantization of one of
//! torchvision's quantizable models, calibrated on real images, written as
//! an rquant quantized model file that `rquant classify` loads.

use std::path::PathBuf;
use std::time::Instant;

use crate::classify::{
    calibration_images, load_weights, qconfig, quantize, setup, tensor_batches, Calibration,
    Loaded, MODEL_KEY,
};
use crate::files::{check_output, write_atomic};

type Res = Result<(), Box<dyn std::error::Error>>;

/// What `rquant quantize --help` says beyond the options.
pub const LONG_ABOUT: &str = "Static post-training quantization of one of torchvision's \
quantizable models with PyTorch's x86 qconfig (HistogramObserver activations with \
reduce_range, per-channel symmetric qint8 weights; --per-tensor: per-tensor weights), \
after torchvision's fuse_model, calibrated on real images (one image per forward, in \
file-name order) or on preprocessed float32 batches (--input-tensors: one tensor per \
forward, in name order). Unlike torchvision's own quantize_model, which calibrates a \
MinMax observer on one random tensor. The output loads with `rquant classify --weights`.";

/// Options of `rquant quantize`.
#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("calibration").required(true).args(["calibrate", "input_tensors"]))]
pub struct Args {
    /// Model (torchvision.models.quantization builder name)
    #[arg(long, value_name = "NAME", value_parser = crate::classify::model_name)]
    model: String,
    /// Float state_dict in torchvision's names (.safetensors)
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// Directory of calibration images (*.jpg, *.jpeg, *.png)
    #[arg(long, value_name = "DIR")]
    calibrate: Option<PathBuf>,
    /// Calibrate on preprocessed float32 batches [N, 3, H, W] instead
    #[arg(long, value_name = "FILE")]
    input_tensors: Option<PathBuf>,
    /// Per-tensor weights instead of per-channel
    #[arg(long)]
    per_tensor: bool,
    /// Engine that packs the weights (the file loads on any engine)
    #[arg(long, value_name = "NAME")]
    engine: Option<String>,
    /// Threads (default: RQUANT_NUM_THREADS or all cores)
    #[arg(long, value_name = "N", value_parser = crate::positive)]
    threads: Option<usize>,
    /// GoogLeNet / Inception-v3: leave transform_input off (torchvision turns it on with its pretrained weights)
    #[arg(long)]
    no_transform_input: bool,
    /// Output quantized model (.safetensors)
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn run(o: Args) -> Res {
    let engine = setup(o.engine.as_deref(), o.threads)?;
    check_output(&o.out)?;
    let m = match load_weights(&o.model, &o.weights, &engine, !o.no_transform_input)? {
        Loaded::Float(m) => m,
        Loaded::Quantized(..) => {
            return Err(format!(
                "{}: already a quantized model; --weights needs a float state_dict",
                o.weights.display()
            )
            .into())
        }
    };
    let calib = match (&o.calibrate, &o.input_tensors) {
        (Some(dir), _) => Calibration::Images(calibration_images(dir)?),
        (None, Some(p)) => Calibration::Tensors(tensor_batches(p)?),
        (None, None) => return Err("--calibrate DIR or --input-tensors FILE is required".into()),
    };
    let n = match &calib {
        Calibration::Images(v) => v.len(),
        Calibration::Tensors(b) => b.iter().map(|b| b.names.len()).sum(),
    };
    let (qc, desc) = qconfig(o.per_tensor)?;
    let t = Instant::now();
    let q = quantize(m, &qc, calib, &engine)?;
    let secs = t.elapsed().as_secs_f64();
    let bytes = rquant_nn::io::quantized_bytes(&q, desc)?;
    let bytes = with_model_name(&bytes, &o.model)?;
    write_atomic(&o.out, &bytes)?;
    say!(
        "{}: {} int8, calibrated on {n} image(s) in {secs:.1} s; wrote {} ({:.1} MB)",
        o.model,
        if o.per_tensor {
            "per-tensor"
        } else {
            "per-channel"
        },
        o.out.display(),
        bytes.len() as f64 / 1e6
    );
    Ok(())
}

/// Add `__metadata__.model` (the zoo name) to a quantized model file, so
/// `classify --model` can refuse a file of another model.
fn with_model_name(bytes: &[u8], name: &str) -> Result<Vec<u8>, String> {
    use safetensors::SafeTensors;
    let st = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let mut md = meta.metadata().clone().unwrap_or_default();
    md.insert(MODEL_KEY.to_string(), name.to_string());
    let mut views: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    safetensors::serialize(views, &Some(md)).map_err(|e| e.to_string())
}
