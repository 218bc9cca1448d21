//! k-means (Lloyd's algorithm) with greedy k-means++ initialisation, seeded.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use sclm_data::Dense;
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};
use crate::neighbors::sqdist;

/// k-means options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KMeansOptions {
    /// Number of restarts; the lowest inertia wins (default 4).
    pub n_init: usize,
    /// Maximum Lloyd iterations per restart (default 300).
    pub max_iter: usize,
    /// Stop when centres move less than this (squared, summed; default 1e-8).
    pub tol: f64,
    /// Seed (default 0).
    pub seed: u64,
}

impl Default for KMeansOptions {
    fn default() -> Self {
        KMeansOptions { n_init: 4, max_iter: 300, tol: 1e-8, seed: 0 }
    }
}

/// A k-means result.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// Cluster of each row.
    pub labels: Vec<usize>,
    /// Cluster centres, `k × d`.
    pub centers: Dense<f64>,
    /// Sum of squared distances of rows to their centre.
    pub inertia: f64,
}

fn nearest(row: &[f32], centers: &Dense<f64>) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for c in 0..centers.nrows {
        let d: f64 = row.iter().zip(centers.row(c)).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
        if d < best.1 {
            best = (c, d);
        }
    }
    best
}

fn plus_plus(x: &Dense<f32>, k: usize, rng: &mut StdRng) -> Dense<f64> {
    let n = x.nrows;
    let trials = 2 + (k as f64).ln() as usize;
    let mut centers = Dense::<f64>::zeros(k, x.ncols);
    let first = rng.random_range(0..n);
    centers.row_mut(0).iter_mut().zip(x.row(first)).for_each(|(c, &v)| *c = v as f64);
    let mut closest: Vec<f64> = (0..n).map(|i| sqdist(x.row(i), x.row(first))).collect();
    for c in 1..k {
        let total: f64 = closest.iter().sum();
        let mut best: Option<(usize, f64, Vec<f64>)> = None;
        for _ in 0..trials {
            let cand = if total > 0.0 {
                let r = rng.random::<f64>() * total;
                let mut acc = 0.0;
                let mut pick = n - 1;
                for (i, &d) in closest.iter().enumerate() {
                    acc += d;
                    if acc > r {
                        pick = i;
                        break;
                    }
                }
                pick
            } else {
                rng.random_range(0..n)
            };
            let newd: Vec<f64> = (0..n).map(|i| closest[i].min(sqdist(x.row(i), x.row(cand)))).collect();
            let pot: f64 = newd.iter().sum();
            if best.as_ref().is_none_or(|b| pot < b.1) {
                best = Some((cand, pot, newd));
            }
        }
        let (cand, _, newd) = best.expect("at least one trial");
        centers.row_mut(c).iter_mut().zip(x.row(cand)).for_each(|(c, &v)| *c = v as f64);
        closest = newd;
    }
    centers
}

/// Clusters the rows of `x` into `k` groups.
pub fn kmeans(x: &Dense<f32>, k: usize, opts: &KMeansOptions) -> Result<KMeans> {
    if k == 0 || k > x.nrows {
        return invalid(format!("k-means: k = {k} clusters for {} rows", x.nrows));
    }
    if x.data.iter().any(|v| !v.is_finite()) {
        return invalid("k-means: data contains non-finite values");
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut best: Option<KMeans> = None;
    for _ in 0..opts.n_init.max(1) {
        let mut centers = plus_plus(x, k, &mut rng);
        let mut labels = vec![0usize; x.nrows];
        for _ in 0..opts.max_iter {
            labels = (0..x.nrows).into_par_iter().map(|i| nearest(x.row(i), &centers).0).collect();
            let mut sums = Dense::<f64>::zeros(k, x.ncols);
            let mut cnt = vec![0usize; k];
            for (i, &l) in labels.iter().enumerate() {
                cnt[l] += 1;
                sums.row_mut(l).iter_mut().zip(x.row(i)).for_each(|(s, &v)| *s += v as f64);
            }
            let mut shift = 0.0;
            for c in 0..k {
                if cnt[c] == 0 {
                    continue; // keep an empty cluster's centre where it was
                }
                for (j, s) in sums.row(c).iter().enumerate() {
                    let v = s / cnt[c] as f64;
                    shift += (v - centers.get(c, j)).powi(2);
                    centers.row_mut(c)[j] = v;
                }
            }
            if shift <= opts.tol {
                break;
            }
        }
        let assign: Vec<(usize, f64)> = (0..x.nrows).into_par_iter().map(|i| nearest(x.row(i), &centers)).collect();
        labels = assign.iter().map(|a| a.0).collect();
        let inertia = assign.iter().map(|a| a.1).sum();
        if best.as_ref().is_none_or(|b| inertia < b.inertia) {
            best = Some(KMeans { labels, centers, inertia });
        }
    }
    Ok(best.expect("n_init >= 1"))
}
