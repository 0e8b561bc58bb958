//! `cargo xtask bench --models` pieces on the demo's MNIST CNN: the records'
//! fields, the timing hook (outputs unchanged, every leaf timed), the
//! per-conv-layer records.

use std::time::Duration;

use rquant_nn::Value;
use xtask::bench_models as bm;

#[test]
fn model_records_hooks_and_conv_layers() {
    rquant_nn::engines::init();
    let e = rquant_core::registry::engine().unwrap();
    let mut case = bm::mnist_case(&e).unwrap();
    let recs = bm::time_case(&mut case, &e, 1, Duration::from_millis(5), 1);
    assert_eq!(recs.len(), 4); // batch 1 and 100, fp32 and int8
    for r in &recs {
        assert_eq!(r["op"], "model");
        assert_eq!(r["shape"]["model"], "mnist_cnn");
        assert!(r["median_s"].as_f64().unwrap() > 0.0);
        let v = r["variant"].as_str().unwrap();
        assert!(
            v == "fp32" || (v == "int8" && r["engine"] == e.name()),
            "{r}"
        );
    }

    // The hook changes no bit and times every leaf.
    let x = (case.input)(3);
    let want = case.int8.clone().forward(Value::F(x.clone())).unwrap();
    let mut hooked = case.int8.clone();
    let (times, captured) = bm::hook_leaves(&mut hooked, true, |_, _| true);
    assert_eq!(hooked.forward(Value::F(x)).unwrap(), want);
    let times = times.lock().unwrap();
    assert!(
        times.contains_key("conv_layers.0") && times.contains_key("quant"),
        "{times:?}"
    );
    assert!(times.values().all(|&(s, n)| s >= 0.0 && n == 1));
    assert_eq!(captured.lock().unwrap().len(), times.len());

    let layers = bm::conv_layers(&case, 2, &e, 1, Duration::from_millis(2));
    let names: Vec<&str> = layers
        .iter()
        .map(|r| r["shape"]["layer"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["conv_layers.0", "conv_layers.3", "conv_layers.6"]);
    assert_eq!(layers[0]["shape"]["C_in"], 1);
    assert_eq!(layers[0]["shape"]["H"], 28);
    assert!(layers.iter().all(|r| r["gops"].as_f64().unwrap() > 0.0));

    let (rows, total) = bm::profile(&case, 1, 2);
    assert!(total > 0.0);
    assert!(
        rows.iter()
            .any(|(k, _, n)| k.starts_with("conv 3x3 dense") && *n == 3),
        "{rows:?}"
    );
}
