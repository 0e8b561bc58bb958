//! GEMM microkernels, one file per tile and ISA
//! (`gemm_<act><weight>_<MR>x<NR>c<KR>_<isa>.rs`). Each computes one 8x8 tile
//! of raw int32 accumulators from packed panels (see `crate::pack`); the
//! output pipeline lives in `crate::epilogue`.

pub mod dwconv_u8i8_kxk_scalar;
pub mod gemm_u8i8_8x8c1_scalar;
pub mod gemm_u8i8_8x8ck_scalar;

#[cfg(target_arch = "aarch64")]
pub mod dwconv_u8i8_kxk_neon;
#[cfg(target_arch = "aarch64")]
pub mod gemm_u8i8_1x8c1_neon;
#[cfg(target_arch = "aarch64")]
pub mod gemm_u8i8_1x8c4_dotprod;
#[cfg(target_arch = "aarch64")]
pub mod gemm_u8i8_1x8c8_i8mm;
#[cfg(target_arch = "aarch64")]
pub mod gemm_u8i8_4x8c1_neon;
#[cfg(target_arch = "aarch64")]
pub mod gemm_u8i8_4x8c4_dotprod;
#[cfg(target_arch = "aarch64")]
pub mod gemm_u8i8_4x8c8_i8mm;
#[cfg(target_arch = "aarch64")]
pub mod gemm_u8i8_8x8c1_neon;
#[cfg(target_arch = "aarch64")]
pub mod gemm_u8i8_8x8c4_dotprod;
#[cfg(target_arch = "aarch64")]
pub mod gemm_u8i8_8x8c8_i8mm;
