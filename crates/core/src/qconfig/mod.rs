//! QConfig presets (`torch.ao.quantization.qconfig`) as plain data, and the
//! [`FakeQuantize`] module used by QAT.
//!
//! A [`QConfig`] holds two [`QSpec`]s — descriptions, not instances; `.build()`
//! makes a fresh observer or fake-quant module each time, as torch's
//! `with_args` factories do.

use crate::dtype::QDType;
use crate::error::{QuantError, Result};
use crate::observer::{
    build_observer_kind, NoopObserver, Observer, ObserverConfig, ObserverDType, ObserverKind,
    PlaceholderObserver,
};
use crate::tensor::QScheme;

mod fake_quantize;
mod presets;

pub use fake_quantize::{fused_moving_avg_obs_fake_quant, FakeQuantState, FakeQuantize, Learnable};
pub use presets::*;

/// Description of one observer: class, arguments, and for placeholders the
/// (possibly float) dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct ObserverSpec {
    pub kind: ObserverKind,
    pub config: ObserverConfig,
    /// Only for `PlaceholderObserver` and `NoopObserver`: its dtype (float16
    /// for fp16 configs, float32 for weight-only activations).
    pub placeholder_dtype: Option<ObserverDType>,
}

impl ObserverSpec {
    /// A spec with torch's defaults for `kind`.
    pub fn new(kind: ObserverKind) -> Self {
        ObserverSpec {
            kind,
            config: kind.default_config(),
            placeholder_dtype: None,
        }
    }
    /// Change the arguments (like `Observer.with_args(...)`).
    pub fn with(mut self, f: impl FnOnce(&mut ObserverConfig)) -> Self {
        f(&mut self.config);
        self
    }
    /// `PlaceholderObserver.with_args(dtype, quant_min, quant_max, is_dynamic)`.
    pub fn placeholder(
        dtype: ObserverDType,
        quant_min: Option<i64>,
        quant_max: Option<i64>,
        is_dynamic: bool,
    ) -> Self {
        let mut config = ObserverConfig {
            quant_min,
            quant_max,
            is_dynamic,
            ..ObserverConfig::default()
        };
        if let Some(d) = dtype.quantized() {
            config.dtype = d;
        }
        ObserverSpec {
            kind: ObserverKind::Placeholder,
            config,
            placeholder_dtype: Some(dtype),
        }
    }
    /// `NoopObserver.with_args(dtype)`.
    pub fn noop(dtype: ObserverDType) -> Self {
        ObserverSpec {
            kind: ObserverKind::Noop,
            config: ObserverConfig::default(),
            placeholder_dtype: Some(dtype),
        }
    }
    /// `FixedQParamsObserver.with_args(scale, zero_point, dtype=quint8,
    /// quant_min=0, quant_max=255)`.
    pub fn fixed_qparams(scale: f32, zero_point: i64) -> Self {
        ObserverSpec::new(ObserverKind::FixedQParams).with(|c| {
            c.fixed_scale = scale;
            c.fixed_zero_point = zero_point;
            c.quant_min = Some(0);
            c.quant_max = Some(255);
        })
    }
    /// A fresh observer (it knows this spec: [`Observer::spec`]).
    pub fn build(&self) -> Result<Box<dyn Observer>> {
        Ok(Box::new(crate::observer::SpecObserver {
            spec: self.clone(),
            inner: self.build_plain()?,
        }))
    }
    fn build_plain(&self) -> Result<Box<dyn Observer>> {
        if self.kind == ObserverKind::Noop {
            return Ok(Box::new(NoopObserver {
                dtype: self.placeholder_dtype.unwrap_or(ObserverDType::Float16),
            }));
        }
        if self.kind == ObserverKind::Placeholder {
            let dtype = self
                .placeholder_dtype
                .unwrap_or(ObserverDType::Quantized(self.config.dtype));
            return Ok(Box::new(PlaceholderObserver::new(
                dtype,
                self.config.quant_min,
                self.config.quant_max,
                self.config.is_dynamic,
            )));
        }
        build_observer_kind(self.kind, self.config.clone())
    }
}

/// Which fake-quant module class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeQuantKind {
    /// `FakeQuantize`: observer, then the Python observer's qparams.
    FakeQuantize,
    /// `FusedMovingAvgObsFakeQuantize`: moving-average observer, qparams
    /// from the C++ chooser (`ChooseQuantizationParams`, double precision,
    /// `preserve_sparsity` for symmetric schemes) — `torch.fused_moving_avg_obs_fake_quant`.
    FusedMovingAvgObs,
    /// `FixedQParamsFakeQuantize`: the fixed scale and zero point of its
    /// `FixedQParamsObserver` (sigmoid, tanh, hardsigmoid, softmax outputs).
    FixedQParams,
    /// `_LearnableFakeQuantize` (LSQ): scale and zero point are parameters,
    /// set by the observer while `static_enabled`, learned while
    /// `learning_enabled` (`torch._fake_quantize_learnable_*`).
    Learnable,
}

impl FakeQuantKind {
    /// The torch class name.
    pub fn name(self) -> &'static str {
        match self {
            FakeQuantKind::FakeQuantize => "FakeQuantize",
            FakeQuantKind::FusedMovingAvgObs => "FusedMovingAvgObsFakeQuantize",
            FakeQuantKind::FixedQParams => "FixedQParamsFakeQuantize",
            FakeQuantKind::Learnable => "_LearnableFakeQuantize",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        let s = s.rsplit('.').next().unwrap_or(s);
        Some(match s {
            "FakeQuantize" => FakeQuantKind::FakeQuantize,
            "FusedMovingAvgObsFakeQuantize" => FakeQuantKind::FusedMovingAvgObs,
            "FixedQParamsFakeQuantize" => FakeQuantKind::FixedQParams,
            "_LearnableFakeQuantize" | "LearnableFakeQuantize" => FakeQuantKind::Learnable,
            _ => return None,
        })
    }
}

/// The constructor arguments of `_LearnableFakeQuantize` beyond its
/// observer: initial `scale` and `zero_point`, `channel_len` (per-channel
/// schemes: the number of channels) and `use_grad_scaling`. Other fake
/// quants ignore it.
#[derive(Debug, Clone, PartialEq)]
pub struct LsqSpec {
    pub scale: f32,
    pub zero_point: f32,
    pub channel_len: Option<usize>,
    pub use_grad_scaling: bool,
}

impl Default for LsqSpec {
    fn default() -> Self {
        LsqSpec {
            scale: 1.0,
            zero_point: 0.0,
            channel_len: None,
            use_grad_scaling: false,
        }
    }
}

/// Description of a fake-quant module: class plus its observer (whose config
/// carries quant_min/quant_max/reduce_range/dtype/qscheme).
#[derive(Debug, Clone, PartialEq)]
pub struct FakeQuantizeSpec {
    pub kind: FakeQuantKind,
    pub observer: ObserverSpec,
    /// `_LearnableFakeQuantize`'s own arguments (ignored by the other kinds).
    pub lsq: LsqSpec,
}

impl FakeQuantizeSpec {
    /// A spec of `kind` around `observer` (LSQ arguments at their defaults).
    pub fn new(kind: FakeQuantKind, observer: ObserverSpec) -> Self {
        FakeQuantizeSpec {
            kind,
            observer,
            lsq: LsqSpec::default(),
        }
    }
    pub fn build(&self) -> Result<FakeQuantize> {
        FakeQuantize::from_spec(self)
    }
}

/// What a qconfig slot creates.
#[derive(Debug, Clone, PartialEq)]
pub enum QSpec {
    Observer(ObserverSpec),
    FakeQuant(FakeQuantizeSpec),
}

impl QSpec {
    /// The observer spec (for a fake quant, its inner observer).
    pub fn observer_spec(&self) -> &ObserverSpec {
        match self {
            QSpec::Observer(o) => o,
            QSpec::FakeQuant(f) => &f.observer,
        }
    }
    /// A fresh observer (for a fake quant spec: its observer alone).
    pub fn build_observer(&self) -> Result<Box<dyn Observer>> {
        self.observer_spec().build()
    }
    /// A fresh fake-quant module; errors for plain observer specs.
    pub fn build_fake_quant(&self) -> Result<FakeQuantize> {
        match self {
            QSpec::FakeQuant(f) => f.build(),
            QSpec::Observer(o) => Err(QuantError::invalid(
                "QSpec::build_fake_quant",
                format!("{} is an observer, not a fake quantize module", o.kind),
            )),
        }
    }
}

/// `QConfig(activation, weight)`.
#[derive(Debug, Clone, PartialEq)]
pub struct QConfig {
    pub activation: QSpec,
    pub weight: QSpec,
}

fn obs(kind: ObserverKind, f: impl FnOnce(&mut ObserverConfig)) -> ObserverSpec {
    ObserverSpec::new(kind).with(f)
}

/// `default_observer`: MinMaxObserver(quant_min=0, quant_max=127).
pub fn default_observer() -> ObserverSpec {
    obs(ObserverKind::MinMax, |c| {
        c.quant_min = Some(0);
        c.quant_max = Some(127);
    })
}
/// `default_weight_observer`: MinMaxObserver(qint8, per_tensor_symmetric).
pub fn default_weight_observer() -> ObserverSpec {
    obs(ObserverKind::MinMax, |c| {
        c.dtype = QDType::QInt8;
        c.qscheme = QScheme::PerTensorSymmetric;
    })
}
/// `default_per_channel_weight_observer`: PerChannelMinMax(qint8, per_channel_symmetric).
pub fn default_per_channel_weight_observer() -> ObserverSpec {
    obs(ObserverKind::PerChannelMinMax, |c| {
        c.dtype = QDType::QInt8;
        c.qscheme = QScheme::PerChannelSymmetric;
    })
}
/// `default_dynamic_quant_observer`: Placeholder(quint8, 0..255, is_dynamic).
pub fn default_dynamic_quant_observer() -> ObserverSpec {
    ObserverSpec::placeholder(
        ObserverDType::Quantized(QDType::QUInt8),
        Some(0),
        Some(255),
        true,
    )
}
/// `HistogramObserver.with_args(reduce_range=...)`.
pub fn histogram_observer(reduce_range: bool) -> ObserverSpec {
    obs(ObserverKind::Histogram, |c| c.reduce_range = reduce_range)
}

fn fq(kind: FakeQuantKind, observer: ObserverSpec) -> QSpec {
    QSpec::FakeQuant(FakeQuantizeSpec::new(kind, observer))
}

fn act_fq(kind: FakeQuantKind, reduce_range: bool) -> QSpec {
    fq(
        kind,
        obs(ObserverKind::MovingAverageMinMax, |c| {
            c.quant_min = Some(0);
            c.quant_max = Some(255);
            c.reduce_range = reduce_range;
        }),
    )
}

fn weight_fq(kind: FakeQuantKind, per_channel: bool) -> QSpec {
    let k = if per_channel {
        ObserverKind::MovingAveragePerChannelMinMax
    } else {
        ObserverKind::MovingAverageMinMax
    };
    fq(
        kind,
        obs(k, |c| {
            c.quant_min = Some(-128);
            c.quant_max = Some(127);
            c.dtype = QDType::QInt8;
            c.qscheme = if per_channel {
                QScheme::PerChannelSymmetric
            } else {
                QScheme::PerTensorSymmetric
            };
        }),
    )
}

/// `default_qconfig`: MinMax 0..127 activations, per-tensor symmetric qint8 weights.
pub fn default_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::Observer(default_observer()),
        weight: QSpec::Observer(default_weight_observer()),
    }
}
/// `default_per_channel_qconfig`.
pub fn default_per_channel_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::Observer(default_observer()),
        weight: QSpec::Observer(default_per_channel_weight_observer()),
    }
}
/// `default_dynamic_qconfig`.
pub fn default_dynamic_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::Observer(default_dynamic_quant_observer()),
        weight: QSpec::Observer(default_weight_observer()),
    }
}
/// `per_channel_dynamic_qconfig`.
pub fn per_channel_dynamic_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::Observer(default_dynamic_quant_observer()),
        weight: QSpec::Observer(default_per_channel_weight_observer()),
    }
}
/// `float16_dynamic_qconfig`: fp16 placeholders, activation dynamic.
pub fn float16_dynamic_qconfig() -> QConfig {
    QConfig {
        activation: QSpec::Observer(ObserverSpec::placeholder(
            ObserverDType::Float16,
            None,
            None,
            true,
        )),
        weight: QSpec::Observer(ObserverSpec::placeholder(
            ObserverDType::Float16,
            None,
            None,
            false,
        )),
    }
}
/// `default_qat_qconfig`: FakeQuantize(MovingAvg 0..255 reduce_range) + per-tensor weight FQ.
pub fn default_qat_qconfig() -> QConfig {
    QConfig {
        activation: act_fq(FakeQuantKind::FakeQuantize, true),
        weight: weight_fq(FakeQuantKind::FakeQuantize, false),
    }
}

const BACKENDS: [&str; 4] = ["fbgemm", "x86", "qnnpack", "onednn"];

fn check_backend(op: &'static str, backend: &str) -> Result<()> {
    if !BACKENDS.contains(&backend) {
        return Err(QuantError::invalid(
            op,
            format!("backend {backend:?} not supported; backend must be one of {BACKENDS:?}"),
        ));
    }
    Ok(())
}

/// `get_default_qconfig(backend)` (version 0).
pub fn get_default_qconfig(backend: &str) -> Result<QConfig> {
    check_backend("get_default_qconfig", backend)?;
    Ok(match backend {
        "fbgemm" | "x86" => QConfig {
            activation: QSpec::Observer(histogram_observer(true)),
            weight: QSpec::Observer(default_per_channel_weight_observer()),
        },
        "qnnpack" => QConfig {
            activation: QSpec::Observer(histogram_observer(false)),
            weight: QSpec::Observer(default_weight_observer()),
        },
        _ => QConfig {
            activation: QSpec::Observer(histogram_observer(false)),
            weight: QSpec::Observer(default_per_channel_weight_observer()),
        },
    })
}

/// `get_default_qat_qconfig(backend)` (version 1: fused fake quants).
pub fn get_default_qat_qconfig(backend: &str) -> Result<QConfig> {
    get_default_qat_qconfig_version(backend, 1)
}

/// `get_default_qat_qconfig(backend, version)`; version 0 uses `FakeQuantize`,
/// version 1 `FusedMovingAvgObsFakeQuantize`.
pub fn get_default_qat_qconfig_version(backend: &str, version: u32) -> Result<QConfig> {
    const OP: &str = "get_default_qat_qconfig";
    check_backend(OP, backend)?;
    let kind = match version {
        0 => FakeQuantKind::FakeQuantize,
        1 => FakeQuantKind::FusedMovingAvgObs,
        v => {
            return Err(QuantError::invalid(
                OP,
                format!("version {v} is not supported; use 0 or 1"),
            ))
        }
    };
    let (reduce, per_channel) = match backend {
        "fbgemm" | "x86" => (true, true),
        "qnnpack" => (false, false),
        _ => (false, true),
    };
    Ok(QConfig {
        activation: act_fq(kind, reduce),
        weight: weight_fq(kind, per_channel),
    })
}

/// `fbgemm::ChooseQuantizationParams(min, max, qmin, qmax, preserve_sparsity,
/// force_scale_power_of_two=false)` as called by the fused fake quant:
/// returns (f32 scale, zero point).
pub fn choose_qparams_fused(
    min: f32,
    max: f32,
    qmin: i64,
    qmax: i64,
    preserve_sparsity: bool,
) -> Result<(f32, i64)> {
    const OP: &str = "fused_moving_avg_obs_fake_quant";
    if min > max || min.is_nan() || max.is_nan() {
        return Err(QuantError::invalid(
            OP,
            format!("min {min} should be <= max {max}"),
        ));
    }
    if qmin >= qmax {
        return Err(QuantError::invalid(
            OP,
            format!("qmin {qmin} should be < qmax {qmax}"),
        ));
    }
    let (qmin, qmax) = (qmin as i32, qmax as i32);
    let (mut min, mut max) = (min, max);
    if min < 0.0 && max > 0.0 && preserve_sparsity {
        let sym_qmin = -((qmax - qmin) / 2 + 1);
        let sym_qmax = (qmax - qmin) / 2;
        let max_scale = (min / sym_qmin as f32)
            .abs()
            .max((max / sym_qmax as f32).abs()) as f64;
        min = (max_scale * sym_qmin as f64) as f32;
        max = (max_scale * sym_qmax as f64) as f32;
    }
    min = min.min(0.0);
    max = max.max(0.0);
    let mut scale = (max as f64 - min as f64) / (qmax - qmin) as f64;
    if scale as f32 == 0.0 || (1.0f32 / scale as f32).is_infinite() {
        scale = 0.1;
    }
    const SMALL: f32 = 6.1e-5;
    if scale < SMALL as f64 {
        let org = scale as f32;
        scale = SMALL as f64;
        if min == 0.0 {
            max = SMALL * (qmax - qmin) as f32;
        } else if max == 0.0 {
            min = -SMALL * (qmax - qmin) as f32;
        } else {
            let amp = SMALL / org;
            min *= amp;
            max *= amp;
        }
    }
    let zp_min = qmin as f64 - min as f64 / scale;
    let zp_max = qmax as f64 - max as f64 / scale;
    let err_min = (qmin as f64).abs() - (min as f64 / scale).abs();
    let err_max = (qmax as f64).abs() - (max as f64 / scale).abs();
    let mut initial = if err_min < err_max { zp_min } else { zp_max };
    if min < 0.0 && max > 0.0 && preserve_sparsity {
        initial = (qmin + qmax) as f64 / 2.0;
    }
    let zp = if initial < qmin as f64 {
        qmin as i64
    } else if initial > qmax as f64 {
        qmax as i64
    } else {
        initial.round_ties_even() as i64
    };
    Ok((scale as f32, zp))
}

#[cfg(test)]
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    #[test]
    fn presets_match_torch() {
        let q = get_default_qconfig("x86").unwrap();
        let a = q.activation.observer_spec();
        assert_eq!(a.kind, ObserverKind::Histogram);
        assert!(a.config.reduce_range);
        assert_eq!(
            q.weight.observer_spec().config.qscheme,
            QScheme::PerChannelSymmetric
        );
        let q = get_default_qconfig("qnnpack").unwrap();
        assert!(!q.activation.observer_spec().config.reduce_range);
        assert_eq!(q.weight.observer_spec().kind, ObserverKind::MinMax);
        assert!(get_default_qconfig("tpu").is_err());
        assert!(get_default_qat_qconfig("nope").is_err());
        let d = default_qconfig();
        let o = d.activation.build_observer().unwrap();
        assert_eq!(o.quant_range(), Some((0, 127)));
        let f16 = float16_dynamic_qconfig();
        let o = f16.activation.build_observer().unwrap();
        assert_eq!(o.dtype(), ObserverDType::Float16);
        assert!(o.is_dynamic());
        assert!(o.calculate_qparams().is_err());
        let dynq = default_dynamic_qconfig()
            .activation
            .build_observer()
            .unwrap();
        assert_eq!(dynq.quant_range(), Some((0, 255)));
        assert!(dynq.is_dynamic());
        let pc = per_channel_dynamic_qconfig();
        assert_eq!(
            pc.weight.observer_spec().kind,
            ObserverKind::PerChannelMinMax
        );
    }

    #[test]
    fn qat_presets_ranges() {
        let q = get_default_qat_qconfig("x86").unwrap();
        let a = q.activation.build_fake_quant().unwrap();
        assert_eq!(a.kind(), FakeQuantKind::FusedMovingAvgObs);
        assert_eq!(a.quant_range(), (0, 127));
        let w = q.weight.build_fake_quant().unwrap();
        assert_eq!(w.quant_range(), (-128, 127));
        assert_eq!(w.qscheme(), QScheme::PerChannelSymmetric);
        let q = get_default_qat_qconfig("qnnpack").unwrap();
        assert_eq!(
            q.activation.build_fake_quant().unwrap().quant_range(),
            (0, 255)
        );
        assert_eq!(
            q.weight.build_fake_quant().unwrap().qscheme(),
            QScheme::PerTensorSymmetric
        );
        let q0 = get_default_qat_qconfig_version("fbgemm", 0).unwrap();
        assert_eq!(
            q0.activation.build_fake_quant().unwrap().kind(),
            FakeQuantKind::FakeQuantize
        );
        assert!(get_default_qat_qconfig_version("x86", 2).is_err());
        assert!(QSpec::Observer(default_observer())
            .build_fake_quant()
            .is_err());
    }

    #[test]
    fn fake_quantize_module_forward() {
        // torch: fq = FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0,
        // quant_max=255, reduce_range=True); fq(torch.tensor([-1.,0.,0.5,2.]))
        // -> scale 0.023622047156095505, zp 42,
        //    y [-0.99212598, 0., 0.49606299, 2.00787401]
        let mut fq = default_qat_qconfig().activation.build_fake_quant().unwrap();
        let x = Tensor::new([4], vec![-1.0, 0.0, 0.5, 2.0]).unwrap();
        let out = fq.forward(&x).unwrap();
        assert_eq!(fq.scale(), &[0.023622047156095505f32]);
        assert_eq!(fq.zero_point(), &[42]);
        assert_eq!(
            out.y.data(),
            &[
                -0.992_125_988_006_591_8f32,
                0.0,
                0.496_062_994_003_295_9,
                2.007_874_011_993_408
            ]
        );
        fq.fake_quant_enabled = false;
        let out = fq.forward(&x).unwrap();
        assert_eq!(out.y.data(), x.data());
        assert!(out.mask.iter().all(|&m| m));
    }

    #[test]
    fn fused_fake_quant_matches_torch() {
        // torch: f = default_fused_act_fake_quant(); f(tensor([-1,0,0.5,2]));
        // y = f(tensor([-3,0.25,1,4])) -> min -1.02, max 2.02 (c = 0.01),
        // scale 0.011921568773686886, zp 86,
        // y [-1.0252549648284912, 0.2503529489040375, 1.00141179561615, 2.0147452354431152]
        let spec = FakeQuantizeSpec::new(
            FakeQuantKind::FusedMovingAvgObs,
            ObserverSpec::new(ObserverKind::MovingAverageMinMax).with(|c| {
                c.quant_min = Some(0);
                c.quant_max = Some(255);
            }),
        );
        let mut f = spec.build().unwrap();
        f.forward(&Tensor::new([4], vec![-1.0, 0.0, 0.5, 2.0]).unwrap())
            .unwrap();
        let out = f
            .forward(&Tensor::new([4], vec![-3.0, 0.25, 1.0, 4.0]).unwrap())
            .unwrap();
        assert_eq!(f.observer().min_val(), &[-1.019_999_980_926_513_7f32]);
        assert_eq!(f.observer().max_val(), &[2.019_999_980_926_513_7f32]);
        assert_eq!(f.scale(), &[0.011_921_568_773_686_886f32]);
        assert_eq!(f.zero_point(), &[86]);
        assert_eq!(
            out.y.data(),
            &[
                -1.025_254_964_828_491_2f32,
                0.250_352_948_904_037_5,
                1.001_411_795_616_15,
                2.014_745_235_443_115_2
            ]
        );
    }

    #[test]
    fn fused_requires_moving_average() {
        let spec = FakeQuantizeSpec::new(
            FakeQuantKind::FusedMovingAvgObs,
            ObserverSpec::new(ObserverKind::MinMax),
        );
        assert!(spec.build().is_err());
        let spec = FakeQuantizeSpec::new(
            FakeQuantKind::FakeQuantize,
            ObserverSpec::new(ObserverKind::MinMax).with(|c| {
                c.quant_min = Some(-5);
                c.quant_max = Some(255);
            }),
        );
        assert!(spec.build().is_err());
    }
}
