//! `sclm evaluate`: score an embedding stored in obsm.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sclm_data::AnnData;
use sclm_eval::{evaluate_embedding, EvaluateOptions};

use crate::Global;

/// Arguments of `sclm evaluate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input .h5ad file.
    pub file: PathBuf,
    /// obsm key of the embedding (e.g. X_pca, X_cellplm).
    #[arg(long)]
    pub embedding: String,
    /// obs key of the true labels (e.g. cell_type).
    #[arg(long)]
    pub label_key: String,
    /// obs key of the batches, to score batch mixing.
    #[arg(long)]
    pub batch_key: Option<String>,
    /// Neighbours of the kNN graph.
    #[arg(long, default_value_t = 15)]
    pub n_neighbors: usize,
    /// Write the metrics as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw a UMAP of the embedding coloured by the labels to this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Labels of an obs column, with the file named in the error.
pub fn obs_labels(a: &AnnData, file: &std::path::Path, key: &str) -> Result<Vec<String>> {
    Ok(a.obs_column(key).with_context(|| file.display().to_string())?.to_labels())
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let (adata, report) = sclm_io::read_any(&a.file)?;
    crate::progress::warn_read(g.quiet, &a.file, &report);
    let emb = adata.obsm_get(&a.embedding).with_context(|| a.file.display().to_string())?.to_f32();
    let labels = obs_labels(&adata, &a.file, &a.label_key)?;
    let batches = match &a.batch_key {
        Some(k) => Some(obs_labels(&adata, &a.file, k)?),
        None => None,
    };
    let opts =
        EvaluateOptions { n_neighbors: a.n_neighbors, seed: g.seed, method: a.embedding.clone(), ..Default::default() };
    let sp = crate::progress::spinner("evaluating", g.quiet);
    let rep = evaluate_embedding(&emb, &labels, batches.as_deref(), &opts)?;
    sp.finish_and_clear();
    print!("{}", rep.to_table());
    if let Some(p) = &a.json {
        crate::output::write_atomic(p, rep.to_json().as_bytes())?;
    }
    if let Some(p) = &a.plot {
        let coords = super::plot::layout(&emb, g.seed, g.quiet)?;
        crate::output::plot_atomic(p, |tmp| {
            sclm_eval::scatter_png(
                &coords,
                &sclm_eval::ColorBy::Categorical(labels.clone()),
                &format!("UMAP of {} — {}", a.embedding, a.label_key),
                tmp,
            )
        })?;
        crate::progress::note(g.quiet, format!("wrote {}", p.display()));
    }
    Ok(())
}
