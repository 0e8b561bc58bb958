//! rquant's own modules in the open set: the default loader registry and
//! the default mapping tables, each filled by the file that defines the
//! modules (`layers`, `rnn`, `quantized`).

use crate::mapping::Mappings;
use crate::module::Sequential;
use crate::registry::ModuleRegistry;

impl Default for ModuleRegistry {
    /// Every module rquant ships.
    fn default() -> Self {
        let mut r = ModuleRegistry::empty();
        r.register("Sequential", |n| {
            Ok(Sequential {
                children: n.take_children(),
            }
            .into())
        });
        crate::layers::register_loaders(&mut r);
        crate::rnn::register_loaders(&mut r);
        crate::quantized::register_loaders(&mut r);
        crate::channels_last::register_loaders(&mut r);
        crate::convs::register_loaders(&mut r);
        crate::acts::register_loaders(&mut r);
        crate::norms::register_loaders(&mut r);
        crate::pools::register_loaders(&mut r);
        crate::workflow::register_loaders(&mut r);
        crate::embeddings::register_loaders(&mut r);
        crate::movement::register_loaders(&mut r);
        r
    }
}

impl Default for Mappings {
    /// PyTorch's default static, QAT and dynamic mappings, for rquant's modules.
    fn default() -> Self {
        let mut m = Mappings::empty();
        crate::layers::register_mappings(&mut m);
        crate::quantized::register_mappings(&mut m);
        crate::convs::register_mappings(&mut m);
        crate::acts::register_mappings(&mut m);
        crate::norms::register_mappings(&mut m);
        crate::embeddings::register_mappings(&mut m);
        m
    }
}
