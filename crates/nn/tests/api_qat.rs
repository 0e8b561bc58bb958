//! QAT modules against torch 2.15 (cases from tools/api/gen_api_cases.py):
//! `ConvBnReLU1d`, `ConvBnReLU3d` and `LinearBn1d` through fuse_modules_qat,
//! prepare_qat (x86 qconfig), two SGD steps and convert; `nnqat.Embedding`
//! with `default_embedding_qat_qconfig` and its conversion.

mod common;

use common::{case, engines, max_rel, Case};
use rquant_core::qconfig::{default_embedding_qat_qconfig, get_default_qat_qconfig};
use rquant_core::Tensor;
use rquant_nn::convnd::ConvNdParams;
use rquant_nn::convs::{ConvNd, ConvNdKind};
use rquant_nn::embeddings::{Embedding, QEmbedding};
use rquant_nn::layers::{BatchNorm2d, Linear};
use rquant_nn::train::{Optimizer, Sgd};
use rquant_nn::{
    convert_with, fuse_modules_qat, prepare_qat, Module, Observed, QConfigMap, Sequential, Value,
};

fn bn(c: &Case, n: usize, dims: usize) -> BatchNorm2d {
    let w = c.f32("float.1.weight");
    let mut b = match dims {
        1 => BatchNorm2d::new_1d(n),
        3 => BatchNorm2d::new_3d(n),
        _ => BatchNorm2d::new(n),
    };
    b.weight.value = w;
    b.bias.value = c.f32("float.1.bias");
    b.running_mean = c.f32("float.1.running_mean");
    b.running_var = c.f32("float.1.running_var");
    b
}

/// Fake-quantized outputs: equal to torch's, except where the f32
/// convolution sums (another order than torch's) move a value across a
/// rounding boundary: one quantization step, at most 1% of the outputs.
fn fq_close(got: &Tensor, want: &Tensor, step: f32, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let mut off = 0;
    for (a, b) in got.data().iter().zip(want.data()) {
        let d = (a - b).abs();
        if d > 1e-5 {
            assert!(d <= step * 1.001, "{what}: {a} vs {b} (step {step})");
            off += 1;
        }
    }
    assert!(
        off * 100 <= got.numel(),
        "{what}: {off} of {} outputs differ",
        got.numel()
    );
}

#[test]
fn qat_conv_bn_relu_1d_3d_and_linear_bn_train_and_convert_like_pytorch() {
    for name in [
        "qat_conv_bn_relu1d",
        "qat_conv_bn_relu3d",
        "qat_linear_bn1d",
    ] {
        let c = case(name);
        let w = c.f32("float.0.weight");
        let n = w.shape()[0];
        let (first, dims): (Module, usize) = match name {
            "qat_linear_bn1d" => (
                Linear::from_weights(w, Some(c.f32("float.0.bias")))
                    .unwrap()
                    .into(),
                1,
            ),
            _ => {
                let (kind, dims) = if name.ends_with("1d") {
                    (ConvNdKind::Conv1d, 1)
                } else {
                    (ConvNdKind::Conv3d, 3)
                };
                let mut p = ConvNdParams::new(dims);
                p.padding = vec![1; dims];
                (
                    ConvNd::from_weights(kind, w, Some(c.f32("float.0.bias")), p)
                        .unwrap()
                        .into(),
                    dims,
                )
            }
        };
        let linear = name == "qat_linear_bn1d";
        let mut inner = Sequential::new()
            .push("0", first)
            .push("1", bn(&c, n, dims));
        if !linear {
            inner = inner.push("2", Module::relu());
        }
        let mut m: Module = Sequential::new()
            .push("quant", Module::quant_stub())
            .push("m", inner)
            .push("dequant", Module::dequant_stub())
            .into();
        m.train(true);
        let group: &[&str] = if linear {
            &["m.0", "m.1"]
        } else {
            &["m.0", "m.1", "m.2"]
        };
        fuse_modules_qat(&mut m, &[group]).unwrap();
        prepare_qat(
            &mut m,
            &QConfigMap::global(get_default_qat_qconfig("x86").unwrap()),
        )
        .unwrap();
        let x = c.f32("x");
        let mut sgd = Sgd::new(0.1, 0.0, 0.0);
        for step in 0..2 {
            m.zero_grad();
            let y = m.forward(Value::F(x.clone())).unwrap().to_float();
            // The output fake quant's step.
            let q = m.get("m.0").unwrap().downcast_ref::<Observed>().unwrap();
            let s = q.post.qparams().unwrap().0 as f32;
            fq_close(
                &y,
                &c.f32(&format!("step{step}.y")),
                s,
                &format!("{name} step {step}: y"),
            );
            m.backward(c.f32(&format!("step{step}.g"))).unwrap();
            let o = m.get("m.0").unwrap().downcast_ref::<Observed>().unwrap();
            let (wg, gg) = if linear {
                let l = o.module.downcast_ref::<Linear>().unwrap();
                (
                    l.weight.grad.clone().unwrap(),
                    l.bn.as_ref().unwrap().weight.grad.clone().unwrap(),
                )
            } else {
                let cv = o.module.downcast_ref::<ConvNd>().unwrap();
                (
                    cv.weight.grad.clone().unwrap(),
                    cv.bn.as_ref().unwrap().weight.grad.clone().unwrap(),
                )
            };
            let key = if linear { "w_grad" } else { "conv_grad" };
            // Gradients through batch statistics: f32 sums, 2e-3 relative
            // (the tolerance of the 2-d QAT test in modules.rs).
            let err = max_rel(wg.data(), c.f32(&format!("step{step}.{key}")).data());
            assert!(err < 2e-3, "{name} step {step}: weight grad {err}");
            let err = max_rel(gg.data(), c.f32(&format!("step{step}.gamma_grad")).data());
            assert!(err < 2e-3, "{name} step {step}: gamma grad {err}");
            sgd.step(&mut m).unwrap();
        }
        m.train(false);
        for e in engines() {
            let mut q = m.clone();
            convert_with(&mut q, &e).unwrap();
            let want_type = match name {
                "qat_linear_bn1d" => "QuantizedLinear",
                "qat_conv_bn_relu1d" => "QuantizedConvReLU1d",
                _ => "QuantizedConvReLU3d",
            };
            assert_eq!(q.get("m.0").unwrap().type_name(), want_type, "{name}");
            // Two SGD steps of f32 arithmetic later the weights agree to
            // the last places: codes equal or one apart.
            let wq = q.get("m.0").unwrap().layer().weight().unwrap();
            let scales = c.f64s("qweight.scale");
            let codes = c.i64s("qweight.int");
            let per = codes.len() / scales.len();
            for (i, (&code, &got)) in codes.iter().zip(wq.data()).enumerate() {
                let s = scales[i / per] as f32;
                let d = (got / s - code as f32).abs();
                assert!(d < 1.001, "{name}: weight {i}: {} vs code {code}", got / s);
            }
            let (qs, qz) = c.qp("quant_qparams");
            let Value::Q(qx) = q
                .get_mut("quant")
                .unwrap()
                .forward(Value::F(x.clone()))
                .unwrap()
            else {
                panic!()
            };
            let rel = ((qx.q_per_tensor().unwrap().0 - qs) / qs).abs();
            assert!(
                rel < 1e-5 && (qx.q_per_tensor().unwrap().1 - qz).abs() <= 1,
                "{name}: input qparams"
            );
            let Value::Q(y) = q.get_mut("m").unwrap().forward(Value::Q(qx)).unwrap() else {
                panic!()
            };
            let (os, oz) = c.qp("out_qparams");
            let (ys, yz) = y.q_per_tensor().unwrap();
            assert!(
                ((ys - os) / os).abs() < 1e-4 && (yz - oz).abs() <= 1,
                "{name}: output qparams"
            );
            let got = y.contiguous().int_repr().to_vec();
            let want = c.u8s("qy");
            let off = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            let far = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| (**a as i32 - **b as i32).abs() > 1)
                .count();
            assert!(
                far == 0 && off * 20 <= got.len(),
                "{name} on {e:?}: {off} codes differ"
            );
        }
    }
}

/// The module inside an observed wrapper.
fn inner(m: &Module) -> &Module {
    m.downcast_ref::<Observed>().map(|o| &o.module).unwrap_or(m)
}

#[test]
fn qat_embedding_matches_pytorch() {
    let c = case("qat_embedding");
    let ids = c.i64s("ids");
    let idf = Tensor::new(c.shape("ids"), ids.iter().map(|&v| v as f32).collect()).unwrap();
    for e in engines() {
        let mut m: Module = Sequential::new()
            .push("emb", Embedding::from_weight(c.f32("weight")).unwrap())
            .into();
        m.train(true);
        prepare_qat(&mut m, &QConfigMap::global(default_embedding_qat_qconfig())).unwrap();
        assert_eq!(inner(m.get("emb").unwrap()).type_name(), "QATEmbedding");
        let y = m.forward(Value::F(idf.clone())).unwrap().to_float();
        assert_eq!(y.data(), c.f32("y").data(), "QAT embedding forward");
        m.backward(c.f32("g")).unwrap();
        let emb = inner(m.get("emb").unwrap())
            .downcast_ref::<Embedding>()
            .unwrap();
        assert_eq!(
            emb.weight.grad.as_ref().unwrap().data(),
            c.f32("w_grad").data()
        );
        m.train(false);
        convert_with(&mut m, &e).unwrap();
        let q = m.get("emb").unwrap().downcast_ref::<QEmbedding>().unwrap();
        let codes: Vec<u8> = c.u8s("qweight.int");
        assert_eq!(q.table.codes(), codes.as_slice());
        assert_eq!(q.table.scales(), c.f32("qweight.scale").data());
        let y = m.forward(Value::F(idf.clone())).unwrap().to_float();
        assert_eq!(
            y.data(),
            c.f32("q_out").data(),
            "converted embedding on {e:?}"
        );
    }
}

/// One QAT forward and backward of a (fused) conv form, then convert.
#[test]
fn qat_conv_forms_match_pytorch() {
    let mut failed = Vec::new();
    for name in [
        "qat_conv1d",
        "qat_conv3d",
        "qat_conv_relu2d",
        "qat_conv_bn2d",
        "qat_conv_bn1d",
        "qat_conv_bn3d",
        "qat_conv_relu3d",
    ] {
        // Run every case; report all that fail.
        if let Err(e) = std::panic::catch_unwind(|| qat_conv_form(name)) {
            failed.push(format!("{name}: {:?}", e.downcast_ref::<String>()));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

fn qat_conv_form(name: &str) {
    use rquant_nn::layers::Conv2d;
    {
        let c = case(name);
        let w = c.f32("float.0.weight");
        let dims = w.ndim() - 2;
        let b = Some(c.f32("float.0.bias"));
        let first: Module = match dims {
            2 => {
                let p = rquant_core::Conv2dParams {
                    padding: [1, 1],
                    ..Default::default()
                };
                Conv2d::from_weights(w.clone(), b, p).unwrap().into()
            }
            _ => {
                let kind = if dims == 1 {
                    ConvNdKind::Conv1d
                } else {
                    ConvNdKind::Conv3d
                };
                let mut p = ConvNdParams::new(dims);
                p.padding = vec![1; dims];
                ConvNd::from_weights(kind, w.clone(), b, p).unwrap().into()
            }
        };
        let mut inner = Sequential::new().push("0", first);
        if name.contains("_bn") {
            inner = inner.push("1", bn(&c, w.shape()[0], dims));
        } else if name.contains("_relu") {
            inner = inner.push("1", Module::relu());
        }
        let mut m: Module = Sequential::new()
            .push("quant", Module::quant_stub())
            .push("m", inner)
            .push("dequant", Module::dequant_stub())
            .into();
        m.train(true);
        if m.get("m.1").is_some() {
            fuse_modules_qat(&mut m, &[&["m.0", "m.1"]]).unwrap();
        }
        prepare_qat(
            &mut m,
            &QConfigMap::global(get_default_qat_qconfig("x86").unwrap()),
        )
        .unwrap();
        let y = m.forward(Value::F(c.f32("x"))).unwrap().to_float();
        let o = m.get("m.0").unwrap().downcast_ref::<Observed>().unwrap();
        // torch's QAT table has no Conv1d: it stays float (float weights),
        // its output fake quantized.
        let qat_type = c.meta["qat_module"].as_str().unwrap();
        let want = if name == "qat_conv1d" {
            "Conv1d".to_string()
        } else {
            format!("QAT{qat_type}")
        };
        assert_eq!(o.module.type_name(), want, "{name}");
        let s = o.post.qparams().unwrap().0 as f32;
        fq_close(&y, &c.f32("y"), s, name);
        m.backward(c.f32("g")).unwrap();
        let o = m.get("m.0").unwrap().downcast_ref::<Observed>().unwrap();
        let wg = match o.module.downcast_ref::<Conv2d>() {
            Some(cv) => cv.weight.grad.clone().unwrap(),
            None => o
                .module
                .downcast_ref::<ConvNd>()
                .unwrap()
                .weight
                .grad
                .clone()
                .unwrap(),
        };
        let err = max_rel(wg.data(), c.f32("w_grad").data());
        assert!(err < 2e-3, "{name}: weight grad {err}");
        m.train(false);
        for e in engines() {
            let mut q = m.clone();
            convert_with(&mut q, &e).unwrap();
            assert_eq!(
                q.get("m.0").unwrap().type_name(),
                c.meta["module"].as_str().unwrap(),
                "{name}"
            );
            let Value::Q(qx) = q
                .get_mut("quant")
                .unwrap()
                .forward(Value::F(c.f32("x")))
                .unwrap()
            else {
                panic!()
            };
            let Value::Q(qy) = q.get_mut("m").unwrap().forward(Value::Q(qx)).unwrap() else {
                panic!()
            };
            let got = qy.contiguous().int_repr().to_vec();
            let want = c.u8s("qy");
            let off = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            let far = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| (**a as i32 - **b as i32).abs() > 1)
                .count();
            assert!(
                far == 0 && off * 20 <= got.len(),
                "{name} on {e:?}: {off} codes differ"
            );
        }
    }
}

#[test]
fn qat_embedding_bag_matches_pytorch() {
    use rquant_nn::embeddings::{BagMode, EmbeddingBag, QEmbeddingBag};
    let c = case("qat_embedding_bag");
    let (ind, off) = (c.i64s("indices"), c.i64s("offsets"));
    let mut mm: Module = Sequential::new()
        .push(
            "bag",
            EmbeddingBag::from_weight(c.f32("weight"), BagMode::Sum).unwrap(),
        )
        .into();
    mm.train(true);
    prepare_qat(
        &mut mm,
        &QConfigMap::global(default_embedding_qat_qconfig()),
    )
    .unwrap();
    assert_eq!(inner(mm.get("bag").unwrap()).type_name(), "QATEmbeddingBag");
    let bag = mm.get_mut("bag").unwrap();
    let bag = match bag.downcast_mut::<Observed>() {
        Some(o) => &mut o.module,
        None => bag,
    };
    let m = bag.downcast_mut::<EmbeddingBag>().unwrap();
    let y = m.forward_bags(&ind, &off, None).unwrap();
    assert_eq!(y.data(), c.f32("y").data(), "QAT EmbeddingBag forward");
    m.backward(c.f32("g")).unwrap();
    assert_eq!(
        m.weight.grad.as_ref().unwrap().data(),
        c.f32("w_grad").data()
    );
    for e in engines() {
        let mut q = mm.clone();
        q.train(false);
        convert_with(&mut q, &e).unwrap();
        let qb = q
            .get("bag")
            .unwrap()
            .downcast_ref::<QEmbeddingBag>()
            .unwrap();
        assert_eq!(qb.table.codes(), c.u8s("qweight.int").as_slice());
        assert_eq!(qb.table.scales(), c.f32("qweight.scale").data());
        let y = q
            .get_mut("bag")
            .unwrap()
            .embedding_bag(&ind, &off, None)
            .unwrap();
        assert_eq!(
            y.data(),
            c.f32("q_out").data(),
            "converted EmbeddingBag on {e:?}"
        );
    }
}
