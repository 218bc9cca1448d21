//! Leiden and k-means on graphs / data with planted structure, and against leidenalg.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sclm_data::{CsrMatrix, Dense};
use sclm_eval::cluster::*;
use sclm_eval::metrics::adjusted_rand_index;
use sclm_eval::neighbors::{connectivities, knn};

/// A symmetric stochastic block model graph and its planted blocks.
fn sbm(blocks: &[usize], p_in: f64, p_out: f64, seed: u64) -> (CsrMatrix, Vec<usize>) {
    let truth: Vec<usize> = blocks.iter().enumerate().flat_map(|(b, &s)| std::iter::repeat_n(b, s)).collect();
    let n = truth.len();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut dense = Dense::<f32>::zeros(n, n);
    for i in 0..n {
        for j in i + 1..n {
            let p = if truth[i] == truth[j] { p_in } else { p_out };
            if rng.random::<f64>() < p {
                let w = 0.5 + rng.random::<f32>();
                dense.row_mut(i)[j] = w;
                dense.row_mut(j)[i] = w;
            }
        }
    }
    (CsrMatrix::from_dense(&dense), truth)
}

#[test]
fn leiden_recovers_planted_blocks() {
    let (g, truth) = sbm(&[60, 50, 40, 30], 0.3, 0.01, 7);
    for seed in 0..3 {
        let p = leiden(&g, &LeidenOptions { seed, ..Default::default() }).unwrap();
        let ari = adjusted_rand_index(&truth, &p.membership).unwrap();
        assert!(ari > 0.99, "seed {seed}: ARI {ari}, {} communities", p.n_communities);
        let q = modularity(&g, &p.membership, 1.0).unwrap();
        assert!((q - p.quality).abs() < 1e-12);
        assert!(q >= modularity(&g, &truth, 1.0).unwrap() - 1e-9, "at least the planted modularity");
    }
}

#[test]
fn leiden_is_deterministic_and_resolution_matters() {
    let (g, _) = sbm(&[40, 40, 40], 0.2, 0.03, 3);
    let a = leiden(&g, &LeidenOptions { seed: 5, ..Default::default() }).unwrap();
    let b = leiden(&g, &LeidenOptions { seed: 5, ..Default::default() }).unwrap();
    assert_eq!(a, b);
    let coarse = leiden(&g, &LeidenOptions { resolution: 0.05, ..Default::default() }).unwrap();
    let fine = leiden(&g, &LeidenOptions { resolution: 3.0, ..Default::default() }).unwrap();
    assert!(coarse.n_communities < a.n_communities || a.n_communities == 1);
    assert!(fine.n_communities > a.n_communities, "{} vs {}", fine.n_communities, a.n_communities);
    // Communities are numbered by decreasing size.
    let sizes: Vec<usize> =
        (0..fine.n_communities).map(|c| fine.membership.iter().filter(|&&m| m == c).count()).collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn leiden_modularity_at_least_leidenalg() {
    let p = format!("{}/tests/fixtures/neighbors.json", env!("CARGO_MANIFEST_DIR"));
    let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let rows: Vec<Vec<f32>> = j["x"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
        .collect();
    let x = Dense::from_vec(rows.len(), rows[0].len(), rows.concat()).unwrap();
    let c = connectivities(&knn(&x, 12, true).unwrap());
    let theirs = j["leiden_modularity"].as_f64().unwrap();
    let mut best = f64::NEG_INFINITY;
    for seed in 0..5 {
        best = best.max(leiden(&c, &LeidenOptions { seed, ..Default::default() }).unwrap().quality);
    }
    eprintln!("modularity: ours {best:.6}, leidenalg {theirs:.6}");
    assert!(best >= theirs - 2e-3, "ours {best} vs leidenalg {theirs}");
    let groups: Vec<i64> = j["groups"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let sw = leiden_sweep(&c, &groups, &default_resolutions(), 0).unwrap();
    assert_eq!(sw.points.len(), 14);
    assert!(sw.best_ari > 0.9 && sw.best_nmi > 0.9, "{sw:?}");
}

#[test]
fn kmeans_separates_blobs() {
    let mut rng = StdRng::seed_from_u64(1);
    let truth: Vec<usize> = (0..300).map(|i| i % 3).collect();
    let data: Vec<f32> = truth
        .iter()
        .flat_map(|&t| {
            let c = [0.0f32, 6.0, 12.0][t];
            (0..4).map(|_| c + rng.random::<f32>() - 0.5).collect::<Vec<_>>()
        })
        .collect();
    let x = Dense::from_vec(300, 4, data).unwrap();
    let km = kmeans(&x, 3, &KMeansOptions::default()).unwrap();
    assert_eq!(adjusted_rand_index(&truth, &km.labels).unwrap(), 1.0);
    assert!(km.inertia < 300.0 * 4.0 * 0.1, "inertia {}", km.inertia);
    assert_eq!(km, kmeans(&x, 3, &KMeansOptions::default()).unwrap(), "seeded");
    assert!(kmeans(&x, 0, &KMeansOptions::default()).is_err());
}
