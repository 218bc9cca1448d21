//! CellPLM as a model family of the model layer: [`CellPlmModel`] (a loaded model directory: a
//! pretrained model or a fine-tuned classifier, with its manifest) implements
//! [`sclm_model::CellModel`], and [`FAMILY`] opens CellPLM directories for
//! [`sclm_model::load_any`].
use std::any::Any;
use std::path::Path;

use sclm_data::{AnnData, Dense};
use sclm_model::{
    CellModel, FinetuneRecipe, LabeledCells, Manifest, ModelError, ModelKind, PerturbationCells, PerturbationPredictor,
    PieceClassifier, PieceEmbedder, ReconstructOptions, ReconstructionFit, Registry, RunOptions,
};
use sclm_nn::burn::tensor::Device;
use sclm_nn::embedding::CsrRows;
use sclm_nn::train::{FitSummary, Progress};

use crate::annotate::{finetune_annotation, CellPlmClassifier, FinetuneConfig, LabeledGroup};
use crate::error::Result;
use crate::inference::CellPlmInference;
use crate::perturb::{log_normalized, pairing_batches, predict_mean, PerturbationModel};
use crate::pretrain::{
    corpus_gene_stats, expected_fractions, labels_for, Corpus, CorpusOptions, MaskConfig, PretrainConfig,
};
use crate::{CellPlm, CellPlmConfig};

/// The family name in manifests.
pub const NAME: &str = "cellplm";

/// The CellPLM loader for [`sclm_model::load_any`].
pub static FAMILY: CellPlmFamily = CellPlmFamily;

/// CellPLM's [`sclm_model::Family`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CellPlmFamily;

// One value per loaded model: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Plm(CellPlm),
    Classifier(CellPlmClassifier),
}

/// A CellPLM model with its manifest.
pub struct CellPlmModel {
    manifest: Manifest,
    inner: Inner,
    /// A fresh model (not pretrained): fine-tuned with its own configuration and dropout before
    /// the head only, since the published recipe assumes a pretrained model.
    fresh: bool,
}

impl CellPlmModel {
    /// A pretrained (or imported) model with its registry.
    pub fn new(plm: CellPlm, registry: Registry) -> Self {
        CellPlmModel {
            manifest: Manifest::new(NAME, ModelKind::Pretrained, registry),
            inner: Inner::Plm(plm),
            fresh: false,
        }
    }

    /// A fresh small model ([`CellPlmConfig::small`]) over `genes`.
    pub fn fresh(genes: Vec<String>, device: &Device) -> Result<Self> {
        let plm = CellPlm::new(&CellPlmConfig::small(genes), device)?;
        let registry = Registry { gene_id: "var_index".into(), group_key: String::new(), ..Default::default() };
        Ok(CellPlmModel { fresh: true, ..Self::new(plm, registry) })
    }

    /// A fine-tuned classifier with its class names and registry.
    pub fn classifier(clf: CellPlmClassifier, classes: Vec<String>, registry: Registry) -> Self {
        let mut manifest = Manifest::new(NAME, ModelKind::Classifier, registry);
        manifest.classes = classes;
        CellPlmModel { manifest, inner: Inner::Classifier(clf), fresh: false }
    }

    /// Loads a CellPLM model directory (pretrained or classifier) on `device`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let manifest = sclm_model::read_manifest(dir)?;
        Self::load_with(dir, manifest, device)
    }

    fn load_with(dir: &Path, manifest: Manifest, device: &Device) -> Result<Self> {
        match manifest.kind {
            ModelKind::Pretrained => {
                let (plm, registry) = CellPlm::load_dir(dir, device)?;
                Ok(Self::new(plm, registry))
            }
            ModelKind::Classifier => {
                let (clf, classes, registry) = CellPlmClassifier::load_dir(dir, device)?;
                Ok(Self::classifier(clf, classes, registry))
            }
        }
    }

    /// The CellPLM model (the backbone of a classifier).
    pub fn plm(&self) -> &CellPlm {
        match &self.inner {
            Inner::Plm(p) => p,
            Inner::Classifier(c) => &c.plm,
        }
    }

    /// The classifier, when this is one.
    pub fn as_classifier(&self) -> Option<&CellPlmClassifier> {
        match &self.inner {
            Inner::Classifier(c) => Some(c),
            Inner::Plm(_) => None,
        }
    }

    /// Whether the model is fresh (see the field docs).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// The backbone copied onto `device` (through its state dict, so an inference model can be
    /// trained on an autodiff device).
    pub fn plm_on(&self, device: &Device) -> Result<CellPlm> {
        let mut p = self.plm().clone();
        let sd = p.to_state_dict()?;
        let (m, _) = CellPlm::from_state_dict(p.config(), sd, "the model in memory", device)?;
        Ok(m)
    }
}

impl PieceEmbedder for CellPlmInference<'_> {
    fn embed_piece(&self, counts: &CsrRows<'_>, coords: Option<&[[f32; 2]]>) -> sclm_model::Result<Vec<f32>> {
        Ok(self.embed_group(counts, coords)?)
    }
}

struct Classify<'m>(&'m CellPlmClassifier);

impl PieceClassifier for Classify<'_> {
    fn probabilities(&self, counts: &CsrRows<'_>, coords: Option<&[[f32; 2]]>) -> sclm_model::Result<Vec<f32>> {
        Ok(self.0.probabilities(counts, coords)?)
    }
}

impl CellModel for CellPlmModel {
    fn family(&self) -> &str {
        NAME
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn genes(&self) -> &[String] {
        self.plm().genes()
    }

    fn embedding_dim(&self) -> usize {
        self.plm().latent_dim()
    }

    fn embedder(&self) -> sclm_model::Result<Box<dyn PieceEmbedder + '_>> {
        Ok(Box::new(self.plm().inference()))
    }

    fn classifier(&self) -> sclm_model::Result<Box<dyn PieceClassifier + '_>> {
        match &self.inner {
            Inner::Classifier(c) => Ok(Box::new(Classify(c))),
            Inner::Plm(_) => Err(ModelError::Unsupported {
                family: NAME.into(),
                what: "classify cells: this is a pretrained model, not a classifier (fine-tune one with `sclm finetune annotation --save-model`)".into(),
            }),
        }
    }

    fn finetune_classifier(
        &self,
        cells: &LabeledCells<'_>,
        recipe: &FinetuneRecipe,
        run: &RunOptions,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> sclm_model::Result<(Box<dyn CellModel>, FitSummary)> {
        Ok(self.finetune(cells, recipe, run, device, progress)?)
    }

    fn fit_reconstruction(
        &self,
        datasets: &[(String, &AnnData)],
        fit: &ReconstructionFit,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> sclm_model::Result<Box<dyn CellModel>> {
        Ok(Box::new(self.fit_masked(datasets, fit, device, progress)?))
    }

    fn reconstruct(
        &self,
        datasets: &[(String, &AnnData)],
        which: usize,
        opts: &ReconstructOptions,
    ) -> sclm_model::Result<Dense<f32>> {
        Ok(self.fractions(datasets, which, opts)?)
    }

    fn fit_perturbation(
        &self,
        cells: &PerturbationCells<'_>,
        fit: &ReconstructionFit,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> sclm_model::Result<Box<dyn PerturbationPredictor>> {
        Ok(Box::new(self.perturbation(cells, fit, device, progress)?))
    }

    fn save(&self, dir: &Path) -> sclm_model::Result<()> {
        match &self.inner {
            Inner::Plm(p) => p.clone().save_dir_with(dir, &self.manifest.registry)?,
            Inner::Classifier(c) => c.clone().save_dir(dir, &self.manifest.classes, &self.manifest.registry)?,
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl CellPlmModel {
    /// [`CellModel::finetune_classifier`]: a pretrained model gets the published fine-tuning
    /// model ([`CellPlmClassifier::for_finetuning`]); a fresh one keeps its configuration with
    /// dropout before the head only. Groups: the registry's group key unless `cells.opts` says
    /// otherwise; transductive as published (every cell of a group is in its sequence).
    fn finetune(
        &self,
        cells: &LabeledCells<'_>,
        recipe: &FinetuneRecipe,
        run: &RunOptions,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> Result<(Box<dyn CellModel>, FitSummary)> {
        // Everything random is drawn after seeding: a fresh model's weights too (built here on
        // `device`, not copied from the unseeded one the protocol made), so a run repeats.
        sclm_nn::seed_everything(recipe.seed, device);
        let k = cells.classes.len();
        let model = if self.fresh {
            CellPlmClassifier::new(CellPlm::new(self.plm().config(), device)?, k, recipe.dropout)
        } else {
            CellPlmClassifier::for_finetuning(&self.plm_on(device)?, k, recipe.dropout)?.0
        };
        let group_key = cells.opts.group_key_for(self).map(String::from);
        let opts = CorpusOptions {
            group_key: group_key.clone(),
            spatial_key: cells.opts.spatial_key_for(self, |k| cells.adata.obsm.contains_key(k)).map(String::from),
            layer: cells.opts.layer.clone(),
            max_cells_per_group: 70_000,
            seed: recipe.seed,
            allow_non_integer: cells.opts.pieces.allow_non_integer,
        };
        let cfg = FinetuneConfig { recipe: recipe.clone(), ..Default::default() };
        let named = vec![("data".to_string(), cells.adata)];
        let genes = model.plm.genes().to_vec();
        let corpus = Corpus::build(&named, &genes, &opts, &cfg.masking, false, false)?;
        let mk = |rows: &[usize]| -> Vec<LabeledGroup> {
            labels_for(&corpus, cells.labels, rows)
                .into_iter()
                .zip(&corpus.groups)
                .map(|(labels, group)| LabeledGroup { group: group.clone(), labels })
                .collect()
        };
        let (train, valid) = (mk(cells.train), mk(cells.valid));
        let (best, summary) =
            finetune_annotation(model, &train, &valid, &cfg, run.run_dir.as_deref(), run.resume, progress)?;
        let registry = Registry { group_key: group_key.unwrap_or_default(), ..self.manifest.registry.clone() };
        Ok((Box::new(CellPlmModel::classifier(best, cells.classes.to_vec(), registry)), summary))
    }
}

/// The corpus options of reconstruction.
fn corpus_options(c: &ReconstructOptions, seed: u64) -> CorpusOptions {
    CorpusOptions {
        group_key: c.group_key.clone(),
        layer: c.layer.clone(),
        seed,
        allow_non_integer: c.allow_non_integer,
        ..Default::default()
    }
}

impl CellPlmModel {
    /// Masked-cell modelling on `datasets` (paper §3.3): a fresh model is rebuilt with batch and
    /// dataset tables for them (when asked) and its NB head started from their statistics; a
    /// pretrained one continues from its weights (published imputation fine-tuning: lr 5e-4,
    /// weight decay 1e-6, mask 95 % of cells × 25 % of genes, unless `fit` says otherwise).
    fn fit_masked(
        &self,
        datasets: &[(String, &AnnData)],
        fit: &ReconstructionFit,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> Result<CellPlmModel> {
        let fresh = self.fresh;
        let d =
            if fresh { MaskConfig::default() } else { MaskConfig { mask_node_rate: 0.95, ..MaskConfig::default() } };
        let masking = MaskConfig {
            mask_node_rate: fit.mask_node_rate.unwrap_or(d.mask_node_rate),
            mask_feature_rate: fit.mask_feature_rate.unwrap_or(d.mask_feature_rate),
            ..d
        };
        let (with_batch, with_dataset) = (fresh && fit.cells.with_batch, fresh && fit.cells.with_dataset);
        let opts = corpus_options(&fit.cells, fit.seed);
        let corpus = Corpus::build(datasets, self.genes(), &opts, &masking, with_batch, with_dataset)?;
        let defaults = PretrainConfig::default();
        let cfg = PretrainConfig {
            masking,
            epochs: fit.epochs.max(1),
            lr: fit.lr.unwrap_or(if fresh { defaults.lr } else { 5e-4 }),
            weight_decay: fit.weight_decay.unwrap_or(if fresh { defaults.weight_decay } else { 1e-6 }),
            warmup_steps: if fresh { defaults.warmup_steps } else { 0 },
            seed: fit.seed,
            ..defaults
        };
        sclm_nn::seed_everything(fit.seed, device);
        let model = if fresh {
            let mut config = self.plm().config().clone();
            if with_batch {
                config.batch_num = corpus.batch_labels.len();
            }
            if with_dataset {
                config.dataset_num = datasets.len();
            }
            let (frac, theta) = corpus_gene_stats(&corpus);
            CellPlm::new(&config, device)?.with_decoder_init(&frac, &theta)?
        } else {
            self.plm_on(device)?
        };
        let (m, _) = crate::pretrain(model, &corpus, &cfg, None, false, progress)?;
        let mut registry =
            Registry { group_key: fit.cells.group_key.clone().unwrap_or_default(), ..self.manifest.registry.clone() };
        if with_batch {
            registry.batch_labels = corpus.batch_labels.clone();
        }
        if with_dataset {
            registry.dataset_labels = corpus.dataset_labels.clone();
        }
        Ok(CellPlmModel::new(m, registry))
    }

    /// Expected fractions of `datasets[which]` (see [`CellModel::reconstruct`]); batch and
    /// dataset covariates are used when the model's registry has the same labels as the data.
    fn fractions(
        &self,
        datasets: &[(String, &AnnData)],
        which: usize,
        opts: &ReconstructOptions,
    ) -> Result<Dense<f32>> {
        let Some((_, target)) = datasets.get(which) else {
            return Err(crate::CellPlmError::Input(format!("dataset {which} of {}", datasets.len())));
        };
        let reg = &self.manifest.registry;
        let masking = MaskConfig::default();
        let co = corpus_options(opts, 0);
        let with_dataset = opts.with_dataset && reg.dataset_labels.len() == datasets.len();
        let (named, idx): (Vec<(String, &AnnData)>, usize) =
            if with_dataset { (datasets.to_vec(), which) } else { (vec![datasets[which].clone()], 0) };
        let mut corpus = Corpus::build(&named, self.genes(), &co, &masking, opts.with_batch, with_dataset)?;
        if opts.with_batch && corpus.batch_labels != reg.batch_labels {
            // The model's batch table does not know these batches: no batch covariate.
            corpus = Corpus::build(&named, self.genes(), &co, &masking, false, with_dataset)?;
        }
        expected_fractions(self.plm(), &corpus, idx, target.n_obs(), opts.whole_vocabulary)
    }

    /// The published perturbation model (paper §4.5): the perturbed gene's count removed and
    /// the gene marked −100 in the embedder, an MLP decoder started at the control mean, MSE to
    /// the log-normalised profile of a random cell of the condition; the epoch with the lowest
    /// MSE on the validation conditions is kept. A pretrained model keeps its encoder weights
    /// (its decoder is replaced by the MLP head).
    fn perturbation(
        &self,
        cells: &PerturbationCells<'_>,
        fit: &ReconstructionFit,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> Result<CellPlmPerturbation> {
        let adata = cells.adata;
        let (mapping, _) = sclm_model::GeneMapping::for_dataset(self.genes(), &adata.var, None)?;
        let gene_of = |name: &str| -> Result<u32> {
            let col = adata.var.index.iter().position(|g| g == name).ok_or_else(|| {
                crate::CellPlmError::Input(format!("perturbed gene '{name}' is not a gene of the data"))
            })?;
            mapping.col_to_vocab()[col].first().copied().ok_or_else(|| {
                crate::CellPlmError::Input(format!("perturbed gene '{name}' is not in the model's vocabulary"))
            })
        };
        let single = |genes: &[String]| -> Result<u32> {
            match genes {
                [g] => gene_of(g),
                _ => Err(crate::CellPlmError::Input(format!(
                    "condition of {} genes: the CellPLM perturbation head marks one gene per cell",
                    genes.len()
                ))),
            }
        };
        let mut config = self.plm().config().clone();
        config.dec_mod = crate::DecoderKind::Mlp;
        sclm_nn::seed_everything(fit.seed, device);
        let fresh_plm = CellPlm::new(&config, device)?;
        let plm = if self.fresh {
            fresh_plm
        } else {
            let (m, report) = sclm_nn::train::copy_weights(&self.plm_on(device)?, fresh_plm);
            if !report.errors.is_empty() {
                return Err(crate::CellPlmError::Config(report.errors.join("; ")));
            }
            m
        };
        let opts = CorpusOptions {
            group_key: None,
            max_cells_per_group: adata.n_obs().max(1),
            seed: fit.seed,
            allow_non_integer: cells.allow_non_integer,
            ..Default::default()
        };
        let genes = self.genes().to_vec();
        let corpus = Corpus::build(&[("data".to_string(), adata)], &genes, &opts, &Default::default(), false, false)?;
        let all = corpus.groups[0].clone();
        let profiles = log_normalized(&all);
        let ng = genes.len();
        let control_mean: Vec<f32> = {
            let mut m = vec![0f64; ng];
            for &r in cells.controls {
                for j in 0..ng {
                    m[j] += profiles[r * ng + j] as f64;
                }
            }
            m.into_iter().map(|v| (v / cells.controls.len().max(1) as f64) as f32).collect()
        };
        let mut train_conds: Vec<(Option<u32>, Vec<usize>)> = vec![(None, cells.controls.to_vec())];
        for (g, rows) in cells.train {
            train_conds.push((Some(single(g)?), rows.clone()));
        }
        let model = PerturbationModel { plm }.with_head_at(&control_mean)?;
        let n_batches = 48;
        let batches = pairing_batches(&all, cells.controls, &train_conds, n_batches, 128, fit.seed)?;
        // Model selection on the validation conditions (unseen in training): the epoch with the
        // lowest validation MSE is kept.
        let mut valid_conds = Vec::new();
        for (g, rows) in cells.valid {
            valid_conds.push((Some(single(g)?), rows.clone()));
        }
        let valid = if valid_conds.is_empty() {
            Vec::new()
        } else {
            pairing_batches(&all, cells.controls, &valid_conds, 8, 128, fit.seed.wrapping_add(7))?
        };
        let pcfg = PretrainConfig {
            epochs: fit.epochs.max(1),
            lr: fit.lr.unwrap_or(1e-3),
            seed: fit.seed,
            ..Default::default()
        };
        let mut trainer = sclm_nn::train::Trainer::new(model, pcfg.train_config(n_batches));
        trainer.fit(&batches, &valid, progress)?;
        let best = trainer.best_model.take().unwrap_or(trainer.model);
        let model = sclm_nn::burn::module::Module::valid(&best);
        // Vocabulary positions of the dataset's genes (the profile is reported in var order).
        let cols: Vec<(usize, u32)> =
            mapping.vocab_to_col().iter().enumerate().filter_map(|(v, c)| c.map(|c| (c, v as u32))).collect();
        Ok(CellPlmPerturbation {
            model,
            all,
            controls: cells.controls.to_vec(),
            cols,
            n_vars: adata.n_vars(),
            names: adata.var.index.clone(),
            mapping,
        })
    }
}

/// A trained CellPLM perturbation model with the control cells it predicts from.
pub struct CellPlmPerturbation {
    model: PerturbationModel,
    all: crate::pretrain::TrainGroup,
    controls: Vec<usize>,
    /// (dataset column, vocabulary index) of the genes the model predicts.
    cols: Vec<(usize, u32)>,
    n_vars: usize,
    names: Vec<String>,
    mapping: sclm_model::GeneMapping,
}

impl PerturbationPredictor for CellPlmPerturbation {
    fn predict_mean(&self, genes: &[String]) -> sclm_model::Result<Vec<f32>> {
        let gene = match genes {
            [] => None,
            [g] => {
                let col = self
                    .names
                    .iter()
                    .position(|n| n == g)
                    .ok_or_else(|| ModelError::Input(format!("'{g}' is not a gene of the data")))?;
                Some(
                    *self.mapping.col_to_vocab()[col]
                        .first()
                        .ok_or_else(|| ModelError::Input(format!("'{g}' is not in the model's vocabulary")))?,
                )
            }
            _ => return Err(ModelError::Input("the CellPLM perturbation head marks one gene per cell".into())),
        };
        let p = predict_mean(&self.model, &self.all, &self.controls, gene, 256)?;
        let mut out = vec![f32::NAN; self.n_vars];
        for &(c, v) in &self.cols {
            out[c] = p[v as usize];
        }
        Ok(out)
    }
}

impl sclm_model::Family for CellPlmFamily {
    fn name(&self) -> &'static str {
        NAME
    }

    fn load(&self, dir: &Path, manifest: Manifest, device: &Device) -> sclm_model::Result<Box<dyn CellModel>> {
        Ok(Box::new(CellPlmModel::load_with(dir, manifest, device)?))
    }

    fn fresh(&self, genes: Vec<String>, device: &Device) -> sclm_model::Result<Box<dyn CellModel>> {
        Ok(Box::new(CellPlmModel::fresh(genes, device)?))
    }
}
