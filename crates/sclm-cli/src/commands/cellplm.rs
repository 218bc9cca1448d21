//! CellPLM at the edge: `sclm import cellplm` and `sclm embed`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sclm_cellplm::{CellPlm, CellPlmConfig, EmbedOptions, GeneMapping};
use sclm_data::Array2;
use sclm_preprocess::genes::{match_genes, GeneMatchOptions};

use crate::Global;

/// Model families that can be imported.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Family {
    /// CellPLM (Wen et al. 2023): `{prefix}.config.json` + `{prefix}.best.ckpt`.
    Cellplm,
}

/// Arguments of `sclm import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Model family of the checkpoint.
    #[arg(value_enum)]
    pub family: Family,
    /// The authors' config file (e.g. 20230926_85M.config.json).
    #[arg(long)]
    pub config: PathBuf,
    /// The authors' checkpoint (e.g. 20230926_85M.best.ckpt).
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Output model directory (config.json, model.safetensors, genes.txt, preprocessing.json).
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn import(g: &Global, a: ImportArgs) -> Result<()> {
    match a.family {
        Family::Cellplm => {
            let config = CellPlmConfig::from_json_file(&a.config)?;
            let (mut model, report) = CellPlm::load_torch(&a.ckpt, &config, &g.device()?)?;
            crate::progress::note(g.quiet, format!("{}: {}", a.ckpt.display(), report.summary()));
            model.save_dir(&a.output)?;
            crate::progress::note(g.quiet, format!("wrote {}", a.output.display()));
        }
    }
    Ok(())
}

/// Arguments of `sclm embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Model directory (from `sclm import` or `sclm pretrain`).
    #[arg(long)]
    pub model: PathBuf,
    /// Input data: .h5ad (raw counts in X or --layer), Cell Ranger .h5 or matrix directory.
    #[arg(long)]
    pub data: PathBuf,
    /// Output .h5ad: the input with the embedding added to obsm.
    #[arg(short, long)]
    pub output: PathBuf,
    /// obsm key of the embedding.
    #[arg(long, default_value = "X_cellplm")]
    pub key: String,
    /// obs column whose values form the groups of cells that attend to each other.
    #[arg(long, default_value = "batch")]
    pub group_key: String,
    /// Layer holding the raw counts (default: X).
    #[arg(long)]
    pub layer: Option<String>,
    /// obsm key of spatial coordinates (used by models with the positional encoding on).
    #[arg(long)]
    pub spatial_key: Option<String>,
    /// Most cells in one forward pass (bounds memory).
    #[arg(long, default_value_t = 10_000)]
    pub max_cells: usize,
}

pub fn embed(g: &Global, a: EmbedArgs) -> Result<()> {
    let (model, _pre) = CellPlm::load_dir(&a.model, &g.device()?)?;
    let (mut adata, report) = sclm_io::read_any(&a.data)?;
    crate::progress::warn_read(g.quiet, &a.data, &report);
    let matched = match_genes(&adata.var.index, model.genes(), &GeneMatchOptions::default())
        .with_context(|| a.data.display().to_string())?;
    crate::progress::note(g.quiet, format!("{}: {}", a.data.display(), matched.report()));
    let mapping = GeneMapping::new(matched.columns(), adata.n_vars())?;
    if let Some(k) = &a.spatial_key {
        adata.obsm_get(k).with_context(|| a.data.display().to_string())?;
    }
    let opts = EmbedOptions {
        group_key: Some(a.group_key.clone()),
        max_cells_per_forward: a.max_cells.max(1),
        layer: a.layer.clone(),
        spatial_key: a.spatial_key.clone(),
        ..Default::default()
    };
    let pb = crate::progress::bar(adata.n_obs() as u64, "embed", "cells", g.quiet);
    let emb = sclm_cellplm::embed(&model, &adata, Some(&mapping), &opts, &mut |done| pb.set_position(done as u64))
        .with_context(|| a.data.display().to_string())?;
    pb.finish_and_clear();
    if emb.nrows != adata.n_obs() {
        bail!("{}: the model returned {} rows for {} cells", a.data.display(), emb.nrows, adata.n_obs());
    }
    adata.obsm.insert(a.key.clone(), Array2::F32(emb));
    sclm_io::write_h5ad(&adata, &a.output, &Default::default())?;
    crate::progress::note(g.quiet, format!("wrote {} (obsm['{}'])", a.output.display(), a.key));
    Ok(())
}
