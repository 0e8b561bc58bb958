//! A module with an output observer (after `prepare`) or fake quant (after
//! `prepare_qat`): PyTorch's `activation_post_process` forward hook.

use rquant_core::qconfig::{FakeQuantize, QConfig};
use rquant_core::Tensor;

use crate::error::Result;
use crate::module::{Layer, Module};
use crate::param::Param;
use crate::post::{ActPost, Observation};
use crate::value::Value;

/// A module whose outputs pass through `post`; `convert` replaces it by the
/// quantized module its [`type_name`](Layer::type_name) maps to. It reports
/// the wrapped module's type name, as PyTorch's observed modules keep their
/// class; its parameters and buffers are the wrapped module's.
#[derive(Debug, Clone)]
pub struct Observed {
    pub module: Module,
    pub post: ActPost,
    pub qconfig: QConfig,
}

impl Observed {
    pub fn new(module: Module, obs: Observation) -> Self {
        Observed {
            module,
            post: obs.post,
            qconfig: obs.qconfig,
        }
    }
    /// The wrapped module and what was observed.
    pub fn into_parts(self) -> (Module, Observation) {
        (
            self.module,
            Observation {
                post: self.post,
                qconfig: self.qconfig,
            },
        )
    }
}

impl Layer for Observed {
    fn type_name(&self) -> String {
        self.module.type_name()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let y = self.module.forward(x)?;
        Ok(Value::F(self.post.apply(y.float("observer")?)?))
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let g = self.post.backward(g)?;
        self.module.backward(g)
    }
    fn set_training(&mut self, on: bool) {
        self.module.train(on);
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        self.module.layer_mut().params_mut()
    }
    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.module.layer_mut().buffers_mut()
    }
    fn fake_quants_mut(&mut self) -> Vec<&mut FakeQuantize> {
        let mut v = self.module.layer_mut().fake_quants_mut();
        v.extend(self.post.fake_quant_mut());
        v
    }
    fn weight(&self) -> Option<Tensor> {
        self.module.layer().weight()
    }
    fn engine(&self) -> Option<&rquant_core::Engine> {
        self.module.engine()
    }
    fn to_engine(&mut self, engine: &rquant_core::Engine) -> Result<()> {
        self.module.layer_mut().to_engine(engine)
    }
    /// The wrapped module's own file entry, plus an `observed` attribute (the
    /// post-process and the qconfig) and `{path}.activation_post_process.*`
    /// tensors; loading wraps the module again (resumable calibration and QAT).
    fn save(&self, out: &mut crate::format::Saver) -> Result<serde_json::Value> {
        let mut j = self.module.layer().save(out)?;
        let post = out.within("activation_post_process", |o| {
            crate::resume::save_act_post(&self.post, o)
        })?;
        j["observed"] = serde_json::json!({
            "post": post,
            "qconfig": crate::resume::qconfig_to_json(&self.qconfig),
        });
        Ok(j)
    }
}
