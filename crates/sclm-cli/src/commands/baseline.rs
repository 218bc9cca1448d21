//! `sclm baseline`: classical baselines every model is compared with, on the same harness.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sclm_data::{AnnData, Array2, Matrix};
use sclm_eval::baselines::{self, PcaBaselineOptions};
use sclm_eval::MetricsReport;

use crate::Global;

/// Which baseline to run.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Which {
    /// PCA embedding of log-normalised HVGs, scored like any embedding.
    Pca,
    /// Logistic regression on the PCA embedding, stratified train/test split.
    Logreg,
    /// Denoising: kNN-diffusion smoothing, scored on simulated dropout (CellPLM appendix F.1).
    KnnDenoise,
}

/// Arguments of `sclm baseline`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The baseline.
    #[arg(value_enum)]
    pub which: Which,
    /// Input: .h5ad (raw counts in X, a `counts` layer, or log-normalised values in X).
    pub input: PathBuf,
    /// obs key of the true labels (needed by pca and logreg).
    #[arg(long)]
    pub label_key: Option<String>,
    /// obs key of the batches.
    #[arg(long)]
    pub batch_key: Option<String>,
    /// Principal components.
    #[arg(long, default_value_t = 50)]
    pub n_comps: usize,
    /// Highly variable genes kept before PCA.
    #[arg(long, default_value_t = 2000)]
    pub n_top_genes: usize,
    /// Fraction of cells held out for testing (logreg).
    #[arg(long, default_value_t = 0.3)]
    pub test_frac: f64,
    /// Write the metrics as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the input plus the baseline's output (obsm `X_pca_baseline`) here.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// Raw counts of a file: a `counts` layer, else X if it holds counts.
fn counts(a: &AnnData) -> Option<&Matrix> {
    a.layers.get("counts").filter(|m| m.looks_like_counts()).or(Some(&a.x).filter(|m| m.looks_like_counts()))
}

/// Log-normalised values: from counts when there are any, else X as it is.
fn lognorm(a: &AnnData) -> Result<Matrix> {
    Ok(match counts(a) {
        Some(c) => baselines::log_normalize(c)?,
        None => a.x.clone(),
    })
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let (mut adata, report) = sclm_io::read_any(&a.input)?;
    crate::progress::warn_read(g.quiet, &a.input, &report);
    let file = a.input.display().to_string();
    let labels = |key: &Option<String>| -> Result<Option<Vec<String>>> {
        Ok(match key {
            Some(k) => Some(adata.obs_column(k).with_context(|| file.clone())?.to_labels()),
            None => None,
        })
    };
    let batches = labels(&a.batch_key)?;
    let sp = crate::progress::spinner("baseline", g.quiet);
    let reports: Vec<MetricsReport> = match a.which {
        Which::Pca | Which::Logreg => {
            let Some(y) = labels(&a.label_key)? else {
                bail!("{file}: the {:?} baseline needs --label-key (an obs column of true labels)", a.which);
            };
            let opts = PcaBaselineOptions {
                n_comps: a.n_comps,
                n_top_genes: Some(a.n_top_genes),
                test_frac: a.test_frac,
                seed: g.seed,
            };
            let (emb, reps) = baselines::pca_baseline(&lognorm(&adata)?, &y, batches.as_deref(), &opts)?;
            adata.obsm.insert("X_pca_baseline".into(), Array2::F32(emb));
            let keep = if matches!(a.which, Which::Pca) { 0 } else { 1 };
            reps.into_iter().skip(keep).take(1).collect()
        }
        Which::KnnDenoise => {
            let Some(c) = counts(&adata) else {
                bail!("{file}: the denoising baseline needs raw counts (X or layers['counts'] with non-negative integers)");
            };
            vec![denoise(c, a.n_comps, a.n_top_genes, g.seed)?]
        }
    };
    sp.finish_and_clear();
    for r in &reports {
        print!("{}", r.to_table());
    }
    if let Some(p) = &a.json {
        let json = serde_json::to_string_pretty(&reports)?;
        crate::output::write_atomic(p, json.as_bytes())?;
    }
    if let Some(p) = &a.output {
        sclm_io::write_h5ad(&adata, p, &Default::default())?;
    }
    Ok(())
}

/// The denoising protocol: mask 10% of non-zero counts (∝ exp(−x/20)), log-normalise the
/// masked counts, smooth them by diffusion on the kNN graph of their PCA, and score the
/// masked entries against the log-normalised original counts; the unsmoothed masked matrix
/// is scored too, as the floor.
pub fn denoise(counts: &Matrix, n_comps: usize, n_top_genes: usize, seed: u64) -> Result<MetricsReport> {
    use sclm_eval::protocols::{masked_entry_scores, simulate_dropout, DropoutOptions};
    let (masked, mask) = simulate_dropout(&counts.to_csr(), &DropoutOptions { seed, ..Default::default() })?;
    let truth = baselines::log_normalize(counts)?;
    let input = baselines::log_normalize(&Matrix::Csr(masked))?;
    let (emb, _) = baselines::pca_embedding(&input, n_comps, Some(n_top_genes), seed)?;
    let dense = input.to_dense();
    let smoothed = baselines::diffusion_denoise(&dense, &emb, &Default::default())?;
    let s = masked_entry_scores(&truth, &smoothed, &mask)?;
    let floor = masked_entry_scores(&truth, &dense, &mask)?;
    let mut rep = MetricsReport::new("denoising (simulated dropout)", "kNN diffusion", counts.shape().0);
    rep.push("RMSE", s.rmse);
    rep.push("MAE", s.mae);
    rep.push("pearson", s.pearson);
    rep.push("RMSE_no_denoising", floor.rmse);
    rep.push("MAE_no_denoising", floor.mae);
    rep.note("masked_entries", mask.len());
    Ok(rep)
}
