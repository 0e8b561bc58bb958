//! ISA paths of the ARM engine and their runtime detection. A path is a
//! name plus what it may use: its GEMM kernel table (`crate::table`) and
//! whether its other code may use NEON ([`Caps`]); code asks those, never
//! the order of the paths.

use std::sync::OnceLock;

/// The kernel families of the ARM engine. [`Isa::ALL`] lists them from the
/// most portable to the fastest; that order is only the preference used by
/// `RQUANT_ISA` (a ceiling) and the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// What a path's code outside the GEMM kernels may use (output stages,
/// element-wise ops, depthwise conv, fp16 linear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub neon: bool,
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

    pub fn caps(self) -> Caps {
        Caps {
            neon: self != Isa::Scalar,
        }
    }

    /// Whether this CPU can run the path (runtime detection, once).
    pub fn detected(self) -> bool {
        static HAS: OnceLock<[bool; 4]> = OnceLock::new();
        HAS.get_or_init(|| Isa::ALL.map(detect))[self.rank()]
    }

    /// Position in [`Isa::ALL`].
    fn rank(self) -> usize {
        Isa::ALL.iter().position(|&i| i == self).expect("listed")
    }
}

#[cfg(target_arch = "aarch64")]
fn detect(isa: Isa) -> bool {
    use std::arch::is_aarch64_feature_detected as has;
    match isa {
        Isa::Scalar => true,
        Isa::Neon => has!("neon"),
        Isa::Dotprod => has!("neon") && has!("dotprod"),
        Isa::I8mm => has!("neon") && has!("dotprod") && has!("i8mm"),
    }
}

#[cfg(not(target_arch = "aarch64"))]
fn detect(isa: Isa) -> bool {
    isa == Isa::Scalar
}

/// The best path this CPU supports.
pub fn detected() -> Isa {
    Isa::ALL
        .into_iter()
        .rev()
        .find(|i| i.detected())
        .unwrap_or(Isa::Scalar)
}

/// Whether this CPU can run `isa`.
pub fn supported(isa: Isa) -> bool {
    isa.detected()
}

/// The path the engine uses: the best detected one not after the path
/// `RQUANT_ISA` names (`scalar|neon|dotprod|i8mm`; other values, e.g. x86
/// names, are ignored).
pub fn resolved() -> Isa {
    match rquant_core::registry::requested_isa().and_then(|s| Isa::from_name(&s)) {
        Some(req) => Isa::ALL
            .into_iter()
            .rev()
            .find(|i| i.rank() <= req.rank() && i.detected())
            .unwrap_or(Isa::Scalar),
        None => detected(),
    }
}
