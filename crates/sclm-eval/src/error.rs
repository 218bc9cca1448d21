//! Error type of the evaluation toolkit.

/// Errors raised by evaluation routines (bad shapes, unusable labels, I/O of plots).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Two inputs disagree in size.
    #[error("shape mismatch in {what}: expected {expected}, found {found}")]
    Shape {
        /// What was checked.
        what: String,
        /// Expected size.
        expected: usize,
        /// Size found.
        found: usize,
    },
    /// An input is unusable for the requested computation (e.g. a single class for AUROC).
    #[error("{0}")]
    Invalid(String),
    /// Writing an output file failed.
    #[error("cannot write '{path}': {msg}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        msg: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

pub(crate) fn check_len(what: &str, expected: usize, found: usize) -> Result<()> {
    if expected != found {
        return Err(EvalError::Shape { what: what.to_string(), expected, found });
    }
    Ok(())
}

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(EvalError::Invalid(msg.into()))
}
