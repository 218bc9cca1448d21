//! Perturbation prediction (CellPLM §4.5, GEARS' protocol): conditions are named as GEARS does
//! (`A+ctrl` for gene A, `A+B` for two genes, `ctrl` for control cells; a bare gene name is
//! accepted as `A+ctrl`); test conditions (and validation ones) are never seen in training.
//! The model predicts the mean log-normalised profile of the control cells under each test
//! condition; RMSE over all genes and over the 20 genes whose true mean moves most, next to the
//! no-change baseline (the control mean), on the same genes. The validation conditions are
//! scored too and reported separately.
use std::collections::BTreeMap;

use sclm_data::AnnData;
use sclm_eval::protocols::{condition_genes, perturbation_rmse, perturbation_split};
use sclm_eval::MetricsReport;
use sclm_model::{PerturbationCells, ReconstructOptions, ReconstructionFit};
use sclm_nn::burn::tensor::Device;
use sclm_nn::train::Progress;

use crate::choice::ModelChoice;
use crate::error::{input, Result};

/// Options of [`perturbation`].
#[derive(Debug, Clone)]
pub struct PerturbationOptions {
    /// obs column of the conditions (default `perturbation`).
    pub perturbation_key: String,
    /// The control condition (default: `ctrl` when present, else `control`).
    pub control: Option<String>,
    /// Fraction of the conditions held out for testing (default 0.25, as CellPLM's Adamson
    /// setting).
    pub test_frac: f64,
    /// Fraction of the remaining conditions used for validation (default 0.1).
    pub valid_frac: f64,
    /// Training epochs (default 10).
    pub epochs: usize,
    /// Learning rate (`None`: the family's default).
    pub lr: Option<f64>,
    /// Accept non-integer values.
    pub allow_non_integer: bool,
    /// Layer with the counts (default X).
    pub layer: Option<String>,
    /// Seed.
    pub seed: u64,
}

impl Default for PerturbationOptions {
    fn default() -> Self {
        PerturbationOptions {
            perturbation_key: "perturbation".into(),
            control: None,
            test_frac: 0.25,
            valid_frac: 0.1,
            epochs: 10,
            lr: None,
            allow_non_integer: false,
            layer: None,
            seed: 0,
        }
    }
}

/// What [`perturbation`] returns.
pub struct PerturbationOutcome {
    /// Test scores: no change, then the model; then the same on the validation conditions.
    pub reports: Vec<MetricsReport>,
    /// Training, validation and test conditions.
    pub conditions: [Vec<String>; 3],
    /// Control cells.
    pub n_controls: usize,
    /// Remarks (conditions left out, genes scored).
    pub notes: Vec<String>,
}

/// The genes of a condition name: `A+ctrl` → `[A]`, `A+B` → `[A, B]`, a bare `A` → `[A]`.
pub fn parse_condition(condition: &str, control: &str) -> Vec<String> {
    let mut g: Vec<String> =
        condition_genes(condition, control).into_iter().filter(|g| *g != "ctrl").map(String::from).collect();
    g.sort();
    g.dedup();
    g
}

/// Runs the protocol (see the module docs).
pub fn perturbation(
    choice: ModelChoice<'_>,
    adata: &AnnData,
    opts: &PerturbationOptions,
    device: &Device,
    stage: &mut dyn FnMut(&str),
    progress: &mut dyn Progress,
) -> Result<PerturbationOutcome> {
    let key = &opts.perturbation_key;
    let conds = adata.obs_column(key)?.to_labels();
    let control = match &opts.control {
        Some(c) => c.clone(),
        None if conds.iter().any(|c| c == "ctrl") => "ctrl".into(),
        None => "control".into(),
    };
    if !conds.contains(&control) {
        return input(format!("no cell of obs['{key}'] is '{control}' (the control condition)"));
    }
    let counts = sclm_model::cells::counts_matrix(adata, opts.layer.as_deref())?.into_owned();
    let mut data = AnnData::new(sclm_data::Matrix::Csr(counts));
    data.obs = adata.obs.clone();
    data.var = adata.var.clone();
    data.obsm = adata.obsm.clone();
    // Conditions the model can mark: every gene a gene of the data (and of the model).
    let mut notes = Vec::new();
    let names: std::collections::HashSet<&str> = data.var.index.iter().map(String::as_str).collect();
    let mut members: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, c) in conds.iter().enumerate() {
        members.entry(c.clone()).or_default().push(i);
    }
    let mut unknown = Vec::new();
    let mut combos = Vec::new();
    for c in members.keys().filter(|c| **c != control) {
        let genes = parse_condition(c, &control);
        if genes.is_empty() || genes.iter().any(|g| !names.contains(g.as_str())) {
            unknown.push(c.clone());
        } else if genes.len() > 1 {
            combos.push(c.clone());
        }
    }
    if !unknown.is_empty() {
        notes.push(format!(
            "{} condition(s) naming no gene of the data left out: {}",
            unknown.len(),
            unknown.join(", ")
        ));
    }
    if !combos.is_empty() {
        notes.push(format!(
            "{} combinatorial condition(s) (A+B) left out: the model marks one gene per cell: {}",
            combos.len(),
            combos.join(", ")
        ));
    }
    let usable: Vec<String> = conds
        .iter()
        .map(|c| if *c == control || (!unknown.contains(c) && !combos.contains(c)) { c.clone() } else { String::new() })
        .collect();
    let kept_rows: Vec<usize> = (0..usable.len()).filter(|&i| !usable[i].is_empty()).collect();
    let kept: Vec<String> = kept_rows.iter().map(|&i| usable[i].clone()).collect();
    let split = perturbation_split(&kept, &control, opts.test_frac, opts.valid_frac, opts.seed)?;
    let controls: Vec<usize> = (0..conds.len()).filter(|&i| conds[i] == control).collect();
    let rows_of = |c: &str| members[c].clone();
    let train: Vec<(Vec<String>, Vec<usize>)> =
        split.train_perturbations.iter().map(|c| (parse_condition(c, &control), rows_of(c))).collect();
    let valid: Vec<(Vec<String>, Vec<usize>)> =
        split.valid_perturbations.iter().map(|c| (parse_condition(c, &control), rows_of(c))).collect();
    let cells = PerturbationCells {
        adata: &data,
        controls: &controls,
        train: &train,
        valid: &valid,
        allow_non_integer: opts.allow_non_integer,
    };
    let family = choice.family().to_string();
    let mut slot = None;
    let model = choice.resolve(&data.var.index, device, &mut slot)?;
    let fit = ReconstructionFit {
        epochs: opts.epochs,
        lr: opts.lr,
        seed: opts.seed,
        cells: ReconstructOptions { allow_non_integer: opts.allow_non_integer, ..Default::default() },
        ..Default::default()
    };
    stage(&format!("training {family} to predict perturbations ({} epochs)", opts.epochs.max(1)));
    let predictor = model.fit_perturbation(&cells, &fit, device, progress)?;
    // Truth: log1p(x / Σx · 1e4) per cell, averaged per condition.
    let x = data.x.to_csr();
    let lognorm = |rows: &[usize]| -> Vec<f32> { mean_lognorm(&x, rows).into_iter().map(|v| v as f32).collect() };
    let control_mean = lognorm(&controls);
    let control_pred = predictor.predict_mean(&[])?;
    // Genes the model predicts (the others are NaN): every method is scored on them only.
    let genes: Vec<usize> = (0..data.n_vars()).filter(|&j| control_pred[j].is_finite()).collect();
    if genes.len() < data.n_vars() {
        notes.push(format!("scored on the {} of {} genes in the model's vocabulary", genes.len(), data.n_vars()));
    }
    let pick = |v: &[f32]| -> Vec<f32> { genes.iter().map(|&j| v[j]).collect() };
    let cm = pick(&control_mean);
    let mut reports = Vec::new();
    for (part, list) in [("test", &split.test_perturbations), ("validation", &split.valid_perturbations)] {
        if list.is_empty() {
            continue;
        }
        let (mut truth, mut pred, mut nochange) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for c in list {
            truth.insert(c.clone(), pick(&lognorm(&members[c.as_str()])));
            pred.insert(c.clone(), pick(&predictor.predict_mean(&parse_condition(c, &control))?));
            nochange.insert(c.clone(), cm.clone());
        }
        let (_, m_all, m_de) = perturbation_rmse(&truth, &pred, &cm, 20)?;
        let (_, b_all, b_de) = perturbation_rmse(&truth, &nochange, &cm, 20)?;
        let n_cells: usize = list.iter().map(|c| members[c.as_str()].len()).sum();
        for (name, x, y) in [("no change (control mean)".to_string(), b_all, b_de), (family.clone(), m_all, m_de)] {
            let mut r = MetricsReport::new(format!("perturbation prediction ({part}, unseen)"), name, n_cells);
            r.push("rmse_all", x);
            r.push("rmse_top20_de", y);
            r.note("conditions", list.len());
            reports.push(r);
        }
    }
    Ok(PerturbationOutcome {
        reports,
        conditions: [split.train_perturbations, split.valid_perturbations, split.test_perturbations],
        n_controls: controls.len(),
        notes,
    })
}

/// Mean of `log1p(x / Σx · 1e4)` over the rows `rows` of `x` (cells with no counts count as
/// zeros): the profile every perturbation method is scored on.
pub fn mean_lognorm(x: &sclm_data::CsrMatrix, rows: &[usize]) -> Vec<f64> {
    let mut m = vec![0f64; x.ncols];
    for &r in rows {
        let (idx, val) = x.row(r);
        let total: f64 = val.iter().map(|&v| v as f64).sum();
        if total > 0.0 {
            for (&j, &v) in idx.iter().zip(val) {
                m[j as usize] += (v as f64 / total * 1e4).ln_1p();
            }
        }
    }
    m.iter_mut().for_each(|v| *v /= rows.len().max(1) as f64);
    m
}
