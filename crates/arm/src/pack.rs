//! Weight (B) and activation (A) packing for the 8x8 GEMM microkernels.
//!
//! Every path uses an 8x8 output tile; the K chunk `KR` and the element type
//! depend on the ISA:
//! - `Scalar`/`Neon` (`c1`): i16 values with the zero point already
//!   subtracted, `A[k][row]`, `B[k][col]`: the kernel's products are exactly
//!   `(x - x_zp)(w - w_zp)` and need no correction.
//! - `Dotprod` (`c4`): `A[kb][row][4]` holds `x ^ 0x80 = x - 128` as s8,
//!   `B[kb][col][4]` the raw s8 weights (for `sdot`).
//! - `I8mm` (`c8`): `A[kb][row][8]` the raw u8 activations, `B[kb][col][8]`
//!   the raw s8 weights (for `usmmla`, whose register pairs are rows/columns
//!   2q and 2q+1).
//!
//! For `c4`/`c8` the exact accumulator is recovered in the epilogue from the
//! column sums (computed here, while packing) and the row sums of A:
//! `Σ(x-xz)(w-wz) = Σxw - wz·Σx - xz·Σw + K·xz·wz`, all in wrapping int32
//! (exact modulo 2^32, like the reference's wrapping accumulation).

use crate::isa::Isa;

/// Output tile rows.
pub const MR: usize = 8;
/// Output tile columns (one packed weight panel).
pub const NR: usize = 8;

/// K elements consumed per packed step for `isa`.
pub fn kr(isa: Isa) -> usize {
    match isa {
        Isa::Scalar | Isa::Neon => 1,
        Isa::Dotprod => 4,
        Isa::I8mm => 8,
    }
}

/// Packed weight panels.
#[derive(Debug)]
pub enum BData {
    /// `c1` layout: `w - w_zp` as i16.
    I16(Vec<i16>),
    /// `c4` / `c8` layout: raw s8 (read only by the AArch64 kernels).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    I8(Vec<i8>),
}

/// A prepacked `[N, K]` int8 weight for one ISA.
#[derive(Debug)]
pub struct PackedB {
    pub isa: Isa,
    pub n: usize,
    pub k: usize,
    /// K rounded up to a multiple of `kr(isa)`.
    pub kp: usize,
    /// Number of NR-wide panels.
    pub panels: usize,
    pub data: BData,
    /// Σ_k w[j][k] (raw weights), zero past N; `panels * NR` long.
    pub colsum: Vec<i32>,
    /// Weight zero point per column, zero past N; `panels * NR` long.
    pub wz: Vec<i32>,
}

impl PackedB {
    /// Pack `w` (`[n, k]` row-major) with per-row zero points `wz` (len n).
    pub fn new(isa: Isa, w: &[i8], n: usize, k: usize, wz: &[i32]) -> PackedB {
        assert_eq!(w.len(), n * k);
        assert_eq!(wz.len(), n);
        let r = kr(isa);
        let kp = k.div_ceil(r) * r;
        let panels = n.div_ceil(NR);
        let mut colsum = vec![0i32; panels * NR];
        let mut wzp = vec![0i32; panels * NR];
        for j in 0..n {
            colsum[j] = w[j * k..(j + 1) * k]
                .iter()
                .fold(0i32, |s, &v| s.wrapping_add(v as i32));
            wzp[j] = wz[j];
        }
        let data = match isa {
            Isa::Scalar | Isa::Neon => {
                let mut d = vec![0i16; panels * k * NR];
                for p in 0..panels {
                    let panel = &mut d[p * k * NR..(p + 1) * k * NR];
                    for c in 0..NR {
                        let j = p * NR + c;
                        if j >= n {
                            continue;
                        }
                        for kk in 0..k {
                            panel[kk * NR + c] = (w[j * k + kk] as i32 - wz[j]) as i16;
                        }
                    }
                }
                BData::I16(d)
            }
            Isa::Dotprod | Isa::I8mm => {
                let mut d = vec![0i8; panels * kp * NR];
                for p in 0..panels {
                    let panel = &mut d[p * kp * NR..(p + 1) * kp * NR];
                    for c in 0..NR {
                        let j = p * NR + c;
                        if j >= n {
                            continue;
                        }
                        for kk in 0..k {
                            let (kb, t) = (kk / r, kk % r);
                            panel[(kb * NR + c) * r + t] = w[j * k + kk];
                        }
                    }
                }
                BData::I8(d)
            }
        };
        PackedB {
            isa,
            n,
            k,
            kp,
            panels,
            data,
            colsum,
            wz: wzp,
        }
    }

    /// Per-column constant of the exact accumulator for activation zero point
    /// `xz`: `(bias_x - xz)·Σw + K·xz·wz`, where `bias_x` is 128 for `c4`
    /// (activations stored as x - 128) and 0 for `c8`; zeros for `c1`.
    pub fn col_terms(&self, xz: i32) -> Vec<i32> {
        let shift = match self.isa {
            Isa::Scalar | Isa::Neon => return vec![0; self.panels * NR],
            Isa::Dotprod => 128i32,
            Isa::I8mm => 0,
        };
        let kxz = (self.k as i32).wrapping_mul(xz);
        self.colsum
            .iter()
            .zip(&self.wz)
            .map(|(&s, &z)| {
                (shift - xz)
                    .wrapping_mul(s)
                    .wrapping_add(kxz.wrapping_mul(z))
            })
            .collect()
    }

    /// Whether the epilogue must apply the column/row corrections.
    pub fn needs_correction(&self) -> bool {
        matches!(self.isa, Isa::Dotprod | Isa::I8mm)
    }

    /// The raw `[n, k]` int8 weight, read back from the panels.
    pub fn unpack(&self) -> Vec<i8> {
        let (n, k, r) = (self.n, self.k, kr(self.isa));
        let mut w = vec![0i8; n * k];
        for j in 0..n {
            let (p, c) = (j / NR, j % NR);
            for kk in 0..k {
                w[j * k + kk] = match &self.data {
                    BData::I16(d) => (d[p * k * NR + kk * NR + c] as i32 + self.wz[j]) as i8,
                    BData::I8(d) => d[p * self.kp * NR + ((kk / r) * NR + c) * r + kk % r],
                };
            }
        }
        w
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let data = match &self.data {
            BData::I16(d) => d.len() * 2,
            BData::I8(d) => d.len(),
        };
        data + (self.colsum.len() + self.wz.len()) * 4
    }

    /// Elements of one panel.
    pub fn panel_len(&self) -> usize {
        self.kp * NR
    }
}

/// Pack up to MR rows (`rows` of length k each, stride k) for the `c1` layout:
/// `dst[k][r] = x - xz` (rows past the tile's end are 0).
pub fn pack_a_i16(rows: &[u8], nrows: usize, k: usize, xz: i32, dst: &mut Vec<i16>) {
    dst.clear();
    dst.resize(k * MR, 0);
    for r in 0..nrows {
        let row = &rows[r * k..(r + 1) * k];
        for (kk, &v) in row.iter().enumerate() {
            dst[kk * MR + r] = (v as i32 - xz) as i16;
        }
    }
}

/// Pack up to MR rows for the `c4`/`c8` layouts: `dst[kb][r][t]`, with
/// `x ^ flip` (0x80 for `c4`: x - 128 as s8; 0 for `c8`), zero padding;
/// returns Σx per row (raw u8 values).
pub fn pack_a_u8(
    rows: &[u8],
    nrows: usize,
    k: usize,
    kr: usize,
    flip: u8,
    dst: &mut Vec<u8>,
) -> [i32; MR] {
    let kp = k.div_ceil(kr) * kr;
    dst.clear();
    dst.resize(kp * MR, 0);
    let mut sums = [0i32; MR];
    for r in 0..nrows {
        let row = &rows[r * k..(r + 1) * k];
        // Chunk kb of the row goes to dst[(kb * MR + r) * kr..][..kr].
        for (kb, chunk) in row.chunks(kr).enumerate() {
            let d = &mut dst[(kb * MR + r) * kr..][..chunk.len()];
            for (o, &v) in d.iter_mut().zip(chunk) {
                *o = v ^ flip;
            }
        }
        // Σx < 2^31 for any K below 8 million; wrapping like everything else.
        sums[r] = row.iter().fold(0i32, |s, &v| s.wrapping_add(v as i32));
    }
    sums
}
