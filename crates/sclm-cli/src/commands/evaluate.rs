//! `sclm evaluate`: score an embedding stored in obsm, or embed with a model and score it next
//! to PCA on the same cells (the task layer's embedding-quality protocol).

use std::path::PathBuf;

use anyhow::{Context, Result};
use sclm_data::AnnData;
use sclm_eval::{evaluate_embedding, EvaluateOptions};

use crate::Global;

/// Arguments of `sclm evaluate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input .h5ad file.
    pub input: PathBuf,
    /// obsm key of the embedding (e.g. X_pca, X_cellplm).
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    pub embedding: Option<String>,
    /// Embed the cells with this model directory (any family) and score it next to PCA-50 of
    /// the same cells; cells without a label are left out of both scores.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// With --model: the layer holding the counts (default: X).
    #[arg(long, requires = "model")]
    pub layer: Option<String>,
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

fn with_model(g: &Global, a: &Args, adata: &AnnData, dir: &std::path::Path) -> Result<()> {
    let file = a.input.display().to_string();
    let model = crate::load_model(dir, &g.device()?)?;
    let opts = sclm_tasks::EmbeddingOptions {
        label_key: a.label_key.clone(),
        batch_key: a.batch_key.clone(),
        embed: sclm_model::EmbedOptions { layer: a.layer.clone(), ..Default::default() },
        baseline: sclm_tasks::PcaFit { layer: a.layer.clone(), seed: g.seed, ..Default::default() },
        evaluate: EvaluateOptions { n_neighbors: a.n_neighbors, seed: g.seed, ..Default::default() },
    };
    let sp = crate::progress::spinner("embedding and evaluating", g.quiet);
    let out = sclm_tasks::embedding_quality(model.as_ref(), adata, &opts, &mut |_| {}).with_context(|| file.clone())?;
    sp.finish_and_clear();
    for n in &out.notes {
        crate::progress::note(g.quiet, format!("{file}: {n}"));
    }
    let (m, b) = (&out.reports[0], &out.reports[1]);
    println!("{:<20} {:>16} {:>16}", "metric", m.method, b.method);
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for x in &m.metrics {
        println!("{:<20} {:>16} {:>16}", x.name, fmt(x.value), fmt(b.get(&x.name)));
    }
    if let Some(p) = &a.json {
        crate::output::write_atomic(p, serde_json::to_string_pretty(&out.reports)?.as_bytes())?;
    }
    if let Some(p) = &a.plot {
        plot(g, &out.embedding, adata, a, p, &m.method)?;
    }
    Ok(())
}

fn plot(
    g: &Global,
    emb: &sclm_data::Dense<f32>,
    adata: &AnnData,
    a: &Args,
    p: &std::path::Path,
    what: &str,
) -> Result<()> {
    let labels = obs_labels(adata, &a.input, &a.label_key)?;
    let coords = super::plot::layout(emb, g.seed, g.quiet)?;
    crate::output::plot_atomic(p, |tmp| {
        sclm_eval::scatter_png(
            &coords,
            &sclm_eval::ColorBy::Categorical(labels.clone()),
            &format!("UMAP of {what} — {}", a.label_key),
            tmp,
        )
    })?;
    crate::progress::note(g.quiet, format!("wrote {}", p.display()));
    Ok(())
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let (adata, report) = sclm_io::read_any(&a.input)?;
    crate::progress::warn_read(g.quiet, &a.input, &report);
    let key = match (&a.embedding, &a.model) {
        (_, Some(dir)) => return with_model(g, &a, &adata, &dir.clone()),
        (Some(k), None) => k.clone(),
        (None, None) => anyhow::bail!("give --embedding KEY or --model DIR"),
    };
    let emb = adata.obsm_get(&key).with_context(|| a.input.display().to_string())?.to_f32();
    let labels = obs_labels(&adata, &a.input, &a.label_key)?;
    let batches = match &a.batch_key {
        Some(k) => Some(obs_labels(&adata, &a.input, k)?),
        None => None,
    };
    let opts = EvaluateOptions { n_neighbors: a.n_neighbors, seed: g.seed, method: key.clone(), ..Default::default() };
    let sp = crate::progress::spinner("evaluating", g.quiet);
    let rep = evaluate_embedding(&emb, &labels, batches.as_deref(), &opts)?;
    sp.finish_and_clear();
    print!("{}", rep.to_table());
    if let Some(p) = &a.json {
        crate::output::write_atomic(p, rep.to_json().as_bytes())?;
    }
    if let Some(p) = &a.plot {
        plot(g, &emb, &adata, &a, p, &key)?;
    }
    Ok(())
}
