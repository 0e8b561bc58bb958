//! Seeded fp32 weights and inputs by formula (tools/vision/README.md, "The
//! seeded-weights formula (v1)"): no pretrained weights can be downloaded
//! here and CI has no torch, so rquant and tools/vision/seeded.py build the
//! same tensors, element for element, from a tensor's state_dict key, its
//! shape and a seed. The ranges follow the key's last component and the
//! shapes only (conv/linear weights ±sqrt(3g/fan_in), biases ±1/sqrt(fan_in),
//! BatchNorm γ, β, running statistics), so any model's state_dict can be
//! seeded. The digest is the one the expected files record.

use crate::{bail, Result};

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_from(0xcbf2_9ce4_8422_2325, bytes)
}

/// FNV-1a continued from state `h`.
pub fn fnv1a64_from(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's output function of `z`.
pub fn splitmix64(z: u64) -> u64 {
    let mut z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` values of tensor `name` in `[lo, hi)` (lo, hi in f64, rounded to f32
/// once each), seed `seed`: `f32(f32(w32·u) + lo32)` with `u` a 24-bit
/// uniform, two roundings (Rust does not contract this into an FMA).
pub fn uniform(name: &str, n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f32> {
    let base = fnv1a64(name.as_bytes()) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let (lo32, w32) = (lo as f32, (hi - lo) as f32);
    (0..n as u64)
        .map(|i| {
            let u = (splitmix64(base ^ i) >> 40) as f32 * (1.0 / 16_777_216.0);
            w32 * u + lo32
        })
        .collect()
}

/// One entry of a state_dict to seed: key and shape (`num_batches_tracked`
/// keys are 0-d int64 and get the value 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A seeded value: f32 data, or an int64 scalar (`num_batches_tracked`).
#[derive(Debug, Clone, PartialEq)]
pub enum Seeded {
    F32(Vec<f32>),
    I64(i64),
}

/// The formula's range for `key` (with `shapes` giving sibling weights'
/// shapes, for biases) and conv gain `g`.
fn range(key: &str, shape: &[usize], sibling: Option<&[usize]>, g: f64) -> Result<(f64, f64)> {
    let fan_in = |s: &[usize]| s[1..].iter().product::<usize>() as f64;
    let last = key.rsplit('.').next().unwrap_or(key);
    Ok(match (last, shape.len(), sibling.map(<[usize]>::len)) {
        ("weight", 4, _) => {
            let b = ((3.0 * g) / fan_in(shape)).sqrt();
            (-b, b)
        }
        ("weight", 2, _) => {
            let b = (3.0 / fan_in(shape)).sqrt();
            (-b, b)
        }
        ("weight", 1, _) => (0.5, 1.5),
        ("bias", _, Some(2)) | ("bias", _, Some(4)) => {
            let b = 1.0 / fan_in(sibling.expect("matched")).sqrt();
            (-b, b)
        }
        ("bias", _, Some(1)) => (-0.2, 0.2),
        ("running_mean", _, _) => (-0.1, 0.1),
        ("running_var", _, _) => (0.5, 2.0),
        _ => bail!("seeded weights: no formula range for {key} of shape {shape:?}"),
    })
}

/// The seeded state_dict for `specs` (a model's keys and shapes), seed
/// `seed`, conv gain `g` (1 for the residual models; see the README).
pub fn state_dict(specs: &[Spec], seed: u64, g: f64) -> Result<Vec<(String, Seeded)>> {
    specs
        .iter()
        .map(|s| {
            if s.name.ends_with("num_batches_tracked") {
                return Ok((s.name.clone(), Seeded::I64(0)));
            }
            let sibling = s
                .name
                .strip_suffix("bias")
                .map(|p| format!("{p}weight"))
                .and_then(|w| specs.iter().find(|t| t.name == w))
                .map(|t| t.shape.as_slice());
            let (lo, hi) = range(&s.name, &s.shape, sibling, g)?;
            let n = s.shape.iter().product();
            Ok((
                s.name.clone(),
                Seeded::F32(uniform(&s.name, n, lo, hi, seed)),
            ))
        })
        .collect()
}

/// The order-independent digest the expected files record: the sum mod 2^64
/// of `fnv1a64(key ‖ 0x00 ‖ little-endian bytes)` over every tensor.
pub fn digest(sd: &[(String, Seeded)]) -> u64 {
    sd.iter().fold(0u64, |acc, (k, v)| {
        let h = fnv1a64_from(fnv1a64(k.as_bytes()), &[0]);
        let h = match v {
            Seeded::F32(d) => d.iter().fold(h, |h, x| fnv1a64_from(h, &x.to_le_bytes())),
            Seeded::I64(x) => fnv1a64_from(h, &x.to_le_bytes()),
        };
        acc.wrapping_add(h)
    })
}

/// A seeded input batch `[b, 3, h, w]` in [-2, 2) (name "input").
pub fn input(shape: [usize; 4], seed: u64) -> Vec<f32> {
    uniform("input", shape.iter().product(), -2.0, 2.0, seed)
}

/// FNV-1a-64 of f32 values' little-endian bytes.
pub fn f32_hash(v: &[f32]) -> u64 {
    v.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        fnv1a64_from(h, &x.to_le_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's test vectors (bit patterns from tools/vision/seeded.py).
    #[test]
    fn test_vectors() {
        assert_eq!(fnv1a64(b"conv1.weight"), 0x69a2_9a2c_ee47_d254);
        let b = (3.0f64 / 147.0).sqrt();
        let v = uniform("conv1.weight", 3, -b, b, 0);
        assert_eq!(
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            [0x3c53_0090, 0xbdf8_cb4c, 0x3e06_96a1]
        );
        let b = 1.0 / 512f64.sqrt();
        let v = uniform("fc.bias", 3, -b, b, 0);
        assert_eq!(
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            [0xbb01_7520, 0x3b4c_e790, 0xb70e_1000]
        );
        let v = uniform("bn1.running_var", 3, 0.5, 2.0, 0);
        assert_eq!(
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            [0x3fbb_52b4, 0x3fe0_a1e6, 0x3fe2_fded]
        );
        let v = input([1, 3, 1, 1], 1);
        assert_eq!(
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            [0x3d9b_fac0, 0xbea9_cfa0, 0x3fc2_5354]
        );
        let v = input([1, 3, 1, 1], 100);
        assert_eq!(
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            [0xbfe9_2690, 0xbfff_e6fa, 0xbf96_c0e8]
        );
        let b = (3.0f64 * 2.0 / 27.0).sqrt();
        let v = uniform("Conv2d_1a_3x3.conv.weight", 3, -b, b, 0);
        assert_eq!(
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            [0xbe1b_a1d0, 0xbe9a_242e, 0x3e42_9b26]
        );
    }

    #[test]
    fn ranges_follow_keys_and_shapes() {
        let specs = vec![
            Spec {
                name: "c.weight".into(),
                shape: vec![4, 2, 3, 3],
            },
            Spec {
                name: "c.bias".into(),
                shape: vec![4],
            },
            Spec {
                name: "bn.weight".into(),
                shape: vec![4],
            },
            Spec {
                name: "bn.bias".into(),
                shape: vec![4],
            },
            Spec {
                name: "bn.num_batches_tracked".into(),
                shape: vec![],
            },
        ];
        let sd = state_dict(&specs, 0, 1.0).unwrap();
        let f = |i: usize| match &sd[i].1 {
            Seeded::F32(v) => v.clone(),
            Seeded::I64(_) => panic!(),
        };
        let b = (3.0f64 / 18.0).sqrt() as f32;
        assert!(f(0).iter().all(|v| v.abs() <= b));
        let b = (1.0 / 18f64.sqrt()) as f32;
        assert!(f(1).iter().all(|v| v.abs() <= b));
        assert!(f(2).iter().all(|v| (0.5..=1.5).contains(v)));
        assert!(f(3).iter().all(|v| v.abs() <= 0.2));
        assert_eq!(sd[4].1, Seeded::I64(0));
        assert!(state_dict(
            &[Spec {
                name: "x.gamma".into(),
                shape: vec![3]
            }],
            0,
            1.0
        )
        .is_err());
    }
}
