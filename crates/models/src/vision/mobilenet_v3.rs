//! `torchvision.models.quantization.mobilenetv3`: QuantizableMobileNetV3
//! (Large, width 1.0) with QuantizableInvertedResidual blocks and
//! QuantizableSqueezeExcitation (Hardsigmoid scale, `skip_mul.mul(scale, x)`
//! broadcasting `[N, C, 1, 1]` over `[N, C, H, W]`). Batch norms have eps
//! 0.001; `_replace_relu` leaves ReLU (Hardswish stays Hardswish).

use rquant_nn::layers::{AdaptiveAvgPool2d, Dropout};
use rquant_nn::{Block, Module, ModuleRegistry, Result as NnResult, Value};

use super::mobilenet_v2::{inverted_residual_forward, make_divisible};
use super::{conv, conv_norm_act_eps, flatten, group, linear, seq};
use crate::Result;

const EPS: f32 = 0.001;

/// `QuantizableSqueezeExcitation.forward`: `skip_mul.mul(_scale(x), x)`.
pub fn squeeze_excitation_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    let scale = b.seq(
        &["avgpool", "fc1", "activation", "fc2", "scale_activation"],
        x.clone(),
    )?;
    b.child("skip_mul")?.mul(scale, x)
}

/// `QuantizableMobileNetV3.forward`.
pub fn mobilenet_v3_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    b.seq(
        &[
            "quant",
            "features",
            "avgpool",
            "flatten",
            "classifier",
            "dequant",
        ],
        x,
    )
}

pub(crate) fn register(r: &mut ModuleRegistry) {
    r.register_block("QuantizableSqueezeExcitation", squeeze_excitation_forward);
    r.register_block("QuantizableMobileNetV3", mobilenet_v3_forward);
}

fn squeeze_excitation(c: usize, squeeze: usize) -> Result<Module> {
    Ok(
        Block::new("QuantizableSqueezeExcitation", squeeze_excitation_forward)
            .with("avgpool", AdaptiveAvgPool2d::new([1, 1]))
            .with("fc1", conv(c, squeeze, 1, 1, 0, 1, true)?)
            .with("fc2", conv(squeeze, c, 1, 1, 0, 1, true)?)
            .with("activation", Module::relu())
            .with("scale_activation", Module::hardsigmoid())
            .with("skip_mul", Module::float_functional())
            .into(),
    )
}

/// One row of `_mobilenet_v3_conf("mobilenet_v3_large")`: input, kernel,
/// expanded, output channels, squeeze-excitation, Hardswish, stride.
struct Cnf(usize, usize, usize, usize, bool, bool, usize);

fn act(hs: bool) -> Module {
    if hs {
        Module::hardswish()
    } else {
        Module::relu()
    }
}

fn inverted_residual(c: &Cnf) -> Result<Module> {
    let &Cnf(inp, k, exp, out, se, hs, stride) = c;
    let mut layers = Vec::new();
    if exp != inp {
        layers.push(conv_norm_act_eps(inp, exp, 1, 1, 1, Some(act(hs)), EPS)?);
    }
    layers.push(conv_norm_act_eps(
        exp,
        exp,
        k,
        stride,
        exp,
        Some(act(hs)),
        EPS,
    )?);
    if se {
        layers.push(squeeze_excitation(
            exp,
            make_divisible((exp / 4) as f64, 8),
        )?);
    }
    layers.push(conv_norm_act_eps(exp, out, 1, 1, 1, None, EPS)?);
    Ok(
        Block::new("QuantizableInvertedResidual", inverted_residual_forward)
            .with("block", seq(layers))
            .with("skip_add", Module::float_functional())
            .into(),
    )
}

/// `QuantizableMobileNetV3` with `_mobilenet_v3_conf("mobilenet_v3_large")`
/// (width 1.0, last channel 1280, dropout 0.2) after `_replace_relu`.
pub fn mobilenet_v3_large(num_classes: usize) -> Result<Module> {
    let (f, t) = (false, true);
    let setting = [
        Cnf(16, 3, 16, 16, f, f, 1),
        Cnf(16, 3, 64, 24, f, f, 2),
        Cnf(24, 3, 72, 24, f, f, 1),
        Cnf(24, 5, 72, 40, t, f, 2),
        Cnf(40, 5, 120, 40, t, f, 1),
        Cnf(40, 5, 120, 40, t, f, 1),
        Cnf(40, 3, 240, 80, f, t, 2),
        Cnf(80, 3, 200, 80, f, t, 1),
        Cnf(80, 3, 184, 80, f, t, 1),
        Cnf(80, 3, 184, 80, f, t, 1),
        Cnf(80, 3, 480, 112, t, t, 1),
        Cnf(112, 3, 672, 112, t, t, 1),
        Cnf(112, 5, 672, 160, t, t, 2),
        Cnf(160, 5, 960, 160, t, t, 1),
        Cnf(160, 5, 960, 160, t, t, 1),
    ];
    let last_channel = make_divisible(1280.0, 8);
    let mut features = vec![conv_norm_act_eps(
        3,
        setting[0].0,
        3,
        2,
        1,
        Some(Module::hardswish()),
        EPS,
    )?];
    for c in &setting {
        features.push(inverted_residual(c)?);
    }
    let last_in = setting[setting.len() - 1].3;
    let last_out = 6 * last_in;
    features.push(conv_norm_act_eps(
        last_in,
        last_out,
        1,
        1,
        1,
        Some(Module::hardswish()),
        EPS,
    )?);
    Ok(Block::new("QuantizableMobileNetV3", mobilenet_v3_forward)
        .with("features", seq(features))
        .with("avgpool", AdaptiveAvgPool2d::new([1, 1]))
        .with(
            "classifier",
            seq(vec![
                linear(last_out, last_channel)?,
                Module::hardswish(),
                Dropout::new(0.2, 0).into(),
                linear(last_channel, num_classes)?,
            ]),
        )
        .with("quant", Module::quant_stub())
        .with("dequant", Module::dequant_stub())
        .with("flatten", flatten())
        .into())
}

/// `QuantizableMobileNetV3.fuse_model`: every Conv2dNormActivation's
/// `["0", "1"]`, plus `"2"` when it is a ReLU (Hardswish is not fused), and
/// every squeeze-excitation's `["fc1", "activation"]`.
pub fn fuse_groups(m: &Module) -> Vec<Vec<String>> {
    let mut g = Vec::new();
    for (p, b) in m.named_modules() {
        match b.type_name().as_str() {
            "Conv2dNormActivation" => {
                let relu = b.get("2").is_some_and(|a| a.type_name() == "ReLU");
                g.push(group(&p, if relu { &["0", "1", "2"] } else { &["0", "1"] }));
            }
            "QuantizableSqueezeExcitation" => g.push(group(&p, &["fc1", "activation"])),
            _ => {}
        }
    }
    g
}
