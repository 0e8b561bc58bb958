//! Modules against PyTorch 2.15 (tests/data/torch_nn_cases.json, made by
//! tools/mnist/torch_nn_cases.py), backward passes against finite
//! differences, fusion folding bit for bit.

use rquant_core::{Conv2dParams, Tensor};
use rquant_nn::layers::{ActKind, Activation, AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};
use rquant_nn::rnn::{Rnn, RnnKind};
use rquant_nn::train::{cross_entropy, Adam, Optimizer, Sgd};
use rquant_nn::{
    fuse_conv_bn_weights, fuse_modules, BatchNorm2d, Conv2d, Linear, Module, Rng, Sequential, Value,
};
use serde_json::Value as J;

fn cases() -> J {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/torch_nn_cases.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn t(j: &J) -> Tensor {
    let shape: Vec<usize> = j["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = j["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    Tensor::new(shape, data).unwrap()
}

#[track_caller]
fn close(got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.shape(), want.shape());
    for (i, (a, b)) in got.data().iter().zip(want.data()).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "index {i}: got {a}, want {b}"
        );
    }
}

fn dot(a: &Tensor, b: &Tensor) -> f32 {
    a.data().iter().zip(b.data()).map(|(x, y)| x * y).sum()
}

#[test]
fn conv2d_forward_backward_match_torch() {
    let c = &cases()["conv2d"];
    let p = Conv2dParams {
        stride: [2, 2],
        padding: [1, 1],
        dilation: [2, 2],
        groups: 2,
    };
    let mut conv = Conv2d::from_weights(t(&c["w"]), Some(t(&c["b"])), p).unwrap();
    conv.weight.grad = None;
    let mut m = Module::new(conv);
    m.train(true);
    let y = m.forward(Value::F(t(&c["x"]))).unwrap().to_float();
    close(&y, &t(&c["y"]), 1e-5);
    let dx = m.backward(t(&c["r"])).unwrap();
    close(&dx, &t(&c["dx"]), 1e-5);
    let Some(conv) = m.downcast_ref::<Conv2d>() else {
        unreachable!()
    };
    close(conv.weight.grad.as_ref().unwrap(), &t(&c["dw"]), 1e-5);
    close(
        conv.bias.as_ref().unwrap().grad.as_ref().unwrap(),
        &t(&c["db"]),
        1e-5,
    );
}

#[test]
fn linear_forward_backward_match_torch() {
    let c = &cases()["linear"];
    let mut m = Module::new(Linear::from_weights(t(&c["w"]), Some(t(&c["b"]))).unwrap());
    m.train(true);
    let y = m.forward(Value::F(t(&c["x"]))).unwrap().to_float();
    close(&y, &t(&c["y"]), 1e-5);
    close(&m.backward(t(&c["r"])).unwrap(), &t(&c["dx"]), 1e-5);
    let Some(l) = m.downcast_ref::<Linear>() else {
        unreachable!()
    };
    close(l.weight.grad.as_ref().unwrap(), &t(&c["dw"]), 1e-5);
    close(
        l.bias.as_ref().unwrap().grad.as_ref().unwrap(),
        &t(&c["db"]),
        1e-5,
    );
}

#[test]
fn batchnorm_train_and_eval_match_torch() {
    let c = &cases()["batchnorm"];
    let mut bn = BatchNorm2d::new(4);
    bn.weight.value = t(&c["gamma"]);
    bn.bias.value = t(&c["beta"]);
    let mut m = Module::new(bn);
    m.train(true);
    let y = m.forward(Value::F(t(&c["x"]))).unwrap().to_float();
    close(&y, &t(&c["y"]), 1e-5);
    close(&m.backward(t(&c["r"])).unwrap(), &t(&c["dx"]), 1e-4);
    m.train(false);
    let Some(bn) = m.downcast_ref::<BatchNorm2d>() else {
        unreachable!()
    };
    close(bn.weight.grad.as_ref().unwrap(), &t(&c["dgamma"]), 1e-5);
    close(bn.bias.grad.as_ref().unwrap(), &t(&c["dbeta"]), 1e-5);
    close(&bn.running_mean, &t(&c["running_mean"]), 1e-6);
    close(&bn.running_var, &t(&c["running_var"]), 1e-6);
    let y = m.forward(Value::F(t(&c["x"]))).unwrap().to_float();
    close(&y, &t(&c["y_eval"]), 1e-5);
}

#[test]
fn pooling_forward_backward_match_torch() {
    let c = &cases()["pool"];
    let x = t(&c["x"]);
    let mut mp = MaxPool2d::new(3, 2);
    mp.padding = [1, 1];
    let mut ap = AvgPool2d::new(3, 2);
    ap.padding = [1, 1];
    ap.ceil_mode = true;
    ap.count_include_pad = false;
    for (mut m, y, r, d) in [
        (Module::new(mp), "max", "rm", "dmax"),
        (Module::new(ap), "avg", "ra", "davg"),
        (
            Module::new(AdaptiveAvgPool2d::new([4, 3])),
            "adaptive",
            "rd",
            "dadaptive",
        ),
    ] {
        m.train(true);
        close(
            &m.forward(Value::F(x.clone())).unwrap().to_float(),
            &t(&c[y]),
            1e-6,
        );
        close(&m.backward(t(&c[r])).unwrap(), &t(&c[d]), 1e-6);
    }
}

#[test]
fn activations_match_torch() {
    let c = cases();
    for (name, kind) in [("hardswish", ActKind::Hardswish), ("relu6", ActKind::ReLU6)] {
        let mut m = Module::new(Activation::new(kind));
        m.train(true);
        let x = t(&c[name]["x"]);
        close(
            &m.forward(Value::F(x.clone())).unwrap().to_float(),
            &t(&c[name]["y"]),
            1e-6,
        );
        let ones = Tensor::new(x.shape().to_vec(), vec![1.0; x.numel()]).unwrap();
        close(&m.backward(ones).unwrap(), &t(&c[name]["dx"]), 1e-6);
    }
}

fn bn_from(c: &J, n: usize) -> BatchNorm2d {
    let mut bn = BatchNorm2d::new(n);
    bn.weight.value = t(&c["gamma"]);
    bn.bias.value = t(&c["beta"]);
    bn.running_mean = t(&c["mean"]);
    bn.running_var = t(&c["var"]);
    bn
}

#[test]
fn conv_bn_and_linear_bn_folding_is_bit_exact_with_torch() {
    let all = cases();
    let c = &all["fuse_conv_bn"];
    let conv = Conv2d::from_weights(t(&c["w"]), Some(t(&c["b"])), Conv2dParams::default()).unwrap();
    let mut m = Module::new(Sequential::from_modules(vec![
        Module::new(conv),
        Module::new(bn_from(c, 5)),
    ]));
    fuse_modules(&mut m, &[&["0", "1"]]).unwrap();
    let Some(f) = m.get("0").and_then(|m| m.downcast_ref::<Conv2d>()) else {
        panic!("fused conv expected")
    };
    assert_eq!(f.weight.value.data(), t(&c["fw"]).data());
    assert_eq!(f.bias.as_ref().unwrap().value.data(), t(&c["fb"]).data());
    assert!(m.get("1").unwrap().is::<rquant_nn::Identity>());

    let c = &all["fuse_linear_bn"];
    let lin = Linear::from_weights(t(&c["w"]), Some(t(&c["b"]))).unwrap();
    let mut bn1 = bn_from(c, 4);
    bn1.one_d = true;
    let mut m = Module::new(Sequential::from_modules(vec![
        Module::new(lin),
        Module::new(bn1),
    ]));
    // Unfused Linear + BatchNorm1d runs on [N, C] and agrees with the folded Linear.
    let xin = Tensor::new([3, 6], (0..18).map(|i| i as f32 * 0.1 - 0.9).collect()).unwrap();
    let before = m.forward(Value::F(xin.clone())).unwrap().to_float();
    fuse_modules(&mut m, &[&["0", "1"]]).unwrap();
    let after = m.forward(Value::F(xin)).unwrap().to_float();
    close(&after, &before, 1e-5);
    let Some(f) = m.get("0").and_then(|m| m.downcast_ref::<Linear>()) else {
        panic!("fused linear expected")
    };
    assert_eq!(f.weight.value.data(), t(&c["fw"]).data());
    assert_eq!(f.bias.as_ref().unwrap().value.data(), t(&c["fb"]).data());
    // The conv formula associates the bias differently: not PyTorch's linear result.
    let (_, b) =
        fuse_conv_bn_weights(&t(&c["w"]), Some(t(&c["b"]).data()), &bn_from(c, 4)).unwrap();
    assert_ne!(&b[..], t(&c["fb"]).data());
}

#[test]
fn fusion_rejects_bad_patterns_with_the_module_names() {
    let mut rng = Rng(1);
    let mut m = Module::new(Sequential::from_modules(vec![
        Module::new(Linear::new(3, 3, true, &mut rng)),
        Module::hardswish(),
    ]));
    let e = fuse_modules(&mut m, &[&["0", "1"]])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("0 + 1") && e.contains("unsupported fusion"),
        "{e}"
    );
    let e = fuse_modules(&mut m, &[&["0", "7"]])
        .unwrap_err()
        .to_string();
    assert!(e.contains('7') && e.contains("no such submodule"), "{e}");
}

#[test]
fn cross_entropy_and_optimizers_match_torch() {
    let all = cases();
    let c = &all["cross_entropy"];
    let labels: Vec<usize> = c["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let (loss, g) = cross_entropy(&t(&c["z"]), &labels).unwrap();
    assert!((loss - c["loss"].as_f64().unwrap() as f32).abs() < 1e-6);
    close(&g, &t(&c["dz"]), 1e-6);

    let c = &all["optim"];
    for name in ["sgd", "adam"] {
        let mut m =
            Module::new(Linear::from_weights(t(&c["p0"]).reshape([1, 6]).unwrap(), None).unwrap());
        let mut opt: Box<dyn Optimizer> = match name {
            "sgd" => Box::new(Sgd::new(0.1, 0.9, 0.0)),
            _ => Box::new(Adam::new(0.01)),
        };
        for g in c["grads"].as_array().unwrap() {
            let Some(l) = m.downcast_mut::<Linear>() else {
                unreachable!()
            };
            l.weight.grad = Some(t(g).reshape([1, 6]).unwrap());
            opt.step(&mut m).unwrap();
        }
        let Some(l) = m.downcast_ref::<Linear>() else {
            unreachable!()
        };
        close(
            &l.weight.value.clone().reshape([6]).unwrap(),
            &t(&c[name]),
            1e-6,
        );
    }
}

#[test]
fn lstm_and_gru_match_torch() {
    let all = cases();
    for (name, kind) in [("lstm", RnnKind::Lstm), ("gru", RnnKind::Gru)] {
        let c = &all[name];
        let mut r = Rnn::new(kind, 3, 5, 2, true, &mut Rng(0));
        for (n, p) in r.params_mut() {
            p.value = t(&c["params"][n.as_str()]);
        }
        let (out, _) = r.forward(&t(&c["x"]), None).unwrap();
        close(&out, &t(&c["out"]), 1e-5);
    }
}

/// Central finite differences of `sum(forward(x) * r)` against backward.
fn finite_diff(mut m: Module, x: Tensor) {
    m.train(true);
    let y = m.forward(Value::F(x.clone())).unwrap().to_float();
    let mut rng = Rng(7);
    let r = Tensor::new(
        y.shape().to_vec(),
        (0..y.numel()).map(|_| rng.sym(1.0)).collect(),
    )
    .unwrap();
    let dx = m.backward(r.clone()).unwrap();
    m.train(false);
    let eps = 1e-2f32;
    for i in (0..x.numel()).step_by(7) {
        let mut xp = x.clone();
        xp.data_mut()[i] += eps;
        let mut xm = x.clone();
        xm.data_mut()[i] -= eps;
        let fp = dot(&m.forward(Value::F(xp)).unwrap().to_float(), &r);
        let fm = dot(&m.forward(Value::F(xm)).unwrap().to_float(), &r);
        let num = (fp - fm) / (2.0 * eps);
        assert!(
            (num - dx.data()[i]).abs() < 2e-2 * (1.0 + num.abs()),
            "{}: index {i}: numeric {num} vs backward {}",
            m.type_name(),
            dx.data()[i]
        );
    }
}

#[test]
fn backward_passes_agree_with_finite_differences() {
    let mut rng = Rng(3);
    let x4 = Tensor::new([2, 4, 6, 6], (0..288).map(|_| rng.sym(1.0)).collect()).unwrap();
    let p = Conv2dParams {
        stride: [1, 2],
        padding: [1, 0],
        dilation: [1, 1],
        groups: 2,
    };
    finite_diff(
        Module::new(Conv2d::new(4, 6, [3, 2], p, true, &mut rng).unwrap()),
        x4.clone(),
    );
    let mut cr = Conv2d::new(4, 4, [1, 1], Conv2dParams::default(), false, &mut rng).unwrap();
    cr.relu = true;
    finite_diff(Module::new(cr), x4.clone());
    let mut seq = Sequential::from_modules(vec![
        Module::new(AvgPool2d::new(2, 2)),
        Module::hardswish(),
        Module::flatten(),
    ]);
    seq.children
        .push(("3".into(), Module::new(Linear::new(36, 5, true, &mut rng))));
    finite_diff(Module::new(seq), x4);
}

#[test]
fn qat_conv_bn_relu_training_step_matches_torch() {
    use rquant_core::qconfig::get_default_qat_qconfig;
    use rquant_nn::{fuse_modules_qat, prepare_qat, QConfigMap};
    let all = cases();
    let c = &all["qat_convbnrelu"];
    let p = Conv2dParams {
        padding: [1, 1],
        ..Conv2dParams::default()
    };
    let conv = Conv2d::from_weights(t(&c["w"]), Some(t(&c["b"])), p).unwrap();
    let mut bn = BatchNorm2d::new(4);
    bn.weight.value = t(&c["gamma"]);
    bn.bias.value = t(&c["beta"]);
    bn.running_mean = t(&c["mean"]);
    bn.running_var = t(&c["var"]);
    let mut m = Module::new(Sequential::from_modules(vec![
        Module::new(conv),
        Module::new(bn),
        Module::relu(),
    ]));
    m.train(true);
    fuse_modules_qat(&mut m, &[&["0", "1", "2"]]).unwrap();
    prepare_qat(
        &mut m,
        &QConfigMap::global(get_default_qat_qconfig("x86").unwrap()),
    )
    .unwrap();
    assert_eq!(m.get("0").unwrap().type_name(), "QATConvBnReLU2d");
    let y = m.forward(Value::F(t(&c["x"]))).unwrap().to_float();
    let want = t(&c["y"]);
    // Fake-quantized outputs: equal, or (rarely, float summation order) one step apart.
    let off = y
        .data()
        .iter()
        .zip(want.data())
        .filter(|(a, b)| (*a - *b).abs() > 1e-5)
        .count();
    assert!(
        off * 100 <= y.numel(),
        "{off} of {} outputs differ",
        y.numel()
    );
    let dx = m.backward(t(&c["r"])).unwrap();
    close(&dx, &t(&c["dx"]), 2e-3);
    let Some(o) = m
        .get("0")
        .and_then(|m| m.downcast_ref::<rquant_nn::Observed>())
    else {
        panic!("observed conv expected")
    };
    let Some(conv) = o.module.downcast_ref::<Conv2d>() else {
        panic!()
    };
    close(conv.weight.grad.as_ref().unwrap(), &t(&c["dw"]), 2e-3);
    close(
        conv.bias.as_ref().unwrap().grad.as_ref().unwrap(),
        &t(&c["db"]),
        2e-3,
    );
    let bn = conv.bn.as_ref().unwrap();
    close(bn.weight.grad.as_ref().unwrap(), &t(&c["dgamma"]), 2e-3);
    close(bn.bias.grad.as_ref().unwrap(), &t(&c["dbeta"]), 2e-3);
    close(&bn.running_mean, &t(&c["running_mean"]), 1e-5);
    close(&bn.running_var, &t(&c["running_var"]), 1e-5);
}

#[test]
fn dynamic_lstm_and_gru_match_torch() {
    use rquant_nn::{quantize_dynamic_with, DynamicDType, DynamicType};
    rquant_nn::engines::init();
    let all = cases();
    for (name, kind) in [("dyn_lstm", RnnKind::Lstm), ("dyn_gru", RnnKind::Gru)] {
        let c = &all[name];
        let mut r = Rnn::new(kind, 4, 6, 2, true, &mut Rng(0));
        for (n, p) in r.params_mut() {
            p.value = t(&c["params"][n.as_str()]);
        }
        let mut outs = Vec::new();
        for e in rquant_nn::engines::available() {
            let mut m = Module::new(r.clone());
            quantize_dynamic_with(
                &mut m,
                &[DynamicType::Lstm, DynamicType::Gru],
                DynamicDType::QInt8,
                &rquant_core::qconfig::default_dynamic_qconfig(),
                &e,
            )
            .unwrap();
            let out = m.forward(Value::F(t(&c["x"]))).unwrap().to_float();
            close(&out, &t(&c["out"]), 1e-5);
            outs.push(out);
        }
        assert!(outs.windows(2).all(|w| w[0] == w[1]), "engines differ");
    }
}

/// A residual block with a FloatFunctional skip connection, written as a
/// [`rquant_nn::Block`]: prepare/convert reach its children.
fn residual(b: &mut rquant_nn::Block, x: Value) -> rquant_nn::Result<Value> {
    let y = b.run("conv", x.clone())?;
    b.child("skip")?.add_relu(y, x)
}

#[test]
fn skip_connections_quantize_through_float_functional() {
    use rquant_core::qconfig::get_default_qconfig;
    use rquant_nn::numeric_suite::sqnr;
    use rquant_nn::{convert_with, prepare, QConfigMap};
    rquant_nn::engines::init();
    let mut rng = Rng(9);
    let p = Conv2dParams {
        padding: [1, 1],
        ..Conv2dParams::default()
    };
    let block = rquant_nn::Block::new("Residual", residual)
        .with(
            "conv",
            Conv2d::new(3, 3, [3, 3], p, true, &mut rng).unwrap(),
        )
        .with("skip", Module::float_functional());
    let float = Module::new(
        Sequential::new()
            .push("quant", Module::quant_stub())
            .push("block", block)
            .push("dequant", Module::dequant_stub()),
    );
    let x = Tensor::new([2, 3, 5, 5], (0..150).map(|_| rng.sym(1.0)).collect()).unwrap();
    let mut f = float.clone();
    let want = f.forward(Value::F(x.clone())).unwrap().to_float();
    let mut m = float;
    prepare(
        &mut m,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    m.forward(Value::F(x.clone())).unwrap();
    let mut outs = Vec::new();
    for e in rquant_nn::engines::available() {
        let mut q = m.clone();
        convert_with(&mut q, &e).unwrap();
        assert_eq!(q.get("block.skip").unwrap().type_name(), "QFunctional");
        rquant_core::registry::set_engine(e.name()).unwrap();
        let y = q.forward(Value::F(x.clone())).unwrap().to_float();
        assert!(sqnr(want.data(), y.data()) > 25.0);
        outs.push(y);
    }
    assert!(outs.windows(2).all(|w| w[0] == w[1]), "engines differ");
}

#[test]
fn per_module_qconfig_none_keeps_float_and_more_ops_convert() {
    use rquant_core::qconfig::get_default_qconfig;
    use rquant_nn::layers::{AdaptiveAvgPool2d, AvgPool2d};
    use rquant_nn::numeric_suite::sqnr;
    use rquant_nn::{convert_with, prepare, QConfigMap};
    rquant_nn::engines::init();
    let mut rng = Rng(21);
    let p = Conv2dParams {
        padding: [1, 1],
        ..Conv2dParams::default()
    };
    let float = Module::new(Sequential::from_modules(vec![
        Module::quant_stub(),
        Module::new(Conv2d::new(3, 8, [3, 3], p, true, &mut rng).unwrap()),
        Module::hardswish(),
        Module::new(AvgPool2d::new(2, 2)),
        Module::relu6(),
        Module::new(AdaptiveAvgPool2d::new([2, 2])),
        Module::flatten(),
        Module::dequant_stub(),
        Module::new(Linear::new(32, 4, true, &mut rng)),
    ]));
    let x = Tensor::new([4, 3, 8, 8], (0..768).map(|_| rng.sym(2.0)).collect()).unwrap();
    let want = float
        .clone()
        .forward(Value::F(x.clone()))
        .unwrap()
        .to_float();
    let map = QConfigMap::global(get_default_qconfig("x86").unwrap()).set_module("8", None);
    let mut m = float;
    prepare(&mut m, &map).unwrap();
    m.forward(Value::F(x.clone())).unwrap();
    let mut outs = Vec::new();
    for e in rquant_nn::engines::available() {
        let mut q = m.clone();
        convert_with(&mut q, &e).unwrap();
        assert_eq!(q.get("8").unwrap().type_name(), "Linear");
        assert_eq!(q.get("2").unwrap().type_name(), "QuantizedHardswish");
        assert_eq!(q.get("4").unwrap().type_name(), "QuantizedReLU6");
        rquant_core::registry::set_engine(e.name()).unwrap();
        let y = q.forward(Value::F(x.clone())).unwrap().to_float();
        assert!(
            sqnr(want.data(), y.data()) > 20.0,
            "{}",
            sqnr(want.data(), y.data())
        );
        outs.push(y);
    }
    assert!(outs.windows(2).all(|w| w[0] == w[1]), "engines differ");
}

#[test]
fn freeze_bn_stats_and_disable_observer_hold_their_state() {
    use rquant_core::qconfig::get_default_qat_qconfig;
    use rquant_nn::{disable_observer, freeze_bn_stats, fuse_modules_qat, prepare_qat, QConfigMap};
    let mut rng = Rng(4);
    let mut m = Module::new(Sequential::from_modules(vec![
        Module::new(Conv2d::new(2, 3, [3, 3], Conv2dParams::default(), true, &mut rng).unwrap()),
        Module::new(BatchNorm2d::new(3)),
    ]));
    m.train(true);
    fuse_modules_qat(&mut m, &[&["0", "1"]]).unwrap();
    prepare_qat(
        &mut m,
        &QConfigMap::global(get_default_qat_qconfig("x86").unwrap()),
    )
    .unwrap();
    let x = Tensor::new([2, 2, 5, 5], (0..100).map(|_| rng.sym(1.0)).collect()).unwrap();
    m.forward(Value::F(x.clone())).unwrap();
    freeze_bn_stats(&mut m);
    disable_observer(&mut m);
    let state = |m: &Module| {
        let Some(o) = m
            .get("0")
            .and_then(|m| m.downcast_ref::<rquant_nn::Observed>())
        else {
            panic!()
        };
        let Some(c) = o.module.downcast_ref::<Conv2d>() else {
            panic!()
        };
        let bn = c.bn.as_ref().unwrap();
        let fq = c.weight_fake_quant.as_ref().unwrap();
        (
            bn.running_mean.clone(),
            bn.running_var.clone(),
            fq.scale().to_vec(),
            o.post.qparams().unwrap(),
        )
    };
    let before = state(&m);
    let x2 = Tensor::new([2, 2, 5, 5], (0..100).map(|_| rng.sym(3.0)).collect()).unwrap();
    m.forward(Value::F(x2)).unwrap();
    m.backward(Tensor::new([2, 3, 3, 3], vec![0.1; 54]).unwrap())
        .unwrap();
    assert_eq!(state(&m), before);
}

#[test]
fn dynamic_fp16_linear_is_close_to_float_and_engine_independent() {
    use rquant_nn::numeric_suite::sqnr;
    use rquant_nn::{quantize_dynamic_with, DynamicDType, DynamicType};
    rquant_nn::engines::init();
    let mut rng = Rng(8);
    let float = Module::new(Sequential::from_modules(vec![
        Module::new(Linear::new(40, 16, true, &mut rng)),
        Module::relu(),
        Module::new(Linear::new(16, 3, false, &mut rng)),
    ]));
    let x = Tensor::new([5, 40], (0..200).map(|_| rng.sym(1.0)).collect()).unwrap();
    let want = float
        .clone()
        .forward(Value::F(x.clone()))
        .unwrap()
        .to_float();
    // qint8 with per-channel weights (per_channel_dynamic_qconfig) as well.
    let mut pc = Vec::new();
    for e in rquant_nn::engines::available() {
        let mut m = float.clone();
        quantize_dynamic_with(
            &mut m,
            &[DynamicType::Linear],
            DynamicDType::QInt8,
            &rquant_core::qconfig::per_channel_dynamic_qconfig(),
            &e,
        )
        .unwrap();
        let y = m.forward(Value::F(x.clone())).unwrap().to_float();
        assert!(sqnr(want.data(), y.data()) > 30.0);
        pc.push(y);
    }
    assert!(pc.windows(2).all(|w| w[0] == w[1]), "engines differ");
    let mut outs = Vec::new();
    for e in rquant_nn::engines::available() {
        let mut m = float.clone();
        quantize_dynamic_with(
            &mut m,
            &[DynamicType::Linear],
            DynamicDType::Float16,
            &rquant_core::qconfig::float16_dynamic_qconfig(),
            &e,
        )
        .unwrap();
        let d = m.get("0").unwrap();
        assert_eq!(d.type_name(), "DynamicQuantizedLinear");
        assert!(matches!(
            d.downcast_ref::<rquant_nn::quantized::QDynLinear>()
                .unwrap()
                .weight,
            rquant_nn::quantized::DynWeight::Fp16(_)
        ));
        let y = m.forward(Value::F(x.clone())).unwrap().to_float();
        assert!(sqnr(want.data(), y.data()) > 50.0);
        outs.push(y);
    }
    assert!(outs.windows(2).all(|w| w[0] == w[1]), "engines differ");
}

#[test]
fn relu6_is_observed_converted_saved_and_matches_torch() {
    use rquant_core::qconfig::get_default_qconfig;
    use rquant_core::{QParams, QTensor};
    use rquant_nn::io::{quantized_bytes, quantized_from_bytes};
    use rquant_nn::{convert_with, prepare, QConfigMap};
    // torch 2.15's quantized relu6 (fbgemm) on quint8 with scale 2, zero point 100.
    let golden = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/relu6_torch215.safetensors"),
    )
    .unwrap();
    let st = safetensors::SafeTensors::deserialize(&golden).unwrap();
    let x = QTensor::from_int_repr(
        vec![2, 3, 33],
        st.tensor("in.x").unwrap().data().to_vec(),
        QParams::per_tensor(2.0, 100),
    )
    .unwrap();
    let y = st.tensor("out.y").unwrap().data().to_vec();

    let mut rng = Rng(6);
    let p = Conv2dParams {
        padding: [1, 1],
        ..Conv2dParams::default()
    };
    let mut m: Module = Sequential::from_modules(vec![
        Module::quant_stub(),
        Module::new(Conv2d::new(2, 4, [3, 3], p, true, &mut rng).unwrap()),
        Module::relu6(),
        Module::dequant_stub(),
    ])
    .into();
    prepare(
        &mut m,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    assert!(m.get("2").unwrap().is::<rquant_nn::Observed>());
    let input = Tensor::new([2, 2, 5, 5], (0..100).map(|_| rng.sym(4.0)).collect()).unwrap();
    m.forward(Value::F(input.clone())).unwrap();
    let mut want = None;
    for e in rquant_nn::engines::all_paths() {
        let mut q = m.clone();
        convert_with(&mut q, &e).unwrap();
        let r6 = q.get_mut("2").unwrap();
        assert_eq!(r6.type_name(), "QuantizedReLU6");
        assert_eq!(r6.engine().map(|h| h.path()), Some(e.path()));
        let Value::Q(got) = r6.forward(Value::Q(x.clone())).unwrap() else {
            panic!("quantized output expected")
        };
        assert_eq!(got.int_repr(), &y[..], "{}/{}", e.name(), e.isa());
        assert_eq!(got.q_per_tensor(), Some((2.0, 100)));
        let out = q.forward(Value::F(input.clone())).unwrap().to_float();
        assert!(out.data().iter().all(|&v| (0.0..=6.0 + 1e-6).contains(&v)));
        let bytes = quantized_bytes(&q, "x86").unwrap();
        let (mut back, _) = quantized_from_bytes(&bytes, "relu6.st", Some(e.clone())).unwrap();
        assert_eq!(back.get("2").unwrap().type_name(), "QuantizedReLU6");
        let again = back.forward(Value::F(input.clone())).unwrap().to_float();
        assert_eq!(again, out);
        match &want {
            None => want = Some(out),
            Some(w) => assert_eq!(&out, w, "{}/{}", e.name(), e.isa()),
        }
    }
}
