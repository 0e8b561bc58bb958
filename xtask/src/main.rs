//! `cargo xtask <command>`: conformance, bench, ci helpers.

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  cargo xtask conformance --cases DIR [--engine NAME]\n\
         runs every golden case under DIR on every engine (or the one named);\n\
         the last line is `N passed, M failed`; exits non-zero on any failure."
    );
    ExitCode::from(2)
}

fn conformance(args: &[String]) -> ExitCode {
    let mut cases: Option<PathBuf> = None;
    let mut engine: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--cases" => cases = it.next().map(PathBuf::from),
            "--engine" => engine = it.next().cloned(),
            _ => return usage(),
        }
    }
    let Some(dir) = cases else { return usage() };
    let engines = match xtask::conformance::select_engines(engine.as_deref()) {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::FAILURE;
        }
    };
    match xtask::conformance::run_dir(&dir, &engines) {
        Ok(report) => {
            let _ = report.print(&mut std::io::stdout().lock());
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("conformance") => conformance(&args[1..]),
        _ => usage(),
    }
}
