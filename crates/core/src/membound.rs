//! The memory-bound quantized ops — max / average / adaptive pooling, add /
//! add_relu / mul (with the `[N,C,1,1]` broadcast of squeeze-excitation),
//! clamps, the 256-entry tables, cat and requantize — written once as
//! drivers over one ISA path's row kernels, as [`crate::gemm`] is for the
//! GEMMs.
//!
//! An engine owns what depends on the ISA: a [`Kernels`] table of a few
//! safe row kernels (each checks its operands, then enters SIMD code only on
//! a path whose detection succeeded). Everything else is here: walking the
//! geometry (NHWC pixels, NCHW rows, broadcast segments, cat's interleaved
//! channel runs), padding and ceil-mode borders, the exactness guards that
//! send unusual parameters to the scalar code, and the split into tasks on
//! the engine's threads ([`Par`]; engines pass [`Pool`], rquant's one pool). [`SCALAR`] is the table of plain-loop
//! kernels (the scalar paths' table, and the tails of vector kernels).
//!
//! Every output element is computed by the same operations whatever the
//! split into tasks, runs or vectors, and those operations are the ones of
//! [`crate::portable`] (the oracle): the kernel tester compares every
//! element with it, bit for bit. Where the vector arithmetic would need a
//! range argument to equal the oracle (average pooling's division in f32,
//! add / mul near f32 overflow), the driver checks the range and otherwise
//! computes those elements with the oracle's own integer / scalar formulas.
//!
//! Drivers write into `&mut [MaybeUninit<u8>]` (an engine's fresh output
//! buffer, never zeroed) and write every element of it.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::numerics::{dequantize_val, div_rne, inv_scale, quantize_val, rne};
use crate::ops::{adaptive_window, AvgPool2dParams, BinaryOp, MaxPool2dParams, OutQ, PoolGeometry};
use crate::portable::{self, avg_pool_window, max_pool_window, mul_multiplier};
use crate::{MemoryFormat, QTensor};

/// An output byte not yet written.
pub type Out = MaybeUninit<u8>;

/// A run of output pixels whose pooling windows have the same shape: pixel
/// `p` (of `npix`) reads the taps `src[p·step + i·sy + j·sx + ch]` for
/// `i < ny`, `j < nx`, channel `ch < c`, and writes `dst[p·c + ch]`. On NHWC
/// data `c` is the channel count; NCHW rows use `c` = a row's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Bytes per output pixel (channels).
    pub c: usize,
    /// Source offset between tap rows and between taps of a row (dilation included).
    pub sy: usize,
    pub sx: usize,
    /// Taps per window: rows and columns (both at least 1).
    pub ny: usize,
    pub nx: usize,
    /// Source offset between the first taps of consecutive output pixels.
    pub step: usize,
    /// Output pixels in the run (at least 1).
    pub npix: usize,
}

impl Window {
    /// Source bytes the run spans, from its first tap.
    pub fn src_len(&self) -> usize {
        (self.npix - 1) * self.step + (self.ny - 1) * self.sy + (self.nx - 1) * self.sx + self.c
    }
    /// Panics unless the run is non-empty and `src` / `dst` (lengths) hold
    /// it: the check each kernel makes before its SIMD code.
    pub fn check(&self, src: usize, dst: usize) {
        assert!(
            self.c > 0 && self.ny > 0 && self.nx > 0 && self.npix > 0,
            "empty pooling run {self:?}"
        );
        assert!(
            src >= self.src_len() && dst >= self.npix * self.c,
            "pooling run {self:?} does not fit src {src} / dst {dst}"
        );
    }
}

/// How an average-pooling window's sum becomes a code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Finish {
    /// `rne(clamp(f32(Σ + add) / div, 0, 255))`: avg_pool2d's exact
    /// `div_rne(Σ − size·zp + zp·div, div)` (the driver only picks it when
    /// `|Σ + add| < 2^23` and `div < 2^24`, where the f32 quotient rounds
    /// like the exact one).
    Div { add: i32, div: f32 },
    /// `rne(clamp(f32(Σ) · recip, 0, 255))`: adaptive_avg_pool2d (Σ < 2^31).
    Recip(f32),
}

impl Finish {
    /// The scalar form, operation for operation the vector kernels'.
    #[inline(always)]
    pub fn apply(self, sum: i32) -> u8 {
        let v = match self {
            Finish::Div { add, div } => (sum + add) as f32 / div,
            Finish::Recip(r) => sum as f32 * r,
        };
        rne(v.clamp(0.0, 255.0)) as u8
    }
}

/// Constants of add / add_relu / mul on one pair of per-tensor operands.
/// Made only when no lane can become NaN ([`BinaryParams::new`]), so
/// vector min / max equal the scalar `f32::max` / `min` of the oracle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BinaryParams {
    pub op: BinaryOp,
    pub sa: f32,
    pub za: i32,
    pub sb: f32,
    pub zb: i32,
    /// `1 / f32(out_scale)` (add) and mul's multiplier.
    pub inv: f32,
    pub mult: f32,
    pub oz: i32,
}

impl BinaryParams {
    /// The constants, or None when a scale is large enough (or the output
    /// scale small enough) for an intermediate to overflow f32 — those
    /// calls run the oracle.
    pub fn new(op: BinaryOp, a: (f64, i64), b: (f64, i64), out: OutQ) -> Option<BinaryParams> {
        let p = BinaryParams {
            op,
            sa: a.0 as f32,
            za: a.1 as i32,
            sb: b.0 as f32,
            zb: b.1 as i32,
            inv: inv_scale(out.scale),
            mult: mul_multiplier(a.0, b.0, out.scale),
            oz: out.zero_point as i32,
        };
        let tame = (p.sa * 256.0).is_finite()
            && (p.sb * 256.0).is_finite()
            && p.inv.is_finite()
            && p.mult.is_finite();
        tame.then_some(p)
    }
    /// The lowest and highest value before rounding: `−oz`, `255 − oz`.
    pub fn bounds(&self) -> (f32, f32) {
        (-self.oz as f32, (255 - self.oz) as f32)
    }
    /// One element, operation for operation the vector kernels' (and the
    /// oracle's: `portable::binary`).
    #[inline(always)]
    pub fn apply(&self, qa: u8, qb: u8) -> u8 {
        let fa = (qa as i32 - self.za) as f32;
        let fb = (qb as i32 - self.zb) as f32;
        let y = match self.op {
            BinaryOp::Add => (fa * self.sa + fb * self.sb) * self.inv,
            BinaryOp::AddRelu => (fa * self.sa + fb * self.sb).max(0.0) * self.inv,
            // The product of two codes is exact in f32 (|p| ≤ 65025 < 2^24).
            BinaryOp::Mul => fa * fb * self.mult,
        };
        let (lo, hi) = self.bounds();
        (rne(y.max(lo).min(hi)) as i32 + self.oz) as u8
    }
}

/// The second operand of a binary kernel call.
#[derive(Debug, Clone, Copy)]
pub enum Operand<'a> {
    /// As long as the first.
    Same(&'a [u8]),
    /// One row, repeated: the first operand is a whole number of rows
    /// (NHWC pixels against a `[N,C,1,1]` tensor's channel vector).
    Rows(&'a [u8]),
    /// One code for every element (an NCHW plane against one channel).
    Splat(u8),
}

impl Operand<'_> {
    /// The code paired with element `i` of the first operand.
    #[inline(always)]
    pub fn at(&self, i: usize) -> u8 {
        match *self {
            Operand::Same(b) => b[i],
            Operand::Rows(b) => b[i % b.len()],
            Operand::Splat(v) => v,
        }
    }
    /// Panics unless the operand fits a first operand of `len` and an
    /// output of `dst`.
    pub fn check(&self, len: usize, dst: usize) {
        assert_eq!(len, dst, "binary: output length");
        match *self {
            Operand::Same(b) => assert_eq!(b.len(), len, "binary: operand lengths"),
            Operand::Rows(b) => assert!(
                !b.is_empty() && len.is_multiple_of(b.len()),
                "binary: {len} is not a whole number of {}-element rows",
                b.len()
            ),
            Operand::Splat(_) => {}
        }
    }
}

/// One NCHW output row of max pooling: the in-bounds tap rows of the input
/// plane (`src` starts at the first; `ny` rows, `sy` apart, each `w`
/// wide) reduced to one row, then `ow` windows of `kx` taps (`dx` apart,
/// stride `sx`) over it, with `pad` columns of padding on the left (and as
/// many as ceil mode needs on the right), which never win the max.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NchwRow {
    pub w: usize,
    pub sy: usize,
    pub ny: usize,
    pub kx: usize,
    pub sx: usize,
    pub dx: usize,
    pub pad: usize,
    pub ow: usize,
}

/// Zero bytes after the padded row in the scratch, for vector over-reads.
pub const NCHW_SLACK: usize = 256;

impl NchwRow {
    /// Length of the scratch row: the padded input row or the furthest
    /// tap, whichever is longer, plus [`NCHW_SLACK`].
    pub fn scratch_len(&self) -> usize {
        let taps = (self.ow - 1) * self.sx + (self.kx - 1) * self.dx + 1;
        taps.max(self.pad + self.w) + NCHW_SLACK
    }
    /// Panics unless the row is non-empty and fits `src` and `dst`.
    pub fn check(&self, src: usize, dst: usize) {
        assert!(
            self.w > 0 && self.ny > 0 && self.kx > 0 && self.sx > 0 && self.dx > 0 && self.ow > 0,
            "empty max-pool row {self:?}"
        );
        assert!(
            src >= (self.ny - 1) * self.sy + self.w && dst == self.ow,
            "max-pool row {self:?} does not fit src {src} / dst {dst}"
        );
    }
    /// `tmp` resized to [`NchwRow::scratch_len`] and zeroed: the caller
    /// writes the row's vertical max into `tmp[pad..pad + w]` only, so the
    /// padding on both sides stays 0 (which never wins a max).
    pub fn scratch<'t>(&self, tmp: &'t mut Vec<u8>) -> &'t mut [u8] {
        let len = self.scratch_len();
        tmp.clear();
        tmp.resize(len, 0);
        tmp
    }
}

/// Which kernel of a table (for its call counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Max,
    MaxNchw,
    Avg,
    Binary,
    Clamp,
    Lut,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Max,
        Kind::MaxNchw,
        Kind::Avg,
        Kind::Binary,
        Kind::Clamp,
        Kind::Lut,
    ];
}

/// A path's row kernels: safe functions that check their operands (the
/// `check` methods above) before any SIMD code.
pub struct Kernels {
    /// The path, e.g. "avx512vnni" (for messages).
    pub path: &'static str,
    /// `dst[p·c + ch] = max` over the run's taps (NHWC pixels).
    pub max: fn(&Window, &[u8], &mut [Out]),
    /// One NCHW max-pool output row; the `Vec` is reusable scratch.
    pub max_nchw: fn(&NchwRow, &[u8], &mut Vec<u8>, &mut [Out]),
    /// `dst[p·c + ch] = finish(Σ taps)` (NHWC pixels).
    pub avg: fn(&Window, Finish, &[u8], &mut [Out]),
    /// `dst[i] = a[i] op b[i]`.
    pub binary: fn(&BinaryParams, &[u8], Operand<'_>, &mut [Out]),
    /// `dst[i] = min(max(src[i], lo), hi)`.
    pub clamp: fn(&[u8], u8, u8, &mut [Out]),
    /// `dst[r·stride + j] = table[src[r·run + j]]` for every `run`-byte row
    /// `r` of `src` (`stride ≥ run`).
    pub lut: fn(&[u8; 256], &[u8], usize, &mut [Out], usize),
    calls: [AtomicUsize; 6],
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "membound::Kernels({})", self.path)
    }
}

/// What a [`Kernels`] table is made of.
#[derive(Clone, Copy)]
pub struct KernelsSpec {
    pub path: &'static str,
    pub max: fn(&Window, &[u8], &mut [Out]),
    pub max_nchw: fn(&NchwRow, &[u8], &mut Vec<u8>, &mut [Out]),
    pub avg: fn(&Window, Finish, &[u8], &mut [Out]),
    pub binary: fn(&BinaryParams, &[u8], Operand<'_>, &mut [Out]),
    pub clamp: fn(&[u8], u8, u8, &mut [Out]),
    pub lut: fn(&[u8; 256], &[u8], usize, &mut [Out], usize),
}

impl Kernels {
    pub const fn new(s: KernelsSpec) -> Kernels {
        Kernels {
            path: s.path,
            max: s.max,
            max_nchw: s.max_nchw,
            avg: s.avg,
            binary: s.binary,
            clamp: s.clamp,
            lut: s.lut,
            calls: [const { AtomicUsize::new(0) }; 6],
        }
    }
    /// Ops that used kernel `k` of this table in this process (tests use it
    /// to prove that a path's kernels really ran).
    pub fn calls(&self, k: Kind) -> usize {
        self.calls[k as usize].load(Ordering::Relaxed)
    }
    fn ran(&self, k: Kind) {
        self.calls[k as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// How an engine runs the drivers' tasks on its threads.
pub trait Par: Sync {
    /// Threads the tasks may spread over.
    fn threads(&self) -> usize;
    /// `f(i, chunk_i)` over the `chunk`-element chunks of `y` (the last may
    /// be shorter), on the engine's threads.
    fn chunks(&self, y: &mut [Out], chunk: usize, f: &(dyn Fn(usize, &mut [Out]) + Sync));
}

/// Everything on the calling thread.
#[derive(Debug, Clone, Copy)]
pub struct Serial;

impl Par for Serial {
    fn threads(&self) -> usize {
        1
    }
    fn chunks(&self, y: &mut [Out], chunk: usize, f: &(dyn Fn(usize, &mut [Out]) + Sync)) {
        for (i, c) in y.chunks_mut(chunk.max(1)).enumerate() {
            f(i, c);
        }
    }
}

/// A fresh `len`-byte output that the driver `f` fills, or None (and
/// nothing kept) when `f` declines (returns false without writing).
pub fn try_filled(len: usize, f: impl FnOnce(&mut [Out]) -> bool) -> Option<Vec<u8>> {
    let mut y: Vec<u8> = Vec::with_capacity(len);
    if !f(&mut y.spare_capacity_mut()[..len]) {
        return None;
    }
    // SAFETY: `f` is one of this module's drivers, which write every
    // element of the slice they are given when they return true (each
    // output element belongs to exactly one row, run or chunk; the kernel
    // tester compares every element with the oracle).
    unsafe { y.set_len(len) };
    Some(y)
}

/// [`try_filled`] for a driver that always fills.
pub fn filled(len: usize, f: impl FnOnce(&mut [Out])) -> Vec<u8> {
    try_filled(len, |y| {
        f(y);
        true
    })
    .expect("filled")
}

/// rquant's one thread pool ([`crate::threads`]): up to
/// `registry::num_threads()` threads, the caller among them; inside another
/// parallel region, the calling thread alone.
#[derive(Debug, Clone, Copy)]
pub struct Pool;

impl Par for Pool {
    fn threads(&self) -> usize {
        crate::threads::threads_for(usize::MAX)
    }
    fn chunks(&self, y: &mut [Out], chunk: usize, f: &(dyn Fn(usize, &mut [Out]) + Sync)) {
        if self.threads() <= 1 || y.len() <= chunk {
            return Serial.chunks(y, chunk, f);
        }
        crate::threads::par_chunks_mut(y, chunk.max(1), || (), |_, i, c| f(i, c));
    }
}

/// Bytes read and written per task, at least (below it, one thread).
const MIN_TASK_BYTES: usize = 96 << 10;

/// Units (rows, pixels, elements) per task: `units` of `unit_bytes` bytes
/// moved each, spread over at most four tasks per thread.
fn per_task(par: &dyn Par, units: usize, unit_bytes: usize) -> usize {
    let units = units.max(1);
    let threads = par.threads();
    let total = units.saturating_mul(unit_bytes.max(1));
    if threads <= 1 || total < 2 * MIN_TASK_BYTES {
        return units;
    }
    let tasks = (total / MIN_TASK_BYTES).clamp(2, 4 * threads);
    units.div_ceil(tasks)
}

fn fill(dst: &mut [Out], v: u8) {
    for d in dst {
        d.write(v);
    }
}

fn copy(dst: &mut [Out], src: &[u8]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        d.write(s);
    }
}

/// Taps of `[start, end)` stepping by `d`.
fn taps(start: usize, end: usize, d: usize) -> usize {
    if end > start {
        (end - 1 - start) / d + 1
    } else {
        0
    }
}

/// Consecutive output columns with the same window width and `key`,
/// whose first taps advance by a constant step: one kernel call each.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run<K> {
    ox: usize,
    npix: usize,
    x0: usize,
    nx: usize,
    step: usize,
    key: K,
}

fn runs<K: Copy + PartialEq>(cols: impl Iterator<Item = (usize, usize, K)>) -> Vec<Run<K>> {
    let mut v: Vec<Run<K>> = Vec::new();
    for (ox, (x0, nx, key)) in cols.enumerate() {
        if let Some(r) = v.last_mut() {
            let last = r.x0 + (r.npix - 1) * r.step;
            if r.nx == nx && r.key == key && x0 > last && (r.npix == 1 || x0 - last == r.step) {
                if r.npix == 1 {
                    r.step = x0 - last;
                }
                r.npix += 1;
                continue;
            }
        }
        v.push(Run {
            ox,
            npix: 1,
            x0,
            nx,
            step: 0,
            key,
        });
    }
    v
}

// ---------------------------------------------------------------------------
// The scalar table: plain loops, operation for operation the vector kernels'.

fn max_scalar(w: &Window, src: &[u8], dst: &mut [Out]) {
    w.check(src.len(), dst.len());
    max_scalar_part(w, src, dst, 0, w.c);
}

/// Channels `c0..c1` of every pixel of the run (vector kernels' tails).
pub fn max_scalar_part(w: &Window, src: &[u8], dst: &mut [Out], c0: usize, c1: usize) {
    for p in 0..w.npix {
        for ch in c0..c1 {
            let mut m = 0u8;
            for i in 0..w.ny {
                for j in 0..w.nx {
                    m = m.max(src[p * w.step + i * w.sy + j * w.sx + ch]);
                }
            }
            dst[p * w.c + ch].write(m);
        }
    }
}

fn avg_scalar(w: &Window, f: Finish, src: &[u8], dst: &mut [Out]) {
    w.check(src.len(), dst.len());
    avg_scalar_part(w, f, src, dst, 0, w.c);
}

/// Channels `c0..c1` of every pixel of the run (vector kernels' tails).
pub fn avg_scalar_part(w: &Window, f: Finish, src: &[u8], dst: &mut [Out], c0: usize, c1: usize) {
    for p in 0..w.npix {
        for ch in c0..c1 {
            let mut s = 0i32;
            for i in 0..w.ny {
                for j in 0..w.nx {
                    s += src[p * w.step + i * w.sy + j * w.sx + ch] as i32;
                }
            }
            dst[p * w.c + ch].write(f.apply(s));
        }
    }
}

/// The vertical max of an NCHW row into `tmp[pad..pad + w]` (scalar).
pub fn nchw_vertical_scalar(r: &NchwRow, src: &[u8], tmp: &mut [u8], j0: usize) {
    for j in j0..r.w {
        let mut m = 0u8;
        for i in 0..r.ny {
            m = m.max(src[i * r.sy + j]);
        }
        tmp[r.pad + j] = m;
    }
}

/// Output pixels `o0..ow` of an NCHW row from its padded scratch row.
pub fn nchw_horizontal_scalar(r: &NchwRow, tmp: &[u8], dst: &mut [Out], o0: usize) {
    for (o, d) in dst.iter_mut().enumerate().skip(o0) {
        let mut m = 0u8;
        for k in 0..r.kx {
            m = m.max(tmp[o * r.sx + k * r.dx]);
        }
        d.write(m);
    }
}

fn max_nchw_scalar(r: &NchwRow, src: &[u8], tmp: &mut Vec<u8>, dst: &mut [Out]) {
    r.check(src.len(), dst.len());
    let t = r.scratch(tmp);
    nchw_vertical_scalar(r, src, t, 0);
    nchw_horizontal_scalar(r, t, dst, 0);
}

fn binary_scalar(p: &BinaryParams, a: &[u8], b: Operand<'_>, dst: &mut [Out]) {
    b.check(a.len(), dst.len());
    binary_scalar_part(p, a, b, dst, 0);
}

/// Elements `i0..` of a binary kernel call (vector kernels' tails).
pub fn binary_scalar_part(p: &BinaryParams, a: &[u8], b: Operand<'_>, dst: &mut [Out], i0: usize) {
    for i in i0..a.len() {
        dst[i].write(p.apply(a[i], b.at(i)));
    }
}

fn clamp_scalar(src: &[u8], lo: u8, hi: u8, dst: &mut [Out]) {
    assert_eq!(src.len(), dst.len(), "clamp: lengths");
    for (d, &q) in dst.iter_mut().zip(src) {
        d.write(q.max(lo).min(hi));
    }
}

/// Panics unless `src` is whole `run`-byte rows and `dst` holds them
/// `stride` apart: the check of every lookup kernel.
pub fn check_rows(src: usize, run: usize, dst: usize, stride: usize) {
    assert!(run > 0 && stride >= run, "lut: run {run}, stride {stride}");
    assert!(
        src.is_multiple_of(run),
        "lut: {src} bytes are not whole {run}-byte rows"
    );
    let rows = src / run;
    assert!(
        rows == 0 || dst >= (rows - 1) * stride + run,
        "lut: {rows} rows of {run} bytes, {stride} apart, do not fit {dst}"
    );
}

fn lut_scalar(t: &[u8; 256], src: &[u8], run: usize, dst: &mut [Out], stride: usize) {
    check_rows(src.len(), run, dst.len(), stride);
    for (r, s) in src.chunks_exact(run).enumerate() {
        for (d, &q) in dst[r * stride..][..run].iter_mut().zip(s) {
            d.write(t[q as usize]);
        }
    }
}

/// The plain-loop kernels: the scalar paths' table.
pub static SCALAR: Kernels = Kernels::new(KernelsSpec {
    path: "scalar",
    max: max_scalar,
    max_nchw: max_nchw_scalar,
    avg: avg_scalar,
    binary: binary_scalar,
    clamp: clamp_scalar,
    lut: lut_scalar,
});

// ---------------------------------------------------------------------------
// The drivers. Inputs are validated by the engine front end.

/// Max pooling (NHWC or NCHW) into `y` (the output's length).
pub fn max_pool2d(
    k: &Kernels,
    par: &dyn Par,
    x: &QTensor<u8>,
    g: &PoolGeometry,
    p: &MaxPool2dParams,
    y: &mut [Out],
) {
    if x.memory_format() == MemoryFormat::ChannelsLast {
        max_pool2d_nhwc(k, par, x.int_repr(), g, p, y)
    } else {
        max_pool2d_nchw(k, par, x.int_repr(), g, p, y)
    }
}

fn max_pool2d_nhwc(
    k: &Kernels,
    par: &dyn Par,
    xd: &[u8],
    g: &PoolGeometry,
    p: &MaxPool2dParams,
    y: &mut [Out],
) {
    k.ran(Kind::Max);
    let (c, [dy, dx]) = (g.c, p.dilation);
    let row = g.ow * c;
    let img_len = g.h * g.w * c;
    let cols = runs((0..g.ow).map(|ox| {
        let (x0, x1) = max_pool_window(p, ox, 1, g.w);
        (x0, taps(x0, x1, dx), ())
    }));
    let taps_y = p.kernel[0].min(g.h);
    let rows = g.n * g.oh;
    let rpt = per_task(par, rows, row * (1 + taps_y * p.kernel[1]));
    par.chunks(y, rpt * row, &|t, chunk| {
        for (r, yrow) in chunk.chunks_mut(row).enumerate() {
            let (b, oy) = ((t * rpt + r) / g.oh, (t * rpt + r) % g.oh);
            let (y0, y1) = max_pool_window(p, oy, 0, g.h);
            let ny = taps(y0, y1, dy);
            let img = &xd[b * img_len..][..img_len];
            for run in &cols {
                let dst = &mut yrow[run.ox * c..(run.ox + run.npix) * c];
                if ny == 0 || run.nx == 0 {
                    fill(dst, 0);
                    continue;
                }
                let win = Window {
                    c,
                    sy: dy * g.w * c,
                    sx: dx * c,
                    ny,
                    nx: run.nx,
                    step: run.step * c,
                    npix: run.npix,
                };
                (k.max)(&win, &img[(y0 * g.w + run.x0) * c..], dst);
            }
        }
    });
}

fn max_pool2d_nchw(
    k: &Kernels,
    par: &dyn Par,
    xd: &[u8],
    g: &PoolGeometry,
    p: &MaxPool2dParams,
    y: &mut [Out],
) {
    k.ran(Kind::MaxNchw);
    let plane = g.h * g.w;
    let rows = g.n * g.c * g.oh;
    let rpt = per_task(par, rows, g.ow + g.w * p.kernel[0].min(g.h));
    par.chunks(y, rpt * g.ow, &|t, chunk| {
        let mut tmp = Vec::new();
        for (r, yrow) in chunk.chunks_mut(g.ow).enumerate() {
            let (pl, oy) = ((t * rpt + r) / g.oh, (t * rpt + r) % g.oh);
            let (y0, y1) = max_pool_window(p, oy, 0, g.h);
            let ny = taps(y0, y1, p.dilation[0]);
            if ny == 0 {
                fill(yrow, 0);
                continue;
            }
            let nr = NchwRow {
                w: g.w,
                sy: p.dilation[0] * g.w,
                ny,
                kx: p.kernel[1],
                sx: p.stride[1],
                dx: p.dilation[1],
                pad: p.padding[1],
                ow: g.ow,
            };
            let src = &xd[pl * plane + y0 * g.w..(pl + 1) * plane];
            (k.max_nchw)(&nr, src, &mut tmp, yrow);
        }
    });
}

/// One average-pool window's pixel by the oracle's integer arithmetic
/// (`portable::avg_pool2d_nhwc`), for windows outside the f32 range.
#[allow(clippy::too_many_arguments)]
fn avg_pixel_exact(
    img: &[u8],
    g: &PoolGeometry,
    (hs, he): (usize, usize),
    (ws, we): (usize, usize),
    z: i64,
    div: i64,
    dst: &mut [Out],
) {
    let c = g.c;
    let size = (he as i64 - hs as i64) * (we as i64 - ws as i64);
    for (ch, d) in dst.iter_mut().enumerate() {
        let mut s = 0i64;
        for iy in hs..he {
            for ix in ws..we {
                s += img[(iy * g.w + ix) * c + ch] as i64;
            }
        }
        d.write(div_rne(s - size * z + z * div, div).clamp(0, 255) as u8);
    }
}

/// Average pooling (NHWC; NCHW runs the oracle) into `y`.
pub fn avg_pool2d(
    k: &Kernels,
    par: &dyn Par,
    x: &QTensor<u8>,
    g: &PoolGeometry,
    p: &AvgPool2dParams,
    y: &mut [Out],
) {
    let z = x.q_per_tensor().expect("validated").1;
    if x.memory_format() != MemoryFormat::ChannelsLast {
        let v = portable::avg_pool2d(x, g, p).expect("validated");
        copy(y, &v);
        return;
    }
    k.ran(Kind::Avg);
    let xd = x.int_repr();
    let c = g.c;
    let row = g.ow * c;
    let img_len = g.h * g.w * c;
    let colw: Vec<(usize, usize, i64)> =
        (0..g.ow).map(|ox| avg_pool_window(p, ox, 1, g.w)).collect();
    let rows = g.n * g.oh;
    let rpt = per_task(par, rows, row * (1 + p.kernel[0] * p.kernel[1]));
    par.chunks(y, rpt * row, &|t, chunk| {
        for (r, yrow) in chunk.chunks_mut(row).enumerate() {
            let (b, oy) = ((t * rpt + r) / g.oh, (t * rpt + r) % g.oh);
            let (hs, he, ph) = avg_pool_window(p, oy, 0, g.h);
            let img = &xd[b * img_len..][..img_len];
            // Per column: the window and its finish (None: exact integer path).
            let cols = runs(colw.iter().map(|&(ws, we, pw)| {
                let size = (he as i64 - hs as i64) * (we as i64 - ws as i64);
                let div = portable::avg_div(p, size, ph * pw);
                let add = z * div - size * z;
                let fits = he > hs
                    && we > ws
                    && div > 0
                    && div < 1 << 24
                    && add.abs() + 255 * size < 1 << 23;
                let f = fits.then_some(Finish::Div {
                    add: add as i32,
                    div: div as f32,
                });
                (ws, we.saturating_sub(ws), (f, div))
            }));
            for run in &cols {
                let dst = &mut yrow[run.ox * c..(run.ox + run.npix) * c];
                match run.key.0 {
                    Some(f) => {
                        let win = Window {
                            c,
                            sy: g.w * c,
                            sx: c,
                            ny: he - hs,
                            nx: run.nx,
                            step: run.step * c,
                            npix: run.npix,
                        };
                        (k.avg)(&win, f, &img[(hs * g.w + run.x0) * c..], dst);
                    }
                    None => {
                        for (i, d) in dst.chunks_mut(c).enumerate() {
                            let ws = run.x0 + i * run.step;
                            let we = colw[run.ox + i].1;
                            avg_pixel_exact(img, g, (hs, he), (ws, we), z, run.key.1, d);
                        }
                    }
                }
            }
        }
    });
}

/// Adaptive average pooling (NHWC; NCHW runs the oracle) into `y`.
pub fn adaptive_avg_pool2d(
    k: &Kernels,
    par: &dyn Par,
    x: &QTensor<u8>,
    g: &PoolGeometry,
    y: &mut [Out],
) {
    let xd = x.int_repr();
    let c = g.c;
    // Σ of a window in int32 (and its f32 conversion equal to the oracle's
    // i64 → f32) needs area · 255 < 2^31; larger windows run the oracle.
    let max_area = g.h.div_ceil(g.oh).saturating_add(1) * g.w.div_ceil(g.ow).saturating_add(1);
    if x.memory_format() != MemoryFormat::ChannelsLast || max_area >= (1 << 31) / 255 {
        let v = portable::adaptive_avg_pool2d(x, g).expect("validated");
        copy(y, &v);
        return;
    }
    k.ran(Kind::Avg);
    let row = g.ow * c;
    let img_len = g.h * g.w * c;
    let cols = runs((0..g.ow).map(|ox| {
        let (ws, we) = adaptive_window(ox, g.w, g.ow);
        (ws, we - ws, ())
    }));
    let rows = g.n * g.oh;
    let win_bytes = g.h.div_ceil(g.oh) * g.w.div_ceil(g.ow) * c;
    let rpt = per_task(par, rows, row + g.ow * win_bytes);
    par.chunks(y, rpt * row, &|t, chunk| {
        for (r, yrow) in chunk.chunks_mut(row).enumerate() {
            let (b, oy) = ((t * rpt + r) / g.oh, (t * rpt + r) % g.oh);
            let (hs, he) = adaptive_window(oy, g.h, g.oh);
            let img = &xd[b * img_len..][..img_len];
            for run in &cols {
                let recip = 1.0f32 / ((he - hs) * run.nx) as f32;
                let win = Window {
                    c,
                    sy: g.w * c,
                    sx: c,
                    ny: he - hs,
                    nx: run.nx,
                    step: run.step * c,
                    npix: run.npix,
                };
                let dst = &mut yrow[run.ox * c..(run.ox + run.npix) * c];
                (k.avg)(
                    &win,
                    Finish::Recip(recip),
                    &img[(hs * g.w + run.x0) * c..],
                    dst,
                );
            }
        }
    });
}

/// Same-shape add / add_relu / mul of `a` and `b` (same storage order) into
/// `y`; false (nothing written) when the scales are outside
/// [`BinaryParams::new`]'s range, for the caller to run the oracle.
pub fn binary(
    k: &Kernels,
    par: &dyn Par,
    op: BinaryOp,
    a: &QTensor<u8>,
    b: &QTensor<u8>,
    out: OutQ,
    y: &mut [Out],
) -> bool {
    let pa = a.q_per_tensor().expect("validated");
    let pb = b.q_per_tensor().expect("validated");
    let Some(bp) = BinaryParams::new(op, pa, pb, out) else {
        return false;
    };
    k.ran(Kind::Binary);
    let (ad, bd) = (a.int_repr(), b.int_repr());
    let chunk = per_task(par, ad.len(), 3);
    par.chunks(y, chunk, &|i, d| {
        let o = i * chunk;
        (k.binary)(
            &bp,
            &ad[o..o + d.len()],
            Operand::Same(&bd[o..o + d.len()]),
            d,
        );
    });
    true
}

/// [`binary`] with `b` broadcast to `a`'s logical shape: `b` a single
/// element, or `[N or 1, C, 1, 1]` (or `[C, 1, 1]`) against a 4-D
/// `[N, C, H, W]` `a` in either memory format — squeeze-excitation's
/// channel gate. False (nothing written) for other broadcasts and for
/// scales outside [`BinaryParams::new`]'s range.
pub fn binary_broadcast(
    k: &Kernels,
    par: &dyn Par,
    op: BinaryOp,
    a: &QTensor<u8>,
    b: &QTensor<u8>,
    out: OutQ,
    y: &mut [Out],
) -> bool {
    let pa = a.q_per_tensor().expect("validated");
    let pb = b.q_per_tensor().expect("validated");
    let Some(bp) = BinaryParams::new(op, pa, pb, out) else {
        return false;
    };
    let (ad, bd) = (a.int_repr(), b.int_repr());
    if bd.len() == 1 {
        k.ran(Kind::Binary);
        let chunk = per_task(par, ad.len(), 2);
        par.chunks(y, chunk, &|i, d| {
            let o = i * chunk;
            (k.binary)(&bp, &ad[o..o + d.len()], Operand::Splat(bd[0]), d);
        });
        return true;
    }
    let &[n, c, h, w] = a.shape() else {
        return false;
    };
    let mut bs = [1usize; 4];
    if b.ndim() > 4 {
        return false;
    }
    bs[4 - b.ndim()..].copy_from_slice(b.shape());
    let [bn, bc, bh, bw] = bs;
    if !(bh == 1 && bw == 1 && bc == c && (bn == 1 || bn == n)) {
        return false;
    }
    k.ran(Kind::Binary);
    // b's bytes are [bn, C] in either memory format (its H = W = 1).
    let b_row = |img: usize| &bd[if bn == 1 { 0 } else { img * c }..][..c];
    let hw = h * w;
    if a.memory_format() == MemoryFormat::ChannelsLast {
        // Pixels (rows of C) against the image's channel vector.
        let ppt = per_task(par, n * hw, 2 * c);
        par.chunks(y, ppt * c, &|t, d| {
            let mut px = t * ppt;
            let mut off = 0;
            while off < d.len() {
                let img = px / hw;
                let npx = ((img + 1) * hw - px).min((d.len() - off) / c);
                let seg = npx * c;
                (k.binary)(
                    &bp,
                    &ad[px * c..][..seg],
                    Operand::Rows(b_row(img)),
                    &mut d[off..off + seg],
                );
                px += npx;
                off += seg;
            }
        });
    } else {
        // Planes against one channel's code.
        let ept = per_task(par, n * c * hw, 2);
        par.chunks(y, ept, &|t, d| {
            let mut e = t * ept;
            let mut off = 0;
            while off < d.len() {
                let plane = e / hw;
                let len = ((plane + 1) * hw - e).min(d.len() - off);
                let qb = b_row(plane / c)[plane % c];
                (k.binary)(
                    &bp,
                    &ad[e..e + len],
                    Operand::Splat(qb),
                    &mut d[off..off + len],
                );
                e += len;
                off += len;
            }
        });
    }
    true
}

/// `min(max(q, lo), hi)` of every element into `y`.
pub fn clamp(k: &Kernels, par: &dyn Par, x: &[u8], lo: u8, hi: u8, y: &mut [Out]) {
    k.ran(Kind::Clamp);
    let chunk = per_task(par, x.len(), 2);
    par.chunks(y, chunk, &|i, d| {
        (k.clamp)(&x[i * chunk..][..d.len()], lo, hi, d);
    });
}

/// `table[q]` of every element into `y`.
pub fn lut(k: &Kernels, par: &dyn Par, x: &[u8], table: &[u8; 256], y: &mut [Out]) {
    k.ran(Kind::Lut);
    let chunk = per_task(par, x.len(), 2);
    par.chunks(y, chunk, &|i, d| {
        let n = d.len();
        (k.lut)(table, &x[i * chunk..][..n], n, d, n);
    });
}

/// The table of one cat input's codes requantized to the output:
/// `quantize(dequantize(q))`, as `portable::cat` computes each element.
pub fn requant_table(scale: f64, zero_point: i64, out: OutQ) -> [u8; 256] {
    let inv = inv_scale(out.scale);
    let mut t = [0u8; 256];
    for (q, v) in t.iter_mut().enumerate() {
        *v = quantize_val::<u8>(
            inv,
            out.zero_point,
            dequantize_val(scale as f32, zero_point, q as i64),
        );
    }
    t
}

fn is_identity(t: &[u8; 256]) -> bool {
    t.iter().enumerate().all(|(q, &v)| q == v as usize)
}

/// Concatenation of `[outer, d_i, inner]` blocks along the middle axis,
/// each input requantized to `out` through its table (a copy when the table
/// is the identity) and written into its columns of every output row:
/// cat along channels of NHWC tensors interleaves each pixel's channel runs.
pub fn cat(
    k: &Kernels,
    par: &dyn Par,
    xs: &[&QTensor<u8>],
    outer: usize,
    out: OutQ,
    y: &mut [Out],
) {
    k.ran(Kind::Lut);
    struct Part<'a> {
        src: &'a [u8],
        run: usize,
        off: usize,
        table: Option<[u8; 256]>,
    }
    let mut off = 0;
    let parts: Vec<Part<'_>> = xs
        .iter()
        .map(|x| {
            let (s, z) = x.q_per_tensor().expect("validated");
            let run = x.numel() / outer.max(1);
            let t = requant_table(s, z, out);
            let p = Part {
                src: x.int_repr(),
                run,
                off,
                table: (!is_identity(&t)).then_some(t),
            };
            off += run;
            p
        })
        .collect();
    let row = off;
    if row == 0 {
        return;
    }
    let rpt = per_task(par, outer, 2 * row);
    par.chunks(y, rpt * row, &|t, chunk| {
        let (o0, rows) = (t * rpt, chunk.len() / row);
        for p in parts.iter().filter(|p| p.run > 0) {
            let src = &p.src[o0 * p.run..(o0 + rows) * p.run];
            let dst = &mut chunk[p.off..];
            match &p.table {
                Some(tb) => (k.lut)(tb, src, p.run, dst, row),
                None => {
                    for (r, s) in src.chunks_exact(p.run).enumerate() {
                        copy(&mut dst[r * row..][..p.run], s);
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish_exact(sum: i64, add: i64, div: i64) -> u8 {
        div_rne(sum + add, div).clamp(0, 255) as u8
    }

    #[test]
    fn f32_division_rounds_like_div_rne_in_range() {
        // Every (n, d) with small d, and n around ties; the guard's bound.
        let (dmax, nmax) = if cfg!(miri) { (7, 300) } else { (60, 3000) };
        for div in 1..=dmax {
            for n in -nmax..nmax {
                let f = Finish::Div {
                    add: 0,
                    div: div as f32,
                };
                assert_eq!(f.apply(n as i32), finish_exact(n, 0, div), "{n}/{div}");
            }
        }
        for &(n, div) in &[
            ((1i32 << 23) - 1, 2i64),
            ((1 << 23) - 3, 6),
            (8_388_601, 16_777_215),
            (-(1 << 23) + 1, 9),
        ] {
            let f = Finish::Div {
                add: 0,
                div: div as f32,
            };
            assert_eq!(f.apply(n), finish_exact(n as i64, 0, div), "{n}/{div}");
        }
    }

    #[test]
    fn runs_merge_constant_steps() {
        let r = runs([(0, 2, 0), (1, 3, 0), (3, 3, 0), (5, 3, 0), (7, 2, 0)].into_iter());
        assert_eq!(r.len(), 3);
        assert_eq!((r[1].ox, r[1].npix, r[1].x0, r[1].step), (1, 3, 1, 2));
        let r = runs([(0, 1, ()), (0, 1, ())].into_iter());
        assert_eq!(r.len(), 2, "a repeated start is not a step");
    }

    #[test]
    fn binary_params_apply_is_the_oracle() {
        // Every pair of codes (a sample of them under Miri, which is slow).
        let all: Vec<u8> = (0..=255).step_by(if cfg!(miri) { 37 } else { 1 }).collect();
        let n = all.len();
        for (op, sa, za, sb, zb, so, zo) in [
            (BinaryOp::Add, 0.03, 128, 0.011, 3, 0.04, 100),
            (BinaryOp::AddRelu, 0.5, 0, 0.25, 255, 0.3, 0),
            (BinaryOp::Mul, 0.02, 7, 0.05, 250, 0.001, 255),
            (BinaryOp::Mul, 1e-3, 128, 1e-3, 128, 1e-9, 17),
        ] {
            let a = QTensor::from_int_repr(
                vec![n * n],
                all.iter()
                    .flat_map(|&v| std::iter::repeat_n(v, n))
                    .collect(),
                crate::QParams::per_tensor(sa, za),
            )
            .unwrap();
            let b = QTensor::from_int_repr(
                vec![n * n],
                (0..n).flat_map(|_| all.iter().copied()).collect(),
                crate::QParams::per_tensor(sb, zb),
            )
            .unwrap();
            let out = OutQ {
                scale: so,
                zero_point: zo,
            };
            let want = portable::binary(op, &a, &b, out).unwrap();
            let p = BinaryParams::new(op, (sa, za), (sb, zb), out).unwrap();
            let got: Vec<u8> = a
                .int_repr()
                .iter()
                .zip(b.int_repr())
                .map(|(&x, &y)| p.apply(x, y))
                .collect();
            assert_eq!(got, want, "{op:?}");
        }
    }
}
