//! The runner's op table against itself, `cargo xtask conformance --list-ops`,
//! the golden generator's op list (tools/golden/common.py) and the committed
//! cases (tests/golden).

use std::collections::BTreeSet;
use std::path::Path;

use xtask::conformance::ops::{self, OPS};

/// Implemented in the runner, but tools/golden writes no case for them yet:
/// the shared examples would be their only cases. Must stay exact, so that a
/// generator change updates it (today every implemented op has generated cases).
const NOT_GENERATED: &[&str] = &[];

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The quoted names of `OPS = ( ... )` in tools/golden/common.py.
fn generator_ops() -> Vec<String> {
    let path = root().join("tools/golden/common.py");
    let src = std::fs::read_to_string(&path).unwrap();
    let start = src
        .find("\nOPS = (")
        .unwrap_or_else(|| panic!("{}: no `OPS = (` list", path.display()));
    let body = &src[start + "\nOPS = (".len()..];
    let body = &body[..body.find(')').expect("closing parenthesis of OPS")];
    let ops: Vec<String> = body
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(
        ops.iter().all(|o| o
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')),
        "{}: OPS holds something other than op names: {ops:?}",
        path.display()
    );
    ops
}

#[test]
fn the_table_is_consistent() {
    let mut names = BTreeSet::new();
    for s in OPS {
        assert!(names.insert(s.name), "op {} listed twice", s.name);
        // Every op is implemented or pending (with its issue); an op without
        // code is pending for every case.
        assert!(
            s.run.is_some() || s.pending.is_some(),
            "op {} has neither code nor a pending entry",
            s.name
        );
        if let Some(p) = &s.pending {
            assert!(
                (12..=14).contains(&p.issue),
                "{}: issue {}",
                s.name,
                p.issue
            );
        }
    }
    assert_eq!(ops::spec("linear").unwrap().name, "linear");
    assert!(ops::spec("frobnicate").is_none());
}

#[test]
fn list_ops_prints_the_table() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["conformance", "--list-ops"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<(&str, &str)> = text
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap(), w.next().unwrap())
        })
        .collect();
    let want: Vec<(&str, &str)> = OPS
        .iter()
        .map(|s| {
            let state = if s.is_implemented() {
                "implemented"
            } else {
                "pending"
            };
            (s.name, state)
        })
        .collect();
    assert_eq!(rows, want);
    // Pending ops name their issue.
    for l in text.lines().filter(|l| l.contains("pending")) {
        assert!(l.contains("issue 1"), "{l}");
    }
}

#[test]
fn generator_ops_match_the_op_table() {
    let gen = generator_ops();
    assert!(gen.len() >= 22, "{gen:?}");
    for op in &gen {
        assert!(
            ops::spec(op).is_some(),
            "tools/golden writes op {op:?}, which the runner's op table lacks"
        );
    }
    let implemented_not_generated: Vec<&str> = OPS
        .iter()
        .filter(|s| s.is_implemented() && !gen.iter().any(|g| g == s.name))
        .map(|s| s.name)
        .collect();
    assert_eq!(
        implemented_not_generated, NOT_GENERATED,
        "implemented ops without generated golden cases"
    );
}

#[test]
fn committed_golden_cases_cover_exactly_the_generator_ops() {
    let dir = root().join("tests/golden");
    let mut found = BTreeSet::new();
    for f in xtask::conformance::case_files(&dir).unwrap() {
        let c = xtask::conformance::case::Case::read(&f).unwrap();
        found.insert(c.op);
    }
    let gen: BTreeSet<String> = generator_ops().into_iter().collect();
    assert_eq!(
        found, gen,
        "ops in tests/golden vs tools/golden/common.py OPS"
    );
}
