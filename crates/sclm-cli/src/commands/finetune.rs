//! `sclm finetune <task>` and `sclm predict`: argument mapping and printing over the task layer
//! (`sclm-tasks`); every protocol runs the model and its baseline on the same cells and genes.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sclm_data::{AnnData, Column, Matrix};
use sclm_eval::MetricsReport;
use sclm_model::{CellModel, EmbedOptions, FinetuneRecipe, PieceOptions, ReconstructOptions, RunOptions};
use sclm_nn::train::{EpochReport, NoProgress, Progress, StepReport};
use sclm_tasks::ModelChoice;

use crate::Global;

/// The tasks.
#[derive(Debug, clap::Subcommand)]
pub enum Task {
    /// Cell-type annotation (CellPLM §4.3): fine-tune a classifier, score it on held-out cells
    /// next to logistic regression on PCA-50 of the same split.
    Annotation(AnnotationArgs),
    /// Denoising (CellPLM §4.2): hide 10 % of the non-zero counts and score their
    /// reconstruction next to kNN-diffusion smoothing.
    Denoising(DenoisingArgs),
    /// Spatial imputation (CellPLM §4.4): hold out genes of a spatial dataset (stratified by
    /// sparsity), impute them from a reference; next to kNN regression from the reference.
    SpatialImputation(SpatialArgs),
    /// Perturbation prediction (CellPLM §4.5): GEARS-style conditions (`A+ctrl`, `ctrl`),
    /// unseen-perturbation split; next to the no-change baseline.
    Perturbation(PerturbationArgs),
}

/// Arguments of `sclm finetune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The task.
    #[command(subcommand)]
    pub task: Task,
}

/// What every task reads.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Input: .h5ad with counts (X or --layer), Cell Ranger .h5 or matrix directory.
    pub input: PathBuf,
    /// Model directory (`sclm pretrain`, `sclm import`; any family); default: a fresh small
    /// CellPLM over the data's genes.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Layer holding the counts (default: X).
    #[arg(long, conflicts_with = "use_raw")]
    pub layer: Option<String>,
    /// Use `raw.X` and `raw.var` instead of X.
    #[arg(long)]
    pub use_raw: bool,
    /// The values are log1p of normalised counts (e.g. scanpy's `raw`): undo the log1p.
    #[arg(long)]
    pub log1p_input: bool,
    /// Accept non-integer values (normalised counts, TPM).
    #[arg(long)]
    pub allow_non_integer: bool,
    /// Write the reports (model and baseline) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Arguments of `sclm finetune annotation`.
#[derive(Debug, Clone, clap::Args)]
pub struct AnnotationArgs {
    #[command(flatten)]
    pub common: Common,
    /// obs column forming the groups of cells that attend to each other (default: the model's
    /// saved group key; a fresh model: all cells one group).
    #[arg(long)]
    pub group_key: Option<String>,
    /// obs column of the cell types.
    #[arg(long)]
    pub label_key: String,
    /// Output .h5ad: the input with obs `<key-added>` (prediction), `<key-added>_prob` and
    /// `<key-added>_split` (train / valid / test / excluded).
    #[arg(short, long)]
    pub output: PathBuf,
    /// obs key of the predictions (default `<label-key>_<family>`).
    #[arg(long)]
    pub key_added: Option<String>,
    /// Save the fine-tuned classifier as a model directory (for `sclm predict`).
    #[arg(long)]
    pub save_model: Option<PathBuf>,
    /// Run directory for log.jsonl, a checkpoint after every epoch and the best model so far.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the interrupted run in --run-dir (same data, model and options); it ends where
    /// an uninterrupted run would.
    #[arg(long, requires = "run_dir")]
    pub resume: bool,
    /// Most epochs (early stopping on validation macro-F1).
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    /// Peak learning rate (published 5e-3).
    #[arg(long, default_value_t = 5e-3)]
    pub lr: f64,
    /// Fraction of each class used for validation.
    #[arg(long, default_value_t = 0.2)]
    pub valid_frac: f64,
    /// Fraction of each class held out for testing.
    #[arg(long, default_value_t = 0.2)]
    pub test_frac: f64,
    /// Classes with fewer cells are left out (with a note); at least 3.
    #[arg(long, default_value_t = 3)]
    pub min_cells_per_class: usize,
    /// Most variable genes of a fresh model and of the baseline's PCA.
    #[arg(long, default_value_t = 3000)]
    pub n_top_genes: usize,
}

/// Arguments of `sclm finetune denoising`.
#[derive(Debug, Clone, clap::Args)]
pub struct DenoisingArgs {
    #[command(flatten)]
    pub common: Common,
    /// obs column forming the groups of cells that attend to each other (default: the model's
    /// saved group key; a fresh model: all cells one group).
    #[arg(long)]
    pub group_key: Option<String>,
    /// Output .h5ad: the evaluated cells × genes with layers `counts_hidden`, `knn_denoised`
    /// and `<family>_denoised` / `<family>_finetuned_denoised` (log-normalised).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Genes scored: the most variable ones among those the model knows.
    #[arg(long, default_value_t = 3000)]
    pub n_top_genes: usize,
    /// Fraction of each cell's non-zero counts hidden.
    #[arg(long, default_value_t = 0.1)]
    pub hide_frac: f64,
    /// Training epochs of a fresh model on the data with the hidden entries (a given --model
    /// reconstructs zero-shot instead).
    #[arg(long, default_value_t = 10, conflicts_with = "model")]
    pub pretrain_epochs: usize,
    /// Fine-tuning epochs with the imputation recipe (0: no fine-tuning).
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Learning rate (default: the family's; CellPLM 3e-4 pretraining, 5e-4 fine-tuning).
    #[arg(long)]
    pub lr: Option<f64>,
}

/// Arguments of `sclm finetune spatial-imputation`.
#[derive(Debug, Clone, clap::Args)]
pub struct SpatialArgs {
    #[command(flatten)]
    pub common: Common,
    /// obs column forming the groups of cells that attend to each other (default: the model's
    /// saved group key; a fresh model: all cells one group).
    #[arg(long)]
    pub group_key: Option<String>,
    /// Reference .h5ad measuring the held-out genes (default: half of the spots).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// obsm key of the coordinates.
    #[arg(long, default_value = "spatial", conflicts_with = "coords_obs")]
    pub spatial_key: String,
    /// Two obs columns holding the coordinates instead, e.g. `row,col`.
    #[arg(long)]
    pub coords_obs: Option<String>,
    /// Output .h5ad: the query spots with layers `<family>_imputed`, `knn_imputed` and var
    /// `held_out`.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Most variable genes the model reads besides the held-out ones.
    #[arg(long, default_value_t = 1000)]
    pub n_top_genes: usize,
    /// Fraction of the shared genes held out (stratified by sparsity).
    #[arg(long, default_value_t = 0.1)]
    pub holdout_frac: f64,
    /// Training epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Learning rate (default: the family's).
    #[arg(long)]
    pub lr: Option<f64>,
}

/// Arguments of `sclm finetune perturbation`.
#[derive(Debug, Clone, clap::Args)]
pub struct PerturbationArgs {
    #[command(flatten)]
    pub common: Common,
    /// obs column of the conditions (GEARS names `A+ctrl`, `A+B`, `ctrl`, or bare gene names).
    #[arg(long, default_value = "perturbation")]
    pub perturbation_key: String,
    /// The control condition (default: `ctrl` when present, else `control`).
    #[arg(long)]
    pub control: Option<String>,
    /// Fraction of the conditions held out for testing (unseen in training).
    #[arg(long, default_value_t = 0.25)]
    pub test_frac: f64,
    /// Fraction of the other conditions used for validation (scored and reported).
    #[arg(long, default_value_t = 0.1)]
    pub valid_frac: f64,
    /// Training epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Learning rate (default: the family's; CellPLM 1e-3).
    #[arg(long)]
    pub lr: Option<f64>,
}

struct Bar(indicatif::ProgressBar, Option<f64>);
impl Progress for Bar {
    fn on_step(&mut self, _b: usize, _n: usize, r: &StepReport) {
        match self.1 {
            Some(best) => self.0.set_message(format!("loss {:.3} best {:.3}", r.loss, best)),
            None => self.0.set_message(format!("epoch {} loss {:.3}", r.epoch + 1, r.loss)),
        }
    }
    fn on_epoch(&mut self, r: &EpochReport) {
        self.0.set_position(r.epoch as u64 + 1); // a resumed run starts past zero
        if r.is_best && r.valid_metric.is_some() {
            self.1 = r.valid_metric;
        }
    }
}

/// The matrix a model reads: X or raw.X, with log1p undone when asked.
pub fn model_input(a: &AnnData, use_raw: bool, log1p_input: bool, file: &str) -> Result<AnnData> {
    let mut out = if use_raw {
        let Some(raw) = &a.raw else { bail!("{file}: --use-raw but the file has no raw") };
        let mut b = AnnData::new(raw.x.clone());
        b.obs = a.obs.clone();
        b.var = raw.var.clone();
        b.obsm = a.obsm.clone();
        b
    } else {
        a.clone()
    };
    if log1p_input {
        match &mut out.x {
            Matrix::Csr(c) => c.data.iter_mut().for_each(|v| *v = v.exp_m1()),
            Matrix::Dense(d) => d.data.iter_mut().for_each(|v| *v = v.exp_m1()),
        }
    }
    Ok(out)
}

/// The input of a task, read and prepared, with the model.
struct Loaded {
    file: String,
    adata: AnnData,
    input: AnnData,
    model: Option<Box<dyn CellModel>>,
}

impl Loaded {
    fn choice(&self) -> ModelChoice<'_> {
        match &self.model {
            Some(m) => ModelChoice::Given(m.as_ref()),
            None => ModelChoice::Fresh(&sclm_cellplm::FAMILY),
        }
    }
}

fn load(g: &Global, c: &Common) -> Result<Loaded> {
    let file = c.input.display().to_string();
    let (adata, report) = sclm_io::read_any(&c.input)?;
    crate::progress::warn_read(g.quiet, &c.input, &report);
    let input = model_input(&adata, c.use_raw, c.log1p_input, &file)?;
    if let Some(l) = &c.layer {
        if !input.layers.contains_key(l) {
            bail!("{file}: no layer named '{l}'{}", sclm_data::available_hint(input.layers.keys().map(|s| s.as_str())));
        }
    }
    let model = match &c.model {
        Some(dir) => Some(crate::load_model(dir, &g.device()?)?),
        None => None,
    };
    Ok(Loaded { file, adata, input, model })
}

fn embed_options(c: &Common, group_key: &Option<String>) -> EmbedOptions {
    EmbedOptions {
        group_key: group_key.clone(),
        layer: c.layer.clone(),
        pieces: PieceOptions { allow_non_integer: c.allow_non_integer || c.log1p_input, ..Default::default() },
        ..Default::default()
    }
}

fn reconstruct_options(c: &Common, group_key: &Option<String>) -> ReconstructOptions {
    ReconstructOptions {
        group_key: group_key.clone(),
        layer: c.layer.clone(),
        allow_non_integer: c.allow_non_integer || c.log1p_input,
        ..Default::default()
    }
}

/// Prints reports as a table (a row per method, a column per metric) and notes.
fn print_reports(reports: &[MetricsReport]) {
    let mut names: Vec<&str> = Vec::new();
    for r in reports {
        for m in &r.metrics {
            if !names.contains(&m.name.as_str()) {
                names.push(&m.name);
            }
        }
    }
    let w = reports.iter().map(|r| r.method.len()).max().unwrap_or(6).max(6);
    print!("{:<w$}", "method");
    for n in &names {
        print!(" {:>16}", n);
    }
    println!();
    for r in reports {
        print!("{:<w$}", r.method);
        for n in &names {
            let v = r.get(n).map_or("-".to_string(), |v| format!("{v:.4}"));
            print!(" {:>16}", v);
        }
        println!();
    }
}

fn write_json(path: &Option<PathBuf>, reports: &[MetricsReport]) -> Result<()> {
    if let Some(p) = path {
        crate::output::write_atomic(p, serde_json::to_string_pretty(reports)?.as_bytes())?;
    }
    Ok(())
}

fn notes(g: &Global, file: &str, notes: &[String]) {
    for n in notes {
        crate::progress::note(g.quiet, format!("{file}: {n}"));
    }
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    match a.task {
        Task::Annotation(t) => annotation(g, t),
        Task::Denoising(t) => denoising(g, t),
        Task::SpatialImputation(t) => spatial_imputation(g, t),
        Task::Perturbation(t) => perturbation(g, t),
    }
}

fn annotation(g: &Global, a: AnnotationArgs) -> Result<()> {
    let l = load(g, &a.common)?;
    let opts = sclm_tasks::AnnotationOptions {
        label_key: a.label_key.clone(),
        valid_frac: a.valid_frac,
        test_frac: a.test_frac,
        min_cells_per_class: a.min_cells_per_class,
        recipe: FinetuneRecipe { lr: a.lr, epochs: a.epochs, seed: g.seed, ..Default::default() },
        run: RunOptions { run_dir: a.run_dir.clone(), resume: a.resume },
        embed: embed_options(&a.common, &a.group_key),
        baseline: sclm_tasks::PcaFit { n_top_genes: a.n_top_genes, seed: g.seed, ..Default::default() },
        fresh_genes: a.n_top_genes,
        seed: g.seed,
    };
    let device = g.device()?.autodiff();
    let t0 = Instant::now();
    let mut bar = Bar(crate::progress::bar(a.epochs as u64, "finetune", "epochs", g.quiet), None);
    let out = sclm_tasks::annotation(l.choice(), &l.input, &opts, &device, &mut bar).with_context(|| l.file.clone())?;
    bar.0.finish_and_clear();
    notes(g, &l.file, &out.notes);
    crate::progress::note(
        g.quiet,
        format!(
            "{}: {} classes; {} train / {} valid / {} test cells; fine-tuned {} epochs in {:.0} s",
            l.file,
            out.labels.classes.len(),
            out.split.train.len(),
            out.split.valid.len(),
            out.split.test.len(),
            out.summary.epochs,
            t0.elapsed().as_secs_f64()
        ),
    );
    print_reports(&out.reports);
    write_json(&a.common.json, &out.reports)?;
    if let Some(dir) = &a.save_model {
        out.classifier.save(dir)?;
        crate::progress::note(g.quiet, format!("saved the classifier to {}", dir.display()));
    }
    let key = a.key_added.clone().unwrap_or_else(|| format!("{}_{}", a.label_key, l.choice().family()));
    let mut adata = l.adata;
    sclm_tasks::annotation::write_obs(&mut adata, &out, &key)?;
    sclm_io::write_h5ad(&adata, &a.output, &Default::default())?;
    crate::progress::note(g.quiet, format!("wrote {} (obs['{key}'], '{key}_prob', '{key}_split')", a.output.display()));
    Ok(())
}

fn denoising(g: &Global, a: DenoisingArgs) -> Result<()> {
    let l = load(g, &a.common)?;
    let opts = sclm_tasks::DenoisingOptions {
        n_top_genes: a.n_top_genes,
        dropout: sclm_eval::protocols::DropoutOptions { rate: a.hide_frac, ..Default::default() },
        pretrain_epochs: a.pretrain_epochs,
        finetune_epochs: a.epochs,
        lr: a.lr,
        cells: reconstruct_options(&a.common, &a.group_key),
        seed: g.seed,
    };
    let device = g.device()?.autodiff();
    let pb = crate::progress::spinner("denoising", g.quiet);
    let mut stage = |s: &str| pb.set_message(s.to_string());
    let out = sclm_tasks::denoising(l.choice(), &l.input, &opts, &device, &mut stage, &mut NoProgress)
        .with_context(|| l.file.clone())?;
    pb.finish_and_clear();
    notes(g, &l.file, &out.notes);
    println!("{}: {} cells x {} genes, {} hidden entries", l.file, out.data.n_obs(), out.data.n_vars(), out.n_hidden);
    print_reports(&out.reports);
    write_json(&a.common.json, &out.reports)?;
    if let Some(p) = &a.output {
        sclm_io::write_h5ad(&out.data, p, &Default::default())?;
        let layers = out.data.layers.keys().cloned().collect::<Vec<_>>().join(", ");
        crate::progress::note(g.quiet, format!("wrote {} (layers: {layers})", p.display()));
    }
    Ok(())
}

/// Puts the spot coordinates of two obs columns into obsm['spatial'].
fn coords_from_obs(mut a: AnnData, file: &str, cols: &str) -> Result<AnnData> {
    let parts: Vec<&str> = cols.split(',').map(str::trim).collect();
    if parts.len() != 2 {
        bail!("--coords-obs wants two obs columns separated by a comma, got '{cols}'");
    }
    let col = |k: &str| -> Result<Vec<f32>> {
        let labels = a.obs_column(k).with_context(|| file.to_string())?.to_labels();
        labels
            .iter()
            .map(|v| v.parse::<f32>().with_context(|| format!("{file}: obs['{k}'] holds '{v}', not a coordinate")))
            .collect()
    };
    let (x, y) = (col(parts[0])?, col(parts[1])?);
    let mut d = sclm_data::Dense::zeros(x.len(), 2);
    for (r, (x, y)) in x.into_iter().zip(y).enumerate() {
        d.data[2 * r] = x;
        d.data[2 * r + 1] = y;
    }
    a.obsm.insert("spatial".into(), sclm_data::Array2::F32(d));
    Ok(a)
}

fn spatial_imputation(g: &Global, a: SpatialArgs) -> Result<()> {
    let l = load(g, &a.common)?;
    let (input, key) = match &a.coords_obs {
        Some(cols) => (coords_from_obs(l.input.clone(), &l.file, cols)?, "spatial".to_string()),
        None => (l.input.clone(), a.spatial_key.clone()),
    };
    if !input.obsm.contains_key(&key) {
        bail!(
            "{}: spatial imputation needs spot coordinates: no obsm['{key}']{}; give --spatial-key KEY or --coords-obs ROW,COL",
            l.file,
            sclm_data::available_hint(input.obsm.keys().map(|s| s.as_str()))
        );
    }
    let reference = match &a.reference {
        Some(p) => {
            let (r, rep) = sclm_io::read_any(p)?;
            crate::progress::warn_read(g.quiet, p, &rep);
            let rfile = p.display().to_string();
            let r = model_input(&r, a.common.use_raw, a.common.log1p_input, &rfile)?;
            if r.n_obs() == 0 {
                bail!("{rfile}: the reference has 0 cells");
            }
            let x = sclm_model::cells::counts_matrix(&r, a.common.layer.as_deref()).with_context(|| rfile.clone())?;
            sclm_model::cells::check_counts(&x, true).with_context(|| rfile.clone())?;
            drop(x);
            sclm_model::GeneMapping::for_dataset(&input.var.index, &r.var, None)
                .map_err(|e| anyhow::anyhow!("{rfile}: the reference shares no gene with {}: {e}", l.file))?;
            Some(r)
        }
        None => None,
    };
    let opts = sclm_tasks::SpatialOptions {
        spatial_key: key,
        n_top_genes: a.n_top_genes,
        holdout_frac: a.holdout_frac,
        epochs: a.epochs,
        lr: a.lr,
        cells: ReconstructOptions { allow_non_integer: true, ..reconstruct_options(&a.common, &a.group_key) },
        seed: g.seed,
    };
    let device = g.device()?.autodiff();
    let t0 = Instant::now();
    let pb = crate::progress::spinner("spatial imputation", g.quiet);
    let mut stage = |s: &str| pb.set_message(s.to_string());
    let out = sclm_tasks::spatial_imputation(
        l.choice(),
        &input,
        reference.as_ref(),
        &opts,
        &device,
        &mut stage,
        &mut NoProgress,
    )
    .with_context(|| l.file.clone())?;
    pb.finish_and_clear();
    notes(g, &l.file, &out.notes);
    let [q, r, ng, h, s] = out.sizes;
    println!(
        "{}: {q} query spots, {r} reference cells, {ng} genes of which {h} held out ({s} scored); trained {} epochs in {:.0} s",
        l.file,
        a.epochs.max(1),
        t0.elapsed().as_secs_f64()
    );
    print_reports(&out.reports);
    write_json(&a.common.json, &out.reports)?;
    if let Some(p) = &a.output {
        sclm_io::write_h5ad(&out.data, p, &Default::default())?;
        crate::progress::note(g.quiet, format!("wrote {}", p.display()));
    }
    Ok(())
}

fn perturbation(g: &Global, a: PerturbationArgs) -> Result<()> {
    let l = load(g, &a.common)?;
    let opts = sclm_tasks::PerturbationOptions {
        perturbation_key: a.perturbation_key.clone(),
        control: a.control.clone(),
        test_frac: a.test_frac,
        valid_frac: a.valid_frac,
        epochs: a.epochs,
        lr: a.lr,
        allow_non_integer: a.common.allow_non_integer || a.common.log1p_input,
        layer: a.common.layer.clone(),
        seed: g.seed,
    };
    let device = g.device()?.autodiff();
    let t0 = Instant::now();
    let pb = crate::progress::spinner("perturbation", g.quiet);
    let mut stage = |s: &str| pb.set_message(s.to_string());
    let out = sclm_tasks::perturbation(l.choice(), &l.input, &opts, &device, &mut stage, &mut NoProgress)
        .with_context(|| l.file.clone())?;
    pb.finish_and_clear();
    notes(g, &l.file, &out.notes);
    let [tr, va, te] = &out.conditions;
    println!(
        "{}: {} train / {} valid / {} test (unseen) perturbations, {} control cells; trained {} epochs in {:.0} s",
        l.file,
        tr.len(),
        va.len(),
        te.len(),
        out.n_controls,
        a.epochs.max(1),
        t0.elapsed().as_secs_f64()
    );
    for part in ["test", "validation"] {
        let rs: Vec<MetricsReport> = out.reports.iter().filter(|r| r.task.contains(part)).cloned().collect();
        if !rs.is_empty() {
            println!("{part} conditions:");
            print_reports(&rs);
        }
    }
    write_json(&a.common.json, &out.reports)?;
    Ok(())
}

/// Arguments of `sclm predict`.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// Input: .h5ad with counts (X or --layer), Cell Ranger .h5 or matrix directory.
    pub input: PathBuf,
    /// Classifier directory (`sclm finetune annotation --save-model`).
    #[arg(long)]
    pub model: PathBuf,
    /// Output .h5ad: the input with obs `<key-added>` (predicted class) and `<key-added>_prob`.
    #[arg(short, long)]
    pub output: PathBuf,
    /// obs key of the predictions (default `<family>_prediction`).
    #[arg(long)]
    pub key_added: Option<String>,
    /// Layer holding the counts (default: X).
    #[arg(long, conflicts_with = "use_raw")]
    pub layer: Option<String>,
    /// Use `raw.X` and `raw.var` instead of X.
    #[arg(long)]
    pub use_raw: bool,
    /// The values are log1p of normalised counts: undo the log1p.
    #[arg(long)]
    pub log1p_input: bool,
    /// Accept non-integer values.
    #[arg(long)]
    pub allow_non_integer: bool,
    /// obs column forming the groups (default: the group key saved with the classifier).
    #[arg(long)]
    pub group_key: Option<String>,
}

pub fn predict(g: &Global, a: PredictArgs) -> Result<()> {
    let file = a.input.display().to_string();
    let model = crate::load_model(&a.model, &g.device()?)?;
    if model.manifest().kind != sclm_model::ModelKind::Classifier {
        bail!(
            "{}: not a classifier but a pretrained {} model; fine-tune one with `sclm finetune annotation --save-model`",
            a.model.display(),
            model.family()
        );
    }
    let (adata, report) = sclm_io::read_any(&a.input)?;
    crate::progress::warn_read(g.quiet, &a.input, &report);
    let input = model_input(&adata, a.use_raw, a.log1p_input, &file)?;
    let opts = EmbedOptions {
        group_key: a.group_key.clone(),
        layer: a.layer.clone(),
        pieces: PieceOptions { allow_non_integer: a.allow_non_integer || a.log1p_input, ..Default::default() },
        ..Default::default()
    };
    let (pred, prob, matched) =
        sclm_model::predict(model.as_ref(), &input, &opts, &mut |_| {}).with_context(|| file.clone())?;
    crate::progress::note(g.quiet, format!("{file}: {}", matched.report()));
    let key = a.key_added.clone().unwrap_or_else(|| format!("{}_prediction", model.family()));
    let mut out = adata;
    out.obs.insert(key.clone(), Column::Str(pred))?;
    out.obs.insert(format!("{key}_prob"), Column::F32(prob))?;
    sclm_io::write_h5ad(&out, &a.output, &Default::default())?;
    crate::progress::note(g.quiet, format!("wrote {} (obs['{key}'])", a.output.display()));
    Ok(())
}
