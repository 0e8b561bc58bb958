//! Register-only throughput loops: one per int8 GEMM kernel (its instruction
//! sequence, in the kernel's shape; `Kernel::peak` of the tables in
//! `crate::table`) and the fp32 FMA peak, the denominators of "% of peak" in
//! `cargo xtask bench`. No memory traffic: independent accumulator chains,
//! long enough to hide latency. The int8 loops are reached only through a
//! detected path's kernel table.

use std::hint::black_box;
use std::time::Instant;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Independent accumulators per loop (more than latency × throughput).
const CHAINS: usize = 12;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn vnni_loop(iters: usize) -> i32 {
    let a = _mm512_set1_epi8(std::hint::black_box(3));
    let b = _mm512_set1_epi8(std::hint::black_box(-2));
    let mut acc = [_mm512_setzero_si512(); CHAINS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbusd_epi32(*v, a, b);
        }
    }
    let mut s = _mm512_setzero_si512();
    for v in acc {
        s = _mm512_add_epi32(s, v);
    }
    _mm512_reduce_add_epi32(s)
}

/// The exact AVX2 sequence with operands already widened to int16:
/// `vpmaddwd` + `vpaddd`, 16 multiply-accumulates per pair, in the kernel's
/// shape (6 broadcast rows × 2 weight vectors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_loop(iters: usize) -> i32 {
    let x: [__m256i; 6] = std::array::from_fn(|i| _mm256_set1_epi16(black_box(i as i16 + 3)));
    let mut b = [
        _mm256_set1_epi16(black_box(-2)),
        _mm256_set1_epi16(black_box(5)),
    ];
    let mut acc = [_mm256_setzero_si256(); 12];
    for _ in 0..iters {
        // SAFETY: an empty asm statement; it only makes the compiler treat b
        // as changed, so the products are not hoisted out of the loop.
        std::arch::asm!("/* {0} {1} */", inout(ymm_reg) b[0], inout(ymm_reg) b[1],
            options(nomem, nostack, preserves_flags));
        for (i, v) in acc.iter_mut().enumerate() {
            *v = _mm256_add_epi32(*v, _mm256_madd_epi16(x[i / 2], b[i % 2]));
        }
    }
    let mut s = _mm256_setzero_si256();
    for v in acc {
        s = _mm256_add_epi32(s, v);
    }
    _mm256_extract_epi32::<0>(s)
}

/// The `vpmaddubsw` kernel's sequence: `vpmaddubsw` + `vpmaddwd(1)` +
/// `vpaddd`, 32 multiply-accumulates per triple, in the kernel's shape
/// (6 broadcast rows × 2 weight vectors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_maddubs_loop(iters: usize) -> i32 {
    let x: [__m256i; 6] = std::array::from_fn(|i| _mm256_set1_epi8(black_box(i as i8 + 3)));
    let mut b = [
        _mm256_set1_epi8(black_box(-2)),
        _mm256_set1_epi8(black_box(5)),
    ];
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_si256(); 12];
    for _ in 0..iters {
        // SAFETY: an empty asm statement (see avx2_loop).
        std::arch::asm!("/* {0} {1} */", inout(ymm_reg) b[0], inout(ymm_reg) b[1],
            options(nomem, nostack, preserves_flags));
        for (i, v) in acc.iter_mut().enumerate() {
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(x[i / 2], b[i % 2]), ones);
            *v = _mm256_add_epi32(*v, p);
        }
    }
    let mut s = _mm256_setzero_si256();
    for v in acc {
        s = _mm256_add_epi32(s, v);
    }
    _mm256_extract_epi32::<0>(s)
}

/// The AVX-512BW path's sequence, `vpmaddwd` + `vpaddd` on zmm: 32
/// multiply-accumulates per pair, in the kernel's shape (8 rows × 2 vectors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn avx512_loop(iters: usize) -> i32 {
    let x: [__m512i; 8] = std::array::from_fn(|i| _mm512_set1_epi16(black_box(i as i16 + 3)));
    let mut b = [
        _mm512_set1_epi16(black_box(-2)),
        _mm512_set1_epi16(black_box(5)),
    ];
    let mut acc = [_mm512_setzero_si512(); 16];
    for _ in 0..iters {
        // SAFETY: an empty asm statement (see avx2_loop).
        std::arch::asm!("/* {0} {1} */", inout(zmm_reg) b[0], inout(zmm_reg) b[1],
            options(nomem, nostack, preserves_flags));
        for (i, v) in acc.iter_mut().enumerate() {
            *v = _mm512_add_epi32(*v, _mm512_madd_epi16(x[i / 2], b[i % 2]));
        }
    }
    let mut s = _mm512_setzero_si512();
    for v in acc {
        s = _mm512_add_epi32(s, v);
    }
    _mm512_reduce_add_epi32(s)
}

/// The AVX-512BW `vpmaddubsw` kernel's sequence on zmm: `vpmaddubsw` +
/// `vpmaddwd(1)` + `vpaddd`, 64 multiply-accumulates per triple, in the
/// kernel's shape (8 broadcast rows × 2 weight vectors).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn avx512_maddubs_loop(iters: usize) -> i32 {
    let x: [__m512i; 8] = std::array::from_fn(|i| _mm512_set1_epi8(black_box(i as i8 + 3)));
    let mut b = [
        _mm512_set1_epi8(black_box(-2)),
        _mm512_set1_epi8(black_box(5)),
    ];
    let ones = _mm512_set1_epi16(1);
    let mut acc = [_mm512_setzero_si512(); 16];
    for _ in 0..iters {
        // SAFETY: an empty asm statement (see avx2_loop).
        std::arch::asm!("/* {0} {1} */", inout(zmm_reg) b[0], inout(zmm_reg) b[1],
            options(nomem, nostack, preserves_flags));
        for (i, v) in acc.iter_mut().enumerate() {
            let p = _mm512_madd_epi16(_mm512_maddubs_epi16(x[i / 2], b[i % 2]), ones);
            *v = _mm512_add_epi32(*v, p);
        }
    }
    let mut s = _mm512_setzero_si512();
    for v in acc {
        s = _mm512_add_epi32(s, v);
    }
    _mm512_reduce_add_epi32(s)
}

/// 256-bit `vpdpbusd` (32 multiply-accumulates), in whichever encoding the
/// AvxVnni path runs: VEX with AVX-VNNI, else EVEX (AVX512-VNNI + VL).
#[cfg(target_arch = "x86_64")]
macro_rules! vnni256_loop {
    ($name:ident, $features:literal, $dp:path) => {
        #[target_feature(enable = $features)]
        unsafe fn $name(iters: usize) -> i32 {
            let a = _mm256_set1_epi8(std::hint::black_box(3));
            let b = _mm256_set1_epi8(std::hint::black_box(-2));
            let mut acc = [_mm256_setzero_si256(); CHAINS];
            for _ in 0..iters {
                for v in acc.iter_mut() {
                    *v = $dp(*v, a, b);
                }
            }
            let mut s = _mm256_setzero_si256();
            for v in acc {
                s = _mm256_add_epi32(s, v);
            }
            _mm256_extract_epi32::<0>(s)
        }
    };
}
#[cfg(target_arch = "x86_64")]
vnni256_loop!(avxvnni_loop, "avx2,avxvnni", _mm256_dpbusd_avx_epi32);
#[cfg(target_arch = "x86_64")]
vnni256_loop!(
    avxvnni_evex_loop,
    "avx2,avx512f,avx512vl,avx512vnni",
    _mm256_dpbusd_epi32
);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma512_loop(iters: usize) -> f32 {
    let a = _mm512_set1_ps(std::hint::black_box(1.0));
    let b = _mm512_set1_ps(std::hint::black_box(1e-9));
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(a, b, *v);
        }
    }
    let mut s = _mm512_setzero_ps();
    for v in acc {
        s = _mm512_add_ps(s, v);
    }
    _mm512_reduce_add_ps(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma256_loop(iters: usize) -> f32 {
    let a = _mm256_set1_ps(std::hint::black_box(1.0));
    let b = _mm256_set1_ps(std::hint::black_box(1e-9));
    let mut acc = [_mm256_setzero_ps(); CHAINS];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(a, b, *v);
        }
    }
    let mut s = _mm256_setzero_ps();
    for v in acc {
        s = _mm256_add_ps(s, v);
    }
    let mut out = [0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out[0]
}

/// Best of three timings of `f(iters)`, as operations per second.
fn rate(ops_per_iter: f64, mut f: impl FnMut(usize)) -> f64 {
    let iters = 2_000_000;
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f(iters);
            ops_per_iter * iters as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

// The int8 peaks, GOP/s on one core (2 ops per multiply-accumulate): the
// `peak` of the kernel-table entries. Each is reached only through the table
// of a path whose detection proved the loop's features (and checks them).

#[cfg(target_arch = "x86_64")]
pub(crate) fn vnni512() -> f64 {
    assert!(crate::isa::Isa::Avx512Vnni.detected());
    // SAFETY: asserted on the line above; in the table of the avx512vnni path only (AVX-512F/BW/VNNI).
    rate((CHAINS * 64 * 2) as f64, |n| {
        black_box(unsafe { vnni_loop(n) });
    }) / 1e9
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn madd512() -> f64 {
    assert!(crate::isa::Isa::Avx512.detected());
    // SAFETY: asserted on the line above; in the table of the avx512 path only (AVX-512F/BW).
    rate((16 * 32 * 2) as f64, |n| {
        black_box(unsafe { avx512_loop(n) });
    }) / 1e9
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn maddubs512() -> f64 {
    assert!(crate::isa::Isa::Avx512.detected());
    // SAFETY: asserted on the line above; in the table of the avx512 path only (AVX-512F/BW).
    rate((16 * 64 * 2) as f64, |n| {
        black_box(unsafe { avx512_maddubs_loop(n) });
    }) / 1e9
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn vnni256() -> f64 {
    assert!(crate::isa::Isa::Avx2.detected() && is_x86_feature_detected!("avxvnni"));
    // SAFETY: asserted on the line above; in the AVX-VNNI table only (AVX2 + AVX-VNNI).
    rate((CHAINS * 32 * 2) as f64, |n| {
        black_box(unsafe { avxvnni_loop(n) });
    }) / 1e9
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn vnni256_evex() -> f64 {
    assert!(crate::isa::Isa::Avx2.detected() && crate::isa::avx512_vnni_vl());
    // SAFETY: asserted on the line above; in the EVEX AVX-VNNI table only (AVX2 + AVX512-VNNI + VL).
    rate((CHAINS * 32 * 2) as f64, |n| {
        black_box(unsafe { avxvnni_evex_loop(n) });
    }) / 1e9
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn madd256() -> f64 {
    assert!(crate::isa::Isa::Avx2.detected());
    // SAFETY: asserted on the line above; in the avx2 table only (AVX2).
    rate((12 * 16 * 2) as f64, |n| {
        black_box(unsafe { avx2_loop(n) });
    }) / 1e9
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn maddubs256() -> f64 {
    assert!(crate::isa::Isa::Avx2.detected());
    // SAFETY: asserted on the line above; in the avx2 table only (AVX2).
    rate((12 * 32 * 2) as f64, |n| {
        black_box(unsafe { avx2_maddubs_loop(n) });
    }) / 1e9
}

/// The fp32 FMA peak (GFLOP/s) on one core with the widest FMA the CPU has.
pub fn fp32_peak_gflops() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F detected on the line above.
            return Some(
                rate((CHAINS * 16 * 2) as f64, |n| {
                    std::hint::black_box(unsafe { fma512_loop(n) });
                }) / 1e9,
            );
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA detected on the line above.
            return Some(
                rate((CHAINS * 8 * 2) as f64, |n| {
                    std::hint::black_box(unsafe { fma256_loop(n) });
                }) / 1e9,
            );
        }
    }
    None
}
