//! Microkernels, one file per (op, types, tile, ISA): `<op>_<types>_<MR>x<NR>c<KR>_<isa>.rs`.
//!
//! Every int8 GEMM microkernel computes the raw `Σ_k x[m,k]·w[k,n]` of one
//! activation micro-panel and one weight micro-panel (layouts in
//! [`crate::pack`]) into an `MR×NR` int32 tile, in wrapping int32 arithmetic
//! and without any intermediate saturation, so it is exact for all inputs.
//! Zero points, bias and requantization are the epilogue's job.

pub mod dequantize_u8f32_row_avx2;
pub mod dequantize_u8f32_row_avx512;
pub mod dwconv_f32_row_avx2;
pub mod dwconv_i16_row_avx2;
pub mod dwconv_u8i8_plane_avx512;
pub mod gemm_f32f16_12x32_avx512;
pub mod gemm_f32f16_6x16_avx2;
pub mod gemm_u8i8_4x8c4_scalar;
pub mod gemm_u8i8_6x16c2_avx2;
pub mod gemm_u8i8_6x16c4_avx2;
pub mod gemm_u8i8_6x16c4_avxvnni;
pub mod gemm_u8i8_8x32c2_avx512;
pub mod gemm_u8i8_8x32c4_avx512vnni;
pub(crate) mod output;
pub(crate) mod output_avx2;
pub(crate) mod output_avx512;
pub mod quantize_f32u8_row_avx2;
pub mod quantize_f32u8_row_avx512;
pub mod transpose_u8_16x16_sse2;

use crate::isa::Isa;

/// Run the int8 microkernel of `isa` on `mrows` activation rows (`lda`
/// bytes apart, k-units of 4 bytes) and one weight micro-panel.
///
/// `isa` must be a path whose detection succeeded: callers pass the `isa`
/// recorded in a [`crate::pack::PackedB`], which only an engine value that
/// proved the path can create.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_u8i8(
    isa: Isa,
    mrows: usize,
    ku: usize,
    a: &[u8],
    lda: usize,
    b: &[u8],
    c: &mut [i32],
    init: bool,
) {
    let t = crate::pack::Tile::for_isa(isa);
    assert!(mrows >= 1 && mrows <= t.mr);
    assert!(a.len() >= (mrows - 1) * lda + ku * 4);
    assert!(b.len() >= ku * t.nr * 4 && c.len() >= t.mr * t.nr);
    match isa {
        Isa::Scalar => gemm_u8i8_4x8c4_scalar::kernel(mrows, ku, a, lda, b, c, init),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: the Avx2 path was detected (see the contract above);
            // the mrows activation rows (lda apart) hold ku units each, the
            // weight panel ku units of NR columns (asserted), the tile MR×NR i32.
            unsafe {
                gemm_u8i8_6x16c2_avx2::dispatch(
                    mrows,
                    ku,
                    a.as_ptr(),
                    lda,
                    b.as_ptr(),
                    c.as_mut_ptr(),
                    init,
                )
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => {
            // SAFETY: as above; the AvxVnni path was detected, so the CPU has
            // AVX-VNNI or else AVX512-VNNI with VL (the kernel's EVEX twin).
            unsafe {
                let f = if is_x86_feature_detected!("avxvnni") {
                    gemm_u8i8_6x16c4_avxvnni::dispatch
                } else {
                    gemm_u8i8_6x16c4_avxvnni::dispatch_evex
                };
                f(mrows, ku, a.as_ptr(), lda, b.as_ptr(), c.as_mut_ptr(), init)
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: as above, for the AVX-512F/BW path.
            unsafe {
                gemm_u8i8_8x32c2_avx512::dispatch(
                    mrows,
                    ku,
                    a.as_ptr(),
                    lda,
                    b.as_ptr(),
                    c.as_mut_ptr(),
                    init,
                )
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => {
            // SAFETY: as above, for the AVX512-VNNI path.
            unsafe {
                gemm_u8i8_8x32c4_avx512vnni::dispatch(
                    mrows,
                    ku,
                    a.as_ptr(),
                    lda,
                    b.as_ptr(),
                    c.as_mut_ptr(),
                    init,
                )
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("only the scalar path exists off x86_64"),
    }
}

/// The AVX2 `vpmaddubsw` kernel ([`gemm_u8i8_6x16c4_avx2`]) on `mrows`
/// activation rows. `isa` must be `Avx2` (the path that proved AVX2); the
/// caller has checked the saturation bound ([`crate::pack::Narrow::exact_for`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_u8i8_narrow(
    isa: Isa,
    mrows: usize,
    ku: usize,
    a: &[u8],
    lda: usize,
    b: &[u8],
    c: &mut [i32],
    init: bool,
) {
    use gemm_u8i8_6x16c4_avx2::{MR, NR};
    assert_eq!(isa, Isa::Avx2);
    assert!((1..=MR).contains(&mrows));
    assert!(a.len() >= (mrows - 1) * lda + ku * 4);
    assert!(b.len() >= ku * NR * 4 && c.len() >= MR * NR);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: isa == Avx2 comes from an engine value that detected AVX2; the
    // rows hold ku units each, the panel ku units of NR columns, the tile
    // MR×NR i32 (asserted).
    unsafe {
        gemm_u8i8_6x16c4_avx2::dispatch(
            mrows,
            ku,
            a.as_ptr(),
            lda,
            b.as_ptr(),
            c.as_mut_ptr(),
            init,
        )
    };
}
