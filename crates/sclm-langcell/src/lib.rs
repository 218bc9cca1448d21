//! LangCell (Zhao et al. 2024, "LangCell: Language-Cell Pre-training for Cell Identity
//! Understanding") on the sclm model layer.
//!
//! - [`tokenizer`]: Geneformer's rank-value encoding over the published vocabulary.
//! - [`text`]: WordPiece text tokenization (Hugging Face `tokenizers`).
//! - [`bert`]: BERT as `transformers.BertModel` computes it, with LangCell's multimodal
//!   cross-attention layers.
//! - [`model`]: the cell and text encoders with `cell_proj`, `text_proj` and `ctm_head`.
//! - [`ontology`]: class texts from the Cell Ontology, label matching with a report.
//! - [`weights`]: published key names, the model directory, import of the published layout.
//! - [`corpus`]: datasets as token sequences; gene medians of a new corpus.
//! - [`pretrain`]: both pretraining stages (MGM, C-C, C-T, CTM) as one training step.
//! - [`run`]: a whole pretraining run over AnnData files (vocabulary, texts, split, zero-shot check).
//! - [`fewshot`]: few-shot tuning of the zero-shot model (the published recipe).
//! - [`finetune`]: fine-tuned annotation (the published recipe) through the model layer.
//! - [`family`]: [`LangCellModel`] implements `sclm_model::CellModel`.
//! - [`annotate`]: zero-shot annotation of an AnnData.
//! - [`zeroshot`]: zero-shot annotation from class texts (similarity and cell-text matching).
#![warn(missing_docs)]

pub mod annotate;
pub mod bench;
pub mod bert;
pub mod config;
pub mod corpus;
pub mod error;
pub mod family;
pub mod fewshot;
pub mod finetune;
pub mod model;
pub mod ontology;
pub mod pretrain;
pub mod run;
pub mod text;
pub mod tokenizer;
pub mod weights;
pub mod zeroshot;

pub use config::{BertConfig, LangCellConfig};
pub use error::{LangCellError, Result};
pub use family::{LangCellModel, FAMILY, NAME};
pub use model::{Batch, LangCell};
pub use text::TextTokenizer;
pub use tokenizer::RankValueTokenizer;
