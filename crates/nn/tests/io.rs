//! Saving and loading: a converted model saved once loads on every engine
//! with identical outputs; corrupt or mismatched files are clear errors
//! naming the file and the field.

use rquant_core::qconfig::{get_default_qconfig, QConfig};
use rquant_core::{registry, Conv2dParams, Tensor};
use rquant_nn::io::{load_float, quantized_bytes, quantized_from_bytes, read_state_dict};
use rquant_nn::layers::MaxPool2d;
use rquant_nn::{
    convert_with, fuse_modules, prepare, quantize_dynamic_with, Conv2d, DynamicDType, DynamicType,
    Linear, Module, QConfigMap, Rng, Sequential, Value,
};

fn small_model() -> Module {
    let mut rng = Rng(11);
    let p = Conv2dParams {
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
        groups: 1,
    };
    Module::new(Sequential::from_modules(vec![
        Module::quant_stub(),
        Module::new(Conv2d::new(2, 4, [3, 3], p, true, &mut rng).unwrap()),
        Module::relu(),
        Module::new(MaxPool2d::new(2, 2)),
        Module::flatten(),
        Module::new(Linear::new(4 * 3 * 3, 5, true, &mut rng)),
        Module::dequant_stub(),
    ]))
}

fn input(n: usize) -> Tensor {
    let mut rng = Rng(5);
    Tensor::new([n, 2, 6, 6], (0..n * 72).map(|_| rng.sym(2.0)).collect()).unwrap()
}

fn converted(qc: QConfig, engine: &rquant_core::Engine) -> Module {
    let mut m = small_model();
    fuse_modules(&mut m, &[&["1", "2"]]).unwrap();
    prepare(&mut m, &QConfigMap::global(qc)).unwrap();
    for _ in 0..3 {
        m.forward(Value::F(input(4))).unwrap();
    }
    convert_with(&mut m, engine).unwrap();
    m
}

fn out_bits(m: &mut Module, e: &str) -> Vec<u32> {
    registry::set_engine(e).unwrap();
    m.forward(Value::F(input(3)))
        .unwrap()
        .to_float()
        .data()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn save_then_load_gives_the_same_bits_on_every_engine() {
    rquant_nn::engines::init();
    let engines = rquant_nn::engines::available();
    let first = &engines[0];
    let mut q = converted(get_default_qconfig("x86").unwrap(), first);
    let want = out_bits(&mut q, first.name());
    let bytes = quantized_bytes(&q, "x86 default").unwrap();
    for e in &engines {
        let (mut m, meta) =
            quantized_from_bytes(&bytes, "model.safetensors", Some(e.clone())).unwrap();
        assert_eq!(meta.engine, first.name());
        assert_eq!(meta.qconfig, "x86 default");
        assert_eq!(out_bits(&mut m, e.name()), want, "loaded on {}", e.name());
        // Saving again gives the same tensors (weights, qparams) bit for bit.
        let again = quantized_bytes(&m, "x86 default").unwrap();
        let (a, b) = (
            safetensors::SafeTensors::deserialize(&again).unwrap(),
            safetensors::SafeTensors::deserialize(&bytes).unwrap(),
        );
        let mut names = a.names();
        names.sort();
        let mut names_b = b.names();
        names_b.sort();
        assert_eq!(names, names_b);
        for n in names {
            assert_eq!(
                a.tensor(n).unwrap().data(),
                b.tensor(n).unwrap().data(),
                "{n}"
            );
        }
    }
    // Dynamic models too.
    let mut d = small_model();
    quantize_dynamic_with(
        &mut d,
        &[DynamicType::Linear],
        DynamicDType::QInt8,
        &rquant_core::qconfig::default_dynamic_qconfig(),
        first,
    )
    .unwrap();
    // The float conv needs a float input: drop the stubs' effect by running as-is.
    let bytes = quantized_bytes(&d, "dynamic").unwrap();
    let (mut back, _) = quantized_from_bytes(&bytes, "d.safetensors", Some(first.clone())).unwrap();
    assert_eq!(
        out_bits(&mut back, first.name()),
        out_bits(&mut d, first.name())
    );
}

#[test]
fn corrupt_and_mismatched_files_are_clear_errors() {
    rquant_nn::engines::init();
    let e = rquant_nn::engines::available().remove(0);
    let q = converted(get_default_qconfig("x86").unwrap(), &e);
    let good = quantized_bytes(&q, "x").unwrap();

    let err = |b: &[u8]| {
        quantized_from_bytes(b, "m.st", Some(e.clone()))
            .unwrap_err()
            .to_string()
    };
    let msg = err(&good[..good.len() / 2]);
    assert!(msg.starts_with("m.st: header"), "{msg}");
    let msg = err(b"garbage");
    assert!(msg.starts_with("m.st: header"), "{msg}");

    // A float state_dict is not a quantized model.
    let mut f = small_model();
    let fb = rquant_nn::io::float_bytes(&mut f).unwrap();
    let msg = err(&fb);
    assert!(msg.contains("__metadata__.format"), "{msg}");

    // Tamper with the metadata: a missing tensor and a bad qparam.
    let mut tampered = good.clone();
    let at = good.windows(10).position(|w| w == b"\"5.weight\"").unwrap();
    tampered[at + 8] = b'_';
    let msg = err(&tampered);
    assert!(
        msg.contains("5.weight") && msg.contains("missing tensor"),
        "{msg}"
    );
    // A scale of zero in the file is rejected, naming the field.
    let mut bad_scale = good.clone();
    let st = safetensors::SafeTensors::deserialize(&good).unwrap();
    let v = st.tensor("5.scale").unwrap();
    let off = v.data().as_ptr() as usize - good.as_ptr() as usize;
    bad_scale[off..off + 8].copy_from_slice(&0f64.to_le_bytes());
    let msg = err(&bad_scale);
    assert!(
        msg.contains("5.scale") && msg.contains("invalid scale"),
        "{msg}"
    );

    // Float loading: missing, unexpected and mis-shaped keys name the key.
    let dir = std::env::temp_dir().join(format!("rquant-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("f.safetensors");
    std::fs::write(&path, &fb).unwrap();
    let p = path.to_str().unwrap();
    let mut ok = small_model();
    load_float(&mut ok, p).unwrap();
    let mut sd = read_state_dict(p).unwrap();
    let mut other = small_model();
    let Some(s) = other.downcast_mut::<Sequential>() else {
        unreachable!()
    };
    s.children.push((
        "7".into(),
        Module::new(Linear::new(5, 2, true, &mut Rng(1))),
    ));
    let msg = other.load_state_dict(&sd, true, p).unwrap_err().to_string();
    assert!(msg.contains("7.weight") && msg.contains("missing"), "{msg}");
    sd.push(("extra.weight".into(), Tensor::zeros([1])));
    let msg = small_model()
        .load_state_dict(&sd, true, p)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("extra.weight") && msg.contains("unexpected"),
        "{msg}"
    );
    sd.pop();
    let i = sd.iter().position(|(n, _)| n == "1.weight").unwrap();
    sd[i].1 = Tensor::zeros([4, 2, 3, 1]);
    let msg = small_model()
        .load_state_dict(&sd, true, p)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("1.weight") && msg.contains("shape"), "{msg}");
    let msg = load_float(&mut small_model(), "/nonexistent/x.safetensors")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/nonexistent/x.safetensors"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn wrong_inputs_name_the_module() {
    let mut m = small_model();
    let x = Tensor::zeros([1, 3, 6, 6]);
    let msg = m.forward(Value::F(x)).unwrap_err().to_string();
    assert!(msg.starts_with("1: ") && msg.contains("channels"), "{msg}");
}

#[test]
fn text_model_with_embedding_and_dynamic_lstm_round_trips_and_moves_engines() {
    use rquant_nn::rnn::{Embedding, Rnn, RnnKind};
    use rquant_nn::to_engine;
    rquant_nn::engines::init();
    let engines = rquant_nn::engines::available();
    let mut rng = Rng(3);
    let mut m = Module::new(Sequential::from_modules(vec![
        Module::new(Embedding::new(20, 6, &mut rng)),
        Module::new(Rnn::new(RnnKind::Lstm, 6, 8, 2, true, &mut rng)),
        Module::new(Linear::new(8, 20, true, &mut rng)),
    ]));
    quantize_dynamic_with(
        &mut m,
        &[DynamicType::Linear, DynamicType::Lstm],
        DynamicDType::QInt8,
        &rquant_core::qconfig::default_dynamic_qconfig(),
        &engines[0],
    )
    .unwrap();
    let ids = Tensor::new([2, 5], vec![1., 4., 7., 19., 0., 3., 3., 2., 11., 5.]).unwrap();
    let want = m.forward(Value::F(ids.clone())).unwrap().to_float();
    let bytes = quantized_bytes(&m, "dynamic").unwrap();
    for e in &engines {
        let (mut back, _) = quantized_from_bytes(&bytes, "t.st", Some(e.clone())).unwrap();
        assert_eq!(
            back.forward(Value::F(ids.clone())).unwrap().to_float(),
            want
        );
        let mut moved = m.clone();
        to_engine(&mut moved, e).unwrap();
        assert_eq!(
            moved.forward(Value::F(ids.clone())).unwrap().to_float(),
            want
        );
    }
    let bad = Tensor::new([1, 1], vec![20.0]).unwrap();
    let msg = m.forward(Value::F(bad)).unwrap_err().to_string();
    assert!(msg.starts_with("0: ") && msg.contains("id 20"), "{msg}");
}

#[test]
fn pytorch_state_dicts_with_int64_buffers_load() {
    use rquant_nn::BatchNorm2d;
    use safetensors::tensor::{Dtype, TensorView};
    // A conv + batch norm, as PyTorch saves it: the batch norm's
    // `num_batches_tracked` is an int64 scalar.
    let mut rng = Rng(12);
    let model = || -> Module {
        Sequential::new()
            .push(
                "conv",
                Conv2d::new(2, 3, [1, 1], Conv2dParams::default(), true, &mut Rng(1)).unwrap(),
            )
            .push("bn", BatchNorm2d::new(3))
            .into()
    };
    let mut src = model();
    let mut sd = src.state_dict();
    for (_, t) in &mut sd {
        for v in t.data_mut() {
            *v = rng.uniform() + 0.25;
        }
    }
    let file = |extra: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>| {
        let mut t: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = sd
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    Dtype::F32,
                    t.shape().to_vec(),
                    t.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        t.extend(
            extra
                .into_iter()
                .map(|(n, d, s, b)| (n.to_string(), d, s, b)),
        );
        let views: Vec<(String, TensorView)> = t
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, &None).unwrap()
    };
    let dir = std::env::temp_dir().join(format!("rquant-io-int64-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pt.safetensors");
    let p = path.to_str().unwrap();
    let nbt = 7i64.to_le_bytes().to_vec();
    std::fs::write(
        &path,
        file(vec![(
            "bn.num_batches_tracked",
            Dtype::I64,
            vec![],
            nbt.clone(),
        )]),
    )
    .unwrap();
    let mut m = model();
    load_float(&mut m, p).unwrap();
    assert_eq!(m.state_dict(), sd);
    // A num_batches_tracked that is not one count is an error naming it.
    std::fs::write(
        &path,
        file(vec![(
            "bn.num_batches_tracked",
            Dtype::I64,
            vec![2],
            [nbt.clone(), nbt].concat(),
        )]),
    )
    .unwrap();
    let msg = load_float(&mut model(), p).unwrap_err().to_string();
    assert!(
        msg.contains("bn.num_batches_tracked") && msg.contains("one count"),
        "{msg}"
    );
    // Half-precision weights are not silently widened: an error naming the tensor.
    std::fs::write(
        &path,
        file(vec![("extra.half", Dtype::F16, vec![1], vec![0, 0x3c])]),
    )
    .unwrap();
    let msg = load_float(&mut model(), p).unwrap_err().to_string();
    assert!(msg.contains("extra.half") && msg.contains("F16"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn converted_models_run_on_their_own_engine() {
    rquant_nn::engines::init();
    let engines = rquant_nn::engines::all_paths();
    let (a, b) = (&engines[0], engines.last().unwrap());
    // The process default is engine `b`; the model converted with `a` runs
    // every op (pooling, ReLU, quantize, dequantize included) on `a`.
    registry::set_engine(b.name()).unwrap();
    let q = converted(get_default_qconfig("x86").unwrap(), a);
    let held: Vec<(String, rquant_core::PathId)> = q
        .named_modules()
        .into_iter()
        .filter_map(|(p, m)| m.engine().map(|e| (p, e.path())))
        .collect();
    for p in ["0", "1", "3", "5", "6"] {
        assert!(
            held.iter().any(|(h, _)| h == p),
            "{p} holds no engine: {held:?}"
        );
    }
    assert!(held.iter().all(|(_, e)| *e == a.path()), "{held:?}");
    let mut moved = q.clone();
    rquant_nn::to_engine(&mut moved, b).unwrap();
    assert!(moved
        .named_modules()
        .iter()
        .filter_map(|(_, m)| m.engine())
        .all(|e| e.path() == b.path()));
}
