//! Portable indirect int8 GEMM microkernel, 4×8 tile, k-units of 4 u8/s8:
//! the scalar path's conv kernel on NHWC activations (rows read as
//! segments, [`crate::igemm`]), with the weight layout of
//! [`super::gemm_u8i8_4x8c4_scalar`].

use rquant_core::gemm::Shape;

use super::gemm_u8i8_4x8c4_scalar as gemm;
use crate::igemm::IMicro;

/// The tile and weight layout: the GEMM kernel's.
pub const SHAPE: Shape = gemm::SHAPE;
const MR: usize = SHAPE.mr;
const NR: usize = SHAPE.nr;

/// `t.c` (+)= the raw `Σ x·w` of `t.mrows` tile rows over the segments, in
/// wrapping int32. Panics unless `t` fits [`SHAPE`].
pub fn run(t: IMicro<'_>) {
    t.assert_fits(&SHAPE);
    let (mrows, segs, b, c, init) = (t.mrows, t.segs, t.b, t.c, t.init);
    let mut acc = [[0i32; NR]; MR];
    if !init {
        for (r, accr) in acc.iter_mut().enumerate().take(mrows) {
            accr.copy_from_slice(&c[r * NR..(r + 1) * NR]);
        }
    }
    let mut u0 = 0;
    for s in segs.segs {
        for (r, accr) in acc.iter_mut().enumerate().take(mrows) {
            let o = s.off[r];
            let run = if o < segs.a.len() {
                &segs.a[o..o + 4 * s.units]
            } else {
                let z = o - segs.a.len();
                &segs.z[z..z + 4 * s.units]
            };
            for (u, x) in run.chunks_exact(4).enumerate() {
                let bu = &b[(u0 + u) * NR * 4..(u0 + u + 1) * NR * 4];
                for (col, acv) in accr.iter_mut().enumerate() {
                    let w = &bu[col * 4..col * 4 + 4];
                    let mut sum = 0i32;
                    for j in 0..4 {
                        sum += x[j] as i32 * (w[j] as i8) as i32;
                    }
                    *acv = acv.wrapping_add(sum);
                }
            }
        }
        u0 += s.units;
    }
    for r in 0..mrows {
        c[r * NR..(r + 1) * NR].copy_from_slice(&acc[r]);
    }
}
