//! Attention blocks: softmax multi-head (self and cross), Flowformer (linear, flow-conserving)
//! and Performer FAVOR+ (linear, random features).
//!
//! All blocks take `[batch, seq, d_model]` inputs and an optional key padding mask
//! `[batch, seq]` where `true` marks a padded (ignored) position.
use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softmax};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::util::tensor_from;

/// Large negative value used instead of `-inf` to mask scores, so that a row whose keys are all
/// padded yields a uniform (finite) distribution instead of NaN.
const MASK_VALUE: f32 = -1.0e30;

fn split_heads(x: Tensor<3>, n_heads: usize) -> Tensor<4> {
    let [b, n, d] = x.dims();
    x.reshape([b, n, n_heads, d / n_heads]).swap_dims(1, 2)
}

fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, n, dh] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * dh])
}

/// Key padding mask `[b, nk]` → `[b, h, nq, nk]`.
fn expand_mask(mask: Tensor<2, Bool>, h: usize, nq: usize) -> Tensor<4, Bool> {
    let [b, nk] = mask.dims();
    mask.reshape([b, 1, 1, nk]).expand([b, h, nq, nk])
}

/// Validity of each position as a float `[b, 1, n, 1]` (1 = real token, 0 = padding).
fn valid_weights(mask: Tensor<2, Bool>) -> Tensor<4> {
    let [b, n] = mask.dims();
    mask.bool_not().float().reshape([b, 1, n, 1])
}

// ---------------------------------------------------------------------------------------------
// Softmax multi-head attention
// ---------------------------------------------------------------------------------------------

/// Configuration of [`MultiHeadAttention`] (scaled dot-product, Vaswani et al. 2017).
#[derive(Config, Debug)]
pub struct MultiHeadAttentionConfig {
    /// Model (query) dimension; must be divisible by `n_heads`.
    pub d_model: usize,
    /// Number of heads.
    pub n_heads: usize,
    /// Dimension of the key/value source for cross-attention; `None` (default) = `d_model`.
    #[config(default = "None")]
    pub d_kv: Option<usize>,
    /// Dropout on the attention probabilities (default 0).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Whether the projections carry a bias (default true).
    #[config(default = true)]
    pub bias: bool,
}

/// Configuration of a cross-attention block: queries from one sequence, keys and values from
/// another (of dimension `d_kv`). Builds a [`MultiHeadAttention`] used through
/// [`MultiHeadAttention::forward_cross`].
pub type CrossAttentionConfig = MultiHeadAttentionConfig;

/// Softmax multi-head attention with key padding mask; also used for cross-attention.
#[derive(Module, Debug)]
pub struct MultiHeadAttention {
    /// Query projection `d_model → d_model`.
    pub query_projection: Linear,
    /// Key projection `d_kv → d_model`.
    pub key_projection: Linear,
    /// Value projection `d_kv → d_model`.
    pub value_projection: Linear,
    /// Output projection `d_model → d_model`.
    pub out_projection: Linear,
    dropout: Dropout,
    n_heads: usize,
}

impl MultiHeadAttentionConfig {
    /// Initialises the block on `device`.
    ///
    /// # Panics
    /// If `d_model` is not divisible by `n_heads` (a programming error in the configuration).
    pub fn init(&self, device: &Device) -> MultiHeadAttention {
        assert!(
            self.d_model.is_multiple_of(self.n_heads),
            "d_model {} must be divisible by n_heads {}",
            self.d_model,
            self.n_heads
        );
        let d_kv = self.d_kv.unwrap_or(self.d_model);
        let lin = |i, o| LinearConfig::new(i, o).with_bias(self.bias).init(device);
        MultiHeadAttention {
            query_projection: lin(self.d_model, self.d_model),
            key_projection: lin(d_kv, self.d_model),
            value_projection: lin(d_kv, self.d_model),
            out_projection: lin(self.d_model, self.d_model),
            dropout: DropoutConfig::new(self.dropout).init(),
            n_heads: self.n_heads,
        }
    }
}

impl MultiHeadAttention {
    /// Self-attention.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`
    /// - `key_padding_mask`: `[batch, seq]`, `true` = padded
    /// - output: `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<3>, key_padding_mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        self.forward_cross(x.clone(), x, key_padding_mask)
    }

    /// Cross-attention: queries from `x`, keys and values from `context`.
    ///
    /// # Shapes
    /// - `x`: `[batch, n_q, d_model]`
    /// - `context`: `[batch, n_k, d_kv]`
    /// - `key_padding_mask`: `[batch, n_k]`, `true` = padded
    /// - output: `[batch, n_q, d_model]`
    pub fn forward_cross(
        &self,
        x: Tensor<3>,
        context: Tensor<3>,
        key_padding_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<3> {
        let probs = self.probabilities(x, context.clone(), key_padding_mask);
        let probs = self.dropout.forward(probs);
        let v = split_heads(self.value_projection.forward(context), self.n_heads);
        self.out_projection.forward(merge_heads(probs.matmul(v)))
    }

    /// The attention probabilities `softmax(QKᵀ/√d_head)` per head.
    ///
    /// # Shapes
    /// - `x`: `[batch, n_q, d_model]`, `context`: `[batch, n_k, d_kv]`
    /// - output: `[batch, heads, n_q, n_k]`
    pub fn probabilities(
        &self,
        x: Tensor<3>,
        context: Tensor<3>,
        key_padding_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<4> {
        let q = split_heads(self.query_projection.forward(x), self.n_heads);
        let k = split_heads(self.key_projection.forward(context), self.n_heads);
        let [_, h, nq, dh] = q.dims();
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((dh as f64).sqrt());
        let scores = match key_padding_mask {
            Some(m) => scores.mask_fill(expand_mask(m, h, nq), MASK_VALUE),
            None => scores,
        };
        softmax(scores, 3)
    }
}

// ---------------------------------------------------------------------------------------------
// Flowformer
// ---------------------------------------------------------------------------------------------

/// Configuration of [`FlowAttention`]: Flowformer (Wu et al. 2022) as used by CellPLM's encoder
/// (published CellPLM code, `flowformer` attention; formula in the project notes).
#[derive(Config, Debug)]
pub struct FlowAttentionConfig {
    /// Model dimension; must be divisible by `n_heads`.
    pub d_model: usize,
    /// Number of heads.
    pub n_heads: usize,
    /// Dropout applied to the output (default 0).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// The stabilising epsilon of the flow formula (default 1e-6, as published).
    #[config(default = 1e-6)]
    pub eps: f64,
}

/// Flowformer attention: linear in the sequence length, no N×N matrix is ever formed.
///
/// Per head, with `Q = σ(xW_q)`, `K = σ(xW_k)`, `V = xW_v`:
/// `incoming_i = 1/⟨Q_i+ε, Σ_j K_j+ε⟩`, `outgoing_j = 1/⟨K_j+ε, Σ_i Q_i+ε⟩`,
/// `cin_i = ⟨Q_i+ε, Σ_j K_j outgoing_j+ε⟩`, `cout_j = clamp(⟨K_j+ε, Σ_i Q_i incoming_i+ε⟩, −1, 1)`,
/// `alloc_i = σ(cin_i)`, `comp_j = softmax_j(cout)·N`,
/// `out_i = ((Q_i incoming_i) Σ_j K_jᵀ(V_j comp_j)) alloc_i`, then the output projection.
#[derive(Module, Debug)]
pub struct FlowAttention {
    /// Query projection.
    pub query_projection: Linear,
    /// Key projection.
    pub key_projection: Linear,
    /// Value projection.
    pub value_projection: Linear,
    /// Output projection.
    pub out_projection: Linear,
    dropout: Dropout,
    n_heads: usize,
    eps: f64,
}

impl FlowAttentionConfig {
    /// Initialises the block on `device`.
    ///
    /// # Panics
    /// If `d_model` is not divisible by `n_heads`.
    pub fn init(&self, device: &Device) -> FlowAttention {
        assert!(self.d_model.is_multiple_of(self.n_heads), "d_model must be divisible by n_heads");
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        FlowAttention {
            query_projection: lin(self.d_model, self.d_model),
            key_projection: lin(self.d_model, self.d_model),
            value_projection: lin(self.d_model, self.d_model),
            out_projection: lin(self.d_model, self.d_model),
            dropout: DropoutConfig::new(self.dropout).init(),
            n_heads: self.n_heads,
            eps: self.eps,
        }
    }
}

/// Per-head quantities of the flow formula, all linear in N.
struct FlowParts {
    /// `Q_i · incoming_i`, `[b, h, n, dh]`.
    q_in: Tensor<4>,
    /// `K`, `[b, h, n, dh]` (padded rows zero).
    k: Tensor<4>,
    /// `comp_j`, `[b, h, n, 1]`.
    competition: Tensor<4>,
    /// `alloc_i`, `[b, h, n, 1]`.
    allocation: Tensor<4>,
    /// `V`, `[b, h, n, dh]` (padded rows zero).
    v: Tensor<4>,
}

impl FlowAttention {
    /// Number of heads.
    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// The flow epsilon.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    fn parts(&self, x: Tensor<3>, mask: Option<Tensor<2, Bool>>) -> FlowParts {
        let [b, n, _] = x.dims();
        let eps = self.eps;
        let mut q = sigmoid(split_heads(self.query_projection.forward(x.clone()), self.n_heads));
        let mut k = sigmoid(split_heads(self.key_projection.forward(x.clone()), self.n_heads));
        let mut v = split_heads(self.value_projection.forward(x), self.n_heads);
        let device = q.device();
        // Number of real tokens per batch element, [b, 1, 1, 1].
        let (n_valid, pad) = match mask {
            Some(m) => {
                let w = valid_weights(m.clone());
                q = q * w.clone();
                k = k * w.clone();
                v = v * w.clone();
                let nv = w.sum_dim(2);
                let [_, h, _, _] = q.dims();
                let pad = m.reshape([b, 1, n, 1]).expand([b, h, n, 1]);
                (nv, Some(pad))
            }
            None => (Tensor::<4>::full([b, 1, 1, 1], n as f32, &device), None),
        };
        // ⟨a_i + ε, s + ε⟩ over the head dimension → [b, h, n, 1]
        let dot = |a: Tensor<4>, s: Tensor<4>| (a.add_scalar(eps) * s.add_scalar(eps)).sum_dim(3);
        let sum_k = k.clone().sum_dim(2); // [b,h,1,dh]
        let sum_q = q.clone().sum_dim(2);
        let incoming = dot(q.clone(), sum_k).recip();
        let outgoing = dot(k.clone(), sum_q).recip();
        let conserved_in = dot(q.clone(), (k.clone() * outgoing).sum_dim(2));
        let conserved_out = dot(k.clone(), (q.clone() * incoming.clone()).sum_dim(2)).clamp(-1.0, 1.0);
        let allocation = sigmoid(conserved_in);
        let conserved_out = match pad {
            Some(p) => conserved_out.mask_fill(p, MASK_VALUE),
            None => conserved_out,
        };
        let competition = softmax(conserved_out, 2) * n_valid;
        FlowParts { q_in: q * incoming, k, competition, allocation, v }
    }

    /// Forward pass.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`
    /// - `key_padding_mask`: `[batch, seq]`, `true` = padded (padded cells neither send nor
    ///   receive flow; results for real cells equal those of the unpadded sequence)
    /// - output: `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<3>, key_padding_mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let p = self.parts(x, key_padding_mask);
        // Σ_j K_jᵀ (V_j comp_j): [b, h, dh, dh] — the only "global" tensor, independent of N.
        let kv = p.k.swap_dims(2, 3).matmul(p.v * p.competition);
        let out = p.q_in.matmul(kv) * p.allocation;
        self.dropout.forward(self.out_projection.forward(merge_heads(out)))
    }

    /// The effective cell–cell weights `W[i, j]` such that the per-head output before the output
    /// projection is `Σ_j W[i, j] V_j`: `W_ij = alloc_i · ⟨Q_i incoming_i, K_j⟩ · comp_j`.
    /// Materialises `[batch, heads, seq, seq]`: meant for small sequences (attention export).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`, `key_padding_mask`: `[batch, seq]`
    /// - output: `[batch, heads, seq, seq]`
    pub fn cell_weights(&self, x: Tensor<3>, key_padding_mask: Option<Tensor<2, Bool>>) -> Tensor<4> {
        let p = self.parts(x, key_padding_mask);
        let scores = p.q_in.matmul(p.k.swap_dims(2, 3)); // [b,h,n,n]
        scores * p.allocation * p.competition.swap_dims(2, 3)
    }
}

// ---------------------------------------------------------------------------------------------
// Performer FAVOR+
// ---------------------------------------------------------------------------------------------

/// Configuration of [`PerformerAttention`] (Choromanski et al. 2021, FAVOR+ with positive
/// orthogonal random features), as used by CellLM's Performer encoder.
#[derive(Config, Debug)]
pub struct PerformerAttentionConfig {
    /// Model dimension; must be divisible by `n_heads`.
    pub d_model: usize,
    /// Number of heads.
    pub n_heads: usize,
    /// Number of random features; `None` (default) = ⌊d_head · ln d_head⌋ (266 for d_head 64).
    #[config(default = "None")]
    pub n_features: Option<usize>,
    /// Dropout on the output (default 0).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Seed of the initial random feature draw (default 0).
    #[config(default = 0)]
    pub seed: u64,
}

/// Performer attention with FAVOR+ softmax-kernel features.
///
/// The projection matrix `[n_features, d_head]` is a non-trainable buffer: a [`Param`] with
/// `require_grad = false` (saved with the weights, never updated by an optimiser, no gradient
/// recorded), redrawn only through [`PerformerAttention::redraw_projection`].
#[derive(Module, Debug)]
pub struct PerformerAttention {
    /// Query projection.
    pub query_projection: Linear,
    /// Key projection.
    pub key_projection: Linear,
    /// Value projection.
    pub value_projection: Linear,
    /// Output projection.
    pub out_projection: Linear,
    /// Random feature matrix `[n_features, d_head]` (buffer, not trained).
    pub projection_matrix: Param<Tensor<2>>,
    dropout: Dropout,
    n_heads: usize,
}

/// Draws a Gaussian orthogonal random matrix `[rows, cols]`: blocks of `cols` orthonormal rows
/// (Gram–Schmidt on Gaussian draws), each row rescaled by the norm of an independent Gaussian
/// vector so that rows are marginally Gaussian.
pub fn gaussian_orthogonal_matrix<R: Rng>(rows: usize, cols: usize, rng: &mut R) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * cols);
    while out.len() < rows * cols {
        // One block of up to `cols` orthonormal rows.
        let mut block: Vec<Vec<f64>> = Vec::with_capacity(cols);
        while block.len() < cols {
            let mut v: Vec<f64> = (0..cols).map(|_| rng.sample::<f64, _>(StandardNormal)).collect();
            for u in &block {
                let d: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
                for (a, b) in v.iter_mut().zip(u) {
                    *a -= d * b;
                }
            }
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm < 1e-8 {
                continue;
            }
            v.iter_mut().for_each(|a| *a /= norm);
            block.push(v);
        }
        for u in block {
            if out.len() >= rows * cols {
                break;
            }
            let scale = (0..cols).map(|_| rng.sample::<f64, _>(StandardNormal).powi(2)).sum::<f64>().sqrt();
            out.extend(u.iter().map(|a| (a * scale) as f32));
        }
    }
    out
}

impl PerformerAttentionConfig {
    /// Number of random features this configuration uses.
    pub fn features(&self) -> usize {
        let dh = self.d_model / self.n_heads;
        self.n_features.unwrap_or(((dh as f64) * (dh as f64).ln()).floor().max(1.0) as usize)
    }

    /// Initialises the block on `device`.
    ///
    /// # Panics
    /// If `d_model` is not divisible by `n_heads`.
    pub fn init(&self, device: &Device) -> PerformerAttention {
        use rand::SeedableRng;
        assert!(self.d_model.is_multiple_of(self.n_heads), "d_model must be divisible by n_heads");
        let dh = self.d_model / self.n_heads;
        let m = self.features();
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let proj = tensor_from(gaussian_orthogonal_matrix(m, dh, &mut rng), [m, dh], device);
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        PerformerAttention {
            query_projection: lin(self.d_model, self.d_model),
            key_projection: lin(self.d_model, self.d_model),
            value_projection: lin(self.d_model, self.d_model),
            out_projection: lin(self.d_model, self.d_model),
            projection_matrix: Param::from_tensor(proj).set_require_grad(false),
            dropout: DropoutConfig::new(self.dropout).init(),
            n_heads: self.n_heads,
        }
    }
}

/// Stabiliser added to the random features (as in the reference implementation).
const FAVOR_EPS: f64 = 1e-4;

impl PerformerAttention {
    /// Redraws the random feature matrix from `rng` (same shape, same device).
    pub fn redraw_projection<R: Rng>(mut self, rng: &mut R) -> Self {
        let [m, dh] = self.projection_matrix.dims();
        let device = self.projection_matrix.device();
        let proj = tensor_from(gaussian_orthogonal_matrix(m, dh, rng), [m, dh], &device);
        self.projection_matrix = self.projection_matrix.map(|_| proj);
        self
    }

    /// Positive softmax-kernel features φ(x) `[b, h, n, m]`.
    fn features(&self, x: Tensor<4>, is_query: bool) -> Tensor<4> {
        let [b, h, n, dh] = x.dims();
        let proj = self.projection_matrix.val().detach();
        let m = proj.dims()[0];
        let normalizer = (dh as f64).powf(-0.25);
        let xs = x.mul_scalar(normalizer);
        let dash = xs.clone().matmul(proj.transpose().reshape([1, 1, dh, m]).expand([b, h, dh, m]));
        let diag = xs.powi_scalar(2).sum_dim(3).div_scalar(2.0); // [b,h,n,1]
        let stab =
            if is_query { dash.clone().max_dim(3).detach() } else { dash.clone().max_dim(3).max_dim(2).detach() };
        let _ = n;
        (dash - diag - stab).exp().add_scalar(FAVOR_EPS).mul_scalar((m as f64).powf(-0.5))
    }

    /// Features of queries and keys (padded keys zeroed) and the values (padded rows zeroed).
    fn qkv_features(
        &self,
        x: Tensor<3>,
        key_padding_mask: Option<Tensor<2, Bool>>,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let q = split_heads(self.query_projection.forward(x.clone()), self.n_heads);
        let k = split_heads(self.key_projection.forward(x.clone()), self.n_heads);
        let mut v = split_heads(self.value_projection.forward(x), self.n_heads);
        let qf = self.features(q, true);
        let mut kf = self.features(k, false);
        if let Some(m) = key_padding_mask {
            let w = valid_weights(m);
            kf = kf * w.clone();
            v = v * w;
        }
        (qf, kf, v)
    }

    /// Forward pass (self-attention), linear in the sequence length.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`, `key_padding_mask`: `[batch, seq]` (`true` = padded)
    /// - output: `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<3>, key_padding_mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let (qf, kf, v) = self.qkv_features(x, key_padding_mask);
        let k_sum = kf.clone().sum_dim(2); // [b,h,1,m]
        let denom = (qf.clone() * k_sum).sum_dim(3); // [b,h,n,1]
        let context = kf.swap_dims(2, 3).matmul(v); // [b,h,m,dh]
        let out = qf.matmul(context) / denom;
        self.dropout.forward(self.out_projection.forward(merge_heads(out)))
    }

    /// The implicit attention matrix `φ(Q)φ(K)ᵀ` row-normalised (rows sum to one); for small
    /// sequences (attention export).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`, `key_padding_mask`: `[batch, seq]`
    /// - output: `[batch, heads, seq, seq]`
    pub fn implicit_weights(&self, x: Tensor<3>, key_padding_mask: Option<Tensor<2, Bool>>) -> Tensor<4> {
        let (qf, kf, _) = self.qkv_features(x, key_padding_mask);
        let w = qf.matmul(kf.swap_dims(2, 3));
        let denom = w.clone().sum_dim(3);
        w / denom
    }
}

// ---------------------------------------------------------------------------------------------
// Kind selection
// ---------------------------------------------------------------------------------------------

/// Which attention an encoder layer uses (serialisable).
#[derive(Config, Debug, PartialEq)]
pub enum AttentionKind {
    /// Softmax multi-head attention (quadratic in sequence length).
    Softmax,
    /// Flowformer (linear; CellPLM).
    Flow,
    /// Performer FAVOR+ (linear; CellLM) with `n_features` random features (`None` = default).
    Performer {
        /// Number of random features.
        n_features: Option<usize>,
    },
}

/// A self-attention block of any kind.
#[derive(Module, Debug)]
pub enum Attention {
    /// Softmax attention.
    Softmax(MultiHeadAttention),
    /// Flowformer.
    Flow(FlowAttention),
    /// Performer.
    Performer(PerformerAttention),
}

impl AttentionKind {
    /// Builds the attention block of this kind.
    pub fn init(&self, d_model: usize, n_heads: usize, dropout: f64, seed: u64, device: &Device) -> Attention {
        match self {
            AttentionKind::Softmax => {
                Attention::Softmax(MultiHeadAttentionConfig::new(d_model, n_heads).with_dropout(dropout).init(device))
            }
            AttentionKind::Flow => Attention::Flow(FlowAttentionConfig::new(d_model, n_heads).init(device)),
            AttentionKind::Performer { n_features } => Attention::Performer(
                PerformerAttentionConfig::new(d_model, n_heads)
                    .with_n_features(*n_features)
                    .with_seed(seed)
                    .init(device),
            ),
        }
    }
}

impl Attention {
    /// Self-attention forward of whichever kind.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`, `key_padding_mask`: `[batch, seq]` (`true` = padded)
    /// - output: `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<3>, key_padding_mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        match self {
            Attention::Softmax(a) => a.forward(x, key_padding_mask),
            Attention::Flow(a) => a.forward(x, key_padding_mask),
            Attention::Performer(a) => a.forward(x, key_padding_mask),
        }
    }

    /// The cell–cell (token–token) weights of whichever kind: softmax probabilities, the
    /// Flowformer's effective weights, or the Performer's implicit normalised kernel. Forms an
    /// N×N tensor per head: for small sequences (attention export).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` (the attention input, i.e. after the pre-norm),
    ///   `key_padding_mask`: `[batch, seq]`
    /// - output: `[batch, heads, seq, seq]`
    pub fn weights(&self, x: Tensor<3>, key_padding_mask: Option<Tensor<2, Bool>>) -> Tensor<4> {
        match self {
            Attention::Softmax(a) => a.probabilities(x.clone(), x, key_padding_mask),
            Attention::Flow(a) => a.cell_weights(x, key_padding_mask),
            Attention::Performer(a) => a.implicit_weights(x, key_padding_mask),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_device;
    use crate::util::to_vec;
    use burn::tensor::Distribution;

    fn max_abs_diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
        to_vec((a - b).abs().max())[0]
    }

    #[test]
    fn softmax_rows_sum_to_one_and_mask_zeroes_padded_keys() {
        let dev = cpu_device();
        let att = MultiHeadAttentionConfig::new(16, 4).init(&dev);
        let x = Tensor::<3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), &dev);
        let mask = Tensor::<2, Bool>::from_data([[false, false, false, true, true], [false; 5]], &dev);
        let p = att.probabilities(x.clone(), x, Some(mask));
        let sums = to_vec(p.clone().sum_dim(3));
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
        let padded = to_vec(p.narrow(0, 0, 1).narrow(3, 3, 2));
        assert!(padded.iter().all(|v| *v < 1e-12));
    }

    #[test]
    fn padded_softmax_equals_truncated_sequence() {
        let dev = cpu_device();
        let att = MultiHeadAttentionConfig::new(8, 2).init(&dev);
        let x = Tensor::<3>::random([1, 6, 8], Distribution::Normal(0.0, 1.0), &dev);
        let mask = Tensor::<2, Bool>::from_data([[false, false, false, false, true, true]], &dev);
        let full = att.forward(x.clone(), Some(mask)).narrow(1, 0, 4);
        let trunc = att.forward(x.narrow(1, 0, 4), None);
        assert!(max_abs_diff(full, trunc) < 1e-5);
    }

    #[test]
    fn cross_attention_accepts_other_context_dim() {
        let dev = cpu_device();
        let att = CrossAttentionConfig::new(8, 2).with_d_kv(Some(12)).init(&dev);
        let x = Tensor::<3>::random([2, 3, 8], Distribution::Default, &dev);
        let c = Tensor::<3>::random([2, 7, 12], Distribution::Default, &dev);
        assert_eq!(att.forward_cross(x, c, None).dims(), [2, 3, 8]);
    }

    /// Naive O(N²) evaluation of the published flow formula, on the host, for one head.
    fn flow_reference(q: &[Vec<f64>], k: &[Vec<f64>], v: &[Vec<f64>], eps: f64) -> Vec<Vec<f64>> {
        let n = q.len();
        let d = q[0].len();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x + eps) * (y + eps)).sum::<f64>();
        let sum = |m: &[Vec<f64>]| (0..d).map(|c| m.iter().map(|r| r[c]).sum()).collect::<Vec<f64>>();
        let (sk, sq) = (sum(k), sum(q));
        let inc: Vec<f64> = q.iter().map(|r| 1.0 / dot(r, &sk)).collect();
        let out: Vec<f64> = k.iter().map(|r| 1.0 / dot(r, &sq)).collect();
        let ko: Vec<Vec<f64>> = k.iter().zip(&out).map(|(r, o)| r.iter().map(|x| x * o).collect()).collect();
        let qi: Vec<Vec<f64>> = q.iter().zip(&inc).map(|(r, o)| r.iter().map(|x| x * o).collect()).collect();
        let (sko, sqi) = (sum(&ko), sum(&qi));
        let cin: Vec<f64> = q.iter().map(|r| dot(r, &sko)).collect();
        let cout: Vec<f64> = k.iter().map(|r| dot(r, &sqi).clamp(-1.0, 1.0)).collect();
        let mx = cout.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = cout.iter().map(|c| (c - mx).exp()).sum();
        let comp: Vec<f64> = cout.iter().map(|c| (c - mx).exp() / z * n as f64).collect();
        (0..n)
            .map(|i| {
                let alloc = 1.0 / (1.0 + (-cin[i]).exp());
                (0..d)
                    .map(|c| {
                        (0..n)
                            .map(|j| qi[i].iter().zip(&k[j]).map(|(a, b)| a * b).sum::<f64>() * comp[j] * v[j][c])
                            .sum::<f64>()
                            * alloc
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn flow_matches_naive_formula_and_cell_weights() {
        let dev = cpu_device();
        let att = FlowAttentionConfig::new(4, 1).init(&dev);
        let x = Tensor::<3>::random([1, 5, 4], Distribution::Normal(0.0, 1.0), &dev);
        let rows = |t: Tensor<3>| -> Vec<Vec<f64>> {
            to_vec(t).chunks(4).map(|c| c.iter().map(|v| *v as f64).collect()).collect()
        };
        let q = rows(sigmoid(att.query_projection.forward(x.clone())));
        let k = rows(sigmoid(att.key_projection.forward(x.clone())));
        let v = rows(att.value_projection.forward(x.clone()));
        let expected = flow_reference(&q, &k, &v, 1e-6);
        let flat: Vec<f32> = expected.iter().flatten().map(|v| *v as f32).collect();
        let expected_t = att.out_projection.forward(tensor_from(flat.clone(), [1, 5, 4], &dev));
        assert!(max_abs_diff(att.forward(x.clone(), None), expected_t) < 1e-4);
        // Effective weights reproduce the pre-projection output.
        let w = att.cell_weights(x.clone(), None); // [1,1,5,5]
        let vt = tensor_from(v.iter().flatten().map(|a| *a as f32).collect(), [1, 1, 5, 4], &dev);
        let via_w = w.matmul(vt).reshape([1, 5, 4]);
        assert!(max_abs_diff(via_w, tensor_from(flat, [1, 5, 4], &dev)) < 1e-4);
    }

    #[test]
    fn flow_padding_equals_truncation() {
        let dev = cpu_device();
        let att = FlowAttentionConfig::new(8, 2).init(&dev);
        let x = Tensor::<3>::random([1, 7, 8], Distribution::Normal(0.0, 1.0), &dev);
        let mask = Tensor::<2, Bool>::from_data([[false, false, false, false, false, true, true]], &dev);
        let full = att.forward(x.clone(), Some(mask)).narrow(1, 0, 5);
        let trunc = att.forward(x.narrow(1, 0, 5), None);
        assert!(max_abs_diff(full, trunc) < 1e-4);
    }

    #[test]
    fn flow_cost_is_linear_in_sequence_length() {
        // Deterministic part: the forward graph only holds [.., n, d_head] and [.., d_head,
        // d_head] tensors, checked by running with N far larger than the memory an N×N f32
        // matrix per head would need within the test budget (N = 60_000 → 14 GB per head).
        let dev = cpu_device();
        let att = FlowAttentionConfig::new(16, 2).init(&dev);
        let big = Tensor::<3>::random([1, 60_000, 16], Distribution::Default, &dev);
        assert_eq!(att.forward(big, None).dims(), [1, 60_000, 16]);
        // Loose timing part: 4× the cells must cost well under 16× (quadratic) the time.
        let time = |n: usize| {
            let x = Tensor::<3>::random([1, n, 16], Distribution::Default, &dev);
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = std::time::Instant::now();
                let _ = to_vec(att.forward(x.clone(), None).sum());
                best = best.min(t.elapsed().as_secs_f64());
            }
            best
        };
        // Other tests run concurrently and perturb timings: retry a few times; a quadratic
        // implementation would give ≥ 16 every time.
        let ratio = (0..4).map(|_| time(64_000) / time(16_000)).find(|r| *r < 10.0).unwrap_or(f64::INFINITY);
        assert!(ratio < 10.0, "time ratio for 4x the cells: {ratio}");
    }

    #[test]
    fn performer_approaches_softmax_with_more_features() {
        let dev = cpu_device();
        let (d, h) = (16, 1);
        let soft = MultiHeadAttentionConfig::new(d, h).init(&dev);
        let x = Tensor::<3>::random([1, 12, d], Distribution::Normal(0.0, 0.5), &dev);
        let err = |m: usize| {
            let mut total = 0.0;
            for seed in 0..4 {
                let mut perf = PerformerAttentionConfig::new(d, h).with_n_features(Some(m)).with_seed(seed).init(&dev);
                perf.query_projection = soft.query_projection.clone();
                perf.key_projection = soft.key_projection.clone();
                perf.value_projection = soft.value_projection.clone();
                perf.out_projection = soft.out_projection.clone();
                total += to_vec((perf.forward(x.clone(), None) - soft.forward(x.clone(), None)).abs().mean())[0];
            }
            total / 4.0
        };
        let (coarse, fine) = (err(4), err(2048));
        assert!(fine < coarse * 0.5, "coarse {coarse} fine {fine}");
        assert!(fine < 0.05, "fine {fine}");
    }

    #[test]
    fn performer_projection_is_a_buffer_and_redraws() {
        let dev = crate::train_device();
        let att = PerformerAttentionConfig::new(8, 2).init(&dev);
        assert!(!att.projection_matrix.val().is_require_grad());
        let before = to_vec(att.projection_matrix.val());
        let x = Tensor::<3>::random([1, 4, 8], Distribution::Default, &dev);
        let grads = att.forward(x.clone(), None).sum().backward();
        assert!(att.projection_matrix.val().grad(&grads).is_none());
        assert!(att.query_projection.weight.val().grad(&grads).is_some());
        use rand::SeedableRng;
        let att = att.redraw_projection(&mut rand::rngs::StdRng::seed_from_u64(9));
        assert_ne!(before, to_vec(att.projection_matrix.val()));
        // Orthogonal blocks: rows within the first block are mutually orthogonal.
        let p = to_vec(att.projection_matrix.val());
        let dot: f32 = p[0..4].iter().zip(&p[4..8]).map(|(a, b)| a * b).sum();
        assert!(dot.abs() < 1e-4);
    }
}
