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
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;

use crate::loss::info_nce;

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
/// backend seed).
pub fn dac_contrastive_grads<M, I>(
    model: &M,
    inputs: &[I],
    config: &DacConfig,
    embed: impl Fn(&M, &[I]) -> (Tensor<2>, Tensor<2>),
) -> DacOutput
where
    M: Module,
{
    let device = model.devices().first().cloned().unwrap_or_else(crate::train_device);
    let chunk = config.chunk_size.max(1);
    let chunks: Vec<&[I]> = inputs.chunks(chunk).collect();
    let seed_of = |k: usize| super::mix_seed(config.seed, 3, k as u64);
    // Step 1: embeddings without graph.
    let mut h_all = Vec::with_capacity(chunks.len());
    let mut hp_all = Vec::with_capacity(chunks.len());
    for (k, c) in chunks.iter().enumerate() {
        device.seed(seed_of(k));
        let (h, hp) = embed(model, c);
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
    let gh = h.grad(&g).expect("gradient of the embeddings");
    let ghp = hp.grad(&g).expect("gradient of the embeddings");
    drop(g);
    // Step 3: re-embed each chunk with a graph and back-propagate the embedding gradients.
    let mut acc = GradientsAccumulator::<M>::new();
    let mut start = 0;
    for (k, c) in chunks.iter().enumerate() {
        device.seed(seed_of(k));
        let (h, hp) = embed(model, c);
        let n = c.len();
        let gh_k = Tensor::from_inner(gh.clone().narrow(0, start, n));
        let ghp_k = Tensor::from_inner(ghp.clone().narrow(0, start, n));
        let surrogate = (h * gh_k).sum() + (hp * ghp_k).sum();
        acc.accumulate(model, GradientsParams::from_grads(surrogate.backward(), model));
        start += n;
    }
    DacOutput { loss: loss_value, grads: acc.grads() }
}
