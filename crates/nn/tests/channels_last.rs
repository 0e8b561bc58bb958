//! Channels-last (NHWC) quantized activations give the bits of the NCHW ops:
//! every memory-format-aware op of the front end and of `core::portable` is
//! run on the same logical tensor stored both ways, and the channels-last
//! result, brought back to NCHW, must equal the NCHW result. Broadcasting
//! add/mul is checked against the same op on an explicitly expanded operand.

use rquant_core::{
    AvgPool2dParams, BinaryOp, Conv2dParams, Engine, MaxPool2dParams, MemoryFormat, QParams,
    QTensor, Tensor,
};

const CL: MemoryFormat = MemoryFormat::ChannelsLast;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn upto(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn rand_q(r: &mut Rng, shape: &[usize], scale: f64, zp: i64) -> QTensor<u8> {
    let n: usize = shape.iter().product();
    let data = (0..n).map(|_| r.next() as u8).collect();
    QTensor::from_int_repr(shape.to_vec(), data, QParams::per_tensor(scale, zp)).unwrap()
}

/// `y` (any format) equals `want` (contiguous) logically, and has format `f`.
fn same(y: QTensor<u8>, want: &QTensor<u8>, f: MemoryFormat, what: &str) {
    assert_eq!(y.memory_format(), f, "{what}: format");
    let y = y.contiguous();
    assert_eq!(y.shape(), want.shape(), "{what}: shape");
    assert_eq!(y.q_per_tensor(), want.q_per_tensor(), "{what}: qparams");
    assert_eq!(y.int_repr(), want.int_repr(), "{what}");
}

/// Every engine and ISA path this machine has, the reference included.
fn engines() -> Vec<Engine> {
    rquant_nn::engines::all_paths()
}

#[test]
fn pooling_and_elementwise_ops_match_nchw() {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    for e in engines() {
        for case in 0..40 {
            let (n, c, h, w) = (1 + r.upto(2), 1 + r.upto(19), 1 + r.upto(9), 1 + r.upto(9));
            let x = {
                let zp = r.upto(256) as i64;
                rand_q(&mut r, &[n, c, h, w], 0.05, zp)
            };
            let xl = x.to_format(CL);
            assert_eq!(xl.storage_shape(), vec![n, h, w, c]);
            let what = format!("case {case} {:?}", x.shape());
            let k = [1 + r.upto(h.min(3)), 1 + r.upto(w.min(3))];
            let mp = MaxPool2dParams {
                kernel: k,
                stride: [1 + r.upto(2), 1 + r.upto(2)],
                padding: [r.upto(k[0] / 2 + 1), r.upto(k[1] / 2 + 1)],
                dilation: [1 + r.upto(2), 1],
                ceil_mode: r.upto(2) == 1,
            };
            if let Ok(want) = e.max_pool2d(&x, &mp) {
                same(
                    e.max_pool2d(&xl, &mp).unwrap(),
                    &want,
                    CL,
                    &format!("max_pool {what} {mp:?}"),
                );
            }
            let ap = AvgPool2dParams {
                kernel: k,
                stride: [1 + r.upto(2), 1 + r.upto(2)],
                padding: [r.upto(k[0] / 2 + 1), r.upto(k[1] / 2 + 1)],
                ceil_mode: r.upto(2) == 1,
                count_include_pad: r.upto(2) == 1,
                divisor_override: if r.upto(4) == 0 {
                    Some(1 + r.upto(9))
                } else {
                    None
                },
            };
            if let Ok(want) = e.avg_pool2d(&x, &ap) {
                same(
                    e.avg_pool2d(&xl, &ap).unwrap(),
                    &want,
                    CL,
                    &format!("avg_pool {what} {ap:?}"),
                );
            }
            let os = [1 + r.upto(h), 1 + r.upto(w)];
            let want = e.adaptive_avg_pool2d(&x, os).unwrap();
            same(
                e.adaptive_avg_pool2d(&xl, os).unwrap(),
                &want,
                CL,
                &format!("adaptive {what}"),
            );
            same(e.relu(&xl).unwrap(), &e.relu(&x).unwrap(), CL, &what);
            same(
                e.hardswish(&xl, 0.03, 100).unwrap(),
                &e.hardswish(&x, 0.03, 100).unwrap(),
                CL,
                &what,
            );
            let b = {
                let zp = r.upto(256) as i64;
                rand_q(&mut r, &[n, c, h, w], 0.07, zp)
            };
            for op in [BinaryOp::Add, BinaryOp::AddRelu, BinaryOp::Mul] {
                let want = e.binary(op, &x, &b, 0.1, 120).unwrap();
                // Both channels-last, or mixed (b converted to a's format).
                same(
                    e.binary(op, &xl, &b.to_format(CL), 0.1, 120).unwrap(),
                    &want,
                    CL,
                    &what,
                );
                same(e.binary(op, &xl, &b, 0.1, 120).unwrap(), &want, CL, &what);
                same(
                    e.binary(op, &x, &b.to_format(CL), 0.1, 120).unwrap(),
                    &want,
                    MemoryFormat::Contiguous,
                    &what,
                );
            }
            // cat along every dimension.
            for dim in 0..4 {
                let mut shape2 = vec![n, c, h, w];
                shape2[dim] = 1 + r.upto(4);
                let z = rand_q(&mut r, &shape2, 0.02, 7);
                let want = e.cat(&[&x, &z], dim as i64, 0.06, 50).unwrap();
                let got = e
                    .cat(&[&xl, &z.to_format(CL)], dim as i64, 0.06, 50)
                    .unwrap();
                same(got, &want, CL, &format!("cat dim {dim} {what}"));
            }
        }
    }
}

/// `b` expanded to `shape` by PyTorch's broadcasting, as a contiguous tensor.
fn expand(b: &QTensor<u8>, shape: &[usize]) -> QTensor<u8> {
    let b = b.clone().contiguous();
    let nd = shape.len();
    let mut bs = vec![1usize; nd];
    bs[nd - b.ndim()..].copy_from_slice(b.shape());
    let n: usize = shape.iter().product();
    let mut data = Vec::with_capacity(n);
    for i in 0..n {
        let (mut rem, mut off, mut stride) = (i, 0, 1);
        let mut coords = vec![0; nd];
        for d in (0..nd).rev() {
            coords[d] = rem % shape[d];
            rem /= shape[d];
        }
        for d in (0..nd).rev() {
            if bs[d] != 1 {
                off += coords[d] * stride;
            }
            stride *= bs[d];
        }
        data.push(b.int_repr()[off]);
    }
    let (s, z) = b.q_per_tensor().unwrap();
    QTensor::from_int_repr(shape.to_vec(), data, QParams::per_tensor(s, z)).unwrap()
}

#[test]
fn broadcasting_add_and_mul_match_the_expanded_operand() {
    let mut r = Rng(77);
    for e in engines() {
        for _ in 0..30 {
            let (n, c, h, w) = (1 + r.upto(3), 1 + r.upto(17), 1 + r.upto(6), 1 + r.upto(6));
            let a = {
                let zp = r.upto(256) as i64;
                rand_q(&mut r, &[n, c, h, w], 0.04, zp)
            };
            for bshape in [
                vec![n, c, 1, 1],
                vec![1, c, 1, 1],
                vec![c, 1, 1],
                vec![w],
                vec![1, 1, h, w],
                vec![n, 1, h, 1],
            ] {
                let b = {
                    let zp = r.upto(256) as i64;
                    rand_q(&mut r, &bshape, 0.09, zp)
                };
                let full = expand(&b, &[n, c, h, w]);
                for op in [BinaryOp::Add, BinaryOp::AddRelu, BinaryOp::Mul] {
                    let want = e.binary(op, &a, &full, 0.2, 90).unwrap();
                    for (fa, fb) in [
                        (MemoryFormat::Contiguous, MemoryFormat::Contiguous),
                        (CL, MemoryFormat::Contiguous),
                        (CL, CL),
                    ] {
                        let (aa, bb) = (a.to_format(fa), b.to_format(fb));
                        let what = format!("{op:?} {:?} x {bshape:?} {fa:?}/{fb:?}", a.shape());
                        same(e.binary(op, &aa, &bb, 0.2, 90).unwrap(), &want, fa, &what);
                        // The small operand first: the same bits (squeeze-excitation's
                        // scale * x); equal shapes keep the first operand's format.
                        let f = if bb.shape() == aa.shape() { fb } else { fa };
                        same(e.binary(op, &bb, &aa, 0.2, 90).unwrap(), &want, f, &what);
                    }
                }
            }
        }
        // Shapes that broadcast neither way are an error naming both.
        let a = rand_q(&mut r, &[1, 3, 2, 2], 0.1, 0);
        let b = rand_q(&mut r, &[1, 2, 2, 2], 0.1, 0);
        let err = e.add(&a, &b, 0.1, 0).unwrap_err().to_string();
        assert!(
            err.contains("[1, 3, 2, 2]") && err.contains("[1, 2, 2, 2]"),
            "{err}"
        );
    }
}

#[test]
fn conv_quantize_and_dequantize_keep_the_format() {
    for e in engines() {
        let mut r = Rng(5);
        let x = Tensor::new(
            [2, 5, 6, 7],
            (0..2 * 5 * 42)
                .map(|i| ((i * 37) % 101) as f32 / 25.0 - 2.0)
                .collect(),
        )
        .unwrap();
        let q = e.quantize(&x, 0.02, 100, MemoryFormat::Contiguous).unwrap();
        let ql = e.quantize(&x, 0.02, 100, CL).unwrap();
        assert_eq!(ql.memory_format(), CL);
        same(ql.clone(), &q, CL, "quantize");
        assert_eq!(e.dequantize(&ql).unwrap(), e.dequantize(&q).unwrap());
        assert_eq!(rquant_core::dequantize(&ql), rquant_core::dequantize(&q));
        let w = QTensor::<i8>::from_int_repr(
            vec![4, 5, 3, 3],
            (0..180).map(|_| r.next() as u8 as i8).collect(),
            QParams::per_tensor(0.01, 0),
        )
        .unwrap();
        let p = Conv2dParams {
            padding: [1, 1],
            ..Conv2dParams::default()
        };
        let pw = e
            .pack_conv2d(w, Some(vec![0.5, -0.5, 0.0, 1.0]), p)
            .unwrap();
        let want = e.conv2d(&q, &pw, 0.3, 60, true).unwrap();
        same(
            e.conv2d(&ql, &pw, 0.3, 60, true).unwrap(),
            &want,
            CL,
            "conv2d",
        );
        // requantize keeps the storage order.
        let rq = rquant_core::requantize::<u8, u8>(&ql, 0.05, 10).unwrap();
        same(
            rq,
            &rquant_core::requantize::<u8, u8>(&q, 0.05, 10).unwrap(),
            CL,
            "requantize",
        );
        // reshape goes through the logical order.
        let flat = ql.clone().reshape(vec![2, 5 * 42]).unwrap();
        assert_eq!(
            flat.int_repr(),
            q.clone().reshape(vec![2, 5 * 42]).unwrap().int_repr()
        );
    }
}
