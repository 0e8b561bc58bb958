//! The int8 GEMM kernel table of each ARM path (one kernel each: every
//! layout is exact for every input). [`gemm_table`] hands a path its table
//! once the path is detected; nothing else reaches the NEON entries, so a
//! kernel's `run` (safe: it checks its operands, then enters the SIMD code)
//! only ever runs on a CPU with its features. The 8x8 entries run their
//! 1x8 / 4x8 siblings on one-row and 2–4-row tiles (batch-1 linear, M tails).
//!
//! | path | kernel | layout |
//! |---|---|---|
//! | `i8mm` | `gemm_u8i8_8x8c8_i8mm` (+ `1x8c8`, `4x8c8`) | `c8` |
//! | `dotprod` | `gemm_u8i8_8x8c4_dotprod` (+ `1x8c4`, `4x8c4`) | `c4`, activations − 128 |
//! | `neon` | `gemm_u8i8_8x8c1_neon` (+ `1x8c1`, `4x8c1`) | `c1` |
//! | `scalar` | `gemm_u8i8_8x8c1_scalar` | `c1` |

use rquant_core::gemm::{always_exact, Kernel, KernelSpec, Table};

use crate::isa::Isa;
use crate::kernels::gemm_u8i8_8x8c1_scalar as c1_scalar;
use crate::pack::{pack_a_c1, C1};

static SCALAR: [Kernel; 1] = [Kernel::new(KernelSpec {
    name: "gemm_u8i8_8x8c1_scalar",
    shape: C1,
    a_shift: 0,
    features: "",
    pack_a: pack_a_c1,
    exact: always_exact,
    run: c1_scalar::run,
    peak: None,
})];

/// The kernel table of `isa`. Call only for a detected path (the engine
/// value that calls it proved it).
pub(crate) fn gemm_table(isa: Isa) -> Table {
    debug_assert!(isa.detected());
    match isa {
        Isa::Scalar => Table::new(&SCALAR),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => Table::new(&simd::NEON),
        #[cfg(target_arch = "aarch64")]
        Isa::Dotprod => Table::new(&simd::DOTPROD),
        #[cfg(target_arch = "aarch64")]
        Isa::I8mm => Table::new(&simd::I8MM),
        #[cfg(not(target_arch = "aarch64"))]
        _ => unreachable!("only the scalar path exists off AArch64"),
    }
}

/// Every layout's table with its scalar twin as the kernel: the packing,
/// the driver and the zero-point corrections of the SIMD paths, testable on
/// any architecture.
#[cfg(test)]
pub(crate) fn twin_tables() -> [(Isa, Table); 4] {
    use crate::kernels::gemm_u8i8_8x8ck_scalar as ck;
    use crate::pack::{pack_a_u8, C4, C8};
    static TWINS: [Kernel; 3] = [
        Kernel::new(KernelSpec {
            name: "gemm_u8i8_8x8c1_scalar(twin)",
            shape: C1,
            a_shift: 0,
            features: "",
            pack_a: pack_a_c1,
            exact: always_exact,
            run: c1_scalar::run,
            peak: None,
        }),
        Kernel::new(KernelSpec {
            name: "gemm_u8i8_8x8c4_scalar(twin)",
            shape: C4,
            a_shift: 128,
            features: "",
            pack_a: pack_a_u8::<4, 0x80>,
            exact: always_exact,
            run: ck::run_c4,
            peak: None,
        }),
        Kernel::new(KernelSpec {
            name: "gemm_u8i8_8x8c8_scalar(twin)",
            shape: C8,
            a_shift: 0,
            features: "",
            pack_a: pack_a_u8::<8, 0>,
            exact: always_exact,
            run: ck::run_c8,
            peak: None,
        }),
    ];
    [
        (Isa::Scalar, Table::new(&SCALAR)),
        (Isa::Neon, Table::new(&TWINS[0..1])),
        (Isa::Dotprod, Table::new(&TWINS[1..2])),
        (Isa::I8mm, Table::new(&TWINS[2..3])),
    ]
}

#[cfg(target_arch = "aarch64")]
mod simd {
    use rquant_core::gemm::{always_exact, Kernel, KernelSpec, Micro};

    use crate::kernels::*;
    use crate::pack::{pack_a_c1, pack_a_u8, C1, C4, C8};

    // The wrappers: check the operands, then run the 1x8, 4x8 or 8x8 kernel
    // for the tile's rows.
    // SAFETY (every `unsafe` block below): the entry is only in the table of
    // a path whose detection proved the kernel's features (`gemm_table`),
    // and the operands fit the layout (asserted on the line before).

    fn run_c1(t: Micro<'_>) {
        t.assert_fits(&C1);
        // SAFETY: see above.
        unsafe {
            match t.mrows {
                1 => gemm_u8i8_1x8c1_neon::run(t),
                2..=4 => gemm_u8i8_4x8c1_neon::run(t),
                _ => gemm_u8i8_8x8c1_neon::run(t),
            }
        }
    }
    fn run_c4(t: Micro<'_>) {
        t.assert_fits(&C4);
        // SAFETY: see above.
        unsafe {
            match t.mrows {
                1 => gemm_u8i8_1x8c4_dotprod::run(t),
                2..=4 => gemm_u8i8_4x8c4_dotprod::run(t),
                _ => gemm_u8i8_8x8c4_dotprod::run(t),
            }
        }
    }
    fn run_c8(t: Micro<'_>) {
        t.assert_fits(&C8);
        // SAFETY: see above.
        unsafe {
            match t.mrows {
                1 => gemm_u8i8_1x8c8_i8mm::run(t),
                2..=4 => gemm_u8i8_4x8c8_i8mm::run(t),
                _ => gemm_u8i8_8x8c8_i8mm::run(t),
            }
        }
    }

    pub(super) static NEON: [Kernel; 1] = [Kernel::new(KernelSpec {
        name: "gemm_u8i8_8x8c1_neon",
        shape: C1,
        a_shift: 0,
        features: "neon",
        pack_a: pack_a_c1,
        exact: always_exact,
        run: run_c1,
        peak: None,
    })];
    pub(super) static DOTPROD: [Kernel; 1] = [Kernel::new(KernelSpec {
        name: "gemm_u8i8_8x8c4_dotprod",
        shape: C4,
        // `sdot` multiplies s8 × s8: activations are stored as x − 128.
        a_shift: 128,
        features: "neon,dotprod",
        pack_a: pack_a_u8::<4, 0x80>,
        exact: always_exact,
        run: run_c4,
        peak: None,
    })];
    pub(super) static I8MM: [Kernel; 1] = [Kernel::new(KernelSpec {
        name: "gemm_u8i8_8x8c8_i8mm",
        shape: C8,
        a_shift: 0,
        features: "neon,i8mm",
        pack_a: pack_a_u8::<8, 0>,
        exact: always_exact,
        run: run_c8,
        peak: None,
    })];
}
