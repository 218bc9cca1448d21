//! Regression / imputation metrics: RMSE, MAE, Pearson, Spearman, cosine similarity, R².

use rayon::prelude::*;
use sclm_data::Dense;
use serde::{Deserialize, Serialize};

use super::classification::average_ranks;
use crate::error::{check_len, invalid, Result};

fn pairs<T: Copy + Into<f64>>(what: &str, a: &[T], b: &[T]) -> Result<()> {
    check_len(&format!("{what}: prediction vs truth"), a.len(), b.len())?;
    if a.is_empty() {
        return invalid(format!("{what}: no values"));
    }
    Ok(())
}

/// Root mean squared error.
pub fn rmse<T: Copy + Into<f64>>(truth: &[T], pred: &[T]) -> Result<f64> {
    pairs("RMSE", truth, pred)?;
    let s: f64 = truth.iter().zip(pred).map(|(&a, &b)| (a.into() - b.into()).powi(2)).sum();
    Ok((s / truth.len() as f64).sqrt())
}

/// Mean absolute error.
pub fn mae<T: Copy + Into<f64>>(truth: &[T], pred: &[T]) -> Result<f64> {
    pairs("MAE", truth, pred)?;
    let s: f64 = truth.iter().zip(pred).map(|(&a, &b)| (a.into() - b.into()).abs()).sum();
    Ok(s / truth.len() as f64)
}

fn pearson_f64(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        return f64::NAN;
    }
    (sab / (saa.sqrt() * sbb.sqrt())).clamp(-1.0, 1.0)
}

/// Pearson correlation (NaN when either side is constant, as scipy).
pub fn pearson<T: Copy + Into<f64>>(truth: &[T], pred: &[T]) -> Result<f64> {
    pairs("Pearson", truth, pred)?;
    let a: Vec<f64> = truth.iter().map(|&x| x.into()).collect();
    let b: Vec<f64> = pred.iter().map(|&x| x.into()).collect();
    Ok(pearson_f64(&a, &b))
}

/// Spearman correlation: Pearson of average ranks (NaN when either side is constant).
pub fn spearman<T: Copy + Into<f64>>(truth: &[T], pred: &[T]) -> Result<f64> {
    pairs("Spearman", truth, pred)?;
    let a: Vec<f64> = truth.iter().map(|&x| x.into()).collect();
    let b: Vec<f64> = pred.iter().map(|&x| x.into()).collect();
    Ok(pearson_f64(&average_ranks(&a), &average_ranks(&b)))
}

/// Cosine similarity (0 when either vector is all zeros, as scikit-learn).
pub fn cosine<T: Copy + Into<f64>>(truth: &[T], pred: &[T]) -> Result<f64> {
    pairs("cosine", truth, pred)?;
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in truth.iter().zip(pred) {
        let (x, y): (f64, f64) = (x.into(), y.into());
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return Ok(0.0);
    }
    Ok(ab / (aa.sqrt() * bb.sqrt()))
}

/// Coefficient of determination (`r2_score`): 1 − SS_res / SS_tot; for constant truth,
/// 1 if the prediction is exact and 0 otherwise (scikit-learn's `force_finite`).
pub fn r2<T: Copy + Into<f64>>(truth: &[T], pred: &[T]) -> Result<f64> {
    pairs("R2", truth, pred)?;
    let n = truth.len() as f64;
    let m = truth.iter().map(|&x| x.into()).sum::<f64>() / n;
    let (mut res, mut tot) = (0.0, 0.0);
    for (&x, &y) in truth.iter().zip(pred) {
        let x: f64 = x.into();
        res += (x - y.into()).powi(2);
        tot += (x - m).powi(2);
    }
    if tot == 0.0 {
        return Ok(if res == 0.0 { 1.0 } else { 0.0 });
    }
    Ok(1.0 - res / tot)
}

/// All regression scores of one pair of vectors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressionScores {
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Pearson correlation (NaN if undefined).
    pub pearson: f64,
    /// Spearman correlation (NaN if undefined).
    pub spearman: f64,
    /// Cosine similarity.
    pub cosine: f64,
    /// R².
    pub r2: f64,
}

impl RegressionScores {
    /// Computes every score of `pred` against `truth`.
    pub fn compute<T: Copy + Into<f64>>(truth: &[T], pred: &[T]) -> Result<Self> {
        Ok(RegressionScores {
            rmse: rmse(truth, pred)?,
            mae: mae(truth, pred)?,
            pearson: pearson(truth, pred)?,
            spearman: spearman(truth, pred)?,
            cosine: cosine(truth, pred)?,
            r2: r2(truth, pred)?,
        })
    }
}

/// Regression scores of a matrix prediction: overall (all entries flattened), per gene
/// (column) and the per-gene mean (NaN-ignoring).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionReport {
    /// Scores over all entries.
    pub overall: RegressionScores,
    /// Scores of each column.
    pub per_gene: Vec<RegressionScores>,
    /// Mean of the per-column scores, ignoring NaN.
    pub per_gene_mean: RegressionScores,
}

fn nanmean(v: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0, 0usize);
    for x in v.filter(|x| !x.is_nan()) {
        s += x;
        c += 1;
    }
    if c == 0 {
        f64::NAN
    } else {
        s / c as f64
    }
}

/// Scores `pred` against `truth` (same shape), overall and per column.
pub fn regression_report(truth: &Dense<f32>, pred: &Dense<f32>) -> Result<RegressionReport> {
    check_len("regression: prediction rows", truth.nrows, pred.nrows)?;
    check_len("regression: prediction columns", truth.ncols, pred.ncols)?;
    if truth.nrows == 0 || truth.ncols == 0 {
        return invalid("regression: empty matrix");
    }
    let overall = RegressionScores::compute(&truth.data, &pred.data)?;
    let per_gene: Vec<RegressionScores> = (0..truth.ncols)
        .into_par_iter()
        .map(|j| {
            let a: Vec<f32> = (0..truth.nrows).map(|i| truth.get(i, j)).collect();
            let b: Vec<f32> = (0..truth.nrows).map(|i| pred.get(i, j)).collect();
            RegressionScores::compute(&a, &b)
        })
        .collect::<Result<_>>()?;
    let m = |f: fn(&RegressionScores) -> f64| nanmean(per_gene.iter().map(f));
    let per_gene_mean = RegressionScores {
        rmse: m(|s| s.rmse),
        mae: m(|s| s.mae),
        pearson: m(|s| s.pearson),
        spearman: m(|s| s.spearman),
        cosine: m(|s| s.cosine),
        r2: m(|s| s.r2),
    };
    Ok(RegressionReport { overall, per_gene, per_gene_mean })
}

/// Scores only the entries where `mask` is true (e.g. the masked entries of a denoising
/// task); `mask` is row-major with the shape of `truth`.
pub fn masked_scores(truth: &Dense<f32>, pred: &Dense<f32>, mask: &[bool]) -> Result<RegressionScores> {
    check_len("masked scores: prediction values", truth.data.len(), pred.data.len())?;
    check_len("masked scores: mask values", truth.data.len(), mask.len())?;
    let (a, b): (Vec<f32>, Vec<f32>) =
        truth.data.iter().zip(&pred.data).zip(mask).filter(|(_, &m)| m).map(|((&x, &y), _)| (x, y)).unzip();
    RegressionScores::compute(&a, &b)
}
