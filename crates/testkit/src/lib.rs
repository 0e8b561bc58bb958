//! XNNPACK-style testers shared by the engines: each builds random (but
//! seeded) inputs for one op, runs it on the engine under test and on the
//! reference engine, and demands identical bits (tolerance zero).
//!
//! [`GemmTester`] drives linear (static and dynamic), fp16 linear and conv2d;
//! the `sweep_*` functions run the standard parameter sweeps. M, N and K are
//! derived from each GEMM kernel of the engine's path (`Engine::gemm_kernels`:
//! its `mr × nr` tile, its `kr`, the driver's k-block for it, see [`Tails`]),
//! with data that makes the engine pick that kernel; then zero points
//! 0/128/255, full-range activations 0..255, weights −128..127 (all −128
//! too), extreme output scales, relu and `[lo, hi]` clamps, per-tensor and
//! per-channel weights, with and without bias; adversarial weights around
//! the `vpmaddubsw` pair bound (every pair at it, every pair over it, none,
//! sparse, Gaussian: [`sweep_pair_bound`]), also with every two-pass split
//! accepted. [`sweep_kernels_ran`] proves that every kernel of the path
//! really ran. [`memory`] holds the testers of the memory-bound ops
//! (pooling, add / mul, clamps, tables, cat, requantize), compared with the
//! reference engine (`rquant_core::portable`).

pub mod memory;

pub use memory::{
    sweep_activations, sweep_binary, sweep_cat, sweep_memory, sweep_memory_small,
    sweep_memory_threaded, sweep_pooling, sweep_requantize,
};

use rquant_core::gemm::{Blocking, Kernel};
use rquant_core::output::Clamp;
use rquant_core::{Conv2dParams, Engine, MemoryFormat, QParams, QTensor, Tensor};

/// A small deterministic generator (xorshift64*), so testers need no deps.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % ((hi - lo + 1) as u64)) as i64
    }
    /// Uniform in `[lo, hi)`.
    pub fn float(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

/// How activations are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Uniform 0..=255 (the range where `vpmaddubsw` saturates).
    Full,
    /// Every value 255.
    AllMax,
    /// Uniform 0..=127.
    Low,
    /// Uniform 0..=254 (just below the `vpmaddubsw` bound for |w0|+|w1| = 129).
    Upto254,
}

/// How weights are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wt {
    /// Uniform −128..=127.
    Full,
    /// Every weight −128.
    AllMin,
    /// Alternating 127 / −128 (adjacent pairs at the int16 bound).
    Extreme,
    /// Pairs (64, 65) / (−64, −65): |w0|+|w1| = 129, so 255·129 saturates
    /// int16 and 254·129 = 32766 does not.
    Pair129,
    /// Uniform −64..=64 (every pair within 128: `vpmaddubsw` exact for any u8;
    /// a split has no remainder).
    Small,
    /// Every adjacent pair exactly at the `vpmaddubsw` bound: positive
    /// weights summing to 128, negative ones to −128, or mixed extremes
    /// ((64, 64), (127, 1), (−128, 0), (−100, −28), (127, −128), …).
    AtBound,
    /// Every adjacent pair over the bound (a split is all remainder): just
    /// over ((65, 64), (−65, −64)), far over ((127, 127), (−128, −128)) and
    /// random pairs in between, both signs.
    OverBound,
    /// Uniform −64..=64 with about one pair in 16 replaced by a random pair
    /// over the bound: a sparse remainder (≈ 6% of pairs), columns with
    /// several groups when long.
    Sparse,
    /// Per-channel quantized N(0, 1) weights (scale max|w|/127.5, like the
    /// peers' benchmark): ≈ 2% of pairs over the bound at K ≈ 768.
    Gaussian,
}

/// Adjacent pairs at the `vpmaddubsw` bound ([`Wt::AtBound`]).
const AT_BOUND: [(i8, i8); 12] = [
    (64, 64),
    (127, 1),
    (1, 127),
    (100, 28),
    (-64, -64),
    (-128, 0),
    (0, -128),
    (-100, -28),
    (127, -128),
    (-128, 127),
    (0, 0),
    (127, 0),
];

/// A random adjacent pair over the bound, `P > 128` or `N > 128`.
fn over_bound_pair(rng: &mut Rng) -> (i8, i8) {
    match rng.int(0, 5) {
        0 => (65, 64),
        1 => (-64, -65),
        2 => (127, 127),
        3 => (-128, -128),
        _ => {
            let a = rng.int(2, 127);
            let b = rng.int((129 - a).max(1), 127);
            if rng.int(0, 1) == 0 {
                (a as i8, b as i8)
            } else {
                (-(a as i16).min(128) as i8, -(b as i16) as i8)
            }
        }
    }
}

/// One GEMM-shaped test case (linear: x `[m, k]`, w `[n, k]`).
#[derive(Debug, Clone)]
pub struct GemmTester {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub x_zp: i64,
    /// Weight zero point (per-tensor) or base of the per-channel zero points.
    pub w_zp: i64,
    pub per_channel: bool,
    /// Per-channel zero points all `w_zp` (0: PyTorch's
    /// `per_channel_symmetric` weights) instead of spread around it.
    pub symmetric: bool,
    pub bias: bool,
    pub relu: bool,
    pub act: Act,
    pub wt: Wt,
    /// Multiplies the automatically chosen output scale (1.0 = outputs span 0..255).
    pub out_scale_factor: f64,
    /// Output zero point; None = chosen with the scale.
    pub out_zp: Option<i64>,
    /// An explicit output clamp `[lo, hi]` (replaces `relu`); None = `relu`'s.
    pub clamp: Option<Clamp>,
    pub seed: u64,
}

impl Default for GemmTester {
    fn default() -> Self {
        GemmTester {
            m: 4,
            n: 8,
            k: 16,
            x_zp: 128,
            w_zp: 0,
            per_channel: false,
            symmetric: false,
            bias: true,
            relu: false,
            act: Act::Full,
            wt: Wt::Full,
            out_scale_factor: 1.0,
            out_zp: None,
            clamp: None,
            seed: 1,
        }
    }
}

macro_rules! setter {
    ($($f:ident: $t:ty),*) => { $(pub fn $f(mut self, v: $t) -> Self { self.$f = v; self })* };
}

impl GemmTester {
    pub fn new() -> Self {
        Self::default()
    }
    setter!(m: usize, n: usize, k: usize, x_zp: i64, w_zp: i64, per_channel: bool, symmetric: bool, bias: bool, relu: bool,
        act: Act, wt: Wt, out_scale_factor: f64, seed: u64);
    pub fn out_zp(mut self, z: i64) -> Self {
        self.out_zp = Some(z);
        self
    }
    /// Clamp the output to `[lo, hi]` (quantized domain) instead of `relu`.
    pub fn clamp(mut self, lo: u8, hi: u8) -> Self {
        self.clamp = Some(Clamp { lo, hi });
        self
    }
    fn out_clamp(&self, out_zp: i64) -> Clamp {
        self.clamp.unwrap_or_else(|| Clamp::relu(out_zp, self.relu))
    }

    fn rng(&self) -> Rng {
        Rng::new(self.seed ^ ((self.m as u64) << 40) ^ ((self.n as u64) << 20) ^ self.k as u64)
    }

    fn activations(&self, rng: &mut Rng, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| match self.act {
                Act::Full => rng.int(0, 255) as u8,
                Act::AllMax => 255,
                Act::Low => rng.int(0, 127) as u8,
                Act::Upto254 => rng.int(0, 254) as u8,
            })
            .collect()
    }

    /// Weights `[rows, rest]` with per-tensor or per-channel (axis 0) qparams.
    fn weights(&self, rng: &mut Rng, shape: &[usize]) -> QTensor<i8> {
        let rows = shape[0];
        let len: usize = shape.iter().product();
        let data: Vec<i8> = match self.wt {
            Wt::AtBound | Wt::OverBound | Wt::Sparse | Wt::Gaussian => {
                pair_weights(self.wt, rng, rows, len / rows.max(1))
            }
            _ => self.plain_weights(rng, len),
        };
        let qp = if self.per_channel {
            QParams::PerChannel {
                scales: (0..rows).map(|_| rng.float(0.001, 0.05) as f64).collect(),
                zero_points: (0..rows)
                    .map(|c| match self.symmetric {
                        true => self.w_zp,
                        false => (self.w_zp + c as i64 % 7 - 3).clamp(-128, 127),
                    })
                    .collect(),
                axis: 0,
            }
        } else {
            QParams::per_tensor(rng.float(0.001, 0.05) as f64, self.w_zp)
        };
        QTensor::from_int_repr(shape.to_vec(), data, qp).expect("valid weights")
    }

    fn plain_weights(&self, rng: &mut Rng, len: usize) -> Vec<i8> {
        (0..len)
            .map(|i| match self.wt {
                Wt::Full => rng.int(-128, 127) as i8,
                Wt::AllMin => -128,
                Wt::Extreme => {
                    if i % 2 == 0 {
                        127
                    } else {
                        -128
                    }
                }
                Wt::Pair129 => {
                    let v = if i % 2 == 0 { 64 } else { 65 };
                    if (i / 2) % 3 == 2 {
                        -v
                    } else {
                        v
                    }
                }
                Wt::Small => rng.int(-64, 64) as i8,
                _ => unreachable!("pair weights"),
            })
            .collect()
    }

    fn bias_vec(&self, rng: &mut Rng, n: usize, mag: f32) -> Option<Vec<f32>> {
        self.bias
            .then(|| (0..n).map(|_| rng.float(-mag, mag)).collect())
    }

    /// Output qparams spanning the exact accumulator range of `x·wᵀ` (scaled by the factor).
    fn out_qparams(&self, acc_lo: i64, acc_hi: i64, x_scale: f64, w: &QTensor<i8>) -> (f64, i64) {
        let ws = w.qparams().channel(0).0;
        let span = ((acc_hi - acc_lo).max(1) as f64) * x_scale * ws;
        let scale = (span / 255.0 * self.out_scale_factor).max(1e-30);
        let zp = self.out_zp.unwrap_or_else(|| {
            ((-(acc_lo as f64) * x_scale * ws / scale).round() as i64).clamp(0, 255)
        });
        (scale, zp)
    }

    /// Static linear: demands `engine.linear` == `reference.linear`.
    pub fn test_linear(&self, engine: &Engine, reference: &Engine) {
        let mut rng = self.rng();
        let (m, n, k) = (self.m, self.n, self.k);
        let xs = rng.float(0.005, 0.05) as f64;
        let x = QTensor::from_int_repr(
            vec![m, k],
            self.activations(&mut rng, m * k),
            QParams::per_tensor(xs, self.x_zp),
        )
        .expect("valid activations");
        let w = self.weights(&mut rng, &[n, k]);
        let (lo, hi) = acc_range(x.int_repr(), self.x_zp, &w, m, n, k);
        let (os, oz) = self.out_qparams(lo, hi, xs, &w);
        let bias = self.bias_vec(&mut rng, n, (os * 100.0) as f32);
        let pe = engine
            .pack_linear(w.clone(), bias.clone())
            .expect("engine packs");
        let pr = reference.pack_linear(w, bias).expect("reference packs");
        let clamp = self.out_clamp(oz);
        let ye = engine
            .linear_clamped(&x, &pe, os, oz, clamp)
            .expect("engine linear");
        let yr = reference
            .linear_clamped(&x, &pr, os, oz, clamp)
            .expect("reference linear");
        assert_same(engine, "linear", self, ye.int_repr(), yr.int_repr(), n);
    }

    /// Dynamic linear on f32 input drawn from `[lo, hi)`; `reduce_range` as given.
    pub fn test_linear_dynamic(
        &self,
        engine: &Engine,
        reference: &Engine,
        lo: f32,
        hi: f32,
        reduce_range: bool,
    ) {
        let mut rng = self.rng();
        let (m, n, k) = (self.m, self.n, self.k);
        let x: Vec<f32> = (0..m * k)
            .map(|_| if lo == hi { lo } else { rng.float(lo, hi) })
            .collect();
        let x = Tensor::new(vec![m, k], x).expect("valid input");
        let w = self.weights(&mut rng, &[n, k]);
        let bias = self.bias_vec(&mut rng, n, 3.0);
        let pe = engine
            .pack_linear(w.clone(), bias.clone())
            .expect("engine packs");
        let pr = reference.pack_linear(w, bias).expect("reference packs");
        let ye = engine
            .linear_dynamic(&x, &pe, reduce_range)
            .expect("engine linear_dynamic");
        let yr = reference
            .linear_dynamic(&x, &pr, reduce_range)
            .expect("reference linear_dynamic");
        assert_same_f32(engine, "linear_dynamic", self, ye.data(), yr.data(), n);
    }

    /// fp16-weight dynamic linear; weights span `±wmag` (beyond 65504 tests the clamp).
    pub fn test_linear_fp16(&self, engine: &Engine, reference: &Engine, wmag: f32) {
        let mut rng = self.rng();
        let (m, n, k) = (self.m, self.n, self.k);
        let x = Tensor::new(
            vec![m, k],
            (0..m * k).map(|_| rng.float(-4.0, 4.0)).collect(),
        )
        .expect("x");
        let w = Tensor::new(
            vec![n, k],
            (0..n * k).map(|_| rng.float(-wmag, wmag)).collect(),
        )
        .expect("w");
        let bias = self.bias_vec(&mut rng, n, 2.0);
        let pe = engine
            .pack_linear_fp16(w.clone(), bias.clone())
            .expect("engine packs");
        let pr = reference
            .pack_linear_fp16(w, bias)
            .expect("reference packs");
        let ye = engine.linear_dynamic_fp16(&x, &pe).expect("engine fp16");
        let yr = reference
            .linear_dynamic_fp16(&x, &pr)
            .expect("reference fp16");
        assert_same_f32(engine, "linear_dynamic_fp16", self, ye.data(), yr.data(), n);
    }
}

/// Weights `[rows, k]` (k the product of the other dims) built pair by
/// pair along each row, the pairs the `vpmaddubsw` kernels see.
fn pair_weights(wt: Wt, rng: &mut Rng, rows: usize, k: usize) -> Vec<i8> {
    let mut w = vec![0i8; rows * k];
    for row in w.chunks_exact_mut(k.max(1)) {
        if wt == Wt::Gaussian {
            // Box-Muller, then per-channel symmetric quantization.
            let f: Vec<f32> = (0..row.len())
                .map(|_| {
                    let (u, v) = (rng.float(1e-7, 1.0), rng.float(0.0, 1.0));
                    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
                })
                .collect();
            let scale = f.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.5;
            for (d, v) in row.iter_mut().zip(f) {
                *d = (v / scale).round().clamp(-128.0, 127.0) as i8;
            }
            continue;
        }
        for (q, pair) in row.chunks_mut(2).enumerate() {
            let (a, b) = match wt {
                Wt::AtBound => AT_BOUND[(q + rng.int(0, 11) as usize) % AT_BOUND.len()],
                Wt::OverBound => over_bound_pair(rng),
                _ => {
                    if rng.int(0, 15) == 0 {
                        over_bound_pair(rng)
                    } else {
                        (rng.int(-64, 64) as i8, rng.int(-64, 64) as i8)
                    }
                }
            };
            pair[0] = a;
            if pair.len() > 1 {
                pair[1] = b;
            }
        }
    }
    w
}

/// Exact accumulator range of `(x − zx)·(w − zw)ᵀ` over all outputs.
fn acc_range(x: &[u8], xz: i64, w: &QTensor<i8>, m: usize, n: usize, k: usize) -> (i64, i64) {
    let wd = w.int_repr();
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for i in 0..m {
        for j in 0..n {
            let zw = w.qparams().channel(j).1;
            let s: i64 = (0..k)
                .map(|kk| (x[i * k + kk] as i64 - xz) * (wd[j * k + kk] as i64 - zw))
                .sum();
            lo = lo.min(s);
            hi = hi.max(s);
        }
    }
    (lo, hi)
}

fn assert_same<T: PartialEq + std::fmt::Debug>(
    engine: &Engine,
    op: &str,
    case: &dyn std::fmt::Debug,
    got: &[T],
    want: &[T],
    n: usize,
) {
    assert_eq!(
        got.len(),
        want.len(),
        "{op} on {}/{}: output length, {case:?}",
        engine.name(),
        engine.isa()
    );
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{op} on {}/{}: output [{}, {}] is {:?}, the reference gives {:?}\ncase: {case:?}",
            engine.name(),
            engine.isa(),
            i / n.max(1),
            i % n.max(1),
            got[i],
            want[i]
        );
    }
}

fn assert_same_f32(
    engine: &Engine,
    op: &str,
    case: &dyn std::fmt::Debug,
    got: &[f32],
    want: &[f32],
    n: usize,
) {
    let g: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
    let w: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
    assert_same(engine, op, case, &g, &w, n);
}

/// One conv2d test case (input `[batch, c, h, w]` stored in `format`,
/// weight `[o, c/groups, kh, kw]`). With `residual`, the case is
/// `conv2d_add` (the conv unclamped, then `add` / `add_relu` with the
/// residual's and the add's own qparams) against the reference engine's
/// unfused conv2d followed by add.
#[derive(Debug, Clone)]
pub struct ConvTester {
    pub batch: usize,
    pub c: usize,
    pub o: usize,
    pub hw: [usize; 2],
    pub kernel: [usize; 2],
    pub params: Conv2dParams,
    pub format: MemoryFormat,
    /// `Some(relu)`: test the fused conv + residual add (add_relu).
    pub residual: Option<bool>,
    pub gemm: GemmTester,
}

impl ConvTester {
    pub fn new(
        c: usize,
        o: usize,
        hw: [usize; 2],
        kernel: [usize; 2],
        params: Conv2dParams,
    ) -> Self {
        ConvTester {
            batch: 1,
            c,
            o,
            hw,
            kernel,
            params,
            format: MemoryFormat::Contiguous,
            residual: None,
            gemm: GemmTester::default(),
        }
    }
    pub fn batch(mut self, b: usize) -> Self {
        self.batch = b;
        self
    }
    pub fn gemm(mut self, g: GemmTester) -> Self {
        self.gemm = g;
        self
    }
    /// The input's memory format (the output keeps it).
    pub fn format(mut self, f: MemoryFormat) -> Self {
        self.format = f;
        self
    }
    /// Test `conv2d_add` with a residual (`relu`: add_relu).
    pub fn residual(mut self, relu: bool) -> Self {
        self.residual = Some(relu);
        self
    }

    pub fn test(&self, engine: &Engine, reference: &Engine) {
        let t = &self.gemm;
        let mut rng = Rng::new(t.seed ^ (self.c as u64 * 131 + self.o as u64));
        let [h, w] = self.hw;
        let xs = rng.float(0.005, 0.05) as f64;
        let x = QTensor::from_int_repr(
            vec![self.batch, self.c, h, w],
            t.activations(&mut rng, self.batch * self.c * h * w),
            QParams::per_tensor(xs, t.x_zp),
        )
        .expect("valid activations");
        let cg = self.c / self.params.groups;
        let wq = t.weights(&mut rng, &[self.o, cg, self.kernel[0], self.kernel[1]]);
        // Output scale from a rough accumulator bound (k taps of typical magnitude).
        let k = (cg * self.kernel[0] * self.kernel[1]) as f64;
        let ws = wq.qparams().channel(0).0;
        let os = (xs * ws * 128.0 * 64.0 * k.sqrt() / 255.0 * t.out_scale_factor).max(1e-30);
        let oz = t.out_zp.unwrap_or(128);
        let bias = t.bias_vec(&mut rng, self.o, (os * 100.0) as f32);
        let pe = engine
            .pack_conv2d(wq.clone(), bias.clone(), self.params)
            .expect("engine packs conv");
        let pr = reference
            .pack_conv2d(wq, bias, self.params)
            .expect("reference packs conv");
        let xe = x.to_format(self.format);
        let (ye, yr) = match self.residual {
            None => {
                let clamp = t.out_clamp(oz);
                let ye = engine
                    .conv2d_clamped(&xe, &pe, os, oz, clamp)
                    .expect("engine conv2d");
                let yr = reference
                    .conv2d_clamped(&x, &pr, os, oz, clamp)
                    .expect("reference conv2d");
                (ye, yr)
            }
            Some(relu) => {
                let yr = reference
                    .conv2d(&x, &pr, os, oz, false)
                    .expect("reference conv2d");
                // The residual: its own qparams; the add's output spans
                // about both operands.
                let rs = os * rng.float(0.3, 3.0) as f64;
                let rz = rng.int(0, 255);
                let other = QTensor::from_int_repr(
                    yr.shape().to_vec(),
                    t.activations(&mut rng, yr.numel()),
                    QParams::per_tensor(rs, rz),
                )
                .expect("valid residual");
                let (asc, az) = (os.max(rs) * 1.7, rng.int(0, 255));
                let want = if relu {
                    reference.add_relu(&yr, &other, asc, az)
                } else {
                    reference.add(&yr, &other, asc, az)
                }
                .expect("reference add");
                let ye = engine
                    .conv2d_add(
                        &xe,
                        &pe,
                        (os, oz),
                        &other.to_format(self.format),
                        (asc, az),
                        relu,
                    )
                    .expect("engine conv2d_add");
                (ye, want)
            }
        };
        assert_eq!(ye.shape(), yr.shape());
        assert_eq!(
            ye.memory_format(),
            self.format,
            "conv output keeps the input's format"
        );
        let ye = ye.contiguous();
        assert_same(
            engine,
            if self.residual.is_some() {
                "conv2d_add"
            } else {
                "conv2d"
            },
            self,
            ye.int_repr(),
            yr.int_repr(),
            yr.shape()[3],
        );
    }
}

/// The reference engine.
pub fn reference() -> Engine {
    rquant_reference::engine()
}

/// M, N and K around one kernel's tile: every row tail up to `mr + 1` and
/// beyond two tiles, column tails around one, two and several panels, k
/// tails around one and two k-units and several units, and K just below,
/// at and above the driver's k-block (weights walked in L1-sized blocks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tails {
    pub m: Vec<usize>,
    pub n: Vec<usize>,
    pub k: Vec<usize>,
    pub k_block: Vec<usize>,
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.retain(|&x| x > 0);
    v.sort_unstable();
    v.dedup();
    v
}

impl Tails {
    /// The sizes for a kernel of tile `mr × nr`, `kr` k per unit, whose
    /// driver k-block covers `kb` k.
    pub fn new(mr: usize, nr: usize, kr: usize, kb: usize) -> Tails {
        Tails {
            m: sorted(
                (1..=mr + 1)
                    .chain([2 * mr - 1, 2 * mr, 2 * mr + 1, 3 * mr + 1])
                    .collect(),
            ),
            n: sorted(vec![
                1,
                nr - 1,
                nr,
                nr + 1,
                2 * nr - 1,
                2 * nr,
                2 * nr + 1,
                4 * nr + 3,
            ]),
            k: sorted(
                (1..=kr + 1)
                    .chain([
                        2 * kr - 1,
                        2 * kr,
                        2 * kr + 1,
                        4 * kr + 1,
                        8 * kr + 3,
                        64 * kr + 1,
                    ])
                    .collect(),
            ),
            k_block: sorted(vec![kb - 1, kb, kb + 1, 2 * kb + 1]),
        }
    }
    pub fn of(k: &Kernel) -> Tails {
        let s = &k.shape;
        Tails::new(s.mr, s.nr, s.kr, k.k_block(&Blocking::DEFAULT))
    }
}

/// One kernel a sweep targets: its sizes and the data that makes the engine
/// choose it.
#[derive(Debug, Clone)]
struct Target {
    tails: Tails,
    act: Act,
    wt: Wt,
    /// Pack with every split accepted ([`rquant_core::gemm::with_every_split`]):
    /// a two-pass kernel also on shapes whose split would not pay.
    every_split: bool,
}

impl Target {
    /// Run `f` with this target's packing policy.
    fn pack<T>(&self, f: impl FnOnce() -> T) -> T {
        if self.every_split {
            rquant_core::gemm::with_every_split(f)
        } else {
            f()
        }
    }
}

/// The kernels a sweep targets: the engine's table, or for an engine
/// without one (the reference) a stand-in 8×32, kr 4 tile.
fn targets(engine: &Engine) -> Vec<Target> {
    let ks = engine.gemm_kernels();
    if ks.is_empty() {
        return vec![Target {
            tails: Tails::new(8, 32, 4, 768),
            act: Act::Full,
            wt: Wt::Full,
            every_split: false,
        }];
    }
    ks.iter()
        .enumerate()
        .map(|(i, k)| {
            let (act, wt) = kernel_data(k, i, ks.len());
            Target {
                tails: Tails::of(k),
                act,
                wt,
                every_split: k.pair.is_some(),
            }
        })
        .collect()
}

/// Data that makes the engine choose kernel `i` of a table of `n`:
/// - a two-pass kernel (exact for every input, a split packed only where it
///   pays) gets full-range activations and weights with a sparse remainder
///   ([`Wt::Sparse`]; the testers also accept every split);
/// - another kernel before the last is exact only under a bound its check
///   computes (x86's `vpmaddubsw` kernels: always for 7-bit activations), so
///   it gets 7-bit activations;
/// - the last gets full-range activations and full-range weights (about a
///   quarter of their pairs over the `vpmaddubsw` bound: the earlier kernels
///   are not exact for them and no split pays, except on tiny shapes).
fn kernel_data(k: &Kernel, i: usize, n: usize) -> (Act, Wt) {
    if k.pair.is_some() {
        (Act::Full, Wt::Sparse)
    } else if i + 1 < n {
        (Act::Low, Wt::Full)
    } else {
        (Act::Full, Wt::Full)
    }
}

/// Every kernel of the engine's table runs at least once, on data chosen to
/// select it, and gives the reference's bits; fails unless each kernel's
/// call counter moved. The last kernel gets every pair over the
/// `vpmaddubsw` bound ([`Wt::OverBound`]) and all-255 activations, which no
/// bounded kernel is exact for and no split pays for.
pub fn sweep_kernels_ran(engine: &Engine) {
    let r = reference();
    let ks = engine.gemm_kernels();
    for (i, kern) in ks.iter().enumerate() {
        let before = kern.calls();
        let s = &kern.shape;
        let (act, wt) = match kernel_data(kern, i, ks.len()) {
            (Act::Full, Wt::Full) => (Act::AllMax, Wt::OverBound),
            d => d,
        };
        let t = GemmTester::new()
            .m(2 * s.mr + 1)
            .n(s.nr + 3)
            .k(8 * s.kr + 1)
            .act(act)
            .wt(wt)
            .x_zp(0);
        if kern.pair.is_some() {
            rquant_core::gemm::with_every_split(|| t.test_linear(engine, &r));
        } else {
            t.test_linear(engine, &r);
        }
        assert!(
            kern.calls() > before,
            "{}/{}: kernel {} did not run",
            engine.name(),
            engine.isa(),
            kern.name
        );
    }
}

/// Adversarial weights around the `vpmaddubsw` pair bound with full-range
/// activations, on every op that runs the GEMM (static and dynamic linear,
/// conv2d): every pair at the bound, every pair over it (all remainder),
/// none over it, a sparse remainder and per-channel Gaussian weights; once
/// with the engine's own choice of kernel and split, once with every split
/// accepted (a two-pass kernel then runs even an all-remainder matrix).
/// Shapes span several k-blocks, row blocks and column tails; zero points
/// on both sides.
pub fn sweep_pair_bound(engine: &Engine) {
    let r = reference();
    let r = &r;
    let wts = [
        Wt::AtBound,
        Wt::OverBound,
        Wt::Small,
        Wt::Sparse,
        Wt::Gaussian,
        Wt::Extreme,
        Wt::AllMin,
        Wt::Full,
    ];
    let p = |pad: usize, g: usize| Conv2dParams {
        padding: [pad, pad],
        groups: g,
        ..Conv2dParams::default()
    };
    for every in [false, true] {
        let run = |f: &dyn Fn()| {
            if every {
                rquant_core::gemm::with_every_split(f)
            } else {
                f()
            }
        };
        for (wi, &wt) in wts.iter().enumerate() {
            for &act in &[Act::Full, Act::AllMax, Act::Upto254] {
                for &(m, n, k) in &[(7, 40, 130), (33, 35, 1030), (1, 19, 4100), (17, 3, 7)] {
                    let t = GemmTester::new()
                        .m(m)
                        .n(n)
                        .k(k)
                        .act(act)
                        .wt(wt)
                        .x_zp(if act == Act::AllMax { 0 } else { 131 })
                        .w_zp(if wi % 2 == 0 { 0 } else { 3 })
                        .per_channel(m % 2 == 1)
                        .seed(wi as u64 * 17 + k as u64);
                    run(&|| t.test_linear(engine, r));
                }
            }
            for &(m, n, k) in &[(5, 33, 300), (40, 17, 770)] {
                let t = GemmTester::new().m(m).n(n).k(k).wt(wt).seed(wi as u64);
                run(&|| t.test_linear_dynamic(engine, r, -1.0, 3.0, false));
            }
            for (c, o, hw, ks, groups) in [(16, 24, 9, 3, 1), (32, 40, 6, 1, 1), (12, 18, 7, 3, 3)]
            {
                let g = GemmTester::new()
                    .wt(wt)
                    .x_zp(if wi % 2 == 0 { 0 } else { 255 })
                    .per_channel(true)
                    .seed(wi as u64 + 5);
                let t = ConvTester::new(c, o, [hw, hw + 1], [ks, ks], p(ks / 2, groups)).gemm(g);
                run(&|| t.test(engine, r));
                // Channels-last (a 1×1 stride-1 conv would read the pixels
                // in place; a two-pass kernel gathers them for its second
                // operand), two images, and the fused residual add.
                let t = t
                    .batch(2)
                    .format(MemoryFormat::ChannelsLast)
                    .residual(wi % 2 == 0);
                run(&|| t.test(engine, r));
            }
        }
    }
}

/// The standard static-linear sweep.
pub fn sweep_linear(engine: &Engine) {
    let r = reference();
    let r = &r;
    for tg in targets(engine) {
        let (t, act, wt) = (&tg.tails, tg.act, tg.wt);
        for &k in &t.k {
            for &(m, n) in &[
                (1, 1),
                (t.m[t.m.len() / 2], t.n[2]),
                (*t.m.last().unwrap(), *t.n.last().unwrap()),
                (t.m[1], t.n[3]),
            ] {
                let tc = GemmTester::new()
                    .m(m)
                    .n(n)
                    .k(k)
                    .act(act)
                    .wt(wt)
                    .seed(k as u64);
                tg.pack(|| tc.test_linear(engine, r));
            }
        }
        for &m in &t.m {
            for &n in &t.n {
                let tc = GemmTester::new().m(m).n(n).k(37).act(act).wt(wt).seed(3);
                tg.pack(|| tc.test_linear(engine, r));
            }
        }
        // K across the kernel's k-blocks and not a multiple of them.
        for &k in &t.k_block {
            let tc = GemmTester::new()
                .m(t.m[t.m.len() - 2])
                .n(t.n[3] + 10)
                .k(k)
                .act(act)
                .wt(wt)
                .per_channel(k % 2 == 0)
                .w_zp(3)
                .seed(k as u64);
            tg.pack(|| tc.test_linear(engine, r));
        }
    }
    for &x_zp in &[0, 128, 255] {
        for &w_zp in &[0, -128, 5, 127] {
            for &per_channel in &[false, true] {
                for &bias in &[false, true] {
                    for &relu in &[false, true] {
                        GemmTester::new()
                            .m(9)
                            .n(35)
                            .k(45)
                            .x_zp(x_zp)
                            .w_zp(w_zp)
                            .per_channel(per_channel)
                            .bias(bias)
                            .relu(relu)
                            .seed(x_zp as u64 + 7)
                            .test_linear(engine, r);
                    }
                }
            }
        }
    }
    // Activation and weight ranges on both sides of the int16 saturation
    // bound of `vpmaddubsw` (kernels that use it must check it).
    for &act in &[Act::Full, Act::AllMax, Act::Low, Act::Upto254] {
        for &wt in &[Wt::Full, Wt::AllMin, Wt::Extreme, Wt::Pair129, Wt::Small] {
            for &x_zp in &[0, 255] {
                GemmTester::new()
                    .m(7)
                    .n(40)
                    .k(130)
                    .act(act)
                    .wt(wt)
                    .x_zp(x_zp)
                    .test_linear(engine, r);
            }
        }
    }
    // Extreme output scales (everything saturates / one step spans the range) and zero points.
    for &f in &[1e-30, 1e-12, 1e-6, 1e-3, 0.5, 2.0, 1e3, 1e30] {
        let zps: &[i64] = if f < 1e-9 { &[0] } else { &[0, 128, 255] };
        for &oz in zps {
            for &relu in &[false, true] {
                GemmTester::new()
                    .m(5)
                    .n(19)
                    .k(70)
                    .out_scale_factor(f)
                    .out_zp(oz)
                    .relu(relu)
                    .per_channel(true)
                    .test_linear(engine, r);
            }
        }
    }
    sweep_clamps(engine);
    // K beyond 32 768 extreme products: the int32 accumulator wraps exactly like the reference's.
    GemmTester::new()
        .m(2)
        .n(3)
        .k(70_000)
        .act(Act::AllMax)
        .wt(Wt::AllMin)
        .x_zp(0)
        .w_zp(127)
        .test_linear(engine, r);
    // Larger than one cache block in every dimension.
    GemmTester::new()
        .m(200)
        .n(300)
        .k(520)
        .per_channel(true)
        .test_linear(engine, r);
}

/// Output clamps `[lo, hi]` other than none and relu (a fused ReLU6 or
/// hardtanh), with output zero points inside, below and above them, on the
/// vector stages' common range and at extreme scales (their fallbacks).
pub fn sweep_clamps(engine: &Engine) {
    let r = reference();
    let clamps: [(u8, u8); 7] = [
        (0, 255),
        (0, 200),
        (37, 255),
        (50, 100),
        (128, 134),
        (90, 90),
        (255, 255),
    ];
    for (i, &(lo, hi)) in clamps.iter().enumerate() {
        for &oz in &[0, 60, 128, 255] {
            // 1e-15: multipliers beyond the vector stages' tame range.
            for &f in &[1.0, 1e-15, 1e30] {
                GemmTester::new()
                    .m(9)
                    .n(41)
                    .k(33)
                    .clamp(lo, hi)
                    .out_zp(oz)
                    .out_scale_factor(f)
                    .per_channel(i % 2 == 0)
                    .w_zp(if i % 3 == 0 { 2 } else { 0 })
                    .seed(i as u64 * 31 + oz as u64)
                    .test_linear(engine, &r);
            }
        }
    }
}

/// The standard dynamic-linear sweep.
pub fn sweep_linear_dynamic(engine: &Engine) {
    let r = reference();
    let r = &r;
    let ranges: &[(f32, f32)] = &[
        (-1.0, 1.0),
        (0.0, 6.0),
        (-3.0, -0.5),
        (2.0, 2.0),
        (-1e-7, 1e-7),
        (-100.0, 300.0),
        (0.0, 0.0),
    ];
    for &(lo, hi) in ranges {
        for &rr in &[false, true] {
            for &(m, n, k) in &[(1, 1, 1), (3, 17, 9), (8, 33, 64), (13, 40, 101)] {
                for &bias in &[false, true] {
                    GemmTester::new()
                        .m(m)
                        .n(n)
                        .k(k)
                        .bias(bias)
                        .per_channel(m % 2 == 1)
                        .w_zp(if bias { 0 } else { 3 })
                        .test_linear_dynamic(engine, r, lo, hi, rr);
                }
            }
        }
    }
    for tg in targets(engine) {
        let t = &tg.tails;
        for &m in &t.m {
            for &k in &[1, 5, 16, 33, 100] {
                let tc = GemmTester::new().m(m).n(t.n[3] + 5).k(k).wt(tg.wt);
                tg.pack(|| tc.test_linear_dynamic(engine, r, -2.0, 5.0, false));
            }
        }
        // 7-bit activations (`reduce_range`): the bounded kernels' case.
        for &n in &t.n {
            GemmTester::new()
                .m(t.m[t.m.len() / 2])
                .n(n)
                .k(t.k_block[0])
                .test_linear_dynamic(engine, r, -2.0, 5.0, true);
        }
    }
    GemmTester::new()
        .m(150)
        .n(290)
        .k(300)
        .per_channel(true)
        .test_linear_dynamic(engine, r, -2.0, 2.0, false);
    GemmTester::new()
        .m(17)
        .n(40)
        .k(1537)
        .test_linear_dynamic(engine, r, -2.0, 2.0, true);
}

/// The standard fp16 sweep.
pub fn sweep_linear_fp16(engine: &Engine) {
    let r = reference();
    let r = &r;
    for &m in &[1, 2, 5, 6, 7, 13] {
        for &n in &[1, 8, 15, 16, 17, 33] {
            for &k in &[1, 2, 7, 64, 129] {
                for &bias in &[false, true] {
                    GemmTester::new()
                        .m(m)
                        .n(n)
                        .k(k)
                        .bias(bias)
                        .test_linear_fp16(engine, r, 1.0);
                }
            }
        }
    }
    // One or two rows across several column panels (grouped kernels) and tails.
    for &m in &[1, 2, 3] {
        for &n in &[64, 127, 128, 130, 200] {
            GemmTester::new()
                .m(m)
                .n(n)
                .k(37)
                .test_linear_fp16(engine, r, 1.0);
        }
    }
    // Beyond fp16's range (clamped at ±65504) and deep into subnormals.
    GemmTester::new()
        .m(3)
        .n(20)
        .k(40)
        .test_linear_fp16(engine, r, 1e6);
    GemmTester::new()
        .m(3)
        .n(20)
        .k(40)
        .test_linear_fp16(engine, r, 1e-6);
    GemmTester::new()
        .m(70)
        .n(100)
        .k(300)
        .test_linear_fp16(engine, r, 1.0);
}

/// The standard conv2d sweep.
pub fn sweep_conv2d(engine: &Engine) {
    let r = reference();
    let r = &r;
    let p = |s: usize, pad: usize, d: usize, g: usize| Conv2dParams {
        stride: [s, s],
        padding: [pad, pad],
        dilation: [d, d],
        groups: g,
    };
    let cases = [
        ConvTester::new(3, 8, [9, 11], [3, 3], p(1, 1, 1, 1)),
        ConvTester::new(16, 33, [7, 7], [1, 1], p(1, 0, 1, 1)),
        ConvTester::new(5, 7, [10, 9], [3, 3], p(2, 1, 1, 1)),
        ConvTester::new(4, 6, [12, 12], [5, 5], p(1, 2, 1, 1)),
        ConvTester::new(6, 6, [9, 9], [3, 3], p(1, 2, 2, 1)),
        ConvTester::new(8, 12, [8, 8], [3, 3], p(1, 1, 1, 2)),
        ConvTester::new(16, 16, [10, 10], [3, 3], p(1, 1, 1, 16)),
        ConvTester::new(12, 24, [9, 9], [3, 3], p(2, 1, 1, 12)),
        ConvTester::new(9, 9, [11, 11], [5, 5], p(1, 2, 1, 9)),
        ConvTester::new(3, 5, [6, 13], [2, 4], p(1, 0, 1, 1)),
        ConvTester::new(40, 70, [6, 6], [3, 3], p(1, 1, 1, 1)),
        ConvTester::new(10, 10, [11, 12], [3, 3], p(2, 1, 1, 10)),
        ConvTester::new(7, 7, [13, 9], [3, 3], p(1, 2, 2, 7)),
        ConvTester::new(5, 5, [4, 4], [3, 3], p(1, 0, 1, 5)),
        // 1-3 input channels (widened to 4 on x86): a 1-channel 3×3, an RGB
        // 7×7 stride-2 stem, 2 channels dilated.
        ConvTester::new(1, 16, [8, 9], [3, 3], p(1, 1, 1, 1)),
        ConvTester::new(3, 12, [15, 14], [7, 7], p(2, 3, 1, 1)),
        ConvTester::new(2, 5, [9, 9], [3, 3], p(1, 2, 2, 1)),
    ];
    for (i, c) in cases.iter().enumerate() {
        for &x_zp in &[0, 128, 255] {
            for &per_channel in &[false, true] {
                let g = GemmTester::new()
                    .x_zp(x_zp)
                    .per_channel(per_channel)
                    .relu(i % 2 == 0)
                    .bias(x_zp != 255)
                    .w_zp(if per_channel { 2 } else { 0 })
                    .seed(i as u64);
                c.clone().batch(1 + i % 2).gemm(g).test(engine, r);
            }
        }
    }
    // Explicit clamps on the GEMM and depthwise paths.
    for (i, &(lo, hi)) in [(0u8, 200u8), (40, 160), (128, 128)].iter().enumerate() {
        for c in [
            ConvTester::new(6, 6, [9, 10], [3, 3], p(1, 1, 1, 6)),
            ConvTester::new(5, 9, [7, 6], [3, 3], p(1, 1, 1, 1)),
            ConvTester::new(8, 12, [8, 8], [3, 3], p(1, 1, 1, 2)),
        ] {
            let g = GemmTester::new()
                .clamp(lo, hi)
                .out_zp(100)
                .per_channel(i % 2 == 0)
                .seed(i as u64);
            c.gemm(g).test(engine, r);
        }
    }
    // Extreme output scales on the depthwise and GEMM paths (range fallbacks).
    for &f in &[1e-30, 1e-9, 1e9, 1e30] {
        for c in [
            ConvTester::new(6, 6, [9, 10], [3, 3], p(1, 1, 1, 6)),
            ConvTester::new(5, 9, [7, 6], [3, 3], p(1, 1, 1, 1)),
        ] {
            let g = GemmTester::new()
                .out_scale_factor(f)
                .out_zp(0)
                .per_channel(true);
            c.gemm(g).test(engine, r);
        }
    }
}

/// Conv2d on channels-last (NHWC) inputs, and the fused conv + residual
/// add on both formats: 1×1 stride 1 (the pixels as GEMM rows), strided
/// 1×1, k×k with and without padding, dilation, groups (per-tap reads,
/// `C/groups` a multiple of 4 or not), C not a multiple of 4 (gathered
/// rows), batches whose rows cross image boundaries, K past the driver's
/// k-block inside one kernel row and inside one tap, weight zero points
/// (row sums), zero points 0/128/255, full-range and all-255 activations,
/// clamps.
pub fn sweep_conv2d_nhwc(engine: &Engine) {
    let r = reference();
    let r = &r;
    let p = |s: usize, pad: usize, d: usize, g: usize| Conv2dParams {
        stride: [s, s],
        padding: [pad, pad],
        dilation: [d, d],
        groups: g,
    };
    let cl = MemoryFormat::ChannelsLast;
    let cases = [
        ConvTester::new(16, 40, [7, 9], [1, 1], p(1, 0, 1, 1)),
        ConvTester::new(12, 33, [9, 8], [1, 1], p(2, 0, 1, 1)),
        ConvTester::new(8, 36, [11, 10], [3, 3], p(1, 1, 1, 1)),
        ConvTester::new(8, 20, [9, 9], [3, 3], p(2, 1, 1, 1)),
        ConvTester::new(4, 8, [6, 7], [3, 3], p(1, 0, 1, 1)),
        ConvTester::new(20, 17, [8, 8], [5, 5], p(1, 2, 1, 1)),
        ConvTester::new(3, 10, [13, 11], [7, 7], p(2, 3, 1, 1)),
        // 1 and 2 input channels (x86 widens 1-3 channels to 4): MNIST's
        // first conv, and a dilated strided one.
        ConvTester::new(1, 33, [9, 8], [3, 3], p(1, 1, 1, 1)),
        ConvTester::new(2, 9, [11, 10], [3, 3], p(2, 2, 2, 1)),
        ConvTester::new(5, 7, [10, 9], [3, 3], p(1, 1, 1, 1)),
        ConvTester::new(12, 12, [9, 9], [3, 3], p(1, 2, 2, 1)),
        ConvTester::new(16, 24, [8, 9], [3, 3], p(1, 1, 1, 2)),
        ConvTester::new(24, 12, [7, 7], [3, 3], p(2, 1, 1, 4)),
        ConvTester::new(12, 12, [6, 6], [3, 3], p(1, 1, 1, 3)),
        // K = 9·96 = 864: the k-block ends inside a kernel row.
        ConvTester::new(96, 34, [5, 6], [3, 3], p(1, 1, 1, 1)),
        // K = 1000 in one tap of a 1×1 stride-2 conv: split inside a segment.
        ConvTester::new(1000, 9, [3, 4], [1, 1], p(2, 0, 1, 1)),
        // 1×1 stride 1 with K past the k-block.
        ConvTester::new(900, 33, [3, 3], [1, 1], p(1, 0, 1, 1)),
        // 7×7 output: rows cross images in the merged NHWC row space.
        ConvTester::new(32, 64, [7, 7], [3, 3], p(1, 1, 1, 1)),
    ];
    for (i, c) in cases.iter().enumerate() {
        for &x_zp in &[0, 128, 255] {
            let per_channel = (i + x_zp as usize).is_multiple_of(2);
            let g = GemmTester::new()
                .x_zp(x_zp)
                .per_channel(per_channel)
                .relu(i % 3 == 0)
                .bias(x_zp != 255)
                .w_zp(if i % 4 == 1 { 3 } else { 0 })
                .act(if x_zp == 255 && i % 2 == 0 {
                    Act::AllMax
                } else {
                    Act::Full
                })
                .seed(100 + i as u64);
            c.clone()
                .batch(1 + i % 3)
                .format(cl)
                .gemm(g)
                .test(engine, r);
        }
    }
    // Clamps on channels-last.
    for (i, &(lo, hi)) in [(0u8, 200u8), (40, 160), (128, 128)].iter().enumerate() {
        let g = GemmTester::new()
            .clamp(lo, hi)
            .out_zp(100)
            .per_channel(i % 2 == 0)
            .seed(i as u64);
        ConvTester::new(8, 12, [8, 8], [3, 3], p(1, 1, 1, 1))
            .format(cl)
            .gemm(g)
            .test(engine, r);
    }
    // Conv + residual add (and add_relu), both formats.
    let res_cases = [
        ConvTester::new(16, 16, [8, 8], [3, 3], p(1, 1, 1, 1)),
        ConvTester::new(24, 40, [5, 7], [1, 1], p(1, 0, 1, 1)),
        ConvTester::new(8, 32, [9, 9], [1, 1], p(2, 0, 1, 1)),
        ConvTester::new(5, 6, [7, 7], [3, 3], p(1, 1, 1, 1)),
        ConvTester::new(6, 6, [9, 10], [3, 3], p(1, 1, 1, 6)),
        ConvTester::new(16, 24, [8, 9], [3, 3], p(1, 1, 1, 2)),
    ];
    for (i, c) in res_cases.iter().enumerate() {
        for format in [cl, MemoryFormat::Contiguous] {
            for relu in [false, true] {
                let g = GemmTester::new()
                    .x_zp([0, 128, 255][i % 3])
                    .per_channel(i % 2 == 0)
                    .w_zp(if i == 3 { 2 } else { 0 })
                    .seed(7 + i as u64);
                c.clone()
                    .batch(1 + i % 2)
                    .format(format)
                    .residual(relu)
                    .gemm(g)
                    .test(engine, r);
            }
        }
    }
}

/// Depthwise conv on channels-last (NHWC) inputs: 3×3 and 5×5 (the NHWC
/// kernels) with channel counts around the vector widths (tails of 1..15
/// lanes), strides 1, 2 and 3, padding 0..2, odd and tiny spatial sizes,
/// batches; then 7×7, dilation 2 and 1×1 (other routes); zero points
/// 0/128/255, weight zero points, full-range and all-255 activations,
/// clamps and extreme output scales (the scalar formula).
pub fn sweep_dwconv_nhwc(engine: &Engine) {
    let r = reference();
    let r = &r;
    let cl = MemoryFormat::ChannelsLast;
    let dw = |c: usize, hw: [usize; 2], k: usize, s: usize, pad: usize| {
        ConvTester::new(
            c,
            c,
            hw,
            [k, k],
            Conv2dParams {
                stride: [s, s],
                padding: [pad, pad],
                dilation: [1, 1],
                groups: c,
            },
        )
    };
    let mut i = 0u64;
    for &c in &[1, 3, 8, 15, 16, 17, 31, 32, 33, 48, 69] {
        for &(k, s, pad) in &[
            (3, 1, 1),
            (3, 2, 1),
            (5, 1, 2),
            (5, 2, 2),
            (3, 1, 0),
            (3, 3, 2),
            (5, 2, 0),
        ] {
            for &hw in &[[7, 9], [5, 5], [12, 11]] {
                if hw[0] + 2 * pad < k || hw[1] + 2 * pad < k {
                    continue;
                }
                i += 1;
                let x_zp = [0, 128, 255][(i % 3) as usize];
                let g = GemmTester::new()
                    .x_zp(x_zp)
                    .per_channel(i.is_multiple_of(2))
                    .w_zp(if i.is_multiple_of(5) { 3 } else { 0 })
                    .relu(i.is_multiple_of(4))
                    .bias(!i.is_multiple_of(7))
                    .act(if i.is_multiple_of(9) {
                        Act::AllMax
                    } else {
                        Act::Full
                    })
                    .wt(if i.is_multiple_of(11) {
                        Wt::AllMin
                    } else {
                        Wt::Full
                    })
                    .seed(i);
                dw(c, hw, k, s, pad)
                    .batch(1 + (i % 2) as usize)
                    .format(cl)
                    .gemm(g)
                    .test(engine, r);
            }
        }
    }
    // Other kernels and dilation (other routes), clamps, extreme scales.
    let other = [
        dw(20, [9, 9], 7, 1, 3),
        ConvTester::new(
            18,
            18,
            [9, 10],
            [3, 3],
            Conv2dParams {
                stride: [1, 1],
                padding: [2, 2],
                dilation: [2, 2],
                groups: 18,
            },
        ),
        dw(24, [6, 6], 1, 1, 0),
        dw(17, [8, 7], 3, 1, 1),
    ];
    for (j, c) in other.iter().enumerate() {
        for (lo, hi) in [(0u8, 255u8), (40, 160)] {
            let g = GemmTester::new()
                .clamp(lo, hi)
                .out_zp(100)
                .per_channel(j % 2 == 0)
                .seed(j as u64);
            c.clone().format(cl).gemm(g).test(engine, r);
        }
    }
    for &f in &[1e-30, 1e-9, 1e9, 1e30] {
        let g = GemmTester::new()
            .out_scale_factor(f)
            .out_zp(0)
            .per_channel(true);
        dw(19, [7, 8], 3, 1, 1).format(cl).gemm(g).test(engine, r);
    }
}

/// Inputs for the quantize sweep: every rounding tie near the code range,
/// values far outside it, ±inf, ±0, subnormals and random values.
fn quantize_inputs(len: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let specials = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE / 2.0,
        f32::MAX,
        f32::MIN,
        3.0e9,
        -3.0e9,
    ];
    (0..len)
        .map(|i| match r.next_u64() % 4 {
            0 => specials[i % specials.len()],
            // Exact ties (h + 0.5) and their neighbours, in scale units.
            1 => {
                let h = (r.next_u64() % 700) as f32 - 350.0 + 0.5;
                let v = h * scale;
                match r.next_u64() % 3 {
                    0 => v,
                    1 => f32::from_bits(v.to_bits() + 1),
                    _ => f32::from_bits(v.to_bits().saturating_sub(1)),
                }
            }
            _ => ((r.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 800.0 - 400.0) as f32 * scale,
        })
        .collect()
}

/// `quantize_per_tensor_into` and `dequantize_into` on `engine` against the
/// scalar definition (`numerics::quantize_val` / `dequantize_val`), for both
/// 8-bit dtypes, zero points at both ends and the middle, every length up to
/// two vector blocks past 64 and one long enough to be threaded; plus the
/// NaN error (with the first NaN's index) and the length check.
pub fn sweep_quantize(engine: &Engine) {
    use rquant_core::numerics::{dequantize_val, inv_scale, quantize_val};
    use rquant_core::QType;

    fn one<T: QType>(engine: &Engine, x: &[f32], scale: f64, zp: i64) {
        let who = format!("{}/{}", engine.name(), engine.isa());
        let mut q = vec![T::zeroed(); x.len()];
        engine
            .quantize_per_tensor_into(x, scale, zp, &mut q)
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        let inv = inv_scale(scale);
        for (i, (&v, &got)) in x.iter().zip(&q).enumerate() {
            let want = quantize_val::<T>(inv, zp, v);
            assert_eq!(
                got,
                want,
                "quantize on {who}: x[{i}] = {v:e} (len {}, scale {scale}, zp {zp}, {})",
                x.len(),
                T::DTYPE
            );
        }
        let qt = QTensor::from_int_repr(
            vec![q.len()],
            q.clone(),
            QParams::PerTensor {
                scale,
                zero_point: zp,
            },
        )
        .expect("valid qtensor");
        let mut d = vec![f32::NAN; q.len()];
        engine
            .dequantize_into(&qt, &mut d)
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        for (i, (&b, &got)) in q.iter().zip(&d).enumerate() {
            let want = dequantize_val(scale as f32, zp, b.to_i64());
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "dequantize on {who}: q[{i}] = {b:?} (scale {scale}, zp {zp})"
            );
        }
    }

    // The long lengths reach the threaded split and (8M + 13, over 32 MiB
    // moved) the x86 engine's streaming stores.
    let lens: Vec<usize> = (0..=200)
        .chain([1000, 4099, 300_001, (8 << 20) + 13])
        .collect();
    for (li, &len) in lens.iter().enumerate() {
        for (si, &scale) in [0.0123f64, 1.0, 1e-6, 3.7e4].iter().enumerate() {
            let long = len > 4099;
            if long && si > 1 {
                continue;
            }
            let x = quantize_inputs(len, scale as f32, (li * 7 + si) as u64);
            for zp in [0, 1, 128, 254, 255] {
                if !long || zp == 1 {
                    one::<u8>(engine, &x, scale, zp);
                }
            }
            for zp in [-128, -1, 0, 127] {
                if !long || zp == -1 {
                    one::<i8>(engine, &x, scale, zp);
                }
            }
        }
    }

    // NaN: an error naming the first NaN, wherever it sits (vector body, tail, later chunk).
    for (len, at) in [
        (1, 0),
        (70, 3),
        (70, 69),
        (300_001, 299_999),
        (300_001, 200_000),
    ] {
        let mut x = quantize_inputs(len, 0.1, 99);
        x[at] = f32::NAN;
        if at + 1 < len {
            x[len - 1] = f32::NAN;
        }
        let mut q = vec![0u8; len];
        let err = engine
            .quantize_per_tensor_into(&x, 0.1, 3, &mut q)
            .expect_err("NaN must be an error");
        assert_eq!(
            err,
            rquant_core::QuantError::NaN {
                op: "quantize_per_tensor_into",
                index: at
            },
            "{}/{}",
            engine.name(),
            engine.isa()
        );
    }
    let mut short = vec![0u8; 3];
    assert!(engine
        .quantize_per_tensor_into(&[1.0; 4], 0.1, 0, &mut short)
        .is_err());
    assert!(engine
        .quantize_per_tensor_into(&[1.0; 3], 0.0, 0, &mut short)
        .is_err());
}

/// The sweeps as `#[test]`s over the engines a function returns (one per
/// ISA path), so every engine crate runs the same tester the same way:
/// `rquant_testkit::sweep_tests!(paths);`.
#[macro_export]
macro_rules! sweep_tests {
    ($paths:path) => {
        #[test]
        fn linear_static_every_path() {
            for e in $paths() {
                $crate::sweep_linear(&e);
            }
        }

        #[test]
        fn linear_dynamic_every_path() {
            for e in $paths() {
                $crate::sweep_linear_dynamic(&e);
            }
        }

        #[test]
        fn linear_fp16_every_path() {
            for e in $paths() {
                $crate::sweep_linear_fp16(&e);
            }
        }

        #[test]
        fn quantize_every_path() {
            for e in $paths() {
                $crate::sweep_quantize(&e);
            }
        }

        #[test]
        fn pair_bound_every_path() {
            for e in $paths() {
                $crate::sweep_pair_bound(&e);
            }
        }

        #[test]
        fn every_kernel_of_every_path_ran() {
            for e in $paths() {
                $crate::sweep_kernels_ran(&e);
            }
        }

        #[test]
        fn conv2d_every_path() {
            for e in $paths() {
                $crate::sweep_conv2d(&e);
            }
        }

        #[test]
        fn pooling_every_path() {
            for e in $paths() {
                $crate::sweep_pooling(&e);
            }
        }

        #[test]
        fn conv2d_channels_last_and_residual_every_path() {
            for e in $paths() {
                $crate::sweep_conv2d_nhwc(&e);
            }
        }

        #[test]
        fn binary_every_path() {
            for e in $paths() {
                $crate::sweep_binary(&e);
            }
        }

        #[test]
        fn activations_every_path() {
            for e in $paths() {
                $crate::sweep_activations(&e);
            }
        }

        #[test]
        fn cat_every_path() {
            for e in $paths() {
                $crate::sweep_cat(&e);
            }
        }

        #[test]
        fn requantize_every_path() {
            for e in $paths() {
                $crate::sweep_requantize(&e);
            }
        }

        #[test]
        fn depthwise_channels_last_every_path() {
            for e in $paths() {
                $crate::sweep_dwconv_nhwc(&e);
            }
        }
    };
}
