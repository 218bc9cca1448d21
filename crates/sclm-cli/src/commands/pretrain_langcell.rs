//! `sclm pretrain langcell`: both LangCell pretraining stages on labelled .h5ad files whose
//! cell types get texts from the Cell Ontology or the user's table.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::Result;
use sclm_langcell::pretrain::PretrainConfig;
use sclm_langcell::run::{pretrain_datasets, PretrainRun};
use sclm_langcell::LangCellConfig;

use super::langcell_args::{CountsArgs, TextArgs};
use super::pretrain::{dataset_name, Bar};
use crate::Global;

/// Arguments of `sclm pretrain langcell`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Training data: .h5ad files (or Cell Ranger outputs) with raw counts and cell-type labels.
    /// A fresh model's vocabulary is built from them and needs one shared gene list.
    #[arg(required = true)]
    pub input: Vec<PathBuf>,
    /// Output model directory.
    #[arg(short, long)]
    pub output: PathBuf,
    /// obs column with the cell-type labels.
    #[arg(long, default_value = "cell_type")]
    pub label_key: String,
    #[command(flatten)]
    pub text: TextArgs,
    #[command(flatten)]
    pub counts: CountsArgs,
    /// Continue from this LangCell model directory (e.g. `sclm import langcell`): its
    /// vocabulary, tokenizers and weights. Default: a fresh model of `--config`.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Start a fresh model's text encoder and tokenizer from this Hugging Face BERT directory
    /// (e.g. all-MiniLM-L6-v2, or PubMedBERT as the paper): its weights are kept and a fresh
    /// cross-attention is added to every layer (it replaces the text encoder of --config).
    #[arg(long, conflicts_with = "init")]
    pub text_init: Option<PathBuf>,
    /// Architecture of a fresh model: `small` (64 wide, 2 layers; CPU) or a JSON LangCell
    /// config file (`langcell.json` of a model directory).
    #[arg(long, default_value = "small", conflicts_with = "init")]
    pub config: String,
    /// Longest cell input of the `small` preset, `<cls>` included (default 256; a model from
    /// --init or a --config file has its own).
    #[arg(long, conflicts_with = "init")]
    pub max_cell_tokens: Option<usize>,
    /// 1: masked gene modelling + cell-cell contrast; 2: all four losses.
    #[arg(long, default_value_t = 2)]
    pub stage: u8,
    /// Passes over the data.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Cells per optimiser step.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Peak learning rate (linear warm-up, then linear decay).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 100)]
    pub warmup_steps: usize,
    /// AdamW weight decay (paper: 1e-3).
    #[arg(long, default_value_t = 1e-3)]
    pub weight_decay: f64,
    /// Fraction of gene tokens masked for masked gene modelling.
    #[arg(long, default_value_t = 0.15)]
    pub mask_ratio: f64,
    /// Weight of masked gene modelling (0.1: see the sclm-langcell pretrain docs for why).
    #[arg(long, default_value_t = 0.1)]
    pub w_mgm: f64,
    /// Weight of cell-cell contrast.
    #[arg(long, default_value_t = 0.05)]
    pub w_cc: f64,
    /// Weight of cell-text contrast (stage 2).
    #[arg(long, default_value_t = 1.0)]
    pub w_ct: f64,
    /// Weight of cell-text matching (stage 2).
    #[arg(long, default_value_t = 1.0)]
    pub w_ctm: f64,
    /// Temperature of cell-text contrast.
    #[arg(long, default_value_t = 0.05)]
    pub temperature: f64,
    /// Temperature of cell-cell contrast.
    #[arg(long, default_value_t = 0.2)]
    pub cc_temperature: f64,
    /// Past momentum keys kept as extra cell-cell negatives.
    #[arg(long, default_value_t = 256)]
    pub queue_size: usize,
    /// EMA momentum of the momentum encoder.
    #[arg(long, default_value_t = 0.995)]
    pub momentum: f64,
    /// Fraction of cells held out for validation and the zero-shot check.
    #[arg(long, default_value_t = 0.1)]
    pub valid_fraction: f64,
    /// Run directory for log.jsonl and the per-epoch checkpoint (default: `<out>.run`).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue from the checkpoint in the run directory.
    #[arg(long)]
    pub resume: bool,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let mut datasets = Vec::new();
    let mut names = Vec::new();
    for p in &a.input {
        let (ad, report) = sclm_io::read_any(p)?;
        crate::progress::warn_read(g.quiet, p, &report);
        let ad = a.counts.prepare(&ad, &p.display().to_string())?;
        let mut name = dataset_name(p);
        while names.contains(&name) {
            name.push('_');
        }
        names.push(name);
        datasets.push(ad);
    }
    let mut labels = BTreeSet::new();
    for (ad, n) in datasets.iter().zip(&names) {
        let col = ad.obs.column(&a.label_key, "obs column").map_err(|e| anyhow::anyhow!("{n}: {e}"))?;
        labels.extend(col.to_labels());
    }
    let labels: Vec<String> = labels.into_iter().collect();
    let lt = a.text.resolve(&labels, g.quiet)?;
    let config = match (a.init.is_some(), a.config.as_str()) {
        (true, _) | (false, "small") => None,
        (false, path) => {
            if a.max_cell_tokens.is_some() {
                anyhow::bail!("--max-cell-tokens sizes the small preset; {path} sets max_cell_tokens itself");
            }
            Some(LangCellConfig::from_json_file(path)?)
        }
    };
    let run_dir = a.run_dir.clone().unwrap_or_else(|| {
        let mut s = a.output.clone().into_os_string();
        s.push(".run");
        PathBuf::from(s)
    });
    let run = PretrainRun {
        init: a.init.clone(),
        config,
        text_init: a.text_init.clone(),
        max_cell_tokens: a.max_cell_tokens.unwrap_or(256),
        label_key: a.label_key.clone(),
        layer: a.counts.layer.clone(),
        allow_non_integer: a.counts.non_integer(),
        texts: lt.matched.iter().map(|m| (m.0.clone(), m.1.clone())).collect(),
        valid_fraction: a.valid_fraction,
        train: PretrainConfig {
            stage: a.stage,
            epochs: a.epochs,
            batch_size: a.batch_size,
            lr: a.lr,
            weight_decay: a.weight_decay,
            warmup_steps: a.warmup_steps,
            mask_ratio: a.mask_ratio,
            w_mgm: a.w_mgm,
            w_cc: a.w_cc,
            w_ct: a.w_ct,
            w_ctm: a.w_ctm,
            temperature: a.temperature,
            cc_temperature: a.cc_temperature,
            queue_size: a.queue_size,
            momentum: a.momentum,
            seed: g.seed,
            ..Default::default()
        },
        run_dir: Some(run_dir.clone()),
        resume: a.resume,
    };
    let named: Vec<(String, &sclm_data::AnnData)> = names.iter().cloned().zip(datasets.iter()).collect();
    let n_cells: usize = datasets.iter().map(|d| d.n_obs()).sum();
    let steps =
        (n_cells as f64 * (1.0 - a.valid_fraction) / a.batch_size.max(2) as f64).ceil() as u64 * a.epochs as u64;
    let mut bar = Bar { pb: crate::progress::bar(steps, "pretrain", "steps", g.quiet) };
    let out = pretrain_datasets(&named, &run, &g.device()?.autodiff(), &mut bar)?;
    bar.pb.finish_and_clear();
    for n in &out.notes {
        crate::progress::note(g.quiet, n);
    }
    if let Some((acc, f1)) = out.zero_shot_valid {
        println!("zero-shot on the validation cells (alpha 0.2): accuracy {acc:.4}, macro-F1 {f1:.4}");
    }
    out.model.save_dir(&a.output)?;
    crate::progress::note(
        g.quiet,
        format!("wrote {} (log and checkpoint in {})", a.output.display(), run_dir.display()),
    );
    Ok(())
}
