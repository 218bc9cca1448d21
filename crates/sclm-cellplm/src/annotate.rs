//! Cell-type annotation by fine-tuning (paper §4.3; recipe of the published
//! `CellTypeAnnotationPipeline`): encoder + latent + a classification head
//! (`Dropout → Linear(latent → classes)`, the published head with one decoder layer), trained
//! with cross-entropy on the labelled cells while the input keeps being dropped and masked as in
//! pretraining; AdamW with the gene embedding at a tenth of the rate, linear warm-up then
//! reduce-on-plateau on the validation macro-F1, gradient clipping 2.0, best epoch by validation
//! macro-F1.
//!
//! Transductive as published: all cells of a group (labelled or not) form one sequence, the loss
//! sees only the training cells.
use std::path::Path;

use rand::Rng;
use sclm_nn::burn;
use sclm_nn::burn::module::Module;
use sclm_nn::burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use sclm_nn::burn::prelude::*;
use sclm_nn::burn::tensor::TensorData;
use sclm_nn::embedding::CsrRows;
use sclm_nn::train::{
    DecayKind, FitSummary, LossOutput, OptimizerConfig, ParamGroupConfig, Progress, ReduceOnPlateauConfig,
    ScheduleConfig, TrainConfig, Trainable, Trainer,
};
use serde::{Deserialize, Serialize};

use crate::error::{CellPlmError, Result};
use crate::model::{to_vec, CellPlm};
use crate::pretrain::{device_rng, mask_group, MaskConfig, TrainGroup};

/// A CellPLM with a classification head.
#[derive(Module, Debug)]
pub struct CellPlmClassifier {
    /// The pretrained (or fresh) model; its decoder is not used.
    pub plm: CellPlm,
    /// `Linear(latent → classes)`.
    pub head: Linear,
    dropout: Dropout,
}

/// A group with the labels the loss (or the metric) may use.
#[derive(Debug, Clone)]
pub struct LabeledGroup {
    /// The cells (all of them form the sequence).
    pub group: TrainGroup,
    /// Class of each cell, `None` = not used by this batch.
    pub labels: Vec<Option<usize>>,
}

impl CellPlmClassifier {
    /// A head with `n_classes` outputs (and `dropout` before it) on top of `plm` as it is; see
    /// [`CellPlmClassifier::for_finetuning`] for the published fine-tuning model.
    pub fn new(plm: CellPlm, n_classes: usize, dropout: f64) -> Self {
        let device = plm.device();
        let head = LinearConfig::new(plm.latent_dim(), n_classes).init(&device);
        CellPlmClassifier { plm, head, dropout: DropoutConfig::new(dropout).init() }
    }

    /// The published annotation model built on a pretrained `plm` (the authors' pipeline loads
    /// the checkpoint into a model with `latent_mod: ae` and `model_dropout: 0.5`): dropout
    /// `dropout` in the embedder, every encoder layer and before the head; a linear (`ae`)
    /// latent, kept when `plm` has one and freshly initialised otherwise (a GMVAE or VAE latent
    /// has no linear map to reuse); every other weight copied from `plm`. Returns the model and
    /// the names of the pretrained tensors left out (the old latent; the decoder is kept but
    /// unused).
    pub fn for_finetuning(plm: &CellPlm, n_classes: usize, dropout: f64) -> Result<(Self, Vec<String>)> {
        let mut config = plm.config().clone();
        config.model_dropout = dropout;
        config.latent_mod = crate::LatentKind::Ae;
        let device = plm.device();
        let fresh = CellPlm::new(&config, &device)?;
        let (backbone, report) = sclm_nn::train::copy_weights(plm, fresh);
        if !report.errors.is_empty() {
            return Err(CellPlmError::Config(format!(
                "copying the pretrained weights failed: {}",
                report.errors.join("; ")
            )));
        }
        let kept_latent = plm.config().latent_mod == crate::LatentKind::Ae;
        let expected_missing = |p: &String| !kept_latent && p.starts_with("latent.");
        if let Some(p) = report.missing.iter().find(|p| !expected_missing(p)) {
            return Err(CellPlmError::Config(format!("the pretrained model has no tensor for {p}")));
        }
        Ok((Self::new(backbone, n_classes, dropout), report.unused))
    }

    /// Class logits of every cell of a group (no masking).
    ///
    /// # Shapes
    /// - `counts`: `n × genes` → `[n, classes]`
    pub fn logits(&self, counts: &CsrRows<'_>, coords: Option<&[[f32; 2]]>) -> Result<Tensor<2>> {
        let z = self.plm.embed_group(counts, coords)?;
        Ok(self.head.forward(self.dropout.forward(z)))
    }

    /// Predicted class and its softmax probability for every cell of a group.
    pub fn predict(&self, g: &TrainGroup) -> Result<Vec<(usize, f32)>> {
        let counts = CsrRows::new(g.n_genes, &g.indptr, &g.indices, &g.data)?;
        let logits = self.logits(&counts, g.coords.as_deref())?;
        let [n, k] = logits.dims();
        let p = to_vec(burn::tensor::activation::softmax(logits, 1));
        Ok((0..n)
            .map(|i| {
                let row = &p[i * k..(i + 1) * k];
                let (c, v) = row.iter().enumerate().fold((0, f32::MIN), |b, (c, &v)| if v > b.1 { (c, v) } else { b });
                (c, v)
            })
            .collect())
    }

    fn masked_ce<R: Rng>(&self, b: &LabeledGroup, rng: &mut R) -> Result<LossOutput> {
        let g = &b.group;
        let mg = mask_group(g, &g.masking, rng);
        let (ptr, idx, val) = &mg.input;
        let counts = CsrRows::new(g.n_genes, ptr, idx, val)?;
        let coords: Option<Vec<[f32; 2]>> = g.coords.as_ref().map(|cs| mg.kept.iter().map(|&r| cs[r]).collect());
        let logits = self.logits(&counts, coords.as_deref())?;
        let rows: Vec<(usize, usize)> =
            mg.kept.iter().enumerate().filter_map(|(i, &r)| b.labels[r].map(|c| (i, c))).collect();
        let device = logits.device();
        if rows.is_empty() {
            return Ok(LossOutput::new(logits.sum().mul_scalar(0.0)));
        }
        let sel = Tensor::<1, Int>::from_data(
            TensorData::new(rows.iter().map(|r| r.0 as i64).collect::<Vec<_>>(), [rows.len()]),
            &device,
        );
        let y = Tensor::<1, Int>::from_data(
            TensorData::new(rows.iter().map(|r| r.1 as i64).collect::<Vec<_>>(), [rows.len()]),
            &device,
        );
        let loss = sclm_nn::loss::cross_entropy(logits.select(0, sel), y, 0.0);
        let v = to_vec(loss.clone())[0] as f64;
        Ok(LossOutput::new(loss).with_term("ce", v).with_term("labelled_cells", rows.len() as f64))
    }
}

impl Trainable for CellPlmClassifier {
    type Batch = LabeledGroup;

    fn loss(&self, batch: &LabeledGroup) -> Result<LossOutput, sclm_nn::NnError> {
        let mut rng = device_rng(&self.plm.device());
        self.masked_ce(batch, &mut rng).map_err(sclm_nn::NnError::model)
    }
}

/// Macro-F1 of the predictions on the labelled cells of `batches` (classes absent from both the
/// truth and the predictions do not count).
pub fn macro_f1(model: &CellPlmClassifier, batches: &[LabeledGroup]) -> Result<f64> {
    let (mut truth, mut pred) = (Vec::new(), Vec::new());
    for b in batches {
        let p = model.predict(&b.group)?;
        for (i, l) in b.labels.iter().enumerate() {
            if let Some(c) = l {
                truth.push(*c);
                pred.push(p[i].0);
            }
        }
    }
    sclm_eval::metrics::f1_macro(&truth, &pred).map_err(|e| CellPlmError::Input(e.to_string()))
}

/// Fine-tuning settings (defaults: the published annotation recipe, scaled to CPU epochs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FinetuneConfig {
    /// Peak learning rate (published 5e-3).
    pub lr: f64,
    /// AdamW weight decay (published 1e-7).
    pub weight_decay: f64,
    /// Gene-embedding learning rate relative to `lr` (published 0.1).
    pub embedding_lr_scale: f64,
    /// Linear warm-up epochs (published 30 of up to 2,000 epochs); at most a tenth of `epochs`
    /// is used, so that short runs are not spent warming up.
    pub warmup_epochs: usize,
    /// Most epochs (published 2,000 with early stopping).
    pub epochs: usize,
    /// Early stopping after this many epochs without a better validation macro-F1 (published
    /// 200; default 50).
    pub patience: usize,
    /// Reduce-on-plateau patience (published 25).
    pub plateau_patience: usize,
    /// Gradient clipping norm (published 2.0).
    pub clip_grad_norm: f64,
    /// Dropout while fine-tuning (published `model_dropout` for annotation: 0.5): in the
    /// embedder, the encoder layers and before the head of a pretrained model
    /// ([`CellPlmClassifier::for_finetuning`]); `sclm finetune` on a fresh model, which the
    /// published method does not cover, uses it before the head only.
    #[serde(alias = "head_dropout")]
    pub dropout: f64,
    /// Masking during fine-tuning (published: drop 0.3, mask 0.75 × 0.25).
    pub masking: MaskConfig,
    /// Seed.
    pub seed: u64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            lr: 5e-3,
            weight_decay: 1e-7,
            embedding_lr_scale: 0.1,
            warmup_epochs: 30,
            epochs: 300,
            patience: 50,
            plateau_patience: 25,
            clip_grad_norm: 2.0,
            dropout: 0.5,
            masking: MaskConfig { max_cells: 70_000, ..MaskConfig::default() },
            seed: 0,
        }
    }
}

/// Fine-tunes `model` (on an autodiff device) on `train` (labels of the training cells) with
/// model selection on `valid` (labels of the validation cells). With `run_dir`: log.jsonl,
/// checkpoints and the best model there; `resume` continues the run found there (same data,
/// split and settings), ending where an uninterrupted run would. Returns the best model
/// (inference device) and the summary.
pub fn finetune_annotation(
    model: CellPlmClassifier,
    train: &[LabeledGroup],
    valid: &[LabeledGroup],
    cfg: &FinetuneConfig,
    run_dir: Option<&Path>,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<(CellPlmClassifier, FitSummary)> {
    cfg.masking.validate()?;
    if !train.iter().any(|b| b.labels.iter().any(Option::is_some)) {
        return Err(CellPlmError::Input("no labelled training cells".into()));
    }
    let tc = TrainConfig::new(
        OptimizerConfig::new()
            .with_weight_decay(cfg.weight_decay)
            .with_clip_grad_norm(Some(cfg.clip_grad_norm))
            .with_groups(vec![ParamGroupConfig::new("gene_embedding".into(), vec!["plm.embedder.feat_enc".into()])
                .with_lr_scale(cfg.embedding_lr_scale)]),
        ScheduleConfig::new(cfg.lr)
            .with_warmup_steps(cfg.warmup_epochs.min(cfg.epochs / 10).max(1) * train.len().max(1))
            .with_decay(DecayKind::Constant),
    )
    .with_seed(cfg.seed)
    .with_max_epochs(cfg.epochs)
    .with_plateau(Some(ReduceOnPlateauConfig::new().with_patience(cfg.plateau_patience).with_maximize(true)))
    .with_early_stopping_patience(Some(cfg.patience))
    .with_maximize_metric(true);
    let mut trainer = Trainer::start(model, tc, run_dir, resume, serde_json::json!({"task": "annotation"}))?;
    let metric = |m: &CellPlmClassifier, v: &[LabeledGroup]| macro_f1(m, v).unwrap_or(0.0);
    let summary = trainer.fit_with_metric(train, valid, Some(&metric), progress)?;
    let best = trainer.best_model.take().unwrap_or(trainer.model);
    Ok((best.valid(), summary))
}

impl CellPlmClassifier {
    /// Saves the fine-tuned classifier as a directory: `plm/` (a model directory, see
    /// [`CellPlm::save_dir_with`]), `classifier.safetensors` (every weight, module paths) and
    /// `classes.json` (the class names in output order).
    pub fn save_dir(&mut self, dir: impl AsRef<Path>, classes: &[String], pre: &crate::Preprocessing) -> Result<()> {
        let dir = dir.as_ref();
        if classes.len() != self.head.weight.dims()[1] {
            return Err(CellPlmError::Input(format!(
                "{} class names for a head of {}",
                classes.len(),
                self.head.weight.dims()[1]
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| CellPlmError::io(dir, e))?;
        self.plm.save_dir_with(dir.join("plm"), pre)?;
        sclm_nn::train::save_model(self, &dir.join("classifier.safetensors"))?;
        let p = dir.join("classes.json");
        std::fs::write(&p, serde_json::to_string_pretty(classes).expect("serialises"))
            .map_err(|e| CellPlmError::io(&p, e))
    }

    /// Loads a directory written by [`CellPlmClassifier::save_dir`]: the classifier, its class
    /// names and the preprocessing record. Every weight must be present.
    pub fn load_dir(dir: impl AsRef<Path>, device: &Device) -> Result<(Self, Vec<String>, crate::Preprocessing)> {
        let dir = dir.as_ref();
        let (plm, pre) = CellPlm::load_dir(dir.join("plm"), device)?;
        let p = dir.join("classes.json");
        let text = std::fs::read_to_string(&p).map_err(|e| CellPlmError::io(&p, e))?;
        let classes: Vec<String> = serde_json::from_str(&text)
            .map_err(|e| CellPlmError::Json { path: p.display().to_string(), message: e.to_string() })?;
        let model = CellPlmClassifier::new(plm, classes.len(), 0.0);
        let w = dir.join("classifier.safetensors");
        let (model, report) = sclm_nn::train::load_model(model, &w)?;
        if !report.missing.is_empty() {
            return Err(CellPlmError::Config(format!("{} lacks tensors: {}", w.display(), report.missing.join(", "))));
        }
        Ok((model, classes, pre))
    }
}
