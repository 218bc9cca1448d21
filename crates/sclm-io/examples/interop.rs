//! Command-line bridge used by `scripts/interop_check.py` to test interoperability with
//! Python anndata:
//!
//! ```text
//! interop roundtrip IN OUT [--gzip N]   read IN (h5ad, 10x h5 or mtx dir), write OUT
//! interop stream IN OUT [--chunk ROWS]  read IN, write OUT through the streaming writer
//! interop rows IN OUT [--chunk ROWS]    read X of IN by row ranges, write OUT
//! interop synth OUT [--dense]           write a deterministic synthetic AnnData
//! ```
//! Exit status 0 on success; on failure one line on stderr and status 1.

use std::collections::BTreeMap;
use std::process::ExitCode;

use sclm_data::{AnnData, Array2, Column, CsrMatrix, Dense, Matrix, Value};
use sclm_io::{read_any, write_h5ad, H5adRowReader, H5adStreamWriter, WriteOptions};

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn synth(dense: bool) -> AnnData {
    let (n, g) = (37usize, 23usize);
    let mut d = Dense::zeros(n, g);
    for i in 0..n {
        for j in 0..g {
            if (i * 7 + j * 3) % 11 == 0 {
                d.row_mut(i)[j] = (i + j) as f32 * 0.5;
            }
        }
    }
    let x = if dense { Matrix::Dense(d.clone()) } else { Matrix::Csr(CsrMatrix::from_dense(&d)) };
    let mut a = AnnData::new(x);
    a.obs.index = (0..n).map(|i| format!("cell{i}")).collect();
    a.var.index = (0..g).map(|j| format!("gene{j}")).collect();
    let cats = ["a", "b", "c"];
    a.obs.columns = vec![
        (
            "group".into(),
            Column::Categorical {
                codes: (0..n).map(|i| if i == 4 { -1 } else { (i % 3) as i32 }).collect(),
                categories: cats.iter().map(|s| s.to_string()).collect(),
                ordered: false,
            },
        ),
        ("score".into(), Column::F64((0..n).map(|i| i as f64 * 0.25).collect())),
        ("flag".into(), Column::Bool((0..n).map(|i| i % 2 == 0).collect())),
        ("count".into(), Column::I64((0..n).map(|i| (i * i) as i64).collect())),
        ("small".into(), Column::I32((0..n).map(|i| i as i32 - 5).collect())),
        ("ratio".into(), Column::F32((0..n).map(|i| i as f32 / 8.0).collect())),
        ("name".into(), Column::Str((0..n).map(|i| format!("n{}", i % 5)).collect())),
    ];
    a.var.columns = vec![("gene_ids".into(), Column::Str((0..g).map(|j| format!("ENSG{j:05}")).collect()))];
    a.obsm.insert(
        "X_emb".into(),
        Array2::F32(Dense { nrows: n, ncols: 2, data: (0..n * 2).map(|k| k as f32 * 0.5).collect() }),
    );
    a.obsm.insert(
        "spatial".into(),
        Array2::I64(Dense { nrows: n, ncols: 2, data: (0..n * 2).map(|k| k as i64).collect() }),
    );
    a.layers.insert("counts".into(), Matrix::Csr(CsrMatrix::from_dense(&d)));
    let mut inner = BTreeMap::new();
    inner.insert("n".into(), Value::I64(3));
    inner.insert("ok".into(), Value::Bool(true));
    a.uns.insert("title".into(), Value::Str("synthetic".into()));
    a.uns.insert("vals".into(), Value::F64Array { shape: vec![2], data: vec![1.5, 2.5] });
    a.uns.insert("names".into(), Value::Strings(vec!["x".into(), "y".into()]));
    a.uns.insert("params".into(), Value::Map(inner));
    a
}

fn run(args: &[String]) -> Result<(), String> {
    let cmd = args.first().map(|s| s.as_str()).unwrap_or("");
    let opts = WriteOptions {
        compression: flag(args, "--gzip").map(|s| s.parse().map_err(|_| format!("bad --gzip '{s}'"))).transpose()?,
    };
    let chunk: usize =
        flag(args, "--chunk").map(|s| s.parse().map_err(|_| format!("bad --chunk '{s}'"))).transpose()?.unwrap_or(10);
    match (cmd, args.get(1), args.get(2)) {
        ("roundtrip", Some(i), Some(o)) => {
            let (a, _) = read_any(i).map_err(|e| e.to_string())?;
            write_h5ad(&a, o, &opts).map_err(|e| e.to_string())
        }
        ("stream", Some(i), Some(o)) => {
            let (a, _) = read_any(i).map_err(|e| e.to_string())?;
            let x = a.x.to_csr();
            let template = AnnData { x: Matrix::Csr(CsrMatrix::zeros(x.nrows, x.ncols)), ..a };
            let mut w = H5adStreamWriter::create(o, &template, &opts).map_err(|e| e.to_string())?;
            let mut s = 0;
            while s < x.nrows {
                let e = (s + chunk).min(x.nrows);
                w.append(&x.select_rows(&(s..e).collect::<Vec<_>>())).map_err(|e| e.to_string())?;
                s = e;
            }
            w.finish().map_err(|e| e.to_string())
        }
        ("rows", Some(i), Some(o)) => {
            let r = H5adRowReader::open(i).map_err(|e| e.to_string())?;
            let mut parts = Vec::new();
            let mut s = 0;
            while s < r.n_obs() {
                let e = (s + chunk).min(r.n_obs());
                parts.push(r.read_rows(s, e).map_err(|e| e.to_string())?.to_csr());
                s = e;
            }
            let x = CsrMatrix::vstack(&parts).map_err(|e| e.to_string())?;
            let x = CsrMatrix { ncols: r.n_vars(), ..x };
            let mut a = AnnData::new(Matrix::Csr(x));
            a.obs = r.obs().clone();
            a.var = r.var().clone();
            write_h5ad(&a, o, &opts).map_err(|e| e.to_string())
        }
        ("synth", Some(o), _) => {
            write_h5ad(&synth(args.iter().any(|a| a == "--dense")), o, &opts).map_err(|e| e.to_string())
        }
        _ => Err("usage: interop roundtrip|stream|rows IN OUT [--gzip N] [--chunk ROWS] | interop synth OUT [--dense]"
            .into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("interop: {e}");
            ExitCode::FAILURE
        }
    }
}
