//! rquant-nn: modules and quantization workflows (eager mode). For now it
//! holds the engine set-up that every binary uses.

pub mod engines;
