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
    /// A model's own failure inside a loss or a training step (a family's input or state
    /// error), carrying the family's error: its message is shown as is and it can be recovered
    /// with `downcast_ref`. Build it with [`NnError::model`].
    #[error(transparent)]
    Model(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Training stopped because [`Progress::should_stop`](crate::train::Progress::should_stop)
    /// asked for it (e.g. Ctrl-C in a Python session), after a completed optimiser step.
    #[error("training interrupted")]
    Interrupted,
}

impl NnError {
    /// A [`NnError::Model`] from a family's error or a message, e.g.
    /// `.map_err(NnError::model)` on a family `Result`.
    pub fn model(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        NnError::Model(error.into())
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        NnError::Io { path: path.as_ref().display().to_string(), source }
    }
}
