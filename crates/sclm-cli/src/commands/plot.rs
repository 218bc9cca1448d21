//! `sclm plot`: scatter plots of an embedding.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sclm_data::{AnnData, Column, Dense};
use sclm_eval::ColorBy;

use crate::Global;

/// Arguments of `sclm plot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input .h5ad file.
    pub input: PathBuf,
    /// obsm key to draw: a 2-column basis is drawn as is (e.g. X_umap, spatial); a wider one
    /// (e.g. X_pca) is laid out with UMAP first.
    #[arg(long)]
    pub basis: String,
    /// What to colour by: an obs column or a gene (var name).
    #[arg(long)]
    pub color: Option<String>,
    /// Output PNG file.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// A 2-D layout of an embedding: itself when it has two columns, else its UMAP.
pub fn layout(emb: &Dense<f32>, seed: u64, quiet: bool) -> Result<Dense<f32>> {
    if emb.ncols == 2 {
        return Ok(emb.clone());
    }
    let sp = crate::progress::spinner("UMAP layout", quiet);
    let g = sclm_eval::nndescent::knn_auto(emb, 15, true, seed)?;
    let conn = sclm_eval::neighbors::connectivities(&g);
    let opts = sclm_eval::umap::UmapOptions { seed, ..Default::default() };
    let out = sclm_eval::umap::umap(emb, &conn, &opts)?;
    sp.finish_and_clear();
    Ok(out)
}

/// The colouring asked for: an obs column (categorical or numeric) or a gene's values.
pub fn color_by(a: &AnnData, file: &std::path::Path, key: &str) -> Result<ColorBy> {
    if let Some(col) = a.obs.get(key) {
        return Ok(match col {
            Column::Str(_) | Column::Categorical { .. } | Column::Bool(_) => ColorBy::Categorical(col.to_labels()),
            other => ColorBy::Numeric(other.to_f64().unwrap_or_default()),
        });
    }
    if let Some(j) = a.var.index.iter().position(|g| g == key) {
        let col = a.x.select_cols(&[j]).to_dense();
        return Ok(ColorBy::Numeric(col.data.iter().map(|&v| v as f64).collect()));
    }
    bail!("{}: '{key}' is neither an obs column ({}) nor a gene", file.display(), a.obs.names().join(", "))
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let (adata, report) = sclm_io::read_any(&a.input)?;
    crate::progress::warn_read(g.quiet, &a.input, &report);
    let emb = adata.obsm_get(&a.basis).with_context(|| a.input.display().to_string())?.to_f32();
    let color = match &a.color {
        Some(k) => color_by(&adata, &a.input, k)?,
        None => ColorBy::None,
    };
    let coords = layout(&emb, g.seed, g.quiet)?;
    let basis = if emb.ncols == 2 { a.basis.clone() } else { format!("UMAP of {}", a.basis) };
    let title = match &a.color {
        Some(c) => format!("{basis} — {c}"),
        None => basis,
    };
    crate::output::plot_atomic(&a.output, |tmp| sclm_eval::scatter_png(&coords, &color, &title, tmp))?;
    crate::progress::note(g.quiet, format!("wrote {}", a.output.display()));
    Ok(())
}
