//! `RQUANT_NUM_THREADS` / `registry::set_num_threads` bounds every thread
//! rquant starts: the demo's MNIST CNN trained for a few steps, run in fp32,
//! calibrated, converted (static and dynamic int8) and run, at N threads,
//! leaves at most N − 1 new threads in the process, all of them rquant's
//! pool workers. (Before the one pool, rayon's global pool and the x86
//! engine's own pool were both started here.)
//!
//! The thread count is process-wide: this file holds one test.

#![cfg(target_os = "linux")]

use std::collections::BTreeMap;

use rquant_core::qconfig::get_default_qconfig;
use rquant_core::{registry, threads};
use rquant_nn::mnist::{self, Dataset};
use rquant_nn::train::Adam;
use rquant_nn::{
    convert, fuse_modules, prepare, quantize_dynamic, DynamicDType, DynamicType, QConfigMap, Value,
};

/// The process's threads: id → name.
fn os_threads() -> BTreeMap<u64, String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| {
            let e = e.ok()?;
            let tid = e.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
            Some((tid, name.trim().to_string()))
        })
        .collect()
}

fn workload(ds: &Dataset) {
    let mut fp32 = mnist::pretrained(&mnist::committed_weights()).unwrap();
    // Float training (forward, backward of conv / pool / linear, Adam).
    let mut t = fp32.clone();
    t.train(true);
    let mut opt = Adam::new(1e-5);
    let n = ds.len();
    mnist::train_epoch(
        &mut t,
        ds,
        0..n,
        32,
        mnist::MEAN,
        mnist::STD,
        &mut opt,
        &mut |_| {},
    )
    .unwrap();
    // fp32 inference.
    fp32.train(false);
    let x = ds.batch(0, n, mnist::MEAN, mnist::STD);
    fp32.forward(Value::F(x.clone())).unwrap();
    // Static PTQ: calibration (float path + observers), convert, int8 inference.
    let mut q = fp32.clone();
    fuse_modules(&mut q, &mnist::FUSE_GROUPS).unwrap();
    prepare(
        &mut q,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    mnist::calibrate(&mut q, ds, 32, &mut |_| {}).unwrap();
    convert(&mut q).unwrap();
    q.forward(Value::F(x.clone())).unwrap();
    // Dynamic int8.
    let mut d = fp32.clone();
    quantize_dynamic(&mut d, &[DynamicType::Linear], DynamicDType::QInt8).unwrap();
    d.forward(Value::F(x)).unwrap();
}

#[test]
fn no_thread_beyond_the_bound() {
    rquant_nn::engines::init();
    let ds = Dataset::load(&mnist::committed_dir(), "train", Some(64)).unwrap();
    let before = os_threads();
    for n in [2, 3] {
        registry::set_num_threads(n);
        workload(&ds);
        let now = os_threads();
        let new: Vec<&String> = now
            .iter()
            .filter(|(tid, _)| !before.contains_key(tid))
            .map(|(_, name)| name)
            .collect();
        assert!(
            new.len() < n,
            "{} new threads at {n} threads: {new:?}",
            new.len()
        );
        assert!(
            new.iter().all(|name| name.starts_with("rquant-")),
            "threads other than rquant's pool: {new:?}"
        );
        assert!(threads::pool_threads() < n);
    }
    registry::set_num_threads(0);
}
