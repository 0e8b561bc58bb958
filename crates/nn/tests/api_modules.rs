//! The new modules against PyTorch 2.15's eager workflow
//! (tests/data/api, made by tools/api/gen_api_cases.py): each float model
//! is prepared, calibrated and converted by rquant as PyTorch did; the
//! quantized weight codes and qparams, the observed activation qparams and
//! the converted module's output codes must equal PyTorch's, on every
//! engine and ISA path.

mod common;

use common::{case, engines, Case};
use rquant_core::qconfig::{default_qconfig, get_default_qconfig, QConfig, QSpec};
use rquant_core::Tensor;
use rquant_nn::acts::{Act, ActFn, PReLU};
use rquant_nn::convnd::ConvNdParams;
use rquant_nn::convs::{ConvNd, ConvNdKind};
use rquant_nn::layers::BatchNorm2d;
use rquant_nn::norms::Norm;
use rquant_nn::{convert_with, fuse_modules, prepare, Module, QConfigMap, Sequential, Value};

fn wrap(m: impl Into<Module>) -> Module {
    Sequential::new()
        .push("quant", Module::quant_stub())
        .push("m", m)
        .push("dequant", Module::dequant_stub())
        .into()
}

fn params(c: &Case, dims: usize) -> ConvNdParams {
    let mut p = ConvNdParams::new(dims);
    let list = |k: &str, d: usize| -> Vec<usize> {
        match c.meta.get(k) {
            Some(v) => v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect(),
            None => vec![d; dims],
        }
    };
    p.stride = list("stride", 1);
    p.padding = list("padding", 0);
    p.dilation = list("dilation", 1);
    p.output_padding = list("output_padding", 0);
    p.groups = c.meta.get("groups").and_then(|g| g.as_u64()).unwrap_or(1) as usize;
    p
}

fn conv(c: &Case, kind: ConvNdKind, prefix: &str, p: ConvNdParams) -> ConvNd {
    let b = c
        .has(&format!("float.{prefix}bias"))
        .then(|| c.f32(&format!("float.{prefix}bias")));
    ConvNd::from_weights(kind, c.f32(&format!("float.{prefix}weight")), b, p).unwrap()
}

fn bn(c: &Case, prefix: &str, three_d: bool, one_d: bool) -> BatchNorm2d {
    let w = c.f32(&format!("float.{prefix}weight"));
    let mut b = if three_d {
        BatchNorm2d::new_3d(w.numel())
    } else if one_d {
        BatchNorm2d::new_1d(w.numel())
    } else {
        BatchNorm2d::new(w.numel())
    };
    b.weight.value = w;
    b.bias.value = c.f32(&format!("float.{prefix}bias"));
    b.running_mean = c.f32(&format!("float.{prefix}running_mean"));
    b.running_var = c.f32(&format!("float.{prefix}running_var"));
    b
}

fn seq(mods: Vec<Module>) -> Module {
    Sequential::from_modules(mods).into()
}

/// The float model of a PTQ case, its fusion groups and qconfig.
fn build(name: &str, c: &Case) -> (Module, Vec<Vec<&'static str>>, QConfig) {
    let x86 = get_default_qconfig("x86").unwrap();
    let pt = default_qconfig();
    let none: Vec<Vec<&'static str>> = vec![];
    let three = vec![vec!["m.0", "m.1", "m.2"]];
    let two = vec![vec!["m.0", "m.1"]];
    match name {
        "conv1d" => (
            wrap(conv(c, ConvNdKind::Conv1d, "", params(c, 1))),
            none,
            x86,
        ),
        "conv_relu1d" => {
            let mut p = ConvNdParams::new(1);
            p.padding = vec![2];
            p.dilation = vec![2];
            (
                wrap(seq(vec![
                    conv(c, ConvNdKind::Conv1d, "0.", p).into(),
                    Module::relu(),
                ])),
                two,
                x86,
            )
        }
        "conv3d" => (
            wrap(conv(c, ConvNdKind::Conv3d, "", params(c, 3))),
            none,
            x86,
        ),
        "conv_bn_relu3d" => {
            let mut p = ConvNdParams::new(3);
            p.padding = vec![1; 3];
            (
                wrap(seq(vec![
                    conv(c, ConvNdKind::Conv3d, "0.", p).into(),
                    bn(c, "1.", true, false).into(),
                    Module::relu(),
                ])),
                three,
                x86,
            )
        }
        "conv_bn3d" => {
            let mut p = ConvNdParams::new(3);
            p.padding = vec![1; 3];
            (
                wrap(seq(vec![
                    conv(c, ConvNdKind::Conv3d, "0.", p).into(),
                    bn(c, "1.", true, false).into(),
                ])),
                two,
                x86,
            )
        }
        "conv_relu3d" => {
            let mut p = ConvNdParams::new(3);
            p.stride = vec![1, 2, 1];
            (
                wrap(seq(vec![
                    conv(c, ConvNdKind::Conv3d, "0.", p).into(),
                    Module::relu(),
                ])),
                two,
                x86,
            )
        }
        "bn_relu3d" => (
            wrap(seq(vec![bn(c, "0.", true, false).into(), Module::relu()])),
            two,
            x86,
        ),
        "conv_bn1d" => (
            wrap(seq(vec![
                conv(c, ConvNdKind::Conv1d, "0.", ConvNdParams::new(1)).into(),
                bn(c, "1.", false, true).into(),
            ])),
            two,
            x86,
        ),
        "conv_transpose1d" => (
            wrap(conv(c, ConvNdKind::ConvTranspose1d, "", params(c, 1))),
            none,
            pt,
        ),
        "conv_transpose2d" => (
            wrap(conv(c, ConvNdKind::ConvTranspose2d, "", params(c, 2))),
            none,
            pt,
        ),
        "conv_transpose3d" => (
            wrap(conv(c, ConvNdKind::ConvTranspose3d, "", params(c, 3))),
            none,
            pt,
        ),
        "batch_norm2d" => (wrap(bn(c, "", false, false)), none, x86),
        "bn_relu2d" => (
            wrap(seq(vec![bn(c, "0.", false, false).into(), Module::relu()])),
            two,
            x86,
        ),
        "batch_norm3d" => (wrap(bn(c, "", true, false)), none, x86),
        "layer_norm" => {
            let mut n = Norm::layer_norm(&[4, 6], 1e-5, true);
            n.weight.as_mut().unwrap().value = c.f32("float.weight").reshape([24]).unwrap();
            n.bias.as_mut().unwrap().value = c.f32("float.bias").reshape([24]).unwrap();
            (wrap(n), none, x86)
        }
        "group_norm" => {
            let mut n = Norm::group_norm(2, 6, 1e-5, true);
            n.weight.as_mut().unwrap().value = c.f32("float.weight");
            n.bias.as_mut().unwrap().value = c.f32("float.bias");
            (wrap(n), none, x86)
        }
        "instance_norm1d" => {
            let mut n = Norm::instance_norm(1, 4, 1e-5, true);
            n.weight.as_mut().unwrap().value = c.f32("float.weight");
            n.bias.as_mut().unwrap().value = c.f32("float.bias");
            (wrap(n), none, x86)
        }
        "instance_norm2d" => (wrap(Norm::instance_norm(2, 3, 1e-5, false)), none, x86),
        "elu" => (wrap(Module::elu(0.7)), none, x86),
        "leaky_relu" => (wrap(Module::leaky_relu(0.05)), none, x86),
        "softmax" => (wrap(Module::softmax(1)), none, x86),
        "prelu" | "prelu3" => {
            let w = c.f32("float.weight");
            let mut p = PReLU::new(w.numel(), 0.25);
            p.weight.value = w;
            let qc = if name == "prelu" {
                pt
            } else {
                QConfig {
                    activation: pt.activation.clone(),
                    weight: QSpec::Observer(
                        rquant_core::qconfig::ObserverSpec::new(
                            rquant_core::observer::ObserverKind::MinMax,
                        )
                        .with(|c| c.dtype = rquant_core::QDType::QUInt8),
                    ),
                }
            };
            (wrap(p), none, qc)
        }
        other => panic!("unknown case {other}"),
    }
}

const PTQ: &[&str] = &[
    "conv1d",
    "conv_relu1d",
    "conv3d",
    "conv_bn_relu3d",
    "conv_bn1d",
    "conv_bn3d",
    "conv_relu3d",
    "bn_relu3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "batch_norm2d",
    "bn_relu2d",
    "batch_norm3d",
    "layer_norm",
    "group_norm",
    "instance_norm1d",
    "instance_norm2d",
    "elu",
    "leaky_relu",
    "softmax",
    "prelu",
    "prelu3",
];

/// The output qparams of the quantized modules under test.
fn out_qparams(m: &Module) -> Option<(f64, i64)> {
    use rquant_nn::acts::{QAct, QPReLU};
    use rquant_nn::convs::QConvNd;
    use rquant_nn::norms::{QBatchNorm, QNorm};
    if let Some(q) = m.downcast_ref::<QConvNd>() {
        return Some((q.scale, q.zero_point));
    }
    if let Some(q) = m.downcast_ref::<QAct>() {
        return Some((q.scale, q.zero_point));
    }
    if let Some(q) = m.downcast_ref::<QPReLU>() {
        return Some((q.scale, q.zero_point));
    }
    if let Some(q) = m.downcast_ref::<QNorm>() {
        return Some((q.scale, q.zero_point));
    }
    m.downcast_ref::<QBatchNorm>()
        .map(|q| (q.scale, q.zero_point))
}

fn set_out_qparams(m: &mut Module, (s, z): (f64, i64)) {
    use rquant_nn::acts::{QAct, QPReLU};
    use rquant_nn::convs::QConvNd;
    use rquant_nn::norms::{QBatchNorm, QNorm};
    if let Some(q) = m.downcast_mut::<QConvNd>() {
        (q.scale, q.zero_point) = (s, z);
    } else if let Some(q) = m.downcast_mut::<QAct>() {
        (q.scale, q.zero_point) = (s, z);
    } else if let Some(q) = m.downcast_mut::<QPReLU>() {
        (q.scale, q.zero_point) = (s, z);
    } else if let Some(q) = m.downcast_mut::<QNorm>() {
        (q.scale, q.zero_point) = (s, z);
    } else if let Some(q) = m.downcast_mut::<QBatchNorm>() {
        (q.scale, q.zero_point) = (s, z);
    }
}

#[test]
fn ptq_modules_match_pytorch_on_every_engine() {
    for &name in PTQ {
        let c = case(name);
        let (mut model, groups, qc) = build(name, &c);
        model.train(false);
        if !groups.is_empty() {
            let g: Vec<&[&str]> = groups.iter().map(|g| g.as_slice()).collect();
            fuse_modules(&mut model, &g).unwrap();
        }
        prepare(&mut model, &QConfigMap::global(qc)).unwrap();
        model.forward(Value::F(c.f32("x_calib"))).unwrap();
        for e in engines() {
            let mut q = model.clone();
            convert_with(&mut q, &e).unwrap_or_else(|err| panic!("{name}: convert: {err}"));
            // The stub's qparams and the quantized input.
            let (qs, qz) = c.qp("quant_qparams");
            let qx = match q
                .get_mut("quant")
                .unwrap()
                .forward(Value::F(c.f32("x_test")))
                .unwrap()
            {
                Value::Q(q) => q,
                _ => panic!("{name}: the stub did not quantize"),
            };
            assert_eq!(qx.q_per_tensor(), Some((qs, qz)), "{name}: input qparams");
            assert_eq!(
                qx.clone().contiguous().int_repr(),
                c.u8s("qx").as_slice(),
                "{name}: quantized input"
            );
            let m = q.get_mut("m").unwrap();
            let m = if m.children().is_empty() {
                m
            } else {
                m.get_mut("0").unwrap()
            };
            assert_eq!(
                m.type_name(),
                c.meta["module"].as_str().unwrap(),
                "{name}: module type"
            );
            if c.has("qweight.int") {
                let w = m.layer().weight().expect("quantized weight");
                // Dequantized weights equal PyTorch's codes times their scales.
                let scales = c.f64s("qweight.scale");
                let zps = c.i64s("qweight.zp");
                let codes = c.i64s("qweight.int");
                let per = codes.len() / scales.len();
                for (i, (&code, &got)) in codes.iter().zip(w.data()).enumerate() {
                    let ch = if scales.len() == 1 { 0 } else { i / per };
                    let want = if scales.len() == 1 {
                        ((code - zps[0]) as f32) * scales[0] as f32
                    } else {
                        (((code - zps[ch]) as f32) as f64 * scales[ch]) as f32
                    };
                    assert_eq!(got, want, "{name}: weight[{i}] on {e:?}");
                }
            }
            // The output qparams come from observing float outputs that
            // rquant and PyTorch compute in different summation orders: they
            // may differ in the last place. Then the module runs with
            // PyTorch's qparams, so the codes can be compared exactly.
            if let Some(v) = c.meta.get("out_qparams").filter(|v| !v.is_null()) {
                let want = (v[0].as_f64().unwrap(), v[1].as_i64().unwrap());
                let got = out_qparams(m).expect("quantized module with output qparams");
                let rel = (got.0 - want.0).abs() / want.0;
                assert!(
                    rel < 1e-5 && (got.1 - want.1).abs() <= 1,
                    "{name}: output qparams {got:?} vs PyTorch's {want:?}"
                );
                if got != want {
                    set_out_qparams(m, want);
                }
            }
            let y = match m.forward(Value::Q(qx)).unwrap() {
                Value::Q(y) => y,
                _ => panic!("{name}: float output"),
            };
            let y = y.contiguous();
            assert_eq!(y.shape(), c.shape("qy").as_slice(), "{name}: output shape");
            let want = c.u8s("qy");
            let bad: Vec<usize> = (0..want.len())
                .filter(|&i| y.int_repr()[i] != want[i])
                .collect();
            assert!(
                bad.is_empty(),
                "{name} on {e:?}: {} of {} output codes differ, first at {} ({} vs {})",
                bad.len(),
                want.len(),
                bad[0],
                y.int_repr()[bad[0]],
                want[bad[0]]
            );
        }
    }
}

#[test]
fn float_modules_on_quint8_match_pytorch() {
    let c = case("float_acts_on_quint8");
    let (s, z) = c.qp("qx");
    let acts: Vec<(&str, ActFn)> = vec![
        ("sigmoid", ActFn::Sigmoid),
        ("tanh", ActFn::Tanh),
        ("hardsigmoid", ActFn::Hardsigmoid),
        (
            "hardtanh",
            ActFn::Hardtanh {
                min_val: -0.8,
                max_val: 1.1,
            },
        ),
        (
            "gelu",
            ActFn::Gelu {
                approximate: rquant_core::GeluApproximate::None,
            },
        ),
        (
            "gelu_tanh",
            ActFn::Gelu {
                approximate: rquant_core::GeluApproximate::Tanh,
            },
        ),
        ("celu", ActFn::Celu { alpha: 0.8 }),
        (
            "threshold",
            ActFn::Threshold {
                threshold: 0.13,
                value: -0.5,
            },
        ),
        (
            "leaky_relu",
            ActFn::LeakyRelu {
                negative_slope: 0.1,
            },
        ),
    ];
    for e in engines() {
        for (n, f) in &acts {
            let qx = c.quint8(&format!("qx.{n}"), s, z);
            let mut a = Act::new(*f);
            a.engine = Some(e.clone());
            let y = a.forward_quant(qx.clone()).unwrap().contiguous();
            let qp = c.f64s(&format!("{n}.qparams"));
            assert_eq!(
                y.q_per_tensor().map(|(s, z)| (s as f32, z)),
                Some((qp[0] as f32, qp[1] as i64)),
                "{n}: qparams"
            );
            assert_eq!(y.int_repr(), c.u8s(n).as_slice(), "{n} on {e:?}");
        }
        let mut r6 = Module::relu6();
        r6.layer_mut().to_engine(&e).unwrap();
        let qx = c.quint8("qx.relu6", s, z);
        let y = match r6.forward(Value::Q(qx)).unwrap() {
            Value::Q(y) => y.contiguous(),
            _ => unreachable!(),
        };
        assert_eq!(y.int_repr(), c.u8s("relu6").as_slice(), "relu6 on {e:?}");
    }
}

#[test]
fn fuse_convtranspose_bn_matches_pytorch() {
    let c = case("fuse_convtranspose_bn");
    let mut p = ConvNdParams::new(2);
    p.stride = vec![2, 2];
    let ct = ConvNd::from_weights(
        ConvNdKind::ConvTranspose2d,
        c.f32("float.0.weight"),
        Some(c.f32("float.0.bias")),
        p,
    )
    .unwrap();
    let mut model: Module = seq(vec![ct.into(), bn(&c, "1.", false, false).into()]);
    model.train(false);
    fuse_modules(&mut model, &[&["0", "1"]]).unwrap();
    let f = model.get("0").unwrap().downcast_ref::<ConvNd>().unwrap();
    assert_eq!(f.weight.value.data(), c.f32("fused.weight").data());
    assert_eq!(
        f.bias.as_ref().unwrap().value.data(),
        c.f32("fused.bias").data()
    );
    let y = model.forward(Value::F(c.f32("x"))).unwrap().to_float();
    let want = c.f32("y");
    assert!(common::max_rel(y.data(), want.data()) < 1e-5);
}

#[test]
fn float_conv_family_matches_pytorch_float() {
    // The float forward of each convolution against PyTorch's (f32 sums in
    // another order: ~1e-6 relative).
    for (name, kind, dims) in [
        ("conv1d", ConvNdKind::Conv1d, 1),
        ("conv3d", ConvNdKind::Conv3d, 3),
        ("conv_transpose1d", ConvNdKind::ConvTranspose1d, 1),
        ("conv_transpose2d", ConvNdKind::ConvTranspose2d, 2),
        ("conv_transpose3d", ConvNdKind::ConvTranspose3d, 3),
    ] {
        let c = case(name);
        let mut m = conv(&c, kind, "", params(&c, dims));
        let y = m.forward(c.f32("x_test")).unwrap();
        let want = c.f32("y_float");
        assert_eq!(y.shape(), want.shape(), "{name}");
        let err = common::max_rel(y.data(), want.data());
        assert!(err < 1e-5, "{name}: {err}");
    }
}

#[test]
fn conv_layers_backward_matches_finite_differences() {
    let mut rng = rquant_nn::Rng(5);
    for (kind, xs, ks) in [
        (ConvNdKind::Conv1d, vec![2, 4, 9], vec![3]),
        (ConvNdKind::Conv3d, vec![1, 2, 4, 5, 4], vec![2, 3, 2]),
        (ConvNdKind::ConvTranspose1d, vec![2, 4, 6], vec![3]),
        (ConvNdKind::ConvTranspose2d, vec![1, 2, 4, 3], vec![3, 2]),
        (
            ConvNdKind::ConvTranspose3d,
            vec![1, 2, 3, 3, 2],
            vec![2, 2, 2],
        ),
    ] {
        let dims = ks.len();
        let mut p = ConvNdParams::new(dims);
        p.stride = vec![2; dims];
        p.padding = vec![1; dims];
        if kind.transposed() {
            p.output_padding = vec![1; dims];
        }
        p.groups = 2;
        let mut m = ConvNd::new(kind, xs[1], 4, &ks, p, true, &mut rng).unwrap();
        rquant_nn::Layer::set_training(&mut m, true);
        let n: usize = xs.iter().product();
        let x = Tensor::new(xs.clone(), (0..n).map(|_| rng.sym(1.0)).collect()).unwrap();
        let y = m.forward(x.clone()).unwrap();
        let g = Tensor::new(
            y.shape().to_vec(),
            (0..y.numel()).map(|_| rng.sym(1.0)).collect(),
        )
        .unwrap();
        let dx = m.backward(g.clone()).unwrap();
        let dw = m.weight.grad.clone().unwrap();
        let loss = |m: &mut ConvNd, x: &Tensor| -> f64 {
            let y = m.forward(x.clone()).unwrap();
            y.data()
                .iter()
                .zip(g.data())
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum()
        };
        rquant_nn::Layer::set_training(&mut m, false);
        let h = 1e-2f32;
        for i in [0, n / 3, n - 1] {
            let mut xp = x.clone();
            xp.data_mut()[i] += h;
            let mut xm = x.clone();
            xm.data_mut()[i] -= h;
            let num = (loss(&mut m, &xp) - loss(&mut m, &xm)) / (2.0 * h as f64);
            assert!(
                (num - dx.data()[i] as f64).abs() < 1e-2 * (1.0 + num.abs()),
                "{kind:?} dx[{i}]: {num} vs {}",
                dx.data()[i]
            );
        }
        let nw = m.weight.value.numel();
        for i in [0, nw / 2, nw - 1] {
            let orig = m.weight.value.data()[i];
            m.weight.value.data_mut()[i] = orig + h;
            let lp = loss(&mut m, &x);
            m.weight.value.data_mut()[i] = orig - h;
            let lm = loss(&mut m, &x);
            m.weight.value.data_mut()[i] = orig;
            let num = (lp - lm) / (2.0 * h as f64);
            assert!(
                (num - dw.data()[i] as f64).abs() < 1e-2 * (1.0 + num.abs()),
                "{kind:?} dw[{i}]: {num} vs {}",
                dw.data()[i]
            );
        }
    }
}
