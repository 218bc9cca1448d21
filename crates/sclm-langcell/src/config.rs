//! Configuration: [`BertConfig`] reads and writes Hugging Face `config.json` files (the keys
//! and defaults of `transformers.BertConfig`, so a published `cell_bert/config.json` or
//! `text_bert/config.json` loads as is), and [`LangCellConfig`] puts the two encoders, the
//! projection width and the zero-shot constants together.
use std::path::Path;

use sclm_nn::encoder::ActivationKind;
use serde::{Deserialize, Serialize};

use crate::error::{LangCellError, Result};

/// One BERT encoder (Devlin et al. 2019) as Hugging Face configures it. Defaults are those of
/// `transformers.BertConfig` (BERT-base).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Rows of the token embedding (default 30,522).
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Hidden width (default 768).
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Encoder layers (default 12).
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads (default 12).
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Feed-forward width (default 3,072).
    #[serde(default = "d_ff")]
    pub intermediate_size: usize,
    /// Feed-forward activation: `gelu` (exact erf form, default) or `relu`.
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// Dropout on embeddings and residual branches (default 0.1).
    #[serde(default = "d_drop")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities (default 0.1).
    #[serde(default = "d_drop")]
    pub attention_probs_dropout_prob: f64,
    /// Rows of the absolute position embedding: the longest input (default 512).
    #[serde(default = "d_pos")]
    pub max_position_embeddings: usize,
    /// Rows of the token-type embedding (default 2); 0 = no token-type embedding (LangCell's
    /// text encoder has none). Row 0 is added at every position.
    #[serde(default = "d_types")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (default 1e-12).
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// Standard deviation of the initial weights (default 0.02).
    #[serde(default = "d_init")]
    pub initializer_range: f64,
    /// Padding token id (default 0).
    #[serde(default)]
    pub pad_token_id: usize,
    /// Whether every layer has a cross-attention block over another encoder's states (the
    /// multimodal text encoder; default false).
    #[serde(default)]
    pub add_cross_attention: bool,
    /// Width of the states cross-attention reads (LangCell: the cell encoder's 512; default
    /// `hidden_size` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_width: Option<usize>,
}

fn d_vocab() -> usize {
    30522
}
fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_ff() -> usize {
    3072
}
fn d_act() -> String {
    "gelu".into()
}
fn d_drop() -> f64 {
    0.1
}
fn d_pos() -> usize {
    512
}
fn d_types() -> usize {
    2
}
fn d_eps() -> f64 {
    1e-12
}
fn d_init() -> f64 {
    0.02
}

impl Default for BertConfig {
    fn default() -> Self {
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

impl BertConfig {
    /// The published LangCell cell encoder (paper Table C.0.1; Geneformer 12L): vocabulary
    /// 25,427 (25,426 Geneformer tokens + `<cls>`), hidden 512, 12 layers, 8 heads,
    /// feed-forward 1,024, ReLU, 2,048 positions.
    pub fn langcell_cell() -> Self {
        BertConfig {
            vocab_size: 25_427,
            hidden_size: 512,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            intermediate_size: 1024,
            hidden_act: "relu".into(),
            hidden_dropout_prob: 0.02,
            attention_probs_dropout_prob: 0.02,
            max_position_embeddings: 2048,
            ..Default::default()
        }
    }

    /// The published LangCell text encoder: BERT-base (PubMedBERT vocabulary) without
    /// token-type embedding, with cross-attention over the 512-wide cell states in every layer.
    pub fn langcell_text() -> Self {
        BertConfig { type_vocab_size: 0, add_cross_attention: true, encoder_width: Some(512), ..Default::default() }
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| LangCellError::io(path, e))?;
        let c: BertConfig = serde_json::from_str(&text).map_err(|e| LangCellError::parse(path, e.to_string()))?;
        c.validate().map_err(|m| LangCellError::Config(format!("{}: {m}", path.display())))?;
        Ok(c)
    }

    /// The feed-forward activation.
    pub fn activation(&self) -> Result<ActivationKind> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(ActivationKind::Gelu),
            "relu" => Ok(ActivationKind::Relu),
            other => Err(LangCellError::Config(format!("hidden_act '{other}' is not supported (gelu or relu)"))),
        }
    }

    /// Width of the states cross-attention reads.
    pub fn cross_width(&self) -> usize {
        self.encoder_width.unwrap_or(self.hidden_size)
    }

    /// Checks the sizes (every size positive, heads dividing the width, a known activation).
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(format!("{k} must be positive"));
            }
        }
        // Bounds of a model that fits a machine: a corrupt config must not allocate terabytes.
        if self.vocab_size > 10_000_000 || self.hidden_size > 65_536 || self.num_hidden_layers > 1024 {
            return Err(format!(
                "sizes out of range (vocab_size {}, hidden_size {}, layers {})",
                self.vocab_size, self.hidden_size, self.num_hidden_layers
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.pad_token_id >= self.vocab_size {
            return Err(format!("pad_token_id {} ≥ vocab_size {}", self.pad_token_id, self.vocab_size));
        }
        self.activation().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The config as pretty JSON (Hugging Face keys).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// A LangCell model: cell encoder, text encoder, the projections into the shared space and the
/// constants of zero-shot scoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LangCellConfig {
    /// The cell encoder (over rank-value gene tokens).
    pub cell: BertConfig,
    /// The text encoder (unimodal for text embeddings, multimodal for cell-text matching).
    pub text: BertConfig,
    /// Width of the shared cell/text space of `cell_proj` and `text_proj` (default 256).
    #[serde(default = "d_proj")]
    pub proj_dim: usize,
    /// Temperature of cell-text similarity (published: 0.05, hard-coded, not saved with the
    /// checkpoint; default 0.05).
    #[serde(default = "d_temp")]
    pub temperature: f64,
    /// Longest cell input including `<cls>` (published: 2,048; default 2,048, at most the cell
    /// encoder's positions).
    #[serde(default = "d_cell_tokens")]
    pub max_cell_tokens: usize,
}

fn d_proj() -> usize {
    256
}
fn d_temp() -> f64 {
    0.05
}
fn d_cell_tokens() -> usize {
    2048
}

impl LangCellConfig {
    /// The published LangCell shapes over a cell vocabulary of `cell_vocab` token rows.
    pub fn published() -> Self {
        LangCellConfig {
            cell: BertConfig::langcell_cell(),
            text: BertConfig::langcell_text(),
            proj_dim: d_proj(),
            temperature: d_temp(),
            max_cell_tokens: d_cell_tokens(),
        }
    }

    /// A small CPU preset for `n_genes` genes and a text vocabulary of `text_vocab` tokens:
    /// cell encoder 64 wide, 2 layers, 4 heads, 256 tokens, dropout 0.02 (as published); text encoder 64 wide, 2 layers,
    /// 4 heads, 128 positions; shared space 32. Used by tests and by protocols run without a
    /// pretrained model.
    pub fn small(n_genes: usize, text_vocab: usize) -> Self {
        let cell = BertConfig {
            vocab_size: n_genes + crate::tokenizer::FIRST_GENE_TOKEN as usize + 1,
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 128,
            hidden_act: "relu".into(),
            hidden_dropout_prob: 0.02,
            attention_probs_dropout_prob: 0.02,
            max_position_embeddings: 256,
            ..Default::default()
        };
        let text = BertConfig {
            vocab_size: text_vocab,
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 128,
            max_position_embeddings: 128,
            type_vocab_size: 0,
            add_cross_attention: true,
            encoder_width: Some(64),
            ..Default::default()
        };
        LangCellConfig { cell, text, proj_dim: 32, temperature: d_temp(), max_cell_tokens: 256 }
    }

    /// Checks both encoders and the constants.
    pub fn validate(&self) -> Result<()> {
        self.cell.validate().map_err(|m| LangCellError::Config(format!("cell encoder: {m}")))?;
        self.text.validate().map_err(|m| LangCellError::Config(format!("text encoder: {m}")))?;
        if self.text.add_cross_attention && self.text.cross_width() != self.cell.hidden_size {
            return Err(LangCellError::Config(format!(
                "the text encoder's cross-attention reads {}-wide states but the cell encoder is {} wide",
                self.text.cross_width(),
                self.cell.hidden_size
            )));
        }
        if self.proj_dim == 0 || self.temperature.is_nan() || self.temperature <= 0.0 {
            return Err(LangCellError::Config("proj_dim and temperature must be positive".into()));
        }
        if self.max_cell_tokens < 2 || self.max_cell_tokens > self.cell.max_position_embeddings {
            return Err(LangCellError::Config(format!(
                "max_cell_tokens {} must be in 2..={} (the cell encoder's positions)",
                self.max_cell_tokens, self.cell.max_position_embeddings
            )));
        }
        Ok(())
    }

    /// Reads `langcell.json` of a model directory.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| LangCellError::io(path, e))?;
        let c: LangCellConfig = serde_json::from_str(&text).map_err(|e| LangCellError::parse(path, e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// The config as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
