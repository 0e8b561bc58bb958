//! Errors of the module layer: every error names the module (dotted path, as
//! in a PyTorch state_dict) or the file and field it comes from.

use rquant_core::QuantError;

pub type Result<T, E = NnError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// An error raised inside the module at `module` (a dotted path).
    #[error("{module}: {source}")]
    In {
        module: String,
        #[source]
        source: Box<NnError>,
    },
    #[error("{module}: {detail}")]
    Module { module: String, detail: String },
    #[error("{file}: {field}: {detail}")]
    File {
        file: String,
        field: String,
        detail: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl NnError {
    pub fn module(module: impl Into<String>, detail: impl Into<String>) -> Self {
        NnError::Module {
            module: module.into(),
            detail: detail.into(),
        }
    }
    pub fn file(
        file: impl Into<String>,
        field: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        NnError::File {
            file: file.into(),
            field: field.into(),
            detail: detail.into(),
        }
    }
    /// Prefix the module path with `name` (paths join with dots).
    pub fn within(self, name: &str) -> Self {
        match self {
            NnError::In { module, source } => NnError::In {
                module: format!("{name}.{module}"),
                source,
            },
            NnError::Module { module, detail } => NnError::Module {
                module: if module.is_empty() {
                    name.to_string()
                } else {
                    format!("{name}.{module}")
                },
                detail,
            },
            e => NnError::In {
                module: name.to_string(),
                source: Box::new(e),
            },
        }
    }
}

/// Shorthand for an invalid-argument error from the module layer.
pub(crate) fn bad(op: &'static str, detail: impl Into<String>) -> NnError {
    NnError::Quant(QuantError::invalid(op, detail))
}
