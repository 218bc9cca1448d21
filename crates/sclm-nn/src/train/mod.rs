//! Training: the step seam ([`TrainStep`], with [`Trainable`] for plain losses), AdamW with
//! parameter groups, schedules, gradient clipping and accumulation, early stopping,
//! checkpoints with exact resume, a JSONL run log, progress callbacks, momentum encoders and
//! divide-and-conquer contrastive learning.
//!
//! # The step seam
//!
//! [`Trainer`] owns the loop: batch order, gradient accumulation, clipping, the optimiser
//! update, validation, model selection, early stopping, `log.jsonl`, checkpoints and resume.
//! What one optimiser step computes is a [`TrainStep`]:
//!
//! - [`TrainStep::grads`]: the parameter gradients of one micro-batch and a [`LossReport`]
//!   (loss and named terms, logged). A plain loss back-propagates a [`LossOutput`]
//!   ([`LossOutput::backward`]); a multi-loss step reports every term; the
//!   divide-and-conquer step ([`dac::DacStep`]) runs its two chunked passes here.
//! - [`TrainStep::after_optimizer_step`]: runs after each update with the new weights, e.g. a
//!   momentum encoder's EMA update and pushing the step's keys into a queue
//!   ([`momentum::ema_update`], [`momentum::EmbeddingQueue`]).
//! - [`TrainStep::state`] / [`TrainStep::load_state`]: the step's own state ([`StepState`]:
//!   JSON values and named tensors), stored in every checkpoint (`step_state.json`,
//!   `step_state.bpk`) and restored on resume, so a momentum run resumes bit for bit.
//! - [`TrainStep::valid_loss`]: the validation loss, unless `fit_with_metric` gets a metric.
//! - [`TrainStep::weight_naming`] (for a [`Trainable`]: [`Trainable::weight_naming`]): the
//!   names and layout of the weights in `checkpoint/` and `best/`, e.g. a [`NameTable`] of the
//!   family's published state-dict keys; by default module paths. Resume reads them back
//!   through the same naming.
//!
//! A [`Trainable`] model (a loss returning `Result<LossOutput, NnError>`) trains through the
//! adapter step [`LossStep`]: [`Trainer::new`], [`Trainer::start`], [`Trainer::resume_run`]
//! and [`Trainer::resume`] build a `Trainer<M, LossStep>`; [`Trainer::with_step`],
//! [`Trainer::start_with_step`], [`Trainer::resume_run_with_step`] and
//! [`Trainer::resume_with_step`] take any step. Errors of a step (a family's error mapped into
//! [`NnError::Model`]) end `fit` with that error; nothing panics.
//!
//! Reproducibility: one seed drives everything. Before optimiser step `s` the backend
//! generator of the model's device is seeded with a hash of `(seed, s)` (dropout, Gumbel noise)
//! and the batch order of epoch `e` comes from a host generator seeded with `(seed, e)`, so the
//! random state at any step is a pure function of the seed and the step: a resumed run
//! continues exactly where an uninterrupted one would be. Steps that re-seed the generator
//! themselves derive their seeds from [`StepContext::seed`], a function of the same.
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::NnError;

pub mod checkpoint;
pub mod dac;
pub mod momentum;
pub mod optim;
pub mod schedule;
pub mod step;

pub use checkpoint::{
    copy_weights, load_model, load_model_named, save_model, save_model_named, LoadReport, NameEntry, NameTable,
    WeightNaming,
};
pub use optim::{GroupedAdamW, OptimizerConfig, ParamGroupConfig};
pub use schedule::{DecayKind, ReduceOnPlateau, ReduceOnPlateauConfig, ScheduleConfig};
pub use step::{LossReport, LossStep, StepContext, StepState, TrainStep};

/// What a model returns for one batch: the scalar to minimise and named terms for logging.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The total loss, `[1]`.
    pub total: Tensor<1>,
    /// Named components (already weighted as they enter `total`, or diagnostics).
    pub terms: Vec<(String, f64)>,
}

impl LossOutput {
    /// A loss without named terms.
    pub fn new(total: Tensor<1>) -> Self {
        Self { total, terms: Vec::new() }
    }

    /// Adds a named term.
    pub fn with_term(mut self, name: impl Into<String>, value: f64) -> Self {
        self.terms.push((name.into(), value));
        self
    }
}

/// A model that can be trained by [`Trainer`].
pub trait Trainable: Module + Sized {
    /// One (micro-)batch of input.
    type Batch;

    /// The loss of a batch. Called on the training module (autodiff device, dropout on) and on
    /// its [`valid`](Module::valid) copy for validation. An error (the model's own failure,
    /// e.g. [`NnError::model`] around a family error) ends [`Trainer::fit`] with that error.
    fn loss(&self, batch: &Self::Batch) -> Result<LossOutput, NnError>;

    /// How the trainer names (and lays out) this model's weights in `checkpoint/` and `best/`
    /// (e.g. a [`NameTable`] of the published state-dict keys). Default: module paths.
    fn weight_naming(&self) -> Option<Arc<dyn WeightNaming>> {
        None
    }
}

/// Report of one optimiser step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Global optimiser step (0-based) just taken.
    pub step: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean total loss over the accumulated micro-batches.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Mean named terms.
    pub terms: Vec<(String, f64)>,
}

/// Report of one epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochReport {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation metric (mean validation loss unless a metric function is given).
    pub valid_metric: Option<f64>,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Whether this epoch is the best so far.
    pub is_best: bool,
}

/// Progress callbacks (the library never prints; a CLI can draw a bar from these).
pub trait Progress {
    /// After each optimiser step; `batch`/`n_batches` count micro-batches in the epoch.
    fn on_step(&mut self, _batch: usize, _n_batches: usize, _report: &StepReport) {}
    /// After each epoch.
    fn on_epoch(&mut self, _report: &EpochReport) {}
    /// Asked after each optimiser step (after [`Progress::on_step`]): `true` ends training
    /// with [`NnError::Interrupted`]; the run directory keeps the last completed epoch's
    /// checkpoint. Default: never.
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// JSONL metric log: one JSON object per line (`{"event": "step", ...}`).
pub struct RunLog {
    path: PathBuf,
    out: BufWriter<fs::File>,
}

impl RunLog {
    /// Opens (appending) `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NnError> {
        let path = path.as_ref().to_path_buf();
        let f = fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| NnError::io(&path, e))?;
        Ok(Self { path, out: BufWriter::new(f) })
    }

    /// Opens `path` for a run resumed after `epochs_done` epochs: records written after the
    /// last `epoch` record of those epochs (steps of the interrupted epoch, which the resumed
    /// run repeats) are dropped first, so the log reads as one uninterrupted run.
    pub fn open_resumed(path: impl AsRef<Path>, epochs_done: usize) -> Result<Self, NnError> {
        let path = path.as_ref().to_path_buf();
        if path.exists() {
            let text = fs::read_to_string(&path).map_err(|e| NnError::io(&path, e))?;
            let mut keep = 0usize;
            let mut offset = 0usize;
            for line in text.split_inclusive('\n') {
                offset += line.len();
                let rec: Option<serde_json::Value> = serde_json::from_str(line).ok();
                let epoch_end = rec.as_ref().is_some_and(|r| {
                    r["event"] == "epoch" && r["epoch"].as_u64().is_some_and(|e| (e as usize) < epochs_done)
                });
                if epoch_end {
                    keep = offset;
                }
            }
            if keep < text.len() {
                let tmp = path.with_extension("jsonl.tmp");
                fs::write(&tmp, &text.as_bytes()[..keep]).map_err(|e| NnError::io(&tmp, e))?;
                fs::rename(&tmp, &path).map_err(|e| NnError::io(&path, e))?;
            }
        }
        Self::open(path)
    }

    /// Writes one record.
    pub fn write(&mut self, record: &serde_json::Value) -> Result<(), NnError> {
        serde_json::to_writer(&mut self.out, record)
            .map_err(|e| NnError::Json { path: self.path.display().to_string(), message: e.to_string() })?;
        self.out.write_all(b"\n").map_err(|e| NnError::io(&self.path, e))
    }

    /// Flushes buffered records.
    pub fn flush(&mut self) -> Result<(), NnError> {
        self.out.flush().map_err(|e| NnError::io(&self.path, e))
    }
}

/// Training configuration.
#[derive(Config, Debug)]
pub struct TrainConfig {
    /// The seed driving all randomness (default 0).
    #[config(default = 0)]
    pub seed: u64,
    /// Optimiser (AdamW with groups, clipping).
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Optional reduce-on-plateau on the validation metric (default none).
    #[config(default = "None")]
    pub plateau: Option<ReduceOnPlateauConfig>,
    /// Micro-batches per optimiser step (default 1).
    #[config(default = 1)]
    pub accumulation_steps: usize,
    /// Number of epochs (default 10).
    #[config(default = 10)]
    pub max_epochs: usize,
    /// Stop after this many epochs without improvement of the validation metric (default none).
    #[config(default = "None")]
    pub early_stopping_patience: Option<usize>,
    /// Whether a larger validation metric is better (default false: a loss).
    #[config(default = false)]
    pub maximize_metric: bool,
    /// Shuffle the batch order every epoch (default true).
    #[config(default = true)]
    pub shuffle: bool,
}

/// Training progress that must survive a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimiser steps taken.
    pub step: usize,
    /// Epochs completed.
    pub epoch: usize,
    /// The run seed (the random state is a function of seed, step and epoch).
    pub seed: u64,
    /// Reduce-on-plateau state.
    pub plateau: Option<ReduceOnPlateau>,
    /// Best validation metric so far.
    pub best_metric: Option<f64>,
    /// Epoch of the best metric.
    pub best_epoch: Option<usize>,
    /// Epochs since the best metric.
    pub epochs_without_improvement: usize,
    /// Early stopping triggered.
    pub stopped_early: bool,
}

/// Summary returned by [`Trainer::fit`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitSummary {
    /// Epochs completed in total.
    pub epochs: usize,
    /// Optimiser steps in total.
    pub steps: usize,
    /// Best validation metric and its epoch.
    pub best: Option<(f64, usize)>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
}

pub(crate) fn mix_seed(seed: u64, a: u64, b: u64) -> u64 {
    // SplitMix64 over the combined value.
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What [`Trainer::accumulate_grads`] returns: the mean gradients, the mean loss and the mean
/// named terms.
pub type AccumulatedGrads = (GradientsParams, f64, Vec<(String, f64)>);

/// A validation metric computed on the evaluation-mode model over the validation batches
/// (`B`: the batch of the training step; for a [`Trainable`], its batch).
pub type MetricFn<M, B = <M as Trainable>::Batch> = dyn Fn(&M, &[B]) -> f64;

/// The training loop around a [`TrainStep`] (by default [`LossStep`], the loss of a
/// [`Trainable`] model).
pub struct Trainer<M, S = LossStep> {
    /// The model being trained (on an autodiff device).
    pub model: M,
    /// Best model so far by validation metric (kept when validation data is given).
    pub best_model: Option<M>,
    train_step: S,
    optim: GroupedAdamW,
    config: TrainConfig,
    state: TrainState,
    device: Device,
    run_dir: Option<PathBuf>,
    log: Option<RunLog>,
    model_config: serde_json::Value,
}

impl<M: Trainable> Trainer<M> {
    /// A trainer for `model` (initialised on an autodiff device, e.g. [`crate::train_device`]),
    /// minimising its [`Trainable::loss`].
    pub fn new(model: M, config: TrainConfig) -> Self {
        Self::with_step(model, LossStep, config)
    }

    /// A trainer for a new run (in `run_dir` when given) or, with `resume`, one continuing the
    /// run in `run_dir` ([`Trainer::resume_run`]). Resuming without a run directory is an error.
    pub fn start(
        model: M,
        config: TrainConfig,
        run_dir: Option<&Path>,
        resume: bool,
        model_config: serde_json::Value,
    ) -> Result<Self, NnError> {
        Self::start_with_step(model, LossStep, config, run_dir, resume, model_config)
    }

    /// Continues the run in `dir` from its last checkpoint (see
    /// [`Trainer::resume_run_with_step`]).
    pub fn resume_run(
        model: M,
        config: TrainConfig,
        dir: impl AsRef<Path>,
        model_config: serde_json::Value,
    ) -> Result<Self, NnError> {
        Self::resume_run_with_step(model, LossStep, config, dir, model_config)
    }

    /// Restores a trainer from a checkpoint directory (see [`Trainer::resume_with_step`]).
    pub fn resume(model: M, config: TrainConfig, dir: impl AsRef<Path>) -> Result<Self, NnError> {
        Self::resume_with_step(model, LossStep, config, dir)
    }
}

impl<M: Module, S: TrainStep<M>> Trainer<M, S> {
    /// A trainer for `model` (initialised on an autodiff device) whose optimiser steps are
    /// computed by `step`.
    pub fn with_step(model: M, step: S, config: TrainConfig) -> Self {
        // Materialise lazily initialised parameters now, so that their random draws never
        // interleave with the per-step random streams.
        optim::touch_params(&model);
        let device = model.devices().first().cloned().unwrap_or_else(crate::train_device);
        let plateau = config.plateau.as_ref().map(|p| p.init());
        let state = TrainState {
            step: 0,
            epoch: 0,
            seed: config.seed,
            plateau,
            best_metric: None,
            best_epoch: None,
            epochs_without_improvement: 0,
            stopped_early: false,
        };
        Self {
            model,
            best_model: None,
            train_step: step,
            optim: GroupedAdamW::new(config.optimizer.clone()),
            config,
            state,
            device,
            run_dir: None,
            log: None,
            model_config: serde_json::Value::Null,
        }
    }

    /// Uses `dir` as run directory: `log.jsonl` there, checkpoints in `dir/checkpoint` after
    /// every epoch and the best model in `dir/best` (weights named by the step's
    /// [`TrainStep::weight_naming`], module paths by default). `model_config` is stored in each
    /// checkpoint's `config.json`.
    pub fn with_run_dir(mut self, dir: impl AsRef<Path>, model_config: serde_json::Value) -> Result<Self, NnError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| NnError::io(&dir, e))?;
        self.log = Some(RunLog::open(dir.join("log.jsonl"))?);
        self.run_dir = Some(dir);
        self.model_config = model_config;
        Ok(self)
    }

    /// Current training state.
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// The training step (e.g. to read a momentum encoder or its queue).
    pub fn train_step(&self) -> &S {
        &self.train_step
    }

    /// The training step, mutably.
    pub fn train_step_mut(&mut self) -> &mut S {
        &mut self.train_step
    }

    /// Learning rate of the next step.
    pub fn current_lr(&self) -> f64 {
        let scale = self.state.plateau.as_ref().map(|p| p.scale).unwrap_or(1.0);
        self.config.schedule.lr_at(self.state.step) * scale
    }

    fn context(&self, micro_batch: usize) -> StepContext {
        StepContext {
            epoch: self.state.epoch,
            step: self.state.step,
            micro_batch,
            seed: mix_seed(mix_seed(self.state.seed, 4, self.state.step as u64), 5, micro_batch as u64),
        }
    }

    /// Gradients of the mean loss of `batches` (gradient accumulation), with the mean loss and
    /// mean named terms. Seeds the backend generator for the current step first.
    pub fn accumulate_grads(&mut self, batches: &[&S::Batch]) -> Result<AccumulatedGrads, NnError> {
        self.device.seed(mix_seed(self.state.seed, 1, self.state.step as u64));
        let mut acc = GradientsAccumulator::<M>::new();
        let mut loss_sum = 0.0;
        let mut terms: Vec<(String, f64)> = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            let ctx = self.context(i);
            let (grads, report) = self.train_step.grads(&self.model, b, &ctx)?;
            loss_sum += report.loss;
            for (name, v) in report.terms {
                match terms.iter_mut().find(|(n, _)| *n == name) {
                    Some(t) => t.1 += v,
                    None => terms.push((name, v)),
                }
            }
            acc.accumulate(&self.model, grads);
        }
        let n = batches.len().max(1) as f64;
        let mut grads = acc.grads();
        if batches.len() > 1 {
            optim::scale_grads(&self.model, &mut grads, 1.0 / n);
        }
        Ok((grads, loss_sum / n, terms.into_iter().map(|(k, v)| (k, v / n)).collect()))
    }

    /// One optimiser step over `batches` (gradient accumulation: the mean of their losses),
    /// then the step's [`after_optimizer_step`](TrainStep::after_optimizer_step).
    pub fn step(&mut self, batches: &[&S::Batch]) -> Result<StepReport, NnError> {
        let (grads, loss, terms) = self.accumulate_grads(batches)?;
        let lr = self.current_lr();
        let model = self.model.clone();
        let (model, grad_norm) = self.optim.step(lr, model, grads);
        self.model = model;
        let ctx = self.context(batches.len().saturating_sub(1));
        self.train_step.after_optimizer_step(&self.model, &ctx)?;
        let report = StepReport { epoch: self.state.epoch, step: self.state.step, lr, loss, grad_norm, terms };
        self.state.step += 1;
        Ok(report)
    }

    /// Mean validation loss of `batches` ([`TrainStep::valid_loss`]) with the model in
    /// evaluation mode.
    pub fn validate(&self, batches: &[S::Batch]) -> Result<f64, NnError> {
        let model = self.model.valid();
        let mut total = 0.0;
        for b in batches {
            total += self.train_step.valid_loss(&model, b)?;
        }
        Ok(total / batches.len().max(1) as f64)
    }

    /// One epoch over `train` (shuffled with the epoch's seed, grouped by the accumulation
    /// count). Returns the mean training loss.
    pub fn run_epoch(&mut self, train: &[S::Batch], progress: &mut dyn Progress) -> Result<f64, NnError> {
        let mut order: Vec<usize> = (0..train.len()).collect();
        if self.config.shuffle {
            let mut rng = rand::rngs::StdRng::seed_from_u64(mix_seed(self.state.seed, 2, self.state.epoch as u64));
            order.shuffle(&mut rng);
        }
        let k = self.config.accumulation_steps.max(1);
        let mut total = 0.0;
        let mut count = 0usize;
        for (ci, chunk) in order.chunks(k).enumerate() {
            let batches: Vec<&S::Batch> = chunk.iter().map(|&i| &train[i]).collect();
            let report = self.step(&batches)?;
            total += report.loss * chunk.len() as f64;
            count += chunk.len();
            if let Some(log) = self.log.as_mut() {
                let mut rec = serde_json::json!({
                    "event": "step", "epoch": report.epoch, "step": report.step, "lr": report.lr,
                    "loss": report.loss, "grad_norm": report.grad_norm,
                });
                for (name, v) in &report.terms {
                    rec[name.as_str()] = serde_json::json!(v);
                }
                log.write(&rec)?;
            }
            progress.on_step((ci * k + chunk.len()).min(train.len()), train.len(), &report);
            if progress.should_stop() {
                return Err(NnError::Interrupted);
            }
        }
        Ok(total / count.max(1) as f64)
    }

    /// Trains until `max_epochs` (counting epochs already done, so a resumed trainer continues)
    /// or early stopping. Validation uses the mean validation loss when `valid` is non-empty.
    /// An error of the step (a loss that fails) ends training and is returned.
    pub fn fit(
        &mut self,
        train: &[S::Batch],
        valid: &[S::Batch],
        progress: &mut dyn Progress,
    ) -> Result<FitSummary, NnError> {
        self.fit_with_metric(train, valid, None, progress)
    }

    /// Like [`Trainer::fit`] with a custom validation metric computed on the evaluation-mode
    /// model (e.g. macro-F1 with `maximize_metric = true`).
    pub fn fit_with_metric(
        &mut self,
        train: &[S::Batch],
        valid: &[S::Batch],
        metric: Option<&MetricFn<M, S::Batch>>,
        progress: &mut dyn Progress,
    ) -> Result<FitSummary, NnError> {
        while self.state.epoch < self.config.max_epochs && !self.state.stopped_early {
            let train_loss = self.run_epoch(train, progress)?;
            let valid_metric = if valid.is_empty() {
                None
            } else {
                Some(match metric {
                    Some(f) => f(&self.model.valid(), valid),
                    None => self.validate(valid)?,
                })
            };
            let mut is_best = false;
            if let Some(m) = valid_metric {
                if let Some(p) = self.state.plateau.as_mut() {
                    p.observe(m);
                }
                let better = match self.state.best_metric {
                    None => true,
                    Some(b) if self.config.maximize_metric => m > b,
                    Some(b) => m < b,
                };
                if better {
                    is_best = true;
                    self.state.best_metric = Some(m);
                    self.state.best_epoch = Some(self.state.epoch);
                    self.state.epochs_without_improvement = 0;
                    self.best_model = Some(self.model.clone());
                } else {
                    self.state.epochs_without_improvement += 1;
                    if let Some(p) = self.config.early_stopping_patience {
                        if self.state.epochs_without_improvement >= p {
                            self.state.stopped_early = true;
                        }
                    }
                }
            }
            let report =
                EpochReport { epoch: self.state.epoch, train_loss, valid_metric, lr: self.current_lr(), is_best };
            self.state.epoch += 1;
            if let Some(log) = self.log.as_mut() {
                log.write(&serde_json::json!({
                    "event": "epoch", "epoch": report.epoch, "train_loss": report.train_loss,
                    "valid_metric": report.valid_metric, "lr": report.lr, "is_best": report.is_best,
                }))?;
                log.flush()?;
            }
            if let Some(dir) = self.run_dir.clone() {
                // The best model first: a checkpoint that records a best epoch always finds
                // that model in `best/` (a crash in between replays the epoch, which rewrites
                // the same best model).
                if is_best {
                    let naming = self.train_step.weight_naming(&self.model);
                    checkpoint::write_atomically(&dir.join("best"), |tmp| {
                        checkpoint::write_config(tmp, &self.model_config, &self.config)?;
                        save_model_named(&self.model, &tmp.join("model.safetensors"), naming.as_ref())
                    })?;
                }
                self.save_checkpoint(dir.join("checkpoint"))?;
            }
            progress.on_epoch(&report);
        }
        Ok(FitSummary {
            epochs: self.state.epoch,
            steps: self.state.step,
            best: self.state.best_metric.zip(self.state.best_epoch),
            stopped_early: self.state.stopped_early,
        })
    }

    /// Writes a full checkpoint (weights, optimiser, training state, the step's own state,
    /// configs) to `dir`, atomically (temporary directory, then rename).
    pub fn save_checkpoint(&self, dir: impl AsRef<Path>) -> Result<(), NnError> {
        let step_state = self.train_step.state()?;
        let naming = self.train_step.weight_naming(&self.model);
        checkpoint::write_atomically(dir.as_ref(), |tmp| {
            checkpoint::write_config(tmp, &self.model_config, &self.config)?;
            save_model_named(&self.model, &tmp.join("model.safetensors"), naming.as_ref())?;
            let ids: std::collections::BTreeMap<String, u64> =
                optim::param_paths(&self.model).into_iter().map(|(p, id)| (p, id.val())).collect();
            checkpoint::write_json(&tmp.join("param_ids.json"), &ids)?;
            self.optim.save(tmp)?;
            if let Some(s) = &step_state {
                s.save(tmp)?;
            }
            checkpoint::write_json(&tmp.join("train_state.json"), &self.state)
        })
    }

    /// [`Trainer::start`] with a training step.
    pub fn start_with_step(
        model: M,
        step: S,
        config: TrainConfig,
        run_dir: Option<&Path>,
        resume: bool,
        model_config: serde_json::Value,
    ) -> Result<Self, NnError> {
        match (run_dir, resume) {
            (Some(dir), true) => Self::resume_run_with_step(model, step, config, dir, model_config),
            (Some(dir), false) => Self::with_step(model, step, config).with_run_dir(dir, model_config),
            (None, true) => Err(NnError::Config("resuming needs a run directory".into())),
            (None, false) => Ok(Self::with_step(model, step, config)),
        }
    }

    /// Continues the run in `dir` (see [`Trainer::with_run_dir`]) from its last checkpoint:
    /// weights, optimiser, training state and the step's state from `dir/checkpoint`, the best
    /// model so far from `dir/best` (so early stopping and model selection carry on), and the
    /// log with the interrupted epoch's records dropped. The result equals an uninterrupted
    /// run's.
    pub fn resume_run_with_step(
        model: M,
        step: S,
        config: TrainConfig,
        dir: impl AsRef<Path>,
        model_config: serde_json::Value,
    ) -> Result<Self, NnError> {
        let dir = dir.as_ref();
        let ckpt = dir.join("checkpoint");
        if !ckpt.join("train_state.json").exists() {
            return Err(NnError::Config(format!("no checkpoint to resume from in {}", dir.display())));
        }
        let mut trainer = Self::resume_with_step(model, step, config, &ckpt)?;
        if trainer.state.best_epoch.is_some() {
            let path = dir.join("best").join("model.safetensors");
            let naming = trainer.train_step.weight_naming(&trainer.model);
            let (best, report) = load_model_named(trainer.model.clone(), &path, naming.as_ref())?;
            if !report.missing.is_empty() {
                return Err(NnError::Store {
                    path: path.display().to_string(),
                    message: format!("best model lacks tensors: {}", report.missing.join(", ")),
                });
            }
            trainer.best_model = Some(best);
        }
        fs::create_dir_all(dir).map_err(|e| NnError::io(dir, e))?;
        trainer.log = Some(RunLog::open_resumed(dir.join("log.jsonl"), trainer.state.epoch)?);
        trainer.run_dir = Some(dir.to_path_buf());
        trainer.model_config = model_config;
        Ok(trainer)
    }

    /// Restores a trainer from a checkpoint written by [`Trainer::save_checkpoint`]: `model`
    /// must have the same architecture (fresh initialisation is fine), `config` the same
    /// optimiser groups, `step` the same kind (its state, if it keeps any, is loaded from the
    /// checkpoint). Training then continues exactly as if never interrupted.
    pub fn resume_with_step(model: M, step: S, config: TrainConfig, dir: impl AsRef<Path>) -> Result<Self, NnError> {
        let dir = dir.as_ref();
        let naming = step.weight_naming(&model);
        let (model, report) = load_model_named(model, &dir.join("model.safetensors"), naming.as_ref())?;
        if !report.missing.is_empty() {
            return Err(NnError::Store {
                path: dir.join("model.safetensors").display().to_string(),
                message: format!("checkpoint lacks tensors: {}", report.missing.join(", ")),
            });
        }
        let ids: std::collections::HashMap<String, u64> = checkpoint::read_json(&dir.join("param_ids.json"))?;
        let model = optim::restore_param_ids(model, &ids);
        let state: TrainState = checkpoint::read_json(&dir.join("train_state.json"))?;
        let mut trainer = Trainer::with_step(model, step, config);
        trainer.optim = trainer.optim.load(dir)?;
        trainer.state = state;
        match StepState::load(dir)? {
            Some(s) => trainer.train_step.load_state(s)?,
            None if trainer.train_step.state()?.is_some() => {
                return Err(NnError::Config(format!(
                    "checkpoint {} holds no step state (written by a step without one), but this step keeps some",
                    dir.display()
                )))
            }
            None => {}
        }
        Ok(trainer)
    }
}

#[cfg(test)]
mod tests;
