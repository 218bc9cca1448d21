//! Evaluation toolkit of sclm.
//!
//! Works on plain matrices ([`sclm_data::Dense`]) and label vectors, never on tensors:
//! - [`metrics`]: classification (accuracy, F1, AUROC/AUPRC, recall@k), regression
//!   (RMSE, MAE, Pearson, Spearman, cosine, R²), clustering (ARI, NMI) and scIB integration
//!   metrics (ASW, batch ASW, graph connectivity, LISI, Avg_bio, S_final);
//! - [`neighbors`]: exact kNN graphs and UMAP fuzzy connectivities;
//! - [`cluster`]: Leiden (with CellPLM's resolution sweep) and k-means;
//! - [`umap`] and [`plot`]: 2-D layouts and PNG scatter plots;
//! - [`protocols`]: seeded task protocols (simulated dropout, gene hold-out, splits);
//! - [`report`]: the [`MetricsReport`] printed by the command line and [`evaluate_embedding`].
#![warn(missing_docs)]
// Index loops read more clearly than iterator chains in the numerical kernels.
#![allow(clippy::needless_range_loop)]

pub mod error;
pub mod labels;
pub mod metrics;
pub mod neighbors;
pub mod nndescent;

pub use error::{EvalError, Result};
pub mod cluster;
pub mod report;

pub use report::{evaluate_embedding, EvaluateOptions, Metric, MetricsReport};
pub mod umap;
pub mod plot;

pub use plot::{scatter_png, ColorBy};
pub mod protocols;
pub mod baselines;
