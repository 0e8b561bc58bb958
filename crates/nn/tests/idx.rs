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
