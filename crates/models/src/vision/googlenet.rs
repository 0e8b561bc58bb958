//! `torchvision.models.quantization.googlenet`: QuantizableGoogLeNet
//! (`aux_logits=False`, as the expected files build it; the auxiliary heads
//! only run in training) with QuantizableInception blocks.

use rquant_nn::layers::{AdaptiveAvgPool2d, Dropout, MaxPool2d};
use rquant_nn::{Block, Module, ModuleRegistry, Result as NnResult, Value};

use super::{basic_conv2d, flatten, linear, seq};
use crate::Result;

/// `nn.MaxPool2d(k, stride, padding, ceil_mode=True)`.
pub(crate) fn max_pool_ceil(k: usize, stride: usize, padding: usize) -> Module {
    let mut m = MaxPool2d::new(k, stride);
    m.padding = [padding; 2];
    m.ceil_mode = true;
    m.into()
}

/// `QuantizableInception.forward`: the four branches, `cat.cat(outputs, 1)`.
pub fn inception_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    let outs = ["branch1", "branch2", "branch3", "branch4"]
        .iter()
        .map(|n| b.run(n, x.clone()))
        .collect::<NnResult<Vec<_>>>()?;
    b.child("cat")?.cat(outs, 1)
}

/// `QuantizableGoogLeNet.forward` (eval: no auxiliary outputs).
pub fn googlenet_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    let x = if b.has("transform_input") {
        b.run("transform_input", x)?
    } else {
        x
    };
    b.seq(
        &[
            "quant",
            "conv1",
            "maxpool1",
            "conv2",
            "conv3",
            "maxpool2",
            "inception3a",
            "inception3b",
            "maxpool3",
            "inception4a",
            "inception4b",
            "inception4c",
            "inception4d",
            "inception4e",
            "maxpool4",
            "inception5a",
            "inception5b",
            "avgpool",
            "flatten",
            "dropout",
            "fc",
            "dequant",
        ],
        x,
    )
}

pub(crate) fn register(r: &mut ModuleRegistry) {
    r.register_block("QuantizableInception", inception_forward);
    r.register_block("QuantizableGoogLeNet", googlenet_forward);
}

#[allow(clippy::too_many_arguments)]
fn inception(
    i: usize,
    ch1x1: usize,
    ch3x3red: usize,
    ch3x3: usize,
    ch5x5red: usize,
    ch5x5: usize,
    pool_proj: usize,
) -> Result<Module> {
    let c = |i, o, k, p| basic_conv2d(i, o, [k, k], [1, 1], [p, p]);
    Ok(Block::new("QuantizableInception", inception_forward)
        .with("branch1", c(i, ch1x1, 1, 0)?)
        .with(
            "branch2",
            seq(vec![c(i, ch3x3red, 1, 0)?, c(ch3x3red, ch3x3, 3, 1)?]),
        )
        // torchvision's "5x5" branch has a 3x3 kernel (a known quirk it keeps).
        .with(
            "branch3",
            seq(vec![c(i, ch5x5red, 1, 0)?, c(ch5x5red, ch5x5, 3, 1)?]),
        )
        .with(
            "branch4",
            seq(vec![max_pool_ceil(3, 1, 1), c(i, pool_proj, 1, 0)?]),
        )
        .with("cat", Module::float_functional())
        .into())
}

/// `QuantizableGoogLeNet(num_classes=num_classes, aux_logits=False,
/// transform_input=False)`.
pub fn googlenet(num_classes: usize) -> Result<Module> {
    let c = |i, o, k, s, p| basic_conv2d(i, o, [k, k], [s, s], [p, p]);
    Ok(Block::new("QuantizableGoogLeNet", googlenet_forward)
        .with("conv1", c(3, 64, 7, 2, 3)?)
        .with("maxpool1", max_pool_ceil(3, 2, 0))
        .with("conv2", c(64, 64, 1, 1, 0)?)
        .with("conv3", c(64, 192, 3, 1, 1)?)
        .with("maxpool2", max_pool_ceil(3, 2, 0))
        .with("inception3a", inception(192, 64, 96, 128, 16, 32, 32)?)
        .with("inception3b", inception(256, 128, 128, 192, 32, 96, 64)?)
        .with("maxpool3", max_pool_ceil(3, 2, 0))
        .with("inception4a", inception(480, 192, 96, 208, 16, 48, 64)?)
        .with("inception4b", inception(512, 160, 112, 224, 24, 64, 64)?)
        .with("inception4c", inception(512, 128, 128, 256, 24, 64, 64)?)
        .with("inception4d", inception(512, 112, 144, 288, 32, 64, 64)?)
        .with("inception4e", inception(528, 256, 160, 320, 32, 128, 128)?)
        .with("maxpool4", max_pool_ceil(2, 2, 0))
        .with("inception5a", inception(832, 256, 160, 320, 32, 128, 128)?)
        .with("inception5b", inception(832, 384, 192, 384, 48, 128, 128)?)
        .with("avgpool", AdaptiveAvgPool2d::new([1, 1]))
        .with("dropout", Dropout::new(0.2, 0))
        .with("fc", linear(1024, num_classes)?)
        .with("quant", Module::quant_stub())
        .with("dequant", Module::dequant_stub())
        .with("flatten", flatten())
        .into())
}
