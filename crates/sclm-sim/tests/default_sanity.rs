//! The default simulation looks like a PBMC-like dataset: types recognisable but not
//! trivially so, batches visible, realistic depth and sparsity.

use sclm_data::{Column, Matrix};
use sclm_sim::{simulate, SimConfig};

/// scanpy-style PCA embedding: normalise to the median total, log1p, the 500 most variable
/// genes (seurat flavour), 20 principal components.
fn embed(x: &Matrix) -> sclm_data::Dense<f32> {
    let lognorm = sclm_eval::baselines::log_normalize(x).unwrap();
    sclm_eval::baselines::pca_embedding(&lognorm, 20, Some(500), 0).unwrap().0
}

/// Leave-one-out 15-nearest-neighbour predictions (Euclidean, majority vote).
fn knn_predict(e: &sclm_data::Dense<f32>, labels: &[i32]) -> Vec<i32> {
    let g = sclm_eval::neighbors::knn(e, 16, true).unwrap();
    sclm_eval::report::knn_predict(&g, labels).unwrap()
}

fn accuracy(pred: &[i32], labels: &[i32]) -> f64 {
    pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

fn codes(c: &Column) -> Vec<i32> {
    match c {
        Column::Categorical { codes, .. } => codes.clone(),
        _ => panic!("expected categorical"),
    }
}

#[test]
fn default_simulation_is_realistic_and_learnable_but_not_trivial() {
    let cfg = SimConfig::default();
    let sim = simulate(&cfg).unwrap();
    let x = match &sim.adata.x {
        Matrix::Csr(c) => c,
        _ => panic!(),
    };
    let nz = x.nnz() as f64 / (x.nrows * x.ncols) as f64;
    let mut totals: Vec<f64> = (0..x.nrows).map(|i| x.row(i).1.iter().map(|&v| v as f64).sum()).collect();
    totals.sort_by(|a, b| a.total_cmp(b));
    let median = totals[totals.len() / 2];
    let e = embed(&sim.adata.x);
    let types = codes(sim.adata.obs.get("cell_type").unwrap());
    let batches = codes(sim.adata.obs.get("batch").unwrap());
    let type_pred = knn_predict(&e, &types);
    let type_acc = accuracy(&type_pred, &types);
    // Types of one lineage resemble each other: most mistakes stay within the lineage.
    let lineage_of = &sim.truth.type_lineage;
    let wrong: Vec<(i32, i32)> = type_pred.iter().zip(&types).filter(|(p, l)| p != l).map(|(p, l)| (*p, *l)).collect();
    let within = wrong.iter().filter(|(p, l)| lineage_of[*p as usize] == lineage_of[*l as usize]).count();
    let within_frac = within as f64 / wrong.len().max(1) as f64;
    let batch_acc = accuracy(&knn_predict(&e, &batches), &batches);
    eprintln!(
        "non-zero {nz:.3}, median library {median:.0}, type kNN {type_acc:.3} ({within_frac:.2} of errors within lineage), batch kNN {batch_acc:.3}"
    );
    assert!(within_frac > 0.6, "only {within_frac} of type errors stay within the lineage");
    assert!((0.10..0.25).contains(&nz), "non-zero fraction {nz}");
    assert!((2000.0..8000.0).contains(&median), "median library size {median}");
    assert!(type_acc > 0.7 && type_acc < 0.995, "cell-type kNN accuracy {type_acc}");
    // Two equal batches: chance is 0.5.
    assert!(batch_acc > 0.75, "batch kNN accuracy {batch_acc}");
}
