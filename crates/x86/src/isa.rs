//! The ISA paths of the x86 engine, detected at runtime and resolved once.

/// One code path of the engine, ordered from the most portable to the fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, no SIMD assumptions (the same packing and pipeline).
    Scalar,
    /// AVX2 + FMA + F16C: exact int8 GEMM on int16-widened operands (`vpmaddwd`).
    Avx2,
    /// AVX-512F/BW + AVX512-VNNI: `vpdpbusd`, exact u8×s8 into int32.
    Avx512Vnni,
}

impl Isa {
    /// Every path, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
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
            Isa::Avx512Vnni => {
                Isa::Avx2.detected()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
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

    /// The path selected by `RQUANT_ISA` (a ceiling), else the best one.
    /// Names: `scalar`, `avx2`, `avx512` / `avx512bw` (→ avx2, there is no
    /// plain AVX-512 kernel), `avx512vnni` / `vnni`. Unknown names select the best path.
    pub fn resolve(requested: Option<&str>) -> Isa {
        let best = Isa::best();
        let ceiling = match requested {
            Some("scalar") | Some("none") | Some("portable") => Isa::Scalar,
            Some("avx2") | Some("avx512") | Some("avx512bw") | Some("avx512f") => Isa::Avx2,
            Some("avx512vnni") | Some("avx512_vnni") | Some("vnni") => Isa::Avx512Vnni,
            _ => best,
        };
        ceiling.min(best)
    }
}

#[cfg(test)]
mod tests {
    use super::Isa;

    #[test]
    fn requested_isa_is_a_ceiling() {
        let best = Isa::best();
        assert_eq!(Isa::resolve(Some("scalar")), Isa::Scalar);
        assert_eq!(Isa::resolve(Some("avx2")), Isa::Avx2.min(best));
        assert_eq!(Isa::resolve(Some("avx512")), Isa::Avx2.min(best));
        assert_eq!(Isa::resolve(Some("avx512vnni")), Isa::Avx512Vnni.min(best));
        assert_eq!(Isa::resolve(None), best);
        assert_eq!(Isa::resolve(Some("no-such-isa")), best);
        assert!(Isa::resolve(None).detected());
    }
}
