//! The common metrics report and the high-level embedding evaluation.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sclm_data::Dense;
use serde::{Deserialize, Serialize};

use crate::cluster::{default_resolutions, leiden_sweep};
use crate::error::{check_len, invalid, Result};
use crate::labels::encode;
use crate::metrics::*;
use crate::neighbors::{connectivities, KnnGraph};

/// One named metric value (`None` when undefined, e.g. a correlation of a constant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Metric name, e.g. `ARI`, `macro_F1`.
    pub name: String,
    /// Its value.
    pub value: Option<f64>,
}

/// Results of an evaluation or a baseline, printable as a table and serialisable to JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MetricsReport {
    /// The task, e.g. `embedding`, `cell-type annotation`, `denoising`.
    pub task: String,
    /// The method evaluated, e.g. `PCA-50`, a model name.
    pub method: String,
    /// Number of cells evaluated.
    pub n_cells: usize,
    /// Metrics in the order they were added.
    pub metrics: Vec<Metric>,
    /// Settings and remarks (seed, resolution picked, subsampling, ...).
    pub notes: BTreeMap<String, String>,
}

impl MetricsReport {
    /// An empty report.
    pub fn new(task: impl Into<String>, method: impl Into<String>, n_cells: usize) -> Self {
        MetricsReport { task: task.into(), method: method.into(), n_cells, ..Default::default() }
    }

    /// Adds (or replaces) a metric; NaN is stored as undefined.
    pub fn push(&mut self, name: impl Into<String>, value: f64) {
        let name = name.into();
        let value = if value.is_nan() { None } else { Some(value) };
        match self.metrics.iter_mut().find(|m| m.name == name) {
            Some(m) => m.value = value,
            None => self.metrics.push(Metric { name, value }),
        }
    }

    /// Adds a note.
    pub fn note(&mut self, key: impl Into<String>, value: impl ToString) {
        self.notes.insert(key.into(), value.to_string());
    }

    /// The value of a metric, if present and defined.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.name == name).and_then(|m| m.value)
    }

    /// Renders an aligned plain-text table: a header line, one row per metric, then notes.
    pub fn to_table(&self) -> String {
        let w = self.metrics.iter().map(|m| m.name.len()).max().unwrap_or(6).max(6);
        let mut s = format!("{} | {} | {} cells\n", self.task, self.method, self.n_cells);
        s.push_str(&format!("{:<w$}  {:>10}\n", "metric", "value"));
        s.push_str(&format!("{}  {}\n", "-".repeat(w), "-".repeat(10)));
        for m in &self.metrics {
            let v = m.value.map_or("n/a".to_string(), |v| format!("{v:.4}"));
            s.push_str(&format!("{:<w$}  {:>10}\n", m.name, v));
        }
        for (k, v) in &self.notes {
            s.push_str(&format!("# {k}: {v}\n"));
        }
        s
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }
}

/// Options of [`evaluate_embedding`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvaluateOptions {
    /// Neighbours (including the cell itself, as scanpy) of the graph used by Leiden,
    /// graph connectivity and the kNN classifier (default 15).
    pub n_neighbors: usize,
    /// Leiden resolutions to sweep (default 0.1, 0.2, …, 1.4).
    pub resolutions: Vec<f64>,
    /// Seed of Leiden and subsampling (default 0).
    pub seed: u64,
    /// Silhouettes cost O(n²): above this many cells they use a seeded random subset
    /// (default 20000).
    pub max_silhouette_cells: usize,
    /// Also compute scaled iLISI / cLISI (perplexity 30, 90 neighbours; default true).
    pub lisi: bool,
    /// Method name written in the report (default `embedding`).
    pub method: String,
}

impl Default for EvaluateOptions {
    fn default() -> Self {
        EvaluateOptions {
            n_neighbors: 15,
            resolutions: default_resolutions(),
            seed: 0,
            max_silhouette_cells: 20000,
            lisi: true,
            method: "embedding".into(),
        }
    }
}

/// Leave-one-out kNN classification on a graph: each cell takes the majority label of its
/// neighbours other than itself; ties go to the label of the nearest tied neighbour.
pub fn knn_predict<T: Ord + Clone>(g: &KnnGraph, labels: &[T]) -> Result<Vec<T>> {
    check_len("kNN classifier: labels vs graph nodes", g.n(), labels.len())?;
    let (codes, classes) = encode(labels);
    let mut votes = vec![0usize; classes.len()];
    let mut out = Vec::with_capacity(g.n());
    for i in 0..g.n() {
        let nb: Vec<usize> = g.row(i).0.iter().map(|&j| j as usize).filter(|&j| j != i).collect();
        if nb.is_empty() {
            return invalid("kNN classifier needs at least one neighbour besides the cell itself");
        }
        for &j in &nb {
            votes[codes[j]] += 1;
        }
        let top = *votes.iter().max().unwrap_or(&0);
        let pick = nb.iter().map(|&j| codes[j]).find(|&c| votes[c] == top).unwrap_or(codes[nb[0]]);
        out.push(classes[pick].clone());
        for &j in &nb {
            votes[codes[j]] = 0;
        }
    }
    Ok(out)
}

fn truncate(g: &KnnGraph, k: usize) -> KnnGraph {
    let n = g.n();
    let mut indices = Vec::with_capacity(n * k);
    let mut distances = Vec::with_capacity(n * k);
    for i in 0..n {
        let (a, b) = g.row(i);
        indices.extend_from_slice(&a[..k]);
        distances.extend_from_slice(&b[..k]);
    }
    KnnGraph { k, indices, distances }
}

/// Evaluates a cell embedding against cell-type labels (and batches when given), with the
/// metrics of CellPLM / scIB: Leiden sweep ARI and NMI, ASW_label, graph connectivity,
/// Avg_bio, leave-one-out kNN accuracy and macro F1, cLISI; with batches also ASW_batch,
/// iLISI and S_final.
pub fn evaluate_embedding(
    embedding: &Dense<f32>,
    labels: &[String],
    batches: Option<&[String]>,
    opts: &EvaluateOptions,
) -> Result<MetricsReport> {
    let n = embedding.nrows;
    check_len("evaluate: labels vs embedding rows", n, labels.len())?;
    if let Some(b) = batches {
        check_len("evaluate: batches vs embedding rows", n, b.len())?;
    }
    if opts.n_neighbors < 2 {
        return invalid("evaluate: n_neighbors must be at least 2");
    }
    let n_labels = encode(labels).1.len();
    if n_labels < 2 {
        return invalid("evaluate: labels must have at least two distinct values");
    }
    let mut rep = MetricsReport::new("embedding", opts.method.clone(), n);
    let k_graph = opts.n_neighbors.min(n);
    let k_all = if opts.lisi { k_graph.max(91.min(n)) } else { k_graph };
    let g_all = crate::nndescent::knn_auto(embedding, k_all, true, opts.seed)?;
    let g = truncate(&g_all, k_graph);
    let conn = connectivities(&g);

    let sweep = leiden_sweep(&conn, labels, &opts.resolutions, opts.seed)?;
    rep.push("ARI", sweep.best_ari);
    rep.push("NMI", sweep.best_nmi);
    rep.note("leiden_resolution_ARI", sweep.best_ari_resolution);
    rep.note("leiden_resolution_NMI", sweep.best_nmi_resolution);

    // Silhouettes, on a seeded subset when large.
    let (emb_s, lab_s, bat_s): (Dense<f32>, Vec<String>, Option<Vec<String>>) = if n > opts.max_silhouette_cells {
        let mut rows: Vec<usize> = (0..n).collect();
        rows.shuffle(&mut StdRng::seed_from_u64(opts.seed));
        rows.truncate(opts.max_silhouette_cells);
        rows.sort_unstable();
        rep.note("silhouette_subset", format!("{} of {n} cells", rows.len()));
        (
            embedding.select_rows(&rows),
            rows.iter().map(|&i| labels[i].clone()).collect(),
            batches.map(|b| rows.iter().map(|&i| b[i].clone()).collect()),
        )
    } else {
        (embedding.clone(), labels.to_vec(), batches.map(|b| b.to_vec()))
    };
    // Silhouettes need 2 <= labels <= cells - 1 (a subset may miss or isolate labels).
    let n_lab_s = encode(&lab_s).1.len();
    let asw_l = if n_lab_s >= 2 && n_lab_s < emb_s.nrows { asw_label(&emb_s, &lab_s)? } else { f64::NAN };
    rep.push("ASW_label", asw_l);
    let bio = avg_bio(sweep.best_nmi, sweep.best_ari, asw_l);
    rep.push("graph_connectivity", graph_connectivity(&conn, labels)?);
    if let Some(b) = &bat_s {
        match asw_batch(&emb_s, &lab_s, b) {
            Ok(v) => rep.push("ASW_batch", v),
            Err(e) => {
                rep.push("ASW_batch", f64::NAN);
                rep.note("ASW_batch", e);
            }
        }
    }
    if opts.lisi && k_all >= 3 {
        let perplexity = 30f64.min((k_all - 1) as f64 / 3.0);
        rep.push("cLISI", clisi_scaled(&g_all, labels, perplexity)?);
        if let Some(b) = batches {
            rep.push("iLISI", ilisi_scaled(&g_all, b, perplexity).unwrap_or(f64::NAN));
        }
        rep.note("lisi_perplexity", perplexity);
    }
    rep.push("Avg_bio", bio);
    if batches.is_some() {
        let ab = rep.get("ASW_batch").unwrap_or(f64::NAN);
        rep.push("S_final", s_final(bio, ab));
    }
    let pred = knn_predict(&g, labels)?;
    let cr = class_report(labels, &pred)?;
    rep.push("kNN_accuracy", cr.accuracy);
    rep.push("kNN_macro_F1", cr.macro_f1);
    rep.note("n_neighbors", opts.n_neighbors);
    rep.note("seed", opts.seed);
    Ok(rep)
}
