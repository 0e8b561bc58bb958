//! GEMM microkernels, one file per tile and ISA
//! (`gemm_<act><weight>_<MR>x<NR>c<KR>_<isa>.rs`). Each computes one 8x8 tile
//! (rows 0..1 / 0..4 for the 1x8 / 4x8 ones) of raw int32 accumulators from
//! packed panels (see `crate::pack`) and exposes the shared signature
//! `run(Micro)` (as the x86 kernels do); `crate::table` lists them per path;
//! the output stage lives in `crate::output`. The memory-bound row kernels
//! (`maxpool_u8_window_neon.rs`, …) are listed in `crate::membound`.

pub mod dwconv_u8i8_kxk_scalar;
pub mod gemm_u8i8_8x8c1_scalar;
pub mod gemm_u8i8_8x8ck_scalar;

#[cfg(target_arch = "aarch64")]
pub mod avgpool_u8_window_neon;
#[cfg(target_arch = "aarch64")]
pub mod binary_u8_row_neon;
#[cfg(target_arch = "aarch64")]
pub mod clamp_u8_row_neon;
#[cfg(target_arch = "aarch64")]
pub mod dwconv_u8i8_kxk_neon;
#[cfg(target_arch = "aarch64")]
pub mod dwconv_u8i8_kxk_nhwc_neon;
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
#[cfg(target_arch = "aarch64")]
pub mod lut_u8_rows_neon;
#[cfg(target_arch = "aarch64")]
pub mod maxpool_u8_nchw_neon;
#[cfg(target_arch = "aarch64")]
pub mod maxpool_u8_window_neon;

use rquant_core::gemm::Micro;

use crate::pack::{MR, NR};

/// Run a kernel that computes its tile from zero as the shared microkernel
/// signature: with `t.init` false, its rows `0..t.mrows` are added onto
/// `t.c` (the driver walks K in blocks; one extra 8×8 add per block).
pub(crate) fn accumulate(t: Micro<'_>, f: impl FnOnce(usize, &[u8], &[u8], &mut [i32; MR * NR])) {
    let c: &mut [i32; MR * NR] = (&mut t.c[..MR * NR]).try_into().expect("an 8x8 tile");
    if t.init {
        f(t.ku, t.a, t.b, c);
        return;
    }
    let mut tmp = [0i32; MR * NR];
    f(t.ku, t.a, t.b, &mut tmp);
    for (d, s) in c.iter_mut().zip(tmp).take(t.mrows * NR) {
        *d = d.wrapping_add(s);
    }
}
