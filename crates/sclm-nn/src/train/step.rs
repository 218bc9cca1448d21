//! The step seam: what one optimiser step computes ([`TrainStep`]), the extra state a step
//! keeps across steps ([`StepState`]) and the adapter that makes every [`Trainable`] a step
//! ([`LossStep`]).
use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::store::bridge;
use burn::store::burn_pack::{Reader, Writer};
use burn::store::ModuleSnapshot;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use super::{LossOutput, Trainable, WeightNaming};
use crate::NnError;

/// Host numbers one (micro-)batch of a step reports: the loss it minimised and named terms
/// (written to `log.jsonl` and averaged over the accumulated micro-batches).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LossReport {
    /// The total loss.
    pub loss: f64,
    /// Named components or diagnostics.
    pub terms: Vec<(String, f64)>,
}

impl LossReport {
    /// A report without named terms.
    pub fn new(loss: f64) -> Self {
        Self { loss, terms: Vec::new() }
    }

    /// Adds a named term.
    pub fn with_term(mut self, name: impl Into<String>, value: f64) -> Self {
        self.terms.push((name.into(), value));
        self
    }
}

impl LossOutput {
    /// Back-propagates `total` and returns the gradients of `model`'s parameters with the
    /// loss as host numbers: what a plain loss step does with its [`LossOutput`].
    pub fn backward<M: Module>(self, model: &M) -> (GradientsParams, LossReport) {
        let loss = crate::util::scalar(self.total.clone());
        let grads = GradientsParams::from_grads(self.total.backward(), model);
        (grads, LossReport { loss, terms: self.terms })
    }
}

/// Where in the run a step is computed, for steps that draw their own random streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepContext {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Global optimiser step (0-based) being computed.
    pub step: usize,
    /// Index of the micro-batch within the step's accumulation group.
    pub micro_batch: usize,
    /// A seed that is a pure function of the run seed, `step` and `micro_batch` (the backend
    /// generator is already seeded from run seed and step before the first micro-batch; a step
    /// that re-seeds it, like the divide-and-conquer step, derives its seeds from this one).
    pub seed: u64,
}

/// One optimiser step's computation, run by [`Trainer`](super::Trainer).
///
/// Per optimiser step the trainer seeds the backend generator, calls [`grads`](Self::grads)
/// on each of the step's micro-batches (gradient accumulation: the mean of their gradients),
/// clips and applies the optimiser update, then calls
/// [`after_optimizer_step`](Self::after_optimizer_step) with the updated model. At every
/// checkpoint it stores [`state`](Self::state) next to the weights and optimiser state, and on
/// resume hands it back through [`load_state`](Self::load_state), so that a step with its own
/// state (a momentum encoder, a queue of past embeddings) resumes exactly.
///
/// A [`Trainable`] model is a step through [`LossStep`]. Multi-loss steps return the gradient
/// of their weighted sum (or accumulate several backward passes themselves) with every term in
/// the report; the divide-and-conquer contrastive step
/// ([`DacStep`](super::dac::DacStep)) runs its two chunked passes inside `grads`.
pub trait TrainStep<M: Module> {
    /// One (micro-)batch of input.
    type Batch;

    /// Gradients of `model`'s parameters for `batch` (`model` is the training module: autodiff
    /// device, dropout on) and the loss they minimise.
    fn grads(
        &mut self,
        model: &M,
        batch: &Self::Batch,
        ctx: &StepContext,
    ) -> Result<(GradientsParams, LossReport), NnError>;

    /// Validation loss of `batch` on `model`, the evaluation-mode copy
    /// ([`Module::valid`]); used when `fit` gets validation data and no metric function.
    fn valid_loss(&self, model: &M, batch: &Self::Batch) -> Result<f64, NnError>;

    /// Called after each optimiser update with the updated model (momentum update of an EMA
    /// copy, pushing the step's keys into a queue); `ctx` is that of the step's last
    /// micro-batch. Default: nothing.
    fn after_optimizer_step(&mut self, _model: &M, _ctx: &StepContext) -> Result<(), NnError> {
        Ok(())
    }

    /// State that must survive a restart (saved in each checkpoint as `step_state.json` and
    /// `step_state.bpk`). Default: none.
    fn state(&self) -> Result<Option<StepState>, NnError> {
        Ok(None)
    }

    /// Restores what [`state`](Self::state) saved. Default: refuses, since a step without
    /// state was handed some (the checkpoint was written by another kind of step).
    fn load_state(&mut self, _state: StepState) -> Result<(), NnError> {
        Err(NnError::Config("the checkpoint holds step state but this training step keeps none".into()))
    }

    /// How the trainer names (and lays out) `model`'s weights in `checkpoint/` and `best/`.
    /// Default: module paths.
    fn weight_naming(&self, _model: &M) -> Option<Arc<dyn WeightNaming>> {
        None
    }
}

/// The step of a [`Trainable`] model: the gradient of [`Trainable::loss`], validation by the
/// same loss on the evaluation-mode model, no extra state. [`Trainer::new`](super::Trainer::new)
/// uses it, so a `Trainable` trains exactly as it always did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossStep;

impl<M: Trainable> TrainStep<M> for LossStep {
    type Batch = M::Batch;

    fn grads(
        &mut self,
        model: &M,
        batch: &M::Batch,
        _ctx: &StepContext,
    ) -> Result<(GradientsParams, LossReport), NnError> {
        Ok(model.loss(batch)?.backward(model))
    }

    fn valid_loss(&self, model: &M, batch: &M::Batch) -> Result<f64, NnError> {
        Ok(crate::util::scalar(model.loss(batch)?.total))
    }

    fn weight_naming(&self, model: &M) -> Option<Arc<dyn WeightNaming>> {
        model.weight_naming()
    }
}

/// Extra state of a training step: JSON-serialisable values (counters, pointers) and named
/// tensors (EMA weights, queues), saved bit-exact.
#[derive(Debug, Clone, Default)]
pub struct StepState {
    /// Small values (default `null`).
    pub meta: serde_json::Value,
    /// Named tensors, each name unique.
    pub tensors: Vec<(String, TensorData)>,
}

impl StepState {
    /// A state holding `meta` and no tensors.
    pub fn new(meta: serde_json::Value) -> Self {
        Self { meta, tensors: Vec::new() }
    }

    /// Adds a named tensor.
    pub fn with_tensor(mut self, name: impl Into<String>, data: TensorData) -> Self {
        self.tensors.push((name.into(), data));
        self
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<&TensorData, NnError> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
            .ok_or_else(|| NnError::Config(format!("step state lacks tensor {name}")))
    }

    /// Adds every parameter of `module` as a tensor named `<prefix>.<module path>`.
    pub fn with_module<M: Module>(mut self, prefix: &str, module: &M) -> Result<Self, NnError> {
        for t in module.collect(None, None, true) {
            let name = format!("{prefix}.{}", t.name);
            let data =
                bridge::into_data(t).map_err(|e| NnError::Store { path: name.clone(), message: e.to_string() })?;
            self.tensors.push((name, data));
        }
        Ok(self)
    }

    /// Loads the tensors added by [`with_module`](Self::with_module) under `prefix` into
    /// `module` (same architecture). Every parameter must be found with its shape.
    pub fn load_module<M: Module>(&self, prefix: &str, mut module: M) -> Result<M, NnError> {
        let lead = format!("{prefix}.");
        let tensors = self
            .tensors
            .iter()
            .filter_map(|(n, d)| n.strip_prefix(&lead).map(|p| bridge::from_data(d.clone(), p.to_string(), None)))
            .collect();
        let res = module.apply(tensors, None, None, true);
        if !res.missing.is_empty() || !res.errors.is_empty() {
            let missing: Vec<&str> = res.missing.iter().map(|(p, _)| p.as_str()).collect();
            let errors: Vec<String> = res.errors.iter().map(|e| format!("{e:?}")).collect();
            return Err(NnError::Config(format!(
                "step state {prefix}: missing tensors [{}], errors [{}]",
                missing.join(", "),
                errors.join("; ")
            )));
        }
        Ok(module)
    }

    /// Writes `dir/step_state.json` (meta and tensor names) and `dir/step_state.bpk`.
    pub(crate) fn save(&self, dir: &Path) -> Result<(), NnError> {
        let names: Vec<&str> = self.tensors.iter().map(|(n, _)| n.as_str()).collect();
        super::checkpoint::write_json(
            &dir.join(STATE_JSON),
            &serde_json::json!({ "meta": self.meta, "tensors": names }),
        )?;
        let path = dir.join("step_state.bpk");
        let tensors = self.tensors.iter().map(|(n, d)| bridge::from_data(d.clone(), n.clone(), None)).collect();
        Writer::new(tensors)
            .auto_extension(false)
            .write_to_file(&path)
            .map_err(|e| NnError::Store { path: path.display().to_string(), message: e.to_string() })
    }

    /// Reads what [`save`](Self::save) wrote; `None` when `dir` holds no step state.
    pub(crate) fn load(dir: &Path) -> Result<Option<Self>, NnError> {
        let json = dir.join(STATE_JSON);
        if !json.exists() {
            return Ok(None);
        }
        let head: serde_json::Value = super::checkpoint::read_json(&json)?;
        let path = dir.join("step_state.bpk");
        let store_err = |e: burn::store::burn_pack::Error| NnError::Store {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let mut by_name = std::collections::HashMap::new();
        for t in Reader::from_file_exact(&path).and_then(|r| r.into_tensors()).map_err(store_err)? {
            let name = t.name.clone();
            by_name.insert(name, bridge::into_data(t).map_err(store_err)?);
        }
        // Keep the order the step wrote (the pack stores names sorted).
        let names: Vec<String> = serde_json::from_value(head["tensors"].clone())
            .map_err(|e| NnError::Json { path: json.display().to_string(), message: e.to_string() })?;
        let mut tensors = Vec::with_capacity(names.len());
        for n in names {
            let d = by_name.remove(&n).ok_or_else(|| NnError::Store {
                path: path.display().to_string(),
                message: format!("lacks tensor {n}"),
            })?;
            tensors.push((n, d));
        }
        Ok(Some(Self { meta: head["meta"].clone(), tensors }))
    }
}

pub(crate) const STATE_JSON: &str = "step_state.json";
