//! Reading the real `.h5ad` files in `shared/data`, one per on-disk layout. Expected values
//! were taken with Python anndata on the same files.

use std::path::PathBuf;

use sclm_data::{Array2, Column, Matrix};
use sclm_io::{read_h5ad_with_report, H5adRowReader, ReadOptions};

fn data(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data").join(name);
    assert!(p.exists(), "test data missing: {} (shared/data must sit beside the repository)", p.display());
    p
}

fn x_at(m: &Matrix, i: usize, j: usize) -> f32 {
    match m {
        Matrix::Dense(d) => d.get(i, j),
        Matrix::Csr(c) => {
            let (idx, val) = c.row(i);
            idx.iter().position(|&k| k as usize == j).map(|p| val[p]).unwrap_or(0.0)
        }
    }
}

fn sum(m: &Matrix) -> f64 {
    m.values().iter().map(|&v| v as f64).sum()
}

fn cat(col: &Column) -> (&[i32], &[String]) {
    match col {
        Column::Categorical { codes, categories, .. } => (codes, categories),
        other => panic!("expected a categorical column, found {}", other.kind()),
    }
}

#[test]
fn pre_07_layout_pbmc68k_reduced() {
    let (a, rep) = read_h5ad_with_report(data("pbmc68k_reduced.h5ad"), &ReadOptions::default()).unwrap();
    assert_eq!(a.x.shape(), (700, 765));
    assert!(matches!(a.x, Matrix::Dense(_)));
    assert_eq!(x_at(&a.x, 0, 4), 3.386);
    assert_eq!(x_at(&a.x, 3, 10), -0.525);
    assert!((sum(&a.x) - (-243.681057988666)).abs() < 1e-2);
    assert_eq!(&a.obs.index[..2], ["AAAGCCTGGCTAAC-1", "AAATTCGATGCACA-1"]);
    assert_eq!(&a.var.index[..3], ["HES4", "TNFRSF4", "SSU72"]);
    let (codes, cats) = cat(a.obs.get("bulk_labels").unwrap());
    assert_eq!(cats.len(), 10);
    assert_eq!(cats[0], "CD4+/CD25 T Reg");
    assert_eq!(&codes[..5], [5, 9, 8, 0, 9]);
    let (codes, cats) = cat(a.obs.get("phase").unwrap());
    assert_eq!(cats, ["G1", "G2M", "S"]);
    assert_eq!(&codes[..5], [0, 2, 0, 1, 0]);
    assert_eq!(cat(a.obs.get("louvain").unwrap()).1.len(), 11);
    assert_eq!(
        a.obs.get("n_genes"),
        Some(&Column::I64(a.obs.get("n_genes").unwrap().to_f64().unwrap().iter().map(|&v| v as i64).collect()))
    );
    assert_eq!(a.obs.get("n_genes").unwrap().to_f64().unwrap()[..3], [1003.0, 1080.0, 1228.0]);
    assert_eq!(
        a.obs.get("n_counts"),
        Some(&Column::F32(match a.obs.get("n_counts").unwrap() {
            Column::F32(v) => v.clone(),
            _ => panic!("n_counts should be float32"),
        }))
    );
    match a.var.get("highly_variable").unwrap() {
        Column::Bool(v) => assert_eq!(&v[..3], [true, true, false]),
        other => panic!("highly_variable should be bool, is {}", other.kind()),
    }
    assert_eq!(a.obsm["X_pca"].shape(), (700, 50));
    assert!(matches!(&a.obsm["X_pca"], Array2::F32(d) if d.get(0, 0) == -7.939618 && d.get(0, 1) == 5.024_914));
    assert!(matches!(&a.obsm["X_umap"], Array2::F64(d) if d.ncols == 2 && d.get(0, 0) == -1.9918625454649166));
    assert_eq!(a.varm["PCs"].shape(), (765, 50));
    // raw.X is stored with descending column indices inside rows; it must read correctly.
    let raw = a.raw.as_ref().expect("raw");
    assert_eq!(raw.x.shape(), (700, 765));
    assert_eq!(x_at(&raw.x, 0, 764), 2.177);
    assert_eq!(x_at(&raw.x, 0, 0), 0.0);
    assert!((sum(&raw.x) - 319044.25).abs() < 0.5);
    assert_eq!(&raw.var.index[..2], ["HES4", "TNFRSF4"]);
    // Legacy categories were moved out of uns; colours and nested groups stay.
    assert!(!a.uns.contains_key("bulk_labels_categories"));
    assert!(a.uns.contains_key("bulk_labels_colors"));
    assert!(a.uns["pca"].as_map().unwrap().contains_key("variance_ratio"));
    // The pre-0.7 neighbour graph in uns/neighbors is moved to obsp, as anndata does.
    assert!(!rep.skipped.iter().any(|s| s.starts_with("uns/neighbors/connectivities")), "{:?}", rep.skipped);
    assert!(
        rep.converted.iter().any(|s| s.starts_with("uns/neighbors/distances (moved to obsp")),
        "{:?}",
        rep.converted
    );
    assert!(!a.uns["neighbors"].as_map().unwrap().contains_key("connectivities"));
    let c = a.obsp["connectivities"].to_csr();
    assert_eq!((c.nrows, c.ncols, c.nnz()), (700, 700, 9992));
    assert_eq!(c.row(0).0[..3], [9, 54, 94]);
    assert_eq!(c.row(0).1[..3], [0.179_600_58, 0.122_728_82, 1.0]);
    assert!((sum(&a.obsp["connectivities"]) - 3999.3202025676114).abs() < 1e-2);
    assert_eq!(a.obsp["distances"].stored(), 6300);
    assert!((sum(&a.obsp["distances"]) - 43570.44111037254).abs() < 0.1);
    assert!(rep.skipped.iter().any(|s| s.starts_with("uns/rank_genes_groups/names")), "{:?}", rep.skipped);
}

#[test]
fn anndata_07_layout_oligodendroglioma() {
    let (a, rep) = read_h5ad_with_report(data("oligodendroglioma.h5ad"), &ReadOptions::default()).unwrap();
    assert_eq!(a.x.shape(), (184, 9450));
    assert!(matches!(a.x, Matrix::Csr(_)));
    assert_eq!(x_at(&a.x, 0, 0), 1.537);
    assert_eq!(x_at(&a.x, 0, 4), 2.5963);
    assert_eq!(x_at(&a.x, 3, 10), 31.813);
    assert_eq!(a.x.stored(), 770139);
    assert!((sum(&a.x) - 18295863.638136216).abs() / 18295863.0 < 1e-6);
    assert_eq!(&a.obs.index[..2], ["MGH54_P2_C12", "MGH36_P6_F03"]);
    let (codes, cats) = cat(a.obs.get("cell_type").unwrap());
    assert_eq!(cats.len(), 6);
    assert_eq!(&cats[..2], ["Microglia/Macrophage", "Oligodendrocytes (non-malignant)"]);
    assert_eq!(&codes[..5], [0, 0, 0, 0, 0]);
    assert_eq!(a.var.names(), ["chromosome", "start", "end", "n_counts", "n_cells"]);
    let (codes, cats) = cat(a.var.get("chromosome").unwrap());
    assert_eq!(cats.len(), 24);
    assert_eq!(cats[0], "chr1");
    assert_eq!(codes[0], 0);
    assert_eq!(
        a.var.get("start"),
        Some(&Column::I64({
            let Column::I64(v) = a.var.get("start").unwrap() else { panic!("start should be int64") };
            assert_eq!(v[..3], [14363, 761586, 879584]);
            v.clone()
        }))
    );
    assert_eq!(
        a.uns["cell_type_colors"],
        sclm_data::Value::Strings(vec![
            "#1f77b4".into(),
            "#ff7f0e".into(),
            "#2ca02c".into(),
            "#d62728".into(),
            "#9467bd".into(),
            "#8c564b".into()
        ])
    );
    assert!(rep.duplicate_var_names.is_empty());
}

#[test]
fn current_layout_visium_with_obsm_and_uns() {
    let (a, rep) = read_h5ad_with_report(data("visium_mouse_brain_tiny.h5ad"), &ReadOptions::default()).unwrap();
    assert_eq!(a.x.shape(), (49, 1999));
    assert_eq!(x_at(&a.x, 0, 3), 1.064_092);
    assert_eq!(x_at(&a.x, 3, 10), 1.4913898);
    assert_eq!(a.x.stored(), 22372);
    let (codes, cats) = cat(a.obs.get("leiden").unwrap());
    assert_eq!(cats.len(), 5);
    assert_eq!(&cats[..4], ["0", "2", "6", "7"]);
    assert_eq!(&codes[..5], [0, 0, 1, 3, 0]);
    assert_eq!(a.obs.get("in_tissue").unwrap().to_f64().unwrap()[..3], [1.0, 1.0, 1.0]);
    assert_eq!(a.var.names(), ["gene_ids", "highly_variable", "means", "dispersions", "dispersions_norm"]);
    assert!(matches!(a.var.get("means"), Some(Column::F64(v)) if v[0] == 0.02409475665799404));
    assert!(matches!(a.var.get("dispersions_norm"), Some(Column::F32(_))));
    assert!(matches!(a.var.get("highly_variable"), Some(Column::Bool(v)) if v[..3] == [true, true, true]));
    assert!(
        matches!(&a.obsm["spatial"], Array2::I64(d) if d.nrows == 49 && d.ncols == 2 && d.get(0, 0) == 337 && d.get(0, 1) == 439)
    );
    assert_eq!(a.obsm["X_pca"].shape(), (49, 50));
    assert_eq!(a.obsm["X_umap"].shape(), (49, 2));
    // uns: scalars and nested dicts, a 3-D image.
    let hvg = a.uns["hvg"].as_map().unwrap();
    assert_eq!(hvg["flavor"], sclm_data::Value::Str("seurat".into()));
    let params = a.uns["leiden"].as_map().unwrap()["params"].as_map().unwrap();
    assert_eq!(params["n_iterations"], sclm_data::Value::I64(-1));
    let imgs = a.uns["spatial"].as_map().unwrap()["V1_Adult_Mouse_Brain"].as_map().unwrap()["images"].as_map().unwrap();
    assert!(matches!(&imgs["hires"], sclm_data::Value::F64Array { shape, .. } if shape == &[100, 100, 3]));
    // obsp: CSR neighbour graphs (float32 connectivities, float64 distances read as float32).
    assert!(!rep.skipped.iter().any(|s| s.starts_with("obsp/")), "{:?}", rep.skipped);
    let c = a.obsp["connectivities"].to_csr();
    assert_eq!((c.nrows, c.ncols, c.nnz()), (49, 49, 438));
    assert_eq!(c.row(0).0[..3], [1, 4, 6]);
    assert_eq!(c.row(0).1[..3], [0.150_795_95, 0.999_999_94, 0.073_326_476]);
    assert!((sum(&a.obsp["connectivities"]) - 159.2198028564453).abs() < 1e-3);
    let d = a.obsp["distances"].to_csr();
    assert_eq!(d.nnz(), 301);
    assert_eq!(d.row(0).1[0], 8.716_064);
    assert!((sum(&a.obsp["distances"]) - 4808.733199119568).abs() < 1e-2);
    // ... and they are written back and read again unchanged.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v.h5ad");
    sclm_io::write_h5ad(&a, &out, &Default::default()).unwrap();
    let b = sclm_io::read_h5ad(&out).unwrap();
    assert_eq!(b.obsp, a.obsp);
    // The row reader's annotations (everything but X, layers and raw) include obsp.
    let (t, _) = H5adRowReader::open(data("visium_mouse_brain_tiny.h5ad")).unwrap().annotations().unwrap();
    assert_eq!((t.obsp, t.obsm, t.uns), (a.obsp.clone(), a.obsm.clone(), a.uns.clone()));
}

#[test]
fn current_layout_counts_and_duplicate_genes() {
    let (a, rep) = read_h5ad_with_report(data("mouse_10k_subset_counts.h5ad"), &ReadOptions::default()).unwrap();
    assert_eq!(a.x.shape(), (10000, 1000));
    assert_eq!(sum(&a.x), 1597698.0);
    assert_eq!(x_at(&a.x, 1, 13), 1.0);
    assert_eq!(x_at(&a.x, 1, 62), 2.0);
    assert!(a.x.looks_like_counts());
    assert_eq!(&a.obs.index[..2], ["AAACCTGAGATAGGAG-1", "AAACCTGAGCGGCTTC-1"]);
    assert_eq!(&a.var.index[..3], ["Xkr4", "Gm1992", "Gm37381"]);
    assert!(matches!(a.var.get("gene_ids"), Some(Column::Str(v)) if v[0] == "ENSMUSG00000051951"));
    assert_eq!(rep.duplicate_var_names, ["Rp1"]);
    assert!(!rep.is_clean());
    assert_eq!(rep.warnings(), ["1 gene name(s) occur more than once and were made unique (A, A-1, ...): Rp1"]);
    assert!(a.var.index.iter().any(|g| g == "Rp1-1"));
    let mut u = a.var.index.clone();
    u.sort();
    u.dedup();
    assert_eq!(u.len(), 1000);

    let (b, _) = read_h5ad_with_report(data("celltypist_sample_counts.h5ad"), &ReadOptions::default()).unwrap();
    assert_eq!(b.x.shape(), (559, 32786));
    assert_eq!(sum(&b.x), 3619954.0);
    assert_eq!(x_at(&b.x, 1, 42), 32.0);
    assert_eq!(x_at(&b.x, 1, 57), 7.0);
    assert_eq!(b.x.stored(), 1027859);
    assert_eq!(&b.var.index[..3], ["MIR1302-10", "FAM138A", "OR4F5"]);
}

#[test]
fn older_dense_layout_cscc() {
    let (a, _) = read_h5ad_with_report(data("cscc_p10_st.h5ad"), &ReadOptions::default()).unwrap();
    assert_eq!(a.x.shape(), (621, 16642));
    assert!(matches!(a.x, Matrix::Dense(_)));
    assert_eq!(x_at(&a.x, 0, 0), 0.139);
    assert_eq!(x_at(&a.x, 1, 2), 0.138);
    assert!((sum(&a.x) - 1135607.736581509).abs() < 1.0);
    assert_eq!(a.obs.names(), ["row", "col", "cluster"]);
    assert_eq!(a.obs.get("row").unwrap().to_f64().unwrap()[..3], [20.0, 22.0, 24.0]);
    assert_eq!(&a.obs.index[..2], ["8x20", "8x22"]);
    assert_eq!(&a.var.index[..3], ["FO538757.1", "SAMD11", "NOC2L"]);
}

#[test]
fn read_options_skip_parts() {
    let opts = ReadOptions { skip_raw: true, skip_uns: true, ..Default::default() };
    let (a, rep) = read_h5ad_with_report(data("pbmc68k_reduced.h5ad"), &opts).unwrap();
    assert!(a.raw.is_none());
    assert!(a.uns.is_empty());
    assert!(rep.skipped.iter().any(|s| s.starts_with("raw")));
    // Categories are still found although uns is skipped.
    assert_eq!(cat(a.obs.get("phase").unwrap()).1, ["G1", "G2M", "S"]);
}

#[test]
fn row_reader_matches_whole_read() {
    for f in ["oligodendroglioma.h5ad", "cscc_p10_st.h5ad", "pbmc68k_reduced.h5ad"] {
        let a = sclm_io::read_h5ad(data(f)).unwrap();
        let r = H5adRowReader::open(data(f)).unwrap();
        assert_eq!((r.n_obs(), r.n_vars()), a.x.shape(), "{f}");
        assert_eq!(r.var_names(), &a.var.index[..], "{f}");
        assert_eq!(r.obs(), &a.obs, "{f}");
        let n = r.n_obs();
        let rows: Vec<usize> = (5..n.min(77)).collect();
        let got = r.read_rows(5, n.min(77)).unwrap();
        assert_eq!(got, a.x.select_rows(&rows), "{f}");
        let last = r.read_rows(n - 1, n).unwrap();
        assert_eq!(last, a.x.select_rows(&[n - 1]), "{f}");
        assert_eq!(r.read_rows(3, 3).unwrap().shape(), (0, r.n_vars()));
        let e = r.read_rows(0, n + 1).unwrap_err().to_string();
        assert!(e.contains(f) && e.contains("X"), "{e}");
    }
}
