//! `sclm embed --shard I/N`: the shards of a job array together are the unsharded embedding,
//! bit for bit, each cell exactly once.

use std::path::Path;
use std::process::{Command, Output};

use sclm_data::{AnnData, Array2, Column, Dense, Matrix};

fn sclm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sclm")).args(args).output().expect("run sclm")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The rows of `obsm[key]` as f32 bit patterns.
fn bits(a: &AnnData, key: &str) -> Vec<Vec<u32>> {
    let d = a.obsm_get(key).unwrap().to_f32();
    (0..d.nrows).map(|r| d.row(r).iter().map(|v| v.to_bits()).collect()).collect()
}

fn sclm_rows(a: &AnnData) -> Vec<usize> {
    match a.obs_column("sclm_row").unwrap() {
        Column::I64(v) => v.iter().map(|&r| usize::try_from(r).unwrap()).collect(),
        other => panic!("obs['sclm_row'] stored as {}", other.kind()),
    }
}

/// Simulated counts (300 cells, interleaved groups of unequal sizes in obs["batch"], an extra
/// obsm entry holding each cell's row) and a tiny CellPLM pretrained on them for one epoch.
fn fixture(d: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = d.join("sim.h5ad");
    let o = sclm(&["-q", "--seed", "5", "simulate", "-o", s(&data), "--cells", "300", "--genes", "80"]);
    assert!(o.status.success(), "simulate: {}", stderr(&o));
    let mut a = sclm_io::read_h5ad(&data).unwrap();
    let n = a.n_obs();
    // b0: every third cell (100), b1: the others (200).
    let batch: Vec<String> = (0..n).map(|i| format!("b{}", usize::from(i % 3 != 0))).collect();
    a.obs.insert("batch", Column::categorical_from_labels(&batch)).unwrap();
    let extra = Dense::from_vec(n, 2, (0..n).flat_map(|i| [i as f32, -(i as f32)]).collect()).unwrap();
    a.obsm.insert("X_extra".into(), Array2::F32(extra));
    sclm_io::write_h5ad(&a, &data, &Default::default()).unwrap();

    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/cellplm/cellplm_small_gmvae.config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(fx).unwrap()).unwrap();
    cfg["gene_list"] = serde_json::json!([]);
    let tiny = d.join("tiny.json");
    std::fs::write(&tiny, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let model = d.join("model");
    let o = sclm(&["-q", "pretrain", "cellplm", s(&data), "-o", s(&model), "--epochs", "1", "--config", s(&tiny)]);
    assert!(o.status.success(), "pretrain: {}", stderr(&o));
    (data, model)
}

#[test]
fn shards_reassemble_the_unsharded_embedding_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (data, model) = fixture(d);
    let input = sclm_io::read_h5ad(&data).unwrap();
    let n = input.n_obs();
    let embed = |name: &str, extra: &[&str]| -> (AnnData, String) {
        let out = d.join(name);
        let mut args = vec!["embed", s(&data), "--model", s(&model), "-o", s(&out), "--max-cells", "45"];
        args.extend_from_slice(extra);
        let o = sclm(&args);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        (sclm_io::read_h5ad(&out).unwrap(), stderr(&o))
    };

    for (case, group) in [("grouped", None), ("ungrouped", Some(""))] {
        let gk: Vec<&str> = group.map(|g| vec!["--group-key", g]).unwrap_or_default();
        let (whole, err) = embed(&format!("{case}.h5ad"), &gk);
        assert_eq!(err.contains("cells grouped by obs['batch']"), group.is_none(), "{err}");
        let want = bits(&whole, "X_cellplm");
        assert_eq!(want.len(), n);
        let mut seen = vec![0usize; n];
        let mut concat: Vec<usize> = Vec::new();
        for k in 1..=3 {
            let spec = format!("{k}/3");
            let mut args = gk.clone();
            args.extend(["--shard", spec.as_str()]);
            let (part, err) = embed(&format!("{case}-{k}.h5ad"), &args);
            assert!(err.contains(&format!("of shard {k}/3")), "{err}");
            let rows = sclm_rows(&part);
            assert!(!rows.is_empty(), "{case} shard {k} is empty");
            assert!(rows.windows(2).all(|w| w[0] < w[1]), "{case} shard {k}: rows not increasing");
            assert_eq!(part.n_obs(), rows.len());
            // The shard's own cells: obs, X and obsm rows of the input, the embedding bit for bit.
            let sub = input.select_obs(&rows);
            assert_eq!(part.obs.index, sub.obs.index, "{case} shard {k}");
            assert_eq!(part.obs_column("batch").unwrap().to_labels(), sub.obs_column("batch").unwrap().to_labels());
            assert_eq!(part.x.to_dense(), sub.x.to_dense(), "{case} shard {k}: X");
            assert_eq!(part.var.index, input.var.index);
            assert_eq!(part.obsm_get("X_extra").unwrap().to_f32(), sub.obsm_get("X_extra").unwrap().to_f32());
            let got = bits(&part, "X_cellplm");
            for (i, &r) in rows.iter().enumerate() {
                assert_eq!(got[i], want[r], "{case} shard {k}: cell {r} differs from the unsharded embedding");
                seen[r] += 1;
            }
            concat.extend(rows);
        }
        assert!(seen.iter().all(|&c| c == 1), "{case}: every row exactly once, counts {seen:?}");
        if group.is_some() {
            // Without groups shards are contiguous row ranges: their concatenation is the input order.
            assert_eq!(concat, (0..n).collect::<Vec<_>>(), "{case}: shards are not contiguous ranges");
        }
    }

    // The attention export of a shard is the shard's block of the unsharded graph.
    let attn = ["--attention-obsp", "attn", "--attention-top-k", "4"];
    let (whole, _) = embed("attn.h5ad", &attn);
    let (part, _) = embed("attn-2.h5ad", &[&attn[..], &["--shard", "2/3"]].concat());
    let rows = sclm_rows(&part);
    let block = match &whole.obsp["attn"] {
        Matrix::Csr(c) => c.select_rows(&rows).select_cols(&rows),
        other => panic!("attention should be CSR, is {:?}", other.shape()),
    };
    assert_eq!(part.obsp["attn"], Matrix::Csr(block));

    // More shards than forward calls (300 cells, 45 at most per call: 7 calls): an empty shard
    // is written, with a note.
    let (empty, err) = embed("empty.h5ad", &["--group-key", "", "--shard", "8/8"]);
    assert!(err.contains("holds no cells"), "{err}");
    assert_eq!(empty.n_obs(), 0);

    // Bad specs and --stream: one error line naming --shard, nothing written.
    let bad = d.join("bad.h5ad");
    for extra in
        [&["--shard", "0/3"][..], &["--shard", "4/3"], &["--shard", "a/b"], &["--shard", "1/0"], &["--shard", "3"]]
            .into_iter()
            .chain([&["--shard", "1/3", "--stream"][..]])
    {
        let mut args = vec!["embed", s(&data), "--model", s(&model), "-o", s(&bad)];
        args.extend_from_slice(extra);
        let o = sclm(&args);
        assert!(!o.status.success(), "{extra:?} should fail");
        let err = stderr(&o);
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{extra:?}: expected one error line, got: {err}");
        assert!(lines[0].contains("--shard"), "{extra:?}: the error should name --shard: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!bad.exists());
    }
}
