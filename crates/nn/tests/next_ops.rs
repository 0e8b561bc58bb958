//! The ops of CONFORMANCE.md's second table on every engine path this machine
//! has, each checked against its arithmetic written out here (docs/numerics.md
//! §11–§17), and, for the ops that read either memory format, channels-last
//! input against the same logical NCHW input. The convolutions built from
//! conv2d (conv1d, conv3d, conv_transpose2d) are checked against direct loops
//! with exact integer accumulation and the §5 requantization.

use rquant_core::numerics::{
    bias_term, dequantize_val, inv_scale, quantize_val, requantize_u8, rne, RequantChannel,
};
use rquant_core::special::{erf_f64, expm1_f64, tanh_f64};
use rquant_core::{
    BatchNormParams, Conv1dParams, Conv3dParams, ConvTranspose2dParams, EmbeddingBagTable, Engine,
    GeluApproximate, MemoryFormat, NormParams, QParams, QTensor, UpsampleSize,
};

const CL: MemoryFormat = MemoryFormat::ChannelsLast;

fn engines() -> Vec<Engine> {
    // Every engine and ISA path this machine has, the reference included.
    rquant_nn::engines::all_paths()
}

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
    fn f(&mut self) -> f32 {
        (self.next() % 20001) as f32 / 10000.0 - 1.0
    }
}

fn rand_q(r: &mut Rng, shape: &[usize], scale: f64, zp: i64) -> QTensor<u8> {
    let n: usize = shape.iter().product();
    let data = (0..n).map(|_| r.next() as u8).collect();
    QTensor::from_int_repr(shape.to_vec(), data, QParams::per_tensor(scale, zp)).unwrap()
}

fn q(v: f32, scale: f64, zp: i64) -> u8 {
    quantize_val::<u8>(inv_scale(scale), zp, v)
}

fn deq(x: u8, scale: f64, zp: i64) -> f32 {
    dequantize_val(scale as f32, zp, x as i64)
}

/// `y` (any format) holds `want` in logical order, with qparams (s, z).
fn check(y: &QTensor<u8>, shape: &[usize], want: &[u8], s: f64, z: i64, what: &str) {
    let y = y.clone().contiguous();
    assert_eq!(y.shape(), shape, "{what}: shape");
    assert_eq!(y.q_per_tensor(), Some((s, z)), "{what}: qparams");
    assert_eq!(y.int_repr(), want, "{what}");
}

/// The same op on `x` stored NCHW and channels-last gives the same logical
/// result; returns the NCHW result.
fn both_formats(
    x: &QTensor<u8>,
    f: impl Fn(&QTensor<u8>) -> QTensor<u8>,
    cl_out: Option<MemoryFormat>,
    what: &str,
) -> QTensor<u8> {
    let a = f(x);
    if x.ndim() != 4 {
        return a;
    }
    let b = f(&x.to_format(CL));
    if let Some(fmt) = cl_out {
        assert_eq!(
            b.memory_format(),
            fmt,
            "{what}: channels-last output format"
        );
    }
    assert_eq!(
        a.clone().contiguous(),
        b.contiguous(),
        "{what}: channels-last differs from NCHW"
    );
    a
}

#[test]
fn clamps_and_tables_match_the_written_formulas() {
    let mut r = Rng(0x1234_5678_9abc_def1);
    for e in engines() {
        for case in 0..12 {
            let shape = [[2, 3, 4, 5], [1, 1, 7, 3], [3, 2, 1, 6]][case % 3];
            let s = [0.05, 2.0, 0.0473, 0.1][case % 4];
            let z = [0, 255, 128, 37][case % 4];
            let x = rand_q(&mut r, &shape, s, z);
            let xs: Vec<u8> = x.int_repr().to_vec();
            let what = format!("{} case {case}", e.path());
            // hardtanh / relu6: integer clamp to the quantized bounds.
            let (lo_v, hi_v) = (
                [-1.0, 0.0, -0.3, 2.0][case % 4],
                [1.0, 6.0, 0.7, -2.0][case % 4],
            );
            let y = both_formats(&x, |x| e.hardtanh(x, lo_v, hi_v).unwrap(), Some(CL), &what);
            let (lo, hi) = (q(lo_v, s, z), q(hi_v, s, z));
            let want: Vec<u8> = xs.iter().map(|&v| v.max(lo).min(hi)).collect();
            check(&y, &shape, &want, s, z, &format!("hardtanh {what}"));
            let y = both_formats(&x, |x| e.relu6(x).unwrap(), Some(CL), &what);
            let (lo, hi) = (q(0.0, s, z), q(6.0, s, z));
            let want: Vec<u8> = xs.iter().map(|&v| v.max(lo).min(hi)).collect();
            check(&y, &shape, &want, s, z, &format!("relu6 {what}"));
            // hardsigmoid, to (1/256, 0).
            let y = both_formats(&x, |x| e.hardsigmoid(x).unwrap(), Some(CL), &what);
            let want: Vec<u8> = xs
                .iter()
                .map(|&v| q((deq(v, s, z) + 3.0).clamp(0.0, 6.0) / 6.0, 1.0 / 256.0, 0))
                .collect();
            check(
                &y,
                &shape,
                &want,
                1.0 / 256.0,
                0,
                &format!("hardsigmoid {what}"),
            );
            // tanh, to (2/256, 128).
            let y = both_formats(&x, |x| e.tanh(x).unwrap(), Some(CL), &what);
            let want: Vec<u8> = xs
                .iter()
                .map(|&v| q(tanh_f64(deq(v, s, z) as f64) as f32, 2.0 / 256.0, 128))
                .collect();
            check(&y, &shape, &want, 2.0 / 256.0, 128, &format!("tanh {what}"));
            // leaky_relu and elu, to given qparams.
            let (so, zo) = ([0.03, 4.0, 0.011][case % 3], [0, 128, 255][case % 3]);
            let slope = [0.01f32, -0.5, 1.7][case % 3];
            let y = both_formats(
                &x,
                |x| e.leaky_relu(x, slope, so, zo).unwrap(),
                Some(CL),
                &what,
            );
            let want: Vec<u8> = xs
                .iter()
                .map(|&v| {
                    let d = deq(v, s, z);
                    q(if d > 0.0 { d } else { d * slope }, so, zo)
                })
                .collect();
            check(&y, &shape, &want, so, zo, &format!("leaky_relu {what}"));
            let alpha = [1.0f32, 3.0, 0.5][case % 3];
            let y = both_formats(&x, |x| e.elu(x, alpha, so, zo).unwrap(), Some(CL), &what);
            let want: Vec<u8> = xs
                .iter()
                .map(|&v| {
                    let d = deq(v, s, z);
                    let y = if d >= 0.0 {
                        d
                    } else {
                        (expm1_f64(d as f64) as f32) * alpha
                    };
                    q(y, so, zo)
                })
                .collect();
            check(&y, &shape, &want, so, zo, &format!("elu {what}"));
            // gelu keeps (f32(scale), zp).
            for a in [GeluApproximate::None, GeluApproximate::Tanh] {
                let y = both_formats(&x, |x| e.gelu(x, a).unwrap(), Some(CL), &what);
                let want: Vec<u8> = xs
                    .iter()
                    .map(|&v| {
                        let d = deq(v, s, z);
                        let x64 = d as f64;
                        let g = match a {
                            GeluApproximate::None => {
                                x64 * 0.5 * (1.0 + erf_f64(x64 * std::f64::consts::FRAC_1_SQRT_2))
                            }
                            GeluApproximate::Tanh => {
                                let c = (d * d * d) as f64;
                                let k = std::f64::consts::SQRT_2
                                    * std::f64::consts::FRAC_2_SQRT_PI
                                    * 0.5;
                                0.5 * x64 * (1.0 + tanh_f64(k * (x64 + 0.044715 * c)))
                            }
                        };
                        q(g as f32, s as f32 as f64, z)
                    })
                    .collect();
                check(
                    &y,
                    &shape,
                    &want,
                    s as f32 as f64,
                    z,
                    &format!("gelu {a:?} {what}"),
                );
            }
        }
    }
}

#[test]
fn shuffle_pad_and_upsample_match_the_written_index_maps() {
    let mut r = Rng(0x2545_F491_4F6C_DD1D);
    for e in engines() {
        for case in 0..16 {
            let (n, c, h, w) = (1 + r.upto(2), 1 + r.upto(12), 1 + r.upto(7), 1 + r.upto(7));
            let (s, z) = (0.1, [0, 255, 17][case % 3]);
            let x = rand_q(&mut r, &[n, c, h, w], s, z);
            let xc = x.int_repr().to_vec();
            let at = |b: usize, ch: usize, y: usize, xx: usize| xc[((b * c + ch) * h + y) * w + xx];
            let what = format!("{} case {case} [{n},{c},{h},{w}]", e.path());
            // channel_shuffle: every divisor of C.
            for g in (1..=c).filter(|g| c % g == 0) {
                let y = both_formats(&x, |x| e.channel_shuffle(x, g).unwrap(), Some(CL), &what);
                let cpg = c / g;
                let mut want = Vec::new();
                for b in 0..n {
                    for co in 0..c {
                        for yy in 0..h {
                            for xx in 0..w {
                                want.push(at(b, (co % g) * cpg + co / g, yy, xx));
                            }
                        }
                    }
                }
                check(
                    &y,
                    &[n, c, h, w],
                    &want,
                    s,
                    z,
                    &format!("shuffle g{g} {what}"),
                );
            }
            // constant_pad2d: negative pads crop.
            let pad = [
                r.upto(4) as i64 - 1,
                r.upto(4) as i64 - 1,
                r.upto(4) as i64 - 1,
                r.upto(4) as i64 - 1,
            ];
            let (oh, ow) = (h as i64 + pad[2] + pad[3], w as i64 + pad[0] + pad[1]);
            let value = [0.0f32, 0.05, -7.0][case % 3];
            if oh > 0 && ow > 0 {
                let y = both_formats(
                    &x,
                    |x| e.constant_pad2d(x, pad, value).unwrap(),
                    Some(CL),
                    &what,
                );
                let fill = q(value, s, z);
                let mut want = Vec::new();
                for b in 0..n {
                    for ch in 0..c {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let (iy, ix) = (oy - pad[2], ox - pad[0]);
                                want.push(
                                    if (0..h as i64).contains(&iy) && (0..w as i64).contains(&ix) {
                                        at(b, ch, iy as usize, ix as usize)
                                    } else {
                                        fill
                                    },
                                );
                            }
                        }
                    }
                }
                check(
                    &y,
                    &[n, c, oh as usize, ow as usize],
                    &want,
                    s,
                    z,
                    &format!("pad {pad:?} {what}"),
                );
            } else {
                assert!(e.constant_pad2d(&x, pad, value).is_err(), "{what} {pad:?}");
            }
            // upsampling, by output size and by scale factors.
            let sizes = [
                UpsampleSize::OutputSize([1 + r.upto(12), 1 + r.upto(12)]),
                UpsampleSize::ScaleFactors([
                    0.6 + r.upto(30) as f64 / 10.0,
                    0.6 + r.upto(30) as f64 / 10.0,
                ]),
            ];
            for size in sizes {
                let (ohh, oww, sc) = match size {
                    UpsampleSize::OutputSize([a, b]) => (a, b, None),
                    UpsampleSize::ScaleFactors(f) => (
                        (h as f64 * f[0]).floor() as usize,
                        (w as f64 * f[1]).floor() as usize,
                        Some(f),
                    ),
                };
                if ohh == 0 || oww == 0 {
                    assert!(e.upsample_nearest2d(&x, size).is_err());
                    continue;
                }
                let step = |a: usize, inp: usize, out: usize| match sc {
                    Some(f) => (1.0 / f[a]) as f32,
                    None => inp as f32 / out as f32,
                };
                let same = h == ohh && w == oww;
                let ys = |o: usize, a: usize, inp: usize, out: usize| {
                    if same {
                        o
                    } else {
                        ((o as f32 * step(a, inp, out)).floor() as usize).min(inp - 1)
                    }
                };
                let y = both_formats(
                    &x,
                    |x| e.upsample_nearest2d(x, size).unwrap(),
                    Some(CL),
                    &what,
                );
                let mut want = Vec::new();
                for b in 0..n {
                    for ch in 0..c {
                        for oy in 0..ohh {
                            for ox in 0..oww {
                                want.push(at(b, ch, ys(oy, 0, h, ohh), ys(ox, 1, w, oww)));
                            }
                        }
                    }
                }
                check(
                    &y,
                    &[n, c, ohh, oww],
                    &want,
                    s,
                    z,
                    &format!("nearest {size:?} {what}"),
                );
                for align in [false, true] {
                    let tap =
                        |o: usize, a: usize, inp: usize, out: usize| -> (usize, usize, f32, f32) {
                            let src = if align {
                                let st = if out > 1 {
                                    (inp - 1) as f32 / (out - 1) as f32
                                } else {
                                    0.0
                                };
                                st * o as f32
                            } else {
                                (step(a, inp, out) * (o as f32 + 0.5) - 0.5).max(0.0)
                            };
                            let i0 = src as usize;
                            let l1 = src - i0 as f32;
                            (i0, usize::from(i0 + 1 < inp), 1.0 - l1, l1)
                        };
                    let y = both_formats(
                        &x,
                        |x| e.upsample_bilinear2d(x, size, align).unwrap(),
                        Some(CL),
                        &what,
                    );
                    let mut want = Vec::new();
                    for b in 0..n {
                        for ch in 0..c {
                            for oy in 0..ohh {
                                for ox in 0..oww {
                                    if same {
                                        want.push(at(b, ch, oy, ox));
                                        continue;
                                    }
                                    let (y0, dy, h0, h1) = tap(oy, 0, h, ohh);
                                    let (x0, dx, w0, w1) = tap(ox, 1, w, oww);
                                    let p = |yy: usize, xx: usize| at(b, ch, yy, xx) as f32;
                                    let v = h0 * (w0 * p(y0, x0) + w1 * p(y0, x0 + dx))
                                        + h1 * (w0 * p(y0 + dy, x0) + w1 * p(y0 + dy, x0 + dx))
                                        - z as f32;
                                    want.push((rne(v) as i64 + z).clamp(0, 255) as u8);
                                }
                            }
                        }
                    }
                    check(
                        &y,
                        &[n, c, ohh, oww],
                        &want,
                        s,
                        z,
                        &format!("bilinear {size:?} ac {align} {what}"),
                    );
                }
            }
        }
    }
}

#[test]
fn mean_and_softmax_match_the_written_formulas() {
    let mut r = Rng(0x0ddb_a11c_afef_00d1);
    for e in engines() {
        for case in 0..10 {
            let shape = [2 + r.upto(2), 1 + r.upto(5), 1 + r.upto(4), 1 + r.upto(6)];
            let (s, z) = (0.05, [128, 0, 255][case % 3]);
            let x = rand_q(&mut r, &shape, s, z);
            let xc = x.int_repr().to_vec();
            let idx =
                |i: [usize; 4]| ((i[0] * shape[1] + i[1]) * shape[2] + i[2]) * shape[3] + i[3];
            let what = format!("{} case {case} {shape:?}", e.path());
            let dims: &[&[i64]] = &[&[2, 3], &[-1], &[1], &[0, 2], &[], &[3, 1]];
            for &d in dims {
                for keep in [false, true] {
                    let red: Vec<bool> = (0..4)
                        .map(|a| d.is_empty() || d.iter().any(|&v| (v + 4) % 4 == a as i64))
                        .collect();
                    let out_fmt = keep.then_some(CL);
                    let y = both_formats(&x, |x| e.mean(x, d, keep).unwrap(), out_fmt, &what);
                    let kept: Vec<usize> =
                        (0..4).map(|a| if red[a] { 1 } else { shape[a] }).collect();
                    let n: usize = (0..4).filter(|&a| red[a]).map(|a| shape[a]).product();
                    let mut want = Vec::new();
                    for o in 0..kept.iter().product::<usize>() {
                        let oi = [
                            o / (kept[1] * kept[2] * kept[3]),
                            o / (kept[2] * kept[3]) % kept[1],
                            o / kept[3] % kept[2],
                            o % kept[3],
                        ];
                        let mut sum = 0i64;
                        for i0 in 0..shape[0] {
                            for i1 in 0..shape[1] {
                                for i2 in 0..shape[2] {
                                    for i3 in 0..shape[3] {
                                        let i = [i0, i1, i2, i3];
                                        if (0..4).all(|a| red[a] || i[a] == oi[a]) {
                                            sum += xc[idx(i)] as i64;
                                        }
                                    }
                                }
                            }
                        }
                        want.push(rne(sum as f32 / n as f32) as u8);
                    }
                    let oshape: Vec<usize> = (0..4)
                        .filter(|&a| keep || !red[a])
                        .map(|a| kept[a])
                        .collect();
                    check(
                        &y,
                        &oshape,
                        &want,
                        s,
                        z,
                        &format!("mean {d:?} keep {keep} {what}"),
                    );
                }
            }
            for dim in [1i64, -1, 0] {
                let (so, zo) = (1.0 / 256.0, 0);
                let y = both_formats(&x, |x| e.softmax(x, dim, so, zo).unwrap(), Some(CL), &what);
                let a = ((dim + 4) % 4) as usize;
                let mut want = vec![0u8; xc.len()];
                for (flat, wv) in want.iter_mut().enumerate() {
                    let i = [
                        flat / (shape[1] * shape[2] * shape[3]),
                        flat / (shape[2] * shape[3]) % shape[1],
                        flat / shape[3] % shape[2],
                        flat % shape[3],
                    ];
                    let line: Vec<f64> = (0..shape[a])
                        .map(|j| {
                            let mut k = i;
                            k[a] = j;
                            deq(xc[idx(k)], s, z) as f64
                        })
                        .collect();
                    let m = line.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let tot: f64 = line.iter().map(|v| rquant_core::exp::exp_f64(v - m)).sum();
                    let v = rquant_core::exp::exp_f64(line[i[a]] - m) / tot;
                    *wv = q(v as f32, so, zo);
                }
                check(
                    &y,
                    &shape,
                    &want,
                    so,
                    zo,
                    &format!("softmax dim {dim} {what}"),
                );
            }
        }
    }
}

#[test]
fn norms_match_the_written_formulas() {
    let mut r = Rng(0x5eed_1234_abcd_0001);
    for e in engines() {
        for case in 0..10 {
            let (n, c, h, w) = (1 + r.upto(2), 1 + r.upto(9), 1 + r.upto(4), 1 + r.upto(5));
            let (s, z) = ([0.25, 0.05, 0.0371][case % 3], [128, 0, 255, 9][case % 4]);
            let x = rand_q(&mut r, &[n, c, h, w], s, z);
            let xc = x.int_repr().to_vec();
            let what = format!("{} case {case} [{n},{c},{h},{w}]", e.path());
            let (so, zo) = ([0.004, 0.03][case % 2], [10, 200][case % 2]);
            // batch norm, written out: fused coefficients, one fma per element.
            let vecf = |r: &mut Rng, k: usize, base: f32| -> Vec<f32> {
                (0..k).map(|_| base + r.f()).collect()
            };
            let (wt, bs, mn, var) = (
                vecf(&mut r, c, 0.0),
                vecf(&mut r, c, 0.0),
                vecf(&mut r, c, 0.0),
                vecf(&mut r, c, 1.5),
            );
            let eps = [1e-5, 0.1][case % 2];
            let p = BatchNormParams {
                weight: &wt,
                bias: &bs,
                mean: &mn,
                var: &var,
                eps,
            };
            for relu in [false, true] {
                let y = both_formats(
                    &x,
                    |x| e.batch_norm2d(x, &p, so, zo, relu).unwrap(),
                    Some(CL),
                    &what,
                );
                assert_eq!(y.memory_format(), CL, "batch norm output is channels-last");
                let mut want = Vec::new();
                for (i, &v) in xc.iter().enumerate() {
                    let ch = i / (h * w) % c;
                    let inv_sigma = (1.0 / ((var[ch] + eps as f32).sqrt() as f64)) as f32;
                    let alpha = ((inv_sigma * wt[ch]) as f64 * (s / so)) as f32;
                    let beta = ((bs[ch] - mn[ch] * inv_sigma * wt[ch]) as f64 / so) as f32;
                    let t = rne(alpha.mul_add((v as i64 - z) as f32, beta)) as i64 + zo;
                    want.push(t.clamp(if relu { zo } else { 0 }, 255) as u8);
                }
                check(
                    &y,
                    &[n, c, h, w],
                    &want,
                    so,
                    zo,
                    &format!("batch norm relu {relu} {what}"),
                );
            }
            // group stats, written out.
            let stats = |g: &[u8]| -> (f32, f32) {
                let k = g.len() as f32;
                let sum: i64 = g.iter().map(|&v| v as i64).sum();
                let sq: i64 = g.iter().map(|&v| (v as i64) * (v as i64)).sum();
                let m = sum as f32 / k;
                let var = (-m).mul_add(m, sq as f32 / k).max(0.0);
                let xs = s as f32;
                let rstd = (xs as f64 / (((var * xs) * xs) as f64 + eps).sqrt()) as f32;
                (m - z as f32, rstd)
            };
            // group norm over every divisor of C; instance norm is groups = C.
            for gs in (1..=c).filter(|g| c % g == 0) {
                let gw = (case % 2 == 0).then(|| vecf(&mut r, c, 1.0));
                let gb = (case % 3 != 1).then(|| vecf(&mut r, c, 0.0));
                let np = NormParams {
                    weight: gw.as_deref(),
                    bias: gb.as_deref(),
                    eps,
                };
                let y = both_formats(
                    &x,
                    |x| e.group_norm(x, gs, &np, so, zo).unwrap(),
                    Some(CL),
                    &what,
                );
                let cpg = c / gs;
                let mut want = Vec::new();
                for grp in xc.chunks(cpg * h * w) {
                    let (m, rstd) = stats(grp);
                    for (i, &v) in grp.iter().enumerate() {
                        let ch = (want.len() / (h * w)) % c;
                        let _ = i;
                        let gp = rstd * gw.as_ref().map_or(1.0, |g| g[ch]);
                        let b = gb.as_ref().map_or(0.0, |b| b[ch]);
                        want.push(q(((v as i64 - z) as f32 - m).mul_add(gp, b), so, zo));
                    }
                }
                check(
                    &y,
                    &[n, c, h, w],
                    &want,
                    so,
                    zo,
                    &format!("group norm g{gs} {what}"),
                );
                if gs == c {
                    let yi = e.instance_norm(&x, &np, so, zo).unwrap();
                    assert_eq!(yi, y, "instance norm is group norm with C groups");
                }
            }
            // layer norm over the last one or two dimensions.
            for ns in [vec![w], vec![h, w]] {
                let k: usize = ns.iter().product();
                let lw = vecf(&mut r, k, 1.0);
                let lb = vecf(&mut r, k, 0.0);
                let np = NormParams {
                    weight: Some(&lw),
                    bias: (case % 2 == 0).then_some(&lb[..]),
                    eps,
                };
                let y = e.layer_norm(&x.to_format(CL), &ns, &np, so, zo).unwrap();
                assert_eq!(y.memory_format(), MemoryFormat::Contiguous);
                let mut want = Vec::new();
                for grp in xc.chunks(k) {
                    let (m, rstd) = stats(grp);
                    for (j, &v) in grp.iter().enumerate() {
                        let t = ((v as i64 - z) as f32 - m) * rstd;
                        let b = np.bias.map_or(0.0, |b| b[j]);
                        want.push(q(t.mul_add(lw[j], b), so, zo));
                    }
                }
                check(
                    &y,
                    &[n, c, h, w],
                    &want,
                    so,
                    zo,
                    &format!("layer norm {ns:?} {what}"),
                );
            }
        }
    }
}

#[test]
fn matmul_and_embedding_bags_match_the_written_formulas() {
    let mut r = Rng(0xfeed_beef_0bad_c0de);
    for e in engines() {
        for case in 0..8 {
            let (m, k, nn) = (1 + r.upto(5), 1 + r.upto(40), 1 + r.upto(6));
            let (sa, sb, so) = (0.02 + case as f64 * 0.01, 0.125, 0.7);
            let (za, zb, zo) = (
                [0, 255, 128][case % 3],
                [7, 0, 255][case % 3],
                [128, 3, 250][case % 3],
            );
            let a = rand_q(&mut r, &[2, m, k], sa, za);
            let b = rand_q(&mut r, &[k, nn], sb, zb);
            let y = e.matmul(&a, &b, so, zo).unwrap();
            let mut want = Vec::new();
            for bi in 0..2 {
                for i in 0..m {
                    for j in 0..nn {
                        let acc: i64 = (0..k)
                            .map(|l| {
                                (a.int_repr()[(bi * m + i) * k + l] as i64 - za)
                                    * (b.int_repr()[l * nn + j] as i64 - zb)
                            })
                            .sum();
                        let v = (acc as f64 * ((sa as f32 as f64) * (sb as f32 as f64))) as f32;
                        want.push(q(v, so, zo));
                    }
                }
            }
            check(
                &y,
                &[2, m, nn],
                &want,
                so,
                zo,
                &format!("matmul {}", e.path()),
            );
            // qint8 operands, qint8 output.
            let ai = QTensor::<i8>::from_int_repr(
                vec![m, k],
                (0..m * k).map(|_| r.next() as i8).collect(),
                QParams::per_tensor(sa, -3),
            )
            .unwrap();
            let bi = QTensor::<i8>::from_int_repr(
                vec![k, nn],
                (0..k * nn).map(|_| r.next() as i8).collect(),
                QParams::per_tensor(sb, 5),
            )
            .unwrap();
            let y = e.matmul(&ai, &bi, so, -7).unwrap();
            for i in 0..m {
                for j in 0..nn {
                    let acc: i64 = (0..k)
                        .map(|l| {
                            (ai.int_repr()[i * k + l] as i64 + 3)
                                * (bi.int_repr()[l * nn + j] as i64 - 5)
                        })
                        .sum();
                    let v = (acc as f64 * ((sa as f32 as f64) * (sb as f32 as f64))) as f32;
                    assert_eq!(
                        y.int_repr()[i * nn + j],
                        quantize_val::<i8>(inv_scale(so), -7, v),
                        "qint8 matmul"
                    );
                }
            }
            // Embedding bags, 8- and 4-bit.
            let (rows, dim) = (3 + r.upto(6), 2 * (1 + r.upto(9)));
            for bits in [8u8, 4] {
                let codes: Vec<u8> = (0..rows * dim)
                    .map(|_| {
                        if bits == 8 {
                            r.next() as u8
                        } else {
                            (r.next() % 16) as u8
                        }
                    })
                    .collect();
                let scales: Vec<f32> = (0..rows).map(|_| r.f() * 0.1).collect();
                let biases: Vec<f32> = (0..rows).map(|_| r.f()).collect();
                let (t, sc, bs) = if bits == 8 {
                    (
                        EmbeddingBagTable::byte(
                            rows,
                            dim,
                            codes.clone(),
                            scales.clone(),
                            biases.clone(),
                        )
                        .unwrap(),
                        scales,
                        biases,
                    )
                } else {
                    let h = |v: &[f32]| {
                        v.iter()
                            .map(|&x| half::f16::from_f32(x))
                            .collect::<Vec<_>>()
                    };
                    let (hs, hb) = (h(&scales), h(&biases));
                    let t =
                        EmbeddingBagTable::four_bit(rows, dim, codes.clone(), &hs, &hb).unwrap();
                    let w = |v: &[half::f16]| v.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
                    (t, w(&hs), w(&hb))
                };
                let indices: Vec<i64> = (0..7).map(|_| r.upto(rows) as i64).collect();
                let offsets = [0i64, 2, 2, 5];
                let psw: Vec<f32> = (0..7).map(|_| r.f()).collect();
                for weighted in [false, true] {
                    let pw = weighted.then_some(&psw[..]);
                    let y = if bits == 8 {
                        e.embedding_bag_byte(&t, &indices, &offsets, pw, false)
                            .unwrap()
                    } else {
                        e.embedding_bag_4bit(&t, &indices, &offsets, pw, false)
                            .unwrap()
                    };
                    assert_eq!(y.shape(), [4, dim]);
                    let bounds = [0usize, 2, 2, 5, 7];
                    for bag in 0..4 {
                        for d in 0..dim {
                            let mut acc = 0f32;
                            for p in bounds[bag]..bounds[bag + 1] {
                                let row = indices[p] as usize;
                                let wv = pw.map_or(1.0, |v| v[p]);
                                acc = (wv * sc[row])
                                    .mul_add(codes[row * dim + d] as f32, acc + wv * bs[row]);
                            }
                            assert_eq!(
                                y.data()[bag * dim + d].to_bits(),
                                acc.to_bits(),
                                "bag {bag} d {d} bits {bits}"
                            );
                        }
                    }
                    // include_last_offset: the same bags with n appended.
                    let y2 = if bits == 8 {
                        e.embedding_bag_byte(&t, &indices, &[0, 2, 2, 5, 7], pw, true)
                            .unwrap()
                    } else {
                        e.embedding_bag_4bit(&t, &indices, &[0, 2, 2, 5, 7], pw, true)
                            .unwrap()
                    };
                    assert_eq!(y2, y);
                }
            }
        }
    }
}

/// Direct convolution of `x` (`[N, C, *sp]` codes) with `w` (`[O, C/g, *k]`):
/// exact `Σ (x − xz)(w − wz)` (padding = xz), then §5's requantization.
#[allow(clippy::too_many_arguments)]
fn direct_conv(
    x: &QTensor<u8>,
    w: &QTensor<i8>,
    bias: Option<&[f32]>,
    st: &[usize],
    pad: &[usize],
    dil: &[usize],
    g: usize,
    out: (f64, i64),
    relu: bool,
) -> (Vec<usize>, Vec<u8>) {
    let nd = st.len();
    let (xs, xz) = x.q_per_tensor().unwrap();
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let sp = &x.shape()[2..];
    let (o, cg) = (w.shape()[0], w.shape()[1]);
    let ks = &w.shape()[2..];
    let osz: Vec<usize> = (0..nd)
        .map(|a| (sp[a] + 2 * pad[a] - dil[a] * (ks[a] - 1) - 1) / st[a] + 1)
        .collect();
    let per_channel = w.qparams().is_per_channel();
    let xd = x.int_repr();
    let wd = w.int_repr();
    let spn: usize = sp.iter().product();
    let kn: usize = ks.iter().product();
    let on: usize = osz.iter().product();
    let unravel = |mut f: usize, dims: &[usize]| -> Vec<usize> {
        let mut v = vec![0; dims.len()];
        for a in (0..dims.len()).rev() {
            v[a] = f % dims[a];
            f /= dims[a];
        }
        v
    };
    let mut y = Vec::new();
    for b in 0..n {
        for oc in 0..o {
            let (ws, wz) = w.qparams().channel(oc);
            let ch = RequantChannel::new(xs, ws, out.0);
            let bt = bias.map_or(0.0, |bv| {
                bias_term(bv[oc], ch.act_times_w_scale, per_channel)
            });
            let gi = oc / (o / g);
            for of in 0..on {
                let op = unravel(of, &osz);
                let mut acc = 0i64;
                for cc in 0..cg {
                    let ci = gi * cg + cc;
                    for kf in 0..kn {
                        let kp = unravel(kf, ks);
                        let mut inside = true;
                        let mut xi = 0usize;
                        for a in 0..nd {
                            let p = (op[a] * st[a] + kp[a] * dil[a]) as i64 - pad[a] as i64;
                            if p < 0 || p >= sp[a] as i64 {
                                inside = false;
                            }
                            xi = xi * sp[a] + p.max(0) as usize;
                        }
                        let xv = if inside {
                            xd[(b * c + ci) * spn + xi] as i64
                        } else {
                            xz
                        };
                        let wv = wd[(oc * cg + cc) * kn + kf] as i64;
                        acc += (xv - xz) * (wv - wz);
                    }
                }
                y.push(requantize_u8(
                    acc as i32,
                    bt,
                    ch.multiplier,
                    out.1 as i32,
                    relu,
                ));
            }
        }
    }
    let mut shape = vec![n, o];
    shape.extend(osz);
    (shape, y)
}

fn rand_w(r: &mut Rng, shape: &[usize], per_channel: bool) -> QTensor<i8> {
    let n: usize = shape.iter().product();
    let data = (0..n).map(|_| r.next() as i8).collect();
    let qp = if per_channel {
        QParams::PerChannel {
            scales: (0..shape[0]).map(|i| 0.01 + 0.003 * i as f64).collect(),
            zero_points: (0..shape[0]).map(|i| (i as i64 % 5) - 2).collect(),
            axis: 0,
        }
    } else {
        QParams::per_tensor(0.013, 3)
    };
    QTensor::from_int_repr(shape.to_vec(), data, qp).unwrap()
}

#[test]
fn conv1d_and_conv3d_equal_the_direct_convolution() {
    let mut r = Rng(0x00c0_ffee_1d3d);
    for e in engines() {
        for case in 0..14 {
            let g = [1, 2, 3][case % 3];
            let (n, cg, og) = (1 + r.upto(2), 1 + r.upto(3), 1 + r.upto(3));
            let (c, o) = (cg * g, og * g);
            let pc = case % 2 == 1;
            let xz = [0, 255, 128, 40][case % 4];
            let out = (0.2 + case as f64 * 0.05, [0i64, 128, 255][case % 3]);
            let relu = case % 5 == 2;
            // conv1d
            let k = 1 + r.upto(4);
            let p = Conv1dParams {
                stride: 1 + r.upto(3),
                padding: r.upto(3),
                dilation: 1 + r.upto(2),
                groups: g,
            };
            let l = p.dilation * (k - 1) + 1 + r.upto(9);
            let x = rand_q(&mut r, &[n, c, l], 0.03, xz);
            let w = rand_w(&mut r, &[o, cg, k], pc);
            let bias: Vec<f32> = (0..o).map(|_| r.f() * 3.0).collect();
            let pw = e.pack_conv1d(w.clone(), Some(bias.clone()), p).unwrap();
            assert_eq!(pw.weight(), w);
            let y = e.conv1d(&x, &pw, out.0, out.1, relu).unwrap();
            let (shape, want) = direct_conv(
                &x,
                &w,
                Some(&bias),
                &[p.stride],
                &[p.padding],
                &[p.dilation],
                g,
                out,
                relu,
            );
            check(
                &y,
                &shape,
                &want,
                out.0,
                out.1,
                &format!("conv1d {} case {case}", e.path()),
            );
            // conv3d
            let k3 = [1 + r.upto(3), 1 + r.upto(3), 1 + r.upto(3)];
            let p3 = Conv3dParams {
                stride: [1 + r.upto(2), 1 + r.upto(2), 1 + r.upto(2)],
                padding: [r.upto(2), r.upto(2), r.upto(2)],
                dilation: [1 + r.upto(2), 1, 1 + r.upto(2)],
                groups: g,
            };
            let sp: Vec<usize> = (0..3)
                .map(|a| p3.dilation[a] * (k3[a] - 1) + 1 + r.upto(4))
                .collect();
            let x = rand_q(&mut r, &[n, c, sp[0], sp[1], sp[2]], 0.03, xz);
            let w = rand_w(&mut r, &[o, cg, k3[0], k3[1], k3[2]], pc);
            let pw = e
                .pack_conv3d(w.clone(), (case % 3 != 0).then(|| bias.clone()), p3)
                .unwrap();
            assert_eq!(pw.weight(), w);
            let y = e.conv3d(&x, &pw, out.0, out.1, relu).unwrap();
            let b = (case % 3 != 0).then_some(&bias[..]);
            let (shape, want) = direct_conv(
                &x,
                &w,
                b,
                &p3.stride,
                &p3.padding,
                &p3.dilation,
                g,
                out,
                relu,
            );
            check(
                &y,
                &shape,
                &want,
                out.0,
                out.1,
                &format!("conv3d {} case {case}", e.path()),
            );
        }
    }
}

#[test]
fn conv_transpose2d_equals_the_direct_scatter() {
    let mut r = Rng(0x007a_2d0f_f5e7);
    for e in engines() {
        for case in 0..16 {
            let g = [1, 2, 3][case % 3];
            let (n, cg, og) = (1 + r.upto(2), 1 + r.upto(3), 1 + r.upto(3));
            let (c, o) = (cg * g, og * g);
            let k = [1 + r.upto(4), 1 + r.upto(4)];
            let stride = [1 + r.upto(3), 1 + r.upto(3)];
            let dilation = [1 + r.upto(2), 1 + r.upto(2)];
            let padding = [r.upto(k[0] + 1), r.upto(k[1] + 1)];
            let output_padding = [
                r.upto(stride[0].max(dilation[0])),
                r.upto(stride[1].max(dilation[1])),
            ];
            let p = ConvTranspose2dParams {
                stride,
                padding,
                output_padding,
                dilation,
                groups: g,
            };
            let (h, w) = (1 + r.upto(5), 1 + r.upto(5));
            let xz = [0, 255, 128, 77][case % 4];
            let x = rand_q(&mut r, &[n, c, h, w], 0.02, xz);
            let wt = rand_w(&mut r, &[c, og, k[0], k[1]], false);
            let bias: Vec<f32> = (0..o).map(|_| r.f() * 2.0).collect();
            let out = (0.15, [3i64, 128, 250][case % 3]);
            let oh = (h as i64 - 1) * stride[0] as i64 - 2 * padding[0] as i64
                + (dilation[0] * (k[0] - 1)) as i64
                + output_padding[0] as i64
                + 1;
            let ow = (w as i64 - 1) * stride[1] as i64 - 2 * padding[1] as i64
                + (dilation[1] * (k[1] - 1)) as i64
                + output_padding[1] as i64
                + 1;
            let pw = e
                .pack_conv_transpose2d(wt.clone(), Some(bias.clone()), p)
                .unwrap();
            if oh < 1 || ow < 1 {
                assert!(e.conv_transpose2d(&x, &pw, out.0, out.1).is_err());
                continue;
            }
            let y = both_formats(
                &x,
                |x| e.conv_transpose2d(x, &pw, out.0, out.1).unwrap(),
                Some(CL),
                "conv_transpose2d",
            );
            // Scatter every product to its output position.
            let (oh, ow) = (oh as usize, ow as usize);
            let (_, wz) = wt.q_per_tensor().unwrap();
            let mut acc = vec![0i64; n * o * oh * ow];
            for b in 0..n {
                for ci in 0..c {
                    let gi = ci / cg;
                    for oo in 0..og {
                        let oc = gi * og + oo;
                        for iy in 0..h {
                            for ix in 0..w {
                                let xv = x.int_repr()[((b * c + ci) * h + iy) * w + ix] as i64 - xz;
                                for ky in 0..k[0] {
                                    for kx in 0..k[1] {
                                        let oy = (iy * stride[0] + ky * dilation[0]) as i64
                                            - padding[0] as i64;
                                        let ox = (ix * stride[1] + kx * dilation[1]) as i64
                                            - padding[1] as i64;
                                        if (0..oh as i64).contains(&oy)
                                            && (0..ow as i64).contains(&ox)
                                        {
                                            let wv = wt.int_repr()
                                                [((ci * og + oo) * k[0] + ky) * k[1] + kx]
                                                as i64
                                                - wz;
                                            acc[((b * o + oc) * oh + oy as usize) * ow
                                                + ox as usize] += xv * wv;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let ch = RequantChannel::new(0.02, 0.013, out.0);
            let want: Vec<u8> = acc
                .iter()
                .enumerate()
                .map(|(i, &a)| {
                    let oc = i / (oh * ow) % o;
                    let bt = bias_term(bias[oc], ch.act_times_w_scale, false);
                    requantize_u8(a as i32, bt, ch.multiplier, out.1 as i32, false)
                })
                .collect();
            check(
                &y,
                &[n, o, oh, ow],
                &want,
                out.0,
                out.1,
                &format!("conv_transpose2d {} case {case} {p:?}", e.path()),
            );
        }
    }
}
