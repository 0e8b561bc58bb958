//! Prepacked weights. Each holds what the front end needs to validate a call
//! and describe its output stage (shape, qparams, bias, column sums), the
//! engine path it was packed for, and the backend's own packed form. The
//! int8 weight itself is not kept twice: [`PackedLinear::weight`] asks the
//! backend to unpack it from its panels.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::ops::Conv2dParams;
use crate::output::{col_sums, Clamp, Dequant, Requant, RequantSpec};
use crate::tensor::{QParams, QScheme, QTensor, Tensor};

/// One engine path: the engine's name and the ISA path it resolved
/// (`x86/avx512vnni`, `qnnpack/dotprod`, `reference/scalar`). Weights are
/// packed for exactly one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PathId {
    pub engine: &'static str,
    pub isa: &'static str,
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.engine, self.isa)
    }
}

/// A backend's packed form of a weight (its panels, with whatever sums or
/// layouts it keeps). Backends downcast it to their own type through
/// [`Panels::as_any`].
pub trait Panels: Any + Send + Sync + fmt::Debug {
    /// Bytes held (for memory accounting).
    fn bytes(&self) -> usize;
    fn as_any(&self) -> &dyn Any;
}

/// Packed int8 weights that can give the weight back.
pub trait Int8Panels: Panels {
    /// The raw int8 weight, row-major in the packed weight's shape
    /// (`[N, K]` for linear, `[O, I/groups, kH, kW]` for conv).
    fn unpack(&self) -> Vec<i8>;
}

/// The requantization of the last static call, cached by value: it depends
/// only on the activation and output qparams and the clamp.
type RequantKey = (u64, i64, u64, i64, Clamp);

#[derive(Debug, Default)]
struct RequantCache(Mutex<Option<(RequantKey, Arc<Requant>)>>);

impl RequantCache {
    fn get(&self, key: RequantKey, make: impl FnOnce() -> Requant) -> Arc<Requant> {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, r)) = c.as_ref() {
            if *k == key {
                return r.clone();
            }
        }
        let r = Arc::new(make());
        *c = Some((key, r.clone()));
        r
    }
}

/// What every packed int8 weight shares.
#[derive(Debug)]
pub(crate) struct Int8Meta {
    pub shape: Vec<usize>,
    pub qparams: QParams,
    pub qscheme: QScheme,
    /// (scale, zero point) of each output channel.
    pub channels: Vec<(f64, i64)>,
    pub col_sums: Vec<i32>,
    pub bias: Option<Vec<f32>>,
    pub packed_for: PathId,
    pub panels: Box<dyn Int8Panels>,
    cache: RequantCache,
}

impl Int8Meta {
    pub(crate) fn new(
        w: &QTensor<i8>,
        bias: Option<Vec<f32>>,
        packed_for: PathId,
        panels: Box<dyn Int8Panels>,
    ) -> Self {
        let n = w.shape()[0];
        let k = w.numel() / n;
        Int8Meta {
            shape: w.shape().to_vec(),
            qparams: w.qparams().clone(),
            qscheme: w.qscheme(),
            channels: (0..n).map(|c| w.qparams().channel(c)).collect(),
            col_sums: col_sums(w.int_repr(), k),
            bias,
            packed_for,
            panels,
            cache: RequantCache::default(),
        }
    }

    fn k(&self) -> usize {
        self.shape[1..].iter().product()
    }

    fn weight(&self) -> QTensor<i8> {
        QTensor::from_parts_unchecked(
            self.shape.clone(),
            self.panels.unpack(),
            self.qparams.clone(),
            self.qscheme,
        )
    }

    pub(crate) fn requant(&self, x: (f64, i64), out: (f64, i64), clamp: Clamp) -> Arc<Requant> {
        let key = (x.0.to_bits(), x.1, out.0.to_bits(), out.1, clamp);
        self.cache.get(key, || {
            Requant::new(&RequantSpec {
                k: self.k(),
                col_sums: &self.col_sums,
                w_qparams: &self.channels,
                per_channel: self.qparams.is_per_channel(),
                bias: self.bias.as_deref(),
                x_scale: x.0,
                x_zp: x.1,
                out_scale: out.0,
                out_zp: out.1,
                clamp,
            })
        })
    }

    pub(crate) fn dequant(&self, x_scale: f64, x_zp: i64) -> Dequant {
        Dequant::new(self.k(), &self.col_sums, &self.channels, x_scale, x_zp)
    }
}

macro_rules! int8_accessors {
    ($t:ty) => {
        impl $t {
            /// The int8 weight, unpacked from the backend's panels (a copy).
            pub fn weight(&self) -> QTensor<i8> {
                self.meta.weight()
            }
            /// Shape of the weight.
            pub fn weight_shape(&self) -> &[usize] {
                &self.meta.shape
            }
            pub fn weight_qparams(&self) -> &QParams {
                &self.meta.qparams
            }
            pub fn weight_qscheme(&self) -> QScheme {
                self.meta.qscheme
            }
            /// (scale, zero point) of each output channel.
            pub fn channel_qparams(&self) -> &[(f64, i64)] {
                &self.meta.channels
            }
            /// `Σ_k w[n, k]` of each output channel.
            pub fn col_sums(&self) -> &[i32] {
                &self.meta.col_sums
            }
            pub fn bias(&self) -> Option<&[f32]> {
                self.meta.bias.as_deref()
            }
            /// The engine path these weights were packed for.
            pub fn packed_for(&self) -> PathId {
                self.meta.packed_for
            }
            /// The backend's packed form, if it is a `P`.
            pub fn panels<P: Int8Panels>(&self) -> Option<&P> {
                self.meta.panels.as_any().downcast_ref::<P>()
            }
            /// Bytes held: the backend's panels plus the per-channel data here.
            pub fn bytes(&self) -> usize {
                self.meta.panels.bytes()
                    + self.meta.channels.len() * (16 + 4)
                    + self.meta.bias.as_ref().map_or(0, |b| b.len() * 4)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("shape", &self.meta.shape)
                    .field("packed_for", &self.meta.packed_for)
                    .finish_non_exhaustive()
            }
        }
    };
}

/// A prepacked quantized linear weight `[N, K]` with its optional f32 bias.
pub struct PackedLinear {
    pub(crate) meta: Int8Meta,
}
int8_accessors!(PackedLinear);

impl PackedLinear {
    /// Output features N.
    pub fn out_features(&self) -> usize {
        self.meta.shape[0]
    }
    /// Input features K.
    pub fn in_features(&self) -> usize {
        self.meta.shape[1]
    }
}

/// A prepacked quantized conv2d weight `[O, I/groups, kH, kW]`.
pub struct PackedConv2d {
    pub(crate) meta: Int8Meta,
    pub(crate) params: Conv2dParams,
}
int8_accessors!(PackedConv2d);

impl PackedConv2d {
    pub fn params(&self) -> Conv2dParams {
        self.params
    }
}

/// A prepacked fp16 linear weight (dynamic linear with fp16 weights). The
/// f32 weight is kept as given: fp16 rounding is not invertible.
pub struct PackedLinearFp16 {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Vec<f32>>,
    pub(crate) packed_for: PathId,
    pub(crate) panels: Box<dyn Panels>,
}

impl PackedLinearFp16 {
    /// The f32 weight as given, `[N, K]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }
    pub fn packed_for(&self) -> PathId {
        self.packed_for
    }
    /// The backend's packed form, if it is a `P`.
    pub fn panels<P: Panels>(&self) -> Option<&P> {
        self.panels.as_any().downcast_ref::<P>()
    }
}

impl fmt::Debug for PackedLinearFp16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedLinearFp16")
            .field("shape", &self.weight.shape())
            .field("packed_for", &self.packed_for)
            .finish_non_exhaustive()
    }
}
