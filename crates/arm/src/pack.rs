//! Activation (A) packing for the 8x8 GEMM microkernels; the weights (B)
//! are packed by `rquant_core::gemm::PackedB` in the same `[kb][col][KR]`
//! order (`[N/8][ku][8][KR]`).
//!
//! Every path uses an 8x8 output tile; the K chunk `KR` and the element type
//! depend on the path:
//! - `Scalar`/`Neon` ([`C1`]): i16 values, `A[k][row]`, `B[k][col]`: each
//!   product `x·w` (|·| ≤ 32 640) is exact in int32.
//! - `Dotprod` ([`C4`]): `A[kb][row][4]` holds `x ^ 0x80 = x − 128` as s8,
//!   `B[kb][col][4]` the raw s8 weights (for `sdot`, s8 × s8).
//! - `I8mm` ([`C8`]): `A[kb][row][8]` the raw u8 activations, `B[kb][col][8]`
//!   the raw s8 weights (for `usmmla`, whose register pairs are rows/columns
//!   2q and 2q+1).
//!
//! The exact accumulator is recovered in the output stage from the column
//! sums (taken when the weight is packed) and the row sums of A (here):
//! `Σ(x−xz)(w−wz) = Σ(x−s)·w + s·Σw − xz·Σw + K·xz·wz − wz·Σx`, with `s` the
//! layout's activation shift (128 for `c4`, else 0), all in wrapping int32
//! (exact modulo 2^32, like the reference's wrapping accumulation).

use rquant_core::gemm::{ALayout, APanel, Elem, Shape};

/// Output tile rows.
pub const MR: usize = 8;
/// Output tile columns (one packed weight panel).
pub const NR: usize = 8;

/// The `c1` layout (scalar, NEON `smlal`).
pub const C1: Shape = Shape {
    mr: MR,
    nr: NR,
    kr: 1,
    elem: Elem::I16,
    a: ALayout::Interleaved,
};
/// The `c4` layout (`sdot`).
pub const C4: Shape = Shape {
    kr: 4,
    elem: Elem::I8,
    ..C1
};
/// The `c8` layout (`usmmla`).
pub const C8: Shape = Shape {
    kr: 8,
    elem: Elem::I8,
    ..C1
};

/// Σ x of a row (raw u8; wrapping like everything else).
fn row_sum(row: &[u8]) -> i32 {
    row.iter().fold(0i32, |s, &v| s.wrapping_add(v as i32))
}

/// Pack up to MR rows for the `c1` layout: `dst[k][r] = x` as little-endian
/// i16; rows past the tile's end are 0.
pub fn pack_a_c1(p: &mut APanel<'_>) {
    p.dst.fill(0);
    p.scratch.resize(p.k, 0);
    for r in 0..p.nrows {
        (p.fill)(p.row0 + r, p.scratch);
        p.sums[r] = if p.need_sums { row_sum(p.scratch) } else { 0 };
        for (kk, &v) in p.scratch.iter().enumerate() {
            p.dst[(kk * MR + r) * 2] = v;
        }
    }
}

/// Pack up to MR rows for the `c4`/`c8` layouts: `dst[kb][r][t] = x ^ FLIP`
/// (0x80 for `c4`: x − 128 as s8; 0 for `c8`), zero padding (also in K).
/// (Off AArch64 only the tests' twin tables use it.)
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub fn pack_a_u8<const KR: usize, const FLIP: u8>(p: &mut APanel<'_>) {
    p.dst.fill(0);
    p.scratch.resize(p.k, 0);
    for r in 0..p.nrows {
        (p.fill)(p.row0 + r, p.scratch);
        p.sums[r] = if p.need_sums { row_sum(p.scratch) } else { 0 };
        // Chunk kb of the row goes to dst[(kb * MR + r) * KR..][..KR].
        for (kb, chunk) in p.scratch.chunks(KR).enumerate() {
            let d = &mut p.dst[(kb * MR + r) * KR..][..chunk.len()];
            for (o, &v) in d.iter_mut().zip(chunk) {
                *o = v ^ FLIP;
            }
        }
    }
}
