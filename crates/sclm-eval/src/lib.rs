//! Evaluation toolkit of sclm.
//!
//! Works on plain matrices ([`sclm_data::Dense`], [`sclm_data::Matrix`]) and label vectors,
//! never on tensors:
//! - [`metrics`]: classification (accuracy, F1, AUROC/AUPRC, recall@k), regression
//!   (RMSE, MAE, Pearson, Spearman, cosine, R²), clustering (ARI, NMI) and scIB integration
//!   metrics (ASW, batch ASW, graph connectivity, LISI, Avg_bio, S_final);
//! - [`neighbors`] and [`nndescent`]: exact and approximate kNN graphs, UMAP fuzzy
//!   connectivities;
//! - [`cluster`]: Leiden (with CellPLM's resolution sweep) and k-means;
//! - [`umap`] and [`plot`]: 2-D layouts and PNG scatter plots;
//! - [`protocols`]: seeded task protocols (simulated dropout, gene hold-out, splits,
//!   perturbation splits);
//! - [`baselines`]: PCA, logistic regression, diffusion denoising, kNN imputation;
//! - [`report`]: the [`MetricsReport`] printed by the command line and [`evaluate_embedding`].
#![warn(missing_docs)]
// Index loops read more clearly than iterator chains in the numerical kernels.
#![allow(clippy::needless_range_loop)]

pub mod baselines;
pub mod cluster;
pub mod error;
pub mod labels;
pub mod metrics;
pub mod neighbors;
pub mod nndescent;
pub mod plot;
pub mod protocols;
pub mod report;
pub mod umap;

pub use error::{EvalError, Result};
pub use plot::{scatter_png, ColorBy};
pub use report::{evaluate_embedding, EvaluateOptions, Metric, MetricsReport};
