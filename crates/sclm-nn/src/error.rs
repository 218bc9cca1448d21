//! Error type of the crate.

/// Errors raised by the neural engine on bad input or I/O failure.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// Input tensors or sparse matrices with inconsistent shapes.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// An invalid configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// File-system failure while reading or writing a run directory or checkpoint.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// JSON (de)serialisation failure.
    #[error("json error in {path}: {message}")]
    Json {
        /// The file concerned.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Failure of burn's tensor store (safetensors / burnpack).
    #[error("tensor store error on {path}: {message}")]
    Store {
        /// The file concerned.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl NnError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        NnError::Io { path: path.as_ref().display().to_string(), source }
    }
}
