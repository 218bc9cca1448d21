//! The task layer of sclm: every downstream protocol the papers evaluate, written once over
//! [`sclm_model::CellModel`], so that any family (and the classical baselines, which implement
//! the same trait) runs through the same cells, genes, split and scoring. Each protocol returns
//! reports ([`sclm_eval::MetricsReport`]) and an AnnData with its outputs; the CLI only maps
//! arguments and prints.
#![warn(missing_docs)]

pub mod annotation;
pub mod baseline;
pub mod choice;
pub mod denoising;
pub mod embedding;
pub mod error;
pub mod perturbation;
pub mod spatial;

pub use annotation::{annotation, AnnotationOptions, AnnotationOutcome};
pub use baseline::{PcaFamily, PcaFit, PcaModel, PCA};
pub use choice::ModelChoice;
pub use denoising::{denoising, DenoisingOptions, DenoisingOutcome};
pub use embedding::{embedding_quality, EmbeddingOptions, EmbeddingOutcome};
pub use error::{Result, TaskError};
pub use perturbation::{perturbation, PerturbationOptions, PerturbationOutcome};
pub use spatial::{spatial_imputation, SpatialOptions, SpatialOutcome};
