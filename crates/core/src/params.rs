//! Parameters of the ops added for the next releases (CONFORMANCE.md's second
//! table): activations, normalization, resizing, the other convolutions and
//! embedding bags. Names follow PyTorch's arguments.

/// `approximate` of `torch.nn.functional.gelu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GeluApproximate {
    /// `0.5·x·(1 + erf(x/√2))`.
    #[default]
    None,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    Tanh,
}

impl GeluApproximate {
    /// PyTorch's spelling: `"none"` or `"tanh"`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "none" => Some(GeluApproximate::None),
            "tanh" => Some(GeluApproximate::Tanh),
            _ => None,
        }
    }
}

/// How an upsampling op is told its output size (`upsample_*2d.vec`:
/// exactly one of `output_size` and `scale_factors`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UpsampleSize {
    /// `[out_h, out_w]`; the source step is `in / out`.
    OutputSize([usize; 2]),
    /// `[scale_h, scale_w]`; the output is `floor(in · scale)` (in f64) and
    /// the source step is `1 / scale` (computed in f64, rounded to f32).
    ScaleFactors([f64; 2]),
}

/// The running statistics and affine parameters of quantized BatchNorm2d
/// (`torch.ops.quantized.batch_norm2d(x, weight, bias, mean, var, eps, …)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormParams<'a> {
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub mean: &'a [f32],
    pub var: &'a [f32],
    pub eps: f64,
}

/// Parameters of a 1-D convolution (`Conv1d`: `[N, C, L]` input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv1dParams {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Default for Conv1dParams {
    fn default() -> Self {
        Conv1dParams {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

/// Parameters of a 3-D convolution (`Conv3d`: NCDHW input), `[d, h, w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv3dParams {
    pub stride: [usize; 3],
    pub padding: [usize; 3],
    pub dilation: [usize; 3],
    pub groups: usize,
}

impl Default for Conv3dParams {
    fn default() -> Self {
        Conv3dParams {
            stride: [1; 3],
            padding: [0; 3],
            dilation: [1; 3],
            groups: 1,
        }
    }
}

/// Parameters of a 2-D transposed convolution (`ConvTranspose2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvTranspose2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub output_padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Default for ConvTranspose2dParams {
    fn default() -> Self {
        ConvTranspose2dParams {
            stride: [1; 2],
            padding: [0; 2],
            output_padding: [0; 2],
            dilation: [1; 2],
            groups: 1,
        }
    }
}

/// How `embedding_bag_*_rowwise_offsets` reduces a bag. PyTorch 2.15's
/// rowwise ops accept `mean` but return the sum, so only `Sum` is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EmbeddingBagMode {
    #[default]
    Sum,
}

/// The affine parameters and epsilon of quantized LayerNorm, GroupNorm and
/// InstanceNorm (`weight`, `bias`, `eps` of `torch.ops.quantized.layer_norm`
/// and friends); absent weight and bias mean 1 and 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormParams<'a> {
    pub weight: Option<&'a [f32]>,
    pub bias: Option<&'a [f32]>,
    pub eps: f64,
}

impl Default for NormParams<'_> {
    /// No affine parameters, PyTorch's default `eps = 1e-5`.
    fn default() -> Self {
        NormParams {
            weight: None,
            bias: None,
            eps: 1e-5,
        }
    }
}
