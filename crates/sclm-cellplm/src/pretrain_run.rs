//! A whole pretraining run from data to a saveable model, the one path every edge (the CLI's
//! `sclm pretrain cellplm`, the Python binding) calls: the configuration preset over the union
//! vocabulary, the training groups, covariate tables sized to the data, seeding, the NB head
//! started from the data's statistics, [`crate::pretrain()`] with its run directory, and the
//! registry the model directory records.
//!
//! ```no_run
//! use sclm_cellplm::pretrain_run::{pretrain_datasets, PretrainRun};
//! use sclm_model::CellModel;
//! # fn demo(a: &sclm_data::AnnData) -> sclm_cellplm::Result<()> {
//! let run = PretrainRun { epochs: 2, run_dir: Some("model.run".into()), ..Default::default() };
//! let device = sclm_nn::train_device();
//! let out = pretrain_datasets(&[("pbmc".to_string(), a)], &run, &device, &mut sclm_nn::train::NoProgress)?;
//! out.model.save(std::path::Path::new("model"))?;
//! # Ok(()) }
//! ```
use std::path::{Path, PathBuf};
use std::time::Instant;

use sclm_data::AnnData;
use sclm_nn::burn::tensor::Device;
use sclm_nn::train::{EpochReport, FitSummary, Progress, StepReport};

use crate::error::{CellPlmError, Result};
use crate::family::CellPlmModel;
use crate::pretrain::{corpus_gene_stats, union_vocabulary, Corpus, CorpusOptions, MaskConfig, PretrainConfig};
use crate::weights::Preprocessing;
use crate::{CellPlm, CellPlmConfig};

/// Which configuration a pretraining run starts from. The vocabulary of the presets is the
/// union of the datasets' genes ([`union_vocabulary`]); the batch and dataset tables of every
/// choice are sized to the data (see [`PretrainRun`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ConfigChoice {
    /// [`CellPlmConfig::small`] (hidden 256, 2 layers; trains on a CPU). The default.
    #[default]
    Small,
    /// [`CellPlmConfig::published_85m`] (the published 85M architecture).
    Published85m,
    /// A given configuration; an empty `gene_list` is replaced by the union vocabulary (and
    /// `out_dim` set to its length).
    Config(CellPlmConfig),
    /// A JSON configuration file (fields of [`CellPlmConfig`]); an empty `gene_list` is
    /// replaced by the union vocabulary as for [`ConfigChoice::Config`].
    File(PathBuf),
}

impl ConfigChoice {
    /// The choice an edge's `config` argument names: `small`, `85m`, or else the path of a JSON
    /// configuration file.
    pub fn from_name_or_file(s: &str) -> ConfigChoice {
        match s {
            "small" => ConfigChoice::Small,
            "85m" => ConfigChoice::Published85m,
            file => ConfigChoice::File(file.into()),
        }
    }

    /// The configuration over `datasets`' union vocabulary (its covariate tables not yet sized).
    fn resolve(&self, datasets: &[(String, &AnnData)]) -> Result<CellPlmConfig> {
        let with_vocabulary = |mut c: CellPlmConfig| {
            if c.gene_list.is_empty() {
                c.gene_list = union_vocabulary(datasets);
                c.out_dim = c.gene_list.len();
            }
            c
        };
        Ok(match self {
            ConfigChoice::Small => CellPlmConfig::small(union_vocabulary(datasets)),
            ConfigChoice::Published85m => CellPlmConfig::published_85m(union_vocabulary(datasets)),
            ConfigChoice::Config(c) => with_vocabulary(c.clone()),
            ConfigChoice::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| CellPlmError::io(path, e))?;
                let c: CellPlmConfig = serde_json::from_str(&text)
                    .map_err(|e| CellPlmError::Json { path: path.display().to_string(), message: e.to_string() })?;
                let c = with_vocabulary(c);
                c.validate().map_err(|e| match e {
                    CellPlmError::Config(m) => CellPlmError::Config(format!("{}: {m}", path.display())),
                    other => other,
                })?;
                c
            }
        })
    }
}

/// The settings of a pretraining run. [`Default`] equals the defaults of `sclm pretrain cellplm`.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainRun {
    /// Architecture (default [`ConfigChoice::Small`]).
    pub config: ConfigChoice,
    /// Fraction of the kept cells of a group whose genes are masked (default 0.75).
    pub mask_node_rate: f64,
    /// Mean fraction of the measured genes hidden in a masked cell, Beta-distributed per cell
    /// (default 0.25).
    pub mask_feature_rate: f64,
    /// Fraction of the cells of a group dropped each step (default 0.3).
    pub drop_node_rate: f64,
    /// obs column whose values form the groups of cells that attend to each other (samples,
    /// FOVs; default `batch`). A dataset without the column forms one group.
    pub group_key: String,
    /// obsm key of 2-D spatial coordinates, used when a dataset has it (default `spatial`).
    pub spatial_key: String,
    /// Layer holding the raw counts (default: X).
    pub layer: Option<String>,
    /// Groups larger than this are split at random into pieces; also the most cells of a group
    /// kept in one step (default 128; 0 is read as 1).
    pub max_cells_per_group: usize,
    /// Passes over the data (default 20; at least 1).
    pub epochs: usize,
    /// Peak learning rate: warm-up, then cosine decay to 10 % (default 3e-4).
    pub lr: f64,
    /// AdamW weight decay (default 1e-8, published).
    pub weight_decay: f64,
    /// Seed of everything: the split of large groups, the initial weights, the masks (default 0).
    pub seed: u64,
    /// Directory for `log.jsonl` and the per-epoch checkpoint (default none: neither is written;
    /// `sclm pretrain` uses [`default_run_dir`] of its output).
    pub run_dir: Option<PathBuf>,
    /// Continue from the checkpoint in `run_dir` (default false).
    pub resume: bool,
}

impl Default for PretrainRun {
    fn default() -> Self {
        let mask = MaskConfig::default();
        let train = PretrainConfig::default();
        let corpus = CorpusOptions::default();
        PretrainRun {
            config: ConfigChoice::Small,
            mask_node_rate: mask.mask_node_rate,
            mask_feature_rate: mask.mask_feature_rate,
            drop_node_rate: mask.drop_node_rate,
            group_key: "batch".into(),
            spatial_key: "spatial".into(),
            layer: None,
            max_cells_per_group: corpus.max_cells_per_group,
            epochs: train.epochs,
            lr: train.lr,
            weight_decay: train.weight_decay,
            seed: 0,
            run_dir: None,
            resume: false,
        }
    }
}

impl PretrainRun {
    /// Checks the settings that no later stage checks: at least one epoch, a positive finite
    /// learning rate, a non-negative finite weight decay, and a run directory to resume from.
    /// (The masking rates are checked by [`MaskConfig::validate`].)
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(CellPlmError::Config("epochs must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(CellPlmError::Config(format!("lr = {} must be positive", self.lr)));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(CellPlmError::Config(format!("weight_decay = {} must be non-negative", self.weight_decay)));
        }
        if self.resume && self.run_dir.is_none() {
            return Err(CellPlmError::Config("resuming needs a run directory".into()));
        }
        self.masking().validate()
    }

    /// The masking of a training step.
    pub fn masking(&self) -> MaskConfig {
        MaskConfig {
            mask_node_rate: self.mask_node_rate,
            mask_feature_rate: self.mask_feature_rate,
            drop_node_rate: self.drop_node_rate,
            max_cells: self.max_cells_per_group.max(1),
            mask_beta: true,
        }
    }
}

/// The run directory `sclm pretrain` uses for the model directory `output`: `<output>.run`.
pub fn default_run_dir(output: &Path) -> PathBuf {
    let mut s = output.to_path_buf().into_os_string();
    s.push(".run");
    PathBuf::from(s)
}

/// A pretraining run ready to train ([`prepare_pretraining`]): the data and the initial model,
/// with notes on both to show before the (possibly long) training.
pub struct PreparedPretraining {
    model: CellPlm,
    corpus: Corpus,
    cfg: PretrainConfig,
    registry: Preprocessing,
    run_dir: Option<PathBuf>,
    resume: bool,
    notes: Vec<String>,
}

impl PreparedPretraining {
    /// One gene-matching report per dataset, then the model line (`CellPLM <name>: <n>
    /// parameters, vocabulary <g>, <c> cells in <k> groups (<b> batches)`).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Optimiser steps of the whole run (epochs × groups; a resumed run starts past zero).
    pub fn total_steps(&self) -> usize {
        self.cfg.epochs * self.corpus.groups.len()
    }

    /// The initial model (on the autodiff device).
    pub fn model(&self) -> &CellPlm {
        &self.model
    }

    /// The training data.
    pub fn corpus(&self) -> &Corpus {
        &self.corpus
    }

    /// The registry the trained model's directory records.
    pub fn registry(&self) -> &Preprocessing {
        &self.registry
    }

    /// Trains (see [`crate::pretrain()`]), reporting to `progress`.
    pub fn train(self, progress: &mut dyn Progress) -> Result<PretrainOutcome> {
        let mut gather = Gather { inner: progress, epochs: Vec::new() };
        let t0 = Instant::now();
        let (trained, summary) =
            crate::pretrain(self.model, &self.corpus, &self.cfg, self.run_dir.as_deref(), self.resume, &mut gather)?;
        let seconds = t0.elapsed().as_secs_f64();
        Ok(PretrainOutcome {
            model: CellPlmModel::new(trained, self.registry),
            summary,
            epochs: gather.epochs,
            notes: self.notes,
            seconds,
        })
    }
}

/// What a pretraining run produced.
pub struct PretrainOutcome {
    /// The trained model (on the inference device) with its registry, ready for
    /// [`sclm_model::CellModel::save`].
    pub model: CellPlmModel,
    /// Epochs and steps in total (a resumed run counts those before it).
    pub summary: FitSummary,
    /// The epochs this call trained (none when a finished run was resumed).
    pub epochs: Vec<EpochReport>,
    /// The notes of [`PreparedPretraining::notes`].
    pub notes: Vec<String>,
    /// Wall-clock seconds of the training.
    pub seconds: f64,
}

impl PretrainOutcome {
    /// `trained <e> epochs (<s> steps) in <t> s: loss <first> (epoch <i>) -> <last> (epoch <j>)`,
    /// when this call trained an epoch.
    pub fn loss_line(&self) -> Option<String> {
        let (first, last) = (self.epochs.first()?, self.epochs.last()?);
        Some(format!(
            "trained {} epochs ({} steps) in {:.0} s: loss {:.2} (epoch {}) -> {:.2} (epoch {})",
            self.summary.epochs,
            self.summary.steps,
            self.seconds,
            first.train_loss,
            first.epoch + 1,
            last.train_loss,
            last.epoch + 1
        ))
    }
}

/// Forwards to the caller's progress and keeps the epoch reports.
struct Gather<'a> {
    inner: &'a mut dyn Progress,
    epochs: Vec<EpochReport>,
}

impl Progress for Gather<'_> {
    fn on_step(&mut self, batch: usize, n_batches: usize, report: &StepReport) {
        self.inner.on_step(batch, n_batches, report);
    }
    fn on_epoch(&mut self, report: &EpochReport) {
        self.epochs.push(report.clone());
        self.inner.on_epoch(report);
    }
    fn should_stop(&mut self) -> bool {
        self.inner.should_stop()
    }
}

/// Prepares masked-cell pretraining on `datasets` (name, data with raw counts; names must
/// differ): checks `run`, resolves the configuration over the datasets' union vocabulary,
/// builds the training groups (a batch covariate per `dataset/group`, a dataset covariate when
/// there is more than one dataset) and sizes the model's tables to them, seeds `device` (an
/// autodiff device, e.g. [`sclm_nn::train_device`]) with `run.seed`, and builds the model with
/// its NB head started from the data's gene statistics.
pub fn prepare_pretraining(
    datasets: &[(String, &AnnData)],
    run: &PretrainRun,
    device: &Device,
) -> Result<PreparedPretraining> {
    run.validate()?;
    if datasets.is_empty() {
        return Err(CellPlmError::Input("no training data given".into()));
    }
    for (i, (name, _)) in datasets.iter().enumerate() {
        if datasets[..i].iter().any(|(n, _)| n == name) {
            return Err(CellPlmError::Input(format!("two datasets are named '{name}'")));
        }
    }
    let multi = datasets.len() > 1;
    let mut config = run.config.resolve(datasets)?;
    let masking = run.masking();
    let opts = CorpusOptions {
        group_key: Some(run.group_key.clone()),
        spatial_key: Some(run.spatial_key.clone()),
        layer: run.layer.clone(),
        max_cells_per_group: run.max_cells_per_group.max(1),
        seed: run.seed,
        allow_non_integer: false,
    };
    let corpus = Corpus::build(datasets, &config.gene_list, &opts, &masking, true, multi)?;
    config.batch_num = corpus.batch_labels.len();
    config.dataset_num = if multi { datasets.len() } else { 0 };
    sclm_nn::seed_everything(run.seed, device);
    let (frac, theta) = corpus_gene_stats(&corpus);
    let model = CellPlm::new(&config, device)?.with_decoder_init(&frac, &theta)?;
    let mut notes = corpus.gene_reports.clone();
    notes.push(format!(
        "CellPLM {}: {} parameters, vocabulary {}, {} cells in {} groups ({} batches)",
        config.name.as_deref().unwrap_or("custom"),
        model.num_params(),
        config.gene_list.len(),
        corpus.n_cells,
        corpus.groups.len(),
        corpus.batch_labels.len()
    ));
    let cfg = PretrainConfig {
        masking,
        epochs: run.epochs,
        lr: run.lr,
        weight_decay: run.weight_decay,
        seed: run.seed,
        ..Default::default()
    };
    let registry = Preprocessing {
        gene_id: "var_index".into(),
        group_key: run.group_key.clone(),
        spatial_key: run.spatial_key.clone(),
        batch_labels: corpus.batch_labels.clone(),
        dataset_labels: if multi { corpus.dataset_labels.clone() } else { Vec::new() },
        ..Default::default()
    };
    Ok(PreparedPretraining { model, corpus, cfg, registry, run_dir: run.run_dir.clone(), resume: run.resume, notes })
}

/// Pretrains a CellPLM model on `datasets` as `run` says: [`prepare_pretraining`], then
/// [`PreparedPretraining::train`].
pub fn pretrain_datasets(
    datasets: &[(String, &AnnData)],
    run: &PretrainRun,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<PretrainOutcome> {
    prepare_pretraining(datasets, run, device)?.train(progress)
}
