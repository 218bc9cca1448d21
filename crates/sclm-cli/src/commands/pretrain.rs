//! `sclm pretrain <family>`: pretraining on one or more .h5ad files (`cellplm`: masked-cell
//! modelling; `langcell`: masked gene modelling, cell-cell and cell-text contrast, cell-text
//! matching), each family with its own options.

use std::path::{Path, PathBuf};

use anyhow::Result;
use sclm_cellplm::pretrain_run::{default_run_dir, prepare_pretraining, ConfigChoice, PretrainRun};
use sclm_model::CellModel;
use sclm_nn::train::{Progress, StepReport};

use crate::Global;

/// The families that can be pretrained, each with its options.
#[derive(Debug, clap::Subcommand)]
pub enum Family {
    /// CellPLM: masked-cell language modelling over groups of cells (paper §3.3).
    Cellplm(Args),
    /// LangCell: cells aligned with the texts of their cell types (paper §3.3, both stages).
    Langcell(super::pretrain_langcell::Args),
}

/// Runs `sclm pretrain <family>`.
pub fn dispatch(g: &Global, f: Family) -> Result<()> {
    match f {
        Family::Cellplm(a) => run(g, a),
        Family::Langcell(a) => super::pretrain_langcell::run(g, a),
    }
}

/// Arguments of `sclm pretrain cellplm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Training data: .h5ad files (or Cell Ranger outputs) with raw counts, one or more; their
    /// gene panels may differ: the vocabulary is their union and each is reconstructed on its
    /// own genes.
    #[arg(required = true)]
    pub input: Vec<PathBuf>,
    /// Architecture: `small` (hidden 256, 2 layers; CPU), `85m` (the published 85M) or a JSON config file
    /// (an empty `gene_list` there takes the union vocabulary).
    #[arg(long, default_value = "small")]
    pub config: String,
    /// Output model directory (model.json, config.json, model.safetensors, genes.txt).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Run directory for log.jsonl and the per-epoch checkpoint (default: `<out>.run`).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue from the checkpoint in the run directory.
    #[arg(long)]
    pub resume: bool,
    /// Passes over the data.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Peak learning rate (warm-up, then cosine decay to 10 %).
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// AdamW weight decay (published: 1e-8).
    #[arg(long, default_value_t = 1e-8)]
    pub weight_decay: f64,
    /// obs column whose values form the groups of cells that attend to each other (samples, FOVs).
    #[arg(long, default_value = "batch")]
    pub group_key: String,
    /// Groups larger than this are split at random into pieces.
    #[arg(long, default_value_t = 128)]
    pub max_cells_per_group: usize,
    /// obsm key of spatial coordinates (used when a file has it).
    #[arg(long, default_value = "spatial")]
    pub spatial_key: String,
    /// Layer holding the raw counts (default: X).
    #[arg(long)]
    pub layer: Option<String>,
    /// Fraction of cells whose genes are masked.
    #[arg(long, default_value_t = 0.75)]
    pub mask_node_rate: f64,
    /// Mean fraction of genes hidden in a masked cell (Beta-distributed per cell).
    #[arg(long, default_value_t = 0.25)]
    pub mask_feature_rate: f64,
    /// Fraction of the cells of a group dropped each step.
    #[arg(long, default_value_t = 0.3)]
    pub drop_node_rate: f64,
}

pub(crate) struct Bar {
    pub(crate) pb: indicatif::ProgressBar,
}

impl Progress for Bar {
    fn on_step(&mut self, _batch: usize, _n: usize, r: &StepReport) {
        self.pb.set_position(r.step as u64 + 1); // a resumed run starts past zero
        self.pb.set_message(format!("epoch {} loss {:.1}", r.epoch + 1, r.loss));
    }
}

pub(crate) fn dataset_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| path.display().to_string())
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let mut datasets = Vec::new();
    let mut names = Vec::new();
    for p in &a.input {
        let (ad, report) = sclm_io::read_any(p)?;
        crate::progress::warn_read(g.quiet, p, &report);
        let mut name = dataset_name(p);
        while names.contains(&name) {
            name.push('_');
        }
        names.push(name);
        datasets.push(ad);
    }
    let named: Vec<(String, &sclm_data::AnnData)> = names.iter().cloned().zip(datasets.iter()).collect();
    let run_dir = a.run_dir.clone().unwrap_or_else(|| default_run_dir(&a.output));
    let run = PretrainRun {
        config: ConfigChoice::from_name_or_file(&a.config),
        mask_node_rate: a.mask_node_rate,
        mask_feature_rate: a.mask_feature_rate,
        drop_node_rate: a.drop_node_rate,
        group_key: a.group_key.clone(),
        spatial_key: a.spatial_key.clone(),
        layer: a.layer.clone(),
        max_cells_per_group: a.max_cells_per_group,
        epochs: a.epochs,
        lr: a.lr,
        weight_decay: a.weight_decay,
        seed: g.seed,
        run_dir: Some(run_dir.clone()),
        resume: a.resume,
    };
    let device = g.device()?.autodiff();
    let prepared = prepare_pretraining(&named, &run, &device)?;
    for n in prepared.notes() {
        crate::progress::note(g.quiet, n);
    }
    let mut bar = Bar { pb: crate::progress::bar(prepared.total_steps() as u64, "pretrain", "steps", g.quiet) };
    let outcome = prepared.train(&mut bar)?;
    bar.pb.finish_and_clear();
    if let Some(line) = outcome.loss_line() {
        crate::progress::note(g.quiet, line);
    }
    outcome.model.save(&a.output)?;
    crate::progress::note(
        g.quiet,
        format!("wrote {} (log and checkpoint in {})", a.output.display(), run_dir.display()),
    );
    Ok(())
}
