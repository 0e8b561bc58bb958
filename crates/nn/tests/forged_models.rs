//! Quantized model files with forged metadata: sizes the JSON declares are
//! checked against the tensors the file really holds before anything is
//! allocated, and every error names the file and the field.

use rquant_nn::io::{quantized_bytes, quantized_from_bytes, state_dict_from_bytes, FORMAT};
use rquant_nn::rnn::{Embedding, Rnn, RnnKind};
use rquant_nn::{
    quantize_dynamic_with, DynamicDType, DynamicType, Linear, Module, Rng, Sequential,
};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde_json::{json, Value as J};

fn engine() -> rquant_core::Engine {
    rquant_nn::engines::available().pop().unwrap()
}

/// A quantized model file with the given module tree and f32 tensors.
fn file(tree: J, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n.to_string(), Dtype::F32, s.clone(), b)
        })
        .collect();
    rewrite(&bytes, tree)
}

/// A quantized model file with the given module tree and raw tensors.
fn rewrite(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)], tree: J) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta = [
        ("format".to_string(), FORMAT.to_string()),
        ("modules".to_string(), tree.to_string()),
    ]
    .into_iter()
    .collect();
    safetensors::serialize(views, &Some(meta)).unwrap()
}

/// The same file with its module tree edited by `f`.
fn edit(good: &[u8], f: impl FnOnce(&mut J)) -> Vec<u8> {
    let (_, meta) = SafeTensors::read_metadata(good).unwrap();
    let md = meta.metadata().clone().unwrap();
    let mut tree: J = serde_json::from_str(&md["modules"]).unwrap();
    f(&mut tree);
    let st = SafeTensors::deserialize(good).unwrap();
    let views: Vec<(String, TensorView)> = st.tensors();
    let mut md = md.clone();
    md.insert("modules".into(), tree.to_string());
    safetensors::serialize(views, &Some(md)).unwrap()
}

fn err(b: &[u8]) -> String {
    match quantized_from_bytes(b, "forged.st", Some(engine())) {
        Ok(_) => panic!("a forged file loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn float_rnn_sizes_are_checked_before_allocating() {
    // hidden_size × input_size would be 2^42 floats (16 TiB): the loader
    // must compare with the tensors in the file before building the LSTM.
    let lstm = |input: u64, hidden: u64, layers: u64| {
        json!({"type": "LSTM", "input_size": input, "hidden_size": hidden,
               "num_layers": layers, "batch_first": true, "bias": false})
    };
    let w = |n: &str, s: Vec<usize>| {
        let len = s.iter().product();
        (n.to_string(), s, vec![0.5f32; len])
    };
    let t = [w("weight_ih_l0", vec![8, 3]), w("weight_hh_l0", vec![8, 2])];
    let refs: Vec<(&str, Vec<usize>, Vec<f32>)> = t
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.clone(), v.clone()))
        .collect();
    // The honest file loads.
    quantized_from_bytes(&file(lstm(3, 2, 1), &refs), "ok.st", Some(engine())).unwrap();
    let msg = err(&file(lstm(1 << 20, 1 << 20, 1), &refs));
    assert!(
        msg.starts_with("forged.st: weight_ih_l0") && msg.contains("shape"),
        "{msg}"
    );
    // A layer count far beyond the tensors present.
    let msg = err(&file(lstm(3, 2, 1 << 40), &refs));
    assert!(msg.starts_with("forged.st: weight_ih_l1"), "{msg}");
    // gates × hidden_size overflows.
    let msg = err(&file(lstm(3, u64::MAX / 2, 1), &refs));
    assert!(msg.starts_with("forged.st: "), "{msg}");
}

fn dynamic_lstm_file() -> Vec<u8> {
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
        &engine(),
    )
    .unwrap();
    quantized_bytes(&m, "dynamic").unwrap()
}

#[test]
fn dynamic_rnn_sizes_must_match_its_weights() {
    let good = dynamic_lstm_file();
    quantized_from_bytes(&good, "ok.st", Some(engine())).unwrap();
    for (k, v) in [("hidden_size", 4), ("hidden_size", 16), ("input_size", 5)] {
        let bad = edit(&good, |t| t["children"][1][1][k] = json!(v));
        let msg = err(&bad);
        assert!(
            msg.starts_with("forged.st: 1.") && msg.contains("shape"),
            "{k}={v}: {msg}"
        );
    }
}

#[test]
fn negative_or_ill_typed_integers_are_errors() {
    let good = dynamic_lstm_file();
    let bad = edit(&good, |t| t["children"][1][1]["hidden_size"] = json!(-8));
    let msg = err(&bad);
    assert!(
        msg.contains("modules/1.hidden_size") && msg.contains("non-negative"),
        "{msg}"
    );
    let flat = |start: J| {
        file(
            json!({"type": "Sequential", "children": [["f", {"type": "Flatten", "start_dim": start}]]}),
            &[],
        )
    };
    quantized_from_bytes(&flat(json!(1)), "ok.st", Some(engine())).unwrap();
    let msg = err(&flat(json!(-1)));
    assert!(msg.contains("modules/f.start_dim"), "{msg}");
    let pool = |d: J| {
        file(
            json!({"type": "AvgPool2d", "kernel": [2, 2], "stride": [2, 2], "padding": [0, 0],
                   "ceil_mode": false, "count_include_pad": true, "divisor_override": d}),
            &[],
        )
    };
    quantized_from_bytes(&pool(J::Null), "ok.st", Some(engine())).unwrap();
    quantized_from_bytes(&pool(json!(3)), "ok.st", Some(engine())).unwrap();
    for d in [json!(0), json!(-3), json!("3")] {
        let msg = err(&pool(d.clone()));
        assert!(msg.contains("modules/.divisor_override"), "{d}: {msg}");
    }
}

#[test]
fn empty_weights_with_huge_dims_are_errors_not_allocations() {
    // [2^40, 0] holds no bytes, so safetensors accepts it; packing must not
    // allocate per output channel.
    let lin = json!({"type": "QuantizedLinear", "relu": false, "qscheme": "per_tensor_affine", "bias": false});
    let t = |n: &str, d, s: Vec<usize>, b: Vec<u8>| (n.to_string(), d, s, b);
    let tensors = vec![
        t("weight", Dtype::I8, vec![1 << 40, 0], vec![]),
        t(
            "weight_scale",
            Dtype::F64,
            vec![1],
            0.1f64.to_le_bytes().to_vec(),
        ),
        t(
            "weight_zero_point",
            Dtype::I64,
            vec![1],
            0i64.to_le_bytes().to_vec(),
        ),
        t("scale", Dtype::F64, vec![1], 0.1f64.to_le_bytes().to_vec()),
        t(
            "zero_point",
            Dtype::I64,
            vec![1],
            0i64.to_le_bytes().to_vec(),
        ),
    ];
    let msg = err(&rewrite(&tensors, lin));
    assert!(msg.starts_with("forged.st: "), "{msg}");
}

#[test]
fn forged_safetensors_headers_are_errors() {
    // Declared header lengths beyond the file or absurdly large, and a
    // tensor whose shape product overflows.
    for n in [u64::MAX, 1 << 40, 1_000] {
        let mut b = n.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        assert!(state_dict_from_bytes(&b, "h.st")
            .unwrap_err()
            .to_string()
            .starts_with("h.st: header"));
        assert!(err(&b).starts_with("forged.st: header"));
    }
    let h = br#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#;
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(h);
    assert!(state_dict_from_bytes(&b, "h.st")
        .unwrap_err()
        .to_string()
        .starts_with("h.st: header"));
    // A zero-sized tensor with a huge dimension is legal and allocates nothing.
    let h = br#"{"w":{"dtype":"F32","shape":[1099511627776,0],"data_offsets":[0,0]}}"#;
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(h);
    let sd = state_dict_from_bytes(&b, "h.st").unwrap();
    assert_eq!(sd[0].1.shape(), &[1 << 40, 0]);
}

#[test]
fn pool_and_conv_pairs_are_bounded_and_whole() {
    let pool = |kernel: J, dilation: J| {
        file(
            json!({"type": "MaxPool2d", "kernel": kernel, "stride": [1, 1], "padding": [0, 0],
                   "dilation": dilation, "ceil_mode": false}),
            &[],
        )
    };
    let x = rquant_core::Tensor::zeros([1, 1, 4, 4]);
    // Sizes past i32 overflowed the output-size arithmetic at forward time
    // (a panic in debug builds): rejected when loading.
    let big = json!([1u64 << 40, 1u64 << 40]);
    let b = pool(big.clone(), big);
    match quantized_from_bytes(&b, "forged.st", Some(engine())) {
        Ok((mut m, _)) => {
            let r = m.forward(rquant_nn::Value::F(x.clone()));
            panic!(
                "loaded; forward gave {:?}",
                r.map(|_| ()).map_err(|e| e.to_string())
            );
        }
        Err(e) => assert!(e.to_string().contains("modules/.kernel"), "{e}"),
    }
    // The largest accepted values load, and running them is an error.
    let max = json!([i32::MAX, i32::MAX]);
    let (mut m, _) =
        quantized_from_bytes(&pool(max.clone(), max), "ok.st", Some(engine())).unwrap();
    assert!(m.forward(rquant_nn::Value::F(x)).is_err());
    // A pair with a bad entry is an error, not the pair of the others.
    let msg = err(&pool(json!([2, -1, 2]), json!([1, 1])));
    assert!(msg.contains("modules/.kernel"), "{msg}");
    let msg = err(&pool(json!([2, "2"]), json!([1, 1])));
    assert!(msg.contains("modules/.kernel"), "{msg}");
}
