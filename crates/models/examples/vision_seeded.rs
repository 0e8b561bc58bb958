//! Write a zoo model's seeded fp32 weights (tools/vision/README.md) as a
//! safetensors state_dict in torchvision's names; `tools/vision/seeded.py
//! --check FILE --model NAME` compares it with the Python formula bit for bit.
//!
//! `cargo run --release -p rquant-models --example vision_seeded -- resnet18 out.safetensors [SEED]`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, out, rest @ ..] = args.as_slice() else {
        return Err("usage: vision_seeded MODEL OUT.safetensors [SEED]".into());
    };
    let seed = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(0);
    let mut m = rquant_models::vision::build(name, 1000)?;
    let bytes = m.seeded_safetensors(seed)?;
    std::fs::write(out, bytes)?;
    eprintln!("{name}: seed {seed}, {} tensors -> {out}", m.specs().len());
    Ok(())
}
