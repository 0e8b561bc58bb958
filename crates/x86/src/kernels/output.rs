//! The output stages of the int8 GEMM, run on each accumulator tile while
//! it is hot. They consume the output stage core describes once
//! (`rquant_core::output`: [`Requant`] for quint8 outputs, [`Dequant`] for
//! dynamic linear's f32), in three steps:
//! 1. zero-point correction `acc + colterm[n] − zw[n]·rowsum[m]`;
//! 2. requantization (`(f32(acc) + bias_term)·mult`, round half to even,
//!    `+ out_zp`, clamp to `[lo, hi]`) or the float output
//!    `fma(f32(acc), scale_product, bias)`;
//! 3. the store ([`Store`]): rows of contiguous columns are written straight
//!    from the vector registers; a transposed store goes through a local tile.
//!
//! Steps 1–2 are the AVX-512 (16 lanes) / AVX2 / scalar tile functions of
//! `output_avx512.rs`, `output_avx2.rs` and this file, chosen by the path's
//! [`Caps`]; the scalar one is `rquant_core::numerics` itself.

use std::mem::MaybeUninit;

use rquant_core::gemm::{AccTile, Stage, Store};
use rquant_core::numerics::{dynamic_out, requantize_u8_clamped};
use rquant_core::output::{Clamp, Dequant, Requant, ResidualAdd};

use crate::isa::Caps;

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
    pub(crate) fn new(v: &mut [T]) -> Self {
        RawOut {
            ptr: v.as_mut_ptr(),
            len: v.len(),
        }
    }

    /// Over memory not yet initialised (a `Vec`'s spare capacity): the
    /// caller makes it a `T` slice only after every index was written.
    pub(crate) fn uninit(v: &mut [MaybeUninit<T>]) -> Self {
        RawOut {
            ptr: v.as_mut_ptr().cast(),
            len: v.len(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Another handle on the same buffer (for one task of a GEMM whose
    /// tasks write disjoint indices).
    pub(crate) fn share(&self) -> Self {
        RawOut {
            ptr: self.ptr,
            len: self.len,
        }
    }

    /// Write `v` at index `i`.
    ///
    /// # Safety
    /// No other task writes index `i` concurrently; the buffer is alive.
    #[inline]
    pub(crate) unsafe fn write(&self, i: usize, v: T) {
        assert!(i < self.len);
        // SAFETY: in bounds (asserted); exclusivity is the caller's contract.
        unsafe { self.ptr.add(i).write(v) }
    }

    /// The address of index `i` (`i <= len`).
    fn at(&self, i: usize) -> *mut T {
        assert!(i <= self.len);
        // SAFETY: at most one past the end of the buffer.
        unsafe { self.ptr.add(i) }
    }
}

/// The zero-point correction of a tile's columns.
#[derive(Clone, Copy)]
pub(crate) struct ZpCols<'a> {
    pub colterm: &'a [i32],
    pub zw: &'a [i32],
    /// Every `zw` of the weight is 0: no row-sum term.
    pub zw_zero: bool,
}

impl ZpCols<'_> {
    #[inline(always)]
    pub(crate) fn correct(&self, j: usize, raw: i32, rs: i32) -> i32 {
        raw.wrapping_add(self.colterm[j])
            .wrapping_sub(self.zw[j].wrapping_mul(rs))
    }
}

/// One tile and the requantization of its columns (the per-column slices
/// hold the tile's columns, `ncols = zp.colterm.len()`).
pub(crate) struct ReqTile<'a> {
    /// `mrows` rows of raw accumulators, `nr` apart.
    pub acc: &'a [i32],
    pub nr: usize,
    pub mrows: usize,
    /// The rows' activation sums.
    pub rs: &'a [i32],
    pub zp: ZpCols<'a>,
    pub bt: &'a [f32],
    pub mult: &'a [f32],
    pub out_zp: i32,
    pub clamp: Clamp,
}

impl ReqTile<'_> {
    pub(crate) fn ncols(&self) -> usize {
        self.zp.colterm.len()
    }
    /// The scalar definition for element (r, j).
    #[inline]
    pub(crate) fn scalar(&self, r: usize, j: usize) -> u8 {
        let a = self.zp.correct(j, self.acc[r * self.nr + j], self.rs[r]);
        requantize_u8_clamped(a, self.bt[j], self.mult[j], self.out_zp, self.clamp)
    }
}

/// One tile and the float output of its columns (dynamic linear).
pub(crate) struct FloatTile<'a> {
    pub acc: &'a [i32],
    pub nr: usize,
    pub mrows: usize,
    pub rs: &'a [i32],
    pub zp: ZpCols<'a>,
    /// `f32(x_scale)·f32(w_scale[n])`.
    pub sp: &'a [f32],
    pub bias: Option<&'a [f32]>,
}

impl FloatTile<'_> {
    pub(crate) fn ncols(&self) -> usize {
        self.zp.colterm.len()
    }
    #[inline]
    pub(crate) fn scalar(&self, r: usize, j: usize) -> f32 {
        let a = self.zp.correct(j, self.acc[r * self.nr + j], self.rs[r]);
        dynamic_out(a, self.sp[j], self.bias.map(|b| b[j]))
    }
}

/// Largest tile of any x86 kernel (16×32: the AVX-512 two-pass entry's
/// panels): the local tile of a transposed store.
const TILE_MAX: usize = 16 * 32;

/// Store `rows` (a function writing the tile as rows of contiguous columns,
/// `ld` apart, at a pointer) through `store` into `out`.
///
/// # Safety
/// `rows(p, ld)` writes exactly the tile's `mrows × ncols` elements, row `r`
/// at `p + r·ld`, and nothing else; no other task stores this tile's indices.
unsafe fn store_tile<T: Copy + Default>(
    out: &RawOut<T>,
    store: Store,
    t: &AccTile<'_>,
    rows: impl FnOnce(*mut T, usize),
) {
    assert!(store.last(t) < out.len(), "output tile out of bounds");
    match store {
        Store::Rows { ld, .. } => rows(out.at(store.index(t.m0, t.n0)), ld),
        // SAFETY: the caller's contract.
        Store::Cols { .. } => unsafe { store_cols(out, store, t, rows) },
    }
}

/// [`store_tile`]'s transposed store, out of line: its local tile would
/// otherwise sit in the frame of every row-major store (a 2 KiB frame per
/// tile measured 5% slower on a float-output GEMM).
///
/// # Safety
/// As [`store_tile`].
#[inline(never)]
unsafe fn store_cols<T: Copy + Default>(
    out: &RawOut<T>,
    store: Store,
    t: &AccTile<'_>,
    rows: impl FnOnce(*mut T, usize),
) {
    // Rows are pixels here: requantize into a local tile, then store each
    // column's rows contiguously.
    let mut tmp = [T::default(); TILE_MAX];
    assert!(t.mrows * t.ncols <= TILE_MAX);
    rows(tmp.as_mut_ptr(), t.ncols);
    for j in 0..t.ncols {
        for r in 0..t.mrows {
            // SAFETY: in bounds (the tile's last index was checked) and
            // owned by this tile (the caller's contract).
            unsafe { out.write(store.index(t.m0 + r, t.n0 + j), tmp[r * t.ncols + j]) };
        }
    }
}

/// quint8 output through a [`Requant`] (columns `col0 ..` of it), and
/// optionally a fused residual add ([`Residual`]) on each stored tile.
pub(crate) struct RequantStage<'a> {
    caps: Caps,
    r: &'a Requant,
    col0: usize,
    out: RawOut<u8>,
    store: Store,
    res: Option<Residual<'a>>,
}

/// The second operand of a residual add fused into the output stage: its
/// codes, stored at the same indices as the output, and the add.
#[derive(Clone, Copy)]
pub(crate) struct Residual<'a> {
    pub data: &'a [u8],
    pub add: &'a ResidualAdd,
}

/// `a[i] = add.apply(a[i], b[i])` over a run of `b.len()` codes at `a`,
/// with the path's vector width.
///
/// # Safety
/// `a` is valid for reads and writes of `b.len()` bytes that no other
/// thread accesses; the path of `caps` was detected.
pub(crate) unsafe fn residual_add_run(caps: Caps, a: *mut u8, b: &[u8], add: &ResidualAdd) {
    #[cfg(target_arch = "x86_64")]
    if caps.avx512 {
        // SAFETY: AVX-512 detected; the run is the caller's.
        return unsafe { super::residual_add_u8_row_avx512::add_row(a, b.as_ptr(), b.len(), add) };
    } else if caps.avx2 {
        // SAFETY: AVX2 detected; the run is the caller's.
        return unsafe { super::residual_add_u8_row_avx2::add_row(a, b.as_ptr(), b.len(), add) };
    }
    let _ = caps;
    for (i, &y) in b.iter().enumerate() {
        // SAFETY: inside the caller's run.
        unsafe { *a.add(i) = add.apply(*a.add(i), y) };
    }
}

/// `a[i] = add.apply(a[i], b[i])` over two equally long slices.
pub(crate) fn residual_add_slice(caps: Caps, a: &mut [u8], b: &[u8], add: &ResidualAdd) {
    assert_eq!(a.len(), b.len());
    // SAFETY: `a` is exclusively borrowed and as long as `b`.
    unsafe { residual_add_run(caps, a.as_mut_ptr(), b, add) }
}

impl<'a> RequantStage<'a> {
    pub(crate) fn new(
        caps: Caps,
        r: &'a Requant,
        col0: usize,
        out: RawOut<u8>,
        store: Store,
    ) -> Self {
        RequantStage {
            caps,
            r,
            col0,
            out,
            store,
            res: None,
        }
    }

    /// Add `res` to every stored tile (its data as long as the output).
    pub(crate) fn with_residual(mut self, res: Option<Residual<'a>>) -> Self {
        if let Some(x) = &res {
            assert_eq!(x.data.len(), self.out.len(), "residual length");
        }
        self.res = res;
        self
    }
}

/// Requantize the tile into rows `ld` apart at `dst`.
///
/// # Safety
/// `dst` is valid for the tile's rows (`ncols` each, `ld` apart), which no
/// other task writes; the path of `caps` was detected.
unsafe fn requant_rows(caps: Caps, tame: bool, t: &ReqTile<'_>, dst: *mut u8, ld: usize) {
    #[cfg(target_arch = "x86_64")]
    if caps.avx2 {
        // SAFETY (all three): the caps come from a detected path; `tame` is
        // the tame tiles' range precondition; the outputs are the caller's.
        unsafe {
            if tame && caps.avx512 {
                super::output_avx512::requant_tile_tame(t, dst, ld);
            } else if tame {
                super::output_avx2::requant_tile_tame(t, dst, ld);
            } else {
                super::output_avx2::requant_tile(t, dst, ld);
            }
        }
        return;
    }
    let _ = (caps, tame);
    for r in 0..t.mrows {
        for j in 0..t.ncols() {
            // SAFETY: inside row r of the caller's outputs.
            unsafe { dst.add(r * ld + j).write(t.scalar(r, j)) };
        }
    }
}

impl Stage for RequantStage<'_> {
    fn finish(&self, t: &AccTile<'_>) {
        let r = self.r;
        let cols = self.col0 + t.n0..self.col0 + t.n0 + t.ncols;
        let rt = ReqTile {
            acc: t.acc,
            nr: t.nr,
            mrows: t.mrows,
            rs: t.rowsums,
            zp: ZpCols {
                colterm: &r.zp.colterm[cols.clone()],
                zw: &r.zp.zw[cols.clone()],
                zw_zero: r.zp.zw_all_zero,
            },
            bt: &r.bias_term[cols.clone()],
            mult: &r.mult[cols],
            out_zp: r.out_zp,
            clamp: r.clamp,
        };
        // SAFETY: the driver hands every tile to one task only; requant_rows
        // writes exactly the tile's rows.
        unsafe {
            store_tile(&self.out, self.store, t, |dst, ld| {
                requant_rows(self.caps, r.tame, &rt, dst, ld)
            })
        };
        if let Some(res) = &self.res {
            // The tile's outputs as contiguous runs (rows, or columns of a
            // transposed store), each with the same run of the residual.
            let (runs, len) = match self.store {
                Store::Rows { .. } => (t.mrows, t.ncols),
                Store::Cols { .. } => (t.ncols, t.mrows),
            };
            for q in 0..runs {
                let i = match self.store {
                    Store::Rows { .. } => self.store.index(t.m0 + q, t.n0),
                    Store::Cols { .. } => self.store.index(t.m0, t.n0 + q),
                };
                // SAFETY: the run i..i + len holds this tile's outputs (in
                // bounds: store_tile checked the tile's last index), which
                // only this task writes; the residual is as long as the output.
                unsafe {
                    residual_add_run(self.caps, self.out.at(i), &res.data[i..i + len], res.add)
                };
            }
        }
    }
}

/// f32 output of dynamic linear through a [`Dequant`] and the weight's bias.
pub(crate) struct FloatStage<'a> {
    caps: Caps,
    d: &'a Dequant,
    bias: Option<&'a [f32]>,
    out: RawOut<f32>,
    store: Store,
}

impl<'a> FloatStage<'a> {
    pub(crate) fn new(
        caps: Caps,
        d: &'a Dequant,
        bias: Option<&'a [f32]>,
        out: RawOut<f32>,
        store: Store,
    ) -> Self {
        FloatStage {
            caps,
            d,
            bias,
            out,
            store,
        }
    }
}

impl Stage for FloatStage<'_> {
    fn finish(&self, t: &AccTile<'_>) {
        let d = self.d;
        let cols = t.n0..t.n0 + t.ncols;
        let ft = FloatTile {
            acc: t.acc,
            nr: t.nr,
            mrows: t.mrows,
            rs: t.rowsums,
            zp: ZpCols {
                colterm: &d.zp.colterm[cols.clone()],
                zw: &d.zp.zw[cols.clone()],
                zw_zero: d.zp.zw_all_zero,
            },
            sp: &d.scale_product[cols.clone()],
            bias: self.bias.map(|b| &b[cols]),
        };
        let caps = self.caps;
        // SAFETY: `store_tile` passes the tile's own rows.
        let rows = |dst: *mut f32, ld: usize| unsafe { float_rows(caps, &ft, dst, ld) };
        // SAFETY: the driver hands every tile to one task only; `rows`
        // writes exactly the tile's rows.
        unsafe { store_tile(&self.out, self.store, t, rows) };
    }
}

/// Write a float tile's rows at `dst` (rows `ld` apart) with the stage of
/// the path of `caps`.
///
/// # Safety
/// `dst` is valid for `ft.mrows` rows of `ft.ncols()` floats, `ld` apart,
/// that no other thread accesses; `caps` come from a detected path.
unsafe fn float_rows(caps: Caps, ft: &FloatTile<'_>, dst: *mut f32, ld: usize) {
    #[cfg(target_arch = "x86_64")]
    if caps.avx2 {
        // SAFETY: the caps come from a detected path (AVX-512F, or AVX2 +
        // FMA); the rows are the caller's.
        unsafe {
            if caps.avx512 {
                super::output_avx512::float_tile(ft, dst, ld);
            } else {
                super::output_avx2::float_tile(ft, dst, ld);
            }
        }
        return;
    }
    let _ = caps;
    for r in 0..ft.mrows {
        for j in 0..ft.ncols() {
            // SAFETY: inside row r of the tile's outputs.
            unsafe { dst.add(r * ld + j).write(ft.scalar(r, j)) };
        }
    }
}

/// One channel's requantization constants, for a run of corrected
/// accumulators (depthwise conv).
pub(crate) struct Channel<'a> {
    /// The constants repeated over the run (the vector stage reads per-lane
    /// arrays), and zeros for the zero-point terms.
    pub bt: &'a [f32],
    pub mult: &'a [f32],
    pub zeros: &'a [i32],
    pub out_zp: i32,
    pub clamp: Clamp,
}

/// Requantize a run of already-corrected accumulators of one channel into `out`.
pub(crate) fn requant_run(caps: Caps, acc: &[i32], ch: &Channel<'_>, out: &mut [u8]) {
    let n = acc.len();
    assert!(ch.bt.len() >= n && ch.mult.len() >= n && ch.zeros.len() >= n && out.len() >= n);
    if !caps.avx2 {
        // Scalar path: no zero-point terms to add, so one plain loop (the
        // tile form's per-element correction made the scalar depthwise conv
        // 2.3x slower).
        for (((o, &a), &bt), &m) in out.iter_mut().zip(acc).zip(ch.bt).zip(ch.mult) {
            *o = requantize_u8_clamped(a, bt, m, ch.out_zp, ch.clamp);
        }
        return;
    }
    let t = ReqTile {
        acc,
        nr: n,
        mrows: 1,
        rs: &[0],
        zp: ZpCols {
            colterm: &ch.zeros[..n],
            zw: &ch.zeros[..n],
            zw_zero: true,
        },
        bt: &ch.bt[..n],
        mult: &ch.mult[..n],
        out_zp: ch.out_zp,
        clamp: ch.clamp,
    };
    // SAFETY: one row of n outputs, exclusively borrowed; caps from a
    // detected path. (Not `tame`: depthwise constants are not range-checked.)
    unsafe { requant_rows(caps, false, &t, out.as_mut_ptr(), n) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use rquant_core::output::{Clamp, Requant, RequantSpec};

    /// The scalar stage and every detected path's.
    fn all_caps() -> Vec<Caps> {
        let scalar = Caps {
            avx2: false,
            avx512: false,
        };
        std::iter::once(scalar)
            .chain(
                crate::isa::Isa::ALL
                    .into_iter()
                    .filter(|i| i.detected())
                    .map(|i| i.caps()),
            )
            .collect()
    }

    /// The transposed store on every vector width: the same bytes as the
    /// row store, transposed.
    #[test]
    fn transposed_store_is_the_transpose_of_the_row_store() {
        let (m, n, k) = (7, 21, 9);
        let cs: Vec<i32> = (0..n as i32).map(|c| c * 3 - 20).collect();
        let wq: Vec<(f64, i64)> = (0..n)
            .map(|c| (0.01 + c as f64 * 1e-3, c as i64 % 3))
            .collect();
        let bias: Vec<f32> = (0..n).map(|c| c as f32 * 0.5 - 3.0).collect();
        let r = Requant::new(&RequantSpec {
            k,
            col_sums: &cs,
            w_qparams: &wq,
            per_channel: true,
            bias: Some(&bias),
            x_scale: 0.05,
            x_zp: 7,
            out_scale: 0.2,
            out_zp: 100,
            clamp: Clamp { lo: 20, hi: 200 },
        });
        let acc: Vec<i32> = (0..8 * 32).map(|i| (i * 7919) % 2000 - 1000).collect();
        let rs: Vec<i32> = (0..8).map(|i| i * 13).collect();
        let caps_list = all_caps();
        for caps in caps_list {
            let mut rows = vec![0u8; m * n];
            let mut cols = vec![0u8; m * n];
            for (buf, store) in [
                (&mut rows, Store::Rows { base: 0, ld: n }),
                (&mut cols, Store::Cols { base: 0, ld: m }),
            ] {
                let st = RequantStage::new(caps, &r, 0, RawOut::new(buf), store);
                for (m0, n0, mrows, ncols) in [(0, 0, 7, 16), (0, 16, 7, 5)] {
                    st.finish(&AccTile {
                        acc: &acc,
                        nr: 32,
                        m0,
                        mrows,
                        n0,
                        ncols,
                        rowsums: &rs[m0..m0 + mrows],
                    });
                }
            }
            for i in 0..m {
                for j in 0..n {
                    assert_eq!(rows[i * n + j], cols[j * m + i], "{caps:?} ({i},{j})");
                    let t = j % 16;
                    let want = r.apply(j, acc[i * 32 + t], rs[i]);
                    assert_eq!(rows[i * n + j], want, "{caps:?} ({i},{j})");
                }
            }
        }
    }

    /// The float tile at every offset of its rows from a 64-byte line (the
    /// AVX-512 stage stores line-aligned vectors when a row starts off a
    /// line): full 32- and 16-column tiles and tails, with and without bias
    /// and row-sum terms, equal to the scalar formula, and nothing written
    /// outside the tile.
    #[test]
    fn float_tile_at_every_line_offset() {
        let nr = 32;
        let acc: Vec<i32> = (0..8 * nr as i32)
            .map(|i| (i * 7919) % 2000 - 1000)
            .collect();
        let rs: Vec<i32> = (0..8).map(|i| i * 13 - 40).collect();
        let colterm: Vec<i32> = (0..nr as i32).map(|c| c * 3 - 20).collect();
        let zw: Vec<i32> = (0..nr as i32).map(|c| c % 3).collect();
        let zeros = vec![0; nr];
        let sp: Vec<f32> = (0..nr).map(|c| 0.01 + c as f32 * 1e-3).collect();
        let bias: Vec<f32> = (0..nr).map(|c| c as f32 * 0.5 - 3.0).collect();
        let caps_list = all_caps();
        // A 64-byte aligned buffer to place the tile at each float offset.
        let mut buf = vec![0f32; 16 + 8 * 80 + 64];
        let base = buf.as_ptr().align_offset(64);
        for caps in caps_list {
            for (ncols, mrows, ld) in [
                (32, 7, 48),
                (32, 3, 37),
                (16, 5, 40),
                (21, 4, 32),
                (7, 2, 9),
            ] {
                for zw_zero in [true, false] {
                    for with_bias in [false, true] {
                        let ft = FloatTile {
                            acc: &acc,
                            nr,
                            mrows,
                            rs: &rs[..mrows],
                            zp: ZpCols {
                                colterm: &colterm[..ncols],
                                // (zw_zero promises every zw is 0.)
                                zw: if zw_zero {
                                    &zeros[..ncols]
                                } else {
                                    &zw[..ncols]
                                },
                                zw_zero,
                            },
                            sp: &sp[..ncols],
                            bias: with_bias.then(|| &bias[..ncols]),
                        };
                        for o in 0..16 {
                            buf.fill(f32::NAN);
                            let at = base + o;
                            assert!(at + (mrows - 1) * ld + ncols <= buf.len());
                            // SAFETY: the tile's rows lie inside buf (asserted).
                            unsafe { float_rows(caps, &ft, buf.as_mut_ptr().add(at), ld) };
                            for (i, v) in buf.iter().enumerate() {
                                let (r, j) = (
                                    (i as isize - at as isize).div_euclid(ld as isize),
                                    (i as isize - at as isize).rem_euclid(ld as isize),
                                );
                                let inside =
                                    i >= at && (r as usize) < mrows && (j as usize) < ncols;
                                if inside {
                                    let want = ft.scalar(r as usize, j as usize);
                                    assert_eq!(
                                        v.to_bits(),
                                        want.to_bits(),
                                        "{caps:?} ncols {ncols} ld {ld} offset {o} ({r},{j})"
                                    );
                                } else {
                                    assert!(v.is_nan(), "{caps:?} ncols {ncols} ld {ld} offset {o}: wrote outside the tile at {i}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
