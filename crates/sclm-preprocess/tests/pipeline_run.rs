//! Runs step strings end to end on the scanpy fixture.

use sclm_data::{AnnData, Array2, Column, CsrMatrix, Matrix};
use sclm_preprocess::{parse_steps, run, PreprocessError};
use serde_json::Value as J;

fn fixture() -> J {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/scanpy_preprocess.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn counts(fx: &J) -> AnnData {
    let c = &fx["counts"];
    let u = |v: &J| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect::<Vec<_>>();
    let shape = u(&c["shape"]);
    let m = CsrMatrix::new(
        shape[0],
        shape[1],
        u(&c["indptr"]),
        u(&c["indices"]).into_iter().map(|v| v as u32).collect(),
        c["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect(),
    )
    .unwrap();
    let mut ad = AnnData::new(Matrix::Csr(m));
    ad.var.index = fx["var_names"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    ad
}

#[test]
fn full_recipe_selects_scanpys_seurat_v3_genes() {
    let fx = fixture();
    let mut ad = counts(&fx);
    let steps = parse_steps(
        "qc,filter_cells:min_genes=30,filter_genes:min_cells=3,normalize_total:target_sum=1e4,log1p,\
         hvg:flavor=seurat_v3:n_top_genes=100:subset=true,scale:max_value=10,pca:n_comps=10",
    )
    .unwrap();
    let reports = run(&mut ad, &steps, 0).unwrap();
    assert_eq!(reports.len(), 8);
    for r in &reports {
        eprintln!("{}: {} -> {} x {}", r.step, r.summary, r.n_obs, r.n_vars);
    }
    let shape: Vec<usize> =
        fx["filtered_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(ad.n_obs(), shape[0]);
    assert_eq!(ad.n_vars(), 100);
    // the genes kept are scanpy's seurat_v3 selection on the counts (saved automatically)
    let filtered_genes: Vec<usize> =
        fx["filter"]["genes_min_cells_3"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let names: Vec<String> =
        fx["var_names"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let expected: Vec<String> = fx["hvg_seurat_v3"]["highly_variable"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&filtered_genes)
        .filter(|(b, _)| b.as_bool().unwrap())
        .map(|(_, &j)| names[j].clone())
        .collect();
    assert_eq!(ad.var.index, expected);
    assert!(ad.layers.contains_key("counts"));
    assert!(matches!(ad.x, Matrix::Dense(_)));
    assert!(ad.x.values().iter().all(|v| v.abs() <= 10.0));
    match ad.obsm.get("X_pca") {
        Some(Array2::F32(d)) => assert_eq!((d.nrows, d.ncols), (shape[0], 10)),
        other => panic!("X_pca missing: {other:?}"),
    }
    assert!(matches!(ad.obs.get("pct_counts_mt"), Some(Column::F64(_))));
    assert!(ad.uns.contains_key("pca") && ad.uns.contains_key("hvg"));
}

#[test]
fn seurat_v3_on_log_data_names_the_step() {
    let fx = fixture();
    let mut ad = counts(&fx);
    run(&mut ad, &parse_steps("normalize_total,log1p").unwrap(), 0).unwrap();
    let e = run(&mut ad, &parse_steps("hvg:flavor=seurat_v3:n_top_genes=50").unwrap(), 0).unwrap_err();
    assert!(matches!(e, PreprocessError::Invalid { .. }));
    let msg = e.to_string();
    assert!(msg.contains("step 1") && msg.contains("seurat_v3") && msg.contains("raw counts"), "{msg}");
}

/// Parallel column sums are added in a fixed order: the same recipe gives the same bits on one
/// thread and on five (rayon's scheduling-dependent `reduce` would not).
#[test]
fn recipe_is_bit_identical_across_thread_counts() {
    use rand::{Rng, SeedableRng};
    let (n, g) = (6000, 300);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (mut indptr, mut indices, mut data) = (vec![0usize], Vec::new(), Vec::new());
    for _ in 0..n {
        for j in 0..g {
            if rng.random_bool(0.1 + 0.3 * (j % 7) as f64 / 7.0) {
                indices.push(j as u32);
                data.push(rng.random_range(1..=30) as f32);
            }
        }
        indptr.push(indices.len());
    }
    let mut base = AnnData::new(Matrix::Csr(CsrMatrix::new(n, g, indptr, indices, data).unwrap()));
    base.var.index = (0..g).map(|j| format!("G{j}")).collect();
    let steps = parse_steps("hvg:flavor=seurat_v3:n_top_genes=100,normalize_total:target_sum=1e4,log1p,pca:n_comps=10")
        .unwrap();
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut ad = base.clone();
        pool.install(|| run(&mut ad, &steps, 0)).unwrap();
        // Debug prints floats in their shortest round-trip form: equal text, equal bits.
        format!("{:?}\n{:?}", ad.var, ad.obsm)
    };
    let one = on(1);
    assert!(one.contains("X_pca"), "the recipe wrote no PCA");
    for run in 0..4 {
        assert!(on(5) == one, "run {run} on 5 threads differs from 1 thread");
    }
}
