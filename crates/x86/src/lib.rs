//! rquant's x86 engine ("x86", alias "fbgemm"): exact int8 kernels for AVX2,
//! AVX-512 and VNNI. Not implemented yet: [`engine`] reports the engine as
//! unavailable so the registry never offers it.

use std::sync::Arc;

use rquant_core::QuantEngine;

/// The x86 engine if this CPU and this build support it; None until the
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
