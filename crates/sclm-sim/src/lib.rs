//! Splatter-style simulation of single-cell RNA-seq counts, with ground truth.
//!
//! This is sclm's embedded default dataset and the source of ground truth for its model
//! tasks (cell-type annotation, batch integration, spatial niches, perturbation response).
//! The model follows Splatter (Zappia, Phipson & Oshlack, *Genome Biology* 2017):
//!
//! 1. **Gene means**: gamma(`mean_shape`, `mean_rate`); a fraction `outlier_prob` of genes
//!    become high-expression outliers at `median × LogNormal(outlier_loc, outlier_scale)`.
//!    The last `n_mito` genes are mitochondrial (`MT-ND1`, ...), rescaled so they take
//!    `mito_fraction` of the counts. Other genes are named `Gene0001`, `Gene0002`, ...
//!    (synthetic names: no real gene symbol is implied, so nothing looks like real biology
//!    where there is none; the `MT-` prefix is kept so QC has something to find).
//! 2. **Cell types** in **lineages**: each lineage has DE factors (`lineage_de_*`) shared by
//!    its types, and each type adds its own (`de_*`); a DE factor is `LogNormal(loc, scale)`,
//!    inverted with probability `de_down_prob`. Types of one lineage therefore resemble each
//!    other (like T-cell subtypes) and differ strongly from other lineages. Types are named
//!    by lineage letter and rank (`A1`, `A2`, `B1`, ...).
//! 3. **Batches**: every gene gets a `LogNormal(batch_loc, batch_scale)` factor per batch
//!    (inverted with probability `batch_down_prob`); cells are ordered by batch.
//! 4. **Library sizes**: log-normal (`lib_loc`, `lib_scale`), plus a per-type shift.
//!    A cell's expected counts are its library size times the normalised product of the
//!    gene's base mean and its type and batch factors.
//! 5. **BCV**: counts are gamma–Poisson (negative binomial) with biological coefficient of
//!    variation `(bcv_common + 1/sqrt(mu)) * sqrt(bcv_df / chi²(bcv_df))`.
//!    A small fraction of cells are damaged (smaller library, high mitochondrial share).
//! 6. **Dropout** (optional): logistic in the log expected count.
//! 7. **Spatial** (optional): 2-D coordinates around per-type niche centres, with mixing.
//! 8. **Perturbations** (optional): knock-down of chosen genes in a fraction of cells, each
//!    with a sparse set of downstream targets; the exact expected log-fold changes are part
//!    of the ground truth.
//!
//! Two entry points: [`simulate`] builds an in-memory [`sclm_data::AnnData`]; [`SimStream`]
//! draws labels and metadata up front and counts chunk by chunk, for datasets too large for
//! memory (feed [`SimStream::obs`], [`SimStream::var`], [`SimStream::uns`] and the chunks'
//! CSR rows to a streaming h5ad writer). Both give identical data for the same config.
//!
//! ```
//! use sclm_sim::{SimConfig, SimStream};
//! let cfg = SimConfig { n_cells: 500, n_genes: 300, ..SimConfig::default() };
//! let stream = SimStream::new(&cfg)?;
//! let template = stream.template(); // obs, var, obsm, uns; X all zero, right shape
//! let mut rows = 0;
//! for chunk in stream.chunks(128) {
//!     let chunk = chunk?; // chunk.counts: CSR rows, chunk.obs / chunk.spatial: their labels
//!     rows += chunk.counts.nrows; // e.g. writer.append(&chunk.counts)?
//! }
//! assert_eq!(rows, template.n_obs());
//! # Ok::<(), sclm_sim::SimError>(())
//! ```
//!
//! **Determinism**: the data depend only on the config (seed included), not on the chunk
//! size or the number of threads: each cell's labels and counts come from random streams
//! seeded by `(seed, cell index)`. Random streams come from this crate's own generator;
//! the distributions' algorithms come from `rand_distr` (pinned by `Cargo.lock`).
#![warn(missing_docs)]

mod config;
mod model;
mod rng;
mod stream;

pub use config::{DropoutConfig, PerturbConfig, SimConfig, SpatialConfig};
pub use model::{gene_names, GroundTruth, PerturbTruth, SpatialTruth};
pub use stream::{SimChunk, SimStream, CONTROL};

use sclm_data::{AnnData, CsrMatrix, Matrix};

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A config parameter is invalid (the message names it).
    #[error("invalid simulation config: {0}")]
    Config(String),
    /// Assembling the AnnData failed.
    #[error(transparent)]
    Data(#[from] sclm_data::DataError),
}

/// Result type of this crate.
pub type Result<T, E = SimError> = std::result::Result<T, E>;

/// A finished in-memory simulation.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The data: raw integer counts in `X` (CSR, `f32`), `obs` (`cell_type`, `lineage`,
    /// `batch`, `sim_library_size`, `sim_damaged`, optional `perturbation`), `var` (`base_mean`,
    /// `is_outlier`, `is_de`, `mt`, optional perturbation flags), `obsm['spatial']` when
    /// spatial, and `uns['simulation']` with the config and ground truth.
    pub adata: AnnData,
    /// The typed ground truth (the same values as `uns['simulation']`).
    pub truth: GroundTruth,
}

/// Simulates a dataset in memory. Uses all rayon threads; the result depends only on `cfg`.
pub fn simulate(cfg: &SimConfig) -> Result<Simulation> {
    let stream = SimStream::new(cfg)?;
    let counts: CsrMatrix = stream.counts_range(0, stream.n_cells())?;
    let mut adata = stream.template();
    adata.x = Matrix::Csr(counts);
    adata.validate()?;
    let truth = stream.truth().clone();
    Ok(Simulation { adata, truth })
}
