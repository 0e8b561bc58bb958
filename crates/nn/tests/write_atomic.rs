//! `write_atomic`: the whole new file or the old one, never a part, and no
//! temporary file left behind on an error.

use rquant_nn::io::{load_quantized, write_atomic};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rquant-wa-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn entries(d: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn writes_replaces_and_cleans_up() {
    let d = tmp("ok");
    let p = d.join("out.json");
    write_atomic(&p, b"first").unwrap();
    write_atomic(&p, b"second").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"second");
    assert_eq!(entries(&d), ["out.json"]);

    // The target is a directory: an error naming it, the directory intact,
    // no temporary file left.
    std::fs::create_dir(d.join("sub")).unwrap();
    let msg = write_atomic(&d.join("sub"), b"x").unwrap_err().to_string();
    assert!(msg.contains("sub"), "{msg}");
    assert!(d.join("sub").is_dir());
    assert_eq!(entries(&d), ["out.json", "sub"]);

    // A missing directory: an error naming the path.
    let q = d.join("missing/out.json");
    let msg = write_atomic(&q, b"x").unwrap_err().to_string();
    assert!(msg.starts_with(&*q.to_string_lossy()), "{msg}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn model_files_must_be_regular_files() {
    let d = tmp("rd");
    let msg = load_quantized(d.to_str().unwrap(), None)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not a regular file"), "{msg}");
    if std::path::Path::new("/dev/zero").exists() {
        // Read whole, it would exhaust memory.
        let msg = rquant_nn::io::read_state_dict("/dev/zero")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("/dev/zero: file: not a regular file"),
            "{msg}"
        );
    }
    std::fs::remove_dir_all(&d).ok();
}
