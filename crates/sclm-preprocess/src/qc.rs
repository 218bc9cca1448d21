//! Quality-control metrics and cell / gene filters (`sc.pp.calculate_qc_metrics`,
//! `sc.pp.filter_cells`, `sc.pp.filter_genes`).

use sclm_data::{AnnData, Column, Matrix};
use serde::{Deserialize, Serialize};

use crate::stats::{col_stats, row_sums};
use crate::{invalid, Result};

/// Options of [`calculate_qc_metrics`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QcOptions {
    /// Gene-name prefixes that mark mitochondrial genes (default `["MT-", "mt-"]`).
    pub mito_prefixes: Vec<String>,
    /// Also write the `log1p_*` columns (default `true`, as scanpy).
    pub log1p: bool,
}

impl Default for QcOptions {
    fn default() -> Self {
        QcOptions { mito_prefixes: vec!["MT-".into(), "mt-".into()], log1p: true }
    }
}

/// Per-cell and per-gene QC metrics, named as scanpy names them.
#[derive(Debug, Clone, PartialEq)]
pub struct QcMetrics {
    /// Per cell: sum of the values (`total_counts`).
    pub total_counts: Vec<f64>,
    /// Per cell: number of genes with a non-zero value (`n_genes_by_counts`).
    pub n_genes_by_counts: Vec<u32>,
    /// Per cell: sum over mitochondrial genes (`total_counts_mt`).
    pub total_counts_mt: Vec<f64>,
    /// Per cell: percentage of the counts in mitochondrial genes (`pct_counts_mt`).
    pub pct_counts_mt: Vec<f64>,
    /// Per gene: number of cells with a non-zero value (`n_cells_by_counts`).
    pub n_cells_by_counts: Vec<u32>,
    /// Per gene: sum of the values (`total_counts`).
    pub gene_total_counts: Vec<f64>,
    /// Per gene: mean value over all cells (`mean_counts`).
    pub mean_counts: Vec<f64>,
    /// Per gene: percentage of cells where the gene is zero (`pct_dropout_by_counts`).
    pub pct_dropout_by_counts: Vec<f64>,
    /// Which genes were counted as mitochondrial.
    pub mito: Vec<bool>,
}

/// Marks the genes whose name starts with one of `prefixes`.
pub fn mito_mask(gene_names: &[String], prefixes: &[String]) -> Vec<bool> {
    gene_names.iter().map(|g| prefixes.iter().any(|p| g.starts_with(p.as_str()))).collect()
}

/// QC metrics of a matrix; `mito` marks mitochondrial genes.
pub fn qc_metrics(x: &Matrix, mito: &[bool]) -> Result<QcMetrics> {
    let (n, g) = x.shape();
    if mito.len() != g {
        return Err(invalid("calculate_qc_metrics", format!("mito mask has {} entries for {g} genes", mito.len())));
    }
    let (total_counts, n_genes_by_counts) = row_sums(x);
    let total_counts_mt: Vec<f64> = {
        use rayon::prelude::*;
        (0..n)
            .into_par_iter()
            .map(|i| {
                let mut s = 0f64;
                crate::stats::for_row(x, i, |j, v| {
                    if mito[j] {
                        s += v as f64
                    }
                });
                s
            })
            .collect()
    };
    let pct_counts_mt = total_counts_mt
        .iter()
        .zip(&total_counts)
        .map(|(m, t)| if *t > 0.0 { 100.0 * m / t } else { f64::NAN })
        .collect();
    let cs = col_stats(x, None);
    let nf = n.max(1) as f64;
    Ok(QcMetrics {
        total_counts,
        n_genes_by_counts,
        total_counts_mt,
        pct_counts_mt,
        pct_dropout_by_counts: cs.nnz.iter().map(|&k| 100.0 * (1.0 - k as f64 / nf)).collect(),
        mean_counts: cs.sum.iter().map(|s| s / nf).collect(),
        n_cells_by_counts: cs.nnz,
        gene_total_counts: cs.sum,
        mito: mito.to_vec(),
    })
}

/// `sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None)`: writes
/// `var['mt']`, obs `n_genes_by_counts`, `total_counts`, `total_counts_mt`, `pct_counts_mt`
/// (+ `log1p_n_genes_by_counts`, `log1p_total_counts`, `log1p_total_counts_mt`) and var
/// `n_cells_by_counts`, `mean_counts`, `pct_dropout_by_counts`, `total_counts`
/// (+ `log1p_mean_counts`, `log1p_total_counts`).
pub fn calculate_qc_metrics(adata: &mut AnnData, opts: &QcOptions) -> Result<QcMetrics> {
    adata.validate()?;
    let mito = mito_mask(&adata.var.index, &opts.mito_prefixes);
    let m = qc_metrics(&adata.x, &mito)?;
    let f32col = |v: &[f64]| Column::F32(v.iter().map(|&x| x as f32).collect());
    let ln1p = |v: &[f64]| Column::F64(v.iter().map(|&x| x.ln_1p()).collect());
    let ngenes: Vec<f64> = m.n_genes_by_counts.iter().map(|&k| k as f64).collect();
    let obs = &mut adata.obs;
    obs.insert("n_genes_by_counts", Column::I32(m.n_genes_by_counts.iter().map(|&k| k as i32).collect()))?;
    if opts.log1p {
        obs.insert("log1p_n_genes_by_counts", ln1p(&ngenes))?;
    }
    obs.insert("total_counts", f32col(&m.total_counts))?;
    if opts.log1p {
        obs.insert("log1p_total_counts", ln1p(&m.total_counts))?;
    }
    obs.insert("total_counts_mt", f32col(&m.total_counts_mt))?;
    if opts.log1p {
        obs.insert("log1p_total_counts_mt", ln1p(&m.total_counts_mt))?;
    }
    obs.insert("pct_counts_mt", Column::F64(m.pct_counts_mt.clone()))?;
    let var = &mut adata.var;
    var.insert("mt", Column::Bool(mito))?;
    var.insert("n_cells_by_counts", Column::I32(m.n_cells_by_counts.iter().map(|&k| k as i32).collect()))?;
    var.insert("mean_counts", f32col(&m.mean_counts))?;
    if opts.log1p {
        var.insert("log1p_mean_counts", ln1p(&m.mean_counts))?;
    }
    var.insert("pct_dropout_by_counts", Column::F64(m.pct_dropout_by_counts.clone()))?;
    var.insert("total_counts", f32col(&m.gene_total_counts))?;
    if opts.log1p {
        var.insert("log1p_total_counts", ln1p(&m.gene_total_counts))?;
    }
    Ok(m)
}

/// Thresholds of [`filter_cells`]; a cell is kept when it passes all that are set.
/// (scanpy accepts one threshold per call; several here are combined with AND.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CellFilter {
    /// Minimum total counts.
    pub min_counts: Option<f64>,
    /// Minimum number of expressed genes.
    pub min_genes: Option<u32>,
    /// Maximum total counts.
    pub max_counts: Option<f64>,
    /// Maximum number of expressed genes.
    pub max_genes: Option<u32>,
}

/// Thresholds of [`filter_genes`]; a gene is kept when it passes all that are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeneFilter {
    /// Minimum total counts.
    pub min_counts: Option<f64>,
    /// Minimum number of cells expressing the gene.
    pub min_cells: Option<u32>,
    /// Maximum total counts.
    pub max_counts: Option<f64>,
    /// Maximum number of cells expressing the gene.
    pub max_cells: Option<u32>,
}

fn pass(count: f64, n: u32, min_c: Option<f64>, min_n: Option<u32>, max_c: Option<f64>, max_n: Option<u32>) -> bool {
    min_c.is_none_or(|t| count >= t)
        && min_n.is_none_or(|t| n >= t)
        && max_c.is_none_or(|t| count <= t)
        && max_n.is_none_or(|t| n <= t)
}

/// Indices of the cells that pass `f`, with the per-cell totals and gene counts.
pub fn filter_cells_mask(x: &Matrix, f: &CellFilter) -> (Vec<usize>, Vec<f64>, Vec<u32>) {
    let (tot, ng) = row_sums(x);
    let keep =
        (0..tot.len()).filter(|&i| pass(tot[i], ng[i], f.min_counts, f.min_genes, f.max_counts, f.max_genes)).collect();
    (keep, tot, ng)
}

/// Indices of the genes that pass `f`, with the per-gene totals and cell counts.
pub fn filter_genes_mask(x: &Matrix, f: &GeneFilter) -> (Vec<usize>, Vec<f64>, Vec<u32>) {
    let cs = col_stats(x, None);
    let keep = (0..cs.sum.len())
        .filter(|&j| pass(cs.sum[j], cs.nnz[j], f.min_counts, f.min_cells, f.max_counts, f.max_cells))
        .collect();
    (keep, cs.sum, cs.nnz)
}

/// `sc.pp.filter_cells`: keeps the passing cells in place, writes obs `n_genes` (when a gene
/// threshold is set) and `n_counts` (when a count threshold is set) as scanpy does, and
/// returns the kept indices (into the input).
pub fn filter_cells(adata: &mut AnnData, f: &CellFilter) -> Result<Vec<usize>> {
    adata.validate()?;
    let (keep, tot, ng) = filter_cells_mask(&adata.x, f);
    if f.min_genes.is_some() || f.max_genes.is_some() {
        adata.obs.insert("n_genes", Column::I64(ng.iter().map(|&k| k as i64).collect()))?;
    }
    if f.min_counts.is_some() || f.max_counts.is_some() {
        adata.obs.insert("n_counts", Column::F32(tot.iter().map(|&k| k as f32).collect()))?;
    }
    if keep.len() != adata.n_obs() {
        *adata = adata.select_obs(&keep);
    }
    Ok(keep)
}

/// `sc.pp.filter_genes`: keeps the passing genes in place, writes var `n_cells` / `n_counts`
/// as scanpy does, and returns the kept indices (into the input).
pub fn filter_genes(adata: &mut AnnData, f: &GeneFilter) -> Result<Vec<usize>> {
    adata.validate()?;
    let (keep, tot, nc) = filter_genes_mask(&adata.x, f);
    if f.min_cells.is_some() || f.max_cells.is_some() {
        adata.var.insert("n_cells", Column::I64(nc.iter().map(|&k| k as i64).collect()))?;
    }
    if f.min_counts.is_some() || f.max_counts.is_some() {
        adata.var.insert("n_counts", Column::F32(tot.iter().map(|&k| k as f32).collect()))?;
    }
    if keep.len() != adata.n_vars() {
        *adata = adata.select_vars(&keep);
    }
    Ok(keep)
}
