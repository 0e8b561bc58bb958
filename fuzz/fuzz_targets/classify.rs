//! Any bytes as an image for `rquant classify`: JPEG/PNG decoding and
//! torchvision's preprocessing (both presets) must return an error or a
//! finite batch of the right size, never panic, abort or allocate what a
//! forged header claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rquant_cli::imagenet;

fuzz_target!(|data: &[u8]| {
    let Ok(img) = imagenet::decode_bytes(data, "fuzz.png") else {
        return;
    };
    assert_eq!(img.data.len(), img.height * img.width * 3);
    // Decoding is bounded by the decoder's limits; keep the float
    // preprocessing (4 bytes a value, three buffers) within the fuzzer's RSS.
    if img.height * img.width > 1 << 22 {
        return;
    }
    for (resize, crop) in [(256, 224), (342, 299)] {
        let x = imagenet::preprocess(&img, resize, crop);
        assert_eq!(x.len(), 3 * crop * crop);
        assert!(x.iter().all(|v| v.is_finite()));
    }
});
