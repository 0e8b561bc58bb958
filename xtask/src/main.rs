//! `cargo xtask <command>`: conformance, bench, ci helpers.

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  cargo xtask conformance --cases DIR [--engine NAME] [--target aarch64-unknown-linux-gnu [--qemu-cpu cortex-a72|cortex-a76|max]]\n  cargo xtask conformance --list-ops\n  cargo xtask bench [--filter SUBSTR] [--engine NAME] [--threads N] [--json PATH] [--quick] [--weights gaussian|uniform|minilm:DIR] [--cpu-time]\n  cargo xtask bench --models [--zoo | --only a,b] [--engine NAME] [--threads N] [--json PATH] [--quick] [--per-layer] [--profile]\n  cargo xtask density FILE.safetensors [FILE ...]\n  cargo xtask fuzz [--seconds N] [TARGET ...]\n  cargo xtask miri\n\
         runs every golden case under DIR on every engine (or the one named);\n\
         the last line is `N passed, M failed, P pending`; exits non-zero on any failure.\n\
         --list-ops prints the runner's op table: name, implemented or pending (and the issue)."
    );
    ExitCode::from(2)
}

/// Cross-build the runner for `target` and run it under qemu-user
/// (aarch64: `ci/arm.sh` installs the cross linker and qemu).
fn conformance_cross(
    target: &str,
    qemu_cpu: Option<&str>,
    dir: &std::path::Path,
    engine: Option<&str>,
) -> ExitCode {
    use std::process::Command;
    if target != "aarch64-unknown-linux-gnu" {
        eprintln!("error: --target {target}: only aarch64-unknown-linux-gnu is supported");
        return ExitCode::from(2);
    }
    let dir = match dir.canonicalize() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let mut cmd = Command::new("cargo");
    cmd.current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "xtask",
            "--target",
            target,
            "--",
            "conformance",
            "--cases",
        ])
        .arg(&dir);
    if let Some(e) = engine {
        cmd.args(["--engine", e]);
    }
    // Defaults for Debian's cross toolchain, unless the caller set them.
    for (k, v) in [
        (
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            "aarch64-linux-gnu-gcc",
        ),
        (
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER",
            "qemu-aarch64 -L /usr/aarch64-linux-gnu",
        ),
    ] {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    if let Some(cpu) = qemu_cpu {
        cmd.env("QEMU_CPU", cpu);
    }
    println!(
        "running the conformance runner for {target} under qemu (QEMU_CPU={})",
        qemu_cpu.unwrap_or("default")
    );
    match cmd.status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: cannot run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn conformance(args: &[String]) -> ExitCode {
    let mut cases: Option<PathBuf> = None;
    let mut engine: Option<String> = None;
    let mut target: Option<String> = None;
    let mut qemu_cpu: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--list-ops" if args.len() == 1 => {
                for op in xtask::conformance::ops::OPS {
                    println!("{}", op.describe());
                }
                return ExitCode::SUCCESS;
            }
            "--cases" => cases = it.next().map(PathBuf::from),
            "--engine" => engine = it.next().cloned(),
            "--target" => target = it.next().cloned(),
            "--qemu-cpu" => qemu_cpu = it.next().cloned(),
            _ => return usage(),
        }
    }
    let Some(dir) = cases else { return usage() };
    if let Some(t) = target {
        return conformance_cross(&t, qemu_cpu.as_deref(), &dir, engine.as_deref());
    }
    if qemu_cpu.is_some() {
        eprintln!("error: --qemu-cpu needs --target");
        return ExitCode::from(2);
    }
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

fn bench(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--models") {
        return bench_models(args);
    }
    use std::time::Duration;
    use xtask::bench;
    let usage = "usage: cargo xtask bench [--filter SUBSTR] [--shape SUBSTR] [--engine NAME] [--threads N] [--json PATH] [--quick] [--weights gaussian|uniform|minilm:DIR] [--cpu-time]";
    let mut json: Option<PathBuf> = None;
    let mut weights = bench::Weights::Gaussian;
    let mut cpu_time = false;
    let mut threads: Option<usize> = None;
    let mut budget = Duration::from_millis(400);
    let mut engine: Option<String> = None;
    let mut filter: Option<String> = None;
    let mut shape: Option<String> = None;
    let mut quick = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = it.next().map(PathBuf::from),
            "--threads" => threads = it.next().and_then(|s| s.parse().ok()).filter(|&n| n > 0),
            "--engine" => engine = it.next().cloned(),
            "--filter" => filter = it.next().cloned(),
            "--shape" => shape = it.next().cloned(),
            "--weights" => match it.next().map(|w| bench::Weights::parse(w)) {
                Some(Ok(w)) => weights = w,
                Some(Err(msg)) => {
                    eprintln!("error: {msg}");
                    return ExitCode::from(2);
                }
                None => {
                    eprintln!("{usage}");
                    return ExitCode::from(2);
                }
            },
            "--cpu-time" => cpu_time = true,
            "--quick" => {
                quick = true;
                budget = Duration::from_millis(50);
            }
            _ => {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
        }
    }
    let mut engines = match xtask::conformance::select_engines(engine.as_deref()) {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::FAILURE;
        }
    };
    // The scalar reference is the oracle, not a contender: bench it only when asked.
    if engine.is_none() && engines.len() > 1 {
        engines.retain(|e| e.name() != "reference");
    }
    // RQUANT_ISA names the one path to bench (e.g. `avx2`: the AVX2-only
    // behaviour on a larger CPU).
    if let Some(isa) = rquant_core::registry::requested_isa() {
        engines.retain(|e| e.isa() == isa);
        if engines.is_empty() {
            eprintln!("error: RQUANT_ISA={isa}: no engine path of that name here");
            return ExitCode::FAILURE;
        }
    }
    let wanted = |label: &str| filter.as_deref().is_none_or(|f| label.contains(f));
    // `--shape M=128,K=768`: only the cases whose shape text holds it.
    let shape_wanted = |text: &str| shape.as_deref().is_none_or(|f| text.contains(f));
    // The Linear weights: (rows M, matrix) jobs, each matrix's remainder
    // density printed once.
    let matrices: Vec<bench::Matrix> = match &weights {
        bench::Weights::MiniLm(dir) => match bench::minilm_matrices(dir) {
            Ok(v) => v,
            Err(msg) => {
                eprintln!("error: {msg}");
                return ExitCode::FAILURE;
            }
        },
        w => bench::LINEAR_SHAPES
            .iter()
            .map(|&(_, k, n)| bench::linear_weights(w, n, k))
            .collect(),
    };
    let linear_jobs: Vec<(usize, usize)> = match &weights {
        // One matrix per distinct shape (the first in layer order; the
        // densities of all are printed below): the layers share shapes.
        bench::Weights::MiniLm(_) => {
            let mut shapes = std::collections::HashSet::new();
            (0..matrices.len())
                .filter(|&i| shapes.insert((matrices[i].n(), matrices[i].k())))
                .flat_map(|i| bench::MINILM_ROWS.iter().map(move |&m| (m, i)))
                .collect()
        }
        _ => bench::LINEAR_SHAPES
            .iter()
            .enumerate()
            .map(|(i, &(m, _, _))| (m, i))
            .collect(),
    };
    let conv_w: Vec<_> = bench::CONV_SHAPES
        .iter()
        .map(|&s| bench::conv_weights(&weights, s))
        .collect();
    println!("weights: {} (per output channel)", weights.label());
    if wanted("linear_static") || wanted("linear_dynamic") {
        let mut seen = std::collections::HashSet::new();
        for m in &matrices {
            if seen.insert((m.label.clone(), m.n(), m.k())) {
                let d = bench::Density::of(m.w.int_repr(), m.n(), m.k());
                println!("  {} [{}x{}]: {}", m.label, m.n(), m.k(), d.text());
            }
        }
    }
    if wanted("conv2d") {
        for (&(c, o, hw, k, g), w) in bench::CONV_SHAPES.iter().zip(&conv_w) {
            if g == 1 {
                let d = bench::conv_density(w, g);
                println!("  conv {c}->{o} {k}x{k} @{hw}: {}", d.text());
            }
        }
    }
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpu_time {
        // One thread's CPU clock measures all the work only on one thread.
        if threads != Some(1) {
            eprintln!("error: --cpu-time needs --threads 1");
            return ExitCode::from(2);
        }
        bench::use_cpu_clock(true);
        println!("clock: the benchmarking thread's CPU time");
    }
    let thread_counts: Vec<usize> = match threads {
        Some(n) => vec![n],
        None if all > 1 => vec![1, all],
        None => vec![1],
    };
    let mut records = Vec::new();
    // One core's register-only peak of every GEMM kernel of the paths
    // benched (each kernel-table entry's own loop): the denominators of the
    // % column, for the kernel that ran in each record.
    let mut peaks: Vec<(&'static str, f64)> = Vec::new();
    for e in &engines {
        for k in e.gemm_kernels() {
            if let (Some(p), false) = (k.peak, peaks.iter().any(|(n, _)| *n == k.name)) {
                let v = p();
                println!(
                    "int8 peak ({}, {}, 1 core, register-only loop): {v:.1} GOP/s",
                    k.name,
                    e.isa()
                );
                peaks.push((k.name, v));
            }
        }
    }
    let fp32_peak = rquant_x86::peak::fp32_peak_gflops();
    if let Some(p) = fp32_peak {
        println!("fp32 FMA peak (1 core, register-only loop): {p:.1} GFLOP/s");
    }
    let pct = |r: &bench::Record| -> String {
        if let Some(c) = r.copy_gbs {
            // 4 source bytes per element, against a copy's source bytes per second.
            return format!("{:.0}%", 100.0 * r.gops * 4.0 / c);
        }
        let peak = if r.op == "fp32_linear" {
            fp32_peak
        } else {
            r.kernel
                .and_then(|k| peaks.iter().find(|(n, _)| *n == k))
                .map(|&(_, p)| p)
        };
        peak.map_or(String::from("-"), |p| {
            format!("{:.0}%", 100.0 * r.gops / (p * r.threads as f64))
        })
    };
    println!(
        "{:<15} {:<34} {:<22} {:>3} {:>12} {:>9} {:>6}  kernel",
        "op", "shape", "engine/isa", "thr", "median", "GOP/s", "%peak"
    );
    for &nt in &thread_counts {
        // Every parallel region (engines and the fp32 baseline) uses nt threads.
        rquant_core::registry::set_num_threads(nt);
        {
            let mut emit = |r: bench::Record| {
                println!(
                    "{:<15} {:<34} {:<22} {:>3} {:>10.1}us {:>9.1} {:>6}  {}{}",
                    r.op,
                    r.shape_text(),
                    format!("{}/{}", r.engine, r.isa),
                    r.threads,
                    r.median_s * 1e6,
                    r.gops,
                    pct(&r),
                    r.kernel.unwrap_or("-"),
                    match &r.weights {
                        Some(w) if w.starts_with("minilm:") => format!("  ({w})"),
                        _ => String::new(),
                    }
                );
                records.push(r);
            };
            for &(m, i) in &linear_jobs {
                let w = &matrices[i];
                let s = (m, w.k(), w.n());
                if quick && s.0 * s.1 * s.2 > 128 * 768 * 768
                    || !shape_wanted(&format!("M={m},K={},N={}", s.1, s.2))
                {
                    continue;
                }
                if wanted("linear_static") || wanted("linear_dynamic") {
                    for e in &engines {
                        for r in bench::linear(e, m, w, nt, budget) {
                            if wanted(r.op) {
                                emit(r);
                            }
                        }
                    }
                }
                if wanted("fp32_linear") && weights == bench::Weights::Gaussian {
                    emit(bench::fp32_linear(s, nt, budget));
                }
            }
            if wanted("conv2d") {
                for (&s, w) in bench::CONV_SHAPES.iter().zip(&conv_w) {
                    let (c, o, hw, k, g) = s;
                    let text = format!("C={c},O={o},H={hw},W={hw},k={k},groups={g}");
                    if quick && hw > 28 || !shape_wanted(&text) {
                        continue;
                    }
                    for e in &engines {
                        emit(bench::conv(e, s, w, &weights, nt, budget));
                    }
                }
            }
            if wanted("quantize") || wanted("dequantize") {
                let len = if quick {
                    bench::QUANTIZE_LEN / 16
                } else {
                    bench::QUANTIZE_LEN
                };
                let copy = bench::copy_gbs(len, budget);
                println!(
                    "streaming copy of {len} f32 ({nt} thr): {copy:.1} GB/s of source bytes (the % column of quantize/dequantize)"
                );
                for e in &engines {
                    for mut r in bench::quantize(e, len, nt, budget) {
                        r.copy_gbs = Some(copy);
                        if wanted(r.op) {
                            emit(r);
                        }
                    }
                }
            }
        }
    }
    rquant_core::registry::set_num_threads(0);
    if let Some(p) = json {
        let v = serde_json::Value::Array(records.iter().map(|r| r.json()).collect());
        if let Err(e) = std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()) {
            eprintln!("error: {}: {e}", p.display());
            return ExitCode::FAILURE;
        }
    }
    if cfg!(target_arch = "aarch64") && std::env::var_os("QEMU_CPU").is_some() {
        println!("(timings under qemu emulation: meaningless as speed)");
    }
    ExitCode::SUCCESS
}

/// `cargo xtask bench --models`: whole models, fp32 and int8 (see
/// `xtask::bench_models`).
fn bench_models(args: &[String]) -> ExitCode {
    use std::time::Duration;
    use xtask::bench_models as bm;
    let usage = "usage: cargo xtask bench --models [--zoo | --only a,b] [--engine NAME] [--threads N] [--json PATH] [--quick] [--per-layer] [--profile] [--rounds R]";
    let mut json: Option<PathBuf> = None;
    let mut threads: Option<usize> = None;
    let mut engine: Option<String> = None;
    let (mut budget, mut layer_budget) = (Duration::from_secs(2), Duration::from_millis(500));
    let (mut zoo, mut per_layer, mut profile) = (false, false, false);
    let mut only: Option<Vec<String>> = None;
    let mut rounds = 1usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--models" => {}
            "--json" => json = it.next().map(PathBuf::from),
            "--threads" => match it.next().and_then(|s| s.parse().ok()).filter(|&n| n > 0) {
                Some(n) => threads = Some(n),
                None => {
                    eprintln!("{usage}");
                    return ExitCode::from(2);
                }
            },
            "--engine" => engine = it.next().cloned(),
            "--zoo" => zoo = true,
            "--only" => only = it.next().map(|s| s.split(',').map(String::from).collect()),
            "--per-layer" => per_layer = true,
            "--profile" => profile = true,
            "--rounds" => match it.next().and_then(|s| s.parse().ok()).filter(|&n| n > 0) {
                Some(n) => rounds = n,
                None => {
                    eprintln!("{usage}");
                    return ExitCode::from(2);
                }
            },
            "--quick" => {
                budget = Duration::from_millis(300);
                layer_budget = Duration::from_millis(60);
            }
            _ => {
                eprintln!("{usage}");
                return ExitCode::from(2);
            }
        }
    }
    rquant_nn::engines::init();
    let engine = match engine.as_deref().map_or_else(
        rquant_core::registry::engine,
        rquant_core::registry::engine_by_name,
    ) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut names: Vec<String> = bm::DEFAULT_MODELS.iter().map(|s| s.to_string()).collect();
    if zoo {
        names.extend(
            rquant_models::vision::MODELS
                .iter()
                .filter(|n| !names.iter().any(|m| m == *n))
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        );
    }
    if let Some(o) = only {
        names = o;
    }
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let thread_counts: Vec<usize> = match threads {
        Some(n) => vec![n],
        None if all > 1 => vec![1, all],
        None => vec![1],
    };
    let loadavg = || {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".into())
    };
    println!(
        "engine {}/{}; building and calibrating at 1 thread: {}",
        engine.name(),
        engine.isa(),
        names.join(", ")
    );
    rquant_core::registry::set_num_threads(1);
    let mut cases = Vec::new();
    for n in &names {
        let c = if n == "mnist_cnn" {
            bm::mnist_case(&engine)
        } else {
            bm::zoo_case(n, &engine)
        };
        match c {
            Ok(c) => cases.push(c),
            Err(e) => {
                eprintln!("error: {n}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut records = Vec::new();
    // Rounds alternate the thread counts (1, N, 1, N, …) so a change in the
    // shared machine's load hits both alike; the summary takes medians.
    for round in 0..rounds {
        for &nt in &thread_counts {
            rquant_core::registry::set_num_threads(nt);
            // Every parallel region (engines and the float path) runs on
            // rquant's one pool, bounded by the count just set.
            println!("threads {nt}: load average before {}", loadavg());
            for c in cases.iter_mut() {
                for r in bm::time_case(c, &engine, nt, budget, 3) {
                    let b = r["shape"]["batch"].as_u64().unwrap_or(1) as f64;
                    let t = r["median_s"].as_f64().unwrap_or(0.0);
                    println!(
                    "model {:<18} b={:<4} {:<5} {:<20} thr={nt} {:>10.3} ms/batch {:>9.3} ms/img",
                    c.name,
                    b,
                    r["variant"].as_str().unwrap_or(""),
                    format!(
                        "{}/{}",
                        r["engine"].as_str().unwrap_or(""),
                        r["isa"].as_str().unwrap_or("")
                    ),
                    t * 1e3,
                    t * 1e3 / b
                );
                    let mut r = r;
                    r["round"] = serde_json::json!(round);
                    records.push(r);
                }
            }
            if per_layer {
                for c in cases
                    .iter()
                    .filter(|c| bm::LAYER_MODELS.contains(&c.name.as_str()))
                {
                    for r in bm::conv_layers(c, 8, &engine, nt, layer_budget) {
                        let s = &r["shape"];
                        println!(
                        "conv_layer {:<12} {:<24} {:>4}->{:<4} k{} s{} g{:<4} {:>3}x{:<3} {:>9.3} ms {:>7.1} GOP/s",
                        c.name,
                        s["layer"].as_str().unwrap_or(""),
                        s["C_in"], s["C_out"], s["k"], s["stride"], s["groups"], s["H"], s["W"],
                        r["median_s"].as_f64().unwrap_or(0.0) * 1e3,
                        r["gops"].as_f64().unwrap_or(0.0)
                    );
                        records.push(r);
                    }
                }
            }
            if profile {
                for c in &cases {
                    for &b in &c.batches {
                        let (rows, total) = bm::profile(c, b, 5);
                        println!(
                            "profile {} int8 batch {b}, {nt} thread(s): {:.3} ms per forward",
                            c.name,
                            total * 1e3
                        );
                        for (kind, s, n) in rows {
                            println!(
                                "  {:<28} {:>4} calls {:>9.3} ms {:>5.1}%",
                                kind,
                                n,
                                s * 1e3,
                                100.0 * s / total
                            );
                        }
                    }
                }
            }

            println!("threads {nt}: load average after {}", loadavg());
        }
    }
    if rounds > 1 && thread_counts.len() > 1 {
        bm::print_thread_scaling(&records, &thread_counts);
    }
    rquant_core::registry::set_num_threads(0);
    if let Some(p) = json {
        let v = serde_json::Value::Array(records);
        if let Err(e) = std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()) {
            eprintln!("error: {}: {e}", p.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// `cargo xtask fuzz [--seconds N] [TARGET ...]`: every fuzz target for a bounded time.
/// `cargo xtask density FILE.safetensors...`: each GEMM weight's remainder
/// density under the x86 two-pass split, per channel and per tensor.
fn density(args: &[String]) -> ExitCode {
    if args.is_empty() {
        eprintln!("usage: cargo xtask density FILE.safetensors [FILE ...]");
        return ExitCode::from(2);
    }
    let mut all = (0usize, 0usize, 0usize, 0usize);
    for f in args {
        match xtask::bench::file_densities(std::path::Path::new(f)) {
            Ok(v) => {
                println!("{f}:");
                for w in v {
                    let (pc, pt) = (w.per_channel, w.per_tensor);
                    println!(
                        "  {} {:?}\n    per channel: {}\n    per tensor:  {}",
                        w.name,
                        w.shape,
                        pc.text(),
                        pt.text()
                    );
                    all.0 += pc.over;
                    all.1 += pc.pairs;
                    all.2 += pt.over;
                    all.3 += pt.pairs;
                }
            }
            Err(msg) => {
                eprintln!("error: {msg}");
                return ExitCode::FAILURE;
            }
        }
    }
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    println!(
        "all: {:.2}% of pairs per channel, {:.2}% per tensor",
        pct(all.0, all.1),
        pct(all.2, all.3)
    );
    ExitCode::SUCCESS
}

fn fuzz(args: &[String]) -> ExitCode {
    use std::process::Command;
    let mut seconds = 60u64;
    let mut targets: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => match it.next().and_then(|s| s.parse().ok()) {
                Some(s) => seconds = s,
                None => return usage(),
            },
            t if !t.starts_with('-') => targets.push(t.to_string()),
            _ => return usage(),
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let fuzz_dir = root.join("fuzz");
    if targets.is_empty() {
        targets = ["case_reader", "ops", "model_load", "idx", "classify"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    for t in &targets {
        let corpus = fuzz_dir.join("corpus").join(t);
        let seeds = fuzz_dir.join("seeds").join(t);
        if let Err(e) = std::fs::create_dir_all(&corpus) {
            eprintln!("error: {}: {e}", corpus.display());
            return ExitCode::FAILURE;
        }
        if let Ok(entries) = std::fs::read_dir(&seeds) {
            for entry in entries.flatten() {
                let _ = std::fs::copy(entry.path(), corpus.join(entry.file_name()));
            }
        }
        println!("== fuzz {t} for {seconds} s");
        let status = Command::new("cargo")
            .current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "run", "-O", t])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-rss_limit_mb=2048")
            .status();
        match status {
            Ok(s) if s.success() => println!("== {t}: no finding"),
            Ok(_) => {
                eprintln!("error: fuzz target {t} found a crash (see fuzz/artifacts/{t}/)");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("error: cannot run cargo fuzz ({e}); install it with `cargo install cargo-fuzz` and the nightly toolchain");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// `cargo xtask miri`: Miri (nightly) on the core and reference crates' unit
/// tests and on the x86 packing and kernels (small cases, with the target
/// features of every kernel in the x86 kernel tables, so every path and
/// kernel runs under Miri's SIMD emulation).
fn miri(args: &[String]) -> ExitCode {
    use std::process::Command;
    if !args.is_empty() {
        return usage();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // Every x86 path at once: the kernel tables' target features make Miri's
    // emulated CPU report every path, so all_paths() holds all five. Under
    // Miri the VNNI tile's asm loop is replaced by its intrinsics twin (Miri
    // cannot run asm!), and fp16 linear is skipped (no F16C in Miri).
    // Plus the memory-bound kernels' extras (AVX512-VBMI's lookup).
    let mut features = rquant_x86::table::miri_target_features();
    features.extend(rquant_x86::membound::MIRI_FEATURES);
    features.sort_unstable();
    features.dedup();
    let x86_flags = format!(
        "-C target-feature={}",
        features
            .iter()
            .map(|f| format!("+{f}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let x86_what = format!(
        "x86 packing + kernels, every path and kernel of the tables ({})",
        features.join(",")
    );
    let runs: [(&str, &[&str], &str); 3] = [
        // Property tests with few cases (PROPTEST_CASES below): Miri is slow.
        (
            "core (unit and property tests)",
            &["-p", "rquant-core", "--lib", "--tests"],
            "",
        ),
        (
            "reference engine (every op, small)",
            &["-p", "rquant-reference", "--tests"],
            "",
        ),
        (
            &x86_what,
            &[
                "-p",
                "rquant-x86",
                "--test",
                "miri_small",
                "--",
                "--nocapture",
            ],
            &x86_flags,
        ),
    ];
    for (what, pkg, rustflags) in runs {
        println!("== miri: {what}");
        let status = Command::new("cargo")
            .current_dir(&root)
            .args(["+nightly", "miri", "test"])
            .args(pkg)
            .env("MIRIFLAGS", "-Zmiri-disable-isolation")
            .env("PROPTEST_CASES", "8")
            .env("RUSTFLAGS", rustflags)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(_) => {
                eprintln!("error: miri found a problem in {what}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("error: cannot run cargo miri ({e}); install it with `rustup component add --toolchain nightly miri rust-src`");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("== miri: clean");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("conformance") => conformance(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("density") => density(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("miri") => miri(&args[1..]),
        _ => usage(),
    }
}
