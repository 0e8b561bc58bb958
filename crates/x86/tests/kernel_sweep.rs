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
    let all = paths();
    let names: Vec<&str> = all.iter().map(|e| e.isa()).collect();
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
    // Every path has a kernel table, and every kernel in it really runs
    // (its call counter moves) and gives the reference's bits.
    for e in &all {
        let ks: Vec<&str> = e.gemm_kernels().iter().map(|k| k.name).collect();
        eprintln!("  {}: {ks:?}", e.isa());
        assert!(!ks.is_empty(), "{} has no GEMM kernels", e.isa());
        tk::sweep_kernels_ran(e);
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

/// The packed weight records each kernel's pack-time verdict — the bound of
/// the bounded `vpmaddubsw` kernel, the split of the two-pass kernel (its
/// remainder, or its absence where the split does not pay) — and each call
/// runs the first kernel exact for its activations.
#[test]
fn exactness_and_split_are_decided_at_pack_time_and_recorded() {
    use rquant_core::gemm::with_every_split;
    use rquant_core::{QParams, QTensor};
    use rquant_x86::LinearPanels;
    let r = tk::reference();
    let mut checked = 0;
    for e in paths() {
        let ks = e.gemm_kernels();
        if !ks.iter().any(|k| k.pair.is_some()) {
            continue;
        }
        checked += 1;
        let names: Vec<&str> = ks.iter().map(|k| k.name).collect();
        assert_eq!(ks.len(), 3, "{names:?}");
        assert!(ks[1].pair.is_some(), "{names:?}");
        let verdicts = |pw: &rquant_core::PackedLinear| -> Vec<(&str, u8, Option<usize>)> {
            let b = pw.panels::<LinearPanels>().unwrap().gemm();
            b.layouts()
                .iter()
                .map(|l| {
                    (
                        l.kernel.name,
                        l.exact_up_to,
                        l.remainder().map(|r| r.pairs()),
                    )
                })
                .collect()
        };
        let check = |w: &QTensor<i8>, pw: &rquant_core::PackedLinear, x_top: u8, want: usize| {
            let (k, pr) = (w.shape()[1], r.pack_linear(w.clone(), None).unwrap());
            let x = QTensor::<u8>::from_int_repr(
                vec![3, k],
                (0..3 * k)
                    .map(|i| if i % 5 == 1 { x_top } else { (i % 97) as u8 })
                    .collect(),
                QParams::per_tensor(0.1, 0),
            )
            .unwrap();
            let before: Vec<usize> = ks.iter().map(|k| k.calls()).collect();
            let y = e.linear(&x, pw, 0.5, 10, false).unwrap();
            assert_eq!(y, r.linear(&x, &pr, 0.5, 10, false).unwrap());
            assert!(
                ks[want].calls() > before[want],
                "{}: x max {x_top}: {}",
                e.isa(),
                ks[want].name
            );
        };
        // Pairs (64, 65), (−64, −65): the bounded kernel is exact up to 254;
        // on a matrix this small the split does not pay (the widened kernel
        // is packed), unless every split is accepted.
        let w = QTensor::<i8>::from_int_repr(
            vec![3, 4],
            [64i8, 65, -64, -65].repeat(3),
            QParams::per_tensor(0.01, 0),
        )
        .unwrap();
        let pw = e.pack_linear(w.clone(), None).unwrap();
        assert_eq!(
            verdicts(&pw),
            [(ks[0].name, 254, None), (ks[2].name, 255, None)],
            "{}",
            e.isa()
        );
        check(&w, &pw, 254, 0);
        check(&w, &pw, 255, 2);
        let pw = with_every_split(|| e.pack_linear(w.clone(), None).unwrap());
        assert_eq!(
            verdicts(&pw),
            [(ks[0].name, 254, None), (ks[1].name, 255, Some(6))],
            "{}",
            e.isa()
        );
        check(&w, &pw, 255, 1);
        // A sparse remainder (3 pairs over the bound in a 64×256 matrix of
        // small weights): the split pays; nothing is packed after it.
        let mut v = vec![5i8; 64 * 256];
        v[7] = 100;
        v[6] = 40; // P = 140
        v[300] = -128;
        v[301] = -1; // N = 129
        v[64 * 256 - 2] = 127;
        v[64 * 256 - 1] = 127; // P = 254
        let w =
            QTensor::<i8>::from_int_repr(vec![64, 256], v, QParams::per_tensor(0.01, 0)).unwrap();
        let pw = e.pack_linear(w.clone(), None).unwrap();
        assert_eq!(
            verdicts(&pw),
            [(ks[0].name, 129, None), (ks[1].name, 255, Some(3))],
            "{}",
            e.isa()
        );
        assert_eq!(pw.weight(), w, "bounded part + remainder = the weight");
        check(&w, &pw, 129, 0);
        check(&w, &pw, 130, 1);
        check(&w, &pw, 255, 1);
        // Every pair within the bound: the bounded kernel is exact for every
        // input, and the only layout.
        let w = QTensor::<i8>::from_int_repr(
            vec![2, 4],
            vec![64, 64, -128, 0, 127, -128, -64, -64],
            QParams::per_tensor(0.01, 0),
        )
        .unwrap();
        let pw = e.pack_linear(w.clone(), None).unwrap();
        assert_eq!(verdicts(&pw), [(ks[0].name, 255, None)], "{}", e.isa());
        check(&w, &pw, 255, 0);
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        assert!(checked >= 1, "no path with a two-pass kernel");
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
            // Channels-last: one parallel region over (rows, columns) of
            // the whole batch (above the serial threshold), the fused
            // residual add, and the depthwise bands of several images.
            let cl = rquant_core::MemoryFormat::ChannelsLast;
            tk::ConvTester::new(64, 96, [20, 19], [3, 3], p(1))
                .batch(3)
                .format(cl)
                .test(&e, &r);
            tk::ConvTester::new(64, 64, [15, 15], [3, 3], p(1))
                .batch(2)
                .format(cl)
                .residual(true)
                .test(&e, &r);
            tk::ConvTester::new(48, 48, [23, 21], [3, 3], p(48))
                .batch(3)
                .format(cl)
                .test(&e, &r);
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

/// An explicit clamp must not be empty: an error naming it, on every engine.
#[test]
fn empty_clamp_is_an_error() {
    use rquant_core::output::Clamp;
    use rquant_core::{QParams, QTensor};
    let mut engines = paths();
    engines.push(tk::reference());
    let w =
        QTensor::<i8>::from_int_repr(vec![2, 3], vec![1; 6], QParams::per_tensor(0.1, 0)).unwrap();
    let x =
        QTensor::<u8>::from_int_repr(vec![1, 3], vec![7; 3], QParams::per_tensor(0.1, 0)).unwrap();
    for e in engines {
        let pw = e.pack_linear(w.clone(), None).unwrap();
        let err = e
            .linear_clamped(&x, &pw, 0.1, 0, Clamp { lo: 9, hi: 8 })
            .unwrap_err();
        assert!(err.to_string().contains("[9, 8]"), "{err}");
        let y = e
            .linear_clamped(&x, &pw, 0.1, 0, Clamp { lo: 9, hi: 9 })
            .unwrap();
        assert_eq!(y.int_repr(), &[9, 9]);
    }
}

/// Every memory-bound row kernel of every path's table runs in the sweeps
/// (its call counter moves), so the bit-equality above covers it.
#[test]
fn memory_kernels_of_every_path_ran() {
    use rquant_core::membound::Kind;
    for e in paths() {
        let isa = rquant_x86::Isa::ALL
            .into_iter()
            .find(|i| i.name() == e.isa())
            .expect("a known path");
        let k = rquant_x86::membound::kernels(isa).expect("detected");
        let before: Vec<usize> = Kind::ALL.iter().map(|&kd| k.calls(kd)).collect();
        tk::sweep_memory_small(&e);
        for (kd, b) in Kind::ALL.iter().zip(before) {
            assert!(
                k.calls(*kd) > b,
                "{}: the {kd:?} kernel of table {} did not run",
                e.isa(),
                k.path
            );
        }
        eprintln!("{}: memory-bound kernels of table {} ran", e.isa(), k.path);
    }
}

#[test]
fn memory_ops_same_bits_for_every_thread_count() {
    for e in paths() {
        for threads in [1, 2, 3, 5] {
            rquant_core::registry::set_num_threads(threads);
            tk::sweep_memory_threaded(&e);
        }
        rquant_core::registry::set_num_threads(0);
    }
}

/// Grouped convs with 4, 8 and 16 channels per group in and out (ResNeXt's
/// 3×3 convs; the AVX-512 VNNI path runs them on the grouped kernel, whose
/// packed weights are exactly O·G·taps bytes, the GEMM panels more):
/// strides, padding, dilation, batch, both formats, the fused residual,
/// x_zp at both ends (symmetric per-channel weights, as PyTorch's
/// fbgemm qconfig makes), and weights with nonzero zero points (which keep
/// the per-group GEMMs).
#[test]
fn grouped_convs_with_4_8_16_channels_per_group() {
    use rquant_core::{Conv2dParams, MemoryFormat};
    let r = tk::reference();
    let p = |g: usize, s: usize, pad: usize, d: usize| Conv2dParams {
        stride: [s, s],
        padding: [pad, pad],
        dilation: [d, d],
        groups: g,
    };
    let cases = [
        (64, 16, [9, 10], [3, 3], p(16, 1, 1, 1)),
        (64, 8, [8, 7], [3, 3], p(8, 2, 1, 1)),
        (48, 3, [7, 9], [3, 3], p(3, 1, 2, 2)),
        (32, 8, [6, 6], [1, 3], p(8, 1, 0, 1)),
        (128, 32, [5, 5], [3, 3], p(32, 1, 1, 1)),
    ];
    for e in paths() {
        for (i, &(c, groups, hw, k, params)) in cases.iter().enumerate() {
            let g = tk::GemmTester::new()
                .x_zp([0, 255, 37][i % 3])
                .per_channel(true)
                .symmetric(true)
                .seed(90 + i as u64);
            let t = tk::ConvTester::new(c, c, hw, k, params).gemm(g.clone());
            t.test(&e, &r);
            let cl = t.clone().batch(2).format(MemoryFormat::ChannelsLast);
            cl.clone().test(&e, &r);
            cl.residual(i % 2 == 0).test(&e, &r);
            // Nonzero weight zero points: the GEMM path.
            t.clone().gemm(g.clone().symmetric(false)).test(&e, &r);
            t.gemm(g.per_channel(false).w_zp(3)).test(&e, &r);
            if e.isa() == "avx512vnni" {
                let cg = c / groups;
                let w = rquant_core::QTensor::from_int_repr(
                    vec![c, cg, k[0], k[1]],
                    vec![1i8; c * cg * k[0] * k[1]],
                    rquant_core::QParams::PerChannel {
                        scales: vec![0.01; c],
                        zero_points: vec![0; c],
                        axis: 0,
                    },
                )
                .unwrap();
                let pw = e.pack_conv2d(w, None, params).unwrap();
                // (bytes() adds 20 bytes of per-channel data per channel.)
                assert_eq!(
                    pw.bytes(),
                    c * cg * k[0] * k[1] + c * 20,
                    "avx512vnni packs {c} channels in groups of {cg} for the grouped kernel"
                );
            }
        }
    }
}
