//! Scalar twin of the dotprod (`c4`) and i8mm (`c8`) kernels on their packed
//! layouts `A[kb][r][KR]`, `B[kb][c][KR]`: lets the packing and the
//! zero-point corrections of those paths be tested on any architecture.

use rquant_core::gemm::Micro;

use crate::pack::{C4, C8, MR, NR};

/// `c[r][j] = Σ a[kb][r][t]·b[kb][j][t]` over `kb` blocks of `kr`; A bytes
/// are s8 when `a_signed` (the `c4` encoding x - 128), else u8.
pub fn gemm(kr: usize, kb: usize, a: &[u8], a_signed: bool, b: &[i8], c: &mut [i32; MR * NR]) {
    assert!(a.len() >= kb * kr * MR && b.len() >= kb * kr * NR);
    *c = [0; MR * NR];
    for blk in 0..kb {
        for r in 0..MR {
            for j in 0..NR {
                let mut s = 0i32;
                for t in 0..kr {
                    let av = a[(blk * MR + r) * kr + t];
                    let av = if a_signed { av as i8 as i32 } else { av as i32 };
                    s += av * b[(blk * NR + j) * kr + t] as i32;
                }
                c[r * NR + j] = c[r * NR + j].wrapping_add(s);
            }
        }
    }
}

/// The dotprod layout's twin with the shared microkernel signature; panics
/// unless `t` fits the `c4` layout.
pub fn run_c4(t: Micro<'_>) {
    t.assert_fits(&C4);
    super::accumulate(t, |ku, a, b, c| {
        gemm(4, ku, a, true, bytemuck::cast_slice(b), c)
    })
}

/// The i8mm layout's twin with the shared microkernel signature; panics
/// unless `t` fits the `c8` layout.
pub fn run_c8(t: Micro<'_>) {
    t.assert_fits(&C8);
    super::accumulate(t, |ku, a, b, c| {
        gemm(8, ku, a, false, bytemuck::cast_slice(b), c)
    })
}
