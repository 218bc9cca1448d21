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
use sclm_model::{ClassifierHead, ClassifierHeadConfig, FinetuneRecipe, Manifest, ModelKind};
use sclm_nn::burn;
use sclm_nn::burn::module::Module;
use sclm_nn::burn::prelude::*;
use sclm_nn::burn::tensor::TensorData;
use sclm_nn::embedding::CsrRows;
use sclm_nn::train::{FitSummary, LossOutput, Progress, Trainable, Trainer};
use serde::{Deserialize, Serialize};

use crate::error::{CellPlmError, Result};
use crate::model::{to_vec, CellPlm};
use crate::pretrain::{device_rng, mask_group, MaskConfig, TrainGroup};

/// A CellPLM with the generic classification head ([`ClassifierHead`]: dropout, then
/// `Linear(latent → classes)`).
#[derive(Module, Debug)]
pub struct CellPlmClassifier {
    /// The pretrained (or fresh) model; its decoder is not used.
    pub plm: CellPlm,
    /// The classification head.
    pub head: ClassifierHead,
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
        let head = ClassifierHeadConfig::new(plm.latent_dim(), n_classes).with_dropout(dropout).init(&plm.device());
        CellPlmClassifier { plm, head }
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
        Ok(self.head.forward(z))
    }

    /// Softmax probabilities of every cell of a group, row-major `cells × classes` (no masking).
    ///
    /// # Shapes
    /// - `counts`: `n × genes` → `n · classes` values
    pub fn probabilities(&self, counts: &CsrRows<'_>, coords: Option<&[[f32; 2]]>) -> Result<Vec<f32>> {
        Ok(to_vec(burn::tensor::activation::softmax(self.logits(counts, coords)?, 1)))
    }

    /// Predicted class and its softmax probability for every cell of a group.
    pub fn predict(&self, g: &TrainGroup) -> Result<Vec<(usize, f32)>> {
        let counts = CsrRows::new(g.n_genes, &g.indptr, &g.indices, &g.data)?;
        let p = self.probabilities(&counts, g.coords.as_deref())?;
        let k = self.head.n_classes();
        Ok(p.chunks_exact(k.max(1)).map(sclm_model::argmax).collect())
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

    /// The published backbone names, the head as `head.weight` `[classes, latent]` and
    /// `head.bias` ([`crate::weights::classifier_name_table`]).
    fn weight_naming(&self) -> Option<std::sync::Arc<dyn sclm_nn::train::WeightNaming>> {
        crate::weights::as_naming(crate::weights::classifier_name_table(self))
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

/// Fine-tuning settings: the generic recipe (defaults: the published annotation recipe, scaled
/// to CPU epochs) and CellPLM's input masking while fine-tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FinetuneConfig {
    /// Optimiser, schedule, early stopping, dropout, seed.
    #[serde(flatten)]
    pub recipe: FinetuneRecipe,
    /// Masking during fine-tuning (published: drop 0.3, mask 0.75 × 0.25).
    pub masking: MaskConfig,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            recipe: FinetuneRecipe::default(),
            masking: MaskConfig { max_cells: 70_000, ..MaskConfig::default() },
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
    let tc = cfg.recipe.train_config(train.len(), vec!["plm.embedder.feat_enc".into()]);
    let mut trainer = Trainer::start(model, tc, run_dir, resume, serde_json::json!({"task": "annotation"}))?;
    let metric = |m: &CellPlmClassifier, v: &[LabeledGroup]| macro_f1(m, v).unwrap_or(0.0);
    let summary = trainer.fit_with_metric(train, valid, Some(&metric), progress)?;
    let best = trainer.best_model.take().unwrap_or(trainer.model);
    Ok((best.valid(), summary))
}

impl CellPlmClassifier {
    /// Saves the fine-tuned classifier as a model directory (atomic): the files of
    /// [`CellPlm::save_dir`] (the backbone, published names, once), `head.safetensors`
    /// (`head.weight` `[classes, latent]`, `head.bias`) and `model.json` of kind `classifier`
    /// with the class names in output order.
    pub fn save_dir(&mut self, dir: impl AsRef<Path>, classes: &[String], pre: &crate::Preprocessing) -> Result<()> {
        if classes.len() != self.head.n_classes() {
            return Err(CellPlmError::Input(format!(
                "{} class names for a head of {}",
                classes.len(),
                self.head.n_classes()
            )));
        }
        let mut manifest = Manifest::new(crate::family::NAME, ModelKind::Classifier, pre.clone());
        manifest.classes = classes.to_vec();
        sclm_model::save_atomic(dir, |tmp| {
            self.plm.write_files(tmp, &manifest)?;
            let (w, b) = self.head.to_parts();
            let mut sd = sclm_weights::StateDict::new();
            let k = self.head.n_classes();
            let d = self.head.d_input();
            sd.insert(
                "head.weight".into(),
                sclm_weights::TensorData::from_f32(vec![k, d], w).map_err(CellPlmError::from)?,
            );
            sd.insert("head.bias".into(), sclm_weights::TensorData::from_f32(vec![k], b).map_err(CellPlmError::from)?);
            sclm_weights::write_safetensors(tmp.join("head.safetensors"), &sd, None).map_err(CellPlmError::from)?;
            Ok(())
        })?;
        Ok(())
    }

    /// Loads a classifier directory written by [`CellPlmClassifier::save_dir`]: the classifier,
    /// its class names and registry. Every weight must be present.
    pub fn load_dir(dir: impl AsRef<Path>, device: &Device) -> Result<(Self, Vec<String>, crate::Preprocessing)> {
        let dir = dir.as_ref();
        if dir.join("plm").is_dir() && dir.join("classifier.safetensors").is_file() {
            return Err(CellPlmError::Config(format!(
                "{}: a classifier directory of an earlier sclm (plm/ + classifier.safetensors, every weight stored twice); \
                 run `sclm finetune annotation --save-model` again to write the current layout",
                dir.display()
            )));
        }
        let manifest = sclm_model::read_manifest(dir)?;
        if manifest.kind != ModelKind::Classifier || manifest.classes.is_empty() {
            return Err(CellPlmError::Config(format!(
                "{}: not a fine-tuned classifier (model.json kind {:?}, {} classes); make one with `sclm finetune annotation --save-model`",
                dir.display(),
                manifest.kind,
                manifest.classes.len()
            )));
        }
        let plm = CellPlm::load_files(dir, device)?;
        let hpath = dir.join("head.safetensors");
        let mut sd = sclm_weights::read_safetensors(&hpath)?;
        let mut take = |k: &str| -> Result<Vec<f32>> {
            let t = sd.remove(k).ok_or_else(|| CellPlmError::Config(format!("{}: no tensor {k}", hpath.display())))?;
            Ok(t.into_f32(k)?)
        };
        let (w, b) = (take("head.weight")?, take("head.bias")?);
        if b.len() != manifest.classes.len() {
            return Err(CellPlmError::Config(format!(
                "{}: head.bias has {} classes, model.json lists {}",
                hpath.display(),
                b.len(),
                manifest.classes.len()
            )));
        }
        let head = ClassifierHead::from_parts(&w, &b, plm.latent_dim(), 0.0, device)
            .map_err(|e| CellPlmError::Config(format!("{}: {e}", hpath.display())))?;
        Ok((CellPlmClassifier { plm, head }, manifest.classes, manifest.registry))
    }
}
