//! scanpy-equivalent preprocessing for sclm, on in-memory [`sclm_data::AnnData`].
//!
//! Every function here reproduces the corresponding `scanpy.pp` function (scanpy 1.11) to
//! float tolerance on the same input, and works on sparse (CSR, `f32`) matrices without
//! densifying them, in parallel with rayon where it pays:
//!
//! * [`qc`]: `calculate_qc_metrics`, `filter_cells`, `filter_genes`;
//! * [`normalize`]: `normalize_total`, `log1p`, `scale`;
//! * [`hvg`]: `highly_variable_genes` with flavors `seurat` and `seurat_v3` (the latter
//!   with a faithful port of the LOESS fit that scanpy takes from `skmisc`, see [`loess`]);
//! * [`mod@pca`]: PCA (exact covariance eigendecomposition or randomized SVD) with implicit
//!   centring of sparse matrices;
//! * [`genes`]: unique gene names and matching of a dataset's genes to a model vocabulary
//!   (symbols or Ensembl ids, through the embedded GENCODE v44 table);
//! * [`pipeline`]: a serialisable list of [`pipeline::Step`]s, parsed from a compact string
//!   such as `filter_cells:min_genes=200,normalize_total:target_sum=1e4,log1p`.
//!
//! The crate knows nothing of files or tensors.
#![warn(missing_docs)]

pub mod genes;
pub mod hvg;
pub mod loess;
pub mod normalize;
pub mod pca;
pub mod pipeline;
pub mod qc;
mod stats;

pub use genes::{make_var_names_unique, match_genes, GeneMatch, GeneMatchOptions, GeneMatchReport, GeneVocab};
pub use hvg::{highly_variable_genes, HvgFlavor, HvgOptions, HvgResult};
pub use normalize::{log1p, normalize_total, normalize_total_adata, scale, NormalizeOptions};
pub use pca::{pca, pca_adata, Pca, PcaOptions};

pub use pipeline::{parse_steps, run, steps_to_string, Step, StepReport};
pub use qc::{calculate_qc_metrics, filter_cells, filter_genes, CellFilter, GeneFilter, QcMetrics, QcOptions};

use sclm_data::DataError;

/// Errors raised by preprocessing.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The in-memory AnnData is inconsistent (or a key is missing).
    #[error(transparent)]
    Data(#[from] DataError),
    /// An argument or the data does not suit the step (the message names the step).
    #[error("{step}: {message}")]
    Invalid {
        /// The step or function that refused (e.g. `highly_variable_genes(seurat_v3)`).
        step: String,
        /// What is wrong and, where possible, what to do.
        message: String,
    },
    /// A step string could not be parsed.
    #[error("invalid preprocessing steps '{input}': {message}")]
    Parse {
        /// The offending part of the input.
        input: String,
        /// What is wrong.
        message: String,
    },
    /// No gene of the dataset matched the vocabulary.
    #[error("no gene of the dataset matches the vocabulary ({n_dataset} dataset genes, e.g. {dataset_examples}; {n_vocab} vocabulary genes, e.g. {vocab_examples}){hint}")]
    NoGeneOverlap {
        /// Number of dataset genes.
        n_dataset: usize,
        /// Number of vocabulary entries.
        n_vocab: usize,
        /// A few dataset genes, comma separated.
        dataset_examples: String,
        /// A few vocabulary entries, comma separated.
        vocab_examples: String,
        /// Extra help (starts with a separator or is empty).
        hint: String,
    },
    /// A linear-algebra routine failed (e.g. an SVD did not converge).
    #[error("{0}")]
    Numeric(String),
}

/// Result type of this crate.
pub type Result<T, E = PreprocessError> = std::result::Result<T, E>;

pub(crate) fn invalid(step: &str, message: impl Into<String>) -> PreprocessError {
    PreprocessError::Invalid { step: step.to_string(), message: message.into() }
}
