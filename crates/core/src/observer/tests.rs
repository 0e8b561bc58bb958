use super::*;
use crate::dtype::QDType;

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
            s.split(',').map(|v| v.parse::<f64>().unwrap() as f32).collect()
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
        let shape: Vec<usize> = get("shape").split(',').map(|v| v.parse().unwrap()).collect();
        let mut o = build_observer_kind(kind, cfg).unwrap();
        for (k, v) in &kv {
            if *k == "x" {
                o.observe(&Tensor::new(shape.clone(), nums(v)).unwrap()).unwrap();
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
