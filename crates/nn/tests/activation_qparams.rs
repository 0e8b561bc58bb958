//! `set_activation_qparams`: observed modules given fixed output qparams
//! instead of calibrating (to reproduce another tool's converted model), on
//! the demo's MNIST CNN and a FloatFunctional block.

use std::collections::BTreeMap;

use rquant_core::qconfig::{get_default_qat_qconfig, get_default_qconfig};
use rquant_core::Tensor;
use rquant_nn::quantized::{QConv2d, QFunctional, QLinear, Quantize};
use rquant_nn::{
    convert_with, fuse_modules, mnist, observed_paths, prepare, prepare_qat,
    set_activation_qparams, Block, Module, QConfigMap, Sequential, Value,
};

fn prepared() -> Module {
    let mut m = mnist::pretrained(&mnist::committed_weights()).unwrap();
    m.train(false);
    fuse_modules(&mut m, &mnist::FUSE_GROUPS).unwrap();
    prepare(
        &mut m,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    m
}

fn fixed_for(paths: &[String]) -> BTreeMap<String, (f32, i64)> {
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), (0.01 + i as f32 * 0.001, 3 + i as i64)))
        .collect()
}

#[test]
fn fixed_qparams_reach_every_converted_module() {
    rquant_nn::engines::init();
    let mut m = prepared();
    let paths = observed_paths(&mut m);
    assert!(paths.contains(&"quant".to_string()), "{paths:?}");
    assert!(paths.contains(&"conv_layers.0".to_string()), "{paths:?}");
    let qp = fixed_for(&paths);
    set_activation_qparams(&mut m, &qp).unwrap();
    // Forwards no longer observe: the qparams stay what was given.
    m.forward(Value::F(
        Tensor::new([1, 1, 28, 28], vec![0.5; 784]).unwrap(),
    ))
    .unwrap();
    let e = rquant_nn::engines::available().remove(0);
    convert_with(&mut m, &e).unwrap();
    for (p, &(s, z)) in &qp {
        let got = m.get(p).unwrap();
        let (gs, gz) = if let Some(q) = got.downcast_ref::<Quantize>() {
            (q.scale, q.zero_point)
        } else if let Some(c) = got.downcast_ref::<QConv2d>() {
            (c.scale, c.zero_point)
        } else if let Some(l) = got.downcast_ref::<QLinear>() {
            (l.scale, l.zero_point)
        } else {
            panic!("{p}: {}", got.type_name())
        };
        assert_eq!((gs, gz), (s as f64, z), "{p}");
    }
}

#[test]
fn every_observed_module_needs_an_entry_and_every_entry_a_module() {
    let mut m = prepared();
    let paths = observed_paths(&mut m);
    let mut qp = fixed_for(&paths);
    let dropped = paths[1].clone();
    qp.remove(&dropped);
    let msg = set_activation_qparams(&mut m.clone(), &qp)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&dropped) && msg.contains("no qparams given"),
        "{msg}"
    );

    let mut qp = fixed_for(&paths);
    qp.insert("conv_layers.99".into(), (0.1, 0));
    let msg = set_activation_qparams(&mut m.clone(), &qp)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("conv_layers.99") && msg.contains("no observed module"),
        "{msg}"
    );

    for bad in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let mut qp = fixed_for(&paths);
        qp.insert(paths[0].clone(), (bad, 0));
        let msg = set_activation_qparams(&mut m.clone(), &qp)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("finite and positive"), "{bad}: {msg}");
    }

    // A float model has no observers at all.
    let mut float = mnist::pretrained(&mnist::committed_weights()).unwrap();
    assert!(observed_paths(&mut float).is_empty());
    let msg = set_activation_qparams(&mut float, &fixed_for(&paths[..1]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("prepare the model first"), "{msg}");
}

#[test]
fn qat_models_are_refused() {
    let mut m = mnist::pretrained(&mnist::committed_weights()).unwrap();
    m.train(true);
    prepare_qat(
        &mut m,
        &QConfigMap::global(get_default_qat_qconfig("x86").unwrap()),
    )
    .unwrap();
    let paths = observed_paths(&mut m);
    assert!(!paths.is_empty());
    let msg = set_activation_qparams(&mut m, &fixed_for(&paths))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("QAT"), "{msg}");
}

#[test]
fn float_functional_keeps_its_fixed_observation() {
    rquant_nn::engines::init();
    fn fwd(b: &mut Block, x: Value) -> rquant_nn::Result<Value> {
        b.child("add")?.add(x.clone(), x)
    }
    let mut m: Module = Sequential::new()
        .push("quant", Module::quant_stub())
        .push(
            "blk",
            Block::new("Twice", fwd).with("add", Module::float_functional()),
        )
        .push("dequant", Module::dequant_stub())
        .into();
    prepare(
        &mut m,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    let paths = observed_paths(&mut m);
    assert_eq!(paths, ["quant", "blk.add"]);
    // observed_paths hands the FloatFunctional's observation back.
    assert_eq!(observed_paths(&mut m), paths);
    let qp = BTreeMap::from([
        ("quant".to_string(), (0.05f32, 10)),
        ("blk.add".to_string(), (0.125f32, 20)),
    ]);
    set_activation_qparams(&mut m, &qp).unwrap();
    let e = rquant_nn::engines::available().remove(0);
    convert_with(&mut m, &e).unwrap();
    let f = m
        .get("blk.add")
        .unwrap()
        .downcast_ref::<QFunctional>()
        .unwrap();
    assert_eq!((f.scale, f.zero_point), (0.125, 20));
    // x = 0.5 → q 20 at scale 0.05 zp 10; 2x = 1.0 → 8 + 20 at scale 0.125.
    let y = m
        .forward(Value::F(Tensor::new([1, 1, 1, 1], vec![0.5]).unwrap()))
        .unwrap()
        .to_float();
    assert_eq!(y.data(), [1.0]);
}
