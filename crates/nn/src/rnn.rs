//! Recurrent modules: `nn.LSTM` / `nn.GRU` / `nn.RNN` (multi-layer,
//! bidirectional, batch_first, LSTM `proj_size`) and the cells `LSTMCell`,
//! `GRUCell`, `RNNCell`, with float forward and backward (backpropagation
//! through time). The recurrence takes its projections as a function, so
//! the dynamic quantized modules (`nnqd.LSTM`, `nnqd.GRU`, the cells;
//! [`crate::quantized::QDynRnn`], [`QDynCell`]) run the same code with int8
//! or fp16 dynamic linears.
//!
//! The arithmetic follows ATen's CPU RNN (`aten/src/ATen/native/RNN.cpp`):
//! each direction's input projection is computed for the whole sequence at
//! once (one dynamic quantization of the whole input), the hidden
//! projection per step; LSTM `gates = hh + ih`, `c' = f·c + i·g`,
//! `h' = o·tanh(c')` (then `h' · W_hrᵀ` with a projection); GRU
//! `r = σ(hh_r + ih_r)`, `z = σ(hh_z + ih_z)`, `n = tanh(ih_n + hh_n·r)`,
//! `h' = (h − n)·z + n`; RNN `act(hh + ih)`. Bidirectional layers run the
//! reverse direction over the reversed steps and concatenate the two
//! outputs on the feature axis; layer `l > 0` reads that concatenation.

use rquant_core::{Engine, Tensor};
use serde_json::{json, Value as J};

use crate::error::{bad, NnError, Result};
use crate::format::Saver;
use crate::functional as F;
use crate::gemm::{sgemm, Mat};
use crate::module::{Layer, Module};
use crate::param::{Param, Rng};
use crate::quantized::DynWeight;
use crate::registry::{ModuleRegistry, Node};
use crate::value::Value;

pub use crate::embeddings::Embedding;

/// Which recurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RnnKind {
    Lstm,
    Gru,
    /// `nn.RNN(nonlinearity="tanh")`.
    RnnTanh,
    /// `nn.RNN(nonlinearity="relu")`.
    RnnRelu,
}

impl RnnKind {
    /// "LSTM", "GRU" or "RNN".
    pub fn name(self) -> &'static str {
        match self {
            RnnKind::Lstm => "LSTM",
            RnnKind::Gru => "GRU",
            RnnKind::RnnTanh | RnnKind::RnnRelu => "RNN",
        }
    }
    pub fn gates(self) -> usize {
        match self {
            RnnKind::Lstm => 4,
            RnnKind::Gru => 3,
            RnnKind::RnnTanh | RnnKind::RnnRelu => 1,
        }
    }
}

/// Weights of one layer and direction (`weight_ih_l{k}[_reverse]`,
/// `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}`, and with `proj_size`
/// `weight_hr_l{k}`).
#[derive(Debug, Clone)]
pub struct RnnLayer {
    pub w_ih: Param,
    pub w_hh: Param,
    pub b_ih: Option<Param>,
    pub b_hh: Option<Param>,
    pub w_hr: Option<Param>,
}

/// Which projection of which layer and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proj {
    Ih,
    Hh,
    /// The LSTM output projection (`proj_size`), no bias.
    Hr,
}

/// The shape of a recurrent network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RnnSpec {
    pub kind: RnnKind,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    /// LSTM output projection size (0: none).
    pub proj_size: usize,
    pub batch_first: bool,
}

impl RnnSpec {
    pub fn dirs(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
    /// Size of `h` (the projection size with one).
    pub fn h_out(&self) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }
    /// Input size of layer `l`.
    pub fn layer_input(&self, l: usize) -> usize {
        if l == 0 {
            self.input_size
        } else {
            self.dirs() * self.h_out()
        }
    }
    /// The parameter name suffix of (layer, direction): `l0`, `l1_reverse`.
    pub fn suffix(&self, ld: usize) -> String {
        let (l, d) = (ld / self.dirs(), ld % self.dirs());
        if d == 1 {
            format!("l{l}_reverse")
        } else {
            format!("l{l}")
        }
    }
    /// `[gates·H, in_l]`, `[gates·H, h_out]`, and `[proj, H]` of (layer, dir) `ld`.
    pub fn shapes(&self, ld: usize) -> ([usize; 2], [usize; 2], Option<[usize; 2]>) {
        let l = ld / self.dirs();
        let g = self.kind.gates() * self.hidden_size;
        (
            [g, self.layer_input(l)],
            [g, self.h_out()],
            (self.proj_size > 0).then_some([self.proj_size, self.hidden_size]),
        )
    }
    fn check(&self) -> Result<()> {
        if self.proj_size > 0 && self.kind != RnnKind::Lstm {
            return Err(bad("RNN", "proj_size is only for LSTM"));
        }
        if self.proj_size >= self.hidden_size && self.proj_size > 0 {
            return Err(bad(
                "LSTM",
                format!(
                    "proj_size {} must be smaller than hidden_size {}",
                    self.proj_size, self.hidden_size
                ),
            ));
        }
        if self.num_layers == 0 || self.hidden_size == 0 {
            return Err(bad("RNN", "num_layers and hidden_size must be positive"));
        }
        // A file's sizes are a claim: the products the shapes use must fit.
        let fits = self.kind.gates().checked_mul(self.hidden_size).is_some()
            && self.dirs().checked_mul(self.h_out()).is_some()
            && self.num_layers.checked_mul(self.dirs()).is_some();
        if !fits {
            return Err(bad(
                "RNN",
                format!(
                    "sizes overflow: hidden_size {}, proj_size {}, num_layers {}",
                    self.hidden_size, self.proj_size, self.num_layers
                ),
            ));
        }
        Ok(())
    }
}

/// ATen's vectorised f32 sigmoid: `1 / (1 + exp(0 − x))` with
/// [`vecmath::exp`].
fn sigmoid(x: f32) -> f32 {
    1.0 / (vecmath::exp(0.0 - x) + 1.0)
}

fn tanh(x: f32) -> f32 {
    vecmath::tanh(x)
}

/// Sleef's f32 `expf8_u10` and `tanhf8_u10` (FMA build), element by
/// element, reimplemented from the published algorithms (Sleef, Boost
/// Software License 1.0: Cody–Waite reduction by ln 2 and a degree-6
/// polynomial; tanh from a double-float `exp` as `(e − 1/e) / (e + 1/e)`).
/// ATen's AVX2 `sigmoid` is `1 / (1 + expf8_u10(0 − x))`, which [`sigmoid`]
/// reproduces bit for bit; a different last bit of a gate is enough to
/// move a later dynamic quantization of the hidden state, so the
/// recurrences use these rather than libm's. PyTorch's `tanh` on an x86
/// build with MKL is MKL's vsTanh, which these do not reproduce: they agree
/// within one ulp (Sleef's tanh is kept: it is the same on every platform).
#[allow(clippy::excessive_precision, clippy::inconsistent_digit_grouping)]
pub mod vecmath {
    // The constants are Sleef's literals, as written there.
    const R_LN2: f32 = std::f32::consts::LOG2_E;
    const L2U: f32 = 0.693145751953125;
    const L2L: f32 = 1.428606765330187045e-06;

    /// `a·b + c`, one rounding.
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    /// `a·b − c`, one rounding.
    #[inline(always)]
    fn fms(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, -c)
    }
    /// `c − a·b`, one rounding.
    #[inline(always)]
    fn fnma(a: f32, b: f32, c: f32) -> f32 {
        (-a).mul_add(b, c)
    }
    fn pow2i(q: i32) -> f32 {
        f32::from_bits((q.wrapping_add(0x7f) as u32) << 23)
    }
    /// `d · 2^e` in two steps (no overflow of the exponent field).
    fn ldexp2(d: f32, e: i32) -> f32 {
        d * pow2i(e >> 1) * pow2i(e.wrapping_sub(e >> 1))
    }
    /// `cvtps_epi32`: round to nearest even (callers override the result
    /// where the range is exceeded).
    fn rint(x: f32) -> i32 {
        x.round_ties_even() as i32
    }

    /// A double-float `x + y` (|y| ≤ ulp(x)/2 or so).
    #[derive(Clone, Copy)]
    struct Df {
        x: f32,
        y: f32,
    }

    fn add2_df_f(a: Df, b: f32) -> Df {
        let s = a.x + b;
        let v = s - a.x;
        let t = (a.x - (s - v)) + (b - v);
        Df { x: s, y: t + a.y }
    }
    fn add2_df_df(a: Df, b: Df) -> Df {
        let s = a.x + b.x;
        let v = s - a.x;
        let t = (a.x - (s - v)) + (b.x - v);
        Df {
            x: s,
            y: t + (a.y + b.y),
        }
    }
    fn add_f_df(a: f32, b: Df) -> Df {
        let s = a + b.x;
        Df {
            x: s,
            y: ((a - s) + b.x) + b.y,
        }
    }
    fn add_df_df(a: Df, b: Df) -> Df {
        let s = a.x + b.x;
        Df {
            x: s,
            y: (((a.x - s) + b.x) + a.y) + b.y,
        }
    }
    fn mul_df_f(a: Df, b: f32) -> Df {
        let s = a.x * b;
        Df {
            x: s,
            y: fma(a.y, b, fms(a.x, b, s)),
        }
    }
    fn mul_df_df(a: Df, b: Df) -> Df {
        let s = a.x * b.x;
        Df {
            x: s,
            y: fma(a.x, b.y, fma(a.y, b.x, fms(a.x, b.x, s))),
        }
    }
    fn squ(a: Df) -> Df {
        let s = a.x * a.x;
        Df {
            x: s,
            y: fma(a.x + a.x, a.y, fms(a.x, a.x, s)),
        }
    }
    fn rec(d: Df) -> Df {
        let s = 1.0 / d.x;
        Df {
            x: s,
            y: s * fnma(d.y, s, fnma(d.x, s, 1.0)),
        }
    }
    fn div(n: Df, d: Df) -> Df {
        let t = 1.0 / d.x;
        let s = n.x * t;
        let u = fms(t, n.x, s);
        let v = fnma(d.y, t, fnma(d.x, t, 1.0));
        Df {
            x: s,
            y: fma(s, v, fma(n.y, t, u)),
        }
    }

    /// `exp(x)` (`expf8_u10`).
    pub fn exp(d: f32) -> f32 {
        let q = rint(d * R_LN2);
        let qf = q as f32;
        let s = fma(qf, -L2U, d);
        let s = fma(qf, -L2L, s);
        let mut u = 0.000198527617612853646278381_f32;
        u = fma(u, s, 0.00139304355252534151077271);
        u = fma(u, s, 0.00833336077630519866943359);
        u = fma(u, s, 0.0416664853692054748535156);
        u = fma(u, s, 0.166666671633720397949219);
        u = fma(u, s, 0.5);
        let u = 1.0 + fma(s * s, u, s);
        let u = ldexp2(u, q);
        if d < -104.0 {
            0.0
        } else if 100.0 < d {
            f32::INFINITY
        } else {
            u
        }
    }

    /// Double-float `exp` of `d` (Sleef's `expk2f`).
    fn expk2(d: Df) -> Df {
        let q = rint((d.x + d.y) * R_LN2);
        let qf = q as f32;
        let s = add2_df_f(d, qf * -L2U);
        let s = add2_df_f(s, qf * -L2L);
        let mut u = 0.1980960224e-3_f32;
        u = fma(u, s.x, 0.1394256484e-2);
        u = fma(u, s.x, 0.8333456703e-2);
        u = fma(u, s.x, 0.4166637361e-1);
        let t = add2_df_f(mul_df_f(s, u), 0.166666659414234244790680580464);
        let t = add2_df_f(mul_df_df(s, t), 0.5);
        let t = add2_df_df(s, mul_df_df(squ(s), t));
        let t = add_f_df(1.0, t);
        if d.x < -104.0 {
            Df { x: 0.0, y: 0.0 }
        } else {
            Df {
                x: ldexp2(t.x, q),
                y: ldexp2(t.y, q),
            }
        }
    }

    /// `tanh(x)` (`tanhf8_u10`).
    pub fn tanh(x: f32) -> f32 {
        if x.is_nan() {
            return f32::NAN;
        }
        let a = x.abs();
        let d = expk2(Df { x: a, y: 0.0 });
        let e = rec(d);
        let r = div(add_df_df(d, Df { x: -e.x, y: -e.y }), add_df_df(d, e));
        let mut y = r.x + r.y;
        if a > 8.664339742 || y.is_nan() {
            y = 1.0;
        }
        // Sleef's `mulsign`: the sign bit of x xored in.
        f32::from_bits(y.to_bits() ^ (x.to_bits() & 0x8000_0000))
    }
}

/// Per-step values kept for backward (float training).
#[derive(Debug, Clone, Default)]
struct StepCache {
    h_prev: Vec<f32>,
    c_prev: Vec<f32>,
    /// Activated gates (LSTM i, f, g, o; GRU r, z, n; RNN h).
    act: Vec<f32>,
    /// GRU: the hidden projection of the new gate (before `· r`).
    hh_n: Vec<f32>,
    /// LSTM: tanh(c').
    tanh_c: Vec<f32>,
    /// LSTM with projection: h before the projection.
    h_raw: Vec<f32>,
}

#[derive(Debug, Clone, Default)]
struct LayerCache {
    /// The layer's input sequence `[T·B, in]` (time-major).
    input: Vec<f32>,
    /// Per direction, per step (in forward time order of that direction).
    steps: Vec<Vec<StepCache>>,
}

/// What a forward records for backward.
#[derive(Debug, Clone, Default)]
pub struct RnnCache {
    layers: Vec<LayerCache>,
    t: usize,
    b: usize,
}

/// The recurrence with pluggable projections: `proj(ld, which, x)` returns
/// `x · Wᵀ + b` for layer-direction `ld`'s input, hidden or output
/// projection. `h0` is `(h_0, c_0)` (`c_0` ignored for GRU / RNN), each
/// `[num_layers·dirs, B, ·]`. Returns the output sequence and `(h_n, c_n)`
/// (`c_n` empty for GRU and RNN); with `cache`, what backward needs.
pub fn run_rnn(
    spec: &RnnSpec,
    x: &Tensor,
    h0: Option<(&Tensor, &Tensor)>,
    proj: &dyn Fn(usize, Proj, &Tensor) -> Result<Tensor>,
    mut cache: Option<&mut RnnCache>,
) -> Result<(Tensor, (Tensor, Tensor))> {
    spec.check()?;
    let op = spec.kind.name();
    if x.ndim() != 3 || x.shape()[2] != spec.input_size {
        return Err(bad(
            op,
            format!(
                "input {:?} must be 3-D ending in input_size {}",
                x.shape(),
                spec.input_size
            ),
        ));
    }
    let (b, t) = if spec.batch_first {
        (x.shape()[0], x.shape()[1])
    } else {
        (x.shape()[1], x.shape()[0])
    };
    if b == 0 || t == 0 {
        return Err(bad(op, format!("empty input {:?}", x.shape())));
    }
    let (hid, hout, dirs) = (spec.hidden_size, spec.h_out(), spec.dirs());
    let total = spec.num_layers * dirs;
    let lstm = spec.kind == RnnKind::Lstm;
    if let Some((h0, c0)) = h0 {
        if h0.shape() != [total, b, hout] {
            return Err(bad(
                op,
                format!("h_0 {:?} does not match [{total}, {b}, {hout}]", h0.shape()),
            ));
        }
        if lstm && c0.shape() != [total, b, hid] {
            return Err(bad(
                op,
                format!("c_0 {:?} does not match [{total}, {b}, {hid}]", c0.shape()),
            ));
        }
    }
    let at = |ti: usize, bi: usize| {
        if spec.batch_first {
            bi * t + ti
        } else {
            ti * b + bi
        }
    };
    let inp = spec.input_size;
    let mut seq = Vec::with_capacity(t * b * inp);
    for ti in 0..t {
        for bi in 0..b {
            let r = at(ti, bi);
            seq.extend_from_slice(&x.data()[r * inp..(r + 1) * inp]);
        }
    }
    let mut seq_in = inp;
    let g = spec.kind.gates() * hid;
    let (mut hn, mut cn) = (Vec::new(), Vec::new());
    if let Some(c) = cache.as_deref_mut() {
        c.layers.clear();
        c.t = t;
        c.b = b;
    }
    for l in 0..spec.num_layers {
        let seq_t = Tensor::new([t, b, seq_in], seq.clone())?;
        let mut out = vec![0.0f32; t * b * dirs * hout];
        let mut lcache = LayerCache {
            input: if cache.is_some() {
                seq.clone()
            } else {
                Vec::new()
            },
            steps: Vec::new(),
        };
        for d in 0..dirs {
            let ld = l * dirs + d;
            let gi_all = proj(ld, Proj::Ih, &seq_t)?;
            if gi_all.numel() != t * b * g {
                return Err(bad(op, "input projection has the wrong size"));
            }
            let (mut h, mut c) = (vec![0.0f32; b * hout], vec![0.0f32; b * hid]);
            if let Some((h0, c0)) = h0 {
                h.copy_from_slice(&h0.data()[ld * b * hout..(ld + 1) * b * hout]);
                if lstm {
                    c.copy_from_slice(&c0.data()[ld * b * hid..(ld + 1) * b * hid]);
                }
            }
            let mut dsteps = Vec::new();
            for s in 0..t {
                let ti = if d == 0 { s } else { t - 1 - s };
                let gi = &gi_all.data()[ti * b * g..(ti + 1) * b * g];
                let gh_t = proj(ld, Proj::Hh, &Tensor::new([b, hout], h.clone())?)?;
                let gh = gh_t.data();
                let mut sc = StepCache::default();
                if cache.is_some() {
                    sc.h_prev = h.clone();
                    sc.c_prev = c.clone();
                    sc.act = vec![0.0; b * g];
                    if spec.kind == RnnKind::Gru {
                        sc.hh_n = vec![0.0; b * hid];
                    }
                    if lstm {
                        sc.tanh_c = vec![0.0; b * hid];
                    }
                }
                let mut hraw = vec![0.0f32; b * hid];
                for bi in 0..b {
                    let o = bi * g;
                    for j in 0..hid {
                        match spec.kind {
                            RnnKind::Lstm => {
                                let s4 = |k: usize| gh[o + k * hid + j] + gi[o + k * hid + j];
                                let (ig, fg, gg, og) =
                                    (sigmoid(s4(0)), sigmoid(s4(1)), tanh(s4(2)), sigmoid(s4(3)));
                                let cv = fg * c[bi * hid + j] + ig * gg;
                                c[bi * hid + j] = cv;
                                let tc = tanh(cv);
                                hraw[bi * hid + j] = og * tc;
                                if cache.is_some() {
                                    for (k, v) in [ig, fg, gg, og].into_iter().enumerate() {
                                        sc.act[o + k * hid + j] = v;
                                    }
                                    sc.tanh_c[bi * hid + j] = tc;
                                }
                            }
                            RnnKind::Gru => {
                                let r = sigmoid(gh[o + j] + gi[o + j]);
                                let z = sigmoid(gh[o + hid + j] + gi[o + hid + j]);
                                let hn_ = gh[o + 2 * hid + j];
                                let n = tanh(gi[o + 2 * hid + j] + hn_ * r);
                                let hp = h[bi * hid + j];
                                hraw[bi * hid + j] = (hp - n) * z + n;
                                if cache.is_some() {
                                    sc.act[o + j] = r;
                                    sc.act[o + hid + j] = z;
                                    sc.act[o + 2 * hid + j] = n;
                                    sc.hh_n[bi * hid + j] = hn_;
                                }
                            }
                            RnnKind::RnnTanh | RnnKind::RnnRelu => {
                                let p = gh[o + j] + gi[o + j];
                                let v = if spec.kind == RnnKind::RnnTanh {
                                    tanh(p)
                                } else {
                                    p.max(0.0)
                                };
                                hraw[bi * hid + j] = v;
                                if cache.is_some() {
                                    sc.act[o + j] = v;
                                }
                            }
                        }
                    }
                }
                h = if spec.proj_size > 0 {
                    let p = proj(ld, Proj::Hr, &Tensor::new([b, hid], hraw.clone())?)?;
                    if cache.is_some() {
                        sc.h_raw = hraw;
                    }
                    p.into_data()
                } else {
                    hraw
                };
                for bi in 0..b {
                    let dst = ((ti * b + bi) * dirs + d) * hout;
                    out[dst..dst + hout].copy_from_slice(&h[bi * hout..(bi + 1) * hout]);
                }
                if cache.is_some() {
                    dsteps.push(sc);
                }
            }
            hn.extend_from_slice(&h);
            if lstm {
                cn.extend_from_slice(&c);
            }
            lcache.steps.push(dsteps);
        }
        if let Some(c) = cache.as_deref_mut() {
            c.layers.push(lcache);
        }
        seq = out;
        seq_in = dirs * hout;
    }
    let mut out = vec![0.0f32; b * t * seq_in];
    for ti in 0..t {
        for bi in 0..b {
            let r = at(ti, bi);
            out[r * seq_in..(r + 1) * seq_in]
                .copy_from_slice(&seq[(ti * b + bi) * seq_in..(ti * b + bi + 1) * seq_in]);
        }
    }
    let oshape = if spec.batch_first {
        [b, t, seq_in]
    } else {
        [t, b, seq_in]
    };
    let cshape = if lstm { vec![total, b, hid] } else { vec![0] };
    Ok((
        Tensor::new(oshape, out)?,
        (Tensor::new([total, b, hout], hn)?, Tensor::new(cshape, cn)?),
    ))
}

/// `nn.LSTM` / `nn.GRU` / `nn.RNN`.
#[derive(Debug, Clone)]
pub struct Rnn {
    pub kind: RnnKind,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub proj_size: usize,
    pub batch_first: bool,
    /// `num_layers · dirs` entries, layer-major (`l0`, `l0_reverse`, `l1`, …).
    pub layers: Vec<RnnLayer>,
    pub(crate) training: bool,
    cache: Option<RnnCache>,
}

impl Rnn {
    /// A unidirectional network without projection (PyTorch's init:
    /// uniform ±1/sqrt(hidden_size), seeded).
    pub fn new(
        kind: RnnKind,
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        batch_first: bool,
        rng: &mut Rng,
    ) -> Self {
        Self::with(
            RnnSpec {
                kind,
                input_size,
                hidden_size,
                num_layers,
                bidirectional: false,
                proj_size: 0,
                batch_first,
            },
            true,
            rng,
        )
        .expect("valid shape")
    }

    /// Any shape (bidirectional, `proj_size`, without biases).
    pub fn with(spec: RnnSpec, bias: bool, rng: &mut Rng) -> Result<Self> {
        spec.check()?;
        let k = 1.0 / (spec.hidden_size as f32).sqrt();
        let mut t = |s: [usize; 2]| {
            let n = s[0] * s[1];
            Param::new(
                Tensor::new(s.to_vec(), (0..n).map(|_| rng.sym(k)).collect()).expect("shape"),
            )
        };
        let mut layers = Vec::new();
        for ld in 0..spec.num_layers * spec.dirs() {
            let (ih, hh, hr) = spec.shapes(ld);
            let w_ih = t(ih);
            let w_hh = t(hh);
            let (b_ih, b_hh) = if bias {
                (Some(t([1, ih[0]])), Some(t([1, ih[0]])))
            } else {
                (None, None)
            };
            let flat = |p: Option<Param>| {
                p.map(|p| {
                    let n = p.value.numel();
                    Param::new(p.value.reshape([n]).expect("same size"))
                })
            };
            let w_hr = hr.map(&mut t);
            layers.push(RnnLayer {
                w_ih,
                w_hh,
                b_ih: flat(b_ih),
                b_hh: flat(b_hh),
                w_hr,
            });
        }
        Ok(Rnn {
            kind: spec.kind,
            input_size: spec.input_size,
            hidden_size: spec.hidden_size,
            num_layers: spec.num_layers,
            bidirectional: spec.bidirectional,
            proj_size: spec.proj_size,
            batch_first: spec.batch_first,
            layers,
            training: false,
            cache: None,
        })
    }

    pub fn spec(&self) -> RnnSpec {
        RnnSpec {
            kind: self.kind,
            input_size: self.input_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            bidirectional: self.bidirectional,
            proj_size: self.proj_size,
            batch_first: self.batch_first,
        }
    }

    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let spec = self.spec();
        let mut v = Vec::new();
        for (ld, layer) in self.layers.iter_mut().enumerate() {
            let sfx = spec.suffix(ld);
            v.push((format!("weight_ih_{sfx}"), &mut layer.w_ih));
            v.push((format!("weight_hh_{sfx}"), &mut layer.w_hh));
            if let Some(b) = &mut layer.b_ih {
                v.push((format!("bias_ih_{sfx}"), b));
            }
            if let Some(b) = &mut layer.b_hh {
                v.push((format!("bias_hh_{sfx}"), b));
            }
            if let Some(w) = &mut layer.w_hr {
                v.push((format!("weight_hr_{sfx}"), w));
            }
        }
        v
    }

    fn check_layers(&self) -> Result<()> {
        let spec = self.spec();
        spec.check()?;
        if self.layers.len() != spec.num_layers * spec.dirs() {
            return Err(bad(
                spec.kind.name(),
                format!(
                    "{} weight sets for {} layers × {} directions",
                    self.layers.len(),
                    spec.num_layers,
                    spec.dirs()
                ),
            ));
        }
        Ok(())
    }

    /// Float forward from optional initial states: the output sequence and
    /// `(h_n, c_n)` stacked over layers and directions (`c_n` empty for GRU
    /// and RNN).
    pub fn forward(
        &self,
        x: &Tensor,
        h0: Option<(&Tensor, &Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        self.check_layers()?;
        run_rnn(&self.spec(), x, h0, &|ld, p, v| self.proj(ld, p, v), None)
    }

    /// [`Rnn::forward`] recording what [`Rnn::backward_full`] needs (training).
    pub fn forward_train(
        &mut self,
        x: &Tensor,
        h0: Option<(&Tensor, &Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        self.check_layers()?;
        let mut cache = RnnCache::default();
        let r = run_rnn(
            &self.spec(),
            x,
            h0,
            &|ld, p, v| self.proj(ld, p, v),
            Some(&mut cache),
        )?;
        self.cache = Some(cache);
        Ok(r)
    }

    fn proj(&self, ld: usize, p: Proj, v: &Tensor) -> Result<Tensor> {
        let layer = &self.layers[ld];
        let (w, b) = match p {
            Proj::Ih => (&layer.w_ih, &layer.b_ih),
            Proj::Hh => (&layer.w_hh, &layer.b_hh),
            Proj::Hr => (layer.w_hr.as_ref().expect("proj_size"), &None),
        };
        let (n, k) = (w.value.shape()[0], w.value.shape()[1]);
        F::linear(v, w.value.data(), n, k, b.as_ref().map(|b| b.value.data()))
    }

    /// Backpropagation through time from the gradient of the output
    /// sequence (`dh_n`, `dc_n` zero): accumulates every parameter's
    /// gradient and returns the input's.
    pub fn backward_full(&mut self, g: &Tensor) -> Result<Tensor> {
        let cache = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        let spec = self.spec();
        let (t, b) = (cache.t, cache.b);
        let (hid, hout, dirs) = (spec.hidden_size, spec.h_out(), spec.dirs());
        let gates = spec.kind.gates();
        let g_n = gates * hid;
        let feat = dirs * hout;
        if g.numel() != t * b * feat {
            return Err(bad(
                spec.kind.name(),
                "gradient shape does not match the output",
            ));
        }
        // Time-major gradient of the top layer's output.
        let mut dseq = vec![0.0f32; t * b * feat];
        for ti in 0..t {
            for bi in 0..b {
                let r = if spec.batch_first {
                    bi * t + ti
                } else {
                    ti * b + bi
                };
                dseq[(ti * b + bi) * feat..(ti * b + bi + 1) * feat]
                    .copy_from_slice(&g.data()[r * feat..(r + 1) * feat]);
            }
        }
        for l in (0..spec.num_layers).rev() {
            let lc = &cache.layers[l];
            let in_l = spec.layer_input(l);
            let mut dinput = vec![0.0f32; t * b * in_l];
            for d in 0..dirs {
                let ld = l * dirs + d;
                let steps = &lc.steps[d];
                let w_hh = self.layers[ld].w_hh.value.data().to_vec();
                let w_hr = self.layers[ld]
                    .w_hr
                    .as_ref()
                    .map(|w| w.value.data().to_vec());
                let mut dgi_all = vec![0.0f32; t * b * g_n];
                let mut dw_hh = vec![0.0f32; g_n * hout];
                let mut db_hh = vec![0.0f32; g_n];
                let mut dw_hr = vec![0.0f32; spec.proj_size * hid];
                let mut dh_carry = vec![0.0f32; b * hout];
                let mut dc_carry = vec![0.0f32; b * hid];
                for s in (0..t).rev() {
                    let ti = if d == 0 { s } else { t - 1 - s };
                    let sc = &steps[s];
                    let mut dh = dh_carry.clone();
                    for bi in 0..b {
                        let src = ((ti * b + bi) * dirs + d) * hout;
                        for j in 0..hout {
                            dh[bi * hout + j] += dseq[src + j];
                        }
                    }
                    // Through the output projection.
                    let dh_raw = match &w_hr {
                        Some(wr) => {
                            // dW_hr[p, j] += Σ_b dh[b, p]·h_raw[b, j]
                            sgemm(
                                spec.proj_size,
                                b,
                                hid,
                                Mat::t(&dh, hout),
                                Mat::rows(&sc.h_raw, hid),
                                1.0,
                                &mut dw_hr,
                                hid,
                            );
                            let mut r = vec![0.0f32; b * hid];
                            sgemm(
                                b,
                                hout,
                                hid,
                                Mat::rows(&dh, hout),
                                Mat::rows(wr, hid),
                                0.0,
                                &mut r,
                                hid,
                            );
                            r
                        }
                        None => dh,
                    };
                    let mut dgi = vec![0.0f32; b * g_n];
                    let mut dgh = vec![0.0f32; b * g_n];
                    let mut dh_direct = vec![0.0f32; b * hout];
                    for bi in 0..b {
                        let o = bi * g_n;
                        for j in 0..hid {
                            let dhr = dh_raw[bi * hid + j];
                            match spec.kind {
                                RnnKind::Lstm => {
                                    let (ig, fg, gg, og) = (
                                        sc.act[o + j],
                                        sc.act[o + hid + j],
                                        sc.act[o + 2 * hid + j],
                                        sc.act[o + 3 * hid + j],
                                    );
                                    let tc = sc.tanh_c[bi * hid + j];
                                    let dout = dhr * tc;
                                    let dc = dc_carry[bi * hid + j] + dhr * og * (1.0 - tc * tc);
                                    let cp = sc.c_prev[bi * hid + j];
                                    let (di, df, dg) = (dc * gg, dc * cp, dc * ig);
                                    dc_carry[bi * hid + j] = dc * fg;
                                    let pre = [
                                        di * ig * (1.0 - ig),
                                        df * fg * (1.0 - fg),
                                        dg * (1.0 - gg * gg),
                                        dout * og * (1.0 - og),
                                    ];
                                    for (k, v) in pre.into_iter().enumerate() {
                                        dgi[o + k * hid + j] = v;
                                        dgh[o + k * hid + j] = v;
                                    }
                                }
                                RnnKind::Gru => {
                                    let (r, z, n) = (
                                        sc.act[o + j],
                                        sc.act[o + hid + j],
                                        sc.act[o + 2 * hid + j],
                                    );
                                    let hp = sc.h_prev[bi * hout + j];
                                    dh_direct[bi * hout + j] += dhr * z;
                                    let dz = dhr * (hp - n);
                                    let dn = dhr * (1.0 - z);
                                    let dn_pre = dn * (1.0 - n * n);
                                    let dr = dn_pre * sc.hh_n[bi * hid + j];
                                    let dr_pre = dr * r * (1.0 - r);
                                    let dz_pre = dz * z * (1.0 - z);
                                    dgi[o + j] = dr_pre;
                                    dgh[o + j] = dr_pre;
                                    dgi[o + hid + j] = dz_pre;
                                    dgh[o + hid + j] = dz_pre;
                                    dgi[o + 2 * hid + j] = dn_pre;
                                    dgh[o + 2 * hid + j] = dn_pre * r;
                                }
                                RnnKind::RnnTanh | RnnKind::RnnRelu => {
                                    let v = sc.act[o + j];
                                    let p = if spec.kind == RnnKind::RnnTanh {
                                        dhr * (1.0 - v * v)
                                    } else if v > 0.0 {
                                        dhr
                                    } else {
                                        0.0
                                    };
                                    dgi[o + j] = p;
                                    dgh[o + j] = p;
                                }
                            }
                        }
                    }
                    // Hidden projection: dW_hh += dghᵀ·h_prev, dh_prev = dgh·W_hh.
                    sgemm(
                        g_n,
                        b,
                        hout,
                        Mat::t(&dgh, g_n),
                        Mat::rows(&sc.h_prev, hout),
                        1.0,
                        &mut dw_hh,
                        hout,
                    );
                    for row in dgh.chunks(g_n) {
                        for (a, v) in db_hh.iter_mut().zip(row) {
                            *a += v;
                        }
                    }
                    let mut dhp = dh_direct;
                    sgemm(
                        b,
                        g_n,
                        hout,
                        Mat::rows(&dgh, g_n),
                        Mat::rows(&w_hh, hout),
                        1.0,
                        &mut dhp,
                        hout,
                    );
                    dh_carry = dhp;
                    dgi_all[ti * b * g_n..(ti + 1) * b * g_n].copy_from_slice(&dgi);
                }
                // Input projection over the whole sequence.
                let xin = Tensor::new([t * b, in_l], lc.input.clone())?;
                let gt = Tensor::new([t * b, g_n], dgi_all)?;
                let w_ih = self.layers[ld].w_ih.value.data().to_vec();
                let (dx, dw_ih, db_ih) = F::linear_backward(&xin, &w_ih, g_n, in_l, &gt, true)?;
                for (a, v) in dinput.iter_mut().zip(dx.expect("requested").data()) {
                    *a += v;
                }
                let layer = &mut self.layers[ld];
                layer.w_ih.accumulate(dw_ih)?;
                layer.w_hh.accumulate(dw_hh)?;
                if let Some(bb) = &mut layer.b_ih {
                    bb.accumulate(db_ih)?;
                }
                if let Some(bb) = &mut layer.b_hh {
                    bb.accumulate(db_hh)?;
                }
                if let Some(w) = &mut layer.w_hr {
                    w.accumulate(dw_hr)?;
                }
            }
            dseq = dinput;
        }
        let inp = spec.input_size;
        let mut dx = vec![0.0f32; t * b * inp];
        for ti in 0..t {
            for bi in 0..b {
                let r = if spec.batch_first {
                    bi * t + ti
                } else {
                    ti * b + bi
                };
                dx[r * inp..(r + 1) * inp]
                    .copy_from_slice(&dseq[(ti * b + bi) * inp..(ti * b + bi + 1) * inp]);
            }
        }
        let shape = if spec.batch_first {
            [b, t, inp]
        } else {
            [t, b, inp]
        };
        Ok(Tensor::new(shape, dx)?)
    }
}

impl Layer for Rnn {
    fn type_name(&self) -> String {
        self.kind.name().into()
    }
    /// The output sequence (use [`Layer::forward_state`] or [`Rnn::forward`]
    /// for initial and final states).
    fn forward(&mut self, x: Value) -> Result<Value> {
        let x = x.float("LSTM/GRU")?;
        let y = if self.training {
            self.forward_train(&x, None)?.0
        } else {
            Rnn::forward(self, &x, None)?.0
        };
        Ok(Value::F(y))
    }
    fn forward_state(
        &mut self,
        x: Tensor,
        state: Option<(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let h0 = state.as_ref().map(|(h, c)| (h, c));
        if self.training {
            self.forward_train(&x, h0)
        } else {
            Rnn::forward(self, &x, h0)
        }
    }
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        self.backward_full(&g)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        Rnn::params_mut(self)
    }
    fn named_weights(&self) -> Vec<(String, Tensor)> {
        let mut r = self.clone();
        r.params_mut()
            .into_iter()
            .filter(|(n, _)| n.starts_with("weight"))
            .map(|(n, p)| (n, p.value.clone()))
            .collect()
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        let bias = self.layers.first().is_some_and(|l| l.b_ih.is_some());
        let mut r = self.clone();
        for (n, p) in r.params_mut() {
            out.f32(&n, &p.value);
        }
        Ok(
            json!({"input_size": self.input_size, "hidden_size": self.hidden_size,
                  "num_layers": self.num_layers, "batch_first": self.batch_first, "bias": bias,
                  "bidirectional": self.bidirectional, "proj_size": self.proj_size,
                  "nonlinearity": if self.kind == RnnKind::RnnRelu { "relu" } else { "tanh" }}),
        )
    }
}

/// The spec a file describes (`bidirectional` and `proj_size` default to
/// off for files written before they existed).
pub(crate) fn spec_of(n: &Node, kind: RnnKind) -> Result<RnnSpec> {
    let kind = if kind == RnnKind::RnnTanh || kind == RnnKind::RnnRelu {
        match n.attrs().get("nonlinearity").and_then(J::as_str) {
            Some("relu") => RnnKind::RnnRelu,
            _ => RnnKind::RnnTanh,
        }
    } else {
        kind
    };
    let spec = RnnSpec {
        kind,
        input_size: n.get_usize("input_size")?,
        hidden_size: n.get_usize("hidden_size")?,
        num_layers: match n.attrs().get("num_layers") {
            Some(_) => n.get_usize("num_layers")?,
            None => n
                .field("layers")?
                .as_array()
                .map(|a| a.len())
                .ok_or_else(|| n.attr_error("layers", "not an array"))?,
        },
        bidirectional: n.get_bool_opt("bidirectional")?.unwrap_or(false),
        proj_size: match n.attrs().get("proj_size") {
            Some(_) => n.get_usize("proj_size")?,
            None => 0,
        },
        batch_first: n.get_bool("batch_first")?,
    };
    spec.check()
        .map_err(|e| n.attr_error("hidden_size", e.to_string()))?;
    Ok(spec)
}

pub(crate) fn register_loaders(r: &mut ModuleRegistry) {
    fn rnn(n: &mut Node) -> Result<Module> {
        let kind = match n.type_name() {
            "LSTM" => RnnKind::Lstm,
            "GRU" => RnnKind::Gru,
            _ => RnnKind::RnnTanh,
        };
        let spec = spec_of(n, kind)?;
        // The sizes are the file's claim: check them against the weights
        // it holds before allocating what they declare.
        for ld in 0..spec.num_layers * spec.dirs() {
            let (ih, hh, hr) = spec.shapes(ld);
            let sfx = spec.suffix(ld);
            n.expect_shape(&format!("weight_ih_{sfx}"), &ih)?;
            n.expect_shape(&format!("weight_hh_{sfx}"), &hh)?;
            if let Some(hr) = hr {
                n.expect_shape(&format!("weight_hr_{sfx}"), &hr)?;
            }
        }
        let bias = n.get_bool("bias")?;
        let mut r = Rnn::with(spec, bias, &mut Rng(0))
            .map_err(|e| n.attr_error("hidden_size", e.to_string()))?;
        for (name, prm) in r.params_mut() {
            let t = n.f32(&name)?;
            if t.shape() != prm.value.shape() {
                return Err(n.tensor_error(
                    &name,
                    format!("shape {:?}, expected {:?}", t.shape(), prm.value.shape()),
                ));
            }
            prm.value = t;
        }
        Ok(r.into())
    }
    r.register("LSTM", rnn);
    r.register("GRU", rnn);
    r.register("RNN", rnn);
    fn cell(n: &mut Node) -> Result<Module> {
        let kind = cell_kind(
            n.type_name(),
            n.attrs().get("nonlinearity").and_then(J::as_str),
        );
        let (inp, hid) = (n.get_usize("input_size")?, n.get_usize("hidden_size")?);
        let g = kind
            .gates()
            .checked_mul(hid)
            .ok_or_else(|| n.attr_error("hidden_size", "too large"))?;
        n.expect_shape("weight_ih", &[g, inp])?;
        n.expect_shape("weight_hh", &[g, hid])?;
        let mut c = RnnCell::new(kind, inp, hid, n.get_bool("bias")?, &mut Rng(0));
        for (name, prm) in c.params_mut() {
            let t = n.f32(&name)?;
            if t.shape() != prm.value.shape() {
                return Err(n.tensor_error(
                    &name,
                    format!("shape {:?}, expected {:?}", t.shape(), prm.value.shape()),
                ));
            }
            prm.value = t;
        }
        Ok(c.into())
    }
    r.register("LSTMCell", cell);
    r.register("GRUCell", cell);
    r.register("RNNCell", cell);
    r.register("DynamicQuantizedLSTMCell", QDynCell::load);
    r.register("DynamicQuantizedGRUCell", QDynCell::load);
    r.register("DynamicQuantizedRNNCell", QDynCell::load);
}

fn cell_kind(tag: &str, nonlinearity: Option<&str>) -> RnnKind {
    if tag.contains("LSTM") {
        RnnKind::Lstm
    } else if tag.contains("GRU") {
        RnnKind::Gru
    } else if nonlinearity == Some("relu") {
        RnnKind::RnnRelu
    } else {
        RnnKind::RnnTanh
    }
}

// ---------------------------------------------------------------- cells

/// One step of a cell: `(h', c')` from `x [B, in]` and `(h, c)`.
fn cell_step(
    kind: RnnKind,
    hid: usize,
    x: &Tensor,
    state: Option<(&Tensor, &Tensor)>,
    proj: &dyn Fn(Proj, &Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let op = match kind {
        RnnKind::Lstm => "LSTMCell",
        RnnKind::Gru => "GRUCell",
        _ => "RNNCell",
    };
    if x.ndim() != 2 {
        return Err(bad(
            op,
            format!("input {:?} must be [batch, input_size]", x.shape()),
        ));
    }
    let b = x.shape()[0];
    let (h, c) = match state {
        Some((h, c)) => {
            if h.shape() != [b, hid] || (kind == RnnKind::Lstm && c.shape() != [b, hid]) {
                return Err(bad(
                    op,
                    format!(
                        "state {:?} / {:?} does not match [{b}, {hid}]",
                        h.shape(),
                        c.shape()
                    ),
                ));
            }
            (
                h.clone(),
                if kind == RnnKind::Lstm {
                    c.clone()
                } else {
                    Tensor::zeros([b, hid])
                },
            )
        }
        None => (Tensor::zeros([b, hid]), Tensor::zeros([b, hid])),
    };
    let spec = RnnSpec {
        kind,
        input_size: x.shape()[1],
        hidden_size: hid,
        num_layers: 1,
        bidirectional: false,
        proj_size: 0,
        batch_first: true,
    };
    let x3 = x.clone().reshape([b, 1, x.shape()[1]])?;
    let h3 = h.reshape([1, b, hid])?;
    let c3 = c.reshape([1, b, hid])?;
    let (_, (hn, cn)) = run_rnn(&spec, &x3, Some((&h3, &c3)), &|_, p, v| proj(p, v), None)?;
    let hn = hn.reshape([b, hid])?;
    let cn = if kind == RnnKind::Lstm {
        cn.reshape([b, hid])?
    } else {
        Tensor::zeros([0])
    };
    Ok((hn, cn))
}

/// `nn.LSTMCell` / `nn.GRUCell` / `nn.RNNCell`: one step; `forward` from a
/// zero state returns `h'`, [`Layer::forward_state`] takes and returns the state.
#[derive(Debug, Clone)]
pub struct RnnCell {
    pub kind: RnnKind,
    pub input_size: usize,
    pub hidden_size: usize,
    pub layer: RnnLayer,
    pub(crate) training: bool,
    cache: Option<(Tensor, RnnCache)>,
}

impl RnnCell {
    pub fn new(
        kind: RnnKind,
        input_size: usize,
        hidden_size: usize,
        bias: bool,
        rng: &mut Rng,
    ) -> Self {
        let r = Rnn::with(
            RnnSpec {
                kind,
                input_size,
                hidden_size,
                num_layers: 1,
                bidirectional: false,
                proj_size: 0,
                batch_first: true,
            },
            bias,
            rng,
        )
        .expect("valid shape");
        RnnCell {
            kind,
            input_size,
            hidden_size,
            layer: r.layers.into_iter().next().expect("one layer"),
            training: false,
            cache: None,
        }
    }
    pub fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let l = &mut self.layer;
        let mut v = vec![
            ("weight_ih".to_string(), &mut l.w_ih),
            ("weight_hh".to_string(), &mut l.w_hh),
        ];
        if let Some(b) = &mut l.b_ih {
            v.push(("bias_ih".into(), b));
        }
        if let Some(b) = &mut l.b_hh {
            v.push(("bias_hh".into(), b));
        }
        v
    }
    fn as_rnn(&self) -> Rnn {
        Rnn {
            kind: self.kind,
            input_size: self.input_size,
            hidden_size: self.hidden_size,
            num_layers: 1,
            bidirectional: false,
            proj_size: 0,
            batch_first: true,
            layers: vec![self.layer.clone()],
            training: self.training,
            cache: None,
        }
    }
    /// One float step: `(h', c')` (`c'` empty for GRU / RNN cells).
    pub fn step(
        &mut self,
        x: &Tensor,
        state: Option<(&Tensor, &Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        if !self.training {
            let r = self.as_rnn();
            return cell_step(self.kind, self.hidden_size, x, state, &|p, v| {
                r.proj(0, p, v)
            });
        }
        let b = x.shape().first().copied().unwrap_or(0);
        let hid = self.hidden_size;
        let mut r = self.as_rnn();
        let x3 = x.clone().reshape([b, 1, self.input_size])?;
        let (h3, c3) = match state {
            Some((h, c)) => (
                h.clone().reshape([1, b, hid])?,
                if self.kind == RnnKind::Lstm {
                    c.clone().reshape([1, b, hid])?
                } else {
                    Tensor::zeros([1, b, hid])
                },
            ),
            None => (Tensor::zeros([1, b, hid]), Tensor::zeros([1, b, hid])),
        };
        let (_, (hn, cn)) = r.forward_train(&x3, Some((&h3, &c3)))?;
        self.cache = Some((x.clone(), r.cache.take().expect("recorded")));
        let cn = if self.kind == RnnKind::Lstm {
            cn.reshape([b, hid])?
        } else {
            Tensor::zeros([0])
        };
        Ok((hn.reshape([b, hid])?, cn))
    }
}

impl Layer for RnnCell {
    fn type_name(&self) -> String {
        match self.kind {
            RnnKind::Lstm => "LSTMCell",
            RnnKind::Gru => "GRUCell",
            _ => "RNNCell",
        }
        .into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::F(self.step(&x.float("RNNCell")?, None)?.0))
    }
    fn forward_state(
        &mut self,
        x: Tensor,
        state: Option<(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let (h, c) = self.step(&x, state.as_ref().map(|(h, c)| (h, c)))?;
        Ok((h.clone(), (h, c)))
    }
    /// Backward of the last training step from the gradient of `h'`.
    fn backward(&mut self, g: Tensor) -> Result<Tensor> {
        let (x, cache) = self
            .cache
            .take()
            .ok_or_else(|| NnError::module("", "backward without a training forward"))?;
        let mut r = self.as_rnn();
        r.cache = Some(cache);
        let b = x.shape()[0];
        let dx = r.backward_full(&g.reshape([b, 1, self.hidden_size])?)?;
        self.layer = r.layers.into_iter().next().expect("one layer");
        Ok(dx.reshape(x.shape().to_vec())?)
    }
    fn set_training(&mut self, on: bool) {
        self.training = on;
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        RnnCell::params_mut(self)
    }
    fn named_weights(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight_ih".into(), self.layer.w_ih.value.clone()),
            ("weight_hh".into(), self.layer.w_hh.value.clone()),
        ]
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        let mut c = self.clone();
        for (n, p) in c.params_mut() {
            out.f32(&n, &p.value);
        }
        Ok(
            json!({"input_size": self.input_size, "hidden_size": self.hidden_size,
                  "bias": self.layer.b_ih.is_some(),
                  "nonlinearity": if self.kind == RnnKind::RnnRelu { "relu" } else { "tanh" }}),
        )
    }
}

/// `nnqd.LSTMCell` / `nnqd.GRUCell` / `nnqd.RNNCell`: a cell whose two
/// projections are dynamic int8 (or fp16) linears.
#[derive(Debug, Clone)]
pub struct QDynCell {
    pub engine: Engine,
    pub kind: RnnKind,
    pub input_size: usize,
    pub hidden_size: usize,
    pub ih: DynWeight,
    pub hh: DynWeight,
}

impl QDynCell {
    /// From a float cell.
    pub fn from_float(m: Module, cfg: &crate::mapping::DynamicConfig) -> Result<Module> {
        let c: RnnCell = m.expect_type("QDynCell::from_float")?;
        let dw = |p: &Param, b: &Option<Param>| {
            DynWeight::from_float(&p.value, b.as_ref().map(|b| b.value.data().to_vec()), cfg)
        };
        Ok(QDynCell {
            engine: cfg.engine.clone(),
            kind: c.kind,
            input_size: c.input_size,
            hidden_size: c.hidden_size,
            ih: dw(&c.layer.w_ih, &c.layer.b_ih)?,
            hh: dw(&c.layer.w_hh, &c.layer.b_hh)?,
        }
        .into())
    }
    /// One step: `(h', c')`.
    pub fn step(&self, x: &Tensor, state: Option<(&Tensor, &Tensor)>) -> Result<(Tensor, Tensor)> {
        cell_step(self.kind, self.hidden_size, x, state, &|p, v| match p {
            Proj::Ih => self.ih.apply(&self.engine, v),
            Proj::Hh => self.hh.apply(&self.engine, v),
            Proj::Hr => Err(bad("QDynCell", "cells have no projection")),
        })
    }
    fn load(n: &mut Node) -> Result<Module> {
        let kind = cell_kind(
            n.type_name(),
            n.attrs().get("nonlinearity").and_then(J::as_str),
        );
        let (inp, hid) = (n.get_usize("input_size")?, n.get_usize("hidden_size")?);
        let ih = DynWeight::load(n, "ih", n.field("ih")?, "ih")?;
        let hh = DynWeight::load(n, "hh", n.field("hh")?, "hh")?;
        let g = kind.gates() * hid;
        if ih.weight_shape() != [g, inp] || hh.weight_shape() != [g, hid] {
            return Err(n.attr_error("hidden_size", "weight shapes do not match the sizes"));
        }
        Ok(QDynCell {
            engine: n.engine().clone(),
            kind,
            input_size: inp,
            hidden_size: hid,
            ih,
            hh,
        }
        .into())
    }
}

impl Layer for QDynCell {
    fn type_name(&self) -> String {
        match self.kind {
            RnnKind::Lstm => "DynamicQuantizedLSTMCell",
            RnnKind::Gru => "DynamicQuantizedGRUCell",
            _ => "DynamicQuantizedRNNCell",
        }
        .into()
    }
    fn forward(&mut self, x: Value) -> Result<Value> {
        Ok(Value::F(
            self.step(&x.float("DynamicQuantizedRNNCell")?, None)?.0,
        ))
    }
    fn forward_state(
        &mut self,
        x: Tensor,
        state: Option<(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let (h, c) = self.step(&x, state.as_ref().map(|(h, c)| (h, c)))?;
        Ok((h.clone(), (h, c)))
    }
    fn weight(&self) -> Option<Tensor> {
        Some(self.ih.float_weight())
    }
    fn named_weights(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight_ih".into(), self.ih.float_weight()),
            ("weight_hh".into(), self.hh.float_weight()),
        ]
    }
    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }
    fn to_engine(&mut self, engine: &Engine) -> Result<()> {
        self.ih.to_engine(engine)?;
        self.hh.to_engine(engine)?;
        self.engine = engine.clone();
        Ok(())
    }
    fn save(&self, out: &mut Saver) -> Result<J> {
        let ih = out.within("ih", |o| self.ih.save(o))?;
        let hh = out.within("hh", |o| self.hh.save(o))?;
        Ok(
            json!({"input_size": self.input_size, "hidden_size": self.hidden_size,
                  "ih": ih, "hh": hh,
                  "nonlinearity": if self.kind == RnnKind::RnnRelu { "relu" } else { "tanh" }}),
        )
    }
}

impl Module {
    /// `nn.LSTM` / `nn.GRU` / `nn.RNN` forward from an initial state.
    pub fn forward_state(
        &mut self,
        x: Tensor,
        state: Option<(Tensor, Tensor)>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        self.layer_mut().forward_state(x, state)
    }
}
