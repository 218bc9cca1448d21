//! `sclm import`: published checkpoints into model directories.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sclm_cellplm::{CellPlm, CellPlmConfig};
use sclm_langcell::weights::{import_published, ImportSources};
use sclm_langcell::LangCellModel;

use crate::Global;

/// Model families that can be imported.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Family {
    /// CellPLM (Wen et al. 2023): `--config {prefix}.config.json --ckpt {prefix}.best.ckpt`.
    Cellplm,
    /// LangCell (Zhao et al. 2024): `--ckpt DIR` holding `cell_bert/`, `text_bert/`, `cell_proj.bin`,
    /// `text_proj.bin`, `ctm_head.bin`, with `--token-dictionary` and `--gene-medians`.
    Langcell,
}

/// Arguments of `sclm import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Model family of the checkpoint.
    #[arg(value_enum)]
    pub family: Family,
    /// CellPLM: the authors' config file (e.g. 20230926_85M.config.json). Not used by LangCell
    /// (its encoders carry their own config.json).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The authors' checkpoint: CellPLM's `.best.ckpt` file, or LangCell's checkpoint directory.
    #[arg(long)]
    pub ckpt: PathBuf,
    /// LangCell: the Geneformer token dictionary (`token<TAB>id`, e.g.
    /// ../shared/resources/langcell/token_dictionary.tsv).
    #[arg(long)]
    pub token_dictionary: Option<PathBuf>,
    /// LangCell: the Geneformer gene medians (`ensembl_id<TAB>median`, e.g.
    /// ../shared/resources/langcell/gene_median_dictionary.tsv).
    #[arg(long)]
    pub gene_medians: Option<PathBuf>,
    /// LangCell: the text tokenizer (`tokenizer.json`, a BERT `vocab.txt` or a Hugging Face
    /// directory); default: the one in `text_bert/`.
    #[arg(long)]
    pub text_tokenizer: Option<PathBuf>,
    /// Output model directory.
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn import(g: &Global, a: ImportArgs) -> Result<()> {
    match a.family {
        Family::Cellplm => {
            for (set, flag) in [
                (a.token_dictionary.is_some(), "--token-dictionary"),
                (a.gene_medians.is_some(), "--gene-medians"),
                (a.text_tokenizer.is_some(), "--text-tokenizer"),
            ] {
                if set {
                    bail!("{flag} is a LangCell option; CellPLM checkpoints carry their gene list in --config");
                }
            }
            let cfg = a.config.as_ref().context("CellPLM import needs --config (the {prefix}.config.json file)")?;
            let config = CellPlmConfig::from_json_file(cfg)?;
            let (mut model, report) = CellPlm::load_torch(&a.ckpt, &config, &g.device()?)?;
            crate::progress::note(g.quiet, format!("{}: {}", a.ckpt.display(), report.summary()));
            model.save_dir(&a.output)?;
        }
        Family::Langcell => {
            if a.config.is_some() {
                bail!("--config is a CellPLM option; LangCell's cell_bert/ and text_bert/ carry their config.json");
            }
            let src = ImportSources {
                dir: a.ckpt.clone(),
                token_dictionary: a
                    .token_dictionary
                    .clone()
                    .context("LangCell import needs --token-dictionary (Geneformer's token dictionary as TSV)")?,
                gene_medians: a
                    .gene_medians
                    .clone()
                    .context("LangCell import needs --gene-medians (Geneformer's gene medians as TSV)")?,
                text_tokenizer: a.text_tokenizer.clone(),
            };
            let device = g.device()?;
            let (model, genes, text, report) = import_published(&src, &device)?;
            crate::progress::note(g.quiet, format!("{}:\n{}", a.ckpt.display(), report.summary().trim_end()));
            LangCellModel::new(model, genes, text, device)?.save_dir(&a.output)?;
        }
    }
    crate::progress::note(g.quiet, format!("wrote {}", a.output.display()));
    Ok(())
}
