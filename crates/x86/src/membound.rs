//! The x86 engine's memory-bound ops: each path's row-kernel table for the
//! shared drivers of `rquant_core::membound` (max / average / adaptive
//! pooling, add / add_relu / mul with broadcasting, clamps, tables, cat,
//! requantize), run on rquant's one pool (`rquant_core::membound::Pool`).
//!
//! | path | max (NHWC) | max (NCHW) | avg, adaptive | binary | clamp | lookup |
//! |---|---|---|---|---|---|---|
//! | scalar | plain loops (`rquant_core::membound::SCALAR`) | | | | | |
//! | avx2, avxvnni | `maxpool_u8_window_avx2` | `maxpool_u8_nchw_avx2` | `avgpool_u8_window_avx2` | `binary_u8_row_avx2` | `clamp_u8_row_avx2` | `lut_u8_rows_avx2` |
//! | avx512 | `…_avx512` | `…_avx512` | `…_avx512` | `…_avx512` | `…_avx512` | `lut_u8_rows_avx512` |
//! | avx512vnni | `…_avx512` | `…_avx512` | `…_avx512` | `…_avx512` | `…_avx512` | `lut_u8_rows_avx512vbmi` when the CPU has AVX512-VBMI, else `lut_u8_rows_avx512` |
//!
//! VBMI is an extra of the `avx512vnni` path only (Ice Lake, Sapphire
//! Rapids and Zen 4 have it, Cascade Lake does not): the `avx512` path
//! keeps the BW lookup, so on one VBMI machine both lookups run and are
//! tested.

use rquant_core::membound::{self as mb, Kernels};

use crate::isa::Isa;

/// Target features of the memory-bound kernels beyond the GEMM tables'
/// (`cargo xtask miri` adds them to Miri's emulated CPU).
pub const MIRI_FEATURES: &[&str] = &["avx512vbmi"];

/// Whether this CPU has AVX512-VBMI (on top of the AVX-512 paths' F/BW/VL).
fn vbmi() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The row kernels of path `isa`, or None when this CPU lacks the path.
pub fn kernels(isa: Isa) -> Option<&'static Kernels> {
    if !isa.detected() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let caps = isa.caps();
        if caps.avx512 {
            return Some(if isa == Isa::Avx512Vnni && vbmi() {
                &simd::AVX512_VBMI
            } else {
                &simd::AVX512
            });
        }
        if caps.avx2 {
            return Some(&simd::AVX2);
        }
    }
    Some(&mb::SCALAR)
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use rquant_core::membound::{
        check_rows, BinaryParams, Finish, Kernels, KernelsSpec, NchwRow, Operand, Out, Window,
    };

    use crate::kernels::{
        avgpool_u8_window_avx2 as avg2, avgpool_u8_window_avx512 as avg512,
        binary_u8_row_avx2 as bin2, binary_u8_row_avx512 as bin512, clamp_u8_row_avx2 as clamp2,
        clamp_u8_row_avx512 as clamp512, lut_u8_rows_avx2 as lut2, lut_u8_rows_avx512 as lut512,
        lut_u8_rows_avx512vbmi as lutvbmi, maxpool_u8_nchw_avx2 as nchw2,
        maxpool_u8_nchw_avx512 as nchw512, maxpool_u8_window_avx2 as max2,
        maxpool_u8_window_avx512 as max512,
    };

    // The wrappers: check the operands, then call the target-feature code.
    // SAFETY (every `unsafe` block below): the wrapper is only in the table
    // of a path whose detection proved the kernel's features (`kernels`:
    // AVX2 for the AVX2 table, AVX-512F/BW/VL for the AVX-512 tables, and
    // VBMI detected for the VBMI one), and the operands fit the kernel
    // (checked on the line before).

    fn max_avx2(w: &Window, s: &[u8], d: &mut [Out]) {
        w.check(s.len(), d.len());
        // SAFETY: see above.
        unsafe { max2::max(w, s, d) }
    }
    fn max_avx512(w: &Window, s: &[u8], d: &mut [Out]) {
        w.check(s.len(), d.len());
        // SAFETY: see above.
        unsafe { max512::max(w, s, d) }
    }
    fn nchw_avx2(r: &NchwRow, s: &[u8], t: &mut Vec<u8>, d: &mut [Out]) {
        r.check(s.len(), d.len());
        // SAFETY: see above.
        unsafe { nchw2::max_nchw(r, s, t, d) }
    }
    fn nchw_avx512(r: &NchwRow, s: &[u8], t: &mut Vec<u8>, d: &mut [Out]) {
        r.check(s.len(), d.len());
        // SAFETY: see above.
        unsafe { nchw512::max_nchw(r, s, t, d) }
    }
    fn avg_avx2(w: &Window, f: Finish, s: &[u8], d: &mut [Out]) {
        w.check(s.len(), d.len());
        // SAFETY: see above.
        unsafe { avg2::avg(w, f, s, d) }
    }
    fn avg_avx512(w: &Window, f: Finish, s: &[u8], d: &mut [Out]) {
        w.check(s.len(), d.len());
        // SAFETY: see above.
        unsafe { avg512::avg(w, f, s, d) }
    }
    fn binary_avx2(p: &BinaryParams, a: &[u8], b: Operand<'_>, d: &mut [Out]) {
        b.check(a.len(), d.len());
        // SAFETY: see above.
        unsafe { bin2::binary(p, a, b, d) }
    }
    fn binary_avx512(p: &BinaryParams, a: &[u8], b: Operand<'_>, d: &mut [Out]) {
        b.check(a.len(), d.len());
        // SAFETY: see above.
        unsafe { bin512::binary(p, a, b, d) }
    }
    fn clamp_avx2(s: &[u8], lo: u8, hi: u8, d: &mut [Out]) {
        assert_eq!(s.len(), d.len(), "clamp: lengths");
        // SAFETY: see above.
        unsafe { clamp2::clamp(s, lo, hi, d) }
    }
    fn clamp_avx512(s: &[u8], lo: u8, hi: u8, d: &mut [Out]) {
        assert_eq!(s.len(), d.len(), "clamp: lengths");
        // SAFETY: see above.
        unsafe { clamp512::clamp(s, lo, hi, d) }
    }
    fn lut_avx2(t: &[u8; 256], s: &[u8], run: usize, d: &mut [Out], stride: usize) {
        check_rows(s.len(), run, d.len(), stride);
        // SAFETY: see above.
        unsafe { lut2::lut(t, s, run, d, stride) }
    }
    fn lut_avx512(t: &[u8; 256], s: &[u8], run: usize, d: &mut [Out], stride: usize) {
        check_rows(s.len(), run, d.len(), stride);
        // SAFETY: see above.
        unsafe { lut512::lut(t, s, run, d, stride) }
    }
    fn lut_vbmi(t: &[u8; 256], s: &[u8], run: usize, d: &mut [Out], stride: usize) {
        check_rows(s.len(), run, d.len(), stride);
        // SAFETY: see above.
        unsafe { lutvbmi::lut(t, s, run, d, stride) }
    }

    pub(super) static AVX2: Kernels = Kernels::new(KernelsSpec {
        path: "avx2",
        max: max_avx2,
        max_nchw: nchw_avx2,
        avg: avg_avx2,
        binary: binary_avx2,
        clamp: clamp_avx2,
        lut: lut_avx2,
    });

    const AVX512_SPEC: KernelsSpec = KernelsSpec {
        path: "avx512",
        max: max_avx512,
        max_nchw: nchw_avx512,
        avg: avg_avx512,
        binary: binary_avx512,
        clamp: clamp_avx512,
        lut: lut_avx512,
    };

    pub(super) static AVX512: Kernels = Kernels::new(AVX512_SPEC);

    pub(super) static AVX512_VBMI: Kernels = Kernels::new(KernelsSpec {
        path: "avx512vnni+vbmi",
        lut: lut_vbmi,
        ..AVX512_SPEC
    });
}
