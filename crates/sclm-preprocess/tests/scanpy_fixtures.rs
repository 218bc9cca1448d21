//! Compares sclm-preprocess with scanpy on the fixture written by
//! scripts/fixtures/make_preprocess_fixtures.py.

use sclm_data::{AnnData, Column, CsrMatrix, Matrix};
use sclm_preprocess::hvg::{highly_variable_genes, HvgFlavor, HvgOptions};
use sclm_preprocess::loess::{loess_fit, LoessOptions, Surface};
use sclm_preprocess::normalize::{log1p, normalize_total, scale, NormalizeOptions};
use sclm_preprocess::qc::{calculate_qc_metrics, filter_cells, filter_genes, CellFilter, GeneFilter, QcOptions};
use serde_json::Value as J;

fn fixture() -> J {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/scanpy_preprocess.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture present")).expect("fixture parses")
}

fn f64s(v: &J) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()
}

fn usizes(v: &J) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn bools(v: &J) -> Vec<bool> {
    v.as_array().unwrap().iter().map(|x| x.as_bool().unwrap()).collect()
}

/// Largest relative error (|a-b| / max(|b|, floor)); NaN must match NaN.
fn max_rel(a: &[f64], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if y.is_nan() || x.is_nan() {
                assert!(x.is_nan() && y.is_nan(), "NaN mismatch: {x} vs {y}");
                0.0
            } else {
                (x - y).abs() / y.abs().max(floor)
            }
        })
        .fold(0.0, f64::max)
}

fn col(adata: &AnnData, df: &str, name: &str) -> Vec<f64> {
    let frame = if df == "obs" { &adata.obs } else { &adata.var };
    frame.get(name).unwrap_or_else(|| panic!("{df}['{name}'] missing")).to_f64().unwrap()
}

fn input(fx: &J) -> AnnData {
    let c = &fx["counts"];
    let shape = usizes(&c["shape"]);
    let m = CsrMatrix::new(
        shape[0],
        shape[1],
        usizes(&c["indptr"]),
        usizes(&c["indices"]).into_iter().map(|v| v as u32).collect(),
        f64s(&c["data"]).into_iter().map(|v| v as f32).collect(),
    )
    .unwrap();
    let mut ad = AnnData::new(Matrix::Csr(m));
    ad.var.index = fx["var_names"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let batch: Vec<String> = fx["batch"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    ad.obs.insert("batch", Column::categorical_from_labels(&batch)).unwrap();
    ad
}

/// The fixture's filtered counts (cells with >= 30 genes, genes in >= 3 cells).
fn filtered(fx: &J) -> AnnData {
    let mut ad = input(fx);
    filter_cells(&mut ad, &CellFilter { min_genes: Some(30), ..Default::default() }).unwrap();
    filter_genes(&mut ad, &GeneFilter { min_cells: Some(3), ..Default::default() }).unwrap();
    ad
}

#[test]
fn qc_metrics_match_scanpy() {
    let fx = fixture();
    let mut ad = input(&fx);
    calculate_qc_metrics(&mut ad, &QcOptions::default()).unwrap();
    let mut worst = 0f64;
    for (df, names) in [("obs", &fx["qc"]["obs"]), ("var", &fx["qc"]["var"])] {
        for (name, expected) in names.as_object().unwrap() {
            let e = max_rel(&col(&ad, df, name), &f64s(expected), 1e-6);
            assert!(e < 1e-5, "{df}['{name}'] rel err {e}");
            worst = worst.max(e);
        }
    }
    eprintln!("qc: max rel err {worst:.2e}");
}

#[test]
fn filters_match_scanpy() {
    let fx = fixture();
    let f = &fx["filter"];
    let ad = input(&fx);
    let cases: Vec<(Vec<usize>, &J)> = vec![
        (
            sclm_preprocess::qc::filter_cells_mask(&ad.x, &CellFilter { min_genes: Some(30), ..Default::default() }).0,
            &f["cells_min_genes_30"],
        ),
        (
            sclm_preprocess::qc::filter_cells_mask(
                &ad.x,
                &CellFilter { max_counts: Some(400.0), ..Default::default() },
            )
            .0,
            &f["cells_max_counts_400"],
        ),
        (
            sclm_preprocess::qc::filter_genes_mask(&ad.x, &GeneFilter { min_cells: Some(3), ..Default::default() }).0,
            &f["genes_min_cells_3"],
        ),
        (
            sclm_preprocess::qc::filter_genes_mask(&ad.x, &GeneFilter { min_counts: Some(15.0), ..Default::default() })
                .0,
            &f["genes_min_counts_15"],
        ),
    ];
    for (got, exp) in cases {
        assert_eq!(got, usizes(exp));
    }
    let fa = filtered(&fx);
    assert_eq!(vec![fa.n_obs(), fa.n_vars()], usizes(&fx["filtered_shape"]));
    assert!(fa.obs.get("n_genes").is_some() && fa.var.get("n_cells").is_some());
}

#[test]
fn normalize_and_log1p_match_scanpy() {
    let fx = fixture();
    let ad = filtered(&fx);
    let mut x = ad.x.clone();
    normalize_total(&mut x, &NormalizeOptions::default()).unwrap();
    let e1 = max_rel(&x.values().iter().map(|&v| v as f64).collect::<Vec<_>>(), &f64s(&fx["normalize_median"]), 1e-6);
    let mut x = ad.x.clone();
    let t = normalize_total(&mut x, &NormalizeOptions { target_sum: Some(1e4), ..Default::default() }).unwrap();
    assert_eq!(t, 1e4);
    log1p(&mut x).unwrap();
    let e2 = max_rel(&x.values().iter().map(|&v| v as f64).collect::<Vec<_>>(), &f64s(&fx["log1p_1e4"]), 1e-6);
    eprintln!("normalize_total(median): max rel err {e1:.2e}; normalize_total(1e4)+log1p: {e2:.2e}");
    assert!(e1 < 1e-5 && e2 < 1e-5, "{e1} {e2}");
}

fn log_data(fx: &J) -> AnnData {
    let mut ad = filtered(fx);
    normalize_total(&mut ad.x, &NormalizeOptions { target_sum: Some(1e4), ..Default::default() }).unwrap();
    log1p(&mut ad.x).unwrap();
    ad
}

#[test]
fn loess_matches_skmisc() {
    let fx = fixture();
    let l = &fx["loess"];
    let (x, y) = (f64s(&l["x"]), f64s(&l["y"]));
    for (surface, key) in [(Surface::Interpolate, "fitted_interpolate"), (Surface::Direct, "fitted_direct")] {
        let fit = loess_fit(&x, &y, &LoessOptions { span: 0.3, degree: 2, surface, cell: 0.2 }).unwrap();
        let exp = f64s(&l[key]);
        let err = fit.iter().zip(&exp).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        eprintln!("loess {surface:?}: max abs err {err:.2e} over {} points", x.len());
        assert!(err < 1e-8, "{surface:?}: {err}");
    }
}

fn overlap(a: &[bool], b: &[bool]) -> (usize, usize, usize) {
    let both = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    (both, a.iter().filter(|x| **x).count(), b.iter().filter(|x| **x).count())
}

#[test]
fn hvg_seurat_v3_matches_scanpy() {
    let fx = fixture();
    for (key, batch) in [("hvg_seurat_v3", None), ("hvg_seurat_v3_batch", Some("batch".to_string()))] {
        let mut ad = filtered(&fx);
        let batch_key_set = batch.is_some();
        let opts =
            HvgOptions { flavor: HvgFlavor::SeuratV3, n_top_genes: Some(100), batch_key: batch, ..Default::default() };
        let r = highly_variable_genes(&mut ad, &opts).unwrap();
        let e = &fx[key];
        let em = max_rel(&r.means, &f64s(&e["means"]), 1e-9);
        let ev = max_rel(r.variances.as_ref().unwrap(), &f64s(&e["variances"]), 1e-9);
        let en = max_rel(r.variances_norm.as_ref().unwrap(), &f64s(&e["variances_norm"]), 1e-9);
        let rank: Vec<f64> = r.highly_variable_rank.as_ref().unwrap().iter().map(|&v| v as f64).collect();
        let erank = f64s(&e["highly_variable_rank"]);
        // numpy's argsort is not stable: genes with exactly equal normalised variance may
        // swap ranks. Every mismatch must be such a tie.
        let vn = r.variances_norm.as_ref().unwrap();
        let mut swapped = 0;
        for j in 0..rank.len() {
            if rank[j].is_nan() != erank[j].is_nan() || (!rank[j].is_nan() && rank[j] != erank[j]) {
                if batch_key_set {
                    // with batches the rank is a median of per-batch ranks (which may hold
                    // ties); only small differences are acceptable
                    assert!(
                        (rank[j] - erank[j]).abs() <= 10.0,
                        "{key}: gene {j} rank {} vs scanpy {}",
                        rank[j],
                        erank[j]
                    );
                } else {
                    let k = (0..rank.len()).find(|&k| erank[k] == rank[j]).expect("rank taken by another gene");
                    assert!(
                        (vn[j] - vn[k]).abs() <= 1e-12 * vn[j].abs(),
                        "{key}: gene {j} rank {} vs scanpy {} (not a tie)",
                        rank[j],
                        erank[j]
                    );
                }
                swapped += 1;
            }
        }
        let er = if swapped > 0 { swapped as f64 } else { 0.0 };
        let (both, ours, theirs) = overlap(&r.highly_variable, &bools(&e["highly_variable"]));
        eprintln!("{key}: means {em:.1e} variances {ev:.1e} variances_norm {en:.1e} rank mismatches (exact ties) {er}; HVG overlap {both}/{theirs} (ours {ours})");
        assert!(em < 1e-6 && ev < 1e-6 && en < 1e-6, "{em} {ev} {en}");
        assert_eq!((both, ours), (theirs, theirs));
        assert!(ad.var.get("variances_norm").is_some());
        if key.ends_with("batch") {
            let nb: Vec<f64> = r.highly_variable_nbatches.unwrap().iter().map(|&k| k as f64).collect();
            assert_eq!(nb, f64s(&e["highly_variable_nbatches"]));
        }
    }
}

#[test]
fn hvg_seurat_matches_scanpy() {
    let fx = fixture();
    let e = &fx["hvg_seurat"];
    let mut ad = log_data(&fx);
    let r = highly_variable_genes(&mut ad, &HvgOptions { n_top_genes: Some(100), ..Default::default() }).unwrap();
    let em = max_rel(&r.means, &f64s(&e["means"]), 1e-9);
    let ed = max_rel(r.dispersions.as_ref().unwrap(), &f64s(&e["dispersions"]), 1e-3);
    let en = max_rel(r.dispersions_norm.as_ref().unwrap(), &f64s(&e["dispersions_norm"]), 1e-3);
    let (both, ours, theirs) = overlap(&r.highly_variable, &bools(&e["highly_variable"]));
    let r2 = highly_variable_genes(&mut ad, &HvgOptions::default()).unwrap();
    let (both2, ours2, theirs2) = overlap(&r2.highly_variable, &bools(&e["highly_variable_cutoffs"]));
    eprintln!("seurat: means {em:.1e} dispersions {ed:.1e} dispersions_norm {en:.1e}; top-100 overlap {both}/{theirs} (ours {ours}); cutoffs overlap {both2}/{theirs2} (ours {ours2})");
    assert!(em < 1e-5 && ed < 1e-4 && en < 1e-4, "{em} {ed} {en}");
    assert_eq!((both, ours), (theirs, theirs));
    assert_eq!((both2, ours2), (theirs2, theirs2));
}

#[test]
fn scale_matches_scanpy() {
    let fx = fixture();
    let ad = log_data(&fx);
    let hv = usizes(&fx["pca_sparse"]["hvg_index"]);
    let sub = ad.x.select_cols(&hv);
    let (d, _, _) = scale(&sub, true, Some(10.0)).unwrap();
    let exp = f64s(&fx["scale_max10"]);
    let got: Vec<f64> = d.data.iter().map(|&v| v as f64).collect();
    let abs = got.iter().zip(&exp).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    eprintln!("scale(max_value=10): max abs err {abs:.2e}");
    assert!(abs < 1e-4, "{abs}");
    assert!(got.iter().all(|v| v.abs() <= 10.0));
}

/// Compares a PCA with scanpy's (arpack): variance ratios, per-component |correlation| of
/// the embeddings, loadings, and the sign convention.
fn compare_pca(name: &str, p: &sclm_preprocess::Pca, e: &J) {
    let k = p.variance.len();
    let ev = f64s(&e["variance"]);
    let evr = f64s(&e["variance_ratio"]);
    let rel_v = max_rel(&p.variance, &ev, 1e-12);
    let rel_r = max_rel(&p.variance_ratio, &evr, 1e-12);
    let emb = f64s(&e["embedding"]);
    let comps = f64s(&e["components"]);
    let (n, g) = (p.embedding.nrows, p.components.ncols);
    let mut min_corr = 1f64;
    let mut max_load = 0f64;
    for c in 0..k {
        let a: Vec<f64> = (0..n).map(|i| p.embedding.data[i * k + c] as f64).collect();
        let b: Vec<f64> = (0..n).map(|i| emb[i * k + c]).collect();
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
        let corr = dot / (na * nb);
        assert!(corr > 0.0, "{name}: component {c} has the opposite sign to scanpy");
        min_corr = min_corr.min(corr.abs());
        for j in 0..g {
            max_load = max_load.max((p.components.data[c * g + j] as f64 - comps[c * g + j]).abs());
        }
    }
    eprintln!("{name}: variance rel err {rel_v:.2e}, variance_ratio rel err {rel_r:.2e}, min |corr| {min_corr:.8}, max loading abs diff {max_load:.2e}");
    assert!(rel_v < 1e-3 && rel_r < 1e-3, "{rel_v} {rel_r}");
    assert!(min_corr > 0.999, "{min_corr}");
    assert!(max_load < 1e-2, "{max_load}");
}

#[test]
fn pca_matches_scanpy_sparse_and_dense() {
    use sclm_preprocess::pca::PcaSolver;
    let fx = fixture();
    let ad = log_data(&fx);
    let e = &fx["pca_sparse"];
    let hv = usizes(&e["hvg_index"]);
    let sub = ad.x.select_cols(&hv);
    assert!(matches!(sub, Matrix::Csr(_)));
    let (scaled, _, _) = scale(&sub, true, Some(10.0)).unwrap();
    let scaled = Matrix::Dense(scaled);
    for solver in [PcaSolver::CovarianceEigh, PcaSolver::Randomized] {
        let mut opts = sclm_preprocess::PcaOptions { solver, ..Default::default() };
        if let Ok(v) = std::env::var("PCA_ITERS") {
            opts.n_power_iter = v.parse().unwrap();
        }
        if let Ok(v) = std::env::var("PCA_OVER") {
            opts.n_oversamples = v.parse().unwrap();
        }
        let p = sclm_preprocess::pca(&sub, 10, 0, &opts).unwrap();
        compare_pca(&format!("pca {solver:?} (sparse, implicit centring)"), &p, e);
        let p = sclm_preprocess::pca(&scaled, 10, 0, &opts).unwrap();
        compare_pca(&format!("pca {solver:?} (dense, scaled)"), &p, &fx["pca_dense"]);
    }
}

#[test]
fn normalize_excluding_highly_expressed_matches_scanpy() {
    let fx = fixture();
    let ad = filtered(&fx);
    let mut x = ad.x.clone();
    normalize_total(&mut x, &NormalizeOptions { target_sum: None, exclude_highly_expressed: Some(0.05) }).unwrap();
    let Matrix::Csr(c) = &x else { panic!("stays sparse") };
    let sums: Vec<f64> = (0..c.nrows).map(|i| c.row(i).1.iter().map(|&v| v as f64).sum()).collect();
    let e = max_rel(&sums, &f64s(&fx["normalize_exclude_0.05"]["row_sums"]), 1e-6);
    eprintln!("normalize_total(exclude_highly_expressed, 0.05): row sums max rel err {e:.2e}");
    assert!(e < 1e-5, "{e}");
}

#[test]
fn hvg_seurat_with_batches_matches_scanpy() {
    let fx = fixture();
    let e = &fx["hvg_seurat_batch"];
    let mut ad = log_data(&fx);
    let opts = HvgOptions { n_top_genes: Some(100), batch_key: Some("batch".into()), ..Default::default() };
    let r = highly_variable_genes(&mut ad, &opts).unwrap();
    let em = max_rel(&r.means, &f64s(&e["means"]), 1e-9);
    let ed = max_rel(r.dispersions.as_ref().unwrap(), &f64s(&e["dispersions"]), 1e-3);
    let en = max_rel(r.dispersions_norm.as_ref().unwrap(), &f64s(&e["dispersions_norm"]), 1e-3);
    let (both, ours, theirs) = overlap(&r.highly_variable, &bools(&e["highly_variable"]));
    let nb: Vec<f64> = r.highly_variable_nbatches.unwrap().iter().map(|&k| k as f64).collect();
    eprintln!("seurat (2 batches): means {em:.1e} dispersions {ed:.1e} dispersions_norm {en:.1e}; top-100 overlap {both}/{theirs} (ours {ours})");
    assert!(em < 1e-5 && ed < 1e-4 && en < 1e-4, "{em} {ed} {en}");
    assert_eq!(nb, f64s(&e["highly_variable_nbatches"]));
    assert_eq!((both, ours), (theirs, theirs));
}

#[test]
fn bad_inputs_give_clear_errors() {
    let fx = fixture();
    let ad = log_data(&fx);
    let e = sclm_preprocess::pca(&ad.x, 10_000, 0, &Default::default()).unwrap_err().to_string();
    assert!(e.contains("n_comps"), "{e}");
    let mut neg = ad.x.clone();
    if let Matrix::Csr(c) = &mut neg {
        c.data[0] = -1.0;
    }
    let e = log1p(&mut neg).unwrap_err().to_string();
    assert!(e.starts_with("log1p:") && e.contains("-1"), "{e}");
    let e = scale(&ad.x, true, Some(0.0)).unwrap_err().to_string();
    assert!(e.contains("max_value"), "{e}");
    let mut ad2 = ad.clone();
    let e = highly_variable_genes(&mut ad2, &HvgOptions { batch_key: Some("donor".into()), ..Default::default() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("donor") && e.contains("batch"), "{e}");
}
