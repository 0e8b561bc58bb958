//! ISA paths of the ARM engine and their runtime detection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The kernel families of the ARM engine, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable scalar code (any architecture): the same packing as `Neon`.
    Scalar,
    /// Baseline AArch64 Advanced SIMD: widening 16-bit multiply-accumulate.
    Neon,
    /// ARMv8.2 dot product (`sdot`).
    Dotprod,
    /// ARMv8.6 int8 matrix multiply (`usmmla`).
    I8mm,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Neon, Isa::Dotprod, Isa::I8mm];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Neon => "neon",
            Isa::Dotprod => "dotprod",
            Isa::I8mm => "i8mm",
        }
    }

    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The best path this CPU supports, detected once.
pub fn detected() -> Isa {
    static BEST: OnceLock<Isa> = OnceLock::new();
    *BEST.get_or_init(detect)
}

#[cfg(target_arch = "aarch64")]
fn detect() -> Isa {
    use std::arch::is_aarch64_feature_detected as has;
    if has!("neon") && has!("dotprod") && has!("i8mm") {
        Isa::I8mm
    } else if has!("neon") && has!("dotprod") {
        Isa::Dotprod
    } else if has!("neon") {
        Isa::Neon
    } else {
        Isa::Scalar
    }
}

#[cfg(not(target_arch = "aarch64"))]
fn detect() -> Isa {
    Isa::Scalar
}

/// Whether this CPU can run `isa` (every path below the detected one can).
pub fn supported(isa: Isa) -> bool {
    isa <= detected()
}

/// The path the engine uses: the detected one, capped by `RQUANT_ISA`
/// (`scalar|neon|dotprod|i8mm`; other values, e.g. x86 names, are ignored).
pub fn resolved() -> Isa {
    let best = detected();
    match rquant_core::registry::requested_isa().and_then(|s| Isa::from_name(&s)) {
        Some(req) => req.min(best),
        None => best,
    }
}

static CALLS: [AtomicUsize; 4] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];

/// Count one GEMM tile task run with `isa`'s microkernel (for tests that must
/// prove a path really ran).
pub(crate) fn count_call(isa: Isa) {
    CALLS[isa.index()].fetch_add(1, Ordering::Relaxed);
}

/// How many GEMM tile tasks ran `isa`'s microkernel in this process.
pub fn kernel_calls(isa: Isa) -> usize {
    CALLS[isa.index()].load(Ordering::Relaxed)
}
