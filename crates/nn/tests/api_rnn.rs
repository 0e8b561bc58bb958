//! Recurrent cells against torch 2.15 (cases from tools/api/gen_api_cases.py):
//! float `LSTMCell` / `GRUCell` / `RNNCell` steps, and the dynamic int8 and
//! fp16 cells `quantize_dynamic` makes of them, on every engine path.

mod common;

use common::{case, engines, max_rel};
use rquant_core::qconfig::{default_dynamic_qconfig, float16_dynamic_qconfig};
use rquant_core::Tensor;
use rquant_nn::rnn::{QDynCell, RnnCell, RnnKind};
use rquant_nn::workflow::{quantize_dynamic_spec, DynamicSpec};
use rquant_nn::Sequential;
use rquant_nn::{Mappings, Module};

fn cell(c: &common::Case, name: &str, kind: RnnKind) -> RnnCell {
    let w = c.f32(&format!("{name}.weight_ih"));
    let (gates_h, input) = (w.shape()[0], w.shape()[1]);
    let hidden = gates_h / kind.gates();
    let mut rng = rquant_nn::Rng(1);
    let mut cell = RnnCell::new(kind, input, hidden, true, &mut rng);
    for (k, p) in cell.params_mut() {
        p.value = c.f32(&format!("{name}.{k}"));
    }
    cell
}

#[test]
fn cells_float_int8_and_fp16_match_pytorch() {
    let c = case("rnn_cells");
    let x = c.f32("x");
    for (name, kind, cls) in [
        ("lstm", RnnKind::Lstm, "LSTMCell"),
        ("gru", RnnKind::Gru, "GRUCell"),
        ("rnn_tanh", RnnKind::RnnTanh, "RNNCell"),
    ] {
        let h = c.f32(&format!("{name}.h"));
        let cc = c.f32(&format!("{name}.c"));
        let lstm = kind == RnnKind::Lstm;
        // Float: f32 gate sums in another order than torch's BLAS.
        let mut f = cell(&c, name, kind);
        let (fh, fc) = f.step(&x, Some((&h, &cc))).unwrap();
        let err = max_rel(fh.data(), c.f32(&format!("{name}.fhy")).data());
        assert!(err < 1e-6, "{name}: float h' {err}");
        if lstm {
            let err = max_rel(fc.data(), c.f32(&format!("{name}.fcy")).data());
            assert!(err < 1e-6, "{name}: float c' {err}");
        }
        for e in engines() {
            for (q, key) in [
                (default_dynamic_qconfig(), "hy"),
                (float16_dynamic_qconfig(), "hy16"),
            ] {
                let mut m: Module = Sequential::new().push("cell", cell(&c, name, kind)).into();
                quantize_dynamic_spec(
                    &mut m,
                    &DynamicSpec::types(&[cls], q),
                    &e,
                    &Mappings::default(),
                )
                .unwrap();
                let qc = m
                    .get("cell")
                    .unwrap()
                    .downcast_ref::<QDynCell>()
                    .unwrap_or_else(|| panic!("{name}: not converted"));
                let (qh, qcy) = qc.step(&x, Some((&h, &cc))).unwrap();
                // The int8 products are exact; the gates' f32 sums and
                // sigmoid/tanh are torch's to the last place or so.
                let err = max_rel(qh.data(), c.f32(&format!("{name}.{key}")).data());
                assert!(err < 1e-5, "{name} {key} on {e:?}: {err}");
                if lstm && key == "hy" {
                    let err = max_rel(qcy.data(), c.f32(&format!("{name}.cy")).data());
                    assert!(err < 1e-5, "{name} c' on {e:?}: {err}");
                }
            }
        }
    }
    // Bad state shapes are errors naming the cell.
    let mut f = cell(&c, "gru", RnnKind::Gru);
    let bad = Tensor::zeros(vec![2, 12]);
    let err = f.step(&x, Some((&bad, &bad))).unwrap_err().to_string();
    assert!(err.contains("GRUCell"), "{err}");
}
