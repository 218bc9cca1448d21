//! Cell-type annotation (CellPLM §4.3, LangCell §4, CellLM §4): fine-tune a model's classifier on
//! labelled cells and score it on held-out cells next to the classical baseline (logistic
//! regression on PCA-50 of the most variable genes, [`PcaModel`]), both fitted and scored
//! through the same [`CellModel`] calls on the same cells and split.
//!
//! Cells without a label (empty, `nan`, `NA`, `None`) are left out of the split, the training,
//! the model selection and the scores, and counted in the notes. Classes with fewer than
//! `min_cells_per_class` cells (at least 3: one each for training, validation and test) are
//! dropped the same way, with a note naming them.
use std::collections::BTreeMap;

use sclm_data::{AnnData, Column, Matrix};
use sclm_eval::protocols::{stratified_split, Split};
use sclm_eval::MetricsReport;
use sclm_model::{CellModel, EmbedOptions, FinetuneRecipe, LabeledCells, RunOptions};
use sclm_nn::burn::tensor::Device;
use sclm_nn::train::{FitSummary, NoProgress, Progress};

use crate::baseline::{PcaFit, PcaModel};
use crate::choice::ModelChoice;
use crate::error::{input, Result};

/// Options of [`annotation`].
#[derive(Debug, Clone)]
pub struct AnnotationOptions {
    /// obs column of the cell types.
    pub label_key: String,
    /// Fraction of each class used for validation (default 0.2).
    pub valid_frac: f64,
    /// Fraction of each class used for testing (default 0.2).
    pub test_frac: f64,
    /// Classes with fewer cells are left out, with a note (default 3, the least that can be
    /// split; smaller values are raised to 3).
    pub min_cells_per_class: usize,
    /// The fine-tuning recipe of the model.
    pub recipe: FinetuneRecipe,
    /// Run directory and resume of the model's fine-tuning.
    pub run: RunOptions,
    /// How the model reads the data (layer, group key, coordinates, count checks).
    pub embed: EmbedOptions,
    /// The baseline (default PCA-50 of the 3,000 most variable genes).
    pub baseline: PcaFit,
    /// Genes of a fresh model: the most variable ones (default 3,000, as published).
    pub fresh_genes: usize,
    /// Seed of the split (default 0).
    pub seed: u64,
}

impl Default for AnnotationOptions {
    fn default() -> Self {
        AnnotationOptions {
            label_key: "cell_type".into(),
            valid_frac: 0.2,
            test_frac: 0.2,
            min_cells_per_class: 3,
            recipe: FinetuneRecipe::default(),
            run: RunOptions::default(),
            embed: EmbedOptions::default(),
            baseline: PcaFit::default(),
            fresh_genes: 3000,
            seed: 0,
        }
    }
}

/// The labelled cells of a protocol: classes kept, per-cell class codes, what was left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    /// Class names kept (sorted).
    pub classes: Vec<String>,
    /// Class of each cell (`None`: unlabelled, or its class was dropped).
    pub codes: Vec<Option<usize>>,
    /// Cells without a label.
    pub n_unlabelled: usize,
    /// Classes dropped as too small, with their cell counts.
    pub dropped: Vec<(String, usize)>,
}

/// Whether a label value means "no label".
pub fn is_missing_label(l: &str) -> bool {
    matches!(l.trim(), "" | "nan" | "NaN" | "NA" | "N/A" | "None" | "none" | "null")
}

/// Reads the labels of `key`, leaving out missing labels and classes under `min_cells` cells.
pub fn read_labels(adata: &AnnData, key: &str, min_cells: usize) -> Result<Labels> {
    let raw = adata.obs_column(key)?.to_labels();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut n_unlabelled = 0;
    for l in &raw {
        if is_missing_label(l) {
            n_unlabelled += 1;
        } else {
            *counts.entry(l.as_str()).or_default() += 1;
        }
    }
    let min = min_cells.max(3);
    let dropped: Vec<(String, usize)> =
        counts.iter().filter(|(_, &n)| n < min).map(|(c, &n)| (c.to_string(), n)).collect();
    let classes: Vec<String> = counts.iter().filter(|(_, &n)| n >= min).map(|(c, _)| c.to_string()).collect();
    if classes.len() < 2 {
        return input(format!(
            "obs['{key}'] has {} class(es) with at least {min} cells; annotation needs 2{}",
            classes.len(),
            if dropped.is_empty() { String::new() } else { format!(" ({} smaller classes left out)", dropped.len()) }
        ));
    }
    let codes = raw.iter().map(|l| classes.binary_search(l).ok()).collect();
    Ok(Labels { classes, codes, n_unlabelled, dropped })
}

impl Labels {
    /// Notes for the report: unlabelled cells and dropped classes.
    pub fn notes(&self, key: &str, min_cells: usize) -> Vec<String> {
        let mut out = Vec::new();
        if self.n_unlabelled > 0 {
            out.push(format!("{} cells without a label in obs['{key}'] left out", self.n_unlabelled));
        }
        if !self.dropped.is_empty() {
            let n: usize = self.dropped.iter().map(|d| d.1).sum();
            let names: Vec<String> = self.dropped.iter().map(|(c, k)| format!("{c} ({k})")).collect();
            out.push(format!(
                "{} class(es) with fewer than {} cells left out ({n} cells): {}",
                self.dropped.len(),
                min_cells.max(3),
                names.join(", ")
            ));
        }
        out
    }
}

/// What [`annotation`] returns.
pub struct AnnotationOutcome {
    /// Labels as used (classes, codes, left-out cells).
    pub labels: Labels,
    /// The split of the labelled cells (dataset rows).
    pub split: Split,
    /// Test scores: the model's, then the baseline's.
    pub reports: Vec<MetricsReport>,
    /// Predicted class of every cell (the fine-tuned model).
    pub predictions: Vec<String>,
    /// Probability of the predicted class.
    pub probabilities: Vec<f32>,
    /// The fine-tuned classifier (save it with [`CellModel::save`]).
    pub classifier: Box<dyn CellModel>,
    /// Training summary of the model.
    pub summary: FitSummary,
    /// Remarks (left-out cells and classes, gene matching).
    pub notes: Vec<String>,
}

/// Fine-tunes the model for annotation and scores it next to the baseline (see the module
/// docs). A fresh model is built over the `fresh_genes` most variable genes of the data.
pub fn annotation(
    choice: ModelChoice<'_>,
    adata: &AnnData,
    opts: &AnnotationOptions,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<AnnotationOutcome> {
    let labels = read_labels(adata, &opts.label_key, opts.min_cells_per_class)?;
    let labelled: Vec<usize> = (0..adata.n_obs()).filter(|&r| labels.codes[r].is_some()).collect();
    let codes: Vec<usize> = labelled.iter().map(|&r| labels.codes[r].unwrap_or(0)).collect();
    let local = stratified_split(&codes, opts.valid_frac, opts.test_frac, opts.seed)?;
    let to_rows = |v: &[usize]| -> Vec<usize> { v.iter().map(|&i| labelled[i]).collect() };
    let split = Split { train: to_rows(&local.train), valid: to_rows(&local.valid), test: to_rows(&local.test) };
    if split.test.is_empty() || split.valid.is_empty() {
        return input("the split has no validation or test cells; raise --valid-frac / --test-frac");
    }
    let mut notes = labels.notes(&opts.label_key, opts.min_cells_per_class);
    let fresh_genes = match choice {
        ModelChoice::Fresh(_) => {
            let x = sclm_model::cells::counts_matrix(adata, opts.embed.layer.as_deref())?.into_owned();
            let ln = sclm_eval::baselines::log_normalize(&Matrix::Csr(x))?;
            let (_, genes) = sclm_eval::baselines::pca_embedding(&ln, 2, Some(opts.fresh_genes), opts.seed)?;
            notes.push(format!("fresh {} model over the {} most variable genes", choice.family(), genes.len()));
            genes.iter().map(|&j| adata.var.index[j].clone()).collect()
        }
        ModelChoice::Given(_) => Vec::new(),
    };
    let mut slot = None;
    let model = choice.resolve(&fresh_genes, device, &mut slot)?;
    let cells = LabeledCells {
        adata,
        opts: &opts.embed,
        classes: &labels.classes,
        labels: &labels.codes,
        train: &split.train,
        valid: &split.valid,
    };
    let (classifier, summary) = model.finetune_classifier(&cells, &opts.recipe, &opts.run, device, progress)?;
    let (predictions, probabilities, matched) =
        sclm_model::predict(classifier.as_ref(), adata, &opts.embed, &mut |_| {})?;
    notes.push(format!("genes: {}", matched.report()));
    let mut rep = score(&labels, &split, &predictions, &format!("{} fine-tuned", model.family()))?;
    rep.note("epochs", summary.epochs);
    if let Some((f1, e)) = summary.best {
        rep.note("best_valid_macro_F1", format!("{f1:.4} (epoch {})", e + 1));
    }
    // The baseline through the same calls, same cells and split.
    let base =
        PcaModel::fit(adata, &PcaFit { layer: opts.embed.layer.clone(), seed: opts.seed, ..opts.baseline.clone() })?;
    let (base_clf, _) =
        base.finetune_classifier(&cells, &opts.recipe, &RunOptions::default(), device, &mut NoProgress)?;
    let base_opts = EmbedOptions { group_key: Some(String::new()), ..opts.embed.clone() };
    let (bp, _, _) = sclm_model::predict(base_clf.as_ref(), adata, &base_opts, &mut |_| {})?;
    let mut brep = score(&labels, &split, &bp, &format!("logreg on PCA-{}", base.embedding_dim()))?;
    brep.note("genes", base.n_genes_used());
    for r in [&mut rep, &mut brep] {
        r.note("classes", labels.classes.len());
        r.note("train_cells", split.train.len());
        r.note("valid_cells", split.valid.len());
    }
    Ok(AnnotationOutcome {
        labels,
        split,
        reports: vec![rep, brep],
        predictions,
        probabilities,
        classifier,
        summary,
        notes,
    })
}

/// Test scores of predictions (accuracy, macro/weighted F1, macro precision/recall).
fn score(labels: &Labels, split: &Split, pred: &[String], method: &str) -> Result<MetricsReport> {
    let yt: Vec<String> = split.test.iter().map(|&i| labels.classes[labels.codes[i].unwrap_or(0)].clone()).collect();
    let yp: Vec<String> = split.test.iter().map(|&i| pred[i].clone()).collect();
    let r = sclm_eval::metrics::class_report(&yt, &yp)?;
    let mut rep = MetricsReport::new("cell-type annotation", method, split.test.len());
    rep.push("accuracy", r.accuracy);
    rep.push("macro_F1", r.macro_f1);
    rep.push("weighted_F1", r.weighted_f1);
    rep.push("macro_precision", r.macro_precision);
    rep.push("macro_recall", r.macro_recall);
    Ok(rep)
}

/// `adata` with the outcome written to obs: `<key_added>` (prediction), `<key_added>_prob`,
/// and `<key_added>_split` (`train` / `valid` / `test` / `excluded`).
pub fn write_obs(adata: &mut AnnData, outcome: &AnnotationOutcome, key_added: &str) -> Result<()> {
    let mut split_col = vec![String::from("excluded"); adata.n_obs()];
    for (name, rows) in
        [("train", &outcome.split.train), ("valid", &outcome.split.valid), ("test", &outcome.split.test)]
    {
        for &i in rows {
            split_col[i] = name.into();
        }
    }
    adata.obs.insert(key_added, Column::Str(outcome.predictions.clone()))?;
    adata.obs.insert(format!("{key_added}_prob"), Column::F32(outcome.probabilities.clone()))?;
    adata.obs.insert(format!("{key_added}_split"), Column::Str(split_col))?;
    Ok(())
}
