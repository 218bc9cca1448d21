//! Errors of the readers and writers.

use std::path::Path;

/// An error while reading or writing a file. Its `Display` is one line naming the file and,
/// where there is one, the key inside it (e.g. `data.h5ad: X: unknown encoding-type 'foo'`).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file could not be opened, read or written at the operating-system level.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not of the expected kind (not HDF5, empty, truncated, corrupt).
    #[error("{file}: {msg}")]
    NotReadable {
        /// The file.
        file: String,
        /// What is wrong.
        msg: String,
    },
    /// An element inside the file is missing, malformed or of an unsupported kind.
    #[error("{file}: {key}: {msg}")]
    Format {
        /// The file.
        file: String,
        /// The key (HDF5 path, or line for text formats) of the element.
        key: String,
        /// What is wrong.
        msg: String,
    },
    /// The data read or about to be written is inconsistent (shapes, sparse structure).
    #[error("{file}: {key}: {source}")]
    Data {
        /// The file.
        file: String,
        /// The part of the object concerned.
        key: String,
        /// The underlying error.
        #[source]
        source: sclm_data::DataError,
    },
    /// The values of a matrix are unsuitable for the task (non-finite, negative counts, empty).
    #[error("{what}: {msg}")]
    Invalid {
        /// What was checked (e.g. `X of data.h5ad`).
        what: String,
        /// What is wrong.
        msg: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = IoError> = std::result::Result<T, E>;

pub(crate) fn fname(p: &Path) -> String {
    p.display().to_string()
}

pub(crate) fn fmt_err(file: &str, key: &str, msg: impl std::fmt::Display) -> IoError {
    IoError::Format {
        file: file.to_string(),
        key: if key.is_empty() { "/".into() } else { key.to_string() },
        msg: msg.to_string(),
    }
}

pub(crate) fn data_err(file: &str, key: &str, e: sclm_data::DataError) -> IoError {
    IoError::Data { file: file.to_string(), key: key.to_string(), source: e }
}

pub(crate) fn io_err(file: &str, e: std::io::Error) -> IoError {
    IoError::Io { file: file.to_string(), source: e }
}

/// Runs `f`, turning a panic inside the HDF5 layer (possible on corrupt input) into an error.
pub(crate) fn guard<T>(file: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown failure".into());
            Err(IoError::NotReadable {
                file: file.to_string(),
                msg: format!("corrupt or unsupported HDF5 content ({why})"),
            })
        }
    }
}
