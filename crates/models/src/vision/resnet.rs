//! `torchvision.models.quantization.resnet`: QuantizableResNet with
//! QuantizableBasicBlock (ResNet-18) or QuantizableBottleneck (ResNet-50,
//! ResNeXt-101 32x8d / 64x4d).

use rquant_nn::layers::{AdaptiveAvgPool2d, MaxPool2d};
use rquant_nn::{Block, Module, ModuleRegistry, Result as NnResult, Value};

use super::{bn, conv, flatten, group, join, linear, seq};
use crate::Result;

/// The residual block kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Basic,
    Bottleneck,
}

impl Kind {
    fn expansion(self) -> usize {
        match self {
            Kind::Basic => 1,
            Kind::Bottleneck => 4,
        }
    }
}

/// `QuantizableBasicBlock.forward`.
pub fn basic_block_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    let out = b.seq(&["conv1", "bn1", "relu", "conv2", "bn2"], x.clone())?;
    let identity = if b.has("downsample") {
        b.run("downsample", x)?
    } else {
        x
    };
    b.child("add_relu")?.add_relu(out, identity)
}

/// `QuantizableBottleneck.forward`.
pub fn bottleneck_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    let out = b.seq(
        &[
            "conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3", "bn3",
        ],
        x.clone(),
    )?;
    let identity = if b.has("downsample") {
        b.run("downsample", x)?
    } else {
        x
    };
    b.child("skip_add_relu")?.add_relu(out, identity)
}

/// `QuantizableResNet.forward` (`_forward_impl` between the stubs).
pub fn resnet_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    b.seq(
        &[
            "quant", "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
            "avgpool", "flatten", "fc", "dequant",
        ],
        x,
    )
}

pub(crate) fn register(r: &mut ModuleRegistry) {
    r.register_block("QuantizableBasicBlock", basic_block_forward);
    r.register_block("QuantizableBottleneck", bottleneck_forward);
    r.register_block("QuantizableResNet", resnet_forward);
}

#[allow(clippy::too_many_arguments)]
fn block(
    kind: Kind,
    inplanes: usize,
    planes: usize,
    stride: usize,
    downsample: Option<Module>,
    groups: usize,
    base_width: usize,
) -> Result<Module> {
    let mut b = match kind {
        Kind::Basic => Block::new("QuantizableBasicBlock", basic_block_forward)
            .with("conv1", conv(inplanes, planes, 3, stride, 1, 1, false)?)
            .with("bn1", bn(planes))
            .with("relu", Module::relu())
            .with("conv2", conv(planes, planes, 3, 1, 1, 1, false)?)
            .with("bn2", bn(planes)),
        Kind::Bottleneck => {
            // int(planes * (base_width / 64.0)) * groups
            let width = planes * base_width / 64 * groups;
            let out = planes * kind.expansion();
            Block::new("QuantizableBottleneck", bottleneck_forward)
                .with("conv1", conv(inplanes, width, 1, 1, 0, 1, false)?)
                .with("bn1", bn(width))
                .with("conv2", conv(width, width, 3, stride, 1, groups, false)?)
                .with("bn2", bn(width))
                .with("conv3", conv(width, out, 1, 1, 0, 1, false)?)
                .with("bn3", bn(out))
                // Bottleneck's own `relu` stays in the tree, unused once the
                // quantizable block calls relu1 / relu2 and skip_add_relu.
                .with("relu", Module::relu())
        }
    };
    if let Some(d) = downsample {
        b = b.with("downsample", d);
    }
    b = match kind {
        Kind::Basic => b.with("add_relu", Module::float_functional()),
        Kind::Bottleneck => b
            .with("skip_add_relu", Module::float_functional())
            .with("relu1", Module::relu())
            .with("relu2", Module::relu()),
    };
    Ok(b.into())
}

/// `QuantizableResNet(block, layers, groups=groups,
/// width_per_group=width_per_group, num_classes=num_classes)` after
/// `_replace_relu`.
pub fn resnet(
    kind: Kind,
    layers: [usize; 4],
    groups: usize,
    width_per_group: usize,
    num_classes: usize,
) -> Result<Module> {
    let e = kind.expansion();
    let mut inplanes = 64;
    let mut stages = Vec::new();
    for (i, (&n, planes)) in layers.iter().zip([64, 128, 256, 512]).enumerate() {
        let stride = if i == 0 { 1 } else { 2 };
        let downsample = (stride != 1 || inplanes != planes * e).then(|| {
            Ok::<_, crate::Error>(seq(vec![
                conv(inplanes, planes * e, 1, stride, 0, 1, false)?,
                bn(planes * e),
            ]))
        });
        let mut blocks = vec![block(
            kind,
            inplanes,
            planes,
            stride,
            downsample.transpose()?,
            groups,
            width_per_group,
        )?];
        inplanes = planes * e;
        for _ in 1..n {
            blocks.push(block(
                kind,
                inplanes,
                planes,
                1,
                None,
                groups,
                width_per_group,
            )?);
        }
        stages.push(seq(blocks));
    }
    let mut maxpool = MaxPool2d::new(3, 2);
    maxpool.padding = [1, 1];
    let mut stages = stages.into_iter();
    let mut m = Block::new("QuantizableResNet", resnet_forward)
        .with("conv1", conv(3, 64, 7, 2, 3, 1, false)?)
        .with("bn1", bn(64))
        .with("relu", Module::relu())
        .with("maxpool", maxpool);
    for name in ["layer1", "layer2", "layer3", "layer4"] {
        m = m.with(name, stages.next().expect("four stages"));
    }
    Ok(m.with("avgpool", AdaptiveAvgPool2d::new([1, 1]))
        .with("flatten", flatten())
        .with("fc", linear(512 * e, num_classes)?)
        .with("quant", Module::quant_stub())
        .with("dequant", Module::dequant_stub())
        .into())
}

/// `QuantizableResNet.fuse_model`: the stem, then every block's convs and
/// its downsample, in `self.modules()` order.
pub fn fuse_groups(m: &Module) -> Vec<Vec<String>> {
    let mut g = vec![group("", &["conv1", "bn1", "relu"])];
    for (p, b) in m.named_modules() {
        let ds = b.get("downsample").is_some();
        match b.type_name().as_str() {
            "QuantizableBasicBlock" => {
                g.push(group(&p, &["conv1", "bn1", "relu"]));
                g.push(group(&p, &["conv2", "bn2"]));
            }
            "QuantizableBottleneck" => {
                g.push(group(&p, &["conv1", "bn1", "relu1"]));
                g.push(group(&p, &["conv2", "bn2", "relu2"]));
                g.push(group(&p, &["conv3", "bn3"]));
            }
            _ => continue,
        }
        if ds {
            g.push(group(&join(&p, "downsample"), &["0", "1"]));
        }
    }
    g
}
