//! Classical baselines: logistic regression against scikit-learn, PCA embedding, denoising
//! and imputation on synthetic data.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Poisson};
use sclm_data::{CsrMatrix, Dense, Matrix};
use sclm_eval::baselines::*;
use sclm_eval::cluster::{kmeans, KMeansOptions};
use sclm_eval::metrics::{adjusted_rand_index, rmse};
use sclm_eval::protocols::stratified_split;

fn load(name: &str) -> serde_json::Value {
    let p = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn logistic_regression_matches_sklearn() {
    let j = load("logreg.json");
    let rows: Vec<Vec<f32>> = j["x"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
        .collect();
    let x = Dense::from_vec(rows.len(), 4, rows.concat()).unwrap();
    let y: Vec<String> = j["y"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let opts = LogRegOptions { c: j["c"].as_f64().unwrap(), tol: 1e-9, standardize: true, ..Default::default() };
    let m = LogisticRegression::fit(&x, &y, &opts).unwrap();
    assert!(m.converged, "{} iterations", m.iterations);
    let p = m.predict_proba(&x).unwrap();
    let want: Vec<f64> = j["proba"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let worst = p.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-5, "max probability difference {worst}");
    let coef: Vec<f64> = j["coef"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let worst = m.coef.iter().zip(&coef).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-4, "max coefficient difference {worst}");
    assert!(LogisticRegression::fit(&x, &vec!["a".to_string(); 90], &opts).is_err());
}

/// Counts of `k` cell types (each with its own marker genes), `per` cells each.
fn typed_counts(k: usize, per: usize, g: usize, seed: u64) -> (Matrix, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut d = Dense::<f32>::zeros(k * per, g);
    let mut labels = Vec::new();
    for t in 0..k {
        for c in 0..per {
            let i = t * per + c;
            for j in 0..g {
                let lam = if j % k == t && j < 10 * k { 12.0 } else { 1.0 };
                d.row_mut(i)[j] = Poisson::new(lam).unwrap().sample(&mut rng) as f32;
            }
            labels.push(format!("type{t}"));
        }
    }
    (Matrix::Csr(CsrMatrix::from_dense(&d)), labels)
}

#[test]
fn pca_embedding_and_annotation_baseline_separate_types() {
    let (x, labels) = typed_counts(3, 60, 200, 1);
    let ln = log_normalize(&x).unwrap();
    let (emb, genes) = pca_embedding(&ln, 10, Some(50), 0).unwrap();
    assert_eq!((emb.nrows, emb.ncols), (180, 10));
    assert_eq!(genes.len(), 50);
    let km = kmeans(&emb, 3, &KMeansOptions::default()).unwrap();
    assert!(adjusted_rand_index(&labels, &km.labels).unwrap() > 0.95);
    let split = stratified_split(&labels, 0.0, 0.3, 0).unwrap();
    let rep = annotation_baseline(&emb, &labels, &split, "PCA-10 + logreg", &LogRegOptions::default()).unwrap();
    assert!(rep.get("macro_F1").unwrap() > 0.95, "{}", rep.to_table());
    assert_eq!(rep.n_cells, 54);
}

#[test]
fn diffusion_denoise_moves_noisy_values_towards_truth() {
    let mut rng = StdRng::seed_from_u64(2);
    let nrm = Normal::new(0.0f32, 1.0).unwrap();
    let n = 150;
    let g = 20;
    let truth: Vec<f32> = (0..n).flat_map(|i| (0..g).map(move |j| if (i / 50) == j % 3 { 3.0 } else { 0.0 })).collect();
    let truth = Dense::from_vec(n, g, truth).unwrap();
    let noisy = Dense::from_vec(n, g, truth.data.iter().map(|v| v + nrm.sample(&mut rng)).collect()).unwrap();
    let den = diffusion_denoise(&noisy, &noisy, &DenoiseOptions::default()).unwrap();
    let before = rmse(&truth.data, &noisy.data).unwrap();
    let after = rmse(&truth.data, &den.data).unwrap();
    assert!(after < 0.5 * before, "RMSE {before} -> {after}");
}

#[test]
fn knn_imputation_beats_the_mean() {
    let (x, _) = typed_counts(3, 60, 120, 3);
    let d = log_normalize(&x).unwrap().to_dense();
    // Half of the marker genes are held out; the other half stay shared.
    let target: Vec<usize> = (0..30).step_by(2).collect();
    let shared: Vec<usize> = (0..120).filter(|j| !(j % 2 == 0 && *j < 30)).collect();
    let rows_ref: Vec<usize> = (0..180).filter(|i| i % 3 != 0).collect();
    let rows_q: Vec<usize> = (0..180).filter(|i| i % 3 == 0).collect();
    let r = d.select_rows(&rows_ref);
    let q = d.select_rows(&rows_q);
    let truth = q.select_cols(&target);
    let knn = knn_impute(&r.select_cols(&shared), &r.select_cols(&target), &q.select_cols(&shared), 10).unwrap();
    let mean = mean_impute(&r.select_cols(&target), q.nrows);
    let (ek, em) = (rmse(&truth.data, &knn.data).unwrap(), rmse(&truth.data, &mean.data).unwrap());
    assert!(ek < 0.8 * em, "kNN {ek} vs mean {em}");
}
