//! Few-shot annotation (LangCell §4.2), the published recipe (PharMolix/LangCell@69e41ef,
//! `LangCell-annotation-fewshot/fewshot.py`): `k` labelled cells per class tune the cell encoder
//! with `cell_proj` and the text encoder with `text_proj` (Adam, lr 1e-5, 10 epochs, batch 12,
//! `ctm_head` frozen) on `CE(cos(cell, text)/0.05) + CE(match)`, where `match` is the
//! cells × classes matrix of matching probabilities used as logits, as published. The tuned
//! model then annotates zero-shot as before.
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::TensorData;
use sclm_nn::burn;
use sclm_nn::loss::cross_entropy;
use sclm_nn::train::{
    FitSummary, LossOutput, OptimizerConfig, Progress, ScheduleConfig, TrainConfig, Trainable, Trainer,
};
use sclm_nn::NnError;

use crate::error::{LangCellError, Result};
use crate::family::{to_vec, LangCellModel};
use crate::model::{Batch, LangCell};

/// The published few-shot settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FewShotConfig {
    /// Passes over the labelled cells (published 10).
    pub epochs: usize,
    /// Cells per step (published 12).
    pub batch_size: usize,
    /// Adam learning rate (published 1e-5).
    pub lr: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for FewShotConfig {
    fn default() -> Self {
        FewShotConfig { epochs: 10, batch_size: 12, lr: 1e-5, seed: 0 }
    }
}

/// The model being tuned, with the class texts it scores against.
#[derive(Module, Debug)]
struct Tuned {
    lc: LangCell,
    #[module(skip)]
    texts: Vec<Vec<u32>>,
}

#[derive(Debug, Clone)]
struct ShotBatch {
    cells: Vec<Vec<u32>>,
    labels: Vec<i64>,
}

impl Trainable for Tuned {
    type Batch = ShotBatch;

    fn loss(&self, b: &ShotBatch) -> std::result::Result<LossOutput, NnError> {
        let nn = |e: LangCellError| NnError::Config(e.to_string());
        let device = self.lc.cell_proj.weight.device();
        let cb = Batch::cells(&b.cells, &device).map_err(nn)?;
        let (states, e) = self.lc.encode_cells(&cb).map_err(nn)?;
        let tb = Batch::new(&self.texts, 0, &device).map_err(nn)?;
        let t = self.lc.encode_texts(&tb).map_err(nn)?;
        let n = b.cells.len();
        let y = Tensor::<1, Int>::from_data(TensorData::new(b.labels.clone(), [n]), &device);
        let sim = e.matmul(t.transpose()).div_scalar(self.lc.config().temperature);
        let loss_sim = cross_entropy(sim, y.clone(), 0.0);
        let mut cols = Vec::with_capacity(self.texts.len());
        for text in &self.texts {
            let pairs = Batch::new(&vec![text.clone(); n], 0, &device).map_err(nn)?;
            let p = self.lc.match_probability(&pairs, states.clone(), cb.mask.clone()).map_err(nn)?;
            cols.push(p.reshape([n, 1]));
        }
        let loss_ctm = cross_entropy(Tensor::cat(cols, 1), y, 0.0);
        let (vs, vc) = (to_vec(loss_sim.clone())[0] as f64, to_vec(loss_ctm.clone())[0] as f64);
        Ok(LossOutput::new(loss_sim + loss_ctm).with_term("sim", vs).with_term("ctm", vc))
    }
}

/// `k` cells per class drawn with `seed` from the cells whose label is `Some` (fewer when a
/// class has fewer): returns their indices, sorted.
pub fn draw_shots(labels: &[Option<usize>], n_classes: usize, k: usize, seed: u64) -> Vec<usize> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for c in 0..n_classes {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == Some(c)).collect();
        idx.shuffle(&mut rng);
        out.extend(idx.into_iter().take(k));
    }
    out.sort_unstable();
    out
}

impl LangCellModel {
    /// Tunes a copy of the model on labelled cells (`cells[i]` of class `labels[i]`, an index into
    /// `class_texts`) per the published few-shot recipe; `device` must be an autodiff device.
    pub fn few_shot(
        &self,
        cells: &[Vec<u32>],
        labels: &[usize],
        class_texts: &[String],
        cfg: &FewShotConfig,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> Result<(LangCellModel, FitSummary)> {
        if cells.is_empty() || cells.len() != labels.len() {
            return Err(LangCellError::Input(format!("{} labelled cells, {} labels", cells.len(), labels.len())));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l >= class_texts.len()) {
            return Err(LangCellError::Input(format!("label {bad} but {} class texts", class_texts.len())));
        }
        let texts: Vec<Vec<u32>> =
            class_texts.iter().map(|t| Ok(self.text_tokenizer().encode(t)?.ids)).collect::<Result<_>>()?;
        sclm_nn::seed_everything(cfg.seed, device);
        let mut lc = self.model().copy_to(device)?;
        lc.ctm_head = lc.ctm_head.no_grad();
        let tuned = Tuned { lc, texts };
        let batches: Vec<ShotBatch> = {
            use rand::seq::SliceRandom;
            use rand::SeedableRng;
            let mut order: Vec<usize> = (0..cells.len()).collect();
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(cfg.seed));
            order
                .chunks(cfg.batch_size.max(1))
                .map(|c| ShotBatch {
                    cells: c.iter().map(|&i| cells[i].clone()).collect(),
                    labels: c.iter().map(|&i| labels[i] as i64).collect(),
                })
                .collect()
        };
        let tc = TrainConfig::new(OptimizerConfig::new().with_weight_decay(0.0), ScheduleConfig::new(cfg.lr))
            .with_seed(cfg.seed)
            .with_max_epochs(cfg.epochs)
            .with_shuffle(false);
        let mut trainer = Trainer::new(tuned, tc);
        let summary = trainer.fit(&batches, &[], progress)?;
        let tuned = trainer.model.valid();
        let lc = tuned.lc.copy_to(&sclm_nn::cpu_device())?;
        let out = LangCellModel::new(
            lc,
            self.gene_tokenizer().clone(),
            self.text_tokenizer().clone(),
            sclm_nn::cpu_device(),
        )?;
        Ok((out, summary))
    }
}
