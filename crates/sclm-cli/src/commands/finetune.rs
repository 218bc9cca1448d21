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
}

/// Arguments of `sclm finetune`.
#[derive(Debug, clap::Args)]
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
    /// Output .h5ad: the input with obs `<label-key>_cellplm` (prediction), `_cellplm_prob` and
    /// `cellplm_split`.
    #[arg(short, long)]
    pub output: PathBuf,
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
    /// Write metrics (CellPLM and the baseline) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

struct Bar(indicatif::ProgressBar, Option<f64>);
impl Progress for Bar {
    fn on_step(&mut self, _b: usize, _n: usize, r: &StepReport) {
        self.0.set_message(format!("loss {:.3} best F1 {:.3}", r.loss, self.1.unwrap_or(0.0)));
    }
    fn on_epoch(&mut self, r: &EpochReport) {
        self.0.inc(1);
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
    match a.task {
        Task::Annotation => annotation(g, a),
        Task::Denoising => denoising(g, a),
    }
}

fn annotation(g: &Global, a: Args) -> Result<()> {
    let file = a.data.display().to_string();
    let Some(label_key) = a.label_key.clone() else { bail!("annotation needs --label-key (the obs column of cell types)") };
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
    let (plm, data_for_model) = match &a.model {
        Some(dir) => {
            let (m, _) = CellPlm::load_dir(dir, &device)?;
            (m, input.clone())
        }
        None => {
            // Fresh small model over the most variable genes (seurat flavour on log-normalised values).
            let ln = baselines::log_normalize(&input.x)?;
            let (_, genes) = baselines::pca_embedding(&ln, 2, Some(a.n_top_genes), g.seed)?;
            let sub = input.select_vars(&genes);
            let config = CellPlmConfig::small(sub.var.index.clone());
            (CellPlm::new(&config, &device)?, sub)
        }
    };
    let opts = CorpusOptions {
        group_key: a.group_key.clone(),
        max_cells_per_group: 70_000,
        seed: g.seed,
        allow_non_integer: allow,
        ..Default::default()
    };
    let cfg = FinetuneConfig { lr: a.lr, epochs: a.epochs, seed: g.seed, ..Default::default() };
    let named = vec![(file.clone(), &data_for_model)];
    let genes = plm.genes().to_vec();
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
    let (train, valid, test) = (mk(&split.train), mk(&split.valid), mk(&split.test));
    let model = CellPlmClassifier::new(plm, classes.len(), cfg.head_dropout);
    let t0 = Instant::now();
    let mut bar = Bar(crate::progress::bar(a.epochs as u64, "finetune", "epochs", g.quiet), None);
    let (best, summary) = finetune_annotation(model, &train, &valid, &cfg, None, &mut bar)?;
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
    let mut pred = vec![String::new(); adata.n_obs()];
    let mut prob = vec![f32::NAN; adata.n_obs()];
    for grp in &corpus.groups {
        for (i, (c, p)) in best.predict(grp)?.into_iter().enumerate() {
            pred[grp.cells[i]] = classes[c].clone();
            prob[grp.cells[i]] = p;
        }
    }
    let _ = test;
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
    let ln = if a.log1p_input { model_input(&adata, a.use_raw, false, &file)?.x } else { baselines::log_normalize(&input.x)? };
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
    out.obs.insert(format!("{}_cellplm", label_key), Column::Str(pred))?;
    out.obs.insert(format!("{}_cellplm_prob", label_key), Column::F32(prob))?;
    out.obs.insert("cellplm_split", Column::Str(split_col))?;
    sclm_io::write_h5ad(&out, &a.output, &Default::default())?;
    crate::progress::note(g.quiet, format!("wrote {}", a.output.display()));
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
    reports.push(score("kNN diffusion", &baselines::diffusion_denoise(&dense_in, &emb, &Default::default())?)?);

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
    sclm_nn::seed_everything(g.seed, &device);
    let (frac, theta) = sclm_cellplm::pretrain::corpus_gene_stats(&corpus);
    let model = CellPlm::new(&config, &device)?.with_decoder_init(&frac, &theta)?;
    let t0 = Instant::now();
    let pb = crate::progress::spinner("pretraining on the data with hidden entries", g.quiet);
    let (mut zs, _) = sclm_cellplm::pretrain(model, &corpus, &pre_cfg, None, false, &mut sclm_nn::train::NoProgress)?;
    pb.finish_and_clear();
    let lib: Vec<f64> = (0..masked.nrows).map(|r| masked.row(r).1.iter().map(|&v| v as f64).sum()).collect();
    let to_lognorm = |fr: sclm_data::Dense<f32>| -> sclm_data::Dense<f32> {
        // log1p(p · 1e4): the log-normalised value of the predicted counts p · lib.
        let mut d = fr;
        d.data.iter_mut().for_each(|v| *v = (*v * 1e4).ln_1p());
        d
    };
    let _ = &lib;
    let zs_pred = to_lognorm(sclm_cellplm::pretrain::expected_fractions(&zs, &corpus, 0, sub.n_obs())?);
    let mut r = score("CellPLM zero-shot (pretrained here)", &zs_pred)?;
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
        let ft_pred = to_lognorm(sclm_cellplm::pretrain::expected_fractions(&ft, &corpus_ft, 0, sub.n_obs())?);
        let mut r = score("CellPLM fine-tuned", &ft_pred)?;
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
    if let Some(p) = &a.json {
        crate::output::write_atomic(p, serde_json::to_string_pretty(&reports)?.as_bytes())?;
    }
    let _ = &a.output;
    Ok(())
}
