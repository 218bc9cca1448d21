//! Integration metrics of scIB (Luecken et al. 2022): silhouette scores, batch ASW, graph
//! connectivity, LISI, and the Avg_bio / S_final aggregates.

use rayon::prelude::*;
use sclm_data::{CsrMatrix, Dense};

use crate::error::{check_len, invalid, Result};
use crate::labels::{counts, encode};
use crate::neighbors::{connected_components, sqdist64, to_f64, KnnGraph};

/// Silhouette of every sample with Euclidean distances (`silhouette_samples`):
/// s = (b − a) / max(a, b), a = mean distance to the own cluster (without itself), b = the
/// smallest mean distance to another cluster; 0 for samples alone in their cluster.
/// Needs 2 ≤ number of labels ≤ n − 1. Costs O(n² d).
pub fn silhouette_samples<T: Ord + Clone + Sync>(x: &Dense<f32>, labels: &[T]) -> Result<Vec<f64>> {
    check_len("silhouette: labels vs embedding rows", x.nrows, labels.len())?;
    let (codes, classes) = encode(labels);
    let k = classes.len();
    let n = x.nrows;
    if k < 2 || k > n.saturating_sub(1) {
        return invalid(format!(
            "silhouette needs 2 <= number of labels <= n_samples - 1, got {k} labels for {n} samples"
        ));
    }
    let sizes = counts(&codes, k);
    let xd = to_f64(x);
    let dim = x.ncols;
    Ok((0..n)
        .into_par_iter()
        .map(|i| {
            let xi = &xd[i * dim..(i + 1) * dim];
            let mut sums = vec![0f64; k];
            for j in 0..n {
                if j != i {
                    sums[codes[j]] += sqdist64(xi, &xd[j * dim..(j + 1) * dim]).sqrt();
                }
            }
            let own = codes[i];
            if sizes[own] <= 1 {
                return 0.0;
            }
            let a = sums[own] / (sizes[own] - 1) as f64;
            let b = (0..k).filter(|&c| c != own).map(|c| sums[c] / sizes[c] as f64).fold(f64::INFINITY, f64::min);
            let m = a.max(b);
            if m > 0.0 {
                (b - a) / m
            } else {
                0.0
            }
        })
        .collect())
}

/// Mean silhouette (`silhouette_score`).
pub fn silhouette_score<T: Ord + Clone + Sync>(x: &Dense<f32>, labels: &[T]) -> Result<f64> {
    let s = silhouette_samples(x, labels)?;
    Ok(s.iter().sum::<f64>() / s.len() as f64)
}

/// scIB's ASW_label: (silhouette_score on cell-type labels + 1) / 2, in [0, 1].
pub fn asw_label<T: Ord + Clone + Sync>(x: &Dense<f32>, labels: &[T]) -> Result<f64> {
    Ok((silhouette_score(x, labels)? + 1.0) / 2.0)
}

/// scIB's ASW_batch (`silhouette_batch`): within each cell type, silhouettes on batch labels,
/// scored 1 − |s| per cell; averaged per cell type, then over cell types. Cell types with a
/// single batch, or with as many batches as cells, are skipped. Errors when none is left.
pub fn asw_batch<T: Ord + Clone + Sync, B: Ord + Clone + Sync>(
    x: &Dense<f32>,
    labels: &[T],
    batches: &[B],
) -> Result<f64> {
    check_len("batch ASW: labels vs embedding rows", x.nrows, labels.len())?;
    check_len("batch ASW: batches vs embedding rows", x.nrows, batches.len())?;
    let (codes, classes) = encode(labels);
    let mut per_type = Vec::new();
    for c in 0..classes.len() {
        let rows: Vec<usize> = (0..x.nrows).filter(|&i| codes[i] == c).collect();
        let b: Vec<B> = rows.iter().map(|&i| batches[i].clone()).collect();
        let nb = encode(&b).1.len();
        if nb == 1 || nb == rows.len() {
            continue;
        }
        let s = silhouette_samples(&x.select_rows(&rows), &b)?;
        per_type.push(s.iter().map(|v| 1.0 - v.abs()).sum::<f64>() / s.len() as f64);
    }
    if per_type.is_empty() {
        return invalid("batch ASW: no cell type holds cells of more than one batch");
    }
    Ok(per_type.iter().sum::<f64>() / per_type.len() as f64)
}

/// scIB's graph connectivity: for each label, the fraction of its cells in the largest
/// connected component of the graph restricted to that label; averaged over labels.
pub fn graph_connectivity<T: Ord + Clone>(adj: &CsrMatrix, labels: &[T]) -> Result<f64> {
    check_len("graph connectivity: labels vs graph nodes", adj.nrows, labels.len())?;
    let (codes, classes) = encode(labels);
    if classes.is_empty() {
        return invalid("graph connectivity: no cells");
    }
    let mut total = 0.0;
    for c in 0..classes.len() {
        let rows: Vec<usize> = (0..adj.nrows).filter(|&i| codes[i] == c).collect();
        let sub = adj.select_rows(&rows).select_cols(&rows);
        let comp = connected_components(&sub);
        let nc = comp.iter().max().map_or(0, |m| m + 1);
        let largest = counts(&comp, nc).into_iter().max().unwrap_or(0);
        total += largest as f64 / rows.len() as f64;
    }
    Ok(total / classes.len() as f64)
}

/// Local inverse Simpson's index of every cell (Korsunsky et al. 2019, as `harmonypy`):
/// Gaussian weights over the cell's neighbours (the graph's first neighbour, the cell
/// itself, is dropped) with a bandwidth calibrated to `perplexity`, then
/// 1 / Σ_label (Σ weights of that label)².
pub fn lisi<T: Ord + Clone>(g: &KnnGraph, labels: &[T], perplexity: f64) -> Result<Vec<f64>> {
    check_len("LISI: labels vs graph nodes", g.n(), labels.len())?;
    if g.k < 2 {
        return invalid("LISI needs at least 2 neighbours per cell");
    }
    let (codes, classes) = encode(labels);
    let log_u = perplexity.ln();
    let mut out = Vec::with_capacity(g.n());
    let mut p = vec![0f64; g.k - 1];
    for i in 0..g.n() {
        let (idx, dist) = g.row(i);
        let (idx, dist) = (&idx[1..], &dist[1..]);
        let mut beta = 1.0f64;
        let (mut bmin, mut bmax) = (f64::NEG_INFINITY, f64::INFINITY);
        let entropy = |beta: f64, p: &mut [f64]| -> f64 {
            let mut sum = 0.0;
            for (pj, &d) in p.iter_mut().zip(dist) {
                *pj = (-(d as f64) * beta).exp();
                sum += *pj;
            }
            if sum == 0.0 {
                p.iter_mut().for_each(|v| *v = 0.0);
                return 0.0;
            }
            let h = sum.ln() + beta * dist.iter().zip(p.iter()).map(|(&d, &v)| d as f64 * v).sum::<f64>() / sum;
            p.iter_mut().for_each(|v| *v /= sum);
            h
        };
        let mut h = entropy(beta, &mut p);
        for _ in 0..50 {
            let diff = h - log_u;
            if diff.abs() < 1e-5 {
                break;
            }
            if diff > 0.0 {
                bmin = beta;
                beta = if bmax.is_finite() { (beta + bmax) / 2.0 } else { beta * 2.0 };
            } else {
                bmax = beta;
                beta = if bmin.is_finite() { (beta + bmin) / 2.0 } else { beta / 2.0 };
            }
            h = entropy(beta, &mut p);
        }
        let mut simpson = if h == 0.0 { -1.0 } else { 0.0 };
        let mut per = vec![0f64; classes.len()];
        for (&j, &pj) in idx.iter().zip(&p) {
            per[codes[j as usize]] += pj;
        }
        simpson += per.iter().map(|v| v * v).sum::<f64>();
        out.push(1.0 / simpson);
    }
    Ok(out)
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// scIB-scaled iLISI: (median LISI on batches − 1) / (number of batches − 1), in [0, 1].
pub fn ilisi_scaled<B: Ord + Clone>(g: &KnnGraph, batches: &[B], perplexity: f64) -> Result<f64> {
    let nb = encode(batches).1.len();
    if nb < 2 {
        return invalid("iLISI needs at least two batches");
    }
    Ok((median(&lisi(g, batches, perplexity)?) - 1.0) / (nb - 1) as f64)
}

/// scIB-scaled cLISI: (number of labels − median LISI on labels) / (number of labels − 1).
pub fn clisi_scaled<T: Ord + Clone>(g: &KnnGraph, labels: &[T], perplexity: f64) -> Result<f64> {
    let nl = encode(labels).1.len();
    if nl < 2 {
        return invalid("cLISI needs at least two labels");
    }
    Ok((nl as f64 - median(&lisi(g, labels, perplexity)?)) / (nl - 1) as f64)
}

/// Avg_bio = mean(NMI, ARI, ASW_label) (CellPLM's / scIB's biological-conservation summary).
pub fn avg_bio(nmi: f64, ari: f64, asw_label: f64) -> f64 {
    (nmi + ari + asw_label) / 3.0
}

/// S_final = 0.6 · Avg_bio + 0.4 · ASW_batch.
pub fn s_final(avg_bio: f64, asw_batch: f64) -> f64 {
    0.6 * avg_bio + 0.4 * asw_batch
}
