//! [`Block`]: a user-written module in a few lines — named children plus a
//! forward function — that fusion, prepare, convert, `to_engine`, save and
//! load all reach. torchvision's quantizable ResNet BasicBlock:
//!
//! ```
//! use rquant_nn::{Block, BatchNorm2d, Conv2d, Module, ModuleRegistry, Result, Rng, Value};
//!
//! fn basic_block_forward(b: &mut Block, x: Value) -> Result<Value> {
//!     let identity = if b.has("downsample") { b.run("downsample", x.clone())? } else { x.clone() };
//!     let y = b.seq(&["conv1", "bn1", "relu"], x)?;
//!     // conv2, bn2, then add_relu(out, identity): one fused op once converted.
//!     b.conv_add(&["conv2", "bn2"], y, "add_relu", identity, true)
//! }
//!
//! fn basic_block(c: usize, rng: &mut Rng) -> Result<Module> {
//!     let conv = |rng: &mut Rng| Conv2d::new(c, c, [3, 3], rquant_nn::conv_params(1, 1, 1, 1), false, rng);
//!     Ok(Block::new("BasicBlock", basic_block_forward)
//!         .with("conv1", conv(rng)?).with("bn1", BatchNorm2d::new(c)).with("relu", Module::relu())
//!         .with("conv2", conv(rng)?).with("bn2", BatchNorm2d::new(c))
//!         .with("add_relu", Module::float_functional())
//!         .into())
//! }
//! # let mut rng = Rng(1);
//! # let _ = basic_block(4, &mut rng).unwrap();
//! // Loading a saved model rebuilds the block from its tag:
//! let registry = ModuleRegistry::default().with_block("BasicBlock", basic_block_forward);
//! ```

use std::fmt;
use std::sync::Arc;

use rquant_core::Tensor;
use serde_json::Value as J;

use crate::error::{NnError, Result};
use crate::format::Saver;
use crate::layers::Identity;
use crate::module::{Layer, Module};
use crate::quantized::{QConv2d, QFunctional};
use crate::registry::ModuleRegistry;
use crate::value::Value;

/// A block's forward: the block (for its children) and the input.
pub type BlockForward = Arc<dyn Fn(&mut Block, Value) -> Result<Value> + Send + Sync>;
/// A block's backward: the block and the output gradient.
pub type BlockBackward = Arc<dyn Fn(&mut Block, Tensor) -> Result<Tensor> + Send + Sync>;

/// A module made of named children and a forward function, saved under
/// its own type name (register the same forward with
/// [`ModuleRegistry::with_block`] to load it).
#[derive(Clone)]
pub struct Block {
    type_name: String,
    children: Vec<(String, Module)>,
    forward: BlockForward,
    backward: Option<BlockBackward>,
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct(&self.type_name);
        for (n, m) in &self.children {
            s.field(n, m);
        }
        s.finish()
    }
}

impl Block {
    /// A block of type `type_name` (its file tag) running `forward`.
    pub fn new(
        type_name: &str,
        forward: impl Fn(&mut Block, Value) -> Result<Value> + Send + Sync + 'static,
    ) -> Self {
        Block {
            type_name: type_name.to_string(),
            children: Vec::new(),
            forward: Arc::new(forward),
            backward: None,
        }
    }
    /// Add child `name` (a later child of the same name replaces it).
    pub fn with(mut self, name: &str, m: impl Into<Module>) -> Self {
        let m = m.into();
        match self.children.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = m,
            None => self.children.push((name.to_string(), m)),
        }
        self
    }
    /// A backward pass for training (QAT) through the block.
    pub fn with_backward(
        mut self,
        f: impl Fn(&mut Block, Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Self {
        self.backward = Some(Arc::new(f));
        self
    }
    pub fn has(&self, name: &str) -> bool {
        self.children.iter().any(|(n, _)| n == name)
    }
    /// Child `name` (an error naming the block when there is none).
    pub fn child(&mut self, name: &str) -> Result<&mut Module> {
        let ty = &self.type_name;
        self.children
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m)
            .ok_or_else(|| NnError::module(name, format!("{ty} has no child {name:?}")))
    }
    /// Forward `x` through child `name` (errors carry the child's name).
    pub fn run(&mut self, name: &str, x: Value) -> Result<Value> {
        self.child(name)?.forward(x).map_err(|e| e.within(name))
    }
    /// Forward `x` through the children `names`, in order.
    pub fn seq(&mut self, names: &[&str], x: Value) -> Result<Value> {
        names.iter().try_fold(x, |x, n| self.run(n, x))
    }
    /// `self.child(add)?.add(self.seq(names, x)?, identity)` (`relu`:
    /// `add_relu`): a conv, the modules fused into it, then the residual
    /// add, the tail of torchvision's ResNet blocks (`conv2`, `bn2`, then
    /// `add_relu(out, identity)`). Once converted, when `names` are a
    /// quantized conv followed only by Identities (its folded batch norm)
    /// and `add` is a QFunctional, the conv and the add run as one op,
    /// [`QConv2d::forward_add`], with the bits of the two ops; in float,
    /// observed or QAT form (or with any other child, such as a hook) the
    /// children run as written.
    pub fn conv_add(
        &mut self,
        names: &[&str],
        x: Value,
        add: &str,
        identity: Value,
        relu: bool,
    ) -> Result<Value> {
        if let Some((conv, q_add)) = self.conv_add_pair(names, add) {
            return conv
                .forward_add(x, identity, q_add, relu)
                .map_err(|e| e.within(names[0]));
        }
        let y = self.seq(names, x)?;
        let a = self.child(add)?;
        if relu {
            a.add_relu(y, identity)
        } else {
            a.add(y, identity)
        }
        .map_err(|e| e.within(add))
    }
    /// Whether [`conv_add`](Block::conv_add) with these children runs as
    /// one op (a quantized conv, Identities, a QFunctional:
    /// [`QConv2d::fuses_add`]; the residual then needs the conv output's
    /// shape, as a ResNet block's has).
    pub fn conv_add_fuses(&self, names: &[&str], add: &str) -> bool {
        self.conv_add_pair(names, add)
            .is_some_and(|(c, a)| c.fuses_add(a))
    }
    fn conv_add_pair(&self, names: &[&str], add: &str) -> Option<(&QConv2d, &QFunctional)> {
        let get = |n: &str| self.children.iter().find(|(c, _)| c == n).map(|(_, m)| m);
        let conv = get(names.first()?)?.downcast_ref::<QConv2d>()?;
        let folded = names[1..]
            .iter()
            .all(|n| get(n).is_some_and(|m| m.is::<Identity>()));
        let q_add = get(add)?.downcast_ref::<QFunctional>()?;
        folded.then_some((conv, q_add))
    }
    /// Backward `g` through child `name`.
    pub fn run_backward(&mut self, name: &str, g: Tensor) -> Result<Tensor> {
        self.child(name)?.backward(g).map_err(|e| e.within(name))
    }
    /// Backward `g` through the children `names`, last first.
    pub fn seq_backward(&mut self, names: &[&str], g: Tensor) -> Result<Tensor> {
        names
            .iter()
            .rev()
            .try_fold(g, |g, n| self.run_backward(n, g))
    }
    /// The children, in order.
    pub fn children_list(&self) -> &[(String, Module)] {
        &self.children
    }
}

impl Layer for Block {
    fn type_name(&self) -> String {
        self.type_name.clone()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        let f = self.forward.clone();
        f(self, x)
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        match self.backward.clone() {
            Some(f) => f(self, g),
            None => Err(NnError::module(
                "",
                format!("{} has no backward (Block::with_backward)", self.type_name),
            )),
        }
    }
    fn children(&self) -> Vec<(&str, &Module)> {
        self.children.iter().map(|(n, m)| (n.as_str(), m)).collect()
    }
    fn children_mut(&mut self) -> Vec<(&str, &mut Module)> {
        self.children
            .iter_mut()
            .map(|(n, m)| (n.as_str(), m))
            .collect()
    }
    fn save(&self, _: &mut Saver) -> Result<J> {
        Ok(J::Object(Default::default()))
    }
}

impl ModuleRegistry {
    /// Load blocks saved under `type_name` with this forward (the children
    /// come from the file).
    pub fn register_block(
        &mut self,
        type_name: &str,
        forward: impl Fn(&mut Block, Value) -> Result<Value> + Send + Sync + 'static,
    ) {
        let forward: BlockForward = Arc::new(forward);
        let tag = type_name.to_string();
        self.register(type_name, move |n| {
            Ok(Block {
                type_name: tag.clone(),
                children: n.take_children(),
                forward: forward.clone(),
                backward: None,
            }
            .into())
        });
    }
    /// [`register_block`](ModuleRegistry::register_block), by value.
    pub fn with_block(
        mut self,
        type_name: &str,
        forward: impl Fn(&mut Block, Value) -> Result<Value> + Send + Sync + 'static,
    ) -> Self {
        self.register_block(type_name, forward);
        self
    }
}
