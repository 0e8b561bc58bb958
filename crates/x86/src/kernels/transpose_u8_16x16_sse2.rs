//! Byte matrix transpose (NCHW ↔ NHWC), 16×16 blocks with SSE2 unpacks
//! (4 stages of 16 unpacks per 256 bytes); edges in scalar code.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::mem::MaybeUninit;

/// `dst[j·rows + i] = src[i·cols + j]` for a `rows × cols` matrix `src`
/// (row stride `cols`) into `dst` (`cols × rows`, row stride `rows`).
pub fn transpose(src: &[u8], rows: usize, cols: usize, dst: &mut [u8]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    // SAFETY: dst holds rows·cols bytes (asserted).
    unsafe { transpose_raw(src, rows, cols, dst.as_mut_ptr()) }
}

/// [`transpose`] into memory not yet initialised: every one of the first
/// `rows·cols` elements of `dst` is written.
pub fn transpose_uninit(src: &[u8], rows: usize, cols: usize, dst: &mut [MaybeUninit<u8>]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    // SAFETY: dst holds rows·cols bytes (asserted); they are only written.
    unsafe { transpose_raw(src, rows, cols, dst.as_mut_ptr().cast()) }
}

/// # Safety
/// `src` holds `rows·cols` bytes (checked) and `dst` is valid for
/// `rows·cols` byte writes; every one of them is written.
unsafe fn transpose_raw(src: &[u8], rows: usize, cols: usize, dst: *mut u8) {
    assert!(src.len() >= rows * cols);
    let (rb, cb) = (rows / 16 * 16, cols / 16 * 16);
    #[cfg(target_arch = "x86_64")]
    for i0 in (0..rb).step_by(16) {
        for j0 in (0..cb).step_by(16) {
            // SAFETY: SSE2 is part of x86_64; the 16×16 block at (i0, j0) lies
            // inside src (i0 + 16 <= rows, j0 + 16 <= cols) and its transpose
            // inside dst.
            unsafe {
                block(
                    src.as_ptr().add(i0 * cols + j0),
                    cols,
                    dst.add(j0 * rows + i0),
                    rows,
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let (rb, cb) = (0, 0);
    // Edges: the last rows (all columns) and the last columns of the block rows.
    for i in 0..rows {
        let j_start = if i < rb { cb } else { 0 };
        for j in j_start..cols {
            // SAFETY: j·rows + i < rows·cols.
            unsafe { dst.add(j * rows + i).write(src[i * cols + j]) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(clippy::needless_range_loop)]
unsafe fn block(src: *const u8, lds: usize, dst: *mut u8, ldd: usize) {
    let z = _mm_setzero_si128();
    let mut r = [z; 16];
    for (i, ri) in r.iter_mut().enumerate() {
        *ri = _mm_loadu_si128(src.add(i * lds) as *const __m128i);
    }
    // a[p][h]: 16-bit lanes (row 2p, row 2p+1) for columns 8h..8h+7.
    let mut a = [[z; 2]; 8];
    for p in 0..8 {
        a[p][0] = _mm_unpacklo_epi8(r[2 * p], r[2 * p + 1]);
        a[p][1] = _mm_unpackhi_epi8(r[2 * p], r[2 * p + 1]);
    }
    // b[q][g]: 32-bit lanes (rows 4q..4q+3) for columns 4g..4g+3.
    let mut b = [[z; 4]; 4];
    for q in 0..4 {
        for h in 0..2 {
            b[q][2 * h] = _mm_unpacklo_epi16(a[2 * q][h], a[2 * q + 1][h]);
            b[q][2 * h + 1] = _mm_unpackhi_epi16(a[2 * q][h], a[2 * q + 1][h]);
        }
    }
    // c[o][f]: 64-bit lanes (rows 8o..8o+7) for columns 2f, 2f+1.
    let mut c = [[z; 8]; 2];
    for o in 0..2 {
        for g in 0..4 {
            c[o][2 * g] = _mm_unpacklo_epi32(b[2 * o][g], b[2 * o + 1][g]);
            c[o][2 * g + 1] = _mm_unpackhi_epi32(b[2 * o][g], b[2 * o + 1][g]);
        }
    }
    for f in 0..8 {
        _mm_storeu_si128(
            dst.add(2 * f * ldd) as *mut __m128i,
            _mm_unpacklo_epi64(c[0][f], c[1][f]),
        );
        _mm_storeu_si128(
            dst.add((2 * f + 1) * ldd) as *mut __m128i,
            _mm_unpackhi_epi64(c[0][f], c[1][f]),
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_scalar_transpose() {
        for &(rows, cols) in &[
            (1, 1),
            (16, 16),
            (17, 33),
            (64, 3136),
            (5, 40),
            (40, 5),
            (32, 48),
        ] {
            let src: Vec<u8> = (0..rows * cols).map(|i| (i * 7 + i / 13) as u8).collect();
            let mut dst = vec![0u8; rows * cols];
            super::transpose(&src, rows, cols, &mut dst);
            let mut un = Vec::with_capacity(rows * cols);
            super::transpose_uninit(&src, rows, cols, un.spare_capacity_mut());
            // SAFETY: transpose_uninit wrote all rows·cols elements.
            unsafe { un.set_len(rows * cols) };
            assert_eq!(un, dst);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        dst[j * rows + i],
                        src[i * cols + j],
                        "{rows}x{cols} at ({i},{j})"
                    );
                }
            }
        }
    }
}
