//! The family-neutral model layer of sclm: what every model family needs, written once.
//!
//! - [`genes`]: the one gene-matching path (symbols ↔ Ensembl ids offline, with a report of
//!   what was dropped) and the [`GeneMapping`] of dataset columns onto a vocabulary;
//! - [`cells`]: counts, groups and coordinates as plain data, and the pieces planner (forward
//!   calls over cells in memory or streamed in row chunks);
//! - [`dir`]: the self-describing model directory (`model.json` manifest with the family, a
//!   format version and the typed [`Registry`]; atomic saves);
//! - [`api`]: the [`CellModel`] trait every family implements, [`load_any`], and [`embed`] /
//!   [`predict`] over AnnData for any model;
//! - [`finetune`]: the generic classification head and fine-tuning recipe.
//!
//! It sits between `sclm-nn` (neural blocks) and the family crates; families never import one
//! another, and the tasks layer and the CLI reach every family through this crate.
#![warn(missing_docs)]

pub mod api;
pub mod cells;
pub mod dir;
pub mod error;
pub mod finetune;
pub mod genes;

pub use api::{
    argmax, embed, embed_prepared, embed_rows, embed_streaming, load_any, predict, predict_rows, prepare, CellModel,
    EmbedOptions, Family, PerturbationCells, PerturbationPredictor, PieceClassifier, PieceEmbedder, PreparedCells,
    ReconstructOptions, ReconstructionFit,
};
pub use cells::{CellLabels, PieceOptions, StreamOptions};
pub use dir::{read_manifest, save_atomic, Manifest, ModelKind, Registry};
pub use error::{ModelError, Result};
pub use finetune::{ClassifierHead, ClassifierHeadConfig, FinetuneRecipe, LabeledCells, RunOptions};
pub use genes::GeneMapping;
