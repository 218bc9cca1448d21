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
pub mod family;
pub mod inference;
pub mod model;
pub mod perturb;
pub mod pretrain;
pub mod pretrain_run;
pub mod weights;

pub use bench::{bench_embed, BenchResult};
pub use config::{CellPlmConfig, DecoderKind, LatentKind, NormChoice};
pub use embed::{embed_chunk, embed_streaming, EmbedOptions, GeneMapping, PieceOptions};
pub use error::{CellPlmError, Result};
pub use family::{CellPlmFamily, CellPlmModel, FAMILY};
pub use inference::CellPlmInference;
pub use model::{nb_loss, CellPlm, Covariates, DecoderOutput, GroupInput, GroupOutput};
pub use pretrain::{pretrain, union_vocabulary, Corpus, CorpusOptions, MaskConfig, PretrainConfig, TrainGroup};
pub use pretrain_run::{
    default_run_dir, prepare_pretraining, pretrain_datasets, ConfigChoice, PreparedPretraining, PretrainOutcome,
    PretrainRun,
};
pub use sclm_weights::LoadReport;
pub use weights::Preprocessing;

/// Helpers shared by the unit tests of several modules.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::{CellPlm, CellPlmConfig};

    /// A tiny random model (12 genes `g0..g11`, hidden 16, 4 heads, latent 8) with `layers`
    /// encoder layers, on the CPU.
    pub(crate) fn tiny_model(layers: usize) -> CellPlm {
        let genes: Vec<String> = (0..12).map(|i| format!("g{i}")).collect();
        let mut c = CellPlmConfig::small(genes);
        c.enc_hid = 16;
        c.enc_head = 4;
        c.enc_layers = layers;
        c.post_latent_dim = 8;
        c.qzyx_hidden = 16;
        c.num_clusters = 3;
        c.dec_hid = 16;
        CellPlm::new(&c, &sclm_nn::cpu_device()).unwrap()
    }
}
