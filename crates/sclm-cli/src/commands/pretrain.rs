//! `sclm pretrain cellplm`: masked-cell pretraining on one or more .h5ad files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sclm_cellplm::pretrain::{Corpus, CorpusOptions, MaskConfig, PretrainConfig};
use sclm_cellplm::{CellPlm, CellPlmConfig, Preprocessing};
use sclm_nn::train::{EpochReport, Progress, StepReport};

use crate::Global;

/// Model families that can be pretrained.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Family {
    /// CellPLM: masked-cell language modelling over groups of cells (paper §3.3).
    Cellplm,
}

/// Arguments of `sclm pretrain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model family.
    #[arg(value_enum)]
    pub family: Family,
    /// Training data: .h5ad files (or Cell Ranger outputs) with raw counts, one or more; their
    /// gene panels may differ: the vocabulary is their union and each is reconstructed on its
    /// own genes.
    #[arg(required = true)]
    pub input: Vec<PathBuf>,
    /// Architecture: `small` (hidden 256, 2 layers; CPU), `85m` (the published 85M) or a JSON config file.
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

struct Bar {
    pb: indicatif::ProgressBar,
    epochs: Vec<EpochReport>,
}

impl Progress for Bar {
    fn on_step(&mut self, _batch: usize, _n: usize, r: &StepReport) {
        self.pb.set_position(r.step as u64 + 1); // a resumed run starts past zero
        self.pb.set_message(format!("epoch {} loss {:.1}", r.epoch + 1, r.loss));
    }
    fn on_epoch(&mut self, r: &EpochReport) {
        self.epochs.push(r.clone());
    }
}

fn dataset_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| path.display().to_string())
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let Family::Cellplm = a.family;
    if a.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
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
    let mut config = match a.config.as_str() {
        "small" => CellPlmConfig::small(sclm_cellplm::union_vocabulary(&named)),
        "85m" => CellPlmConfig::published_85m(sclm_cellplm::union_vocabulary(&named)),
        file => {
            let mut c = CellPlmConfig::from_json_file(file)?;
            if c.gene_list.is_empty() {
                c.gene_list = sclm_cellplm::union_vocabulary(&named);
                c.out_dim = c.gene_list.len();
            }
            c
        }
    };
    let masking = MaskConfig {
        mask_node_rate: a.mask_node_rate,
        mask_feature_rate: a.mask_feature_rate,
        drop_node_rate: a.drop_node_rate,
        max_cells: a.max_cells_per_group.max(1),
        mask_beta: true,
    };
    let opts = CorpusOptions {
        group_key: Some(a.group_key.clone()),
        spatial_key: Some(a.spatial_key.clone()),
        layer: a.layer.clone(),
        max_cells_per_group: a.max_cells_per_group.max(1),
        seed: g.seed,
        allow_non_integer: false,
    };
    let corpus = Corpus::build(&named, &config.gene_list, &opts, &masking, true, named.len() > 1)
        .with_context(|| "building the training data")?;
    for r in &corpus.gene_reports {
        crate::progress::note(g.quiet, r);
    }
    config.batch_num = corpus.batch_labels.len();
    config.dataset_num = if named.len() > 1 { named.len() } else { 0 };
    let device = g.device()?.autodiff();
    sclm_nn::seed_everything(g.seed, &device);
    let (frac, theta) = sclm_cellplm::pretrain::corpus_gene_stats(&corpus);
    let model = CellPlm::new(&config, &device)?.with_decoder_init(&frac, &theta)?;
    crate::progress::note(
        g.quiet,
        format!(
            "CellPLM {}: {} parameters, vocabulary {}, {} cells in {} groups ({} batches)",
            config.name.as_deref().unwrap_or("custom"),
            model.num_params(),
            config.gene_list.len(),
            corpus.n_cells,
            corpus.groups.len(),
            corpus.batch_labels.len()
        ),
    );
    let cfg = PretrainConfig {
        masking,
        epochs: a.epochs,
        lr: a.lr,
        weight_decay: a.weight_decay,
        seed: g.seed,
        ..Default::default()
    };
    let run_dir = a.run_dir.clone().unwrap_or_else(|| {
        let mut s = a.output.clone().into_os_string();
        s.push(".run");
        PathBuf::from(s)
    });
    let steps = (a.epochs * corpus.groups.len()) as u64;
    let mut bar = Bar { pb: crate::progress::bar(steps, "pretrain", "steps", g.quiet), epochs: Vec::new() };
    let t0 = Instant::now();
    let (mut trained, summary) = sclm_cellplm::pretrain(model, &corpus, &cfg, Some(&run_dir), a.resume, &mut bar)?;
    bar.pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    if let (Some(first), Some(last)) = (bar.epochs.first(), bar.epochs.last()) {
        crate::progress::note(
            g.quiet,
            format!(
                "trained {} epochs ({} steps) in {secs:.0} s: loss {:.2} (epoch {}) -> {:.2} (epoch {})",
                summary.epochs,
                summary.steps,
                first.train_loss,
                first.epoch + 1,
                last.train_loss,
                last.epoch + 1
            ),
        );
    }
    let pre = Preprocessing {
        gene_id: "var_index".into(),
        group_key: a.group_key.clone(),
        spatial_key: a.spatial_key.clone(),
        batch_labels: corpus.batch_labels.clone(),
        dataset_labels: if named.len() > 1 { corpus.dataset_labels.clone() } else { Vec::new() },
        ..Default::default()
    };
    trained.save_dir_with(&a.output, &pre)?;
    crate::progress::note(
        g.quiet,
        format!("wrote {} (log and checkpoint in {})", a.output.display(), run_dir.display()),
    );
    Ok(())
}
