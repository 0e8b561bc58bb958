//! The ARM engine's memory-bound ops: each path's row-kernel table for the
//! shared drivers of `rquant_core::membound` (max / average / adaptive
//! pooling, add / add_relu / mul with broadcasting, clamps, tables, cat,
//! requantize), run on rquant's one pool (`rquant_core::membound::Pool`).
//!
//! | path | max (NHWC) | max (NCHW) | avg, adaptive | binary | clamp | lookup |
//! |---|---|---|---|---|---|---|
//! | scalar | plain loops (`rquant_core::membound::SCALAR`) | | | | | |
//! | neon, dotprod, i8mm | `maxpool_u8_window_neon` | `maxpool_u8_nchw_neon` | `avgpool_u8_window_neon` | `binary_u8_row_neon` | `clamp_u8_row_neon` | `lut_u8_rows_neon` |

use rquant_core::membound::{self as mb, Kernels};

use crate::isa::Isa;

/// The row kernels of path `isa`, or None when this CPU lacks the path.
pub fn kernels(isa: Isa) -> Option<&'static Kernels> {
    if !isa.detected() {
        return None;
    }
    #[cfg(target_arch = "aarch64")]
    if isa.caps().neon {
        return Some(&neon::NEON);
    }
    Some(&mb::SCALAR)
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use rquant_core::membound::{
        check_rows, BinaryParams, Finish, Kernels, KernelsSpec, NchwRow, Operand, Out, Window,
    };

    use crate::kernels::{
        avgpool_u8_window_neon as avg, binary_u8_row_neon as bin, clamp_u8_row_neon as clampk,
        lut_u8_rows_neon as lutk, maxpool_u8_nchw_neon as nchw, maxpool_u8_window_neon as maxk,
    };

    // The wrappers: check the operands, then call the NEON code.
    // SAFETY (every `unsafe` block below): the table is only handed out for
    // a path whose detection proved NEON (`kernels`), and the operands fit
    // the kernel (checked on the line before).

    fn max(w: &Window, s: &[u8], d: &mut [Out]) {
        w.check(s.len(), d.len());
        // SAFETY: see above.
        unsafe { maxk::max(w, s, d) }
    }
    fn max_nchw(r: &NchwRow, s: &[u8], t: &mut Vec<u8>, d: &mut [Out]) {
        r.check(s.len(), d.len());
        // SAFETY: see above.
        unsafe { nchw::max_nchw(r, s, t, d) }
    }
    fn avg_(w: &Window, f: Finish, s: &[u8], d: &mut [Out]) {
        w.check(s.len(), d.len());
        // SAFETY: see above.
        unsafe { avg::avg(w, f, s, d) }
    }
    fn binary(p: &BinaryParams, a: &[u8], b: Operand<'_>, d: &mut [Out]) {
        b.check(a.len(), d.len());
        // SAFETY: see above.
        unsafe { bin::binary(p, a, b, d) }
    }
    fn clamp(s: &[u8], lo: u8, hi: u8, d: &mut [Out]) {
        assert_eq!(s.len(), d.len(), "clamp: lengths");
        // SAFETY: see above.
        unsafe { clampk::clamp(s, lo, hi, d) }
    }
    fn lut(t: &[u8; 256], s: &[u8], run: usize, d: &mut [Out], stride: usize) {
        check_rows(s.len(), run, d.len(), stride);
        // SAFETY: see above.
        unsafe { lutk::lut(t, s, run, d, stride) }
    }

    pub(super) static NEON: Kernels = Kernels::new(KernelsSpec {
        path: "neon",
        max,
        max_nchw,
        avg: avg_,
        binary,
        clamp,
        lut,
    });
}
