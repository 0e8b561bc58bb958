//! The output pipeline, applied to each accumulator tile while it is hot:
//! zero-point correction (row/column sums), then either requantization to
//! quint8 (bias, per-tensor/per-channel multiplier, relu clamp) or the float
//! output of dynamic linear. The scalar stage calls `rquant_core::numerics`
//! directly; the AVX2 stage ([`super::output_avx2`]) computes the same
//! operations lane by lane and falls back to the scalar formula for lanes
//! whose value is out of the clamp range or NaN.

use rquant_core::numerics::{bias_term, dynamic_out, requantize_u8, RequantChannel};

use crate::isa::Isa;
use std::sync::Arc;

use crate::pack::{PackedB, RequantConsts};

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
}

/// Where a tile's outputs go: element (m, n) of the GEMM at
/// `base + m·ldm + n·ldn` of the output buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutLayout {
    pub base: usize,
    pub ldm: usize,
    pub ldn: usize,
}

/// One output stage.
pub(crate) trait Epilogue: Sync {
    /// Finish `mrows × ncols` raw accumulators (row r at `acc[r·nr..]`) of
    /// GEMM rows `m0..` and columns `n0..`; `rs` holds the rows' activation sums.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        acc: &[i32],
        nr: usize,
        m0: usize,
        mrows: usize,
        n0: usize,
        ncols: usize,
        rs: &[i32],
    );
}

/// The signature of the AVX2 and AVX-512 `requant_tile_tame` stages.
#[cfg(target_arch = "x86_64")]
type TameTile = unsafe fn(
    &[i32],
    usize,
    usize,
    &[i32],
    &[i32],
    bool,
    &[i32],
    &[f32],
    &[f32],
    i32,
    bool,
    *mut u8,
    usize,
);

/// `K·zx·zw[n] − zx·Σw[n]` (wrapping): the column part of the zero-point correction.
fn col_terms(b: &PackedB, zx: i32) -> Vec<i32> {
    let k = b.k as i32;
    b.col_sums
        .iter()
        .zip(&b.zw)
        .map(|(&cs, &zw)| {
            k.wrapping_mul(zx)
                .wrapping_mul(zw)
                .wrapping_sub(zx.wrapping_mul(cs))
        })
        .collect()
}

#[inline(always)]
fn correct(raw: i32, colterm: i32, zw: i32, rs: i32) -> i32 {
    raw.wrapping_add(colterm).wrapping_sub(zw.wrapping_mul(rs))
}

fn check_span(len: usize, l: OutLayout, m0: usize, mrows: usize, n0: usize, ncols: usize) {
    let last = l.base + (m0 + mrows - 1) * l.ldm + (n0 + ncols - 1) * l.ldn;
    assert!(last < len, "output tile out of bounds");
}

/// quint8 output: `requantize_u8` per element.
pub(crate) struct RequantOut<'a> {
    isa: Isa,
    colterm: Vec<i32>,
    zw: &'a [i32],
    zw_zero: bool,
    bt: Arc<Vec<f32>>,
    mult: Arc<Vec<f32>>,
    zp: i32,
    relu: bool,
    /// Every `(f32(acc) + bt)·mult` is finite and below 2^62: no lane needs
    /// the NaN / overflow handling.
    tame: bool,
    out: RawOut<u8>,
    layout: OutLayout,
}

impl<'a> RequantOut<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        isa: Isa,
        b: &'a PackedB,
        x_scale: f64,
        x_zp: i32,
        bias: Option<&[f32]>,
        out_scale: f64,
        out_zp: i32,
        relu: bool,
        out: &mut [u8],
        layout: OutLayout,
    ) -> Self {
        let key = (
            x_scale.to_bits(),
            out_scale.to_bits(),
            bias.map_or(0, |v| v.as_ptr() as usize),
        );
        let mut cache = b.requant_cache.lock().unwrap_or_else(|e| e.into_inner());
        let consts = match cache.as_ref() {
            Some(c) if c.key == key => c.clone(),
            _ => {
                let mut bt = Vec::with_capacity(b.n);
                let mut mult = Vec::with_capacity(b.n);
                for c in 0..b.n {
                    let ch = RequantChannel::new(x_scale, b.scales[c], out_scale);
                    mult.push(ch.multiplier);
                    bt.push(bias.map_or(0.0, |bv| {
                        bias_term(bv[c], ch.act_times_w_scale, b.per_channel)
                    }));
                }
                let tame = bt.iter().zip(&mult).all(|(&b, &m)| {
                    let bound = (2f64.powi(31) + (b as f64).abs()) * (m as f64).abs();
                    bound.is_finite() && bound < 2f64.powi(62)
                });
                let c = RequantConsts {
                    key,
                    bt: Arc::new(bt),
                    mult: Arc::new(mult),
                    tame,
                };
                *cache = Some(c.clone());
                c
            }
        };
        drop(cache);
        let (bt, mult, tame) = (consts.bt, consts.mult, consts.tame);
        RequantOut {
            isa,
            tame,
            colterm: col_terms(b, x_zp),
            zw: &b.zw,
            zw_zero: b.zw_all_zero,
            bt,
            mult,
            zp: out_zp,
            relu,
            out: RawOut::new(out),
            layout,
        }
    }
}

impl RequantOut<'_> {
    /// Requantize `mrows × ncols` accumulators into `dst`, element (r, j) at
    /// `r·ldm + j·ldn`.
    ///
    /// # Safety
    /// `dst` is valid for those writes and no other task writes them.
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows(
        &self,
        acc: &[i32],
        nr: usize,
        mrows: usize,
        n0: usize,
        ncols: usize,
        rs: &[i32],
        dst: *mut u8,
        ldm: usize,
        ldn: usize,
    ) {
        let cols = n0..n0 + ncols;
        #[cfg(target_arch = "x86_64")]
        if self.isa >= Isa::Avx2 && self.tame && ldn == 1 {
            // The two ISAs' tame tiles share one signature.
            let tile: TameTile = if self.isa >= Isa::Avx512 {
                super::output_avx512::requant_tile_tame
            } else {
                super::output_avx2::requant_tile_tame
            };
            // SAFETY: the chosen ISA was detected (the isa comes from an
            // engine value); the caller guarantees the outputs; `tame` is
            // the tiles' range precondition.
            unsafe {
                tile(
                    acc,
                    nr,
                    mrows,
                    &self.colterm[cols.clone()],
                    &self.zw[cols.clone()],
                    self.zw_zero,
                    rs,
                    &self.bt[cols.clone()],
                    &self.mult[cols.clone()],
                    self.zp,
                    self.relu,
                    dst,
                    ldm,
                )
            };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.isa >= Isa::Avx2 {
            // SAFETY: AVX2 was detected (the isa comes from an engine value);
            // the caller guarantees the outputs.
            unsafe {
                super::output_avx2::requant_tile(
                    acc,
                    nr,
                    mrows,
                    &self.colterm[cols.clone()],
                    &self.zw[cols.clone()],
                    self.zw_zero,
                    rs,
                    &self.bt[cols.clone()],
                    &self.mult[cols.clone()],
                    self.zp,
                    self.relu,
                    dst,
                    ldm,
                    ldn,
                )
            };
            return;
        }
        for r in 0..mrows {
            let row = &acc[r * nr..r * nr + ncols];
            let out = dst.add(r * ldm);
            for (j, &raw) in row.iter().enumerate() {
                let n = n0 + j;
                let a = correct(raw, self.colterm[n], self.zw[n], rs[r]);
                let q = requantize_u8(a, self.bt[n], self.mult[n], self.zp, self.relu);
                // SAFETY: in bounds (check_span) and owned by this tile.
                unsafe { out.add(j * ldn).write(q) };
            }
        }
    }
}

impl Epilogue for RequantOut<'_> {
    fn apply(
        &self,
        acc: &[i32],
        nr: usize,
        m0: usize,
        mrows: usize,
        n0: usize,
        ncols: usize,
        rs: &[i32],
    ) {
        let l = self.layout;
        check_span(self.out.len, l, m0, mrows, n0, ncols);
        let start = l.base + m0 * l.ldm + n0 * l.ldn;
        if l.ldm == 1 && l.ldn != 1 && mrows > 1 {
            // Transposed output (NCHW conv: rows are pixels): requantize into
            // a local tile, then store each column's rows contiguously.
            let mut t = [0u8; 8 * 32];
            assert!(mrows * ncols <= t.len());
            // SAFETY: the local tile holds mrows·ncols bytes (asserted).
            unsafe { self.rows(acc, nr, mrows, n0, ncols, rs, t.as_mut_ptr(), ncols, 1) };
            for j in 0..ncols {
                for r in 0..mrows {
                    // SAFETY: in bounds (check_span) and owned by this tile.
                    unsafe {
                        self.out
                            .ptr
                            .add(start + j * l.ldn + r)
                            .write(t[r * ncols + j])
                    };
                }
            }
        } else {
            // SAFETY: in bounds (check_span) and owned by this tile.
            unsafe {
                self.rows(
                    acc,
                    nr,
                    mrows,
                    n0,
                    ncols,
                    rs,
                    self.out.ptr.add(start),
                    l.ldm,
                    l.ldn,
                )
            };
        }
    }
}

/// f32 output of dynamic linear: `dynamic_out` per element.
pub(crate) struct FloatOut<'a> {
    isa: Isa,
    colterm: Vec<i32>,
    zw: &'a [i32],
    zw_zero: bool,
    sp: Vec<f32>,
    bias: Option<&'a [f32]>,
    out: RawOut<f32>,
    layout: OutLayout,
}

impl<'a> FloatOut<'a> {
    pub(crate) fn new(
        isa: Isa,
        b: &'a PackedB,
        x_scale: f64,
        x_zp: i32,
        bias: Option<&'a [f32]>,
        out: &mut [f32],
        layout: OutLayout,
    ) -> Self {
        FloatOut {
            isa,
            colterm: col_terms(b, x_zp),
            zw: &b.zw,
            zw_zero: b.zw_all_zero,
            sp: b
                .scales
                .iter()
                .map(|&s| (x_scale as f32) * (s as f32))
                .collect(),
            bias,
            out: RawOut::new(out),
            layout,
        }
    }
}

impl Epilogue for FloatOut<'_> {
    fn apply(
        &self,
        acc: &[i32],
        nr: usize,
        m0: usize,
        mrows: usize,
        n0: usize,
        ncols: usize,
        rs: &[i32],
    ) {
        let l = self.layout;
        check_span(self.out.len, l, m0, mrows, n0, ncols);
        let cols = n0..n0 + ncols;
        let start = l.base + m0 * l.ldm + n0 * l.ldn;
        #[cfg(target_arch = "x86_64")]
        if self.isa >= Isa::Avx2 {
            // SAFETY: AVX-512F / AVX2+FMA were detected (the isa comes from an
            // engine value); outputs in bounds (check_span) and owned by this tile.
            unsafe {
                let f = if self.isa >= Isa::Avx512 {
                    super::output_avx512::float_tile
                } else {
                    super::output_avx2::float_tile
                };
                f(
                    acc,
                    nr,
                    mrows,
                    &self.colterm[cols.clone()],
                    &self.zw[cols.clone()],
                    self.zw_zero,
                    rs,
                    &self.sp[cols.clone()],
                    self.bias.map(|b| &b[cols.clone()]),
                    self.out.ptr.add(start),
                    l.ldm,
                    l.ldn,
                )
            };
            return;
        }
        for r in 0..mrows {
            let row = &acc[r * nr..r * nr + ncols];
            let start = l.base + (m0 + r) * l.ldm + n0 * l.ldn;
            for (j, &raw) in row.iter().enumerate() {
                let n = n0 + j;
                let a = correct(raw, self.colterm[n], self.zw[n], rs[r]);
                let v = dynamic_out(a, self.sp[n], self.bias.map(|b| b[n]));
                // SAFETY: in bounds (check_span) and owned by this tile.
                unsafe { self.out.ptr.add(start + j * l.ldn).write(v) };
            }
        }
    }
}

/// Requantize a run of already-corrected accumulators that share one
/// channel's constants into `out` (contiguous).
#[allow(clippy::too_many_arguments)]
pub(crate) fn requant_run(
    isa: Isa,
    acc: &[i32],
    bt: &[f32],
    mult: &[f32],
    zeros: &[i32],
    zp: i32,
    relu: bool,
    out: &mut [u8],
) {
    let n = acc.len();
    assert!(bt.len() >= n && mult.len() >= n && zeros.len() >= n && out.len() >= n);
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        // SAFETY: AVX2 was detected (isa comes from an engine value); all
        // slices hold n elements (asserted) and out is exclusively borrowed.
        unsafe {
            super::output_avx2::requant_row(
                acc,
                &zeros[..n],
                &zeros[..n],
                true,
                0,
                &bt[..n],
                &mult[..n],
                zp,
                relu,
                out.as_mut_ptr(),
                1,
            )
        };
        return;
    }
    for j in 0..n {
        out[j] = requantize_u8(acc[j], bt[j], mult[j], zp, relu);
    }
}
