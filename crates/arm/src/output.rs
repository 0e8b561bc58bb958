//! The output stages of the int8 GEMM, run on each 8x8 accumulator tile.
//! They consume the output stage core describes once
//! (`rquant_core::output`: [`Requant`] for quint8, [`Dequant`] for dynamic
//! linear's f32), in three steps:
//! 1. zero-point correction `acc + colterm[n] − zw[n]·rowsum[m]` (with the
//!    layout's activation shift folded into `colterm`, see [`shifted`]);
//! 2. fbgemm's float requantization (`numerics::requantize_u8_clamped`) or
//!    the float output (`numerics::dynamic_out`);
//! 3. the store ([`Store`]): row-major for linear, transposed (NCHW planes)
//!    for conv.
//!
//! The NEON version performs the same f32 operations in the same order
//! (separate `fadd`/`fmul`, `fmla` only where the scalar formula is a fused
//! `mul_add`, `fcvtns` = round half to even, saturating `sqadd`), so both
//! give the same bits. A tile's per-column constants are copied into local
//! 8-lane arrays (zero past the last column), so no per-column array needs
//! padding to whole panels.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use rquant_core::gemm::{AccTile, Stage, Store};
use rquant_core::numerics::{dynamic_out, requantize_u8_clamped};
use rquant_core::output::{Clamp, Dequant, Requant, ResidualAdd, ZeroPointTerms};

use crate::isa::Caps;
use crate::pack::{MR, NR};

/// A raw output pointer shared by the tasks of one GEMM; every task writes
/// a disjoint set of indices.
pub(crate) struct RawOut<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: RawOut is only a pointer to a buffer that outlives the GEMM; tasks
// write disjoint indices (each output element belongs to exactly one tile).
unsafe impl<T: Send> Send for RawOut<T> {}
// SAFETY: as above: concurrent tasks never touch the same index.
unsafe impl<T: Send> Sync for RawOut<T> {}

impl<T> RawOut<T> {
    /// Over memory not yet initialised (a `Vec`'s spare capacity): the
    /// caller makes it a `T` slice only after every index was written.
    pub(crate) fn uninit(v: &mut [MaybeUninit<T>]) -> Self {
        RawOut {
            ptr: v.as_mut_ptr().cast(),
            len: v.len(),
        }
    }

    /// Write `v` at index `i` (bounds-checked).
    ///
    /// # Safety
    /// No other task writes index `i` concurrently; the buffer is alive.
    #[inline]
    unsafe fn write(&self, i: usize, v: T) {
        assert!(i < self.len);
        // SAFETY: in bounds (asserted); exclusivity is the caller's contract.
        unsafe { self.ptr.add(i).write(v) }
    }
}

/// The column terms of `zp` for a layout whose activations are stored as
/// `x − shift`: `colterm[n] + shift·Σ_k w[n,k]` (wrapping), since the kernel
/// then accumulates `Σ(x − shift)·w = Σxw − shift·Σw`.
pub(crate) fn shifted<'a>(zp: &'a ZeroPointTerms, shift: i32, col_sums: &[i32]) -> Cow<'a, [i32]> {
    if shift == 0 {
        return Cow::Borrowed(&zp.colterm);
    }
    Cow::Owned(
        zp.colterm
            .iter()
            .zip(col_sums)
            .map(|(&c, &s)| c.wrapping_add(shift.wrapping_mul(s)))
            .collect(),
    )
}

/// One tile's 8 columns of constants, zero past the tile's last column.
#[derive(Default, Clone, Copy)]
pub(crate) struct Cols8 {
    pub colterm: [i32; NR],
    pub zw: [i32; NR],
    /// Requantization: bias terms; float output: scale products.
    pub a: [f32; NR],
    /// Requantization: multipliers; float output: the bias (zeros without).
    pub b: [f32; NR],
}

/// A tile ready for a stage: raw accumulators (8×8), the rows that matter,
/// their row sums and the columns' constants.
pub(crate) struct Tile8<'a> {
    pub acc: &'a [i32; MR * NR],
    pub mrows: usize,
    pub ncols: usize,
    pub rs: [i32; MR],
    pub cols: Cols8,
}

impl Tile8<'_> {
    fn new<'t>(t: &AccTile<'t>, cols: Cols8) -> Tile8<'t> {
        let mut rs = [0i32; MR];
        rs[..t.mrows].copy_from_slice(t.rowsums);
        Tile8 {
            acc: t.acc[..MR * NR].try_into().expect("an 8x8 tile"),
            mrows: t.mrows,
            ncols: t.ncols,
            rs,
            cols,
        }
    }
    #[inline]
    fn corrected(&self, r: usize, j: usize) -> i32 {
        self.acc[r * NR + j]
            .wrapping_add(self.cols.colterm[j])
            .wrapping_sub(self.cols.zw[j].wrapping_mul(self.rs[r]))
    }
}

/// The local copy of columns `cols` of four per-column arrays.
fn cols8(colterm: &[i32], zw: &[i32], a: &[f32], b: Option<&[f32]>) -> Cols8 {
    let mut c = Cols8::default();
    let n = colterm.len();
    c.colterm[..n].copy_from_slice(colterm);
    c.zw[..n].copy_from_slice(zw);
    c.a[..n].copy_from_slice(a);
    if let Some(b) = b {
        c.b[..n].copy_from_slice(b);
    }
    c
}

/// Store a tile through `store`: `rows(dst, ld)` writes its rows
/// (`ncols` contiguous elements each, `ld` apart).
///
/// # Safety
/// `rows` writes exactly the tile's `mrows × ncols` elements, row `r` at
/// `dst + r·ld`; no other task stores this tile's indices.
unsafe fn store_tile<T: Copy + Default>(
    out: &RawOut<T>,
    store: Store,
    t: &AccTile<'_>,
    rows: impl FnOnce(*mut T, usize),
) {
    assert!(store.last(t) < out.len, "output tile out of bounds");
    match store {
        Store::Rows { ld, .. } => {
            let at = store.index(t.m0, t.n0);
            // SAFETY: the tile's last index is in bounds (asserted), so is
            // its first.
            rows(unsafe { out.ptr.add(at) }, ld)
        }
        Store::Cols { .. } => {
            // Rows are pixels here: finish into a local tile, then store
            // each column's rows contiguously.
            let mut tmp = [T::default(); MR * NR];
            rows(tmp.as_mut_ptr(), t.ncols);
            for j in 0..t.ncols {
                for r in 0..t.mrows {
                    // SAFETY: in bounds (checked) and owned by this tile.
                    unsafe { out.write(store.index(t.m0 + r, t.n0 + j), tmp[r * t.ncols + j]) };
                }
            }
        }
    }
}

/// A residual add fused into the requantizing stage: output element `i`
/// becomes `add.apply(q, data[i])` (`data` laid out as the output).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Residual<'a> {
    pub data: &'a [u8],
    pub add: &'a ResidualAdd,
}

/// quint8 output through a [`Requant`] (columns `col0 ..` of it), and a
/// residual add when `res` is given.
pub(crate) struct RequantStage<'a> {
    pub caps: Caps,
    pub r: &'a Requant,
    /// `r.zp.colterm`, shifted for the layout ([`shifted`]).
    pub colterm: Cow<'a, [i32]>,
    pub col0: usize,
    pub out: RawOut<u8>,
    pub store: Store,
    pub res: Option<Residual<'a>>,
}

impl Stage for RequantStage<'_> {
    fn finish(&self, t: &AccTile<'_>) {
        let r = self.r;
        let cols = self.col0 + t.n0..self.col0 + t.n0 + t.ncols;
        let c = cols8(
            &self.colterm[cols.clone()],
            &r.zp.zw[cols.clone()],
            &r.bias_term[cols.clone()],
            Some(&r.mult[cols]),
        );
        let tile = Tile8::new(t, c);
        let (zp, clamp, neon) = (r.out_zp, r.clamp, self.caps.neon);
        let rows = |dst: *mut u8, ld: usize| {
            #[cfg(target_arch = "aarch64")]
            if neon {
                // SAFETY: the caps come from a detected path (NEON); the
                // outputs are this tile's (store_tile).
                unsafe { neon::requant(&tile, zp, clamp, dst, ld) };
                return;
            }
            let _ = neon;
            for rr in 0..tile.mrows {
                for j in 0..tile.ncols {
                    let q = requantize_u8_clamped(
                        tile.corrected(rr, j),
                        tile.cols.a[j],
                        tile.cols.b[j],
                        zp,
                        clamp,
                    );
                    // SAFETY: inside row rr of this tile's outputs.
                    unsafe { dst.add(rr * ld + j).write(q) };
                }
            }
        };
        let Some(res) = self.res else {
            // SAFETY: the driver hands every tile to one task only; `rows`
            // writes exactly the tile's rows.
            unsafe { store_tile(&self.out, self.store, t, rows) };
            return;
        };
        // The tile's conv codes into a local tile, then the add with the
        // residual's element at each output index.
        let last = self.store.last(t);
        assert!(
            last < self.out.len && last < res.data.len(),
            "output tile out of bounds"
        );
        let mut tmp = [0u8; MR * NR];
        rows(tmp.as_mut_ptr(), t.ncols);
        for rr in 0..t.mrows {
            for j in 0..t.ncols {
                let i = self.store.index(t.m0 + rr, t.n0 + j);
                let q = res.add.apply(tmp[rr * t.ncols + j], res.data[i]);
                // SAFETY: in bounds (asserted) and owned by this tile (the
                // driver hands every tile to one task only).
                unsafe { self.out.write(i, q) };
            }
        }
    }
}

/// f32 output of dynamic linear through a [`Dequant`] and the weight's bias.
pub(crate) struct FloatStage<'a> {
    pub caps: Caps,
    pub d: &'a Dequant,
    /// `d.zp.colterm`, shifted for the layout ([`shifted`]).
    pub colterm: Cow<'a, [i32]>,
    pub bias: Option<&'a [f32]>,
    pub out: RawOut<f32>,
    pub store: Store,
}

impl Stage for FloatStage<'_> {
    fn finish(&self, t: &AccTile<'_>) {
        let d = self.d;
        let cols = t.n0..t.n0 + t.ncols;
        let c = cols8(
            &self.colterm[cols.clone()],
            &d.zp.zw[cols.clone()],
            &d.scale_product[cols.clone()],
            self.bias.map(|b| &b[cols]),
        );
        let tile = Tile8::new(t, c);
        let (has_bias, neon) = (self.bias.is_some(), self.caps.neon);
        let rows = |dst: *mut f32, ld: usize| {
            #[cfg(target_arch = "aarch64")]
            if neon {
                // SAFETY: as for the requantizing stage.
                unsafe { neon::float(&tile, has_bias, dst, ld) };
                return;
            }
            let _ = neon;
            for rr in 0..tile.mrows {
                for j in 0..tile.ncols {
                    let b = has_bias.then_some(tile.cols.b[j]);
                    let v = dynamic_out(tile.corrected(rr, j), tile.cols.a[j], b);
                    // SAFETY: inside row rr of this tile's outputs.
                    unsafe { dst.add(rr * ld + j).write(v) };
                }
            }
        };
        // SAFETY: the driver hands every tile to one task only; `rows`
        // writes exactly the tile's rows.
        unsafe { store_tile(&self.out, self.store, t, rows) };
    }
}

/// One channel's requantization (a column of a [`Requant`]), for a run of
/// exact accumulators (depthwise conv).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Channel {
    pub bt: f32,
    pub mult: f32,
    pub zp: i32,
    pub clamp: Clamp,
}

/// Requantize a run of exact accumulators of one channel.
pub(crate) fn requant_run(caps: Caps, acc: &[i32], ch: &Channel, out: &mut [u8]) {
    assert_eq!(acc.len(), out.len());
    #[cfg(target_arch = "aarch64")]
    let done = if caps.neon {
        // SAFETY: the caps come from a detected path (NEON).
        unsafe { neon::requant_run(acc, ch, out) }
    } else {
        0
    };
    #[cfg(not(target_arch = "aarch64"))]
    let done = {
        let _ = caps;
        0
    };
    for (o, &a) in out[done..].iter_mut().zip(&acc[done..]) {
        *o = requantize_u8_clamped(a, ch.bt, ch.mult, ch.zp, ch.clamp);
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    //! The same stages on int32x4 / float32x4 vectors.
    use core::arch::aarch64::*;

    use super::{Channel, Tile8};
    use crate::pack::NR;
    use rquant_core::output::Clamp;

    /// Corrected accumulators of tile row r, columns 4h..4h+4.
    #[inline(always)]
    fn exact4(t: &Tile8<'_>, r: usize, h: usize) -> int32x4_t {
        // SAFETY: r < 8, h < 2 keep every read inside the 8x8 tile and the
        // 8-lane column arrays; NEON is baseline on AArch64.
        unsafe {
            let raw = vld1q_s32(t.acc.as_ptr().add(r * NR + 4 * h));
            let ct = vld1q_s32(t.cols.colterm.as_ptr().add(4 * h));
            let zw = vld1q_s32(t.cols.zw.as_ptr().add(4 * h));
            vmlsq_s32(vaddq_s32(raw, ct), zw, vdupq_n_s32(t.rs[r]))
        }
    }

    /// NEON requantization of the tile's rows into `dst` (rows `ld` apart).
    ///
    /// # Safety
    /// NEON available; `dst` is valid for `t.mrows` rows of `t.ncols` bytes.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn requant(t: &Tile8<'_>, zp: i32, clamp: Clamp, dst: *mut u8, ld: usize) {
        let vzp = vdupq_n_s32(zp);
        let vlo = vdupq_n_s32(clamp.lo as i32);
        let vhi = vdupq_n_s32(clamp.hi as i32);
        // SAFETY: the arrays have 8 lanes.
        let (b0, b1, m0, m1) = unsafe {
            (
                vld1q_f32(t.cols.a.as_ptr()),
                vld1q_f32(t.cols.a.as_ptr().add(4)),
                vld1q_f32(t.cols.b.as_ptr()),
                vld1q_f32(t.cols.b.as_ptr().add(4)),
            )
        };
        let q = |acc: int32x4_t, b: float32x4_t, m: float32x4_t| -> int32x4_t {
            // (f32(acc) + bias) * mult, two roundings, then RNE to int32
            // (saturating), + zp (saturating), clamp [lo, hi].
            let f = vmulq_f32(vaddq_f32(vcvtq_f32_s32(acc), b), m);
            let v = vqaddq_s32(vcvtnq_s32_f32(f), vzp);
            vminq_s32(vmaxq_s32(v, vlo), vhi)
        };
        for r in 0..t.mrows {
            let v0 = q(exact4(t, r, 0), b0, m0);
            let v1 = q(exact4(t, r, 1), b1, m1);
            // Values are in [0, 255]: the narrowing is exact.
            let u = vqmovun_s16(vcombine_s16(vmovn_s32(v0), vmovn_s32(v1)));
            let mut tmp = [0u8; NR];
            // SAFETY: tmp has 8 elements; the row's ncols bytes are the
            // caller's.
            unsafe {
                if t.ncols == NR {
                    vst1_u8(dst.add(r * ld), u);
                } else {
                    vst1_u8(tmp.as_mut_ptr(), u);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst.add(r * ld), t.ncols);
                }
            }
        }
    }

    /// NEON float output of the tile's rows into `dst` (rows `ld` apart).
    ///
    /// # Safety
    /// NEON available; `dst` is valid for `t.mrows` rows of `t.ncols` floats.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn float(t: &Tile8<'_>, has_bias: bool, dst: *mut f32, ld: usize) {
        // SAFETY: the arrays have 8 lanes.
        let (s0, s1, c0, c1) = unsafe {
            (
                vld1q_f32(t.cols.a.as_ptr()),
                vld1q_f32(t.cols.a.as_ptr().add(4)),
                vld1q_f32(t.cols.b.as_ptr()),
                vld1q_f32(t.cols.b.as_ptr().add(4)),
            )
        };
        for r in 0..t.mrows {
            let (f0, f1) = (
                vcvtq_f32_s32(exact4(t, r, 0)),
                vcvtq_f32_s32(exact4(t, r, 1)),
            );
            let (o0, o1) = if has_bias {
                // fmla: one rounding, exactly f32::mul_add.
                (vfmaq_f32(c0, f0, s0), vfmaq_f32(c1, f1, s1))
            } else {
                (vmulq_f32(f0, s0), vmulq_f32(f1, s1))
            };
            let mut tmp = [0f32; NR];
            // SAFETY: tmp has 8 elements; the row's ncols floats are the
            // caller's.
            unsafe {
                vst1q_f32(tmp.as_mut_ptr(), o0);
                vst1q_f32(tmp.as_mut_ptr().add(4), o1);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst.add(r * ld), t.ncols);
            }
        }
    }

    /// The leading multiple of 4 of [`super::requant_run`]; returns how many
    /// were done.
    ///
    /// # Safety
    /// NEON available.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn requant_run(acc: &[i32], ch: &Channel, out: &mut [u8]) -> usize {
        assert_eq!(acc.len(), out.len());
        let (vb, vm) = (vdupq_n_f32(ch.bt), vdupq_n_f32(ch.mult));
        let vzp = vdupq_n_s32(ch.zp);
        let vlo = vdupq_n_s32(ch.clamp.lo as i32);
        let vhi = vdupq_n_s32(ch.clamp.hi as i32);
        let n4 = acc.len() / 4 * 4;
        let mut tmp = [0i32; 4];
        for i in (0..n4).step_by(4) {
            // SAFETY: i + 4 <= acc.len(); tmp has 4 elements.
            unsafe {
                let a = vld1q_s32(acc.as_ptr().add(i));
                let f = vmulq_f32(vaddq_f32(vcvtq_f32_s32(a), vb), vm);
                let v = vminq_s32(vmaxq_s32(vqaddq_s32(vcvtnq_s32_f32(f), vzp), vlo), vhi);
                vst1q_s32(tmp.as_mut_ptr(), v);
            }
            for (o, &t) in out[i..i + 4].iter_mut().zip(&tmp) {
                *o = t as u8;
            }
        }
        n4
    }
}
