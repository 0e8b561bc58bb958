//! Proves which ISA path ran: with `RQUANT_EXPECT_ISA=<path>` (set by
//! ci/arm.sh per QEMU_CPU) the engine must resolve exactly that path and
//! every microkernel of its kernel table must actually execute (its call
//! counter moves), so a silently skipped path fails CI.

use rquant_arm::{ArmEngine, Isa};
use rquant_core::{QParams, QTensor};

#[test]
fn resolved_path_is_the_expected_one_and_runs() {
    let Some(expect) = std::env::var("RQUANT_EXPECT_ISA")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        eprintln!("RQUANT_EXPECT_ISA not set: nothing to assert");
        return;
    };
    let want = Isa::from_name(&expect).unwrap_or_else(|| panic!("unknown ISA {expect:?}"));
    let e = rquant_arm::engine().expect("the ARM engine must exist on this target");
    assert_eq!(e.name(), "qnnpack");
    assert_eq!(e.isa(), want.name(), "resolved path");
    let paths: Vec<&str> = rquant_arm::all_paths().iter().map(|e| e.isa()).collect();
    assert!(paths.contains(&want.name()), "all_paths {paths:?}");
    assert_eq!(ArmEngine::new().map(|e| e.path()), Some(want));

    let kernels = e.gemm_kernels();
    assert!(!kernels.is_empty(), "no GEMM kernels on {want:?}");
    let before: Vec<usize> = kernels.iter().map(|k| k.calls()).collect();
    let w =
        QTensor::from_int_repr(vec![9, 20], vec![3i8; 180], QParams::per_tensor(0.1, 1)).unwrap();
    let x =
        QTensor::from_int_repr(vec![3, 20], vec![200u8; 60], QParams::per_tensor(0.1, 5)).unwrap();
    let pw = e.pack_linear(w, None).unwrap();
    let y = e.linear(&x, &pw, 1.0, 0, false).unwrap();
    // acc = 20 · 195 · 2 = 7800; · 0.01 = 78.
    assert!(y.int_repr().iter().all(|&v| v == 78), "{:?}", y.int_repr());
    for (k, b) in kernels.iter().zip(before) {
        eprintln!("{want:?}: {} ran {} times", k.name, k.calls() - b);
        assert!(
            k.calls() > b,
            "the {want:?} microkernel {} did not run",
            k.name
        );
    }
    // And every kernel of the table on the shared tester's data.
    rquant_testkit::sweep_kernels_ran(&e);
}
