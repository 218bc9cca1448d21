//! Clustering: Leiden on a neighbour graph (with CellPLM's resolution sweep) and k-means.

mod kmeans;
mod leiden;

pub use kmeans::{kmeans, KMeans, KMeansOptions};
pub use leiden::{leiden, modularity, LeidenOptions, Partition};

use sclm_data::CsrMatrix;
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};
use crate::metrics::{adjusted_rand_index, normalized_mutual_info};

/// The resolutions CellPLM's evaluation sweeps: 0.1, 0.2, …, 1.4.
pub fn default_resolutions() -> Vec<f64> {
    (1..=14).map(|i| i as f64 / 10.0).collect()
}

/// One resolution of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// Resolution used.
    pub resolution: f64,
    /// Number of clusters found.
    pub n_clusters: usize,
    /// ARI against the labels.
    pub ari: f64,
    /// NMI against the labels.
    pub nmi: f64,
}

/// A Leiden resolution sweep scored against labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    /// Every resolution tried, in order.
    pub points: Vec<SweepPoint>,
    /// Best ARI over the sweep.
    pub best_ari: f64,
    /// Resolution giving the best ARI.
    pub best_ari_resolution: f64,
    /// Best NMI over the sweep.
    pub best_nmi: f64,
    /// Resolution giving the best NMI.
    pub best_nmi_resolution: f64,
    /// Clusters at the best-ARI resolution.
    pub best_ari_membership: Vec<usize>,
}

/// Runs Leiden at each resolution and keeps the best ARI and NMI against `labels`
/// (each maximised separately, as CellPLM reports them).
pub fn leiden_sweep<T: Ord + Clone>(adj: &CsrMatrix, labels: &[T], resolutions: &[f64], seed: u64) -> Result<Sweep> {
    if resolutions.is_empty() {
        return invalid("Leiden sweep: no resolutions given");
    }
    let mut points = Vec::new();
    let mut best_membership = Vec::new();
    let (mut ba, mut bar, mut bn, mut bnr) = (f64::NEG_INFINITY, 0.0, f64::NEG_INFINITY, 0.0);
    for &r in resolutions {
        let p = leiden(adj, &LeidenOptions { resolution: r, iterations: -1, seed })?;
        let ari = adjusted_rand_index(labels, &p.membership)?;
        let nmi = normalized_mutual_info(labels, &p.membership)?;
        if ari > ba {
            ba = ari;
            bar = r;
            best_membership = p.membership.clone();
        }
        if nmi > bn {
            bn = nmi;
            bnr = r;
        }
        points.push(SweepPoint { resolution: r, n_clusters: p.n_communities, ari, nmi });
    }
    Ok(Sweep {
        points,
        best_ari: ba,
        best_ari_resolution: bar,
        best_nmi: bn,
        best_nmi_resolution: bnr,
        best_ari_membership: best_membership,
    })
}
