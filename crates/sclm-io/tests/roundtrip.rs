//! Write → read round trips inside Rust, whole-file and streamed.

use std::collections::BTreeMap;

use sclm_data::{AnnData, Array2, Column, CsrMatrix, Dense, Matrix, Raw, Value};
use sclm_io::{read_h5ad, write_h5ad, H5adRowReader, H5adStreamWriter, WriteOptions};

fn sample(n: usize, g: usize, dense: bool) -> AnnData {
    let mut d = Dense::zeros(n, g);
    for i in 0..n {
        for j in 0..g {
            if (i * 5 + j * 11) % 7 == 0 {
                d.row_mut(i)[j] = (i * g + j) as f32 * 0.25 + 1.0;
            }
        }
    }
    let x = if dense { Matrix::Dense(d.clone()) } else { Matrix::Csr(CsrMatrix::from_dense(&d)) };
    let mut a = AnnData::new(x);
    a.obs.index = (0..n).map(|i| format!("cell-{i}")).collect();
    a.var.index = (0..g).map(|j| format!("gene-{j}")).collect();
    a.obs
        .insert(
            "type",
            Column::Categorical {
                codes: (0..n).map(|i| (i % 4) as i32 - 1).collect(),
                categories: vec!["B".into(), "NK".into(), "T".into()],
                ordered: true,
            },
        )
        .unwrap();
    a.obs.insert("f64", Column::F64((0..n).map(|i| i as f64 / 3.0).collect())).unwrap();
    a.obs.insert("f32", Column::F32((0..n).map(|i| i as f32 / 7.0).collect())).unwrap();
    a.obs.insert("i64", Column::I64((0..n).map(|i| i as i64 * 1_000_000_007).collect())).unwrap();
    a.obs.insert("i32", Column::I32((0..n).map(|i| -(i as i32)).collect())).unwrap();
    a.obs.insert("bool", Column::Bool((0..n).map(|i| i % 3 == 0).collect())).unwrap();
    a.obs.insert("str", Column::Str((0..n).map(|i| format!("s{}é", i % 2)).collect())).unwrap();
    a.var.insert("gene_ids", Column::Str((0..g).map(|j| format!("ENSG{j}")).collect())).unwrap();
    a.obsm.insert(
        "X_pca".into(),
        Array2::F32(Dense { nrows: n, ncols: 3, data: (0..n * 3).map(|k| k as f32).collect() }),
    );
    a.obsm.insert(
        "X_umap".into(),
        Array2::F64(Dense { nrows: n, ncols: 2, data: (0..n * 2).map(|k| k as f64 * 0.1).collect() }),
    );
    a.varm
        .insert("PCs".into(), Array2::I64(Dense { nrows: g, ncols: 2, data: (0..g * 2).map(|k| k as i64).collect() }));
    a.layers.insert("counts".into(), Matrix::Dense(d.clone()));
    a.raw = Some(Raw { x: Matrix::Csr(CsrMatrix::from_dense(&d)), var: a.var.clone(), varm: BTreeMap::new() });
    let mut m = BTreeMap::new();
    m.insert("s".into(), Value::Str("x".into()));
    m.insert("b".into(), Value::Bool(false));
    m.insert("i".into(), Value::I64(-4));
    m.insert("f".into(), Value::F64(0.5));
    m.insert("ss".into(), Value::Strings(vec!["a".into(), "b".into()]));
    m.insert("fa".into(), Value::F64Array { shape: vec![2, 2], data: vec![1., 2., 3., 4.] });
    m.insert("ia".into(), Value::I64Array { shape: vec![3], data: vec![7, 8, 9] });
    a.uns.insert("nested".into(), Value::Map(m));
    a.uns.insert("empty".into(), Value::Map(BTreeMap::new()));
    a
}

#[test]
fn whole_file_round_trip_plain_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    for dense in [false, true] {
        for gz in [None, Some(5)] {
            // Large enough for several compressed chunks.
            let a = sample(300, 700, dense);
            let p = dir.path().join(format!("rt_{dense}_{gz:?}.h5ad"));
            write_h5ad(&a, &p, &WriteOptions { compression: gz }).unwrap();
            let b = read_h5ad(&p).unwrap();
            assert_eq!(a, b, "dense={dense} gzip={gz:?}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
            }
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn empty_parts_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let a = AnnData::new(Matrix::Csr(CsrMatrix::zeros(3, 0)));
    let p = dir.path().join("e.h5ad");
    write_h5ad(&a, &p, &WriteOptions::default()).unwrap();
    assert_eq!(read_h5ad(&p).unwrap(), a);
    let a = AnnData::new(Matrix::Dense(Dense::zeros(0, 4)));
    write_h5ad(&a, &p, &WriteOptions { compression: Some(1) }).unwrap();
    assert_eq!(read_h5ad(&p).unwrap(), a);
}

#[test]
fn streaming_writer_and_row_reader() {
    let dir = tempfile::tempdir().unwrap();
    let a = sample(1000, 400, false);
    let x = a.x.to_csr();
    for gz in [None, Some(3)] {
        let p = dir.path().join(format!("s_{gz:?}.h5ad"));
        let template = AnnData { x: Matrix::Csr(CsrMatrix::zeros(1000, 400)), ..a.clone() };
        let mut w = H5adStreamWriter::create(&p, &template, &WriteOptions { compression: gz }).unwrap();
        let mut s = 0;
        for step in [1usize, 0, 37, 200, 462, 300] {
            let rows: Vec<usize> = (s..s + step).collect();
            w.append(&x.select_rows(&rows)).unwrap();
            s += step;
        }
        assert!(!p.exists(), "nothing may appear before finish");
        assert_eq!(w.rows_written(), 1000);
        w.finish().unwrap();
        let b = read_h5ad(&p).unwrap();
        assert_eq!(b, a, "gzip={gz:?}");
        let r = H5adRowReader::open(&p).unwrap();
        assert!(r.is_sparse());
        let rows: Vec<usize> = (123..457).collect();
        assert_eq!(r.read_rows(123, 457).unwrap(), Matrix::Csr(x.select_rows(&rows)));
    }
}

#[test]
fn streaming_writer_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.h5ad");
    let template = AnnData::new(Matrix::Csr(CsrMatrix::zeros(10, 5)));
    // Dropped without finish: nothing left.
    let mut w = H5adStreamWriter::create(&p, &template, &WriteOptions::default()).unwrap();
    w.append(&CsrMatrix::zeros(4, 5)).unwrap();
    drop(w);
    // Too few rows, wrong width, too many rows: errors, nothing left.
    let mut w = H5adStreamWriter::create(&p, &template, &WriteOptions::default()).unwrap();
    let e = w.append(&CsrMatrix::zeros(2, 6)).unwrap_err().to_string();
    assert!(e.contains("s.h5ad") && e.contains("columns"), "{e}");
    let e = w.append(&CsrMatrix::zeros(11, 5)).unwrap_err().to_string();
    assert!(e.contains("more than the 10"), "{e}");
    w.append(&CsrMatrix::zeros(9, 5)).unwrap();
    let e = w.finish().unwrap_err().to_string();
    assert!(e.contains("9 rows appended, 10 announced"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file may be left behind");
}

#[test]
fn large_sparse_x_goes_through_the_streaming_path() {
    // Above the size where write_h5ad appends X to chunked datasets instead of building it in memory.
    let (n, g) = (1100usize, 4000usize);
    let mut indptr = vec![0usize];
    let mut indices = Vec::new();
    let mut data = Vec::new();
    for i in 0..n {
        for j in (i % 2..g).step_by(1) {
            indices.push(j as u32);
            data.push(((i * 31 + j) % 97) as f32 + 0.5);
        }
        indptr.push(indices.len());
    }
    let x = CsrMatrix::new(n, g, indptr, indices, data).unwrap();
    assert!(x.nnz() >= 1 << 22);
    let mut a = AnnData::new(Matrix::Csr(x));
    a.obs.insert("k", Column::I64((0..n as i64).collect())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.h5ad");
    write_h5ad(&a, &p, &WriteOptions::default()).unwrap();
    assert_eq!(read_h5ad(&p).unwrap(), a);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn streaming_writer_with_no_cells() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("none.h5ad");
    let template = AnnData::new(Matrix::Csr(CsrMatrix::zeros(0, 7)));
    let mut w = H5adStreamWriter::create(&p, &template, &WriteOptions::default()).unwrap();
    w.append(&CsrMatrix::zeros(0, 7)).unwrap();
    w.finish().unwrap();
    assert_eq!(read_h5ad(&p).unwrap(), template);
}
