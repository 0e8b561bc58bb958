//! `torchvision.models.quantization.shufflenetv2`: QuantizableShuffleNetV2
//! x0.5 / x1.0 / x1.5 / x2.0 with QuantizableInvertedResidual blocks. The
//! forward's functional pieces are parameter-free children: each block's
//! `channel_shuffle` (`channel_shuffle(out, 2)`), the model's `mean`
//! (`x.mean([2, 3])`); `x.chunk(2, dim=1)` is [`rquant_nn::chunk`].

use rquant_nn::layers::MaxPool2d;
use rquant_nn::{Block, Module, ModuleRegistry, Result as NnResult, Sequential, Value};

use super::mobilenet_v2::inverted_residual_forward as shared_inverted_residual_forward;
use super::{bn, conv, group, join, linear, seq};
use crate::{bail, Result};

/// ShuffleNetV2's `QuantizableInvertedResidual.forward`: stride 1 (an empty
/// `branch1`) splits the input in two channel halves and transforms the
/// second; stride 2 runs both branches on the whole input; then
/// `cat.cat([…], 1)` and the channel shuffle with 2 groups.
pub fn inverted_residual_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    let stride1 = b.child("branch1")?.children().is_empty();
    let parts = if stride1 {
        let mut halves = rquant_nn::chunk(x, 2, 1)?;
        let x2 = halves.pop().expect("two halves");
        let x1 = halves.pop().expect("two halves");
        vec![x1, b.run("branch2", x2)?]
    } else {
        vec![b.run("branch1", x.clone())?, b.run("branch2", x)?]
    };
    let out = b.child("cat")?.cat(parts, 1)?;
    b.run("channel_shuffle", out)
}

/// `QuantizableShuffleNetV2.forward`.
pub fn shufflenet_v2_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    b.seq(
        &[
            "quant", "conv1", "maxpool", "stage2", "stage3", "stage4", "conv5", "mean", "fc",
            "dequant",
        ],
        x,
    )
}

pub(crate) fn register(r: &mut ModuleRegistry) {
    r.register_block("QuantizableShuffleNetV2", shufflenet_v2_forward);
    // "QuantizableInvertedResidual" is registered once, by MobileNetV2, with
    // a forward that dispatches on the children.
}

fn depthwise(c: usize, stride: usize) -> Result<Module> {
    conv(c, c, 3, stride, 1, c, false)
}

fn inverted_residual(inp: usize, oup: usize, stride: usize) -> Result<Module> {
    let bf = oup / 2;
    if stride == 1 && inp != bf << 1 {
        bail!("ShuffleNetV2 block: stride 1 needs inp {inp} == 2 * (oup {oup} / 2)");
    }
    let branch1: Module = if stride > 1 {
        seq(vec![
            depthwise(inp, stride)?,
            bn(inp),
            conv(inp, bf, 1, 1, 0, 1, false)?,
            bn(bf),
            Module::relu(),
        ])
    } else {
        Sequential::new().into()
    };
    let branch2 = seq(vec![
        conv(if stride > 1 { inp } else { bf }, bf, 1, 1, 0, 1, false)?,
        bn(bf),
        Module::relu(),
        depthwise(bf, stride)?,
        bn(bf),
        conv(bf, bf, 1, 1, 0, 1, false)?,
        bn(bf),
        Module::relu(),
    ]);
    Ok(Block::new(
        "QuantizableInvertedResidual",
        shared_inverted_residual_forward,
    )
    .with("branch1", branch1)
    .with("branch2", branch2)
    .with("cat", Module::float_functional())
    .with("channel_shuffle", Module::channel_shuffle(2))
    .into())
}

/// `QuantizableShuffleNetV2` as `shufflenet_v2_x0_5` … `x2_0` build it
/// (stages [4, 8, 4]) after `_replace_relu`.
pub fn shufflenet_v2(name: &str, num_classes: usize) -> Result<Module> {
    let out: [usize; 5] = match name {
        "shufflenet_v2_x0_5" => [24, 48, 96, 192, 1024],
        "shufflenet_v2_x1_0" => [24, 116, 232, 464, 1024],
        "shufflenet_v2_x1_5" => [24, 176, 352, 704, 1024],
        "shufflenet_v2_x2_0" => [24, 244, 488, 976, 2048],
        _ => bail!("unknown ShuffleNetV2 {name:?}"),
    };
    let repeats = [4, 8, 4];
    let mut maxpool = MaxPool2d::new(3, 2);
    maxpool.padding = [1, 1];
    let mut m = Block::new("QuantizableShuffleNetV2", shufflenet_v2_forward)
        .with(
            "conv1",
            seq(vec![
                conv(3, out[0], 3, 2, 1, 1, false)?,
                bn(out[0]),
                Module::relu(),
            ]),
        )
        .with("maxpool", maxpool);
    let mut input = out[0];
    for (i, (&r, &o)) in repeats.iter().zip(&out[1..4]).enumerate() {
        let mut blocks = vec![inverted_residual(input, o, 2)?];
        for _ in 1..r {
            blocks.push(inverted_residual(o, o, 1)?);
        }
        m = m.with(&format!("stage{}", i + 2), seq(blocks));
        input = o;
    }
    Ok(m.with(
        "conv5",
        seq(vec![
            conv(input, out[4], 1, 1, 0, 1, false)?,
            bn(out[4]),
            Module::relu(),
        ]),
    )
    .with("fc", linear(out[4], num_classes)?)
    .with("quant", Module::quant_stub())
    .with("dequant", Module::dequant_stub())
    .with("mean", Module::mean(&[2, 3], false))
    .into())
}

/// `QuantizableShuffleNetV2.fuse_model`: `conv1` and `conv5`'s
/// `["0", "1", "2"]`, then in every block `branch1`'s `["0", "1"]`,
/// `["2", "3", "4"]` (stride 2) and `branch2`'s `["0", "1", "2"]`,
/// `["3", "4"]`, `["5", "6", "7"]`.
pub fn fuse_groups(m: &Module) -> Vec<Vec<String>> {
    let mut g = vec![
        group("conv1", &["0", "1", "2"]),
        group("conv5", &["0", "1", "2"]),
    ];
    for (p, b) in m.named_modules() {
        if b.type_name() != "QuantizableInvertedResidual" || b.get("branch2").is_none() {
            continue;
        }
        if b.get("branch1").is_some_and(|b1| !b1.children().is_empty()) {
            let b1 = join(&p, "branch1");
            g.push(group(&b1, &["0", "1"]));
            g.push(group(&b1, &["2", "3", "4"]));
        }
        let b2 = join(&p, "branch2");
        g.push(group(&b2, &["0", "1", "2"]));
        g.push(group(&b2, &["3", "4"]));
        g.push(group(&b2, &["5", "6", "7"]));
    }
    g
}
