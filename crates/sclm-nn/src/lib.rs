//! Neural engine of sclm: tensors, attention blocks, embeddings, latent layers, losses and a
//! training loop, built on [burn](https://burn.dev) with its pure-Rust `flex` CPU backend.
//!
//! Burn 0.22 carries the backend in the [`Device`](burn::tensor::Device) rather than in a type
//! parameter, so every block here is written against `burn::Tensor<D>` and runs on whichever
//! device its parameters live on: [`cpu_device`] for inference, [`train_device`] (the same
//! device with automatic differentiation) for training, and `gpu_device` with the `gpu`
//! feature.
//!
//! The crate knows nothing about AnnData: sparse input arrives as [`embedding::CsrRows`]
//! (borrowed CSR slices), dense input as plain tensors.
//!
//! Modules (each block: `FooConfig` → `init(&device)` → `Foo`, forward documented with shapes):
//! - [`attention`]: softmax multi-head self/cross attention with key padding mask, Flowformer
//!   (linear; effective cell–cell weights for export), Performer FAVOR+ (random-feature buffer).
//! - [`encoder`]: encoder layer and stack, pre/post-norm, GELU/ReLU, LayerNorm/GroupNorm.
//! - [`embedding`]: sparse gene-embedding bag, binned expression, learned/frozen tables,
//!   sinusoidal 1-D/2-D positional encodings, categorical embeddings.
//! - [`vq`]: vector quantiser with affine codebook, straight-through gradient, dead-code reset.
//! - [`latent`]: Gaussian and Gaussian-mixture latent layers.
//! - [`loss`]: MSE, NB/ZINB log-likelihoods, cross-entropy, BCE, InfoNCE, focal loss.
//! - [`remap`]: declarative tables pairing parameters with published state-dict names and layouts.
//! - [`train`]: trainer and its step seam (plain losses, multi-loss, momentum-encoder and
//!   divide-and-conquer contrastive steps), grouped AdamW, schedules, checkpoints, run log.
//! - [`host`]: inference path on plain host buffers (fused element-wise passes, SIMD dispatch,
//!   direct GEMM) for the gene-embedding bag, Linear, norms and the Flowformer layer.
//! - [`bench`]: encoder-layer benchmark against PyTorch.
//!
//! Randomness: [`seed_everything`] seeds the backend generator (process-wide in flex) and
//! returns a host generator; the trainer re-seeds per step so runs resume exactly.
#![warn(missing_docs)]

pub use burn;

pub mod attention;
pub mod bench;
pub mod embedding;
pub mod encoder;
pub mod error;
pub mod host;
pub mod latent;
pub mod loss;
pub mod remap;
pub mod train;
pub(crate) mod util;
pub mod vq;

pub use error::NnError;

use burn::tensor::Device;

/// The default CPU device: burn's pure-Rust `flex` backend (multi-threaded through rayon).
///
/// Burn 0.22 has no backend type parameter; the backend is a property of the device, so the
/// "default backend" of this crate is this device.
pub fn cpu_device() -> Device {
    Device::flex()
}

/// The CPU device with automatic differentiation enabled: modules initialised on it can be
/// trained; [`burn::module::Module::valid`] turns a trained module into an inference one.
pub fn train_device() -> Device {
    Device::flex().autodiff()
}

/// A GPU device through burn's wgpu backend pinned to Vulkan (feature `gpu`).
#[cfg(feature = "gpu")]
pub fn gpu_device() -> Device {
    Device::vulkan(burn::tensor::DeviceKind::DefaultDevice)
}

/// Seeds the backend random number generator of `device` (dropout masks, `Tensor::random`,
/// Gumbel noise) and returns a host generator derived from the same seed for everything the
/// crate draws on the host (random features, code replacement, masking).
pub fn seed_everything(seed: u64, device: &Device) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    device.seed(seed);
    rand::rngs::StdRng::seed_from_u64(seed ^ 0x5c1a_5eed)
}
