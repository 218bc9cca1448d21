//! Latent layers: Gaussian (VAE, reparameterised; CellPLM 20231027 checkpoint) and Gaussian
//! mixture (GMVAE; CellPLM §3.3 and its published `gmvae` latent, after Dilokthanakul et al.
//! 2016): Gumbel-softmax cluster posterior q(y|h), Gaussian q(z|h,y), learned conditional prior
//! p(z|y) and the floored loss `w_li·max(λ, KL_z) + w_en·max(λ, −H(q(y)) − log(1/K))`.
//!
//! Inference is deterministic by default (`sample = false`): the posterior mean, and for the
//! GMVAE the most probable cluster. The published code samples even in eval mode.
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu, softmax, softplus};
use burn::tensor::Distribution;

/// Output of a latent layer.
#[derive(Debug, Clone)]
pub struct LatentOutput {
    /// The latent code passed to the decoder (sample or mean), `[n, d_latent]`.
    pub z: Tensor<2>,
    /// The posterior mean, `[n, d_latent]` (the cell embedding).
    pub mean: Tensor<2>,
    /// The regularisation loss to add to the objective, `[1]`.
    pub loss: Tensor<1>,
    /// Named un-weighted terms for logging (KL of z; for the GMVAE also KL of y).
    pub terms: Vec<(String, Tensor<1>)>,
    /// GMVAE only: cluster posterior q(y|h), `[n, K]`.
    pub cluster_probs: Option<Tensor<2>>,
}

/// Analytic KL(N(μq, σq²) ‖ N(μp, σp²)) summed over the last dimension, per row (≥ 0).
///
/// # Shapes
/// all `[n, d]` → `[n, 1]`
pub fn gaussian_kl(mu_q: Tensor<2>, var_q: Tensor<2>, mu_p: Tensor<2>, var_p: Tensor<2>) -> Tensor<2> {
    let ratio = var_q.clone() / var_p.clone();
    ((mu_q - mu_p).powi_scalar(2) / var_p + ratio.clone() - ratio.log()).sub_scalar(1.0).sum_dim(1).mul_scalar(0.5)
}

/// Configuration of [`GaussianLatent`].
#[derive(Config, Debug)]
pub struct GaussianLatentConfig {
    /// Input dimension.
    pub d_in: usize,
    /// Latent dimension.
    pub d_latent: usize,
    /// Weight of the KL term (default 1).
    #[config(default = 1.0)]
    pub kl_weight: f64,
}

/// Gaussian latent: `q(z|h) = N(μ(h), softplus(s(h)))`, prior N(0, I).
#[derive(Module, Debug)]
pub struct GaussianLatent {
    /// Mean head.
    pub mu: Linear,
    /// Variance head (through softplus).
    pub var: Linear,
    kl_weight: f64,
}

impl GaussianLatentConfig {
    /// Initialises the layer on `device`.
    pub fn init(&self, device: &Device) -> GaussianLatent {
        GaussianLatent {
            mu: LinearConfig::new(self.d_in, self.d_latent).init(device),
            var: LinearConfig::new(self.d_in, self.d_latent).init(device),
            kl_weight: self.kl_weight,
        }
    }
}

impl GaussianLatent {
    /// Encodes `h`; draws `z = μ + σ·ε` when `sample`, else `z = μ`.
    ///
    /// # Shapes
    /// - `h`: `[n, d_in]`
    /// - output tensors: `[n, d_latent]`, losses `[1]`
    pub fn forward(&self, h: Tensor<2>, sample: bool) -> LatentOutput {
        let mu = self.mu.forward(h.clone());
        let var = softplus(self.var.forward(h), 1.0).add_scalar(1e-6);
        let z = if sample {
            let eps = mu.random_like(Distribution::Normal(0.0, 1.0));
            mu.clone() + var.clone().sqrt() * eps
        } else {
            mu.clone()
        };
        let kl = gaussian_kl(mu.clone(), var.clone(), mu.zeros_like(), var.ones_like()).mean();
        LatentOutput {
            z,
            mean: mu,
            loss: kl.clone().mul_scalar(self.kl_weight),
            terms: vec![("kl_z".into(), kl)],
            cluster_probs: None,
        }
    }
}

/// Configuration of [`GmvaeLatent`] (published CellPLM: 16 components, latent 512,
/// `lamda 5, w_li 5, w_en 5`).
#[derive(Config, Debug)]
pub struct GmvaeLatentConfig {
    /// Input dimension.
    pub d_in: usize,
    /// Latent dimension.
    pub d_latent: usize,
    /// Number of mixture components K (default 16).
    #[config(default = 16)]
    pub n_components: usize,
    /// Floor λ of both KL terms (default 5).
    #[config(default = 5.0)]
    pub lamda: f64,
    /// Weight of the z term (default 5).
    #[config(default = 5.0)]
    pub w_li: f64,
    /// Weight of the cluster-entropy term (default 5).
    #[config(default = 5.0)]
    pub w_en: f64,
    /// Gumbel-softmax temperature (default 1).
    #[config(default = 1.0)]
    pub temperature: f64,
}

/// Gaussian-mixture latent layer.
#[derive(Module, Debug)]
pub struct GmvaeLatent {
    /// q(y|h) logits, `d_in → K`.
    pub qy_logits: Linear,
    /// q(z|h,y) hidden layer, `d_in + K → d_latent` (then ReLU).
    pub qz_hidden: Linear,
    /// q(z|h,y) mean head.
    pub qz_mu: Linear,
    /// q(z|h,y) variance head (softplus).
    pub qz_var: Linear,
    /// Prior mean p(z|y), `K → d_latent`.
    pub y_mu: Linear,
    /// Prior variance p(z|y) (softplus), `K → d_latent`.
    pub y_var: Linear,
    n_components: usize,
    lamda: f64,
    w_li: f64,
    w_en: f64,
    temperature: f64,
}

impl GmvaeLatentConfig {
    /// Initialises the layer on `device`.
    pub fn init(&self, device: &Device) -> GmvaeLatent {
        let k = self.n_components;
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        GmvaeLatent {
            qy_logits: lin(self.d_in, k),
            qz_hidden: lin(self.d_in + k, self.d_latent),
            qz_mu: lin(self.d_latent, self.d_latent),
            qz_var: lin(self.d_latent, self.d_latent),
            y_mu: lin(k, self.d_latent),
            y_var: lin(k, self.d_latent),
            n_components: k,
            lamda: self.lamda,
            w_li: self.w_li,
            w_en: self.w_en,
            temperature: self.temperature,
        }
    }
}

impl GmvaeLatent {
    /// Encodes `h`. With `sample`, y is a Gumbel-softmax sample and z a reparameterised draw;
    /// otherwise y is the one-hot most probable cluster and z the posterior mean.
    ///
    /// The z term is the analytic KL(q(z|h,y) ‖ p(z|y)) (non-negative; the reference uses a
    /// one-sample estimate of the same quantity); the y term is KL(q(y|h) ‖ Uniform(K)) =
    /// −H(q(y)) − log(1/K) ≥ 0. Both are averaged over cells, then floored at λ and weighted.
    ///
    /// # Shapes
    /// - `h`: `[n, d_in]`
    /// - output tensors: `[n, d_latent]`, `cluster_probs` `[n, K]`, losses `[1]`
    pub fn forward(&self, h: Tensor<2>, sample: bool) -> LatentOutput {
        let n = h.dims()[0];
        let k = self.n_components;
        let logits = self.qy_logits.forward(h.clone());
        let probs = softmax(logits.clone(), 1);
        let y = if sample {
            let u = logits.random_like(Distribution::Uniform(0.0, 1.0));
            let g = u.add_scalar(1e-20).log().neg().add_scalar(1e-20).log().neg();
            softmax((logits.clone() + g).div_scalar(self.temperature), 1)
        } else {
            probs.clone().argmax(1).reshape([n]).one_hot::<2>(k).float()
        };
        let hy = Tensor::cat(vec![h, y.clone()], 1);
        let hidden = relu(self.qz_hidden.forward(hy));
        let mu = self.qz_mu.forward(hidden.clone());
        let var = softplus(self.qz_var.forward(hidden), 1.0).add_scalar(1e-6);
        let z = if sample {
            let eps = mu.random_like(Distribution::Normal(0.0, 1.0));
            mu.clone() + var.clone().sqrt() * eps
        } else {
            mu.clone()
        };
        let prior_mu = self.y_mu.forward(y.clone());
        let prior_var = softplus(self.y_var.forward(y), 1.0).add_scalar(1e-6);
        let kl_z = gaussian_kl(mu.clone(), var, prior_mu, prior_var).mean();
        let log_q = log_softmax(logits, 1);
        let kl_y = (probs.clone() * log_q).sum_dim(1).mean().add_scalar((k as f64).ln());
        let loss = kl_z.clone().clamp_min(self.lamda).mul_scalar(self.w_li)
            + kl_y.clone().clamp_min(self.lamda).mul_scalar(self.w_en);
        LatentOutput {
            z,
            mean: mu,
            loss,
            terms: vec![("kl_z".into(), kl_z), ("kl_y".into(), kl_y)],
            cluster_probs: Some(probs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{scalar, to_vec};

    #[test]
    fn kl_terms_are_non_negative_and_inference_is_deterministic() {
        let dev = crate::train_device();
        let g = GaussianLatentConfig::new(8, 4).init(&dev);
        let m = GmvaeLatentConfig::new(8, 4).with_n_components(3).with_lamda(0.0).init(&dev);
        for scale in [0.1, 1.0, 5.0] {
            let h = Tensor::<2>::random([6, 8], Distribution::Normal(0.0, scale), &dev);
            let a = g.forward(h.clone(), true);
            assert!(scalar(a.terms[0].1.clone()) >= 0.0);
            let b = m.forward(h.clone(), true);
            for (_, t) in &b.terms {
                assert!(scalar(t.clone()) >= -1e-6);
            }
            let probs = to_vec(b.cluster_probs.unwrap().sum_dim(1));
            assert!(probs.iter().all(|p| (p - 1.0).abs() < 1e-5));
            let (d1, d2) = (m.forward(h.clone(), false), m.forward(h, false));
            assert_eq!(to_vec(d1.z), to_vec(d2.z));
        }
        // KL of identical Gaussians is zero.
        let mu = Tensor::<2>::random([3, 4], Distribution::Default, &dev);
        let var = Tensor::<2>::random([3, 4], Distribution::Uniform(0.5, 2.0), &dev);
        let kl = to_vec(gaussian_kl(mu.clone(), var.clone(), mu, var));
        assert!(kl.iter().all(|v| v.abs() < 1e-6));
    }

    #[test]
    fn floor_stops_gradient_below_lamda_and_sampling_trains() {
        let dev = crate::train_device();
        let m = GmvaeLatentConfig::new(4, 2).with_n_components(2).with_lamda(1e6).init(&dev);
        let h = Tensor::<2>::random([5, 4], Distribution::Default, &dev);
        let out = m.forward(h.clone(), true);
        // Both terms are below λ: the loss is the constant (w_li + w_en)·λ and has no gradient.
        assert!((scalar(out.loss.clone()) - 10.0 * 1e6).abs() < 1.0);
        let grads = (out.loss + out.z.sum().mul_scalar(0.0)).backward();
        let g = m.qy_logits.weight.val().grad(&grads).map(|t| to_vec(t.abs().sum())[0]).unwrap_or(0.0);
        assert_eq!(g, 0.0);
    }
}
