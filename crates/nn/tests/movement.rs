//! The parameter-free modules of the vision zoo: ChannelShuffle, Mean,
//! chunk and Hardsigmoid, float and quantized (channels-last included), saved
//! and loaded.

use rquant_core::qconfig::get_default_qconfig;
use rquant_core::{quantize_per_tensor, MemoryFormat, Tensor};
use rquant_nn::io::{quantized_bytes, quantized_from_bytes};
use rquant_nn::{chunk, convert_with, prepare, Module, QConfigMap, Sequential, Value};

fn ramp(shape: [usize; 4]) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape, (0..n).map(|i| i as f32 * 0.25).collect()).unwrap()
}

fn engine() -> rquant_core::Engine {
    rquant_nn::engines::init();
    rquant_core::registry::engine().unwrap()
}

#[test]
fn channel_shuffle_float_and_quantized() {
    let x = ramp([2, 6, 2, 3]);
    let mut m = Module::channel_shuffle(3);
    let y = m.forward(Value::F(x.clone())).unwrap().to_float();
    // channel i*3 + g <- g*2 + i
    let plane = 6;
    for b in 0..2 {
        for (o, src) in [0usize, 2, 4, 1, 3, 5].iter().enumerate() {
            assert_eq!(
                &y.data()[(b * 6 + o) * plane..][..plane],
                &x.data()[(b * 6 + src) * plane..][..plane]
            );
        }
    }
    let g = m.backward(y.clone()).unwrap();
    assert_eq!(g, x, "backward is the inverse permutation");
    let e = engine();
    rquant_nn::to_engine(&mut m, &e).unwrap();
    let q = quantize_per_tensor::<u8>(&x, 0.25, 3).unwrap();
    for f in [MemoryFormat::Contiguous, MemoryFormat::ChannelsLast] {
        let yq = m.forward(Value::Q(q.to_format(f))).unwrap().to_float();
        assert_eq!(yq, y, "{f:?}");
    }
    assert!(Module::channel_shuffle(4).forward(Value::F(x)).is_err());
}

#[test]
fn mean_float_and_quantized() {
    let x = ramp([2, 3, 2, 2]);
    let mut m = Module::mean(&[2, 3], false);
    m.train(true);
    let y = m.forward(Value::F(x.clone())).unwrap().to_float();
    assert_eq!(y.shape(), &[2, 3]);
    assert_eq!(y.data()[0], (0.0 + 0.25 + 0.5 + 0.75) / 4.0);
    let g = m
        .backward(Tensor::new([2, 3], vec![4.0; 6]).unwrap())
        .unwrap();
    assert_eq!(g.data(), vec![1.0; 24].as_slice());
    let e = engine();
    rquant_nn::to_engine(&mut m, &e).unwrap();
    let q = quantize_per_tensor::<u8>(&x, 0.25, 0).unwrap();
    for f in [MemoryFormat::Contiguous, MemoryFormat::ChannelsLast] {
        let yq = m.forward(Value::Q(q.to_format(f))).unwrap();
        // codes 0..3 → mean 1.5 → rne 2 (ties to even) at scale 0.25.
        assert_eq!(yq.shape(), &[2, 3], "{f:?}");
        assert_eq!(yq.to_float().data()[0], 0.5, "{f:?}");
    }
    let mut keep = Module::mean(&[1], true);
    let y = keep.forward(Value::F(x)).unwrap();
    assert_eq!(y.shape(), &[2, 1, 2, 2]);
    assert!(Module::mean(&[4], false)
        .forward(Value::F(ramp([1, 1, 1, 1])))
        .is_err());
}

#[test]
fn chunk_float_and_quantized() {
    let x = ramp([2, 5, 2, 2]);
    let parts = chunk(Value::F(x.clone()), 2, 1).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].shape(), &[2, 3, 2, 2]);
    assert_eq!(parts[1].shape(), &[2, 2, 2, 2]);
    assert_eq!(parts[1].to_float().data()[0], x.data()[12]);
    let q = quantize_per_tensor::<u8>(&x, 0.25, 0).unwrap();
    for f in [MemoryFormat::Contiguous, MemoryFormat::ChannelsLast] {
        let qp = chunk(Value::Q(q.to_format(f)), 2, 1).unwrap();
        for (a, b) in qp.iter().zip(&parts) {
            assert_eq!(a.to_float(), b.to_float(), "{f:?}");
        }
        if let Value::Q(t) = &qp[0] {
            assert_eq!(t.memory_format(), f, "the layout is kept");
        }
    }
    let p = chunk(Value::F(x.clone()), 3, 3).unwrap();
    assert_eq!(p.len(), 2, "2 elements in chunks of 1");
    assert!(chunk(Value::F(x.clone()), 0, 1).is_err());
    assert!(chunk(Value::F(x), 2, 4).is_err());
}

#[test]
fn hardsigmoid_has_fixed_qparams_and_models_save_and_load() {
    let e = engine();
    let mut m: Module = Sequential::new()
        .push("quant", Module::quant_stub())
        .push("shuffle", Module::channel_shuffle(2))
        .push("hsig", Module::hardsigmoid())
        .push("mean", Module::mean(&[2, 3], true))
        .push("dequant", Module::dequant_stub())
        .into();
    m.train(false);
    let x = Tensor::new(
        [1, 4, 2, 2],
        (0..16).map(|i| i as f32 * 0.5 - 4.0).collect(),
    )
    .unwrap();
    let float = m.forward(Value::F(x.clone())).unwrap().to_float();
    prepare(
        &mut m,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
    )
    .unwrap();
    m.forward(Value::F(x.clone())).unwrap();
    convert_with(&mut m, &e).unwrap();
    let mut upto = m.clone();
    *upto.get_mut("mean").unwrap() = Module::identity();
    *upto.get_mut("dequant").unwrap() = Module::identity();
    let Value::Q(h) = upto.forward(Value::F(x.clone())).unwrap() else {
        panic!()
    };
    assert_eq!(h.q_per_tensor(), Some((1.0 / 256.0, 0)));
    let y = m.forward(Value::F(x.clone())).unwrap().to_float();
    for (a, b) in y.data().iter().zip(float.data()) {
        assert!((a - b).abs() < 0.02, "{a} vs {b}");
    }
    let bytes = quantized_bytes(&m, "x86").unwrap();
    let (mut back, _) = quantized_from_bytes(&bytes, "m.st", Some(e)).unwrap();
    assert_eq!(back.forward(Value::F(x)).unwrap().to_float(), y);
}
