//! Cell Ranger inputs; expected values from scanpy's read_10x_mtx / read_10x_h5 on the same files.

use std::path::PathBuf;

use sclm_data::{AnnData, Column};
use sclm_io::{read_10x_h5, read_10x_mtx, read_any, read_any_with, ReadOptions};

fn tenx(p: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/10x").join(p);
    assert!(p.exists(), "test data missing: {}", p.display());
    p
}

fn total(a: &AnnData) -> f64 {
    a.x.values().iter().map(|&v| v as f64).sum()
}

fn at(a: &AnnData, i: usize, j: usize) -> f32 {
    a.x.to_csr().to_dense().get(i, j)
}

fn check_v2(a: &AnnData, genes: [&str; 3], sum: f64) {
    assert_eq!(a.x.shape(), (12, 343));
    assert_eq!(total(a), sum);
    assert_eq!(a.x.stored(), 12);
    assert_eq!(&a.obs.index[..2], ["AACACGTGTACGCTGC-1", "AAGGAGCTCCGATATG-1"]);
    assert_eq!(&a.var.index[..3], genes);
    assert!(matches!(a.var.get("gene_ids"), Some(Column::Str(v)) if v[0] == genes[0]));
    assert_eq!(at(a, 0, 200), 1.0);
    assert_eq!(at(a, 11, 126), 1.0);
}

fn check_v3(a: &AnnData) {
    assert_eq!(a.x.shape(), (1107, 507));
    assert_eq!(total(a), 41549.0);
    assert_eq!(a.x.stored(), 23866);
    assert_eq!(&a.obs.index[..2], ["AAACCCAAGGAGAGTA-1", "AAACGCTTCAGCCCAG-1"]);
    assert_eq!(&a.var.index[..3], ["CH507-9B2.2", "CH507-9B2.1", "CH507-9B2.8"]);
    assert!(matches!(a.var.get("gene_ids"), Some(Column::Str(v)) if v[..2] == ["ENSG00000279493", "ENSG00000277117"]));
    assert!(matches!(a.var.get("feature_types"), Some(Column::Str(v)) if v[0] == "Gene Expression"));
    assert_eq!(at(a, 0, 138), 1.0);
    assert_eq!(at(a, 1106, 504), 1.0);
}

#[test]
fn mtx_v2_and_v3() {
    let (a, _) = read_10x_mtx(tenx("1.2.0/filtered_gene_bc_matrices/hg19_chr21")).unwrap();
    check_v2(&a, ["DSCAM", "MIR99AHG", "APP"], 12.0);
    assert!(a.var.get("feature_types").is_none());
    let (b, _) = read_10x_mtx(tenx("3.0.0/filtered_feature_bc_matrix")).unwrap();
    check_v3(&b);
}

#[test]
fn h5_v2_v3_and_genomes() {
    let (a, _) = read_10x_h5(tenx("1.2.0/filtered_gene_bc_matrices_h5.h5"), None).unwrap();
    check_v2(&a, ["DSCAM", "MIR99AHG", "APP"], 12.0);
    let e = read_10x_h5(tenx("1.2.0/multiple_genomes.h5"), None).unwrap_err().to_string();
    assert!(e.contains("multiple_genomes.h5") && e.contains("another_genome") && e.contains("hg19_chr21"), "{e}");
    let (b, _) = read_10x_h5(tenx("1.2.0/multiple_genomes.h5"), Some("another_genome")).unwrap();
    check_v2(&b, ["gene_0", "gene_1", "gene_2"], 13.0);
    let e = read_10x_h5(tenx("1.2.0/multiple_genomes.h5"), Some("mm10")).unwrap_err().to_string();
    assert!(e.contains("mm10") && e.contains("hg19_chr21"), "{e}");
    let (c, _) = read_10x_h5(tenx("3.0.0/filtered_feature_bc_matrix.h5"), None).unwrap();
    check_v3(&c);
    assert!(matches!(c.var.get("genome"), Some(Column::Str(v)) if v[0] == "GRCh38_chr21"));
    // Same matrix whichever file it came from.
    let (m, _) = read_10x_mtx(tenx("3.0.0/filtered_feature_bc_matrix")).unwrap();
    assert_eq!(m.x, c.x);
}

#[test]
fn read_any_dispatches() {
    let (a, _) = read_any(tenx("3.0.0/filtered_feature_bc_matrix")).unwrap();
    check_v3(&a);
    let (a, _) = read_any(tenx("3.0.0/filtered_feature_bc_matrix/matrix.mtx.gz")).unwrap();
    check_v3(&a);
    let (a, _) = read_any(tenx("1.2.0/filtered_gene_bc_matrices")).unwrap();
    check_v2(&a, ["DSCAM", "MIR99AHG", "APP"], 12.0);
    let (a, _) = read_any(tenx("3.0.0/filtered_feature_bc_matrix.h5")).unwrap();
    check_v3(&a);
    let opts = ReadOptions { genome: Some("hg19_chr21".into()), ..Default::default() };
    let (a, _) = read_any_with(tenx("1.2.0/multiple_genomes.h5"), &opts).unwrap();
    check_v2(&a, ["DSCAM", "MIR99AHG", "APP"], 12.0);
    let (a, _) = read_any(tenx("../visium_mouse_brain_tiny.h5ad")).unwrap();
    assert_eq!(a.x.shape(), (49, 1999));
}

#[test]
fn mtx_duplicates_are_summed_and_bad_entries_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("matrix.mtx"),
        "%%MatrixMarket matrix coordinate integer general\n% c\n3 2 4\n1 1 2\n3 1 1\n1 1 3\n2 2 7\n",
    )
    .unwrap();
    std::fs::write(d.join("genes.tsv"), "G1\tA\nG2\tA\nG3\tB\n").unwrap();
    std::fs::write(d.join("barcodes.tsv"), "c1\nc2\n").unwrap();
    let (a, rep) = read_10x_mtx(d).unwrap();
    assert_eq!(a.x.shape(), (2, 3));
    assert_eq!(at(&a, 0, 0), 5.0);
    assert_eq!(at(&a, 0, 2), 1.0);
    assert_eq!(at(&a, 1, 1), 7.0);
    assert_eq!(a.var.index, ["A", "A-1", "B"]);
    assert_eq!(rep.duplicate_var_names, ["A"]);
    std::fs::write(d.join("matrix.mtx"), "%%MatrixMarket matrix coordinate integer general\n3 2 4\n1 1 2\n9 1 1\n")
        .unwrap();
    let e = read_10x_mtx(d).unwrap_err().to_string();
    assert!(e.contains("matrix.mtx") && e.contains("line 4") && e.contains("outside"), "{e}");
    std::fs::write(d.join("matrix.mtx"), "%%MatrixMarket matrix coordinate integer general\n3 2 4\n1 1 2\n").unwrap();
    let e = read_10x_mtx(d).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
}
