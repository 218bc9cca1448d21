//! Zero-shot annotation (paper §3.4, Eq. 10): for a cell and N class texts,
//! `logits = α · softmax_i(cos(cell, text_i) / τ) + (1 − α) · softmax_i(match_i)`, where
//! `match_i` is the cell-text matching probability of the multimodal text encoder. The
//! published notebook (PharMolix/LangCell@69e41ef, `zero-shot.ipynb`) uses τ = 0.05 and
//! α = 0.1; the paper recommends and reports α = 0.2, which is our default. Since matching is
//! slow (one text-encoder pass per cell and class), it can be limited to the `top_k` classes by
//! similarity (paper §3.4): the other classes get match probability 0 before the softmax over
//! the top k only, i.e. their `ctm` share is 0.
use burn::prelude::*;
use burn::tensor::activation::softmax;
use sclm_nn::burn;

use crate::error::{LangCellError, Result};
use crate::family::{for_length_runs, to_vec, LangCellModel};
use crate::model::Batch;
use crate::text::EncodedText;

/// The published and our default weight of similarity (paper §3.4: 0.2).
pub const DEFAULT_ALPHA: f64 = 0.2;

/// How zero-shot scores are combined.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroShotOptions {
    /// Weight of the similarity softmax (default [`DEFAULT_ALPHA`]).
    pub alpha: f64,
    /// Score matching only for the `k` most similar classes (`None`: all).
    pub top_k: Option<usize>,
}

impl Default for ZeroShotOptions {
    fn default() -> Self {
        ZeroShotOptions { alpha: DEFAULT_ALPHA, top_k: None }
    }
}

/// The class texts, tokenized and embedded once.
#[derive(Debug, Clone)]
pub struct ClassTexts {
    /// Token ids of each class text.
    pub encoded: Vec<EncodedText>,
    /// L2-normalised text embeddings, `classes × proj_dim`, row-major.
    pub embeddings: Vec<f32>,
}

/// Per-cell, per-class scores (row-major `cells × classes`).
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroShotScores {
    /// Number of classes.
    pub n_classes: usize,
    /// `softmax(cos / τ)` over classes.
    pub sim: Vec<f32>,
    /// Matching probability `softmax(ctm_head)[1]` (0 outside the top k).
    pub match_prob: Vec<f32>,
    /// Softmax over classes of the matching probabilities (top k only).
    pub ctm: Vec<f32>,
    /// The cell embeddings, `cells × proj_dim`.
    pub cell_embeddings: Vec<f32>,
}

impl ZeroShotScores {
    /// `α · sim + (1 − α) · ctm` per cell and class.
    pub fn combined(&self, alpha: f64) -> Vec<f32> {
        let a = alpha as f32;
        self.sim.iter().zip(&self.ctm).map(|(&s, &c)| a * s + (1.0 - a) * c).collect()
    }

    /// The predicted class of every cell for weight `alpha` (first maximum on ties).
    pub fn predictions(&self, alpha: f64) -> Vec<usize> {
        let k = self.n_classes;
        self.combined(alpha).chunks(k).map(|row| sclm_model::argmax(row).0).collect()
    }
}

impl LangCellModel {
    /// Tokenizes and embeds class texts (unimodal text encoder). A text longer than the text
    /// encoder's positions is cut as published; the cut counts are in the returned encodings.
    pub fn class_texts(&self, texts: &[String]) -> Result<ClassTexts> {
        if texts.is_empty() {
            return Err(LangCellError::Input("no class texts".into()));
        }
        let encoded: Vec<EncodedText> = texts.iter().map(|t| self.text_tokenizer().encode(t)).collect::<Result<_>>()?;
        let d = self.model().config().proj_dim;
        let mut embeddings = vec![0f32; texts.len() * d];
        // One text per call: the published notebook embeds each class text alone, so padding
        // never enters; batching equal lengths would give the same values.
        for (i, e) in encoded.iter().enumerate() {
            let b = Batch::new(std::slice::from_ref(&e.ids), 0, self.device())?;
            let v = to_vec(self.model().encode_texts(&b)?);
            embeddings[i * d..(i + 1) * d].copy_from_slice(&v);
        }
        Ok(ClassTexts { encoded, embeddings })
    }

    /// Zero-shot scores of cells (rank-value token sequences) against class texts.
    pub fn zero_shot_tokens(
        &self,
        cells: &[Vec<u32>],
        classes: &ClassTexts,
        opts: &ZeroShotOptions,
    ) -> Result<ZeroShotScores> {
        let k = classes.encoded.len();
        let d = self.model().config().proj_dim;
        if !(0.0..=1.0).contains(&opts.alpha) {
            return Err(LangCellError::Input(format!("alpha {} is not in [0, 1]", opts.alpha)));
        }
        let top = opts.top_k.unwrap_or(k).clamp(1, k);
        let n = cells.len();
        let (mut sim, mut mp, mut ctm, mut emb) =
            (vec![0f32; n * k], vec![0f32; n * k], vec![0f32; n * k], vec![0f32; n * d]);
        let device = self.device().clone();
        let t = self.model().config().temperature;
        let text_emb =
            Tensor::<2>::from_data(burn::tensor::TensorData::new(classes.embeddings.clone(), [k, d]), &device);
        for_length_runs(cells, |idx| {
            let seqs: Vec<Vec<u32>> = idx.iter().map(|&i| cells[i].clone()).collect();
            let batch = Batch::cells(&seqs, &device)?;
            let (states, e) = self.model().encode_cells(&batch)?;
            let b = idx.len();
            let s = to_vec(softmax(e.clone().matmul(text_emb.clone().transpose()).div_scalar(t), 1));
            let ev = to_vec(e);
            // Classes to match, per cell: the `top` most similar (all by default).
            let chosen: Vec<Vec<usize>> = (0..b)
                .map(|r| {
                    let row = &s[r * k..(r + 1) * k];
                    let mut c: Vec<usize> = (0..k).collect();
                    if top < k {
                        c.sort_by(|&x, &y| row[y].total_cmp(&row[x]).then(x.cmp(&y)));
                        c.truncate(top);
                    }
                    c
                })
                .collect();
            let mut probs = vec![0f32; b * k];
            for (j, text) in classes.encoded.iter().enumerate() {
                let rows: Vec<usize> = (0..b).filter(|&r| chosen[r].contains(&j)).collect();
                if rows.is_empty() {
                    continue;
                }
                let texts = Batch::new(&vec![text.ids.clone(); rows.len()], 0, &device)?;
                let (st, m) = if rows.len() == b {
                    (states.clone(), batch.mask.clone())
                } else {
                    let sel = Tensor::<1, Int>::from_data(
                        burn::tensor::TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [rows.len()]),
                        &device,
                    );
                    (states.clone().select(0, sel.clone()), batch.mask.clone().map(|m| m.select(0, sel)))
                };
                let p = to_vec(self.model().match_probability(&texts, st, m)?);
                for (q, &r) in rows.iter().enumerate() {
                    probs[r * k + j] = p[q];
                }
            }
            for (r, &i) in idx.iter().enumerate() {
                sim[i * k..(i + 1) * k].copy_from_slice(&s[r * k..(r + 1) * k]);
                mp[i * k..(i + 1) * k].copy_from_slice(&probs[r * k..(r + 1) * k]);
                emb[i * d..(i + 1) * d].copy_from_slice(&ev[r * d..(r + 1) * d]);
                // Softmax over the chosen classes only.
                let mx = chosen[r].iter().map(|&j| probs[r * k + j]).fold(f32::MIN, f32::max);
                let z: f32 = chosen[r].iter().map(|&j| (probs[r * k + j] - mx).exp()).sum();
                for &j in &chosen[r] {
                    ctm[i * k + j] = (probs[r * k + j] - mx).exp() / z;
                }
            }
            Ok(())
        })?;
        Ok(ZeroShotScores { n_classes: k, sim, match_prob: mp, ctm, cell_embeddings: emb })
    }
}
