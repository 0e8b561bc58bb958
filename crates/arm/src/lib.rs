//! rquant's ARM engine ("qnnpack"): NEON, dotprod and i8mm kernels.
//! Not implemented yet: [`engine`] reports the engine as unavailable.

use std::sync::Arc;

use rquant_core::QuantEngine;

/// The ARM engine if this CPU and this build support it; None until the
/// engine's kernels land.
pub fn engine() -> Option<Arc<dyn QuantEngine>> {
    None
}

/// The engine once per ISA path this CPU has (for conformance); empty until implemented.
pub fn all_paths() -> Vec<Arc<dyn QuantEngine>> {
    engine().into_iter().collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_unsupported_until_implemented() {
        assert!(super::engine().is_none());
    }
}
