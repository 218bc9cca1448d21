//! Transformer encoder layer and stack (Vaswani et al. 2017), pre-norm or post-norm, generic
//! over the attention kind ([`AttentionKind`]), LayerNorm or GroupNorm.
use burn::nn::{Dropout, DropoutConfig, GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, relu};

use crate::attention::{Attention, AttentionKind};

/// Feed-forward activation.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum ActivationKind {
    /// GELU with the exact erf form (PyTorch's default `gelu`).
    Gelu,
    /// ReLU.
    Relu,
}

impl ActivationKind {
    /// Applies the activation.
    ///
    /// # Shapes
    /// any → same
    pub fn apply<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            ActivationKind::Gelu => gelu(x),
            ActivationKind::Relu => relu(x),
        }
    }
}

/// Normalisation layer kind.
#[derive(Config, Debug, PartialEq)]
pub enum NormKind {
    /// LayerNorm over the feature dimension.
    LayerNorm,
    /// GroupNorm with `groups` groups over the feature dimension of each token (CellPLM uses 4).
    GroupNorm {
        /// Number of groups; must divide the feature dimension.
        groups: usize,
    },
}

/// A normalisation module over the last (feature) dimension.
#[derive(Module, Debug)]
pub enum Norm {
    /// LayerNorm.
    Layer(LayerNorm),
    /// GroupNorm.
    Group(GroupNorm),
}

impl NormKind {
    /// Builds the norm for `d` features with epsilon `eps`.
    pub fn init(&self, d: usize, eps: f64, device: &Device) -> Norm {
        match self {
            NormKind::LayerNorm => Norm::Layer(LayerNormConfig::new(d).with_epsilon(eps).init(device)),
            NormKind::GroupNorm { groups } => {
                Norm::Group(GroupNormConfig::new(*groups, d).with_epsilon(eps).init(device))
            }
        }
    }
}

impl Norm {
    /// Normalises over the last dimension.
    ///
    /// # Shapes
    /// `[..., d]` → `[..., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Norm::Layer(n) => n.forward(x),
            Norm::Group(n) => {
                let dims = x.dims();
                let d = dims[D - 1];
                let rows = dims.iter().take(D - 1).product::<usize>();
                n.forward(x.reshape([rows, d])).reshape(dims)
            }
        }
    }
}

/// Configuration of one [`EncoderLayer`].
#[derive(Config, Debug)]
pub struct EncoderLayerConfig {
    /// Model dimension.
    pub d_model: usize,
    /// Number of attention heads.
    pub n_heads: usize,
    /// Feed-forward hidden dimension.
    pub d_ff: usize,
    /// Dropout on the residual branches and inside the feed-forward block (default 0.1).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Pre-norm (`x + f(norm(x))`, default true) or post-norm (`norm(x + f(x))`).
    #[config(default = true)]
    pub norm_first: bool,
    /// Feed-forward activation (default exact GELU).
    #[config(default = "ActivationKind::Gelu")]
    pub activation: ActivationKind,
    /// Normalisation (default LayerNorm).
    #[config(default = "NormKind::LayerNorm")]
    pub norm: NormKind,
    /// Norm epsilon (default 1e-5).
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Attention kind (default softmax).
    #[config(default = "AttentionKind::Softmax")]
    pub attention: AttentionKind,
    /// Seed for random features of Performer attention (default 0).
    #[config(default = 0)]
    pub seed: u64,
}

/// One transformer encoder layer: self-attention and a two-layer feed-forward block, each with
/// a residual connection.
#[derive(Module, Debug)]
pub struct EncoderLayer {
    /// Self-attention.
    pub self_attn: Attention,
    /// Feed-forward input projection `d_model → d_ff`.
    pub ff_in: Linear,
    /// Feed-forward output projection `d_ff → d_model`.
    pub ff_out: Linear,
    /// Norm of the attention branch.
    pub norm1: Norm,
    /// Norm of the feed-forward branch.
    pub norm2: Norm,
    dropout: Dropout,
    #[module(skip)]
    activation: ActivationKind,
    norm_first: bool,
    #[module(skip)]
    norm_eps: f64,
}

impl EncoderLayerConfig {
    /// Initialises the layer on `device`.
    pub fn init(&self, device: &Device) -> EncoderLayer {
        EncoderLayer {
            self_attn: self.attention.init(self.d_model, self.n_heads, self.dropout, self.seed, device),
            ff_in: LinearConfig::new(self.d_model, self.d_ff).init(device),
            ff_out: LinearConfig::new(self.d_ff, self.d_model).init(device),
            norm1: self.norm.init(self.d_model, self.norm_eps, device),
            norm2: self.norm.init(self.d_model, self.norm_eps, device),
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: self.activation,
            norm_first: self.norm_first,
            norm_eps: self.norm_eps,
        }
    }
}

impl EncoderLayer {
    /// Whether the layer normalises before each branch (pre-norm).
    pub fn is_norm_first(&self) -> bool {
        self.norm_first
    }

    /// The epsilon of the layer's norms.
    pub fn norm_eps(&self) -> f64 {
        self.norm_eps
    }

    /// The feed-forward activation.
    pub fn activation(&self) -> ActivationKind {
        self.activation
    }

    fn feed_forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.dropout.forward(self.activation.apply(self.ff_in.forward(x)));
        self.ff_out.forward(h)
    }

    /// Forward pass.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`, `key_padding_mask`: `[batch, seq]` (`true` = padded)
    /// - output: `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<3>, key_padding_mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        if self.norm_first {
            let x = x.clone() + self.dropout.forward(self.self_attn.forward(self.norm1.forward(x), key_padding_mask));
            x.clone() + self.dropout.forward(self.feed_forward(self.norm2.forward(x)))
        } else {
            let x = self.norm1.forward(x.clone() + self.dropout.forward(self.self_attn.forward(x, key_padding_mask)));
            self.norm2.forward(x.clone() + self.dropout.forward(self.feed_forward(x)))
        }
    }
}

impl EncoderLayer {
    /// The attention weights this layer applies to input `x` (norm applied first in pre-norm
    /// layers). For small sequences (attention export).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`, `key_padding_mask`: `[batch, seq]`
    /// - output: `[batch, heads, seq, seq]`
    pub fn attention_weights(&self, x: Tensor<3>, key_padding_mask: Option<Tensor<2, Bool>>) -> Tensor<4> {
        let x = if self.norm_first { self.norm1.forward(x) } else { x };
        self.self_attn.weights(x, key_padding_mask)
    }
}

/// Configuration of an [`Encoder`] stack.
#[derive(Config, Debug)]
pub struct EncoderConfig {
    /// The layer configuration (shared by all layers).
    pub layer: EncoderLayerConfig,
    /// Number of layers.
    pub n_layers: usize,
    /// Whether a final norm follows the stack (default false; pre-norm stacks usually want it).
    #[config(default = false)]
    pub final_norm: bool,
}

/// A stack of encoder layers.
#[derive(Module, Debug)]
pub struct Encoder {
    /// The layers, in order.
    pub layers: Vec<EncoderLayer>,
    /// Optional final norm.
    pub norm: Option<Norm>,
}

impl EncoderConfig {
    /// Initialises the stack on `device` (Performer layers get distinct feature seeds).
    pub fn init(&self, device: &Device) -> Encoder {
        let layers = (0..self.n_layers)
            .map(|i| self.layer.clone().with_seed(self.layer.seed.wrapping_add(i as u64)).init(device))
            .collect();
        let norm = self.final_norm.then(|| self.layer.norm.init(self.layer.d_model, self.layer.norm_eps, device));
        Encoder { layers, norm }
    }
}

impl Encoder {
    /// Forward pass through all layers.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`, `key_padding_mask`: `[batch, seq]` (`true` = padded)
    /// - output: `[batch, seq, d_model]`
    pub fn forward(&self, mut x: Tensor<3>, key_padding_mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        for layer in &self.layers {
            x = layer.forward(x, key_padding_mask.clone());
        }
        match &self.norm {
            Some(n) => n.forward(x),
            None => x,
        }
    }

    /// Forward pass that also returns every layer's attention weights (small sequences only).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`, `key_padding_mask`: `[batch, seq]`
    /// - output: `[batch, seq, d_model]` and one `[batch, heads, seq, seq]` per layer
    pub fn forward_with_attention(
        &self,
        mut x: Tensor<3>,
        key_padding_mask: Option<Tensor<2, Bool>>,
    ) -> (Tensor<3>, Vec<Tensor<4>>) {
        let mut maps = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            maps.push(layer.attention_weights(x.clone(), key_padding_mask.clone()));
            x = layer.forward(x, key_padding_mask.clone());
        }
        let x = match &self.norm {
            Some(n) => n.forward(x),
            None => x,
        };
        (x, maps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::to_vec;
    use burn::tensor::Distribution;

    fn diff(a: Tensor<3>, b: Tensor<3>) -> f32 {
        to_vec((a - b).abs().max())[0]
    }

    #[test]
    fn dropout_drops_in_training_and_eval_is_deterministic() {
        let dev = crate::train_device();
        for kind in [AttentionKind::Softmax, AttentionKind::Flow, AttentionKind::Performer { n_features: None }] {
            for norm_first in [true, false] {
                let cfg = EncoderConfig::new(
                    EncoderLayerConfig::new(16, 2, 32)
                        .with_dropout(0.3)
                        .with_attention(kind.clone())
                        .with_norm_first(norm_first),
                    2,
                );
                let enc = cfg.init(&dev);
                let x = Tensor::<3>::random([2, 6, 16], Distribution::Default, &dev);
                let t1 = enc.forward(x.clone(), None);
                let t2 = enc.forward(x.clone(), None);
                assert!(diff(t1, t2) > 1e-4, "training passes should differ ({kind:?})");
                let ev = enc.valid();
                let xe = x.inner();
                let e1 = ev.forward(xe.clone(), None);
                let e2 = ev.forward(xe, None);
                assert_eq!(to_vec(e1), to_vec(e2));
            }
        }
    }

    #[test]
    fn group_norm_and_relu_layer_normalises_post_norm_output() {
        let dev = crate::cpu_device();
        let layer = EncoderLayerConfig::new(8, 2, 16)
            .with_norm(NormKind::GroupNorm { groups: 4 })
            .with_activation(ActivationKind::Relu)
            .with_norm_first(false)
            .init(&dev);
        let y = layer.forward(Tensor::<3>::random([1, 3, 8], Distribution::Normal(3.0, 2.0), &dev), None);
        // Post-norm output with unit gamma and zero beta: each group of 2 features has mean 0.
        let v = to_vec(y);
        for g in v.chunks(2) {
            assert!((g[0] + g[1]).abs() < 1e-4);
        }
    }

    #[test]
    fn attention_maps_are_row_stochastic_for_softmax_and_performer() {
        let dev = crate::cpu_device();
        for kind in [AttentionKind::Softmax, AttentionKind::Performer { n_features: Some(32) }, AttentionKind::Flow] {
            let enc = EncoderConfig::new(EncoderLayerConfig::new(8, 2, 16).with_attention(kind.clone()), 2).init(&dev);
            let x = Tensor::<3>::random([1, 5, 8], Distribution::Default, &dev);
            let (y, maps) = enc.forward_with_attention(x.clone(), None);
            assert_eq!(to_vec(y), to_vec(enc.forward(x, None)));
            assert_eq!(maps.len(), 2);
            assert_eq!(maps[0].dims(), [1, 2, 5, 5]);
            if kind != AttentionKind::Flow {
                let sums = to_vec(maps[1].clone().sum_dim(3));
                assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-4), "{kind:?} {sums:?}");
            }
        }
    }

    #[test]
    fn gelu_is_exact_erf_form() {
        let dev = crate::cpu_device();
        let x = Tensor::<1>::from_floats([1.0f32, -0.5, 2.0], &dev);
        let y = to_vec(ActivationKind::Gelu.apply(x));
        // 0.5·x·(1+erf(x/√2)) computed with the standard values erf(1/√2)=0.682689492…
        assert!((y[0] - 0.841_344_7).abs() < 1e-5);
        assert!((y[1] - (-0.154_268_6)).abs() < 1e-5);
        assert!((y[2] - 1.954_5).abs() < 1e-4);
    }
}
