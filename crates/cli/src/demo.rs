//! The demo: engines on this CPU, then one static and one dynamic int8 Linear
//! on real-valued data, run on every engine, against the fp32 result.

use rquant_core::numerics::choose_qparams;
use rquant_core::registry;
use rquant_core::{dequantize, quantize_per_channel, quantize_per_tensor, QuantEngine, Tensor};

type Res = Result<(), Box<dyn std::error::Error>>;

/// A small deterministic generator (SplitMix64) so the demo prints the same every run.
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Approximately standard normal (sum of 4 uniforms, rescaled).
    fn normal(&mut self) -> f32 {
        let s: f64 = (0..4)
            .map(|_| (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
            .sum();
        ((s - 2.0) * 3.0f64.sqrt()) as f32
    }
}

fn sqnr_db(reference: &[f32], got: &[f32]) -> f64 {
    let sig: f64 = reference.iter().map(|&v| (v as f64).powi(2)).sum();
    let err: f64 = reference
        .iter()
        .zip(got)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    10.0 * (sig / err.max(1e-30)).log10()
}

pub fn engines() -> Res {
    rquant_nn::engines::init();
    let default = registry::engine()?;
    for name in registry::supported_engines() {
        let e = registry::engine_by_name(name)?;
        let mark = if e.name() == default.name() {
            " (default)"
        } else {
            ""
        };
        println!("{:<10} isa={}{}", e.name(), e.isa(), mark);
    }
    Ok(())
}

pub fn run(args: &[String]) -> Res {
    if let Some(a) = args.first() {
        return Err(format!("demo: unexpected argument {a:?}").into());
    }
    println!(
        "rquant {} — PyTorch-exact int8 quantization\n",
        env!("CARGO_PKG_VERSION")
    );
    println!("engines on this CPU:");
    engines()?;

    // A Linear(256 → 64) layer on a batch of 8, with weights and inputs drawn
    // like a trained layer's: weights ~ N(0, 1/sqrt(K)), activations post-ReLU.
    let (m, k, n) = (8usize, 256usize, 64usize);
    let mut rng = Rng(2026);
    let w: Vec<f32> = (0..n * k)
        .map(|_| rng.normal() / (k as f32).sqrt())
        .collect();
    let bias: Vec<f32> = (0..n).map(|_| 0.1 * rng.normal()).collect();
    let x: Vec<f32> = (0..m * k).map(|_| rng.normal().max(0.0)).collect();
    let y_fp32: Vec<f32> = (0..m * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            (0..k).map(|kk| x[i * k + kk] * w[j * k + kk]).sum::<f32>() + bias[j]
        })
        .collect();

    // Per-channel symmetric qint8 weights, as PyTorch's x86 qconfig picks them.
    let wt = Tensor::new([n, k], w)?;
    let (scales, zps): (Vec<f64>, Vec<i64>) = (0..n)
        .map(|j| {
            let amax = wt.data()[j * k..(j + 1) * k]
                .iter()
                .fold(0f32, |a, &v| a.max(v.abs()));
            (((amax / 127.5).max(f32::EPSILON)) as f64, 0)
        })
        .unzip();
    let wq = quantize_per_channel::<i8>(&wt, &scales, &zps, 0)?;
    // Activation and output qparams from the observed ranges (C++ chooser).
    let xt = Tensor::new([m, k], x)?;
    let (xlo, xhi) = rquant_core::numerics::find_min_max(xt.data());
    let xq_p = choose_qparams(xlo, xhi, 0, 255, false);
    let (ylo, yhi) = rquant_core::numerics::find_min_max(&y_fp32);
    let yq_p = choose_qparams(ylo, yhi, 0, 255, false);
    let xq = quantize_per_tensor::<u8>(&xt, xq_p.scale, xq_p.zero_point)?;

    println!(
        "\nLinear {k}→{n}, batch {m}: x scale {:.5} zp {}, y scale {:.5} zp {}",
        xq_p.scale, xq_p.zero_point, yq_p.scale, yq_p.zero_point
    );
    println!(
        "{:<12} {:>18} {:>18} {:>14}",
        "engine", "static SQNR (dB)", "dynamic SQNR (dB)", "bits"
    );
    let mut first: Option<(Vec<u8>, Vec<f32>)> = None;
    for e in rquant_nn::engines::available() {
        let e: &dyn QuantEngine = e.as_ref();
        let packed = e.pack_linear(wq.clone(), Some(bias.clone()))?;
        let yq = e.linear(&xq, &packed, yq_p.scale, yq_p.zero_point, false)?;
        let y_static = dequantize(&yq);
        let y_dyn = e.linear_dynamic(&xt, &packed, false)?;
        let same = match &first {
            None => {
                first = Some((yq.int_repr().to_vec(), y_dyn.data().to_vec()));
                "reference"
            }
            Some((s, d))
                if s == yq.int_repr()
                    && d.iter()
                        .zip(y_dyn.data())
                        .all(|(a, b)| a.to_bits() == b.to_bits()) =>
            {
                "identical"
            }
            Some(_) => "DIFFERENT",
        };
        println!(
            "{:<12} {:>18.2} {:>18.2} {:>14}",
            format!("{}/{}", e.name(), e.isa()),
            sqnr_db(&y_fp32, y_static.data()),
            sqnr_db(&y_fp32, y_dyn.data()),
            same
        );
    }
    let q = first.expect("at least the reference engine").0;
    println!(
        "\nfirst row of the static output (quint8): {:?} …",
        &q[..12]
    );
    Ok(())
}
