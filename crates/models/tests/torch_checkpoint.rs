//! PyTorch checkpoint interop (issue 13, item 3): a torchvision quantizable
//! model's checkpoint, converted by `tools/vision/torch_to_rquant.py`, loads
//! through the API `rquant classify --weights` uses
//! (`rquant_nn::io::quantized_from_bytes_with` with `vision::registry()`) and
//! gives PyTorch 2.15 fbgemm's int8 logits bit for bit on every engine and
//! ISA path. CI has no torch: the converted file and PyTorch's logits are
//! committed (`tests/data/checkpoint/`, regenerated as tools/vision/README.md
//! says).
//!
//! The fixture is form (c), the hardest of the three: a QAT-prepared
//! state_dict (torchvision's MobileNetV3 `IMAGENET1K_QNNPACK_V1` form) of
//! ShuffleNetV2 x0.5 with 10 classes (so the file stays under 500 KB), x86
//! QAT qconfig (per-channel weights), 64² input; the script loads it into
//! the `prepare_qat` model, converts it and turns the converted state_dict
//! into rquant's file.

use rquant_core::{Engine, QTensor, Tensor};
use rquant_models::seeded;
use rquant_models::vision;
use rquant_nn::{Module, Value};
use serde_json::Value as J;

#[path = "common/torch_nhwc_mean.rs"]
mod torch_nhwc_mean;
use torch_nhwc_mean::TorchNhwcMean;

const NAME: &str = "shufflenet_v2_x0_5_qat_x86";

fn dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/checkpoint")
}

fn expected() -> J {
    let p = dir().join(format!("{NAME}.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn file_bytes() -> Vec<u8> {
    std::fs::read(dir().join(format!("{NAME}.safetensors"))).unwrap()
}

fn hex(v: &J) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn input(d: &J) -> Tensor {
    let e = &d["input"];
    let s: Vec<usize> = e["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let x = seeded::input([s[0], s[1], s[2], s[3]], e["seed"].as_u64().unwrap());
    assert_eq!(seeded::f32_hash(&x), hex(&e["f32_fnv1a64"]), "input hash");
    Tensor::new(s, x).unwrap()
}

/// Load as `rquant classify --weights` does (`load_weights` in crates/cli).
fn load(bytes: &[u8], file: &str, e: &Engine) -> Result<Module, String> {
    let (q, _) =
        rquant_nn::io::quantized_from_bytes_with(bytes, file, Some(e.clone()), &vision::registry())
            .map_err(|e| e.to_string())?;
    Ok(q)
}

/// The quantized logits (the tensor entering the DeQuantStub).
fn int8_logits(q: &Module, x: &Tensor) -> QTensor<u8> {
    let mut q = q.clone();
    *q.get_mut("dequant").unwrap() = Module::identity();
    match q.forward(Value::F(x.clone())).unwrap() {
        Value::Q(t) => t.contiguous(),
        Value::F(_) => panic!("quantized logits expected"),
    }
}

fn check(got: &QTensor<u8>, o: &J, shape: &[usize], what: &str) {
    let (s, z) = got.q_per_tensor().unwrap();
    assert_eq!(
        (s as f32).to_bits() as u64,
        hex(&o["scale_f32_bits"]),
        "{what}: scale"
    );
    assert_eq!(z, o["zero_point"].as_i64().unwrap(), "{what}: zero point");
    assert_eq!(got.shape(), shape, "{what}: shape");
    let want: Vec<u8> = o["int_repr"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter())
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(got.int_repr(), &want[..], "{what}: int8 logits");
}

/// The converted QAT checkpoint on every engine and ISA path: PyTorch's
/// int8 logits (its global mean on a contiguous tensor, the kernel rquant
/// specifies) bit for bit; and with PyTorch's channels-last mean swapped in,
/// the stock PyTorch model's logits bit for bit.
#[test]
fn torchvision_qat_checkpoint_converted_bit_exact_on_every_path() {
    rquant_nn::engines::init();
    let d = expected();
    let x = input(&d);
    let bytes = file_bytes();
    let shape = [2, d["num_classes"].as_u64().unwrap() as usize];
    let want_type = vision::build(d["model"].as_str().unwrap(), 1)
        .unwrap()
        .module
        .type_name();
    assert!(d["output_stock"]["differing"].as_u64().unwrap() > 0);
    for e in rquant_nn::engines::all_paths() {
        let what = format!("{NAME} on {}/{}", e.name(), e.isa());
        let mut q = load(&bytes, &format!("{NAME}.safetensors"), &e).unwrap();
        assert_eq!(q.type_name(), want_type, "{what}");
        check(&int8_logits(&q, &x), &d["output"], &shape, &what);
        let means: Vec<String> = q
            .named_modules()
            .into_iter()
            .filter(|(_, m)| m.type_name() == "Mean")
            .map(|(p, _)| p)
            .collect();
        assert_eq!(means.len(), 1, "{what}: ShuffleNetV2 has one global mean");
        *q.get_mut(&means[0]).unwrap() = TorchNhwcMean.into();
        check(
            &int8_logits(&q, &x),
            &d["output_stock"],
            &shape,
            &format!("{what} with PyTorch's channels-last mean"),
        );
    }
}

/// The file is the script's output (its sha256 recorded with the logits),
/// and `rquant classify --weights` reads it as converted by the script.
#[test]
fn torchvision_qat_checkpoint_fixture_provenance() {
    let d = expected();
    let bytes = file_bytes();
    assert!(bytes.len() < 500_000, "fixture size {}", bytes.len());
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = meta.metadata().clone().unwrap();
    assert_eq!(md["model"], d["model"].as_str().unwrap());
    assert!(
        md["qconfig"].contains("torch_to_rquant.py"),
        "{}",
        md["qconfig"]
    );
}

/// Hostile copies of the converted file: a clear error naming the file and
/// the tensor (or header field), never a panic.
#[test]
fn torchvision_qat_checkpoint_truncated_or_forged_is_an_error() {
    rquant_nn::engines::init();
    let e = rquant_core::registry::engine().unwrap();
    let bytes = file_bytes();
    let file = "forged.safetensors";
    let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: J = serde_json::from_slice(&bytes[8..8 + hlen]).unwrap();
    // The tensor stored last in the data: cutting one byte cuts it only.
    let (last, _) = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .max_by_key(|(_, v)| v["data_offsets"][1].as_u64().unwrap())
        .unwrap();
    let msg = load(&bytes[..bytes.len() - 1], file, &e).unwrap_err();
    assert!(msg.contains(file), "{msg}");
    assert!(msg.contains(last.as_str()), "truncated: {msg}");
    // A weight's shape forged to another of the same size.
    let mut h = header.clone();
    let w = "conv5.0.weight";
    let s = h[w]["shape"].clone();
    let dims: Vec<u64> = s
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    h[w]["shape"] = serde_json::json!([dims[1], dims[0], dims[2], dims[3]]);
    let msg = load(&reheader(&bytes, hlen, &h), file, &e).unwrap_err();
    assert!(msg.contains(file) && msg.contains(w), "forged shape: {msg}");
    // A per-channel scale renamed away (the data left in place).
    let mut h = header.clone();
    let sc = "conv5.0.weight_scale";
    let v = h.as_object_mut().unwrap().remove(sc).unwrap();
    h["conv5.0.weight_scald"] = v;
    let msg = load(&reheader(&bytes, hlen, &h), file, &e).unwrap_err();
    assert!(
        msg.contains(file) && msg.contains(sc),
        "missing scale: {msg}"
    );
    // A scale that is not a positive finite number.
    let mut forged = bytes.clone();
    let off = 8 + hlen + header["conv1.0.scale"]["data_offsets"][0].as_u64().unwrap() as usize;
    forged[off..off + 8].copy_from_slice(&(-1.0f64).to_le_bytes());
    let msg = load(&forged, file, &e).unwrap_err();
    assert!(
        msg.contains(file) && msg.contains("conv1.0"),
        "negative scale: {msg}"
    );
}

/// The file with another header (same data).
fn reheader(bytes: &[u8], hlen: usize, h: &J) -> Vec<u8> {
    let mut t = serde_json::to_vec(h).unwrap();
    while !t.len().is_multiple_of(8) {
        t.push(b' ');
    }
    let mut out = (t.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&t);
    out.extend_from_slice(&bytes[8 + hlen..]);
    out
}
