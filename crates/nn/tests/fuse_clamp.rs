//! Beyond PyTorch's eager fusion: conv (+ batch norm) + ReLU6 / Hardtanh
//! fused into one conv whose int8 output is clamped, for inference and QAT,
//! converted on every engine and ISA path, saved and loaded.

use rquant_core::qconfig::{get_default_qat_qconfig, get_default_qconfig};
use rquant_core::{Engine, Tensor};
use rquant_nn::io::{quantized_bytes, quantized_from_bytes};
use rquant_nn::quantized::QConv2d;
use rquant_nn::{
    conv_params, convert_with, fuse_modules, fuse_modules_qat, prepare, prepare_qat, BatchNorm2d,
    Conv2d, Module, QConfigMap, Rng, Sequential, Value,
};

fn bn(c: usize, rng: &mut Rng) -> BatchNorm2d {
    let mut b = BatchNorm2d::new(c);
    let mut v = |lo: f32, hi: f32| {
        Tensor::new(
            [c],
            (0..c).map(|_| lo + (hi - lo) * rng.uniform()).collect(),
        )
        .unwrap()
    };
    b.weight.value = v(0.5, 1.5);
    b.bias.value = v(-0.2, 0.2);
    b.running_mean = v(-0.3, 0.3);
    b.running_var = v(0.5, 2.0);
    b
}

fn model() -> Module {
    let mut rng = Rng(11);
    let conv = |i, o, rng: &mut Rng| {
        Conv2d::new(i, o, [3, 3], conv_params(1, 1, 1, 1), true, rng).unwrap()
    };
    let mut m: Module = Sequential::new()
        .push("quant", Module::quant_stub())
        .push("conv1", conv(3, 8, &mut rng))
        .push("bn1", bn(8, &mut rng))
        .push("relu6", Module::relu6())
        .push("conv2", conv(8, 8, &mut rng))
        .push("bn2", bn(8, &mut rng))
        .push("clamp", Module::hardtanh(-1.0, 2.0))
        .push("conv3", conv(8, 4, &mut rng))
        .push("relu6b", Module::relu6())
        .push("dequant", Module::dequant_stub())
        .into();
    m.train(false);
    m
}

const GROUPS: [&[&str]; 3] = [
    &["conv1", "bn1", "relu6"],
    &["conv2", "bn2", "clamp"],
    &["conv3", "relu6b"],
];

fn input(seed: u64, n: usize) -> Tensor {
    input_in(seed, n, 2.0)
}

fn input_in(seed: u64, n: usize, r: f32) -> Tensor {
    let mut rng = Rng(seed);
    Tensor::new([n, 3, 8, 8], (0..n * 192).map(|_| rng.sym(r)).collect()).unwrap()
}

fn bits(m: &mut Module, x: &Tensor) -> Vec<u32> {
    let y = m.forward(Value::F(x.clone())).unwrap().to_float();
    y.data().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn conv_bn_relu6_and_hardtanh_fuse_and_convert_on_every_path() {
    let engines: Vec<Engine> = rquant_nn::engines::all_paths();
    let float = model();
    let x = input(3, 2);
    let want = float
        .clone()
        .forward(Value::F(x.clone()))
        .unwrap()
        .to_float();
    let mut fused = float.clone();
    fuse_modules(&mut fused, &GROUPS).unwrap();
    for (p, t, c) in [
        ("conv1", "ConvHardtanh2d", (0.0, 6.0)),
        ("conv2", "ConvHardtanh2d", (-1.0, 2.0)),
        ("conv3", "ConvHardtanh2d", (0.0, 6.0)),
    ] {
        let m = fused.get(p).unwrap();
        assert_eq!(m.type_name(), t, "{p}");
        assert_eq!(m.downcast_ref::<Conv2d>().unwrap().clamp, Some(c), "{p}");
    }
    assert_eq!(fused.get("relu6").unwrap().type_name(), "Identity");
    let y = fused.forward(Value::F(x.clone())).unwrap().to_float();
    let d = rquant_nn::numeric_suite::sqnr(want.data(), y.data());
    assert!(d > 80.0, "fusion changed the float model: SQNR {d}");
    assert!(y.data().iter().all(|&v| (0.0..=6.0).contains(&v)));

    let mut observed = fused.clone();
    prepare(
        &mut observed,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    for s in 0..3 {
        observed.forward(Value::F(input(100 + s, 4))).unwrap();
    }
    let mut first: Option<(Vec<u32>, Vec<u8>)> = None;
    for e in &engines {
        let name = format!("{}/{}", e.name(), e.isa());
        let mut q = observed.clone();
        convert_with(&mut q, e).unwrap();
        assert_eq!(
            q.get("conv2").unwrap().type_name(),
            "QuantizedConvHardtanh2d"
        );
        // The fused clamp is the quantized hardtanh after the conv, bit for
        // bit (on an input wider than the calibration's, so that it bites).
        let x = input_in(3, 2, 8.0);
        let mut upto = q.clone();
        for p in ["conv3", "relu6b", "dequant"] {
            *upto.get_mut(p).unwrap() = Module::identity();
        }
        let Value::Q(h) = upto.forward(Value::F(x.clone())).unwrap() else {
            panic!()
        };
        let mut plain = upto.clone();
        let c2 = plain
            .get_mut("conv2")
            .unwrap()
            .downcast_mut::<QConv2d>()
            .unwrap();
        c2.clamp = None;
        let Value::Q(raw) = plain.forward(Value::F(x.clone())).unwrap() else {
            panic!()
        };
        let clamped = e.hardtanh(&raw, -1.0, 2.0).unwrap();
        assert_eq!(h.int_repr(), clamped.int_repr(), "{name}");
        assert_ne!(
            h.int_repr(),
            raw.int_repr(),
            "{name}: the clamp must bite here"
        );
        let b = bits(&mut q, &x);
        let hq = h.int_repr().to_vec();
        match &first {
            None => first = Some((b, hq)),
            Some((b0, h0)) => {
                assert_eq!(&b, b0, "{name}");
                assert_eq!(&hq, h0, "{name}");
            }
        }
        let bytes = quantized_bytes(&q, "x86").unwrap();
        let (mut back, _) = quantized_from_bytes(&bytes, "f.st", Some(e.clone())).unwrap();
        assert_eq!(
            back.get("conv2").unwrap().type_name(),
            "QuantizedConvHardtanh2d"
        );
        assert_eq!(
            bits(&mut back, &x),
            first.as_ref().unwrap().0,
            "loaded on {name}"
        );
    }
    let y8 = {
        let mut q = observed.clone();
        convert_with(&mut q, &engines[0]).unwrap();
        q.forward(Value::F(x.clone())).unwrap().to_float()
    };
    let d = rquant_nn::numeric_suite::sqnr(want.data(), y8.data());
    assert!(d > 15.0, "int8 vs fp32 SQNR {d}");
}

#[test]
fn qat_keeps_the_batch_norm_and_the_clamp() {
    let mut m = model();
    m.train(true);
    fuse_modules_qat(&mut m, &GROUPS).unwrap();
    assert_eq!(m.get("conv1").unwrap().type_name(), "ConvBnHardtanh2d");
    assert_eq!(m.get("conv3").unwrap().type_name(), "ConvHardtanh2d");
    prepare_qat(
        &mut m,
        &QConfigMap::global(get_default_qat_qconfig("x86").unwrap()),
    )
    .unwrap();
    assert_eq!(m.get("conv1").unwrap().type_name(), "QATConvBnHardtanh2d");
    assert_eq!(m.get("conv3").unwrap().type_name(), "QATConvHardtanh2d");
    let x = input(5, 2);
    let y = m.forward(Value::F(x)).unwrap().to_float();
    assert!(y.data().iter().all(|&v| (0.0..=6.0).contains(&v)));
    // Gradients flow only where the clamp was not active.
    let g = Tensor::new(y.shape().to_vec(), vec![1.0; y.numel()]).unwrap();
    m.backward(g).unwrap();
    m.train(false);
    let e = rquant_nn::engines::available().remove(0);
    convert_with(&mut m, &e).unwrap();
    assert_eq!(
        m.get("conv1").unwrap().type_name(),
        "QuantizedConvHardtanh2d"
    );
    m.forward(Value::F(input(6, 1))).unwrap();
}

#[test]
fn unsupported_clamp_patterns_are_errors() {
    let mut m = model();
    let msg = fuse_modules(&mut m, &[&["conv1", "relu6", "bn1"]])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("conv+bn+relu6"), "{msg}");
    let mut m = model();
    fuse_modules(&mut m, &[&["conv3", "relu6b"]]).unwrap();
    *m.get_mut("relu6").unwrap() = Module::relu6();
    assert!(fuse_modules(&mut m, &[&["conv3", "relu6"]]).is_err());
}
