//! Scalar twin of the NEON kernel: the `c1` layout (i16, zero points
//! subtracted), an 8x8 tile of exact wrapping int32 accumulators.

use rquant_core::gemm::Micro;

use crate::pack::{C1, MR, NR};

/// `c[r][j] = Σ_k a[k][r]·b[k][j]` over `kc` steps (wrapping int32).
pub fn gemm(kc: usize, a: &[i16], b: &[i16], c: &mut [i32; MR * NR]) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    *c = [0; MR * NR];
    for k in 0..kc {
        let ak = &a[k * MR..(k + 1) * MR];
        let bk = &b[k * NR..(k + 1) * NR];
        for r in 0..MR {
            for j in 0..NR {
                let p = ak[r] as i32 * bk[j] as i32;
                c[r * NR + j] = c[r * NR + j].wrapping_add(p);
            }
        }
    }
}

/// The shared microkernel signature (`rquant_core::gemm::Micro`); panics
/// unless `t` fits the `c1` layout.
pub fn run(t: Micro<'_>) {
    t.assert_fits(&C1);
    super::accumulate(t, |ku, a, b, c| {
        gemm(ku, bytemuck::cast_slice(a), bytemuck::cast_slice(b), c)
    })
}
