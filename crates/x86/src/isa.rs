//! The ISA paths of the x86 engine, detected at runtime and resolved once.

/// One code path of the engine, ordered from the most portable to the fastest.
/// Code that needs AVX-512F/BW/VL tests `isa >= Isa::Avx512`; AVX2 code tests
/// `isa >= Isa::Avx2` (every path above it has AVX2, FMA and F16C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, no SIMD assumptions (the same packing and pipeline).
    Scalar,
    /// AVX2 + FMA + F16C: exact int8 GEMM on int16-widened operands (`vpmaddwd`).
    Avx2,
    /// AVX2 + 256-bit `vpdpbusd`: AVX-VNNI (VEX), or AVX512-VNNI with AVX512VL
    /// (the same instruction, EVEX-encoded) on AVX-512 machines.
    AvxVnni,
    /// AVX-512F/BW/VL without VNNI: `vpmaddwd` on int16-widened operands, 512-bit.
    Avx512,
    /// AVX-512F/BW + AVX512-VNNI: `vpdpbusd`, exact u8×s8 into int32.
    Avx512Vnni,
}

impl Isa {
    /// Every path, slowest first.
    pub const ALL: [Isa; 5] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::AvxVnni,
        Isa::Avx512,
        Isa::Avx512Vnni,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    /// Whether this CPU can run the path (runtime detection).
    pub fn detected(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => {
                Isa::Avx2.detected() && (is_x86_feature_detected!("avxvnni") || avx512_vnni_vl())
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.detected()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => Isa::Avx512.detected() && is_x86_feature_detected!("avx512vnni"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest path this CPU has.
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|i| i.detected())
            .unwrap_or(Isa::Scalar)
    }

    /// The path selected by `RQUANT_ISA` (a ceiling): the fastest detected
    /// path not above it. Names: `scalar`, `avx2`, `avxvnni`, `avx512` /
    /// `avx512bw`, `avx512vnni` / `vnni`. Unknown names select the best path.
    pub fn resolve(requested: Option<&str>) -> Isa {
        let ceiling = match requested {
            Some("scalar") | Some("none") | Some("portable") => Isa::Scalar,
            Some("avx2") => Isa::Avx2,
            Some("avxvnni") | Some("avx_vnni") => Isa::AvxVnni,
            Some("avx512") | Some("avx512bw") | Some("avx512f") => Isa::Avx512,
            Some("avx512vnni") | Some("avx512_vnni") | Some("vnni") => Isa::Avx512Vnni,
            _ => return Isa::best(),
        };
        Isa::ALL
            .into_iter()
            .rev()
            .find(|&i| i <= ceiling && i.detected())
            .unwrap_or(Isa::Scalar)
    }
}

/// AVX512-VNNI with 256-bit vectors (AVX512VL): runs the EVEX twin of the AVX-VNNI kernel.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_vnni_vl() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

#[cfg(test)]
mod tests {
    use super::Isa;

    /// The fastest detected path at or below `c`.
    fn at_most(c: Isa) -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|&i| i <= c && i.detected())
            .unwrap()
    }

    #[test]
    fn requested_isa_is_a_ceiling() {
        let best = Isa::best();
        assert_eq!(Isa::resolve(Some("scalar")), Isa::Scalar);
        assert_eq!(Isa::resolve(Some("avx2")), at_most(Isa::Avx2));
        assert_eq!(Isa::resolve(Some("avxvnni")), at_most(Isa::AvxVnni));
        assert_eq!(Isa::resolve(Some("avx512")), at_most(Isa::Avx512));
        assert_eq!(Isa::resolve(Some("avx512vnni")), at_most(Isa::Avx512Vnni));
        assert_eq!(Isa::resolve(None), best);
        assert_eq!(Isa::resolve(Some("no-such-isa")), best);
        for name in ["scalar", "avx2", "avxvnni", "avx512", "avx512vnni"] {
            assert!(Isa::resolve(Some(name)).detected(), "{name}");
        }
    }
}
