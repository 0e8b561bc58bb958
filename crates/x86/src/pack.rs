//! Packing of the int8 GEMM operands into the microkernels' layouts.
//!
//! Both operands are cut into "k-units" of 4 bytes per row (activations) or
//! per column (weights): 4 consecutive k as u8/s8 for the `c4` kernels
//! (`vpdpbusd`, scalar), or 2 consecutive k widened to int16 for the `c2`
//! kernels (`vpmaddwd`). Activations stay row-major (`[m][ku][4 bytes]`:
//! the kernels broadcast each row's unit through a per-row pointer, so no
//! interleaving pass); a micro-panel of weights is `NR` columns interleaved
//! per k-unit (`[ku][NR][4 bytes]`). K is padded with zeros (a zero weight
//! makes every padded product zero).
//!
//! Zero points are handled by sums computed while packing: the weight column
//! sums `Σ_k w[n,k]` here, the activation row sums `Σ_k x[m,k]` in
//! [`pack_a_rows`]; the epilogue forms
//! `Σ(x−zx)(w−zw) = Σxw − zw·Σx − zx·Σw + K·zx·zw` in wrapping int32.

use std::sync::{Arc, Mutex};

use rquant_core::QTensor;

use crate::isa::Isa;

/// Register tile of a microkernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Rows of the output tile.
    pub mr: usize,
    /// Columns of the output tile.
    pub nr: usize,
    /// k per 4-byte unit: 4 (u8/s8 operands) or 2 (int16-widened operands).
    pub kr: usize,
}

impl Tile {
    pub fn for_isa(isa: Isa) -> Tile {
        match isa {
            Isa::Scalar => Tile {
                mr: 4,
                nr: 8,
                kr: 4,
            },
            Isa::Avx2 => Tile {
                mr: 6,
                nr: 16,
                kr: 2,
            },
            Isa::AvxVnni => Tile {
                mr: 6,
                nr: 16,
                kr: 4,
            },
            Isa::Avx512 => Tile {
                mr: 8,
                nr: 32,
                kr: 2,
            },
            Isa::Avx512Vnni => Tile {
                mr: 8,
                nr: 32,
                kr: 4,
            },
        }
    }
    /// Number of k-units covering k.
    pub fn units(&self, k: usize) -> usize {
        k.div_ceil(self.kr)
    }
    /// Bytes of one packed activation row.
    pub fn a_row_bytes(&self, k: usize) -> usize {
        self.units(k) * 4
    }
    /// Bytes of one weight micro-panel.
    pub fn b_panel_bytes(&self, k: usize) -> usize {
        self.units(k) * self.nr * 4
    }
}

/// A prepacked int8 weight matrix `[N, K]` (already in the GEMM's k order),
/// with its column sums and per-column quantization parameters.
#[derive(Debug)]
pub struct PackedB {
    /// The path these panels were packed for (the engine that packed them proved it exists).
    pub(crate) isa: Isa,
    pub(crate) tile: Tile,
    pub(crate) n: usize,
    pub(crate) k: usize,
    /// `ceil(N/NR)` micro-panels of `tile.b_panel_bytes(k)` bytes.
    pub(crate) data: Vec<u8>,
    /// The saturation-checked `vpmaddubsw` layout (AVX2 path only).
    pub(crate) narrow: Option<Narrow>,
    /// `Σ_k w[n,k]` of the raw int8 weights.
    pub(crate) col_sums: Vec<i32>,
    /// Weight zero point per column.
    pub(crate) zw: Vec<i32>,
    /// True when every zero point is 0 (symmetric weights: no row-sum term).
    pub(crate) zw_all_zero: bool,
    /// Weight scale per column.
    pub(crate) scales: Vec<f64>,
    pub(crate) per_channel: bool,
    /// The requantization constants of the last static call (they depend
    /// only on the activation and output scales and the bias).
    pub(crate) requant_cache: Mutex<Option<RequantConsts>>,
}

/// Per-column requantization constants for one (x_scale, out_scale, bias).
#[derive(Debug, Clone)]
pub(crate) struct RequantConsts {
    pub key: (u64, u64, usize),
    pub bt: Arc<Vec<f32>>,
    pub mult: Arc<Vec<f32>>,
    pub tame: bool,
}

/// Weights packed for the AVX2 `vpmaddubsw` kernel (u8×s8 pairs summed in
/// int16), with the bound that decides when it is exact.
#[derive(Debug, Clone)]
pub struct Narrow {
    pub(crate) tile: Tile,
    pub(crate) data: Vec<u8>,
    /// max over columns and adjacent k pairs of |w[2j]| + |w[2j+1]|.
    pub(crate) max_pair: i32,
}

impl Narrow {
    /// Whether `vpmaddubsw` is exact for activations up to `x_max`:
    /// |x0·w0 + x1·w1| <= x_max·(|w0|+|w1|) <= 32767.
    pub(crate) fn exact_for(&self, x_max: u8) -> bool {
        x_max as i32 * self.max_pair <= i16::MAX as i32
    }
    pub(crate) fn panel(&self, j: usize, k: usize) -> &[u8] {
        let pb = self.tile.b_panel_bytes(k);
        &self.data[j * pb..(j + 1) * pb]
    }
}

/// Tile of the AVX2 `vpmaddubsw` kernel.
pub(crate) const NARROW_AVX2: Tile = Tile {
    mr: 6,
    nr: 16,
    kr: 4,
};

/// Weight micro-panels `[N/NR][ku][NR][4 bytes]` of `w` (`[n, k]`), zero-padded.
fn pack_panels(tile: Tile, w: &[i8], n: usize, k: usize) -> Vec<u8> {
    let ku = tile.units(k);
    let panels = n.div_ceil(tile.nr);
    let pb = tile.b_panel_bytes(k);
    let mut data = vec![0u8; panels * pb];
    for col in 0..n {
        let row = &w[col * k..(col + 1) * k];
        let panel = &mut data[(col / tile.nr) * pb..][..pb];
        let c = col % tile.nr;
        for u in 0..ku {
            let dst = &mut panel[(u * tile.nr + c) * 4..][..4];
            if tile.kr == 4 {
                for (j, d) in dst.iter_mut().enumerate() {
                    if let Some(&v) = row.get(u * 4 + j) {
                        *d = v as u8;
                    }
                }
            } else {
                for j in 0..2 {
                    if let Some(&v) = row.get(u * 2 + j) {
                        dst[j * 2..j * 2 + 2].copy_from_slice(&(v as i16).to_le_bytes());
                    }
                }
            }
        }
    }
    data
}

impl Clone for PackedB {
    fn clone(&self) -> Self {
        PackedB {
            isa: self.isa,
            tile: self.tile,
            n: self.n,
            k: self.k,
            data: self.data.clone(),
            narrow: self.narrow.clone(),
            col_sums: self.col_sums.clone(),
            zw: self.zw.clone(),
            zw_all_zero: self.zw_all_zero,
            scales: self.scales.clone(),
            per_channel: self.per_channel,
            requant_cache: Mutex::new(None),
        }
    }
}

impl PackedB {
    /// Pack `w` (`[n, k]` row-major raw int8) with per-column (scale, zero point).
    pub(crate) fn new(isa: Isa, w: &[i8], n: usize, k: usize, qp: &[(f64, i64)]) -> Self {
        debug_assert_eq!(w.len(), n * k);
        let tile = Tile::for_isa(isa);
        let data = pack_panels(tile, w, n, k);
        let col_sums: Vec<i32> = w
            .chunks_exact(k)
            .map(|r| r.iter().map(|&v| v as i32).sum())
            .collect();
        // AVX2: also the u8×s8 layout for `vpmaddubsw`, used when the
        // activations' maximum times the largest adjacent-pair |w0|+|w1|
        // cannot reach int16 saturation.
        let narrow = (isa == Isa::Avx2).then(|| {
            let t = NARROW_AVX2;
            let max_pair = w
                .chunks_exact(k)
                .flat_map(|r| {
                    r.chunks(2)
                        .map(|p| p.iter().map(|&v| (v as i32).abs()).sum::<i32>())
                })
                .max()
                .unwrap_or(0);
            Narrow {
                tile: t,
                data: pack_panels(t, w, n, k),
                max_pair,
            }
        });
        let zw: Vec<i32> = qp.iter().map(|&(_, z)| z as i32).collect();
        PackedB {
            isa,
            tile,
            n,
            k,
            data,
            narrow,
            col_sums,
            zw_all_zero: zw.iter().all(|&z| z == 0),
            zw,
            scales: qp.iter().map(|&(s, _)| s).collect(),
            per_channel: false,
            requant_cache: Mutex::new(None),
        }
    }

    /// Pack a `[N, K]` qint8 linear weight.
    pub(crate) fn from_linear(isa: Isa, w: &QTensor<i8>) -> Self {
        let (n, k) = (w.shape()[0], w.shape()[1]);
        let qp: Vec<(f64, i64)> = (0..n).map(|c| w.qparams().channel(c)).collect();
        let raw = w.int_repr();
        let mut b = PackedB::new(isa, raw, n, k, &qp);
        b.per_channel = w.qparams().is_per_channel();
        b
    }

    /// The raw `[n, k]` int8 weight, read back from the panels.
    pub(crate) fn unpack(&self) -> Vec<i8> {
        let t = self.tile;
        let pb = t.b_panel_bytes(self.k);
        let mut w = vec![0i8; self.n * self.k];
        for (col, row) in w.chunks_exact_mut(self.k.max(1)).enumerate() {
            let panel = &self.data[(col / t.nr) * pb..][..pb];
            let c = col % t.nr;
            for (kk, v) in row.iter_mut().enumerate() {
                let (u, j) = (kk / t.kr, kk % t.kr);
                let unit = &panel[(u * t.nr + c) * 4..][..4];
                *v = if t.kr == 4 {
                    unit[j] as i8
                } else {
                    i16::from_le_bytes([unit[2 * j], unit[2 * j + 1]]) as i8
                };
            }
        }
        w
    }

    /// Bytes held by the panels and per-column data.
    pub(crate) fn bytes(&self) -> usize {
        self.data.len() + self.narrow.as_ref().map_or(0, |nw| nw.data.len()) + self.n * (4 + 4 + 8)
    }

    /// Micro-panel `j` (columns `j*NR ..`).
    #[inline]
    pub(crate) fn panel(&self, j: usize) -> &[u8] {
        let pb = self.tile.b_panel_bytes(self.k);
        &self.data[j * pb..(j + 1) * pb]
    }
}

/// Pack the activation rows `row0 .. row0 + nrows` (`nrows <= MR`) as
/// k-unit rows `lda = ku·4` bytes apart (u8, or int16-widened for `kr = 2`;
/// the padding past K is zeroed). `fill(row, dst)` writes row `row`'s K u8
/// values (it may quantize on the fly); `sums` receives each row's `Σ_k x`
/// when `need_sums` (they only matter for nonzero weight zero points).
/// No interleaving: the kernels read each row through its own pointer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_a_rows(
    tile: Tile,
    k: usize,
    row0: usize,
    nrows: usize,
    fill: &(dyn Fn(usize, &mut [u8]) + Sync),
    dst: &mut [u8],
    sums: &mut [i32],
    need_sums: bool,
    scratch: &mut Vec<u8>,
) {
    let lda = tile.units(k) * 4;
    let sum = |x: &[u8]| if need_sums { row_sum(x) } else { 0 };
    for r in 0..nrows {
        let row = &mut dst[r * lda..(r + 1) * lda];
        if tile.kr == 4 {
            fill(row0 + r, &mut row[..k]);
            sums[r] = sum(&row[..k]);
            row[k..].fill(0);
        } else {
            scratch.resize(k, 0);
            fill(row0 + r, scratch);
            sums[r] = sum(scratch);
            for (d, &v) in row.chunks_exact_mut(2).zip(scratch.iter()) {
                d[0] = v;
                d[1] = 0;
            }
            row[2 * k..].fill(0);
        }
    }
}

fn row_sum(x: &[u8]) -> i32 {
    // At most 255·K: exact in u64, then wrapped to i32 like the accumulator.
    let (simd, done) = row_sum_simd(x);
    let total = simd + x[done..].iter().map(|&v| v as u64).sum::<u64>();
    total as u32 as i32
}

/// Sum of the leading 16-byte blocks of `x` (psadbw), and how many bytes they cover.
#[cfg(target_arch = "x86_64")]
fn row_sum_simd(x: &[u8]) -> (u64, usize) {
    use std::arch::x86_64::*;
    let chunks = x.len() / 16;
    // SAFETY: SSE2 is part of x86_64; each load reads 16 bytes inside x.
    unsafe {
        let mut acc = _mm_setzero_si128();
        for i in 0..chunks {
            let v = _mm_loadu_si128(x.as_ptr().add(i * 16) as *const __m128i);
            acc = _mm_add_epi64(acc, _mm_sad_epu8(v, _mm_setzero_si128()));
        }
        let mut lanes = [0u64; 2];
        _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, acc);
        (lanes[0] + lanes[1], chunks * 16)
    }
}

impl rquant_core::engine::Panels for PackedB {
    fn bytes(&self) -> usize {
        PackedB::bytes(self)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl rquant_core::engine::Int8Panels for PackedB {
    fn unpack(&self) -> Vec<i8> {
        PackedB::unpack(self)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn row_sum_simd(_x: &[u8]) -> (u64, usize) {
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_bound_is_exact_at_the_edge() {
        // One column with pairs (64, 65): |w0|+|w1| = 129.
        let w: Vec<i8> = [64i8, 65, -64, -65, 1, 2, 0].to_vec();
        let b = PackedB::new(Isa::Avx2, &w, 1, 7, &[(0.1, 0)]);
        let nw = b.narrow.as_ref().expect("AVX2 packs the narrow layout");
        assert_eq!(nw.max_pair, 129);
        assert!(nw.exact_for(254)); // 254·129 = 32766
        assert!(!nw.exact_for(255)); // 255·129 = 32895 > 32767
        assert!(PackedB::new(Isa::Avx512Vnni, &w, 1, 7, &[(0.1, 0)])
            .narrow
            .is_none());
    }
}
