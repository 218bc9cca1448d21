//! Compares the metrics with values computed by scikit-learn / scanpy / leidenalg
//! (scripts/fixtures/make_eval_fixtures.py).

use sclm_data::Dense;
use sclm_eval::metrics::*;
use sclm_eval::neighbors::{connectivities, knn};
use serde_json::Value;

fn load(name: &str) -> Value {
    let p = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}
fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}
fn fv(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}
fn sv(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}
fn iv(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}
fn dense(v: &Value) -> Dense<f32> {
    let rows: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(fv).collect();
    let nc = rows[0].len();
    Dense::from_vec(rows.len(), nc, rows.iter().flatten().map(|&x| x as f32).collect()).unwrap()
}
fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: ours {a} vs reference {b}");
}

#[test]
fn classification_matches_sklearn() {
    let j = load("classification.json");
    let (t, p) = (sv(&j["y_true"]), sv(&j["y_pred"]));
    let r = class_report(&t, &p).unwrap();
    close(accuracy(&t, &p).unwrap(), f(&j["accuracy"]), 1e-12, "accuracy");
    close(r.macro_f1, f(&j["f1_macro"]), 1e-12, "macro F1");
    close(r.weighted_f1, f(&j["f1_weighted"]), 1e-12, "weighted F1");
    close(r.macro_precision, f(&j["precision_macro"]), 1e-12, "macro precision");
    close(r.macro_recall, f(&j["recall_macro"]), 1e-12, "macro recall");
    for (a, b) in r.f1.iter().zip(fv(&j["f1_per_class"])) {
        close(*a, b, 1e-12, "per-class F1");
    }
    let cm = confusion_matrix(&t, &p).unwrap();
    let want: Vec<Vec<usize>> =
        j["confusion"].as_array().unwrap().iter().map(|r| iv(r).iter().map(|&x| x as usize).collect()).collect();
    assert_eq!(cm.counts, want);
    assert_eq!(cm.classes.len(), 5, "NK appears only among predictions but is a class");

    let bt: Vec<bool> = j["bin_true"].as_array().unwrap().iter().map(|x| x.as_bool().unwrap()).collect();
    let bs = fv(&j["bin_score"]);
    close(roc_auc(&bt, &bs).unwrap(), f(&j["roc_auc"]), 1e-12, "AUROC");
    close(average_precision(&bt, &bs).unwrap(), f(&j["average_precision"]), 1e-12, "AP");

    let yt: Vec<bool> = j["ml_true"].as_array().unwrap().iter().flat_map(iv).map(|x| x == 1).collect();
    let ys: Vec<f64> = j["ml_score"].as_array().unwrap().iter().flat_map(fv).collect();
    let m = multilabel_scores(&yt, &ys, 4).unwrap();
    for (a, b) in m.auroc.iter().zip(fv(&j["ml_auroc"])) {
        close(*a, b, 1e-12, "per-label AUROC");
    }
    for (a, b) in m.auprc.iter().zip(fv(&j["ml_auprc"])) {
        close(*a, b, 1e-12, "per-label AUPRC");
    }
    close(m.auroc_macro, f(&j["ml_auroc_macro"]), 1e-12, "macro AUROC");
    close(m.auroc_micro, f(&j["ml_auroc_micro"]), 1e-12, "micro AUROC");
    close(m.auprc_macro, f(&j["ml_auprc_macro"]), 1e-12, "macro AUPRC");
    close(m.auprc_micro, f(&j["ml_auprc_micro"]), 1e-12, "micro AUPRC");

    let sim: Vec<f64> = j["sim"].as_array().unwrap().iter().flat_map(fv).collect();
    let truth: Vec<usize> = iv(&j["sim_truth"]).iter().map(|&x| x as usize).collect();
    for k in [1usize, 5, 10] {
        let want = f(&j["recall_at_k"][k.to_string()]);
        close(recall_at_k(&sim, 40, &truth, k).unwrap(), want, 1e-12, "recall@k");
    }
}

fn check_scores(s: &RegressionScores, v: &Value, what: &str) {
    let opt = |x: &Value| x.as_f64().unwrap_or(f64::NAN);
    close(s.rmse, f(&v["rmse"]), 1e-6, what);
    close(s.mae, f(&v["mae"]), 1e-6, what);
    close(s.cosine, f(&v["cosine"]), 1e-6, what);
    close(s.r2, f(&v["r2"]), 1e-6, what);
    for (a, b) in [(s.pearson, opt(&v["pearson"])), (s.spearman, opt(&v["spearman"]))] {
        if b.is_nan() {
            assert!(a.is_nan(), "{what}: expected NaN correlation, got {a}");
        } else {
            close(a, b, 1e-6, what);
        }
    }
}

#[test]
fn regression_matches_sklearn_and_scipy() {
    let j = load("regression.json");
    let (t, p) = (dense(&j["truth"]), dense(&j["pred"]));
    let r = regression_report(&t, &p).unwrap();
    check_scores(&r.overall, &j["overall"], "overall");
    for (g, v) in r.per_gene.iter().zip(j["per_gene"].as_array().unwrap()) {
        check_scores(g, v, "per gene");
    }
    assert_eq!(r.per_gene.len(), 6);
    assert!(r.per_gene_mean.pearson.is_finite(), "NaN columns are ignored in the mean");
}

#[test]
fn clustering_matches_sklearn() {
    for c in load("clustering.json").as_array().unwrap() {
        let (a, b) = (iv(&c["a"]), iv(&c["b"]));
        close(adjusted_rand_index(&a, &b).unwrap(), f(&c["ari"]), 1e-12, "ARI");
        close(normalized_mutual_info(&a, &b).unwrap(), f(&c["nmi"]), 1e-12, "NMI");
    }
}

#[test]
fn integration_metrics_match_reference() {
    let j = load("integration.json");
    let x = dense(&j["x"]);
    let (lab, bat) = (sv(&j["labels"]), sv(&j["batches"]));
    let s = silhouette_samples(&x, &lab).unwrap();
    for (a, b) in s.iter().zip(fv(&j["silhouette_samples"])) {
        close(*a, b, 1e-9, "silhouette sample");
    }
    close(silhouette_score(&x, &lab).unwrap(), f(&j["silhouette_score"]), 1e-9, "silhouette score");
    close(asw_label(&x, &lab).unwrap(), (f(&j["silhouette_score"]) + 1.0) / 2.0, 1e-9, "ASW label");
    close(asw_batch(&x, &lab, &bat).unwrap(), f(&j["asw_batch"]), 1e-9, "ASW batch");

    let k = j["knn_k"].as_u64().unwrap() as usize;
    let g = knn(&x, k, true).unwrap();
    let want_idx: Vec<u32> = j["knn_indices"].as_array().unwrap().iter().flat_map(iv).map(|v| v as u32).collect();
    assert_eq!(g.indices, want_idx, "exact kNN agrees with sklearn");
    let want_d: Vec<f64> = j["knn_distances"].as_array().unwrap().iter().flat_map(fv).collect();
    for (a, b) in g.distances.iter().zip(&want_d) {
        close(*a as f64, *b, 1e-5, "kNN distance");
    }
    let perp = f(&j["perplexity"]);
    for (a, b) in lisi(&g, &bat, perp).unwrap().iter().zip(fv(&j["lisi_batch"])) {
        close(*a, b, 1e-4, "iLISI per cell");
    }
    for (a, b) in lisi(&g, &lab, perp).unwrap().iter().zip(fv(&j["lisi_label"])) {
        close(*a, b, 1e-4, "cLISI per cell");
    }
    close(ilisi_scaled(&g, &bat, perp).unwrap(), f(&j["ilisi_scaled"]), 1e-4, "iLISI scaled");
    close(clisi_scaled(&g, &lab, perp).unwrap(), f(&j["clisi_scaled"]), 1e-4, "cLISI scaled");
}

#[test]
fn connectivities_match_scanpy() {
    let j = load("neighbors.json");
    let x = dense(&j["x"]);
    let k = j["n_neighbors"].as_u64().unwrap() as usize;
    let g = knn(&x, k, true).unwrap();
    let c = connectivities(&g);
    let ip: Vec<usize> = iv(&j["conn_indptr"]).iter().map(|&v| v as usize).collect();
    let ix: Vec<u32> = iv(&j["conn_indices"]).iter().map(|&v| v as u32).collect();
    let dv = fv(&j["conn_data"]);
    assert_eq!(c.indptr, ip, "same sparsity pattern");
    assert_eq!(c.indices, ix, "same sparsity pattern");
    let worst = c.data.iter().zip(&dv).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-4, "max connectivity difference {worst}");
    let labels = sv(&j["labels"]);
    close(graph_connectivity(&c, &labels).unwrap(), f(&j["graph_connectivity"]), 1e-12, "graph connectivity");
    assert!(f(&j["graph_connectivity"]) < 1.0, "fixture has a disconnected label");
}
