//! Testers of the memory-bound ops: max / average / adaptive pooling, add /
//! add_relu / mul (same shape and broadcast), relu / relu6 / hardtanh, the
//! table activations, cat, requantize. Each runs the op on the engine under
//! test and on the reference engine (`rquant_core::portable`, the oracle)
//! and demands identical bits and identical output shape and memory format.
//!
//! The sweeps cover what the vector kernels split on: channel counts below,
//! at and above every vector width (8, 16, 32, 64 and their neighbours),
//! odd spatial sizes, padding, ceil mode, dilation, strides 1, 2 and 3 (the
//! NCHW kernels' vector strides and a scalar one), windows past 256 taps
//! (u16 sums flushed) and past the f32-exact range (integer fallback), zero
//! points 0 / 128 / 255, full-range codes and runs of 0 and 255, extreme
//! scales, every combination of NCHW and NHWC operands, and every
//! broadcast the engines special-case (`[N,C,1,1]`, `[1,C,1,1]`, `[C,1,1]`,
//! one element) plus ones they do not.

use rquant_core::{
    AvgPool2dParams, BinaryOp, Engine, GeluApproximate, MaxPool2dParams, MemoryFormat, QDType,
    QParams, QTensor, QType,
};

use crate::{reference, Rng};

const NCHW: MemoryFormat = MemoryFormat::Contiguous;
const NHWC: MemoryFormat = MemoryFormat::ChannelsLast;

fn who(e: &Engine) -> String {
    format!("{}/{}", e.name(), e.isa())
}

/// Random codes: uniform 0..=255 with runs of 0 and of 255 mixed in.
pub fn codes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| match (i / 7) % 11 {
            3 => 255,
            7 => 0,
            _ => rng.int(0, 255) as u8,
        })
        .collect()
}

/// A quint8 tensor of logical shape `shape` (4-D may be channels-last)
/// with random codes (stored in `format`'s order).
pub fn qtensor(
    rng: &mut Rng,
    shape: &[usize],
    format: MemoryFormat,
    scale: f64,
    zp: i64,
) -> QTensor<u8> {
    let n = shape.iter().product();
    let data = codes(rng, n);
    let qp = QParams::per_tensor(scale, zp);
    if format == NHWC {
        QTensor::from_int_repr_channels_last(shape.to_vec(), data, qp).expect("valid tensor")
    } else {
        QTensor::from_int_repr(shape.to_vec(), data, qp).expect("valid tensor")
    }
}

/// Demands the same shape, qparams, memory format and bits.
pub fn assert_same_q<T: QType>(
    e: &Engine,
    op: &str,
    case: &str,
    got: &QTensor<T>,
    want: &QTensor<T>,
) {
    let w = who(e);
    assert_eq!(got.shape(), want.shape(), "{op} on {w}: shape, {case}");
    assert_eq!(
        got.memory_format(),
        want.memory_format(),
        "{op} on {w}: memory format, {case}"
    );
    assert_eq!(
        got.qparams(),
        want.qparams(),
        "{op} on {w}: qparams, {case}"
    );
    if let Some(i) = got
        .int_repr()
        .iter()
        .zip(want.int_repr())
        .position(|(a, b)| a != b)
    {
        panic!(
            "{op} on {w}: storage element {i} is {:?}, the reference gives {:?}\ncase: {case}",
            got.int_repr()[i],
            want.int_repr()[i]
        );
    }
}

/// Channel counts around every vector width the engines use.
pub const CHANNELS: &[usize] = &[
    1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 47, 48, 63, 64, 65, 96, 127, 128, 129, 200,
];

fn mp(k: [usize; 2], s: [usize; 2], p: [usize; 2], d: [usize; 2], ceil: bool) -> MaxPool2dParams {
    MaxPool2dParams {
        kernel: k,
        stride: s,
        padding: p,
        dilation: d,
        ceil_mode: ceil,
    }
}

/// Max pooling of one input on the engine against the reference (an
/// invalid geometry must fail on both).
pub fn check_max_pool(e: &Engine, x: &QTensor<u8>, p: &MaxPool2dParams) {
    let r = reference();
    let case = format!("{:?} {:?} {p:?}", x.shape(), x.memory_format());
    match (e.max_pool2d(x, p), r.max_pool2d(x, p)) {
        (Ok(got), Ok(want)) => assert_same_q(e, "max_pool2d", &case, &got, &want),
        (Err(_), Err(_)) => {}
        (g, w) => panic!("max_pool2d on {}: {g:?} vs reference {w:?}, {case}", who(e)),
    }
}

pub fn check_avg_pool(e: &Engine, x: &QTensor<u8>, p: &AvgPool2dParams) {
    let r = reference();
    let case = format!(
        "{:?} {:?} {:?} {p:?}",
        x.shape(),
        x.memory_format(),
        x.qparams()
    );
    match (e.avg_pool2d(x, p), r.avg_pool2d(x, p)) {
        (Ok(got), Ok(want)) => assert_same_q(e, "avg_pool2d", &case, &got, &want),
        (Err(_), Err(_)) => {}
        (g, w) => panic!("avg_pool2d on {}: {g:?} vs reference {w:?}, {case}", who(e)),
    }
}

pub fn check_adaptive(e: &Engine, x: &QTensor<u8>, out: [usize; 2]) {
    let r = reference();
    let case = format!("{:?} {:?} -> {out:?}", x.shape(), x.memory_format());
    let got = e
        .adaptive_avg_pool2d(x, out)
        .expect("engine adaptive_avg_pool2d");
    let want = r
        .adaptive_avg_pool2d(x, out)
        .expect("reference adaptive_avg_pool2d");
    assert_same_q(e, "adaptive_avg_pool2d", &case, &got, &want);
}

/// The standard pooling sweep.
pub fn sweep_pooling(e: &Engine) {
    let mut rng = Rng::new(11);
    // NHWC: every channel count on the common geometries.
    let geoms = [
        ([9, 11], mp([3, 3], [2, 2], [1, 1], [1, 1], false)), // ResNet's stem pool
        ([7, 9], mp([2, 2], [2, 2], [0, 0], [1, 1], false)),  // the MNIST CNN's
        ([5, 7], mp([3, 3], [1, 1], [1, 1], [1, 1], false)),
        ([8, 8], mp([3, 3], [2, 2], [0, 0], [1, 1], true)),
        ([9, 7], mp([2, 3], [1, 2], [1, 1], [2, 1], false)),
        ([11, 13], mp([4, 4], [3, 3], [2, 2], [1, 1], true)),
        ([10, 9], mp([5, 3], [2, 1], [2, 1], [2, 3], true)),
        ([4, 6], mp([1, 1], [1, 1], [0, 0], [1, 1], false)),
        ([3, 3], mp([3, 3], [3, 3], [1, 1], [1, 1], true)),
    ];
    for (gi, (hw, p)) in geoms.iter().enumerate() {
        for (ci, &c) in CHANNELS.iter().enumerate() {
            if (gi + ci) % 2 == 1 && c > 64 {
                continue;
            }
            let n = 1 + (gi + ci) % 2;
            for f in [NHWC, NCHW] {
                let x = qtensor(&mut rng, &[n, c, hw[0], hw[1]], f, 0.05, 128);
                check_max_pool(e, &x, p);
            }
        }
    }
    // NCHW rows long enough for the vector row kernels (16..64-byte steps,
    // the last partial), strides 1, 2 and 3, padding, ceil mode, dilation.
    for &w in &[
        5, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70, 127, 128, 130, 200, 257,
    ] {
        for (pi, p) in [
            mp([2, 2], [2, 2], [0, 0], [1, 1], false),
            mp([3, 3], [2, 2], [1, 1], [1, 1], true),
            mp([3, 3], [1, 1], [1, 1], [1, 1], false),
            mp([2, 3], [1, 1], [0, 1], [1, 2], true),
            mp([3, 2], [3, 3], [1, 1], [2, 1], true),
            mp([4, 5], [2, 2], [2, 2], [1, 2], false),
            mp([3, 1], [2, 1], [1, 0], [1, 1], false),
        ]
        .iter()
        .enumerate()
        {
            let h = 3 + (w + pi) % 5;
            let x = qtensor(&mut rng, &[1 + pi % 2, 2, h, w], NCHW, 0.1, 0);
            check_max_pool(e, &x, p);
            if w <= 70 {
                let x = qtensor(&mut rng, &[1, 5, h, w], NHWC, 0.1, 0);
                check_max_pool(e, &x, p);
            }
        }
    }

    // Average pooling: zero points, count_include_pad, divisor_override.
    let ap = |k: [usize; 2], s: [usize; 2], p: [usize; 2], ceil, cip, div| AvgPool2dParams {
        kernel: k,
        stride: s,
        padding: p,
        ceil_mode: ceil,
        count_include_pad: cip,
        divisor_override: div,
    };
    let avg_geoms = [
        ([9, 11], ap([3, 3], [2, 2], [1, 1], false, true, None)),
        ([9, 11], ap([3, 3], [2, 2], [1, 1], true, false, None)),
        ([7, 7], ap([2, 2], [2, 2], [0, 0], false, true, None)),
        ([8, 9], ap([3, 2], [1, 2], [1, 1], true, true, None)),
        ([6, 7], ap([3, 3], [2, 2], [1, 0], false, true, Some(7))),
        ([5, 5], ap([4, 4], [3, 3], [2, 2], true, false, Some(1))),
        (
            [5, 6],
            ap([2, 2], [1, 1], [1, 1], false, false, Some(1_000_000)),
        ),
        (
            [5, 6],
            ap([2, 3], [1, 1], [1, 1], true, true, Some(1 << 25)),
        ),
        // 289 taps: the u16 sums are flushed once.
        ([17, 18], ap([17, 17], [1, 1], [0, 0], false, true, None)),
    ];
    for (gi, (hw, p)) in avg_geoms.iter().enumerate() {
        for (ci, &c) in CHANNELS.iter().enumerate() {
            if (gi + ci) % 3 != 0 && c != 64 {
                continue;
            }
            for &zp in &[0, 128, 255] {
                for f in [NHWC, NCHW] {
                    if f == NCHW && c > 17 {
                        continue;
                    }
                    let x = qtensor(&mut rng, &[1 + ci % 2, c, hw[0], hw[1]], f, 0.02, zp);
                    check_avg_pool(e, &x, p);
                }
            }
        }
    }
    // A window past the f32-exact range (33 489 taps · 255 > 2^23): the
    // integer path.
    for f in [NHWC, NCHW] {
        let x = qtensor(&mut rng, &[1, 3, 183, 183], f, 0.02, 255);
        check_avg_pool(e, &x, &ap([183, 183], [1, 1], [0, 0], false, true, None));
    }

    // Adaptive average pooling: global, divisible, uneven and overlapping
    // windows, output larger than the input.
    let outs = [[1, 1], [2, 3], [3, 4], [7, 5], [1, 4], [9, 10], [13, 6]];
    for (oi, out) in outs.iter().enumerate() {
        for (ci, &c) in CHANNELS.iter().enumerate() {
            if (oi + ci) % 2 == 1 && c != 64 {
                continue;
            }
            for f in [NHWC, NCHW] {
                let (h, w) = (7 + oi % 3, 9 - oi % 2);
                let x = qtensor(&mut rng, &[1 + oi % 2, c, h, w], f, 0.02, 3);
                check_adaptive(e, &x, *out);
            }
        }
    }
    // The models' global pools, and a window beyond 256 taps.
    for (c, hw) in [(512, 7), (1280, 7), (64, 1), (40, 17)] {
        let x = qtensor(&mut rng, &[2, c, hw, hw], NHWC, 0.02, 0);
        check_adaptive(e, &x, [1, 1]);
    }
    // Every code 255 over windows of 258 taps and more: sums that would
    // wrap u16 lanes left unflushed.
    for (c, hw) in [(40, 17), (7, 23), (64, 33)] {
        for f in [NHWC, NCHW] {
            let n = c * hw * hw;
            let qp = QParams::per_tensor(0.02, 0);
            let x = if f == NHWC {
                QTensor::from_int_repr_channels_last(vec![1, c, hw, hw], vec![255; n], qp)
            } else {
                QTensor::from_int_repr(vec![1, c, hw, hw], vec![255; n], qp)
            }
            .expect("valid");
            check_adaptive(e, &x, [1, 1]);
            check_adaptive(e, &x, [1, 2]);
            check_avg_pool(e, &x, &ap([hw, 16], [1, 1], [0, 0], false, true, None));
        }
    }
}

/// One binary op of two tensors on the engine against the reference (a
/// shape error must be an error on both).
pub fn check_binary(e: &Engine, op: BinaryOp, a: &QTensor<u8>, b: &QTensor<u8>, out: (f64, i64)) {
    let r = reference();
    let case = format!(
        "{op:?} a {:?} {:?} {:?}, b {:?} {:?} {:?}, out {out:?}",
        a.shape(),
        a.memory_format(),
        a.qparams(),
        b.shape(),
        b.memory_format(),
        b.qparams()
    );
    match (
        e.binary(op, a, b, out.0, out.1),
        r.binary(op, a, b, out.0, out.1),
    ) {
        (Ok(got), Ok(want)) => assert_same_q(e, op.name(), &case, &got, &want),
        (Err(_), Err(_)) => {}
        (g, w) => panic!(
            "{} on {}: {g:?} vs reference {w:?}, {case}",
            op.name(),
            who(e)
        ),
    }
}

const OPS: [BinaryOp; 3] = [BinaryOp::Add, BinaryOp::AddRelu, BinaryOp::Mul];

/// The standard add / add_relu / mul sweep.
pub fn sweep_binary(e: &Engine) {
    let mut rng = Rng::new(23);
    // Flat lengths around every vector width, zero points at both ends.
    let lens: Vec<usize> = (1..=70)
        .chain([95, 127, 128, 129, 255, 256, 257, 1000])
        .collect();
    for (li, &n) in lens.iter().enumerate() {
        for (oi, &op) in OPS.iter().enumerate() {
            let za = [0, 128, 255][(li + oi) % 3];
            let zb = [255, 0, 128][li % 3];
            let zo = [128, 255, 0][(li + 2 * oi) % 3];
            let a = qtensor(&mut rng, &[n], NCHW, 0.031, za);
            let b = qtensor(&mut rng, &[n], NCHW, 0.017, zb);
            let so = if op == BinaryOp::Mul { 0.02 } else { 0.04 };
            check_binary(e, op, &a, &b, (so, zo));
        }
    }
    // Every zero point triple and some scales on one odd length.
    for &za in &[0, 128, 255] {
        for &zb in &[0, 128, 255] {
            for &zo in &[0, 128, 255] {
                for &op in &OPS {
                    for &(sa, sb, so) in
                        &[(0.02, 0.03, 0.05), (1.0, 0.5, 0.003), (1e-4, 2e-4, 1e-6)]
                    {
                        let a = qtensor(&mut rng, &[3, 37], NCHW, sa, za);
                        let b = qtensor(&mut rng, &[3, 37], NCHW, sb, zb);
                        check_binary(e, op, &a, &b, (so, zo));
                    }
                }
            }
        }
    }
    // Extreme scales: f32 overflow (the oracle's path), subnormal-ish outputs.
    for &(sa, sb, so) in &[
        (3e38, 1e-3, 1.0),
        (1e-3, 3.0e38, 0.5),
        (1e30, 1e30, 1e-30),
        (1e-30, 1e-30, 1e30),
        (0.5, 0.25, 1e-40),
        (2e37, 2e37, 1e-3),
    ] {
        for &op in &OPS {
            let a = qtensor(&mut rng, &[2, 41], NCHW, sa, 100);
            let b = qtensor(&mut rng, &[2, 41], NCHW, sb, 200);
            check_binary(e, op, &a, &b, (so, 77));
        }
    }
    // 4-D, same shape, every format combination.
    for (ci, &c) in CHANNELS.iter().enumerate() {
        let (h, w) = (3 + ci % 3, 5 - ci % 2);
        for &fa in &[NCHW, NHWC] {
            for &fb in &[NCHW, NHWC] {
                let op = OPS[ci % 3];
                let a = qtensor(&mut rng, &[2, c, h, w], fa, 0.05, 128);
                let b = qtensor(&mut rng, &[2, c, h, w], fb, 0.04, 3);
                check_binary(e, op, &a, &b, (0.06, 120));
            }
        }
    }
    // Broadcasts: squeeze-excitation's [N,C,1,1] and its relatives, in both
    // operand orders and every format combination.
    for (ci, &c) in CHANNELS.iter().enumerate() {
        let (n, h, w) = (2, 3 + ci % 4, 2 + ci % 3);
        for bshape in [
            vec![n, c, 1, 1],
            vec![1, c, 1, 1],
            vec![c, 1, 1],
            vec![1],
            vec![1, 1, 1, 1],
        ] {
            for &fa in &[NHWC, NCHW] {
                let fb = if bshape.len() == 4 && ci % 2 == 0 {
                    NHWC
                } else {
                    NCHW
                };
                let op = OPS[(ci + bshape.len()) % 3];
                let zb = [0, 128, 255][ci % 3];
                let a = qtensor(&mut rng, &[n, c, h, w], fa, 0.05, 128);
                let b = qtensor(&mut rng, &bshape, fb, 0.01, zb);
                check_binary(e, op, &a, &b, (0.03, 5));
                check_binary(e, op, &b, &a, (0.03, 250));
            }
        }
    }
    // Broadcasts the engines leave to the oracle, and shapes that do not broadcast.
    for (bshape, fb) in [
        (vec![2, 1, 4, 5], NHWC),
        (vec![1, 1, 4, 5], NCHW),
        (vec![5], NCHW),
        (vec![4, 1], NCHW),
        (vec![2, 3, 1, 5], NCHW),
        (vec![2, 3, 4, 4], NCHW),
    ] {
        for &fa in &[NHWC, NCHW] {
            for &op in &OPS {
                let a = qtensor(&mut rng, &[2, 3, 4, 5], fa, 0.05, 10);
                let b = qtensor(&mut rng, &bshape, fb, 0.02, 140);
                check_binary(e, op, &a, &b, (0.07, 60));
            }
        }
    }
}

/// The element-wise activations (clamps and tables) of `x` on the engine
/// against the reference.
pub fn check_activations(e: &Engine, x: &QTensor<u8>) {
    let r = reference();
    let case = format!("{:?} {:?} {:?}", x.shape(), x.memory_format(), x.qparams());
    type Op<'a> = Box<dyn Fn(&Engine) -> rquant_core::Result<QTensor<u8>> + 'a>;
    let (s, z) = x.q_per_tensor().expect("per-tensor");
    let ops: Vec<(&str, Op)> = vec![
        ("relu", Box::new(|e: &Engine| e.relu(x))),
        ("relu6", Box::new(|e: &Engine| e.relu6(x))),
        ("hardtanh", Box::new(|e: &Engine| e.hardtanh(x, -0.7, 1.3))),
        (
            "hardtanh (min > max)",
            Box::new(|e: &Engine| e.hardtanh(x, 1.0, -1.0)),
        ),
        (
            "hardtanh (±inf)",
            Box::new(|e: &Engine| e.hardtanh(x, f32::NEG_INFINITY, f32::INFINITY)),
        ),
        (
            "hardswish",
            Box::new(move |e: &Engine| e.hardswish(x, s * 0.7, (z + 9) % 256)),
        ),
        (
            "sigmoid",
            Box::new(|e: &Engine| e.sigmoid(x, 1.0 / 256.0, 0)),
        ),
        ("hardsigmoid", Box::new(|e: &Engine| e.hardsigmoid(x))),
        ("tanh", Box::new(|e: &Engine| e.tanh(x))),
        (
            "leaky_relu",
            Box::new(|e: &Engine| e.leaky_relu(x, 0.01, 0.03, 20)),
        ),
        ("elu", Box::new(|e: &Engine| e.elu(x, 1.5, 0.05, 100))),
        (
            "gelu",
            Box::new(|e: &Engine| e.gelu(x, GeluApproximate::Tanh)),
        ),
    ];
    for (name, f) in &ops {
        let got = f(e).unwrap_or_else(|err| panic!("{name} on {}: {err}", who(e)));
        let want = f(&r).expect("reference");
        assert_same_q(e, name, &case, &got, &want);
    }
}

/// The standard sweep of relu / relu6 / hardtanh and the table activations.
pub fn sweep_activations(e: &Engine) {
    let mut rng = Rng::new(37);
    let lens: Vec<usize> = (1..=70)
        .chain([127, 128, 129, 255, 256, 257, 1000, 4099])
        .collect();
    for (li, &n) in lens.iter().enumerate() {
        let zp = [0, 128, 255, 3][li % 4];
        let scale = [0.05, 0.5, 0.001, 0.02][li % 4];
        let x = qtensor(&mut rng, &[n], NCHW, scale, zp);
        check_activations(e, &x);
    }
    for &c in &[1, 16, 33, 64, 96] {
        for f in [NHWC, NCHW] {
            let x = qtensor(&mut rng, &[2, c, 3, 5], f, 0.04, 128);
            check_activations(e, &x);
        }
    }
    // Every code once, for every zero point the tables can see.
    let all: Vec<u8> = (0..=255).collect();
    for &zp in &[0, 1, 127, 128, 254, 255] {
        let x = QTensor::from_int_repr(vec![256], all.clone(), QParams::per_tensor(0.03, zp))
            .expect("valid");
        check_activations(e, &x);
    }
}

/// One cat on the engine against the reference.
pub fn check_cat(e: &Engine, xs: &[&QTensor<u8>], dim: i64, out: (f64, i64)) {
    let r = reference();
    let case = format!(
        "dim {dim}, out {out:?}, inputs {:?}",
        xs.iter()
            .map(|x| (x.shape().to_vec(), x.memory_format(), x.q_per_tensor()))
            .collect::<Vec<_>>()
    );
    match (e.cat(xs, dim, out.0, out.1), r.cat(xs, dim, out.0, out.1)) {
        (Ok(got), Ok(want)) => assert_same_q(e, "cat", &case, &got, &want),
        (Err(_), Err(_)) => {}
        (g, w) => panic!("cat on {}: {g:?} vs reference {w:?}, {case}", who(e)),
    }
}

/// The standard cat sweep: along channels of NHWC tensors (each pixel's
/// channel runs interleaved), of NCHW tensors, along other dimensions,
/// with identity and requantizing qparams, mixed formats.
pub fn sweep_cat(e: &Engine) {
    let mut rng = Rng::new(41);
    let out = (0.05, 128);
    for (ci, &c) in CHANNELS.iter().enumerate() {
        let c2 = CHANNELS[(ci * 7 + 3) % CHANNELS.len()];
        let (h, w) = (2 + ci % 3, 3 + ci % 2);
        for &fa in &[NHWC, NCHW] {
            for &fb in &[NHWC, NCHW] {
                // The first input has the output's qparams (a copy), the
                // others are requantized.
                let a = qtensor(&mut rng, &[2, c, h, w], fa, out.0, out.1);
                let b = qtensor(&mut rng, &[2, c2, h, w], fb, 0.031, 7);
                let d = qtensor(&mut rng, &[2, 1 + ci % 5, h, w], fa, 0.2, 255);
                check_cat(e, &[&a, &b], 1, out);
                check_cat(e, &[&b, &a, &d], 1, (0.07, 0));
                check_cat(e, &[&a, &b, &d], -3, (0.01, 255));
            }
        }
    }
    // Other dimensions, other ranks, an input empty along the dimension.
    for &f in &[NHWC, NCHW] {
        let a = qtensor(&mut rng, &[2, 5, 3, 4], f, 0.05, 128);
        let b = qtensor(&mut rng, &[3, 5, 3, 4], f, 0.02, 0);
        check_cat(e, &[&a, &b], 0, (0.05, 100));
        let b = qtensor(&mut rng, &[2, 5, 6, 4], f, 0.02, 0);
        check_cat(e, &[&a, &b], 2, (0.03, 100));
        let b = qtensor(&mut rng, &[2, 5, 3, 1], f, 0.02, 0);
        check_cat(e, &[&b, &a], -1, (0.03, 100));
        let z = qtensor(&mut rng, &[2, 0, 3, 4], f, 0.02, 0);
        check_cat(e, &[&a, &z, &a], 1, (0.03, 100));
    }
    for &n in &[1, 15, 16, 17, 33, 64, 65, 300] {
        let a = qtensor(&mut rng, &[3, n], NCHW, 0.05, 128);
        let b = qtensor(&mut rng, &[3, 2 * n + 1], NCHW, 0.03, 255);
        check_cat(e, &[&a, &b], 1, (0.04, 3));
        check_cat(e, &[&a, &a], 0, (0.05, 128));
    }
}

fn requantize_one<T: QType, U: QType>(e: &Engine, x: &QTensor<T>, scale: f64, zp: i64) {
    let case = format!(
        "{:?} {} → {}, {scale} {zp}",
        x.qparams(),
        T::DTYPE,
        U::DTYPE
    );
    let got: QTensor<U> = e
        .requantize(x, scale, zp)
        .unwrap_or_else(|err| panic!("requantize on {}: {err}", who(e)));
    let want: QTensor<U> = rquant_core::requantize(x, scale, zp).expect("core requantize");
    assert_same_q(e, "requantize", &case, &got, &want);
}

/// Requantize between every pair of 8-bit dtypes, on every code and on
/// longer, channels-last tensors; the errors of bad qparams.
pub fn sweep_requantize(e: &Engine) {
    let mut rng = Rng::new(43);
    let all_u8: Vec<u8> = (0..=255).collect();
    let all_i8: Vec<i8> = (-128..=127).collect();
    for &(si, zi, so, zo) in &[
        (0.1, 3, 0.07, 200),
        (1e-3, 255, 2.5, 0),
        (0.02, 128, 0.02, 128),
        (0.5, 0, 1e-4, 255),
    ] {
        let qu = QTensor::from_int_repr(vec![256], all_u8.clone(), QParams::per_tensor(si, zi))
            .expect("u8");
        let qi =
            QTensor::from_int_repr(vec![256], all_i8.clone(), QParams::per_tensor(si, zi - 128))
                .expect("i8");
        requantize_one::<u8, u8>(e, &qu, so, zo);
        requantize_one::<u8, i8>(e, &qu, so, zo - 128);
        requantize_one::<i8, u8>(e, &qi, so, zo);
        requantize_one::<i8, i8>(e, &qi, so, zo - 128);
    }
    for &n in &[1, 15, 33, 64, 65, 1000, 70_001] {
        let x = qtensor(&mut rng, &[n], NCHW, 0.03, 17);
        requantize_one::<u8, u8>(e, &x, 0.05, 200);
        requantize_one::<u8, i8>(e, &x, 0.01, -3);
    }
    let x = qtensor(&mut rng, &[2, 19, 3, 5], NHWC, 0.03, 17);
    requantize_one::<u8, u8>(e, &x, 0.05, 200);
    assert!(e.requantize::<u8, u8>(&x, 0.0, 0).is_err());
    assert!(e.requantize::<u8, u8>(&x, 0.1, 256).is_err());
    assert!(e.requantize::<u8, i8>(&x, 0.1, 128).is_err());
    // qint32 output: core's own path.
    let y: QTensor<i32> = e.requantize(&x, 0.001, 5).expect("qint32");
    assert_eq!(
        y.int_repr(),
        rquant_core::requantize::<u8, i32>(&x, 0.001, 5)
            .unwrap()
            .int_repr()
    );
    let _ = QDType::QInt32;
}

/// Every memory-bound sweep.
pub fn sweep_memory(e: &Engine) {
    sweep_pooling(e);
    sweep_binary(e);
    sweep_activations(e);
    sweep_cat(e);
    sweep_requantize(e);
}

/// Shapes large enough to be split over threads (above the drivers'
/// serial threshold), for the thread-count tests: the caller sets the
/// thread count, this compares with the reference.
pub fn sweep_memory_threaded(e: &Engine) {
    let mut rng = Rng::new(47);
    let x = qtensor(&mut rng, &[3, 64, 37, 41], NHWC, 0.05, 128);
    check_max_pool(e, &x, &mp([3, 3], [2, 2], [1, 1], [1, 1], false));
    check_adaptive(e, &x, [1, 1]);
    check_adaptive(e, &x, [5, 3]);
    check_avg_pool(
        e,
        &x,
        &AvgPool2dParams {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            ceil_mode: false,
            count_include_pad: false,
            divisor_override: None,
        },
    );
    check_activations(e, &x);
    let xc = qtensor(&mut rng, &[3, 20, 61, 67], NCHW, 0.05, 128);
    check_max_pool(e, &xc, &mp([2, 2], [2, 2], [0, 0], [1, 1], true));
    let b = qtensor(&mut rng, &[3, 64, 37, 41], NHWC, 0.03, 10);
    let g = qtensor(&mut rng, &[3, 64, 1, 1], NCHW, 0.01, 0);
    for &op in &OPS {
        check_binary(e, op, &x, &b, (0.05, 100));
        check_binary(e, op, &x, &g, (0.05, 100));
    }
    let gc = qtensor(&mut rng, &[3, 20, 1, 1], NCHW, 0.01, 0);
    check_binary(e, BinaryOp::Mul, &xc, &gc, (0.05, 100));
    check_cat(e, &[&x, &b], 1, (0.05, 128));
    let y = qtensor(&mut rng, &[400_001], NCHW, 0.03, 17);
    requantize_one::<u8, i8>(e, &y, 0.01, -3);
}

/// A few small cases of every memory-bound op (for Miri: every kernel and
/// its tails, little time).
pub fn sweep_memory_small(e: &Engine) {
    let mut rng = Rng::new(53);
    // Under Miri (1000x slower) a tail-only and a body-plus-tail channel
    // count for 32- and 64-byte vectors; natively two more in between.
    let channels: &[usize] = if cfg!(miri) {
        &[3, 65]
    } else {
        &[3, 17, 33, 65]
    };
    for &c in channels {
        for f in [NHWC, NCHW] {
            let x = qtensor(&mut rng, &[1, c, 5, 6], f, 0.05, 128);
            check_max_pool(e, &x, &mp([3, 3], [2, 2], [1, 1], [1, 1], true));
            check_adaptive(e, &x, [2, 3]);
            check_avg_pool(
                e,
                &x,
                &AvgPool2dParams {
                    kernel: [2, 3],
                    stride: [1, 2],
                    padding: [1, 1],
                    ceil_mode: true,
                    count_include_pad: c % 2 == 1,
                    divisor_override: None,
                },
            );
            let b = qtensor(&mut rng, &[1, c, 5, 6], f, 0.03, 0);
            let g = qtensor(&mut rng, &[1, c, 1, 1], NCHW, 0.02, 255);
            for &op in &OPS {
                check_binary(e, op, &x, &b, (0.05, 100));
                check_binary(e, op, &x, &g, (0.05, 100));
            }
            check_cat(e, &[&x, &b], 1, (0.04, 3));
        }
    }
    for &w in &[40, 70, 130] {
        let x = qtensor(&mut rng, &[1, 1, 3, w], NCHW, 0.05, 0);
        check_max_pool(e, &x, &mp([2, 2], [2, 2], [0, 0], [1, 1], true));
        check_max_pool(e, &x, &mp([3, 3], [1, 1], [1, 1], [1, 1], false));
    }
    for &n in &[5, 17, 40, 70, 130] {
        let x = qtensor(&mut rng, &[n], NCHW, 0.05, 128);
        check_activations(e, &x);
        requantize_one::<u8, i8>(e, &x, 0.01, -3);
    }
}
