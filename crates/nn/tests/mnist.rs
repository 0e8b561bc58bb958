//! The real model on real data: fp32 accuracy equals PyTorch's on the
//! committed subset, and the static-quantized model's int8 outputs equal
//! PyTorch 2.15's converted model (tools/mnist/torch_reference.json) on every engine.

use rquant_core::qconfig::{
    default_weight_observer, get_default_qconfig, histogram_observer, QConfig, QSpec,
};
use rquant_core::registry;
use rquant_nn::mnist::{self, Dataset};
use rquant_nn::{convert_with, fuse_modules, prepare, Module, QConfigMap, Value};

fn reference() -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/mnist/torch_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn calibrated(qc: QConfig) -> Module {
    let mut m = mnist::pretrained(&mnist::committed_weights()).unwrap();
    m.train(false);
    fuse_modules(&mut m, &mnist::FUSE_GROUPS).unwrap();
    prepare(&mut m, &QConfigMap::global(qc)).unwrap();
    let calib = Dataset::load(&mnist::committed_dir(), "train", Some(1000)).unwrap();
    for s in (0..1000).step_by(100) {
        m.forward(Value::F(calib.batch(s, s + 100, mnist::MEAN, mnist::STD)))
            .unwrap();
    }
    m
}

fn int_outputs(m: &mut Module, test: &Dataset) -> Vec<Vec<u8>> {
    let x = test.batch(0, 8, mnist::MEAN, mnist::STD);
    let mut v = Value::F(x);
    for name in ["quant", "conv_layers", "flatten", "fc_layers"] {
        v = m.get_mut(name).unwrap().forward(v).unwrap();
    }
    let Value::Q(q) = v else {
        panic!("quantized output expected")
    };
    q.int_repr().chunks(10).map(|c| c.to_vec()).collect()
}

#[test]
fn fp32_matches_pytorch_accuracy_and_static_int8_is_bit_exact() {
    rquant_nn::engines::init();
    let r = reference();
    let test = Dataset::load(&mnist::committed_dir(), "t10k", None).unwrap();
    let mut fp32 = mnist::pretrained(&mnist::committed_weights()).unwrap();
    let pred = mnist::predict(&mut fp32, &test, 250).unwrap();
    let acc = mnist::accuracy(&pred, &test);
    let want = r["subset/fp32"]["accuracy"].as_f64().unwrap();
    assert!(
        (acc - want).abs() < 1e-6,
        "fp32 accuracy {acc} vs PyTorch {want}"
    );

    let per_tensor = QConfig {
        activation: QSpec::Observer(histogram_observer(true)),
        weight: QSpec::Observer(default_weight_observer()),
    };
    for (name, qc) in [
        ("static_per_channel", get_default_qconfig("x86").unwrap()),
        ("static_per_tensor", per_tensor),
    ] {
        let observed = calibrated(qc);
        let want: Vec<Vec<u8>> = r[format!("{name}/first8_int")]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u8)
                    .collect()
            })
            .collect();
        for e in rquant_nn::engines::available() {
            let mut q = observed.clone();
            convert_with(&mut q, &e).unwrap();
            registry::set_engine(e.name()).unwrap();
            let got = int_outputs(&mut q, &test);
            assert_eq!(got, want, "{name} on {}", e.name());
        }
    }
}

#[test]
fn quantized_accuracy_guards_on_the_committed_subset() {
    use rquant_core::qconfig::get_default_qat_qconfig;
    rquant_nn::engines::init();
    let e = rquant_nn::engines::available().remove(0);
    registry::set_engine(e.name()).unwrap();
    let test = Dataset::load(&mnist::committed_dir(), "t10k", None).unwrap();
    let calib = Dataset::load(&mnist::committed_dir(), "train", Some(1000)).unwrap();
    let mut fp32 = mnist::pretrained(&mnist::committed_weights()).unwrap();
    let ref_pred = mnist::predict(&mut fp32, &test, 250).unwrap();
    let fp32_acc = mnist::accuracy(&ref_pred, &test);

    let mut ptq = calibrated(get_default_qconfig("x86").unwrap());
    convert_with(&mut ptq, &e).unwrap();
    let pred = mnist::predict(&mut ptq, &test, 250).unwrap();
    let ptq_acc = mnist::accuracy(&pred, &test);
    assert!(
        (ptq_acc - fp32_acc).abs() <= 0.001,
        "static {ptq_acc} vs fp32 {fp32_acc}"
    );
    assert!(mnist::agreement(&pred, &ref_pred) >= 0.997);

    let mut fused = fp32.clone();
    fuse_modules(&mut fused, &mnist::FUSE_GROUPS).unwrap();
    let mut qat = mnist::qat_finetune(
        &fused,
        &calib,
        get_default_qat_qconfig("x86").unwrap(),
        &mut |_| {},
    )
    .unwrap();
    convert_with(&mut qat, &e).unwrap();
    let qat_acc = mnist::accuracy(&mnist::predict(&mut qat, &test, 250).unwrap(), &test);
    assert!(qat_acc >= ptq_acc, "QAT {qat_acc} < static PTQ {ptq_acc}");
}

/// The converted CNN runs channels-last: the quant stub makes the activation
/// NHWC once, the conv stack keeps it NHWC, and the flatten before the fc
/// layer (128×3×3 features) is folded into that layer by permuting its
/// weight columns at convert time, not by transposing activations. The bits
/// are those of PyTorch's converted model (the test above) and survive a
/// save and load.
#[test]
fn channels_last_pipeline_folds_flatten_into_the_fc_layer() {
    use rquant_core::MemoryFormat;
    use rquant_nn::channels_last::FlattenChannelsLast;
    rquant_nn::engines::init();
    let test = Dataset::load(&mnist::committed_dir(), "t10k", None).unwrap();
    let observed = calibrated(get_default_qconfig("x86").unwrap());
    for e in rquant_nn::engines::available() {
        let mut q = observed.clone();
        convert_with(&mut q, &e).unwrap();
        let f = q.get("flatten").unwrap();
        assert_eq!(
            f.downcast_ref::<FlattenChannelsLast>(),
            Some(&FlattenChannelsLast { c: 128, h: 3, w: 3 }),
            "{e:?}"
        );
        let x = test.batch(0, 8, mnist::MEAN, mnist::STD);
        let v = q.get_mut("quant").unwrap().forward(Value::F(x)).unwrap();
        let Value::Q(qx) = &v else { panic!() };
        assert_eq!(qx.memory_format(), MemoryFormat::ChannelsLast);
        let v = q.get_mut("conv_layers").unwrap().forward(v).unwrap();
        let Value::Q(qc) = &v else { panic!() };
        assert_eq!(qc.memory_format(), MemoryFormat::ChannelsLast);
        assert_eq!(qc.shape(), &[8, 128, 3, 3]);
        let before = int_outputs(&mut q, &test);
        let dir = std::env::temp_dir().join(format!("rquant-mnist-cl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.safetensors").display().to_string();
        rquant_nn::io::save_quantized(&q, &path, "x86").unwrap();
        let (mut loaded, _) = rquant_nn::io::load_quantized(&path, Some(e.clone())).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(loaded.get("flatten").unwrap().is::<FlattenChannelsLast>());
        assert_eq!(int_outputs(&mut loaded, &test), before, "{e:?} after load");
    }
}

/// The numeric suite reports the folded fc layer and the channels-last
/// flatten in PyTorch's (C, H, W) order: its weight and output compare with
/// the float model's as they do in PyTorch (they showed −3 dB SQNR while
/// compared column-permuted).
#[test]
fn numeric_suite_sees_the_folded_flatten_in_chw_order() {
    use rquant_nn::numeric_suite::{compare_model_outputs_sqnr, compare_weights_sqnr};
    rquant_nn::engines::init();
    let test = Dataset::load(&mnist::committed_dir(), "t10k", None).unwrap();
    let mut float = mnist::pretrained(&mnist::committed_weights()).unwrap();
    float.train(false);
    fuse_modules(&mut float, &mnist::FUSE_GROUPS).unwrap();
    let mut q = calibrated(get_default_qconfig("x86").unwrap());
    convert_with(&mut q, &registry::engine().unwrap()).unwrap();
    let w = compare_weights_sqnr(&float, &q);
    let fc = w.iter().find(|c| c.name == "fc_layers.0.weight").unwrap();
    assert!(fc.sqnr_db > 30.0, "{fc:?}");
    assert!(w.iter().all(|c| c.sqnr_db > 30.0), "{w:?}");
    let x = test.batch(0, 50, mnist::MEAN, mnist::STD);
    let o = compare_model_outputs_sqnr(&float, &q, &x).unwrap();
    let fl = o.iter().find(|c| c.name == "flatten").unwrap();
    assert!(fl.sqnr_db > 20.0, "{fl:?}");
    assert!(o.iter().all(|c| c.sqnr_db > 20.0), "{o:?}");
}
