//! Every op of the reference engine on small inputs, with its output checked
//! against plain arithmetic written here. Natively a quick sanity check; under
//! Miri (`cargo xtask miri`) it is how each op's code (the engine's own and
//! `rquant_core::portable`'s) is checked for undefined behaviour directly.

use rquant_core::numerics::{dequantize_val, inv_scale, quantize_val};
use rquant_core::{AvgPool2dParams, Conv2dParams, MaxPool2dParams, QParams, QTensor, Tensor};

fn q(shape: &[usize], data: Vec<u8>, scale: f64, zp: i64) -> QTensor<u8> {
    QTensor::from_int_repr(shape.to_vec(), data, QParams::per_tensor(scale, zp)).unwrap()
}

/// The reference's add, written out: dequantize both, add in f32, quantize.
fn add_ref(a: &QTensor<u8>, b: &QTensor<u8>, s: f64, z: i64) -> Vec<u8> {
    let (sa, za) = a.q_per_tensor().unwrap();
    let (sb, zb) = b.q_per_tensor().unwrap();
    a.int_repr()
        .iter()
        .zip(b.int_repr())
        .map(|(&x, &y)| {
            let v =
                dequantize_val(sa as f32, za, x as i64) + dequantize_val(sb as f32, zb, y as i64);
            quantize_val::<u8>(inv_scale(s), z, v)
        })
        .collect()
}

#[test]
fn every_op_small() {
    let e = rquant_reference::engine();
    let x = q(
        &[1, 2, 3, 4],
        (0..24).map(|i| (i * 11 % 256) as u8).collect(),
        0.1,
        3,
    );
    let y = q(
        &[1, 2, 3, 4],
        (0..24).map(|i| (i * 29 % 256) as u8).collect(),
        0.05,
        120,
    );

    // Linear (static, dynamic, fp16) against the exact integer sum.
    let wq = QTensor::<i8>::from_int_repr(
        vec![3, 4],
        vec![1, -2, 3, -4, 5, -6, 7, -8, 127, -128, 0, 9],
        QParams::per_tensor(0.02, 0),
    )
    .unwrap();
    let pw = e.pack_linear(wq.clone(), None).unwrap();
    let xl = q(&[2, 4], vec![0, 255, 7, 100, 3, 3, 3, 3], 0.1, 3);
    let yl = e.linear(&xl, &pw, 1.0, 0, false).unwrap();
    for (m, row) in xl.int_repr().chunks(4).enumerate() {
        for (n, wrow) in wq.int_repr().chunks(4).enumerate() {
            let acc: i32 = row
                .iter()
                .zip(wrow)
                .map(|(&a, &w)| (a as i32 - 3) * w as i32)
                .sum();
            // out_scale 1, no bias: the multiplier is f32(0.1)·f32(0.02) itself.
            let want = quantize_val::<u8>(1.0, 0, acc as f32 * (0.1f32 * 0.02f32));
            assert_eq!(yl.int_repr()[m * 3 + n], want, "[{m}, {n}]");
        }
    }
    let xf = Tensor::new([2, 4], vec![0.5, -1.0, 2.0, 0.0, 1.0, 1.0, -3.0, 0.25]).unwrap();
    assert_eq!(e.linear_dynamic(&xf, &pw, false).unwrap().shape(), &[2, 3]);
    let wf = Tensor::new([3, 4], (0..12).map(|i| i as f32 * 0.1 - 0.5).collect()).unwrap();
    let pf = e.pack_linear_fp16(wf, Some(vec![0.0, 1.0, -1.0])).unwrap();
    assert_eq!(e.linear_dynamic_fp16(&xf, &pf).unwrap().shape(), &[2, 3]);

    // Conv2d, ordinary and depthwise.
    let wc = QTensor::<i8>::from_int_repr(
        vec![2, 2, 3, 3],
        (0..36).map(|i| (i * 7 % 256) as u8 as i8).collect(),
        QParams::per_tensor(0.01, 0),
    )
    .unwrap();
    let p = Conv2dParams {
        padding: [1, 1],
        ..Default::default()
    };
    let pc = e.pack_conv2d(wc, Some(vec![0.5, -0.5]), p).unwrap();
    assert_eq!(
        e.conv2d(&x, &pc, 0.2, 10, true).unwrap().shape(),
        &[1, 2, 3, 4]
    );
    let wd = QTensor::<i8>::from_int_repr(
        vec![2, 1, 3, 3],
        (0..18).map(|i| i as i8 - 9).collect(),
        QParams::per_tensor(0.01, 0),
    )
    .unwrap();
    let pd = e
        .pack_conv2d(wd, None, Conv2dParams { groups: 2, ..p })
        .unwrap();
    assert_eq!(
        e.conv2d(&x, &pd, 0.2, 10, false).unwrap().shape(),
        &[1, 2, 3, 4]
    );

    // Element-wise, against the formula.
    assert_eq!(
        e.add(&x, &y, 0.2, 7).unwrap().int_repr(),
        add_ref(&x, &y, 0.2, 7)
    );
    let ar = e.add_relu(&x, &y, 0.2, 7).unwrap();
    assert!(ar.int_repr().iter().all(|&v| v >= 7));
    assert_eq!(e.mul(&x, &y, 0.3, 0).unwrap().shape(), x.shape());
    let r = e.relu(&x).unwrap();
    assert!(r
        .int_repr()
        .iter()
        .zip(x.int_repr())
        .all(|(&a, &b)| a == b.max(3)));
    let c = e.cat(&[&x, &y], 1, 0.1, 3).unwrap();
    assert_eq!(c.shape(), &[1, 4, 3, 4]);
    assert_eq!(&c.int_repr()[..12], &x.int_repr()[..12]);
    assert_eq!(e.hardswish(&x, 0.1, 3).unwrap().shape(), x.shape());
    assert_eq!(e.sigmoid(&x, 1.0 / 256.0, 0).unwrap().shape(), x.shape());

    // Pooling.
    let mp = e
        .max_pool2d(
            &x,
            &MaxPool2dParams {
                kernel: [2, 2],
                stride: [2, 2],
                padding: [0, 0],
                dilation: [1, 1],
                ceil_mode: true,
            },
        )
        .unwrap();
    assert_eq!(mp.shape(), &[1, 2, 2, 2]);
    let xd = x.int_repr();
    assert_eq!(mp.int_repr()[0], xd[0].max(xd[1]).max(xd[4]).max(xd[5]));
    let ap = AvgPool2dParams {
        kernel: [2, 2],
        stride: [1, 1],
        padding: [1, 1],
        ceil_mode: false,
        count_include_pad: false,
        divisor_override: None,
    };
    assert_eq!(e.avg_pool2d(&x, &ap).unwrap().shape(), &[1, 2, 4, 5]);
    assert_eq!(
        e.adaptive_avg_pool2d(&x, [2, 3]).unwrap().shape(),
        &[1, 2, 2, 3]
    );

    // Quantize / dequantize into buffers.
    let src: Vec<f32> = (0..40).map(|i| i as f32 * 0.3 - 5.0).collect();
    let mut codes = vec![0i8; 40];
    e.quantize_per_tensor_into(&src, 0.1, -3, &mut codes)
        .unwrap();
    for (&s, &c) in src.iter().zip(&codes) {
        assert_eq!(c, quantize_val::<i8>(inv_scale(0.1), -3, s));
    }
    let qt = QTensor::from_int_repr(vec![40], codes, QParams::per_tensor(0.1, -3)).unwrap();
    let mut back = vec![0f32; 40];
    e.dequantize_into(&qt, &mut back).unwrap();
    assert_eq!(back[0], dequantize_val(0.1, -3, qt.int_repr()[0] as i64));
}
