//! The int8 GEMM kernel table of each x86 path, preferred kernel first, the
//! last exact for every input. [`gemm_table`] hands a path its table once
//! the path is detected; nothing else reaches the entries, so a kernel's
//! `run` (a safe function: it checks its operands, then enters the SIMD
//! code) only ever runs on a CPU with its target features.
//!
//! | path | kernels |
//! |---|---|
//! | `avx512vnni` | `gemm_u8i8_8x32c4_avx512vnni` |
//! | `avx512` | `gemm_u8i8_8x32c4_avx512` (`vpmaddubsw`, under the pair bound), the two-pass `gemm_u8i8_8x32c4_avx512+remainder_u8i8_16x32c2_avx512`, then `gemm_u8i8_8x32c2_avx512` |
//! | `avxvnni` | `gemm_u8i8_6x16c4_avxvnni` (VEX, or its EVEX twin on AVX-512 VNNI CPUs) |
//! | `avx2` | `gemm_u8i8_6x16c4_avx2` (`vpmaddubsw`, exact only under the pair bound its check computes), the two-pass `gemm_u8i8_6x16c4_avx2+remainder_u8i8_16x16c2_avx2` (exact for every input: `vpmaddubsw` on the bounded part of a split weight, then its sparse remainder; packed only where the split pays), then `gemm_u8i8_6x16c2_avx2` |
//! | `scalar` | `gemm_u8i8_4x8c4_scalar` |

use rquant_core::gemm::{always_exact, Kernel, KernelSpec, Micro, Table};

use crate::isa::Isa;
use crate::kernels::gemm_u8i8_4x8c4_scalar as scalar;
use crate::pack::pack_rows_u8;

static SCALAR: [Kernel; 1] = [Kernel::new(KernelSpec {
    name: "gemm_u8i8_4x8c4_scalar",
    shape: scalar::SHAPE,
    a_shift: 0,
    features: "",
    pack_a: pack_rows_u8,
    exact: always_exact,
    run: scalar::run,
    peak: None,
})];

/// The kernel table of `isa`. Call only for a detected path (the engine
/// value that calls it proved it).
pub(crate) fn gemm_table(isa: Isa) -> Table {
    debug_assert!(isa.detected());
    match isa {
        Isa::Scalar => Table::new(&SCALAR),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Table::new(&simd::AVX2),
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => {
            if is_x86_feature_detected!("avxvnni") {
                Table::new(&simd::AVXVNNI)
            } else {
                Table::new(&simd::AVXVNNI_EVEX)
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Table::new(&simd::AVX512),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Table::new(&simd::AVX512VNNI),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("only the scalar path exists off x86_64"),
    }
}

/// Every target feature the kernels of every path use on an AVX-512 VNNI
/// CPU (where the AVX-VNNI path runs its EVEX twin), plus what the paths'
/// other code uses ([`crate::isa::Caps`]): the features `cargo xtask miri`
/// gives Miri's emulated CPU so that every path and kernel runs under it.
pub fn miri_target_features() -> Vec<&'static str> {
    let mut tables: Vec<&'static [Kernel]> = vec![&SCALAR];
    #[cfg(target_arch = "x86_64")]
    tables.extend([
        &simd::AVX2[..],
        &simd::AVXVNNI_EVEX[..],
        &simd::AVX512[..],
        &simd::AVX512VNNI[..],
    ]);
    let caps = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl"];
    let mut v: Vec<&'static str> = tables
        .iter()
        .flat_map(|t| t.iter())
        .flat_map(|k| k.features.split(','))
        .chain(caps)
        .filter(|f| !f.is_empty())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::*;
    use crate::kernels::{
        gemm_u8i8_6x16c2_avx2 as avx2_c2, gemm_u8i8_6x16c4_avx2 as avx2_c4,
        gemm_u8i8_6x16c4_avxvnni as vnni256, gemm_u8i8_8x32c2_avx512 as avx512_c2,
        gemm_u8i8_8x32c4_avx512 as avx512_c4, gemm_u8i8_8x32c4_avx512vnni as vnni512,
        remainder_u8i8_16x16c2_avx2 as rem_avx2, remainder_u8i8_16x32c2_avx512 as rem_avx512,
    };
    use crate::pack::{pack_pairs, pack_rows_i16, pairs_bytes, split_pairs};
    use crate::peak;
    use rquant_core::gemm::{PairMicro, PairPass};

    // The wrappers: check the operands, then call the target-feature code.
    // SAFETY (every `unsafe` block below): the entry is only in the table of
    // a path whose detection proved the kernel's features (`gemm_table`),
    // and the operands fit the kernel's shape (asserted on the line before).

    fn run_avx2_c2(t: Micro<'_>) {
        t.assert_fits(&avx2_c2::SHAPE);
        // SAFETY: see above.
        unsafe { avx2_c2::run(t) }
    }
    fn run_avx2_c4(t: Micro<'_>) {
        t.assert_fits(&avx2_c4::SHAPE);
        // SAFETY: see above; exactness is the driver's choice (`exact`).
        unsafe { avx2_c4::run(t) }
    }
    fn run_avx2_tall(t: Micro<'_>) {
        t.assert_fits(&avx2_c4::SHAPE_TALL);
        // SAFETY: see above; exact on the bounded weights of a split.
        unsafe { avx2_c4::run_tall(t) }
    }
    fn run_rem_avx2(t: PairMicro<'_>) {
        rem_avx2::check(&t, rem_avx2::SHAPE.nr);
        // SAFETY: see above (AVX2; the operands passed `check`).
        unsafe { rem_avx2::run(t) }
    }
    fn run_avx512_c4(t: Micro<'_>) {
        t.assert_fits(&avx512_c4::SHAPE);
        // SAFETY: see above; exactness is the driver's choice (`exact`).
        unsafe { avx512_c4::run(t) }
    }
    fn run_avx512_tall(t: Micro<'_>) {
        t.assert_fits(&avx512_c4::SHAPE_TALL);
        // SAFETY: see above; exact on the bounded weights of a split.
        unsafe { avx512_c4::run_tall(t) }
    }
    fn run_rem_avx512(t: PairMicro<'_>) {
        rem_avx512::check(&t);
        // SAFETY: see above (AVX-512F/BW; the operands passed `check`).
        unsafe { rem_avx512::run(t) }
    }
    fn run_vnni256(t: Micro<'_>) {
        t.assert_fits(&vnni256::SHAPE);
        // SAFETY: see above (AVX2 + AVX-VNNI).
        unsafe { vnni256::run(t) }
    }
    fn run_vnni256_evex(t: Micro<'_>) {
        t.assert_fits(&vnni256::SHAPE);
        // SAFETY: see above (AVX2 + AVX512-VNNI with VL).
        unsafe { vnni256::run_evex(t) }
    }
    fn run_avx512_c2(t: Micro<'_>) {
        t.assert_fits(&avx512_c2::SHAPE);
        // SAFETY: see above.
        unsafe { avx512_c2::run(t) }
    }
    fn run_vnni512(t: Micro<'_>) {
        t.assert_fits(&vnni512::SHAPE);
        // SAFETY: see above.
        unsafe { vnni512::run(t) }
    }

    const C2_AVX2: KernelSpec = KernelSpec {
        name: "gemm_u8i8_6x16c2_avx2",
        shape: avx2_c2::SHAPE,
        a_shift: 0,
        features: "avx2",
        pack_a: pack_rows_i16,
        exact: always_exact,
        run: run_avx2_c2,
        peak: Some(peak::madd256),
    };

    static PAIRS_AVX2: PairPass = PairPass {
        name: "remainder_u8i8_16x16c2_avx2",
        split: split_pairs,
        a_bytes: pairs_bytes,
        pack_a: pack_pairs,
        run: run_rem_avx2,
    };

    pub(super) static AVX2: [Kernel; 3] = [
        Kernel::new(KernelSpec {
            name: "gemm_u8i8_6x16c4_avx2",
            shape: avx2_c4::SHAPE,
            a_shift: 0,
            features: "avx2",
            pack_a: pack_rows_u8,
            exact: avx2_c4::exact,
            run: run_avx2_c4,
            peak: Some(peak::maddubs256),
        }),
        Kernel::two_pass(
            KernelSpec {
                name: "gemm_u8i8_6x16c4_avx2+remainder_u8i8_16x16c2_avx2",
                shape: avx2_c4::SHAPE_TALL,
                a_shift: 0,
                features: "avx2",
                pack_a: pack_rows_u8,
                exact: always_exact,
                run: run_avx2_tall,
                peak: Some(peak::maddubs256),
            },
            &PAIRS_AVX2,
        ),
        Kernel::new(C2_AVX2),
    ];

    pub(super) static AVXVNNI: [Kernel; 1] = [Kernel::new(KernelSpec {
        name: "gemm_u8i8_6x16c4_avxvnni",
        shape: vnni256::SHAPE,
        a_shift: 0,
        features: "avx2,avxvnni",
        pack_a: pack_rows_u8,
        exact: always_exact,
        run: run_vnni256,
        peak: Some(peak::vnni256),
    })];

    pub(super) static AVXVNNI_EVEX: [Kernel; 1] = [Kernel::new(KernelSpec {
        name: "gemm_u8i8_6x16c4_avxvnni(evex)",
        shape: vnni256::SHAPE,
        a_shift: 0,
        features: "avx2,avx512f,avx512vl,avx512vnni",
        pack_a: pack_rows_u8,
        exact: always_exact,
        run: run_vnni256_evex,
        peak: Some(peak::vnni256_evex),
    })];

    static PAIRS_AVX512: PairPass = PairPass {
        name: "remainder_u8i8_16x32c2_avx512",
        split: split_pairs,
        a_bytes: pairs_bytes,
        pack_a: pack_pairs,
        run: run_rem_avx512,
    };

    pub(super) static AVX512: [Kernel; 3] = [
        Kernel::new(KernelSpec {
            name: "gemm_u8i8_8x32c4_avx512",
            shape: avx512_c4::SHAPE,
            a_shift: 0,
            features: "avx512f,avx512bw",
            pack_a: pack_rows_u8,
            exact: avx2_c4::exact,
            run: run_avx512_c4,
            peak: Some(peak::maddubs512),
        }),
        Kernel::two_pass(
            KernelSpec {
                name: "gemm_u8i8_8x32c4_avx512+remainder_u8i8_16x32c2_avx512",
                shape: avx512_c4::SHAPE_TALL,
                a_shift: 0,
                features: "avx512f,avx512bw",
                pack_a: pack_rows_u8,
                exact: always_exact,
                run: run_avx512_tall,
                peak: Some(peak::maddubs512),
            },
            &PAIRS_AVX512,
        ),
        Kernel::new(KernelSpec {
            name: "gemm_u8i8_8x32c2_avx512",
            shape: avx512_c2::SHAPE,
            a_shift: 0,
            features: "avx512f,avx512bw",
            pack_a: pack_rows_i16,
            exact: always_exact,
            run: run_avx512_c2,
            peak: Some(peak::madd512),
        }),
    ];

    pub(super) static AVX512VNNI: [Kernel; 1] = [Kernel::new(KernelSpec {
        name: "gemm_u8i8_8x32c4_avx512vnni",
        shape: vnni512::SHAPE,
        a_shift: 0,
        features: "avx512f,avx512bw,avx512vnni",
        pack_a: pack_rows_u8,
        exact: always_exact,
        run: run_vnni512,
        peak: Some(peak::vnni512),
    })];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_detected_table_ends_with_a_full_range_kernel_and_has_unique_names() {
        let mut names = Vec::new();
        for isa in Isa::ALL.into_iter().filter(|i| i.detected()) {
            let t = gemm_table(isa);
            let last = t.kernels().last().unwrap();
            let w: Vec<i8> = (0..64)
                .map(|i| if i % 2 == 0 { 127 } else { -128 })
                .collect();
            assert_eq!((last.exact)(&w, 4, 16), 255, "{isa:?}");
            names.extend(t.kernels().iter().map(|k| k.name));
        }
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn vpmaddubsw_bound_is_exact_at_the_edge() {
        // One column with pairs (64, 65): |w0|+|w1| = 129.
        #[cfg(target_arch = "x86_64")]
        {
            use crate::kernels::gemm_u8i8_6x16c4_avx2::exact;
            let w: Vec<i8> = [64i8, 65, -64, -65, 1, 2, 0].to_vec();
            assert_eq!(exact(&w, 1, 7), 254); // 254·129 = 32766, 255·129 = 32895
                                              // Mixed signs never saturate: 255·127 and −255·128 fit int16.
            assert_eq!(exact(&[127, -128, 3], 1, 3), 255);
            assert_eq!(exact(&[-128, -128], 1, 2), 128); // 128·(−256) = −32768
            assert_eq!(exact(&[127, 127], 1, 2), 129); // 129·254 = 32766
                                                       // At the bound: 255·128 = 32640, −255·128 = −32640.
            assert_eq!(exact(&[64, 64, -64, -64, 127, 1, -128, 0], 1, 8), 255);
            assert_eq!(exact(&[1, 0, 0, 1], 2, 2), 255);
            assert_eq!(exact(&[0, 0], 1, 2), 255);
        }
        assert!(miri_target_features().contains(&"fma"));
    }
}
