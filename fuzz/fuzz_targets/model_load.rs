//! Any bytes as a model file: the float state_dict reader and the quantized
//! model loader (metadata included) must return an error or a model, never
//! panic, abort or allocate what a forged header claims.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rquant_nn::io::state_dict_from_bytes(data, "fuzz.safetensors");
    let engine = rquant_nn::engines::available()
        .pop()
        .expect("reference engine");
    let _ = rquant_nn::io::quantized_from_bytes(data, "fuzz.safetensors", Some(engine));
});
