//! `sclm finetune annotation`: fine-tune CellPLM for cell-type annotation and score it next to
//! logistic regression on PCA with the same split.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sclm_cellplm::annotate::{finetune_annotation, CellPlmClassifier, FinetuneConfig, LabeledGroup};
use sclm_cellplm::pretrain::{labels_for, Corpus, CorpusOptions};
use sclm_cellplm::{CellPlm, CellPlmConfig};
use sclm_data::{AnnData, Column, Matrix};
use sclm_eval::baselines::{self, LogRegOptions};
use sclm_eval::MetricsReport;
use sclm_nn::train::{EpochReport, Progress, StepReport};

use crate::Global;

/// Fine-tuning tasks.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Task {
    /// Cell-type annotation: encoder + latent + classification head (paper §4.3).
    Annotation,
    /// Denoising (paper §4.2): hide 10 % of the non-zero counts, pretrain a small model on what is
    /// left (zero-shot: decoder output), fine-tune it with the published imputation masking, and
    /// score the hidden entries next to kNN-diffusion smoothing.
    Denoising,
    /// Spatial imputation (paper §4.4): hold out genes of a spatial dataset, train on it together
    /// with a reference measuring every gene (default: half of the spots), impute the held-out
    /// genes; per-gene correlation and cosine next to kNN regression from the reference.
    SpatialImputation,
    /// Perturbation prediction (paper §4.5): control cells with the perturbed gene marked −100
    /// and an MLP decoder; unseen-perturbation split; RMSE over all genes and the top-20 DE genes
    /// next to the no-change baseline.
    Perturbation,
}

/// Arguments of `sclm finetune`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The task.
    #[arg(value_enum)]
    pub task: Task,
    /// Input .h5ad with counts and labels.
    #[arg(long)]
    pub data: PathBuf,
    /// obs column of the cell types (annotation).
    #[arg(long)]
    pub label_key: Option<String>,
    /// Pretrained model directory (`sclm pretrain` / `sclm import`); default: a fresh small model
    /// over the dataset's most variable genes.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output .h5ad. Annotation: the input with obs `<label-key>_cellplm` (prediction),
    /// `_cellplm_prob` and `cellplm_split`. Denoising: the evaluated cells × genes with layers
    /// `counts_hidden`, `cellplm_denoised`, `knn_denoised` (log-normalised). Spatial imputation:
    /// the query spots with layers `cellplm_imputed`, `knn_imputed` and var `held_out`.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Use `raw.X` and `raw.var` instead of X.
    #[arg(long)]
    pub use_raw: bool,
    /// The values are log1p of normalised counts (e.g. scanpy's `raw`): undo the log1p.
    #[arg(long)]
    pub log1p_input: bool,
    /// Accept non-integer values (normalised counts, TPM); the small model rescales each cell.
    #[arg(long)]
    pub allow_non_integer: bool,
    /// Genes of a fresh model: the most variable ones (published: 3,000).
    #[arg(long, default_value_t = 3000)]
    pub n_top_genes: usize,
    /// Most epochs (annotation: one step per group, early stopping on validation macro-F1;
    /// denoising: fine-tuning epochs after pretraining).
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    /// Denoising: pretraining epochs on the data with hidden entries (the zero-shot model).
    #[arg(long, default_value_t = 10)]
    pub pretrain_epochs: usize,
    /// Peak learning rate (published 5e-3).
    #[arg(long, default_value_t = 5e-3)]
    pub lr: f64,
    /// Fractions of cells for validation and test (stratified by label).
    #[arg(long, default_value_t = 0.2)]
    pub valid_frac: f64,
    /// Fraction of cells held out for testing.
    #[arg(long, default_value_t = 0.2)]
    pub test_frac: f64,
    /// obs column forming the groups of cells that attend to each other (default: all cells one group).
    #[arg(long)]
    pub group_key: Option<String>,
    /// Spatial imputation: reference .h5ad measuring every gene (default: half of the spots).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Spatial imputation: obsm key of the coordinates.
    #[arg(long)]
    pub spatial_key: Option<String>,
    /// Spatial imputation: two obs columns holding the coordinates, e.g. `row,col`.
    #[arg(long)]
    pub coords_obs: Option<String>,
    /// Spatial imputation: fraction of the genes held out.
    #[arg(long, default_value_t = 0.1)]
    pub holdout_frac: f64,
    /// Perturbation: obs column of the conditions (a gene name per perturbed cell).
    #[arg(long, default_value = "perturbation")]
    pub perturbation_key: String,
    /// Perturbation: the condition of control cells.
    #[arg(long, default_value = "control")]
    pub control: String,
    /// Write metrics (CellPLM and the baseline) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Annotation: save the fine-tuned classifier here (for `sclm predict`).
    #[arg(long)]
    pub save_model: Option<PathBuf>,
    /// Annotation: run directory for log.jsonl, a checkpoint after every epoch and the best
    /// model so far.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Annotation: continue the interrupted run in --run-dir (same data, model and options);
    /// it ends where an uninterrupted run would.
    #[arg(long, requires = "run_dir")]
    pub resume: bool,
}

struct Bar(indicatif::ProgressBar, Option<f64>);
impl Progress for Bar {
    fn on_step(&mut self, _b: usize, _n: usize, r: &StepReport) {
        self.0.set_message(format!("loss {:.3} best F1 {:.3}", r.loss, self.1.unwrap_or(0.0)));
    }
    fn on_epoch(&mut self, r: &EpochReport) {
        self.0.set_position(r.epoch as u64 + 1); // a resumed run starts past zero
        if r.is_best {
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

pub fn run(g: &Global, a: Args) -> Result<()> {
    if !matches!(a.task, Task::Annotation) && (a.run_dir.is_some() || a.resume) {
        bail!("--run-dir and --resume apply to annotation only (the other tasks are evaluation protocols)");
    }
    match a.task {
        Task::Annotation => annotation(g, a),
        Task::Denoising => denoising(g, a),
        Task::SpatialImputation => spatial_imputation(g, a),
        Task::Perturbation => perturbation(g, a),
    }
}

fn annotation(g: &Global, a: Args) -> Result<()> {
    let file = a.data.display().to_string();
    let Some(label_key) = a.label_key.clone() else {
        bail!("annotation needs --label-key (the obs column of cell types)")
    };
    let Some(output) = a.output.clone() else { bail!("annotation needs -o/--output (the annotated .h5ad)") };
    let (adata, report) = sclm_io::read_any(&a.data)?;
    crate::progress::warn_read(g.quiet, &a.data, &report);
    let input = model_input(&adata, a.use_raw, a.log1p_input, &file)?;
    let labels = adata.obs_column(&label_key).with_context(|| file.clone())?.to_labels();
    // Classes and their sizes: every class needs a training, a validation and a test cell.
    let mut classes: Vec<String> = labels.iter().filter(|l| !l.is_empty()).cloned().collect();
    classes.sort();
    classes.dedup();
    for c in &classes {
        let n = labels.iter().filter(|l| *l == c).count();
        if n < 3 {
            bail!(
                "{file}: class '{c}' of obs['{}'] has {n} cell(s); fine-tuning needs at least 3 per class \
                 (training, validation, test) — drop or merge it",
                label_key
            );
        }
    }
    if classes.len() < 2 {
        bail!("{file}: obs['{}'] has {} class(es); annotation needs at least 2", label_key, classes.len());
    }
    let codes: Vec<Option<usize>> = labels.iter().map(|l| classes.binary_search(l).ok()).collect();
    let split = sclm_eval::protocols::stratified_split(&labels, a.valid_frac, a.test_frac, g.seed)?;

    // Model and its vocabulary.
    let device = g.device()?.autodiff();
    sclm_nn::seed_everything(g.seed, &device);
    let allow = a.allow_non_integer || a.log1p_input;
    let cfg = FinetuneConfig { lr: a.lr, epochs: a.epochs, seed: g.seed, ..Default::default() };
    let (model, data_for_model) = match &a.model {
        Some(dir) => {
            // A pretrained model gets the published fine-tuning model.
            let (plm, _) = CellPlm::load_dir(dir, &device)?;
            let (model, left_out) = CellPlmClassifier::for_finetuning(&plm, classes.len(), cfg.dropout)?;
            if left_out.iter().any(|t| t.starts_with("latent.")) {
                crate::progress::note(
                    g.quiet,
                    format!(
                        "the pretrained {:?} latent is replaced by a fresh linear one, as in the published pipeline",
                        plm.config().latent_mod
                    ),
                );
            }
            (model, input.clone())
        }
        None => {
            // Fresh small model over the most variable genes (seurat flavour on log-normalised
            // values). Not part of the published method: it keeps its own configuration, with
            // the dropout before the head only.
            let ln = baselines::log_normalize(&input.x)?;
            let (_, genes) = baselines::pca_embedding(&ln, 2, Some(a.n_top_genes), g.seed)?;
            let sub = input.select_vars(&genes);
            let config = CellPlmConfig::small(sub.var.index.clone());
            (CellPlmClassifier::new(CellPlm::new(&config, &device)?, classes.len(), cfg.dropout), sub)
        }
    };
    let opts = CorpusOptions {
        group_key: a.group_key.clone(),
        max_cells_per_group: 70_000,
        seed: g.seed,
        allow_non_integer: allow,
        ..Default::default()
    };
    let named = vec![(file.clone(), &data_for_model)];
    let genes = model.plm.genes().to_vec();
    let corpus = Corpus::build(&named, &genes, &opts, &cfg.masking, false, false).with_context(|| file.clone())?;
    crate::progress::note(
        g.quiet,
        format!(
            "{file}: {} of {} genes in the model vocabulary; {} classes; {} train / {} valid / {} test cells",
            corpus.matched[0].0,
            corpus.matched[0].1,
            classes.len(),
            split.train.len(),
            split.valid.len(),
            split.test.len()
        ),
    );
    let mk = |rows: &[usize]| -> Vec<LabeledGroup> {
        labels_for(&corpus, &codes, rows)
            .into_iter()
            .zip(&corpus.groups)
            .map(|(labels, group)| LabeledGroup { group: group.clone(), labels })
            .collect()
    };
    let (train, valid) = (mk(&split.train), mk(&split.valid));
    let t0 = Instant::now();
    let mut bar = Bar(crate::progress::bar(a.epochs as u64, "finetune", "epochs", g.quiet), None);
    let (mut best, summary) =
        finetune_annotation(model, &train, &valid, &cfg, a.run_dir.as_deref(), a.resume, &mut bar)?;
    bar.0.finish_and_clear();
    crate::progress::note(
        g.quiet,
        format!(
            "fine-tuned {} epochs in {:.0} s (best validation macro-F1 {:.4} at epoch {})",
            summary.epochs,
            t0.elapsed().as_secs_f64(),
            summary.best.map_or(f64::NAN, |b| b.0),
            summary.best.map_or(0, |b| b.1 + 1)
        ),
    );

    // Predictions for every cell, scores on the test cells.
    let (pred, prob) = predict_cells(&best, &corpus, &classes, adata.n_obs())?;
    let yt: Vec<String> = split.test.iter().map(|&i| labels[i].clone()).collect();
    let yp: Vec<String> = split.test.iter().map(|&i| pred[i].clone()).collect();
    let r = sclm_eval::metrics::class_report(&yt, &yp)?;
    let mut rep = MetricsReport::new("cell-type annotation", "CellPLM fine-tuned", split.test.len());
    rep.push("accuracy", r.accuracy);
    rep.push("macro_F1", r.macro_f1);
    rep.push("weighted_F1", r.weighted_f1);
    rep.push("macro_precision", r.macro_precision);
    rep.push("macro_recall", r.macro_recall);
    rep.note("epochs", summary.epochs);
    rep.note("model", a.model.as_ref().map_or("fresh small".to_string(), |p| p.display().to_string()));
    // Baseline: logistic regression on PCA-50 of log-normalised HVGs, same split.
    let ln = if a.log1p_input {
        model_input(&adata, a.use_raw, false, &file)?.x
    } else {
        baselines::log_normalize(&input.x)?
    };
    let (pca, _) = baselines::pca_embedding(&ln, 50.min(adata.n_obs() - 1), Some(a.n_top_genes), g.seed)?;
    let base = baselines::annotation_baseline(&pca, &labels, &split, "logreg on PCA-50", &LogRegOptions::default())?;
    println!("{:<18} {:>20} {:>20}", "metric (test)", "CellPLM fine-tuned", "logreg on PCA-50");
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for m in &rep.metrics {
        let b = base.metrics.iter().find(|b| b.name == m.name).and_then(|b| b.value);
        println!("{:<18} {:>20} {:>20}", m.name, fmt(m.value), fmt(b));
    }
    if let Some(p) = &a.json {
        crate::output::write_atomic(p, serde_json::to_string_pretty(&vec![&rep, &base])?.as_bytes())?;
    }
    let mut out = adata;
    let mut split_col = vec![String::from("train"); out.n_obs()];
    for &i in &split.valid {
        split_col[i] = "valid".into();
    }
    for &i in &split.test {
        split_col[i] = "test".into();
    }
    if let Some(dir) = &a.save_model {
        let pre = sclm_cellplm::Preprocessing {
            gene_id: "var_index".into(),
            group_key: a.group_key.clone().unwrap_or_default(),
            ..Default::default()
        };
        best.save_dir(dir, &classes, &pre)?;
        crate::progress::note(g.quiet, format!("saved the classifier to {}", dir.display()));
    }
    out.obs.insert(format!("{}_cellplm", label_key), Column::Str(pred))?;
    out.obs.insert(format!("{}_cellplm_prob", label_key), Column::F32(prob))?;
    out.obs.insert("cellplm_split", Column::Str(split_col))?;
    sclm_io::write_h5ad(&out, &output, &Default::default())?;
    crate::progress::note(g.quiet, format!("wrote {}", output.display()));
    Ok(())
}

fn denoising(g: &Global, a: Args) -> Result<()> {
    use sclm_eval::protocols::{masked_entry_scores, simulate_dropout, DropoutOptions};
    let file = a.data.display().to_string();
    let (adata, report) = sclm_io::read_any(&a.data)?;
    crate::progress::warn_read(g.quiet, &a.data, &report);
    let input = model_input(&adata, a.use_raw, a.log1p_input, &file)?;
    sclm_io::check_counts(&input, &file)?;
    // Genes: the most variable ones (both methods are scored on the same genes).
    let ln_all = baselines::log_normalize(&input.x)?;
    let (_, genes) = baselines::pca_embedding(&ln_all, 2, Some(a.n_top_genes), g.seed)?;
    let mut sub = input.select_vars(&genes);
    let cells: Vec<usize> = (0..sub.n_obs()).filter(|&r| sub.x.to_csr().row(r).0.len() >= 5).collect();
    if cells.len() < 10 {
        bail!("{file}: fewer than 10 cells express 5 of the {} selected genes", genes.len());
    }
    sub = sub.select_obs(&cells);
    let counts = sub.x.to_csr();
    let (masked, mask) = simulate_dropout(&counts, &DropoutOptions { seed: g.seed, ..Default::default() })?;
    let truth = baselines::log_normalize(&Matrix::Csr(counts.clone()))?;
    let masked_m = Matrix::Csr(masked.clone());
    let input_ln = baselines::log_normalize(&masked_m)?;
    let dense_in = input_ln.to_dense();
    let mut reports = Vec::new();
    let score = |name: &str, pred: &sclm_data::Dense<f32>| -> Result<MetricsReport> {
        let s = masked_entry_scores(&truth, pred, &mask)?;
        let mut r = MetricsReport::new("denoising (10% of non-zero counts hidden)", name, sub.n_obs());
        r.push("RMSE", s.rmse);
        r.push("MAE", s.mae);
        r.push("pearson", s.pearson);
        r.note("masked_entries", mask.len());
        Ok(r)
    };
    reports.push(score("no denoising", &dense_in)?);
    let (emb, _) = baselines::pca_embedding(&input_ln, 30.min(sub.n_obs() - 1), None, g.seed)?;
    let knn_pred = baselines::diffusion_denoise(&dense_in, &emb, &Default::default())?;
    reports.push(score("kNN diffusion", &knn_pred)?);
    let mut out = sub.clone();
    out.layers.insert("counts_hidden".into(), Matrix::Csr(masked.clone()));
    out.layers.insert("knn_denoised".into(), Matrix::Dense(knn_pred));

    // CellPLM: pretrain on the data with the hidden entries, predict, fine-tune, predict.
    let mut masked_ad = sub.clone();
    masked_ad.x = masked_m;
    let named = vec![(file.clone(), &masked_ad)];
    let mut config = CellPlmConfig::small(masked_ad.var.index.clone());
    let opts = CorpusOptions { group_key: a.group_key.clone(), seed: g.seed, ..Default::default() };
    let pre_cfg = sclm_cellplm::PretrainConfig { epochs: a.pretrain_epochs.max(1), seed: g.seed, ..Default::default() };
    let corpus = Corpus::build(&named, &config.gene_list, &opts, &pre_cfg.masking, true, false)?;
    config.batch_num = corpus.batch_labels.len();
    let device = g.device()?.autodiff();
    let t0 = Instant::now();
    let mut zs = pretrain_fresh(g, &config, &corpus, &pre_cfg, &device, "pretraining on the data with hidden entries")?;
    // The truth is normalised to the median library (scanpy's default); predictions likewise,
    // with the median library of the observed (masked) counts.
    let target = median_library(&masked);
    let to_lognorm = |fr: sclm_data::Dense<f32>| -> sclm_data::Dense<f32> {
        let mut d = fr;
        d.data.iter_mut().for_each(|v| *v = (*v as f64 * target).ln_1p() as f32);
        d
    };
    let zs_pred = to_lognorm(sclm_cellplm::pretrain::expected_fractions(&zs, &corpus, 0, sub.n_obs(), false)?);
    let mut r = score("CellPLM zero-shot (pretrained here)", &zs_pred)?;
    out.layers.insert("cellplm_denoised".into(), Matrix::Dense(zs_pred.clone()));
    r.note("pretrain_epochs", pre_cfg.epochs);
    r.note("seconds", format!("{:.0}", t0.elapsed().as_secs_f64()));
    reports.push(r);
    if a.epochs > 0 {
        let tmp = tempfile::tempdir()?;
        zs.save_dir(tmp.path().join("m"))?;
        let (m, _) = CellPlm::load_dir(tmp.path().join("m"), &device)?;
        // Published imputation fine-tuning: lr 5e-4, wd 1e-6, mask 95 % of cells x 25 % of genes.
        let ft_mask = sclm_cellplm::MaskConfig { mask_node_rate: 0.95, mask_feature_rate: 0.25, ..pre_cfg.masking };
        let corpus_ft = Corpus::build(&named, &config.gene_list, &opts, &ft_mask, true, false)?;
        let ft_cfg = sclm_cellplm::PretrainConfig {
            masking: ft_mask,
            epochs: a.epochs,
            lr: 5e-4,
            weight_decay: 1e-6,
            warmup_steps: 0,
            seed: g.seed.wrapping_add(1),
            ..Default::default()
        };
        let t1 = Instant::now();
        let pb = crate::progress::spinner("fine-tuning (imputation recipe)", g.quiet);
        let (ft, _) = sclm_cellplm::pretrain(m, &corpus_ft, &ft_cfg, None, false, &mut sclm_nn::train::NoProgress)?;
        pb.finish_and_clear();
        let ft_pred = to_lognorm(sclm_cellplm::pretrain::expected_fractions(&ft, &corpus_ft, 0, sub.n_obs(), false)?);
        let mut r = score("CellPLM fine-tuned", &ft_pred)?;
        out.layers.insert("cellplm_finetuned_denoised".into(), Matrix::Dense(ft_pred.clone()));
        r.note("finetune_epochs", a.epochs);
        r.note("seconds", format!("{:.0}", t1.elapsed().as_secs_f64()));
        reports.push(r);
    }
    println!("{file}: {} cells x {} genes, {} hidden entries", sub.n_obs(), sub.n_vars(), mask.len());
    println!("{:<38} {:>8} {:>8} {:>8}", "method", "RMSE", "MAE", "pearson");
    let fmt = |r: &MetricsReport, k: &str| {
        r.metrics.iter().find(|m| m.name == k).and_then(|m| m.value).map_or("-".to_string(), |v| format!("{v:.4}"))
    };
    for r in &reports {
        println!("{:<38} {:>8} {:>8} {:>8}", r.method, fmt(r, "RMSE"), fmt(r, "MAE"), fmt(r, "pearson"));
    }
    if let Some(p) = &a.output {
        // The evaluated cells and genes: counts (X), the counts with entries hidden, and the
        // log-normalised predictions of each method.
        sclm_io::write_h5ad(&out, p, &Default::default())?;
        crate::progress::note(
            g.quiet,
            format!("wrote {} (layers: {})", p.display(), out.layers.keys().cloned().collect::<Vec<_>>().join(", ")),
        );
    }
    if let Some(p) = &a.json {
        crate::output::write_atomic(p, serde_json::to_string_pretty(&reports)?.as_bytes())?;
    }
    Ok(())
}

/// Puts the spot coordinates into obsm['spatial'] (from obs columns or an obsm key); a clear
/// error when there are none.
fn with_coordinates(
    mut a: AnnData,
    file: &str,
    spatial_key: Option<&str>,
    coords_obs: Option<&str>,
) -> Result<AnnData> {
    let coords: Vec<[f64; 2]> = match (coords_obs, spatial_key) {
        (Some(cols), _) => {
            let parts: Vec<&str> = cols.split(',').map(str::trim).collect();
            if parts.len() != 2 {
                bail!("--coords-obs wants two obs columns separated by a comma, got '{cols}'");
            }
            let col = |k: &str| -> Result<Vec<f64>> {
                let labels = a.obs_column(k).with_context(|| file.to_string())?.to_labels();
                labels
                    .iter()
                    .map(|v| v.parse::<f64>().with_context(|| format!("{file}: obs['{k}'] holds '{v}', not a coordinate")))
                    .collect()
            };
            let (x, y) = (col(parts[0])?, col(parts[1])?);
            x.into_iter().zip(y).map(|(x, y)| [x, y]).collect()
        }
        (None, Some(k)) => {
            let m = a.obsm_get(k).with_context(|| format!("{file}: the spatial model needs coordinates"))?.to_f32();
            if m.ncols < 2 {
                bail!("{file}: obsm['{k}'] has {} column(s), coordinates need 2", m.ncols);
            }
            (0..m.nrows).map(|r| [m.get(r, 0) as f64, m.get(r, 1) as f64]).collect()
        }
        (None, None) => match a.obsm.get("spatial") {
            Some(m) => {
                let m = m.to_f32();
                (0..m.nrows).map(|r| [m.get(r, 0) as f64, m.get(r, 1) as f64]).collect()
            }
            None => bail!(
                "{file}: spatial imputation needs spot coordinates: give --coords-obs ROW,COL (obs columns) or --spatial-key KEY (obsm); the file has no obsm['spatial']"
            ),
        },
    };
    let mut d = sclm_data::Dense::zeros(coords.len(), 2);
    for (r, c) in coords.iter().enumerate() {
        d.data[2 * r] = c[0] as f32;
        d.data[2 * r + 1] = c[1] as f32;
    }
    a.obsm.insert("spatial".into(), sclm_data::Array2::F32(d));
    Ok(a)
}

/// Mean per-gene Pearson correlation and cosine over the spots (genes `genes` of `truth`
/// against columns `pred_genes` of `pred`); genes constant on either side are skipped.
fn per_gene_scores(
    truth: &sclm_data::Dense<f32>,
    pred: &sclm_data::Dense<f32>,
    genes: &[usize],
    pred_genes: &[usize],
) -> Result<(f64, f64)> {
    use sclm_eval::metrics::{cosine, pearson};
    let n = truth.nrows;
    let (mut corr, mut cos, mut k) = (0.0, 0.0, 0usize);
    for (&gt, &gp) in genes.iter().zip(pred_genes) {
        let t: Vec<f32> = (0..n).map(|i| truth.get(i, gt)).collect();
        let p: Vec<f32> = (0..n).map(|i| pred.get(i, gp)).collect();
        let c = pearson(&t, &p)?;
        if c.is_finite() {
            corr += c;
            cos += cosine(&t, &p)?;
            k += 1;
        }
    }
    Ok((corr / k.max(1) as f64, cos / k.max(1) as f64))
}

fn spatial_imputation(g: &Global, a: Args) -> Result<()> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let file = a.data.display().to_string();
    let (adata, report) = sclm_io::read_any(&a.data)?;
    crate::progress::warn_read(g.quiet, &a.data, &report);
    let spatial = model_input(&adata, a.use_raw, a.log1p_input, &file)?;
    let spatial = with_coordinates(spatial, &file, a.spatial_key.as_deref(), a.coords_obs.as_deref())?;
    sclm_io::check_finite(&spatial.x, &file)?;
    // Genes: the most variable ones of the spatial data; a random share of them is held out.
    let ln = baselines::log_normalize(&spatial.x)?;
    let (_, genes) = baselines::pca_embedding(&ln, 2, Some(a.n_top_genes), g.seed)?;
    let spatial = spatial.select_vars(&genes);
    let mut rng = rand::rngs::StdRng::seed_from_u64(g.seed ^ 0x51a7);
    let mut order: Vec<usize> = (0..spatial.n_vars()).collect();
    order.shuffle(&mut rng);
    let n_hold = ((spatial.n_vars() as f64 * a.holdout_frac).round() as usize).clamp(1, spatial.n_vars() - 1);
    let mut held: Vec<usize> = order[..n_hold].to_vec();
    held.sort_unstable();
    let (reference, query) = match &a.reference {
        Some(p) => {
            let (r, rep) = sclm_io::read_any(p)?;
            crate::progress::warn_read(g.quiet, p, &rep);
            // The reference must measure the held-out genes (matched by name).
            let pos: std::collections::HashMap<&str, usize> =
                r.var.index.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
            let cols: Vec<usize> = spatial.var.index.iter().filter_map(|n| pos.get(n.as_str()).copied()).collect();
            if cols.len() < spatial.n_vars() {
                bail!(
                    "{}: the reference lacks {} of the {} selected genes of {file}",
                    p.display(),
                    spatial.n_vars() - cols.len(),
                    spatial.n_vars()
                );
            }
            (r.select_vars(&cols), spatial.clone())
        }
        None => {
            let mut spots: Vec<usize> = (0..spatial.n_obs()).collect();
            spots.shuffle(&mut rng);
            let half = spatial.n_obs() / 2;
            let (mut r, mut q) = (spots[..half].to_vec(), spots[half..].to_vec());
            r.sort_unstable();
            q.sort_unstable();
            (spatial.select_obs(&r), spatial.select_obs(&q))
        }
    };
    let keep: Vec<usize> = (0..query.n_vars()).filter(|j| held.binary_search(j).is_err()).collect();
    let query_in = query.select_vars(&keep);
    let truth = baselines::log_normalize(&query.x)?.to_dense();

    // Baseline: kNN regression from the reference on PCA of the shared genes.
    let ref_ln = baselines::log_normalize(&reference.x)?;
    let qin_ln = baselines::log_normalize(&query_in.x)?;
    let ref_shared = ref_ln.to_dense().select_cols(&keep);
    let qin_dense = qin_ln.to_dense();
    let mut joint = sclm_data::Dense::zeros(ref_shared.nrows + qin_dense.nrows, ref_shared.ncols);
    joint.data[..ref_shared.data.len()].copy_from_slice(&ref_shared.data);
    joint.data[ref_shared.data.len()..].copy_from_slice(&qin_dense.data);
    let (pcs, _) = baselines::pca_embedding(&Matrix::Dense(joint), 30.min(reference.n_obs() - 1), None, g.seed)?;
    let nr = reference.n_obs();
    let ref_pcs = pcs.select_rows(&(0..nr).collect::<Vec<_>>());
    let q_pcs = pcs.select_rows(&(nr..pcs.nrows).collect::<Vec<_>>());
    let k = 15.min(nr);
    let graph = sclm_eval::neighbors::knn_query(&ref_pcs, &q_pcs, k)?;
    let ref_dense = ref_ln.to_dense();
    let mut knn_pred = sclm_data::Dense::zeros(query.n_obs(), query.n_vars());
    for i in 0..query.n_obs() {
        for &r in &graph.indices[i * k..(i + 1) * k] {
            for &j in &held {
                knn_pred.data[i * query.n_vars() + j] += ref_dense.get(r as usize, j) / k as f32;
            }
        }
    }
    let (kc, kcos) = per_gene_scores(&truth, &knn_pred, &held, &held)?;

    // CellPLM: train on the reference (every gene) and the spatial query (held-out genes absent).
    let named = vec![("reference".to_string(), &reference), ("spatial".to_string(), &query_in)];
    let vocab = sclm_cellplm::union_vocabulary(&named);
    let mut config = CellPlmConfig::small(vocab.clone());
    let opts =
        CorpusOptions { group_key: a.group_key.clone(), seed: g.seed, allow_non_integer: true, ..Default::default() };
    let cfg = sclm_cellplm::PretrainConfig { epochs: a.pretrain_epochs.max(1), seed: g.seed, ..Default::default() };
    let corpus = Corpus::build(&named, &vocab, &opts, &cfg.masking, true, true)?;
    config.batch_num = corpus.batch_labels.len();
    config.dataset_num = 2;
    let device = g.device()?.autodiff();
    let t0 = Instant::now();
    let m = pretrain_fresh(g, &config, &corpus, &cfg, &device, "training on reference + spatial data")?;
    let fr = sclm_cellplm::pretrain::expected_fractions(&m, &corpus, 1, query.n_obs(), true)?;
    let vpos: std::collections::HashMap<&str, usize> = vocab.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let pred_cols: Vec<usize> = held.iter().map(|&j| vpos[query.var.index[j].as_str()]).collect();
    let target = median_library(&query.x.to_csr());
    let mut pl = fr;
    pl.data.iter_mut().for_each(|v| *v = (*v as f64 * target).ln_1p() as f32);
    let (cc, ccos) = per_gene_scores(&truth, &pl, &held, &pred_cols)?;
    println!(
        "{file}: {} query spots, {} reference cells, {} genes of which {} held out; CellPLM trained {} epochs in {:.0} s",
        query.n_obs(),
        reference.n_obs(),
        query.n_vars(),
        held.len(),
        cfg.epochs,
        t0.elapsed().as_secs_f64()
    );
    println!("{:<34} {:>10} {:>10}", "method (held-out genes)", "mean corr", "mean cos");
    println!("{:<34} {:>10.4} {:>10.4}", "kNN regression from reference", kc, kcos);
    println!("{:<34} {:>10.4} {:>10.4}", "CellPLM (reference + spatial)", cc, ccos);
    let mut reps = Vec::new();
    for (name, c, s) in [("kNN regression from reference", kc, kcos), ("CellPLM", cc, ccos)] {
        let mut r = MetricsReport::new("spatial imputation", name, query.n_obs());
        r.push("mean_gene_corr", c);
        r.push("mean_gene_cosine", s);
        r.note("held_out_genes", held.len());
        reps.push(r);
    }
    if let Some(p) = &a.output {
        // The query spots over the selected genes: X as measured, layers with the log-normalised
        // CellPLM prediction of every gene (vocabulary order mapped back) and the kNN baseline;
        // var['held_out'] marks the genes hidden from the model.
        let mut out = query.clone();
        let cols: Vec<usize> = out.var.index.iter().map(|n| vpos[n.as_str()]).collect();
        out.layers.insert("cellplm_imputed".into(), Matrix::Dense(pl.select_cols(&cols)));
        out.layers.insert("knn_imputed".into(), Matrix::Dense(knn_pred.clone()));
        let flag: Vec<bool> = (0..out.n_vars()).map(|j| held.binary_search(&j).is_ok()).collect();
        out.var.insert("held_out", Column::Bool(flag))?;
        sclm_io::write_h5ad(&out, p, &Default::default())?;
        crate::progress::note(g.quiet, format!("wrote {}", p.display()));
    }
    if let Some(p) = &a.json {
        crate::output::write_atomic(p, serde_json::to_string_pretty(&reps)?.as_bytes())?;
    }
    Ok(())
}

/// Median of the cells' totals (the default target of `normalize_total`).
fn median_library(x: &sclm_data::CsrMatrix) -> f64 {
    let mut t: Vec<f64> = (0..x.nrows).map(|r| x.row(r).1.iter().map(|&v| v as f64).sum()).collect();
    t.sort_by(|a, b| a.total_cmp(b));
    if t.is_empty() {
        return 1.0;
    }
    let m = t.len() / 2;
    if t.len() % 2 == 1 {
        t[m]
    } else {
        0.5 * (t[m - 1] + t[m])
    }
}

fn perturbation(g: &Global, a: Args) -> Result<()> {
    use sclm_cellplm::perturb::{log_normalized, pairing_batches, predict_mean, PerturbationModel};
    use std::collections::BTreeMap;
    let file = a.data.display().to_string();
    let (adata, report) = sclm_io::read_any(&a.data)?;
    crate::progress::warn_read(g.quiet, &a.data, &report);
    let input = model_input(&adata, a.use_raw, a.log1p_input, &file)?;
    let conds = adata.obs_column(&a.perturbation_key).with_context(|| file.clone())?.to_labels();
    if !conds.contains(&a.control) {
        bail!(
            "{file}: no cell of obs['{}'] is '{}' (the control condition; see --control)",
            a.perturbation_key,
            a.control
        );
    }
    let split = sclm_eval::protocols::perturbation_split(&conds, &a.control, 0.25, 0.1, g.seed)?;
    let genes = input.var.index.clone();
    let gpos: BTreeMap<&str, u32> = genes.iter().enumerate().map(|(i, n)| (n.as_str(), i as u32)).collect();
    let gene_of = |c: &str| -> Result<u32> {
        gpos.get(c).copied().with_context(|| {
            format!("{file}: condition '{c}' of obs['{}'] is not a gene of the file", a.perturbation_key)
        })
    };
    let mut config = CellPlmConfig::small(genes.clone());
    config.dec_mod = sclm_cellplm::DecoderKind::Mlp;
    let opts = CorpusOptions {
        group_key: None,
        max_cells_per_group: input.n_obs().max(1),
        seed: g.seed,
        allow_non_integer: a.allow_non_integer,
        ..Default::default()
    };
    let named = vec![(file.clone(), &input)];
    let corpus = Corpus::build(&named, &genes, &opts, &Default::default(), false, false)?;
    let all = &corpus.groups[0];
    let controls: Vec<usize> = (0..conds.len()).filter(|&i| conds[i] == a.control).collect();
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in conds.iter().enumerate() {
        members.entry(c.as_str()).or_default().push(i);
    }
    let mut train_conds: Vec<(Option<u32>, Vec<usize>)> = vec![(None, controls.clone())];
    for c in &split.train_perturbations {
        train_conds.push((Some(gene_of(c)?), members[c.as_str()].clone()));
    }
    let device = g.device()?.autodiff();
    sclm_nn::seed_everything(g.seed, &device);
    let profiles = log_normalized(all);
    let ng = genes.len();
    let mean_of = |rows: &[usize]| -> Vec<f32> {
        let mut m = vec![0f64; ng];
        for &r in rows {
            for j in 0..ng {
                m[j] += profiles[r * ng + j] as f64;
            }
        }
        m.into_iter().map(|v| (v / rows.len().max(1) as f64) as f32).collect()
    };
    let control_mean = mean_of(&controls);
    let model = PerturbationModel { plm: CellPlm::new(&config, &device)? }.with_head_at(&control_mean)?;
    let n_batches = 48;
    let batches = pairing_batches(all, &controls, &train_conds, n_batches, 128, g.seed)?;
    let pcfg =
        sclm_cellplm::PretrainConfig { epochs: a.pretrain_epochs.max(1), lr: 1e-3, seed: g.seed, ..Default::default() };
    let mut trainer = sclm_nn::train::Trainer::new(model, pcfg.train_config(n_batches));
    let t0 = Instant::now();
    let pb = crate::progress::spinner("training the perturbation model", g.quiet);
    trainer.fit(&batches, &[], &mut sclm_nn::train::NoProgress)?;
    pb.finish_and_clear();
    let model = sclm_nn::burn::module::Module::valid(&trainer.model);
    // Truth and predictions per test condition (mean log-normalised profiles).
    let (mut truth, mut pred, mut nochange) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for c in &split.test_perturbations {
        truth.insert(c.clone(), mean_of(&members[c.as_str()]));
        pred.insert(c.clone(), predict_mean(&model, all, &controls, Some(gene_of(c)?), 256)?);
        nochange.insert(c.clone(), control_mean.clone());
    }
    let (_, m_all, m_de) = sclm_eval::protocols::perturbation_rmse(&truth, &pred, &control_mean, 20)?;
    let (_, b_all, b_de) = sclm_eval::protocols::perturbation_rmse(&truth, &nochange, &control_mean, 20)?;
    println!(
        "{file}: {} train / {} valid / {} test (unseen) perturbations, {} control cells; trained {} epochs in {:.0} s",
        split.train_perturbations.len(),
        split.valid_perturbations.len(),
        split.test_perturbations.len(),
        controls.len(),
        pcfg.epochs,
        t0.elapsed().as_secs_f64()
    );
    println!("{:<30} {:>10} {:>12}", "method (test perturbations)", "RMSE all", "RMSE top-20");
    println!("{:<30} {:>10.4} {:>12.4}", "no change (control mean)", b_all, b_de);
    println!("{:<30} {:>10.4} {:>12.4}", "CellPLM (-100 marker, MLP)", m_all, m_de);
    let mut reps = Vec::new();
    for (name, x, y) in [("no change", b_all, b_de), ("CellPLM", m_all, m_de)] {
        let mut r = MetricsReport::new("perturbation prediction (unseen)", name, split.cells.test.len());
        r.push("rmse_all", x);
        r.push("rmse_top20_de", y);
        reps.push(r);
    }
    if let Some(p) = &a.json {
        crate::output::write_atomic(p, serde_json::to_string_pretty(&reps)?.as_bytes())?;
    }
    Ok(())
}

/// Arguments of `sclm predict`.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// Classifier directory written by `sclm finetune annotation --save-model`.
    #[arg(long)]
    pub model: PathBuf,
    /// Input .h5ad with counts.
    #[arg(long)]
    pub data: PathBuf,
    /// Output .h5ad: the input with obs `<key>` (predicted class) and `<key>_prob`.
    #[arg(short, long)]
    pub output: PathBuf,
    /// obs key of the predictions.
    #[arg(long, default_value = "cellplm_prediction")]
    pub key: String,
    /// Use `raw.X` and `raw.var` instead of X.
    #[arg(long)]
    pub use_raw: bool,
    /// The values are log1p of normalised counts: undo the log1p.
    #[arg(long)]
    pub log1p_input: bool,
    /// Accept non-integer values.
    #[arg(long)]
    pub allow_non_integer: bool,
}

pub fn predict(g: &Global, a: PredictArgs) -> Result<()> {
    let file = a.data.display().to_string();
    let (model, classes, pre) = CellPlmClassifier::load_dir(&a.model, &g.device()?)?;
    let (adata, report) = sclm_io::read_any(&a.data)?;
    crate::progress::warn_read(g.quiet, &a.data, &report);
    let input = model_input(&adata, a.use_raw, a.log1p_input, &file)?;
    let opts = CorpusOptions {
        group_key: (!pre.group_key.is_empty()).then(|| pre.group_key.clone()),
        max_cells_per_group: 70_000,
        seed: g.seed,
        allow_non_integer: a.allow_non_integer || a.log1p_input,
        ..Default::default()
    };
    let genes = model.plm.genes().to_vec();
    let corpus = Corpus::build(&[(file.clone(), &input)], &genes, &opts, &Default::default(), false, false)
        .with_context(|| file.clone())?;
    crate::progress::note(g.quiet, format!("{file}: {} of {} model genes present", corpus.matched[0].0, genes.len()));
    let (pred, prob) = predict_cells(&model, &corpus, &classes, adata.n_obs())?;
    let mut out = adata;
    out.obs.insert(a.key.clone(), Column::Str(pred))?;
    out.obs.insert(format!("{}_prob", a.key), Column::F32(prob))?;
    sclm_io::write_h5ad(&out, &a.output, &Default::default())?;
    crate::progress::note(g.quiet, format!("wrote {} (obs['{}'])", a.output.display(), a.key));
    Ok(())
}

/// Class and probability of every cell of `corpus`, in dataset row order.
fn predict_cells(
    model: &CellPlmClassifier,
    corpus: &Corpus,
    classes: &[String],
    n_obs: usize,
) -> Result<(Vec<String>, Vec<f32>)> {
    let mut pred = vec![String::new(); n_obs];
    let mut prob = vec![f32::NAN; n_obs];
    for grp in &corpus.groups {
        for (i, (c, p)) in model.predict(grp)?.into_iter().enumerate() {
            pred[grp.cells[i]] = classes[c].clone();
            prob[grp.cells[i]] = p;
        }
    }
    Ok((pred, prob))
}

/// A fresh model of `config`, NB head started from the corpus statistics, pretrained on
/// `corpus` (the model of the denoising and spatial-imputation protocols), with a spinner.
fn pretrain_fresh(
    g: &Global,
    config: &CellPlmConfig,
    corpus: &Corpus,
    cfg: &sclm_cellplm::PretrainConfig,
    device: &sclm_nn::burn::tensor::Device,
    what: &str,
) -> Result<CellPlm> {
    sclm_nn::seed_everything(g.seed, device);
    let (frac, theta) = sclm_cellplm::pretrain::corpus_gene_stats(corpus);
    let model = CellPlm::new(config, device)?.with_decoder_init(&frac, &theta)?;
    let pb = crate::progress::spinner(what, g.quiet);
    let (m, _) = sclm_cellplm::pretrain(model, corpus, cfg, None, false, &mut sclm_nn::train::NoProgress)?;
    pb.finish_and_clear();
    Ok(m)
}
