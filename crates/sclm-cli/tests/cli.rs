//! End-to-end tests of the `sclm` binary: real files, bad input, atomic outputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sclm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sclm")).args(args).output().expect("run sclm")
}

fn shared(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data").join(name)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A failed command prints exactly one error line that names `needle`, exits non-zero and
/// leaves no output behind.
fn assert_clean_failure(o: &Output, needle: &str, output: Option<&Path>) {
    assert!(!o.status.success(), "expected failure, got success: {}", stdout(o));
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].contains(needle), "error line should name '{needle}': {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    if let Some(p) = output {
        assert!(!p.exists(), "{} must not exist after a failure", p.display());
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
    }
}

#[test]
fn info_describes_every_shared_file() {
    for (file, shape, key) in [
        ("pbmc68k_reduced.h5ad", "700 cells x 765 genes", "bulk_labels"),
        ("oligodendroglioma.h5ad", "184 cells x 9450 genes", "cell_type"),
        ("cscc_p10_st.h5ad", "621 cells x 16642 genes", "cluster"),
        ("visium_mouse_brain_tiny.h5ad", "49 cells x 1999 genes", "spatial"),
        ("celltypist_sample_counts.h5ad", "559 cells x 32786 genes", "raw counts"),
        ("mouse_10k_subset_counts.h5ad", "10000 cells x 1000 genes", "raw counts"),
    ] {
        let o = sclm(&["info", shared(file).to_str().unwrap()]);
        assert!(o.status.success(), "{file}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains(shape), "{file}: {out}");
        assert!(out.contains(key), "{file}: {out}");
    }
}

#[test]
fn info_reads_cell_ranger_outputs() {
    let dir = shared("10x");
    let mut seen = 0;
    for entry in walk(&dir) {
        let name = entry.to_string_lossy().to_string();
        let is_input =
            name.ends_with(".h5") || entry.join("matrix.mtx").exists() || entry.join("matrix.mtx.gz").exists();
        if !is_input {
            continue;
        }
        let o = sclm(&["info", &name]);
        // Multi-genome v2 files need a genome choice: the error must say so and list them.
        if !o.status.success() {
            assert!(stderr(&o).contains("genome"), "{name}: {}", stderr(&o));
        } else {
            assert!(stdout(&o).contains("raw counts"), "{name}: {}", stdout(&o));
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected to read at least two Cell Ranger outputs, read {seen}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn simulate_info_preprocess_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim.h5ad");
    let o = sclm(&[
        "--quiet",
        "--seed",
        "3",
        "simulate",
        "--cells",
        "600",
        "--genes",
        "400",
        "--spatial",
        "--chunk-size",
        "128",
        "-o",
        sim.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sclm(&["info", sim.to_str().unwrap()]);
    let out = stdout(&o);
    assert!(out.contains("600 cells x 400 genes"), "{out}");
    assert!(out.contains("cell_type") && out.contains("batch") && out.contains("spatial"), "{out}");
    assert!(out.contains("raw counts"), "{out}");

    // Same seed, different chunk size: identical file contents.
    let sim2 = tmp.path().join("sim2.h5ad");
    let o = sclm(&[
        "--quiet",
        "--seed",
        "3",
        "simulate",
        "--cells",
        "600",
        "--genes",
        "400",
        "--spatial",
        "--chunk-size",
        "1000",
        "-o",
        sim2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = sclm_io::read_h5ad(&sim).unwrap();
    let b = sclm_io::read_h5ad(&sim2).unwrap();
    assert_eq!(a.x, b.x);
    assert_eq!(a.obs, b.obs);

    let pp = tmp.path().join("pp.h5ad");
    let o = sclm(&[
        "--quiet",
        "preprocess",
        sim.to_str().unwrap(),
        "-o",
        pp.to_str().unwrap(),
        "--steps",
        "qc,normalize_total:target_sum=1e4,log1p,hvg:flavor=seurat:n_top_genes=200,pca:n_comps=10",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let p = sclm_io::read_h5ad(&pp).unwrap();
    assert_eq!(p.n_obs(), 600);
    assert_eq!(p.obsm_get("X_pca").unwrap().shape(), (600, 10));
    assert!(p.var.get("highly_variable").is_some());
}

#[test]
fn bad_inputs_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.h5ad");
    let out_s = out.to_str().unwrap();

    // Not a file at all.
    let missing = tmp.path().join("nope.h5ad");
    let o = sclm(&["preprocess", missing.to_str().unwrap(), "-o", out_s]);
    assert_clean_failure(&o, "nope.h5ad", Some(&out));

    // Garbage bytes with an .h5ad name.
    let junk = tmp.path().join("junk.h5ad");
    std::fs::write(&junk, b"this is not an HDF5 file at all, just text\n".repeat(50)).unwrap();
    let o = sclm(&["preprocess", junk.to_str().unwrap(), "-o", out_s]);
    assert_clean_failure(&o, "junk.h5ad", Some(&out));

    // A truncated real file.
    let bytes = std::fs::read(shared("pbmc68k_reduced.h5ad")).unwrap();
    let trunc = tmp.path().join("truncated.h5ad");
    std::fs::write(&trunc, &bytes[..bytes.len() / 3]).unwrap();
    let o = sclm(&["preprocess", trunc.to_str().unwrap(), "-o", out_s]);
    assert_clean_failure(&o, "truncated.h5ad", Some(&out));

    // seurat_v3 needs counts; pbmc68k_reduced's X is scaled z-scores.
    let o = sclm(&[
        "preprocess",
        shared("pbmc68k_reduced.h5ad").to_str().unwrap(),
        "-o",
        out_s,
        "--steps",
        "hvg:flavor=seurat_v3:n_top_genes=100",
    ]);
    assert_clean_failure(&o, "seurat_v3", Some(&out));

    // A step that does not exist.
    let o = sclm(&[
        "preprocess",
        shared("pbmc68k_reduced.h5ad").to_str().unwrap(),
        "-o",
        out_s,
        "--steps",
        "log1p,frobnicate",
    ]);
    assert_clean_failure(&o, "frobnicate", Some(&out));
}

#[test]
fn evaluate_plot_and_baselines_on_real_data() {
    let tmp = tempfile::tempdir().unwrap();
    let pbmc = shared("pbmc68k_reduced.h5ad");
    let json = tmp.path().join("m.json");
    let png = tmp.path().join("umap.png");
    let o = sclm(&[
        "--quiet",
        "evaluate",
        pbmc.to_str().unwrap(),
        "--embedding",
        "X_pca",
        "--label-key",
        "bulk_labels",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("ARI"), "{}", stdout(&o));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let ari = m["metrics"].as_array().unwrap().iter().find(|x| x["name"] == "ARI").unwrap()["value"].as_f64().unwrap();
    // The stored PCA of pbmc68k_reduced clusters the 10 bulk labels partially (scanpy + leidenalg: ARI ≈ 0.51).
    assert!((0.4..0.65).contains(&ari), "ARI {ari}");
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

    // A 2-D basis coloured by a gene.
    let png2 = tmp.path().join("umap_gene.png");
    let o = sclm(&[
        "--quiet",
        "plot",
        pbmc.to_str().unwrap(),
        "--basis",
        "X_umap",
        "--color",
        "CD79A",
        "-o",
        png2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(png2.exists());

    // Wrong keys name what exists.
    let o = sclm(&["evaluate", pbmc.to_str().unwrap(), "--embedding", "X_pca", "--label-key", "celltype"]);
    assert_clean_failure(&o, "bulk_labels", None);
    let o = sclm(&["evaluate", pbmc.to_str().unwrap(), "--embedding", "X_cellplm", "--label-key", "bulk_labels"]);
    assert_clean_failure(&o, "X_umap", None);
    let o = sclm(&[
        "plot",
        pbmc.to_str().unwrap(),
        "--basis",
        "X_umap",
        "--color",
        "NOTAGENE",
        "-o",
        png2.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "NOTAGENE", None);

    // Logistic regression on PCA of the (scaled) X.
    let o = sclm(&[
        "--quiet",
        "baseline",
        "logreg",
        pbmc.to_str().unwrap(),
        "--label-key",
        "bulk_labels",
        "--n-top-genes",
        "765",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("macro_F1"), "{}", stdout(&o));
}

#[test]
fn denoising_baseline_beats_no_denoising_on_simulated_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim.h5ad");
    let o = sclm(&["--quiet", "simulate", "--cells", "800", "--genes", "500", "-o", sim.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = tmp.path().join("d.json");
    let o = sclm(&[
        "--quiet",
        "baseline",
        "knn-denoise",
        sim.to_str().unwrap(),
        "--n-comps",
        "20",
        "--n-top-genes",
        "300",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let get = |name: &str| {
        v[0]["metrics"].as_array().unwrap().iter().find(|x| x["name"] == name).unwrap()["value"].as_f64().unwrap()
    };
    assert!(get("RMSE") < get("RMSE_no_denoising"), "{v}");
    // Denoising needs counts: log-normalised X is refused with the file named.
    let o = sclm(&["baseline", "knn-denoise", shared("pbmc68k_reduced.h5ad").to_str().unwrap()]);
    assert_clean_failure(&o, "pbmc68k_reduced.h5ad", None);
}

/// A small AnnData of raw counts over `genes`, two batches.
fn counts_file(path: &Path, genes: &[String], n: usize, scale: f32) {
    use sclm_data::{AnnData, Column, CsrMatrix, Matrix};
    let g = genes.len();
    let mut dense = vec![0f32; n * g];
    for i in 0..n {
        for j in 0..g {
            // Deterministic, cell-type-like structure: two programmes of genes.
            let prog = if (i % 2 == 0) == (j % 3 == 0) { 4.0 } else { 0.0 };
            dense[i * g + j] = (((i * 7 + j * 13) % 5) as f32 + prog).floor() * scale;
        }
    }
    let x = CsrMatrix::from_dense(&sclm_data::Dense::from_vec(n, g, dense).unwrap());
    let mut a = AnnData::new(Matrix::Csr(x));
    a.var.index = genes.to_vec();
    let batches: Vec<String> = (0..n).map(|i| if i < n / 2 { "b1".into() } else { "b2".into() }).collect();
    a.obs.insert("batch", Column::categorical_from_labels(&batches)).unwrap();
    sclm_io::write_h5ad(&a, path, &Default::default()).unwrap();
}

#[test]
fn import_and_embed_cellplm_checkpoint() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/cellplm");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let o = sclm(&[
        "import",
        "cellplm",
        "--config",
        fx.join("cellplm_small_gmvae.config.json").to_str().unwrap(),
        "--ckpt",
        fx.join("cellplm_small_gmvae.best.ckpt").to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("loaded"), "{}", stderr(&o));
    for f in ["config.json", "model.safetensors", "genes.txt", "preprocessing.json"] {
        assert!(model.join(f).exists(), "{f} missing");
    }
    let genes: Vec<String> =
        std::fs::read_to_string(model.join("genes.txt")).unwrap().lines().map(String::from).collect();
    assert_eq!(genes.len(), 60);

    // The dataset has 50 of the 60 vocabulary genes plus two unknown ones, in another order.
    let mut ds_genes: Vec<String> = genes[10..].iter().rev().cloned().collect();
    ds_genes.push("NOT_A_GENE_1".into());
    ds_genes.push("NOT_A_GENE_2".into());
    let data = tmp.path().join("data.h5ad");
    counts_file(&data, &ds_genes, 30, 1.0);
    let out1 = tmp.path().join("e1.h5ad");
    let out2 = tmp.path().join("e2.h5ad");
    for out in [&out1, &out2] {
        let o = sclm(&[
            "embed",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("50"), "gene matching report expected: {}", stderr(&o));
    }
    let a = sclm_io::read_h5ad(&out1).unwrap();
    let b = sclm_io::read_h5ad(&out2).unwrap();
    let e = a.obsm_get("X_cellplm").unwrap();
    assert_eq!(e.shape(), (30, 16));
    assert_eq!(e, b.obsm_get("X_cellplm").unwrap(), "embedding must be deterministic");
    let e = e.to_f32();
    assert!(e.data.iter().all(|v| v.is_finite()));
    // Cells with different counts get different embeddings (random weights: nothing more is implied).
    let d = |i: usize, j: usize| e.row(i).iter().zip(e.row(j)).map(|(x, y)| (x - y).powi(2)).sum::<f32>();
    assert!(d(0, 1) > 1e-6, "embeddings collapsed");
    // Everything else in the file is kept.
    assert_eq!(a.obs, sclm_io::read_h5ad(&data).unwrap().obs);

    // No gene in common: one clear error, no output.
    let other = tmp.path().join("other.h5ad");
    counts_file(&other, &["Foo".to_string(), "Bar".to_string()], 10, 1.0);
    let out3 = tmp.path().join("e3.h5ad");
    let o = sclm(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--data",
        other.to_str().unwrap(),
        "-o",
        out3.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "no gene", Some(&out3));
    // Not raw counts: refused.
    let frac = tmp.path().join("frac.h5ad");
    counts_file(&frac, &ds_genes, 10, 0.37);
    let o = sclm(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--data",
        frac.to_str().unwrap(),
        "-o",
        out3.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "frac.h5ad", Some(&out3));
}

/// Pretrain a tiny CellPLM, embed with it, fine-tune annotation, and the bad inputs of the
/// downstream tasks: wrong label key, too few cells in a class, no coordinates, no shared genes.
#[test]
fn cellplm_pretrain_embed_finetune_and_task_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim = d.join("sim.h5ad");
    let o = sclm(&["--seed", "3", "simulate", "--cells", "300", "--genes", "120", "-o", sim.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = d.join("model");
    let o = sclm(&[
        "-q",
        "pretrain",
        "cellplm",
        "--data",
        sim.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
        "--epochs",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["config.json", "model.safetensors", "genes.txt", "preprocessing.json"] {
        assert!(model.join(f).exists(), "{f}");
    }
    let log = std::fs::read_to_string(d.join("model.run/log.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"event\":\"epoch\"")).count(), 2);
    let pre = std::fs::read_to_string(model.join("preprocessing.json")).unwrap();
    assert!(pre.contains("sim/Batch1"), "{pre}");
    let emb = d.join("emb.h5ad");
    let o = sclm(&[
        "-q",
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--data",
        sim.to_str().unwrap(),
        "-o",
        emb.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sclm(&["evaluate", emb.to_str().unwrap(), "--embedding", "X_cellplm", "--label-key", "cell_type"]);
    assert!(o.status.success() && stdout(&o).contains("ARI"), "{}", stderr(&o));

    // Fine-tuning interrupted after one epoch, then resumed to three.
    let (ann, resumed, run) = (d.join("ann.h5ad"), d.join("resumed.h5ad"), d.join("ft.run"));
    let finetune = |out: &Path, epochs: &str, extra: &[&str]| {
        let mut args = vec![
            "-q",
            "finetune",
            "annotation",
            "--data",
            sim.to_str().unwrap(),
            "--label-key",
            "cell_type",
            "--model",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--epochs",
            epochs,
        ];
        args.extend_from_slice(extra);
        sclm(&args)
    };
    let o = finetune(&resumed, "3", &["--run-dir", run.to_str().unwrap(), "--resume"]);
    assert_clean_failure(&o, "no checkpoint to resume from", Some(&resumed));
    let o = finetune(&resumed, "1", &["--run-dir", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = finetune(&resumed, "3", &["--run-dir", run.to_str().unwrap(), "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("macro_F1"), "{}", stdout(&o));
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"event\":\"epoch\"")).count(), 3);
    // The uninterrupted run with the classifier saved: the resumed run's predictions equal its
    // own, and `sclm predict` reproduces them.
    let clf = d.join("clf");
    let o = sclm(&[
        "-q",
        "finetune",
        "annotation",
        "--data",
        sim.to_str().unwrap(),
        "--label-key",
        "cell_type",
        "--model",
        model.to_str().unwrap(),
        "-o",
        ann.to_str().unwrap(),
        "--epochs",
        "3",
        "--save-model",
        clf.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let pred = d.join("pred.h5ad");
    let o = sclm(&[
        "-q",
        "predict",
        "--model",
        clf.to_str().unwrap(),
        "--data",
        sim.to_str().unwrap(),
        "-o",
        pred.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let annotated = sclm_io::read_h5ad(&ann).unwrap();
    let predicted = sclm_io::read_h5ad(&pred).unwrap();
    let from_resumed = sclm_io::read_h5ad(&resumed).unwrap();
    let prob = |a: &sclm_data::AnnData| match a.obs_column("cell_type_cellplm_prob").unwrap() {
        sclm_data::Column::F32(v) => v.clone(),
        other => panic!("probabilities stored as {other:?}"),
    };
    let (p_full, p_resumed) = (prob(&annotated), prob(&from_resumed));
    let worst = p_full.iter().zip(&p_resumed).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-6, "resumed fine-tuning differs from the uninterrupted run by {worst}");
    assert_eq!(
        annotated.obs_column("cell_type_cellplm").unwrap().to_labels(),
        from_resumed.obs_column("cell_type_cellplm").unwrap().to_labels()
    );
    assert_eq!(
        annotated.obs_column("cell_type_cellplm").unwrap().to_labels(),
        predicted.obs_column("cellplm_prediction").unwrap().to_labels()
    );

    // Wrong label key: named, with the available columns.
    let bad = d.join("bad.h5ad");
    let o = sclm(&[
        "finetune",
        "annotation",
        "--data",
        sim.to_str().unwrap(),
        "--label-key",
        "celltype",
        "-o",
        bad.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "celltype", Some(&bad));
    // Too few cells in a class.
    let few = d.join("few.h5ad");
    let mut a = sclm_io::read_h5ad(&sim).unwrap();
    let labels: Vec<String> = (0..a.n_obs()).map(|i| if i < 2 { "rare".into() } else { "common".into() }).collect();
    a.obs.insert("tiny", sclm_data::Column::Str(labels)).unwrap();
    sclm_io::write_h5ad(&a, &few, &Default::default()).unwrap();
    let o = sclm(&[
        "finetune",
        "annotation",
        "--data",
        few.to_str().unwrap(),
        "--label-key",
        "tiny",
        "-o",
        bad.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "'rare'", Some(&bad));
    // Spatial imputation without coordinates.
    let o = sclm(&["finetune", "spatial-imputation", "--data", sim.to_str().unwrap(), "-o", bad.to_str().unwrap()]);
    assert_clean_failure(&o, "coordinates", Some(&bad));
    // No shared genes between a model and the data.
    let other = d.join("other.h5ad");
    let mut a = sclm_io::read_h5ad(&sim).unwrap();
    a.var.index = (0..a.n_vars()).map(|i| format!("Other{i}")).collect();
    sclm_io::write_h5ad(&a, &other, &Default::default()).unwrap();
    let o = sclm(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--data",
        other.to_str().unwrap(),
        "-o",
        bad.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "other.h5ad", Some(&bad));
}

#[test]
fn embed_streams_h5ad_and_exports_attention() {
    use sclm_data::{Column, Matrix};
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/cellplm");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let o = sclm(&[
        "--quiet",
        "import",
        "cellplm",
        "--config",
        fx.join("cellplm_small_gmvae.config.json").to_str().unwrap(),
        "--ckpt",
        fx.join("cellplm_small_gmvae.best.ckpt").to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let genes: Vec<String> =
        std::fs::read_to_string(model.join("genes.txt")).unwrap().lines().map(String::from).collect();
    // 31 cells in three interleaved groups, the counts also in a layer.
    let data = tmp.path().join("data.h5ad");
    counts_file(&data, &genes[5..], 31, 1.0);
    let mut a = sclm_io::read_h5ad(&data).unwrap();
    let groups: Vec<String> = (0..31).map(|i| ["g1", "g2", "g3"][i % 3].to_string()).collect();
    a.obs.columns.retain(|(k, _)| k != "batch");
    a.obs.insert("batch", Column::categorical_from_labels(&groups)).unwrap();
    a.layers.insert("counts".into(), a.x.clone());
    sclm_io::write_h5ad(&a, &data, &Default::default()).unwrap();

    let m = model.to_str().unwrap();
    let d = data.to_str().unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "embed",
            "--model",
            m,
            "--data",
            d,
            "-o",
            out.to_str().unwrap(),
            "--attention-obsp",
            "attn",
            "--attention-top-k",
            "4",
        ];
        args.extend_from_slice(extra);
        let o = sclm(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("cells/s"), "{}", stderr(&o));
        (sclm_io::read_h5ad(out).unwrap(), stderr(&o))
    };
    // The file has a layer: read whole by default; --stream reads X in chunks and drops layers.
    let (whole, _) = run(&tmp.path().join("whole.h5ad"), &[]);
    let (streamed, err) = run(&tmp.path().join("streamed.h5ad"), &["--stream", "--chunk-rows", "4"]);
    assert!(err.contains("layers and raw are left out"), "{err}");
    assert!(whole.layers.contains_key("counts") && streamed.layers.is_empty());
    assert_eq!(whole.obsm_get("X_cellplm").unwrap(), streamed.obsm_get("X_cellplm").unwrap());
    assert_eq!(whole.obsp["attn"], streamed.obsp["attn"]);
    assert_eq!((&whole.x, &whole.obs), (&streamed.x, &streamed.obs));
    // Attention: 31 × 31, 4 positive weights per cell, only within the cell's group.
    let g = match &streamed.obsp["attn"] {
        Matrix::Csr(c) => c.clone(),
        other => panic!("attention should be CSR, is dense {:?}", other.shape()),
    };
    assert_eq!((g.nrows, g.ncols, g.nnz()), (31, 31, 31 * 4));
    for i in 0..31 {
        let (idx, val) = g.row(i);
        assert!(idx.iter().all(|&j| groups[j as usize] == groups[i]), "row {i}: {idx:?}");
        assert!(val.iter().all(|&v| v > 0.0 && v.is_finite()));
    }
    // Another layer gives other weights; a layer that does not exist is refused.
    let (first, _) = run(&tmp.path().join("first.h5ad"), &["--attention-layer", "0"]);
    assert_ne!(first.obsp["attn"], whole.obsp["attn"]);
    let bad = tmp.path().join("bad.h5ad");
    let o = sclm(&[
        "embed",
        "--model",
        m,
        "--data",
        d,
        "-o",
        bad.to_str().unwrap(),
        "--attention-obsp",
        "a",
        "--attention-layer",
        "9",
    ]);
    assert_clean_failure(&o, "layer 9", Some(&bad));
}
