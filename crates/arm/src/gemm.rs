//! The GEMM driver: `C[m][n] = pipeline(A[m][k] (u8) · B[n][k]ᵀ (packed s8))`,
//! split into tasks of 8-row tiles × 8-column panels run on rquant's one
//! thread pool (`rquant_core::threads`, `registry::num_threads()` threads at
//! most). Every output element is computed by the same instructions whatever
//! the split, so results never depend on the thread count.

use crate::epilogue::{self, Columns, Dst, Output};
use crate::isa::{self, Isa};
use crate::kernels::gemm_u8i8_8x8c1_scalar;
use crate::pack::{self, BData, PackedB, MR, NR};

/// Output element written by a pipeline.
pub trait OutElem: Copy + Default + Send + Sync + 'static {
    fn tile(
        isa: Isa,
        tile: &[i32; MR * NR],
        cols: &Columns,
        out: &Output,
        j0: usize,
        rsum: &[i32; MR],
        dst: Dst<'_, Self>,
    );
}

impl OutElem for u8 {
    fn tile(
        isa: Isa,
        tile: &[i32; MR * NR],
        cols: &Columns,
        out: &Output,
        j0: usize,
        rsum: &[i32; MR],
        dst: Dst<'_, u8>,
    ) {
        #[cfg(target_arch = "aarch64")]
        if isa >= Isa::Neon {
            // SAFETY: isa >= Neon was detected; column arrays are panel-padded
            // (asserted inside).
            unsafe { epilogue::neon::static_neon(tile, cols, out, j0, rsum, dst) };
            return;
        }
        let _ = isa;
        epilogue::static_scalar(tile, cols, out, j0, rsum, dst)
    }
}

impl OutElem for f32 {
    fn tile(
        isa: Isa,
        tile: &[i32; MR * NR],
        cols: &Columns,
        out: &Output,
        j0: usize,
        rsum: &[i32; MR],
        dst: Dst<'_, f32>,
    ) {
        #[cfg(target_arch = "aarch64")]
        if isa >= Isa::Neon {
            // SAFETY: as for u8.
            unsafe { epilogue::neon::dynamic_neon(tile, cols, out, j0, rsum, dst) };
            return;
        }
        let _ = isa;
        epilogue::dynamic_scalar(tile, cols, out, j0, rsum, dst)
    }
}

/// Run `f` over `tasks` on rquant's pool (in order on this thread when
/// `threads` is 1), collecting in order.
pub fn run_tasks<T: Send, R: Send>(
    threads: usize,
    tasks: Vec<T>,
    f: impl Fn(T) -> R + Sync + Send,
) -> Vec<R> {
    if threads <= 1 || tasks.len() <= 1 {
        tasks.into_iter().map(f).collect()
    } else {
        rquant_core::threads::par_map_vec(tasks, f)
    }
}

/// Where the rows of A come from.
#[derive(Clone, Copy)]
pub enum ASource<'a> {
    /// `[m][k]` row-major.
    Dense(&'a [u8]),
    /// Convolution through an indirection buffer: row `p` is the
    /// concatenation over `taps` of `cg` bytes at `src[offsets[p * taps + t]..]`
    /// (padding taps point at a row of zero points).
    Indirect {
        src: &'a [u8],
        offsets: &'a [usize],
        taps: usize,
        cg: usize,
    },
}

impl ASource<'_> {
    /// Rows `r..r+nrows` as one contiguous `[nrows][k]` slice (gathered into
    /// `scratch` for an indirection buffer).
    fn rows<'s>(&'s self, r: usize, nrows: usize, k: usize, scratch: &'s mut Vec<u8>) -> &'s [u8] {
        match *self {
            ASource::Dense(a) => &a[r * k..(r + nrows) * k],
            ASource::Indirect {
                src,
                offsets,
                taps,
                cg,
            } => {
                scratch.clear();
                for &off in &offsets[r * taps..(r + nrows) * taps] {
                    scratch.extend_from_slice(&src[off..off + cg]);
                }
                scratch
            }
        }
    }
}

/// One task: rows `[r0, r1)` × panels `[p0, p1)`.
#[derive(Debug, Clone, Copy)]
struct Task {
    r0: usize,
    r1: usize,
    p0: usize,
    p1: usize,
}

fn split(m: usize, panels: usize, k: usize, threads: usize) -> Vec<Task> {
    let m_tiles = m.div_ceil(MR);
    let work = m.saturating_mul(panels * NR).saturating_mul(k.max(1));
    if threads <= 1 || work < (1 << 16) {
        return vec![Task {
            r0: 0,
            r1: m,
            p0: 0,
            p1: panels,
        }];
    }
    let mut tasks = Vec::new();
    if m_tiles >= 2 * threads {
        let tiles_per = m_tiles.div_ceil(4 * threads).max(1);
        let mut t = 0;
        while t < m_tiles {
            let e = (t + tiles_per).min(m_tiles);
            tasks.push(Task {
                r0: t * MR,
                r1: (e * MR).min(m),
                p0: 0,
                p1: panels,
            });
            t = e;
        }
    } else {
        let chunks = (4 * threads).div_ceil(m_tiles).clamp(1, panels);
        let per = panels.div_ceil(chunks);
        for t in 0..m_tiles {
            let mut p = 0;
            while p < panels {
                let e = (p + per).min(panels);
                tasks.push(Task {
                    r0: t * MR,
                    r1: ((t + 1) * MR).min(m),
                    p0: p,
                    p1: e,
                });
                p = e;
            }
        }
    }
    tasks
}

/// Rows per block whose packed A tiles are reused across every weight panel
/// (each panel is then read from memory once per block and hits L1 for the
/// block's other tiles).
const MC: usize = 8 * MR;

/// One packed A tile: its data for the task's layout, and its row sums.
#[derive(Default)]
struct ATile {
    a16: Vec<i16>,
    a8: Vec<u8>,
    rsum: [i32; MR],
    nrows: usize,
}

/// Run the microkernel of `b`'s layout on one packed A tile and panel `p`.
fn kernel(b: &PackedB, at: &ATile, p: usize, tile: &mut [i32; MR * NR]) {
    let isa = b.isa;
    let k = b.k;
    let panel = p * b.panel_len()..(p + 1) * b.panel_len();
    match (&b.data, isa) {
        (BData::I16(d), Isa::Scalar) => gemm_u8i8_8x8c1_scalar::gemm(k, &at.a16, &d[panel], tile),
        // One-row tiles (batch-1 linear, M tails): the 1x8 kernels.
        #[cfg(target_arch = "aarch64")]
        (BData::I16(d), Isa::Neon) if at.nrows == 1 => {
            // SAFETY: b was packed for Neon, which the engine detected.
            unsafe { crate::kernels::gemm_u8i8_1x8c1_neon::gemm(k, &at.a16, &d[panel], tile) }
        }
        #[cfg(target_arch = "aarch64")]
        (BData::I8(d), Isa::Dotprod) if at.nrows == 1 => {
            // SAFETY: b was packed for Dotprod, which the engine detected.
            unsafe {
                crate::kernels::gemm_u8i8_1x8c4_dotprod::gemm(b.kp / 4, &at.a8, &d[panel], tile)
            }
        }
        #[cfg(target_arch = "aarch64")]
        (BData::I8(d), Isa::I8mm) if at.nrows == 1 => {
            // SAFETY: b was packed for I8mm, which the engine detected.
            unsafe { crate::kernels::gemm_u8i8_1x8c8_i8mm::gemm(b.kp / 8, &at.a8, &d[panel], tile) }
        }
        // Tiles of 2-4 rows: the 4x8 kernels.
        #[cfg(target_arch = "aarch64")]
        (BData::I16(d), Isa::Neon) if at.nrows <= 4 => {
            // SAFETY: b was packed for Neon, which the engine detected.
            unsafe { crate::kernels::gemm_u8i8_4x8c1_neon::gemm(k, &at.a16, &d[panel], tile) }
        }
        #[cfg(target_arch = "aarch64")]
        (BData::I8(d), Isa::Dotprod) if at.nrows <= 4 => {
            // SAFETY: b was packed for Dotprod, which the engine detected.
            unsafe {
                crate::kernels::gemm_u8i8_4x8c4_dotprod::gemm(b.kp / 4, &at.a8, &d[panel], tile)
            }
        }
        #[cfg(target_arch = "aarch64")]
        (BData::I8(d), Isa::I8mm) if at.nrows <= 4 => {
            // SAFETY: b was packed for I8mm, which the engine detected.
            unsafe { crate::kernels::gemm_u8i8_4x8c8_i8mm::gemm(b.kp / 8, &at.a8, &d[panel], tile) }
        }
        #[cfg(target_arch = "aarch64")]
        (BData::I16(d), Isa::Neon) => {
            // SAFETY: b was packed for Neon, which the engine detected.
            unsafe { crate::kernels::gemm_u8i8_8x8c1_neon::gemm(k, &at.a16, &d[panel], tile) }
        }
        #[cfg(target_arch = "aarch64")]
        (BData::I8(d), Isa::Dotprod) => {
            // SAFETY: b was packed for Dotprod, which the engine detected.
            unsafe {
                crate::kernels::gemm_u8i8_8x8c4_dotprod::gemm(b.kp / 4, &at.a8, &d[panel], tile)
            }
        }
        #[cfg(target_arch = "aarch64")]
        (BData::I8(d), Isa::I8mm) => {
            // SAFETY: b was packed for I8mm, which the engine detected.
            unsafe { crate::kernels::gemm_u8i8_8x8c8_i8mm::gemm(b.kp / 8, &at.a8, &d[panel], tile) }
        }
        // Off AArch64 every layout runs on its scalar twin (tests).
        #[cfg(not(target_arch = "aarch64"))]
        (BData::I16(d), _) => gemm_u8i8_8x8c1_scalar::gemm(k, &at.a16, &d[panel], tile),
        #[cfg(not(target_arch = "aarch64"))]
        (BData::I8(d), Isa::Dotprod | Isa::I8mm) => {
            let kr = pack::kr(isa);
            crate::kernels::gemm_u8i8_8x8ck_scalar::gemm(
                kr,
                b.kp / kr,
                &at.a8,
                isa == Isa::Dotprod,
                &d[panel],
                tile,
            )
        }
        _ => unreachable!("packed layout does not match {isa:?}"),
    }
}

/// Compute the tiles of one task into a `[r1-r0][cols]` buffer: per block of
/// up to MC rows, pack its A tiles, then sweep the panels (outer) over the
/// tiles (inner).
fn run_task<T: OutElem>(
    task: Task,
    a: ASource,
    k: usize,
    xz: i32,
    b: &PackedB,
    cols: &Columns,
    out: &Output,
) -> Vec<T> {
    let isa = b.isa;
    isa::count_call(isa);
    let n = b.n;
    let c0 = task.p0 * NR;
    let c1 = (task.p1 * NR).min(n);
    let width = c1 - c0;
    let mut buf = vec![T::default(); (task.r1 - task.r0) * width];
    let mut tile = [0i32; MR * NR];
    let mut tiles: Vec<ATile> = (0..MC / MR).map(|_| ATile::default()).collect();
    let mut scratch: Vec<u8> = Vec::new();
    let mut r0 = task.r0;
    while r0 < task.r1 {
        let r1 = (r0 + MC).min(task.r1);
        let ntiles = (r1 - r0).div_ceil(MR);
        for (t, at) in tiles[..ntiles].iter_mut().enumerate() {
            let r = r0 + t * MR;
            let nrows = (r1 - r).min(MR);
            let rows = a.rows(r, nrows, k, &mut scratch);
            at.nrows = nrows;
            at.rsum = match isa {
                Isa::Scalar | Isa::Neon => {
                    pack::pack_a_i16(rows, nrows, k, xz, &mut at.a16);
                    [0; MR]
                }
                Isa::Dotprod => pack::pack_a_u8(rows, nrows, k, 4, 0x80, &mut at.a8),
                Isa::I8mm => pack::pack_a_u8(rows, nrows, k, 8, 0, &mut at.a8),
            };
        }
        for p in task.p0..task.p1 {
            let j0 = p * NR;
            let ncols = (n - j0).min(NR);
            for (t, at) in tiles[..ntiles].iter().enumerate() {
                kernel(b, at, p, &mut tile);
                let off = (r0 + t * MR - task.r0) * width + (j0 - c0);
                let dst = Dst {
                    data: &mut buf[off..],
                    stride: width,
                    nrows: at.nrows,
                    ncols,
                };
                T::tile(isa, &tile, cols, out, j0, &at.rsum, dst);
            }
        }
        r0 = r1;
    }
    buf
}

/// `[m][n]` results of the pipeline `out` over `a` (`[m][k]` quint8 with zero
/// point `xz`) times the packed weight `b`; `cterm` from `b.col_terms(xz)`.
pub fn gemm<T: OutElem>(
    a: ASource,
    m: usize,
    xz: i32,
    b: &PackedB,
    out: &Output,
    threads: usize,
) -> Vec<T> {
    let k = b.k;
    match a {
        ASource::Dense(d) => assert_eq!(d.len(), m * k),
        ASource::Indirect {
            offsets, taps, cg, ..
        } => assert!(offsets.len() == m * taps && taps * cg == k),
    }
    let cterm = b.col_terms(xz);
    let cols = Columns {
        cterm: &cterm,
        wz: &b.wz,
        correct: b.needs_correction(),
    };
    let n = b.n;
    let tasks = split(m, b.panels, k, threads);
    if tasks.len() == 1 {
        return run_task(tasks[0], a, k, xz, b, &cols, out);
    }
    let bufs = run_tasks(threads, tasks.clone(), |t| {
        run_task::<T>(t, a, k, xz, b, &cols, out)
    });
    let mut c = vec![T::default(); m * n];
    for (t, buf) in tasks.iter().zip(bufs) {
        let c0 = t.p0 * NR;
        let width = (t.p1 * NR).min(n) - c0;
        for (i, row) in buf.chunks_exact(width).enumerate() {
            let dst = (t.r0 + i) * n + c0;
            c[dst..dst + width].copy_from_slice(row);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    //! Every packed layout through the driver against a naive loop (off
    //! AArch64 the SIMD layouts run on their scalar twins).
    use super::*;

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn layouts_match_naive() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let layouts: Vec<Isa> = if cfg!(target_arch = "aarch64") {
            Isa::ALL
                .into_iter()
                .filter(|&i| isa::supported(i))
                .collect()
        } else {
            Isa::ALL.to_vec()
        };
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (8, 8, 8),
            (9, 17, 33),
            (17, 9, 4),
            (16, 24, 100),
        ];
        for &(m, n, k) in &shapes {
            for &xz in &[0i32, 128, 255, 37] {
                let a: Vec<u8> = (0..m * k).map(|_| rng(&mut seed) as u8).collect();
                let w: Vec<i8> = (0..n * k).map(|_| rng(&mut seed) as i8).collect();
                let wz: Vec<i32> = (0..n).map(|_| (rng(&mut seed) as i8) as i32).collect();
                let mut want = vec![0f32; m * n];
                for i in 0..m {
                    for j in 0..n {
                        let mut acc = 0i32;
                        for t in 0..k {
                            acc = acc.wrapping_add(
                                (a[i * k + t] as i32 - xz) * (w[j * k + t] as i32 - wz[j]),
                            );
                        }
                        want[i * n + j] = acc as f32;
                    }
                }
                for &isa in &layouts {
                    let b = PackedB::new(isa, &w, n, k, &wz);
                    let sp = vec![1f32; b.panels * NR];
                    let out = Output::Dynamic {
                        sp: &sp,
                        bias: None,
                    };
                    for threads in [1, 3] {
                        let got = gemm::<f32>(ASource::Dense(&a), m, xz, &b, &out, threads);
                        assert_eq!(got, want, "{isa:?} m={m} n={n} k={k} xz={xz}");
                    }
                }
            }
        }
    }
}
