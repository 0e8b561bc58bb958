//! The ISA paths of the x86 engine, detected at runtime and resolved once.
//!
//! A path is a name plus what it may use: its int8 GEMM kernel table
//! (`crate::table`) and the vector width of everything else ([`Caps`]).
//! Code asks those capabilities, never the order of the paths.

/// One code path of the engine. [`Isa::ALL`] lists them from the most
/// portable to the fastest; that order is only the preference used by
/// `RQUANT_ISA` (a ceiling) and [`Isa::best`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// What a path's code outside the GEMM kernels may use: the output stages,
/// quantize / dequantize rows, depthwise conv, fp16 linear, min/max.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// AVX2, FMA and F16C (256-bit integer and float code).
    pub avx2: bool,
    /// AVX-512F/BW/VL (512-bit code).
    pub avx512: bool,
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

    /// The vector width the path's non-GEMM code uses. The AVX-VNNI path
    /// stays on 256-bit code even on an AVX-512 machine: it is the path of
    /// CPUs without AVX-512.
    pub fn caps(self) -> Caps {
        match self {
            Isa::Scalar => Caps {
                avx2: false,
                avx512: false,
            },
            Isa::Avx2 | Isa::AvxVnni => Caps {
                avx2: true,
                avx512: false,
            },
            Isa::Avx512 | Isa::Avx512Vnni => Caps {
                avx2: true,
                avx512: true,
            },
        }
    }

    /// Whether this CPU can run the path (runtime detection).
    pub fn detected(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2(),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => avx2() && (is_x86_feature_detected!("avxvnni") || avx512_vnni_vl()),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx2() && avx512(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => avx2() && avx512() && is_x86_feature_detected!("avx512vnni"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Position in [`Isa::ALL`] (the preference order).
    fn rank(self) -> usize {
        Isa::ALL.iter().position(|&i| i == self).expect("listed")
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
    /// path not after it in [`Isa::ALL`]. Names: `scalar`, `avx2`, `avxvnni`,
    /// `avx512` / `avx512bw`, `avx512vnni` / `vnni`. Unknown names select the
    /// best path.
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
            .find(|&i| i.rank() <= ceiling.rank() && i.detected())
            .unwrap_or(Isa::Scalar)
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
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

    /// The fastest detected path at or before `c` in `Isa::ALL`.
    fn at_most(c: Isa) -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|&i| i.rank() <= c.rank() && i.detected())
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

    #[test]
    fn a_detected_path_has_its_capabilities() {
        for isa in Isa::ALL.into_iter().filter(|i| i.detected()) {
            let c = isa.caps();
            if c.avx512 {
                assert!(c.avx2 && Isa::Avx512.detected(), "{isa:?}");
            }
            if c.avx2 {
                assert!(Isa::Avx2.detected(), "{isa:?}");
            }
        }
    }
}
