//! Public ops driven by fuzzed shapes, qparams and data: every engine present
//! must return exactly the reference engine's result (or the same error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rquant_core::{Conv2dParams, QParams, QTensor, Engine, Tensor};

struct Bytes<'a>(&'a [u8]);
impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn small(&mut self, max: u8) -> usize {
        (self.u8() % max) as usize
    }
    fn f32(&mut self) -> f32 {
        f32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

fn same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    e: &Engine,
    a: &rquant_core::Result<T>,
    b: &rquant_core::Result<T>,
) {
    match (a, b) {
        (Ok(x), Ok(y)) => assert_eq!(x, y, "{what}: {} differs from reference", e.name()),
        // Compare errors by text: a NaN scale inside an error is not equal to itself.
        (Err(x), Err(y)) => assert_eq!(
            x.to_string(),
            y.to_string(),
            "{what}: {} error differs",
            e.name()
        ),
        _ => panic!(
            "{what}: {} ok/err differs from reference: {a:?} vs {b:?}",
            e.name()
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let (m, k, n) = (b.small(9) + 1, b.small(40) + 1, b.small(20) + 1);
    let x_zp = b.u8() as i64;
    let x_scale = (b.u8() as f64 + 1.0) / 512.0;
    let w: Vec<i8> = (0..n * k).map(|_| b.u8() as i8).collect();
    let x: Vec<u8> = (0..m * k).map(|_| b.u8()).collect();
    let per_channel = b.u8() & 1 == 1;
    let qp = if per_channel {
        QParams::PerChannel {
            scales: (0..n).map(|_| (b.u8() as f64 + 1.0) / 4096.0).collect(),
            zero_points: (0..n).map(|_| b.u8() as i8 as i64).collect(),
            axis: 0,
        }
    } else {
        QParams::per_tensor((b.u8() as f64 + 1.0) / 4096.0, b.u8() as i8 as i64)
    };
    let bias: Option<Vec<f32>> = (b.u8() & 1 == 1).then(|| (0..n).map(|_| b.f32()).collect());
    let out_scale = f64::from(b.f32()).abs();
    let out_zp = b.u8() as i64;
    let relu = b.u8() & 1 == 1;
    let Ok(wq) = QTensor::from_int_repr(vec![n, k], w, qp) else {
        return;
    };
    let Ok(xq) = QTensor::from_int_repr(vec![m, k], x.clone(), QParams::per_tensor(x_scale, x_zp))
    else {
        return;
    };
    let xf = Tensor::new([m, k], x.iter().map(|&v| v as f32 * 0.37 - 20.0).collect()).unwrap();
    let engines = rquant_nn::engines::all_paths();
    let reference = engines.last().expect("reference engine").clone();
    let rw = reference.pack_linear(wq.clone(), bias.clone());
    for e in &engines[..engines.len() - 1] {
        let ew = e.pack_linear(wq.clone(), bias.clone());
        match (&rw, &ew) {
            (Ok(rw), Ok(ew)) => {
                same(
                    "linear",
                    e,
                    &reference.linear(&xq, rw, out_scale, out_zp, relu),
                    &e.linear(&xq, ew, out_scale, out_zp, relu),
                );
                let a = reference
                    .linear_dynamic(&xf, rw, relu)
                    .map(|t| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                let c = e
                    .linear_dynamic(&xf, ew, relu)
                    .map(|t| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>());
                same("linear_dynamic", e, &a, &c);
            }
            (Err(a), Err(c)) => assert_eq!(a.to_string(), c.to_string()),
            _ => panic!("pack_linear ok/err differs"),
        }
        // conv2d on the same bytes, as a k-channel 1x1..3x3 image.
        let c_in = b.small(4) + 1;
        let kh = b.small(3) + 1;
        let groups = if b.u8() & 1 == 1 { c_in } else { 1 };
        let o = groups * (b.small(3) + 1);
        let p = Conv2dParams {
            stride: [b.small(2) + 1, 1],
            padding: [b.small(2), b.small(2)],
            dilation: [1, b.small(2) + 1],
            groups,
        };
        let (h, wd) = (b.small(7) + 1, b.small(7) + 1);
        let img: Vec<u8> = (0..c_in * h * wd).map(|_| b.u8()).collect();
        let cw: Vec<i8> = (0..o * (c_in / groups) * kh * kh)
            .map(|_| b.u8() as i8)
            .collect();
        let Ok(xi) = QTensor::from_int_repr(
            vec![1, c_in, h, wd],
            img,
            QParams::per_tensor(x_scale, x_zp),
        ) else {
            return;
        };
        let Ok(cwq) = QTensor::from_int_repr(
            vec![o, c_in / groups, kh, kh],
            cw,
            QParams::per_tensor(0.01, 0),
        ) else {
            return;
        };
        let rc = reference.pack_conv2d(cwq.clone(), None, p);
        let ec = e.pack_conv2d(cwq, None, p);
        if let (Ok(rc), Ok(ec)) = (&rc, &ec) {
            same(
                "conv2d",
                e,
                &reference.conv2d(&xi, rc, out_scale, out_zp, relu),
                &e.conv2d(&xi, ec, out_scale, out_zp, relu),
            );
        }
    }
});
