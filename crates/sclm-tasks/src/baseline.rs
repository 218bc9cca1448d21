//! Classical baselines behind the model interface, so that a protocol runs model and baseline
//! through the same code on the same cells, genes and split.
//!
//! [`PcaModel`]: scanpy's recipe (`normalize_total` to the median library, `log1p`, the most
//! variable genes by the `seurat` flavour, PCA) fitted on a dataset; it embeds any cells with
//! the fitted genes, target sum, means and loadings, classifies with logistic regression on its
//! embedding, and reconstructs expression from its components.
use std::any::Any;
use std::path::Path;

use sclm_data::{AnnData, Dense, Matrix};
use sclm_eval::baselines::{LogRegOptions, LogisticRegression};
use sclm_model::{
    CellModel, EmbedOptions, Family, FinetuneRecipe, LabeledCells, Manifest, ModelError, ModelKind, PerturbationCells,
    PerturbationPredictor, PieceClassifier, PieceEmbedder, ReconstructOptions, ReconstructionFit, Registry, RunOptions,
};
use sclm_nn::burn::tensor::Device;
use sclm_nn::embedding::CsrRows;
use sclm_nn::train::{FitSummary, Progress};
use sclm_preprocess::{HvgOptions, NormalizeOptions, PcaOptions};

use crate::error::{input, Result};

/// Family name of the PCA baseline.
pub const PCA_FAMILY: &str = "pca";

/// Options of [`PcaModel::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct PcaFit {
    /// Principal components (default 50, clipped to min(cells − 1, genes)).
    pub n_comps: usize,
    /// Most variable genes used (default 3,000; all genes when there are fewer).
    pub n_top_genes: usize,
    /// Layer with the counts (default: X).
    pub layer: Option<String>,
    /// Seed of the randomized PCA.
    pub seed: u64,
}

impl Default for PcaFit {
    fn default() -> Self {
        PcaFit { n_comps: 50, n_top_genes: 3000, layer: None, seed: 0 }
    }
}

/// PCA of log-normalised counts, fitted on one dataset (see the module docs).
#[derive(Debug, Clone)]
pub struct PcaModel {
    manifest: Manifest,
    genes: Vec<String>,
    /// Vocabulary positions of the genes PCA uses.
    hvg: Vec<usize>,
    target_sum: f64,
    /// Per-gene means subtracted (over `hvg`).
    mean: Vec<f64>,
    /// Loadings, `k × hvg` row-major.
    components: Dense<f32>,
    /// Logistic regression on the embedding (a fitted classifier).
    logreg: Option<LogisticRegression>,
}

impl PcaModel {
    /// Fits the recipe on the counts of `adata` (X or `opts.layer`); the vocabulary is the var
    /// index of `adata`.
    pub fn fit(adata: &AnnData, opts: &PcaFit) -> Result<Self> {
        let counts = sclm_model::cells::counts_matrix(adata, opts.layer.as_deref())?;
        let (n, g) = (counts.nrows, counts.ncols);
        if n < 3 || g < 2 {
            return input(format!("the PCA baseline needs at least 3 cells and 2 genes, got {n} × {g}"));
        }
        let mut x = Matrix::Csr(counts.into_owned());
        let target_sum = sclm_preprocess::normalize_total(&mut x, &NormalizeOptions::default())?;
        sclm_preprocess::log1p(&mut x)?;
        let hvg: Vec<usize> = if opts.n_top_genes < g {
            let o = HvgOptions { n_top_genes: Some(opts.n_top_genes), ..Default::default() };
            let r = sclm_preprocess::hvg::hvg_seurat(&x, &[(0..n).collect()], &o, None)?;
            (0..g).filter(|&j| r.highly_variable[j]).collect()
        } else {
            (0..g).collect()
        };
        let xs = if hvg.len() == g { x } else { x.select_cols(&hvg) };
        let k = opts.n_comps.min(n - 1).min(hvg.len()).max(1);
        let p = sclm_preprocess::pca(&xs, k, opts.seed, &PcaOptions::default())?;
        let mean = p.mean.unwrap_or_else(|| vec![0.0; hvg.len()]);
        let registry = Registry {
            input: "raw_counts".into(),
            transform: "normalize_total+log1p".into(),
            library_size_normalization: true,
            gene_id: "var_index".into(),
            group_key: String::new(),
            ..Default::default()
        };
        Ok(PcaModel {
            manifest: Manifest::new(PCA_FAMILY, ModelKind::Pretrained, registry),
            genes: adata.var.index.clone(),
            hvg,
            target_sum,
            mean,
            components: p.components,
            logreg: None,
        })
    }

    /// An unfitted model over `genes` ([`CellModel::fit_reconstruction`] fits it).
    pub fn unfitted(genes: Vec<String>) -> Self {
        PcaModel {
            manifest: Manifest::new(
                PCA_FAMILY,
                ModelKind::Pretrained,
                Registry { group_key: String::new(), ..Default::default() },
            ),
            genes,
            hvg: Vec::new(),
            target_sum: 1.0,
            mean: Vec::new(),
            components: Dense::zeros(0, 0),
            logreg: None,
        }
    }

    /// Expression reconstructed from the components: each cell's log-normalised values over
    /// the fitted genes it measures are projected by least squares onto the components
    /// (`z = (V_o V_oᵀ)⁻¹ V_o (x_o − μ_o)`, so genes a dataset lacks are not taken as zeros),
    /// then `x̂ = μ + zV`, back to fractions over the dataset's genes (or all fitted genes).
    fn reconstruct_fractions(&self, data: &AnnData, opts: &ReconstructOptions) -> Result<Dense<f32>> {
        if self.components.nrows == 0 {
            return input("the PCA model is not fitted");
        }
        let counts = sclm_model::cells::counts_matrix(data, opts.layer.as_deref())?;
        let (mapping, _) = sclm_model::GeneMapping::for_dataset(&self.genes, &data.var, None)?;
        let k = self.components.nrows;
        let h = self.hvg.len();
        let mut pos = vec![usize::MAX; self.genes.len()];
        for (i, &j) in self.hvg.iter().enumerate() {
            pos[j] = i;
        }
        let panel = mapping.panel();
        let observed: Vec<usize> =
            panel.iter().filter_map(|&v| (pos[v as usize] != usize::MAX).then_some(pos[v as usize])).collect();
        // Normal matrix over the observed genes (shared by every cell of the dataset).
        let mut a = vec![0f64; k * k];
        for p in 0..k {
            for q in 0..=p {
                let (rp, rq) = (self.components.row(p), self.components.row(q));
                let v: f64 = observed.iter().map(|&i| rp[i] as f64 * rq[i] as f64).sum();
                a[p * k + q] = v;
                a[q * k + p] = v;
            }
            a[p * k + p] += 1e-6;
        }
        let chol = cholesky(&a, k)
            .ok_or_else(|| crate::TaskError::Input("the PCA components are degenerate on the observed genes".into()))?;
        let in_out: Vec<bool> =
            (0..self.genes.len()).map(|v| opts.whole_vocabulary || panel.binary_search(&(v as u32)).is_ok()).collect();
        let n = counts.nrows;
        let mut out = Dense::zeros(n, self.genes.len());
        let mut buf = Vec::new();
        let mut x = vec![0f64; h];
        for r in 0..n {
            mapping.remap_row(&counts, r, &mut buf);
            let total: f64 = buf.iter().map(|e| e.1 as f64).sum();
            let scale = if total > 0.0 { self.target_sum / total } else { 0.0 };
            x.iter_mut().for_each(|v| *v = 0.0);
            for &(v, c) in &buf {
                let p = pos[v as usize];
                if p != usize::MAX {
                    x[p] = (c as f64 * scale).ln_1p();
                }
            }
            let mut b = vec![0f64; k];
            for (p, bp) in b.iter_mut().enumerate() {
                let row = self.components.row(p);
                *bp = observed.iter().map(|&i| (x[i] - self.mean[i]) * row[i] as f64).sum();
            }
            let z = chol_solve(&chol, k, &b);
            let dst = out.row_mut(r);
            let mut sum = 0f64;
            for (i, &j) in self.hvg.iter().enumerate() {
                if !in_out[j] {
                    continue;
                }
                let xh = self.mean[i] + (0..k).map(|p| z[p] * self.components.get(p, i) as f64).sum::<f64>();
                let y = xh.max(0.0).exp_m1();
                dst[j] = y as f32;
                sum += y;
            }
            if sum > 0.0 {
                dst.iter_mut().for_each(|v| *v = (*v as f64 / sum) as f32);
            }
        }
        Ok(out)
    }

    /// Number of genes PCA uses.
    pub fn n_genes_used(&self) -> usize {
        self.hvg.len()
    }

    /// The embedding of cells given over the vocabulary (`cells × k`).
    fn project(&self, counts: &CsrRows<'_>) -> Vec<f32> {
        let k = self.components.nrows;
        let h = self.hvg.len();
        let mut pos = vec![usize::MAX; self.genes.len()];
        for (i, &j) in self.hvg.iter().enumerate() {
            pos[j] = i;
        }
        let n = counts.n_rows();
        let mut out = vec![0f32; n * k];
        let mut x = vec![0f64; h];
        for r in 0..n {
            let (a, b) = (counts.indptr[r], counts.indptr[r + 1]);
            let (idx, val) = (&counts.indices[a..b], &counts.data[a..b]);
            let total: f64 = val.iter().map(|&v| v as f64).sum();
            let scale = if total > 0.0 { self.target_sum / total } else { 0.0 };
            x.iter_mut().zip(&self.mean).for_each(|(v, m)| *v = -m);
            for (&j, &v) in idx.iter().zip(val) {
                let p = pos[j as usize];
                if p != usize::MAX {
                    x[p] += (v as f64 * scale).ln_1p();
                }
            }
            for c in 0..k {
                let comp = self.components.row(c);
                out[r * k + c] = x.iter().zip(comp).map(|(a, &b)| a * b as f64).sum::<f64>() as f32;
            }
        }
        out
    }
}

struct Project<'m>(&'m PcaModel);

impl PieceEmbedder for Project<'_> {
    fn embed_piece(&self, counts: &CsrRows<'_>, _coords: Option<&[[f32; 2]]>) -> sclm_model::Result<Vec<f32>> {
        Ok(self.0.project(counts))
    }
}

impl PieceClassifier for Project<'_> {
    fn probabilities(&self, counts: &CsrRows<'_>, _coords: Option<&[[f32; 2]]>) -> sclm_model::Result<Vec<f32>> {
        let lr = self.0.logreg.as_ref().ok_or_else(|| ModelError::Config("the PCA model has no classifier".into()))?;
        let z = self.0.project(counts);
        let d = Dense { nrows: counts.n_rows(), ncols: self.0.components.nrows, data: z };
        let p = lr.predict_proba(&d).map_err(|e| ModelError::Input(e.to_string()))?;
        Ok(p.into_iter().map(|v| v as f32).collect())
    }
}

impl CellModel for PcaModel {
    fn family(&self) -> &str {
        PCA_FAMILY
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn genes(&self) -> &[String] {
        &self.genes
    }

    fn embedding_dim(&self) -> usize {
        self.components.nrows
    }

    fn cells_interact(&self) -> bool {
        false
    }

    fn embedder(&self) -> sclm_model::Result<Box<dyn PieceEmbedder + '_>> {
        Ok(Box::new(Project(self)))
    }

    fn classifier(&self) -> sclm_model::Result<Box<dyn PieceClassifier + '_>> {
        if self.logreg.is_none() {
            return Err(ModelError::Unsupported {
                family: PCA_FAMILY.into(),
                what: "classify cells before fine-tuning".into(),
            });
        }
        Ok(Box::new(Project(self)))
    }

    /// Logistic regression (scikit-learn's defaults: C = 1, L-BFGS) on the PCA embedding of
    /// the training cells; `recipe` and `run` do not apply (a convex fit, no epochs).
    fn finetune_classifier(
        &self,
        cells: &LabeledCells<'_>,
        _recipe: &FinetuneRecipe,
        _run: &RunOptions,
        _device: &Device,
        _progress: &mut dyn Progress,
    ) -> sclm_model::Result<(Box<dyn CellModel>, FitSummary)> {
        let opts = EmbedOptions { group_key: Some(String::new()), ..cells.opts.clone() };
        let (z, _) = sclm_model::embed(self, cells.adata, &opts, &mut |_| {})?;
        let rows: Vec<usize> = cells.train.iter().copied().filter(|&r| cells.labels[r].is_some()).collect();
        let y: Vec<String> = rows.iter().map(|&r| cells.classes[cells.labels[r].unwrap_or(0)].clone()).collect();
        let lr = LogisticRegression::fit(&z.select_rows(&rows), &y, &LogRegOptions::default())
            .map_err(|e| ModelError::Input(e.to_string()))?;
        let mut m = self.clone();
        m.manifest.kind = ModelKind::Classifier;
        m.manifest.classes = lr.classes.clone();
        m.logreg = Some(lr);
        let summary = FitSummary { epochs: 0, steps: 0, best: None, stopped_early: false };
        Ok((Box::new(m), summary))
    }

    /// Fits PCA on `datasets[0]` (every gene; the reference in spatial imputation), with
    /// `min(30, cells − 1)` components; `fit`'s epochs and rates do not apply.
    fn fit_reconstruction(
        &self,
        datasets: &[(String, &AnnData)],
        fit: &ReconstructionFit,
        _device: &Device,
        _progress: &mut dyn Progress,
    ) -> sclm_model::Result<Box<dyn CellModel>> {
        let Some((_, first)) = datasets.first() else {
            return Err(ModelError::Input("no data to fit PCA on".into()));
        };
        let sub = restrict(first, &self.genes)?;
        let opts = PcaFit { n_comps: 30, n_top_genes: usize::MAX, layer: fit.cells.layer.clone(), seed: fit.seed };
        let m = PcaModel::fit(&sub, &opts).map_err(|e| ModelError::Input(e.to_string()))?;
        Ok(Box::new(m))
    }

    fn reconstruct(
        &self,
        datasets: &[(String, &AnnData)],
        which: usize,
        opts: &ReconstructOptions,
    ) -> sclm_model::Result<Dense<f32>> {
        let Some((_, data)) = datasets.get(which) else {
            return Err(ModelError::Input(format!("dataset {which} of {}", datasets.len())));
        };
        self.reconstruct_fractions(data, opts).map_err(|e| ModelError::Input(e.to_string()))
    }

    /// A linear co-expression predictor: PCA (20 components) of the log-normalised control and
    /// training cells; a perturbation of gene g lowers g by the mean knock-down seen in the
    /// training conditions (Δ on the log scale) and moves every other gene by the projection of
    /// that change on the components (`ĉ = c + VᵀV·Δe_g`, with g itself set to `c_g + Δ`).
    /// `fit`'s epochs and rates do not apply.
    fn fit_perturbation(
        &self,
        cells: &PerturbationCells<'_>,
        fit: &ReconstructionFit,
        _device: &Device,
        _progress: &mut dyn Progress,
    ) -> sclm_model::Result<Box<dyn PerturbationPredictor>> {
        Ok(Box::new(PcaPerturbation::fit(cells, fit.seed).map_err(|e| ModelError::Input(e.to_string()))?))
    }

    fn save(&self, _dir: &Path) -> sclm_model::Result<()> {
        Err(ModelError::Unsupported {
            family: PCA_FAMILY.into(),
            what: "be saved (the baseline is refitted on each dataset)".into(),
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `adata` restricted to (and ordered as) the genes `genes` it has by name.
fn restrict(adata: &AnnData, genes: &[String]) -> sclm_model::Result<AnnData> {
    let (m, _) = sclm_model::GeneMapping::for_dataset(genes, &adata.var, None)?;
    let cols: Vec<usize> = m.vocab_to_col().iter().flatten().copied().collect();
    let mut sub = adata.select_vars(&cols);
    sub.var.index =
        m.vocab_to_col().iter().enumerate().filter(|(_, c)| c.is_some()).map(|(v, _)| genes[v].clone()).collect();
    Ok(sub)
}

/// Lower Cholesky factor of the `k × k` symmetric matrix `a` (row-major), `None` when it is not
/// positive definite.
fn cholesky(a: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            let s: f64 = (0..j).map(|p| l[i * k + p] * l[j * k + p]).sum();
            if i == j {
                let d = a[i * k + i] - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i * k + i] = d.sqrt();
            } else {
                l[i * k + j] = (a[i * k + j] - s) / l[j * k + j];
            }
        }
    }
    Some(l)
}

/// Solves `L Lᵀ z = b`.
fn chol_solve(l: &[f64], k: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0f64; k];
    for i in 0..k {
        y[i] = (b[i] - (0..i).map(|p| l[i * k + p] * y[p]).sum::<f64>()) / l[i * k + i];
    }
    let mut z = vec![0f64; k];
    for i in (0..k).rev() {
        z[i] = (y[i] - (i + 1..k).map(|p| l[p * k + i] * z[p]).sum::<f64>()) / l[i * k + i];
    }
    z
}

/// The PCA baseline as a [`Family`]: `fresh` gives an unfitted model that
/// [`CellModel::fit_reconstruction`] fits, so protocols run it as they run a fresh network.
#[derive(Debug, Clone, Copy, Default)]
pub struct PcaFamily;

/// The PCA baseline family.
pub static PCA: PcaFamily = PcaFamily;

impl Family for PcaFamily {
    fn name(&self) -> &'static str {
        PCA_FAMILY
    }

    fn load(&self, dir: &Path, _manifest: Manifest, _device: &Device) -> sclm_model::Result<Box<dyn CellModel>> {
        Err(ModelError::Unsupported {
            family: PCA_FAMILY.into(),
            what: format!("be loaded from {} (it is never saved)", dir.display()),
        })
    }

    fn fresh(&self, genes: Vec<String>, _device: &Device) -> sclm_model::Result<Box<dyn CellModel>> {
        Ok(Box::new(PcaModel::unfitted(genes)))
    }
}

/// The PCA co-expression perturbation predictor (see [`PcaModel`]'s `fit_perturbation`).
pub struct PcaPerturbation {
    names: Vec<String>,
    control_mean: Vec<f64>,
    /// Loadings, `k × genes`.
    components: Dense<f32>,
    /// Mean change of a knocked-down gene on the log scale in the training conditions.
    knockdown: f64,
}

impl PcaPerturbation {
    fn fit(cells: &PerturbationCells<'_>, seed: u64) -> Result<Self> {
        let x = sclm_model::cells::counts_matrix(cells.adata, None)?;
        let g = x.ncols;
        let lognorm_row = |r: usize, out: &mut [f64]| {
            out.iter_mut().for_each(|v| *v = 0.0);
            let (idx, val) = x.row(r);
            let total: f64 = val.iter().map(|&v| v as f64).sum();
            if total > 0.0 {
                for (&j, &v) in idx.iter().zip(val) {
                    out[j as usize] = (v as f64 / total * 1e4).ln_1p();
                }
            }
        };
        let mean_of = |rows: &[usize]| crate::perturbation::mean_lognorm(&x, rows);
        let control_mean = mean_of(cells.controls);
        let mut deltas = Vec::new();
        for (genes, rows) in cells.train {
            let m = mean_of(rows);
            for name in genes {
                if let Some(j) = cells.adata.var.index.iter().position(|n| n == name) {
                    deltas.push(m[j] - control_mean[j]);
                }
            }
        }
        if deltas.is_empty() {
            return input("the PCA perturbation baseline needs training conditions naming genes of the data");
        }
        let knockdown = deltas.iter().sum::<f64>() / deltas.len() as f64;
        let rows: Vec<usize> = cells.controls.iter().chain(cells.train.iter().flat_map(|(_, r)| r)).copied().collect();
        let mut d = Dense::zeros(rows.len(), g);
        let mut buf = vec![0f64; g];
        for (i, &r) in rows.iter().enumerate() {
            lognorm_row(r, &mut buf);
            d.row_mut(i).iter_mut().zip(&buf).for_each(|(a, &b)| *a = b as f32);
        }
        let k = 20.min(rows.len().saturating_sub(1)).min(g).max(1);
        let p = sclm_preprocess::pca(&Matrix::Dense(d), k, seed, &PcaOptions::default())?;
        Ok(PcaPerturbation { names: cells.adata.var.index.clone(), control_mean, components: p.components, knockdown })
    }
}

impl PerturbationPredictor for PcaPerturbation {
    fn predict_mean(&self, genes: &[String]) -> sclm_model::Result<Vec<f32>> {
        let mut out = self.control_mean.clone();
        let k = self.components.nrows;
        for name in genes {
            let j = self
                .names
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| ModelError::Input(format!("'{name}' is not a gene of the data")))?;
            // Projection of Δ·e_j on the components, back to gene space.
            for p in 0..k {
                let w = self.components.get(p, j) as f64 * self.knockdown;
                for (o, &c) in out.iter_mut().zip(self.components.row(p)) {
                    *o += w * c as f64;
                }
            }
            out[j] = self.control_mean[j] + self.knockdown;
        }
        Ok(out.into_iter().map(|v| v.max(0.0) as f32).collect())
    }
}
