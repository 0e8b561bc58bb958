//! A second, independent implementation of the seeded-weights formula of tools/vision/README.md,
//! written from the README text alone (no crate, no dependencies), to show the spec is complete.
//! Not part of the workspace.
//!
//!     rustc -O --edition 2021 tools/vision/seeded_check.rs -o /tmp/seeded_check
//!     python tools/vision/seeded.py --shapes resnet18 > /tmp/resnet18.shapes   # "key dim dim ..." lines
//!     /tmp/seeded_check /tmp/resnet18.shapes 1.0 224
//!
//! prints the state_dict digest and the hash of the eval input (seed 1, [2, 3, S, S]); both must
//! equal `weights.state_dict_digest` and `input.eval.f32_fnv1a64` of the model's expected JSON.
use std::collections::HashMap;
use std::io::BufRead;

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uniform(name: &str, n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f32> {
    let key = fnv1a64(name.as_bytes()) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let (lo32, w32) = (lo as f32, (hi - lo) as f32);
    (0..n as u64)
        .map(|i| {
            let u = (splitmix64(key ^ i) >> 40) as f32 * (1.0 / 16_777_216.0);
            w32 * u + lo32 // f32 multiply, then f32 add: Rust never fuses these
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: seeded_check SHAPES_FILE CONV_GAIN INPUT_SIZE");
        std::process::exit(2);
    }
    let gain: f64 = args[2].parse().expect("conv gain");
    let size: usize = args[3].parse().expect("input size");
    let file = std::fs::File::open(&args[1]).expect("shapes file");
    let entries: Vec<(String, Vec<usize>)> = std::io::BufReader::new(file)
        .lines()
        .map(|l| {
            let l = l.unwrap();
            let mut it = l.split_whitespace();
            let k = it.next().unwrap().to_string();
            (k, it.map(|d| d.parse().unwrap()).collect())
        })
        .collect();
    let shapes: HashMap<String, Vec<usize>> = entries.iter().cloned().collect();
    let fan_in = |w: &[usize]| w[1..].iter().product::<usize>() as f64;
    let mut digest = 0u64;
    for (key, shape) in &entries {
        let (prefix, suffix) = key.rsplit_once('.').unwrap();
        let range = match (suffix, shape.len()) {
            ("weight", 4) => {
                let a = ((3.0 * gain) / fan_in(shape)).sqrt();
                Some((-a, a))
            }
            ("weight", 2) => {
                let a = (3.0 / fan_in(shape)).sqrt();
                Some((-a, a))
            }
            ("weight", 1) => Some((0.5, 1.5)),
            ("bias", 1) => match shapes.get(&format!("{prefix}.weight")) {
                Some(w) if w.len() >= 2 => {
                    let b = 1.0 / fan_in(w).sqrt();
                    Some((-b, b))
                }
                Some(w) if w.len() == 1 => Some((-0.2, 0.2)),
                _ => panic!("{key}: no rule"),
            },
            ("running_mean", 1) => Some((-0.1, 0.1)),
            ("running_var", 1) => Some((0.5, 2.0)),
            ("num_batches_tracked", 0) => None,
            _ => panic!("{key}: no rule"),
        };
        let mut bytes = key.as_bytes().to_vec();
        bytes.push(0);
        match range {
            Some((lo, hi)) => {
                let n = shape.iter().product();
                for v in uniform(key, n, 0, lo, hi) {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
            }
            None => bytes.extend_from_slice(&0i64.to_le_bytes()),
        }
        digest = digest.wrapping_add(fnv1a64(&bytes));
    }
    let x: Vec<u8> = uniform("input", 2 * 3 * size * size, 1, -2.0, 2.0)
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    println!("state_dict_digest {digest:#018x}");
    println!("eval input (seed 1, [2, 3, {size}, {size}]) f32_fnv1a64 {:#018x}", fnv1a64(&x));
}
