//! Dynamic linear with fp16 weights: weights rounded to fp16 once (clamped to
//! ±65504, as PyTorch packs them) and stored as fp16 panels of 16 columns;
//! the kernel converts them with F16C and runs the reference's FMA chain per
//! output column.

use crate::isa::{Caps, Isa};
use crate::kernels::output::RawOut;
use crate::threads::par_for;

/// Panel width of the layout (16 for AVX2, 32 for AVX-512).
fn panel_width(caps: Caps) -> usize {
    if caps.avx512 {
        32
    } else {
        16
    }
}

/// Prepacked fp16 weights.
#[derive(Debug, Clone)]
pub struct PackedFp16 {
    pub(crate) isa: Isa,
    caps: Caps,
    n: usize,
    k: usize,
    /// Rounded weights as f32, `[N, K]` (scalar path).
    w32: Vec<f32>,
    /// fp16 bits in panels `[N/NR][K][NR]` (SIMD paths; NR from [`panel_width`]).
    panels: Vec<u16>,
    nr: usize,
    /// Bias padded to whole panels (AVX2 path).
    bias: Option<Vec<f32>>,
}

impl rquant_core::engine::Panels for PackedFp16 {
    fn bytes(&self) -> usize {
        self.w32.len() * 4 + self.panels.len() * 2 + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl PackedFp16 {
    pub(crate) fn new(
        isa: Isa,
        caps: Caps,
        w: &[f32],
        [n, k]: [usize; 2],
        bias: Option<&[f32]>,
    ) -> Self {
        let h: Vec<half::f16> = w
            .iter()
            .map(|&v| half::f16::from_f32(v.clamp(-65504.0, 65504.0)))
            .collect();
        let w32 = h.iter().map(|v| v.to_f32()).collect();
        let nr = panel_width(caps);
        let np = n.div_ceil(nr);
        let mut panels = Vec::new();
        let mut padded_bias = None;
        if caps.avx2 {
            panels = vec![0u16; np * k * nr];
            for col in 0..n {
                let (p, c) = (col / nr, col % nr);
                for kk in 0..k {
                    panels[(p * k + kk) * nr + c] = h[col * k + kk].to_bits();
                }
            }
            padded_bias = bias.map(|b| {
                let mut v = b.to_vec();
                v.resize(np * nr, 0.0);
                v
            });
        }
        PackedFp16 {
            isa,
            caps,
            n,
            k,
            w32,
            panels,
            nr,
            bias: padded_bias,
        }
    }
}

/// `y = x · Wᵀ + b` with the reference's summation order.
pub(crate) fn linear_fp16(p: &PackedFp16, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let (n, k) = (p.n, p.k);
    let mut y = vec![0f32; m * n];
    if !p.caps.avx2 {
        for (i, yr) in y.chunks_mut(n).enumerate() {
            let row = &x[i * k..(i + 1) * k];
            for (j, yv) in yr.iter_mut().enumerate() {
                let wr = &p.w32[j * k..(j + 1) * k];
                let mut acc = row[0] * wr[0];
                for kk in 1..k {
                    acc = row[kk].mul_add(wr[kk], acc);
                }
                if let Some(b) = bias {
                    acc += b[j];
                }
                *yv = acc;
            }
        }
        return y;
    }
    #[cfg(target_arch = "x86_64")]
    if p.caps.avx512 {
        linear_fp16_avx512(p, x, m, &mut y);
        return y;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use crate::kernels::gemm_f32f16_6x16_avx2::{MR, NR};
        assert_eq!(p.nr, NR);
        let out = RawOut::new(&mut y);
        let mp = m.div_ceil(MR);
        let np = n.div_ceil(NR);
        // Tasks: one column panel (weights stay in cache) × a block of rows.
        let mb = 16usize;
        let mblocks = mp.div_ceil(mb);
        par_for(
            np * mblocks,
            || (),
            |_, task| {
                let (jp, ib) = (task / mblocks, task % mblocks);
                let w = &p.panels[jp * k * NR..(jp + 1) * k * NR];
                let b = p.bias.as_ref().map(|b| &b[jp * NR..(jp + 1) * NR]);
                let ncols = NR.min(n - jp * NR);
                let mut tile = [0f32; MR * NR];
                for ip in ib * mb..((ib + 1) * mb).min(mp) {
                    let m0 = ip * MR;
                    let mrows = MR.min(m - m0);
                    // SAFETY: AVX2/FMA/F16C were detected (p.caps come from an
                    // engine value); x holds rows m0..m0+mrows of k values, w holds
                    // k·16 fp16 values, b (if any) 16 f32, tile MR·16 f32.
                    unsafe {
                        crate::kernels::gemm_f32f16_6x16_avx2::dispatch(
                            mrows,
                            k,
                            x.as_ptr().add(m0 * k),
                            k,
                            w.as_ptr(),
                            b.map_or(std::ptr::null(), |b| b.as_ptr()),
                            tile.as_mut_ptr(),
                        )
                    };
                    for r in 0..mrows {
                        for c in 0..ncols {
                            // SAFETY: (m0+r, jp·16+c) is inside the m×n output and
                            // belongs to this task only.
                            unsafe { out.write((m0 + r) * n + jp * NR + c, tile[r * NR + c]) };
                        }
                    }
                }
            },
        );
    }
    y
}

#[cfg(target_arch = "x86_64")]
fn linear_fp16_avx512(p: &PackedFp16, x: &[f32], m: usize, y: &mut [f32]) {
    use crate::kernels::gemm_f32f16_12x32_avx512::{dispatch, FEW_PANELS, MR, NR};
    let (n, k) = (p.n, p.k);
    assert_eq!(p.nr, NR);
    let out = RawOut::new(y);
    let np = n.div_ceil(NR);
    // With one or two rows, four panels per call keep 8–16 FMA chains busy.
    let group = if m <= 2 { FEW_PANELS } else { 1 };
    let ngroups = np.div_ceil(group);
    let mp = m.div_ceil(MR);
    let mb = 8usize;
    let mblocks = mp.div_ceil(mb);
    par_for(
        ngroups * mblocks,
        || (),
        |_, task| {
            let (jg, ib) = (task / mblocks, task % mblocks);
            let first = jg * group;
            let panels = if first + group <= np { group } else { 1 };
            let mut tile = [0f32; MR * NR * 2];
            for jp in (first..(first + group).min(np)).step_by(panels) {
                let w = &p.panels[jp * k * NR..(jp + panels) * k * NR];
                let b = p.bias.as_ref().map(|b| &b[jp * NR..(jp + panels) * NR]);
                let ldc = panels * NR;
                let ncols = ldc.min(n - jp * NR);
                for ip in ib * mb..((ib + 1) * mb).min(mp) {
                    let m0 = ip * MR;
                    let mrows = MR.min(m - m0);
                    assert!(mrows * ldc <= tile.len() && (panels == 1 || mrows <= 2));
                    // SAFETY: AVX-512F was detected (p.caps come from an engine
                    // value); x holds rows m0..m0+mrows of k values; w holds
                    // `panels` panels of k·32 fp16 values; b (if any) panels·32
                    // f32; the tile holds mrows·ldc f32 (asserted).
                    unsafe {
                        dispatch(
                            mrows,
                            panels,
                            k,
                            x.as_ptr().add(m0 * k),
                            k,
                            w.as_ptr(),
                            k * NR,
                            b.map_or(std::ptr::null(), |b| b.as_ptr()),
                            tile.as_mut_ptr(),
                        )
                    };
                    for r in 0..mrows {
                        for c in 0..ncols {
                            // SAFETY: (m0+r, jp·32+c) is inside the m×n output
                            // and belongs to this task only.
                            unsafe { out.write((m0 + r) * n + jp * NR + c, tile[r * ldc + c]) };
                        }
                    }
                }
            }
        },
    );
}
