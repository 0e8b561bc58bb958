//! Hostile or odd files for the models' loaders (memory-mapped safetensors,
//! tokenizer.json, config.json): errors naming the file, never a panic or an
//! allocation of what a forged header claims.

use rquant_models::bert::{load_tokenizer, BertConfig};
use rquant_models::weights::Weights;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rquant-forged-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn st(header: &str, data: usize) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.resize(b.len() + data, 0);
    b
}

fn open_err(p: &std::path::Path) -> String {
    match Weights::open(p.to_str().unwrap()) {
        Ok(_) => panic!("{} opened", p.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn forged_and_odd_safetensors_files_are_errors() {
    let d = tmp("st");
    let good = st(
        r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
        16,
    );
    let p = d.join("m.safetensors");
    std::fs::write(&p, &good).unwrap();
    let w = Weights::open(p.to_str().unwrap()).unwrap();
    assert_eq!(w.f32("w", &[2, 2]).unwrap(), vec![0.0; 4]);
    // Shape, dtype and presence are checked before any data is copied.
    let msg = w.f32("w", &[1 << 40, 1 << 40]).unwrap_err().to_string();
    assert!(
        msg.contains("m.safetensors: tensor w has shape [2, 2]"),
        "{msg}"
    );
    assert!(w
        .f32("v", &[1])
        .unwrap_err()
        .to_string()
        .contains("missing"));

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("garbage", b"not a safetensors file at all".to_vec()),
        ("huge_header_len", {
            let mut b = u64::MAX.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            b
        }),
        (
            "overflowing_shape",
            st(
                r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#,
                0,
            ),
        ),
        (
            "offsets_past_end",
            st(
                r#"{"w":{"dtype":"F32","shape":[1048576,1048576],"data_offsets":[0,4398046511104]}}"#,
                16,
            ),
        ),
    ];
    for (name, bytes) in cases {
        let p = d.join(format!("{name}.safetensors"));
        std::fs::write(&p, bytes).unwrap();
        let msg = open_err(&p);
        assert!(
            msg.contains(&format!("{name}.safetensors")),
            "{name}: {msg}"
        );
    }
    // A directory, a missing file, a device.
    let msg = open_err(&d);
    assert!(msg.contains("not a regular file"), "{msg}");
    assert!(open_err(&d.join("missing")).contains("missing"));
    if std::path::Path::new("/dev/zero").exists() {
        let msg = open_err(std::path::Path::new("/dev/zero"));
        assert!(msg.starts_with("/dev/zero: not a regular file"), "{msg}");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn corrupt_tokenizer_and_config_files_are_errors() {
    let d = tmp("tok");
    for (name, text) in [
        ("empty", ""),
        ("truncated", r#"{"version": "1.0", "model": {"type": "Wor"#),
        ("garbage", "\u{0}\u{1}binary"),
        ("object", "{}"),
        (
            "wrong_types",
            r#"{"version": 1, "model": {"type": "WordPiece", "vocab": 3}}"#,
        ),
    ] {
        let p = d.join(format!("{name}.json"));
        std::fs::write(&p, text).unwrap();
        let ps = p.to_str().unwrap();
        let msg = load_tokenizer(ps, 8).err().unwrap().to_string();
        assert!(msg.starts_with(ps), "{name}: {msg}");
        let msg = BertConfig::from_json(text, ps).unwrap_err().to_string();
        assert!(msg.starts_with(ps), "{name}: {msg}");
    }
    let msg = load_tokenizer(d.to_str().unwrap(), 8)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.starts_with(d.to_str().unwrap()), "{msg}");
    // A device is refused before reading (reading /dev/zero never ends).
    if std::path::Path::new("/dev/zero").exists() {
        let msg = load_tokenizer("/dev/zero", 8).err().unwrap().to_string();
        assert!(
            msg.contains("/dev/zero") && msg.contains("not a regular file"),
            "{msg}"
        );
    }
    // SentenceEncoder::from_dir reads config.json the same way.
    let md = d.join("model");
    std::fs::create_dir_all(md.join("config.json")).unwrap();
    let msg = rquant_models::bert::SentenceEncoder::from_dir(
        &md,
        rquant_models::bert::Precision::Fp32,
        None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        msg.contains("config.json") && msg.contains("not a regular file"),
        "{msg}"
    );
    // Sizes that are not positive integers; huge ones are only checked
    // against the weights later (no allocation from config.json).
    for bad in [
        r#""vocab_size": -1"#,
        r#""vocab_size": 0"#,
        r#""vocab_size": "3""#,
    ] {
        let text = format!(
            r#"{{{bad}, "hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 1,
                "intermediate_size": 4, "max_position_embeddings": 8, "type_vocab_size": 2}}"#
        );
        let msg = BertConfig::from_json(&text, "c.json")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("c.json") && msg.contains("vocab_size"),
            "{msg}"
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn charlstm_empty_embedding_of_huge_width_is_an_error() {
    // [0, usize::MAX] holds no bytes; its width plus the LSTM widths overflowed.
    let d = tmp("charlstm");
    let p = d.join("c.safetensors");
    let h = format!(
        r#"{{"embedding.weight":{{"dtype":"F32","shape":[0,{}],"data_offsets":[0,0]}}}}"#,
        usize::MAX
    );
    std::fs::write(&p, st(&h, 0)).unwrap();
    let e = rquant_nn::engines::available().pop().unwrap();
    let msg = rquant_models::charlstm::CharLstm::load(
        p.to_str().unwrap(),
        rquant_models::bert::Precision::Fp32,
        &e,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        msg.contains("c.safetensors: tensor embedding.weight"),
        "{msg}"
    );
    std::fs::remove_dir_all(&d).ok();
}
