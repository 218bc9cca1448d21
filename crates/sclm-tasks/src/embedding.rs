//! Zero-shot embedding quality (CellPLM §4.1, LangCell §4.2, CellLM §4): embed the cells with a
//! model, embed the same cells with the PCA baseline ([`PcaModel`]), and score both against the
//! same labels (Leiden ARI/NMI, label ASW, kNN accuracy, cLISI; with batches ASW_batch, iLISI,
//! graph connectivity) with [`sclm_eval::evaluate_embedding`]. Cells without a label are left
//! out of the scores of both.
use sclm_data::{AnnData, Dense};
use sclm_eval::{EvaluateOptions, MetricsReport};
use sclm_model::{CellModel, EmbedOptions};

use crate::annotation::is_missing_label;
use crate::baseline::{PcaFit, PcaModel};
use crate::error::{input, Result};

/// Options of [`embedding_quality`].
#[derive(Debug, Clone, Default)]
pub struct EmbeddingOptions {
    /// obs column of the true cell types.
    pub label_key: String,
    /// obs column of the batches (integration metrics), if any.
    pub batch_key: Option<String>,
    /// How the model reads the data.
    pub embed: EmbedOptions,
    /// The baseline.
    pub baseline: PcaFit,
    /// Metric settings (the method name is set per method).
    pub evaluate: EvaluateOptions,
}

/// What [`embedding_quality`] returns.
pub struct EmbeddingOutcome {
    /// The model's embedding of every cell.
    pub embedding: Dense<f32>,
    /// The baseline's embedding of every cell.
    pub baseline_embedding: Dense<f32>,
    /// Scores: the model's, then the baseline's.
    pub reports: Vec<MetricsReport>,
    /// Remarks (gene matching, left-out cells).
    pub notes: Vec<String>,
}

/// Embeds and scores (see the module docs).
pub fn embedding_quality(
    model: &dyn CellModel,
    adata: &AnnData,
    opts: &EmbeddingOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<EmbeddingOutcome> {
    let labels = adata.obs_column(&opts.label_key)?.to_labels();
    let batches = match &opts.batch_key {
        Some(k) => Some(adata.obs_column(k)?.to_labels()),
        None => None,
    };
    let keep: Vec<usize> = (0..adata.n_obs()).filter(|&r| !is_missing_label(&labels[r])).collect();
    if keep.len() < 10 {
        return input(format!("obs['{}'] labels only {} cells; scoring needs at least 10", opts.label_key, keep.len()));
    }
    let (embedding, matched) = sclm_model::embed(model, adata, &opts.embed, progress)?;
    let mut notes = vec![format!("genes: {}", matched.report())];
    if keep.len() < adata.n_obs() {
        notes.push(format!("{} cells without a label left out of the scores", adata.n_obs() - keep.len()));
    }
    let base = PcaModel::fit(adata, &PcaFit { layer: opts.embed.layer.clone(), ..opts.baseline.clone() })?;
    let base_opts = EmbedOptions { group_key: Some(String::new()), ..opts.embed.clone() };
    let (baseline_embedding, _) = sclm_model::embed(&base, adata, &base_opts, &mut |_| {})?;
    let lab: Vec<String> = keep.iter().map(|&r| labels[r].clone()).collect();
    let bat: Option<Vec<String>> = batches.map(|b| keep.iter().map(|&r| b[r].clone()).collect());
    let mut reports = Vec::new();
    for (name, e) in [
        (format!("{} zero-shot", model.family()), &embedding),
        (format!("PCA-{}", base.embedding_dim()), &baseline_embedding),
    ] {
        let eo = EvaluateOptions { method: name, ..opts.evaluate.clone() };
        let mut r = sclm_eval::evaluate_embedding(&e.select_rows(&keep), &lab, bat.as_deref(), &eo)?;
        r.note("cells_scored", keep.len());
        reports.push(r);
    }
    Ok(EmbeddingOutcome { embedding, baseline_embedding, reports, notes })
}
