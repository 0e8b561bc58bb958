//! The named observer, fake-quant and qconfig presets of
//! `torch.ao.quantization` 2.15 that the original list in this module did
//! not have, each with torch's `with_args` arguments (checked against torch's
//! own objects: `tools/api/gen_api_cases.py` writes them to
//! `crates/nn/tests/data/api/presets.safetensors`, which
//! `crates/nn/tests/api_config.rs` rebuilds preset by preset).
//!
//! Not here, on purpose: the symmetric qnnpack presets
//! (`default_symmetric_qnnpack_(qat_)qconfig` and their per-channel forms),
//! whose qint8 activations PyTorch runs only under oneDNN — qint8
//! activations are outside rquant's scope — and `default_quint8_weight_qconfig`
//! (quint8 weights: rquant's int8 kernels take qint8 weights).
//!
//! Sub-byte dtypes (`quint4x2`, `quint2x4`) are described by the spec's
//! `placeholder_dtype` with the dtype's range as a custom quant range on a
//! quint8 observer: the qparams are the same (the float-qparams rule does
//! not depend on whether the range was customised).

use super::{
    default_dynamic_quant_observer, default_observer, default_per_channel_weight_observer,
    default_weight_observer, float16_dynamic_qconfig, obs, FakeQuantKind, FakeQuantizeSpec,
    LsqSpec, ObserverSpec, QConfig, QSpec,
};
use crate::dtype::QDType;
use crate::error::Result;
use crate::observer::{ObserverDType, ObserverKind};
use crate::tensor::QScheme;

/// `2 ** -12`, the `eps` of the `*_range_neg_127_to_127` presets.
const EPS_NEG127: f32 = 1.0 / 4096.0;

// ---------------------------------------------------------------- observers

/// `default_histogram_observer`: `HistogramObserver(quant_min=0, quant_max=127)`.
pub fn default_histogram_observer() -> ObserverSpec {
    obs(ObserverKind::Histogram, |c| {
        c.quant_min = Some(0);
        c.quant_max = Some(127);
    })
}
/// `default_placeholder_observer`: `PlaceholderObserver(dtype=float32)`.
pub fn default_placeholder_observer() -> ObserverSpec {
    ObserverSpec::placeholder(ObserverDType::Float32, None, None, false)
}
/// `default_debug_observer`: `RecordingObserver` (quint8).
pub fn default_debug_observer() -> ObserverSpec {
    ObserverSpec::new(ObserverKind::Recording)
}
/// `default_reuse_input_observer`: `ReuseInputObserver`.
pub fn default_reuse_input_observer() -> ObserverSpec {
    ObserverSpec::new(ObserverKind::ReuseInput)
}
/// `NoopObserver.with_args(dtype=float32)`, the activation of the embedding
/// QAT qconfigs.
pub fn noop_float32_observer() -> ObserverSpec {
    ObserverSpec::noop(ObserverDType::Float32)
}
/// `torch.nn.Identity` in an observer slot.
pub fn identity_observer() -> ObserverSpec {
    ObserverSpec::new(ObserverKind::Identity)
}
/// `default_float_qparams_observer`: `PerChannelMinMaxObserver(dtype=quint8,
/// qscheme=per_channel_affine_float_qparams, ch_axis=0)`.
pub fn default_float_qparams_observer() -> ObserverSpec {
    obs(ObserverKind::PerChannelMinMax, |c| {
        c.dtype = QDType::QUInt8;
        c.qscheme = QScheme::PerChannelAffineFloatQParams;
        c.ch_axis = 0;
    })
}
/// `default_float_qparams_observer_4bit`: the same with `dtype=quint4x2`
/// (range 0..15).
pub fn default_float_qparams_observer_4bit() -> ObserverSpec {
    sub_byte(default_float_qparams_observer(), ObserverDType::QUInt4x2)
}
/// The 2-bit (`quint2x4`, range 0..3) form of `default_float_qparams_observer`.
pub fn float_qparams_observer_2bit() -> ObserverSpec {
    sub_byte(default_float_qparams_observer(), ObserverDType::QUInt2x4)
}

fn sub_byte(mut s: ObserverSpec, d: ObserverDType) -> ObserverSpec {
    let bits = d.sub_byte_bits().expect("a sub-byte dtype");
    s.config.quant_min = Some(0);
    s.config.quant_max = Some((1 << bits) - 1);
    s.placeholder_dtype = Some(d);
    s
}

/// `weight_observer_range_neg_127_to_127`: `MinMaxObserver(qint8,
/// per_tensor_symmetric, quant_min=-127, quant_max=127, eps=2**-12)`.
pub fn weight_observer_range_neg_127_to_127() -> ObserverSpec {
    obs(ObserverKind::MinMax, |c| {
        c.dtype = QDType::QInt8;
        c.qscheme = QScheme::PerTensorSymmetric;
        c.quant_min = Some(-127);
        c.quant_max = Some(127);
        c.eps = EPS_NEG127;
    })
}
/// `per_channel_weight_observer_range_neg_127_to_127`.
pub fn per_channel_weight_observer_range_neg_127_to_127() -> ObserverSpec {
    obs(ObserverKind::PerChannelMinMax, |c| {
        c.dtype = QDType::QInt8;
        c.qscheme = QScheme::PerChannelSymmetric;
        c.quant_min = Some(-127);
        c.quant_max = Some(127);
        c.eps = EPS_NEG127;
    })
}

/// `default_fixed_qparams_range_0to1_observer` (= `default_affine_fixed_qparams_observer`):
/// scale 1/256, zero point 0 — sigmoid, hardsigmoid and softmax outputs.
pub fn default_fixed_qparams_range_0to1_observer() -> ObserverSpec {
    ObserverSpec::fixed_qparams(1.0 / 256.0, 0)
}
/// `default_fixed_qparams_range_neg1to1_observer` (= `default_symmetric_fixed_qparams_observer`):
/// scale 2/256, zero point 128 — tanh outputs.
pub fn default_fixed_qparams_range_neg1to1_observer() -> ObserverSpec {
    ObserverSpec::fixed_qparams(2.0 / 256.0, 128)
}
/// `default_affine_fixed_qparams_observer`.
pub fn default_affine_fixed_qparams_observer() -> ObserverSpec {
    default_fixed_qparams_range_0to1_observer()
}
/// `default_symmetric_fixed_qparams_observer`.
pub fn default_symmetric_fixed_qparams_observer() -> ObserverSpec {
    default_fixed_qparams_range_neg1to1_observer()
}

// ---------------------------------------------------------------- fake quants

fn fq_spec(kind: FakeQuantKind, o: ObserverSpec) -> FakeQuantizeSpec {
    FakeQuantizeSpec::new(kind, o)
}

fn moving(per_channel: bool, f: impl FnOnce(&mut crate::observer::ObserverConfig)) -> ObserverSpec {
    let k = if per_channel {
        ObserverKind::MovingAveragePerChannelMinMax
    } else {
        ObserverKind::MovingAverageMinMax
    };
    obs(k, f)
}

/// `default_fake_quant`: `FakeQuantize(MovingAverageMinMaxObserver, 0..255,
/// quint8, per_tensor_affine, reduce_range=True)`.
pub fn default_fake_quant() -> FakeQuantizeSpec {
    fq_spec(
        FakeQuantKind::FakeQuantize,
        moving(false, |c| {
            c.quant_min = Some(0);
            c.quant_max = Some(255);
            c.reduce_range = true;
        }),
    )
}
/// `default_weight_fake_quant`: `FakeQuantize(MovingAverageMinMaxObserver,
/// -128..127, qint8, per_tensor_symmetric)`.
pub fn default_weight_fake_quant() -> FakeQuantizeSpec {
    fq_spec(
        FakeQuantKind::FakeQuantize,
        moving(false, |c| {
            c.quant_min = Some(-128);
            c.quant_max = Some(127);
            c.dtype = QDType::QInt8;
            c.qscheme = QScheme::PerTensorSymmetric;
        }),
    )
}
/// `default_per_channel_weight_fake_quant`.
pub fn default_per_channel_weight_fake_quant() -> FakeQuantizeSpec {
    fq_spec(
        FakeQuantKind::FakeQuantize,
        moving(true, |c| {
            c.quant_min = Some(-128);
            c.quant_max = Some(127);
            c.dtype = QDType::QInt8;
            c.qscheme = QScheme::PerChannelSymmetric;
            c.ch_axis = 0;
        }),
    )
}
/// `default_fused_act_fake_quant`: `FusedMovingAvgObsFakeQuantize(0..255, quint8)`.
pub fn default_fused_act_fake_quant() -> FakeQuantizeSpec {
    fq_spec(
        FakeQuantKind::FusedMovingAvgObs,
        moving(false, |c| {
            c.quant_min = Some(0);
            c.quant_max = Some(255);
        }),
    )
}
/// `default_fused_wt_fake_quant`.
pub fn default_fused_wt_fake_quant() -> FakeQuantizeSpec {
    fq_spec(
        FakeQuantKind::FusedMovingAvgObs,
        moving(false, |c| {
            c.quant_min = Some(-128);
            c.quant_max = Some(127);
            c.dtype = QDType::QInt8;
            c.qscheme = QScheme::PerTensorSymmetric;
        }),
    )
}
/// `default_fused_per_channel_wt_fake_quant`.
pub fn default_fused_per_channel_wt_fake_quant() -> FakeQuantizeSpec {
    fq_spec(
        FakeQuantKind::FusedMovingAvgObs,
        moving(true, |c| {
            c.quant_min = Some(-128);
            c.quant_max = Some(127);
            c.dtype = QDType::QInt8;
            c.qscheme = QScheme::PerChannelSymmetric;
        }),
    )
}
/// `fused_wt_fake_quant_range_neg_127_to_127`.
pub fn fused_wt_fake_quant_range_neg_127_to_127() -> FakeQuantizeSpec {
    fq_spec(
        FakeQuantKind::FusedMovingAvgObs,
        moving(false, |c| {
            c.quant_min = Some(-127);
            c.quant_max = Some(127);
            c.dtype = QDType::QInt8;
            c.qscheme = QScheme::PerTensorSymmetric;
            c.eps = EPS_NEG127;
        }),
    )
}
/// `fused_per_channel_wt_fake_quant_range_neg_127_to_127`.
pub fn fused_per_channel_wt_fake_quant_range_neg_127_to_127() -> FakeQuantizeSpec {
    fq_spec(
        FakeQuantKind::FusedMovingAvgObs,
        moving(true, |c| {
            c.quant_min = Some(-127);
            c.quant_max = Some(127);
            c.dtype = QDType::QInt8;
            c.qscheme = QScheme::PerChannelSymmetric;
            c.eps = EPS_NEG127;
        }),
    )
}
/// `default_histogram_fake_quant`: `FakeQuantize(HistogramObserver, 0..255,
/// quint8, per_tensor_affine, reduce_range=True)`.
pub fn default_histogram_fake_quant() -> FakeQuantizeSpec {
    fq_spec(
        FakeQuantKind::FakeQuantize,
        obs(ObserverKind::Histogram, |c| {
            c.quant_min = Some(0);
            c.quant_max = Some(255);
            c.reduce_range = true;
        }),
    )
}
/// `default_dynamic_fake_quant`: `FakeQuantize(MovingAverageMinMaxObserver,
/// 0..255, is_dynamic=True, quint8, averaging_constant=1)`.
pub fn default_dynamic_fake_quant() -> FakeQuantizeSpec {
    fq_spec(
        FakeQuantKind::FakeQuantize,
        moving(false, |c| {
            c.quant_min = Some(0);
            c.quant_max = Some(255);
            c.is_dynamic = true;
            c.averaging_constant = 1.0;
        }),
    )
}
/// `default_embedding_fake_quant`: `FakeQuantize(MovingAveragePerChannelMinMaxObserver,
/// per_channel_affine_float_qparams, quint8, 0..255, ch_axis=0, averaging_constant=1)`.
pub fn default_embedding_fake_quant() -> FakeQuantizeSpec {
    fq_spec(
        FakeQuantKind::FakeQuantize,
        moving(true, |c| {
            c.qscheme = QScheme::PerChannelAffineFloatQParams;
            c.dtype = QDType::QUInt8;
            c.quant_min = Some(0);
            c.quant_max = Some(255);
            c.ch_axis = 0;
            c.averaging_constant = 1.0;
        }),
    )
}
/// `default_embedding_fake_quant_4bit`: the same with `dtype=quint4x2` (0..15).
pub fn default_embedding_fake_quant_4bit() -> FakeQuantizeSpec {
    let mut s = default_embedding_fake_quant();
    s.observer = sub_byte(s.observer, ObserverDType::QUInt4x2);
    s
}
/// `default_fixed_qparams_range_0to1_fake_quant` (= `default_affine_fixed_qparams_fake_quant`).
pub fn default_fixed_qparams_range_0to1_fake_quant() -> FakeQuantizeSpec {
    fq_spec(
        FakeQuantKind::FixedQParams,
        default_fixed_qparams_range_0to1_observer(),
    )
}
/// `default_fixed_qparams_range_neg1to1_fake_quant` (= `default_symmetric_fixed_qparams_fake_quant`).
pub fn default_fixed_qparams_range_neg1to1_fake_quant() -> FakeQuantizeSpec {
    fq_spec(
        FakeQuantKind::FixedQParams,
        default_fixed_qparams_range_neg1to1_observer(),
    )
}
/// `default_affine_fixed_qparams_fake_quant`.
pub fn default_affine_fixed_qparams_fake_quant() -> FakeQuantizeSpec {
    default_fixed_qparams_range_0to1_fake_quant()
}
/// `default_symmetric_fixed_qparams_fake_quant`.
pub fn default_symmetric_fixed_qparams_fake_quant() -> FakeQuantizeSpec {
    default_fixed_qparams_range_neg1to1_fake_quant()
}

/// A learnable (LSQ) fake quant over `observer` (`_LearnableFakeQuantize.with_args(
/// observer=…, quant_min, quant_max, scale, zero_point, channel_len,
/// use_grad_scaling)`; the quant range is the observer's).
pub fn learnable_fake_quant(observer: ObserverSpec, lsq: LsqSpec) -> FakeQuantizeSpec {
    FakeQuantizeSpec {
        kind: FakeQuantKind::Learnable,
        observer,
        lsq,
    }
}

/// A QAT qconfig with LSQ fake quants: activations over a moving-average
/// observer (0..255, `reduce_range` as asked), weights per-tensor or
/// per-channel symmetric qint8 over moving-average observers (per-channel
/// needs the output-channel count). This is how PyTorch's LSQ tests build
/// theirs (there is no named preset).
pub fn learnable_qat_qconfig(
    reduce_range: bool,
    per_channel_out: Option<usize>,
    use_grad_scaling: bool,
) -> QConfig {
    let act = learnable_fake_quant(
        moving(false, |c| {
            c.quant_min = Some(0);
            c.quant_max = Some(255);
            c.reduce_range = reduce_range;
        }),
        LsqSpec {
            use_grad_scaling,
            ..LsqSpec::default()
        },
    );
    let wt = learnable_fake_quant(
        moving(per_channel_out.is_some(), |c| {
            c.quant_min = Some(-128);
            c.quant_max = Some(127);
            c.dtype = QDType::QInt8;
            c.qscheme = if per_channel_out.is_some() {
                QScheme::PerChannelSymmetric
            } else {
                QScheme::PerTensorSymmetric
            };
        }),
        LsqSpec {
            channel_len: per_channel_out,
            use_grad_scaling,
            ..LsqSpec::default()
        },
    );
    QConfig {
        activation: QSpec::FakeQuant(act),
        weight: QSpec::FakeQuant(wt),
    }
}

// ---------------------------------------------------------------- qconfigs

/// `default_qat_qconfig_v2`: fused fake quants, per-tensor weights (the
/// value of `get_default_qat_qconfig("qnnpack")`).
pub fn default_qat_qconfig_v2() -> QConfig {
    QConfig {
        activation: QSpec::FakeQuant(default_fused_act_fake_quant()),
        weight: QSpec::FakeQuant(default_fused_wt_fake_quant()),
    }
}
/// `float16_static_qconfig`: float16 placeholders for activation and weight.
pub fn float16_static_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::Observer(ObserverSpec::placeholder(
            ObserverDType::Float16,
            None,
            None,
            false,
        )),
        weight: QSpec::Observer(ObserverSpec::placeholder(
            ObserverDType::Float16,
            None,
            None,
            false,
        )),
    }
}
/// `default_debug_qconfig`: a recording observer on activations,
/// `default_weight_observer` on weights.
pub fn default_debug_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::Observer(default_debug_observer()),
        weight: QSpec::Observer(default_weight_observer()),
    }
}
/// `default_weight_only_qconfig`: `Identity` activations, `default_weight_fake_quant`.
pub fn default_weight_only_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::Observer(identity_observer()),
        weight: QSpec::FakeQuant(default_weight_fake_quant()),
    }
}
/// `default_activation_only_qconfig`: `default_fake_quant` activations, `Identity` weights.
pub fn default_activation_only_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::FakeQuant(default_fake_quant()),
        weight: QSpec::Observer(identity_observer()),
    }
}
/// `float_qparams_weight_only_qconfig`: placeholder activations (float32),
/// `default_float_qparams_observer` weights — quantized Embedding / EmbeddingBag.
pub fn float_qparams_weight_only_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::Observer(default_placeholder_observer()),
        weight: QSpec::Observer(default_float_qparams_observer()),
    }
}
/// `float_qparams_weight_only_qconfig_4bit`: the same with 4-bit (`quint4x2`) weights.
pub fn float_qparams_weight_only_qconfig_4bit() -> QConfig {
    QConfig {
        activation: QSpec::Observer(default_placeholder_observer()),
        weight: QSpec::Observer(default_float_qparams_observer_4bit()),
    }
}
/// The 2-bit (`quint2x4`) form of `float_qparams_weight_only_qconfig`
/// (PyTorch has the 2-bit ops but no named qconfig).
pub fn float_qparams_weight_only_qconfig_2bit() -> QConfig {
    QConfig {
        activation: QSpec::Observer(default_placeholder_observer()),
        weight: QSpec::Observer(float_qparams_observer_2bit()),
    }
}
/// `default_embedding_qat_qconfig`: `NoopObserver(float32)` activations,
/// `default_embedding_fake_quant` weights.
pub fn default_embedding_qat_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::Observer(noop_float32_observer()),
        weight: QSpec::FakeQuant(default_embedding_fake_quant()),
    }
}
/// `default_embedding_qat_qconfig_4bit`.
pub fn default_embedding_qat_qconfig_4bit() -> QConfig {
    QConfig {
        activation: QSpec::Observer(noop_float32_observer()),
        weight: QSpec::FakeQuant(default_embedding_fake_quant_4bit()),
    }
}
/// `default_dynamic_qat_qconfig`: `default_dynamic_fake_quant` activations,
/// `default_weight_fake_quant` weights (QAT of dynamic Linear, `nnqat.dynamic.Linear`).
pub fn default_dynamic_qat_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::FakeQuant(default_dynamic_fake_quant()),
        weight: QSpec::FakeQuant(default_weight_fake_quant()),
    }
}
/// `default_reuse_input_qconfig`: `ReuseInputObserver` activations, `NoopObserver` weights.
pub fn default_reuse_input_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::Observer(default_reuse_input_observer()),
        weight: QSpec::Observer(ObserverSpec::noop(ObserverDType::Float16)),
    }
}
/// `_default_fp32_placeholder_qconfig` (what `get_default_qconfig_mapping`
/// gives fixed-qparams ops' weights; float32 placeholders both).
pub fn default_fp32_placeholder_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::Observer(ObserverSpec::placeholder(
            ObserverDType::Float32,
            None,
            None,
            false,
        )),
        weight: QSpec::Observer(ObserverSpec::placeholder(
            ObserverDType::Float32,
            None,
            None,
            false,
        )),
    }
}

/// The qconfig `get_default_qconfig_mapping` gives a fixed-qparams op
/// (sigmoid, hardsigmoid, softmax: 0to1; tanh: neg1to1): fixed-qparams
/// observers (QAT: fake quants) for activations.
pub fn fixed_qparams_qconfig(neg1to1: bool, qat: bool) -> QConfig {
    let activation = match (neg1to1, qat) {
        (false, false) => QSpec::Observer(default_fixed_qparams_range_0to1_observer()),
        (true, false) => QSpec::Observer(default_fixed_qparams_range_neg1to1_observer()),
        (false, true) => QSpec::FakeQuant(default_fixed_qparams_range_0to1_fake_quant()),
        (true, true) => QSpec::FakeQuant(default_fixed_qparams_range_neg1to1_fake_quant()),
    };
    // torch: `default_weight_fake_quant` weights under QAT.
    let weight = if qat {
        QSpec::FakeQuant(default_weight_fake_quant())
    } else {
        QSpec::Observer(default_weight_observer())
    };
    QConfig { activation, weight }
}

/// All the named presets, by their torch names (for lookups and the
/// preset test): qconfigs first.
pub fn qconfig_by_name(name: &str) -> Result<QConfig> {
    use crate::error::QuantError;
    Ok(match name {
        "default_qconfig" => super::default_qconfig(),
        "default_per_channel_qconfig" => super::default_per_channel_qconfig(),
        "default_dynamic_qconfig" => super::default_dynamic_qconfig(),
        "per_channel_dynamic_qconfig" => super::per_channel_dynamic_qconfig(),
        "float16_dynamic_qconfig" => float16_dynamic_qconfig(),
        "float16_static_qconfig" => float16_static_qconfig(),
        "default_qat_qconfig" => super::default_qat_qconfig(),
        "default_qat_qconfig_v2" => default_qat_qconfig_v2(),
        "default_debug_qconfig" => default_debug_qconfig(),
        "default_weight_only_qconfig" => default_weight_only_qconfig(),
        "default_activation_only_qconfig" => default_activation_only_qconfig(),
        "float_qparams_weight_only_qconfig" => float_qparams_weight_only_qconfig(),
        "float_qparams_weight_only_qconfig_4bit" => float_qparams_weight_only_qconfig_4bit(),
        "default_embedding_qat_qconfig" => default_embedding_qat_qconfig(),
        "default_embedding_qat_qconfig_4bit" => default_embedding_qat_qconfig_4bit(),
        "default_dynamic_qat_qconfig" => default_dynamic_qat_qconfig(),
        "default_reuse_input_qconfig" => default_reuse_input_qconfig(),
        _ => {
            return Err(QuantError::invalid(
                "qconfig_by_name",
                format!("no qconfig preset named {name:?}"),
            ))
        }
    })
}

/// The named observer and fake-quant presets by their torch names.
pub fn qspec_by_name(name: &str) -> Option<QSpec> {
    let o = |s: ObserverSpec| Some(QSpec::Observer(s));
    let f = |s: FakeQuantizeSpec| Some(QSpec::FakeQuant(s));
    match name {
        "default_observer" => o(default_observer()),
        "default_weight_observer" => o(default_weight_observer()),
        "default_per_channel_weight_observer" => o(default_per_channel_weight_observer()),
        "default_dynamic_quant_observer" => o(default_dynamic_quant_observer()),
        "default_histogram_observer" => o(default_histogram_observer()),
        "default_placeholder_observer" => o(default_placeholder_observer()),
        "default_debug_observer" => o(default_debug_observer()),
        "default_reuse_input_observer" => o(default_reuse_input_observer()),
        "default_float_qparams_observer" => o(default_float_qparams_observer()),
        "default_float_qparams_observer_4bit" => o(default_float_qparams_observer_4bit()),
        "weight_observer_range_neg_127_to_127" => o(weight_observer_range_neg_127_to_127()),
        "per_channel_weight_observer_range_neg_127_to_127" => {
            o(per_channel_weight_observer_range_neg_127_to_127())
        }
        "default_fixed_qparams_range_0to1_observer" | "default_affine_fixed_qparams_observer" => {
            o(default_fixed_qparams_range_0to1_observer())
        }
        "default_fixed_qparams_range_neg1to1_observer"
        | "default_symmetric_fixed_qparams_observer" => {
            o(default_fixed_qparams_range_neg1to1_observer())
        }
        "default_fake_quant" => f(default_fake_quant()),
        "default_weight_fake_quant" => f(default_weight_fake_quant()),
        "default_per_channel_weight_fake_quant" => f(default_per_channel_weight_fake_quant()),
        "default_fused_act_fake_quant" => f(default_fused_act_fake_quant()),
        "default_fused_wt_fake_quant" => f(default_fused_wt_fake_quant()),
        "default_fused_per_channel_wt_fake_quant" => f(default_fused_per_channel_wt_fake_quant()),
        "fused_wt_fake_quant_range_neg_127_to_127" => f(fused_wt_fake_quant_range_neg_127_to_127()),
        "fused_per_channel_wt_fake_quant_range_neg_127_to_127" => {
            f(fused_per_channel_wt_fake_quant_range_neg_127_to_127())
        }
        "default_histogram_fake_quant" => f(default_histogram_fake_quant()),
        "default_dynamic_fake_quant" => f(default_dynamic_fake_quant()),
        "default_embedding_fake_quant" => f(default_embedding_fake_quant()),
        "default_embedding_fake_quant_4bit" => f(default_embedding_fake_quant_4bit()),
        "default_fixed_qparams_range_0to1_fake_quant"
        | "default_affine_fixed_qparams_fake_quant" => {
            f(default_fixed_qparams_range_0to1_fake_quant())
        }
        "default_fixed_qparams_range_neg1to1_fake_quant"
        | "default_symmetric_fixed_qparams_fake_quant" => {
            f(default_fixed_qparams_range_neg1to1_fake_quant())
        }
        _ => None,
    }
}
