//! Microkernel throughput with L1-resident panels (no packing, no epilogue).

#[cfg(not(target_arch = "x86_64"))]
fn main() {}

#[cfg(target_arch = "x86_64")]
fn main() {
    let ku = 192;
    let a = vec![1u8; ku * 8 * 4];
    let b = vec![1u8; ku * 32 * 4];
    let mut c = vec![0i32; 8 * 32];
    if !rquant_x86::Isa::Avx512Vnni.detected() {
        return;
    }
    let reps = 200_000;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        for _ in 0..reps {
            // SAFETY: VNNI detected above; 8 rows of ku units, a panel of ku units × 32 columns.
            unsafe {
                rquant_x86::kernels::gemm_u8i8_8x32c4_avx512vnni::dispatch(
                    8,
                    ku,
                    std::hint::black_box(a.as_ptr()),
                    ku * 4,
                    b.as_ptr(),
                    c.as_mut_ptr(),
                    true,
                )
            };
        }
        let dt = t.elapsed().as_secs_f64();
        println!(
            "vnni 8x32: {:.1} GOP/s",
            (reps * ku * 4 * 8 * 32 * 2) as f64 / dt / 1e9
        );
    }
}
