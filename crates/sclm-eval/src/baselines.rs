//! Classical baselines: PCA embeddings of log-normalised highly variable genes, multinomial
//! logistic regression, a diffusion (MAGIC-like) kNN denoiser, and mean / kNN-regression
//! imputation of held-out genes. Results are scored into [`MetricsReport`]s.

use rayon::prelude::*;
use sclm_data::{Dense, Matrix};
use sclm_preprocess::{hvg, log1p, normalize_total, pca, HvgOptions, NormalizeOptions, PcaOptions};
use serde::{Deserialize, Serialize};

use crate::error::{check_len, invalid, EvalError, Result};
use crate::labels::encode;
use crate::metrics::class_report;
use crate::neighbors::{connectivities, knn, knn_query};
use crate::protocols::Split;
use crate::report::MetricsReport;

fn pp<T>(r: std::result::Result<T, sclm_preprocess::PreprocessError>) -> Result<T> {
    r.map_err(|e| EvalError::Invalid(e.to_string()))
}

/// `normalize_total` (median total) then `log1p` of a count matrix (a copy).
pub fn log_normalize(counts: &Matrix) -> Result<Matrix> {
    let mut x = counts.clone();
    pp(normalize_total(&mut x, &NormalizeOptions::default()))?;
    pp(log1p(&mut x))?;
    Ok(x)
}

/// PCA embedding of log-normalised data: the `n_top_genes` most variable genes (scanpy's
/// `seurat` flavour; all genes when `None` or when there are fewer), then `n_comps`
/// principal components (clipped to min(cells, genes)). Returns (embedding, genes used).
pub fn pca_embedding(
    lognorm: &Matrix,
    n_comps: usize,
    n_top_genes: Option<usize>,
    seed: u64,
) -> Result<(Dense<f32>, Vec<usize>)> {
    let (n, g) = lognorm.shape();
    let genes: Vec<usize> = match n_top_genes {
        Some(t) if t < g => {
            let opts = HvgOptions { n_top_genes: Some(t), ..Default::default() };
            let r = pp(hvg::hvg_seurat(lognorm, &[(0..n).collect()], &opts, None))?;
            (0..g).filter(|&j| r.highly_variable[j]).collect()
        }
        _ => (0..g).collect(),
    };
    let x = if genes.len() == g { lognorm.clone() } else { lognorm.select_cols(&genes) };
    let k = n_comps.min(n.min(genes.len()));
    let p = pp(pca(&x, k, seed, &PcaOptions::default()))?;
    Ok((p.embedding, genes))
}

/// Options of [`LogisticRegression::fit`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogRegOptions {
    /// Inverse L2 strength as scikit-learn's `C` (default 1.0): minimises
    /// C · Σ cross-entropy + ½‖W‖² (intercepts unpenalised).
    pub c: f64,
    /// Maximum L-BFGS iterations (default 1000).
    pub max_iter: usize,
    /// Stop when the largest gradient entry falls below this (default 1e-6).
    pub tol: f64,
    /// Standardise features with the training mean / sd first (default false, as
    /// scikit-learn; standardising many weak PCA components hurts, e.g. PCA-512).
    pub standardize: bool,
}

impl Default for LogRegOptions {
    fn default() -> Self {
        LogRegOptions { c: 1.0, max_iter: 1000, tol: 1e-6, standardize: false }
    }
}

/// A fitted multinomial logistic regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticRegression {
    /// Class names (sorted).
    pub classes: Vec<String>,
    /// Weights, `classes × features` row-major, on standardised features.
    pub coef: Vec<f64>,
    /// Intercept of each class.
    pub intercept: Vec<f64>,
    /// Feature means used for standardisation (zeros without it).
    pub mean: Vec<f64>,
    /// Feature scales used for standardisation (ones without it).
    pub scale: Vec<f64>,
    /// L-BFGS iterations run.
    pub iterations: usize,
    /// Whether the gradient tolerance was reached.
    pub converged: bool,
}

struct Problem<'a> {
    x: &'a [f64],
    y: &'a [usize],
    n: usize,
    d: usize,
    k: usize,
    lambda: f64,
}

impl Problem<'_> {
    /// Objective (mean cross-entropy + λ/2 ‖W‖²) and gradient; w = [W (k×d), b (k)].
    fn eval(&self, w: &[f64]) -> (f64, Vec<f64>) {
        let (d, k) = (self.d, self.k);
        let chunk = 256;
        let parts: Vec<(f64, Vec<f64>)> = (0..self.n.div_ceil(chunk))
            .into_par_iter()
            .map(|c| {
                let mut g = vec![0f64; k * d + k];
                let mut loss = 0.0;
                let mut z = vec![0f64; k];
                for i in c * chunk..((c + 1) * chunk).min(self.n) {
                    let xi = &self.x[i * d..(i + 1) * d];
                    for (c2, zc) in z.iter_mut().enumerate() {
                        *zc = w[k * d + c2] + xi.iter().zip(&w[c2 * d..(c2 + 1) * d]).map(|(a, b)| a * b).sum::<f64>();
                    }
                    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
                    let lse = m + s.ln();
                    loss += lse - z[self.y[i]];
                    for c2 in 0..k {
                        let p = (z[c2] - lse).exp() - if c2 == self.y[i] { 1.0 } else { 0.0 };
                        for (gj, &xj) in g[c2 * d..(c2 + 1) * d].iter_mut().zip(xi) {
                            *gj += p * xj;
                        }
                        g[k * d + c2] += p;
                    }
                }
                (loss, g)
            })
            .collect();
        let mut loss = 0.0;
        let mut g = vec![0f64; k * d + k];
        for (l, gp) in parts {
            loss += l;
            g.iter_mut().zip(gp).for_each(|(a, b)| *a += b);
        }
        let n = self.n as f64;
        loss /= n;
        g.iter_mut().for_each(|v| *v /= n);
        for j in 0..k * d {
            loss += 0.5 * self.lambda * w[j] * w[j];
            g[j] += self.lambda * w[j];
        }
        (loss, g)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimises with L-BFGS (10 pairs, Armijo backtracking). Returns (w, iterations, converged).
fn lbfgs(p: &Problem, mut w: Vec<f64>, max_iter: usize, tol: f64) -> (Vec<f64>, usize, bool) {
    let m = 10;
    let (mut f, mut g) = p.eval(&w);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    for it in 0..max_iter {
        let gmax = g.iter().fold(0f64, |a, v| a.max(v.abs()));
        if gmax < tol {
            return (w, it, true);
        }
        // Two-loop recursion.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(s_hist.len());
        for (s, y) in s_hist.iter().zip(&y_hist).rev() {
            let rho = 1.0 / dot(y, s);
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push((a, rho));
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y),
            _ => 1.0 / g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12),
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y), (a, rho)) in s_hist.iter().zip(&y_hist).zip(alphas.into_iter().rev()) {
            let b = rho * dot(y, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &dir);
        let dir = if slope >= 0.0 {
            s_hist.clear();
            y_hist.clear();
            slope = -dot(&g, &g);
            g.iter().map(|v| -v).collect()
        } else {
            dir
        };
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..40 {
            let wn: Vec<f64> = w.iter().zip(&dir).map(|(a, b)| a + step * b).collect();
            let (fnew, gnew) = p.eval(&wn);
            if fnew <= f + 1e-4 * step * slope {
                accepted = Some((wn, fnew, gnew));
                break;
            }
            step *= 0.5;
        }
        let Some((wn, fnew, gnew)) = accepted else {
            return (w, it, false);
        };
        let s: Vec<f64> = wn.iter().zip(&w).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gnew.iter().zip(&g).map(|(a, b)| a - b).collect();
        if dot(&s, &y) > 1e-12 {
            s_hist.push(s);
            y_hist.push(y);
            if s_hist.len() > m {
                s_hist.remove(0);
                y_hist.remove(0);
            }
        }
        let rel = (f - fnew).abs() / f.abs().max(1e-12);
        w = wn;
        f = fnew;
        g = gnew;
        if rel < 1e-14 {
            return (w, it + 1, true);
        }
    }
    (w, max_iter, false)
}

impl LogisticRegression {
    /// Fits on the rows of `x` with labels `y`.
    pub fn fit<T: AsRef<str>>(x: &Dense<f32>, y: &[T], opts: &LogRegOptions) -> Result<Self> {
        check_len("logistic regression: labels vs rows", x.nrows, y.len())?;
        let labels: Vec<String> = y.iter().map(|s| s.as_ref().to_string()).collect();
        let (codes, classes) = encode(&labels);
        if classes.len() < 2 {
            return invalid("logistic regression needs at least two classes");
        }
        if opts.c.is_nan() || opts.c <= 0.0 {
            return invalid(format!("logistic regression: C must be positive, got {}", opts.c));
        }
        if x.data.iter().any(|v| !v.is_finite()) {
            return invalid("logistic regression: features contain non-finite values");
        }
        let (n, d, k) = (x.nrows, x.ncols, classes.len());
        let mut mean = vec![0f64; d];
        let mut scale = vec![1f64; d];
        if opts.standardize {
            for i in 0..n {
                mean.iter_mut().zip(x.row(i)).for_each(|(m, &v)| *m += v as f64 / n as f64);
            }
            let mut var = vec![0f64; d];
            for i in 0..n {
                var.iter_mut()
                    .zip(x.row(i))
                    .zip(&mean)
                    .for_each(|((s, &v), m)| *s += (v as f64 - m).powi(2) / n as f64);
            }
            scale = var.iter().map(|v| if *v > 0.0 { v.sqrt() } else { 1.0 }).collect();
        }
        let xs: Vec<f64> = (0..n)
            .flat_map(|i| {
                x.row(i).iter().enumerate().map(|(j, &v)| (v as f64 - mean[j]) / scale[j]).collect::<Vec<_>>()
            })
            .collect();
        let prob = Problem { x: &xs, y: &codes, n, d, k, lambda: 1.0 / (opts.c * n as f64) };
        let (w, iterations, converged) = lbfgs(&prob, vec![0f64; k * d + k], opts.max_iter, opts.tol);
        Ok(LogisticRegression {
            classes,
            coef: w[..k * d].to_vec(),
            intercept: w[k * d..].to_vec(),
            mean,
            scale,
            iterations,
            converged,
        })
    }

    /// Class probabilities, `rows × classes` row-major.
    pub fn predict_proba(&self, x: &Dense<f32>) -> Result<Vec<f64>> {
        let d = self.mean.len();
        check_len("logistic regression: feature columns", d, x.ncols)?;
        let k = self.classes.len();
        Ok((0..x.nrows)
            .into_par_iter()
            .flat_map_iter(|i| {
                let xi: Vec<f64> =
                    x.row(i).iter().enumerate().map(|(j, &v)| (v as f64 - self.mean[j]) / self.scale[j]).collect();
                let z: Vec<f64> =
                    (0..k).map(|c| self.intercept[c] + dot(&xi, &self.coef[c * d..(c + 1) * d])).collect();
                let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
                z.into_iter().map(move |v| (v - m).exp() / s)
            })
            .collect())
    }

    /// The most probable class of each row.
    pub fn predict(&self, x: &Dense<f32>) -> Result<Vec<String>> {
        let p = self.predict_proba(x)?;
        let k = self.classes.len();
        Ok(p.chunks(k)
            .map(|r| {
                let best = (0..k).fold(0, |b, c| if r[c] > r[b] { c } else { b });
                self.classes[best].clone()
            })
            .collect())
    }
}

/// Cell-type annotation baseline: logistic regression trained on `split.train` rows of the
/// features, scored on `split.test` (accuracy, macro / weighted F1, macro precision / recall).
pub fn annotation_baseline(
    features: &Dense<f32>,
    labels: &[String],
    split: &Split,
    method: &str,
    opts: &LogRegOptions,
) -> Result<MetricsReport> {
    check_len("annotation: labels vs rows", features.nrows, labels.len())?;
    if split.train.is_empty() || split.test.is_empty() {
        return invalid("annotation: the split needs training and test cells");
    }
    if split.train.iter().chain(&split.test).any(|&i| i >= labels.len()) {
        return invalid("annotation: split index out of range");
    }
    let ytr: Vec<String> = split.train.iter().map(|&i| labels[i].clone()).collect();
    let yte: Vec<String> = split.test.iter().map(|&i| labels[i].clone()).collect();
    let model = LogisticRegression::fit(&features.select_rows(&split.train), &ytr, opts)?;
    let pred = model.predict(&features.select_rows(&split.test))?;
    let r = class_report(&yte, &pred)?;
    let mut rep = MetricsReport::new("cell-type annotation", method, split.test.len());
    rep.push("accuracy", r.accuracy);
    rep.push("macro_F1", r.macro_f1);
    rep.push("weighted_F1", r.weighted_f1);
    rep.push("macro_precision", r.macro_precision);
    rep.push("macro_recall", r.macro_recall);
    rep.note("train_cells", split.train.len());
    rep.note("lbfgs_iterations", model.iterations);
    rep.note("converged", model.converged);
    Ok(rep)
}

/// Options of [`diffusion_denoise`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DenoiseOptions {
    /// Neighbours (including the cell itself) of the graph (default 15).
    pub n_neighbors: usize,
    /// Diffusion steps t (default 3).
    pub t: usize,
}

impl Default for DenoiseOptions {
    fn default() -> Self {
        DenoiseOptions { n_neighbors: 15, t: 3 }
    }
}

/// MAGIC-like denoising: builds the UMAP-weighted kNN graph of `embedding` (e.g. PCA of the
/// same cells), adds self-loops of weight 1, row-normalises it into a Markov matrix M and
/// returns Mᵗ · `x` (cells × genes).
pub fn diffusion_denoise(x: &Dense<f32>, embedding: &Dense<f32>, opts: &DenoiseOptions) -> Result<Dense<f32>> {
    check_len("denoise: embedding rows vs matrix rows", x.nrows, embedding.nrows)?;
    let conn = connectivities(&knn(embedding, opts.n_neighbors.min(x.nrows), true)?);
    let n = x.nrows;
    let rows: Vec<(Vec<u32>, Vec<f64>)> = (0..n)
        .map(|i| {
            let (idx, val) = conn.row(i);
            let mut ix: Vec<u32> = idx.to_vec();
            let mut w: Vec<f64> = val.iter().map(|&v| v as f64).collect();
            ix.push(i as u32);
            w.push(1.0);
            let s: f64 = w.iter().sum();
            w.iter_mut().for_each(|v| *v /= s);
            (ix, w)
        })
        .collect();
    let mut cur = x.clone();
    for _ in 0..opts.t {
        let data: Vec<f32> = (0..n)
            .into_par_iter()
            .flat_map_iter(|i| {
                let mut acc = vec![0f64; x.ncols];
                for (&j, &w) in rows[i].0.iter().zip(&rows[i].1) {
                    acc.iter_mut().zip(cur.row(j as usize)).for_each(|(a, &v)| *a += w * v as f64);
                }
                acc.into_iter().map(|v| v as f32)
            })
            .collect();
        cur = Dense { nrows: n, ncols: x.ncols, data };
    }
    Ok(cur)
}

/// Mean imputation: every query cell gets the reference mean of each target gene.
pub fn mean_impute(reference_target: &Dense<f32>, n_query: usize) -> Dense<f32> {
    let g = reference_target.ncols;
    let mut m = vec![0f64; g];
    for i in 0..reference_target.nrows {
        m.iter_mut().zip(reference_target.row(i)).for_each(|(a, &v)| *a += v as f64);
    }
    let n = reference_target.nrows.max(1) as f64;
    let row: Vec<f32> = m.iter().map(|v| (v / n) as f32).collect();
    Dense { nrows: n_query, ncols: g, data: row.iter().copied().cycle().take(n_query * g).collect() }
}

/// kNN-regression imputation: each query cell takes the mean target expression of its `k`
/// nearest reference cells, neighbours found on the shared genes (or any shared features).
pub fn knn_impute(
    reference_shared: &Dense<f32>,
    reference_target: &Dense<f32>,
    query_shared: &Dense<f32>,
    k: usize,
) -> Result<Dense<f32>> {
    check_len("kNN imputation: reference target rows", reference_shared.nrows, reference_target.nrows)?;
    let g = knn_query(reference_shared, query_shared, k)?;
    let t = reference_target.ncols;
    let data: Vec<f32> = (0..query_shared.nrows)
        .into_par_iter()
        .flat_map_iter(|i| {
            let mut acc = vec![0f64; t];
            for &j in g.row(i).0 {
                acc.iter_mut().zip(reference_target.row(j as usize)).for_each(|(a, &v)| *a += v as f64);
            }
            acc.into_iter().map(move |v| (v / k as f64) as f32)
        })
        .collect();
    Ok(Dense { nrows: query_shared.nrows, ncols: t, data })
}

/// Options of [`pca_baseline`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PcaBaselineOptions {
    /// Principal components (default 50; CellPLM-sized embeddings use 512).
    pub n_comps: usize,
    /// Highly variable genes kept before PCA (default 2000; all genes if fewer).
    pub n_top_genes: Option<usize>,
    /// Test fraction of the stratified split of the annotation baseline (default 0.3).
    pub test_frac: f64,
    /// Seed of PCA, the split and Leiden (default 0).
    pub seed: u64,
}

impl Default for PcaBaselineOptions {
    fn default() -> Self {
        PcaBaselineOptions { n_comps: 50, n_top_genes: Some(2000), test_frac: 0.3, seed: 0 }
    }
}

/// The PCA baseline on log-normalised data: the embedding's evaluation
/// ([`crate::evaluate_embedding`]) and logistic-regression annotation on a stratified split.
pub fn pca_baseline(
    lognorm: &Matrix,
    labels: &[String],
    batches: Option<&[String]>,
    opts: &PcaBaselineOptions,
) -> Result<(Dense<f32>, Vec<MetricsReport>)> {
    check_len("PCA baseline: labels vs cells", lognorm.shape().0, labels.len())?;
    let (emb, genes) = pca_embedding(lognorm, opts.n_comps, opts.n_top_genes, opts.seed)?;
    let method = format!("PCA-{}", emb.ncols);
    let eopts = crate::EvaluateOptions { seed: opts.seed, method: method.clone(), ..Default::default() };
    let mut e = crate::evaluate_embedding(&emb, labels, batches, &eopts)?;
    e.note("genes_used", genes.len());
    let split = crate::protocols::stratified_split(labels, 0.0, opts.test_frac, opts.seed)?;
    let a = annotation_baseline(
        &emb,
        labels,
        &split,
        &format!("{method} + logistic regression"),
        &LogRegOptions::default(),
    )?;
    Ok((emb, vec![e, a]))
}
