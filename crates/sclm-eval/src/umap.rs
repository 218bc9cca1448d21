//! UMAP 2-D layout (McInnes et al. 2018) from a fuzzy connectivity graph.
//!
//! Follows `umap-learn`'s `simplicial_set_embedding`: edges lighter than max/n_epochs are
//! dropped, each edge is sampled in proportion to its weight, attraction
//! −2ab d^{2(b−1)} / (1 + a d^{2b}) moves both ends, `negative_sample_rate` random
//! repulsions 2b / ((0.001 + d²)(1 + a d^{2b})) move the head, gradients are clipped to
//! ±4 and the learning rate decays linearly. The initial layout is the embedding's first two
//! principal components scaled to [0, 10]. Single-threaded and seeded: deterministic.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sclm_data::{CsrMatrix, Dense};
use serde::{Deserialize, Serialize};

use crate::error::{check_len, invalid, Result};

/// UMAP layout options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UmapOptions {
    /// Epochs; `None` = 500 up to 10,000 cells, 200 above (as umap-learn).
    pub n_epochs: Option<usize>,
    /// Curve parameter a (default 1.577, umap-learn's fit for min_dist 0.1, spread 1).
    pub a: f64,
    /// Curve parameter b (default 0.895).
    pub b: f64,
    /// Repulsive samples per attractive one (default 5).
    pub negative_sample_rate: usize,
    /// Initial learning rate (default 1.0).
    pub learning_rate: f64,
    /// Seed (default 0).
    pub seed: u64,
}

impl Default for UmapOptions {
    fn default() -> Self {
        UmapOptions { n_epochs: None, a: 1.577, b: 0.895, negative_sample_rate: 5, learning_rate: 1.0, seed: 0 }
    }
}

/// Fits UMAP's (a, b) for `min_dist` and `spread` by least squares of
/// 1 / (1 + a x^{2b}) against the target curve on 300 points of [0, 3·spread].
pub fn fit_ab(min_dist: f64, spread: f64) -> (f64, f64) {
    let xs: Vec<f64> = (0..300).map(|i| 3.0 * spread * i as f64 / 299.0).collect();
    let ys: Vec<f64> = xs.iter().map(|&x| if x < min_dist { 1.0 } else { (-(x - min_dist) / spread).exp() }).collect();
    let loss = |a: f64, b: f64| -> f64 {
        xs.iter().zip(&ys).map(|(&x, &y)| (1.0 / (1.0 + a * x.powf(2.0 * b)) - y).powi(2)).sum()
    };
    // Coarse grid then coordinate refinement (robust, no derivatives needed).
    let (mut a, mut b, mut best) = (1.0, 1.0, f64::INFINITY);
    for i in 1..=60 {
        for j in 1..=40 {
            let (ta, tb) = (i as f64 * 0.1, j as f64 * 0.05);
            let l = loss(ta, tb);
            if l < best {
                (a, b, best) = (ta, tb, l);
            }
        }
    }
    let (mut sa, mut sb) = (0.05, 0.025);
    for _ in 0..200 {
        let mut improved = false;
        for (da, db) in [(sa, 0.0), (-sa, 0.0), (0.0, sb), (0.0, -sb)] {
            let (ta, tb) = (a + da, b + db);
            if ta > 0.0 && tb > 0.0 {
                let l = loss(ta, tb);
                if l < best {
                    (a, b, best, improved) = (ta, tb, l, true);
                }
            }
        }
        if !improved {
            sa /= 2.0;
            sb /= 2.0;
        }
    }
    (a, b)
}

/// The first `n_comp` principal-component scores of `x` (covariance eigenvectors by power
/// iteration with deflation, deterministic; signs make the largest loading positive).
pub fn pca_scores(x: &Dense<f32>, n_comp: usize) -> Dense<f32> {
    let (n, d) = (x.nrows, x.ncols);
    let mut mean = vec![0f64; d];
    for i in 0..n {
        for (m, &v) in mean.iter_mut().zip(x.row(i)) {
            *m += v as f64 / n as f64;
        }
    }
    let mut cov = vec![0f64; d * d];
    for i in 0..n {
        let r: Vec<f64> = x.row(i).iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
        for a in 0..d {
            for b in a..d {
                cov[a * d + b] += r[a] * r[b];
            }
        }
    }
    for a in 0..d {
        for b in 0..a {
            cov[a * d + b] = cov[b * d + a];
        }
    }
    let mut out = Dense::<f32>::zeros(n, n_comp);
    for c in 0..n_comp.min(d) {
        let mut v: Vec<f64> = (0..d).map(|i| 1.0 + (i as f64 * 0.618).fract()).collect();
        let mut lambda = 0.0;
        for _ in 0..500 {
            let w: Vec<f64> = (0..d).map(|a| (0..d).map(|b| cov[a * d + b] * v[b]).sum()).collect();
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            let next: Vec<f64> = w.iter().map(|x| x / norm).collect();
            let delta: f64 = next.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = next;
            lambda = norm;
            if delta < 1e-10 {
                break;
            }
        }
        let big = v.iter().copied().fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
        if big < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
        for i in 0..n {
            let s: f64 = x.row(i).iter().zip(&mean).zip(&v).map(|((&a, m), w)| (a as f64 - m) * w).sum();
            out.row_mut(i)[c] = s as f32;
        }
        for a in 0..d {
            for b in 0..d {
                cov[a * d + b] -= lambda * v[a] * v[b];
            }
        }
    }
    out
}

fn clip(x: f64) -> f64 {
    x.clamp(-4.0, 4.0)
}

/// Lays out the graph `conn` (symmetric connectivities of `embedding`'s cells) in 2-D.
/// `embedding` only provides the PCA initialisation.
pub fn umap(embedding: &Dense<f32>, conn: &CsrMatrix, opts: &UmapOptions) -> Result<Dense<f32>> {
    let n = embedding.nrows;
    check_len("UMAP: graph nodes vs embedding rows", n, conn.nrows)?;
    if conn.ncols != n {
        return invalid("UMAP: the graph must be square");
    }
    if n < 3 {
        return invalid(format!("UMAP needs at least 3 cells, got {n}"));
    }
    let n_epochs = opts.n_epochs.unwrap_or(if n <= 10_000 { 500 } else { 200 }).max(1);
    let (a, b) = (opts.a, opts.b);

    // Initial layout: 2 PCs (or jittered zeros if the embedding has one column).
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let init = pca_scores(embedding, 2);
    let mut y: Vec<[f64; 2]> = (0..n).map(|i| [init.get(i, 0) as f64, init.get(i, 1) as f64]).collect();
    for d in 0..2 {
        let lo = y.iter().map(|p| p[d]).fold(f64::INFINITY, f64::min);
        let hi = y.iter().map(|p| p[d]).fold(f64::NEG_INFINITY, f64::max);
        for p in y.iter_mut() {
            p[d] = if hi > lo { 10.0 * (p[d] - lo) / (hi - lo) } else { 10.0 * rng.random::<f64>() };
        }
    }

    // Edges and their sampling schedule.
    let wmax = conn.data.iter().copied().fold(0f32, f32::max) as f64;
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut eps = Vec::new();
    for i in 0..n {
        let (idx, val) = conn.row(i);
        for (&j, &w) in idx.iter().zip(val) {
            let w = w as f64;
            if w <= 0.0 || w < wmax / n_epochs as f64 {
                continue;
            }
            let ns = n_epochs as f64 * w / wmax;
            head.push(i);
            tail.push(j as usize);
            eps.push(n_epochs as f64 / ns);
        }
    }
    let nsr = opts.negative_sample_rate as f64;
    let epns: Vec<f64> = eps.iter().map(|e| e / nsr.max(1e-12)).collect();
    let mut next_sample = eps.clone();
    let mut next_neg = epns.clone();
    for epoch in 0..n_epochs {
        let alpha = opts.learning_rate * (1.0 - epoch as f64 / n_epochs as f64);
        let e = epoch as f64;
        for k in 0..head.len() {
            if next_sample[k] > e {
                continue;
            }
            let (i, j) = (head[k], tail[k]);
            let d2 = (y[i][0] - y[j][0]).powi(2) + (y[i][1] - y[j][1]).powi(2);
            let coeff = if d2 > 0.0 { -2.0 * a * b * d2.powf(b - 1.0) / (a * d2.powf(b) + 1.0) } else { 0.0 };
            for d in 0..2 {
                let g = clip(coeff * (y[i][d] - y[j][d]));
                y[i][d] += g * alpha;
                y[j][d] -= g * alpha;
            }
            next_sample[k] += eps[k];
            let n_neg = if opts.negative_sample_rate == 0 { 0 } else { ((e - next_neg[k]) / epns[k]) as i64 };
            for _ in 0..n_neg.max(0) {
                let m = rng.random_range(0..n);
                if m == i {
                    continue;
                }
                let d2 = (y[i][0] - y[m][0]).powi(2) + (y[i][1] - y[m][1]).powi(2);
                if d2 <= 0.0 {
                    continue;
                }
                let coeff = 2.0 * b / ((0.001 + d2) * (a * d2.powf(b) + 1.0));
                for d in 0..2 {
                    let g = clip(coeff * (y[i][d] - y[m][d]));
                    y[i][d] += g * alpha;
                }
            }
            next_neg[k] += n_neg.max(0) as f64 * epns[k];
        }
    }
    Ok(Dense { nrows: n, ncols: 2, data: y.iter().flat_map(|p| [p[0] as f32, p[1] as f32]).collect() })
}
