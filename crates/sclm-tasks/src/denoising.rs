//! Denoising (CellPLM §4.2): hide a share of the non-zero counts, let the model see the rest,
//! and score its reconstruction of the hidden entries (RMSE, MAE, Pearson on the log-normalised
//! scale, normalised to the median library as scanpy) next to kNN-diffusion smoothing and to no
//! denoising, on the same cells, genes and hidden entries.
//!
//! A given model reconstructs zero-shot (no training on the data) and is then fine-tuned with
//! its imputation recipe; a fresh model is first trained on the data with the hidden entries
//! removed (its "zero-shot" row), then fine-tuned.
use sclm_data::{AnnData, Dense, Matrix};
use sclm_eval::baselines;
use sclm_eval::protocols::{masked_entry_scores, simulate_dropout, DropoutOptions};
use sclm_eval::MetricsReport;
use sclm_model::{CellModel, ReconstructOptions, ReconstructionFit};
use sclm_nn::burn::tensor::Device;
use sclm_nn::train::Progress;

use crate::choice::{columns_in_vocabulary, ModelChoice};
use crate::error::{input, Result};

/// Options of [`denoising`].
#[derive(Debug, Clone)]
pub struct DenoisingOptions {
    /// Genes scored: the most variable ones (default 3,000) among those the model knows.
    pub n_top_genes: usize,
    /// What is hidden (default 10 % of the non-zero counts).
    pub dropout: DropoutOptions,
    /// Training epochs of a fresh model on the data with the hidden entries (default 10).
    pub pretrain_epochs: usize,
    /// Fine-tuning epochs with the imputation recipe (default 10; 0 skips fine-tuning).
    pub finetune_epochs: usize,
    /// Learning rate of training and fine-tuning (`None`: the family's defaults).
    pub lr: Option<f64>,
    /// How cells are read (group key, layer, integer check).
    pub cells: ReconstructOptions,
    /// Seed.
    pub seed: u64,
}

impl Default for DenoisingOptions {
    fn default() -> Self {
        DenoisingOptions {
            n_top_genes: 3000,
            dropout: DropoutOptions::default(),
            pretrain_epochs: 10,
            finetune_epochs: 10,
            lr: None,
            cells: ReconstructOptions::default(),
            seed: 0,
        }
    }
}

/// What [`denoising`] returns.
pub struct DenoisingOutcome {
    /// Scores: no denoising, kNN diffusion, the model zero-shot, the model fine-tuned.
    pub reports: Vec<MetricsReport>,
    /// The evaluated cells × genes: X the counts, layers `counts_hidden`, `knn_denoised` and
    /// one per model row (log-normalised predictions).
    pub data: AnnData,
    /// Number of hidden entries.
    pub n_hidden: usize,
    /// Remarks.
    pub notes: Vec<String>,
}

/// Runs the protocol (see the module docs); `stage` receives a line per stage.
pub fn denoising(
    choice: ModelChoice<'_>,
    adata: &AnnData,
    opts: &DenoisingOptions,
    device: &Device,
    stage: &mut dyn FnMut(&str),
    progress: &mut dyn Progress,
) -> Result<DenoisingOutcome> {
    let counts = sclm_model::cells::counts_matrix(adata, opts.cells.layer.as_deref())?.into_owned();
    sclm_model::cells::check_counts(&counts, opts.cells.allow_non_integer)?;
    let mut base = AnnData::new(Matrix::Csr(counts));
    base.obs = adata.obs.clone();
    base.var = adata.var.clone();
    // Coordinates (obsm) stay: a model with a positional encoding reads them.
    base.obsm = adata.obsm.clone();
    // Genes the model can read, then the most variable of them.
    let known = columns_in_vocabulary(&choice, &base.var)?;
    let mut notes = Vec::new();
    if known.len() < base.n_vars() {
        notes.push(format!("{} of {} genes are in the model's vocabulary", known.len(), base.n_vars()));
    }
    if known.len() < 2 {
        return input(format!("denoising needs at least 2 genes the model knows, found {}", known.len()));
    }
    let base = base.select_vars(&known);
    let ln_all = baselines::log_normalize(&base.x)?;
    let (_, genes) = baselines::pca_embedding(&ln_all, 2, Some(opts.n_top_genes), opts.seed)?;
    let mut sub = base.select_vars(&genes);
    let cells: Vec<usize> = (0..sub.n_obs()).filter(|&r| sub.x.to_csr().row(r).0.len() >= 5).collect();
    if cells.len() < 10 {
        return input(format!("fewer than 10 cells express 5 of the {} selected genes", genes.len()));
    }
    if cells.len() < sub.n_obs() {
        notes.push(format!(
            "{} cells expressing fewer than 5 of the selected genes left out",
            sub.n_obs() - cells.len()
        ));
    }
    sub = sub.select_obs(&cells);
    let counts = sub.x.to_csr();
    let (masked, mask) = simulate_dropout(&counts, &DropoutOptions { seed: opts.seed, ..opts.dropout })?;
    let truth = baselines::log_normalize(&Matrix::Csr(counts.clone()))?;
    let masked_m = Matrix::Csr(masked.clone());
    let input_ln = baselines::log_normalize(&masked_m)?;
    let dense_in = input_ln.to_dense();
    let task = format!("denoising ({:.0}% of non-zero counts hidden)", 100.0 * opts.dropout.rate);
    let score = |name: &str, pred: &Dense<f32>| -> Result<MetricsReport> {
        let s = masked_entry_scores(&truth, pred, &mask)?;
        let mut r = MetricsReport::new(task.clone(), name, sub.n_obs());
        r.push("RMSE", s.rmse);
        r.push("MAE", s.mae);
        r.push("pearson", s.pearson);
        r.note("masked_entries", mask.len());
        Ok(r)
    };
    let mut reports = vec![score("no denoising", &dense_in)?];
    let (emb, _) = baselines::pca_embedding(&input_ln, 30.min(sub.n_obs() - 1), None, opts.seed)?;
    let knn_pred = baselines::diffusion_denoise(&dense_in, &emb, &Default::default())?;
    reports.push(score("kNN diffusion", &knn_pred)?);
    let mut out = sub.clone();
    out.layers.insert("counts_hidden".into(), masked_m.clone());
    out.layers.insert("knn_denoised".into(), Matrix::Dense(knn_pred));

    // The model sees the counts with the hidden entries removed, over the selected genes.
    let mut masked_ad = sub.clone();
    masked_ad.x = masked_m;
    let named = vec![("data".to_string(), &masked_ad)];
    let family = choice.family().to_string();
    let target = median_library(&masked);
    let to_lognorm = |fr: Dense<f32>| -> Result<Dense<f32>> {
        if fr.nrows != sub.n_obs() || fr.ncols != sub.n_vars() {
            return input(format!(
                "the model reconstructed {} × {} values for {} × {}",
                fr.nrows,
                fr.ncols,
                sub.n_obs(),
                sub.n_vars()
            ));
        }
        let mut d = fr;
        d.data.iter_mut().for_each(|v| *v = (*v as f64 * target).ln_1p() as f32);
        Ok(d)
    };
    // A fresh model gets a batch covariate per group (as pretraining does); a given one uses its
    // own batch table only when it knows these batches.
    let ro =
        ReconstructOptions { with_batch: true, with_dataset: false, whole_vocabulary: false, ..opts.cells.clone() };
    let fit = |epochs: usize, seed: u64| ReconstructionFit {
        epochs,
        lr: opts.lr,
        seed,
        cells: ro.clone(),
        ..Default::default()
    };
    let mut slot = None;
    let fresh_genes = sub.var.index.clone();
    let model = choice.resolve(&fresh_genes, device, &mut slot)?;
    // A given model reads the genes through its vocabulary; reconstruct over the selected ones.
    let cols = vocabulary_columns(model, &sub)?;
    let zero_shot: Box<dyn CellModel>;
    let zs: &dyn CellModel = if choice.is_fresh() {
        stage(&format!(
            "training a fresh {family} on the data with hidden entries ({} epochs)",
            opts.pretrain_epochs.max(1)
        ));
        zero_shot = model.fit_reconstruction(&named, &fit(opts.pretrain_epochs, opts.seed), device, progress)?;
        zero_shot.as_ref()
    } else {
        model
    };
    let zs_pred = to_lognorm(zs.reconstruct(&named, 0, &ro)?.select_cols(&cols))?;
    let name =
        if choice.is_fresh() { format!("{family} zero-shot (trained here)") } else { format!("{family} zero-shot") };
    let mut r = score(&name, &zs_pred)?;
    if choice.is_fresh() {
        r.note("pretrain_epochs", opts.pretrain_epochs.max(1));
    }
    reports.push(r);
    out.layers.insert(format!("{family}_denoised"), Matrix::Dense(zs_pred));
    if opts.finetune_epochs > 0 {
        stage(&format!("fine-tuning with the imputation recipe ({} epochs)", opts.finetune_epochs));
        let ft =
            zs.fit_reconstruction(&named, &fit(opts.finetune_epochs, opts.seed.wrapping_add(1)), device, progress)?;
        let ft_pred = to_lognorm(ft.reconstruct(&named, 0, &ro)?.select_cols(&cols))?;
        let mut r = score(&format!("{family} fine-tuned"), &ft_pred)?;
        r.note("finetune_epochs", opts.finetune_epochs);
        reports.push(r);
        out.layers.insert(format!("{family}_finetuned_denoised"), Matrix::Dense(ft_pred));
    }
    Ok(DenoisingOutcome { reports, data: out, n_hidden: mask.len(), notes })
}

/// For each gene of `sub`, its position in the model's vocabulary.
pub(crate) fn vocabulary_columns(model: &dyn CellModel, sub: &AnnData) -> Result<Vec<usize>> {
    let (m, _) = sclm_model::GeneMapping::for_dataset(model.genes(), &sub.var, None)?;
    let mut pos = vec![usize::MAX; sub.n_vars()];
    for (v, c) in m.vocab_to_col().iter().enumerate() {
        if let Some(c) = *c {
            pos[c] = v;
        }
    }
    if let Some(j) = pos.iter().position(|&p| p == usize::MAX) {
        return input(format!("gene '{}' is not in the model's vocabulary", sub.var.index[j]));
    }
    Ok(pos)
}

/// Median of the cells' totals (the default target of `normalize_total`).
pub(crate) fn median_library(x: &sclm_data::CsrMatrix) -> f64 {
    let mut t: Vec<f64> = (0..x.nrows).map(|r| x.row(r).1.iter().map(|&v| v as f64).sum()).collect();
    t.sort_by(|a, b| a.total_cmp(b));
    if t.is_empty() {
        return 1.0;
    }
    let m = t.len() / 2;
    if t.len() % 2 == 1 {
        t[m]
    } else {
        0.5 * (t[m - 1] + t[m])
    }
}
