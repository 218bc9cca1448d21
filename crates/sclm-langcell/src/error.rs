//! Error type of the crate.

/// Errors raised when building, loading, saving or running a LangCell model.
#[derive(Debug, thiserror::Error)]
pub enum LangCellError {
    /// An invalid or unsupported configuration value.
    #[error("invalid LangCell configuration: {0}")]
    Config(String),
    /// Bad input data (an empty cell, a text too long, unknown genes, ...).
    #[error("invalid input: {0}")]
    Input(String),
    /// Failure inside the neural engine.
    #[error(transparent)]
    Nn(#[from] sclm_nn::NnError),
    /// Failure while reading or writing weights (including incomplete loads).
    #[error(transparent)]
    Weights(#[from] sclm_weights::WeightsError),
    /// Failure in the family-neutral model layer.
    #[error(transparent)]
    Model(#[from] sclm_model::ModelError),
    /// Failure of the text tokenizer.
    #[error("text tokenizer ({path}): {message}")]
    Tokenizer {
        /// The tokenizer file or vocabulary.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// File-system failure.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Malformed JSON or TSV file.
    #[error("{path}: {message}")]
    Parse {
        /// The file concerned.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl LangCellError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        LangCellError::Io { path: path.as_ref().display().to_string(), source }
    }

    pub(crate) fn parse(path: impl AsRef<std::path::Path>, message: impl Into<String>) -> Self {
        LangCellError::Parse { path: path.as_ref().display().to_string(), message: message.into() }
    }
}

impl From<LangCellError> for sclm_model::ModelError {
    fn from(e: LangCellError) -> Self {
        match e {
            LangCellError::Model(m) => m,
            LangCellError::Input(m) => sclm_model::ModelError::Input(m),
            other => sclm_model::ModelError::family(other),
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = LangCellError> = std::result::Result<T, E>;
