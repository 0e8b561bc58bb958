//! `torchvision.models.quantization.mobilenetv2`: QuantizableMobileNetV2
//! (width 1.0) with QuantizableInvertedResidual blocks. `_replace_relu` has
//! made every ReLU6 a ReLU.

use rquant_nn::layers::{AdaptiveAvgPool2d, Dropout};
use rquant_nn::{Block, Module, ModuleRegistry, Result as NnResult, Value};

use super::{bn, conv, conv_norm_act, flatten, group, join, linear, seq};
use crate::Result;

/// torchvision's `_make_divisible(v, divisor)`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let new_v = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v + divisor
    } else {
        new_v
    }
}

/// `QuantizableInvertedResidual.forward` of MobileNetV2 (child `conv`) and
/// MobileNetV3 (child `block`): `skip_add.add(x, conv(x))` when the block
/// keeps its input's shape. torchvision's condition is `stride == 1 and inp
/// == oup`; in both models every stride-2 block changes the channel count,
/// so the two agree, and the block needs no attribute beside its children (a
/// loaded model runs the same forward). ShuffleNetV2's block of the same
/// class name (children `branch1`, `branch2`, `cat`) is dispatched to
/// [`super::shufflenet_v2::inverted_residual_forward`].
pub fn inverted_residual_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    if b.has("branch2") {
        return super::shufflenet_v2::inverted_residual_forward(b, x);
    }
    let body = if b.has("block") { "block" } else { "conv" };
    let shape = x.shape().to_vec();
    let y = b.run(body, x.clone())?;
    if y.shape() == shape.as_slice() {
        b.child("skip_add")?.add(x, y)
    } else {
        Ok(y)
    }
}

/// `QuantizableMobileNetV2.forward`: the stubs around `_forward_impl`, whose
/// functional `adaptive_avg_pool2d(x, (1, 1))` and `torch.flatten(x, 1)` are
/// the parameter-free children `adaptive_avg_pool2d` and `flatten`.
pub fn mobilenet_v2_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    b.seq(
        &[
            "quant",
            "features",
            "adaptive_avg_pool2d",
            "flatten",
            "classifier",
            "dequant",
        ],
        x,
    )
}

pub(crate) fn register(r: &mut ModuleRegistry) {
    r.register_block("QuantizableInvertedResidual", inverted_residual_forward);
    r.register_block("QuantizableMobileNetV2", mobilenet_v2_forward);
}

fn inverted_residual(inp: usize, oup: usize, stride: usize, expand_ratio: usize) -> Result<Module> {
    let hidden = inp * expand_ratio; // int(round(inp * expand_ratio)) for integer ratios
    let mut layers = Vec::new();
    if expand_ratio != 1 {
        layers.push(conv_norm_act(inp, hidden, 1, 1, 1, Some(Module::relu()))?);
    }
    layers.push(conv_norm_act(
        hidden,
        hidden,
        3,
        stride,
        hidden,
        Some(Module::relu()),
    )?);
    layers.push(conv(hidden, oup, 1, 1, 0, 1, false)?);
    layers.push(bn(oup));
    Ok(
        Block::new("QuantizableInvertedResidual", inverted_residual_forward)
            .with("conv", seq(layers))
            .with("skip_add", Module::float_functional())
            .into(),
    )
}

/// `QuantizableMobileNetV2(num_classes=num_classes)` (width 1.0, round to 8,
/// dropout 0.2) after `_replace_relu`.
pub fn mobilenet_v2(num_classes: usize) -> Result<Module> {
    const SETTING: [[usize; 4]; 7] = [
        [1, 16, 1, 1],
        [6, 24, 2, 2],
        [6, 32, 3, 2],
        [6, 64, 4, 2],
        [6, 96, 3, 1],
        [6, 160, 3, 2],
        [6, 320, 1, 1],
    ];
    let mut input_channel = make_divisible(32.0, 8);
    let last_channel = make_divisible(1280.0, 8);
    let mut features = vec![conv_norm_act(
        3,
        input_channel,
        3,
        2,
        1,
        Some(Module::relu()),
    )?];
    for [t, c, n, s] in SETTING {
        let out = make_divisible(c as f64, 8);
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            features.push(inverted_residual(input_channel, out, stride, t)?);
            input_channel = out;
        }
    }
    features.push(conv_norm_act(
        input_channel,
        last_channel,
        1,
        1,
        1,
        Some(Module::relu()),
    )?);
    Ok(Block::new("QuantizableMobileNetV2", mobilenet_v2_forward)
        .with("features", seq(features))
        .with(
            "classifier",
            seq(vec![
                Dropout::new(0.2, 0).into(),
                linear(last_channel, num_classes)?,
            ]),
        )
        .with("quant", Module::quant_stub())
        .with("dequant", Module::dequant_stub())
        .with("adaptive_avg_pool2d", AdaptiveAvgPool2d::new([1, 1]))
        .with("flatten", flatten())
        .into())
}

/// `QuantizableMobileNetV2.fuse_model`: every Conv2dNormActivation's
/// `["0", "1", "2"]`, and in every QuantizableInvertedResidual each plain
/// conv with the batch norm after it.
pub fn fuse_groups(m: &Module) -> Vec<Vec<String>> {
    let mut g = Vec::new();
    for (p, b) in m.named_modules() {
        match b.type_name().as_str() {
            "Conv2dNormActivation" => g.push(group(&p, &["0", "1", "2"])),
            "QuantizableInvertedResidual" => {
                let convs = b.get("conv").map(|c| c.children()).unwrap_or_default();
                for (i, (name, c)) in convs.iter().enumerate() {
                    if c.type_name() == "Conv2d" {
                        if let Some((next, _)) = convs.get(i + 1) {
                            g.push(group(&join(&p, "conv"), &[name, next]));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    g
}
