//! A serialisable preprocessing recipe: a list of [`Step`]s that [`run`] applies to an
//! AnnData, parsed from a compact string by [`parse_steps`].
//!
//! # Step-string grammar
//!
//! ```text
//! steps  := step ( "," step )*
//! step   := name ( ":" key "=" value )*
//! ```
//!
//! Whitespace around tokens is ignored. Names and keys (`= default` where there is one; values
//! outside the ranges given are refused by [`parse_steps`] and [`run`], naming the step and key):
//!
//! | name | keys |
//! |---|---|
//! | `qc` (`calculate_qc_metrics`) | `mito_prefix` (`MT-\|mt-`, alternatives separated by `\|`), `log1p` = true |
//! | `filter_cells` | `min_counts`, `min_genes`, `max_counts`, `max_genes` |
//! | `filter_genes` | `min_counts`, `min_cells`, `max_counts`, `max_cells` |
//! | `normalize_total` | `target_sum` = median, `exclude_highly_expressed` (a max fraction, e.g. 0.05) |
//! | `log1p` | — |
//! | `hvg` (`highly_variable_genes`) | `flavor` (`seurat` \| `seurat_v3`) = seurat, `n_top_genes`, `min_mean` = 0.0125, `max_mean` = 3, `min_disp` = 0.5, `max_disp` = inf, `n_bins` = 20 (1 to 1,000,000), `span` = 0.3, `batch_key`, `subset` = false, `layer` |
//! | `scale` | `zero_center` = true, `max_value` |
//! | `pca` | `n_comps` = 50 (1 to 10,000; lowered to min(cells, genes) − 1 when larger), `solver` (`auto` \| `covariance_eigh` \| `randomized`) = auto, `zero_center` = true, `n_oversamples` = 30 (at most 10,000), `n_power_iter` = 12 (at most 1,000), `use_highly_variable` = true |
//!
//! Example: `filter_cells:min_genes=200,filter_genes:min_cells=3,normalize_total:target_sum=1e4,log1p,hvg:flavor=seurat_v3:n_top_genes=2000:subset=true,scale:max_value=10,pca:n_comps=50`.
//!
//! `hvg:flavor=seurat_v3` needs raw counts: when it comes after `normalize_total`/`log1p`
//! without a `layer`, [`run`] keeps a copy of the counts in `layers['counts']` before the
//! first transforming step and uses it; if `X` holds no counts to begin with, the step fails
//! with an error naming it.

use std::fmt;

use sclm_data::{AnnData, Matrix};
use serde::{Deserialize, Serialize};

use crate::hvg::{highly_variable_genes, HvgFlavor, HvgOptions};
use crate::normalize::{log1p_adata, normalize_total_adata, scale, NormalizeOptions};
use crate::pca::{pca_adata, PcaOptions, PcaSolver};

fn solver_name(s: PcaSolver) -> &'static str {
    match s {
        PcaSolver::Auto => "auto",
        PcaSolver::CovarianceEigh => "covariance_eigh",
        PcaSolver::Randomized => "randomized",
    }
}
use crate::qc::{calculate_qc_metrics, filter_cells, filter_genes, CellFilter, GeneFilter, QcOptions};
use crate::{PreprocessError, Result};

/// Options of the `scale` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScaleOptions {
    /// Subtract the gene means (default true).
    pub zero_center: bool,
    /// Clip scaled values at ± this value (default none).
    pub max_value: Option<f32>,
}

impl Default for ScaleOptions {
    fn default() -> Self {
        ScaleOptions { zero_center: true, max_value: None }
    }
}

/// Options of the `pca` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PcaStep {
    /// Number of components (default 50; from 1 to [`crate::pca::MAX_PCA_COMPS`], more is
    /// refused; lowered to min(cells, genes) − 1 when larger than that, where scanpy would
    /// refuse).
    pub n_comps: usize,
    /// Solver options.
    #[serde(flatten)]
    pub options: PcaOptions,
}

impl Default for PcaStep {
    fn default() -> Self {
        PcaStep { n_comps: 50, options: PcaOptions::default() }
    }
}

/// One preprocessing step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// `calculate_qc_metrics`.
    Qc(QcOptions),
    /// `filter_cells`.
    FilterCells(CellFilter),
    /// `filter_genes`.
    FilterGenes(GeneFilter),
    /// `normalize_total`.
    NormalizeTotal(NormalizeOptions),
    /// `log1p`.
    Log1p,
    /// `highly_variable_genes`.
    Hvg(HvgOptions),
    /// `scale` (X becomes dense).
    Scale(ScaleOptions),
    /// `pca` (writes `obsm['X_pca']`).
    Pca(PcaStep),
}

impl Step {
    /// The step's name in the step-string grammar.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Qc(_) => "qc",
            Step::FilterCells(_) => "filter_cells",
            Step::FilterGenes(_) => "filter_genes",
            Step::NormalizeTotal(_) => "normalize_total",
            Step::Log1p => "log1p",
            Step::Hvg(_) => "hvg",
            Step::Scale(_) => "scale",
            Step::Pca(_) => "pca",
        }
    }

    /// Checks the step's options before any data is touched (sizes that would make a step
    /// allocate without bound, or run without end, are refused here): `hvg` as
    /// [`HvgOptions::validate`], `pca` as [`PcaOptions::validate`]. [`parse_steps`] and
    /// [`run`] call it; the error names the step and the key.
    pub fn validate(&self) -> Result<()> {
        match self {
            Step::Hvg(h) => h.validate(),
            Step::Pca(p) => p.options.validate(Some(p.n_comps)),
            _ => Ok(()),
        }
    }

    fn needs_raw_counts(&self) -> bool {
        matches!(self, Step::Hvg(h) if h.flavor == HvgFlavor::SeuratV3 && h.layer.is_none())
    }

    fn transforms_x(&self) -> bool {
        matches!(self, Step::NormalizeTotal(_) | Step::Log1p | Step::Scale(_))
    }
}

fn fmt_num(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{v}")
    }
}

impl fmt::Display for Step {
    /// The step in the step-string grammar (non-default options only), so that
    /// `parse_steps(&step.to_string())` gives the step back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kv: Vec<(String, String)> = Vec::new();
        let mut opt = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                kv.push((k.to_string(), v));
            }
        };
        match self {
            Step::Qc(q) => {
                let d = QcOptions::default();
                if q.mito_prefixes != d.mito_prefixes {
                    opt("mito_prefix", Some(q.mito_prefixes.join("|")));
                }
                if q.log1p != d.log1p {
                    opt("log1p", Some(q.log1p.to_string()));
                }
            }
            Step::FilterCells(c) => {
                opt("min_counts", c.min_counts.map(fmt_num));
                opt("min_genes", c.min_genes.map(|v| v.to_string()));
                opt("max_counts", c.max_counts.map(fmt_num));
                opt("max_genes", c.max_genes.map(|v| v.to_string()));
            }
            Step::FilterGenes(c) => {
                opt("min_counts", c.min_counts.map(fmt_num));
                opt("min_cells", c.min_cells.map(|v| v.to_string()));
                opt("max_counts", c.max_counts.map(fmt_num));
                opt("max_cells", c.max_cells.map(|v| v.to_string()));
            }
            Step::NormalizeTotal(n) => {
                opt("target_sum", n.target_sum.map(fmt_num));
                opt("exclude_highly_expressed", n.exclude_highly_expressed.map(fmt_num));
            }
            Step::Log1p => {}
            Step::Hvg(h) => {
                let d = HvgOptions::default();
                if h.flavor != d.flavor {
                    opt("flavor", Some(h.flavor.name().into()));
                }
                opt("n_top_genes", h.n_top_genes.map(|v| v.to_string()));
                for (k, a, b) in [
                    ("min_mean", h.min_mean, d.min_mean),
                    ("max_mean", h.max_mean, d.max_mean),
                    ("min_disp", h.min_disp, d.min_disp),
                    ("span", h.span, d.span),
                ] {
                    if a != b {
                        opt(k, Some(fmt_num(a)));
                    }
                }
                opt("max_disp", h.max_disp.map(fmt_num));
                if h.n_bins != d.n_bins {
                    opt("n_bins", Some(h.n_bins.to_string()));
                }
                opt("batch_key", h.batch_key.clone());
                if h.subset {
                    opt("subset", Some("true".into()));
                }
                opt("layer", h.layer.clone());
            }
            Step::Scale(s) => {
                if !s.zero_center {
                    opt("zero_center", Some("false".into()));
                }
                opt("max_value", s.max_value.map(|v| fmt_num(v as f64)));
            }
            Step::Pca(p) => {
                let d = PcaStep::default();
                if p.n_comps != d.n_comps {
                    opt("n_comps", Some(p.n_comps.to_string()));
                }
                let (o, od) = (&p.options, &d.options);
                if o.solver != od.solver {
                    opt("solver", Some(solver_name(o.solver).into()));
                }
                if o.zero_center != od.zero_center {
                    opt("zero_center", Some(o.zero_center.to_string()));
                }
                if o.n_oversamples != od.n_oversamples {
                    opt("n_oversamples", Some(o.n_oversamples.to_string()));
                }
                if o.n_power_iter != od.n_power_iter {
                    opt("n_power_iter", Some(o.n_power_iter.to_string()));
                }
                if o.use_highly_variable != od.use_highly_variable {
                    opt("use_highly_variable", Some(o.use_highly_variable.to_string()));
                }
            }
        }
        write!(f, "{}", self.name())?;
        for (k, v) in kv {
            write!(f, ":{k}={v}")?;
        }
        Ok(())
    }
}

/// Writes steps as a step string (the inverse of [`parse_steps`]).
pub fn steps_to_string(steps: &[Step]) -> String {
    steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}

fn perr(input: &str, message: impl Into<String>) -> PreprocessError {
    PreprocessError::Parse { input: input.to_string(), message: message.into() }
}

struct Kv<'a> {
    step: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Kv<'a> {
    fn check_keys(&self, allowed: &[&str]) -> Result<()> {
        for (k, _) in &self.pairs {
            if !allowed.contains(k) {
                return Err(perr(
                    self.step,
                    format!(
                        "unknown option '{k}' for this step; known: {}",
                        if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
                    ),
                ));
            }
        }
        Ok(())
    }

    fn raw(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v.parse::<T>().map(Some).or_else(|_| {
                // integers written as floats, e.g. 1e4 or 200.0
                match v.parse::<f64>() {
                    Ok(x) if x.fract() == 0.0 && x.is_finite() => {
                        format!("{}", x as i64).parse::<T>().map(Some).map_err(|_| ())
                    }
                    _ => Err(()),
                }
                .map_err(|_| perr(self.step, format!("option {key}='{v}' is not a valid number")))
            }),
        }
    }

    fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "inf" | "+inf" | "infinity" => Ok(Some(f64::INFINITY)),
                "-inf" | "-infinity" => Ok(Some(f64::NEG_INFINITY)),
                _ => v
                    .parse::<f64>()
                    .map(Some)
                    .map_err(|_| perr(self.step, format!("option {key}='{v}' is not a valid number"))),
            },
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" => Ok(Some(false)),
                _ => Err(perr(self.step, format!("option {key}='{v}' is not true/false"))),
            },
        }
    }
}

/// Parses a step string (grammar in the module documentation).
pub fn parse_steps(input: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for part in input.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(perr(input, "empty step (two commas in a row, or a trailing comma?)"));
        }
        let mut it = part.split(':');
        let name = it.next().unwrap_or("").trim();
        let mut pairs = Vec::new();
        for kv in it {
            let (k, v) = kv.split_once('=').ok_or_else(|| perr(part, format!("expected key=value, found '{kv}'")))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || v.is_empty() {
                return Err(perr(part, format!("expected key=value, found '{kv}'")));
            }
            pairs.push((k, v));
        }
        let kv = Kv { step: part, pairs };
        let step = match name {
            "qc" | "calculate_qc_metrics" => {
                kv.check_keys(&["mito_prefix", "log1p"])?;
                let mut q = QcOptions::default();
                if let Some(p) = kv.raw("mito_prefix") {
                    q.mito_prefixes = p.split('|').map(|s| s.to_string()).collect();
                }
                if let Some(b) = kv.boolean("log1p")? {
                    q.log1p = b;
                }
                Step::Qc(q)
            }
            "filter_cells" => {
                kv.check_keys(&["min_counts", "min_genes", "max_counts", "max_genes"])?;
                Step::FilterCells(CellFilter {
                    min_counts: kv.float("min_counts")?,
                    min_genes: kv.num("min_genes")?,
                    max_counts: kv.float("max_counts")?,
                    max_genes: kv.num("max_genes")?,
                })
            }
            "filter_genes" => {
                kv.check_keys(&["min_counts", "min_cells", "max_counts", "max_cells"])?;
                Step::FilterGenes(GeneFilter {
                    min_counts: kv.float("min_counts")?,
                    min_cells: kv.num("min_cells")?,
                    max_counts: kv.float("max_counts")?,
                    max_cells: kv.num("max_cells")?,
                })
            }
            "normalize_total" => {
                kv.check_keys(&["target_sum", "exclude_highly_expressed"])?;
                let target_sum = match kv.raw("target_sum") {
                    Some(v) if v.eq_ignore_ascii_case("median") || v.eq_ignore_ascii_case("none") => None,
                    _ => kv.float("target_sum")?,
                };
                Step::NormalizeTotal(NormalizeOptions { target_sum, exclude_highly_expressed: kv.float("exclude_highly_expressed")? })
            }
            "log1p" => {
                kv.check_keys(&[])?;
                Step::Log1p
            }
            "hvg" | "highly_variable_genes" => {
                kv.check_keys(&["flavor", "n_top_genes", "min_mean", "max_mean", "min_disp", "max_disp", "n_bins", "span", "batch_key", "subset", "layer"])?;
                let mut h = HvgOptions::default();
                if let Some(f) = kv.raw("flavor") {
                    h.flavor = match f {
                        "seurat" => HvgFlavor::Seurat,
                        "seurat_v3" => HvgFlavor::SeuratV3,
                        other => return Err(perr(part, format!("unknown hvg flavor '{other}'; known: seurat, seurat_v3"))),
                    };
                }
                h.n_top_genes = kv.num("n_top_genes")?;
                if let Some(v) = kv.float("min_mean")? { h.min_mean = v }
                if let Some(v) = kv.float("max_mean")? { h.max_mean = v }
                if let Some(v) = kv.float("min_disp")? { h.min_disp = v }
                if let Some(v) = kv.float("max_disp")? { h.max_disp = if v == f64::INFINITY { None } else { Some(v) } }
                if let Some(v) = kv.num("n_bins")? { h.n_bins = v }
                if let Some(v) = kv.float("span")? { h.span = v }
                h.batch_key = kv.raw("batch_key").map(|s| s.to_string());
                if let Some(v) = kv.boolean("subset")? { h.subset = v }
                h.layer = kv.raw("layer").map(|s| s.to_string());
                Step::Hvg(h)
            }
            "scale" => {
                kv.check_keys(&["zero_center", "max_value"])?;
                Step::Scale(ScaleOptions {
                    zero_center: kv.boolean("zero_center")?.unwrap_or(true),
                    max_value: kv.float("max_value")?.map(|v| v as f32),
                })
            }
            "pca" => {
                kv.check_keys(&["n_comps", "solver", "zero_center", "n_oversamples", "n_power_iter", "use_highly_variable"])?;
                let mut p = PcaStep::default();
                if let Some(v) = kv.num("n_comps")? { p.n_comps = v }
                if let Some(v) = kv.raw("solver") {
                    p.options.solver = match v {
                        "auto" => PcaSolver::Auto,
                        "covariance_eigh" => PcaSolver::CovarianceEigh,
                        "randomized" => PcaSolver::Randomized,
                        other => return Err(perr(part, format!("unknown pca solver '{other}'; known: auto, covariance_eigh, randomized"))),
                    };
                }
                if let Some(v) = kv.boolean("zero_center")? { p.options.zero_center = v }
                if let Some(v) = kv.num("n_oversamples")? { p.options.n_oversamples = v }
                if let Some(v) = kv.num("n_power_iter")? { p.options.n_power_iter = v }
                if let Some(v) = kv.boolean("use_highly_variable")? { p.options.use_highly_variable = v }
                Step::Pca(p)
            }
            other => {
                return Err(perr(
                    part,
                    format!("unknown step '{other}'; known: qc, filter_cells, filter_genes, normalize_total, log1p, hvg, scale, pca"),
                ))
            }
        };
        step.validate().map_err(|e| match e {
            PreprocessError::Invalid { message, .. } => perr(part, message),
            other => other,
        })?;
        steps.push(step);
    }
    Ok(steps)
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// The step, in the step-string grammar.
    pub step: String,
    /// A one-line account (e.g. `kept 2,700 of 2,800 cells`).
    pub summary: String,
    /// Cells after the step.
    pub n_obs: usize,
    /// Genes after the step.
    pub n_vars: usize,
}

/// Runs `steps` on `adata` in order; `seed` seeds the PCA. Errors name the failing step.
pub fn run(adata: &mut AnnData, steps: &[Step], seed: u64) -> Result<Vec<StepReport>> {
    // Every step is checked before the first one changes the data (steps may come from a
    // saved model's JSON rather than from parse_steps).
    for (i, step) in steps.iter().enumerate() {
        step.validate().map_err(|e| match e {
            PreprocessError::Invalid { step: s, message } => {
                PreprocessError::Invalid { step: format!("step {} ({step}): {s}", i + 1), message }
            }
            other => other,
        })?;
    }
    adata.validate()?;
    let mut reports = Vec::with_capacity(steps.len());
    let mut saved_counts = false;
    for (i, step) in steps.iter().enumerate() {
        let label = format!("step {} ({})", i + 1, step);
        let wrap = |e: PreprocessError| match e {
            PreprocessError::Invalid { step, message } => {
                PreprocessError::Invalid { step: format!("{label}: {step}"), message }
            }
            PreprocessError::Data(d) => PreprocessError::Invalid { step: label.clone(), message: d.to_string() },
            other => other,
        };
        if step.transforms_x()
            && !saved_counts
            && steps[i + 1..].iter().any(|s| s.needs_raw_counts())
            && !adata.layers.contains_key("counts")
            && adata.x.looks_like_counts()
        {
            adata.layers.insert("counts".into(), adata.x.clone());
            saved_counts = true;
        }
        let (n0, g0) = (adata.n_obs(), adata.n_vars());
        let summary = match step {
            Step::Qc(q) => {
                let m = calculate_qc_metrics(adata, q).map_err(wrap)?;
                let n_mt = m.mito.iter().filter(|b| **b).count();
                let med = crate::stats::median(&m.total_counts);
                format!("QC metrics for {n0} cells; {n_mt} mitochondrial genes; median total counts {med}")
            }
            Step::FilterCells(f) => {
                let kept = filter_cells(adata, f).map_err(wrap)?;
                format!("kept {} of {n0} cells", kept.len())
            }
            Step::FilterGenes(f) => {
                let kept = filter_genes(adata, f).map_err(wrap)?;
                format!("kept {} of {g0} genes", kept.len())
            }
            Step::NormalizeTotal(o) => {
                let t = normalize_total_adata(adata, o).map_err(wrap)?;
                format!("normalised each cell to a total of {t}")
            }
            Step::Log1p => {
                let again = adata.uns.contains_key("log1p");
                log1p_adata(adata).map_err(wrap)?;
                if again {
                    "log1p applied (warning: uns['log1p'] was already present; the data may now be log-transformed twice)".into()
                } else {
                    "log1p applied".into()
                }
            }
            Step::Hvg(h) => {
                let mut h = h.clone();
                if h.flavor == HvgFlavor::SeuratV3 && h.layer.is_none() && !adata.x.looks_like_counts() && saved_counts
                {
                    h.layer = Some("counts".into());
                }
                let r = highly_variable_genes(adata, &h).map_err(wrap)?;
                let n = r.highly_variable.iter().filter(|b| **b).count();
                format!(
                    "{n} highly variable genes of {g0} ({}){}",
                    h.flavor.name(),
                    if h.subset { ", subset" } else { "" }
                )
            }
            Step::Scale(s) => {
                let (d, _, _) = scale(&adata.x, s.zero_center, s.max_value).map_err(wrap)?;
                adata.x = Matrix::Dense(d);
                format!(
                    "scaled {g0} genes (dense){}",
                    s.max_value.map(|m| format!(", clipped at {m}")).unwrap_or_default()
                )
            }
            Step::Pca(p) => {
                let kmax = n0.min(g0).saturating_sub(1).max(1);
                let k = p.n_comps.min(kmax);
                let r = pca_adata(adata, k, seed, &p.options).map_err(wrap)?;
                let total: f64 = r.variance_ratio.iter().sum();
                format!("{k} principal components explain {:.1}% of the variance", 100.0 * total)
            }
        };
        reports.push(StepReport { step: step.to_string(), summary, n_obs: adata.n_obs(), n_vars: adata.n_vars() });
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example_and_round_trips() {
        let s = "filter_cells:min_genes=200,filter_genes:min_cells=3,normalize_total:target_sum=1e4,log1p,hvg:flavor=seurat_v3:n_top_genes=2000:subset=true,scale:max_value=10,pca:n_comps=50";
        let steps = parse_steps(s).unwrap();
        assert_eq!(steps.len(), 7);
        assert_eq!(steps[0], Step::FilterCells(CellFilter { min_genes: Some(200), ..Default::default() }));
        assert_eq!(
            steps[2],
            Step::NormalizeTotal(NormalizeOptions { target_sum: Some(1e4), exclude_highly_expressed: None })
        );
        match &steps[4] {
            Step::Hvg(h) => {
                assert_eq!(h.flavor, HvgFlavor::SeuratV3);
                assert_eq!(h.n_top_genes, Some(2000));
                assert!(h.subset);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(steps[5], Step::Scale(ScaleOptions { zero_center: true, max_value: Some(10.0) }));
        let again = parse_steps(&steps_to_string(&steps)).unwrap();
        assert_eq!(again, steps);
        // serde round trip (a saved model records its preprocessing)
        let json = serde_json::to_string(&steps).unwrap();
        assert!(json.contains("\"step\":\"hvg\"") && json.contains("\"flavor\":\"seurat_v3\""), "{json}");
        let back: Vec<Step> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, steps);
        let qc = parse_steps(" qc : mito_prefix=MT-|mt-|Mt- , normalize_total:target_sum=median, hvg:max_disp=inf:max_mean=inf, pca:solver=randomized:n_power_iter=4").unwrap();
        assert_eq!(
            qc[0],
            Step::Qc(QcOptions { mito_prefixes: vec!["MT-".into(), "mt-".into(), "Mt-".into()], log1p: true })
        );
        assert_eq!(qc[1], Step::NormalizeTotal(NormalizeOptions::default()));
        match &qc[3] {
            Step::Pca(p) => assert_eq!((p.options.solver, p.options.n_power_iter), (PcaSolver::Randomized, 4)),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_steps(&steps_to_string(&qc)).unwrap(), qc);
        let json = serde_json::to_string(&qc).unwrap();
        assert!(json.contains("\"max_mean\":\"inf\""), "{json}");
        assert_eq!(serde_json::from_str::<Vec<Step>>(&json).unwrap(), qc);
    }

    #[test]
    fn parse_errors_name_the_problem() {
        for (s, needle) in [
            ("filter_cells:min_gens=3", "min_gens"),
            ("normalise_total", "unknown step 'normalise_total'"),
            ("log1p,,pca", "empty step"),
            ("pca:n_comps=abc", "n_comps='abc'"),
            ("hvg:flavor=cell_ranger", "cell_ranger"),
            ("scale:max_value", "key=value"),
            ("hvg:subset=maybe", "true/false"),
        ] {
            let e = parse_steps(s).unwrap_err().to_string();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }
}
