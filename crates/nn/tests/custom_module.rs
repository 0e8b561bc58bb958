//! A user adds a quantized module without editing rquant: this file defines
//! a float module, its quantized counterpart, the mapping between them and
//! the loader, then converts, saves, loads and runs a model holding it on
//! every engine.

use rquant_core::qconfig::get_default_qconfig;
use rquant_core::{dequantize, Engine, QParams, QTensor, Tensor};
use rquant_nn::format::Saver;
use rquant_nn::io::{quantized_bytes, quantized_from_bytes, quantized_from_bytes_with};
use rquant_nn::serde_json::{json, Value as J};
use rquant_nn::{
    convert_mapped, prepare_mapped, Conv2d, Layer, Mappings, Module, ModuleRegistry, Node,
    Observation, Param, QConfigMap, Result, Rng, Sequential, Value,
};

// ---------------------------------------------------------------- the user's file

/// Float: `y[:, c] = x[:, c] · weight[c]` (a learned per-channel gain).
#[derive(Debug, Clone)]
struct ChannelScale {
    weight: Param,
}

impl Layer for ChannelScale {
    fn type_name(&self) -> String {
        "ChannelScale".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let mut t = x.float("ChannelScale")?;
        scale_channels(t.shape().to_vec(), t.data_mut(), self.weight.value.data());
        Ok(Value::F(t))
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        vec![("weight".into(), &mut self.weight)]
    }
}

fn scale_channels(shape: Vec<usize>, data: &mut [f32], w: &[f32]) {
    let plane: usize = shape[2..].iter().product();
    for (i, v) in data.iter_mut().enumerate() {
        *v *= w[(i / plane) % shape[1]];
    }
}

/// Quantized: dequantize, scale, requantize to the observed output qparams,
/// on the module's engine.
#[derive(Debug, Clone)]
struct QChannelScale {
    engine: Engine,
    weight: Tensor,
    scale: f64,
    zero_point: i64,
}

impl QChannelScale {
    fn from_float(m: Module, obs: Option<Observation>, engine: &Engine) -> Result<Module> {
        let f: ChannelScale = m.expect_type("QChannelScale::from_float")?;
        let (scale, zero_point) = obs.expect("observed by prepare").qparams()?;
        Ok(Module::new(QChannelScale {
            engine: engine.clone(),
            weight: f.weight.value,
            scale,
            zero_point,
        }))
    }
    fn load(n: &mut Node) -> Result<Module> {
        let (scale, zero_point) = n.qparams()?;
        Ok(Module::new(QChannelScale {
            engine: n.engine().clone(),
            weight: n.f32("weight")?,
            scale,
            zero_point,
        }))
    }
}

impl Layer for QChannelScale {
    fn type_name(&self) -> String {
        "QuantizedChannelScale".into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let q = x.quant("QuantizedChannelScale")?;
        let mut f = vec![0f32; q.numel()];
        self.engine.dequantize_into(&q, &mut f)?;
        scale_channels(q.shape().to_vec(), &mut f, self.weight.data());
        let mut codes = vec![0u8; f.len()];
        self.engine
            .quantize_per_tensor_into(&f, self.scale, self.zero_point, &mut codes)?;
        let qp = QParams::per_tensor(self.scale, self.zero_point);
        Ok(Value::Q(QTensor::from_int_repr(
            q.shape().to_vec(),
            codes,
            qp,
        )?))
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        out.f32("weight", &self.weight);
        out.qparams(self.scale, self.zero_point);
        Ok(json!({}))
    }
}

fn mappings() -> Mappings {
    Mappings::default().with_static("ChannelScale", QChannelScale::from_float)
}

fn registry() -> ModuleRegistry {
    ModuleRegistry::default().with("QuantizedChannelScale", QChannelScale::load)
}

// ---------------------------------------------------------------- the test

fn model() -> Module {
    let mut rng = Rng(17);
    let conv = Conv2d::new(
        2,
        3,
        [3, 3],
        rquant_nn::conv_params(1, 1, 1, 1),
        true,
        &mut rng,
    )
    .unwrap();
    let gain = ChannelScale {
        weight: Param::new(Tensor::new([3], vec![0.5, -1.5, 2.0]).unwrap()),
    };
    Sequential::new()
        .push("quant", Module::quant_stub())
        .push("conv", conv)
        .push("gain", gain)
        .push("relu", Module::relu())
        .push("dequant", Module::dequant_stub())
        .into()
}

fn input(seed: u64) -> Tensor {
    let mut rng = Rng(seed);
    Tensor::new([2, 2, 5, 5], (0..100).map(|_| rng.sym(2.0)).collect()).unwrap()
}

fn bits(m: &mut Module, x: &Tensor) -> Vec<u32> {
    let y = m.forward(Value::F(x.clone())).unwrap().to_float();
    y.data().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn a_user_module_converts_saves_loads_and_runs_on_every_engine() {
    let engines = rquant_nn::engines::all_paths();
    let mut float = model();
    let want_float = float.forward(Value::F(input(1))).unwrap().to_float();
    // The user's float module takes part in state_dict like any other.
    let names: Vec<String> = float.state_dict().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"gain.weight".to_string()), "{names:?}");

    let maps = mappings();
    let mut m = float.clone();
    prepare_mapped(
        &mut m,
        &QConfigMap::global(get_default_qconfig("x86").unwrap()),
        &maps,
    )
    .unwrap();
    assert!(m.get("gain").unwrap().is::<rquant_nn::Observed>());
    for s in 1..4 {
        m.forward(Value::F(input(s))).unwrap();
    }
    let first = &engines[0];
    let mut q = m.clone();
    convert_mapped(&mut q, first, &maps).unwrap();
    assert_eq!(q.get("gain").unwrap().type_name(), "QuantizedChannelScale");
    let got = q.forward(Value::F(input(1))).unwrap().to_float();
    let sqnr = rquant_nn::numeric_suite::sqnr(want_float.data(), got.data());
    assert!(sqnr > 25.0, "SQNR {sqnr}");
    let want = bits(&mut q, &input(1));

    // Without the user's mapping, convert names the module it cannot convert.
    let msg = rquant_nn::convert_with(&mut m.clone(), first)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("gain") && msg.contains("ChannelScale"),
        "{msg}"
    );

    let bytes = quantized_bytes(&q, "x86 + ChannelScale").unwrap();
    // Without the user's loader, loading names the tag and the module.
    let msg = quantized_from_bytes(&bytes, "user.st", Some(first.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("user.st")
            && msg.contains("modules/gain.type")
            && msg.contains("QuantizedChannelScale"),
        "{msg}"
    );
    let reg = registry();
    for e in &engines {
        let (mut back, meta) =
            quantized_from_bytes_with(&bytes, "user.st", Some(e.clone()), &reg).unwrap();
        assert_eq!(meta.engine, first.name());
        assert_eq!(
            back.get("gain").unwrap().engine().map(|e| e.path()),
            Some(e.path())
        );
        assert_eq!(bits(&mut back, &input(1)), want, "{}/{}", e.name(), e.isa());
        // Converting on that engine gives the same bits too.
        let mut on_e = m.clone();
        convert_mapped(&mut on_e, e, &maps).unwrap();
        assert_eq!(bits(&mut on_e, &input(1)), want, "{}/{}", e.name(), e.isa());
    }
    // The dequantized output of the user's module is what its float math
    // gives on the dequantized input, requantized.
    let conv_out = {
        let mut head = q.clone();
        let mut v = Value::F(input(1));
        for n in ["quant", "conv"] {
            v = head.get_mut(n).unwrap().forward(v).unwrap();
        }
        v
    };
    let Value::Q(cq) = conv_out.clone() else {
        panic!("quantized conv output expected")
    };
    let Value::Q(gq) = q.get_mut("gain").unwrap().forward(conv_out).unwrap() else {
        panic!("quantized gain output expected")
    };
    let mut f = dequantize(&cq);
    let shape = f.shape().to_vec();
    scale_channels(shape, f.data_mut(), &[0.5, -1.5, 2.0]);
    let (s, z) = gq.q_per_tensor().unwrap();
    let again = rquant_core::quantize_per_tensor::<u8>(&f, s, z).unwrap();
    assert_eq!(again.int_repr(), gq.int_repr());
}
