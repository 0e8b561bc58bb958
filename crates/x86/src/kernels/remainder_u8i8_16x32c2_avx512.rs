//! The second pass of the two-pass AVX-512BW kernel: the remainder of a
//! split weight matrix against 16-row panels, added onto 16×32 tiles of the
//! first pass (`gemm_u8i8_8x32c4_avx512::run_tall` on the bounded weights).
//!
//! The instruction sequence of `remainder_u8i8_16x16c2_avx2` (16 rows in
//! the int16 lanes of a ymm register, `vpmaddubsw` + `vpaddw` per entry,
//! in-lane transposes into rows), over 32-column weight panels: the pass
//! is a few percent of the work, so the 256-bit form, which the AVX-512
//! path runs at full rate, is kept rather than a 32-row zmm variant with
//! twice the tile.

use rquant_core::gemm::{ALayout, Elem, PairMicro, Shape};

use super::remainder_u8i8_16x16c2_avx2 as avx2;

/// 16 rows × 32 columns, pairs of k.
pub const SHAPE: Shape = Shape {
    mr: 16,
    nr: 32,
    kr: 2,
    elem: Elem::I8,
    a: ALayout::Rows,
};

/// Panics unless `t` holds everything [`run`] reads and writes.
pub fn check(t: &PairMicro<'_>) {
    avx2::check(t, SHAPE.nr);
}

/// Adds the remainder's products of one 32-column weight panel onto the
/// tiles of `t.panels` row panels.
///
/// # Safety
/// AVX-512F/BW (which imply AVX2) must be available and `t` must pass [`check`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn run(t: PairMicro<'_>) {
    avx2::body::<32>(t)
}
