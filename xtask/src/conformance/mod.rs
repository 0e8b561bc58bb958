//! The conformance runner: every golden case under a directory, on every
//! engine this machine supports (../shared/CONFORMANCE.md).

pub mod case;
mod extra;
pub mod next;
mod observer;
pub mod ops;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rquant_core::Engine;

use case::{Case, Data, Tensor};

/// One failure: file, engine, and what differed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub file: String,
    pub engine: String,
    pub msg: String,
}

/// A case the runner does not hold to PyTorch's output yet (its op, or this
/// kind of case, is pending on an issue).
#[derive(Debug, Clone)]
pub struct PendingCase {
    pub file: String,
    pub op: String,
    pub issue: u32,
    /// What is missing, and how the attempt failed when the runner has code
    /// for the op.
    pub msg: String,
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// Engine × case checks that passed / failed.
    pub passed: usize,
    pub failed: usize,
    pub failures: Vec<Failure>,
    /// Cases (not checks) pending on an issue: neither passed nor failed.
    pub pending: Vec<PendingCase>,
    /// (op, engine) → (passed, failed)
    pub table: BTreeMap<(String, String), (usize, usize)>,
}

impl Report {
    fn record(&mut self, op: &str, engine: &str, result: Result<(), String>, file: &str) {
        let cell = self
            .table
            .entry((op.to_string(), engine.to_string()))
            .or_default();
        match result {
            Ok(()) => {
                self.passed += 1;
                cell.0 += 1;
            }
            Err(msg) => {
                self.failed += 1;
                cell.1 += 1;
                self.failures.push(Failure {
                    file: file.to_string(),
                    engine: engine.to_string(),
                    msg,
                });
            }
        }
    }

    /// Failing cases, pending cases, the per-op table (passes per engine and
    /// pending cases) and the closing `N passed, M failed, P pending` line.
    pub fn print(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        for f in &self.failures {
            writeln!(out, "FAIL {} [{}]: {}", f.file, f.engine, f.msg)?;
        }
        for p in &self.pending {
            writeln!(out, "PENDING {} (issue {}): {}", p.file, p.issue, p.msg)?;
        }
        let mut pending_per_op: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &self.pending {
            *pending_per_op.entry(&p.op).or_default() += 1;
        }
        let engines: Vec<String> = {
            let mut v: Vec<String> = self.table.keys().map(|(_, e)| e.clone()).collect();
            v.sort();
            v.dedup();
            v
        };
        let ops: Vec<String> = {
            let mut v: Vec<String> = self.table.keys().map(|(o, _)| o.clone()).collect();
            v.extend(pending_per_op.keys().map(|o| o.to_string()));
            v.sort();
            v.dedup();
            v
        };
        write!(out, "\n{:<28}", "op")?;
        for e in &engines {
            write!(out, " {:>22}", e)?;
        }
        writeln!(out, " {:>8}", "pending")?;
        for op in &ops {
            write!(out, "{op:<28}")?;
            for e in &engines {
                match self.table.get(&(op.clone(), e.clone())) {
                    Some((p, f)) => write!(out, " {:>22}", format!("{p}/{}", p + f))?,
                    None => write!(out, " {:>22}", "-")?,
                }
            }
            match pending_per_op.get(op.as_str()) {
                Some(n) => writeln!(out, " {n:>8}")?,
                None => writeln!(out, " {:>8}", "-")?,
            }
        }
        writeln!(
            out,
            "\n{} passed, {} failed, {} pending",
            self.passed,
            self.failed,
            self.pending.len()
        )
    }
}

/// Every `.safetensors` file under `dir`, sorted.
pub fn case_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "safetensors") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Engines to test: every one this machine supports, or the one named.
pub fn select_engines(name: Option<&str>) -> Result<Vec<Engine>, String> {
    let all = rquant_nn::engines::all_paths();
    match name {
        None => Ok(all),
        Some(n) => {
            let v: Vec<_> = all
                .into_iter()
                .filter(|e| e.name() == n || e.aliases().contains(&n))
                .collect();
            if v.is_empty() {
                Err(format!(
                    "engine {n:?} is not available here (available: {})",
                    rquant_nn::engines::available()
                        .iter()
                        .map(|e| e.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            } else {
                Ok(v)
            }
        }
    }
}

fn label(e: &Engine) -> String {
    format!("{}/{}", e.name(), e.isa())
}

/// Compare produced outputs with a case's expected ones.
pub fn compare(case: &Case, got: &ops::Outputs) -> Result<(), String> {
    for (name, exp) in &case.outputs {
        let g = got
            .get(name)
            .ok_or_else(|| format!("op produced no output {name:?}"))?;
        if g.shape != exp.shape {
            return Err(format!(
                "out.{name}: shape {:?}, expected {:?}",
                g.shape, exp.shape
            ));
        }
        compare_data(name, &exp.data, &g.data, case.atol, case.rtol)?;
    }
    Ok(())
}

fn first_diff<T: PartialEq + std::fmt::Debug>(name: &str, e: &[T], g: &[T]) -> Result<(), String> {
    match e.iter().zip(g).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => {
            let n = e.iter().zip(g).filter(|(a, b)| a != b).count();
            Err(format!(
                "out.{name}[{i}]: expected {:?}, got {:?} ({n} of {} differ)",
                e[i],
                g[i],
                e.len()
            ))
        }
    }
}

fn compare_floats<T: Copy + Into<f64> + std::fmt::Debug>(
    name: &str,
    e: &[T],
    g: &[T],
    tol: Option<(f64, f64)>,
    bits: impl Fn(T) -> u64,
) -> Result<(), String> {
    let mut bad = None;
    let mut count = 0;
    for (i, (&a, &b)) in e.iter().zip(g).enumerate() {
        let (af, bf): (f64, f64) = (a.into(), b.into());
        let ok = if af.is_nan() || bf.is_nan() {
            af.is_nan() && bf.is_nan()
        } else if let Some((atol, rtol)) = tol {
            (af - bf).abs() <= atol + rtol * af.abs()
        } else {
            bits(a) == bits(b)
        };
        if !ok {
            count += 1;
            bad.get_or_insert(i);
        }
    }
    match bad {
        None => Ok(()),
        Some(i) => Err(format!(
            "out.{name}[{i}]: expected {:?}, got {:?} ({count} of {} differ{})",
            e[i],
            g[i],
            e.len(),
            if tol.is_some() {
                ", beyond tolerance"
            } else {
                ", bitwise"
            }
        )),
    }
}

fn compare_data(
    name: &str,
    e: &Data,
    g: &Data,
    atol: Option<f64>,
    rtol: Option<f64>,
) -> Result<(), String> {
    let tol = if atol.is_some() || rtol.is_some() {
        Some((atol.unwrap_or(0.0), rtol.unwrap_or(0.0)))
    } else {
        None
    };
    match (e, g) {
        (Data::U8(a), Data::U8(b)) => first_diff(name, a, b),
        (Data::I8(a), Data::I8(b)) => first_diff(name, a, b),
        (Data::I32(a), Data::I32(b)) => first_diff(name, a, b),
        (Data::I64(a), Data::I64(b)) => first_diff(name, a, b),
        (Data::F16(a), Data::F16(b)) => {
            compare_floats(name, a, b, tol, |x: half::f16| x.to_bits() as u64)
        }
        (Data::F32(a), Data::F32(b)) => {
            compare_floats(name, a, b, tol, |x: f32| x.to_bits() as u64)
        }
        (Data::F64(a), Data::F64(b)) => compare_floats(name, a, b, tol, f64::to_bits),
        _ => Err(format!(
            "out.{name}: dtype {}, expected {}",
            g.dtype(),
            e.dtype()
        )),
    }
}

fn run_one(case: &Case, run: ops::RunFn, engine: &ops::Engine) -> Result<(), String> {
    let got = run(case, engine).map_err(|e| e.msg)?;
    let unused = case.unused_attrs();
    if !unused.is_empty() {
        return Err(format!("unknown attrs {unused:?} for op {}", case.op));
    }
    compare(case, &got)
}

/// Run every case under `dir` on `engines`, with the runner's op table.
pub fn run_dir(dir: &Path, engines: &[Engine]) -> Result<Report, String> {
    run_dir_with(dir, engines, ops::OPS)
}

/// Run every case under `dir` on `engines` with op table `table`:
/// - a case of an implemented op must pass on every engine (or once, for
///   engine-independent ops);
/// - a pending case is reported as pending, never as passed; when the runner
///   has code for it, it is still tried, and one that passes on every engine
///   is a failure ("stale"), so the table cannot keep claiming an op is
///   missing once it works: the change that makes it pass must also update
///   the table, and with it the promise that every engine passes;
/// - a case of an op the table does not know, or an unreadable file, fails.
pub fn run_dir_with(
    dir: &Path,
    engines: &[Engine],
    table: &[ops::OpSpec],
) -> Result<Report, String> {
    let files =
        case_files(dir).map_err(|e| format!("{}: cannot list cases: {e}", dir.display()))?;
    if files.is_empty() {
        return Err(format!("{}: no .safetensors cases found", dir.display()));
    }
    let first = engines
        .first()
        .ok_or_else(|| "no engine to run the cases on".to_string())?;
    let mut report = Report::default();
    for f in &files {
        let file = f.display().to_string();
        let case = match Case::read(f) {
            Ok(c) => c,
            Err(e) => {
                report.record("<unreadable>", "-", Err(e.msg), &file);
                continue;
            }
        };
        let Some(spec) = table.iter().find(|s| s.name == case.op) else {
            let msg = format!(
                "unknown op {:?} (not in the runner's op table: cargo xtask conformance --list-ops)",
                case.op
            );
            report.record(&case.op, "-", Err(msg), &file);
            continue;
        };
        let targets: Vec<(String, &ops::Engine)> = match spec.runs {
            ops::Runs::Once => vec![("core".to_string(), first)],
            ops::Runs::OnEveryEngine => engines.iter().map(|e| (label(e), e)).collect(),
        };
        match (spec.run, spec.pending_for(&case)) {
            (Some(run), None) => {
                for (l, e) in &targets {
                    let r = run_one(&case, run, e);
                    report.record(&case.op, l, r, &file);
                }
            }
            (run, Some(p)) => {
                let attempt = match run {
                    None => Err("the runner has no code for this op yet".to_string()),
                    Some(run) => targets
                        .iter()
                        .map(|(l, e)| run_one(&case, run, e).map_err(|m| format!("{l}: {m}")))
                        .find(Result::is_err)
                        .unwrap_or(Ok(())),
                };
                match attempt {
                    Ok(()) => report.record(
                        &case.op,
                        "-",
                        Err(format!(
                            "stale pending entry: {} (issue {}) passes on every engine now; \
                             mark it implemented in the op table (xtask/src/conformance/ops.rs)",
                            p.what, p.issue
                        )),
                        &file,
                    ),
                    Err(why) => report.pending.push(PendingCase {
                        file: file.clone(),
                        op: case.op.clone(),
                        issue: p.issue,
                        msg: format!("{}: {} ({why})", case.op, p.what),
                    }),
                }
            }
            (None, None) => report.record(
                &case.op,
                "-",
                Err(format!(
                    "op {:?} has neither code nor a pending entry in the op table",
                    case.op
                )),
                &file,
            ),
        }
    }
    Ok(report)
}

/// Helper for building a tensor record.
pub fn tensor(shape: Vec<usize>, data: Data) -> Tensor {
    Tensor { shape, data }
}
