//! Every ISA path of the ARM engine this CPU has, against the reference
//! engine, bit for bit: linear (static / dynamic / fp16), conv2d and the
//! element-wise ops, over sweeps of M/N/K tails, zero points 0/128/255 and
//! random, full-range data, per-tensor and per-channel weights, bias, relu
//! and thread counts.

use rquant_arm::{ArmEngine, Isa};
use rquant_core::ops::Conv2dParams;
use rquant_core::{AvgPool2dParams, BinaryOp, Engine, MaxPool2dParams, QParams, QTensor, Tensor};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn u8s(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as i8).collect()
    }
    fn zp(&mut self) -> i64 {
        [0, 128, 255, self.below(256) as i64][self.below(4) as usize]
    }
}

fn paths() -> Vec<(Isa, Engine)> {
    Isa::ALL
        .into_iter()
        .filter_map(|i| ArmEngine::with_isa(i).map(|e| (i, Engine::new(e))))
        .collect()
}

fn reference() -> Engine {
    rquant_reference::engine()
}

fn weight(rng: &mut Rng, shape: &[usize], per_channel: bool) -> QTensor<i8> {
    let n = shape[0];
    let numel: usize = shape.iter().product();
    let data = rng.i8s(numel);
    let qp = if per_channel {
        QParams::PerChannel {
            scales: (0..n).map(|_| 0.001 + rng.unit() * 0.05).collect(),
            zero_points: (0..n).map(|_| rng.next() as i8 as i64).collect(),
            axis: 0,
        }
    } else {
        QParams::per_tensor(0.001 + rng.unit() * 0.05, rng.next() as i8 as i64)
    };
    QTensor::from_int_repr(shape.to_vec(), data, qp).unwrap()
}

fn bias(rng: &mut Rng, n: usize) -> Option<Vec<f32>> {
    (rng.below(3) != 0).then(|| (0..n).map(|_| (rng.unit() as f32 - 0.5) * 20.0).collect())
}

fn first_diff<T: PartialEq + std::fmt::Debug>(a: &[T], b: &[T]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("first difference at {i}: got {:?}, want {:?}", a[i], b[i]),
        None => format!("lengths {} vs {}", a.len(), b.len()),
    }
}

fn check_linear(rng: &mut Rng, m: usize, n: usize, k: usize) {
    let per_channel = rng.below(2) == 0;
    let w = weight(rng, &[n, k], per_channel);
    let b = bias(rng, n);
    let xz = rng.zp();
    let xs = 0.01 + rng.unit() * 0.1;
    let x =
        QTensor::from_int_repr(vec![m, k], rng.u8s(m * k), QParams::per_tensor(xs, xz)).unwrap();
    // Output scale near the accumulator spread, so outputs use [0, 255] and saturate sometimes.
    let ws = w.qparams().channel(0).0;
    let out_scale = xs * ws * 40.0 * (k as f64).sqrt() * (0.25 + rng.unit() * 2.0);
    let out_zp = rng.zp();
    let relu = rng.below(2) == 0;
    let r = reference();
    let rw = r.pack_linear(w.clone(), b.clone()).unwrap();
    let want = r.linear(&x, &rw, out_scale, out_zp, relu).unwrap();
    for (isa, e) in paths() {
        let pw = e.pack_linear(w.clone(), b.clone()).unwrap();
        let got = e.linear(&x, &pw, out_scale, out_zp, relu).unwrap();
        assert!(
            got.int_repr() == want.int_repr(),
            "linear {isa:?} m={m} n={n} k={k} xz={xz} pc={per_channel} bias={} relu={relu}: {}",
            b.is_some(),
            first_diff(got.int_repr(), want.int_repr())
        );
    }
}

const MS: &[usize] = &[1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17];
const NS: &[usize] = &[1, 3, 8, 9, 15, 16, 17, 33];
const KS: &[usize] = &[1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100];

#[test]
fn linear_sweep() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for &m in MS {
        for &n in NS {
            for &k in KS {
                check_linear(&mut rng, m, n, k);
            }
        }
    }
}

#[test]
fn linear_extremes_and_large_k() {
    // Largest |products|: x = 255 with zp 0 against w = -128 with zp 127, and
    // x = 0 with zp 255; a K large enough for big accumulators.
    for &(xv, xz, wv, wz) in &[
        (255u8, 0i64, -128i8, 127i64),
        (0, 255, 127, -128),
        (255, 0, 127, -128),
    ] {
        for &k in &[1usize, 4, 8, 1000, 4099] {
            let (m, n) = (9, 17);
            let w =
                QTensor::from_int_repr(vec![n, k], vec![wv; n * k], QParams::per_tensor(0.02, wz))
                    .unwrap();
            let x =
                QTensor::from_int_repr(vec![m, k], vec![xv; m * k], QParams::per_tensor(0.05, xz))
                    .unwrap();
            let r = reference();
            let rw = r.pack_linear(w.clone(), None).unwrap();
            let out_scale = 0.05 * 0.02 * 255.0 * 255.0 * k as f64 / 200.0;
            let want = r.linear(&x, &rw, out_scale, 3, false).unwrap();
            let want_d = r
                .linear_dynamic(&rquant_core::dequantize(&x), &rw, false)
                .unwrap();
            for (isa, e) in paths() {
                let pw = e.pack_linear(w.clone(), None).unwrap();
                let got = e.linear(&x, &pw, out_scale, 3, false).unwrap();
                assert_eq!(
                    got.int_repr(),
                    want.int_repr(),
                    "{isa:?} k={k} x={xv} w={wv}"
                );
                let got_d = e
                    .linear_dynamic(&rquant_core::dequantize(&x), &pw, false)
                    .unwrap();
                assert_eq!(got_d.data(), want_d.data(), "dynamic {isa:?} k={k}");
            }
        }
    }
}

#[test]
fn linear_dynamic_sweep() {
    let mut rng = Rng(0x0bad_cafe_f00d_1234);
    for &m in &[1usize, 3, 8, 9, 17] {
        for &n in &[1usize, 8, 9, 17, 33] {
            for &k in &[1usize, 3, 8, 9, 16, 33, 100] {
                let per_channel = rng.below(2) == 0;
                let w = weight(&mut rng, &[n, k], per_channel);
                let b = bias(&mut rng, n);
                // Ranges: mixed sign, all positive, all negative.
                let (lo, hi) = [(-3.0, 5.0), (0.5, 2.0), (-7.0, -0.1)][rng.below(3) as usize];
                let x: Vec<f32> = (0..m * k)
                    .map(|_| (lo + (hi - lo) * rng.unit()) as f32)
                    .collect();
                let x = Tensor::new(vec![m, k], x).unwrap();
                let r = reference();
                let rw = r.pack_linear(w.clone(), b.clone()).unwrap();
                for reduce_range in [false, true] {
                    let want = r.linear_dynamic(&x, &rw, reduce_range).unwrap();
                    for (isa, e) in paths() {
                        let pw = e.pack_linear(w.clone(), b.clone()).unwrap();
                        let got = e.linear_dynamic(&x, &pw, reduce_range).unwrap();
                        let (g, wn): (Vec<u32>, Vec<u32>) = (
                            got.data().iter().map(|v| v.to_bits()).collect(),
                            want.data().iter().map(|v| v.to_bits()).collect(),
                        );
                        assert!(
                            g == wn,
                            "dynamic {isa:?} m={m} n={n} k={k} rr={reduce_range}: {}",
                            first_diff(got.data(), want.data())
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn linear_fp16_sweep() {
    let mut rng = Rng(0x5eed_5eed_5eed_5eed);
    for &m in &[1usize, 3, 9] {
        for &n in &[1usize, 7, 8, 9, 17] {
            for &k in &[1usize, 2, 5, 16, 33] {
                let w: Vec<f32> = (0..n * k)
                    .map(|i| {
                        if i % 97 == 5 {
                            1e6 // clamps to 65504
                        } else {
                            (rng.unit() as f32 - 0.5) * 4.0
                        }
                    })
                    .collect();
                let w = Tensor::new(vec![n, k], w).unwrap();
                let b = bias(&mut rng, n);
                let x: Vec<f32> = (0..m * k)
                    .map(|_| (rng.unit() as f32 - 0.5) * 10.0)
                    .collect();
                let x = Tensor::new(vec![m, k], x).unwrap();
                let r = reference();
                let rw = r.pack_linear_fp16(w.clone(), b.clone()).unwrap();
                let want = r.linear_dynamic_fp16(&x, &rw).unwrap();
                for (isa, e) in paths() {
                    let pw = e.pack_linear_fp16(w.clone(), b.clone()).unwrap();
                    let got = e.linear_dynamic_fp16(&x, &pw).unwrap();
                    let same = got
                        .data()
                        .iter()
                        .zip(want.data())
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "fp16 {isa:?} m={m} n={n} k={k}: {}",
                        first_diff(got.data(), want.data())
                    );
                }
            }
        }
    }
}

/// (n, c, h, w, o, kh, kw, stride, pad, dilation, groups)
type ConvCase = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

#[test]
fn conv2d_sweep() {
    let mut rng = Rng(0xc0c0_a0a0_1111_2222);
    // (n, c, h, w, o, kh, kw, stride, pad, dilation, groups)
    let cases: &[ConvCase] = &[
        (1, 3, 8, 8, 8, 3, 3, 1, 1, 1, 1),
        (2, 4, 7, 9, 5, 3, 3, 2, 1, 1, 1),
        (1, 8, 6, 6, 8, 3, 3, 1, 1, 1, 8),  // depthwise
        (1, 6, 9, 7, 12, 3, 3, 2, 1, 1, 3), // grouped, multiplier 2
        (1, 5, 5, 5, 17, 1, 1, 1, 0, 1, 1), // pointwise
        (1, 2, 9, 9, 3, 3, 3, 1, 2, 2, 1),  // dilated
        (1, 4, 6, 5, 4, 5, 5, 1, 2, 1, 4),  // depthwise 5x5
        (1, 3, 4, 11, 9, 2, 4, 3, 0, 1, 1),
    ];
    for &(n, c, h, w, o, kh, kw, s, p, d, g) in cases {
        for per_channel in [false, true] {
            let wt = weight(&mut rng, &[o, c / g, kh, kw], per_channel);
            let b = bias(&mut rng, o);
            let params = Conv2dParams {
                stride: [s, s],
                padding: [p, p],
                dilation: [d, d],
                groups: g,
            };
            let xz = rng.zp();
            let xs = 0.02;
            let x = QTensor::from_int_repr(
                vec![n, c, h, w],
                rng.u8s(n * c * h * w),
                QParams::per_tensor(xs, xz),
            )
            .unwrap();
            let kk = (c / g * kh * kw) as f64;
            let out_scale = xs * wt.qparams().channel(0).0 * 40.0 * kk.sqrt();
            let relu = rng.below(2) == 0;
            let r = reference();
            let rw = r.pack_conv2d(wt.clone(), b.clone(), params).unwrap();
            let want = r.conv2d(&x, &rw, out_scale, 100, relu).unwrap();
            for (isa, e) in paths() {
                let pw = e.pack_conv2d(wt.clone(), b.clone(), params).unwrap();
                let got = e.conv2d(&x, &pw, out_scale, 100, relu).unwrap();
                assert_eq!(got.shape(), want.shape());
                assert!(
                    got.int_repr() == want.int_repr(),
                    "conv {isa:?} case {:?} pc={per_channel}: {}",
                    (n, c, h, w, o, kh, kw, s, p, d, g),
                    first_diff(got.int_repr(), want.int_repr())
                );
            }
        }
    }
}

/// Channels-last conv on every path: the NHWC output (stored NHWC) equals
/// the same engine's contiguous conv and the reference's, bit for bit, and
/// does not depend on the thread count. Odd channel counts (8-lane tails of
/// the depthwise lanes kernel), padding, strides 1/2/3, dilation, groups,
/// depthwise with multipliers 1 and 2, 1×1 stride 1 (pixels as rows) and
/// stride 2, batches, and a residual add (`conv2d_add`) on NHWC.
#[test]
fn conv2d_channels_last_equals_contiguous() {
    use rquant_core::MemoryFormat;
    let mut rng = Rng(0x0c1a_57c0_4e11_0001);
    // (n, c, h, w, o, kh, kw, stride, pad, dilation, groups)
    let cases: &[ConvCase] = &[
        (2, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1),
        (1, 7, 9, 8, 11, 3, 3, 2, 1, 1, 1),
        (2, 13, 6, 7, 19, 1, 1, 1, 0, 1, 1), // 1x1 s1: pixel rows
        (1, 9, 9, 9, 10, 1, 1, 2, 0, 1, 1),  // 1x1 s2
        (1, 6, 8, 7, 9, 3, 3, 1, 2, 2, 3),   // groups, dilation
        (2, 5, 6, 6, 5, 5, 5, 1, 2, 1, 1),
        (2, 11, 7, 8, 11, 3, 3, 1, 1, 1, 11), // depthwise, tail of 3 lanes
        (1, 19, 9, 10, 19, 3, 3, 2, 1, 1, 19), // depthwise s2, 2 blocks + tail
        (1, 17, 9, 9, 17, 5, 5, 1, 4, 2, 17), // depthwise, dilation 2
        (2, 8, 7, 7, 8, 3, 3, 3, 2, 1, 8),    // depthwise, stride 3
        (1, 5, 6, 7, 10, 3, 3, 1, 1, 1, 5),   // depthwise, multiplier 2
        (1, 16, 5, 5, 16, 7, 7, 1, 3, 1, 16),
    ];
    let r = reference();
    for (ci, &(n, c, h, w, o, kh, kw, s, p, d, g)) in cases.iter().enumerate() {
        let case = (n, c, h, w, o, kh, kw, s, p, d, g);
        let wt = weight(&mut rng, &[o, c / g, kh, kw], ci % 2 == 0);
        let b = bias(&mut rng, o);
        let params = Conv2dParams {
            stride: [s, s],
            padding: [p, p],
            dilation: [d, d],
            groups: g,
        };
        let xz = [0i64, 128, 255, 37][ci % 4];
        let xs = 0.02;
        let x = QTensor::from_int_repr(
            vec![n, c, h, w],
            rng.u8s(n * c * h * w),
            QParams::per_tensor(xs, xz),
        )
        .unwrap();
        let xl = x.to_format(MemoryFormat::ChannelsLast);
        let kk = (c / g * kh * kw) as f64;
        let out_scale = xs * wt.qparams().channel(0).0 * 40.0 * kk.sqrt();
        let relu = ci % 3 == 0;
        let rw = r.pack_conv2d(wt.clone(), b.clone(), params).unwrap();
        let want = r.conv2d(&x, &rw, out_scale, 100, relu).unwrap();
        let want_l = want.to_format(MemoryFormat::ChannelsLast);
        // The residual add's operand and qparams.
        let other = QTensor::from_int_repr(
            want.shape().to_vec(),
            rng.u8s(want.numel()),
            QParams::per_tensor(out_scale * 1.3, 90),
        )
        .unwrap();
        let plain = r.conv2d(&x, &rw, out_scale, 100, false).unwrap();
        let want_add = r
            .add_relu(&plain, &other, out_scale * 2.1, 70)
            .unwrap()
            .to_format(MemoryFormat::ChannelsLast);
        let other_l = other.to_format(MemoryFormat::ChannelsLast);
        for (isa, e) in paths() {
            let pw = e.pack_conv2d(wt.clone(), b.clone(), params).unwrap();
            let nchw = e.conv2d(&x, &pw, out_scale, 100, relu).unwrap();
            assert_eq!(nchw.memory_format(), MemoryFormat::Contiguous);
            for threads in [1, 3] {
                rquant_core::registry::set_num_threads(threads);
                let got = e.conv2d(&xl, &pw, out_scale, 100, relu).unwrap();
                assert_eq!(got.shape(), want.shape());
                assert_eq!(got.memory_format(), MemoryFormat::ChannelsLast);
                assert!(
                    got.int_repr() == want_l.int_repr(),
                    "NHWC conv {isa:?} case {case:?} threads={threads}: {}",
                    first_diff(got.int_repr(), want_l.int_repr())
                );
                assert!(
                    got.contiguous().int_repr() == nchw.int_repr(),
                    "NHWC vs NCHW conv {isa:?} case {case:?} threads={threads}"
                );
                let got_add = e
                    .conv2d_add(
                        &xl,
                        &pw,
                        (out_scale, 100),
                        &other_l,
                        (out_scale * 2.1, 70),
                        true,
                    )
                    .unwrap();
                assert_eq!(got_add.memory_format(), MemoryFormat::ChannelsLast);
                assert!(
                    got_add.int_repr() == want_add.int_repr(),
                    "NHWC conv2d_add {isa:?} case {case:?} threads={threads}: {}",
                    first_diff(got_add.int_repr(), want_add.int_repr())
                );
            }
            rquant_core::registry::set_num_threads(0);
        }
    }
}

#[test]
fn thread_counts_give_identical_results() {
    let mut rng = Rng(0x7777_1234_4321_7777);
    let (m, n, k) = (37, 70, 129);
    let w = weight(&mut rng, &[n, k], true);
    let b = bias(&mut rng, n);
    let x =
        QTensor::from_int_repr(vec![m, k], rng.u8s(m * k), QParams::per_tensor(0.03, 77)).unwrap();
    let xf: Vec<f32> = (0..m * k).map(|_| rng.unit() as f32 * 4.0 - 1.0).collect();
    let xf = Tensor::new(vec![m, k], xf).unwrap();
    let r = reference();
    let rw = r.pack_linear(w.clone(), b.clone()).unwrap();
    let want = r.linear(&x, &rw, 0.5, 10, false).unwrap();
    let want_d = r.linear_dynamic(&xf, &rw, true).unwrap();
    // Also M = 1 (the N-split schedule).
    let x1 = QTensor::from_int_repr(
        vec![1, k],
        x.int_repr()[..k].to_vec(),
        QParams::per_tensor(0.03, 77),
    )
    .unwrap();
    let want1 = r.linear(&x1, &rw, 0.5, 10, true).unwrap();
    for (isa, e) in paths() {
        let pw = e.pack_linear(w.clone(), b.clone()).unwrap();
        for t in [1, 2, 3, 5] {
            rquant_core::registry::set_num_threads(t);
            let got = e.linear(&x, &pw, 0.5, 10, false).unwrap();
            assert_eq!(got.int_repr(), want.int_repr(), "{isa:?} threads={t}");
            let got_d = e.linear_dynamic(&xf, &pw, true).unwrap();
            assert_eq!(got_d.data(), want_d.data(), "dynamic {isa:?} threads={t}");
            let got1 = e.linear(&x1, &pw, 0.5, 10, true).unwrap();
            assert_eq!(got1.int_repr(), want1.int_repr(), "m=1 {isa:?} threads={t}");
        }
        rquant_core::registry::set_num_threads(0);
    }
}

/// Weights packed on one path are refused by another, naming both (never
/// silently repacked), and repacked visibly give the same bits.
#[test]
fn weights_packed_by_another_path_are_repacked() {
    let mut rng = Rng(0x4242_4242_4242_4242);
    let w = weight(&mut rng, &[19, 23], true);
    let x = QTensor::from_int_repr(vec![5, 23], rng.u8s(5 * 23), QParams::per_tensor(0.02, 128))
        .unwrap();
    let r = reference();
    let want = r
        .linear(&x, &r.pack_linear(w.clone(), None).unwrap(), 0.3, 0, false)
        .unwrap();
    let ps = paths();
    for (pi, packer) in &ps {
        let pw = packer.pack_linear(w.clone(), None).unwrap();
        for (ri, runner) in &ps {
            if pi != ri {
                let err = runner.linear(&x, &pw, 0.3, 0, false).unwrap_err();
                assert!(
                    matches!(err, rquant_core::QuantError::WrongEngine { .. }),
                    "packed by {pi:?}, run by {ri:?}: {err}"
                );
            }
            let moved = runner.repack_linear(&pw).unwrap();
            let got = runner.linear(&x, &moved, 0.3, 0, false).unwrap();
            assert_eq!(
                got.int_repr(),
                want.int_repr(),
                "packed by {pi:?}, repacked for {ri:?}"
            );
        }
    }
}

#[test]
fn elementwise_ops() {
    let mut rng = Rng(0xeeee_1111_2222_3333);
    let shape = vec![2, 3, 7, 6];
    let numel: usize = shape.iter().product();
    let qa = QTensor::from_int_repr(
        shape.clone(),
        rng.u8s(numel),
        QParams::per_tensor(0.05, 128),
    )
    .unwrap();
    let qb = QTensor::from_int_repr(shape.clone(), rng.u8s(numel), QParams::per_tensor(0.031, 7))
        .unwrap();
    let r = reference();
    for (isa, e) in paths() {
        for op in [BinaryOp::Add, BinaryOp::AddRelu, BinaryOp::Mul] {
            let want = r.binary(op, &qa, &qb, 0.07, 100).unwrap();
            let got = e.binary(op, &qa, &qb, 0.07, 100).unwrap();
            assert_eq!(got.int_repr(), want.int_repr(), "{op:?} {isa:?}");
        }
        for dim in [0i64, 1, 3, -1] {
            let want = r.cat(&[&qa, &qb], dim, 0.04, 90).unwrap();
            let got = e.cat(&[&qa, &qb], dim, 0.04, 90).unwrap();
            assert_eq!(got.int_repr(), want.int_repr(), "cat {dim} {isa:?}");
        }
        assert_eq!(
            e.relu(&qa).unwrap().int_repr(),
            r.relu(&qa).unwrap().int_repr()
        );
        let mp = MaxPool2dParams {
            kernel: [3, 3],
            stride: [2, 2],
            padding: [1, 1],
            dilation: [1, 1],
            ceil_mode: true,
        };
        assert_eq!(
            e.max_pool2d(&qa, &mp).unwrap().int_repr(),
            r.max_pool2d(&qa, &mp).unwrap().int_repr()
        );
        for (cip, div) in [(true, None), (false, None), (true, Some(5))] {
            let ap = AvgPool2dParams {
                kernel: [3, 2],
                stride: [2, 1],
                padding: [1, 1],
                ceil_mode: false,
                count_include_pad: cip,
                divisor_override: div,
            };
            assert_eq!(
                e.avg_pool2d(&qa, &ap).unwrap().int_repr(),
                r.avg_pool2d(&qa, &ap).unwrap().int_repr()
            );
        }
        assert_eq!(
            e.adaptive_avg_pool2d(&qa, [3, 4]).unwrap().int_repr(),
            r.adaptive_avg_pool2d(&qa, [3, 4]).unwrap().int_repr()
        );
        assert_eq!(
            e.hardswish(&qa, 0.03, 20).unwrap().int_repr(),
            r.hardswish(&qa, 0.03, 20).unwrap().int_repr()
        );
        assert_eq!(
            e.sigmoid(&qa, 1.0 / 256.0, 0).unwrap().int_repr(),
            r.sigmoid(&qa, 1.0 / 256.0, 0).unwrap().int_repr()
        );
    }
}

#[test]
fn exact_ties_round_half_to_even() {
    // multiplier = (1.0 · 0.5) / 1.0 = 0.5 exactly: every odd accumulator is a
    // tie, so round-half-away or truncation would differ from the reference.
    let mut rng = Rng(0x7e57_0f7e_5700_0001);
    let (m, n, k) = (11, 19, 13);
    for per_channel in [false, true] {
        let data = (0..n * k).map(|_| (rng.below(7) as i8) - 3).collect();
        let qp = if per_channel {
            QParams::PerChannel {
                scales: vec![0.5; n],
                zero_points: (0..n).map(|j| (j % 3) as i64 - 1).collect(),
                axis: 0,
            }
        } else {
            QParams::per_tensor(0.5, 1)
        };
        let w = QTensor::from_int_repr(vec![n, k], data, qp).unwrap();
        let xd = (0..m * k).map(|_| 125 + rng.below(7) as u8).collect();
        let x = QTensor::from_int_repr(vec![m, k], xd, QParams::per_tensor(1.0, 128)).unwrap();
        let b = Some(
            (0..n)
                .map(|j| if j % 2 == 0 { 0.0 } else { 1.0 })
                .collect::<Vec<f32>>(),
        );
        let r = reference();
        for bias in [None, b] {
            let rw = r.pack_linear(w.clone(), bias.clone()).unwrap();
            let want = r.linear(&x, &rw, 1.0, 128, false).unwrap();
            for (isa, e) in paths() {
                let pw = e.pack_linear(w.clone(), bias.clone()).unwrap();
                let got = e.linear(&x, &pw, 1.0, 128, false).unwrap();
                assert_eq!(
                    got.int_repr(),
                    want.int_repr(),
                    "ties {isa:?} pc={per_channel}"
                );
            }
        }
    }
}

#[test]
fn depthwise_wide_rows() {
    // Rows wide enough for the 8-pixel vector steps (stride 1 and 2), with
    // borders, dilation, 3x3 / 5x5 / 1x3 kernels and channel multipliers 1, 2.
    let mut rng = Rng(0xd00d_d00d_0123_4567);
    for &(c, mult, h, w, kh, kw) in &[
        (3usize, 1usize, 5usize, 40usize, 3usize, 3usize),
        (2, 2, 7, 37, 5, 5),
        (4, 1, 3, 29, 1, 3),
    ] {
        for &(s, p, d) in &[
            (1usize, 1usize, 1usize),
            (2, 1, 1),
            (1, 0, 2),
            (2, 2, 1),
            (3, 1, 1),
        ] {
            let o = c * mult;
            if (kh - 1) * d + 1 > h + 2 * p || (kw - 1) * d + 1 > w + 2 * p {
                continue;
            }
            let pc = rng.below(2) == 0;
            let wt = weight(&mut rng, &[o, 1, kh, kw], pc);
            let b = bias(&mut rng, o);
            let params = Conv2dParams {
                stride: [s, s],
                padding: [p, p],
                dilation: [d, d],
                groups: c,
            };
            for &xz in &[0i64, 128, 255] {
                let x = QTensor::from_int_repr(
                    vec![2, c, h, w],
                    rng.u8s(2 * c * h * w),
                    QParams::per_tensor(0.02, xz),
                )
                .unwrap();
                let out_scale = 0.02 * wt.qparams().channel(0).0 * 40.0 * ((kh * kw) as f64).sqrt();
                let relu = rng.below(2) == 0;
                let r = reference();
                let rw = r.pack_conv2d(wt.clone(), b.clone(), params).unwrap();
                let want = r.conv2d(&x, &rw, out_scale, 120, relu).unwrap();
                for (isa, e) in paths() {
                    let pw = e.pack_conv2d(wt.clone(), b.clone(), params).unwrap();
                    let got = e.conv2d(&x, &pw, out_scale, 120, relu).unwrap();
                    assert!(
                        got.int_repr() == want.int_repr(),
                        "depthwise {isa:?} c={c} mult={mult} {h}x{w} k={kh}x{kw} s={s} p={p} d={d} xz={xz}: {}",
                        first_diff(got.int_repr(), want.int_repr())
                    );
                }
            }
        }
    }
}

#[test]
fn binary_ops_ties_and_zero_points() {
    // Power-of-two scales make many results exact ties (x.5): any rounding
    // other than half-to-even differs. Lengths cover the 8-wide steps' tails.
    let mut rng = Rng(0xb1b1_0000_ffff_1234);
    let r = reference();
    for &len in &[1usize, 7, 8, 9, 31, 64, 67] {
        for &(sa, sb, so) in &[(0.5, 0.25, 1.0), (0.5, 0.5, 2.0), (0.013, 0.7, 0.05)] {
            for &(za, zb, zo) in &[(0i64, 255i64, 128i64), (128, 128, 0), (255, 0, 255)] {
                let qa =
                    QTensor::from_int_repr(vec![len], rng.u8s(len), QParams::per_tensor(sa, za))
                        .unwrap();
                let qb =
                    QTensor::from_int_repr(vec![len], rng.u8s(len), QParams::per_tensor(sb, zb))
                        .unwrap();
                for op in [BinaryOp::Add, BinaryOp::AddRelu, BinaryOp::Mul] {
                    let want = r.binary(op, &qa, &qb, so, zo).unwrap();
                    for (isa, e) in paths() {
                        let got = e.binary(op, &qa, &qb, so, zo).unwrap();
                        assert_eq!(
                            got.int_repr(),
                            want.int_repr(),
                            "{op:?} {isa:?} len={len} scales={:?} zps={:?}",
                            (sa, sb, so),
                            (za, zb, zo)
                        );
                    }
                }
                for (isa, e) in paths() {
                    assert_eq!(
                        e.relu(&qa).unwrap().int_repr(),
                        r.relu(&qa).unwrap().int_repr(),
                        "relu {isa:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn max_pool_and_tables_wide_rows() {
    // Rows wide enough for the 16-pixel max-pool steps (stride 1 and 2), with
    // padding, dilation and ceil mode; lookup tables over every byte value.
    let mut rng = Rng(0x9001_9001_abcd_ef01);
    let r = reference();
    for &(h, w) in &[(9usize, 70usize), (5, 33), (4, 17)] {
        let x = QTensor::from_int_repr(
            vec![2, 3, h, w],
            rng.u8s(6 * h * w),
            QParams::per_tensor(0.1, 3),
        )
        .unwrap();
        for &(k, s, p, d, ceil) in &[
            (3usize, 1usize, 1usize, 1usize, false),
            (3, 2, 1, 1, true),
            (2, 2, 0, 1, false),
            (3, 1, 0, 2, false),
            (5, 2, 2, 1, true),
            (3, 3, 1, 1, false),
        ] {
            let mp = MaxPool2dParams {
                kernel: [k, k],
                stride: [s, s],
                padding: [p, p],
                dilation: [d, d],
                ceil_mode: ceil,
            };
            let Ok(want) = r.max_pool2d(&x, &mp) else {
                continue; // geometry without output
            };
            for (isa, e) in paths() {
                let got = e.max_pool2d(&x, &mp).unwrap();
                assert_eq!(got.shape(), want.shape());
                assert!(
                    got.int_repr() == want.int_repr(),
                    "max_pool {isa:?} {h}x{w} k={k} s={s} p={p} d={d} ceil={ceil}: {}",
                    first_diff(got.int_repr(), want.int_repr())
                );
            }
        }
    }
    let all: Vec<u8> = (0..=255u8)
        .chain((0..300).map(|_| rng.next() as u8))
        .collect();
    let n = all.len();
    for &(s, z) in &[(0.05, 128i64), (0.2, 0), (0.01, 255)] {
        let x = QTensor::from_int_repr(vec![n], all.clone(), QParams::per_tensor(s, z)).unwrap();
        for (isa, e) in paths() {
            assert_eq!(
                e.sigmoid(&x, 1.0 / 256.0, 0).unwrap().int_repr(),
                r.sigmoid(&x, 1.0 / 256.0, 0).unwrap().int_repr(),
                "sigmoid {isa:?}"
            );
            assert_eq!(
                e.hardswish(&x, 0.04, 17).unwrap().int_repr(),
                r.hardswish(&x, 0.04, 17).unwrap().int_repr(),
                "hardswish {isa:?}"
            );
        }
    }
}

#[test]
fn dynamic_quantization_ties() {
    // Range [0, 127.5] gives scale 0.5 and zero point 0, so x = k/4 lands
    // exactly on ties of x / scale for odd k: the activation quantization
    // must round half to even.
    let mut rng = Rng(0x0071_e500_71e5_0071);
    let (m, n, k) = (3, 9, 37);
    let mut x: Vec<f32> = (0..m * k).map(|_| rng.below(511) as f32 * 0.25).collect();
    x[0] = 0.0;
    x[1] = 127.5;
    let x = Tensor::new(vec![m, k], x).unwrap();
    let w = weight(&mut rng, &[n, k], true);
    let r = reference();
    let rw = r.pack_linear(w.clone(), None).unwrap();
    let want = r.linear_dynamic(&x, &rw, false).unwrap();
    for (isa, e) in paths() {
        let pw = e.pack_linear(w.clone(), None).unwrap();
        let got = e.linear_dynamic(&x, &pw, false).unwrap();
        assert_eq!(got.data(), want.data(), "dynamic ties {isa:?}");
    }
}
