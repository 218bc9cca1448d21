//! The default simulation looks like a PBMC-like dataset: types recognisable but not
//! trivially so, batches visible, realistic depth and sparsity.

use sclm_data::{Column, Matrix};
use sclm_sim::{simulate, SimConfig};

/// Log-normalised (counts per 10k, log1p), top-variance genes, centred.
fn embed(x: &sclm_data::CsrMatrix, n_top: usize) -> Vec<Vec<f64>> {
    let (n, g) = (x.nrows, x.ncols);
    let mut d = vec![vec![0.0f64; g]; n];
    for (i, row) in d.iter_mut().enumerate() {
        let (idx, val) = x.row(i);
        let s: f64 = val.iter().map(|&v| v as f64).sum();
        for (&j, &v) in idx.iter().zip(val) {
            row[j as usize] = (v as f64 / s * 1e4).ln_1p();
        }
    }
    let mean: Vec<f64> = (0..g).map(|j| d.iter().map(|r| r[j]).sum::<f64>() / n as f64).collect();
    let var: Vec<f64> = (0..g).map(|j| d.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n as f64).collect();
    let mut order: Vec<usize> = (0..g).collect();
    order.sort_by(|&a, &b| var[b].total_cmp(&var[a]));
    let top = &order[..n_top.min(g)];
    d.iter().map(|r| top.iter().map(|&j| r[j] - mean[j]).collect()).collect()
}

/// Projects centred data on its top `k` principal components (subspace iteration on the
/// covariance matrix, Gram–Schmidt orthonormalisation).
#[allow(clippy::needless_range_loop)]
fn pca(e: &[Vec<f64>], k: usize) -> Vec<Vec<f64>> {
    let p = e[0].len();
    let mut c = vec![vec![0.0; p]; p];
    for r in e {
        for a in 0..p {
            if r[a] == 0.0 {
                continue;
            }
            for b in a..p {
                c[a][b] += r[a] * r[b];
            }
        }
    }
    for a in 0..p {
        for b in 0..a {
            let v = c[b][a];
            c[a][b] = v;
        }
    }
    // Deterministic start: a fixed pseudo-random matrix.
    let mut q: Vec<Vec<f64>> =
        (0..k).map(|i| (0..p).map(|j| (((i * 7919 + j * 104729) % 1000) as f64 / 1000.0) - 0.5).collect()).collect();
    for _ in 0..40 {
        let mut z: Vec<Vec<f64>> = q.iter().map(|v| c.iter().map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum()).collect()).collect();
        for i in 0..k {
            for j in 0..i {
                let d: f64 = z[i].iter().zip(&z[j]).map(|(a, b)| a * b).sum();
                let zj = z[j].clone();
                for (a, b) in z[i].iter_mut().zip(&zj) {
                    *a -= d * b;
                }
            }
            let n: f64 = z[i].iter().map(|a| a * a).sum::<f64>().sqrt();
            for a in z[i].iter_mut() {
                *a /= n;
            }
        }
        q = z;
    }
    e.iter().map(|r| q.iter().map(|v| r.iter().zip(v).map(|(a, b)| a * b).sum()).collect()).collect()
}

/// Leave-one-out k-nearest-neighbour accuracy (Euclidean, majority vote).
fn knn_accuracy(e: &[Vec<f64>], labels: &[i32], k: usize) -> f64 {
    let pred = knn_predict(e, labels, k);
    pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

/// Leave-one-out k-nearest-neighbour predictions (Euclidean, majority vote).
fn knn_predict(e: &[Vec<f64>], labels: &[i32], k: usize) -> Vec<i32> {
    let n = e.len();
    let mut pred = Vec::with_capacity(n);
    for i in 0..n {
        let mut d: Vec<(f64, usize)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (e[i].iter().zip(&e[j]).map(|(a, b)| (a - b) * (a - b)).sum::<f64>(), j))
            .collect();
        d.select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0));
        let mut votes = std::collections::HashMap::new();
        for &(_, j) in &d[..k] {
            *votes.entry(labels[j]).or_insert(0) += 1;
        }
        let best = votes.iter().max_by_key(|(l, c)| (**c, -**l)).map(|(l, _)| *l).unwrap();
        pred.push(best);
    }
    pred
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
    let e = pca(&embed(x, 500), 20);
    let types = codes(sim.adata.obs.get("cell_type").unwrap());
    let batches = codes(sim.adata.obs.get("batch").unwrap());
    let type_pred = knn_predict(&e, &types, 15);
    let type_acc = type_pred.iter().zip(&types).filter(|(p, l)| p == l).count() as f64 / types.len() as f64;
    // Types of one lineage resemble each other: most mistakes stay within the lineage.
    let lineage_of = &sim.truth.type_lineage;
    let wrong: Vec<(i32, i32)> = type_pred.iter().zip(&types).filter(|(p, l)| p != l).map(|(p, l)| (*p, *l)).collect();
    let within = wrong.iter().filter(|(p, l)| lineage_of[*p as usize] == lineage_of[*l as usize]).count();
    let within_frac = within as f64 / wrong.len().max(1) as f64;
    let batch_acc = knn_accuracy(&e, &batches, 15);
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
