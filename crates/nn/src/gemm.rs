//! f32 GEMM for the float baseline: `matrixmultiply`'s blocked, packed SGEMM
//! (runtime AVX2/FMA dispatch), split across rquant's threads by rows of C.

use rquant_core::threads;

/// A strided read-only matrix view over a slice: element (i, j) is
/// `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `[rows, cols]`.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major `[rows, cols]` matrix (so `[cols, rows]`).
    pub fn t(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }
    fn max_index(&self, r: usize, c: usize) -> usize {
        if r == 0 || c == 0 {
            0
        } else {
            (r - 1) * self.rs + (c - 1) * self.cs
        }
    }
}

/// `C[m, n] = A[m, k] · B[k, n] + beta · C` on one thread; C is row-major with
/// row stride `rsc`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(m: usize, k: usize, n: usize, a: Mat, b: Mat, beta: f32, c: &mut [f32], rsc: usize) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            for v in &mut c[i * rsc..i * rsc + n] {
                *v *= beta;
            }
        }
        return;
    }
    assert!(a.max_index(m, k) < a.data.len(), "sgemm: A too short");
    assert!(b.max_index(k, n) < b.data.len(), "sgemm: B too short");
    assert!((m - 1) * rsc + n <= c.len(), "sgemm: C too short");
    // SAFETY: the asserts above prove every index the kernel touches lies
    // inside the three slices, and C does not alias A or B (&mut borrow).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            1,
        );
    }
}

/// As [`sgemm`] with C contiguous (`rsc = n`), rows split across threads when
/// the product is large enough to pay for it.
pub fn par_sgemm(m: usize, k: usize, n: usize, a: Mat, b: Mat, beta: f32, c: &mut [f32]) {
    let threads = threads::threads_for(m);
    let work = m * k * n;
    if threads == 1 || m < 2 || work < 1 << 18 {
        sgemm(m, k, n, a, b, beta, c, n);
        return;
    }
    let rows = m.div_ceil(threads * 2).max(1);
    threads::par_chunks_mut(
        &mut c[..m * n],
        rows * n,
        || (),
        |_, i, cc| {
            let r0 = i * rows;
            let mr = cc.len() / n;
            let sub = Mat {
                data: &a.data[r0 * a.rs..],
                rs: a.rs,
                cs: a.cs,
            };
            sgemm(mr, k, n, sub, b, beta, cc, n);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_with_transposes() {
        let (m, k, n) = (37, 29, 23);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32) - 6.0).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 11) as f32) - 5.0).collect();
        let mut c = vec![1.0f32; m * n];
        par_sgemm(m, k, n, Mat::rows(&a, k), Mat::t(&bt, k), 2.0, &mut c);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum::<f32>() + 2.0;
                assert_eq!(c[i * n + j], want);
            }
        }
    }
}
