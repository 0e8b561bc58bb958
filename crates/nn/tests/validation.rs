//! Every bad-input class on every engine: a clear `QuantError` naming the op,
//! never a panic and never a result.

use rquant_core::{
    AvgPool2dParams, Conv2dParams, Engine, MaxPool2dParams, QParams, QTensor, QuantError, Tensor,
};

fn engines() -> Vec<Engine> {
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

fn op_of(e: &QuantError) -> String {
    e.to_string().split(':').next().unwrap_or("").to_string()
}

#[test]
fn qtensor_construction_rejects_bad_qparams() {
    for scale in [
        0.0,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e-300,
    ] {
        let r = QTensor::<u8>::from_int_repr(vec![2], vec![1, 2], QParams::per_tensor(scale, 0));
        assert!(
            matches!(r, Err(QuantError::InvalidScale { .. })),
            "scale {scale}: {r:?}"
        );
    }
    for (zp, ok) in [(-1, false), (0, true), (255, true), (256, false)] {
        let r = QTensor::<u8>::from_int_repr(vec![1], vec![0], QParams::per_tensor(1.0, zp));
        assert_eq!(r.is_ok(), ok, "quint8 zp {zp}");
    }
    for (zp, ok) in [(-129, false), (-128, true), (127, true), (128, false)] {
        let r = QTensor::<i8>::from_int_repr(vec![1], vec![0], QParams::per_tensor(1.0, zp));
        assert_eq!(r.is_ok(), ok, "qint8 zp {zp}");
    }
    let r = QTensor::<i8>::from_int_repr(
        vec![2, 2],
        vec![0; 4],
        QParams::PerChannel {
            scales: vec![1.0],
            zero_points: vec![0],
            axis: 0,
        },
    );
    assert!(matches!(r, Err(QuantError::ChannelCount { .. })));
    let r = QTensor::<i8>::from_int_repr(
        vec![2, 2],
        vec![0; 4],
        QParams::PerChannel {
            scales: vec![1.0; 2],
            zero_points: vec![0; 2],
            axis: 2,
        },
    );
    assert!(matches!(r, Err(QuantError::AxisOutOfRange { .. })));
    let r = QTensor::<i8>::from_int_repr(vec![2, 2], vec![0; 3], QParams::per_tensor(1.0, 0));
    assert!(matches!(r, Err(QuantError::InvalidShape { .. })));
}

#[test]
fn linear_rejects_bad_inputs_on_every_engine() {
    for e in engines() {
        let name = format!("{}/{}", e.name(), e.isa());
        // Weight rank, emptiness, bias length, non-finite bias.
        assert!(
            matches!(
                e.pack_linear(wq(&[4]), None),
                Err(QuantError::InvalidShape { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                e.pack_linear(wq(&[0, 3]), None),
                Err(QuantError::EmptyTensor { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                e.pack_linear(wq(&[4, 3]), Some(vec![0.0; 3])),
                Err(QuantError::ChannelCount { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                e.pack_linear(wq(&[2, 3]), Some(vec![0.0, f32::NAN])),
                Err(QuantError::InvalidArgument { .. })
            ),
            "{name}"
        );
        let w = e.pack_linear(wq(&[4, 3]), Some(vec![0.1; 4])).unwrap();
        // K mismatch, empty batch, bad output qparams.
        let err = e
            .linear(&xq(&[2, 5], 0.1, 3), &w, 0.1, 0, false)
            .unwrap_err();
        assert!(
            matches!(err, QuantError::ShapeMismatch { .. }),
            "{name}: {err}"
        );
        assert_eq!(op_of(&err), "linear");
        assert!(
            matches!(
                e.linear(&xq(&[0, 3], 0.1, 3), &w, 0.1, 0, false),
                Err(QuantError::EmptyTensor { .. })
            ),
            "{name}"
        );
        for s in [0.0, -0.5, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(
                    e.linear(&xq(&[2, 3], 0.1, 3), &w, s, 0, false),
                    Err(QuantError::InvalidScale { .. })
                ),
                "{name} out scale {s}"
            );
        }
        assert!(
            matches!(
                e.linear(&xq(&[2, 3], 0.1, 3), &w, 0.1, 256, false),
                Err(QuantError::ZeroPointOutOfRange { .. })
            ),
            "{name}"
        );
        // Dynamic: NaN and infinite inputs.
        let x = Tensor::new([1, 3], vec![0.0, f32::NAN, 1.0]).unwrap();
        assert!(
            matches!(
                e.linear_dynamic(&x, &w, false),
                Err(QuantError::NaN { index: 1, .. })
            ),
            "{name}"
        );
        let x = Tensor::new([1, 3], vec![0.0, f32::INFINITY, 1.0]).unwrap();
        assert!(e.linear_dynamic(&x, &w, false).is_err(), "{name}");
        // Per-channel activation is not accepted.
        let xpc = QTensor::<u8>::from_int_repr(
            vec![2, 3],
            vec![1; 6],
            QParams::PerChannel {
                scales: vec![0.1, 0.2],
                zero_points: vec![0, 0],
                axis: 0,
            },
        )
        .unwrap();
        assert!(
            matches!(
                e.linear(&xpc, &w, 0.1, 0, false),
                Err(QuantError::InvalidArgument { .. })
            ),
            "{name}"
        );
        // fp16 weights.
        assert!(
            e.pack_linear_fp16(Tensor::new([1, 2], vec![1.0, f32::NAN]).unwrap(), None)
                .is_err(),
            "{name}"
        );
        let w16 = e
            .pack_linear_fp16(Tensor::new([1, 2], vec![1.0, 2.0]).unwrap(), None)
            .unwrap();
        assert!(
            matches!(
                e.linear_dynamic_fp16(&Tensor::new([1, 3], vec![0.0; 3]).unwrap(), &w16),
                Err(QuantError::ShapeMismatch { .. })
            ),
            "{name}"
        );
    }
}

#[test]
fn weights_packed_by_another_engine_are_rejected() {
    let all = rquant_nn::engines::available();
    if all.len() < 2 {
        eprintln!("only one engine here: cross-engine packing check skipped");
        return;
    }
    let w = all[0].pack_linear(wq(&[2, 3]), None).unwrap();
    let err = all[1]
        .linear(&xq(&[1, 3], 0.1, 0), &w, 0.1, 0, false)
        .unwrap_err();
    assert!(matches!(err, QuantError::WrongEngine { .. }), "{err}");
}

#[test]
fn conv2d_rejects_bad_inputs_on_every_engine() {
    for e in engines() {
        let name = format!("{}/{}", e.name(), e.isa());
        let p = Conv2dParams::default();
        assert!(
            matches!(
                e.pack_conv2d(wq(&[4, 3, 3]), None, p),
                Err(QuantError::InvalidShape { .. })
            ),
            "{name}"
        );
        let bad_groups = Conv2dParams { groups: 3, ..p };
        assert!(
            matches!(
                e.pack_conv2d(wq(&[4, 1, 3, 3]), None, bad_groups),
                Err(QuantError::InvalidArgument { .. })
            ),
            "{name}"
        );
        let zero_stride = Conv2dParams {
            stride: [0, 1],
            ..p
        };
        assert!(
            e.pack_conv2d(wq(&[4, 1, 3, 3]), None, zero_stride).is_err(),
            "{name}"
        );
        let w = e.pack_conv2d(wq(&[4, 3, 3, 3]), None, p).unwrap();
        // Channel mismatch, kernel larger than input, non-4D input, empty input.
        assert!(
            matches!(
                e.conv2d(&xq(&[1, 2, 5, 5], 0.1, 0), &w, 0.1, 0, false),
                Err(QuantError::ShapeMismatch { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                e.conv2d(&xq(&[1, 3, 2, 5], 0.1, 0), &w, 0.1, 0, false),
                Err(QuantError::ShapeMismatch { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                e.conv2d(&xq(&[3, 5, 5], 0.1, 0), &w, 0.1, 0, false),
                Err(QuantError::InvalidShape { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                e.conv2d(&xq(&[0, 3, 5, 5], 0.1, 0), &w, 0.1, 0, false),
                Err(QuantError::EmptyTensor { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                e.conv2d(&xq(&[1, 3, 5, 5], 0.1, 0), &w, f64::NAN, 0, false),
                Err(QuantError::InvalidScale { .. })
            ),
            "{name}"
        );
    }
}

#[test]
fn elementwise_and_pooling_reject_bad_inputs_on_every_engine() {
    for e in engines() {
        let name = format!("{}/{}", e.name(), e.isa());
        let a = xq(&[2, 3], 0.1, 3);
        let b = xq(&[3, 2], 0.1, 3);
        assert!(
            matches!(e.add(&a, &b, 0.1, 0), Err(QuantError::ShapeMismatch { .. })),
            "{name}"
        );
        assert!(
            matches!(e.mul(&a, &a, -1.0, 0), Err(QuantError::InvalidScale { .. })),
            "{name}"
        );
        assert!(
            matches!(
                e.add_relu(&a, &a, 0.1, -1),
                Err(QuantError::ZeroPointOutOfRange { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                e.relu(&xq(&[0], 0.1, 0)),
                Err(QuantError::EmptyTensor { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                e.hardswish(&a, 0.0, 0),
                Err(QuantError::InvalidScale { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                e.sigmoid(&a, 1.0 / 256.0, 300),
                Err(QuantError::ZeroPointOutOfRange { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                e.cat(&[], 0, 0.1, 0),
                Err(QuantError::InvalidArgument { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                e.cat(&[&a, &b], 1, 0.1, 0),
                Err(QuantError::ShapeMismatch { .. })
            ),
            "{name}"
        );
        assert!(
            matches!(
                e.cat(&[&a, &a], 2, 0.1, 0),
                Err(QuantError::AxisOutOfRange { .. })
            ),
            "{name}"
        );
        let x = xq(&[1, 2, 4, 4], 0.1, 3);
        let mp = MaxPool2dParams {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
        };
        assert!(
            matches!(e.max_pool2d(&a, &mp), Err(QuantError::InvalidShape { .. })),
            "{name}"
        );
        assert!(
            e.max_pool2d(
                &x,
                &MaxPool2dParams {
                    kernel: [0, 2],
                    ..mp
                }
            )
            .is_err(),
            "{name}"
        );
        assert!(
            e.max_pool2d(
                &x,
                &MaxPool2dParams {
                    kernel: [2, 2],
                    padding: [2, 0],
                    ..mp
                }
            )
            .is_err(),
            "{name}"
        );
        assert!(
            e.max_pool2d(
                &x,
                &MaxPool2dParams {
                    kernel: [5, 5],
                    ..mp
                }
            )
            .is_err(),
            "{name}"
        );
        let ap = AvgPool2dParams {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            ceil_mode: false,
            count_include_pad: true,
            divisor_override: Some(0),
        };
        assert!(e.avg_pool2d(&x, &ap).is_err(), "{name}");
        assert!(e.adaptive_avg_pool2d(&x, [0, 1]).is_err(), "{name}");
        assert!(e.adaptive_avg_pool2d(&a, [1, 1]).is_err(), "{name}");
    }
}
