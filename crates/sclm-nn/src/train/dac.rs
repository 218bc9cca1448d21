//! Divide-and-conquer contrastive learning (CellLM §3.3.1 and appendix A): the gradient of a
//! large-batch contrastive loss computed with memory that grows with the chunk, not the batch.
//!
//! 1. Embed every chunk without keeping a graph (outputs detached), giving all `h_i`, `h_i⁺`.
//! 2. Compute the full-batch loss on these leaves and its gradient `∂L/∂h` (cheap: `T × d`).
//! 3. Re-embed each chunk with a graph and back-propagate `Σ h ⊙ sg(∂L/∂h)`; the parameter
//!    gradients of the chunks add up to the end-to-end gradient exactly (chain rule).
//!
//! The backend generator is re-seeded identically before a chunk's two forwards, so dropout
//! (the augmentation that makes `h` and `h⁺` differ) draws the same masks in steps 1 and 3.
//!
//! [`DacStep`] runs this inside the [`Trainer`](super::Trainer) (log, checkpoints, resume).
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;

use std::marker::PhantomData;

use super::step::{LossReport, StepContext, TrainStep};
use crate::loss::info_nce;
use crate::NnError;

/// Frees autodiff graphs whose tensors were all dropped (burn-autodiff collects them only
/// during a backward pass; this runs a trivial one).
pub fn sweep_graphs(device: &Device) {
    if device.is_autodiff() {
        let t = Tensor::<1>::zeros([1], device).require_grad();
        drop(t.sum().backward());
    }
}

/// Settings of a divide-and-conquer contrastive step.
#[derive(Config, Debug)]
pub struct DacConfig {
    /// Cells embedded at once (the memory knob).
    pub chunk_size: usize,
    /// Temperature τ of the InfoNCE loss (default 0.05).
    #[config(default = 0.05)]
    pub temperature: f64,
    /// Average both directions of the loss (default false: CellLM's one-directional form).
    #[config(default = false)]
    pub symmetric: bool,
    /// Seed of the dropout masks of this step (default 0).
    #[config(default = 0)]
    pub seed: u64,
}

/// Result of [`dac_contrastive_grads`].
pub struct DacOutput {
    /// The full-batch contrastive loss.
    pub loss: f64,
    /// Parameter gradients of that loss (ready for an optimiser step).
    pub grads: GradientsParams,
}

/// Computes the full-batch InfoNCE loss between the two views of all `inputs` and its parameter
/// gradients, processing `chunk_size` inputs at a time. `embed(model, chunk)` returns the two
/// views `(h, h⁺)` of a chunk, each `[chunk, d]`, and must depend only on the chunk (and the
/// backend seed); its errors are returned as they are.
pub fn dac_contrastive_grads<M, I>(
    model: &M,
    inputs: &[I],
    config: &DacConfig,
    embed: impl Fn(&M, &[I]) -> Result<(Tensor<2>, Tensor<2>), NnError>,
) -> Result<DacOutput, NnError>
where
    M: Module,
{
    if inputs.is_empty() {
        return Err(NnError::Shape("divide-and-conquer contrastive step over an empty batch".into()));
    }
    let device = model.devices().first().cloned().unwrap_or_else(crate::train_device);
    let chunk = config.chunk_size.max(1);
    let chunks: Vec<&[I]> = inputs.chunks(chunk).collect();
    let seed_of = |k: usize| super::mix_seed(config.seed, 3, k as u64);
    let checked = |c: &[I]| -> Result<(Tensor<2>, Tensor<2>), NnError> {
        let (h, hp) = embed(model, c)?;
        if h.dims()[0] != c.len() || h.dims() != hp.dims() {
            return Err(NnError::Shape(format!(
                "a chunk of {} inputs embedded as {:?} and {:?}",
                c.len(),
                h.dims(),
                hp.dims()
            )));
        }
        Ok((h, hp))
    };
    // Step 1: embeddings without graph.
    let mut h_all = Vec::with_capacity(chunks.len());
    let mut hp_all = Vec::with_capacity(chunks.len());
    for (k, c) in chunks.iter().enumerate() {
        device.seed(seed_of(k));
        let (h, hp) = checked(c)?;
        h_all.push(h.detach());
        hp_all.push(hp.detach());
        // The chunk's graph is now unreachable; burn frees unreachable graphs during a
        // backward pass, so run a trivial one to release its activations now.
        sweep_graphs(&device);
    }
    // Step 2: full-batch loss on leaves and its gradient w.r.t. the embeddings.
    let h = Tensor::cat(h_all, 0).require_grad();
    let hp = Tensor::cat(hp_all, 0).require_grad();
    let loss = info_nce(h.clone(), hp.clone(), config.temperature, config.symmetric);
    let loss_value = crate::util::scalar(loss.clone());
    let g = loss.backward();
    let no_grad =
        || NnError::model("divide-and-conquer step: no gradient reached the embeddings (not on an autodiff device?)");
    let gh = h.grad(&g).ok_or_else(no_grad)?;
    let ghp = hp.grad(&g).ok_or_else(no_grad)?;
    drop(g);
    // Step 3: re-embed each chunk with a graph and back-propagate the embedding gradients.
    let mut acc = GradientsAccumulator::<M>::new();
    let mut start = 0;
    for (k, c) in chunks.iter().enumerate() {
        device.seed(seed_of(k));
        let (h, hp) = checked(c)?;
        let n = c.len();
        let gh_k = Tensor::from_inner(gh.clone().narrow(0, start, n));
        let ghp_k = Tensor::from_inner(ghp.clone().narrow(0, start, n));
        let surrogate = (h * gh_k).sum() + (hp * ghp_k).sum();
        acc.accumulate(model, GradientsParams::from_grads(surrogate.backward(), model));
        start += n;
    }
    Ok(DacOutput { loss: loss_value, grads: acc.grads() })
}

/// The full-batch contrastive loss of `inputs` without gradients (evaluation), embedding
/// `chunk_size` inputs at a time.
pub fn dac_contrastive_loss<M, I>(
    model: &M,
    inputs: &[I],
    config: &DacConfig,
    embed: impl Fn(&M, &[I]) -> Result<(Tensor<2>, Tensor<2>), NnError>,
) -> Result<f64, NnError> {
    if inputs.is_empty() {
        return Err(NnError::Shape("contrastive loss of an empty batch".into()));
    }
    let (mut h_all, mut hp_all) = (Vec::new(), Vec::new());
    for c in inputs.chunks(config.chunk_size.max(1)) {
        let (h, hp) = embed(model, c)?;
        h_all.push(h.detach());
        hp_all.push(hp.detach());
    }
    let (h, hp) = (Tensor::cat(h_all, 0), Tensor::cat(hp_all, 0));
    if h.dims()[0] != inputs.len() || h.dims() != hp.dims() {
        return Err(NnError::Shape(format!("{} inputs embedded as {:?} and {:?}", inputs.len(), h.dims(), hp.dims())));
    }
    Ok(crate::util::scalar(info_nce(h, hp, config.temperature, config.symmetric)))
}

/// The divide-and-conquer contrastive step for [`Trainer`](super::Trainer): a batch is a
/// `Vec` of inputs, its gradient the exact full-batch InfoNCE gradient computed
/// `chunk_size` inputs at a time ([`dac_contrastive_grads`]); validation is the full-batch
/// loss on the evaluation-mode model. The chunks' dropout seeds derive from the step's
/// [`StepContext`] (`DacConfig::seed` is ignored), so runs resume exactly.
pub struct DacStep<I, F> {
    /// Chunk size, temperature, direction.
    pub config: DacConfig,
    embed: F,
    _inputs: PhantomData<fn(&[I])>,
}

impl<I, F> DacStep<I, F> {
    /// A step embedding chunks with `embed(model, chunk) -> (h, h⁺)`.
    pub fn new(config: DacConfig, embed: F) -> Self {
        Self { config, embed, _inputs: PhantomData }
    }
}

impl<M, I, F> TrainStep<M> for DacStep<I, F>
where
    M: Module,
    F: Fn(&M, &[I]) -> Result<(Tensor<2>, Tensor<2>), NnError>,
{
    type Batch = Vec<I>;

    fn grads(
        &mut self,
        model: &M,
        batch: &Vec<I>,
        ctx: &StepContext,
    ) -> Result<(GradientsParams, LossReport), NnError> {
        let config = self.config.clone().with_seed(ctx.seed);
        let out = dac_contrastive_grads(model, batch, &config, &self.embed)?;
        Ok((out.grads, LossReport::new(out.loss).with_term("info_nce", out.loss)))
    }

    fn valid_loss(&self, model: &M, batch: &Vec<I>) -> Result<f64, NnError> {
        dac_contrastive_loss(model, batch, &self.config, &self.embed)
    }
}
