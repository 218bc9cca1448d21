//! The LangCell model (Zhao et al. 2024, §3.1–3.2): a cell encoder (BERT over rank-value gene
//! tokens), a text encoder (BERT, unimodal for text embeddings, multimodal with cross-attention
//! over the cell encoder's states for cell-text matching), projections of both `[CLS]` states
//! into one L2-normalised space (`cell_proj`, `text_proj`) and the cell-text matching head
//! (`ctm_head`, 2 logits on the multimodal `[CLS]`). As published (PharMolix/LangCell@69e41ef,
//! `LangCell-annotation-zeroshot/zero-shot.ipynb`: `Pooler`, `cell_encode`, `text_encode`,
//! `ctm`).
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::TensorData;
use sclm_nn::burn;
use sclm_nn::loss::l2_normalize;
use sclm_nn::remap::{linear, Slots};

use crate::bert::{bert_linear, Bert, CrossContext};
use crate::config::LangCellConfig;
use crate::error::{LangCellError, Result};
use crate::tokenizer::PAD_TOKEN;

/// The LangCell model.
#[derive(Module, Debug)]
pub struct LangCell {
    /// The cell encoder (`cell_bert/` of the published checkpoint).
    pub cell_bert: Bert,
    /// The text encoder (`text_bert/`).
    pub text_bert: Bert,
    /// `cell_proj.bin`: cell `[CLS]` → shared space.
    pub cell_proj: Linear,
    /// `text_proj.bin`: text `[CLS]` → shared space.
    pub text_proj: Linear,
    /// `ctm_head.bin`: multimodal `[CLS]` → (no match, match) logits.
    pub ctm_head: Linear,
    #[module(skip)]
    config: LangCellConfig,
}

impl LangCellConfig {
    /// Builds the model with random weights.
    pub fn init(&self, device: &Device) -> Result<LangCell> {
        self.validate()?;
        Ok(LangCell {
            cell_bert: self.cell.init(device)?,
            text_bert: self.text.init(device)?,
            cell_proj: bert_linear(&self.cell, self.cell.hidden_size, self.proj_dim, device),
            text_proj: bert_linear(&self.text, self.text.hidden_size, self.proj_dim, device),
            ctm_head: bert_linear(&self.text, self.text.hidden_size, 2, device),
            config: self.clone(),
        })
    }
}

/// Token sequences padded into one batch.
pub struct Batch {
    /// `[batch, n]` ids, padded with [`PAD_TOKEN`] (or the given pad id) on the right.
    pub ids: Tensor<2, Int>,
    /// `[batch, n]`, `true` = padding; `None` when no row is padded.
    pub mask: Option<Tensor<2, Bool>>,
}

impl Batch {
    /// Pads `seqs` to the longest one.
    pub fn new(seqs: &[Vec<u32>], pad: u32, device: &Device) -> Result<Self> {
        let n = seqs.iter().map(Vec::len).max().unwrap_or(0);
        if n == 0 {
            return Err(LangCellError::Input("an empty batch of token sequences".into()));
        }
        let b = seqs.len();
        let mut ids = vec![pad as i64; b * n];
        let mut pads = vec![false; b * n];
        for (i, s) in seqs.iter().enumerate() {
            for (j, &t) in s.iter().enumerate() {
                ids[i * n + j] = t as i64;
            }
            for p in &mut pads[i * n + s.len()..(i + 1) * n] {
                *p = true;
            }
        }
        let any_pad = pads.iter().any(|&p| p);
        Ok(Batch {
            ids: Tensor::from_data(TensorData::new(ids, [b, n]), device),
            mask: any_pad.then(|| Tensor::from_data(TensorData::new(pads, [b, n]), device)),
        })
    }

    /// Cells: padded with `<pad>` (0), as the published collator does.
    pub fn cells(seqs: &[Vec<u32>], device: &Device) -> Result<Self> {
        Self::new(seqs, PAD_TOKEN, device)
    }
}

impl LangCell {
    /// The configuration.
    pub fn config(&self) -> &LangCellConfig {
        &self.config
    }

    /// Cell encoder states and cell embeddings (`normalize(cell_proj(h[:, 0]))`).
    ///
    /// # Shapes
    /// - `cells`: ids `[batch, n]` (`<cls>` first)
    /// - returns (`[batch, n, cell_hidden]`, `[batch, proj_dim]`)
    pub fn encode_cells(&self, cells: &Batch) -> Result<(Tensor<3>, Tensor<2>)> {
        let h = self.cell_bert.forward(cells.ids.clone(), cells.mask.clone(), None)?;
        let emb = l2_normalize(self.cell_proj.forward(cls(&h)));
        Ok((h, emb))
    }

    /// Text embeddings (`normalize(text_proj(h[:, 0]))` of the unimodal text encoder).
    ///
    /// # Shapes
    /// - `texts`: ids `[batch, n]` (`[CLS]` first); returns `[batch, proj_dim]`
    pub fn encode_texts(&self, texts: &Batch) -> Result<Tensor<2>> {
        let h = self.text_bert.forward(texts.ids.clone(), texts.mask.clone(), None)?;
        Ok(l2_normalize(self.text_proj.forward(cls(&h))))
    }

    /// Cell-text matching logits: the multimodal text encoder on each text with
    /// cross-attention over the paired cell's states, `ctm_head` on its `[CLS]`.
    ///
    /// # Shapes
    /// - `texts`: ids `[batch, n]`; `cell_states`: `[batch, m, cell_hidden]`;
    ///   `cell_mask`: `[batch, m]` (`true` = padding)
    /// - returns `[batch, 2]` (no match, match)
    pub fn match_logits(
        &self,
        texts: &Batch,
        cell_states: Tensor<3>,
        cell_mask: Option<Tensor<2, Bool>>,
    ) -> Result<Tensor<2>> {
        let ctx = CrossContext { states: cell_states, mask: cell_mask };
        let h = self.text_bert.forward(texts.ids.clone(), texts.mask.clone(), Some(&ctx))?;
        Ok(self.ctm_head.forward(cls(&h)))
    }

    /// The match probability (`softmax(match_logits)[:, 1]`).
    ///
    /// # Shapes
    /// see [`LangCell::match_logits`]; returns `[batch]`
    pub fn match_probability(
        &self,
        texts: &Batch,
        cell_states: Tensor<3>,
        cell_mask: Option<Tensor<2, Bool>>,
    ) -> Result<Tensor<1>> {
        let l = self.match_logits(texts, cell_states, cell_mask)?;
        let b = l.dims()[0];
        Ok(softmax(l, 1).slice([0..b, 1..2]).reshape([b]))
    }

    /// Every parameter under its published key: `cell_bert.` + the Hugging Face `BertModel`
    /// keys, `text_bert.` + those of LangCell's text `BertModel`, and `cell_proj.*`,
    /// `text_proj.*`, `ctm_head.*` (the `nn.Linear` state dicts of the published `.bin` files).
    pub fn slots(&mut self) -> Slots<'_> {
        let mut t = Vec::new();
        self.cell_bert.slots(&mut t, "cell_bert.");
        self.text_bert.slots(&mut t, "text_bert.");
        linear(&mut t, "cell_proj", &mut self.cell_proj);
        linear(&mut t, "text_proj", &mut self.text_proj);
        linear(&mut t, "ctm_head", &mut self.ctm_head);
        t
    }
}

/// The `[CLS]` (first) state of every row.
///
/// # Shapes
/// `[batch, n, d]` → `[batch, d]`
fn cls(h: &Tensor<3>) -> Tensor<2> {
    let [b, _, d] = h.dims();
    h.clone().slice([0..b, 0..1, 0..d]).reshape([b, d])
}
