//! One error type for the models: a message naming what failed (file,
//! tensor, line), with the underlying library errors folded in.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        Error(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<rquant_core::QuantError> for Error {
    fn from(e: rquant_core::QuantError) -> Self {
        Error(e.to_string())
    }
}

impl From<rquant_nn::NnError> for Error {
    fn from(e: rquant_nn::NnError) -> Self {
        Error(e.to_string())
    }
}

/// `Err(Error(format!(...)))`.
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::Error::new(format!($($t)*))) };
}
