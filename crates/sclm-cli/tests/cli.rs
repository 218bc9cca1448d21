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

/// A path as the `&str` an argument list wants.
fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `sclm --seed SEED simulate ARGS -o OUT`, which must succeed.
fn simulate(out: &Path, seed: &str, args: &[&str]) {
    let mut all = vec!["-q", "--seed", seed, "simulate", "-o", s(out)];
    all.extend_from_slice(args);
    let o = sclm(&all);
    assert!(o.status.success(), "simulate: {}", stderr(&o));
}

/// `sclm pretrain cellplm INPUT -o MODEL --epochs EPOCHS EXTRA`, which must succeed.
fn pretrain(input: &Path, model: &Path, epochs: &str, extra: &[&str]) {
    let mut all = vec!["-q", "pretrain", "cellplm", s(input), "-o", s(model), "--epochs", epochs];
    all.extend_from_slice(extra);
    let o = sclm(&all);
    assert!(o.status.success(), "pretrain: {}", stderr(&o));
}

/// `model.json` of a model directory.
fn manifest(model: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(model.join("model.json")).unwrap()).unwrap()
}

/// An obs column as strings.
fn labels(a: &sclm_data::AnnData, key: &str) -> Vec<String> {
    a.obs_column(key).unwrap_or_else(|e| panic!("obs['{key}']: {e}")).to_labels()
}

/// An obs column of probabilities.
fn probs(a: &sclm_data::AnnData, key: &str) -> Vec<f32> {
    match a.obs_column(key).unwrap() {
        sclm_data::Column::F32(v) => v.clone(),
        other => panic!("obs['{key}'] stored as {other:?}"),
    }
}

/// The files and directories in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    v.sort();
    v
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
    for f in ["model.json", "config.json", "model.safetensors", "genes.txt"] {
        assert!(model.join(f).exists(), "{f} missing");
    }
    assert!(!model.join("preprocessing.json").exists(), "preprocessing.json is no longer written");
    let m = manifest(&model);
    assert_eq!((m["format"].as_str(), m["format_version"].as_u64()), (Some("sclm-model"), Some(1)), "{m}");
    assert_eq!((m["family"].as_str(), m["kind"].as_str()), (Some("cellplm"), Some("pretrained")), "{m}");
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
        let o = sclm(&["embed", s(&data), "--model", s(&model), "-o", s(out)]);
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
    // --key-added names the obsm entry.
    let out4 = tmp.path().join("e4.h5ad");
    let o = sclm(&["-q", "embed", s(&data), "--model", s(&model), "-o", s(&out4), "--key-added", "X_mine"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = sclm_io::read_h5ad(&out4).unwrap();
    assert_eq!(c.obsm_get("X_mine").unwrap(), a.obsm_get("X_cellplm").unwrap());
    assert!(c.obsm_get("X_cellplm").is_err());

    // No gene in common: one clear error, no output.
    let other = tmp.path().join("other.h5ad");
    counts_file(&other, &["Foo".to_string(), "Bar".to_string()], 10, 1.0);
    let out3 = tmp.path().join("e3.h5ad");
    let o = sclm(&["embed", s(&other), "--model", s(&model), "-o", s(&out3)]);
    assert_clean_failure(&o, "no gene", Some(&out3));
    // Not raw counts: refused.
    let frac = tmp.path().join("frac.h5ad");
    counts_file(&frac, &ds_genes, 10, 0.37);
    let o = sclm(&["embed", s(&frac), "--model", s(&model), "-o", s(&out3)]);
    assert_clean_failure(&o, "frac.h5ad", Some(&out3));
    // The old `--data` flag is gone.
    let o = sclm(&["embed", "--model", s(&model), "--data", s(&data), "-o", s(&out3)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("unexpected argument '--data'"), "{}", stderr(&o));
    assert!(!out3.exists());
}

/// Pretrain a tiny CellPLM, embed with it, fine-tune annotation (interrupted and resumed, saved
/// and predicted), and the bad inputs of the downstream tasks: wrong label key, a class too
/// small, no coordinates, no shared genes.
#[test]
fn cellplm_pretrain_embed_finetune_and_task_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim = d.join("sim.h5ad");
    simulate(&sim, "3", &["--cells", "300", "--genes", "120"]);
    let model = d.join("model");
    pretrain(&sim, &model, "2", &[]);
    for f in ["model.json", "config.json", "model.safetensors", "genes.txt"] {
        assert!(model.join(f).exists(), "{f}");
    }
    assert!(!model.join("preprocessing.json").exists());
    let log = std::fs::read_to_string(d.join("model.run/log.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"event\":\"epoch\"")).count(), 2);
    let m = manifest(&model);
    assert_eq!((m["format"].as_str(), m["format_version"].as_u64()), (Some("sclm-model"), Some(1)), "{m}");
    assert_eq!((m["family"].as_str(), m["kind"].as_str()), (Some("cellplm"), Some("pretrained")), "{m}");
    assert_eq!(m["registry"]["group_key"], "batch", "{m}");
    let batch_labels: Vec<&str> =
        m["registry"]["batch_labels"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(batch_labels, ["sim/Batch1", "sim/Batch2"], "{m}");
    let emb = d.join("emb.h5ad");
    let o = sclm(&["-q", "embed", s(&sim), "--model", s(&model), "-o", s(&emb)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sclm(&["evaluate", s(&emb), "--embedding", "X_cellplm", "--label-key", "cell_type"]);
    assert!(o.status.success() && stdout(&o).contains("ARI"), "{}", stderr(&o));
    // evaluate --model embeds and scores the model next to PCA on the same cells.
    let o = sclm(&["-q", "evaluate", s(&sim), "--model", s(&model), "--label-key", "cell_type"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("ARI") && stdout(&o).contains("PCA"), "{}", stdout(&o));

    // Fine-tuning interrupted after one epoch, then resumed to three.
    let (ann, resumed, run) = (d.join("ann.h5ad"), d.join("resumed.h5ad"), d.join("ft.run"));
    let finetune = |out: &Path, epochs: &str, extra: &[&str]| {
        let mut args = vec![
            "-q",
            "finetune",
            "annotation",
            s(&sim),
            "--label-key",
            "cell_type",
            "--model",
            s(&model),
            "-o",
            s(out),
            "--epochs",
            epochs,
        ];
        args.extend_from_slice(extra);
        sclm(&args)
    };
    let o = finetune(&resumed, "3", &["--run-dir", s(&run), "--resume"]);
    assert_clean_failure(&o, "no checkpoint to resume from", Some(&resumed));
    let o = finetune(&resumed, "1", &["--run-dir", s(&run)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = finetune(&resumed, "3", &["--run-dir", s(&run), "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("macro_F1") && stdout(&o).contains("logreg on PCA"), "{}", stdout(&o));
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"event\":\"epoch\"")).count(), 3);
    // The uninterrupted run with the classifier saved: the resumed run's predictions equal its
    // own, and `sclm predict` with the saved classifier reproduces them exactly.
    let clf = d.join("clf");
    let o = finetune(&ann, "3", &["--save-model", s(&clf)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&clf);
    assert_eq!((m["format"].as_str(), m["format_version"].as_u64()), (Some("sclm-model"), Some(1)), "{m}");
    assert_eq!((m["family"].as_str(), m["kind"].as_str()), (Some("cellplm"), Some("classifier")), "{m}");
    assert_eq!(m["registry"]["group_key"], "batch", "{m}");
    let classes: Vec<&str> = m["classes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(classes, ["A1", "A2", "A3", "B1", "B2", "B3", "C1", "C2"], "{m}");
    // The backbone once, next to the head: no plm/, no classifier.safetensors, no classes.json.
    assert_eq!(
        listing(&clf),
        ["config.json", "genes.txt", "head.safetensors", "model.json", "model.safetensors"],
        "classifier directory layout"
    );
    let pred = d.join("pred.h5ad");
    let o = sclm(&["-q", "predict", s(&sim), "--model", s(&clf), "-o", s(&pred)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let annotated = sclm_io::read_h5ad(&ann).unwrap();
    let predicted = sclm_io::read_h5ad(&pred).unwrap();
    let from_resumed = sclm_io::read_h5ad(&resumed).unwrap();
    let (p_full, p_resumed) =
        (probs(&annotated, "cell_type_cellplm_prob"), probs(&from_resumed, "cell_type_cellplm_prob"));
    let worst = p_full.iter().zip(&p_resumed).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= 1e-6, "resumed fine-tuning differs from the uninterrupted run by {worst}");
    assert_eq!(labels(&annotated, "cell_type_cellplm"), labels(&from_resumed, "cell_type_cellplm"));
    assert_eq!(labels(&annotated, "cell_type_cellplm"), labels(&predicted, "cellplm_prediction"));
    assert_eq!(p_full, probs(&predicted, "cellplm_prediction_prob"), "predict must reproduce the probabilities");
    // Every labelled cell is in the split; none is excluded.
    let split = labels(&annotated, "cell_type_cellplm_split");
    assert!(split.iter().all(|v| ["train", "valid", "test"].contains(&v.as_str())), "{split:?}");
    for part in ["train", "valid", "test"] {
        assert!(split.iter().any(|v| v == part), "no {part} cell");
    }
    // The classifier embeds too (its fine-tuned backbone), and --key-added names the prediction.
    let e_clf = d.join("emb_clf.h5ad");
    let o = sclm(&["-q", "embed", s(&sim), "--model", s(&clf), "-o", s(&e_clf)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = sclm_io::read_h5ad(&e_clf).unwrap();
    let (w, base) = (e.obsm_get("X_cellplm").unwrap(), sclm_io::read_h5ad(&emb).unwrap());
    assert_eq!(w.shape(), base.obsm_get("X_cellplm").unwrap().shape());
    assert!(w.to_f32().data.iter().all(|v| v.is_finite()));
    let pred2 = d.join("pred2.h5ad");
    let o = sclm(&["-q", "predict", s(&sim), "--model", s(&clf), "-o", s(&pred2), "--key-added", "ct"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let p2 = sclm_io::read_h5ad(&pred2).unwrap();
    assert_eq!(labels(&p2, "ct"), labels(&predicted, "cellplm_prediction"));
    assert!(p2.obs_column("ct_prob").is_ok());
    // A pretrained model is not a classifier.
    let bad = d.join("bad.h5ad");
    let o = sclm(&["predict", s(&sim), "--model", s(&model), "-o", s(&bad)]);
    assert_clean_failure(&o, "not a classifier", Some(&bad));

    // Wrong label key: named, with the available columns.
    let o = sclm(&["finetune", "annotation", s(&sim), "--label-key", "celltype", "-o", s(&bad)]);
    assert_clean_failure(&o, "celltype", Some(&bad));
    assert!(stderr(&o).contains("cell_type"), "{}", stderr(&o));
    // A class of 2 cells is left out with a note naming it (it used to be an error) ...
    let few = d.join("few.h5ad");
    let mut a = sclm_io::read_h5ad(&sim).unwrap();
    let tiny: Vec<String> =
        (0..a.n_obs()).map(|i| if i < 2 { "rare".into() } else { ["even", "odd"][i % 2].into() }).collect();
    let single: Vec<String> = (0..a.n_obs()).map(|i| if i < 2 { "rare".into() } else { "common".into() }).collect();
    a.obs.insert("tiny", sclm_data::Column::Str(tiny)).unwrap();
    a.obs.insert("single", sclm_data::Column::Str(single)).unwrap();
    sclm_io::write_h5ad(&a, &few, &Default::default()).unwrap();
    let few_out = d.join("few_out.h5ad");
    let o = sclm(&["finetune", "annotation", s(&few), "--label-key", "tiny", "-o", s(&few_out), "--epochs", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("rare (2)") && err.contains("fewer than 3 cells"), "note expected: {err}");
    let f = sclm_io::read_h5ad(&few_out).unwrap();
    assert!(labels(&f, "tiny_cellplm").iter().all(|p| p == "even" || p == "odd"));
    assert_eq!(labels(&f, "tiny_cellplm_split")[..2], ["excluded", "excluded"]);
    // ... but fewer than 2 classes left is still an error, which says why.
    let o = sclm(&["finetune", "annotation", s(&few), "--label-key", "single", "-o", s(&bad), "--epochs", "1"]);
    assert_clean_failure(&o, "obs['single'] has 1 class(es) with at least 3 cells", Some(&bad));
    // Spatial imputation without coordinates.
    let o = sclm(&["finetune", "spatial-imputation", s(&sim), "-o", s(&bad)]);
    assert_clean_failure(&o, "coordinates", Some(&bad));
    // No shared genes between a model and the data.
    let other = d.join("other.h5ad");
    let mut a = sclm_io::read_h5ad(&sim).unwrap();
    a.var.index = (0..a.n_vars()).map(|i| format!("Other{i}")).collect();
    sclm_io::write_h5ad(&a, &other, &Default::default()).unwrap();
    let o = sclm(&["embed", s(&other), "--model", s(&model), "-o", s(&bad)]);
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
        let mut args =
            vec!["embed", d, "--model", m, "-o", s(out), "--attention-obsp", "attn", "--attention-top-k", "4"];
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
    // The counts layer read with --layer gives the same embedding.
    let (from_layer, _) = run(&tmp.path().join("layer.h5ad"), &["--layer", "counts"]);
    assert_eq!(whole.obsm_get("X_cellplm").unwrap(), from_layer.obsm_get("X_cellplm").unwrap());
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
    let o = sclm(&["embed", d, "--model", m, "-o", s(&bad), "--attention-obsp", "a", "--attention-layer", "9"]);
    assert_clean_failure(&o, "layer 9", Some(&bad));
}

/// Each `sclm finetune` task takes only its own flags (and the common ones): a flag of another
/// task is a usage error (exit code 2) before anything is read or written.
#[test]
fn finetune_tasks_take_only_their_own_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sim = d.join("sim.h5ad");
    simulate(&sim, "1", &["--cells", "40", "--genes", "30"]);
    let out = d.join("out.h5ad");
    let (sim_s, out_s) = (s(&sim), s(&out));
    // What each task needs to run, then flags that belong to other tasks.
    let cases = [
        (
            "annotation",
            vec!["--label-key", "cell_type", "-o", out_s],
            vec![
                vec!["--reference", "r.h5ad"],
                vec!["--hide-frac", "0.1"],
                vec!["--pretrain-epochs", "1"],
                vec!["--spatial-key", "spatial"],
                vec!["--coords-obs", "row,col"],
                vec!["--holdout-frac", "0.1"],
                vec!["--perturbation-key", "perturbation"],
                vec!["--control", "ctrl"],
            ],
        ),
        (
            "denoising",
            vec!["-o", out_s],
            vec![
                vec!["--label-key", "x"],
                vec!["--save-model", "clf"],
                vec!["--run-dir", "run"],
                vec!["--min-cells-per-class", "3"],
                vec!["--reference", "r.h5ad"],
                vec!["--coords-obs", "row,col"],
                vec!["--perturbation-key", "perturbation"],
                vec!["--valid-frac", "0.1"],
            ],
        ),
        (
            "spatial-imputation",
            vec!["-o", out_s],
            vec![
                vec!["--label-key", "x"],
                vec!["--key-added", "k"],
                vec!["--save-model", "clf"],
                vec!["--hide-frac", "0.1"],
                vec!["--pretrain-epochs", "1"],
                vec!["--control", "ctrl"],
                vec!["--test-frac", "0.2"],
            ],
        ),
        (
            "perturbation",
            vec!["--json", out_s],
            vec![
                vec!["--reference", "r.h5ad"],
                vec!["--label-key", "x"],
                vec!["--save-model", "clf"],
                vec!["--hide-frac", "0.1"],
                vec!["--spatial-key", "spatial"],
                vec!["--n-top-genes", "100"],
                vec!["-o", "out2.h5ad"],
                // Control cells are paired at random: perturbation forms no groups.
                vec!["--group-key", "batch"],
            ],
        ),
    ];
    for (task, own, foreign) in &cases {
        for flag in foreign {
            let mut args = vec!["finetune", task, sim_s];
            args.extend_from_slice(own);
            args.extend_from_slice(flag);
            let o = sclm(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "finetune {task} {flag:?}: {err}");
            assert!(err.contains(&format!("unexpected argument '{}'", flag[0])), "finetune {task} {flag:?}: {err}");
            assert!(stdout(&o).is_empty(), "finetune {task} {flag:?}: {}", stdout(&o));
        }
        // Every task lists the common flags; those that group cells, --group-key.
        let o = sclm(&["finetune", task, "--help"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let help = stdout(&o);
        for common in ["--model", "--layer", "--use-raw", "--log1p-input", "--allow-non-integer", "--json"] {
            assert!(help.contains(common), "finetune {task} --help lacks {common}: {help}");
        }
        assert_eq!(help.contains("--group-key"), *task != "perturbation", "finetune {task} --help: {help}");
    }
    // Denoising: a fresh model is pretrained here, a given one is used as it is; not both.
    let model = d.join("model");
    std::fs::create_dir(&model).unwrap();
    let o = sclm(&["finetune", "denoising", sim_s, "--model", s(&model), "--pretrain-epochs", "2", "-o", out_s]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    // No task means usage; the old `--data` flag is gone.
    let o = sclm(&["finetune", "annotation", "--data", sim_s, "--label-key", "cell_type", "-o", out_s]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = sclm(&["finetune", "frobnicate", sim_s]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Nothing was written: the directory holds the input and the empty model directory only.
    assert_eq!(listing(d), ["model", "sim.h5ad"]);
    assert_eq!(listing(&model), Vec::<String>::new());
}

/// Annotation with unlabelled cells and a class of 2 cells: both left out of the split,
/// training and scores, said on stderr, and marked `excluded` in `<key>_split`.
#[test]
fn annotation_leaves_out_unlabelled_cells_and_small_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sim = d.join("sim.h5ad");
    simulate(&sim, "5", &["--cells", "200", "--genes", "80", "--types", "3"]);
    let mut a = sclm_io::read_h5ad(&sim).unwrap();
    let mut lab = labels(&a, "cell_type");
    let unlabelled = [3usize, 10, 50, 120, 199];
    let rare = [7usize, 77];
    for &i in &unlabelled {
        lab[i] = String::new();
    }
    for &i in &rare {
        lab[i] = "Rare".into();
    }
    a.obs.insert("label", sclm_data::Column::Str(lab.clone())).unwrap();
    let data = d.join("labelled.h5ad");
    sclm_io::write_h5ad(&a, &data, &Default::default()).unwrap();
    let out = d.join("ann.h5ad");
    let json = d.join("ann.json");
    let o = sclm(&[
        "finetune",
        "annotation",
        s(&data),
        "--label-key",
        "label",
        "-o",
        s(&out),
        "--key-added",
        "pred",
        "--epochs",
        "2",
        "--n-top-genes",
        "60",
        "--json",
        s(&json),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("5 cells without a label in obs['label'] left out"), "{err}");
    assert!(err.contains("1 class(es) with fewer than 3 cells left out (2 cells): Rare (2)"), "{err}");
    assert!(!err.contains("error"), "{err}");
    let r = sclm_io::read_h5ad(&out).unwrap();
    let split = labels(&r, "pred_split");
    assert_eq!(split.len(), lab.len());
    for (i, (part, label)) in split.iter().zip(&lab).enumerate() {
        let left_out = unlabelled.contains(&i) || rare.contains(&i);
        assert_eq!(part == "excluded", left_out, "cell {i}: split '{part}', label '{label}'");
        if !left_out {
            assert!(["train", "valid", "test"].contains(&part.as_str()), "cell {i}: {part}");
        }
    }
    // Every cell is predicted (the left-out ones too), never as the dropped class.
    let pred = labels(&r, "pred");
    assert!(pred.iter().all(|p| !p.is_empty() && p != "Rare"), "{pred:?}");
    assert!(probs(&r, "pred_prob").iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(r.obs_column("label_cellplm").is_err(), "--key-added replaces the default key");
    // The scores are over the test cells of the kept classes only.
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let n_test = split.iter().filter(|s| *s == "test").count();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    for rep in v.as_array().unwrap() {
        assert_eq!(rep["n_cells"].as_u64(), Some(n_test as u64), "{rep}");
    }
    // The rest of the file is kept.
    assert_eq!(r.obs_column("label").unwrap(), a.obs_column("label").unwrap());
    assert_eq!(r.x, a.x);
}

/// `sclm embed` groups cells by the group key saved with the model unless told otherwise, and
/// a directory written before model.json existed (preprocessing.json) still embeds.
#[test]
fn embed_uses_the_saved_group_key_and_reads_legacy_directories() {
    use sclm_data::Column;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sim = d.join("sim.h5ad");
    simulate(&sim, "7", &["--cells", "120", "--genes", "60"]);
    let mut a = sclm_io::read_h5ad(&sim).unwrap();
    let samples: Vec<String> = (0..a.n_obs()).map(|i| format!("s{}", i % 3)).collect();
    a.obs.insert("sample", Column::categorical_from_labels(&samples)).unwrap();
    sclm_io::write_h5ad(&a, &sim, &Default::default()).unwrap();
    let model = d.join("model");
    pretrain(&sim, &model, "1", &["--group-key", "sample"]);
    assert_eq!(manifest(&model)["registry"]["group_key"], "sample");

    let embed = |model: &Path, name: &str, extra: &[&str]| {
        let out = d.join(name);
        let mut args = vec!["embed", s(&sim), "--model", s(model), "-o", s(&out)];
        args.extend_from_slice(extra);
        let o = sclm(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let e = sclm_io::read_h5ad(&out).unwrap().obsm_get("X_cellplm").unwrap().to_f32();
        (e, stderr(&o))
    };
    let (by_default, err) = embed(&model, "default.h5ad", &[]);
    assert!(err.contains("cells grouped by obs['sample']"), "{err}");
    let (by_sample, _) = embed(&model, "sample.h5ad", &["--group-key", "sample"]);
    assert_eq!(by_default, by_sample, "the saved group key is the default");
    let (ungrouped, err) = embed(&model, "ungrouped.h5ad", &["--group-key", ""]);
    assert!(!err.contains("cells grouped by"), "{err}");
    assert_ne!(by_default, ungrouped, "--group-key \"\" puts all cells in one group");
    let (by_batch, err) = embed(&model, "batch.h5ad", &["--group-key", "batch"]);
    assert!(err.contains("cells grouped by obs['batch']"), "{err}");
    assert_ne!(by_default, by_batch);

    // A legacy directory: no model.json, preprocessing.json with the group key.
    let legacy = d.join("legacy");
    std::fs::create_dir(&legacy).unwrap();
    for f in ["config.json", "genes.txt", "model.safetensors"] {
        std::fs::copy(model.join(f), legacy.join(f)).unwrap();
    }
    std::fs::write(legacy.join("preprocessing.json"), r#"{"group_key": "batch"}"#).unwrap();
    let (old, err) = embed(&legacy, "legacy.h5ad", &[]);
    assert!(err.contains("cells grouped by obs['batch']"), "{err}");
    assert_eq!(old, by_batch, "the legacy directory is the same model, grouped by its saved key");
    assert!(!legacy.join("model.json").exists(), "reading a legacy directory must not rewrite it");
}

/// Spatial imputation's bad inputs: one clear line naming the file and what is wrong, no output.
#[test]
fn spatial_imputation_refuses_unusable_inputs() {
    use sclm_data::{Array2, Column};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sp = d.join("sp.h5ad");
    simulate(&sp, "2", &["--cells", "60", "--genes", "40", "--spatial"]);
    let a = sclm_io::read_h5ad(&sp).unwrap();
    let out = d.join("out.h5ad");
    let run = |input: &Path, extra: &[&str]| {
        let mut args = vec!["finetune", "spatial-imputation", s(input), "-o", s(&out), "--epochs", "1"];
        args.extend_from_slice(extra);
        sclm(&args)
    };
    // obsm['spatial'] with one column.
    let one_col = d.join("one_column.h5ad");
    let mut b = a.clone();
    let xy = b.obsm_get("spatial").unwrap().to_f32();
    b.obsm.insert("spatial".into(), Array2::F32(xy.select_cols(&[0])));
    sclm_io::write_h5ad(&b, &one_col, &Default::default()).unwrap();
    let o = run(&one_col, &[]);
    assert_clean_failure(&o, "one_column.h5ad", Some(&out));
    assert!(stderr(&o).contains("obsm['spatial'] has 1 column"), "{}", stderr(&o));
    // A file with 1 gene.
    let one_gene = d.join("one_gene.h5ad");
    sclm_io::write_h5ad(&a.select_vars(&[0]), &one_gene, &Default::default()).unwrap();
    let o = run(&one_gene, &[]);
    assert_clean_failure(&o, "one_gene.h5ad", Some(&out));
    assert!(stderr(&o).contains("at least 2 genes"), "{}", stderr(&o));
    // A reference with 0 cells.
    let empty = d.join("empty_reference.h5ad");
    sclm_io::write_h5ad(&a.select_obs(&[]), &empty, &Default::default()).unwrap();
    let o = run(&sp, &["--reference", s(&empty)]);
    assert_clean_failure(&o, "the reference has 0 cells", Some(&out));
    // (That the line names the reference file is checked by the test below.)
    // Coordinates from obs columns: two names wanted, numbers wanted.
    let mut c = a.clone();
    c.obs.insert("row", Column::F32(xy.data.iter().step_by(2).copied().collect())).unwrap();
    let coords = d.join("coords.h5ad");
    sclm_io::write_h5ad(&c, &coords, &Default::default()).unwrap();
    let o = run(&coords, &["--coords-obs", "row"]);
    assert_clean_failure(&o, "--coords-obs", Some(&out));
    let o = run(&coords, &["--coords-obs", "row,cell_type"]);
    assert_clean_failure(&o, "obs['cell_type']", Some(&out));
    assert!(stderr(&o).contains("coords.h5ad"), "{}", stderr(&o));
    // A coordinate key that does not exist names the ones that do.
    let o = run(&sp, &["--spatial-key", "X_spatial"]);
    assert_clean_failure(&o, "X_spatial", Some(&out));
    assert!(stderr(&o).contains("spatial"), "{}", stderr(&o));
}

/// A bad `--reference` is named in the error line, not the spatial file.
#[test]
fn spatial_imputation_error_names_the_reference_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sp = d.join("sp.h5ad");
    simulate(&sp, "2", &["--cells", "60", "--genes", "40", "--spatial"]);
    let a = sclm_io::read_h5ad(&sp).unwrap();
    let empty = d.join("empty_reference.h5ad");
    sclm_io::write_h5ad(&a.select_obs(&[]), &empty, &Default::default()).unwrap();
    let out = d.join("out.h5ad");
    let o = sclm(&["finetune", "spatial-imputation", s(&sp), "--reference", s(&empty), "-o", s(&out), "--epochs", "1"]);
    assert_clean_failure(&o, "empty_reference.h5ad", Some(&out));
    assert!(stderr(&o).contains("0 cells"), "{}", stderr(&o));
}

/// Denoising and spatial imputation end to end on tiny data: the tables, the layers written.
#[test]
fn finetune_denoising_and_spatial_imputation_write_their_layers() {
    use sclm_data::Column;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sim = d.join("sim.h5ad");
    simulate(&sim, "4", &["--cells", "120", "--genes", "60", "--spatial"]);
    let model = d.join("model");
    pretrain(&sim, &model, "1", &[]);

    // Denoising with a fresh model trained here, and with the pretrained one.
    let den = d.join("den.h5ad");
    let o = sclm(&[
        "-q",
        "finetune",
        "denoising",
        s(&sim),
        "--pretrain-epochs",
        "1",
        "--epochs",
        "1",
        "--n-top-genes",
        "50",
        "-o",
        s(&den),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("hidden entries") && out.contains("kNN diffusion") && out.contains("RMSE"), "{out}");
    let r = sclm_io::read_h5ad(&den).unwrap();
    assert_eq!(r.n_vars(), 50);
    for l in ["counts_hidden", "knn_denoised", "cellplm_denoised", "cellplm_finetuned_denoised"] {
        assert!(r.layers.contains_key(l), "layer {l} missing: {:?}", r.layers.keys());
    }
    let json = d.join("den.json");
    let o = sclm(&["-q", "finetune", "denoising", s(&sim), "--model", s(&model), "--epochs", "0", "--json", s(&json)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("cellplm zero-shot"), "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(v.as_array().unwrap().iter().any(|r| r["method"] == "kNN diffusion"), "{v}");

    // Spatial imputation from obs columns holding the coordinates.
    let mut a = sclm_io::read_h5ad(&sim).unwrap();
    let xy = a.obsm.remove("spatial").unwrap().to_f32();
    a.obs.insert("row", Column::F32(xy.data.iter().step_by(2).copied().collect())).unwrap();
    a.obs.insert("col", Column::F32(xy.data.iter().skip(1).step_by(2).copied().collect())).unwrap();
    let coords = d.join("coords.h5ad");
    sclm_io::write_h5ad(&a, &coords, &Default::default()).unwrap();
    let imp = d.join("imp.h5ad");
    let o = sclm(&[
        "-q",
        "finetune",
        "spatial-imputation",
        s(&coords),
        "--coords-obs",
        "row,col",
        "--model",
        s(&model),
        "--epochs",
        "1",
        "--holdout-frac",
        "0.2",
        "-o",
        s(&imp),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("query spots") && out.contains("kNN regression from reference"), "{out}");
    let r = sclm_io::read_h5ad(&imp).unwrap();
    for l in ["cellplm_imputed", "knn_imputed"] {
        assert!(r.layers.contains_key(l), "layer {l} missing: {:?}", r.layers.keys());
    }
    let held = match r.var.get("held_out").unwrap() {
        Column::Bool(v) => v.iter().filter(|&&b| b).count(),
        other => panic!("held_out stored as {other:?}"),
    };
    assert!(held >= 1 && held < r.n_vars(), "{held} held out of {}", r.n_vars());
}

/// Perturbation prediction on a simulated screen (bare gene names and `control`) and on the same
/// cells named as GEARS does (`A+ctrl`, `ctrl`): the test and validation tables.
#[test]
fn perturbation_prints_test_and_validation_tables() {
    use sclm_data::Column;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sim = d.join("perturb.h5ad");
    simulate(&sim, "2", &["--cells", "300", "--genes", "100", "--perturb", "6"]);
    let run = |input: &Path, json: &Path| {
        let o = sclm(&[
            "-q",
            "finetune",
            "perturbation",
            s(input),
            "--epochs",
            "1",
            "--valid-frac",
            "0.3",
            "--json",
            s(json),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
        (out, v)
    };
    let check = |out: &str, v: &serde_json::Value| {
        assert!(out.contains("3 train / 1 valid / 2 test (unseen) perturbations"), "{out}");
        let (t, va) = (out.find("test conditions:"), out.find("validation conditions:"));
        assert!(t.is_some() && va.is_some() && t < va, "both tables expected, test first: {out}");
        assert_eq!(out.matches("no change (control mean)").count(), 2, "{out}");
        assert_eq!(out.matches("rmse_top20_de").count(), 2, "{out}");
        let reps = v.as_array().unwrap();
        assert_eq!(reps.len(), 4, "{v}");
        for r in reps {
            assert!(r["metrics"].as_array().unwrap().iter().all(|m| m["value"].as_f64().unwrap().is_finite()), "{r}");
        }
    };
    let (out, v) = run(&sim, &d.join("p.json"));
    check(&out, &v);
    let a = sclm_io::read_h5ad(&sim).unwrap();
    let n_control = labels(&a, "perturbation").iter().filter(|c| *c == "control").count();
    assert!(out.contains(&format!("{n_control} control cells")), "{out}");

    // GEARS names: the same conditions, the same split and scores.
    let mut g = a.clone();
    let gears: Vec<String> = labels(&a, "perturbation")
        .iter()
        .map(|c| if c == "control" { "ctrl".to_string() } else { format!("{c}+ctrl") })
        .collect();
    g.obs.insert("perturbation", Column::categorical_from_labels(&gears)).unwrap();
    let gfile = d.join("gears.h5ad");
    sclm_io::write_h5ad(&g, &gfile, &Default::default()).unwrap();
    let (gout, gv) = run(&gfile, &d.join("g.json"));
    check(&gout, &gv);
    assert!(gout.contains(&format!("{n_control} control cells")), "{gout}");

    // A control that no cell has: refused, naming it.
    let o = sclm(&["finetune", "perturbation", s(&sim), "--control", "ctrl", "--epochs", "1"]);
    assert_clean_failure(&o, "'ctrl'", None);
}
