//! `sc.pp.highly_variable_genes`, flavors `seurat` (log data) and `seurat_v3` (counts).

use sclm_data::{AnnData, Column, Matrix, Value};
use serde::{Deserialize, Serialize};

use crate::loess::{loess_fit, LoessOptions, Surface};
use crate::stats::{col_stats, for_row, ordered_sum};
use crate::{invalid, Result};

/// Which HVG method to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HvgFlavor {
    /// Dispersion of log-normalised data, normalised within 20 bins of mean expression
    /// (Seurat's `mean.var.plot`); expects log1p data.
    #[default]
    Seurat,
    /// Variance of standardised counts with a LOESS-regularised standard deviation
    /// (Seurat's `vst`); expects raw counts.
    SeuratV3,
}

impl HvgFlavor {
    /// The name scanpy uses.
    pub fn name(&self) -> &'static str {
        match self {
            HvgFlavor::Seurat => "seurat",
            HvgFlavor::SeuratV3 => "seurat_v3",
        }
    }
}

/// Options of [`highly_variable_genes`] (defaults as scanpy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HvgOptions {
    /// Method (default `seurat`).
    pub flavor: HvgFlavor,
    /// Number of genes to select; `seurat_v3` defaults it to 2000, `seurat` uses the
    /// cutoffs below when it is `None`.
    pub n_top_genes: Option<usize>,
    /// `seurat` cutoff: minimum log1p mean (default 0.0125; may be `-inf`).
    #[serde(with = "float_or_inf")]
    pub min_mean: f64,
    /// `seurat` cutoff: maximum log1p mean (default 3; may be infinite, stored as `"inf"`).
    #[serde(with = "float_or_inf")]
    pub max_mean: f64,
    /// `seurat` cutoff: minimum normalised dispersion (default 0.5).
    pub min_disp: f64,
    /// `seurat` cutoff: maximum normalised dispersion (default `None` = no bound, scanpy's +∞).
    pub max_disp: Option<f64>,
    /// `seurat`: number of mean bins (default 20; from 1 to [`MAX_HVG_BINS`]). A larger
    /// value is refused, not clamped: scanpy hands it to `pandas.cut`, which builds every bin
    /// edge, so there is no scanpy behaviour to follow, and this implementation also
    /// allocates per bin.
    pub n_bins: usize,
    /// `seurat_v3`: LOESS span (default 0.3).
    pub span: f64,
    /// obs column with batch labels; genes are selected within each batch and merged.
    pub batch_key: Option<String>,
    /// Keep only the selected genes (default false).
    pub subset: bool,
    /// Use this layer instead of `X` (e.g. `counts` for `seurat_v3` after normalisation).
    pub layer: Option<String>,
}

/// Largest `n_bins` of [`HvgOptions`]: far more bins than any dataset has genes.
pub const MAX_HVG_BINS: usize = 1_000_000;

impl HvgOptions {
    /// Checks the options before any data is touched: `n_bins` in 1..=[`MAX_HVG_BINS`],
    /// `span` finite and positive. Errors name the step and the key.
    pub fn validate(&self) -> Result<()> {
        let step = format!("highly_variable_genes({})", self.flavor.name());
        if self.n_bins == 0 || self.n_bins > MAX_HVG_BINS {
            return Err(invalid(&step, format!("n_bins = {} must lie in 1..={MAX_HVG_BINS}", self.n_bins)));
        }
        if !(self.span.is_finite() && self.span > 0.0) {
            return Err(invalid(&step, format!("span = {} must be finite and positive", self.span)));
        }
        Ok(())
    }
}

impl Default for HvgOptions {
    fn default() -> Self {
        HvgOptions {
            flavor: HvgFlavor::Seurat,
            n_top_genes: None,
            min_mean: 0.0125,
            max_mean: 3.0,
            min_disp: 0.5,
            max_disp: None,
            n_bins: 20,
            span: 0.3,
            batch_key: None,
            subset: false,
            layer: None,
        }
    }
}

/// Serde for an `f64` that may be infinite (JSON has no infinity): finite values as
/// numbers, infinities as the strings `"inf"` / `"-inf"`.
mod float_or_inf {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            Repr::Num(*v).serialize(s)
        } else if v.is_nan() {
            Repr::Text("nan".into()).serialize(s)
        } else {
            Repr::Text(if *v > 0.0 { "inf" } else { "-inf" }.into()).serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Text(t) => match t.as_str() {
                "inf" | "+inf" | "infinity" => Ok(f64::INFINITY),
                "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!("expected a number or \"inf\", found \"{other}\""))),
            },
        }
    }
}

/// Per-gene results, named after the `var` columns scanpy writes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HvgResult {
    /// `highly_variable`.
    pub highly_variable: Vec<bool>,
    /// `means` (log1p of the mean of expm1(X) for `seurat`, mean counts for `seurat_v3`).
    pub means: Vec<f64>,
    /// `dispersions` (`seurat`): log of variance / mean.
    pub dispersions: Option<Vec<f64>>,
    /// `dispersions_norm` (`seurat`).
    pub dispersions_norm: Option<Vec<f64>>,
    /// `variances` (`seurat_v3`).
    pub variances: Option<Vec<f64>>,
    /// `variances_norm` (`seurat_v3`; averaged over batches).
    pub variances_norm: Option<Vec<f64>>,
    /// `highly_variable_rank` (`seurat_v3`; median over batches of the rank, NaN outside the top).
    pub highly_variable_rank: Option<Vec<f32>>,
    /// `highly_variable_nbatches` (with a batch key): in how many batches the gene is selected.
    pub highly_variable_nbatches: Option<Vec<u32>>,
}

/// Batch codes of each cell from an obs column, or `None`.
fn batch_codes(adata: &AnnData, key: Option<&str>) -> Result<Option<(Vec<usize>, usize)>> {
    let Some(key) = key else { return Ok(None) };
    let labels = adata.obs_column(key)?.to_labels();
    let mut cats: Vec<String> = labels.clone();
    cats.sort();
    cats.dedup();
    let codes = labels.iter().map(|l| cats.binary_search(l).unwrap_or(0)).collect();
    Ok(Some((codes, cats.len())))
}

fn batch_rows(codes: &Option<(Vec<usize>, usize)>, n: usize) -> Vec<Vec<usize>> {
    match codes {
        None => vec![(0..n).collect()],
        Some((c, nb)) => {
            let mut rows = vec![Vec::new(); *nb];
            for (i, &b) in c.iter().enumerate() {
                rows[b].push(i);
            }
            rows
        }
    }
}

/// Checks that a matrix holds raw counts (non-negative integers), naming the step.
pub fn require_counts(x: &Matrix, step: &str) -> Result<()> {
    if let Some(v) = x.values().iter().find(|&&v| !(v >= 0.0 && v.fract() == 0.0)) {
        return Err(invalid(
            step,
            format!("expects raw counts (non-negative integers) but X holds {v}; run it before normalize_total/log1p or give the counts layer"),
        ));
    }
    Ok(())
}

/// `flavor='seurat_v3'` on a count matrix. `batches` gives the rows of each batch.
pub fn hvg_seurat_v3(x: &Matrix, batches: &[Vec<usize>], n_top_genes: usize, span: f64) -> Result<HvgResult> {
    let step = "highly_variable_genes(seurat_v3)";
    require_counts(x, step)?;
    let (n, g) = x.shape();
    if n < 2 {
        return Err(invalid(step, format!("needs at least 2 cells, got {n}")));
    }
    let (means, variances) = col_stats(x, None).mean_var(n);
    let mut norm_vars: Vec<Vec<f64>> = Vec::with_capacity(batches.len());
    for rows in batches {
        let nb = rows.len();
        if nb < 2 {
            return Err(invalid(step, format!("a batch has {nb} cell(s); each batch needs at least 2")));
        }
        let (mean, var) = col_stats(x, Some(rows)).mean_var(nb);
        let idx: Vec<usize> = (0..g).filter(|&j| var[j] > 0.0).collect();
        let lx: Vec<f64> = idx.iter().map(|&j| mean[j].log10()).collect();
        let ly: Vec<f64> = idx.iter().map(|&j| var[j].log10()).collect();
        let fitted = loess_fit(&lx, &ly, &LoessOptions { span, degree: 2, surface: Surface::Interpolate, cell: 0.2 })
            .map_err(|e| invalid(step, format!("LOESS of log variance on log mean failed: {e}")))?;
        let mut est = vec![0f64; g];
        for (k, &j) in idx.iter().enumerate() {
            est[j] = fitted[k];
        }
        let reg_std: Vec<f64> = est.iter().map(|e| 10f64.powf(*e).sqrt()).collect();
        let vmax = (nb as f64).sqrt();
        let clip: Vec<f64> = (0..g).map(|j| reg_std[j] * vmax + mean[j]).collect();
        let (s, s2) = ordered_sum(
            rows,
            2048,
            (vec![0f64; g], vec![0f64; g]),
            |chunk| {
                let (mut s, mut s2) = (vec![0f64; g], vec![0f64; g]);
                for &i in chunk {
                    for_row(x, i, |j, v| {
                        let e = (v as f64).min(clip[j]);
                        s[j] += e;
                        s2[j] += e * e;
                    });
                }
                (s, s2)
            },
            |(mut a, mut a2), (b, b2)| {
                for j in 0..g {
                    a[j] += b[j];
                    a2[j] += b2[j];
                }
                (a, a2)
            },
        );
        let nbf = nb as f64;
        norm_vars.push(
            (0..g)
                .map(|j| {
                    (1.0 / ((nbf - 1.0) * reg_std[j] * reg_std[j]))
                        * (nbf * mean[j] * mean[j] + s2[j] - 2.0 * s[j] * mean[j])
                })
                .collect(),
        );
    }
    // ranks within each batch (0 = most variable); outside the top: NaN
    let nbatch = norm_vars.len();
    let mut ranks = vec![vec![f32::NAN; g]; nbatch];
    let mut nbatches = vec![0u32; g];
    for (b, nv) in norm_vars.iter().enumerate() {
        let mut order: Vec<usize> = (0..g).collect();
        order.sort_by(|&a, &c| nv[c].total_cmp(&nv[a]));
        for (r, &j) in order.iter().enumerate() {
            if r < n_top_genes {
                ranks[b][j] = r as f32;
                nbatches[j] += 1;
            }
        }
    }
    let median_rank: Vec<f32> = (0..g)
        .map(|j| {
            let mut v: Vec<f32> = (0..nbatch).map(|b| ranks[b][j]).filter(|r| !r.is_nan()).collect();
            if v.is_empty() {
                return f32::NAN;
            }
            v.sort_by(|a, b| a.total_cmp(b));
            let m = v.len() / 2;
            if v.len() % 2 == 1 {
                v[m]
            } else {
                (v[m - 1] + v[m]) / 2.0
            }
        })
        .collect();
    let variances_norm: Vec<f64> =
        (0..g).map(|j| norm_vars.iter().map(|nv| nv[j]).sum::<f64>() / nbatch as f64).collect();
    // sort by rank ascending (NaN last), then number of batches descending; stable
    let mut order: Vec<usize> = (0..g).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (median_rank[a], median_rank[b]);
        match (ra.is_nan(), rb.is_nan()) {
            (false, false) => ra.total_cmp(&rb).then(nbatches[b].cmp(&nbatches[a])),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (true, true) => nbatches[b].cmp(&nbatches[a]),
        }
    });
    let mut hv = vec![false; g];
    for &j in order.iter().take(n_top_genes) {
        hv[j] = true;
    }
    Ok(HvgResult {
        highly_variable: hv,
        means,
        variances: Some(variances),
        variances_norm: Some(variances_norm),
        highly_variable_rank: Some(median_rank),
        highly_variable_nbatches: if batches.len() > 1 { Some(nbatches) } else { None },
        ..Default::default()
    })
}

/// Edges of `pd.cut(values, bins=n_bins)`: equal widths between min and max, the first edge
/// lowered by 0.1 % of the range; bins are right-closed.
fn cut_bins(values: &[f64], n_bins: usize) -> Vec<usize> {
    let mn = values.iter().copied().fold(f64::INFINITY, f64::min);
    let mx = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if mn == mx {
        // pandas widens a constant range by 0.1 % on each side; everything lands in one bin
        return vec![n_bins / 2; values.len()];
    }
    let step = (mx - mn) / n_bins as f64;
    let mut edges: Vec<f64> = (0..=n_bins).map(|i| i as f64 * step + mn).collect();
    edges[n_bins] = mx;
    edges[0] -= (mx - mn) * 0.001;
    values
        .iter()
        .map(|&v| {
            // first edge >= v, minus one (right-closed intervals)
            let k = edges.partition_point(|&e| e < v);
            k.saturating_sub(1).min(n_bins - 1)
        })
        .collect()
}

/// Means, dispersions and normalised dispersions of `seurat` from per-gene mean and
/// variance of expm1(X).
fn seurat_stats(mean: &[f64], var: &[f64], n_bins: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let g = mean.len();
    let mut means = Vec::with_capacity(g);
    let mut disp = Vec::with_capacity(g);
    for j in 0..g {
        let m = if mean[j] == 0.0 { 1e-12 } else { mean[j] };
        let d = var[j] / m;
        disp.push(if d == 0.0 { f64::NAN } else { d.ln() });
        means.push(m.ln_1p());
    }
    let bins = cut_bins(&means, n_bins);
    let (mut sum, mut cnt) = (vec![0f64; n_bins], vec![0usize; n_bins]);
    for j in 0..g {
        if !disp[j].is_nan() {
            sum[bins[j]] += disp[j];
            cnt[bins[j]] += 1;
        }
    }
    let avg: Vec<f64> = (0..n_bins).map(|b| if cnt[b] > 0 { sum[b] / cnt[b] as f64 } else { f64::NAN }).collect();
    let mut ss = vec![0f64; n_bins];
    for j in 0..g {
        if !disp[j].is_nan() {
            ss[bins[j]] += (disp[j] - avg[bins[j]]).powi(2);
        }
    }
    let mut dev: Vec<f64> =
        (0..n_bins).map(|b| if cnt[b] > 1 { (ss[b] / (cnt[b] - 1) as f64).sqrt() } else { f64::NAN }).collect();
    let mut avg = avg;
    for b in 0..n_bins {
        if dev[b].is_nan() {
            // a single gene in the bin: its normalised dispersion becomes 1
            dev[b] = avg[b];
            avg[b] = 0.0;
        }
    }
    let norm = (0..g).map(|j| (disp[j] - avg[bins[j]]) / dev[bins[j]]).collect();
    (means, disp, norm)
}

fn seurat_select(means: &[f64], norm: &[f64], opts: &HvgOptions) -> Vec<bool> {
    match opts.n_top_genes {
        Some(n_top) => {
            let mut v: Vec<f64> = norm.iter().copied().filter(|x| !x.is_nan()).collect();
            if v.is_empty() {
                return vec![false; norm.len()];
            }
            v.sort_by(|a, b| b.total_cmp(a));
            let n = n_top.min(norm.len()).min(v.len()).max(1);
            let cut = v[n - 1];
            norm.iter().map(|&x| !x.is_nan() && x >= cut).collect()
        }
        None => means
            .iter()
            .zip(norm)
            .map(|(&m, &d)| {
                let d = if d.is_nan() { 0.0 } else { d };
                m > opts.min_mean && m < opts.max_mean && d > opts.min_disp && opts.max_disp.is_none_or(|mx| d < mx)
            })
            .collect(),
    }
}

/// `flavor='seurat'` on log1p data (`log_base` = the base recorded by log1p, `None` = e).
pub fn hvg_seurat(x: &Matrix, batches: &[Vec<usize>], opts: &HvgOptions, log_base: Option<f64>) -> Result<HvgResult> {
    let step = "highly_variable_genes(seurat)";
    opts.validate()?;
    if let Some(v) = x.values().iter().find(|v| !v.is_finite()) {
        return Err(invalid(step, format!("X holds a non-finite value ({v})")));
    }
    let (_, g) = x.shape();
    let factor = log_base.map(|b| b.ln()).unwrap_or(1.0);
    // column sums of expm1(X)
    let expm1_stats = |rows: &[usize]| {
        ordered_sum(
            rows,
            2048,
            (vec![0f64; g], vec![0f64; g], vec![0u32; g]),
            |chunk| {
                let (mut s, mut s2, mut k) = (vec![0f64; g], vec![0f64; g], vec![0u32; g]);
                for &i in chunk {
                    for_row(x, i, |j, v| {
                        let e = ((v as f64) * factor).exp_m1();
                        s[j] += e;
                        s2[j] += e * e;
                        k[j] += 1;
                    });
                }
                (s, s2, k)
            },
            |(mut a, mut a2, mut ak), (b, b2, bk)| {
                for j in 0..g {
                    a[j] += b[j];
                    a2[j] += b2[j];
                    ak[j] += bk[j];
                }
                (a, a2, ak)
            },
        )
    };
    let mean_var = |s: &[f64], s2: &[f64], n: usize| -> (Vec<f64>, Vec<f64>) {
        let nf = n as f64;
        let corr = if n > 1 { nf / (nf - 1.0) } else { 1.0 };
        let m: Vec<f64> = s.iter().map(|v| v / nf).collect();
        let v = s2.iter().zip(&m).map(|(q, mm)| (q / nf - mm * mm) * corr).collect();
        (m, v)
    };
    if batches.len() == 1 {
        let rows = &batches[0];
        let (s, s2, _) = expm1_stats(rows);
        let (m, v) = mean_var(&s, &s2, rows.len());
        let (means, disp, norm) = seurat_stats(&m, &v, opts.n_bins);
        let hv = seurat_select(&means, &norm, opts);
        return Ok(HvgResult {
            highly_variable: hv,
            means,
            dispersions: Some(disp),
            dispersions_norm: Some(norm),
            ..Default::default()
        });
    }
    // per batch on the genes expressed in it, then merged
    let nb = batches.len();
    let (mut msum, mut dsum, mut nsum) = (vec![0f64; g], vec![(0f64, 0usize); g], vec![(0f64, 0usize); g]);
    let mut nbatches = vec![0u32; g];
    for rows in batches {
        let (s, s2, k) = expm1_stats(rows);
        let (m, v) = mean_var(&s, &s2, rows.len());
        let keep: Vec<usize> = (0..g).filter(|&j| k[j] > 0).collect();
        let mk: Vec<f64> = keep.iter().map(|&j| m[j]).collect();
        let vk: Vec<f64> = keep.iter().map(|&j| v[j]).collect();
        let (means, disp, norm) = seurat_stats(&mk, &vk, opts.n_bins);
        let hv = seurat_select(&means, &norm, opts);
        let mut full = (vec![0f64; g], vec![0f64; g], vec![0f64; g], vec![false; g]);
        for (t, &j) in keep.iter().enumerate() {
            full.0[j] = means[t];
            full.1[j] = disp[t];
            full.2[j] = norm[t];
            full.3[j] = hv[t];
        }
        for j in 0..g {
            msum[j] += full.0[j];
            if !full.1[j].is_nan() {
                dsum[j].0 += full.1[j];
                dsum[j].1 += 1;
            }
            if !full.2[j].is_nan() {
                nsum[j].0 += full.2[j];
                nsum[j].1 += 1;
            }
            nbatches[j] += full.3[j] as u32;
        }
    }
    let avg = |p: (f64, usize)| if p.1 > 0 { p.0 / p.1 as f64 } else { f64::NAN };
    let means: Vec<f64> = msum.iter().map(|s| s / nb as f64).collect();
    let disp: Vec<f64> = dsum.into_iter().map(avg).collect();
    let mut norm: Vec<f64> = nsum.into_iter().map(avg).collect();
    let hv = match opts.n_top_genes {
        Some(n_top) => {
            let mut order: Vec<usize> = (0..g).collect();
            order.sort_by(|&a, &b| {
                nbatches[b].cmp(&nbatches[a]).then_with(|| match (norm[a].is_nan(), norm[b].is_nan()) {
                    (false, false) => norm[b].total_cmp(&norm[a]),
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    (true, true) => std::cmp::Ordering::Equal,
                })
            });
            let mut hv = vec![false; g];
            for &j in order.iter().take(n_top) {
                hv[j] = true;
            }
            hv
        }
        None => {
            norm.iter_mut().for_each(|d| {
                if d.is_nan() {
                    *d = 0.0
                }
            });
            seurat_select(&means, &norm, &HvgOptions { n_top_genes: None, ..opts.clone() })
        }
    };
    Ok(HvgResult {
        highly_variable: hv,
        means,
        dispersions: Some(disp),
        dispersions_norm: Some(norm),
        highly_variable_nbatches: Some(nbatches),
        ..Default::default()
    })
}

/// `sc.pp.highly_variable_genes(adata, ...)`: writes the var columns scanpy writes
/// (`highly_variable`, `means`, `dispersions`/`dispersions_norm` or
/// `variances`/`variances_norm`/`highly_variable_rank`, `highly_variable_nbatches` with a
/// batch key) and `uns['hvg'] = {'flavor': ...}`; with `subset`, keeps only the selected genes.
pub fn highly_variable_genes(adata: &mut AnnData, opts: &HvgOptions) -> Result<HvgResult> {
    opts.validate()?;
    adata.validate()?;
    let x = match &opts.layer {
        None => &adata.x,
        Some(l) => adata.layers.get(l).ok_or_else(|| sclm_data::DataError::MissingKey {
            kind: "layer",
            key: l.clone(),
            hint: sclm_data::available_hint(adata.layers.keys().map(|k| k.as_str())),
        })?,
    };
    let codes = batch_codes(adata, opts.batch_key.as_deref())?;
    let batches = batch_rows(&codes, adata.n_obs());
    let res = match opts.flavor {
        HvgFlavor::SeuratV3 => hvg_seurat_v3(x, &batches, opts.n_top_genes.unwrap_or(2000), opts.span)?,
        HvgFlavor::Seurat => {
            let base = match adata.uns.get("log1p") {
                Some(Value::Map(m)) => match m.get("base") {
                    Some(Value::F64(b)) => Some(*b),
                    Some(Value::I64(b)) => Some(*b as f64),
                    _ => None,
                },
                _ => None,
            };
            hvg_seurat(x, &batches, opts, base)?
        }
    };
    let var = &mut adata.var;
    var.insert("highly_variable", Column::Bool(res.highly_variable.clone()))?;
    var.insert("means", Column::F64(res.means.clone()))?;
    if let Some(v) = &res.dispersions {
        var.insert("dispersions", Column::F64(v.clone()))?;
    }
    if let Some(v) = &res.dispersions_norm {
        var.insert("dispersions_norm", Column::F32(v.iter().map(|&d| d as f32).collect()))?;
    }
    if let Some(v) = &res.variances {
        var.insert("variances", Column::F64(v.clone()))?;
    }
    if let Some(v) = &res.variances_norm {
        var.insert("variances_norm", Column::F64(v.clone()))?;
    }
    if let Some(v) = &res.highly_variable_rank {
        var.insert("highly_variable_rank", Column::F32(v.clone()))?;
    }
    if let Some(v) = &res.highly_variable_nbatches {
        var.insert("highly_variable_nbatches", Column::I64(v.iter().map(|&k| k as i64).collect()))?;
    }
    let mut hvg = std::collections::BTreeMap::new();
    hvg.insert("flavor".to_string(), Value::Str(opts.flavor.name().to_string()));
    adata.uns.insert("hvg".into(), Value::Map(hvg));
    if opts.subset {
        let keep: Vec<usize> = (0..res.highly_variable.len()).filter(|&j| res.highly_variable[j]).collect();
        *adata = adata.select_vars(&keep);
    }
    Ok(res)
}
