//! evaluate_embedding, UMAP, plots and task protocols on synthetic data.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, Poisson};
use sclm_data::{CsrMatrix, Dense, Matrix};
use sclm_eval::neighbors::{connectivities, knn};
use sclm_eval::protocols::*;
use sclm_eval::report::knn_predict;
use sclm_eval::umap::{fit_ab, umap, UmapOptions};
use sclm_eval::{evaluate_embedding, scatter_png, ColorBy, EvaluateOptions, MetricsReport};

/// Gaussian blobs: `k` types × `b` batches, `per` cells each, batch shift `shift`.
fn blobs(k: usize, b: usize, per: usize, shift: f32, seed: u64) -> (Dense<f32>, Vec<String>, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let nrm = Normal::new(0.0f32, 1.0).unwrap();
    let d = 10;
    let mut data = Vec::new();
    let (mut labels, mut batches) = (Vec::new(), Vec::new());
    for t in 0..k {
        for bb in 0..b {
            for _ in 0..per {
                for j in 0..d {
                    let centre = if j == t { 8.0 } else { 0.0 };
                    let bshift = if j == d - 1 { shift * bb as f32 } else { 0.0 };
                    data.push(centre + bshift + nrm.sample(&mut rng));
                }
                labels.push(format!("type{t}"));
                batches.push(format!("batch{bb}"));
            }
        }
    }
    (Dense::from_vec(labels.len(), d, data).unwrap(), labels, batches)
}

#[test]
fn evaluate_embedding_scores_mixed_batches_above_separated_ones() {
    let opts = EvaluateOptions::default();
    let (x, l, b) = blobs(4, 2, 40, 0.0, 1);
    let mixed = evaluate_embedding(&x, &l, Some(&b), &opts).unwrap();
    let (y, l2, b2) = blobs(4, 2, 40, 12.0, 1);
    let split = evaluate_embedding(&y, &l2, Some(&b2), &opts).unwrap();
    for r in [&mixed, &split] {
        for m in [
            "ARI",
            "NMI",
            "ASW_label",
            "ASW_batch",
            "graph_connectivity",
            "Avg_bio",
            "S_final",
            "kNN_accuracy",
            "cLISI",
            "iLISI",
        ] {
            let v = r.get(m).unwrap_or_else(|| panic!("missing {m}: {}", r.to_table()));
            assert!((0.0..=1.0 + 1e-12).contains(&v), "{m} = {v}");
        }
        let bio = (r.get("ARI").unwrap() + r.get("NMI").unwrap() + r.get("ASW_label").unwrap()) / 3.0;
        assert!((r.get("Avg_bio").unwrap() - bio).abs() < 1e-12);
        let s = 0.6 * bio + 0.4 * r.get("ASW_batch").unwrap();
        assert!((r.get("S_final").unwrap() - s).abs() < 1e-12);
    }
    assert!(mixed.get("ARI").unwrap() > 0.95, "{}", mixed.to_table());
    assert!(mixed.get("kNN_accuracy").unwrap() > 0.97);
    assert!(mixed.get("ASW_batch").unwrap() > split.get("ASW_batch").unwrap() + 0.2);
    assert!(mixed.get("iLISI").unwrap() > split.get("iLISI").unwrap() + 0.3);
    // JSON round trip and table.
    let back: MetricsReport = serde_json::from_str(&mixed.to_json()).unwrap();
    assert_eq!(back, mixed);
    let t = mixed.to_table();
    assert!(t.contains("S_final") && t.contains("320 cells"), "{t}");
    // Without batches: no batch metrics.
    let nb = evaluate_embedding(&x, &l, None, &opts).unwrap();
    assert!(nb.get("ASW_batch").is_none() && nb.get("S_final").is_none());
    assert!(evaluate_embedding(&x, &l[..10], None, &opts).is_err());
}

#[test]
fn knn_classifier_votes_by_majority() {
    let x = Dense::from_vec(6, 1, vec![0.0, 0.1, 0.2, 5.0, 5.1, 5.3]).unwrap();
    let labels = ["a", "a", "b", "c", "c", "c"];
    let g = knn(&x, 3, true).unwrap();
    let p = knn_predict(&g, &labels).unwrap();
    assert_eq!(p, vec!["a", "a", "a", "c", "c", "c"]);
}

#[test]
fn umap_is_deterministic_and_keeps_clusters_apart() {
    let (x, l, _) = blobs(3, 1, 60, 0.0, 4);
    let conn = connectivities(&knn(&x, 15, true).unwrap());
    let opts = UmapOptions { n_epochs: Some(200), ..Default::default() };
    let a = umap(&x, &conn, &opts).unwrap();
    assert_eq!(a, umap(&x, &conn, &opts).unwrap());
    assert_eq!((a.nrows, a.ncols), (180, 2));
    assert!(a.data.iter().all(|v| v.is_finite()));
    // Clusters stay separated in 2-D: leave-one-out kNN on the layout is near perfect.
    let p = knn_predict(&knn(&a, 10, true).unwrap(), &l).unwrap();
    let acc = p.iter().zip(&l).filter(|(a, b)| a == b).count() as f64 / l.len() as f64;
    assert!(acc > 0.97, "accuracy in the layout {acc}");
    let other = umap(&x, &conn, &UmapOptions { seed: 1, ..opts }).unwrap();
    assert_ne!(a, other);
}

#[test]
fn fitted_curve_parameters_match_umap_learn() {
    let (a, b) = fit_ab(0.1, 1.0);
    assert!((a - 1.577).abs() < 0.02 && (b - 0.895).abs() < 0.01, "a={a} b={b}");
}

#[test]
fn scatter_png_writes_images() {
    let dir = tempfile::tempdir().unwrap();
    let (x, l, _) = blobs(3, 1, 20, 0.0, 2);
    let p = dir.path().join("cat.png");
    scatter_png(&x, &ColorBy::Categorical(l.clone()), "test", &p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let num: Vec<f64> = (0..60).map(|i| if i == 3 { f64::NAN } else { i as f64 }).collect();
    let q = dir.path().join("num.png");
    scatter_png(&x, &ColorBy::Numeric(num), "numeric", &q).unwrap();
    assert!(std::fs::metadata(&q).unwrap().len() > 1000);
    assert!(scatter_png(&x, &ColorBy::Categorical(l[..5].to_vec()), "bad", &p).is_err());
    let bad = dir.path().join("no/such/dir/x.png");
    let e = scatter_png(&x, &ColorBy::None, "t", &bad).unwrap_err().to_string();
    assert!(e.contains("x.png"), "{e}");
}

fn counts(n: usize, g: usize, seed: u64) -> CsrMatrix {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut d = Dense::<f32>::zeros(n, g);
    for i in 0..n {
        for j in 0..g {
            let lam = 0.05 + 30.0 * ((j % 7) as f64 / 7.0).powi(3);
            d.row_mut(i)[j] = Poisson::new(lam).unwrap().sample(&mut rng) as f32;
        }
    }
    // A cell with only 3 expressed genes is never masked.
    d.row_mut(0).iter_mut().enumerate().for_each(|(j, v)| *v = if j < 3 { 1.0 } else { 0.0 });
    CsrMatrix::from_dense(&d)
}

#[test]
fn dropout_masks_ten_percent_favouring_low_counts() {
    let x = counts(200, 60, 3);
    let (masked, mask) = simulate_dropout(&x, &DropoutOptions::default()).unwrap();
    assert!(mask.cells.iter().all(|&c| c != 0), "cells with < 5 genes are untouched");
    for i in 1..x.nrows {
        let nz = x.row(i).0.len();
        let m = mask.cells.iter().filter(|&&c| c as usize == i).count();
        assert_eq!(m, (0.1 * nz as f64).round() as usize);
        assert_eq!(masked.row(i).0.len(), nz - m);
    }
    assert_eq!(masked.nnz() + mask.len(), x.nnz());
    // Masked entries held their original counts and are gone from the masked matrix.
    for k in 0..mask.len() {
        let (i, j) = (mask.cells[k] as usize, mask.genes[k]);
        let (idx, val) = x.row(i);
        let p = idx.binary_search(&j).unwrap();
        assert_eq!(val[p], mask.values[k]);
        assert!(masked.row(i).0.binary_search(&j).is_err());
    }
    let mean_masked = mask.values.iter().map(|&v| v as f64).sum::<f64>() / mask.len() as f64;
    let mean_all = x.data.iter().map(|&v| v as f64).sum::<f64>() / x.nnz() as f64;
    assert!(mean_masked < mean_all, "exp(-x/20) favours low counts: {mean_masked} vs {mean_all}");
    let again = simulate_dropout(&x, &DropoutOptions::default()).unwrap();
    assert_eq!(again.1, mask, "seeded");
    // Scoring the truth itself is perfect; scoring zeros is not.
    let truth = Matrix::Csr(x.clone());
    let s = masked_entry_scores(&truth, &x.to_dense(), &mask).unwrap();
    assert_eq!(s.rmse, 0.0);
    let z = masked_entry_scores(&truth, &masked.to_dense(), &mask).unwrap();
    assert!(z.rmse > 0.5);
}

#[test]
fn sparsity_holdout_samples_each_group() {
    let n = 100;
    let g = 400;
    let mut d = Dense::<f32>::zeros(n, g);
    for j in 0..g {
        let nonzero = j % 40; // 0..39 non-zero cells: 61%..100% zeros
        for i in 0..nonzero {
            d.row_mut(i)[j] = 1.0;
        }
    }
    let h = sparsity_holdout(&Matrix::Dense(d), 25, 9).unwrap();
    let bounds = [(0.0, 75.0), (75.0, 90.0), (90.0, 95.0), (95.0, 101.0)];
    for (k, grp) in h.groups.iter().enumerate() {
        assert_eq!(grp.len(), 25, "group {k}");
        assert!(grp.iter().all(|&j| h.zero_percent[j] >= bounds[k].0 && h.zero_percent[j] < bounds[k].1));
    }
    assert_eq!(h.held_out.len(), 100);
}

#[test]
fn splits_are_stratified_disjoint_and_seeded() {
    let labels: Vec<String> = (0..300).map(|i| format!("t{}", i % 3)).collect();
    let s = stratified_split(&labels, 0.1, 0.3, 5).unwrap();
    assert_eq!(s.train.len() + s.valid.len() + s.test.len(), 300);
    assert_eq!(s.test.len(), 90);
    assert_eq!(s.valid.len(), 30);
    for t in ["t0", "t1", "t2"] {
        assert_eq!(s.test.iter().filter(|&&i| labels[i] == t).count(), 30);
    }
    let mut all: Vec<usize> = s.train.iter().chain(&s.valid).chain(&s.test).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 300);
    assert_eq!(s, stratified_split(&labels, 0.1, 0.3, 5).unwrap());
    assert_ne!(s, stratified_split(&labels, 0.1, 0.3, 6).unwrap());
    let col: Vec<String> = ["train", "Test", "val"].iter().map(|s| s.to_string()).collect();
    let c = split_from_column(&col).unwrap();
    assert_eq!((c.train, c.valid, c.test), (vec![0], vec![2], vec![1]));
    assert!(split_from_column(&["holdout".to_string()]).unwrap_err().to_string().contains("holdout"));
}

#[test]
fn perturbation_split_keeps_test_perturbations_unseen() {
    let mut rng = StdRng::seed_from_u64(1);
    let conds: Vec<String> = (0..800)
        .map(|_| {
            let k = rng.random_range(0..21);
            if k == 0 {
                "ctrl".to_string()
            } else {
                format!("G{k}+ctrl")
            }
        })
        .collect();
    let s = perturbation_split(&conds, "ctrl", 0.25, 0.1, 0).unwrap();
    assert_eq!(s.test_perturbations.len(), 5);
    assert_eq!(s.valid_perturbations.len(), 2);
    assert_eq!(s.train_perturbations.len(), 13);
    for &i in &s.cells.test {
        assert!(s.test_perturbations.contains(&conds[i]));
    }
    for &i in &s.cells.train {
        assert!(!s.test_perturbations.contains(&conds[i]) && !s.valid_perturbations.contains(&conds[i]));
    }
    assert!(s.cells.train.iter().any(|&i| conds[i] == "ctrl"));

    let ctrl = vec![1.0f32; 30];
    let mut truth = BTreeMap::new();
    let mut pred = BTreeMap::new();
    let mut t = ctrl.clone();
    t[4] = 5.0; // the one strongly changed gene
    truth.insert("G1+ctrl".to_string(), t.clone());
    let mut p = t.clone();
    p[4] = 3.0; // misses it by 2
    pred.insert("G1+ctrl".to_string(), p);
    let (per, all, de) = perturbation_rmse(&truth, &pred, &ctrl, 20).unwrap();
    assert_eq!(per.len(), 1);
    assert!((all - (4.0f64 / 30.0).sqrt()).abs() < 1e-9);
    assert!((de - (4.0f64 / 20.0).sqrt()).abs() < 1e-9);
    pred.clear();
    assert!(perturbation_rmse(&truth, &pred, &ctrl, 20).is_err());
}

#[test]
fn nndescent_recall_against_exact() {
    use sclm_eval::nndescent::{knn_nndescent, NnDescentOptions};
    let (x, _, _) = blobs(5, 1, 400, 0.0, 8);
    let exact = knn(&x, 15, true).unwrap();
    let approx = knn_nndescent(&x, 15, true, &NnDescentOptions::default()).unwrap();
    let mut hits = 0;
    for i in 0..x.nrows {
        let e = exact.row(i).0;
        hits += approx.row(i).0.iter().filter(|j| e.contains(j)).count();
        assert_eq!(approx.row(i).0[0] as usize, i);
        assert!(approx.row(i).1.windows(2).all(|w| w[0] <= w[1]));
    }
    let recall = hits as f64 / (x.nrows * 15) as f64;
    assert!(recall > 0.95, "recall {recall}");
    assert_eq!(approx, knn_nndescent(&x, 15, true, &NnDescentOptions::default()).unwrap());
}

#[test]
fn unseen_gene_categories_of_combinations() {
    let train: Vec<String> = ["A+ctrl", "B+ctrl", "A+B"].iter().map(|s| s.to_string()).collect();
    assert_eq!(condition_genes("A+ctrl", "ctrl"), vec!["A"]);
    assert_eq!(unseen_gene_count("A+B", &train, "ctrl"), 0);
    assert_eq!(unseen_gene_count("A+C", &train, "ctrl"), 1);
    assert_eq!(unseen_gene_count("C+D", &train, "ctrl"), 2);
}
