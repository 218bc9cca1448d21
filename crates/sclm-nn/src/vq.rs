//! Vector quantiser of scPaLM §3.2 and appendix A.2, following Huh et al. (2023): a codebook
//! with a shared affine re-parameterisation `v_i = c_mean + c_std ⊙ c_i`, nearest-code lookup,
//! straight-through gradient, commitment loss, and replacement of unused codes by recent
//! encoder outputs.
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use rand::Rng;

use crate::util::int1;

/// Configuration of [`VectorQuantizer`].
#[derive(Config, Debug)]
pub struct VectorQuantizerConfig {
    /// Number of codes (scPaLM: 128).
    pub n_codes: usize,
    /// Code dimension (scPaLM: 256).
    pub dim: usize,
    /// Weight β of the commitment loss `‖e − sg(z)‖²` (default 0.25).
    #[config(default = 0.25)]
    pub beta: f64,
}

/// The quantiser.
#[derive(Module, Debug)]
pub struct VectorQuantizer {
    /// Raw codes `c_i`, `[n_codes, dim]`.
    pub codebook: Param<Tensor<2>>,
    /// Shared affine shift `c_mean`, `[dim]`.
    pub c_mean: Param<Tensor<1>>,
    /// Shared affine scale `c_std`, `[dim]`.
    pub c_std: Param<Tensor<1>>,
    beta: f64,
}

/// Result of a quantisation.
#[derive(Debug, Clone)]
pub struct VqOutput {
    /// Straight-through quantised vectors `e + sg(z − e)`, `[n, dim]`.
    pub quantized: Tensor<2>,
    /// Index of the nearest code of each input, `[n]`.
    pub indices: Tensor<1, Int>,
    /// Codebook loss `‖sg(e) − z‖²` (moves codes towards inputs), `[1]`.
    pub codebook_loss: Tensor<1>,
    /// Commitment loss `β‖e − sg(z)‖²` (keeps inputs near codes), `[1]`.
    pub commitment_loss: Tensor<1>,
}

impl VectorQuantizerConfig {
    /// Initialises the codebook (standard normal codes, identity affine map).
    pub fn init(&self, device: &Device) -> VectorQuantizer {
        VectorQuantizer {
            codebook: Param::from_tensor(Tensor::random(
                [self.n_codes, self.dim],
                Distribution::Normal(0.0, 1.0),
                device,
            )),
            c_mean: Param::from_tensor(Tensor::zeros([self.dim], device)),
            c_std: Param::from_tensor(Tensor::ones([self.dim], device)),
            beta: self.beta,
        }
    }
}

impl VectorQuantizer {
    /// The effective codes `v_i = c_mean + c_std ⊙ c_i`.
    ///
    /// # Shapes
    /// output: `[n_codes, dim]`
    pub fn codes(&self) -> Tensor<2> {
        let dim = self.c_mean.dims()[0];
        self.codebook.val() * self.c_std.val().reshape([1, dim]) + self.c_mean.val().reshape([1, dim])
    }

    /// Index of the nearest code (Euclidean) of each row; no gradient.
    ///
    /// # Shapes
    /// `[n, dim]` → `[n]`
    pub fn nearest(&self, e: Tensor<2>) -> Tensor<1, Int> {
        let v = self.codes().detach();
        let e = e.detach();
        let n = e.dims()[0];
        let k = v.dims()[0];
        let d2 = e.clone().powi_scalar(2).sum_dim(1) - e.matmul(v.clone().transpose()).mul_scalar(2.0)
            + v.powi_scalar(2).sum_dim(1).reshape([1, k]);
        d2.argmin(1).reshape([n])
    }

    /// Quantises encoder outputs.
    ///
    /// # Shapes
    /// - `e`: `[n, dim]`
    /// - output: see [`VqOutput`]
    pub fn forward(&self, e: Tensor<2>) -> VqOutput {
        let idx = self.nearest(e.clone());
        let z = self.codes().select(0, idx.clone());
        let codebook_loss = (e.clone().detach() - z.clone()).powi_scalar(2).mean();
        let commitment_loss = (e.clone() - z.clone().detach()).powi_scalar(2).mean().mul_scalar(self.beta);
        let quantized = e.clone() + (z - e).detach();
        VqOutput { quantized, indices: idx, codebook_loss, commitment_loss }
    }

    /// Replaces every code used fewer than `min_count` times (per `usage`) by a random row of
    /// `recent` (recent encoder outputs), mapped back through the affine map so that the
    /// effective code equals that row. Returns the module and the replaced code indices.
    ///
    /// # Shapes
    /// - `usage`: `n_codes` counts; `recent`: `[m, dim]` with `m > 0`
    pub fn replace_unused<R: Rng>(
        mut self,
        usage: &[u64],
        min_count: u64,
        recent: Tensor<2>,
        rng: &mut R,
    ) -> (Self, Vec<usize>) {
        let [k, dim] = self.codebook.dims();
        let m = recent.dims()[0];
        let dead: Vec<usize> = (0..k).filter(|&i| usage.get(i).copied().unwrap_or(0) < min_count).collect();
        if dead.is_empty() || m == 0 {
            return (self, dead);
        }
        let device = self.codebook.device();
        let rows: Vec<i64> = dead.iter().map(|_| rng.random_range(0..m) as i64).collect();
        let picked = recent.detach().select(0, int1(rows, &device));
        let mean = self.c_mean.val().detach().reshape([1, dim]);
        let std = self.c_std.val().detach().reshape([1, dim]);
        let raw = (picked - mean) / std;
        let ids = int1(dead.iter().map(|&i| i as i64).collect(), &device);
        self.codebook = self.codebook.map(|old| {
            let old = old.detach();
            let delta = raw - old.clone().select(0, ids.clone());
            old.select_assign(0, ids, delta, burn::tensor::IndexingUpdateOp::Add)
        });
        (self, dead)
    }
}

/// Counts code usage over many batches (host side).
#[derive(Debug, Clone, Default)]
pub struct CodeUsage {
    /// Count per code.
    pub counts: Vec<u64>,
}

impl CodeUsage {
    /// Zero counts for `n_codes` codes.
    pub fn new(n_codes: usize) -> Self {
        Self { counts: vec![0; n_codes] }
    }

    /// Adds the indices of one batch.
    pub fn add(&mut self, indices: Tensor<1, Int>) {
        for i in indices.into_data().convert::<i64>().try_to_vec::<i64>().unwrap_or_default() {
            if let Some(c) = self.counts.get_mut(i as usize) {
                *c += 1;
            }
        }
    }

    /// Perplexity `exp(H(usage))` of the code distribution (1 = collapse, n_codes = uniform).
    pub fn perplexity(&self) -> f64 {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let h: f64 = self
            .counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / total as f64;
                -p * p.ln()
            })
            .sum();
        h.exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::to_vec;
    use rand::SeedableRng;

    #[test]
    fn straight_through_passes_gradients_and_losses_reach_codebook() {
        let dev = crate::train_device();
        let vq = VectorQuantizerConfig::new(8, 4).init(&dev);
        let e = Tensor::<2>::random([5, 4], Distribution::Default, &dev).require_grad();
        let out = vq.forward(e.clone());
        let w = Tensor::<2>::random([5, 4], Distribution::Default, &dev);
        let loss = (out.quantized * w.clone()).sum() + out.codebook_loss + out.commitment_loss;
        let grads = loss.backward();
        let ge = e.grad(&grads).expect("input gradient");
        // d/de of Σ w⊙q = w exactly; the commitment term adds 2β(e − z)/numel.
        let z = vq.codes().inner().select(0, out.indices.clone());
        let expected = w.inner() + (e.clone().inner() - z).mul_scalar(2.0 * 0.25 / 20.0);
        let diff = to_vec((ge - expected).abs().max())[0];
        assert!(diff < 1e-5, "{diff}");
        assert!(vq.codebook.val().grad(&grads).is_some());
        assert!(vq.c_mean.val().grad(&grads).is_some());
        assert!(vq.c_std.val().grad(&grads).is_some());
    }

    #[test]
    fn nearest_code_is_exact_and_dead_codes_are_replaced() {
        let dev = crate::cpu_device();
        let vq = VectorQuantizerConfig::new(4, 2).init(&dev);
        let codes = to_vec(vq.codes());
        // Inputs equal to codes 1 and 3 map to themselves.
        let e = crate::util::tensor_from(vec![codes[2], codes[3], codes[6], codes[7]], [2, 2], &dev);
        let idx = vq.nearest(e.clone());
        let mut usage = CodeUsage::new(4);
        usage.add(idx.clone());
        assert_eq!(usage.counts, vec![0, 1, 0, 1]);
        assert!((usage.perplexity() - 2.0).abs() < 1e-9);
        let recent = crate::util::tensor_from(vec![10.0, 10.0, -10.0, 5.0], [2, 2], &dev);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (vq2, dead) = vq.replace_unused(&usage.counts, 1, recent, &mut rng);
        assert_eq!(dead, vec![0, 2]);
        let new = to_vec(vq2.codes());
        assert_eq!(&new[2..4], &codes[2..4]);
        assert_eq!(&new[6..8], &codes[6..8]);
        for i in [0usize, 2] {
            let row = &new[i * 2..i * 2 + 2];
            assert!(row == [10.0, 10.0] || row == [-10.0, 5.0], "{row:?}");
        }
    }
}
