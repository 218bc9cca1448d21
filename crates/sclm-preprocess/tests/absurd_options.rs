//! Options whose size no dataset can justify (`hvg:n_bins=1e18`, `pca:n_oversamples=1e18`, ...)
//! are refused with an error naming the step and the key, when the step string is parsed and
//! again when steps (e.g. read from a saved model's JSON) are run, before any data changes.

use sclm_data::{AnnData, CsrMatrix, Dense, Matrix};
use sclm_preprocess::hvg::MAX_HVG_BINS;
use sclm_preprocess::pca::{MAX_PCA_COMPS, MAX_PCA_OVERSAMPLES, MAX_PCA_POWER_ITER};
use sclm_preprocess::pipeline::PcaStep;
use sclm_preprocess::{
    highly_variable_genes, parse_steps, pca, pca_adata, run, HvgOptions, PcaOptions, PreprocessError, Step,
};

/// 30 cells x 12 genes of small log-like values, every gene varying.
fn data() -> AnnData {
    let (n, g) = (30, 12);
    let v: Vec<f32> =
        (0..n * g).map(|k| ((k * 7919 % 31) as f32 / 10.0).ln_1p() * ((k % 3 != 0) as u8 as f32)).collect();
    AnnData::new(Matrix::Csr(CsrMatrix::from_dense(&Dense::from_vec(n, g, v).unwrap())))
}

fn parse_err(s: &str, must: &[&str]) {
    let e = parse_steps(s).unwrap_err();
    assert!(matches!(e, PreprocessError::Parse { .. }), "{s}: {e:?}");
    let t = e.to_string();
    assert!(!t.contains('\n'), "{t}");
    for m in must {
        assert!(t.contains(m), "{s}: error '{t}' should mention '{m}'");
    }
}

#[test]
fn absurd_hvg_bins_are_refused_when_parsed() {
    parse_err(
        "log1p,hvg:n_bins=1000000000000000000",
        &["'hvg:n_bins=1000000000000000000'", "n_bins = 1000000000000000000 must lie in 1..=1000000"],
    );
    parse_err("hvg:n_bins=1e18", &["hvg:n_bins=1e18", "n_bins = 1000000000000000000"]);
    parse_err("highly_variable_genes:n_bins=0", &["n_bins = 0 must lie in 1..="]);
    parse_err(&format!("hvg:n_bins={}", MAX_HVG_BINS + 1), &["n_bins = 1000001"]);
    parse_err("hvg:flavor=seurat_v3:span=0", &["hvg:flavor=seurat_v3:span=0", "span = 0 must be finite and positive"]);
    parse_err("hvg:span=inf", &["span = inf"]);
    // The largest allowed value parses.
    let s = parse_steps(&format!("hvg:n_bins={MAX_HVG_BINS}")).unwrap();
    assert!(matches!(&s[0], Step::Hvg(h) if h.n_bins == MAX_HVG_BINS));
}

#[test]
fn absurd_pca_sizes_are_refused_when_parsed() {
    parse_err(
        "pca:n_oversamples=1000000000000000000",
        &["'pca:n_oversamples=1000000000000000000'", "n_oversamples = 1000000000000000000 is more than the 10000"],
    );
    parse_err("pca:solver=randomized:n_oversamples=18446744073709551615", &["n_oversamples = 18446744073709551615"]);
    parse_err(
        "pca:n_power_iter=1e18",
        &["pca:n_power_iter=1e18", "n_power_iter = 1000000000000000000 is more than the 1000"],
    );
    parse_err("pca:n_comps=1e18", &["pca:n_comps=1e18", "n_comps = 1000000000000000000 must lie in 1..=10000"]);
    parse_err("pca:n_comps=0", &["n_comps = 0 must lie in 1..="]);
    let s = parse_steps(&format!(
        "pca:n_comps={MAX_PCA_COMPS}:n_oversamples={MAX_PCA_OVERSAMPLES}:n_power_iter={MAX_PCA_POWER_ITER}"
    ))
    .unwrap();
    assert_eq!(s.len(), 1);
}

#[test]
fn run_checks_every_step_before_changing_the_data() {
    // Steps built in code (or deserialised from a saved model's JSON) skip parse_steps.
    let steps = vec![Step::Log1p, Step::Hvg(HvgOptions { n_bins: 1_000_000_000_000_000_000, ..Default::default() })];
    let json = serde_json::to_string(&steps).unwrap();
    let steps: Vec<Step> = serde_json::from_str(&json).unwrap();
    let mut ad = data();
    let before = ad.clone();
    let e = run(&mut ad, &steps, 0).unwrap_err().to_string();
    assert!(e.contains("step 2 (hvg:n_bins=1000000000000000000)") && e.contains("n_bins = 1000000000000000000"), "{e}");
    assert_eq!(ad, before, "log1p ran before the bad step was found");

    for (opts, n_comps, key) in [
        (PcaOptions { n_oversamples: usize::MAX, ..Default::default() }, 5, "n_oversamples = 18446744073709551615"),
        (PcaOptions { n_power_iter: 1_000_000_000_000_000_000, ..Default::default() }, 5, "n_power_iter = "),
        (PcaOptions::default(), 1_000_000_000_000_000_000, "n_comps = 1000000000000000000"),
    ] {
        let steps = vec![Step::Log1p, Step::Pca(PcaStep { n_comps, options: opts })];
        let mut ad = data();
        let e = run(&mut ad, &steps, 0).unwrap_err().to_string();
        assert!(e.starts_with("step 2 (pca") && e.contains(key), "{e}");
        assert_eq!(ad, before);
    }
}

#[test]
fn library_calls_check_the_same_options() {
    let mut ad = data();
    let e = highly_variable_genes(&mut ad, &HvgOptions { n_bins: usize::MAX, ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("highly_variable_genes(seurat): n_bins = 18446744073709551615"), "{e}");
    // usize::MAX oversamples overflowed `n_comps + n_oversamples` before.
    let huge = PcaOptions {
        n_oversamples: usize::MAX,
        solver: sclm_preprocess::pca::PcaSolver::Randomized,
        ..Default::default()
    };
    let e = pca(&ad.x, 3, 0, &huge).unwrap_err().to_string();
    assert!(e.starts_with("pca: n_oversamples = 18446744073709551615"), "{e}");
    let e = pca_adata(&mut ad, 3, 0, &PcaOptions { n_power_iter: usize::MAX, ..Default::default() }).unwrap_err();
    assert!(e.to_string().starts_with("pca: n_power_iter = 18446744073709551615"), "{e}");
    // Within the bounds, more random directions than the matrix has columns are clamped.
    let many = PcaOptions {
        n_oversamples: MAX_PCA_OVERSAMPLES,
        solver: sclm_preprocess::pca::PcaSolver::Randomized,
        ..Default::default()
    };
    let p = pca(&ad.x, 3, 0, &many).unwrap();
    assert_eq!((p.embedding.nrows, p.embedding.ncols), (30, 3));
    // The default options pass; n_bins far above the gene count is allowed and works.
    let r = highly_variable_genes(&mut ad, &HvgOptions { n_bins: 1000, ..Default::default() }).unwrap();
    assert_eq!(r.highly_variable.len(), 12);
}
