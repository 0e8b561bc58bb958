//! The `observer` op: feed batches x0, x1, … to an observer, then calculate_qparams.

use super::case::{Case, CaseError};
use super::ops::Outputs;

pub fn run(c: &Case) -> Result<Outputs, CaseError> {
    Err(c.err("observer: not supported by this runner yet"))
}
