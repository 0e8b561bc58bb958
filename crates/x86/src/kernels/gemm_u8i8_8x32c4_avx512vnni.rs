//! AVX512-VNNI int8 GEMM microkernel, 8×32 tile, k-units of 4 u8/s8.
//!
//! Exactness: `vpdpbusd` multiplies u8 by s8 and adds the four products of
//! each 32-bit lane to the int32 accumulator without intermediate saturation
//! (the non-`s` form wraps in int32, exactly the reference's accumulator).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::gemm::{ALayout, Elem, Micro, Shape};

/// The tile and operand layout ([`crate::pack`] packs activations for it).
pub const SHAPE: Shape = Shape {
    mr: 8,
    nr: 32,
    kr: 4,
    elem: Elem::I8,
    a: ALayout::Rows,
};
pub const MR: usize = SHAPE.mr;
pub const NR: usize = SHAPE.nr;

/// `t.c` (+)= the raw `Σ x·w` of `t.mrows` activation rows and one weight
/// panel over `t.ku` k-units (`t.init`: from zero, else onto `t.c`).
///
/// # Safety
/// The target features below must be available and `t` must fit [`SHAPE`]
/// ([`Micro::assert_fits`]: rows `lda` apart with `ku` units each, a panel of
/// `ku` units × NR columns, an MR×NR tile).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn run(t: Micro<'_>) {
    let (ku, a, lda, b, c, init) = (
        t.ku,
        t.a.as_ptr(),
        t.lda,
        t.b.as_ptr(),
        t.c.as_mut_ptr(),
        t.init,
    );
    match t.mrows {
        1 => kernel_few::<1>(ku, a, lda, b, c, init),
        2 => kernel_few::<2>(ku, a, lda, b, c, init),
        3 => kernel_few::<3>(ku, a, lda, b, c, init),
        4 => kernel::<4>(ku, a, lda, b, c, init),
        5 => kernel::<5>(ku, a, lda, b, c, init),
        6 => kernel::<6>(ku, a, lda, b, c, init),
        7 => kernel::<7>(ku, a, lda, b, c, init),
        _ => kernel8(ku, a, lda, b, c, init),
    }
}

/// Eight rows: the assembly loop over whole groups of four k-units, the
/// intrinsics kernel for the rest (and under Miri, which cannot run `asm!`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel8(ku: usize, a: *const u8, lda: usize, b: *const u8, c: *mut i32, init: bool) {
    #[cfg(not(miri))]
    if ku >= 4 {
        let groups = ku / 4;
        kernel8_asm(groups, a, lda, b, c, init);
        if !ku.is_multiple_of(4) {
            let done = groups * 4;
            kernel::<8>(
                ku - done,
                a.add(done * 4),
                lda,
                b.add(done * NR * 4),
                c,
                false,
            );
        }
        return;
    }
    kernel::<8>(ku, a, lda, b, c, init)
}

/// The full 8-row tile over `4·groups` k-units, as hand-scheduled assembly.
///
/// Why assembly: compiled from intrinsics, the loop recomputed the eight row
/// addresses with a chain of adds every k-unit, so the front end, not
/// `vpdpbusd`, bounded it (≈83% of the register peak). Here two base
/// pointers address all eight rows through `base + lda·{1,2}` and
/// `base − lda·{1,2}`, four k-units are unrolled into displacements, and a
/// k-unit costs 2 weight loads, 8 broadcasts and 16 `vpdpbusd`.
///
/// # Safety
/// As [`run`] with `mrows == 8` and `ku == 4·groups`, `groups >= 1`.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel8_asm(
    groups: usize,
    a: *const u8,
    lda: usize,
    b: *const u8,
    c: *mut i32,
    init: bool,
) {
    debug_assert!(groups >= 1);
    // SAFETY: reads 8 rows × 16·groups bytes from `a` and 512·groups bytes
    // from `b`, and reads/writes the 8×32 i32 tile at `c`, all inside what
    // the caller guarantees; only the declared registers are clobbered.
    std::arch::asm!(
            "test {init}, {init}",
            "jnz 3f",
            "vmovdqu64 zmm0, [{c} + 0]",
            "vmovdqu64 zmm1, [{c} + 64]",
            "vmovdqu64 zmm2, [{c} + 128]",
            "vmovdqu64 zmm3, [{c} + 192]",
            "vmovdqu64 zmm4, [{c} + 256]",
            "vmovdqu64 zmm5, [{c} + 320]",
            "vmovdqu64 zmm6, [{c} + 384]",
            "vmovdqu64 zmm7, [{c} + 448]",
            "vmovdqu64 zmm8, [{c} + 512]",
            "vmovdqu64 zmm9, [{c} + 576]",
            "vmovdqu64 zmm10, [{c} + 640]",
            "vmovdqu64 zmm11, [{c} + 704]",
            "vmovdqu64 zmm12, [{c} + 768]",
            "vmovdqu64 zmm13, [{c} + 832]",
            "vmovdqu64 zmm14, [{c} + 896]",
            "vmovdqu64 zmm15, [{c} + 960]",
            "jmp 2f",
            "3:",
            "vpxord zmm0, zmm0, zmm0",
            "vpxord zmm1, zmm1, zmm1",
            "vpxord zmm2, zmm2, zmm2",
            "vpxord zmm3, zmm3, zmm3",
            "vpxord zmm4, zmm4, zmm4",
            "vpxord zmm5, zmm5, zmm5",
            "vpxord zmm6, zmm6, zmm6",
            "vpxord zmm7, zmm7, zmm7",
            "vpxord zmm8, zmm8, zmm8",
            "vpxord zmm9, zmm9, zmm9",
            "vpxord zmm10, zmm10, zmm10",
            "vpxord zmm11, zmm11, zmm11",
            "vpxord zmm12, zmm12, zmm12",
            "vpxord zmm13, zmm13, zmm13",
            "vpxord zmm14, zmm14, zmm14",
            "vpxord zmm15, zmm15, zmm15",
            "2:",
            "vmovdqu64 zmm16, [{b} + 0]",
            "vmovdqu64 zmm17, [{b} + 64]",
            "vpbroadcastd zmm18, dword ptr [{p0} + 0]",
            "vpdpbusd zmm0, zmm18, zmm16",
            "vpdpbusd zmm1, zmm18, zmm17",
            "vpbroadcastd zmm19, dword ptr [{p0} + {l} + 0]",
            "vpdpbusd zmm2, zmm19, zmm16",
            "vpdpbusd zmm3, zmm19, zmm17",
            "vpbroadcastd zmm20, dword ptr [{p0} + {l}*2 + 0]",
            "vpdpbusd zmm4, zmm20, zmm16",
            "vpdpbusd zmm5, zmm20, zmm17",
            "vpbroadcastd zmm21, dword ptr [{p5} + {ln}*2 + 0]",
            "vpdpbusd zmm6, zmm21, zmm16",
            "vpdpbusd zmm7, zmm21, zmm17",
            "vpbroadcastd zmm18, dword ptr [{p5} + {ln} + 0]",
            "vpdpbusd zmm8, zmm18, zmm16",
            "vpdpbusd zmm9, zmm18, zmm17",
            "vpbroadcastd zmm19, dword ptr [{p5} + 0]",
            "vpdpbusd zmm10, zmm19, zmm16",
            "vpdpbusd zmm11, zmm19, zmm17",
            "vpbroadcastd zmm20, dword ptr [{p5} + {l} + 0]",
            "vpdpbusd zmm12, zmm20, zmm16",
            "vpdpbusd zmm13, zmm20, zmm17",
            "vpbroadcastd zmm21, dword ptr [{p5} + {l}*2 + 0]",
            "vpdpbusd zmm14, zmm21, zmm16",
            "vpdpbusd zmm15, zmm21, zmm17",
            "vmovdqu64 zmm16, [{b} + 128]",
            "vmovdqu64 zmm17, [{b} + 192]",
            "vpbroadcastd zmm18, dword ptr [{p0} + 4]",
            "vpdpbusd zmm0, zmm18, zmm16",
            "vpdpbusd zmm1, zmm18, zmm17",
            "vpbroadcastd zmm19, dword ptr [{p0} + {l} + 4]",
            "vpdpbusd zmm2, zmm19, zmm16",
            "vpdpbusd zmm3, zmm19, zmm17",
            "vpbroadcastd zmm20, dword ptr [{p0} + {l}*2 + 4]",
            "vpdpbusd zmm4, zmm20, zmm16",
            "vpdpbusd zmm5, zmm20, zmm17",
            "vpbroadcastd zmm21, dword ptr [{p5} + {ln}*2 + 4]",
            "vpdpbusd zmm6, zmm21, zmm16",
            "vpdpbusd zmm7, zmm21, zmm17",
            "vpbroadcastd zmm18, dword ptr [{p5} + {ln} + 4]",
            "vpdpbusd zmm8, zmm18, zmm16",
            "vpdpbusd zmm9, zmm18, zmm17",
            "vpbroadcastd zmm19, dword ptr [{p5} + 4]",
            "vpdpbusd zmm10, zmm19, zmm16",
            "vpdpbusd zmm11, zmm19, zmm17",
            "vpbroadcastd zmm20, dword ptr [{p5} + {l} + 4]",
            "vpdpbusd zmm12, zmm20, zmm16",
            "vpdpbusd zmm13, zmm20, zmm17",
            "vpbroadcastd zmm21, dword ptr [{p5} + {l}*2 + 4]",
            "vpdpbusd zmm14, zmm21, zmm16",
            "vpdpbusd zmm15, zmm21, zmm17",
            "vmovdqu64 zmm16, [{b} + 256]",
            "vmovdqu64 zmm17, [{b} + 320]",
            "vpbroadcastd zmm18, dword ptr [{p0} + 8]",
            "vpdpbusd zmm0, zmm18, zmm16",
            "vpdpbusd zmm1, zmm18, zmm17",
            "vpbroadcastd zmm19, dword ptr [{p0} + {l} + 8]",
            "vpdpbusd zmm2, zmm19, zmm16",
            "vpdpbusd zmm3, zmm19, zmm17",
            "vpbroadcastd zmm20, dword ptr [{p0} + {l}*2 + 8]",
            "vpdpbusd zmm4, zmm20, zmm16",
            "vpdpbusd zmm5, zmm20, zmm17",
            "vpbroadcastd zmm21, dword ptr [{p5} + {ln}*2 + 8]",
            "vpdpbusd zmm6, zmm21, zmm16",
            "vpdpbusd zmm7, zmm21, zmm17",
            "vpbroadcastd zmm18, dword ptr [{p5} + {ln} + 8]",
            "vpdpbusd zmm8, zmm18, zmm16",
            "vpdpbusd zmm9, zmm18, zmm17",
            "vpbroadcastd zmm19, dword ptr [{p5} + 8]",
            "vpdpbusd zmm10, zmm19, zmm16",
            "vpdpbusd zmm11, zmm19, zmm17",
            "vpbroadcastd zmm20, dword ptr [{p5} + {l} + 8]",
            "vpdpbusd zmm12, zmm20, zmm16",
            "vpdpbusd zmm13, zmm20, zmm17",
            "vpbroadcastd zmm21, dword ptr [{p5} + {l}*2 + 8]",
            "vpdpbusd zmm14, zmm21, zmm16",
            "vpdpbusd zmm15, zmm21, zmm17",
            "vmovdqu64 zmm16, [{b} + 384]",
            "vmovdqu64 zmm17, [{b} + 448]",
            "vpbroadcastd zmm18, dword ptr [{p0} + 12]",
            "vpdpbusd zmm0, zmm18, zmm16",
            "vpdpbusd zmm1, zmm18, zmm17",
            "vpbroadcastd zmm19, dword ptr [{p0} + {l} + 12]",
            "vpdpbusd zmm2, zmm19, zmm16",
            "vpdpbusd zmm3, zmm19, zmm17",
            "vpbroadcastd zmm20, dword ptr [{p0} + {l}*2 + 12]",
            "vpdpbusd zmm4, zmm20, zmm16",
            "vpdpbusd zmm5, zmm20, zmm17",
            "vpbroadcastd zmm21, dword ptr [{p5} + {ln}*2 + 12]",
            "vpdpbusd zmm6, zmm21, zmm16",
            "vpdpbusd zmm7, zmm21, zmm17",
            "vpbroadcastd zmm18, dword ptr [{p5} + {ln} + 12]",
            "vpdpbusd zmm8, zmm18, zmm16",
            "vpdpbusd zmm9, zmm18, zmm17",
            "vpbroadcastd zmm19, dword ptr [{p5} + 12]",
            "vpdpbusd zmm10, zmm19, zmm16",
            "vpdpbusd zmm11, zmm19, zmm17",
            "vpbroadcastd zmm20, dword ptr [{p5} + {l} + 12]",
            "vpdpbusd zmm12, zmm20, zmm16",
            "vpdpbusd zmm13, zmm20, zmm17",
            "vpbroadcastd zmm21, dword ptr [{p5} + {l}*2 + 12]",
            "vpdpbusd zmm14, zmm21, zmm16",
            "vpdpbusd zmm15, zmm21, zmm17",
            "add {p0}, 16",
            "add {p5}, 16",
            "add {b}, 512",
            "dec {n}",
            "jnz 2b",
            "vmovdqu64 [{c} + 0], zmm0",
            "vmovdqu64 [{c} + 64], zmm1",
            "vmovdqu64 [{c} + 128], zmm2",
            "vmovdqu64 [{c} + 192], zmm3",
            "vmovdqu64 [{c} + 256], zmm4",
            "vmovdqu64 [{c} + 320], zmm5",
            "vmovdqu64 [{c} + 384], zmm6",
            "vmovdqu64 [{c} + 448], zmm7",
            "vmovdqu64 [{c} + 512], zmm8",
            "vmovdqu64 [{c} + 576], zmm9",
            "vmovdqu64 [{c} + 640], zmm10",
            "vmovdqu64 [{c} + 704], zmm11",
            "vmovdqu64 [{c} + 768], zmm12",
            "vmovdqu64 [{c} + 832], zmm13",
            "vmovdqu64 [{c} + 896], zmm14",
            "vmovdqu64 [{c} + 960], zmm15",
        init = in(reg) init as usize,
        p0 = inout(reg) a => _,
        p5 = inout(reg) a.add(5 * lda) => _,
        l = in(reg) lda,
        ln = in(reg) lda.wrapping_neg(),
        b = inout(reg) b => _,
        n = inout(reg) groups => _,
        c = in(reg) c,
        out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _, out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _, out("zmm20") _, out("zmm21") _,
        options(nostack),
    );
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn kernel<const M: usize>(
    ku: usize,
    a: *const u8,
    lda: usize,
    b: *const u8,
    c: *mut i32,
    init: bool,
) {
    let mut acc = [[_mm512_setzero_si512(); 2]; M];
    if !init {
        for (i, acc_i) in acc.iter_mut().enumerate() {
            acc_i[0] = _mm512_loadu_si512(c.add(i * NR) as *const __m512i);
            acc_i[1] = _mm512_loadu_si512(c.add(i * NR + 16) as *const __m512i);
        }
    }
    let mut rows = [a; M];
    for (i, r) in rows.iter_mut().enumerate() {
        *r = a.add(i * lda);
    }
    let mut off = 0usize;
    let mut b = b;
    for _ in 0..ku {
        // SAFETY (whole loop body): a and b advance by one k-unit per
        // iteration and stay within the ku units the caller guarantees.
        let b0 = _mm512_loadu_si512(b as *const __m512i);
        let b1 = _mm512_loadu_si512(b.add(64) as *const __m512i);
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_epi32((rows[i].add(off) as *const i32).read_unaligned());
            acc_i[0] = _mm512_dpbusd_epi32(acc_i[0], x, b0);
            acc_i[1] = _mm512_dpbusd_epi32(acc_i[1], x, b1);
        }
        off += 4;
        b = b.add(NR * 4);
    }
    for (i, acc_i) in acc.iter().enumerate() {
        _mm512_storeu_si512(c.add(i * NR) as *mut __m512i, acc_i[0]);
        _mm512_storeu_si512(c.add(i * NR + 16) as *mut __m512i, acc_i[1]);
    }
}

/// Few rows (M <= 3): with only 2·M accumulators the `vpdpbusd` latency
/// would bound the loop, so four k-units run on separate accumulator sets,
/// summed at the end (wrapping int32 addition is associative: same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
#[allow(clippy::needless_range_loop)]
unsafe fn kernel_few<const M: usize>(
    ku: usize,
    a: *const u8,
    lda: usize,
    b: *const u8,
    c: *mut i32,
    init: bool,
) {
    let z = _mm512_setzero_si512();
    let mut acc = [[[z; 2]; 4]; M];
    let mut rows = [a; M];
    for (i, r) in rows.iter_mut().enumerate() {
        *r = a.add(i * lda);
    }
    let mut u = 0usize;
    let mut b = b;
    // SAFETY (both loops): a and b advance by whole k-units and stay
    // within the ku units the caller guarantees.
    while u + 4 <= ku {
        for q in 0..4 {
            let b0 = _mm512_loadu_si512(b.add(q * NR * 4) as *const __m512i);
            let b1 = _mm512_loadu_si512(b.add(q * NR * 4 + 64) as *const __m512i);
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let x =
                    _mm512_set1_epi32((rows[i].add(4 * (u + q)) as *const i32).read_unaligned());
                acc_i[q][0] = _mm512_dpbusd_epi32(acc_i[q][0], x, b0);
                acc_i[q][1] = _mm512_dpbusd_epi32(acc_i[q][1], x, b1);
            }
        }
        u += 4;
        b = b.add(4 * NR * 4);
    }
    while u < ku {
        let b0 = _mm512_loadu_si512(b as *const __m512i);
        let b1 = _mm512_loadu_si512(b.add(64) as *const __m512i);
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_epi32((rows[i].add(4 * u) as *const i32).read_unaligned());
            acc_i[0][0] = _mm512_dpbusd_epi32(acc_i[0][0], x, b0);
            acc_i[0][1] = _mm512_dpbusd_epi32(acc_i[0][1], x, b1);
        }
        u += 1;
        b = b.add(NR * 4);
    }
    for (i, acc_i) in acc.iter().enumerate() {
        for j in 0..2 {
            let mut v = _mm512_add_epi32(
                _mm512_add_epi32(acc_i[0][j], acc_i[1][j]),
                _mm512_add_epi32(acc_i[2][j], acc_i[3][j]),
            );
            if !init {
                v = _mm512_add_epi32(
                    v,
                    _mm512_loadu_si512(c.add(i * NR + 16 * j) as *const __m512i),
                );
            }
            _mm512_storeu_si512(c.add(i * NR + 16 * j) as *mut __m512i, v);
        }
    }
}
