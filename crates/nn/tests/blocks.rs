//! User-written blocks: torchvision's quantizable ResNet BasicBlock as a
//! [`Block`] (named children and a forward function), in a two-block
//! ResNet-ish model. Fusion, prepare, convert, save and load reach the
//! blocks' children; the loaded model gives the converted model's bits on
//! every engine and ISA path, and every module runs on the engine it was
//! converted or moved to.

use rquant_core::qconfig::get_default_qconfig;
use rquant_core::{Engine, Tensor};
use rquant_nn::io::{quantized_bytes, quantized_from_bytes_with};
use rquant_nn::layers::{AdaptiveAvgPool2d, MaxPool2d};
use rquant_nn::{
    conv_params, convert_with, fuse_modules, prepare, to_engine, BatchNorm2d, Block, Conv2d,
    Linear, Module, ModuleRegistry, QConfigMap, Result, Rng, Sequential, Value,
};

// torchvision.models.quantization.resnet.QuantizableBasicBlock, as a user writes it.
fn basic_block_forward(b: &mut Block, x: Value) -> Result<Value> {
    let identity = if b.has("downsample") {
        b.run("downsample", x.clone())?
    } else {
        x.clone()
    };
    let y = b.seq(&["conv1", "bn1", "relu", "conv2", "bn2"], x)?;
    b.child("add_relu")?.add_relu(y, identity)
}

// The same block with the conv2 + add_relu tail through `Block::conv_add`:
// one op (the conv's output stage adds the residual, both roundings kept)
// once converted, the children one by one before.
fn basic_block_fused_forward(b: &mut Block, x: Value) -> Result<Value> {
    let identity = if b.has("downsample") {
        b.run("downsample", x.clone())?
    } else {
        x.clone()
    };
    let y = b.seq(&["conv1", "bn1", "relu"], x)?;
    b.conv_add(&["conv2", "bn2"], y, "add_relu", identity, true)
}

fn bn(c: usize, rng: &mut Rng) -> BatchNorm2d {
    // Random statistics, so that folding them into the convs matters.
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

type Forward = fn(&mut Block, Value) -> Result<Value>;

fn basic_block(inp: usize, out: usize, stride: usize, fwd: Forward, rng: &mut Rng) -> Module {
    let conv = |i, o, k, s, p, rng: &mut Rng| {
        Conv2d::new(i, o, [k, k], conv_params(s, p, 1, 1), false, rng).unwrap()
    };
    let mut b = Block::new("BasicBlock", fwd)
        .with("conv1", conv(inp, out, 3, stride, 1, rng))
        .with("bn1", bn(out, rng))
        .with("relu", Module::relu())
        .with("conv2", conv(out, out, 3, 1, 1, rng))
        .with("bn2", bn(out, rng))
        .with("add_relu", Module::float_functional());
    if stride != 1 || inp != out {
        let down = Sequential::new()
            .push("0", conv(inp, out, 1, stride, 0, rng))
            .push("1", bn(out, rng));
        b = b.with("downsample", down);
    }
    b.into()
}

fn resnet() -> Module {
    resnet_with(basic_block_forward)
}

fn resnet_with(fwd: Forward) -> Module {
    let mut rng = Rng(2024);
    let stem = Conv2d::new(3, 8, [3, 3], conv_params(1, 1, 1, 1), false, &mut rng).unwrap();
    let layer1 = Sequential::new()
        .push("0", basic_block(8, 8, 1, fwd, &mut rng))
        .push("1", basic_block(8, 16, 2, fwd, &mut rng));
    let mut m: Module = Sequential::new()
        .push("quant", Module::quant_stub())
        .push("conv1", stem)
        .push("bn1", bn(8, &mut rng))
        .push("relu", Module::relu())
        .push("maxpool", MaxPool2d::new(2, 2))
        .push("layer1", layer1)
        .push("avgpool", AdaptiveAvgPool2d::new([1, 1]))
        .push("flatten", Module::flatten())
        .push("fc", Linear::new(16, 10, true, &mut rng))
        .push("dequant", Module::dequant_stub())
        .into();
    m.train(false);
    m
}

/// torchvision's `fuse_model`: the stem, then each block's convs and its downsample.
fn fuse_model(m: &mut Module) {
    let mut groups: Vec<Vec<String>> = vec![vec!["conv1".into(), "bn1".into(), "relu".into()]];
    for b in ["layer1.0", "layer1.1"] {
        let p = |n: &str| format!("{b}.{n}");
        groups.push(vec![p("conv1"), p("bn1"), p("relu")]);
        groups.push(vec![p("conv2"), p("bn2")]);
        if m.get(&p("downsample")).is_some() {
            groups.push(vec![p("downsample.0"), p("downsample.1")]);
        }
    }
    let g: Vec<Vec<&str>> = groups
        .iter()
        .map(|g| g.iter().map(String::as_str).collect())
        .collect();
    let g: Vec<&[&str]> = g.iter().map(Vec::as_slice).collect();
    fuse_modules(m, &g).unwrap();
}

fn input(seed: u64, n: usize) -> Tensor {
    let mut rng = Rng(seed);
    Tensor::new(
        [n, 3, 12, 12],
        (0..n * 3 * 144).map(|_| rng.sym(1.5)).collect(),
    )
    .unwrap()
}

fn bits(m: &mut Module, x: &Tensor) -> Vec<u32> {
    let y = m.forward(Value::F(x.clone())).unwrap().to_float();
    y.data().iter().map(|v| v.to_bits()).collect()
}

fn tensors_and_tree(b: &[u8]) -> (Vec<(String, Vec<u8>)>, String) {
    let st = safetensors::SafeTensors::deserialize(b).unwrap();
    let mut t: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec()))
        .collect();
    t.sort();
    let (_, meta) = safetensors::SafeTensors::read_metadata(b).unwrap();
    (t, meta.metadata().as_ref().unwrap()["modules"].clone())
}

fn engines_of(m: &Module) -> Vec<(String, Engine)> {
    m.named_modules()
        .into_iter()
        .filter_map(|(p, m)| m.engine().map(|e| (p, e.clone())))
        .collect()
}

#[test]
fn resnet_blocks_fuse_quantize_save_and_load_on_every_engine() {
    let engines = rquant_nn::engines::all_paths();
    let float = resnet();
    let x = input(7, 3);
    let want_float = float
        .clone()
        .forward(Value::F(x.clone()))
        .unwrap()
        .to_float();

    let mut fused = float.clone();
    fuse_model(&mut fused);
    assert_eq!(
        fused.get("layer1.0.conv1").unwrap().type_name(),
        "ConvReLU2d"
    );
    assert_eq!(
        fused.get("layer1.1.downsample.0").unwrap().type_name(),
        "Conv2d"
    );
    assert!(fused
        .get("layer1.1.bn2")
        .unwrap()
        .is::<rquant_nn::Identity>());
    let y = fused.forward(Value::F(x.clone())).unwrap().to_float();
    let d = rquant_nn::numeric_suite::sqnr(want_float.data(), y.data());
    assert!(d > 80.0, "fusion changed the float model: SQNR {d}");

    let mut observed = fused.clone();
    prepare(
        &mut observed,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    for s in 0..4 {
        observed.forward(Value::F(input(100 + s, 4))).unwrap();
    }
    let first = &engines[0];
    let mut q = observed.clone();
    convert_with(&mut q, first).unwrap();
    for (p, t) in [
        ("layer1.0.conv1", "QuantizedConvReLU2d"),
        ("layer1.0.conv2", "QuantizedConv2d"),
        ("layer1.0.add_relu", "QFunctional"),
        ("layer1.1.downsample.0", "QuantizedConv2d"),
        ("layer1.1", "BasicBlock"),
        ("fc", "QuantizedLinear"),
    ] {
        assert_eq!(q.get(p).unwrap().type_name(), t, "{p}");
    }
    let want = bits(&mut q, &x);
    let got = q.forward(Value::F(x.clone())).unwrap().to_float();
    let d = rquant_nn::numeric_suite::sqnr(want_float.data(), got.data());
    assert!(d > 15.0, "int8 vs fp32 SQNR {d}");
    // Every module that runs int8 ops (pooling and the stem's ReLU-free
    // maxpool included) holds the engine it was converted with.
    let held = engines_of(&q);
    assert!(held.iter().any(|(p, _)| p == "maxpool"), "{held:?}");
    assert!(held.iter().all(|(_, e)| e.path() == first.path()));

    let bytes = quantized_bytes(&q, "x86 per-channel").unwrap();
    let reg = ModuleRegistry::default().with_block("BasicBlock", basic_block_forward);
    // Without the block's loader the file names what is missing.
    let msg = rquant_nn::io::quantized_from_bytes(&bytes, "resnet.st", Some(first.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("modules/layer1.0.type") && msg.contains("BasicBlock"),
        "{msg}"
    );
    for e in &engines {
        let name = format!("{}/{}", e.name(), e.isa());
        let (mut back, _) =
            quantized_from_bytes_with(&bytes, "resnet.st", Some(e.clone()), &reg).unwrap();
        assert_eq!(back.get("layer1.1").unwrap().type_name(), "BasicBlock");
        assert!(
            engines_of(&back).iter().all(|(_, h)| h.path() == e.path()),
            "{name}"
        );
        assert_eq!(bits(&mut back, &x), want, "loaded on {name}");
        // The blocks' conv2 + add_relu as one op (Block::conv_add): the
        // same bits, with and without a downsample.
        let fused_reg =
            ModuleRegistry::default().with_block("BasicBlock", basic_block_fused_forward);
        let (mut fz, _) =
            quantized_from_bytes_with(&bytes, "resnet.st", Some(e.clone()), &fused_reg).unwrap();
        for p in ["layer1.0", "layer1.1"] {
            let blk = fz.get(p).unwrap().downcast_ref::<Block>().unwrap();
            assert!(blk.conv_add_fuses(&["conv2", "bn2"], "add_relu"), "{p}");
        }
        assert_eq!(bits(&mut fz, &x), want, "conv2 + add_relu fused on {name}");
        // Converted afresh on this engine, and moved here from the first one.
        let mut c = observed.clone();
        convert_with(&mut c, e).unwrap();
        assert_eq!(bits(&mut c, &x), want, "converted on {name}");
        let mut moved = q.clone();
        to_engine(&mut moved, e).unwrap();
        assert!(
            engines_of(&moved).iter().all(|(_, h)| h.path() == e.path()),
            "{name}"
        );
        assert_eq!(bits(&mut moved, &x), want, "moved to {name}");
        // Saved again from the loaded model: the same tensors and module tree.
        let again = quantized_bytes(&back, "x86 per-channel").unwrap();
        assert_eq!(tensors_and_tree(&again), tensors_and_tree(&bytes), "{name}");
    }
}

#[test]
fn conv_add_blocks_give_the_unfused_bits_in_every_form() {
    // The same seeded model with either forward: float, observed and
    // converted forms agree bit for bit; only the converted blocks fuse.
    let engines = rquant_nn::engines::all_paths();
    let (plain, fused) = (resnet(), resnet_with(basic_block_fused_forward));
    let x = input(9, 2);
    let fuses = |m: &Module| {
        ["layer1.0", "layer1.1"].map(|p| {
            let b = m.get(p).unwrap().downcast_ref::<Block>().unwrap();
            b.conv_add_fuses(&["conv2", "bn2"], "add_relu")
        })
    };
    let (mut a, mut b) = (plain.clone(), fused.clone());
    assert_eq!(bits(&mut a, &x), bits(&mut b, &x), "float");
    fuse_model(&mut a);
    fuse_model(&mut b);
    assert_eq!(bits(&mut a, &x), bits(&mut b, &x), "fused float");
    let qc = QConfigMap::global(get_default_qconfig("x86").unwrap());
    prepare(&mut a, &qc).unwrap();
    prepare(&mut b, &qc).unwrap();
    for s in 0..3 {
        assert_eq!(
            bits(&mut a, &input(200 + s, 2)),
            bits(&mut b, &input(200 + s, 2)),
            "observed"
        );
    }
    assert_eq!(fuses(&b), [false, false]);
    for e in &engines {
        let name = format!("{}/{}", e.name(), e.isa());
        let (mut qa, mut qb) = (a.clone(), b.clone());
        convert_with(&mut qa, e).unwrap();
        convert_with(&mut qb, e).unwrap();
        assert_eq!(fuses(&qb), [true, true], "{name}");
        assert_eq!(bits(&mut qa, &x), bits(&mut qb, &x), "{name}");
    }
}

#[test]
fn conv_add_runs_unfused_when_it_cannot_fuse() {
    // A conv with a fused ReLU, and an add on another engine path: the two
    // ops one after the other, the same bits as written out.
    let engines = rquant_nn::engines::all_paths();
    let mut rng = Rng(5);
    let conv = Conv2d::new(4, 4, [3, 3], conv_params(1, 1, 1, 1), false, &mut rng).unwrap();
    let fwd = |b: &mut Block, x: Value| {
        let id = x.clone();
        b.conv_add(&["conv", "relu"], x, "add", id, false)
    };
    let mut m: Module = Sequential::new()
        .push("quant", Module::quant_stub())
        .push(
            "blk",
            Block::new("B", fwd)
                .with("conv", conv)
                .with("relu", Module::relu())
                .with("add", Module::float_functional()),
        )
        .push("dequant", Module::dequant_stub())
        .into();
    m.train(false);
    fuse_modules(&mut m, &[&["blk.conv", "blk.relu"]]).unwrap();
    prepare(
        &mut m,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    let mut rng = Rng(6);
    let x = Tensor::new([2, 4, 5, 5], (0..200).map(|_| rng.sym(1.0)).collect()).unwrap();
    m.forward(Value::F(x.clone())).unwrap();
    for e in &engines {
        let mut q = m.clone();
        convert_with(&mut q, e).unwrap();
        let fuses = |q: &Module| {
            let b = q.get("blk").unwrap().downcast_ref::<Block>().unwrap();
            b.conv_add_fuses(&["conv", "relu"], "add")
        };
        assert!(!fuses(&q));
        let want = {
            let mut s = q.get("quant").unwrap().clone();
            let xq = s.forward(Value::F(x.clone())).unwrap();
            let c = q.get_mut("blk.conv").unwrap().forward(xq.clone()).unwrap();
            let y = q.get_mut("blk.add").unwrap().add(c, xq).unwrap();
            y.to_float()
                .data()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&mut q, &x), want);
        // The add moved to another path: not fused either.
        if let Some(other) = engines.iter().find(|o| o.path() != e.path()) {
            to_engine(q.get_mut("blk.add").unwrap(), other).unwrap();
            assert!(!fuses(&q));
            assert_eq!(bits(&mut q, &x), want);
        }
    }
}

#[test]
fn block_errors_name_the_block_and_child() {
    let mut rng = Rng(3);
    let b = Block::new("Broken", |b, x| b.run("nope", x)).with(
        "conv",
        Conv2d::new(3, 3, [1, 1], conv_params(1, 0, 1, 1), true, &mut rng).unwrap(),
    );
    let mut m: Module = Sequential::new().push("blk", b).into();
    let msg = m
        .forward(Value::F(Tensor::zeros([1, 3, 2, 2])))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("blk") && msg.contains("Broken has no child \"nope\""),
        "{msg}"
    );
    // A quantized tensor through a float pool that was never given an engine.
    let q = rquant_core::quantize_per_tensor::<u8>(&Tensor::zeros([1, 1, 2, 2]), 0.1, 0).unwrap();
    let mut pool: Module = Sequential::new().push("pool", MaxPool2d::new(2, 2)).into();
    let msg = pool.forward(Value::Q(q)).unwrap_err().to_string();
    assert!(
        msg.starts_with("pool") && msg.contains("needs an engine"),
        "{msg}"
    );
}
