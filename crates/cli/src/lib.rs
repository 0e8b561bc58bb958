//! The parts of the `rquant` command line that are worth driving without
//! it: ImageNet image decoding and preprocessing (`rquant classify`), for
//! the `classify` fuzz target.

pub mod imagenet;
