//! Module mapping tables, as PyTorch's `DEFAULT_STATIC_QUANT_MODULE_MAPPINGS`,
//! `DEFAULT_QAT_MODULE_MAPPINGS` and `DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS`:
//! from a float module's type name to the function that builds its QAT,
//! static quantized or dynamic quantized replacement. `Mappings::default()`
//! holds rquant's modules; add or replace entries for your own and pass the
//! tables to [`crate::prepare_mapped`], [`crate::prepare_qat_mapped`],
//! [`crate::convert_mapped`] and [`crate::quantize_dynamic_mapped`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rquant_core::qconfig::QConfig;
use rquant_core::Engine;

use crate::error::Result;
use crate::module::Module;
use crate::post::Observation;

/// float (observed) → static quantized: the module, what `prepare` observed
/// at its output (None for rules with `observe == false`), and the engine
/// that packs its weights and runs it (`from_float`).
pub type FromFloat =
    Arc<dyn Fn(Module, Option<Observation>, &Engine) -> Result<Module> + Send + Sync>;

/// float → QAT: the module and its qconfig (PyTorch's `qat_cls.from_float`).
pub type ToQat = Arc<dyn Fn(Module, &QConfig) -> Result<Module> + Send + Sync>;

/// float → dynamic quantized.
pub type FromFloatDynamic = Arc<dyn Fn(Module, &DynamicConfig) -> Result<Module> + Send + Sync>;

/// One entry of the static table.
#[derive(Clone)]
pub struct StaticRule {
    /// `prepare` attaches an output observer (fake quant under QAT) to
    /// leaf modules of this type; `convert` converts those it observed.
    /// When false, `convert` converts every module of this type with no
    /// observation (DeQuantStub → DeQuantize).
    pub observe: bool,
    pub convert: FromFloat,
}

/// Weight dtype of dynamic quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynamicDType {
    QInt8,
    Float16,
}

/// What a dynamic conversion needs: the weight dtype, the qconfig whose
/// weight observer picks the int8 qparams, and the engine.
#[derive(Debug, Clone)]
pub struct DynamicConfig {
    pub dtype: DynamicDType,
    pub qconfig: QConfig,
    pub engine: Engine,
}

/// A fixed-qparams output: `range_0to1` (scale 1/256, zero point 0) or
/// `range_neg1to1` (2/256, 128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialAct {
    pub neg1to1: bool,
    pub qat_only: bool,
}

/// The three mapping tables, keyed by [`crate::module::Layer::type_name`],
/// and PyTorch's `DEFAULT_MODULE_TO_ACT_POST_PROCESS`.
#[derive(Clone)]
pub struct Mappings {
    pub static_quant: HashMap<String, StaticRule>,
    pub qat: HashMap<String, ToQat>,
    pub dynamic: HashMap<String, FromFloatDynamic>,
    /// Module types whose output gets a fixed-qparams fake quant under QAT
    /// (PyTorch's `DEFAULT_MODULE_TO_ACT_POST_PROCESS`, which applies in
    /// training mode, whether or not the type has a static mapping) and,
    /// unless `qat_only`, a fixed-qparams observer under PTQ (PyTorch's own
    /// entries are all QAT-only).
    pub special_act: HashMap<String, SpecialAct>,
    /// Custom modules (`prepare_custom_config_dict`'s
    /// `float_to_observed_custom_module_class`): float type → its observed
    /// form, swapped in by `prepare` / `prepare_qat` before observers are
    /// attached; the observed type's static rule converts it
    /// (`observed_to_quantized_custom_module_class`).
    pub custom: HashMap<String, ToQat>,
}

impl fmt::Debug for Mappings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn keys<V>(m: &HashMap<String, V>) -> Vec<&String> {
            let mut v: Vec<&String> = m.keys().collect();
            v.sort();
            v
        }
        f.debug_struct("Mappings")
            .field("static_quant", &keys(&self.static_quant))
            .field("qat", &keys(&self.qat))
            .field("dynamic", &keys(&self.dynamic))
            .field("special_act", &keys(&self.special_act))
            .field("custom", &keys(&self.custom))
            .finish()
    }
}

impl Mappings {
    /// Empty tables (`Mappings::default()` has rquant's modules).
    pub fn empty() -> Self {
        Mappings {
            static_quant: HashMap::new(),
            qat: HashMap::new(),
            dynamic: HashMap::new(),
            special_act: HashMap::new(),
            custom: HashMap::new(),
        }
    }
    /// A custom module: `prepare` replaces float type `from` by
    /// `to_observed(module, qconfig)` (a module of type `observed`), which
    /// it observes; `convert` turns that into `to_quantized(…)` (PyTorch's
    /// `from_observed`).
    pub fn with_custom_module(
        mut self,
        from: &str,
        observed: &str,
        to_observed: impl Fn(Module, &QConfig) -> Result<Module> + Send + Sync + 'static,
        to_quantized: impl Fn(Module, Option<Observation>, &Engine) -> Result<Module>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        self.custom.insert(from.to_string(), Arc::new(to_observed));
        self.set_static(observed, true, to_quantized);
        self
    }
    /// Map float type `from` to a static quantized module built by `f`;
    /// `prepare` observes `from`'s outputs.
    pub fn with_static(
        mut self,
        from: &str,
        f: impl Fn(Module, Option<Observation>, &Engine) -> Result<Module> + Send + Sync + 'static,
    ) -> Self {
        self.set_static(from, true, f);
        self
    }
    /// Insert or replace one static entry.
    pub fn set_static(
        &mut self,
        from: &str,
        observe: bool,
        f: impl Fn(Module, Option<Observation>, &Engine) -> Result<Module> + Send + Sync + 'static,
    ) {
        self.static_quant.insert(
            from.to_string(),
            StaticRule {
                observe,
                convert: Arc::new(f),
            },
        );
    }
    /// Map float type `from` to its QAT form built by `f`.
    pub fn with_qat(
        mut self,
        from: &str,
        f: impl Fn(Module, &QConfig) -> Result<Module> + Send + Sync + 'static,
    ) -> Self {
        self.qat.insert(from.to_string(), Arc::new(f));
        self
    }
    /// Map float type `from` to a dynamic quantized module built by `f`.
    pub fn with_dynamic(
        mut self,
        from: &str,
        f: impl Fn(Module, &DynamicConfig) -> Result<Module> + Send + Sync + 'static,
    ) -> Self {
        self.dynamic.insert(from.to_string(), Arc::new(f));
        self
    }
    /// Keep only the dynamic entries for these type names (PyTorch's
    /// `qconfig_spec={nn.Linear, …}`).
    pub fn dynamic_only(mut self, types: &[&str]) -> Self {
        self.dynamic.retain(|k, _| types.contains(&k.as_str()));
        self
    }
}
