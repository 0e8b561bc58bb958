//! The IDX reader on forged headers: errors naming the file and field, never
//! a panic or a size that wrapped.

use rquant_nn::mnist::parse_idx;

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

#[test]
fn well_formed_file_reads() {
    let (dims, data) = parse_idx(&idx(&[2, 3], &[1, 2, 3, 4, 5, 6]), "t.idx").unwrap();
    assert_eq!(dims, vec![2, 3]);
    assert_eq!(data, vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn forged_headers_are_errors() {
    // Dimensions whose product overflows usize (and, wrapped, would be 0 = the body length).
    let e = parse_idx(
        &idx(&[u32::MAX, u32::MAX, u32::MAX, 65536, 65536], &[]),
        "big.idx",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("big.idx") && e.to_string().contains("overflow"),
        "{e}"
    );
    // Truncated data, truncated header, wrong magic, empty file.
    assert!(parse_idx(&idx(&[2, 3], &[1, 2]), "t.idx")
        .unwrap_err()
        .to_string()
        .contains("data"));
    assert!(parse_idx(&[0, 0, 8, 3, 0, 0], "t.idx")
        .unwrap_err()
        .to_string()
        .contains("truncated"));
    assert!(parse_idx(&[0, 0, 9, 1, 0, 0, 0, 0], "t.idx")
        .unwrap_err()
        .to_string()
        .contains("magic"));
    assert!(parse_idx(&[], "t.idx").is_err());
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rquant-idx-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gz(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(raw).unwrap();
    z.finish().unwrap()
}

#[test]
fn odd_files_are_errors_naming_the_file() {
    use rquant_nn::mnist::read_idx;
    let d = tmp("odd");
    let err = |p: &std::path::Path| read_idx(p).unwrap_err().to_string();
    // Missing, a directory, a device that never ends (read whole, it would
    // exhaust memory).
    let msg = err(&d.join("missing"));
    assert!(msg.contains("missing"), "{msg}");
    let msg = err(&d);
    assert!(
        msg.contains(&*d.to_string_lossy()) && msg.contains("not a regular file"),
        "{msg}"
    );
    if std::path::Path::new("/dev/zero").exists() {
        let msg = err(std::path::Path::new("/dev/zero"));
        assert!(
            msg.starts_with("/dev/zero: file: not a regular file"),
            "{msg}"
        );
    }
    // gzip: good, truncated, corrupt.
    let good = gz(&idx(&[3], &[7, 8, 9]));
    std::fs::write(d.join("a.gz"), &good).unwrap();
    assert_eq!(read_idx(&d.join("a")).unwrap().1, vec![7, 8, 9]);
    std::fs::write(d.join("b.gz"), &good[..good.len() - 6]).unwrap();
    let msg = err(&d.join("b"));
    assert!(msg.contains("b.gz"), "{msg}");
    let mut bad = good.clone();
    bad[12] ^= 0xff;
    bad[13] ^= 0xff;
    std::fs::write(d.join("c.gz"), &bad).unwrap();
    let msg = err(&d.join("c"));
    assert!(msg.contains("c.gz"), "{msg}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn dataset_dims_errors_name_the_file() {
    use rquant_nn::mnist::Dataset;
    let d = tmp("ds");
    std::fs::write(d.join("t-images-idx3-ubyte"), idx(&[2, 2, 2], &[0; 8])).unwrap();
    std::fs::write(d.join("t-labels-idx1-ubyte"), idx(&[3], &[0; 3])).unwrap();
    let msg = Dataset::load(&d, "t", None).unwrap_err().to_string();
    assert!(msg.contains("t-labels-idx1-ubyte: dims: [3]"), "{msg}");
    std::fs::write(d.join("t-images-idx3-ubyte"), idx(&[2, 4], &[0; 8])).unwrap();
    let msg = Dataset::load(&d, "t", None).unwrap_err().to_string();
    assert!(msg.contains("t-images-idx3-ubyte: dims: [2, 4]"), "{msg}");
    std::fs::write(d.join("t-labels-idx1-ubyte"), idx(&[2], &[1, 2])).unwrap();
    std::fs::write(d.join("t-images-idx3-ubyte"), idx(&[2, 2, 2], &[0; 8])).unwrap();
    assert_eq!(Dataset::load(&d, "t", None).unwrap().len(), 2);
    std::fs::remove_dir_all(&d).ok();
}
