//! Error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading or writing weights. Each variant names the file and, where
/// there is one, the tensor key.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// The file is not in a supported checkpoint format, or its container (zip, safetensors header) is damaged.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The pickled object inside a PyTorch checkpoint could not be interpreted.
    #[error("{}: pickle data (byte {offset}): {reason}", path.display())]
    Pickle {
        /// The file.
        path: PathBuf,
        /// Byte offset in the pickle stream where the problem was found.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// One tensor could not be materialised (bad storage, out-of-range view, unsupported dtype).
    #[error("{}: tensor '{key}': {reason}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor's key in the state dict.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The requested key path does not lead to a dictionary in the checkpoint.
    #[error("{}: key path '{key_path}': {reason}", path.display())]
    KeyPath {
        /// The file.
        path: PathBuf,
        /// The key path that was asked for (segments separated by `/`).
        key_path: String,
        /// What is wrong, including the keys that do exist.
        reason: String,
    },
    /// In-memory tensor data is inconsistent (for example, shape and value count differ).
    #[error("tensor '{key}': {reason}")]
    Data {
        /// The tensor's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A model importer did not find every tensor it needs with the right shape.
    #[error("{}: {summary}", path.display())]
    Incomplete {
        /// The checkpoint file.
        path: PathBuf,
        /// Missing keys and shape mismatches, summarised.
        summary: String,
    },
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, WeightsError>;
