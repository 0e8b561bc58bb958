//! The shared GEMM tester on every ISA path this CPU has: bit equality with
//! the reference engine. Paths the CPU lacks are reported, never skipped silently.

use rquant_core::Engine;
use rquant_testkit as tk;

fn paths() -> Vec<Engine> {
    for isa in rquant_x86::missing_paths() {
        eprintln!("x86 path {} not available on this CPU: skipped", isa.name());
    }
    let v = rquant_x86::all_paths();
    if v.is_empty() {
        eprintln!("x86 engine unavailable on this CPU (no AVX2): every path skipped");
    }
    v
}

rquant_testkit::sweep_tests!(paths);

#[test]
fn intended_paths_ran() {
    let names: Vec<&str> = paths().iter().map(|e| e.isa()).collect();
    eprintln!("x86 paths tested here: {names:?}");
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            assert!(
                names.contains(&"avx2"),
                "AVX2 detected but the avx2 path is missing: {names:?}"
            );
            assert!(names.contains(&"scalar"), "{names:?}");
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            assert!(
                names.contains(&"avx512"),
                "AVX-512BW detected but its path is missing: {names:?}"
            );
            if is_x86_feature_detected!("avx512vnni") {
                assert!(
                    names.contains(&"avx512vnni"),
                    "VNNI detected but its path is missing: {names:?}"
                );
            }
        }
        if is_x86_feature_detected!("avxvnni")
            || (is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl"))
        {
            assert!(
                names.contains(&"avxvnni"),
                "256-bit VNNI detected but the avxvnni path is missing: {names:?}"
            );
        }
    }
    // With no RQUANT_ISA ceiling, the default engine is the best path.
    if rquant_core::registry::requested_isa().is_none() {
        if let Some(e) = rquant_x86::engine() {
            assert_eq!(e.isa(), rquant_x86::Isa::best().name());
            assert_eq!(e.name(), "x86");
            assert_eq!(e.aliases(), &["fbgemm"]);
            assert_eq!(e.priority(), 100);
        }
    }
}

#[test]
fn same_bits_for_every_thread_count() {
    let r = tk::reference();
    for e in paths() {
        for threads in [1, 2, 3, 5] {
            rquant_core::registry::set_num_threads(threads);
            // Above the GEMM's serial threshold (8M multiply-accumulates),
            // so the work really is split over the threads.
            tk::GemmTester::new()
                .m(100)
                .n(300)
                .k(301)
                .per_channel(true)
                .test_linear(&e, &r);
            tk::GemmTester::new()
                .m(67)
                .n(400)
                .k(330)
                .test_linear_dynamic(&e, &r, -1.0, 2.0, false);
            tk::GemmTester::new()
                .m(20)
                .n(70)
                .k(50)
                .test_linear_fp16(&e, &r, 1.0);
            let p = |g: usize| rquant_core::Conv2dParams {
                stride: [1, 1],
                padding: [1, 1],
                dilation: [1, 1],
                groups: g,
            };
            tk::ConvTester::new(16, 40, [13, 11], [3, 3], p(1))
                .batch(2)
                .test(&e, &r);
            tk::ConvTester::new(24, 24, [17, 19], [3, 3], p(24)).test(&e, &r);
        }
        rquant_core::registry::set_num_threads(0);
    }
}

#[test]
fn weights_packed_on_one_path_run_on_another() {
    let r = tk::reference();
    let all = paths();
    if let (Some(a), Some(b)) = (all.first(), all.last()) {
        let w = rquant_core::QTensor::<i8>::from_int_repr(
            vec![5, 9],
            (0..45).map(|i| (i * 37 % 256 - 128) as i8).collect(),
            rquant_core::QParams::per_tensor(0.02, 0),
        )
        .unwrap();
        let x = rquant_core::QTensor::<u8>::from_int_repr(
            vec![3, 9],
            (0..27).map(|i| (i * 91 % 256) as u8).collect(),
            rquant_core::QParams::per_tensor(0.1, 100),
        )
        .unwrap();
        let pa = a.pack_linear(w.clone(), None).unwrap();
        let pr = r.pack_linear(w, None).unwrap();
        let yr = r.linear(&x, &pr, 0.5, 10, false).unwrap();
        if a != b {
            // Another path's panels are refused, naming both paths, never
            // silently repacked ...
            let err = b.linear(&x, &pa, 0.5, 10, false).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, rquant_core::QuantError::WrongEngine { .. }),
                "{msg}"
            );
            assert!(
                msg.contains(&a.path().to_string()) && msg.contains(&b.path().to_string()),
                "{msg}"
            );
        }
        // ... and moved visibly, with the same bits.
        let pb = b.repack_linear(&pa).unwrap();
        assert_eq!(pb.packed_for(), b.path());
        let yb = b.linear(&x, &pb, 0.5, 10, false).unwrap();
        assert_eq!(yb.int_repr(), yr.int_repr());
    }
}

/// Every path gives back the exact int8 weight from its own panels (no
/// second copy is kept): linear, grouped and depthwise conv, K and N tails.
#[test]
fn weights_unpack_from_every_paths_panels() {
    use rquant_core::{Conv2dParams, QParams, QTensor};
    let mut engines = paths();
    engines.push(tk::reference());
    for e in engines {
        for (n, k) in [(1, 1), (5, 9), (33, 70), (40, 3)] {
            let w = QTensor::<i8>::from_int_repr(
                vec![n, k],
                (0..n * k).map(|i| (i * 37 % 256) as u8 as i8).collect(),
                QParams::PerChannel {
                    scales: vec![0.1; n],
                    zero_points: (0..n as i64).map(|c| c % 5 - 2).collect(),
                    axis: 0,
                },
            )
            .unwrap();
            let p = e.pack_linear(w.clone(), None).unwrap();
            assert_eq!(p.weight(), w, "{e:?} linear {n}x{k}");
        }
        for (o, cg, groups, ks) in [(8, 3, 1, 3), (6, 2, 3, 3), (12, 1, 12, 5), (4, 5, 1, 1)] {
            let len = o * cg * ks * ks;
            let w = QTensor::<i8>::from_int_repr(
                vec![o, cg, ks, ks],
                (0..len).map(|i| (i * 53 % 256) as u8 as i8).collect(),
                QParams::PerChannel {
                    scales: vec![0.05; o],
                    zero_points: (0..o as i64).map(|c| c % 3 - 1).collect(),
                    axis: 0,
                },
            )
            .unwrap();
            let params = Conv2dParams {
                groups,
                ..Conv2dParams::default()
            };
            let p = e.pack_conv2d(w.clone(), None, params).unwrap();
            assert_eq!(p.weight(), w, "{e:?} conv {o}x{cg}x{ks}x{ks} g{groups}");
        }
    }
}

#[test]
fn cached_requant_constants_follow_the_scales() {
    use rquant_core::{QParams, QTensor};
    let r = tk::reference();
    for e in paths() {
        let w = QTensor::<i8>::from_int_repr(
            vec![40, 33],
            (0..40 * 33).map(|i| (i * 37 % 256) as u8 as i8).collect(),
            QParams::PerChannel {
                scales: (0..40).map(|c| 0.01 + c as f64 * 1e-3).collect(),
                zero_points: vec![0; 40],
                axis: 0,
            },
        )
        .unwrap();
        let bias: Vec<f32> = (0..40).map(|c| c as f32 * 0.1 - 2.0).collect();
        let pe = e.pack_linear(w.clone(), Some(bias.clone())).unwrap();
        let pr = r.pack_linear(w, Some(bias)).unwrap();
        for (xs, xz, os, oz) in [
            (0.1, 3, 0.5, 7),
            (0.2, 3, 0.5, 7),
            (0.2, 9, 0.25, 7),
            (0.1, 3, 0.5, 200),
        ] {
            let x = QTensor::<u8>::from_int_repr(
                vec![5, 33],
                (0..5 * 33).map(|i| (i * 91 % 256) as u8).collect(),
                QParams::per_tensor(xs, xz),
            )
            .unwrap();
            for relu in [false, true] {
                let ye = e.linear(&x, &pe, os, oz, relu).unwrap();
                let yr = r.linear(&x, &pr, os, oz, relu).unwrap();
                assert_eq!(
                    ye.int_repr(),
                    yr.int_repr(),
                    "{}: {xs} {xz} {os} {oz}",
                    e.isa()
                );
            }
        }
    }
}
