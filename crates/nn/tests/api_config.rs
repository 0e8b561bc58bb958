//! Configuration against torch 2.15 (cases from tools/api/gen_api_cases.py):
//! every named observer / fake-quant / qconfig preset rebuilt from torch's
//! own `with_args` arguments, `QConfigMapping`'s precedence on a nested
//! model, and the fixed-qparams and learnable (LSQ) fake quants on data.

mod common;

use common::{case, max_rel};
use rquant_core::observer::{ObserverDType, ObserverKind};
use rquant_core::qconfig::{
    default_debug_observer, default_placeholder_observer, default_reuse_input_observer,
    learnable_qat_qconfig, qconfig_by_name, qspec_by_name, FakeQuantKind, ObserverSpec, QConfig,
    QSpec,
};
use rquant_core::{QScheme, Tensor};
use rquant_nn::layers::Linear;
use rquant_nn::quantize::QConfigMapping;
use rquant_nn::Sequential;
use rquant_nn::{Module, Value};
use serde_json::{Map, Value as J};

/// The observer spec torch's description stands for: the class's defaults,
/// then the observer's own keyword arguments, then the fake quant's (which
/// torch passes on to the observer).
fn expected_observer(d: &J, fq_kwargs: Option<&Map<String, J>>, what: &str) -> ObserverSpec {
    let class = d["class"].as_str().unwrap();
    let kind = ObserverKind::from_name(class).unwrap_or_else(|| panic!("{what}: class {class}"));
    let mut s = ObserverSpec::new(kind);
    let mut kw = d["kwargs"].as_object().cloned().unwrap_or_default();
    if let Some(f) = fq_kwargs {
        for (k, v) in f {
            if k != "observer" {
                kw.insert(k.clone(), v.clone());
            }
        }
    }
    // Placeholder observers default to float32, Noop observers to float16.
    s.placeholder_dtype = match kind {
        ObserverKind::Placeholder => Some(ObserverDType::Float32),
        ObserverKind::Noop => Some(ObserverDType::Float16),
        _ => None,
    };
    let c = &mut s.config;
    for (k, v) in &kw {
        match k.as_str() {
            "dtype" => {
                let d = ObserverDType::from_name(v.as_str().unwrap()).unwrap();
                if let Some(q) = d.quantized() {
                    c.dtype = q;
                }
                if let Some(bits) = d.sub_byte_bits() {
                    // A sub-byte dtype's range, unless given.
                    c.quant_min.get_or_insert(0);
                    c.quant_max.get_or_insert((1 << bits) - 1);
                }
                if s.placeholder_dtype.is_some() || d.sub_byte_bits().is_some() {
                    s.placeholder_dtype = Some(d);
                }
            }
            "qscheme" => c.qscheme = QScheme::from_name(v.as_str().unwrap()).unwrap(),
            "quant_min" => c.quant_min = Some(v.as_i64().unwrap()),
            "quant_max" => c.quant_max = Some(v.as_i64().unwrap()),
            "reduce_range" => c.reduce_range = v.as_bool().unwrap(),
            "eps" => c.eps = v.as_f64().unwrap() as f32,
            "averaging_constant" => c.averaging_constant = v.as_f64().unwrap(),
            "ch_axis" => c.ch_axis = v.as_i64().unwrap(),
            "is_dynamic" => c.is_dynamic = v.as_bool().unwrap(),
            "scale" => c.fixed_scale = v.as_f64().unwrap() as f32,
            "zero_point" => c.fixed_zero_point = v.as_i64().unwrap(),
            other => panic!("{what}: keyword {other} is not modelled"),
        }
    }
    s
}

fn check_spec(name: &str, got: &QSpec, d: &J) {
    let class = d["class"].as_str().unwrap();
    match FakeQuantKind::from_name(class) {
        Some(kind) => {
            let QSpec::FakeQuant(f) = got else {
                panic!("{name}: rquant has an observer, torch a {class}")
            };
            assert_eq!(f.kind, kind, "{name}: fake quant class");
            let kw = d["kwargs"].as_object().unwrap();
            let want = expected_observer(&kw["observer"], Some(kw), name);
            assert_eq!(f.observer, want, "{name}: the fake quant's observer");
        }
        None => {
            let QSpec::Observer(o) = got else {
                panic!("{name}: rquant has a fake quant, torch a {class}")
            };
            assert_eq!(*o, expected_observer(d, None, name), "{name}");
        }
    }
}

#[test]
fn named_presets_match_torch() {
    let c = case("presets");
    let presets = c.meta.as_object().unwrap();
    assert_eq!(presets.len(), 46, "torch 2.15's named presets");
    for (name, d) in presets {
        if d.get("activation").is_some() {
            let q = qconfig_by_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            check_spec(
                &format!("{name}.activation"),
                &q.activation,
                &d["activation"],
            );
            check_spec(&format!("{name}.weight"), &q.weight, &d["weight"]);
        } else {
            let s = qspec_by_name(name).unwrap_or_else(|| panic!("no preset {name}"));
            check_spec(name, &s, d);
        }
    }
    // The presets torch defines as bare classes.
    assert_eq!(
        default_placeholder_observer().kind,
        ObserverKind::Placeholder
    );
    assert_eq!(
        default_placeholder_observer().placeholder_dtype,
        Some(ObserverDType::Float32)
    );
    assert_eq!(default_debug_observer().kind, ObserverKind::Recording);
    assert_eq!(
        default_reuse_input_observer().kind,
        ObserverKind::ReuseInput
    );
    assert!(qconfig_by_name("default_symmetric_qnnpack_qconfig").is_err());
}

/// The qconfigs A..E of the generator: MinMax activations over 0..10+i.
fn qc(i: i64) -> QConfig {
    let mut q = qconfig_by_name("default_qconfig").unwrap();
    q.activation = QSpec::Observer(ObserverSpec::new(ObserverKind::MinMax).with(|c| {
        c.quant_min = Some(0);
        c.quant_max = Some(i + 10);
    }));
    q
}

#[test]
fn qconfig_mapping_precedence_matches_torch() {
    let c = case("qconfig_mapping");
    let conv = || {
        Module::from(
            rquant_nn::layers::Conv2d::from_weights(
                Tensor::new([2, 2, 1, 1], vec![0.5; 4]).unwrap(),
                None,
                rquant_nn::quantize::conv_params(1, 0, 1, 1),
            )
            .unwrap(),
        )
    };
    let lin = || {
        Module::from(
            Linear::from_weights(Tensor::new([2, 2], vec![0.5; 4]).unwrap(), None).unwrap(),
        )
    };
    let sub = Sequential::new()
        .push("conv", conv())
        .push("lin1", lin())
        .push("lin2", lin());
    let model: Module = Sequential::new()
        .push("features", sub)
        .push("head", lin())
        .push("extra", conv())
        .into();
    let map = QConfigMapping::new()
        .set_global(Some(qc(0)))
        .set_object_type("Linear", Some(qc(1)))
        .set_module_name_regex("features\\..*", Some(qc(2)))
        .set_module_name_regex("head", Some(qc(3)))
        .set_module_name("features.lin2", Some(qc(4)))
        .set_module_name("extra", None);
    let got = map.resolve(&model).unwrap();
    let names = ["A", "B", "C", "D", "E"];
    let want = c.meta["resolved"].as_object().unwrap();
    assert_eq!(got.len(), want.len());
    for (path, w) in want {
        let g = got
            .get(path)
            .unwrap_or_else(|| panic!("no module {path:?}"));
        let g = g
            .as_ref()
            .map(|q| names[(0..5).find(|&i| *q == qc(i)).unwrap() as usize]);
        assert_eq!(g, w.as_str(), "module {path:?}");
    }
    // A bad regex is an error naming the pattern.
    let bad = QConfigMapping::new().set_module_name_regex("(", Some(qc(0)));
    let err = bad.resolve(&model).unwrap_err().to_string();
    assert!(err.contains("regex"), "{err}");
}

/// Row-major `x [m, k] · w [n, k]ᵀ` in f32, k ascending.
fn linear(x: &Tensor, w: &Tensor) -> Tensor {
    let (m, k, n) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for p in 0..k {
                acc += x.data()[i * k + p] * w.data()[j * k + p];
            }
            y[i * n + j] = acc;
        }
    }
    Tensor::new([m, n], y).unwrap()
}

#[test]
fn fixed_qparams_and_learnable_fake_quants_match_torch() {
    let c = case("lsq_fixed");
    for n in ["0to1", "neg1to1"] {
        let spec = qspec_by_name(&format!("default_fixed_qparams_range_{n}_fake_quant")).unwrap();
        let mut fq = spec.build_fake_quant().unwrap();
        let xin = c.f32("xf");
        let mut act: Module = if n == "0to1" {
            Module::sigmoid()
        } else {
            Module::tanh()
        };
        act.train(true);
        let Value::F(a) = act.forward(Value::F(xin.clone())).unwrap() else {
            panic!()
        };
        let out = fq.forward(&a).unwrap();
        assert_eq!(
            out.y.data(),
            c.f32(&format!("fq.{n}")).data(),
            "{n}: forward"
        );
        assert_eq!(
            fq.scale(),
            &[if n == "0to1" {
                1.0 / 256.0
            } else {
                2.0 / 256.0
            }]
        );
        let ones = Tensor::new(a.shape().to_vec(), vec![1.0; a.numel()]).unwrap();
        let g = fq.backward(&a, &ones, &out.mask).unwrap();
        let g = act.backward(g).unwrap();
        // The activation's derivative in f32 (y(1−y), 1−y²) as torch's.
        let err = max_rel(g.data(), c.f32(&format!("fq_grad.{n}")).data());
        assert!(err < 1e-6, "{n}: gradient {err}");
    }
    // LSQ: a per-channel weight fake quant and a per-tensor activation one
    // (learnable_qat_qconfig), a static estimate, then a learning step.
    let q = learnable_qat_qconfig(false, Some(4), true);
    let mut wfq = q.weight.build_fake_quant().unwrap();
    let mut afq = q.activation.build_fake_quant().unwrap();
    let (w, x) = (c.f32("w"), c.f32("x"));
    let wq = wfq.forward(&w).unwrap();
    let y = linear(&x, &wq.y);
    let a = afq.forward(&y).unwrap();
    let close = |got: &[f32], key: &str, tol: f32| {
        let err = max_rel(got, c.f32(key).data());
        assert!(err <= tol, "{key}: {err}");
    };
    // Scale and zero point come from the observers (exact min/max of the
    // weight; the output's min/max through a 6-term f32 dot product, whose
    // order torch's BLAS may not share: to the last place).
    // The LSQ parameters hold what the observers chose.
    let lw = wfq.learnable_state().unwrap().scale.value.clone();
    close(lw.data(), "step0.wfq_scale", 0.0);
    let la = afq.learnable_state().unwrap();
    close(la.scale.value.data(), "step0.afq_scale", 1e-6);
    assert_eq!(la.zero_point.value.data(), c.f32("step0.afq_zp").data());
    close(a.y.data(), "step0.out", 1e-6);
    wfq.enable_param_learning().unwrap();
    afq.enable_param_learning().unwrap();
    let wq = wfq.forward(&w).unwrap();
    let y = linear(&x, &wq.y);
    let a = afq.forward(&y).unwrap();
    close(a.y.data(), "step1.out", 1e-6);
    let g = c.f32("g");
    let gy = afq.backward(&y, &g, &a.mask).unwrap();
    // dL/d(wq) = gyᵀ · x.
    let (m, n, k) = (x.shape()[0], w.shape()[0], w.shape()[1]);
    let mut gw = vec![0f32; n * k];
    for j in 0..n {
        for p in 0..k {
            let mut acc = 0f32;
            for i in 0..m {
                acc += gy.data()[i * n + j] * x.data()[i * k + p];
            }
            gw[j * k + p] = acc;
        }
    }
    let gw = Tensor::new([n, k], gw).unwrap();
    let gx = wfq.backward(&w, &gw, &wq.mask).unwrap();
    close(gx.data(), "step1.w_grad", 1e-5);
    let lw = wfq.learnable_state().unwrap();
    close(
        lw.scale.grad.as_ref().unwrap().data(),
        "step1.wfq_scale_grad",
        1e-5,
    );
    close(
        lw.zero_point.grad.as_ref().unwrap().data(),
        "step1.wfq_zp_grad",
        1e-5,
    );
    let la = afq.learnable_state().unwrap();
    close(
        la.scale.grad.as_ref().unwrap().data(),
        "step1.afq_scale_grad",
        1e-5,
    );
    close(
        la.zero_point.grad.as_ref().unwrap().data(),
        "step1.afq_zp_grad",
        1e-5,
    );
}

#[test]
fn default_qconfig_mappings_match_torch() {
    use rquant_nn::quantize::{get_default_qat_qconfig_mapping, get_default_qconfig_mapping};
    let c = case("default_qconfig_mapping");
    for (key, map) in [
        ("ptq", get_default_qconfig_mapping("x86").unwrap()),
        ("qat", get_default_qat_qconfig_mapping("x86").unwrap()),
    ] {
        let want = c.meta[key].as_object().unwrap();
        let global = map.global.clone().expect("a global qconfig");
        check_spec(
            &format!("{key} global activation"),
            &global.activation,
            &want[""]["activation"],
        );
        check_spec(
            &format!("{key} global weight"),
            &global.weight,
            &want[""]["weight"],
        );
        let types: Vec<&str> = map.by_type.iter().map(|(t, _)| t.as_str()).collect();
        for (t, d) in want.iter().filter(|(t, _)| !t.is_empty()) {
            let (_, q) = map
                .by_type
                .iter()
                .find(|(n, _)| n == t)
                .unwrap_or_else(|| panic!("{key}: no entry for {t} in {types:?}"));
            let q = q.as_ref().expect("a qconfig");
            check_spec(
                &format!("{key} {t} activation"),
                &q.activation,
                &d["activation"],
            );
            check_spec(&format!("{key} {t} weight"), &q.weight, &d["weight"]);
        }
        assert_eq!(map.by_type.len(), want.len() - 1, "{key}: {types:?}");
    }
}

#[test]
fn fused_moving_avg_obs_fake_quant_function_matches_torch() {
    use rquant_core::qconfig::fused_moving_avg_obs_fake_quant;
    let c = case("fused_obs_fq");
    let calls = c.meta["calls"].as_array().unwrap();
    let avg = c.meta["averaging_const"].as_f64().unwrap() as f32;
    let axis = c.meta["ch_axis"].as_i64().unwrap();
    for (i, call) in calls.iter().enumerate() {
        let per_row = call["per_row"].as_bool().unwrap();
        let sym = call["symmetric"].as_bool().unwrap();
        let (qmin, qmax) = (
            call["quant_min"].as_i64().unwrap(),
            call["quant_max"].as_i64().unwrap(),
        );
        let n = if per_row { 3 } else { 1 };
        let (mut lo, mut hi) = (vec![f32::INFINITY; n], vec![f32::NEG_INFINITY; n]);
        let (mut scale, mut zp) = (vec![1.0f32; n], vec![0i64; n]);
        for b in 0..3 {
            let k = format!("c{i}.b{b}");
            let out = fused_moving_avg_obs_fake_quant(
                &c.f32(&format!("{k}.x")),
                b != 2,
                true,
                &mut lo,
                &mut hi,
                &mut scale,
                &mut zp,
                avg,
                qmin,
                qmax,
                axis,
                per_row,
                sym,
            )
            .unwrap();
            assert_eq!(lo, c.f32(&format!("{k}.min")).data(), "{k}: running min");
            assert_eq!(hi, c.f32(&format!("{k}.max")).data(), "{k}: running max");
            assert_eq!(scale, c.f32(&format!("{k}.scale")).data(), "{k}: scale");
            assert_eq!(zp, c.i64s(&format!("{k}.zp")), "{k}: zero point");
            assert_eq!(out.y.data(), c.f32(&format!("{k}.y")).data(), "{k}: output");
        }
    }
}
