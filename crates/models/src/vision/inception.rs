//! `torchvision.models.quantization.inception`: QuantizableInception3
//! (Inception-v3, `aux_logits=False`) with QuantizableInceptionA … E. The
//! blocks' functional `F.avg_pool2d(x, 3, stride=1, padding=1)` and
//! `F.max_pool2d(x, 3, stride=2)` are the parameter-free children
//! `avg_pool2d` and `max_pool2d`.

use rquant_nn::layers::{AdaptiveAvgPool2d, AvgPool2d, Dropout, MaxPool2d};
use rquant_nn::{Block, Module, ModuleRegistry, Result as NnResult, Value};

use super::{basic_conv2d, flatten, linear};
use crate::Result;

fn run_all(b: &mut Block, names: &[&str], x: &Value) -> NnResult<Vec<Value>> {
    names.iter().map(|n| b.run(n, x.clone())).collect()
}

/// `QuantizableInceptionA.forward`.
pub fn inception_a_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    let b1 = b.run("branch1x1", x.clone())?;
    let b5 = b.seq(&["branch5x5_1", "branch5x5_2"], x.clone())?;
    let b3 = b.seq(
        &["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
        x.clone(),
    )?;
    let bp = b.seq(&["avg_pool2d", "branch_pool"], x)?;
    b.child("myop")?.cat(vec![b1, b5, b3, bp], 1)
}

/// `QuantizableInceptionB.forward`.
pub fn inception_b_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    let b3 = b.run("branch3x3", x.clone())?;
    let bd = b.seq(
        &["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
        x.clone(),
    )?;
    let bp = b.run("max_pool2d", x)?;
    b.child("myop")?.cat(vec![b3, bd, bp], 1)
}

/// `QuantizableInceptionC.forward`.
pub fn inception_c_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    let b1 = b.run("branch1x1", x.clone())?;
    let b7 = b.seq(&["branch7x7_1", "branch7x7_2", "branch7x7_3"], x.clone())?;
    let bd = b.seq(
        &[
            "branch7x7dbl_1",
            "branch7x7dbl_2",
            "branch7x7dbl_3",
            "branch7x7dbl_4",
            "branch7x7dbl_5",
        ],
        x.clone(),
    )?;
    let bp = b.seq(&["avg_pool2d", "branch_pool"], x)?;
    b.child("myop")?.cat(vec![b1, b7, bd, bp], 1)
}

/// `QuantizableInceptionD.forward`.
pub fn inception_d_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    let b3 = b.seq(&["branch3x3_1", "branch3x3_2"], x.clone())?;
    let b7 = b.seq(
        &[
            "branch7x7x3_1",
            "branch7x7x3_2",
            "branch7x7x3_3",
            "branch7x7x3_4",
        ],
        x.clone(),
    )?;
    let bp = b.run("max_pool2d", x)?;
    b.child("myop")?.cat(vec![b3, b7, bp], 1)
}

/// `QuantizableInceptionE.forward`: two inner cats (`myop1`, `myop2`), then
/// `myop3`.
pub fn inception_e_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    let b1 = b.run("branch1x1", x.clone())?;
    let t = b.run("branch3x3_1", x.clone())?;
    let pair = run_all(b, &["branch3x3_2a", "branch3x3_2b"], &t)?;
    let b3 = b.child("myop1")?.cat(pair, 1)?;
    let t = b.seq(&["branch3x3dbl_1", "branch3x3dbl_2"], x.clone())?;
    let pair = run_all(b, &["branch3x3dbl_3a", "branch3x3dbl_3b"], &t)?;
    let bd = b.child("myop2")?.cat(pair, 1)?;
    let bp = b.seq(&["avg_pool2d", "branch_pool"], x)?;
    b.child("myop3")?.cat(vec![b1, b3, bd, bp], 1)
}

/// `QuantizableInception3.forward` (eval: no auxiliary output).
pub fn inception3_forward(b: &mut Block, x: Value) -> NnResult<Value> {
    let x = if b.has("transform_input") {
        b.run("transform_input", x)?
    } else {
        x
    };
    b.seq(
        &[
            "quant",
            "Conv2d_1a_3x3",
            "Conv2d_2a_3x3",
            "Conv2d_2b_3x3",
            "maxpool1",
            "Conv2d_3b_1x1",
            "Conv2d_4a_3x3",
            "maxpool2",
            "Mixed_5b",
            "Mixed_5c",
            "Mixed_5d",
            "Mixed_6a",
            "Mixed_6b",
            "Mixed_6c",
            "Mixed_6d",
            "Mixed_6e",
            "Mixed_7a",
            "Mixed_7b",
            "Mixed_7c",
            "avgpool",
            "dropout",
            "flatten",
            "fc",
            "dequant",
        ],
        x,
    )
}

pub(crate) fn register(r: &mut ModuleRegistry) {
    r.register_block("QuantizableInceptionA", inception_a_forward);
    r.register_block("QuantizableInceptionB", inception_b_forward);
    r.register_block("QuantizableInceptionC", inception_c_forward);
    r.register_block("QuantizableInceptionD", inception_d_forward);
    r.register_block("QuantizableInceptionE", inception_e_forward);
    r.register_block("QuantizableInception3", inception3_forward);
}

fn c(i: usize, o: usize, k: [usize; 2], s: usize, p: [usize; 2]) -> Result<Module> {
    basic_conv2d(i, o, k, [s, s], p)
}

/// `F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)` as a module.
fn avg_pool_3x3() -> Module {
    let mut m = AvgPool2d::new(3, 1);
    m.padding = [1, 1];
    m.into()
}

fn inception_a(i: usize, pool_features: usize) -> Result<Module> {
    Ok(Block::new("QuantizableInceptionA", inception_a_forward)
        .with("branch1x1", c(i, 64, [1, 1], 1, [0, 0])?)
        .with("branch5x5_1", c(i, 48, [1, 1], 1, [0, 0])?)
        .with("branch5x5_2", c(48, 64, [5, 5], 1, [2, 2])?)
        .with("branch3x3dbl_1", c(i, 64, [1, 1], 1, [0, 0])?)
        .with("branch3x3dbl_2", c(64, 96, [3, 3], 1, [1, 1])?)
        .with("branch3x3dbl_3", c(96, 96, [3, 3], 1, [1, 1])?)
        .with("branch_pool", c(i, pool_features, [1, 1], 1, [0, 0])?)
        .with("myop", Module::float_functional())
        .with("avg_pool2d", avg_pool_3x3())
        .into())
}

fn inception_b(i: usize) -> Result<Module> {
    Ok(Block::new("QuantizableInceptionB", inception_b_forward)
        .with("branch3x3", c(i, 384, [3, 3], 2, [0, 0])?)
        .with("branch3x3dbl_1", c(i, 64, [1, 1], 1, [0, 0])?)
        .with("branch3x3dbl_2", c(64, 96, [3, 3], 1, [1, 1])?)
        .with("branch3x3dbl_3", c(96, 96, [3, 3], 2, [0, 0])?)
        .with("myop", Module::float_functional())
        .with("max_pool2d", MaxPool2d::new(3, 2))
        .into())
}

fn inception_c(i: usize, c7: usize) -> Result<Module> {
    Ok(Block::new("QuantizableInceptionC", inception_c_forward)
        .with("branch1x1", c(i, 192, [1, 1], 1, [0, 0])?)
        .with("branch7x7_1", c(i, c7, [1, 1], 1, [0, 0])?)
        .with("branch7x7_2", c(c7, c7, [1, 7], 1, [0, 3])?)
        .with("branch7x7_3", c(c7, 192, [7, 1], 1, [3, 0])?)
        .with("branch7x7dbl_1", c(i, c7, [1, 1], 1, [0, 0])?)
        .with("branch7x7dbl_2", c(c7, c7, [7, 1], 1, [3, 0])?)
        .with("branch7x7dbl_3", c(c7, c7, [1, 7], 1, [0, 3])?)
        .with("branch7x7dbl_4", c(c7, c7, [7, 1], 1, [3, 0])?)
        .with("branch7x7dbl_5", c(c7, 192, [1, 7], 1, [0, 3])?)
        .with("branch_pool", c(i, 192, [1, 1], 1, [0, 0])?)
        .with("myop", Module::float_functional())
        .with("avg_pool2d", avg_pool_3x3())
        .into())
}

fn inception_d(i: usize) -> Result<Module> {
    Ok(Block::new("QuantizableInceptionD", inception_d_forward)
        .with("branch3x3_1", c(i, 192, [1, 1], 1, [0, 0])?)
        .with("branch3x3_2", c(192, 320, [3, 3], 2, [0, 0])?)
        .with("branch7x7x3_1", c(i, 192, [1, 1], 1, [0, 0])?)
        .with("branch7x7x3_2", c(192, 192, [1, 7], 1, [0, 3])?)
        .with("branch7x7x3_3", c(192, 192, [7, 1], 1, [3, 0])?)
        .with("branch7x7x3_4", c(192, 192, [3, 3], 2, [0, 0])?)
        .with("myop", Module::float_functional())
        .with("max_pool2d", MaxPool2d::new(3, 2))
        .into())
}

fn inception_e(i: usize) -> Result<Module> {
    Ok(Block::new("QuantizableInceptionE", inception_e_forward)
        .with("branch1x1", c(i, 320, [1, 1], 1, [0, 0])?)
        .with("branch3x3_1", c(i, 384, [1, 1], 1, [0, 0])?)
        .with("branch3x3_2a", c(384, 384, [1, 3], 1, [0, 1])?)
        .with("branch3x3_2b", c(384, 384, [3, 1], 1, [1, 0])?)
        .with("branch3x3dbl_1", c(i, 448, [1, 1], 1, [0, 0])?)
        .with("branch3x3dbl_2", c(448, 384, [3, 3], 1, [1, 1])?)
        .with("branch3x3dbl_3a", c(384, 384, [1, 3], 1, [0, 1])?)
        .with("branch3x3dbl_3b", c(384, 384, [3, 1], 1, [1, 0])?)
        .with("branch_pool", c(i, 192, [1, 1], 1, [0, 0])?)
        .with("myop1", Module::float_functional())
        .with("myop2", Module::float_functional())
        .with("myop3", Module::float_functional())
        .with("avg_pool2d", avg_pool_3x3())
        .into())
}

/// `QuantizableInception3(num_classes=num_classes, aux_logits=False,
/// transform_input=False)`.
pub fn inception_v3(num_classes: usize) -> Result<Module> {
    Ok(Block::new("QuantizableInception3", inception3_forward)
        .with("Conv2d_1a_3x3", c(3, 32, [3, 3], 2, [0, 0])?)
        .with("Conv2d_2a_3x3", c(32, 32, [3, 3], 1, [0, 0])?)
        .with("Conv2d_2b_3x3", c(32, 64, [3, 3], 1, [1, 1])?)
        .with("maxpool1", MaxPool2d::new(3, 2))
        .with("Conv2d_3b_1x1", c(64, 80, [1, 1], 1, [0, 0])?)
        .with("Conv2d_4a_3x3", c(80, 192, [3, 3], 1, [0, 0])?)
        .with("maxpool2", MaxPool2d::new(3, 2))
        .with("Mixed_5b", inception_a(192, 32)?)
        .with("Mixed_5c", inception_a(256, 64)?)
        .with("Mixed_5d", inception_a(288, 64)?)
        .with("Mixed_6a", inception_b(288)?)
        .with("Mixed_6b", inception_c(768, 128)?)
        .with("Mixed_6c", inception_c(768, 160)?)
        .with("Mixed_6d", inception_c(768, 160)?)
        .with("Mixed_6e", inception_c(768, 192)?)
        .with("Mixed_7a", inception_d(768)?)
        .with("Mixed_7b", inception_e(1280)?)
        .with("Mixed_7c", inception_e(2048)?)
        .with("avgpool", AdaptiveAvgPool2d::new([1, 1]))
        .with("dropout", Dropout::new(0.5, 0))
        .with("fc", linear(2048, num_classes)?)
        .with("quant", Module::quant_stub())
        .with("dequant", Module::dequant_stub())
        .with("flatten", flatten())
        .into())
}
