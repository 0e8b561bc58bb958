//! Dynamic linear with fp16 weights: weights rounded to fp16 at packing
//! (clamped to ±65504) and kept as f32 in 8-column panels `[panel][k][8]`.
//! Each output is one sequential FMA chain over k started by a plain product,
//! the bias added last — so vectorising across columns (one lane per column)
//! gives exactly the scalar bits.

use crate::isa::Caps;
use crate::pack::NR;

/// Packed fp16-rounded weights.
#[derive(Debug)]
pub struct PackedF16 {
    pub n: usize,
    pub k: usize,
    pub panels: usize,
    /// `[panel][k][NR]`, zero past n.
    pub data: Vec<f32>,
    /// Bias padded to `panels * NR` (zeros when absent).
    pub bias: Option<Vec<f32>>,
}

impl rquant_core::engine::Panels for PackedF16 {
    fn bytes(&self) -> usize {
        self.data.len() * 4 + self.bias.as_ref().map_or(0, |b| b.len() * 4)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl PackedF16 {
    pub fn new(w: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> PackedF16 {
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        for j in 0..n {
            let (p, c) = (j / NR, j % NR);
            for kk in 0..k {
                let v = w[j * k + kk].clamp(-65504.0, 65504.0);
                data[(p * k + kk) * NR + c] = rquant_core::dtype::f32_to_f16(v).to_f32();
            }
        }
        let bias = bias.map(|b| {
            let mut v = b.to_vec();
            v.resize(panels * NR, 0.0);
            v
        });
        PackedF16 {
            n,
            k,
            panels,
            data,
            bias,
        }
    }

    /// `[m][n]` outputs for x `[m][k]`.
    pub fn run(&self, caps: Caps, x: &[f32], m: usize, threads: usize) -> Vec<f32> {
        let rows: Vec<usize> = (0..m).collect();
        let chunk = m.div_ceil(threads.max(1)).max(1);
        let tasks: Vec<&[usize]> = rows.chunks(chunk).collect();
        let parts = crate::gemm::run_tasks(threads, tasks, |rs| {
            let mut y = vec![0f32; rs.len() * self.n];
            for (t, &i) in rs.iter().enumerate() {
                self.row(
                    caps,
                    &x[i * self.k..(i + 1) * self.k],
                    &mut y[t * self.n..(t + 1) * self.n],
                );
            }
            y
        });
        parts.concat()
    }

    fn row(&self, caps: Caps, x: &[f32], y: &mut [f32]) {
        let k = self.k;
        for p in 0..self.panels {
            let w = &self.data[p * k * NR..(p + 1) * k * NR];
            let mut acc = [0f32; NR];
            #[cfg(target_arch = "aarch64")]
            let done = if caps.neon {
                // SAFETY: NEON detected (caps.neon); w holds k*8 values.
                unsafe { neon_panel(x, w, &mut acc) };
                true
            } else {
                false
            };
            #[cfg(not(target_arch = "aarch64"))]
            let done = {
                let _ = caps;
                false
            };
            if !done {
                for c in 0..NR {
                    let mut a = x[0] * w[c];
                    for kk in 1..k {
                        a = x[kk].mul_add(w[kk * NR + c], a);
                    }
                    acc[c] = a;
                }
            }
            if let Some(b) = &self.bias {
                for c in 0..NR {
                    acc[c] += b[p * NR + c];
                }
            }
            let j0 = p * NR;
            let nc = (self.n - j0).min(NR);
            y[j0..j0 + nc].copy_from_slice(&acc[..nc]);
        }
    }
}

/// One panel: `acc[c] = x0·w[0][c]`, then `acc[c] = fma(x_k, w[k][c], acc[c])`.
///
/// # Safety
/// NEON available.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn neon_panel(x: &[f32], w: &[f32], acc: &mut [f32; NR]) {
    use core::arch::aarch64::*;
    let k = x.len();
    assert!(w.len() >= k * NR && k >= 1);
    let p = w.as_ptr();
    // SAFETY: w holds k*8 values (asserted); acc holds 8.
    unsafe {
        let x0 = vdupq_n_f32(x[0]);
        let mut a0 = vmulq_f32(x0, vld1q_f32(p));
        let mut a1 = vmulq_f32(x0, vld1q_f32(p.add(4)));
        for (kk, &xv) in x.iter().enumerate().skip(1) {
            let xk = vdupq_n_f32(xv);
            a0 = vfmaq_f32(a0, xk, vld1q_f32(p.add(kk * NR)));
            a1 = vfmaq_f32(a1, xk, vld1q_f32(p.add(kk * NR + 4)));
        }
        vst1q_f32(acc.as_mut_ptr(), a0);
        vst1q_f32(acc.as_mut_ptr().add(4), a1);
    }
}
