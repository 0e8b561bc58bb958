//! Small cases for Miri: every x86 path this (possibly emulated) CPU reports
//! and every kernel of its table, on shapes derived from the kernel's tile
//! (m and n tails, k not a multiple of the k-unit), bit for bit against the
//! reference engine, with data that selects the kernel; each kernel's call
//! counter must move. Runs natively under `cargo test`, and under Miri with
//! the target features of every kernel (`rquant_x86::table::
//! miri_target_features`) through `cargo xtask miri` — how the AVX-512
//! kernels are checked on a machine without AVX-512.

use rquant_core::gemm::with_every_split;
use rquant_core::Conv2dParams;
use rquant_core::Engine;
use rquant_testkit::{reference, Act, ConvTester, GemmTester, Wt};
use rquant_x86::{Isa, X86Engine};

#[test]
fn every_path_small_cases() {
    let r = reference();
    for isa in rquant_x86::missing_paths() {
        eprintln!("x86 path {} not available here: skipped", isa.name());
    }
    if cfg!(miri) {
        eprintln!("under Miri: fp16 linear skipped (F16C conversions are not implemented by Miri)");
    }
    let paths = rquant_x86::all_paths();
    let names: Vec<&str> = paths.iter().map(|e| e.isa()).collect();
    eprintln!("x86 paths checked: {names:?}");
    for e in paths {
        let e = &e;
        let ks = e.gemm_kernels();
        for (i, kern) in ks.iter().enumerate() {
            let s = kern.shape;
            let before = kern.calls();
            // A bounded kernel (before the last) runs on 7-bit activations;
            // a two-pass kernel on full-range ones with a sparse remainder
            // (every split accepted); the last on full-range ones with
            // weights no bounded kernel is exact for and no split pays for.
            let two_pass = kern.pair.is_some();
            let bounded = i + 1 < ks.len() && !two_pass;
            for &(m, k, n) in &[
                (1, s.kr + 1, 3),
                (s.mr - 1, 9 * s.kr + 1, s.nr + 1),
                (s.mr + 1, 17 * s.kr + 2, 2 * s.nr + 1),
            ] {
                let t = GemmTester::new()
                    .m(m)
                    .k(k)
                    .n(n)
                    .per_channel(m % 2 == 1)
                    .x_zp(131)
                    .act(if bounded { Act::Low } else { Act::Full })
                    .wt(if bounded { Wt::Full } else { Wt::OverBound });
                let run = || {
                    t.test_linear(e, &r);
                    t.test_linear_dynamic(e, &r, -3.0, 5.0, bounded);
                };
                if two_pass {
                    with_every_split(run);
                } else {
                    run();
                }
                // Miri does not implement the F16C conversions (vcvtps2ph).
                if !cfg!(miri) {
                    t.test_linear_fp16(e, &r, 4.0);
                }
            }
            assert!(
                kern.calls() > before,
                "{}: {} did not run",
                e.isa(),
                kern.name
            );
        }
        for groups in [1, 4] {
            let p = Conv2dParams {
                padding: [1, 1],
                groups,
                ..Default::default()
            };
            ConvTester::new(4, 8, [5, 6], [3, 3], p).test(e, &r);
            // Through the two-pass kernels too (every split accepted).
            let g = GemmTester::new().wt(Wt::OverBound);
            with_every_split(|| ConvTester::new(8, 8, [5, 6], [3, 3], p).gemm(g).test(e, &r));
        }
        // Channels-last: the indirect kernels (whole kernel rows, per-tap
        // segments at the borders, the zero-point row), 1×1 pixels read in
        // place, gathered rows (C not a multiple of 4), the fused residual
        // add, and the NHWC depthwise kernels (3×3 stride 1, 5×5 stride 2,
        // a channel tail) with their pair-row packing.
        let cl = rquant_core::MemoryFormat::ChannelsLast;
        let q = |s: usize, pad: usize, groups: usize| Conv2dParams {
            stride: [s, s],
            padding: [pad, pad],
            groups,
            ..Default::default()
        };
        for (c, o, hw, k, prm) in [
            (8, 9, [5, 4], 3, q(1, 1, 1)),
            (8, 33, [3, 3], 1, q(1, 0, 1)),
            (3, 5, [4, 5], 3, q(2, 1, 1)),
            (17, 17, [5, 6], 3, q(1, 1, 17)),
            (16, 16, [6, 5], 5, q(2, 2, 16)),
        ] {
            ConvTester::new(c, o, hw, [k, k], prm)
                .format(cl)
                .gemm(GemmTester::new().x_zp(7).per_channel(true))
                .test(e, &r);
        }
        ConvTester::new(8, 8, [4, 4], [3, 3], q(1, 1, 1))
            .format(cl)
            .residual(true)
            .test(e, &r);
        quantize_small(e);
    }
}

/// quantize / dequantize into buffers on lengths around the vector blocks,
/// against the scalar definitions.
fn quantize_small(e: &rquant_core::Engine) {
    use rquant_core::numerics::{dequantize_val, inv_scale, quantize_val};
    use rquant_core::{QParams, QTensor};
    let (scale, zp) = (0.05, 3);
    for len in [0, 1, 15, 17, 33, 70, 130] {
        let x: Vec<f32> = (0..len).map(|i| (i as f32 - 40.0) * 0.37 + 0.025).collect();
        let mut q = vec![0u8; len];
        e.quantize_per_tensor_into(&x, scale, zp, &mut q).unwrap();
        let want: Vec<u8> = x
            .iter()
            .map(|&v| quantize_val::<u8>(inv_scale(scale), zp, v))
            .collect();
        assert_eq!(q, want, "quantize on {}, len {len}", e.isa());
        let qt =
            QTensor::from_int_repr(vec![len], q.clone(), QParams::per_tensor(scale, zp)).unwrap();
        let mut d = vec![0f32; len];
        e.dequantize_into(&qt, &mut d).unwrap();
        for (i, (&b, &v)) in q.iter().zip(&d).enumerate() {
            let w = dequantize_val(scale as f32, zp, b as i64);
            assert_eq!(v.to_bits(), w.to_bits(), "dequantize on {}, [{i}]", e.isa());
        }
    }
}

/// The memory-bound ops' row kernels of every path (pooling NHWC and NCHW,
/// add / mul with broadcasting, clamps, tables, cat, requantize) on small
/// shapes that reach each kernel's vector body and tails, bit for bit
/// against the reference engine.
#[test]
fn every_path_memory_ops_small() {
    // One engine per distinct row-kernel table (avxvnni shares avx2's,
    // avx512vnni avx512's unless the CPU has VBMI): Miri time is scarce,
    // and the native sweeps run every path's dispatch.
    let mut seen: Vec<*const rquant_core::membound::Kernels> = Vec::new();
    for isa in Isa::ALL {
        let (Some(k), Some(x)) = (rquant_x86::membound::kernels(isa), X86Engine::new(isa)) else {
            continue;
        };
        if seen.contains(&(k as *const _)) {
            continue;
        }
        seen.push(k);
        rquant_testkit::sweep_memory_small(&Engine::new(x));
    }
}
