//! `sclm import`: published checkpoints into model directories.

use std::path::PathBuf;

use anyhow::Result;
use sclm_cellplm::{CellPlm, CellPlmConfig};

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
    /// Output model directory (model.json, config.json, model.safetensors, genes.txt).
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
