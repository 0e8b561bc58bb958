//! Pooling, upsampling, QFunctional and embedding modules against torch
//! 2.15 (cases from tools/api/gen_api_cases.py), on every engine path.

mod common;

use common::{case, engines, max_rel, Case};
use rquant_core::qconfig::{
    float_qparams_weight_only_qconfig, float_qparams_weight_only_qconfig_4bit,
};
use rquant_core::{EmbeddingBagTable, QTensor, UpsampleSize};
use rquant_nn::embeddings::{
    embedding_bag, embedding_bag_byte_prepack, embedding_bag_nbit_prepack, embedding_lookup,
    BagMode, EmbeddingBag, QEmbeddingBag,
};
use rquant_nn::pools::{Pool, PoolKind, Upsample};
use rquant_nn::qops::{self, Pool3dParams};
use rquant_nn::quantized::QFunctional;
use rquant_nn::workflow::{quantize_dynamic_spec, DynamicSpec};
use rquant_nn::{Mappings, Module, Value};

fn codes(y: &QTensor<u8>) -> Vec<u8> {
    y.clone().contiguous().int_repr().to_vec()
}

#[test]
fn pools_and_upsample_match_pytorch() {
    let c = case("pools");
    let (s, z) = c.qp("qx");
    let p3 = |k: [usize; 3], st: [usize; 3], pad: [usize; 3]| Pool3dParams {
        kernel: k,
        stride: st,
        padding: pad,
        dilation: [1; 3],
        ceil_mode: false,
    };
    for e in engines() {
        let qx = c.quint8("qx", s, z);
        let mut pools: Vec<(&str, Pool)> = vec![
            ("max_pool3d", Pool::max3d([2, 3, 2], [1, 2, 2], [1, 1, 0])),
            ("avg_pool3d", Pool::avg3d([2, 3, 2], [1, 2, 2], [1, 1, 0])),
            (
                "avg_pool3d_nopad",
                Pool::new(
                    PoolKind::Avg3d {
                        count_include_pad: false,
                        divisor_override: None,
                    },
                    p3([2, 2, 3], [2, 2, 2], [0, 0, 0]),
                ),
            ),
            ("adaptive_avg_pool3d", Pool::adaptive_avg3d([3, 4, 5])),
        ];
        for (name, p) in &mut pools {
            p.engine = Some(e.clone());
            let y = p.forward_quant(qx.clone()).unwrap();
            assert_eq!(y.shape(), c.shape(name).as_slice(), "{name}");
            assert_eq!(y.q_per_tensor(), Some((s, z)), "{name}: qparams kept");
            assert_eq!(codes(&y), c.u8s(name), "{name} on {e:?}");
        }
        let mut p1 = Pool::max1d(3, 2, 1);
        p1.engine = Some(e.clone());
        let y = p1.forward_quant(c.quint8("qx1", s, z)).unwrap();
        assert_eq!(y.shape(), c.shape("max_pool1d").as_slice());
        assert_eq!(codes(&y), c.u8s("max_pool1d"), "max_pool1d on {e:?}");
        let qx2 = c.quint8("qx2", s, z);
        for (name, size, bilinear, ac) in [
            (
                "upsample_nearest",
                UpsampleSize::ScaleFactors([2.0, 2.0]),
                false,
                false,
            ),
            (
                "upsample_bilinear",
                UpsampleSize::OutputSize([7, 9]),
                true,
                false,
            ),
            (
                "upsample_bilinear_ac",
                UpsampleSize::OutputSize([7, 9]),
                true,
                true,
            ),
        ] {
            let mut u = Upsample::new(size, bilinear, ac);
            u.engine = Some(e.clone());
            let y = u.forward_quant(qx2.clone()).unwrap();
            assert_eq!(y.shape(), c.shape(name).as_slice(), "{name}");
            assert_eq!(codes(&y), c.u8s(name), "{name} on {e:?}");
        }
    }
    // The float modules against torch's float forward.
    let x = c.f32("x");
    for (name, mut p) in [
        ("f_max_pool3d", Pool::max3d([2, 3, 2], [1, 2, 2], [1, 1, 0])),
        ("f_avg_pool3d", Pool::avg3d([2, 3, 2], [1, 2, 2], [1, 1, 0])),
        ("f_adaptive_avg_pool3d", Pool::adaptive_avg3d([3, 4, 5])),
    ] {
        let y = p.forward_float(x.clone()).unwrap();
        let want = c.f32(name);
        assert_eq!(y.shape(), want.shape(), "{name}");
        let err = max_rel(y.data(), want.data());
        assert!(err < 1e-6, "{name}: {err}");
    }
    let mut u = Upsample::new(UpsampleSize::OutputSize([7, 9]), true, false);
    let y = u.forward_float(c.f32("x2")).unwrap();
    let err = max_rel(y.data(), c.f32("f_upsample_bilinear").data());
    assert!(err < 1e-6, "float bilinear: {err}");
}

#[test]
fn pooling_rejects_bad_parameters() {
    let e = &engines()[0];
    let qx = QTensor::from_int_repr(
        vec![1, 2, 3, 3, 3],
        vec![7u8; 54],
        rquant_core::QParams::per_tensor(0.1, 3),
    )
    .unwrap();
    let p = |k: [usize; 3], pad: [usize; 3]| Pool3dParams {
        kernel: k,
        stride: [1; 3],
        padding: pad,
        dilation: [1; 3],
        ceil_mode: false,
    };
    // Padding over half the kernel, a kernel larger than the input, a 4-d
    // input without channels, dilated average pooling, divisor 0.
    let err = qops::max_pool3d(e, &qx, &p([2, 2, 2], [2, 0, 0]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("padding"), "{err}");
    let err = qops::max_pool3d(e, &qx, &p([4, 1, 1], [0; 3]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty output"), "{err}");
    let q3 = QTensor::from_int_repr(
        vec![3, 3, 3],
        vec![7u8; 27],
        rquant_core::QParams::per_tensor(0.1, 3),
    )
    .unwrap();
    let err = qops::avg_pool3d(e, &q3, &p([1, 1, 1], [0; 3]), true, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[N, C, D, H, W]"), "{err}");
    let mut pd = p([2, 2, 2], [0; 3]);
    pd.dilation = [2, 1, 1];
    assert!(qops::avg_pool3d(e, &qx, &pd, true, None).is_err());
    assert!(qops::avg_pool3d(e, &qx, &p([2, 2, 2], [0; 3]), true, Some(0)).is_err());
    let err = qops::max_pool1d(e, &q3, 5, 1, 0, 1, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_pool1d"), "{err}");
    let mut u = Upsample::new(UpsampleSize::ScaleFactors([0.1, 0.1]), false, false);
    u.engine = Some(e.clone());
    let q4 = QTensor::from_int_repr(
        vec![1, 1, 3, 3],
        vec![7u8; 9],
        rquant_core::QParams::per_tensor(0.1, 3),
    )
    .unwrap();
    assert!(u.forward_quant(q4).is_err());
}

fn qf(e: &rquant_core::Engine, c: &Case) -> Module {
    let v = &c.meta["qf"];
    Module::from(QFunctional {
        engine: e.clone(),
        scale: v[0].as_f64().unwrap(),
        zero_point: v[1].as_i64().unwrap(),
    })
}

fn q_of(v: Value) -> QTensor<u8> {
    match v {
        Value::Q(q) => q.contiguous(),
        _ => panic!("float output"),
    }
}

#[test]
fn qfunctional_ops_match_pytorch() {
    let c = case("qfunctional");
    let qx = c.quint8("qx", 0.03, 100);
    let scalars: Vec<f64> = c.meta["scalars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for e in engines() {
        let mut f = qf(&e, &c);
        for (i, &k) in scalars.iter().enumerate() {
            for (op, y) in [
                (
                    "add_scalar",
                    q_of(f.add_scalar(Value::Q(qx.clone()), k).unwrap()),
                ),
                (
                    "add_scalar_relu",
                    qops::add_scalar(&e, &qx, k, true).unwrap(),
                ),
                (
                    "mul_scalar",
                    q_of(f.mul_scalar(Value::Q(qx.clone()), k).unwrap()),
                ),
            ] {
                let key = format!("{op}.{i}");
                let qp = c.f64s(&format!("{key}.qp"));
                let (s, z) = y.q_per_tensor().unwrap();
                assert_eq!((s, z), (qp[0], qp[1] as i64), "{key} ({k}): qparams");
                assert_eq!(codes(&y), c.u8s(&key), "{key} ({k}) on {e:?}");
            }
        }
        let a = c.quint8("a", 0.03125, 128);
        let b = c.quint8("b", 0.0625, 120);
        let y = q_of(f.matmul(Value::Q(a), Value::Q(b)).unwrap());
        assert_eq!(y.shape(), c.shape("matmul").as_slice());
        assert_eq!(codes(&y), c.u8s("matmul"), "matmul on {e:?}");
        let c1 = c.quint8("c1", 0.04, 130);
        let c2 = c.quint8("c2", 0.02, 90);
        let y = q_of(
            f.cat(vec![Value::Q(c1.clone()), Value::Q(c2.clone())], 1)
                .unwrap(),
        );
        assert_eq!(codes(&y), c.u8s("cat"), "cat on {e:?}");
        let y = qops::cat_relu(&e, &[&c1, &c2], 1, 0.05, 110).unwrap();
        assert_eq!(codes(&y), c.u8s("cat_relu"), "cat_relu on {e:?}");
        let y = qops::mul_relu(&e, &c1, &c1, 0.05, 30).unwrap();
        assert_eq!(codes(&y), c.u8s("mul_relu"), "mul_relu on {e:?}");
    }
    // Bad scalars and shapes.
    let e = &engines()[0];
    assert!(qops::add_scalar(e, &qx, f64::NAN, false).is_err());
    assert!(qops::mul_scalar(e, &qx, f64::INFINITY, false).is_err());
    let a = c.quint8("a", 0.03125, 128);
    let mut f = qf(e, &c);
    let err = f
        .matmul(Value::Q(a.clone()), Value::Q(a))
        .unwrap_err()
        .to_string();
    assert!(err.contains("matmul"), "{err}");
}

/// torch's quint4x2 `int_repr` (two codes a byte, low nibble first) unpacked.
fn unpack4(packed: &[u8]) -> Vec<u8> {
    packed.iter().flat_map(|&b| [b & 15, b >> 4]).collect()
}

fn check_table(name: &str, t: &EmbeddingBagTable, c: &Case, bits: u8) {
    let want = c.u8s("qweight.int");
    let want = if bits == 4 { unpack4(&want) } else { want };
    assert_eq!(t.codes(), want.as_slice(), "{name}: codes");
    let scales: Vec<f32> = c.f64s("qweight.scale").iter().map(|&v| v as f32).collect();
    let zps: Vec<f32> = c.f64s("qweight.zp").iter().map(|&v| v as f32).collect();
    for r in 0..t.rows() {
        // The table holds the scale and bias = −zp·scale (f16 for 4-bit).
        let (s, b) = if bits == 4 {
            let s = half::f16::from_f32(scales[r]).to_f32();
            (s, half::f16::from_f32(-(zps[r] * scales[r])).to_f32())
        } else {
            (scales[r], -(zps[r] * scales[r]))
        };
        assert_eq!(t.scales()[r], s, "{name}: scale of row {r}");
        assert_eq!(t.biases()[r], b, "{name}: bias of row {r}");
    }
}

/// Mean (torch's exact `sum` rows times 1/len) or max (over the rows
/// `fma(scale, q, bias)` of the table) of the bags `off` over `ind`.
fn table_bag(
    t: &EmbeddingBagTable,
    ind: &[i64],
    off: &[i64],
    sum: &rquant_core::Tensor,
    mode: BagMode,
) -> Vec<f32> {
    let d = t.dim();
    let mut bounds: Vec<usize> = off.iter().map(|&o| o as usize).collect();
    bounds.push(ind.len());
    let mut out = Vec::new();
    for b in 0..bounds.len() - 1 {
        let (lo, hi) = (bounds[b], bounds[b + 1]);
        for j in 0..d {
            out.push(match mode {
                BagMode::Mean if hi > lo => sum.data()[b * d + j] * (1.0 / (hi - lo) as f32),
                BagMode::Max if hi > lo => (lo..hi)
                    .map(|p| {
                        let r = ind[p] as usize;
                        let q = t.codes()[r * d + j] as f32;
                        t.scales()[r].mul_add(q, t.biases()[r])
                    })
                    .fold(f32::NEG_INFINITY, f32::max),
                _ => 0.0,
            });
        }
    }
    out
}

#[test]
fn quantized_embedding_bags_match_pytorch() {
    for bits in [8u8, 4] {
        for mode in ["sum", "mean", "max"] {
            let name = format!("embedding_bag_{bits}bit_{mode}");
            let c = case(&name);
            let mode = BagMode::from_name(mode).unwrap();
            let ind = c.i64s("indices");
            let off = c.i64s("offsets");
            let psw = c.f32("psw");
            for e in engines() {
                // quantize_dynamic with the float-qparams qconfig of `bits`.
                let float = EmbeddingBag::from_weight(c.f32("weight"), mode).unwrap();
                let mut m: Module = float.into();
                let q = if bits == 8 {
                    float_qparams_weight_only_qconfig()
                } else {
                    float_qparams_weight_only_qconfig_4bit()
                };
                quantize_dynamic_spec(
                    &mut m,
                    &DynamicSpec::types(&["EmbeddingBag"], q),
                    &e,
                    &Mappings::default(),
                )
                .unwrap();
                assert_eq!(m.type_name(), "QuantizedEmbeddingBag");
                let qm = m.downcast_ref::<QEmbeddingBag>().unwrap().clone();
                check_table(&name, &qm.table, &c, bits);
                let sum = |psw: Option<&[f32]>, off: &[i64], last: bool| {
                    embedding_bag(&e, &qm.table, &ind, off, BagMode::Sum, psw, last).unwrap()
                };
                assert_eq!(
                    sum(None, &off, false).data(),
                    c.f32("bag_sum").data(),
                    "{name}"
                );
                assert_eq!(
                    sum(Some(psw.data()), &off, false).data(),
                    c.f32("bag_sum_psw").data(),
                    "{name}: per-sample weights"
                );
                let mut last = off.clone();
                last.push(ind.len() as i64);
                assert_eq!(
                    sum(None, &last, true).data(),
                    c.f32("bag_sum_last").data(),
                    "{name}: include_last_offset"
                );
                // PyTorch's module always sums (it passes mode 0 to its op);
                // rquant's applies its mode. Mean is torch's exact sum times
                // 1/len; max is the largest row value the table holds,
                // fma(scale, q, bias) (f16 scale and bias for 4-bit), as its
                // lookups are.
                let y = m.embedding_bag(&ind, &off, None).unwrap();
                if mode == BagMode::Sum {
                    assert_eq!(y.data(), c.f32("module_out").data(), "{name}: module");
                } else {
                    assert_eq!(c.f32("module_out").data(), c.f32("bag_sum").data());
                    let want = table_bag(&qm.table, &ind, &off, &c.f32("bag_sum"), mode);
                    assert_eq!(y.data(), want.as_slice(), "{name}: {mode:?}");
                    if bits == 8 {
                        // 8-bit tables hold torch's f32 qparams: the float
                        // bag of torch's dequantized weight agrees closely.
                        let want = c.f32("float_deq_out");
                        let err = max_rel(y.data(), want.data());
                        assert!(err < 2e-6, "{name}: {mode:?} vs the float bag: {err}");
                    }
                }
                // nnq.Embedding on the same quantized weight.
                let ids = c.i64s("ids");
                let y = embedding_lookup(&e, &qm.table, &ids, &c.shape("ids")).unwrap();
                assert_eq!(y.shape(), c.shape("emb_out").as_slice());
                assert_eq!(y.data(), c.f32("emb_out").data(), "{name}: embedding");
            }
        }
    }
}

#[test]
fn embedding_prepack_ops_match_pytorch() {
    let c = case("embedding_prepack");
    let w = c.f32("weight");
    let ind = c.i64s("indices");
    let off = c.i64s("offsets");
    let rows = w.shape()[0];
    let dim = w.shape()[1];
    // The packed rows: codes then scale and bias (f32 for 8-bit, f16 else).
    let parse = |key: &str, bits: u8| -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let b = c.u8s(key);
        let width = c.shape(key)[1];
        let per = 8 / bits as usize;
        let nb = dim.div_ceil(per);
        let (mut codes, mut s, mut bi) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rows {
            let row = &b[r * width..(r + 1) * width];
            for &v in &row[..nb] {
                for k in 0..per {
                    codes.push((v >> (k * bits as usize)) & ((1u16 << bits) - 1) as u8);
                }
            }
            let tail = &row[nb..];
            if bits == 8 {
                s.push(f32::from_le_bytes(tail[0..4].try_into().unwrap()));
                bi.push(f32::from_le_bytes(tail[4..8].try_into().unwrap()));
            } else {
                s.push(half::f16::from_le_bytes(tail[0..2].try_into().unwrap()).to_f32());
                bi.push(half::f16::from_le_bytes(tail[2..4].try_into().unwrap()).to_f32());
            }
        }
        (codes, s, bi)
    };
    for e in engines() {
        for (key, bits, bag) in [
            ("byte", 8u8, "bag_byte"),
            ("4bit", 4, "bag_4bit"),
            ("2bit", 2, "bag_2bit"),
        ] {
            let t = if bits == 8 {
                embedding_bag_byte_prepack(&w).unwrap()
            } else {
                embedding_bag_nbit_prepack(&w, bits).unwrap()
            };
            let (codes, s, b) = parse(key, bits);
            assert_eq!(t.codes(), codes.as_slice(), "{key}: codes");
            assert_eq!(t.scales(), s.as_slice(), "{key}: scales");
            assert_eq!(t.biases(), b.as_slice(), "{key}: biases");
            let y = embedding_bag(&e, &t, &ind, &off, BagMode::Sum, None, false).unwrap();
            assert_eq!(y.data(), c.f32(bag).data(), "{bag} on {e:?}");
        }
    }
    // Bad input: 3-bit tables, odd widths for 4-bit, non-finite weights.
    assert!(embedding_bag_nbit_prepack(&w, 3).is_err());
    let odd = rquant_core::Tensor::new([2, 3], vec![0.5; 6]).unwrap();
    assert!(embedding_bag_nbit_prepack(&odd, 4).is_err());
    let nan = rquant_core::Tensor::new([1, 4], vec![f32::NAN, 0.0, 1.0, 2.0]).unwrap();
    assert!(embedding_bag_byte_prepack(&nan).is_err());
}

#[test]
fn batch_norm1d_op_matches_pytorch() {
    let c = case("batch_norm1d_op");
    let (s, z) = c.qp("qx");
    let (os, oz) = c.qp("out");
    for e in engines() {
        for k in ["x2d", "x3d"] {
            let qx = c.quint8(&format!("{k}.qx"), s, z);
            let (w, b) = (c.f32(&format!("{k}.w")), c.f32(&format!("{k}.b")));
            let (m, v) = (c.f32(&format!("{k}.mean")), c.f32(&format!("{k}.var")));
            let p = rquant_core::BatchNormParams {
                weight: w.data(),
                bias: b.data(),
                mean: m.data(),
                var: v.data(),
                eps: c.meta["eps"].as_f64().unwrap(),
            };
            for (relu, key) in [(false, "y"), (true, "y_relu")] {
                let y = qops::batch_norm1d(&e, &qx, &p, os, oz, relu).unwrap();
                assert_eq!(y.shape(), c.shape(&format!("{k}.{key}")).as_slice());
                assert_eq!(
                    codes(&y),
                    c.u8s(&format!("{k}.{key}")),
                    "{k} {key} on {e:?}"
                );
            }
        }
    }
}
