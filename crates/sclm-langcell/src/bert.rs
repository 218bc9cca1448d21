//! BERT (Devlin et al. 2019) as Hugging Face `transformers.BertModel` computes it (4.39):
//! post-LayerNorm layers, absolute learned positions, token-type row 0 added at every position
//! when the model has a token-type table, and, for LangCell's multimodal text encoder, a
//! cross-attention block after the self-attention of every layer (the BLIP `med.py` layer that
//! LangCell's `utils.BertModel` uses; PharMolix/LangCell@69e41ef,
//! `LangCell-annotation-zeroshot/utils.py`, `BertLayer.forward` with `mode='multimodal'`).
//!
//! Module fields are named after the Hugging Face modules; [`Bert::slots`] lists every
//! parameter under its Hugging Face state-dict key.
use burn::module::Param;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::prelude::*;
use sclm_nn::attention::{MultiHeadAttention, MultiHeadAttentionConfig};
use sclm_nn::burn;
use sclm_nn::encoder::ActivationKind;
use sclm_nn::remap::{embedding, layer_norm, linear, Slots};

use crate::config::BertConfig;
use crate::error::{LangCellError, Result};

/// Word, position and (optionally) token-type embeddings, summed and layer-normalised.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// `embeddings.word_embeddings`.
    pub word_embeddings: Embedding,
    /// `embeddings.position_embeddings`.
    pub position_embeddings: Embedding,
    /// `embeddings.token_type_embeddings` (row 0 is added everywhere).
    pub token_type_embeddings: Option<Embedding>,
    /// `embeddings.LayerNorm`.
    pub layer_norm: LayerNorm,
    dropout: Dropout,
}

/// Attention followed by `dense → dropout → LayerNorm(· + input)` (Hugging Face
/// `BertAttention`: `self` and `output`).
#[derive(Module, Debug)]
pub struct BertAttention {
    /// `self.query` / `self.key` / `self.value` and `output.dense` (as out projection).
    pub attn: MultiHeadAttention,
    /// `output.LayerNorm`.
    pub layer_norm: LayerNorm,
    dropout: Dropout,
}

impl BertAttention {
    /// # Shapes
    /// - `x`: `[batch, n, d]`; `context`: `[batch, m, d_kv]` (`None` = self-attention over `x`)
    /// - `mask`: `[batch, m]` (`true` = padded key)
    /// - output `[batch, n, d]`
    fn forward(&self, x: Tensor<3>, context: Option<Tensor<3>>, mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let a = match context {
            Some(c) => self.attn.forward_cross(x.clone(), c, mask),
            None => self.attn.forward(x.clone(), mask),
        };
        self.layer_norm.forward(self.dropout.forward(a) + x)
    }
}

/// One BERT layer: self-attention, cross-attention (multimodal layers), feed-forward.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// `attention`.
    pub attention: BertAttention,
    /// `crossattention` (text encoder with `add_cross_attention`).
    pub crossattention: Option<BertAttention>,
    /// `intermediate.dense`.
    pub intermediate: Linear,
    /// `output.dense`.
    pub output: Linear,
    /// `output.LayerNorm`.
    pub output_norm: LayerNorm,
    dropout: Dropout,
    #[module(skip)]
    activation: ActivationKind,
}

/// States of another encoder that cross-attention reads.
#[derive(Clone, Debug)]
pub struct CrossContext {
    /// `[batch, m, encoder_width]`.
    pub states: Tensor<3>,
    /// `[batch, m]`, `true` = padded.
    pub mask: Option<Tensor<2, Bool>>,
}

impl BertLayer {
    /// # Shapes
    /// - `x`: `[batch, n, d]`, `mask`: `[batch, n]` (`true` = padded)
    /// - output `[batch, n, d]`
    fn forward(&self, x: Tensor<3>, mask: Option<Tensor<2, Bool>>, cross: Option<&CrossContext>) -> Tensor<3> {
        let mut h = self.attention.forward(x, None, mask);
        if let (Some(c), Some(ca)) = (cross, &self.crossattention) {
            h = ca.forward(h, Some(c.states.clone()), c.mask.clone());
        }
        let f = self.output.forward(self.activation.apply(self.intermediate.forward(h.clone())));
        self.output_norm.forward(self.dropout.forward(f) + h)
    }
}

/// A BERT encoder (no pooler: LangCell replaces it by its projections).
#[derive(Module, Debug)]
pub struct Bert {
    /// `embeddings`.
    pub embeddings: BertEmbeddings,
    /// `encoder.layer.{i}`.
    pub layers: Vec<BertLayer>,
    #[module(skip)]
    config: BertConfig,
}

/// Hugging Face's BERT initialisation (`BertPreTrainedModel._init_weights`): weights of every
/// `Linear` and `Embedding` from N(0, `initializer_range`²), biases 0, LayerNorm 1 and 0.
pub(crate) fn bert_init(c: &BertConfig) -> Initializer {
    Initializer::Normal { mean: 0.0, std: c.initializer_range }
}

/// A `Linear` with BERT's initialisation (zero bias).
pub(crate) fn bert_linear(c: &BertConfig, d_in: usize, d_out: usize, device: &Device) -> Linear {
    let mut l = LinearConfig::new(d_in, d_out).with_initializer(bert_init(c)).init(device);
    if let Some(b) = l.bias.as_mut() {
        *b = Param::from_tensor(Tensor::zeros([d_out], device));
    }
    l
}

fn attention_block(c: &BertConfig, d_kv: Option<usize>, device: &Device) -> BertAttention {
    let d_kv_in = d_kv.unwrap_or(c.hidden_size);
    let mut attn = MultiHeadAttentionConfig::new(c.hidden_size, c.num_attention_heads)
        .with_d_kv(d_kv)
        .with_dropout(c.attention_probs_dropout_prob)
        .init(device);
    attn.query_projection = bert_linear(c, c.hidden_size, c.hidden_size, device);
    attn.key_projection = bert_linear(c, d_kv_in, c.hidden_size, device);
    attn.value_projection = bert_linear(c, d_kv_in, c.hidden_size, device);
    attn.out_projection = bert_linear(c, c.hidden_size, c.hidden_size, device);
    BertAttention {
        attn,
        layer_norm: LayerNormConfig::new(c.hidden_size).with_epsilon(c.layer_norm_eps).init(device),
        dropout: DropoutConfig::new(c.hidden_dropout_prob).init(),
    }
}

impl BertConfig {
    /// Builds the encoder with random weights (Hugging Face's BERT initialisation, see
    /// [`bert_init`]).
    pub fn init(&self, device: &Device) -> Result<Bert> {
        self.validate().map_err(LangCellError::Config)?;
        let act = self.activation()?;
        let ln = || LayerNormConfig::new(self.hidden_size).with_epsilon(self.layer_norm_eps).init(device);
        let emb =
            |rows: usize| EmbeddingConfig::new(rows, self.hidden_size).with_initializer(bert_init(self)).init(device);
        let embeddings = BertEmbeddings {
            word_embeddings: emb(self.vocab_size),
            position_embeddings: emb(self.max_position_embeddings),
            token_type_embeddings: (self.type_vocab_size > 0).then(|| emb(self.type_vocab_size)),
            layer_norm: ln(),
            dropout: DropoutConfig::new(self.hidden_dropout_prob).init(),
        };
        let layers = (0..self.num_hidden_layers)
            .map(|_| BertLayer {
                attention: attention_block(self, None, device),
                crossattention: self
                    .add_cross_attention
                    .then(|| attention_block(self, Some(self.cross_width()), device)),
                intermediate: bert_linear(self, self.hidden_size, self.intermediate_size, device),
                output: bert_linear(self, self.intermediate_size, self.hidden_size, device),
                output_norm: ln(),
                dropout: DropoutConfig::new(self.hidden_dropout_prob).init(),
                activation: act,
            })
            .collect();
        Ok(Bert { embeddings, layers, config: self.clone() })
    }
}

impl Bert {
    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Last hidden states.
    ///
    /// # Shapes
    /// - `ids`: `[batch, n]` token ids (`n` ≤ `max_position_embeddings`)
    /// - `mask`: `[batch, n]`, `true` = padding (keys masked in self-attention)
    /// - `cross`: states of the cell encoder for multimodal layers (`None` = unimodal)
    /// - output `[batch, n, hidden]`
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        mask: Option<Tensor<2, Bool>>,
        cross: Option<&CrossContext>,
    ) -> Result<Tensor<3>> {
        let [_, n] = ids.dims();
        if n > self.config.max_position_embeddings {
            return Err(LangCellError::Input(format!(
                "{n} tokens exceed the encoder's {} positions",
                self.config.max_position_embeddings
            )));
        }
        if cross.is_some() && !self.config.add_cross_attention {
            return Err(LangCellError::Config("this encoder has no cross-attention layers".into()));
        }
        let device = ids.device();
        let e = &self.embeddings;
        let mut x = e.word_embeddings.forward(ids);
        let pos = Tensor::<1, Int>::arange(0..n as i64, &device).reshape([1, n]);
        x = x + e.position_embeddings.forward(pos);
        if let Some(tt) = &e.token_type_embeddings {
            let zeros = Tensor::<2, Int>::zeros([1, 1], &device);
            x = x + tt.forward(zeros);
        }
        let mut x = e.dropout.forward(e.layer_norm.forward(x));
        for l in &self.layers {
            x = l.forward(x, mask.clone(), cross);
        }
        Ok(x)
    }

    /// Every parameter under its Hugging Face key (`prefix` + `embeddings.word_embeddings.weight`,
    /// `encoder.layer.0.attention.self.query.weight`, ...).
    pub fn slots<'a>(&'a mut self, t: &mut Slots<'a>, prefix: &str) {
        let e = &mut self.embeddings;
        embedding(t, &format!("{prefix}embeddings.word_embeddings"), &mut e.word_embeddings);
        embedding(t, &format!("{prefix}embeddings.position_embeddings"), &mut e.position_embeddings);
        if let Some(tt) = e.token_type_embeddings.as_mut() {
            embedding(t, &format!("{prefix}embeddings.token_type_embeddings"), tt);
        }
        layer_norm(t, &format!("{prefix}embeddings.LayerNorm"), &mut e.layer_norm);
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("{prefix}encoder.layer.{i}");
            attention_slots(t, &format!("{p}.attention"), &mut l.attention);
            if let Some(c) = l.crossattention.as_mut() {
                attention_slots(t, &format!("{p}.crossattention"), c);
            }
            linear(t, &format!("{p}.intermediate.dense"), &mut l.intermediate);
            linear(t, &format!("{p}.output.dense"), &mut l.output);
            layer_norm(t, &format!("{p}.output.LayerNorm"), &mut l.output_norm);
        }
    }
}

fn attention_slots<'a>(t: &mut Slots<'a>, p: &str, a: &'a mut BertAttention) {
    linear(t, &format!("{p}.self.query"), &mut a.attn.query_projection);
    linear(t, &format!("{p}.self.key"), &mut a.attn.key_projection);
    linear(t, &format!("{p}.self.value"), &mut a.attn.value_projection);
    linear(t, &format!("{p}.output.dense"), &mut a.attn.out_projection);
    layer_norm(t, &format!("{p}.output.LayerNorm"), &mut a.layer_norm);
}
