//! Error type of the model layer.

/// Errors of the family-neutral model layer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Bad input data (no shared genes, bad counts, label lengths, ...).
    #[error("invalid input: {0}")]
    Input(String),
    /// An invalid or unsupported model directory, manifest or configuration.
    #[error("invalid model: {0}")]
    Config(String),
    /// A capability the model's family does not offer (e.g. classification).
    #[error("{family} models cannot {what}")]
    Unsupported {
        /// The family.
        family: String,
        /// What was asked.
        what: String,
    },
    /// Inconsistent AnnData object.
    #[error(transparent)]
    Data(#[from] sclm_data::DataError),
    /// Failure of gene matching or preprocessing.
    #[error(transparent)]
    Preprocess(#[from] sclm_preprocess::PreprocessError),
    /// Failure inside the neural engine.
    #[error(transparent)]
    Nn(#[from] sclm_nn::NnError),
    /// Failure inside a model family (its own error type).
    #[error(transparent)]
    Family(Box<dyn std::error::Error + Send + Sync>),
    /// The caller asked to stop (Ctrl-C in the Python package, through a progress callback).
    #[error("interrupted")]
    Interrupted,
    /// File-system failure.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Malformed JSON file.
    #[error("json error in {path}: {message}")]
    Json {
        /// The file concerned.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl ModelError {
    /// An i/o error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.as_ref().display().to_string(), source }
    }

    /// A family's own error.
    pub fn family(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ModelError::Family(Box::new(e))
    }
}

/// Result type of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
