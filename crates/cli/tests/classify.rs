//! `rquant classify` and `rquant quantize` end to end on a small seeded
//! model (ShuffleNetV2 x0.5, tools/vision's seeded weights), on PNGs made in
//! the test; and every hostile input (mis-shaped, missing or extra tensors,
//! forged headers, files that are not images, bad input tensors) failing
//! with exit 1 and one `rquant: error:` line naming the file and the tensor,
//! without a panic or a half-written output file.

use std::path::{Path, PathBuf};
use std::process::Command;

use rquant_models::vision;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value as J;

const MODEL: &str = "shufflenet_v2_x0_5";

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn rquant(args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_rquant"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RQUANT_NUM_THREADS", "1")
        .output()
        .unwrap();
    Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    let o = rquant(args);
    assert_eq!(
        o.code,
        Some(0),
        "rquant {args:?}\nstdout:\n{}\nstderr:\n{}",
        o.stdout,
        o.stderr
    );
    o.stdout
}

/// Exit `code` with one `rquant: error:` line naming every `names`.
#[track_caller]
fn fails_with(code: i32, args: &[&str], names: &[&str]) -> String {
    let o = rquant(args);
    let ctx = format!(
        "rquant {args:?}\nstdout:\n{}\nstderr:\n{}",
        o.stdout, o.stderr
    );
    assert_eq!(o.code, Some(code), "{ctx}");
    assert!(!o.stderr.contains("panicked"), "{ctx}");
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one stderr line; {ctx}");
    assert!(lines[0].starts_with("rquant: error: "), "{ctx}");
    for n in names {
        assert!(lines[0].contains(n), "{n:?} not named; {ctx}");
    }
    lines[0].to_string()
}

#[track_caller]
fn fails(args: &[&str], names: &[&str]) -> String {
    fails_with(1, args, names)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rquant-classify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A deterministic RGB PNG (gradients plus a hashed texture), `w` × `h`.
fn png(path: &Path, w: u32, h: u32, seed: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let n = (x.wrapping_mul(73_856_093)
            ^ y.wrapping_mul(19_349_663)
            ^ seed.wrapping_mul(83_492_791))
        .wrapping_mul(2_654_435_761)
            >> 24;
        image::Rgb([
            ((x * 255 / w) as u8).wrapping_add(n as u8 / 4),
            ((y * 255 / h) as u8).wrapping_add((seed as u8).wrapping_mul(40)),
            (((x + y) % 64) * 4) as u8 ^ (n as u8 / 8),
        ])
    });
    img.save_with_format(path, image::ImageFormat::Png).unwrap();
}

/// The seeded float weights as torchvision names them, with `edit` applied
/// to the (name, dtype, shape, bytes) list before writing.
fn weights(
    dir: &Path,
    file: &str,
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let mut m = vision::build(MODEL, 1000).unwrap();
    let bytes = m.seeded_safetensors(0).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    edit(&mut v);
    let views: Vec<(String, TensorView)> = v
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let p = dir.join(file);
    std::fs::write(&p, safetensors::serialize(views, &None).unwrap()).unwrap();
    p
}

fn tensors_file(p: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(p, safetensors::serialize(views, &None).unwrap()).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn json(p: &Path) -> J {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn logits(j: &J) -> Vec<Vec<f64>> {
    j["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn classify_fp32_int8_and_quantize_roundtrip() {
    let d = tmp("flow");
    let w = weights(&d, "w.safetensors", |_| {});
    let calib = d.join("calib");
    std::fs::create_dir(&calib).unwrap();
    for i in 0..3 {
        png(
            &calib.join(format!("c{i}.png")),
            300 + 17 * i,
            240 + 31 * i,
            10 + i,
        );
    }
    // Not an image extension: skipped by --calibrate.
    std::fs::write(calib.join("notes.txt"), "not an image").unwrap();
    let (a, b) = (d.join("a.png"), d.join("b.png"));
    png(&a, 500, 375, 1);
    png(&b, 341, 600, 2);

    // fp32: five ranked lines per image with class names, and the logits.
    let j32 = d.join("fp32.json");
    let out = ok(&[
        "classify",
        "--model",
        MODEL,
        "--weights",
        s(&w),
        "--json",
        s(&j32),
        s(&a),
        s(&b),
    ]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("  ")).count(),
        10,
        "{out}"
    );
    assert!(out.contains("fp32"), "{out}");
    let j = json(&j32);
    assert_eq!(j["model"], MODEL);
    let l32 = logits(&j);
    assert_eq!(l32.len(), 2);
    assert!(l32.iter().all(|r| r.len() == 1000));
    // The top-5 are the five largest logits, largest first.
    for (r, row) in j["results"].as_array().unwrap().iter().zip(&l32) {
        let mut sorted: Vec<f64> = row.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let top: Vec<f64> = r["top5"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| row[t["class"].as_u64().unwrap() as usize])
            .collect();
        assert_eq!(top, sorted[..5].to_vec());
    }

    // quantize, then classify with its output, on two engines: same logits.
    let q = d.join("q.safetensors");
    let out = ok(&[
        "quantize",
        "--model",
        MODEL,
        "--weights",
        s(&w),
        "--calibrate",
        s(&calib),
        "--out",
        s(&q),
    ]);
    assert!(out.contains("calibrated on 3 image(s)"), "{out}");
    let jq = d.join("q.json");
    let out = ok(&[
        "classify",
        "--model",
        MODEL,
        "--weights",
        s(&q),
        "--json",
        s(&jq),
        s(&a),
        s(&b),
    ]);
    assert!(out.contains("int8"), "{out}");
    let lq = logits(&json(&jq));
    let jr = d.join("qref.json");
    ok(&[
        "classify",
        "--model",
        MODEL,
        "--weights",
        s(&q),
        "--engine",
        "reference",
        "--json",
        s(&jr),
        s(&a),
        s(&b),
    ]);
    assert_eq!(lq, logits(&json(&jr)), "reference engine differs");

    // In-memory --int8 --calibrate is the same quantization as the file.
    let jm = d.join("mem.json");
    ok(&[
        "classify",
        "--model",
        MODEL,
        "--weights",
        s(&w),
        "--int8",
        "--calibrate",
        s(&calib),
        "--json",
        s(&jm),
        s(&a),
        s(&b),
    ]);
    assert_eq!(
        lq,
        logits(&json(&jm)),
        "in-memory PTQ differs from quantize's file"
    );

    // int8 tracks fp32 (seeded weights: a loose, non-degenerate check).
    for (x, y) in l32.iter().zip(&lq) {
        let dot: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
        let n = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
        let cos = dot / (n(x) * n(y));
        assert!(cos > 0.9, "cosine fp32 vs int8 {cos}");
    }

    // --save-input then --input-tensors: the same logits as from the images.
    let si = d.join("input.safetensors");
    let jt = d.join("t.json");
    ok(&[
        "classify",
        "--model",
        MODEL,
        "--weights",
        s(&q),
        "--save-input",
        s(&si),
        s(&a),
        s(&b),
    ]);
    ok(&[
        "classify",
        "--model",
        MODEL,
        "--weights",
        s(&q),
        "--input-tensors",
        s(&si),
        "--json",
        s(&jt),
    ]);
    assert_eq!(lq, logits(&json(&jt)));

    // quantize from --input-tensors (PyTorch-comparable calibration) works
    // on a reduced size too, and --per-tensor gives another model.
    let small = d.join("small.safetensors");
    let x: Vec<f32> = (0..2 * 3 * 64 * 64)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    tensors_file(
        &small,
        &[("0", Dtype::F32, vec![2, 3, 64, 64], f32_bytes(&x))],
    );
    let qt = d.join("qt.safetensors");
    ok(&[
        "quantize",
        "--model",
        MODEL,
        "--weights",
        s(&w),
        "--input-tensors",
        s(&small),
        "--per-tensor",
        "--out",
        s(&qt),
    ]);
    let out = ok(&[
        "classify",
        "--model",
        MODEL,
        "--weights",
        s(&qt),
        "--input-tensors",
        s(&small),
    ]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("  ")).count(),
        10,
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn hostile_weights() {
    let d = tmp("weights");
    let img = d.join("a.png");
    png(&img, 256, 256, 3);
    let run = |w: &Path, names: &[&str]| {
        let j = d.join("out.json");
        fails(
            &[
                "classify",
                "--model",
                MODEL,
                "--weights",
                s(w),
                "--json",
                s(&j),
                s(&img),
            ],
            names,
        );
        assert!(!j.exists(), "--json written on failure");
    };
    // Missing, extra, mis-shaped, wrong-dtype tensors: named.
    let w = weights(&d, "missing.safetensors", |v| {
        v.retain(|t| t.0 != "stage2.0.branch1.0.weight")
    });
    run(
        &w,
        &[
            "missing.safetensors",
            "stage2.0.branch1.0.weight",
            "missing",
        ],
    );
    let w = weights(&d, "extra.safetensors", |v| {
        v.push(("head.weight".into(), Dtype::F32, vec![2], vec![0; 8]))
    });
    run(&w, &["extra.safetensors", "head.weight"]);
    let w = weights(&d, "shape.safetensors", |v| {
        let t = v.iter_mut().find(|t| t.0 == "conv1.0.weight").unwrap();
        t.2 = vec![24, 3, 1, 9]; // the same 648 values, mis-shaped
    });
    run(
        &w,
        &["shape.safetensors", "conv1.0.weight", "[24, 3, 1, 9]"],
    );
    let w = weights(&d, "dtype.safetensors", |v| {
        let t = v.iter_mut().find(|t| t.0 == "fc.bias").unwrap();
        t.1 = Dtype::F64;
        t.2 = vec![500];
    });
    run(&w, &["dtype.safetensors", "fc.bias"]);
    // A classifier of another width: the bias must agree with it.
    let w = weights(&d, "classes.safetensors", |v| {
        let t = v.iter_mut().find(|t| t.0 == "fc.weight").unwrap();
        t.2 = vec![10, 1024];
        t.3.truncate(10 * 1024 * 4);
    });
    run(&w, &["classes.safetensors", "fc.bias", "[1000]"]);
    // Another model's weights.
    let mut other = vision::build("mobilenet_v2", 1000).unwrap();
    let p = d.join("mobilenet.safetensors");
    std::fs::write(&p, other.seeded_safetensors(0).unwrap()).unwrap();
    run(&p, &["mobilenet.safetensors"]);

    // Forged headers: garbage, a header length past the end, a tensor whose
    // offsets run past the data, an empty file, a directory, a missing file.
    let good = std::fs::read(weights(&d, "good.safetensors", |_| {})).unwrap();
    let p = d.join("garbage.safetensors");
    std::fs::write(&p, b"this is not a safetensors file at all").unwrap();
    run(&p, &["garbage.safetensors", "header"]);
    let p = d.join("len.safetensors");
    let mut b = good.clone();
    b[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    run(&p, &["len.safetensors", "header"]);
    let p = d.join("offsets.safetensors");
    let hlen = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    std::fs::write(&p, &good[..8 + hlen + 100]).unwrap();
    // The file is cut inside the data: the error names the first tensor cut short.
    run(&p, &["offsets.safetensors", "data bytes", "truncated"]);
    let p = d.join("empty.safetensors");
    std::fs::write(&p, b"").unwrap();
    run(&p, &["empty.safetensors"]);
    run(&d, &[s(&d), "not a regular file"]);
    run(
        &d.join("nope.safetensors"),
        &["nope.safetensors", "No such file"],
    );

    // A quantized file: of another model (metadata), with a tensor dropped,
    // with a forged module tree.
    let calib = d.join("calib");
    std::fs::create_dir(&calib).unwrap();
    png(&calib.join("c.png"), 240, 260, 4);
    let q = d.join("q.safetensors");
    ok(&[
        "quantize",
        "--model",
        MODEL,
        "--weights",
        s(&d.join("good.safetensors")),
        "--calibrate",
        s(&calib),
        "--out",
        s(&q),
    ]);
    fails(
        &[
            "classify",
            "--model",
            "shufflenet_v2_x1_0",
            "--weights",
            s(&q),
            s(&img),
        ],
        &["q.safetensors", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0"],
    );
    fails(
        &[
            "quantize",
            "--model",
            MODEL,
            "--weights",
            s(&q),
            "--calibrate",
            s(&calib),
            "--out",
            s(&d.join("qq.safetensors")),
        ],
        &["q.safetensors", "already"],
    );
    let qb = std::fs::read(&q).unwrap();
    let st = safetensors::SafeTensors::deserialize(&qb).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&qb).unwrap();
    let md = meta.metadata().clone().unwrap();
    let rewrite =
        |file: &str, drop: Option<&str>, md: std::collections::HashMap<String, String>| {
            let views: Vec<(String, TensorView)> = st
                .tensors()
                .into_iter()
                .filter(|(n, _)| Some(n.as_str()) != drop)
                .collect();
            let p = d.join(file);
            std::fs::write(&p, safetensors::serialize(views, &Some(md)).unwrap()).unwrap();
            p
        };
    let dropped = st
        .names()
        .into_iter()
        .find(|n| n.starts_with("conv1.0.") && n.ends_with("weight"))
        .unwrap()
        .to_string();
    let p = rewrite("qmissing.safetensors", Some(&dropped), md.clone());
    run(&p, &["qmissing.safetensors", &dropped]);
    let mut forged = md.clone();
    forged.insert(
        "modules".into(),
        "{\"type\": \"QuantizableShuffleNetV2\", \"children\": 3}".into(),
    );
    let p = rewrite("qtree.safetensors", None, forged);
    run(&p, &["qtree.safetensors", "children"]);
    let mut forged = md.clone();
    forged.insert("modules".into(), "{not json".into());
    let p = rewrite("qjson.safetensors", None, forged);
    run(&p, &["qjson.safetensors", "modules"]);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn hostile_images_and_tensors() {
    let d = tmp("images");
    let w = weights(&d, "w.safetensors", |_| {});
    let good = d.join("good.png");
    png(&good, 256, 300, 5);
    let run = |img: &Path, names: &[&str]| {
        fails(
            &[
                "classify",
                "--model",
                MODEL,
                "--weights",
                s(&w),
                s(&good),
                s(img),
            ],
            names,
        );
    };
    let p = d.join("text.png");
    std::fs::write(&p, "hello, I am text").unwrap();
    run(&p, &["text.png", "not a JPEG or PNG"]);
    let p = d.join("trunc.png");
    let b = std::fs::read(&good).unwrap();
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    run(&p, &["trunc.png", "decode"]);
    let p = d.join("fake.jpg");
    std::fs::write(
        &p,
        [
            0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 2, 3,
        ],
    )
    .unwrap();
    run(&p, &["fake.jpg", "decode"]);
    // A PNG header claiming a 100000 × 100000 image.
    let p = d.join("huge.png");
    let mut b = b.clone();
    b[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    b[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    std::fs::write(&p, &b).unwrap();
    run(&p, &["huge.png"]);
    run(&d.join("missing.png"), &["missing.png", "No such file"]);
    run(&d, &[s(&d), "not a regular file"]);

    // Calibration directories: empty, or with a broken image.
    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = d.join("q.safetensors");
    fails(
        &[
            "quantize",
            "--model",
            MODEL,
            "--weights",
            s(&w),
            "--calibrate",
            s(&empty),
            "--out",
            s(&out),
        ],
        &["empty", "no .jpg"],
    );
    let bad = d.join("bad");
    std::fs::create_dir(&bad).unwrap();
    png(&bad.join("a.png"), 230, 230, 6);
    std::fs::write(bad.join("b.JPG"), "no jpeg here").unwrap();
    fails(
        &[
            "quantize",
            "--model",
            MODEL,
            "--weights",
            s(&w),
            "--calibrate",
            s(&bad),
            "--out",
            s(&out),
        ],
        &["b.JPG", "not a JPEG or PNG"],
    );
    fails(
        &[
            "classify",
            "--model",
            MODEL,
            "--weights",
            s(&w),
            "--int8",
            "--calibrate",
            s(&bad),
            s(&good),
        ],
        &["b.JPG"],
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // --input-tensors: wrong dtype, rank, channels, empty batch, NaN, no tensors.
    let t = |file: &str, name: &str, dtype: Dtype, shape: Vec<usize>, names: &[&str]| {
        let n: usize = shape.iter().product();
        let p = d.join(file);
        let bytes = vec![0u8; n * dtype.size()];
        tensors_file(&p, &[(name, dtype, shape, bytes)]);
        fails(
            &[
                "classify",
                "--model",
                MODEL,
                "--weights",
                s(&w),
                "--input-tensors",
                s(&p),
            ],
            &[&[file, name][..], names].concat(),
        );
    };
    t(
        "i64.safetensors",
        "batch0",
        Dtype::I64,
        vec![1, 3, 8, 8],
        &["I64"],
    );
    t(
        "rank.safetensors",
        "x",
        Dtype::F32,
        vec![3, 64, 64],
        &["[3, 64, 64]"],
    );
    t(
        "chan.safetensors",
        "x",
        Dtype::F32,
        vec![1, 1, 64, 64],
        &["[1, 1, 64, 64]"],
    );
    t(
        "zero.safetensors",
        "x",
        Dtype::F32,
        vec![0, 3, 64, 64],
        &["[0, 3, 64, 64]"],
    );
    let p = d.join("nan.safetensors");
    let mut x = vec![0f32; 3 * 32 * 32];
    x[7] = f32::NAN;
    tensors_file(&p, &[("x", Dtype::F32, vec![1, 3, 32, 32], f32_bytes(&x))]);
    fails(
        &[
            "classify",
            "--model",
            MODEL,
            "--weights",
            s(&w),
            "--input-tensors",
            s(&p),
        ],
        &["nan.safetensors", "x", "NaN"],
    );
    let p = d.join("none.safetensors");
    tensors_file(&p, &[]);
    fails(
        &[
            "classify",
            "--model",
            MODEL,
            "--weights",
            s(&w),
            "--input-tensors",
            s(&p),
        ],
        &["none.safetensors", "no tensors"],
    );
    // Too small for the network: an error naming the tensor, not a panic.
    let p = d.join("tiny.safetensors");
    tensors_file(
        &p,
        &[("x", Dtype::F32, vec![1, 3, 1, 1], f32_bytes(&[0.0; 3]))],
    );
    let o = rquant(&[
        "classify",
        "--model",
        MODEL,
        "--weights",
        s(&w),
        "--input-tensors",
        s(&p),
    ]);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    if o.code != Some(0) {
        fails(
            &[
                "classify",
                "--model",
                MODEL,
                "--weights",
                s(&w),
                "--input-tensors",
                s(&p),
            ],
            &["tiny.safetensors", "x"],
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn usage_errors_exit_2() {
    let d = tmp("usage");
    let w = d.join("w.safetensors");
    let img = d.join("a.png");
    fails_with(
        2,
        &["classify", "--model", "vgg16", "--weights", s(&w), s(&img)],
        &["vgg16", "resnet18"],
    );
    fails_with(
        2,
        &["classify", "--model", MODEL, "--weights", s(&w)],
        &["IMAGE"],
    );
    fails_with(
        2,
        &[
            "classify",
            "--model",
            MODEL,
            "--weights",
            s(&w),
            "--calibrate",
            s(&d),
            s(&img),
        ],
        &["--int8"],
    );
    fails_with(
        2,
        &[
            "quantize",
            "--model",
            MODEL,
            "--weights",
            s(&w),
            "--out",
            s(&d.join("q")),
        ],
        &["--calibrate"],
    );
    fails_with(
        2,
        &[
            "classify",
            "--model",
            MODEL,
            "--weights",
            s(&w),
            "--threads",
            "0",
            s(&img),
        ],
        &["--threads"],
    );
    // Output paths are checked before any work.
    png(&img, 64, 64, 0);
    fails(
        &[
            "classify",
            "--model",
            MODEL,
            "--weights",
            s(&w),
            "--json",
            s(&d.join("no/dir/x.json")),
            s(&img),
        ],
        &["no/dir"],
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// A deterministic stand-in for the `classify` fuzz target (which needs
/// nightly and cargo-fuzz): PNG and JPEG bytes with bytes overwritten or cut
/// off must decode to an error or to an image whose preprocessing is a
/// finite batch of the right size.
#[test]
fn mutated_images_are_errors_or_images() {
    use rquant_cli::imagenet;
    let d = tmp("mutate");
    let (p, j) = (d.join("m.png"), d.join("m.jpg"));
    png(&p, 61, 47, 9);
    image::open(&p)
        .unwrap()
        .save_with_format(&j, image::ImageFormat::Jpeg)
        .unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ok, mut err) = (0, 0);
    for file in [&p, &j] {
        let orig = std::fs::read(file).unwrap();
        for round in 0..400 {
            let mut b = orig.clone();
            for _ in 0..1 + round % 4 {
                let i = next() as usize % b.len();
                b[i] = next() as u8;
            }
            if round % 5 == 0 {
                b.truncate(next() as usize % b.len());
            }
            match imagenet::decode_bytes(&b, "mutated") {
                Ok(img) => {
                    ok += 1;
                    assert_eq!(img.data.len(), img.height * img.width * 3);
                    if img.height * img.width <= 1 << 22 {
                        let x = imagenet::preprocess(&img, 256, 224);
                        assert_eq!(x.len(), 3 * 224 * 224);
                        assert!(x.iter().all(|v| v.is_finite()));
                    }
                }
                Err(e) => {
                    err += 1;
                    assert!(e.starts_with("mutated: "), "{e}");
                }
            }
        }
    }
    eprintln!("mutated images: {ok} decoded, {err} errors");
    assert!(ok > 0 && err > 0);
    let _ = std::fs::remove_dir_all(&d);
}

/// `rquant quantize --calibrate DIR` on real photos (tests/data/photos:
/// PNG crops of scikit-image and scikit-learn sample images, made with
/// `expected.json` by tools/vision/photos.py --cli-fixture) against
/// PyTorch's PTQ of the same seeded model calibrated on the same PNGs
/// (torchvision's decoding and preprocessing, one image per forward, in
/// name order): rquant's preprocessing of the eval PNGs is torchvision's bit
/// for bit, and the int8 logits have cosine ≥ 0.99 to PyTorch's (or ≥
/// PyTorch's own 1- vs 2-thread calibration spread where that is wider).
#[test]
fn quantize_calibrated_on_photos_tracks_pytorch() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/photos");
    let want = json(&fx.join("expected.json"));
    assert_eq!(want["model"], MODEL);
    let d = tmp("photos");
    let w = weights(&d, "w.safetensors", |_| {});
    let q = d.join("q.safetensors");
    let out = ok(&[
        "quantize",
        "--model",
        MODEL,
        "--weights",
        s(&w),
        "--calibrate",
        s(&fx.join("calib")),
        "--out",
        s(&q),
    ]);
    let n = want["calibration_images"].as_array().unwrap().len();
    assert!(
        out.contains(&format!("calibrated on {n} image(s)")),
        "{out}"
    );
    let evals: Vec<PathBuf> = want["eval_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| fx.join("eval").join(f.as_str().unwrap()))
        .collect();
    let (jq, si) = (d.join("q.json"), d.join("input.safetensors"));
    let mut args = vec![
        "classify",
        "--model",
        MODEL,
        "--weights",
        s(&q),
        "--json",
        s(&jq),
        "--save-input",
        s(&si),
    ];
    args.extend(evals.iter().map(|p| s(p)));
    ok(&args);

    let bytes = std::fs::read(&si).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let x: Vec<f32> = st
        .tensor("input")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(
        format!("{:#018x}", rquant_models::seeded::f32_hash(&x)),
        want["eval_f32_fnv1a64"].as_str().unwrap(),
        "preprocessed eval photos differ from torchvision's"
    );

    let o = &want["output"];
    let scale = f32::from_bits(
        u32::from_str_radix(
            o["scale_f32_bits"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16,
        )
        .unwrap(),
    ) as f64;
    let zp = o["zero_point"].as_i64().unwrap();
    let torch: Vec<Vec<f64>> = o["int_repr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| (v.as_i64().unwrap() - zp) as f64 * scale)
                .collect()
        })
        .collect();
    let got = logits(&json(&jq));
    assert_eq!(got.len(), evals.len());
    // PyTorch's own spread: its repeated calibrations' cosines, per image.
    let spread: Vec<f64> = (0..evals.len())
        .map(|i| {
            ["calibrated_1_threads", "calibrated_2_threads"]
                .iter()
                .map(|k| want["thread_spread"][k]["cosine"][i].as_f64().unwrap())
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    for (i, (g, t)) in got.iter().zip(&torch).enumerate() {
        assert_eq!(g.len(), 1000);
        let dot: f64 = g.iter().zip(t).map(|(a, b)| a * b).sum();
        let n = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
        let cos = dot / (n(g) * n(t));
        let target = spread[i].min(0.99);
        eprintln!(
            "{}: cosine {cos:.6} of rquant's int8 logits to PyTorch's (target {target})",
            evals[i].display()
        );
        assert!(
            cos >= target,
            "{}: cosine {cos} < {target}",
            evals[i].display()
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}
