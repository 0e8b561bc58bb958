//! Microkernels, one file per (op, types, tile, ISA): `<op>_<types>_<MR>x<NR>c<KR>_<isa>.rs`;
//! the memory-bound row kernels likewise (`maxpool_u8_window_avx2.rs`, …,
//! listed in `crate::membound`).
//!
//! Every int8 GEMM microkernel has one signature, `run(Micro)`
//! (`rquant_core::gemm::Micro`: activation panel, weight panel, tile, k-units,
//! rows, init), and declares its `SHAPE`. It computes the raw
//! `Σ_k x[m,k]·w[k,n]` of one activation micro-panel and one weight
//! micro-panel (layouts in [`crate::pack`]) into an `MR×NR` int32 tile, in
//! wrapping int32 arithmetic and without any intermediate saturation (the
//! `vpmaddubsw` kernels: under the bound their `exact` check computes, or on
//! the bounded part of a split weight, whose sparse remainder a second pass,
//! `remainder_*`, adds onto the tiles: `run(PairMicro)`). The
//! kernels of each path are listed in `crate::table`. Zero points, bias and
//! requantization are the output stage's job (`output*.rs`).

pub mod avgpool_u8_window_avx2;
pub mod avgpool_u8_window_avx512;
pub mod binary_u8_row_avx2;
pub mod binary_u8_row_avx512;
pub mod clamp_u8_row_avx2;
pub mod clamp_u8_row_avx512;
pub mod dequantize_u8f32_row_avx2;
pub mod dequantize_u8f32_row_avx512;
pub mod dwconv_f32_row_avx2;
pub mod dwconv_i16_row_avx2;
pub mod dwconv_u8i8_kxk_nhwc_avx2;
pub mod dwconv_u8i8_kxk_nhwc_avx512;
pub mod dwconv_u8i8_plane_avx512;
pub mod dwpack_u8i16_pairs_avx2;
pub mod dwpack_u8i16_pairs_avx512;
pub mod gconv_u8i8_c4_avx512vnni;
pub mod gemm_f32f16_12x32_avx512;
pub mod gemm_f32f16_6x16_avx2;
pub mod gemm_u8i8_4x8c4_scalar;
pub mod gemm_u8i8_6x16c2_avx2;
pub mod gemm_u8i8_6x16c4_avx2;
pub mod gemm_u8i8_6x16c4_avxvnni;
pub mod gemm_u8i8_8x32c2_avx512;
pub mod gemm_u8i8_8x32c4_avx512;
pub mod gemm_u8i8_8x32c4_avx512vnni;
pub mod igemm_u8i8_4x8c4_scalar;
pub mod igemm_u8i8_8x32c4_avx512vnni;
pub mod lut_u8_rows_avx2;
pub mod lut_u8_rows_avx512;
pub mod lut_u8_rows_avx512vbmi;
pub mod maxpool_u8_nchw_avx2;
pub mod maxpool_u8_nchw_avx512;
pub mod maxpool_u8_window_avx2;
pub mod maxpool_u8_window_avx512;
pub(crate) mod output;
pub(crate) mod output_avx2;
pub(crate) mod output_avx512;
pub mod quantize_f32u8_row_avx2;
pub mod quantize_f32u8_row_avx512;
pub mod remainder_u8i8_16x16c2_avx2;
pub mod remainder_u8i8_16x32c2_avx512;
pub(crate) mod residual_add_u8_row_avx2;
pub(crate) mod residual_add_u8_row_avx512;
pub mod transpose_u8_16x16_sse2;
