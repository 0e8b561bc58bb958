#![allow(clippy::excessive_precision)]

use super::*;
use crate::dtype::QDType;

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::new(shape.to_vec(), v.to_vec()).unwrap()
}

fn cfg(f: impl FnOnce(&mut ObserverConfig)) -> ObserverConfig {
    let mut c = ObserverConfig::default();
    f(&mut c);
    c
}

#[test]
fn minmax_custom_range_matches_torch() {
    // torch: o = MinMaxObserver(quant_min=0, quant_max=127); o(tensor([-0.7,0.2,1.3]))
    // -> scale 0.015748031437397003, zp 44
    let mut o = build_observer(
        "MinMaxObserver",
        cfg(|c| {
            c.quant_min = Some(0);
            c.quant_max = Some(127);
        }),
    )
    .unwrap();
    o.observe(&t(&[3], &[-0.7, 0.2, 1.3])).unwrap();
    let q = o.calculate_qparams().unwrap();
    assert_eq!(q.per_tensor(), Some((0.015_748_031_437_397_003, 44)));
}

#[test]
fn minmax_symmetric_reduce_range_matches_torch() {
    // torch: MinMaxObserver(dtype=qint8, qscheme=per_tensor_symmetric, reduce_range=True)
    // on tensor([-0.7,0.2,1.3]) -> scale 0.020472440868616104 (1.3/63.5), zp 0
    let mut o = MinMaxObserver::new(cfg(|c| {
        c.dtype = QDType::QInt8;
        c.qscheme = QScheme::PerTensorSymmetric;
        c.reduce_range = true;
    }))
    .unwrap();
    o.observe(&t(&[3], &[-0.7, 0.2, 1.3])).unwrap();
    assert_eq!(
        o.calculate_qparams().unwrap().per_tensor(),
        Some((0.020_472_440_868_616_104, 0))
    );
}

#[test]
fn moving_average_matches_torch() {
    // torch: o = MovingAverageMinMaxObserver(averaging_constant=0.1);
    // o(tensor([-1.,2.])); o(tensor([-3.,1.]))
    // -> min -1.2000000476837158, max 1.899999976158142, scale 0.012156862765550613, zp 99
    let mut o = MovingAverageMinMaxObserver::new(cfg(|c| c.averaging_constant = 0.1)).unwrap();
    o.observe(&t(&[2], &[-1.0, 2.0])).unwrap();
    o.observe(&t(&[2], &[-3.0, 1.0])).unwrap();
    assert_eq!(o.min_val(), &[-1.200_000_047_683_715_8f32]);
    assert_eq!(o.max_val(), &[1.899_999_976_158_142f32]);
    assert_eq!(
        o.calculate_qparams().unwrap().per_tensor(),
        Some((0.012_156_862_765_550_613, 99))
    );
}

#[test]
fn per_channel_symmetric_matches_torch() {
    // torch: PerChannelMinMaxObserver(ch_axis=1, dtype=qint8, qscheme=per_channel_symmetric)
    // on tensor([[-1,0.5,2],[0.25,-4,1]])
    // -> scales [0.007843137718737125, 0.0313725508749485, 0.01568627543747425], zps [0,0,0]
    let mut o = build_observer_kind(
        ObserverKind::PerChannelMinMax,
        cfg(|c| {
            c.ch_axis = 1;
            c.dtype = QDType::QInt8;
            c.qscheme = QScheme::PerChannelSymmetric;
        }),
    )
    .unwrap();
    o.observe(&t(&[2, 3], &[-1.0, 0.5, 2.0, 0.25, -4.0, 1.0]))
        .unwrap();
    let q = o.calculate_qparams().unwrap();
    assert_eq!(
        q.scales,
        vec![
            0.007_843_137_718_737_125f32,
            0.031_372_550_874_948_5,
            0.015_686_275_437_474_25
        ]
    );
    assert_eq!(q.zero_points, vec![0, 0, 0]);
}

fn hist_inputs() -> (Vec<f32>, Vec<f32>) {
    let a: Vec<f32> = (0..40).map(|i| (i as f32 - 13.0) / 7.0).collect();
    let b: Vec<f32> = (0..30)
        .map(|i| {
            let v = i as f32 * 0.37 - 2.0;
            v * v / 5.0
        })
        .collect();
    (a, b)
}

#[test]
fn histogram_merging_matches_torch() {
    // torch: a = (arange(40.)-13)/7; b = (arange(30.)*0.37-2)**2/5
    // o = HistogramObserver(bins=64, reduce_range=True); o(a); o(b); o(a*3)
    // -> min -5.571428298950195, max 15.242581367492676,
    //    scale 0.16132907569408417, zp 35, histogram[:8] = [1,1,1,1,0,1,1,1]
    let (a, b) = hist_inputs();
    let mut o = HistogramObserver::new(cfg(|c| {
        c.bins = 64;
        c.reduce_range = true;
    }))
    .unwrap();
    o.observe(&t(&[40], &a)).unwrap();
    o.observe(&t(&[30], &b)).unwrap();
    let a3: Vec<f32> = a.iter().map(|v| v * 3.0).collect();
    o.observe(&t(&[40], &a3)).unwrap();
    assert_eq!(o.min_val(), &[-5.571_428_298_950_195f32]);
    assert_eq!(o.max_val(), &[15.242_581_367_492_676f32]);
    assert_eq!(
        &o.histogram()[..8],
        &[1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    );
    assert_eq!(
        o.calculate_qparams().unwrap().per_tensor(),
        Some((0.161_329_075_694_084_17, 35))
    );
}

#[test]
fn histogram_default_bins_symmetric_matches_torch() {
    // torch: o = HistogramObserver(dtype=qint8, qscheme=per_tensor_symmetric); o(a); o(b*2)
    // -> scale 0.2389754354953766, zp 0
    let (a, b) = hist_inputs();
    let mut o = HistogramObserver::new(cfg(|c| {
        c.dtype = QDType::QInt8;
        c.qscheme = QScheme::PerTensorSymmetric;
    }))
    .unwrap();
    o.observe(&t(&[40], &a)).unwrap();
    let b2: Vec<f32> = b.iter().map(|v| v * 2.0).collect();
    o.observe(&t(&[30], &b2)).unwrap();
    assert_eq!(
        o.calculate_qparams().unwrap().per_tensor(),
        Some((0.238_975_435_495_376_6, 0))
    );
}

#[test]
fn qmin_qmax_rules() {
    assert_eq!(
        calculate_qmin_qmax(0, 0, false, QDType::QUInt8, true).unwrap(),
        (0, 127)
    );
    assert_eq!(
        calculate_qmin_qmax(0, 0, false, QDType::QInt8, true).unwrap(),
        (-64, 63)
    );
    assert_eq!(
        calculate_qmin_qmax(0, 255, true, QDType::QUInt8, true).unwrap(),
        (0, 127)
    );
    assert_eq!(
        calculate_qmin_qmax(-127, 127, true, QDType::QInt8, true).unwrap(),
        (-64, 63)
    );
    assert!(calculate_qmin_qmax(-200, 127, true, QDType::QInt8, false).is_err());
    assert_eq!(
        calculate_qmin_qmax(0, 0, false, QDType::QInt32, false).unwrap(),
        (i32::MIN as i64, i32::MAX as i64)
    );
}

#[test]
fn uninitialised_and_constant_inputs() {
    let o = MinMaxObserver::new(ObserverConfig::default()).unwrap();
    assert_eq!(o.calculate_qparams().unwrap().per_tensor(), Some((1.0, 0)));
    let h = HistogramObserver::new(ObserverConfig::default()).unwrap();
    assert_eq!(h.calculate_qparams().unwrap().per_tensor(), Some((1.0, 0)));
    let p = PerChannelMinMaxObserver::new(ObserverKind::PerChannelMinMax.default_config()).unwrap();
    assert_eq!(p.calculate_qparams().unwrap().per_tensor(), Some((1.0, 0)));
    // min == max == 0 gives scale = eps, zp = qmin (the code, not the docstring)
    let mut o = MinMaxObserver::new(ObserverConfig::default()).unwrap();
    o.observe(&t(&[2], &[0.0, 0.0])).unwrap();
    assert_eq!(
        o.calculate_qparams().unwrap().per_tensor(),
        Some((f32::EPSILON, 0))
    );
}

#[test]
fn empty_ignored_nan_rejected() {
    let mut o = MinMaxObserver::new(ObserverConfig::default()).unwrap();
    o.observe(&t(&[0], &[])).unwrap();
    assert_eq!(o.min_val(), &[f32::INFINITY]);
    let err = o.observe(&t(&[2], &[1.0, f32::NAN])).unwrap_err();
    assert!(matches!(err, QuantError::NaN { index: 1, .. }));
    assert_eq!(o.min_val(), &[f32::INFINITY]);
}

#[test]
fn bad_configs_are_errors() {
    // per_tensor_symmetric + reduce_range + quint8 is forbidden
    assert!(MinMaxObserver::new(cfg(|c| {
        c.qscheme = QScheme::PerTensorSymmetric;
        c.reduce_range = true;
    }))
    .is_err());
    // per-channel scheme for a per-tensor observer and vice versa
    assert!(build_observer(
        "MinMaxObserver",
        cfg(|c| c.qscheme = QScheme::PerChannelAffine)
    )
    .is_err());
    assert!(build_observer(
        "HistogramObserver",
        cfg(|c| c.qscheme = QScheme::PerChannelAffine)
    )
    .is_err());
    assert!(build_observer("PerChannelMinMaxObserver", ObserverConfig::default()).is_err());
    // bad ranges
    assert!(build_observer(
        "MinMaxObserver",
        cfg(|c| {
            c.quant_min = Some(1);
            c.quant_max = Some(255);
        })
    )
    .is_err());
    assert!(build_observer(
        "MinMaxObserver",
        cfg(|c| {
            c.quant_min = Some(0);
            c.quant_max = Some(0);
        })
    )
    .is_err());
    // dynamic moving average needs c == 1
    assert!(build_observer("MovingAverageMinMaxObserver", cfg(|c| c.is_dynamic = true)).is_err());
    assert!(build_observer(
        "MovingAverageMinMaxObserver",
        cfg(|c| {
            c.is_dynamic = true;
            c.averaging_constant = 1.0;
        })
    )
    .is_ok());
    assert!(build_observer("NoSuchObserver", ObserverConfig::default()).is_err());
}

#[test]
fn bad_ch_axis_and_channel_change() {
    let mut o = build_observer_kind(
        ObserverKind::PerChannelMinMax,
        ObserverKind::PerChannelMinMax.default_config(),
    )
    .unwrap();
    let mut bad = o.clone();
    let mut c = ObserverKind::PerChannelMinMax.default_config();
    c.ch_axis = 2;
    let mut o2 = build_observer_kind(ObserverKind::PerChannelMinMax, c).unwrap();
    assert!(matches!(
        o2.observe(&t(&[2, 2], &[1.0, 2.0, 3.0, 4.0])),
        Err(QuantError::AxisOutOfRange { .. })
    ));
    assert!(bad.observe(&t(&[3], &[1.0, 2.0, 3.0])).is_err());
    o.observe(&t(&[2, 2], &[1.0, 2.0, 3.0, 4.0])).unwrap();
    assert!(o.observe(&t(&[3, 1], &[1.0, 2.0, 3.0])).is_err());
}

#[test]
fn observers_are_send_sync_clone() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Box<dyn Observer>>();
    let mut o = build_observer("HistogramObserver", ObserverConfig::default()).unwrap();
    o.observe(&t(&[3], &[1.0, 2.0, 3.0])).unwrap();
    let c = o.clone();
    assert_eq!(c.min_val(), o.min_val());
    o.reset();
    assert_eq!(o.min_val(), &[f32::INFINITY]);
    assert_eq!(c.min_val(), &[1.0]);
}

#[test]
fn placeholder_smoke() {
    let mut p = PlaceholderObserver::new(ObserverDType::Float16, None, None, true);
    p.observe(&Tensor::new([1], vec![1.0]).unwrap()).unwrap();
    assert!(p.calculate_qparams().is_err());
}

/// Bulk comparison against a case file produced by torch (see the docs of
/// this test). Run with `RQUANT_OBS_CASES=/path cargo test -- --ignored`.
#[test]
#[ignore]
fn bulk_cases_from_torch() {
    let Ok(path) = std::env::var("RQUANT_OBS_CASES") else {
        return;
    };
    let text = std::fs::read_to_string(path).unwrap();
    let nums = |s: &str| -> Vec<f32> {
        if s.is_empty() {
            vec![]
        } else {
            s.split(',')
                .map(|v| v.parse::<f64>().unwrap() as f32)
                .collect()
        }
    };
    let mut failures = 0;
    for (ln, line) in text.lines().enumerate() {
        let mut kv: Vec<(&str, &str)> = Vec::new();
        for p in line.split(';') {
            let (k, v) = p.split_once('=').unwrap();
            kv.push((k, v));
        }
        let get = |k: &str| kv.iter().find(|(a, _)| *a == k).map(|x| x.1).unwrap();
        let opt_i = |k: &str| {
            let v = get(k);
            (!v.is_empty()).then(|| v.parse::<i64>().unwrap())
        };
        let kind = ObserverKind::from_name(get("obs")).unwrap();
        let mut cfg = kind.default_config();
        cfg.dtype = QDType::from_name(get("dtype")).unwrap();
        cfg.qscheme = QScheme::from_name(get("qscheme")).unwrap();
        cfg.reduce_range = get("rr") == "1";
        cfg.quant_min = opt_i("qmin");
        cfg.quant_max = opt_i("qmax");
        if !get("eps").is_empty() {
            cfg.eps = get("eps").parse::<f64>().unwrap() as f32;
        }
        if !get("ac").is_empty() {
            cfg.averaging_constant = get("ac").parse().unwrap();
        }
        if let Some(a) = opt_i("axis") {
            cfg.ch_axis = a;
        }
        if let Some(b) = opt_i("bins") {
            cfg.bins = b as usize;
        }
        let shape: Vec<usize> = get("shape")
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        let mut o = build_observer_kind(kind, cfg).unwrap();
        for (k, v) in &kv {
            if *k == "x" {
                o.observe(&Tensor::new(shape.clone(), nums(v)).unwrap())
                    .unwrap();
            }
        }
        let q = o.calculate_qparams().unwrap();
        let (emin, emax) = (nums(get("min")), nums(get("max")));
        let (es, ez) = (nums(get("scale")), nums(get("zp")));
        let gz: Vec<f32> = match &q.float_zero_points {
            Some(f) => f.clone(),
            None => q.zero_points.iter().map(|&z| z as f32).collect(),
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        if bits(o.min_val()) != bits(&emin)
            || bits(o.max_val()) != bits(&emax)
            || bits(&q.scales) != bits(&es)
            || gz != ez
        {
            failures += 1;
            eprintln!(
                "case {ln} {} mismatch:\n min {:?} vs {:?}\n max {:?} vs {:?}\n scale {:?} vs {:?}\n zp {:?} vs {:?}",
                get("obs"),
                o.min_val(),
                emin,
                o.max_val(),
                emax,
                q.scales,
                es,
                gz,
                ez
            );
        }
    }
    assert_eq!(failures, 0);
}
