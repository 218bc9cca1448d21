//! CellPLM (Wen et al. 2023) in burn: the model, import of the published checkpoints with full
//! accounting of every tensor, our self-describing model directory, and cell embedding of
//! AnnData objects.
//!
//! ```no_run
//! use sclm_cellplm::{CellPlm, CellPlmConfig};
//! let config = CellPlmConfig::from_json_file("20230926_85M.config.json")?;
//! let (model, report) = CellPlm::load_torch("20230926_85M.best.ckpt", &config, &sclm_nn::cpu_device())?;
//! println!("{}", report.summary());
//! # Ok::<(), sclm_cellplm::CellPlmError>(())
//! ```
#![warn(missing_docs)]

pub mod annotate;
pub mod attention;
pub mod bench;
pub mod config;
pub mod embed;
pub mod error;
pub mod inference;
pub mod model;
pub mod perturb;
pub mod pretrain;
pub mod weights;

pub use config::{CellPlmConfig, DecoderKind, LatentKind, NormChoice};
pub use bench::{bench_embed, BenchResult};
pub use embed::{embed, embed_chunk, EmbedOptions, GeneMapping};
pub use error::{CellPlmError, Result};
pub use inference::CellPlmInference;
pub use pretrain::{pretrain, union_vocabulary, Corpus, CorpusOptions, MaskConfig, PretrainConfig, TrainGroup};
pub use model::{nb_loss, CellPlm, Covariates, DecoderOutput, GroupInput, GroupOutput};
pub use sclm_weights::LoadReport;
pub use weights::Preprocessing;
