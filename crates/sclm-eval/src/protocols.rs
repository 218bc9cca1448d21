//! Task protocols shared by every model family: pure, seeded functions on matrices.
//!
//! - [`simulate_dropout`]: CellPLM's denoising benchmark (appendix F.1, after DeepImpute):
//!   in each cell with at least 5 expressed genes, 10% of the non-zero counts are set to
//!   zero, chosen without replacement with probability ∝ exp(−x/20);
//! - [`sparsity_holdout`]: spatial-imputation test genes, stratified by sparsity
//!   (< 75%, 75–90%, 90–95%, ≥ 95% zeros; 25 per group);
//! - [`stratified_split`] / [`split_from_column`]: train/valid/test cells;
//! - [`perturbation_split`] and [`perturbation_rmse`]: GEARS-style unseen perturbations,
//!   RMSE over all genes and over the top-20 DE genes.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sclm_data::{CsrMatrix, Dense, Matrix};
use serde::{Deserialize, Serialize};

use crate::error::{check_len, invalid, Result};
use crate::labels::encode;
use crate::metrics::{rmse, RegressionScores};

/// Entries removed by [`simulate_dropout`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropoutMask {
    /// Cell (row) of each masked entry.
    pub cells: Vec<u32>,
    /// Gene (column) of each masked entry.
    pub genes: Vec<u32>,
    /// Original count of each masked entry.
    pub values: Vec<f32>,
}

impl DropoutMask {
    /// Number of masked entries.
    pub fn len(&self) -> usize {
        self.cells.len()
    }
    /// True when nothing was masked.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

/// Options of [`simulate_dropout`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DropoutOptions {
    /// Fraction of each cell's non-zero counts to mask (default 0.1).
    pub rate: f64,
    /// Scale of the exponential kernel exp(−x/scale) (default 20).
    pub scale: f64,
    /// Cells with fewer expressed genes are left untouched (default 5).
    pub min_genes: usize,
    /// Seed (default 0).
    pub seed: u64,
}

impl Default for DropoutOptions {
    fn default() -> Self {
        DropoutOptions { rate: 0.1, scale: 20.0, min_genes: 5, seed: 0 }
    }
}

/// Simulates dropout on a count matrix: returns the matrix with the masked entries removed
/// and the mask. Per eligible cell, round(rate · Jᵢ) of its Jᵢ non-zero entries are drawn
/// without replacement with weights exp(−x/scale) (Efraimidis–Spirakis keys).
pub fn simulate_dropout(counts: &CsrMatrix, opts: &DropoutOptions) -> Result<(CsrMatrix, DropoutMask)> {
    if !(0.0..=1.0).contains(&opts.rate) || opts.scale.is_nan() || opts.scale <= 0.0 {
        return invalid(format!("dropout: rate must be in [0, 1] and scale > 0, got {} and {}", opts.rate, opts.scale));
    }
    if counts.data.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return invalid("dropout: counts must be finite and non-negative");
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut mask = DropoutMask { cells: vec![], genes: vec![], values: vec![] };
    let mut indptr = vec![0usize];
    let mut indices = Vec::with_capacity(counts.nnz());
    let mut data = Vec::with_capacity(counts.nnz());
    for i in 0..counts.nrows {
        let (idx, val) = counts.row(i);
        let nz: Vec<usize> = (0..idx.len()).filter(|&p| val[p] != 0.0).collect();
        let mut drop = vec![false; idx.len()];
        if nz.len() >= opts.min_genes {
            let m = (opts.rate * nz.len() as f64).round() as usize;
            let mut keys: Vec<(f64, usize)> = nz
                .iter()
                .map(|&p| {
                    let w = (-(val[p] as f64) / opts.scale).exp();
                    let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
                    (u.ln() / w, p)
                })
                .collect();
            keys.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut chosen: Vec<usize> = keys.iter().take(m).map(|k| k.1).collect();
            chosen.sort_unstable();
            for p in chosen {
                drop[p] = true;
                mask.cells.push(i as u32);
                mask.genes.push(idx[p]);
                mask.values.push(val[p]);
            }
        }
        for p in 0..idx.len() {
            if !drop[p] {
                indices.push(idx[p]);
                data.push(val[p]);
            }
        }
        indptr.push(data.len());
    }
    Ok((CsrMatrix { nrows: counts.nrows, ncols: counts.ncols, indptr, indices, data }, mask))
}

fn value_at(m: &Matrix, i: usize, j: usize) -> f32 {
    match m {
        Matrix::Dense(d) => d.get(i, j),
        Matrix::Csr(c) => {
            let (idx, val) = c.row(i);
            idx.binary_search(&(j as u32)).map_or(0.0, |p| val[p])
        }
    }
}

/// Scores a prediction on the masked entries only: `truth` holds the reference values (e.g.
/// the log1p-normalised original counts) and `pred` the model output, both cells × genes.
pub fn masked_entry_scores(truth: &Matrix, pred: &Dense<f32>, mask: &DropoutMask) -> Result<RegressionScores> {
    let (n, g) = truth.shape();
    check_len("masked scores: prediction rows", n, pred.nrows)?;
    check_len("masked scores: prediction columns", g, pred.ncols)?;
    if mask.is_empty() {
        return invalid("masked scores: the mask is empty");
    }
    let mut a = Vec::with_capacity(mask.len());
    let mut b = Vec::with_capacity(mask.len());
    for (&i, &j) in mask.cells.iter().zip(&mask.genes) {
        let (i, j) = (i as usize, j as usize);
        if i >= n || j >= g {
            return invalid(format!("masked scores: entry ({i}, {j}) is outside the {n} x {g} matrix"));
        }
        a.push(value_at(truth, i, j));
        b.push(pred.get(i, j));
    }
    RegressionScores::compute(&a, &b)
}

/// Test genes for spatial imputation, stratified by sparsity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneHoldout {
    /// Percentage of zeros of every gene.
    pub zero_percent: Vec<f64>,
    /// Genes sampled from each group: < 75%, 75–90%, 90–95%, ≥ 95% zeros.
    pub groups: [Vec<usize>; 4],
    /// All held-out genes, sorted.
    pub held_out: Vec<usize>,
}

/// Samples up to `per_group` genes from each sparsity group (all of a smaller group).
pub fn sparsity_holdout(x: &Matrix, per_group: usize, seed: u64) -> Result<GeneHoldout> {
    let (n, g) = x.shape();
    if n == 0 || g == 0 {
        return invalid("gene hold-out: empty matrix");
    }
    let mut nonzero = vec![0usize; g];
    match x {
        Matrix::Dense(d) => {
            for i in 0..n {
                for (j, &v) in d.row(i).iter().enumerate() {
                    if v != 0.0 {
                        nonzero[j] += 1;
                    }
                }
            }
        }
        Matrix::Csr(c) => {
            for (&j, &v) in c.indices.iter().zip(&c.data) {
                if v != 0.0 {
                    nonzero[j as usize] += 1;
                }
            }
        }
    }
    let zero_percent: Vec<f64> = nonzero.iter().map(|&z| 100.0 * (n - z) as f64 / n as f64).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut groups: [Vec<usize>; 4] = Default::default();
    for (k, grp) in groups.iter_mut().enumerate() {
        let (lo, hi) = [(f64::NEG_INFINITY, 75.0), (75.0, 90.0), (90.0, 95.0), (95.0, f64::INFINITY)][k];
        let mut members: Vec<usize> = (0..g).filter(|&j| zero_percent[j] >= lo && zero_percent[j] < hi).collect();
        members.shuffle(&mut rng);
        members.truncate(per_group);
        members.sort_unstable();
        *grp = members;
    }
    let mut held_out: Vec<usize> = groups.iter().flatten().copied().collect();
    held_out.sort_unstable();
    Ok(GeneHoldout { zero_percent, groups, held_out })
}

/// Cell indices of a train / valid / test split.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Split {
    /// Training cells (sorted).
    pub train: Vec<usize>,
    /// Validation cells (sorted).
    pub valid: Vec<usize>,
    /// Test cells (sorted).
    pub test: Vec<usize>,
}

/// Splits cells per label in proportions `valid_frac` / `test_frac` (the rest trains):
/// within each label, round(n·frac) cells go to each of test and valid after a seeded
/// shuffle (at least one training cell is kept per label).
pub fn stratified_split<T: Ord + Clone>(labels: &[T], valid_frac: f64, test_frac: f64, seed: u64) -> Result<Split> {
    if valid_frac < 0.0 || test_frac < 0.0 || valid_frac + test_frac >= 1.0 {
        return invalid(format!("split: fractions valid {valid_frac} + test {test_frac} must be >= 0 and < 1"));
    }
    let (codes, classes) = encode(labels);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut s = Split::default();
    for c in 0..classes.len() {
        let mut rows: Vec<usize> = (0..labels.len()).filter(|&i| codes[i] == c).collect();
        rows.shuffle(&mut rng);
        let n = rows.len();
        let nt = ((n as f64 * test_frac).round() as usize).min(n - 1);
        let nv = ((n as f64 * valid_frac).round() as usize).min(n - 1 - nt);
        s.test.extend_from_slice(&rows[..nt]);
        s.valid.extend_from_slice(&rows[nt..nt + nv]);
        s.train.extend_from_slice(&rows[nt + nv..]);
    }
    s.train.sort_unstable();
    s.valid.sort_unstable();
    s.test.sort_unstable();
    Ok(s)
}

/// A split read from a column of `train` / `valid` (or `val`, `validation`) / `test` values
/// (case-insensitive); any other value is an error naming it.
pub fn split_from_column(values: &[String]) -> Result<Split> {
    let mut s = Split::default();
    for (i, v) in values.iter().enumerate() {
        match v.to_ascii_lowercase().as_str() {
            "train" | "training" => s.train.push(i),
            "valid" | "val" | "validation" => s.valid.push(i),
            "test" | "testing" => s.test.push(i),
            other => return invalid(format!("split column: row {i} has '{other}', expected train, valid or test")),
        }
    }
    Ok(s)
}

/// A GEARS-style perturbation split: test (and validation) perturbations are never seen in
/// training. Control cells always train.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PerturbationSplit {
    /// Perturbations (conditions) used for training.
    pub train_perturbations: Vec<String>,
    /// Perturbations used for validation.
    pub valid_perturbations: Vec<String>,
    /// Perturbations held out for testing.
    pub test_perturbations: Vec<String>,
    /// Cells of each part.
    pub cells: Split,
}

/// Splits perturbation conditions (one per cell, e.g. `KLF1+ctrl`, `A+B`, `ctrl`): a seeded
/// `test_frac` of the non-control conditions are test, then `valid_frac` of the remaining
/// ones validation (as CellPLM's Adamson setting: 25% test, 10% of training for
/// validation). Cells whose condition equals `control` train.
pub fn perturbation_split(
    conditions: &[String],
    control: &str,
    test_frac: f64,
    valid_frac: f64,
    seed: u64,
) -> Result<PerturbationSplit> {
    if !(0.0..1.0).contains(&test_frac) || !(0.0..1.0).contains(&valid_frac) {
        return invalid("perturbation split: fractions must be in [0, 1)");
    }
    let mut perts: Vec<String> = encode(conditions).1.into_iter().filter(|c| c != control).collect();
    if perts.len() < 2 {
        return invalid(format!("perturbation split: need at least 2 perturbations besides '{control}'"));
    }
    perts.shuffle(&mut StdRng::seed_from_u64(seed));
    let nt = ((perts.len() as f64 * test_frac).round() as usize).clamp(1, perts.len() - 1);
    let rest = perts.len() - nt;
    let nv = ((rest as f64 * valid_frac).round() as usize).min(rest - 1);
    let mut test: Vec<String> = perts[..nt].to_vec();
    let mut valid: Vec<String> = perts[nt..nt + nv].to_vec();
    let mut train: Vec<String> = perts[nt + nv..].to_vec();
    test.sort();
    valid.sort();
    train.sort();
    let mut cells = Split::default();
    for (i, c) in conditions.iter().enumerate() {
        if test.binary_search(c).is_ok() {
            cells.test.push(i);
        } else if valid.binary_search(c).is_ok() {
            cells.valid.push(i);
        } else {
            cells.train.push(i);
        }
    }
    Ok(PerturbationSplit { train_perturbations: train, valid_perturbations: valid, test_perturbations: test, cells })
}

/// Genes of a GEARS-style condition name (`A+ctrl`, `A+B`): the `+`-separated parts other
/// than `control`.
pub fn condition_genes<'a>(condition: &'a str, control: &str) -> Vec<&'a str> {
    condition.split('+').filter(|g| !g.is_empty() && *g != control).collect()
}

/// How many genes of `condition` are perturbed in none of the `train` conditions (0, 1 or 2
/// for two-gene combinations: GEARS' "seen", "1/2 unseen", "2/2 unseen" categories).
pub fn unseen_gene_count(condition: &str, train: &[String], control: &str) -> usize {
    let seen: std::collections::HashSet<&str> = train.iter().flat_map(|c| condition_genes(c, control)).collect();
    condition_genes(condition, control).iter().filter(|g| !seen.contains(*g)).count()
}

/// Perturbation RMSE of one condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerturbationScore {
    /// Condition name.
    pub condition: String,
    /// RMSE of the mean expression over all genes.
    pub rmse_all: f64,
    /// RMSE over the top-k DE genes.
    pub rmse_de: f64,
}

/// Per-condition RMSE of predicted vs true mean expression profiles (genes in columns), over
/// all genes and over the `top_k` genes whose true mean differs most (absolute) from the
/// control mean (GEARS' top-20 DE genes, with DE ranked by |Δ mean|). `truth` and `pred` map
/// each test condition to its mean profile. Returns per-condition scores and their means.
pub fn perturbation_rmse(
    truth: &BTreeMap<String, Vec<f32>>,
    pred: &BTreeMap<String, Vec<f32>>,
    control_mean: &[f32],
    top_k: usize,
) -> Result<(Vec<PerturbationScore>, f64, f64)> {
    if truth.is_empty() {
        return invalid("perturbation RMSE: no conditions");
    }
    let mut out = Vec::new();
    for (c, t) in truth {
        let p = pred
            .get(c)
            .ok_or_else(|| crate::EvalError::Invalid(format!("perturbation RMSE: no prediction for '{c}'")))?;
        check_len(&format!("perturbation '{c}': predicted genes"), t.len(), p.len())?;
        check_len(&format!("perturbation '{c}': control genes"), t.len(), control_mean.len())?;
        let mut order: Vec<usize> = (0..t.len()).collect();
        order.sort_by(|&a, &b| {
            let da = (t[a] - control_mean[a]).abs();
            let db = (t[b] - control_mean[b]).abs();
            db.total_cmp(&da).then(a.cmp(&b))
        });
        order.truncate(top_k.max(1));
        let td: Vec<f32> = order.iter().map(|&j| t[j]).collect();
        let pd: Vec<f32> = order.iter().map(|&j| p[j]).collect();
        out.push(PerturbationScore { condition: c.clone(), rmse_all: rmse(t, p)?, rmse_de: rmse(&td, &pd)? });
    }
    let n = out.len() as f64;
    let all = out.iter().map(|s| s.rmse_all).sum::<f64>() / n;
    let de = out.iter().map(|s| s.rmse_de).sum::<f64>() / n;
    Ok((out, all, de))
}

/// Mean profile (column means) of the rows `rows` of `x`.
pub fn mean_profile(x: &Matrix, rows: &[usize]) -> Vec<f32> {
    let g = x.shape().1;
    let mut s = vec![0f64; g];
    for &i in rows {
        match x {
            Matrix::Dense(d) => d.row(i).iter().zip(s.iter_mut()).for_each(|(&v, a)| *a += v as f64),
            Matrix::Csr(c) => {
                let (idx, val) = c.row(i);
                idx.iter().zip(val).for_each(|(&j, &v)| s[j as usize] += v as f64);
            }
        }
    }
    let n = rows.len().max(1) as f64;
    s.iter().map(|v| (v / n) as f32).collect()
}
