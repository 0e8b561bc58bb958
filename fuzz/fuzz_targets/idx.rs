//! Any bytes as an IDX file: an error or a consistent (dims, data) pair.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((dims, body)) = rquant_nn::mnist::parse_idx(data, "fuzz.idx") {
        assert_eq!(dims.iter().product::<usize>(), body.len());
    }
});
