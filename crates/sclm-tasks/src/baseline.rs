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
    CellModel, EmbedOptions, FinetuneRecipe, LabeledCells, Manifest, ModelError, ModelKind, PieceClassifier,
    PieceEmbedder, Registry, RunOptions,
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
            return Err(ModelError::Unsupported { family: PCA_FAMILY.into(), what: "classify cells before fine-tuning".into() });
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

    fn save(&self, _dir: &Path) -> sclm_model::Result<()> {
        Err(ModelError::Unsupported { family: PCA_FAMILY.into(), what: "be saved (the baseline is refitted on each dataset)".into() })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
