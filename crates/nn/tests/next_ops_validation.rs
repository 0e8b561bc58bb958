//! Every bad-input class of the ops of CONFORMANCE.md's second table, on
//! every engine path this machine has: a `QuantError` naming the op, never a
//! panic and never a result. (The style of crates/nn/tests/validation.rs.)

use rquant_core::{
    BatchNormParams, Conv1dParams, Conv3dParams, ConvTranspose2dParams, EmbeddingBagTable, Engine,
    GeluApproximate, NormParams, QParams, QTensor, QuantError, UpsampleSize,
};

fn engines() -> Vec<Engine> {
    // Every engine and ISA path this machine has, the reference included.
    rquant_nn::engines::all_paths()
}

fn xq(shape: &[usize], scale: f64, zp: i64) -> QTensor<u8> {
    let n = shape.iter().product();
    QTensor::from_int_repr(
        shape.to_vec(),
        (0..n).map(|i| (i * 37 % 256) as u8).collect(),
        QParams::per_tensor(scale, zp),
    )
    .unwrap()
}

fn wq(shape: &[usize]) -> QTensor<i8> {
    let n = shape.iter().product();
    QTensor::from_int_repr(
        shape.to_vec(),
        (0..n).map(|i| (i * 53 % 256) as u8 as i8).collect(),
        QParams::per_tensor(0.02, 0),
    )
    .unwrap()
}

/// `r` is an error naming `op` (the text before the first colon).
#[track_caller]
fn bad<T: std::fmt::Debug>(r: Result<T, QuantError>, op: &str) -> QuantError {
    let e = r.expect_err(op);
    let named = e.to_string().split(':').next().unwrap_or("").to_string();
    assert_eq!(named, op, "{e}");
    e
}

/// Output qparams no op may accept: zero, negative, NaN, infinite and
/// vanishing scales; zero points outside quint8.
const BAD_OUT: &[(f64, i64)] = &[
    (0.0, 0),
    (-0.1, 0),
    (f64::NAN, 0),
    (f64::INFINITY, 0),
    (1e-300, 0),
    (0.1, -1),
    (0.1, 256),
];

#[test]
fn bad_output_qparams_are_rejected_by_every_op_that_takes_them() {
    let x = xq(&[1, 4, 3, 3], 0.1, 128);
    let v4 = [0.5f32; 4];
    let bn = BatchNormParams {
        weight: &v4,
        bias: &v4,
        mean: &v4,
        var: &v4,
        eps: 1e-5,
    };
    let np = NormParams::default();
    for e in engines() {
        let c1 = e
            .pack_conv1d(wq(&[2, 4, 3]), None, Conv1dParams::default())
            .unwrap();
        let c3 = e
            .pack_conv3d(wq(&[2, 4, 1, 1, 1]), None, Conv3dParams::default())
            .unwrap();
        let ct = e
            .pack_conv_transpose2d(wq(&[4, 2, 2, 2]), None, ConvTranspose2dParams::default())
            .unwrap();
        let x1 = xq(&[1, 4, 5], 0.1, 3);
        let x5 = xq(&[1, 4, 2, 2, 2], 0.1, 3);
        let m = xq(&[3, 4], 0.1, 3);
        for &(s, z) in BAD_OUT {
            bad(e.leaky_relu(&x, 0.01, s, z), "leaky_relu");
            bad(e.elu(&x, 1.0, s, z), "elu");
            bad(e.softmax(&x, 1, s, z), "softmax");
            bad(e.batch_norm2d(&x, &bn, s, z, false), "batch_norm2d");
            bad(e.batch_norm2d(&x, &bn, s, z, true), "batch_norm2d_relu");
            bad(e.layer_norm(&x, &[3], &np, s, z), "layer_norm");
            bad(e.group_norm(&x, 2, &np, s, z), "group_norm");
            bad(e.instance_norm(&x, &np, s, z), "instance_norm");
            bad(e.conv1d(&x1, &c1, s, z, false), "conv1d");
            bad(e.conv3d(&x5, &c3, s, z, false), "conv3d");
            bad(e.conv_transpose2d(&x, &ct, s, z), "conv_transpose2d");
            bad(e.matmul(&m, &xq(&[4, 2], 0.1, 0), s, z), "matmul");
        }
        // qint8 matmul: its zero points are qint8's.
        let mi =
            QTensor::<i8>::from_int_repr(vec![2, 2], vec![1, 2, 3, 4], QParams::per_tensor(0.5, 0))
                .unwrap();
        bad(e.matmul(&mi, &mi, 0.1, 128), "matmul");
        bad(e.matmul(&mi, &mi, 0.1, -129), "matmul");
        assert!(e.matmul(&mi, &mi, 0.1, -128).is_ok());
    }
}

#[test]
fn empty_tensors_are_rejected() {
    let np = NormParams::default();
    for e in engines() {
        for shape in [[0usize, 4, 3, 3], [1, 4, 0, 3], [1, 0, 3, 3]] {
            let x = xq(&shape, 0.1, 3);
            for r in [
                e.hardtanh(&x, -1.0, 1.0),
                e.relu6(&x),
                e.hardsigmoid(&x),
                e.tanh(&x),
                e.gelu(&x, GeluApproximate::None),
                e.leaky_relu(&x, 0.1, 0.1, 0),
                e.elu(&x, 1.0, 0.1, 0),
                e.constant_pad2d(&x, [1, 1, 1, 1], 0.0),
                e.upsample_nearest2d(&x, UpsampleSize::OutputSize([4, 4])),
                e.upsample_bilinear2d(&x, UpsampleSize::OutputSize([4, 4]), false),
                e.mean(&x, &[2, 3], false),
                e.softmax(&x, 1, 0.1, 0),
                e.layer_norm(&x, &[3], &np, 0.1, 0),
            ] {
                assert!(
                    matches!(r, Err(QuantError::EmptyTensor { .. })),
                    "{shape:?}: {r:?}"
                );
            }
            if shape[1] != 0 {
                let r = e.channel_shuffle(&x, 2);
                assert!(matches!(r, Err(QuantError::EmptyTensor { .. })), "{r:?}");
                let r = e.group_norm(&x, 2, &np, 0.1, 0);
                assert!(matches!(r, Err(QuantError::EmptyTensor { .. })), "{r:?}");
            }
        }
        let r = e.matmul(&xq(&[0, 3], 0.1, 0), &xq(&[3, 2], 0.1, 0), 0.1, 0);
        assert!(matches!(r, Err(QuantError::EmptyTensor { .. })), "{r:?}");
        let c1 = e
            .pack_conv1d(wq(&[2, 4, 1]), None, Conv1dParams::default())
            .unwrap();
        bad(
            e.conv1d(&xq(&[1, 4, 0], 0.1, 3), &c1, 0.1, 0, false),
            "conv1d",
        );
        bad(
            e.pack_conv1d(wq(&[0, 4, 1]), None, Conv1dParams::default()),
            "pack_conv1d",
        );
        bad(
            e.pack_conv3d(wq(&[2, 4, 0, 1, 1]), None, Conv3dParams::default()),
            "pack_conv3d",
        );
        bad(
            e.pack_conv_transpose2d(wq(&[4, 0, 2, 2]), None, ConvTranspose2dParams::default()),
            "pack_conv_transpose2d",
        );
    }
}

#[test]
fn bad_shapes_and_arguments_are_rejected() {
    let x = xq(&[1, 6, 4, 4], 0.1, 128);
    let np = NormParams::default();
    for e in engines() {
        // Per-channel activations are not accepted.
        let pc = QTensor::<u8>::from_int_repr(
            vec![1, 2, 2, 2],
            vec![1; 8],
            QParams::PerChannel {
                scales: vec![0.1, 0.2],
                zero_points: vec![0, 0],
                axis: 1,
            },
        )
        .unwrap();
        bad(e.hardsigmoid(&pc), "hardsigmoid");
        bad(e.relu6(&pc), "relu6");
        bad(e.channel_shuffle(&pc, 1), "channel_shuffle");
        // Activations: non-finite arguments.
        bad(e.hardtanh(&x, f32::NAN, 1.0), "hardtanh");
        bad(e.hardtanh(&x, 0.0, f32::NAN), "hardtanh");
        assert!(e.hardtanh(&x, f32::NEG_INFINITY, f32::INFINITY).is_ok());
        for v in [f32::NAN, f32::INFINITY] {
            bad(e.leaky_relu(&x, v, 0.1, 0), "leaky_relu");
            bad(e.elu(&x, v, 0.1, 0), "elu");
        }
        // channel_shuffle: 4-D only, groups must divide C.
        bad(
            e.channel_shuffle(&xq(&[2, 6, 4], 0.1, 0), 2),
            "channel_shuffle",
        );
        bad(e.channel_shuffle(&x, 0), "channel_shuffle");
        bad(e.channel_shuffle(&x, 4), "channel_shuffle");
        // constant_pad2d: 3-D or 4-D, NaN value, crops to nothing.
        bad(
            e.constant_pad2d(&xq(&[4, 4], 0.1, 0), [1, 1, 1, 1], 0.0),
            "constant_pad2d",
        );
        bad(
            e.constant_pad2d(&xq(&[1, 1, 2, 4, 4], 0.1, 0), [1, 1, 1, 1], 0.0),
            "constant_pad2d",
        );
        bad(
            e.constant_pad2d(&x, [1, 1, 1, 1], f32::NAN),
            "constant_pad2d",
        );
        bad(e.constant_pad2d(&x, [-2, -2, 0, 0], 0.0), "constant_pad2d");
        bad(e.constant_pad2d(&x, [0, 0, -5, 0], 0.0), "constant_pad2d");
        // Upsampling: 4-D, sizes and scale factors.
        for op in ["upsample_nearest2d", "upsample_bilinear2d"] {
            let run = |x: &QTensor<u8>, s: UpsampleSize| {
                if op == "upsample_nearest2d" {
                    e.upsample_nearest2d(x, s)
                } else {
                    e.upsample_bilinear2d(x, s, true)
                }
            };
            bad(
                run(&xq(&[6, 4, 4], 0.1, 0), UpsampleSize::OutputSize([8, 8])),
                op,
            );
            bad(run(&x, UpsampleSize::OutputSize([0, 8])), op);
            for f in [0.0, -2.0, f64::NAN, f64::INFINITY, 1e300] {
                bad(run(&x, UpsampleSize::ScaleFactors([f, 2.0])), op);
            }
            bad(run(&x, UpsampleSize::ScaleFactors([0.1, 2.0])), op); // floor(4·0.1) = 0
        }
        // mean: dims out of range or repeated.
        bad(e.mean(&x, &[4], false), "mean");
        bad(e.mean(&x, &[-5], false), "mean");
        bad(e.mean(&x, &[1, -3], false), "mean");
        // softmax: dim out of range.
        bad(e.softmax(&x, 4, 0.1, 0), "softmax");
        bad(e.softmax(&x, -5, 0.1, 0), "softmax");
        // Norms.
        bad(e.layer_norm(&x, &[3], &np, 0.1, 0), "layer_norm");
        bad(e.layer_norm(&x, &[], &np, 0.1, 0), "layer_norm");
        bad(
            e.layer_norm(&x, &[2, 1, 6, 4, 4], &np, 0.1, 0),
            "layer_norm",
        );
        let w3 = [1.0f32; 3];
        let wp = NormParams {
            weight: Some(&w3),
            ..np
        };
        bad(e.layer_norm(&x, &[4], &wp, 0.1, 0), "layer_norm");
        bad(e.group_norm(&x, 4, &np, 0.1, 0), "group_norm");
        bad(e.group_norm(&x, 0, &np, 0.1, 0), "group_norm");
        bad(
            e.group_norm(&xq(&[6, 4], 0.1, 0), 2, &np, 0.1, 0),
            "group_norm",
        );
        bad(e.group_norm(&x, 3, &wp, 0.1, 0), "group_norm");
        bad(
            e.instance_norm(&xq(&[6, 4], 0.1, 0), &np, 0.1, 0),
            "instance_norm",
        );
        for eps in [f64::NAN, -1.0, f64::INFINITY] {
            let p = NormParams { eps, ..np };
            bad(e.layer_norm(&x, &[4], &p, 0.1, 0), "layer_norm");
            bad(e.instance_norm(&x, &p, 0.1, 0), "instance_norm");
        }
        let nan6 = [f32::NAN, 1.0, 1.0, 1.0, 1.0, 1.0];
        let p = NormParams {
            bias: Some(&nan6),
            ..np
        };
        bad(e.group_norm(&x, 3, &p, 0.1, 0), "group_norm");
        // Batch norm: 4-D, lengths, finiteness, var + eps > 0.
        let ok6 = [1.0f32; 6];
        let short = [1.0f32; 5];
        let cases: Vec<(&[f32], &[f32], f64)> = vec![
            (&short, &ok6, 1e-5),
            (&ok6, &short, 1e-5),
            (&nan6, &ok6, 1e-5),
            (&ok6, &nan6, 1e-5),
            (&ok6, &[0.0; 6], 0.0),
            (&ok6, &[-1.0; 6], 1e-5),
            (&ok6, &ok6, f64::NAN),
            (&ok6, &ok6, -1.0),
        ];
        for (w, var, eps) in cases {
            let p = BatchNormParams {
                weight: w,
                bias: &ok6,
                mean: &ok6,
                var,
                eps,
            };
            bad(e.batch_norm2d(&x, &p, 0.1, 0, false), "batch_norm2d");
        }
        let p = BatchNormParams {
            weight: &ok6,
            bias: &ok6,
            mean: &ok6,
            var: &ok6,
            eps: 1e-5,
        };
        bad(
            e.batch_norm2d(&xq(&[6, 4, 4], 0.1, 0), &p, 0.1, 0, true),
            "batch_norm2d_relu",
        );
        // Huge weights whose folded coefficient overflows f32.
        let huge = [3e38f32; 6];
        let p = BatchNormParams {
            weight: &huge,
            bias: &ok6,
            mean: &ok6,
            var: &ok6,
            eps: 1e-5,
        };
        bad(e.batch_norm2d(&x, &p, 1e-30, 0, false), "batch_norm2d");
    }
}

#[test]
fn bad_convolutions_are_rejected() {
    for e in engines() {
        // conv1d
        bad(
            e.pack_conv1d(wq(&[4, 2, 3, 3]), None, Conv1dParams::default()),
            "pack_conv1d",
        );
        for p in [
            Conv1dParams {
                stride: 0,
                ..Default::default()
            },
            Conv1dParams {
                dilation: 0,
                ..Default::default()
            },
            Conv1dParams {
                groups: 0,
                ..Default::default()
            },
            Conv1dParams {
                groups: 3,
                ..Default::default()
            },
        ] {
            bad(e.pack_conv1d(wq(&[4, 2, 3]), None, p), "pack_conv1d");
        }
        bad(
            e.pack_conv1d(wq(&[4, 2, 3]), Some(vec![0.0; 3]), Conv1dParams::default()),
            "pack_conv1d",
        );
        bad(
            e.pack_conv1d(
                wq(&[4, 2, 3]),
                Some(vec![f32::NAN; 4]),
                Conv1dParams::default(),
            ),
            "pack_conv1d",
        );
        bad(
            e.pack_conv3d(
                wq(&[4, 2, 1, 1, 1]),
                Some(vec![0.0; 5]),
                Conv3dParams::default(),
            ),
            "pack_conv3d",
        );
        let c1 = e
            .pack_conv1d(wq(&[4, 2, 3]), None, Conv1dParams::default())
            .unwrap();
        bad(
            e.conv1d(&xq(&[1, 2, 5, 5], 0.1, 0), &c1, 0.1, 0, false),
            "conv1d",
        );
        bad(
            e.conv1d(&xq(&[1, 3, 5], 0.1, 0), &c1, 0.1, 0, false),
            "conv1d",
        );
        bad(
            e.conv1d(&xq(&[1, 2, 2], 0.1, 0), &c1, 0.1, 0, false),
            "conv1d",
        );
        // conv3d
        bad(
            e.pack_conv3d(wq(&[4, 2, 3, 3]), None, Conv3dParams::default()),
            "pack_conv3d",
        );
        bad(
            e.pack_conv3d(
                wq(&[4, 2, 1, 1, 1]),
                None,
                Conv3dParams {
                    stride: [1, 0, 1],
                    ..Default::default()
                },
            ),
            "pack_conv3d",
        );
        bad(
            e.pack_conv3d(
                wq(&[4, 2, 1, 1, 1]),
                None,
                Conv3dParams {
                    groups: 3,
                    ..Default::default()
                },
            ),
            "pack_conv3d",
        );
        let c3 = e
            .pack_conv3d(wq(&[4, 2, 3, 1, 1]), None, Conv3dParams::default())
            .unwrap();
        bad(
            e.conv3d(&xq(&[1, 2, 4, 4], 0.1, 0), &c3, 0.1, 0, false),
            "conv3d",
        );
        bad(
            e.conv3d(&xq(&[1, 4, 3, 2, 2], 0.1, 0), &c3, 0.1, 0, false),
            "conv3d",
        );
        bad(
            e.conv3d(&xq(&[1, 2, 2, 2, 2], 0.1, 0), &c3, 0.1, 0, false),
            "conv3d",
        );
        // conv_transpose2d
        let pcw = QTensor::<i8>::from_int_repr(
            vec![2, 2, 1, 1],
            vec![1, 2, 3, 4],
            QParams::PerChannel {
                scales: vec![0.1, 0.2],
                zero_points: vec![0, 0],
                axis: 0,
            },
        )
        .unwrap();
        let r = e.pack_conv_transpose2d(pcw, None, ConvTranspose2dParams::default());
        assert!(matches!(r, Err(QuantError::Unsupported { .. })), "{r:?}");
        bad(
            e.pack_conv_transpose2d(wq(&[4, 2, 3]), None, ConvTranspose2dParams::default()),
            "pack_conv_transpose2d",
        );
        for p in [
            ConvTranspose2dParams {
                stride: [0, 1],
                ..Default::default()
            },
            ConvTranspose2dParams {
                groups: 3,
                ..Default::default()
            },
            ConvTranspose2dParams {
                output_padding: [1, 0],
                ..Default::default()
            },
            ConvTranspose2dParams {
                stride: [2, 2],
                output_padding: [0, 2],
                ..Default::default()
            },
        ] {
            bad(
                e.pack_conv_transpose2d(wq(&[4, 2, 3, 3]), None, p),
                "pack_conv_transpose2d",
            );
        }
        bad(
            e.pack_conv_transpose2d(
                wq(&[4, 2, 3, 3]),
                Some(vec![0.0; 3]),
                ConvTranspose2dParams::default(),
            ),
            "pack_conv_transpose2d",
        );
        let ct = e
            .pack_conv_transpose2d(
                wq(&[4, 2, 5, 5]),
                None,
                ConvTranspose2dParams {
                    padding: [4, 4],
                    ..Default::default()
                },
            )
            .unwrap();
        bad(
            e.conv_transpose2d(&xq(&[1, 3, 4, 4], 0.1, 0), &ct, 0.1, 0),
            "conv_transpose2d",
        );
        bad(
            e.conv_transpose2d(&xq(&[1, 4, 4], 0.1, 0), &ct, 0.1, 0),
            "conv_transpose2d",
        );
        // (4 − 1) − 8 + 4 + 1 = 0 rows out.
        bad(
            e.conv_transpose2d(&xq(&[1, 4, 4, 4], 0.1, 0), &ct, 0.1, 0),
            "conv_transpose2d",
        );
    }
    // Weights packed on one path are refused on another, naming the op.
    let all = engines();
    if all.len() >= 2 {
        let (a, b) = (&all[0], &all[all.len() - 1]);
        let c1 = a
            .pack_conv1d(wq(&[2, 2, 1]), None, Conv1dParams::default())
            .unwrap();
        let e = bad(
            b.conv1d(&xq(&[1, 2, 3], 0.1, 0), &c1, 0.1, 0, false),
            "conv1d",
        );
        assert!(matches!(e, QuantError::WrongEngine { .. }), "{e}");
        let c3 = a
            .pack_conv3d(wq(&[2, 2, 1, 1, 1]), None, Conv3dParams::default())
            .unwrap();
        bad(
            b.conv3d(&xq(&[1, 2, 1, 1, 1], 0.1, 0), &c3, 0.1, 0, false),
            "conv3d",
        );
        let ct = a
            .pack_conv_transpose2d(wq(&[2, 2, 1, 1]), None, ConvTranspose2dParams::default())
            .unwrap();
        bad(
            b.conv_transpose2d(&xq(&[1, 2, 1, 1], 0.1, 0), &ct, 0.1, 0),
            "conv_transpose2d",
        );
    }
}

#[test]
fn bad_matmuls_and_embedding_bags_are_rejected() {
    for e in engines() {
        let a = xq(&[2, 3], 0.1, 0);
        bad(e.matmul(&a, &xq(&[4, 2], 0.1, 0), 0.1, 0), "matmul");
        bad(
            e.matmul(&xq(&[3], 0.1, 0), &xq(&[3, 2], 0.1, 0), 0.1, 0),
            "matmul",
        );
        bad(
            e.matmul(&xq(&[2, 2, 3], 0.1, 0), &xq(&[3, 3, 2], 0.1, 0), 0.1, 0),
            "matmul",
        );
        assert!(e
            .matmul(&xq(&[2, 2, 3], 0.1, 0), &xq(&[1, 3, 2], 0.1, 0), 0.1, 0)
            .is_ok());
        let q32 =
            QTensor::<i32>::from_int_repr(vec![2, 2], vec![1; 4], QParams::per_tensor(0.1, 0))
                .unwrap();
        let r = e.matmul(&q32, &q32, 0.1, 0);
        assert!(matches!(r, Err(QuantError::Unsupported { .. })), "{r:?}");

        // Tables.
        bad(
            EmbeddingBagTable::byte(2, 2, vec![0; 3], vec![1.0; 2], vec![0.0; 2]),
            "embedding_bag_byte",
        );
        bad(
            EmbeddingBagTable::byte(2, 2, vec![0; 4], vec![1.0; 1], vec![0.0; 2]),
            "embedding_bag_byte",
        );
        bad(
            EmbeddingBagTable::byte(2, 2, vec![0; 4], vec![f32::NAN, 1.0], vec![0.0; 2]),
            "embedding_bag_byte",
        );
        bad(
            EmbeddingBagTable::byte(0, 2, vec![], vec![], vec![]),
            "embedding_bag_byte",
        );
        let h = |v: f32| half::f16::from_f32(v);
        bad(
            EmbeddingBagTable::four_bit(2, 3, vec![0; 6], &[h(1.0); 2], &[h(0.0); 2]),
            "embedding_bag_4bit",
        );
        bad(
            EmbeddingBagTable::four_bit(2, 2, vec![16, 0, 0, 0], &[h(1.0); 2], &[h(0.0); 2]),
            "embedding_bag_4bit",
        );
        bad(
            EmbeddingBagTable::four_bit(
                2,
                2,
                vec![0; 4],
                &[h(f32::INFINITY), h(1.0)],
                &[h(0.0); 2],
            ),
            "embedding_bag_4bit",
        );
        let t8 = EmbeddingBagTable::byte(3, 2, vec![1; 6], vec![0.5; 3], vec![0.0; 3]).unwrap();
        let t4 = EmbeddingBagTable::four_bit(3, 2, vec![1; 6], &[h(0.5); 3], &[h(0.0); 3]).unwrap();
        // Each table only through its own op.
        bad(
            e.embedding_bag_4bit(&t8, &[0], &[0], None, false),
            "embedding_bag_4bit",
        );
        bad(
            e.embedding_bag_byte(&t4, &[0], &[0], None, false),
            "embedding_bag_byte",
        );
        let ok = e
            .embedding_bag_byte(&t8, &[0, 2, 1], &[0, 1], None, false)
            .unwrap();
        assert_eq!(ok.shape(), [2, 2]);
        // Indices and offsets.
        for (idx, off, last) in [
            (vec![0i64, 3], vec![0i64], false),
            (vec![0, -1], vec![0], false),
            (vec![0, 1], vec![1], false),
            (vec![0, 1, 2], vec![0, 2, 1], false),
            (vec![0, 1, 2], vec![0, 4], false),
            (vec![0, 1, 2], vec![0, 1, 2], true),
            (vec![0, 1], vec![], false),
            (vec![0, 1], vec![0], true),
        ] {
            bad(
                e.embedding_bag_byte(&t8, &idx, &off, None, last),
                "embedding_bag_byte",
            );
            bad(
                e.embedding_bag_4bit(&t4, &idx, &off, None, last),
                "embedding_bag_4bit",
            );
        }
        // Per-sample weights: length and finiteness.
        bad(
            e.embedding_bag_byte(&t8, &[0, 1], &[0], Some(&[1.0]), false),
            "embedding_bag_byte",
        );
        bad(
            e.embedding_bag_byte(&t8, &[0, 1], &[0], Some(&[1.0, f32::NAN]), false),
            "embedding_bag_byte",
        );
    }
}
