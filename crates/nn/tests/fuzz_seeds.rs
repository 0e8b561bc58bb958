//! The quantized-model seed of the `model_load` fuzz target
//! (`fuzz/seeds/model_load/quantized_small.safetensors`): a static
//! per-channel Conv2d+ReLU and Linear and a dynamic qint8 Linear. It must
//! keep loading (the fuzzer starts from it); regenerate it with
//! `cargo test -p rquant-nn --test fuzz_seeds -- --ignored`. The same model
//! in the previous file format (`tests/data/quantized_small_v1.safetensors`,
//! the seed as committed before format v2) must load with the same outputs.

use std::path::PathBuf;

use rquant_core::qconfig::{default_dynamic_qconfig, get_default_qconfig};
use rquant_core::{Conv2dParams, Tensor};
use rquant_nn::io::{quantized_bytes, quantized_from_bytes, write_atomic};
use rquant_nn::{
    convert_with, fuse_modules, prepare, quantize_dynamic_with, Conv2d, DynamicDType, DynamicType,
    Linear, Module, QConfigMap, Rng, Sequential, Value,
};

fn seed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds/model_load/quantized_small.safetensors")
}

fn input() -> Tensor {
    let mut rng = Rng(9);
    Tensor::new([2, 1, 4, 4], (0..32).map(|_| rng.sym(1.0)).collect()).unwrap()
}

/// Static int8 conv+linear (x86 per-channel qconfig), then a dynamic Linear.
fn small_model() -> Module {
    let e = rquant_nn::engines::available().pop().unwrap(); // the reference engine
    let mut rng = Rng(21);
    let p = Conv2dParams {
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
        groups: 1,
    };
    let mut m = Module::new(Sequential::from_modules(vec![
        Module::quant_stub(),
        Module::new(Conv2d::new(1, 2, [3, 3], p, true, &mut rng).unwrap()),
        Module::relu(),
        Module::flatten(),
        Module::new(Linear::new(8, 3, true, &mut rng)),
        Module::dequant_stub(),
    ]));
    fuse_modules(&mut m, &[&["1", "2"]]).unwrap();
    prepare(
        &mut m,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    m.forward(Value::F(input())).unwrap();
    convert_with(&mut m, &e).unwrap();
    let Some(s) = m.downcast_mut::<Sequential>() else {
        unreachable!()
    };
    s.children
        .push(("6".into(), Module::new(Linear::new(3, 2, true, &mut rng))));
    quantize_dynamic_with(
        &mut m,
        &[DynamicType::Linear],
        DynamicDType::QInt8,
        &default_dynamic_qconfig(),
        &e,
    )
    .unwrap();
    m
}

#[test]
#[ignore = "regenerates the committed fuzz seed"]
fn regenerate_quantized_seed() {
    let b = quantized_bytes(&small_model(), "x86 per-channel + default_dynamic_qconfig").unwrap();
    write_atomic(&seed_path(), &b).unwrap();
}

#[test]
fn committed_seed_loads_on_every_engine_with_the_model_outputs() {
    loads_with_the_model_outputs(&seed_path(), rquant_nn::io::FORMAT);
}

#[test]
fn version_1_files_still_load() {
    let v1 =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/quantized_small_v1.safetensors");
    loads_with_the_model_outputs(&v1, rquant_nn::io::FORMAT_V1);
}

fn loads_with_the_model_outputs(path: &std::path::Path, format: &str) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], format);
    let mut want = small_model();
    let want = want.forward(Value::F(input())).unwrap().to_float();
    let types: Vec<String> = {
        let e = rquant_nn::engines::available().pop();
        let (m, _) = quantized_from_bytes(&bytes, "seed", e).unwrap();
        m.named_modules()
            .iter()
            .map(|(_, m)| m.type_name())
            .collect()
    };
    for t in [
        "QuantizedConvReLU2d",
        "QuantizedLinear",
        "DynamicQuantizedLinear",
    ] {
        assert!(
            types.iter().any(|x| x.starts_with(t)),
            "{t} missing from {types:?}"
        );
    }
    for e in rquant_nn::engines::all_paths() {
        let (mut m, _) = quantized_from_bytes(&bytes, "seed", Some(e.clone())).unwrap();
        let got = m.forward(Value::F(input())).unwrap().to_float();
        assert_eq!(got, want, "{} {}", e.name(), e.isa());
    }
}
