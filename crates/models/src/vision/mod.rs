//! torchvision's quantizable vision models (`torchvision.models.quantization`,
//! torchvision 0.29), built from rquant's modules as torchvision builds them:
//! the same module tree and state_dict names (`conv1`, `layer1.0.conv1`,
//! `features.1.conv.0.0`, `classifier.1`, …), `_replace_relu` (every ReLU6
//! of MobileNetV2 becomes a ReLU), QuantStub / DeQuantStub, and each model's
//! `fuse_model(is_qat)` recipe. Blocks are user-style [`Block`]s
//! (`QuantizableBasicBlock`, `QuantizableBottleneck`,
//! `QuantizableInvertedResidual`, `Conv2dNormActivation`,
//! `QuantizableBasicConv2d`, `QuantizableInception`, `QuantizableInceptionA`
//! … `E`, and the models themselves): [`registry`] loads them back from a
//! saved quantized model.
//!
//! The functional pieces of torchvision's forwards are parameter-free
//! children that PyTorch's module tree does not have (so they add no
//! state_dict key): `flatten` (`torch.flatten(x, 1)`) in every model and
//! MobileNetV2's `adaptive_avg_pool2d` (`nn.functional.adaptive_avg_pool2d(x,
//! (1, 1))`), Inception-v3's `avg_pool2d` / `max_pool2d`. GoogLeNet and
//! Inception-v3 are built with `aux_logits=False` (the auxiliary heads run
//! only in training) and `transform_input=False`, as torchvision builds them
//! with `weights=None` ([`VisionModel::with_transform_input`] adds it).
//!
//! Weights: a safetensors state_dict in torchvision's names
//! ([`VisionModel::load_float`]; int64 `num_batches_tracked` accepted), or
//! the seeded weights of `tools/vision/README.md`
//! ([`VisionModel::load_seeded`], the same bytes as `tools/vision/seeded.py`).
//!
//! ```no_run
//! use rquant_models::vision;
//! # fn main() -> rquant_models::Result<()> {
//! let mut m = vision::build("resnet18", 1000)?;
//! let digest = m.load_seeded(0)?;                  // or m.load_float("resnet18.safetensors")?
//! m.module.train(false);
//! m.fuse_model(false)?;                             // torchvision's fuse_model(is_qat=False)
//! # let _ = digest; Ok(()) }
//! ```

pub mod googlenet;
pub mod inception;
pub mod mobilenet_v2;
pub mod mobilenet_v3;
pub mod resnet;
pub mod shufflenet_v2;

use rquant_core::{Conv2dParams, Tensor};
use rquant_nn::layers::BatchNorm2d;
use rquant_nn::{Block, Conv2d, Linear, Module, ModuleRegistry, Sequential, Value};

use crate::seeded::{self, Seeded, Spec};
use crate::{bail, Result};

/// The models [`build`] knows, in torchvision's builder names.
pub const MODELS: &[&str] = &[
    "resnet18",
    "resnet50",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0",
    "googlenet",
    "inception_v3",
];

/// A built model: the module tree (PyTorch's state_dict names), and what the
/// tools/vision recipe needs to know about it.
#[derive(Debug, Clone)]
pub struct VisionModel {
    /// torchvision's builder name (`resnet18`).
    pub name: String,
    /// The float model (QuantStub … DeQuantStub), in training mode as built
    /// (call `module.train(false)` before fusing for inference).
    pub module: Module,
    pub num_classes: usize,
    /// The input size torchvision's weights use (224; Inception-v3 299).
    pub input_size: usize,
    /// The seeded-weights conv gain of `tools/vision/README.md`.
    pub conv_gain: f64,
    fuse_groups: fn(&Module) -> Vec<Vec<String>>,
}

/// Build torchvision's quantizable `name` (`quantize=False`, `weights=None`)
/// with `num_classes` outputs; weights are zero until loaded or seeded.
pub fn build(name: &str, num_classes: usize) -> Result<VisionModel> {
    if num_classes == 0 {
        bail!("vision::build({name}): num_classes must be positive");
    }
    let (module, input_size, conv_gain, fuse_groups): (Module, usize, f64, fn(&Module) -> _) =
        match name {
            "resnet18" => (
                resnet::resnet(resnet::Kind::Basic, [2, 2, 2, 2], 1, 64, num_classes)?,
                224,
                1.0,
                resnet::fuse_groups,
            ),
            "resnet50" => (
                resnet::resnet(resnet::Kind::Bottleneck, [3, 4, 6, 3], 1, 64, num_classes)?,
                224,
                1.0,
                resnet::fuse_groups,
            ),
            "resnext101_32x8d" => (
                resnet::resnet(resnet::Kind::Bottleneck, [3, 4, 23, 3], 32, 8, num_classes)?,
                224,
                1.0,
                resnet::fuse_groups,
            ),
            "resnext101_64x4d" => (
                resnet::resnet(resnet::Kind::Bottleneck, [3, 4, 23, 3], 64, 4, num_classes)?,
                224,
                1.0,
                resnet::fuse_groups,
            ),
            "mobilenet_v2" => (
                mobilenet_v2::mobilenet_v2(num_classes)?,
                224,
                1.5,
                mobilenet_v2::fuse_groups,
            ),
            "mobilenet_v3_large" => (
                mobilenet_v3::mobilenet_v3_large(num_classes)?,
                224,
                1.75,
                mobilenet_v3::fuse_groups,
            ),
            "shufflenet_v2_x0_5" | "shufflenet_v2_x1_0" | "shufflenet_v2_x1_5"
            | "shufflenet_v2_x2_0" => (
                shufflenet_v2::shufflenet_v2(name, num_classes)?,
                224,
                1.5,
                shufflenet_v2::fuse_groups,
            ),
            "googlenet" => (
                googlenet::googlenet(num_classes)?,
                224,
                2.0,
                basic_conv_groups,
            ),
            "inception_v3" => (
                inception::inception_v3(num_classes)?,
                299,
                2.0,
                basic_conv_groups,
            ),
            _ => bail!(
                "vision::build: unknown model {name:?} (known: {})",
                MODELS.join(", ")
            ),
        };
    let mut module = module;
    module.train(true);
    Ok(VisionModel {
        name: name.to_string(),
        module,
        num_classes,
        input_size,
        conv_gain,
        fuse_groups,
    })
}

/// A loader registry knowing every block of the zoo (and rquant's own
/// modules), for `rquant_nn::io::load_quantized_with`.
pub fn registry() -> ModuleRegistry {
    let mut r = ModuleRegistry::default();
    resnet::register(&mut r);
    mobilenet_v2::register(&mut r);
    mobilenet_v3::register(&mut r);
    shufflenet_v2::register(&mut r);
    googlenet::register(&mut r);
    inception::register(&mut r);
    r.register_block("QuantizableBasicConv2d", sequential_forward);
    r.register("TransformInput", |_| Ok(TransformInput.into()));
    r.register_block("Conv2dNormActivation", sequential_forward);
    r
}

impl VisionModel {
    /// torchvision's `fuse_model(is_qat)`: the model's fusion groups, fused
    /// with `fuse_modules` (inference: batch norms folded, the model must be
    /// in eval mode) or `fuse_modules_qat` (batch norms kept live).
    pub fn fuse_model(&mut self, is_qat: bool) -> Result<()> {
        let groups = self.fuse_groups();
        let g: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(String::as_str).collect())
            .collect();
        let g: Vec<&[&str]> = g.iter().map(Vec::as_slice).collect();
        if is_qat {
            rquant_nn::fuse_modules_qat(&mut self.module, &g)?;
        } else {
            rquant_nn::fuse_modules(&mut self.module, &g)?;
        }
        Ok(())
    }

    /// The groups [`fuse_model`](VisionModel::fuse_model) fuses, in
    /// torchvision's order (`[["conv1", "bn1", "relu"], …]`).
    pub fn fuse_groups(&self) -> Vec<Vec<String>> {
        (self.fuse_groups)(&self.module)
    }

    /// The state_dict's keys and shapes, as PyTorch lists them: parameters,
    /// batch-norm statistics and every batch norm's 0-d int64
    /// `num_batches_tracked`.
    pub fn specs(&mut self) -> Vec<Spec> {
        let mut out: Vec<Spec> = self
            .module
            .state_dict()
            .into_iter()
            .map(|(name, t)| Spec {
                name,
                shape: t.shape().to_vec(),
            })
            .collect();
        for (p, m) in self.module.named_modules() {
            if m.is::<BatchNorm2d>() {
                out.push(Spec {
                    name: format!("{p}.num_batches_tracked"),
                    shape: Vec::new(),
                });
            }
        }
        out
    }

    /// The seeded state_dict (`tools/vision/README.md`, formula v1) for this
    /// model's keys and shapes, its conv gain and `seed`.
    pub fn seeded_state_dict(&mut self, seed: u64) -> Result<Vec<(String, Seeded)>> {
        let specs = self.specs();
        seeded::state_dict(&specs, seed, self.conv_gain)
    }

    /// Load the seeded weights; returns their digest (the expected files'
    /// `weights.state_dict_digest`).
    pub fn load_seeded(&mut self, seed: u64) -> Result<u64> {
        let sd = self.seeded_state_dict(seed)?;
        let digest = seeded::digest(&sd);
        let specs = self.specs();
        let float: Vec<(String, Tensor)> = sd
            .into_iter()
            .zip(&specs)
            .filter_map(|((n, v), s)| match v {
                Seeded::F32(d) => Some(Tensor::new(s.shape.clone(), d).map(|t| (n, t))),
                Seeded::I64(_) => None,
            })
            .collect::<std::result::Result<_, _>>()?;
        self.module
            .load_state_dict(&float, true, &format!("seeded {} weights", self.name))?;
        Ok(digest)
    }

    /// The seeded state_dict as a safetensors file in torchvision's names
    /// (float32 tensors, int64 `num_batches_tracked`), as
    /// `tools/vision/seeded.py --out` writes it (`seeded.py --check` accepts it).
    pub fn seeded_safetensors(&mut self, seed: u64) -> Result<Vec<u8>> {
        use safetensors::tensor::{Dtype, TensorView};
        let specs = self.specs();
        let sd = self.seeded_state_dict(seed)?;
        let bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = sd
            .into_iter()
            .zip(specs)
            .map(|((n, v), s)| match v {
                Seeded::F32(d) => (
                    n,
                    Dtype::F32,
                    s.shape,
                    d.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                Seeded::I64(x) => (n, Dtype::I64, s.shape, x.to_le_bytes().to_vec()),
            })
            .collect();
        let views = bufs
            .iter()
            .map(|(n, dt, shape, b)| {
                TensorView::new(*dt, shape.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| crate::Error::new(format!("{n}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, &None).map_err(|e| crate::Error::new(e.to_string()))
    }

    /// GoogLeNet's and Inception-v3's `transform_input=True` (what
    /// torchvision sets when it loads its pretrained weights): the float
    /// input is re-normalised per channel before the QuantStub. An error for
    /// the other models, which have no such option.
    pub fn with_transform_input(mut self) -> Result<Self> {
        if !matches!(self.name.as_str(), "googlenet" | "inception_v3") {
            bail!("{}: no transform_input option", self.name);
        }
        let Some(b) = self.module.downcast_mut::<Block>() else {
            bail!("{}: the model is not a Block", self.name);
        };
        *b = b.clone().with("transform_input", TransformInput);
        Ok(self)
    }

    /// Load fp32 weights from a safetensors state_dict in torchvision's names
    /// (strict; PyTorch's int64 `num_batches_tracked` buffers accepted).
    pub fn load_float(&mut self, path: &str) -> Result<()> {
        rquant_nn::io::load_float(&mut self.module, path)?;
        Ok(())
    }
}

// ---------------------------------------------------------------- building blocks

/// `nn.Conv2d(i, o, k, stride, padding, groups=groups, bias=bias)` with zero
/// weights (square kernel, stride and padding).
pub(crate) fn conv(
    i: usize,
    o: usize,
    k: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    bias: bool,
) -> Result<Module> {
    conv_rect(i, o, [k, k], [stride; 2], [padding; 2], groups, bias)
}

/// [`conv`] with a rectangular kernel, stride and padding.
pub(crate) fn conv_rect(
    i: usize,
    o: usize,
    k: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    groups: usize,
    bias: bool,
) -> Result<Module> {
    if groups == 0 || !i.is_multiple_of(groups) || !o.is_multiple_of(groups) {
        bail!("conv {i} -> {o}: groups {groups} must divide both");
    }
    let w = Tensor::zeros([o, i / groups, k[0], k[1]]);
    let b = bias.then(|| Tensor::zeros([o]));
    let p = Conv2dParams {
        stride,
        padding,
        dilation: [1, 1],
        groups,
    };
    Ok(Conv2d::from_weights(w, b, p)?.into())
}

/// `nn.BatchNorm2d(c)` (eps 1e-5).
pub(crate) fn bn(c: usize) -> Module {
    BatchNorm2d::new(c).into()
}

/// `nn.Linear(i, o)` with zero weights and a bias.
pub(crate) fn linear(i: usize, o: usize) -> Result<Module> {
    Ok(Linear::from_weights(Tensor::zeros([o, i]), Some(Tensor::zeros([o])))?.into())
}

/// `nn.Sequential(*mods)`: children "0", "1", ….
pub(crate) fn seq(mods: Vec<Module>) -> Module {
    Sequential::from_modules(mods).into()
}

/// Forward through every child in order (an `nn.Sequential` subclass such as
/// torchvision's `Conv2dNormActivation`).
pub fn sequential_forward(b: &mut Block, x: Value) -> rquant_nn::Result<Value> {
    let names: Vec<String> = b.children_list().iter().map(|(n, _)| n.clone()).collect();
    names.iter().try_fold(x, |x, n| b.run(n, x))
}

/// torchvision's `Conv2dNormActivation(i, o, k, stride, groups=groups,
/// activation_layer=act)` (padding (k − 1) / 2, no conv bias): children "0"
/// conv, "1" BatchNorm2d (eps 1e-5), "2" the activation if any.
pub(crate) fn conv_norm_act(
    i: usize,
    o: usize,
    k: usize,
    stride: usize,
    groups: usize,
    act: Option<Module>,
) -> Result<Module> {
    conv_norm_act_eps(i, o, k, stride, groups, act, 1e-5)
}

/// [`conv_norm_act`] with the batch norm's eps.
pub(crate) fn conv_norm_act_eps(
    i: usize,
    o: usize,
    k: usize,
    stride: usize,
    groups: usize,
    act: Option<Module>,
    eps: f32,
) -> Result<Module> {
    let mut norm = BatchNorm2d::new(o);
    norm.eps = eps;
    let mut b = Block::new("Conv2dNormActivation", sequential_forward)
        .with("0", conv(i, o, k, stride, (k - 1) / 2, groups, false)?)
        .with("1", norm);
    if let Some(a) = act {
        b = b.with("2", a);
    }
    Ok(b.into())
}

/// torchvision's `BasicConv2d` (GoogLeNet, Inception-v3) as its quantizable
/// subclass: conv (no bias), BatchNorm2d with eps 0.001, ReLU.
pub(crate) fn basic_conv2d(
    i: usize,
    o: usize,
    k: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Result<Module> {
    let mut norm = BatchNorm2d::new(o);
    norm.eps = 0.001;
    Ok(Block::new("QuantizableBasicConv2d", sequential_forward)
        .with("conv", conv_rect(i, o, k, stride, padding, 1, false)?)
        .with("bn", norm)
        .with("relu", Module::relu())
        .into())
}

/// `fuse_model` of GoogLeNet and Inception-v3: every
/// QuantizableBasicConv2d's `["conv", "bn", "relu"]`.
fn basic_conv_groups(m: &Module) -> Vec<Vec<String>> {
    m.named_modules()
        .into_iter()
        .filter(|(_, b)| b.type_name() == "QuantizableBasicConv2d")
        .map(|(p, _)| group(&p, &["conv", "bn", "relu"]))
        .collect()
}

/// `_transform_input` of GoogLeNet and Inception-v3 (float, before the
/// QuantStub): channel c becomes `x_c · f32(std_c / 0.5) + f32((mean_c −
/// 0.5) / 0.5)`, a float32 multiply then add, with ImageNet's mean and std.
/// (Not pinned by an expected file: torchvision leaves it off with
/// `weights=None`.)
#[derive(Debug, Clone, Copy, Default)]
pub struct TransformInput;

impl rquant_nn::Layer for TransformInput {
    fn type_name(&self) -> String {
        "TransformInput".into()
    }
    fn forward(&mut self, x: Value) -> rquant_nn::Result<Value> {
        const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
        const STD: [f64; 3] = [0.229, 0.224, 0.225];
        let mut t = x.float("TransformInput")?;
        let s = t.shape().to_vec();
        if s.len() != 4 || s[1] != 3 {
            return Err(rquant_nn::NnError::module(
                "",
                format!("TransformInput: expected [N, 3, H, W], got {s:?}"),
            ));
        }
        let plane = s[2] * s[3];
        for (i, v) in t.data_mut().iter_mut().enumerate() {
            let c = i / plane % 3;
            let (mul, add) = ((STD[c] / 0.5) as f32, ((MEAN[c] - 0.5) / 0.5) as f32);
            *v = *v * mul + add;
        }
        Ok(Value::F(t))
    }
    fn save(
        &self,
        _: &mut rquant_nn::format::Saver,
    ) -> rquant_nn::Result<rquant_nn::serde_json::Value> {
        Ok(rquant_nn::serde_json::json!({}))
    }
}

/// `torch.flatten(x, 1)` as a module.
pub(crate) fn flatten() -> Module {
    Module::flatten()
}

/// Paths joined with a dot ("" joins to the child alone).
pub(crate) fn join(p: &str, c: &str) -> String {
    if p.is_empty() {
        c.to_string()
    } else {
        format!("{p}.{c}")
    }
}

/// Group paths under `prefix`.
pub(crate) fn group(prefix: &str, names: &[&str]) -> Vec<String> {
    names.iter().map(|n| join(prefix, n)).collect()
}
