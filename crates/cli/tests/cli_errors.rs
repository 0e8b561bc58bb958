//! Every subcommand on missing, unreadable, truncated or corrupt inputs and
//! unwritable outputs: a non-zero exit, exactly one stderr line starting
//! `rquant: error:` that names the file, no panic or backtrace (even with
//! RUST_BACKTRACE=1), and no output file or temporary file left behind.
//! The inputs fail before any training or model run, so these are fast.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn rquant(args: &[&str], stdin: Option<&Path>) -> Out {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rquant"));
    c.args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RQUANT_NUM_THREADS", "1");
    if let Some(p) = stdin {
        c.stdin(std::fs::File::open(p).unwrap());
    }
    let o = c.output().unwrap();
    Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A non-zero exit with one `rquant: error:` line naming every `names`.
#[track_caller]
fn fails(args: &[&str], names: &[&str]) -> String {
    let o = rquant(args, None);
    let ctx = format!(
        "rquant {args:?}\nstdout:\n{}\nstderr:\n{}",
        o.stdout, o.stderr
    );
    assert!(
        o.code.is_some_and(|c| c != 0),
        "exit {:?}, expected failure; {ctx}",
        o.code
    );
    assert!(!o.stderr.contains("panicked"), "{ctx}");
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one stderr line; {ctx}");
    assert!(lines[0].starts_with("rquant: error: "), "{ctx}");
    for n in names {
        assert!(lines[0].contains(n), "{n:?} not named; {ctx}");
    }
    lines[0].to_string()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rquant-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Remove this process's temporary directories whose names start with
/// `rquant-cli-{prefix}` (each test uses its own prefix: tests run in parallel).
fn cleanup(prefix: &str) {
    let (head, tail) = (
        format!("rquant-cli-{prefix}"),
        format!("-{}", std::process::id()),
    );
    for e in std::fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&head) && n.ends_with(&tail) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn entries(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// An MNIST-layout directory with `n` 28×28 images of each kind.
fn mnist_dir(name: &str, n: u32) -> PathBuf {
    let d = tmp(name);
    for kind in ["train", "t10k"] {
        std::fs::write(
            d.join(format!("{kind}-images-idx3-ubyte")),
            idx(&[n, 28, 28], &vec![0; n as usize * 784]),
        )
        .unwrap();
        std::fs::write(
            d.join(format!("{kind}-labels-idx1-ubyte")),
            idx(&[n], &vec![1; n as usize]),
        )
        .unwrap();
    }
    d
}

/// The same bad MNIST directories for `demo --mnist-dir` and `qat --data`.
fn bad_mnist_dirs(cmd: &[&str]) {
    let run = |d: &Path, names: &[&str]| {
        let mut a = cmd.to_vec();
        a.push(s(d));
        fails(&a, names)
    };
    // Missing directory.
    let d = tmp(&format!("{}-missing", cmd[0])).join("nope");
    run(&d, &["nope", "-images-idx3-ubyte", "No such file"]);

    // A directory where the images file should be.
    let d = mnist_dir(&format!("{}-isdir", cmd[0]), 2);
    for f in ["t10k-images-idx3-ubyte", "train-images-idx3-ubyte"] {
        std::fs::remove_file(d.join(f)).unwrap();
        std::fs::create_dir(d.join(f)).unwrap();
    }
    run(&d, &["-images-idx3-ubyte", "not a regular file"]);

    // Truncated, corrupt, gzip-corrupt and mis-shaped files, in either kind.
    for kind in ["t10k", "train"] {
        let tag = format!("{}-{kind}", cmd[0]);
        let d = mnist_dir(&format!("{tag}-trunc"), 2);
        let f = d.join(format!("{kind}-images-idx3-ubyte"));
        let b = std::fs::read(&f).unwrap();
        std::fs::write(&f, &b[..b.len() - 100]).unwrap();
        run(&d, &[s(&f), "data"]);
        std::fs::write(&f, &b[..6]).unwrap();
        run(&d, &[s(&f), "truncated header"]);

        let d = mnist_dir(&format!("{tag}-magic"), 2);
        let f = d.join(format!("{kind}-labels-idx1-ubyte"));
        std::fs::write(&f, b"PK\x03\x04 not an idx file").unwrap();
        run(&d, &[s(&f), "magic"]);

        let d = mnist_dir(&format!("{tag}-gz"), 2);
        let f = d.join(format!("{kind}-labels-idx1-ubyte"));
        std::fs::remove_file(&f).unwrap();
        std::fs::write(
            d.join(format!("{kind}-labels-idx1-ubyte.gz")),
            b"\x1f\x8b\x08garbage",
        )
        .unwrap();
        run(&d, &[&format!("{kind}-labels-idx1-ubyte.gz")]);

        let d = mnist_dir(&format!("{tag}-dims"), 2);
        let f = d.join(format!("{kind}-images-idx3-ubyte"));
        std::fs::write(&f, idx(&[2, 4, 4], &[0; 32])).unwrap();
        run(&d, &[s(&f), "28x28"]);
        std::fs::write(&f, idx(&[3, 28, 28], &[0; 3 * 784])).unwrap();
        run(&d, &[&format!("{kind}-labels-idx1-ubyte"), "dims"]);

        let d = mnist_dir(&format!("{tag}-empty"), 2);
        std::fs::write(
            d.join(format!("{kind}-images-idx3-ubyte")),
            idx(&[0, 28, 28], &[]),
        )
        .unwrap();
        std::fs::write(d.join(format!("{kind}-labels-idx1-ubyte")), idx(&[0], &[])).unwrap();
        run(&d, &[&format!("{kind}-images-idx3-ubyte"), "no images"]);
    }
}

#[test]
fn demo_bad_inputs_and_outputs() {
    bad_mnist_dirs(&["demo", "--mnist-dir"]);
    // --json into a missing directory or onto a directory fails before any
    // work, and nothing is written.
    let d = tmp("demo-json");
    let good = mnist_dir("demo-good", 2);
    let missing = d.join("no/such/dir/out.json");
    fails(
        &["demo", "--mnist-dir", s(&good), "--json", s(&missing)],
        &[s(&missing), "does not exist"],
    );
    fails(&["demo", "--json", s(&d)], &[s(&d), "directory"]);
    assert!(entries(&d).is_empty());
    fails(&["demo", "--mnist-dir"], &["--mnist-dir"]);
    fails(&["demo", "--bogus"], &["--bogus"]);
    cleanup("demo-");
}

#[test]
fn qat_bad_inputs() {
    bad_mnist_dirs(&["qat", "--dataset", "fashion-mnist", "--data"]);
    let good = mnist_dir("qat-good", 2);
    for opt in ["--epochs", "--qat-images", "--train-limit"] {
        for v in ["abc", "0", "-1"] {
            fails(&["qat", "--data", s(&good), opt, v], &[opt, v]);
        }
    }
    fails(&["qat", "--dataset", "cifar"], &["cifar"]);
    cleanup("qat-");
}

#[test]
fn bits_bad_values() {
    fails(&["bits", "x"], &["VALUE"]);
    fails(&["bits", "1", "--scale", "0"], &["scale"]);
    fails(&["bits", "1", "--scale"], &["--scale"]);
}

// ---------------------------------------------------------------- embed

const H: usize = 4;

fn config() -> String {
    serde_json::json!({
        "hidden_act": "gelu", "hidden_size": H, "intermediate_size": H,
        "max_position_embeddings": 8, "num_attention_heads": 1, "num_hidden_layers": 1,
        "type_vocab_size": 2, "vocab_size": 5
    })
    .to_string()
}

fn tokenizer() -> String {
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100,
                  "vocab": {"[UNK]": 0, "a": 1, "b": 2, "c": 3, "d": 4}}
    })
    .to_string()
}

/// A safetensors file of zero-filled F32 tensors (written by hand: the CLI
/// does not depend on the safetensors crate).
fn safetensors(tensors: &[(String, Vec<usize>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut off = 0;
    for (n, shape) in tensors {
        let len = 4 * shape.iter().product::<usize>();
        header.insert(
            n.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [off, off + len]}),
        );
        off += len;
    }
    let h = serde_json::Value::Object(header).to_string();
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(h.as_bytes());
    b.resize(b.len() + off, 0);
    b
}

fn bert_tensors() -> Vec<(String, Vec<usize>)> {
    let mut t: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![5, H]),
        ("embeddings.position_embeddings.weight".into(), vec![8, H]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, H]),
        ("embeddings.LayerNorm.weight".into(), vec![H]),
        ("embeddings.LayerNorm.bias".into(), vec![H]),
    ];
    let p = "encoder.layer.0";
    for n in [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ] {
        t.push((format!("{p}.{n}.weight"), vec![H, H]));
        t.push((format!("{p}.{n}.bias"), vec![H]));
    }
    for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
        t.push((format!("{p}.{n}.weight"), vec![H]));
        t.push((format!("{p}.{n}.bias"), vec![H]));
    }
    t
}

fn bert_dir(name: &str) -> PathBuf {
    let d = tmp(name);
    std::fs::write(d.join("config.json"), config()).unwrap();
    std::fs::write(d.join("tokenizer.json"), tokenizer()).unwrap();
    std::fs::write(d.join("model.safetensors"), safetensors(&bert_tensors())).unwrap();
    d
}

#[test]
fn embed_bad_inputs_and_outputs() {
    let m = bert_dir("embed-model");
    let md = s(&m);
    let io = tmp("embed-io");
    let texts = io.join("texts.txt");
    std::fs::write(&texts, "a b\nc d\n").unwrap();

    // The tiny model works: --out is written whole, with no temporary file.
    for ext in ["npy", "jsonl"] {
        let out = io.join(format!("e.{ext}"));
        let o = rquant(
            &["embed", "--model-dir", md, "--out", s(&out), s(&texts)],
            None,
        );
        assert_eq!(o.code, Some(0), "{}", o.stderr);
        assert!(std::fs::metadata(&out).unwrap().len() > 0);
    }
    assert_eq!(entries(&io), ["e.jsonl", "e.npy", "texts.txt"]);

    // Input text: missing, a directory, not UTF-8.
    let missing = io.join("missing.txt");
    fails(&["embed", "--model-dir", md, s(&missing)], &[s(&missing)]);
    fails(&["embed", "--model-dir", md, s(&io)], &[s(&io)]);
    let latin1 = io.join("latin1.txt");
    std::fs::write(&latin1, b"ok\ncaf\xe9\n").unwrap();
    fails(
        &["embed", "--model-dir", md, s(&latin1)],
        &[s(&latin1), "line 2", "UTF-8"],
    );

    // --out: a missing directory, an existing directory, a bad extension;
    // all fail before the model is loaded, and write nothing.
    let out = io.join("no/dir/e.npy");
    fails(
        &["embed", "--model-dir", md, "--out", s(&out), s(&texts)],
        &[s(&out)],
    );
    std::fs::create_dir(io.join("d.npy")).unwrap();
    let out = io.join("d.npy");
    fails(
        &["embed", "--model-dir", md, "--out", s(&out), s(&texts)],
        &[s(&out)],
    );
    fails(
        &["embed", "--model-dir", md, "--out", "x.txt", s(&texts)],
        &["x.txt"],
    );
    std::fs::remove_dir(io.join("d.npy")).unwrap();
    assert_eq!(
        entries(&io),
        ["e.jsonl", "e.npy", "latin1.txt", "texts.txt"]
    );

    // The model directory: missing, and each file missing, a directory,
    // truncated or corrupt.
    let nope = io.join("nope");
    fails(
        &["embed", "--model-dir", s(&nope), s(&texts)],
        &["nope/config.json"],
    );
    for (file, good) in [
        ("config.json", config().into_bytes()),
        ("model.safetensors", safetensors(&bert_tensors())),
        ("tokenizer.json", tokenizer().into_bytes()),
    ] {
        let d = bert_dir(&format!("embed-{file}"));
        let f = d.join(file);
        let run = |names: &[&str]| {
            fails(&["embed", "--model-dir", s(&d), s(&texts)], names);
        };
        std::fs::remove_file(&f).unwrap();
        run(&[s(&f)]);
        std::fs::create_dir(&f).unwrap();
        run(&[s(&f)]);
        std::fs::remove_dir(&f).unwrap();
        std::fs::write(&f, &good[..good.len() / 2]).unwrap();
        run(&[s(&f)]);
        let mut bad = good.clone();
        for b in bad.iter_mut().skip(8).step_by(7) {
            *b = b'#';
        }
        std::fs::write(&f, &bad).unwrap();
        run(&[s(&f)]);
    }
    // A weight missing or of the wrong shape names the tensor.
    let d = bert_dir("embed-shape");
    let mut t = bert_tensors();
    t[6].1 = vec![H, H + 1];
    std::fs::write(d.join("model.safetensors"), safetensors(&t)).unwrap();
    fails(
        &["embed", "--model-dir", s(&d), s(&texts)],
        &["model.safetensors", &t[6].0, "shape"],
    );
    t.remove(6);
    std::fs::write(d.join("model.safetensors"), safetensors(&t)).unwrap();
    fails(
        &["embed", "--model-dir", s(&d), s(&texts)],
        &["model.safetensors", "missing"],
    );
    // Options.
    fails(
        &["embed", "--model-dir", md, "--threads", "0"],
        &["--threads"],
    );
    fails(
        &["embed", "--model-dir", md, "--engine", "nosuch"],
        &["nosuch"],
    );
    fails(&["embed"], &["--model-dir"]);
    cleanup("embed-");
}

/// Standard output that cannot be written: a full device is a one-line error
/// (exit 1); a reader that went away (`rquant bits 1 | head -0`) ends the
/// program quietly (exit 0), as a SIGPIPE would. Never a panic.
#[test]
fn stdout_write_failures_are_not_panics() {
    use std::process::Stdio;
    if Path::new("/dev/full").exists() {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_rquant"))
            .args(["bits", "0.1"])
            .env("RUST_BACKTRACE", "1")
            .stdout(full)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("rquant: error: standard output:"), "{err}");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_rquant"))
        .args(["bits", "0.1"])
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away (usually before the first write)
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
}

// ---------------------------------------------------------------- usage

/// The subcommands `rquant --help` lists (without clap's `help`).
fn subcommands() -> Vec<String> {
    let o = rquant(&["--help"], None);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    o.stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn help_on_every_subcommand() {
    let subs = subcommands();
    for want in ["demo", "embed", "qat", "engines", "bits"] {
        assert!(subs.iter().any(|s| s == want), "{want} not in {subs:?}");
    }
    for sub in &subs {
        for args in [
            vec![sub.as_str(), "--help"],
            vec![sub.as_str(), "-h"],
            vec!["help", sub.as_str()],
        ] {
            let o = rquant(&args, None);
            assert_eq!(o.code, Some(0), "rquant {args:?}: {}", o.stderr);
            assert!(o.stderr.is_empty(), "rquant {args:?}: {}", o.stderr);
            assert!(
                o.stdout.contains(&format!("Usage: rquant {sub}")),
                "rquant {args:?}:\n{}",
                o.stdout
            );
        }
    }
    // The embed help keeps its explanation of inputs and outputs.
    let o = rquant(&["embed", "--help"], None);
    assert!(o.stdout.contains("one per line"), "{}", o.stdout);
}

/// Command-line usage errors (clap's) are one `rquant: error:` line with
/// exit code 2; errors in the files named are one line with exit code 1.
#[test]
fn usage_errors_exit_2_and_file_errors_exit_1() {
    let code = |args: &[&str], want: i32| {
        fails(args, &[]);
        let o = rquant(args, None);
        assert_eq!(o.code, Some(want), "rquant {args:?}: {}", o.stderr);
    };
    for args in [
        &["frobnicate"][..],
        &["demo", "--bogus"],
        &["demo", "--mnist-dir"],
        &["qat", "--epochs", "0"],
        &["qat", "--dataset", "cifar"],
        &["embed"],
        &["embed", "--model-dir", "m", "--fp32", "--per-channel"],
        &["embed", "--model-dir", "m", "--out", "x.txt"],
        &["bits", "x"],
        &["engines", "extra"],
    ] {
        code(args, 2);
    }
    // The error names what was wrong and where to read more.
    let line = fails(
        &["qat", "--epochs", "-1"],
        &["--epochs", "-1", "rquant qat --help"],
    );
    assert!(!line.contains("Usage:"), "{line}");
    let line = fails(&["embed"], &["--model-dir", "rquant embed --help"]);
    assert!(!line.contains("Usage:"), "{line}");
    // Files: a missing MNIST directory, a bad scale at run time.
    let d = tmp("usage-missing").join("nope");
    code(&["demo", "--mnist-dir", s(&d)], 1);
    code(&["bits", "1", "--scale", "0"], 1);
    cleanup("usage-");
    // No command at all: the help on stderr, exit 2 (as before clap).
    let o = rquant(&[], None);
    assert_eq!(o.code, Some(2));
    assert!(o.stdout.is_empty());
    assert!(o.stderr.contains("Usage: rquant <COMMAND>"), "{}", o.stderr);
}
