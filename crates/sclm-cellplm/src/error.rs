//! Error type of the crate.

/// Errors raised when building, loading, saving or running a CellPLM model.
#[derive(Debug, thiserror::Error)]
pub enum CellPlmError {
    /// An invalid or unsupported configuration value.
    #[error("invalid CellPLM configuration: {0}")]
    Config(String),
    /// Bad input data (shapes, negative counts, unknown covariate ids, no shared genes, ...).
    #[error("invalid input: {0}")]
    Input(String),
    /// Failure inside the neural engine.
    #[error(transparent)]
    Nn(#[from] sclm_nn::NnError),
    /// Failure while reading or writing weights (including incomplete loads).
    #[error(transparent)]
    Weights(#[from] sclm_weights::WeightsError),
    /// Failure in the family-neutral model layer (gene matching, pieces, model directory).
    #[error(transparent)]
    Model(#[from] sclm_model::ModelError),
    /// Inconsistent AnnData object.
    #[error(transparent)]
    Data(#[from] sclm_data::DataError),
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

impl CellPlmError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        CellPlmError::Io { path: path.as_ref().display().to_string(), source }
    }
}

impl From<CellPlmError> for sclm_model::ModelError {
    fn from(e: CellPlmError) -> Self {
        match e {
            CellPlmError::Model(m) => m,
            CellPlmError::Input(m) => sclm_model::ModelError::Input(m),
            other => sclm_model::ModelError::family(other),
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = CellPlmError> = std::result::Result<T, E>;
