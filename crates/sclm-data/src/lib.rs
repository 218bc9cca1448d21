//! In-memory AnnData for sclm.
//!
//! This crate defines the data model every other sclm crate speaks: a cells × genes
//! matrix ([`Matrix`], dense or CSR), annotation tables ([`DataFrame`]), multi-dimensional
//! annotations (`obsm`, `varm`, [`Array2`]) and unstructured metadata ([`Value`]).
//! It knows nothing of file formats (see `sclm-io`) nor of tensors (see `sclm-nn`).
//!
//! Conventions follow the AnnData specification: rows are observations (cells), columns
//! are variables (genes). `X` is stored as `f32`: every model and preprocessing step in
//! sclm works in single precision.
#![warn(missing_docs)]

mod anndata;
mod frame;
mod matrix;
mod rows;
mod value;

pub use anndata::{AnnData, Raw};
pub use frame::{make_unique, Column, DataFrame};
pub use matrix::{Array2, CsrMatrix, Dense, Matrix};
pub use rows::{CscView, CsrView, DenseView, Index, RowSource, Scalar};
pub use value::Value;

/// Errors raised when an in-memory object is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Two parts of an object disagree in size.
    #[error("shape mismatch in {what}: expected {expected}, found {found}")]
    Shape {
        /// Which part was checked (e.g. `obs`, `obsm['spatial']`).
        what: String,
        /// The expected size.
        expected: String,
        /// The size found.
        found: String,
    },
    /// A compressed sparse structure is malformed.
    #[error("invalid sparse matrix: {0}")]
    Sparse(String),
    /// A key that was asked for does not exist.
    #[error("no {kind} named '{key}'{hint}")]
    MissingKey {
        /// Where it was looked for (e.g. `obs column`).
        kind: &'static str,
        /// The key asked for.
        key: String,
        /// Extra help, such as the keys that do exist (starts with a separator or is empty).
        hint: String,
    },
    /// A value is invalid (non-finite, negative where counts are expected, ...).
    #[error("{0}")]
    Invalid(String),
}

/// Result type of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Lists keys for a "did you mean" style hint: `; available: a, b, c`.
pub fn available_hint<'a>(keys: impl IntoIterator<Item = &'a str>) -> String {
    let keys: Vec<&str> = keys.into_iter().collect();
    if keys.is_empty() {
        "; none available".to_string()
    } else {
        format!("; available: {}", keys.join(", "))
    }
}
