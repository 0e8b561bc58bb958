//! The eager workflow API beyond prepare/convert: the observers that choose
//! no qparams, `QuantWrapper`, `add_quant_dequant`, `quantize_qat`,
//! `swap_module`, `quantize_dynamic` with a per-name / per-type spec,
//! `update_bn_stats`, resumable calibration and QAT (save and load of
//! prepared and QAT models, bit-identical after a resume) and the numeric
//! suite (weight pairs, output loggers at any depth, shadow modules).

mod common;

use common::engines;
use rquant_core::observer::ObserverKind;
use rquant_core::qconfig::{
    default_debug_observer, default_dynamic_qconfig, default_fixed_qparams_range_0to1_observer,
    default_fixed_qparams_range_neg1to1_observer, default_reuse_input_observer,
    float16_dynamic_qconfig, get_default_qat_qconfig, get_default_qconfig, ObserverSpec,
};
use rquant_core::Tensor;
use rquant_nn::io::{quantized_bytes, quantized_from_bytes};
use rquant_nn::layers::{BatchNorm2d, Conv2d, Linear};
use rquant_nn::numeric_suite::{
    compare_model_outputs, compare_model_stub, compare_weights, get_logger_dict,
    get_matching_activations, prepare_model_outputs,
};
use rquant_nn::train::{Optimizer, Sgd};
use rquant_nn::workflow::{
    add_quant_dequant, quantize_dynamic_spec, quantize_qat, swap_module, DynamicSpec,
};
use rquant_nn::{
    convert_with, fuse_modules_qat, prepare, prepare_qat, Mappings, Module, QConfigMap, Rng,
    Sequential, Value,
};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let mut r = Rng(seed);
    let n: usize = shape.iter().product();
    Tensor::new(shape.to_vec(), (0..n).map(|_| r.sym(1.0)).collect()).unwrap()
}

fn floats(v: Value) -> Vec<f32> {
    v.to_float().data().to_vec()
}

#[test]
fn observers_without_qparams_and_fixed_qparams_observers() {
    let x = rand(&[3, 4], 1);
    let mut f = default_fixed_qparams_range_0to1_observer().build().unwrap();
    f.observe(&x).unwrap();
    let q = f.calculate_qparams().unwrap();
    assert_eq!(
        (q.scales.as_slice(), q.zero_points.as_slice()),
        (&[1.0 / 256.0][..], &[0][..])
    );
    let q = default_fixed_qparams_range_neg1to1_observer()
        .build()
        .unwrap()
        .calculate_qparams()
        .unwrap();
    assert_eq!((q.scales[0], q.zero_points[0]), (2.0 / 256.0, 128));
    // NoopObserver, RecordingObserver and ReuseInputObserver observe (or
    // not) and have no qparams, as torch's raise.
    for spec in [
        ObserverSpec::noop(rquant_core::observer::ObserverDType::Float16),
        default_debug_observer(),
        default_reuse_input_observer(),
    ] {
        let mut o = spec.build().unwrap();
        o.observe(&x).unwrap();
        let err = o.calculate_qparams().unwrap_err().to_string();
        assert!(err.contains(spec.kind.name()), "{err}");
    }
    assert_eq!(default_debug_observer().kind, ObserverKind::Recording);
}

fn small_model(seed: u64) -> Module {
    let mut r = Rng(seed);
    Sequential::new()
        .push("fc1", Linear::new(6, 8, true, &mut r))
        .push("relu", Module::relu())
        .push("fc2", Linear::new(8, 4, true, &mut r))
        .into()
}

#[test]
fn quant_wrapper_add_quant_dequant_quantize_qat_and_swap_module() {
    let e = engines().remove(0);
    let x = rand(&[5, 6], 7);
    // QuantWrapper: quant, module, dequant, PyTorch's child names.
    let mut w = Module::quant_wrapper(small_model(3));
    let names: Vec<&str> = w.children().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["quant", "dequant", "module"]);
    w.train(false);
    prepare(
        &mut w,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    w.forward(Value::F(x.clone())).unwrap();
    convert_with(&mut w, &e).unwrap();
    assert_eq!(w.get("module.fc1").unwrap().type_name(), "QuantizedLinear");
    assert!(matches!(
        w.forward(Value::F(x.clone())).unwrap(),
        Value::F(_)
    ));
    // add_quant_dequant: each leaf with a qconfig wrapped; None keeps float.
    let q = QConfigMap::global(get_default_qconfig("x86").unwrap()).set_module("fc2", None);
    let a = add_quant_dequant(small_model(3), &q).unwrap();
    assert_eq!(a.get("fc1").unwrap().type_name(), "QuantWrapper");
    assert_eq!(a.get("fc2").unwrap().type_name(), "Linear");
    // quantize_qat: prepare_qat, the training loop, convert.
    let mut m = small_model(4);
    let qat = QConfigMap::global(get_default_qat_qconfig("x86").unwrap());
    let mut wrapped = Module::quant_wrapper(m.clone());
    quantize_qat(&mut wrapped, &qat, &e, &mut |m| {
        let mut sgd = Sgd::new(0.01, 0.0, 0.0);
        for _ in 0..2 {
            m.zero_grad();
            let y = m.forward(Value::F(x.clone()))?.to_float();
            m.backward(y)?;
            sgd.step(m)?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(
        wrapped.get("module.fc2").unwrap().type_name(),
        "QuantizedLinear"
    );
    // swap_module: an observed module becomes its quantized form; a module
    // without a mapping comes back unchanged.
    m.train(false);
    let mut p = Module::quant_wrapper(m);
    prepare(
        &mut p,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    p.forward(Value::F(x.clone())).unwrap();
    let fc1 = p.get("module.fc1").unwrap().clone();
    let s = swap_module(fc1, &Mappings::default(), &e).unwrap();
    assert_eq!(s.type_name(), "QuantizedLinear");
    let relu = p.get("module.relu").unwrap().clone();
    assert_eq!(
        swap_module(relu, &Mappings::default(), &e)
            .unwrap()
            .type_name(),
        "ReLU"
    );
}

#[test]
fn quantize_dynamic_spec_by_type_and_by_name() {
    let e = engines().remove(0);
    let mut m = small_model(5);
    // fp16 for every Linear, int8 for fc2 by name (a name beats a type).
    let spec = DynamicSpec::types(&["Linear"], float16_dynamic_qconfig())
        .with_name("fc2", default_dynamic_qconfig());
    quantize_dynamic_spec(&mut m, &spec, &e, &Mappings::default()).unwrap();
    use rquant_nn::quantized::{DynWeight, QDynLinear};
    let fp16 = |p: &str| {
        let q = m.get(p).unwrap().downcast_ref::<QDynLinear>().unwrap();
        matches!(q.weight, DynWeight::Fp16(_))
    };
    assert!(fp16("fc1"), "fc1: fp16 by type");
    assert!(!fp16("fc2"), "fc2: int8 by name");
    // A name alone: only that module.
    let mut m = small_model(5);
    let spec = DynamicSpec::default().with_name("fc1", default_dynamic_qconfig());
    quantize_dynamic_spec(&mut m, &spec, &e, &Mappings::default()).unwrap();
    assert_ne!(m.get("fc1").unwrap().type_name(), "Linear");
    assert_eq!(m.get("fc2").unwrap().type_name(), "Linear");
}

fn conv_bn(seed: u64) -> Module {
    let mut r = Rng(seed);
    let conv = Conv2d::new(
        2,
        4,
        [3, 3],
        rquant_nn::quantize::conv_params(1, 1, 1, 1),
        true,
        &mut r,
    )
    .unwrap();
    Sequential::new()
        .push("quant", Module::quant_stub())
        .push("conv", conv)
        .push("bn", BatchNorm2d::new(4))
        .push("relu", Module::relu())
        .push("dequant", Module::dequant_stub())
        .into()
}

#[test]
fn calibration_and_qat_resume_bit_identically() {
    let e = engines().remove(0);
    let (x1, x2) = (rand(&[2, 2, 6, 6], 11), rand(&[2, 2, 6, 6], 12));
    // Calibration stopped after one batch, saved, loaded, resumed.
    let mut m = conv_bn(9);
    m.train(false);
    prepare(
        &mut m,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    m.forward(Value::F(x1.clone())).unwrap();
    let bytes = quantized_bytes(&m, "x86").unwrap();
    let (mut back, _) = quantized_from_bytes(&bytes, "prepared.st", Some(e.clone())).unwrap();
    for mm in [&mut m, &mut back] {
        mm.forward(Value::F(x2.clone())).unwrap();
        convert_with(mm, &e).unwrap();
    }
    assert_eq!(
        floats(m.forward(Value::F(x1.clone())).unwrap()),
        floats(back.forward(Value::F(x1.clone())).unwrap()),
        "resumed calibration"
    );
    // QAT stopped after a step (fake quants, bn statistics, weights), resumed.
    let mut m = conv_bn(10);
    m.train(true);
    fuse_modules_qat(&mut m, &[&["conv", "bn", "relu"]]).unwrap();
    prepare_qat(
        &mut m,
        &QConfigMap::global(get_default_qat_qconfig("x86").unwrap()),
    )
    .unwrap();
    let step = |m: &mut Module, x: &Tensor| {
        m.zero_grad();
        let y = m.forward(Value::F(x.clone())).unwrap().to_float();
        m.backward(y).unwrap();
        Sgd::new(0.05, 0.0, 0.0).step(m).unwrap();
    };
    step(&mut m, &x1);
    let bytes = quantized_bytes(&m, "x86").unwrap();
    let (mut back, _) = quantized_from_bytes(&bytes, "qat.st", Some(e.clone())).unwrap();
    back.train(true);
    step(&mut m, &x2);
    step(&mut back, &x2);
    m.train(true);
    assert_eq!(
        floats(m.forward(Value::F(x1.clone())).unwrap()),
        floats(back.forward(Value::F(x1.clone())).unwrap()),
        "resumed QAT"
    );
    for mm in [&mut m, &mut back] {
        mm.train(false);
        convert_with(mm, &e).unwrap();
    }
    assert_eq!(
        floats(m.forward(Value::F(x2.clone())).unwrap()),
        floats(back.forward(Value::F(x2.clone())).unwrap()),
        "converted after a resumed QAT"
    );
}

#[test]
fn numeric_suite_pairs_loggers_and_shadows() {
    let e = engines().remove(0);
    let x = rand(&[4, 6], 21);
    // A custom block (Sequential inside Sequential) to log inside.
    let mut r = Rng(22);
    let inner = Sequential::new()
        .push("fc", Linear::new(8, 8, true, &mut r))
        .push("relu", Module::relu());
    let float: Module = Sequential::new()
        .push("quant", Module::quant_stub())
        .push("fc1", Linear::new(6, 8, true, &mut r))
        .push("block", inner)
        .push("dequant", Module::dequant_stub())
        .into();
    let mut q = float.clone();
    q.train(false);
    prepare(
        &mut q,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    q.forward(Value::F(x.clone())).unwrap();
    convert_with(&mut q, &e).unwrap();
    // compare_weights: float and dequantized int8 weights by name.
    let w = compare_weights(&float, &q);
    let names: Vec<&str> = w.iter().map(|p| p.name.as_str()).collect();
    assert!(
        names.contains(&"fc1.weight") && names.contains(&"block.fc.weight"),
        "{names:?}"
    );
    for p in &w {
        assert_eq!(p.float.shape(), p.quantized.shape());
        let err = p
            .float
            .data()
            .iter()
            .zip(p.quantized.data())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 0.01, "{}: {err}", p.name);
    }
    // Output loggers at any depth, and the matching pairs.
    let pairs = compare_model_outputs(&float, &q, &x, None).unwrap();
    let names: Vec<&str> = pairs.iter().map(|p| p.name.as_str()).collect();
    assert!(names.iter().any(|n| n.starts_with("block.fc")), "{names:?}");
    let (mut f2, mut q2) = (float.clone(), q.clone());
    prepare_model_outputs(&mut f2, &mut q2, None).unwrap();
    f2.forward(Value::F(x.clone())).unwrap();
    q2.forward(Value::F(x.clone())).unwrap();
    assert!(!get_logger_dict(&q2).is_empty());
    assert_eq!(get_matching_activations(&f2, &q2).len(), pairs.len());
    // Shadow modules: the float module runs beside the quantized one.
    let shadows = compare_model_stub(&float, &q, &["QuantizedLinear"], &x).unwrap();
    assert!(!shadows.is_empty());
}

#[test]
fn qat_special_fake_quants_lsq_and_bn_stat_switches() {
    use rquant_nn::{freeze_bn_stats, update_bn_stats};
    let e = engines().remove(0);
    let x = rand(&[5, 6], 31);
    // prepare_qat gives Sigmoid / Tanh the fixed-qparams fake quants of
    // PyTorch's DEFAULT_MODULE_TO_ACT_POST_PROCESS; convert leaves them float.
    let mut r = Rng(32);
    let mut m: Module = Sequential::new()
        .push("quant", Module::quant_stub())
        .push("fc", Linear::new(6, 4, true, &mut r))
        .push("sig", Module::sigmoid())
        .push("tanh", Module::tanh())
        .push("dequant", Module::dequant_stub())
        .into();
    m.train(true);
    prepare_qat(
        &mut m,
        &QConfigMap::global(get_default_qat_qconfig("x86").unwrap()),
    )
    .unwrap();
    for (name, scale) in [("sig", 1.0 / 256.0), ("tanh", 2.0 / 256.0)] {
        let o = m
            .get(name)
            .unwrap()
            .downcast_ref::<rquant_nn::Observed>()
            .unwrap();
        assert_eq!(o.post.qparams().unwrap().0, scale, "{name}");
    }
    let y = m.forward(Value::F(x.clone())).unwrap().to_float();
    for v in y.data() {
        let k = v * 128.0;
        assert_eq!(k, k.round(), "tanh output on its 2/256 grid: {v}");
    }
    m.train(false);
    convert_with(&mut m, &e).unwrap();
    assert_eq!(m.get("sig").unwrap().type_name(), "Sigmoid");
    assert_eq!(m.get("tanh").unwrap().type_name(), "Tanh");
    let mut upto = m.clone();
    *upto.get_mut("tanh").unwrap() = Module::identity();
    *upto.get_mut("dequant").unwrap() = Module::identity();
    let Value::Q(h) = upto.forward(Value::F(x.clone())).unwrap() else {
        panic!("quantized sigmoid output")
    };
    assert_eq!(h.q_per_tensor(), Some((1.0 / 256.0, 0)));
    // LSQ through prepare_qat: scale and zero point learn.
    let mut m = Module::quant_wrapper(small_model(33));
    m.train(true);
    let q = rquant_core::qconfig::learnable_qat_qconfig(false, None, true);
    prepare_qat(&mut m, &QConfigMap::global(q)).unwrap();
    let mut sgd = Sgd::new(0.01, 0.0, 0.0);
    let mut seen = 0;
    for _ in 0..2 {
        m.zero_grad();
        let y = m.forward(Value::F(x.clone())).unwrap().to_float();
        m.backward(y).unwrap();
        m.visit_mut("", &mut |_, mm| {
            for fq in mm.layer_mut().fake_quants_mut() {
                if let Some(l) = fq.learnable_state() {
                    if l.learning_enabled || l.static_enabled {
                        seen += 1;
                    }
                }
            }
            Ok(())
        })
        .unwrap();
        sgd.step(&mut m).unwrap();
    }
    assert!(seen > 0, "learnable fake quants in the prepared model");
    m.train(false);
    convert_with(&mut m, &e).unwrap();
    assert_eq!(m.get("module.fc1").unwrap().type_name(), "QuantizedLinear");
    // freeze_bn_stats stops the running statistics; update_bn_stats resumes.
    let mut m = conv_bn(34);
    m.train(true);
    fuse_modules_qat(&mut m, &[&["conv", "bn", "relu"]]).unwrap();
    prepare_qat(
        &mut m,
        &QConfigMap::global(get_default_qat_qconfig("x86").unwrap()),
    )
    .unwrap();
    let xi = rand(&[2, 2, 6, 6], 35);
    let stats = |m: &Module| -> Vec<f32> {
        let o = m
            .get("conv")
            .unwrap()
            .downcast_ref::<rquant_nn::Observed>()
            .unwrap();
        let c = o.module.downcast_ref::<Conv2d>().unwrap();
        c.bn.as_ref().unwrap().running_mean.data().to_vec()
    };
    m.forward(Value::F(xi.clone())).unwrap();
    freeze_bn_stats(&mut m);
    let frozen = stats(&m);
    m.forward(Value::F(xi.clone())).unwrap();
    assert_eq!(stats(&m), frozen, "frozen statistics");
    update_bn_stats(&mut m);
    m.forward(Value::F(xi)).unwrap();
    assert_ne!(stats(&m), frozen, "statistics update again");
}

#[test]
fn linear_relu_static_qat_dynamic_and_quantize() {
    use rquant_nn::{fuse_modules, quantize};
    let e = engines().remove(0);
    let x = rand(&[5, 6], 41);
    // quantize(model, run_fn): prepare, calibrate, convert; fc1+relu fused
    // into nniq.LinearReLU, whose int8 output equals the unfused pair's.
    let mut fused = Module::quant_wrapper(small_model(42));
    fused.train(false);
    fuse_modules(&mut fused, &[&["module.fc1", "module.relu"]]).unwrap();
    let xc = x.clone();
    quantize(
        &mut fused,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
        &mut |m| m.forward(Value::F(xc.clone())).map(|_| ()),
    )
    .unwrap();
    assert_eq!(
        fused.get("module.fc1").unwrap().type_name(),
        "QuantizedLinearReLU"
    );
    let w = fused.get("module.fc1").unwrap().layer().weight().unwrap();
    assert_eq!(w.shape(), [8, 6]);
    let Value::Q(q) = fused
        .get_mut("quant")
        .unwrap()
        .forward(Value::F(x.clone()))
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(q.qscheme(), rquant_core::QScheme::PerTensorAffine);
    let Value::Q(y) = fused
        .get_mut("module.fc1")
        .unwrap()
        .forward(Value::Q(q))
        .unwrap()
    else {
        panic!()
    };
    let (_, zp) = y.q_per_tensor().unwrap();
    assert!(
        y.int_repr().iter().all(|&c| c as i64 >= zp),
        "relu fused: codes >= zp"
    );
    // QAT: nniqat.LinearReLU.
    let mut m = small_model(42);
    m.train(true);
    rquant_nn::fuse_modules_qat(&mut m, &[&["fc1", "relu"]]).unwrap();
    prepare_qat(
        &mut m,
        &QConfigMap::global(get_default_qat_qconfig("x86").unwrap()),
    )
    .unwrap();
    let t = m.get("fc1").unwrap();
    let inner = t
        .downcast_ref::<rquant_nn::Observed>()
        .map(|o| o.module.type_name());
    assert_eq!(inner.unwrap_or_else(|| t.type_name()), "QATLinearReLU");
    // Dynamic: nniqd.LinearReLU, its output non-negative.
    let mut m = small_model(42);
    m.train(false);
    fuse_modules(&mut m, &[&["fc1", "relu"]]).unwrap();
    let spec = DynamicSpec::types(&["LinearReLU", "Linear"], default_dynamic_qconfig());
    quantize_dynamic_spec(&mut m, &spec, &e, &Mappings::default()).unwrap();
    assert_eq!(
        m.get("fc1").unwrap().type_name(),
        "DynamicQuantizedLinearReLU"
    );
    let h = m
        .get_mut("fc1")
        .unwrap()
        .forward(Value::F(x))
        .unwrap()
        .to_float();
    assert!(h.data().iter().all(|&v| v >= 0.0));
}
