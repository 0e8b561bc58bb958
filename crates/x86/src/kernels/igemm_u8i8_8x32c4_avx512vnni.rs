//! AVX512-VNNI indirect int8 GEMM microkernel, 8×32 tile, k-units of 4
//! u8/s8: the conv kernel on NHWC activations. Each tile row reads its K
//! bytes as segments anywhere in the input ([`crate::igemm`]: a kernel row
//! of `kw·C` contiguous NHWC bytes, one tap's `C` bytes, or the zero-point
//! row for padding); the weight panel is the GEMM's (`[ku][32][4]`, the
//! layout of [`super::gemm_u8i8_8x32c4_avx512vnni`]).
//!
//! Exactness: as the GEMM kernel, `vpdpbusd` adds u8×s8 products into
//! int32 without intermediate saturation, wrapping like the reference.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rquant_core::gemm::Shape;

use super::gemm_u8i8_8x32c4_avx512vnni as gemm;
#[cfg(target_arch = "x86_64")]
use crate::igemm::{IMicro, Segs};

/// The tile and weight layout: the GEMM kernel's.
pub const SHAPE: Shape = gemm::SHAPE;
#[cfg(target_arch = "x86_64")]
const NR: usize = SHAPE.nr;

/// `t.c` (+)= the raw `Σ x·w` of `t.mrows` tile rows over the segments.
///
/// # Safety
/// The target features below must be available and `t` must fit [`SHAPE`]
/// ([`IMicro::assert_fits`]; the segments were checked when built).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn run(t: IMicro<'_>) {
    let (segs, b, c, init) = (t.segs, t.b.as_ptr(), t.c.as_mut_ptr(), t.init);
    match t.mrows {
        1 => rows::<1>(&segs, b, c, init),
        2 => rows::<2>(&segs, b, c, init),
        3 => rows::<3>(&segs, b, c, init),
        4 => rows::<4>(&segs, b, c, init),
        5 => rows::<5>(&segs, b, c, init),
        6 => rows::<6>(&segs, b, c, init),
        7 => rows::<7>(&segs, b, c, init),
        _ => full(&segs, b, c, init),
    }
}

/// Eight rows: per segment, an assembly loop over groups of four k-units
/// (as the GEMM kernel's: 2 weight loads, 8 broadcasts, 16 `vpdpbusd` per
/// k-unit, the eight row pointers indexed by one shared offset), the
/// accumulators staying in zmm0–15 from segment to segment; the last
/// `units % 4` k-units (and everything under Miri, which cannot run
/// `asm!`) in intrinsics.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn full(segs: &Segs<'_>, b: *const u8, c: *mut i32, init: bool) {
    #[cfg(miri)]
    {
        rows::<8>(segs, b, c, init)
    }
    #[cfg(not(miri))]
    {
        let mut acc = [_mm512_setzero_si512(); 16];
        if !init {
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm512_loadu_si512(c.add(j * 16) as *const __m512i);
            }
        }
        let mut b = b;
        for s in segs.segs {
            let mut p = [std::ptr::null::<u8>(); 8];
            for (r, pr) in p.iter_mut().enumerate() {
                *pr = segs.ptr(s, r);
            }
            let groups = s.units / 4;
            if groups > 0 {
                let span = groups * 16;
                // SAFETY: each row pointer p[r] has `units·4` readable bytes
                // (SegList::push checked every row), of which the loop reads
                // the first `span`; the weight panel holds `units` k-units
                // of 128 bytes from `b` (IMicro::assert_fits); only the
                // declared registers are written.
                std::arch::asm!(
                    "2:",
                    "vmovdqu64 zmm16, [{b} + 0]",
                    "vmovdqu64 zmm17, [{b} + 64]",
                    "vpbroadcastd zmm18, dword ptr [{p0} + {i} + 0]",
                    "vpdpbusd zmm0, zmm18, zmm16",
                    "vpdpbusd zmm1, zmm18, zmm17",
                    "vpbroadcastd zmm19, dword ptr [{p1} + {i} + 0]",
                    "vpdpbusd zmm2, zmm19, zmm16",
                    "vpdpbusd zmm3, zmm19, zmm17",
                    "vpbroadcastd zmm20, dword ptr [{p2} + {i} + 0]",
                    "vpdpbusd zmm4, zmm20, zmm16",
                    "vpdpbusd zmm5, zmm20, zmm17",
                    "vpbroadcastd zmm21, dword ptr [{p3} + {i} + 0]",
                    "vpdpbusd zmm6, zmm21, zmm16",
                    "vpdpbusd zmm7, zmm21, zmm17",
                    "vpbroadcastd zmm18, dword ptr [{p4} + {i} + 0]",
                    "vpdpbusd zmm8, zmm18, zmm16",
                    "vpdpbusd zmm9, zmm18, zmm17",
                    "vpbroadcastd zmm19, dword ptr [{p5} + {i} + 0]",
                    "vpdpbusd zmm10, zmm19, zmm16",
                    "vpdpbusd zmm11, zmm19, zmm17",
                    "vpbroadcastd zmm20, dword ptr [{p6} + {i} + 0]",
                    "vpdpbusd zmm12, zmm20, zmm16",
                    "vpdpbusd zmm13, zmm20, zmm17",
                    "vpbroadcastd zmm21, dword ptr [{p7} + {i} + 0]",
                    "vpdpbusd zmm14, zmm21, zmm16",
                    "vpdpbusd zmm15, zmm21, zmm17",
                    "vmovdqu64 zmm16, [{b} + 128]",
                    "vmovdqu64 zmm17, [{b} + 192]",
                    "vpbroadcastd zmm18, dword ptr [{p0} + {i} + 4]",
                    "vpdpbusd zmm0, zmm18, zmm16",
                    "vpdpbusd zmm1, zmm18, zmm17",
                    "vpbroadcastd zmm19, dword ptr [{p1} + {i} + 4]",
                    "vpdpbusd zmm2, zmm19, zmm16",
                    "vpdpbusd zmm3, zmm19, zmm17",
                    "vpbroadcastd zmm20, dword ptr [{p2} + {i} + 4]",
                    "vpdpbusd zmm4, zmm20, zmm16",
                    "vpdpbusd zmm5, zmm20, zmm17",
                    "vpbroadcastd zmm21, dword ptr [{p3} + {i} + 4]",
                    "vpdpbusd zmm6, zmm21, zmm16",
                    "vpdpbusd zmm7, zmm21, zmm17",
                    "vpbroadcastd zmm18, dword ptr [{p4} + {i} + 4]",
                    "vpdpbusd zmm8, zmm18, zmm16",
                    "vpdpbusd zmm9, zmm18, zmm17",
                    "vpbroadcastd zmm19, dword ptr [{p5} + {i} + 4]",
                    "vpdpbusd zmm10, zmm19, zmm16",
                    "vpdpbusd zmm11, zmm19, zmm17",
                    "vpbroadcastd zmm20, dword ptr [{p6} + {i} + 4]",
                    "vpdpbusd zmm12, zmm20, zmm16",
                    "vpdpbusd zmm13, zmm20, zmm17",
                    "vpbroadcastd zmm21, dword ptr [{p7} + {i} + 4]",
                    "vpdpbusd zmm14, zmm21, zmm16",
                    "vpdpbusd zmm15, zmm21, zmm17",
                    "vmovdqu64 zmm16, [{b} + 256]",
                    "vmovdqu64 zmm17, [{b} + 320]",
                    "vpbroadcastd zmm18, dword ptr [{p0} + {i} + 8]",
                    "vpdpbusd zmm0, zmm18, zmm16",
                    "vpdpbusd zmm1, zmm18, zmm17",
                    "vpbroadcastd zmm19, dword ptr [{p1} + {i} + 8]",
                    "vpdpbusd zmm2, zmm19, zmm16",
                    "vpdpbusd zmm3, zmm19, zmm17",
                    "vpbroadcastd zmm20, dword ptr [{p2} + {i} + 8]",
                    "vpdpbusd zmm4, zmm20, zmm16",
                    "vpdpbusd zmm5, zmm20, zmm17",
                    "vpbroadcastd zmm21, dword ptr [{p3} + {i} + 8]",
                    "vpdpbusd zmm6, zmm21, zmm16",
                    "vpdpbusd zmm7, zmm21, zmm17",
                    "vpbroadcastd zmm18, dword ptr [{p4} + {i} + 8]",
                    "vpdpbusd zmm8, zmm18, zmm16",
                    "vpdpbusd zmm9, zmm18, zmm17",
                    "vpbroadcastd zmm19, dword ptr [{p5} + {i} + 8]",
                    "vpdpbusd zmm10, zmm19, zmm16",
                    "vpdpbusd zmm11, zmm19, zmm17",
                    "vpbroadcastd zmm20, dword ptr [{p6} + {i} + 8]",
                    "vpdpbusd zmm12, zmm20, zmm16",
                    "vpdpbusd zmm13, zmm20, zmm17",
                    "vpbroadcastd zmm21, dword ptr [{p7} + {i} + 8]",
                    "vpdpbusd zmm14, zmm21, zmm16",
                    "vpdpbusd zmm15, zmm21, zmm17",
                    "vmovdqu64 zmm16, [{b} + 384]",
                    "vmovdqu64 zmm17, [{b} + 448]",
                    "vpbroadcastd zmm18, dword ptr [{p0} + {i} + 12]",
                    "vpdpbusd zmm0, zmm18, zmm16",
                    "vpdpbusd zmm1, zmm18, zmm17",
                    "vpbroadcastd zmm19, dword ptr [{p1} + {i} + 12]",
                    "vpdpbusd zmm2, zmm19, zmm16",
                    "vpdpbusd zmm3, zmm19, zmm17",
                    "vpbroadcastd zmm20, dword ptr [{p2} + {i} + 12]",
                    "vpdpbusd zmm4, zmm20, zmm16",
                    "vpdpbusd zmm5, zmm20, zmm17",
                    "vpbroadcastd zmm21, dword ptr [{p3} + {i} + 12]",
                    "vpdpbusd zmm6, zmm21, zmm16",
                    "vpdpbusd zmm7, zmm21, zmm17",
                    "vpbroadcastd zmm18, dword ptr [{p4} + {i} + 12]",
                    "vpdpbusd zmm8, zmm18, zmm16",
                    "vpdpbusd zmm9, zmm18, zmm17",
                    "vpbroadcastd zmm19, dword ptr [{p5} + {i} + 12]",
                    "vpdpbusd zmm10, zmm19, zmm16",
                    "vpdpbusd zmm11, zmm19, zmm17",
                    "vpbroadcastd zmm20, dword ptr [{p6} + {i} + 12]",
                    "vpdpbusd zmm12, zmm20, zmm16",
                    "vpdpbusd zmm13, zmm20, zmm17",
                    "vpbroadcastd zmm21, dword ptr [{p7} + {i} + 12]",
                    "vpdpbusd zmm14, zmm21, zmm16",
                    "vpdpbusd zmm15, zmm21, zmm17",
                    "add {b}, 512",
                    "add {i}, 16",
                    "jnz 2b",

                    p0 = in(reg) p[0].wrapping_add(span),
                    p1 = in(reg) p[1].wrapping_add(span),
                    p2 = in(reg) p[2].wrapping_add(span),
                    p3 = in(reg) p[3].wrapping_add(span),
                    p4 = in(reg) p[4].wrapping_add(span),
                    p5 = in(reg) p[5].wrapping_add(span),
                    p6 = in(reg) p[6].wrapping_add(span),
                    p7 = in(reg) p[7].wrapping_add(span),
                    i = inout(reg) (span as isize).wrapping_neg() => _,
                    b = inout(reg) b,
                    inout("zmm0") acc[0], inout("zmm1") acc[1], inout("zmm2") acc[2], inout("zmm3") acc[3],
                    inout("zmm4") acc[4], inout("zmm5") acc[5], inout("zmm6") acc[6], inout("zmm7") acc[7],
                    inout("zmm8") acc[8], inout("zmm9") acc[9], inout("zmm10") acc[10], inout("zmm11") acc[11],
                    inout("zmm12") acc[12], inout("zmm13") acc[13], inout("zmm14") acc[14], inout("zmm15") acc[15],
                    out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _, out("zmm20") _, out("zmm21") _,
                    options(nostack),
                );
            }
            for u in groups * 4..s.units {
                // SAFETY: k-unit u of every row and of the weight panel is
                // inside the checked runs (as above).
                let b0 = _mm512_loadu_si512(b as *const __m512i);
                let b1 = _mm512_loadu_si512(b.add(64) as *const __m512i);
                for (r, &pr) in p.iter().enumerate() {
                    let x = _mm512_set1_epi32((pr.add(4 * u) as *const i32).read_unaligned());
                    acc[2 * r] = _mm512_dpbusd_epi32(acc[2 * r], x, b0);
                    acc[2 * r + 1] = _mm512_dpbusd_epi32(acc[2 * r + 1], x, b1);
                }
                b = b.add(NR * 4);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            _mm512_storeu_si512(c.add(j * 16) as *mut __m512i, *a);
        }
    }
}

/// `M` rows in intrinsics (row tails; every tile under Miri).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn rows<const M: usize>(segs: &Segs<'_>, b: *const u8, c: *mut i32, init: bool) {
    let mut acc = [[_mm512_setzero_si512(); 2]; M];
    if !init {
        for (i, acc_i) in acc.iter_mut().enumerate() {
            acc_i[0] = _mm512_loadu_si512(c.add(i * NR) as *const __m512i);
            acc_i[1] = _mm512_loadu_si512(c.add(i * NR + 16) as *const __m512i);
        }
    }
    let mut b = b;
    for s in segs.segs {
        let mut p = [std::ptr::null::<u8>(); M];
        for (r, pr) in p.iter_mut().enumerate() {
            *pr = segs.ptr(s, r);
        }
        for u in 0..s.units {
            // SAFETY: k-unit u of every row run (checked by SegList::push)
            // and of the weight panel (IMicro::assert_fits).
            let b0 = _mm512_loadu_si512(b as *const __m512i);
            let b1 = _mm512_loadu_si512(b.add(64) as *const __m512i);
            for (acc_i, &pr) in acc.iter_mut().zip(&p) {
                let x = _mm512_set1_epi32((pr.add(4 * u) as *const i32).read_unaligned());
                acc_i[0] = _mm512_dpbusd_epi32(acc_i[0], x, b0);
                acc_i[1] = _mm512_dpbusd_epi32(acc_i[1], x, b1);
            }
            b = b.add(NR * 4);
        }
    }
    for (i, acc_i) in acc.iter().enumerate() {
        _mm512_storeu_si512(c.add(i * NR) as *mut __m512i, acc_i[0]);
        _mm512_storeu_si512(c.add(i * NR + 16) as *mut __m512i, acc_i[1]);
    }
}
