//! Partition-comparison metrics: adjusted Rand index and normalised mutual information.

use std::collections::HashMap;

use crate::error::{check_len, invalid, Result};
use crate::labels::{counts, encode};

struct Contingency {
    n: usize,
    a: Vec<usize>,
    b: Vec<usize>,
    cells: Vec<usize>,
}

fn contingency<A: Ord + Clone, B: Ord + Clone>(what: &str, x: &[A], y: &[B]) -> Result<Contingency> {
    check_len(&format!("{what}: predicted vs true labels"), x.len(), y.len())?;
    if x.is_empty() {
        return invalid(format!("{what}: no samples"));
    }
    let (cx, kx) = encode(x);
    let (cy, ky) = encode(y);
    let mut cells: HashMap<(usize, usize), usize> = HashMap::new();
    for (&i, &j) in cx.iter().zip(&cy) {
        *cells.entry((i, j)).or_default() += 1;
    }
    Ok(Contingency {
        n: x.len(),
        a: counts(&cx, kx.len()),
        b: counts(&cy, ky.len()),
        cells: cells.into_values().collect(),
    })
}

/// Adjusted Rand index (`adjusted_rand_score`), from the pair confusion matrix with exact
/// integer arithmetic.
pub fn adjusted_rand_index<A: Ord + Clone, B: Ord + Clone>(labels_true: &[A], labels_pred: &[B]) -> Result<f64> {
    let c = contingency("ARI", labels_true, labels_pred)?;
    let sq = |v: &[usize]| v.iter().map(|&x| (x as i128) * (x as i128)).sum::<i128>();
    let n = c.n as i128;
    let ss = sq(&c.cells);
    let tp = ss - n;
    let fp = sq(&c.b) - ss;
    let fn_ = sq(&c.a) - ss;
    let tn = n * n - fp - fn_ - ss;
    if fn_ == 0 && fp == 0 {
        return Ok(1.0);
    }
    let num = 2 * (tp * tn - fn_ * fp);
    let den = (tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn);
    Ok(num as f64 / den as f64)
}

fn entropy(counts: &[usize], n: usize) -> f64 {
    let n = n as f64;
    -counts.iter().filter(|&&c| c > 0).map(|&c| (c as f64 / n) * ((c as f64).ln() - n.ln())).sum::<f64>()
}

/// Mutual information (natural log) between two labelings (`mutual_info_score`).
pub fn mutual_information<A: Ord + Clone, B: Ord + Clone>(x: &[A], y: &[B]) -> Result<f64> {
    check_len("mutual information: labels", x.len(), y.len())?;
    if x.is_empty() {
        return invalid("mutual information: no samples");
    }
    let (cx, kx) = encode(x);
    let (cy, ky) = encode(y);
    Ok(mi_codes(&cx, kx.len(), &cy, ky.len()))
}

/// Normalised mutual information with arithmetic-mean normalisation
/// (`normalized_mutual_info_score`, scikit-learn's default).
pub fn normalized_mutual_info<A: Ord + Clone, B: Ord + Clone>(labels_true: &[A], labels_pred: &[B]) -> Result<f64> {
    check_len("NMI: predicted vs true labels", labels_true.len(), labels_pred.len())?;
    if labels_true.is_empty() {
        return invalid("NMI: no samples");
    }
    let (cx, kx) = encode(labels_true);
    let (cy, ky) = encode(labels_pred);
    if kx.len() == 1 && ky.len() == 1 {
        return Ok(1.0);
    }
    let mi = mi_codes(&cx, kx.len(), &cy, ky.len());
    if mi == 0.0 {
        return Ok(0.0);
    }
    let n = cx.len();
    let h = (entropy(&counts(&cx, kx.len()), n) + entropy(&counts(&cy, ky.len()), n)) / 2.0;
    Ok(mi / h)
}

fn mi_codes(cx: &[usize], kx: usize, cy: &[usize], ky: usize) -> f64 {
    let mut cells: HashMap<(usize, usize), usize> = HashMap::new();
    for (&i, &j) in cx.iter().zip(cy) {
        *cells.entry((i, j)).or_default() += 1;
    }
    let a = counts(cx, kx);
    let b = counts(cy, ky);
    let n = cx.len() as f64;
    let mut keys: Vec<_> = cells.into_iter().collect();
    keys.sort_unstable();
    let mut mi = 0.0;
    for ((i, j), c) in keys {
        let c = c as f64;
        mi += (c / n) * (c.ln() + n.ln() - (a[i] as f64).ln() - (b[j] as f64).ln());
    }
    mi.max(0.0)
}
