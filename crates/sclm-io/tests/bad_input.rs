//! Bad input: one clear error naming the file and key, no panic, no partial output.

use std::path::{Path, PathBuf};

use hdf5_pure::{AttrValue, FileBuilder};
use sclm_data::{AnnData, Column, CsrMatrix, Dense, Matrix};
use sclm_io::{check_counts, check_finite, read_any, read_h5ad, write_h5ad, H5adRowReader, IoError, WriteOptions};

fn real(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data").join(name);
    assert!(p.exists(), "test data missing: {}", p.display());
    p
}

fn one_line(e: &IoError, must: &[&str]) {
    let s = e.to_string();
    assert!(!s.contains('\n'), "error spans several lines: {s}");
    for m in must {
        assert!(s.contains(m), "error '{s}' should mention '{m}'");
    }
}

fn enc(b: &mut FileBuilder, t: &str) {
    b.set_attr("encoding-type", AttrValue::VarLenString(t.into()));
    b.set_attr("encoding-version", AttrValue::VarLenString("0.1.0".into()));
}

fn df(b: &mut FileBuilder, name: &str, index: &[&str]) {
    let mut g = b.create_group(name);
    g.set_attr("encoding-type", AttrValue::VarLenString("dataframe".into()));
    g.set_attr("_index", AttrValue::VarLenString("_index".into()));
    g.set_attr("column-order", AttrValue::VarLenStringArray(vec![]));
    g.create_dataset("_index").with_vlen_strings(index);
    b.add_group(g.finish());
}

fn csr_x(b: &mut FileBuilder, enc_type: &str, shape: [i64; 2], indices: &[i32]) {
    let mut g = b.create_group("X");
    g.set_attr("encoding-type", AttrValue::VarLenString(enc_type.into()));
    g.set_attr("shape", AttrValue::I64Array(shape.to_vec()));
    g.create_dataset("data").with_f32_data(&vec![1.0; indices.len()]);
    g.create_dataset("indices").with_i32_data(indices);
    let mut indptr = vec![0i32; shape[0] as usize + 1];
    *indptr.last_mut().unwrap() = indices.len() as i32;
    g.create_dataset("indptr").with_i32_data(&indptr);
    b.add_group(g.finish());
}

fn write(dir: &Path, name: &str, b: FileBuilder) -> PathBuf {
    let p = dir.join(name);
    b.write(&p).unwrap();
    p
}

#[test]
fn empty_non_hdf5_truncated_and_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("empty.h5ad"), b"").unwrap();
    one_line(&read_h5ad(d.join("empty.h5ad")).unwrap_err(), &["empty.h5ad", "empty file"]);
    std::fs::write(d.join("text.h5ad"), b"cell,gene\n1,2\n").unwrap();
    one_line(&read_h5ad(d.join("text.h5ad")).unwrap_err(), &["text.h5ad", "not an HDF5 file"]);
    one_line(&read_h5ad(d.join("missing.h5ad")).unwrap_err(), &["missing.h5ad"]);
    let bytes = std::fs::read(real("visium_mouse_brain_tiny.h5ad")).unwrap();
    for (k, cut) in [bytes.len() / 2, bytes.len() / 10, 600].into_iter().enumerate() {
        let p = d.join(format!("trunc{k}.h5ad"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = read_h5ad(&p).unwrap_err();
        one_line(&e, &[&format!("trunc{k}.h5ad")]);
        assert!(H5adRowReader::open(&p).is_err());
    }
    // Valid signature, garbage after it; and a file with flipped bytes in the middle.
    let mut g = b"\x89HDF\r\n\x1a\n".to_vec();
    g.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    std::fs::write(d.join("garbage.h5ad"), &g).unwrap();
    one_line(&read_h5ad(d.join("garbage.h5ad")).unwrap_err(), &["garbage.h5ad"]);
    let mut c = bytes.clone();
    for i in (c.len() / 3..c.len() / 3 + 2000).step_by(7) {
        c[i] ^= 0x5a;
    }
    std::fs::write(d.join("flipped.h5ad"), &c).unwrap();
    if let Err(e) = read_h5ad(d.join("flipped.h5ad")) {
        one_line(&e, &["flipped.h5ad"]);
    }
    one_line(&read_any(d.join("text.h5ad")).unwrap_err(), &["text.h5ad"]);
}

#[test]
fn structural_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let mut b = FileBuilder::new();
    enc(&mut b, "anndata");
    df(&mut b, "obs", &["a", "b"]);
    df(&mut b, "var", &["g"]);
    let p = write(d, "nox.h5ad", b);
    one_line(&read_h5ad(&p).unwrap_err(), &["nox.h5ad: X:", "missing"]);

    let mut b = FileBuilder::new();
    enc(&mut b, "anndata");
    csr_x(&mut b, "foo", [2, 3], &[0, 1]);
    let p = write(d, "data.h5ad", b);
    let e = read_h5ad(&p).unwrap_err();
    one_line(&e, &["data.h5ad: X: unknown encoding-type 'foo'"]);
    one_line(&H5adRowReader::open(&p).unwrap_err(), &["data.h5ad: X: unknown encoding-type 'foo'"]);

    let mut b = FileBuilder::new();
    enc(&mut b, "anndata");
    csr_x(&mut b, "csr_matrix", [2, 3], &[0, 1]);
    df(&mut b, "obs", &["a", "b", "c"]);
    df(&mut b, "var", &["g1", "g2", "g3"]);
    let p = write(d, "shape.h5ad", b);
    one_line(&read_h5ad(&p).unwrap_err(), &["shape.h5ad: obs:", "3 rows", "2 rows"]);
    one_line(&H5adRowReader::open(&p).unwrap_err(), &["shape.h5ad: obs:"]);

    let mut b = FileBuilder::new();
    enc(&mut b, "anndata");
    csr_x(&mut b, "csr_matrix", [2, 3], &[0, 7]);
    let p = write(d, "idx.h5ad", b);
    one_line(&read_h5ad(&p).unwrap_err(), &["idx.h5ad: X/indices:", "out of range"]);

    let mut b = FileBuilder::new();
    enc(&mut b, "anndata");
    b.create_dataset("X").with_f32_data(&[1.0, 2.0, 3.0]);
    let p = write(d, "onedim.h5ad", b);
    one_line(&read_h5ad(&p).unwrap_err(), &["onedim.h5ad: X:", "2-D"]);

    let mut b = FileBuilder::new();
    enc(&mut b, "anndata");
    b.create_dataset("X").with_vlen_strings(&["a", "b"]).with_shape(&[1, 2]);
    let p = write(d, "strx.h5ad", b);
    one_line(&read_h5ad(&p).unwrap_err(), &["strx.h5ad: X:"]);
}

#[test]
fn failed_writes_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut a = AnnData::new(Matrix::Dense(Dense::zeros(2, 2)));
    let p = d.join("out.h5ad");
    std::fs::write(&p, b"previous content").unwrap();
    // obs length mismatch.
    a.obs.index.push("extra".into());
    one_line(&write_h5ad(&a, &p, &WriteOptions::default()).unwrap_err(), &["out.h5ad", "obs"]);
    a.obs.index.pop();
    // A column name that cannot be stored.
    a.obs.columns.push(("a/b".into(), Column::Bool(vec![true, false])));
    one_line(&write_h5ad(&a, &p, &WriteOptions::default()).unwrap_err(), &["out.h5ad", "obs/a/b"]);
    a.obs.columns.clear();
    a.obs.columns.push((
        "ct".into(),
        Column::Categorical { codes: vec![0, 3], categories: vec!["x".into(), "y".into()], ordered: false },
    ));
    one_line(&write_h5ad(&a, &p, &WriteOptions::default()).unwrap_err(), &["out.h5ad: obs/ct:", "code 3"]);
    a.obs.columns[0].1 =
        Column::Categorical { codes: vec![0, 1], categories: vec!["x".into(), "x".into()], ordered: false };
    one_line(&write_h5ad(&a, &p, &WriteOptions::default()).unwrap_err(), &["out.h5ad: obs/ct:", "'x' appears twice"]);
    a.obs.columns.clear();
    a.uns.insert("bad/key".into(), sclm_data::Value::I64(1));
    one_line(&write_h5ad(&a, &p, &WriteOptions::default()).unwrap_err(), &["out.h5ad: uns/bad/key:"]);
    a.uns.clear();
    a.uns.insert("arr".into(), sclm_data::Value::F64Array { shape: vec![2, 2], data: vec![1.0] });
    one_line(&write_h5ad(&a, &p, &WriteOptions::default()).unwrap_err(), &["out.h5ad: uns/arr:", "shape"]);
    a.uns.clear();
    one_line(&write_h5ad(&a, &p, &WriteOptions { compression: Some(12) }).unwrap_err(), &["out.h5ad", "gzip level 12"]);
    assert_eq!(std::fs::read(&p).unwrap(), b"previous content", "an existing file must stay untouched");
    let names: Vec<String> =
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["out.h5ad"]);
    let e = write_h5ad(&a, d.join("no/such/dir/x.h5ad"), &WriteOptions::default()).unwrap_err();
    one_line(&e, &["x.h5ad"]);
    write_h5ad(&a, &p, &WriteOptions::default()).unwrap();
    assert_eq!(read_h5ad(&p).unwrap(), a);
}

#[test]
fn count_checks() {
    let good = AnnData::new(Matrix::Csr(CsrMatrix::new(2, 3, vec![0, 1, 2], vec![2, 0], vec![3.0, 1.0]).unwrap()));
    check_counts(&good, "ok.h5ad").unwrap();
    let mut neg = good.clone();
    neg.var.index = vec!["A".into(), "B".into(), "CD3E".into()];
    if let Matrix::Csr(c) = &mut neg.x {
        c.data[0] = -1.5;
    }
    one_line(&check_counts(&neg, "neg.h5ad").unwrap_err(), &["neg.h5ad", "negative", "CD3E", "cell '0'"]);
    let nan = AnnData::new(Matrix::Dense(Dense::from_vec(2, 2, vec![0.0, 1.0, f32::NAN, 2.0]).unwrap()));
    one_line(&check_counts(&nan, "nan.h5ad").unwrap_err(), &["nan.h5ad", "non-finite", "cell 1, gene 0"]);
    one_line(&check_finite(&nan.x, "X").unwrap_err(), &["1 non-finite"]);
    let empty = AnnData::new(Matrix::Csr(CsrMatrix::zeros(0, 5)));
    one_line(&check_counts(&empty, "empty.h5ad").unwrap_err(), &["empty.h5ad", "empty matrix", "0 cells"]);
}

#[test]
fn randomly_damaged_files_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut errors = 0;
    for f in ["visium_mouse_brain_tiny.h5ad", "10x/3.0.0/filtered_feature_bc_matrix.h5"] {
        let bytes = std::fs::read(real(f)).unwrap();
        for k in 0..25 {
            let mut b = bytes.clone();
            if k % 3 == 0 {
                b.truncate((rnd() as usize % b.len()).max(8));
            } else {
                for _ in 0..1 + k % 9 {
                    let p = rnd() as usize % b.len();
                    b[p] = rnd() as u8;
                }
            }
            let p = dir.path().join(format!("damaged{k}.h5"));
            std::fs::write(&p, &b).unwrap();
            let r = std::panic::catch_unwind(|| sclm_io::read_any(&p).map(|_| ()));
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    errors += 1;
                    one_line(&e, &[&format!("damaged{k}.h5")]);
                }
                Err(_) => panic!("a panic escaped while reading a damaged copy of {f} (case {k})"),
            }
        }
    }
    assert!(errors > 25, "most damaged files should be refused ({errors} of 50 were)");
}

#[test]
fn nullable_columns_are_read_and_reported() {
    use hdf5_pure::{make_i8_type, EnumTypeBuilder};
    let bt =
        || EnumTypeBuilder::with_base(make_i8_type()).raw_value("FALSE", &[0]).raw_value("TRUE", &[1]).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut b = FileBuilder::new();
    enc(&mut b, "anndata");
    csr_x(&mut b, "csr_matrix", [3, 1], &[0]);
    df(&mut b, "var", &["g"]);
    let mut g = b.create_group("obs");
    g.set_attr("encoding-type", AttrValue::VarLenString("dataframe".into()));
    g.set_attr("_index", AttrValue::VarLenString("_index".into()));
    g.set_attr("column-order", AttrValue::VarLenStringArray(vec!["ni".into(), "full".into(), "ns".into()]));
    g.create_dataset("_index").with_vlen_strings(&["a", "b", "c"]);
    for (name, kind, mask) in [
        ("ni", "nullable-integer", [0u8, 1, 0]),
        ("full", "nullable-integer", [0, 0, 0]),
        ("ns", "nullable-string-array", [1, 0, 0]),
    ] {
        let mut c = g.create_group(name);
        c.set_attr("encoding-type", AttrValue::VarLenString(kind.into()));
        if kind == "nullable-integer" {
            c.create_dataset("values").with_i64_data(&[5, 0, 7]);
        } else {
            c.create_dataset("values").with_vlen_strings(&["x", "y", "z"]);
        }
        c.create_dataset("mask").with_raw_data(bt(), mask.to_vec(), 3);
        g.add_group(c.finish());
    }
    b.add_group(g.finish());
    let p = write(dir.path(), "nullable.h5ad", b);
    let (a, rep) = sclm_io::read_h5ad_with_report(&p, &Default::default()).unwrap();
    match a.obs.get("ni") {
        Some(Column::F64(v)) => assert!(v[0] == 5.0 && v[1].is_nan() && v[2] == 7.0, "{v:?}"),
        other => panic!("ni: {other:?}"),
    }
    assert_eq!(a.obs.get("full"), Some(&Column::I64(vec![5, 0, 7])));
    assert_eq!(a.obs.get("ns"), Some(&Column::Str(vec!["".into(), "y".into(), "z".into()])));
    assert_eq!(rep.converted.len(), 2, "{:?}", rep.converted);
    assert!(rep.converted[0].starts_with("obs/ni"));
}
