//! Portable int8 GEMM microkernel, 4×8 tile, k-units of 4 u8/s8.

use rquant_core::gemm::{ALayout, Elem, Micro, Shape};

/// The tile and operand layout ([`crate::pack`] packs activations for it).
pub const SHAPE: Shape = Shape {
    mr: 4,
    nr: 8,
    kr: 4,
    elem: Elem::I8,
    a: ALayout::Rows,
};
const MR: usize = SHAPE.mr;
const NR: usize = SHAPE.nr;

/// Raw `Σ x·w` of `t.mrows` activation rows (`t.lda` bytes apart) and an
/// 8-column weight panel, `t.ku` k-units each, in wrapping int32 (`t.init`:
/// from zero, else onto the tile already in `t.c`). Panics unless `t` fits
/// [`SHAPE`].
pub fn run(t: Micro<'_>) {
    t.assert_fits(&SHAPE);
    let (mrows, ku, a, lda, b, c, init) = (t.mrows, t.ku, t.a, t.lda, t.b, t.c, t.init);
    let mut acc = [[0i32; NR]; MR];
    if !init {
        for (r, accr) in acc.iter_mut().enumerate().take(mrows) {
            accr.copy_from_slice(&c[r * NR..(r + 1) * NR]);
        }
    }
    for u in 0..ku {
        let bu = &b[u * NR * 4..(u + 1) * NR * 4];
        for (r, accr) in acc.iter_mut().enumerate().take(mrows) {
            let x = &a[r * lda + u * 4..r * lda + u * 4 + 4];
            for (col, acv) in accr.iter_mut().enumerate() {
                let w = &bu[col * 4..col * 4 + 4];
                let mut s = 0i32;
                for j in 0..4 {
                    s += x[j] as i32 * (w[j] as i8) as i32;
                }
                *acv = acv.wrapping_add(s);
            }
        }
    }
    for r in 0..mrows {
        c[r * NR..(r + 1) * NR].copy_from_slice(&acc[r]);
    }
}
