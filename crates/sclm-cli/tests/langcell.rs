//! `sclm import langcell`, `sclm embed` and `sclm annotate` on the published-layout fixture
//! checkpoint (fixtures/langcell/ckpt: random weights written by the published code), and
//! their one-line errors on bad input.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sclm_data::{AnnData, Column, CsrMatrix, DataFrame, Matrix};

fn sclm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sclm")).args(args).output().expect("run sclm")
}

fn fx(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/langcell").join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn one_error(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected failure: {}", String::from_utf8_lossy(&o.stdout));
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert!(lines[0].contains(needle), "error should name '{needle}': {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn import(dir: &Path, token_dictionary: &Path) -> Output {
    sclm(&[
        "import",
        "langcell",
        "--ckpt",
        s(&fx("ckpt")),
        "--token-dictionary",
        s(token_dictionary),
        "--gene-medians",
        s(&fx("gene_median_dictionary.tsv")),
        "-o",
        s(dir),
    ])
}

/// 30 cells over the fixture's 37 genes (Ensembl ids) plus two genes outside the vocabulary.
fn dataset(path: &Path, empty_cell: bool) {
    let (n, g) = (30usize, 39usize);
    let mut indptr = vec![0];
    let (mut idx, mut val) = (Vec::new(), Vec::new());
    for i in 0..n {
        if !(empty_cell && i == 3) {
            for j in 0..g {
                if (i * 7 + j * 3) % 5 != 0 {
                    idx.push(j as u32);
                    val.push(((i + 2 * j) % 9 + 1) as f32);
                }
            }
        } else {
            idx.push(37);
            val.push(4.0);
        }
        indptr.push(idx.len());
    }
    let x = CsrMatrix::new(n, g, indptr, idx, val).unwrap();
    let mut a = AnnData::new(Matrix::Csr(x));
    let mut genes: Vec<String> = (0..37).map(|i| format!("ENSG{i:011}")).collect();
    genes.push("NOT_A_GENE1".into());
    genes.push("NOT_A_GENE2".into());
    a.var = DataFrame::new(genes);
    a.obs = DataFrame::new((0..n).map(|i| format!("c{i}")).collect());
    let truth: Vec<String> = (0..n).map(|i| ["B cell", "erythrocyte", "T cell"][i % 3].to_string()).collect();
    a.obs.insert("truth", Column::Str(truth)).unwrap();
    sclm_io::write_h5ad(&a, path, &Default::default()).unwrap();
}

#[test]
fn import_embed_annotate_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("lc");
    let o = import(&model, &fx("token_dictionary.tsv"));
    assert!(o.status.success(), "import: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("embeddings.position_ids"), "the report names skipped buffers: {err}");
    let manifest = std::fs::read_to_string(model.join("model.json")).unwrap();
    assert!(manifest.contains("\"langcell\""), "{manifest}");

    let input = tmp.path().join("in.h5ad");
    dataset(&input, false);
    let out = tmp.path().join("emb.h5ad");
    let o = sclm(&["embed", s(&input), "--model", s(&model), "-o", s(&out)]);
    assert!(o.status.success(), "embed: {}", stderr(&o));
    let (a, _) = sclm_io::read_any(&out).unwrap();
    let e = a.obsm["X_langcell"].to_f32();
    assert_eq!((e.nrows, e.ncols), (30, 8));
    for r in 0..30 {
        let norm: f32 = e.data[r * 8..(r + 1) * 8].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "cell embeddings are L2-normalised: {norm}");
    }
    assert!(stderr(&o).contains("37"), "gene match report: {}", stderr(&o));

    // Zero-shot with the user's texts.
    let texts = tmp.path().join("texts.tsv");
    std::fs::write(&texts, "B cell\tcell type: B cell.\nerythrocyte\tcell type: erythrocyte. A red blood cell.\nT cell\tcell type: T cell.\n").unwrap();
    let ann = tmp.path().join("ann.h5ad");
    let o = sclm(&[
        "annotate",
        s(&input),
        "--model",
        s(&model),
        "-o",
        s(&ann),
        "--classes-from",
        "truth",
        "--texts",
        s(&texts),
        "--truth",
        "truth",
        "--alpha",
        "0.1",
    ]);
    assert!(o.status.success(), "annotate: {}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(table.contains("macro-F1") && table.contains("alpha 0.1"), "{table}");
    assert!(table.contains("cell→text recall @1") && table.contains("text→cell precision @1"), "{table}");
    let o = sclm(&[
        "retrieve",
        s(&input),
        "--model",
        s(&model),
        "--query",
        "cell type: B cell.",
        "--top",
        "3",
        "--show",
        "truth",
    ]);
    assert!(o.status.success(), "retrieve: {}", stderr(&o));
    let hits = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(hits.lines().count(), 4, "a query line and 3 hits: {hits}");
    let (a, _) = sclm_io::read_any(&ann).unwrap();
    let pred = a.obs.column("langcell_zero_shot", "obs").unwrap().to_labels();
    assert!(pred.iter().all(|p| ["B cell", "erythrocyte", "T cell"].contains(&p.as_str())));
    assert_eq!(a.obsm["langcell_zero_shot_scores"].shape(), (30, 3));

    // Bad input, each one line.
    let o = sclm(&[
        "annotate",
        s(&input),
        "--model",
        s(&model),
        "-o",
        s(&ann),
        "--classes",
        "B cell,Foo cell",
        "--texts",
        s(&texts),
    ]);
    one_error(&o, "Foo cell");
    let o = sclm(&["import", "langcell", "--ckpt", s(&fx("ckpt")), "--config", "x.json", "-o", s(&model)]);
    one_error(&o, "--config");
    let o = sclm(&["import", "langcell", "--ckpt", s(&fx("ckpt")), "-o", s(&tmp.path().join("m2"))]);
    one_error(&o, "--token-dictionary");
    // A dictionary with fewer genes than the checkpoint's cell vocabulary.
    let short = tmp.path().join("short.tsv");
    let dict = std::fs::read_to_string(fx("token_dictionary.tsv")).unwrap();
    std::fs::write(&short, dict.lines().take(30).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    let o = import(&tmp.path().join("m3"), &short);
    one_error(&o, "vocabulary mismatch");
    assert!(!tmp.path().join("m3").exists());
    // A cell with no gene of the vocabulary.
    let bad = tmp.path().join("bad.h5ad");
    dataset(&bad, true);
    let o = sclm(&["embed", s(&bad), "--model", s(&model), "-o", s(&tmp.path().join("bad_out.h5ad"))]);
    one_error(&o, "no gene of the LangCell vocabulary");
    assert!(!tmp.path().join("bad_out.h5ad").exists());
}

#[test]
fn pretrain_langcell_writes_a_model_that_annotates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("sim.h5ad");
    let o = sclm(&["-q", "--seed", "2", "simulate", "--cells", "60", "--genes", "50", "--types", "3", "-o", s(&data)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let texts = tmp.path().join("texts.tsv");
    std::fs::write(&texts, "A1\tcell type: B cell.\nB1\tcell type: T cell.\nC1\tcell type: monocyte.\n").unwrap();
    let model = tmp.path().join("lc");
    let o = sclm(&[
        "-q",
        "pretrain",
        "langcell",
        s(&data),
        "-o",
        s(&model),
        "--texts",
        s(&texts),
        "--epochs",
        "1",
        "--max-cell-tokens",
        "32",
        "--batch-size",
        "8",
    ]);
    assert!(o.status.success(), "pretrain: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("zero-shot on the validation cells"));
    assert!(tmp.path().join("lc.run").join("log.jsonl").exists());
    let out = tmp.path().join("ann.h5ad");
    let o = sclm(&[
        "-q",
        "annotate",
        s(&data),
        "--model",
        s(&model),
        "-o",
        s(&out),
        "--classes-from",
        "cell_type",
        "--texts",
        s(&texts),
    ]);
    assert!(o.status.success(), "annotate: {}", stderr(&o));
    // A CellPLM-only flag is rejected, and a label without a text is named.
    let o = sclm(&["pretrain", "langcell", s(&data), "-o", s(&model), "--texts", s(&texts), "--mask-node-rate", "0.5"]);
    assert!(!o.status.success() && stderr(&o).contains("mask-node-rate"), "{}", stderr(&o));
    // --max-cell-tokens sizes a fresh small model only.
    let o = sclm(&[
        "pretrain",
        "langcell",
        s(&data),
        "-o",
        s(&model),
        "--texts",
        s(&texts),
        "--init",
        s(&model),
        "--max-cell-tokens",
        "16",
    ]);
    assert!(!o.status.success() && stderr(&o).contains("max-cell-tokens"), "{}", stderr(&o));
    std::fs::write(&texts, "A1\tcell type: B cell.\n").unwrap();
    let o = sclm(&["pretrain", "langcell", s(&data), "-o", s(&tmp.path().join("lc2")), "--texts", s(&texts)]);
    one_error(&o, "B1");
}

#[test]
fn annotate_few_shot_scores_zero_and_few_shot_without_the_shots() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("lc");
    assert!(import(&model, &fx("token_dictionary.tsv")).status.success());
    let input = tmp.path().join("in.h5ad");
    dataset(&input, false);
    let texts = tmp.path().join("texts.tsv");
    std::fs::write(
        &texts,
        "B cell\tcell type: B cell.\nerythrocyte\tcell type: erythrocyte.\nT cell\tcell type: T cell.\n",
    )
    .unwrap();
    let out = tmp.path().join("fs.h5ad");
    let o = sclm(&[
        "annotate",
        s(&input),
        "--model",
        s(&model),
        "-o",
        s(&out),
        "--classes-from",
        "truth",
        "--texts",
        s(&texts),
        "--truth",
        "truth",
        "--few-shot",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        table.contains("6 shot cells left out")
            && table.contains("zero-shot alpha 0.2")
            && table.contains("2-shot alpha 0.2"),
        "{table}"
    );
    assert!(table.contains("annotation of 24 cells"), "{table}");
    // --few-shot needs --truth.
    let o = sclm(&[
        "annotate",
        s(&input),
        "--model",
        s(&model),
        "-o",
        s(&out),
        "--classes-from",
        "truth",
        "--texts",
        s(&texts),
        "--few-shot",
        "2",
    ]);
    assert!(!o.status.success() && stderr(&o).contains("--truth"), "{}", stderr(&o));
}
