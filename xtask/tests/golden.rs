//! Every committed golden case (tests/golden) on every engine and ISA path,
//! plus the shared example cases when they are present.

use std::path::{Path, PathBuf};

fn run(dir: &Path) -> xtask::conformance::Report {
    let engines = xtask::conformance::select_engines(None).unwrap();
    let report = xtask::conformance::run_dir(dir, &engines).unwrap();
    let mut out = Vec::new();
    report.print(&mut out).unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out));
    report
}

/// ../shared beside the repository (CI lays it there); `RQUANT_SHARED`
/// overrides it (a git worktree has no such sibling).
fn shared_dir() -> PathBuf {
    std::env::var_os("RQUANT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

#[test]
fn committed_golden_cases_pass_on_every_engine() {
    // Which ops tests/golden must cover is checked in op_table.rs (against
    // the generator's op list).
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
}

#[test]
fn shared_examples_pass_when_present() {
    let dir = shared_dir().join("conformance-examples");
    if !dir.exists() {
        eprintln!("{} not present: skipped", dir.display());
        return;
    }
    let report = run(&dir);
    // Implemented ops pass on every engine; pending cases (op table) are
    // reported as such; unknown ops, unreadable files and stale pending
    // entries are failures.
    assert_eq!(report.failed, 0, "{:#?}", report.failures);
    assert!(report.passed > 0);
    let mut printed = Vec::new();
    report.print(&mut printed).unwrap();
    let printed = String::from_utf8(printed).unwrap();
    for p in &report.pending {
        let spec = xtask::conformance::ops::spec(&p.op).expect("pending op is in the table");
        assert!(spec.pending.is_some(), "{} pending without an entry", p.op);
        assert!(
            printed.contains(&format!("PENDING {} (issue {})", p.file, p.issue)),
            "pending case {} not printed",
            p.file
        );
    }
    assert!(printed.trim_end().ends_with(&format!(
        "{} passed, 0 failed, {} pending",
        report.passed,
        report.pending.len()
    )));
}

/// b broadcast to a's shape by hand (PyTorch's broadcasting of a U8 tensor).
fn broadcast_u8(b: &[u8], b_shape: &[usize], shape: &[usize]) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let pad = shape.len() - b_shape.len();
    (0..n)
        .map(|mut i| {
            let mut src = 0;
            let mut stride = 1;
            for d in (0..shape.len()).rev() {
                let coord = i % shape[d];
                i /= shape[d];
                if d >= pad {
                    let bd = b_shape[d - pad];
                    if bd != 1 {
                        src += coord * stride;
                    }
                    stride *= bd;
                }
            }
            b[src]
        })
        .collect()
}

/// The broadcast add/mul examples (b of another shape, PyTorch's
/// broadcasting) pass on every engine through the engines' own broadcasting,
/// and again with b expanded by hand: torch's result equals broadcasting b
/// first, so both routes must give its bits.
#[test]
fn broadcast_examples_pass_directly_and_with_b_expanded_by_hand() {
    use xtask::conformance::case::{Case, Data};
    let dir = shared_dir().join("conformance-examples");
    if !dir.exists() {
        eprintln!("{} not present: skipped", dir.display());
        return;
    }
    let engines = xtask::conformance::select_engines(None).unwrap();
    let mut checked = 0;
    for op in ["add", "add_relu", "mul", "mul_relu"] {
        let spec = xtask::conformance::ops::spec(op).unwrap();
        for f in xtask::conformance::case_files(&dir.join(op)).unwrap() {
            let mut case = Case::read(&f).unwrap();
            let a_shape = case.inputs["a"].shape.clone();
            if case.inputs["b"].shape == a_shape {
                continue;
            }
            assert!(spec.pending_for(&case).is_none(), "{}", f.display());
            for e in &engines {
                let got = xtask::conformance::ops::run(&case, e).unwrap();
                xtask::conformance::compare(&case, &got)
                    .unwrap_or_else(|m| panic!("{} [{}]: {m}", f.display(), e.name()));
            }
            let b = case.inputs.get_mut("b").unwrap();
            let Data::U8(v) = &b.data else {
                panic!("{}: b is not U8", f.display())
            };
            b.data = Data::U8(broadcast_u8(v, &b.shape, &a_shape));
            b.shape = a_shape;
            for e in &engines {
                let got = xtask::conformance::ops::run(&case, e).unwrap();
                xtask::conformance::compare(&case, &got)
                    .unwrap_or_else(|m| panic!("{} [{}] expanded: {m}", f.display(), e.name()));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 4, "expected one broadcast example per op");
}

#[test]
fn broadcast_helper_matches_numpy_rules() {
    // b [2,1] → [2,3]; b [3] → [2,3]; b [1] → [2,3].
    assert_eq!(broadcast_u8(&[1, 2], &[2, 1], &[2, 3]), [1, 1, 1, 2, 2, 2]);
    assert_eq!(broadcast_u8(&[1, 2, 3], &[3], &[2, 3]), [1, 2, 3, 1, 2, 3]);
    assert_eq!(broadcast_u8(&[7], &[1], &[2, 3]), [7; 6]);
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

/// A directory holding `files` (name, bytes), removed on drop.
struct TempCases(PathBuf);
impl TempCases {
    fn new(tag: &str, files: &[(&str, Vec<u8>)]) -> TempCases {
        let dir = std::env::temp_dir().join(format!("rquant-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (n, b) in files {
            std::fs::write(dir.join(n), b).unwrap();
        }
        TempCases(dir)
    }
}
impl Drop for TempCases {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn relu_case() -> Vec<u8> {
    use safetensors::Dtype;
    case_bytes(
        r#"{"op":"relu","attrs":{"scale":0.1,"zero_point":3}}"#,
        &[
            ("in.x", Dtype::U8, vec![2], vec![1, 9]),
            ("out.y", Dtype::U8, vec![2], vec![3, 9]),
        ],
    )
}

#[test]
fn pending_cases_are_reported_never_passed_and_stale_entries_fail() {
    use safetensors::Dtype;
    use xtask::conformance::ops::{self, OpSpec, Pending};
    let engines = xtask::conformance::select_engines(None).unwrap();
    // An op with no runner code yet (a table entry `OpSpec::pending`): pending.
    let future = case_bytes(
        r#"{"op":"future_op","attrs":{}}"#,
        &[("out.y", Dtype::U8, vec![1], vec![0])],
    );
    let t = TempCases::new("pending", &[("c.safetensors", future)]);
    let table = [OpSpec::pending("future_op", 14, "an op of a later release")];
    let r = xtask::conformance::run_dir_with(&t.0, &engines, &table).unwrap();
    assert_eq!((r.passed, r.failed, r.pending.len()), (0, 0, 1));
    assert_eq!(r.pending[0].op, "future_op");
    assert_eq!(r.pending[0].issue, 14);
    // The real table knows no such op: a failure, never a skip.
    let r = xtask::conformance::run_dir(&t.0, &engines).unwrap();
    assert_eq!((r.passed, r.failed, r.pending.len()), (0, 1, 0));

    // relu marked pending although its cases pass: a stale entry, a failure.
    let t = TempCases::new("stale", &[("r.safetensors", relu_case())]);
    let relu = ops::spec("relu").unwrap();
    let always = |_: &xtask::conformance::case::Case| true;
    let table = [OpSpec {
        pending: Some(Pending {
            issue: 99,
            what: "test entry",
            applies: always,
        }),
        ..*relu
    }];
    let r = xtask::conformance::run_dir_with(&t.0, &engines, &table).unwrap();
    assert_eq!((r.passed, r.failed, r.pending.len()), (0, 1, 0));
    assert!(r.failures[0].msg.contains("stale"), "{}", r.failures[0].msg);
    // The same entry with a case that fails on the engines stays pending.
    let wrong = case_bytes(
        r#"{"op":"relu","attrs":{"scale":0.1,"zero_point":3}}"#,
        &[
            ("in.x", Dtype::U8, vec![2], vec![1, 9]),
            ("out.y", Dtype::U8, vec![2], vec![4, 9]),
        ],
    );
    let t = TempCases::new("still-pending", &[("r.safetensors", wrong)]);
    let r = xtask::conformance::run_dir_with(&t.0, &engines, &table).unwrap();
    assert_eq!((r.passed, r.failed, r.pending.len()), (0, 0, 1));
    assert!(
        r.pending[0].msg.contains("out.y[0]"),
        "{}",
        r.pending[0].msg
    );

    // An op that is in the table neither as implemented nor as pending fails.
    let table = [OpSpec {
        run: None,
        pending: None,
        ..*relu
    }];
    let t = TempCases::new("no-code", &[("r.safetensors", relu_case())]);
    let r = xtask::conformance::run_dir_with(&t.0, &engines, &table).unwrap();
    assert_eq!((r.passed, r.failed, r.pending.len()), (0, 1, 0));
    // And the real table passes the same case on every engine.
    let r = xtask::conformance::run_dir(&t.0, &engines).unwrap();
    assert_eq!((r.passed, r.failed), (engines.len(), 0));
}

#[test]
fn f16_tensors_are_read_and_compared_bitwise() {
    use safetensors::Dtype;
    use xtask::conformance::case::{Case, Data};
    use xtask::conformance::compare;
    let h = |v: f32| half::f16::from_f32(v);
    let bytes = |v: &[half::f16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let vals = [h(0.5), h(-0.0), h(65504.0)];
    let b = case_bytes(
        r#"{"op":"embedding_bag_4bit","attrs":{}}"#,
        &[
            ("in.weight_scales", Dtype::F16, vec![3], bytes(&vals)),
            ("out.y", Dtype::F16, vec![3], bytes(&vals)),
        ],
    );
    let c = Case::parse("t", &b).unwrap();
    assert_eq!(c.in_f16("weight_scales").unwrap(), (vec![3], vals.to_vec()));
    assert!(c.in_f32("weight_scales").unwrap_err().msg.contains("F16"));
    let out = |v: Vec<half::f16>| {
        let mut m = xtask::conformance::ops::Outputs::new();
        m.insert(
            "y".into(),
            xtask::conformance::tensor(vec![3], Data::F16(v)),
        );
        m
    };
    compare(&c, &out(vals.to_vec())).unwrap();
    // -0.0 differs from +0.0, bit for bit.
    let err = compare(&c, &out(vec![h(0.5), h(0.0), h(65504.0)])).unwrap_err();
    assert!(err.contains("out.y[1]"), "{err}");
}
