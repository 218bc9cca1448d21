//! Principal component analysis: exact covariance eigendecomposition (the default for up to
//! 4096 genes) or randomized SVD (Halko, Martinsson & Tropp 2011).
//!
//! The data matrix is centred *implicitly*, so a sparse `X` is never densified: the
//! covariance solver accumulates `XᵀX` from the sparse rows (cache-sized tiles, in parallel)
//! and subtracts `n·μμᵀ` before faer's self-adjoint eigendecomposition; the randomized
//! solver multiplies with the centred matrix as `X·B − 1·(μᵀB)` and `Xᵀ·Q − μ·(1ᵀQ)`, with
//! faer QR and SVD of the small matrices. Signs follow scikit-learn ≥ 1.5 (`svd_flip` with
//! `u_based_decision=False`, which scanpy 1.11 uses): the largest-magnitude loading of each
//! component is positive.

use std::collections::BTreeMap;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use sclm_data::{AnnData, Array2, Column, Dense, Matrix, Value};
use serde::{Deserialize, Serialize};

use crate::stats::{col_stats, ordered_sum};

/// Cells per partial product of the sparse `Aᵀ · Q` (fixed, so that the sums do not depend on
/// the thread count).
const TMUL_ROWS: usize = 2048;
use crate::{invalid, PreprocessError, Result};

/// How [`pca`] computes the components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PcaSolver {
    /// `covariance_eigh` when genes ≤ 4096 (the usual HVG case), else `randomized`.
    #[default]
    Auto,
    /// Eigendecomposition of the genes × genes covariance matrix, accumulated from the sparse
    /// rows (exact; cost ∝ Σ nnz(row)² + genes³).
    CovarianceEigh,
    /// Randomized SVD with power iterations (cost ∝ nnz · (n_comps + n_oversamples) · iterations).
    Randomized,
}

/// Largest gene count for which [`PcaSolver::Auto`] picks the covariance solver.
pub const COVARIANCE_MAX_GENES: usize = 4096;

/// Options of [`pca`] (besides the number of components and the seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PcaOptions {
    /// Solver (default `auto`).
    pub solver: PcaSolver,
    /// Centre the genes (default true). Without centring this is a truncated SVD, with the
    /// variances reported as scikit-learn's `TruncatedSVD` reports them.
    pub zero_center: bool,
    /// Randomized solver: extra random directions beyond `n_comps` (default 30; at most
    /// [`MAX_PCA_OVERSAMPLES`], more is refused). The `n_comps + n_oversamples` directions are
    /// clamped to min(cells, genes), the rank of the data; scikit-learn, which scanpy calls,
    /// does not clamp and allocates every direction.
    pub n_oversamples: usize,
    /// Randomized solver: power iterations (default 12; at most [`MAX_PCA_POWER_ITER`], more is
    /// refused); more give more accurate trailing components.
    pub n_power_iter: usize,
    /// In [`pca_adata`]: use only the genes of `var['highly_variable']` when present
    /// (default true, as scanpy).
    pub use_highly_variable: bool,
}

/// Largest number of components [`pca`] computes (far more than any embedding uses; each one
/// is a dense column over all cells).
pub const MAX_PCA_COMPS: usize = 10_000;
/// Largest [`PcaOptions::n_oversamples`].
pub const MAX_PCA_OVERSAMPLES: usize = 10_000;
/// Largest [`PcaOptions::n_power_iter`] (each iteration is two passes over the data).
pub const MAX_PCA_POWER_ITER: usize = 1_000;

impl PcaOptions {
    /// Checks the options (and `n_comps`, when given) before any data is touched: each at most
    /// its documented maximum ([`MAX_PCA_COMPS`], [`MAX_PCA_OVERSAMPLES`],
    /// [`MAX_PCA_POWER_ITER`]) and `n_comps` at least 1. Errors name the step and the key.
    pub fn validate(&self, n_comps: Option<usize>) -> Result<()> {
        let step = "pca";
        if let Some(k) = n_comps {
            if k == 0 || k > MAX_PCA_COMPS {
                return Err(invalid(step, format!("n_comps = {k} must lie in 1..={MAX_PCA_COMPS}")));
            }
        }
        if self.n_oversamples > MAX_PCA_OVERSAMPLES {
            return Err(invalid(
                step,
                format!("n_oversamples = {} is more than the {MAX_PCA_OVERSAMPLES} supported", self.n_oversamples),
            ));
        }
        if self.n_power_iter > MAX_PCA_POWER_ITER {
            return Err(invalid(
                step,
                format!("n_power_iter = {} is more than the {MAX_PCA_POWER_ITER} supported", self.n_power_iter),
            ));
        }
        Ok(())
    }
}

impl Default for PcaOptions {
    fn default() -> Self {
        PcaOptions {
            solver: PcaSolver::Auto,
            zero_center: true,
            n_oversamples: 30,
            n_power_iter: 12,
            use_highly_variable: true,
        }
    }
}

/// A PCA result.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// Cell coordinates (cells × k), `X_pca`.
    pub embedding: Dense<f32>,
    /// Loadings (k × genes), rows of unit length.
    pub components: Dense<f32>,
    /// Variance explained by each component (`uns['pca']['variance']`).
    pub variance: Vec<f64>,
    /// Fraction of the total variance explained (`uns['pca']['variance_ratio']`).
    pub variance_ratio: Vec<f64>,
    /// The per-gene means that were subtracted (None without centring).
    pub mean: Option<Vec<f64>>,
}

/// The (implicitly centred) data matrix as a linear operator.
struct Op<'a> {
    x: &'a Matrix,
    mean: Option<Vec<f64>>,
    n: usize,
    g: usize,
}

fn to_row_major(m: MatRef<'_, f64>) -> Vec<f64> {
    let (r, c) = (m.nrows(), m.ncols());
    let mut v = vec![0.0; r * c];
    for j in 0..c {
        for i in 0..r {
            v[i * c + j] = m[(i, j)];
        }
    }
    v
}

fn from_row_major(v: &[f64], r: usize, c: usize) -> Mat<f64> {
    Mat::from_fn(r, c, |i, j| v[i * c + j])
}

impl Op<'_> {
    /// A · B with A the centred data (n × g) and B (g × l).
    fn mul(&self, b: MatRef<'_, f64>) -> Mat<f64> {
        let l = b.ncols();
        let mut out = match self.x {
            Matrix::Csr(c) => {
                let br = to_row_major(b);
                let mut o = vec![0f64; self.n * l];
                o.par_chunks_mut(l.max(1)).enumerate().with_min_len(256).for_each(|(i, row)| {
                    let (idx, val) = c.row(i);
                    for (&j, &v) in idx.iter().zip(val) {
                        let bj = &br[j as usize * l..(j as usize + 1) * l];
                        let v = v as f64;
                        for (r, &bv) in row.iter_mut().zip(bj) {
                            *r += v * bv;
                        }
                    }
                });
                from_row_major(&o, self.n, l)
            }
            Matrix::Dense(d) => {
                let a = MatRef::from_row_major_slice(&d.data, self.n, self.g);
                let b32 = Mat::<f32>::from_fn(self.g, l, |i, j| b[(i, j)] as f32);
                let mut o = Mat::<f32>::zeros(self.n, l);
                matmul(o.as_mut(), Accum::Replace, a, b32.as_ref(), 1.0f32, Par::rayon(0));
                Mat::from_fn(self.n, l, |i, j| o[(i, j)] as f64)
            }
        };
        if let Some(mu) = &self.mean {
            // subtract 1 · (μᵀ B)
            let mb: Vec<f64> = (0..l).map(|t| (0..self.g).map(|j| mu[j] * b[(j, t)]).sum()).collect();
            for t in 0..l {
                for i in 0..self.n {
                    out[(i, t)] -= mb[t];
                }
            }
        }
        out
    }

    /// Aᵀ · Q with Q (n × l).
    fn tmul(&self, q: MatRef<'_, f64>) -> Mat<f64> {
        let l = q.ncols();
        let mut out = match self.x {
            Matrix::Csr(c) => {
                // stream the cells in order; each task accumulates a genes × l block
                let qr = to_row_major(q);
                let g = self.g;
                let rows: Vec<usize> = (0..self.n).collect();
                let o = ordered_sum(
                    &rows,
                    TMUL_ROWS,
                    vec![0f64; g * l],
                    |part| {
                        let mut acc = vec![0f64; g * l];
                        for &i in part {
                            let (idx, val) = c.row(i);
                            let qi = &qr[i * l..(i + 1) * l];
                            for (&j, &v) in idx.iter().zip(val) {
                                let v = v as f64;
                                let aj = &mut acc[j as usize * l..(j as usize + 1) * l];
                                for (a, &qv) in aj.iter_mut().zip(qi) {
                                    *a += v * qv;
                                }
                            }
                        }
                        acc
                    },
                    |mut a, b| {
                        a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                        a
                    },
                );
                from_row_major(&o, self.g, l)
            }
            Matrix::Dense(d) => {
                let a = MatRef::from_row_major_slice(&d.data, self.n, self.g);
                let q32 = Mat::<f32>::from_fn(self.n, l, |i, j| q[(i, j)] as f32);
                let mut o = Mat::<f32>::zeros(self.g, l);
                matmul(o.as_mut(), Accum::Replace, a.transpose(), q32.as_ref(), 1.0f32, Par::rayon(0));
                Mat::from_fn(self.g, l, |i, j| o[(i, j)] as f64)
            }
        };
        if let Some(mu) = &self.mean {
            // subtract μ · (1ᵀ Q)
            let cs: Vec<f64> = (0..l).map(|t| (0..self.n).map(|i| q[(i, t)]).sum()).collect();
            for t in 0..l {
                for j in 0..self.g {
                    out[(j, t)] -= mu[j] * cs[t];
                }
            }
        }
        out
    }
}

fn orthonormal(y: &Mat<f64>) -> Mat<f64> {
    y.qr().compute_thin_Q()
}

/// Randomized SVD: returns loadings (g × k), singular values and the scores U·S (n × k).
fn randomized_solve(op: &Op<'_>, k: usize, seed: u64, opts: &PcaOptions) -> Result<(Mat<f64>, Vec<f64>, Mat<f64>)> {
    let (n, g) = (op.n, op.g);
    let l = k.saturating_add(opts.n_oversamples).min(n.min(g));
    let mut rng = StdRng::seed_from_u64(seed);
    let omega = Mat::<f64>::from_fn(g, l, |_, _| StandardNormal.sample(&mut rng));
    let mut q = orthonormal(&op.mul(omega.as_ref()));
    for _ in 0..opts.n_power_iter {
        let z = orthonormal(&op.tmul(q.as_ref()));
        q = orthonormal(&op.mul(z.as_ref()));
    }
    // B = Qᵀ A (l × g), computed as (Aᵀ Q)ᵀ
    let bt = op.tmul(q.as_ref());
    let svd = bt
        .thin_svd()
        .map_err(|e| PreprocessError::Numeric(format!("pca: SVD of the projected matrix failed: {e:?}")))?;
    // Bᵀ = W S Zᵀ  =>  B = Z S Wᵀ: left vectors of B are Z (l × l), right vectors W (g × l)
    let (w, s, z) = (svd.U(), svd.S().column_vector(), svd.V());
    let uq = &q * z; // n × l
    let sv: Vec<f64> = (0..k).map(|c| s[c]).collect();
    let scores = Mat::from_fn(n, k, |i, c| uq[(i, c)] * sv[c]);
    Ok((w.subcols(0, k).to_owned(), sv, scores))
}

/// Covariance eigendecomposition: Aᵀ A accumulated from the rows, then the top `k`
/// eigenvectors; the scores are A·V.
fn covariance_solve(op: &Op<'_>, k: usize) -> Result<(Mat<f64>, Vec<f64>, Mat<f64>)> {
    let (n, g) = (op.n, op.g);
    let mut gram = gram(op.x);
    if let Some(mu) = &op.mean {
        let nf = n as f64;
        for a in 0..g {
            for b in 0..g {
                gram[(a, b)] -= nf * mu[a] * mu[b];
            }
        }
    }
    let evd = gram.self_adjoint_eigen(faer::Side::Lower).map_err(|e| {
        PreprocessError::Numeric(format!("pca: eigendecomposition of the covariance matrix failed: {e:?}"))
    })?;
    let (u, s) = (evd.U(), evd.S().column_vector());
    let mut order: Vec<usize> = (0..g).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let w = Mat::from_fn(g, k, |j, c| u[(j, order[c])]);
    let sv: Vec<f64> = (0..k).map(|c| s[order[c]].max(0.0).sqrt()).collect();
    let scores = op.mul(w.as_ref());
    Ok((w, sv, scores))
}

/// XᵀX (g × g, f64) of a sparse or dense matrix, in parallel over blocks of rows.
fn gram(x: &Matrix) -> Mat<f64> {
    let (n, g) = x.shape();
    let rows: Vec<usize> = (0..n).collect();
    let acc = match x {
        Matrix::Csr(c) => {
            // tiles of the upper triangle, each accumulated over all cells (cache-sized
            // accumulators; no reduction needed)
            let tile: usize = 512;
            let nt = g.div_ceil(tile);
            let tiles: Vec<(usize, usize)> = (0..nt).flat_map(|a| (a..nt).map(move |b| (a, b))).collect();
            let parts: Vec<((usize, usize), Vec<f64>)> = tiles
                .par_iter()
                .map(|&(ta, tb)| {
                    let (r0, r1) = (ta * tile, ((ta + 1) * tile).min(g));
                    let (c0, c1) = (tb * tile, ((tb + 1) * tile).min(g));
                    let w = c1 - c0;
                    let mut acc = vec![0f64; (r1 - r0) * w];
                    for i in 0..n {
                        let (idx, val) = c.row(i);
                        let a0 = idx.partition_point(|&j| (j as usize) < r0);
                        let a1 = idx.partition_point(|&j| (j as usize) < r1);
                        if a0 == a1 {
                            continue;
                        }
                        let b0 = idx.partition_point(|&j| (j as usize) < c0);
                        let b1 = idx.partition_point(|&j| (j as usize) < c1);
                        for a in a0..a1 {
                            let va = val[a] as f64;
                            let row = &mut acc[(idx[a] as usize - r0) * w..(idx[a] as usize - r0 + 1) * w];
                            let start = if ta == tb { a.max(b0) } else { b0 };
                            for (&jb, &vb) in idx[start..b1].iter().zip(&val[start..b1]) {
                                row[jb as usize - c0] += va * vb as f64;
                            }
                        }
                    }
                    ((ta, tb), acc)
                })
                .collect();
            let mut full = vec![0f64; g * g];
            for ((ta, tb), acc) in parts {
                let (r0, c0) = (ta * tile, tb * tile);
                let w = (((tb + 1) * tile).min(g)) - c0;
                for (k, v) in acc.iter().enumerate() {
                    let (r, cc) = (r0 + k / w, c0 + k % w);
                    if cc >= r {
                        full[r * g + cc] = *v;
                    }
                }
            }
            full
        }
        Matrix::Dense(d) => {
            // f32 GEMM per block of rows, accumulated in f64
            let block = 4096;
            ordered_sum(
                &rows,
                block,
                vec![0f64; g * g],
                |part| {
                    let (r0, r1) = (part[0], part[part.len() - 1] + 1);
                    let a = MatRef::from_row_major_slice(&d.data[r0 * g..r1 * g], r1 - r0, g);
                    let mut o = Mat::<f32>::zeros(g, g);
                    matmul(o.as_mut(), Accum::Replace, a.transpose(), a, 1.0f32, Par::Seq);
                    let mut acc = vec![0f64; g * g];
                    for jb in 0..g {
                        for ja in 0..=jb {
                            acc[ja * g + jb] = o[(ja, jb)] as f64;
                        }
                    }
                    acc
                },
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            )
        }
    };
    // symmetric from the upper triangle
    Mat::from_fn(g, g, |a, b| if a <= b { acc[a * g + b] } else { acc[b * g + a] })
}

/// PCA of `x` (cells × genes) with `n_comps` components; `seed` fixes the random start.
pub fn pca(x: &Matrix, n_comps: usize, seed: u64, opts: &PcaOptions) -> Result<Pca> {
    let step = "pca";
    opts.validate(Some(n_comps))?;
    let (n, g) = x.shape();
    let kmax = n.min(g);
    if n_comps == 0 || n_comps > kmax {
        return Err(invalid(step, format!("n_comps must lie in 1..={kmax} for a {n} x {g} matrix, got {n_comps}")));
    }
    if let Some(v) = x.values().iter().find(|v| !v.is_finite()) {
        return Err(invalid(step, format!("X holds a non-finite value ({v})")));
    }
    let (mean, var) = col_stats(x, None).mean_var(n);
    let op = Op { x, mean: if opts.zero_center { Some(mean.clone()) } else { None }, n, g };
    let use_cov = match opts.solver {
        PcaSolver::CovarianceEigh => true,
        PcaSolver::Randomized => false,
        PcaSolver::Auto => g <= COVARIANCE_MAX_GENES,
    };
    let (w, sv, uq): (Mat<f64>, Vec<f64>, Mat<f64>) =
        if use_cov { covariance_solve(&op, n_comps)? } else { randomized_solve(&op, n_comps, seed, opts)? };
    let k = n_comps;
    let mut emb = Dense::<f32>::zeros(n, k);
    let mut comps = Dense::<f32>::zeros(k, g);
    for c in 0..k {
        // sign: largest |loading| positive (first index on ties, as numpy's argmax)
        let mut jmax = 0;
        for j in 1..g {
            if w[(j, c)].abs() > w[(jmax, c)].abs() {
                jmax = j;
            }
        }
        let sign = if w[(jmax, c)] < 0.0 { -1.0 } else { 1.0 };
        for j in 0..g {
            comps.data[c * g + j] = (sign * w[(j, c)]) as f32;
        }
        for i in 0..n {
            emb.data[i * k + c] = (sign * uq[(i, c)]) as f32;
        }
    }

    let (variance, variance_ratio) = if opts.zero_center {
        let total: f64 = var.iter().sum();
        let ev: Vec<f64> = sv.iter().map(|s| s * s / (n as f64 - 1.0).max(1.0)).collect();
        let r = ev.iter().map(|e| e / total).collect();
        (ev, r)
    } else {
        // as TruncatedSVD: variance (ddof 0) of each embedding column over the total
        // (ddof 0) variance of X
        let nf = n as f64;
        let total: f64 = var.iter().map(|v| v * (nf - 1.0) / nf).sum();
        let ev: Vec<f64> = (0..k)
            .map(|c| {
                let col: Vec<f64> = (0..n).map(|i| emb.data[i * k + c] as f64).collect();
                let m = col.iter().sum::<f64>() / nf;
                col.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / nf
            })
            .collect();
        let r = ev.iter().map(|e| e / total).collect();
        (ev, r)
    };
    Ok(Pca { embedding: emb, components: comps, variance, variance_ratio, mean: op.mean })
}

/// `sc.pp.pca`: runs [`pca`] on `adata.X` (restricted to `var['highly_variable']` when it
/// exists and `opts.use_highly_variable`), writes `obsm['X_pca']`, `varm['PCs']` (genes × k,
/// zero rows for unused genes) and `uns['pca']` (`variance`, `variance_ratio`, `params`).
pub fn pca_adata(adata: &mut AnnData, n_comps: usize, seed: u64, opts: &PcaOptions) -> Result<Pca> {
    opts.validate(Some(n_comps))?;
    adata.validate()?;
    let g = adata.n_vars();
    let mask: Option<Vec<usize>> = match adata.var.get("highly_variable") {
        Some(Column::Bool(b)) if opts.use_highly_variable => Some((0..g).filter(|&j| b[j]).collect()),
        _ => None,
    };
    let res = match &mask {
        Some(m) => {
            if m.is_empty() {
                return Err(invalid("pca", "var['highly_variable'] selects no gene; run highly_variable_genes again or disable use_highly_variable"));
            }
            pca(&adata.x.select_cols(m), n_comps, seed, opts)?
        }
        None => pca(&adata.x, n_comps, seed, opts)?,
    };
    let k = n_comps;
    let mut pcs = Dense::<f32>::zeros(g, k);
    let cols: Vec<usize> = mask.clone().unwrap_or_else(|| (0..g).collect());
    let gs = cols.len();
    let adata_genes_for_pca = gs;
    for c in 0..k {
        for (t, &j) in cols.iter().enumerate() {
            pcs.data[j * k + c] = res.components.data[c * gs + t];
        }
    }
    adata.obsm.insert("X_pca".into(), Array2::F32(res.embedding.clone()));
    adata.varm.insert("PCs".into(), Array2::F32(pcs));
    let mut params = BTreeMap::new();
    params.insert("zero_center".to_string(), Value::Bool(opts.zero_center));
    params.insert("use_highly_variable".to_string(), Value::Bool(mask.is_some()));
    let solver = match opts.solver {
        PcaSolver::CovarianceEigh => "covariance_eigh",
        PcaSolver::Randomized => "randomized",
        PcaSolver::Auto if adata_genes_for_pca <= COVARIANCE_MAX_GENES => "covariance_eigh",
        PcaSolver::Auto => "randomized",
    };
    params.insert("svd_solver".to_string(), Value::Str(solver.into()));
    let mut p = BTreeMap::new();
    p.insert("variance".to_string(), Value::F64Array { shape: vec![k], data: res.variance.clone() });
    p.insert("variance_ratio".to_string(), Value::F64Array { shape: vec![k], data: res.variance_ratio.clone() });
    p.insert("params".to_string(), Value::Map(params));
    adata.uns.insert("pca".into(), Value::Map(p));
    Ok(res)
}
