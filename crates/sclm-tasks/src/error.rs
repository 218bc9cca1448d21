//! Error type of the task layer.

/// Errors of a task protocol.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Bad input for the protocol (a missing key, too few classes or genes, ...).
    #[error("{0}")]
    Input(String),
    /// Failure of the model layer or of a model.
    #[error(transparent)]
    Model(#[from] sclm_model::ModelError),
    /// Failure of a metric or baseline.
    #[error(transparent)]
    Eval(#[from] sclm_eval::EvalError),
    /// Failure of preprocessing.
    #[error(transparent)]
    Preprocess(#[from] sclm_preprocess::PreprocessError),
    /// Inconsistent AnnData object.
    #[error(transparent)]
    Data(#[from] sclm_data::DataError),
}

/// Result type of this crate.
pub type Result<T, E = TaskError> = std::result::Result<T, E>;

/// An input error.
pub(crate) fn input<T>(msg: impl Into<String>) -> Result<T> {
    Err(TaskError::Input(msg.into()))
}
