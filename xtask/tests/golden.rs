//! Every committed golden case (tests/golden) on every engine and ISA path,
//! plus the shared example cases when they are present.

use std::path::Path;

fn run(dir: &Path) -> xtask::conformance::Report {
    let engines = xtask::conformance::select_engines(None).unwrap();
    let report = xtask::conformance::run_dir(dir, &engines).unwrap();
    let mut out = Vec::new();
    report.print(&mut out).unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out));
    report
}

#[test]
fn committed_golden_cases_pass_on_every_engine() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden");
    let report = run(&dir);
    assert_eq!(
        report.failed,
        0,
        "golden cases failed: {:#?}",
        &report.failures[..report.failures.len().min(10)]
    );
    assert!(
        report.passed >= 300,
        "only {} golden cases ran",
        report.passed
    );
    // Every op of CONFORMANCE.md is covered.
    for op in xtask::conformance::ops::ALL_OPS {
        assert!(
            report.table.keys().any(|(o, _)| o == op),
            "no golden case for op {op}"
        );
    }
}

#[test]
fn shared_examples_pass_when_present() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance-examples");
    if !dir.exists() {
        eprintln!("{} not present: skipped", dir.display());
        return;
    }
    let report = run(&dir);
    assert_eq!(report.failed, 0, "{:#?}", report.failures);
}

#[test]
fn a_wrong_expected_value_fails() {
    // The runner must be able to fail: corrupt one expected byte of a case.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden");
    let files = xtask::conformance::case_files(&dir).unwrap();
    let f = files
        .iter()
        .find(|p| p.to_string_lossy().contains("/relu/"))
        .expect("a relu case");
    let mut case = xtask::conformance::case::Case::read(f).unwrap();
    let y = case.outputs.get_mut("y").unwrap();
    if let xtask::conformance::case::Data::U8(v) = &mut y.data {
        v[0] = v[0].wrapping_add(1);
    }
    let e = rquant_nn::engines::available().pop().unwrap();
    let got = xtask::conformance::ops::run(&case, &e).unwrap();
    assert!(xtask::conformance::compare(&case, &got).is_err());
}

#[test]
fn corrupt_files_are_errors() {
    use xtask::conformance::case::Case;
    assert!(Case::parse("empty", b"").is_err());
    assert!(Case::parse("short", &[8, 0, 0, 0, 0, 0, 0, 0, b'{']).is_err());
    let huge = u64::MAX.to_le_bytes();
    assert!(Case::parse("huge header", &huge).is_err());
    let hdr = br#"{"__metadata__":{"case":"not json"}}"#;
    let mut b = (hdr.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(hdr);
    assert!(Case::parse("bad case", &b).is_err());
}

/// A case file built in memory.
fn case_bytes(meta: &str, tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    use safetensors::tensor::TensorView;
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let mut md = std::collections::HashMap::new();
    md.insert("case".to_string(), meta.to_string());
    safetensors::serialize(views, &Some(md)).unwrap()
}

#[test]
fn dtype_mismatch_unknown_op_and_unknown_attr_are_errors() {
    use safetensors::Dtype;
    use xtask::conformance::{case::Case, compare, ops};
    let e = rquant_nn::engines::available().pop().unwrap();
    let relu = r#"{"op":"relu","attrs":{"scale":0.1,"zero_point":3}}"#;
    // x given as I8 where the op needs quint8 (U8).
    let b = case_bytes(
        relu,
        &[
            ("in.x", Dtype::I8, vec![2], vec![1, 2]),
            ("out.y", Dtype::U8, vec![2], vec![3, 3]),
        ],
    );
    let c = Case::parse("t", &b).unwrap();
    let err = ops::run(&c, &e).unwrap_err();
    assert!(err.msg.contains("dtype"), "{}", err.msg);
    // The right dtype passes, so the check above can fail.
    let b = case_bytes(
        relu,
        &[
            ("in.x", Dtype::U8, vec![2], vec![1, 9]),
            ("out.y", Dtype::U8, vec![2], vec![3, 9]),
        ],
    );
    let c = Case::parse("t", &b).unwrap();
    compare(&c, &ops::run(&c, &e).unwrap()).unwrap();
    // Expected output of the wrong dtype.
    let b = case_bytes(
        relu,
        &[
            ("in.x", Dtype::U8, vec![2], vec![1, 9]),
            ("out.y", Dtype::I8, vec![2], vec![3, 9]),
        ],
    );
    let c = Case::parse("t", &b).unwrap();
    assert!(compare(&c, &ops::run(&c, &e).unwrap()).is_err());
    // Unknown op: reported by the runner, never skipped.
    let dir = std::env::temp_dir().join(format!("rquant-unknown-op-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let b = case_bytes(
        r#"{"op":"frobnicate","attrs":{}}"#,
        &[("out.y", Dtype::U8, vec![1], vec![0])],
    );
    std::fs::write(dir.join("x.safetensors"), b).unwrap();
    std::fs::write(dir.join("broken.safetensors"), b"not a case").unwrap();
    let engines = xtask::conformance::select_engines(None).unwrap();
    let r = xtask::conformance::run_dir(&dir, &engines).unwrap();
    assert_eq!((r.passed, r.failed), (0, 2));
    std::fs::remove_dir_all(&dir).ok();
    // Unknown attribute on a known op.
    let b = case_bytes(
        r#"{"op":"relu","attrs":{"scale":0.1,"zero_point":3,"inplace":true}}"#,
        &[
            ("in.x", Dtype::U8, vec![2], vec![1, 9]),
            ("out.y", Dtype::U8, vec![2], vec![3, 9]),
        ],
    );
    let c = Case::parse("t", &b).unwrap();
    let engines = vec![e];
    let dir = std::env::temp_dir().join(format!("rquant-unknown-attr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.safetensors"), &b).unwrap();
    let r = xtask::conformance::run_dir(&dir, &engines).unwrap();
    assert_eq!(r.failed, 1, "{:?}", r.failures);
    assert!(r.failures[0].msg.contains("inplace"));
    std::fs::remove_dir_all(&dir).ok();
    drop(c);
}
