//! Sizes and sparse structures that cannot be trusted: absurd Matrix Market headers, CSR/CSC
//! pointers that decrease or overrun, indices out of range, absurd `shape` attributes. Each is
//! one error line naming the file and the key, found before anything of the announced size is
//! allocated and before any slice is taken: no panic happens, not even one caught inside the
//! reader (a hook counts them on the test's thread).

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;

use hdf5_pure::{AttrValue, FileBuilder, GroupBuilder};
use sclm_io::{read_10x_h5, read_10x_mtx, read_any, read_h5ad, read_mtx, H5adRowReader, IoError};

thread_local! {
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

/// Counts panics on the current thread (the previous hook still prints them).
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            prev(info);
        }));
    });
}

fn no_panic_so_far() {
    let n = PANICS.with(|p| p.get());
    assert_eq!(n, 0, "{n} panic(s) happened inside the reader (caught or not)");
}

fn one_line(e: &IoError, must: &[&str]) {
    let s = e.to_string();
    assert!(!s.contains('\n'), "error spans several lines: {s}");
    assert!(!s.contains("corrupt or unsupported HDF5 content"), "a panic was caught instead of a check: {s}");
    for m in must {
        assert!(s.contains(m), "error '{s}' should mention '{m}'");
    }
}

// ---------------------------------------------------------------------------------------------
// Matrix Market

const HEAD: &str = "%%MatrixMarket matrix coordinate integer general\n";

/// A Cell Ranger v2 directory with 3 genes and 2 cells and the given `matrix.mtx` body.
fn mtx_dir(root: &Path, name: &str, body: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("matrix.mtx"), format!("{HEAD}{body}")).unwrap();
    std::fs::write(d.join("genes.tsv"), "G1\tA\nG2\tB\nG3\tC\n").unwrap();
    std::fs::write(d.join("barcodes.tsv"), "c1\nc2\n").unwrap();
    d
}

#[test]
fn mtx_absurd_entry_count_is_refused_before_allocating() {
    count_panics();
    let t = tempfile::tempdir().unwrap();
    // 10^15 entries announced for a 3 x 2 matrix: the old reader reserved them (and aborted).
    let d = mtx_dir(t.path(), "nnz", "3 2 1000000000000000\n1 1 1\n");
    let e = read_10x_mtx(&d).unwrap_err();
    one_line(&e, &["matrix.mtx: line 2:", "1000000000000000 entries", "more than the 6 of a 3 x 2 matrix"]);
    one_line(&read_mtx(d.join("matrix.mtx")).unwrap_err(), &["line 2", "1000000000000000 entries"]);
    one_line(&read_any(&d).unwrap_err(), &["matrix.mtx: line 2:"]);
    // One more than rows x columns.
    let d = mtx_dir(t.path(), "seven", "3 2 7\n");
    one_line(&read_10x_mtx(&d).unwrap_err(), &["line 2", "7 entries, more than the 6"]);
    // The same through gzip.
    let d = t.path().join("gz");
    std::fs::create_dir_all(&d).unwrap();
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(format!("{HEAD}3 2 1000000000000000\n").as_bytes()).unwrap();
    std::fs::write(d.join("matrix.mtx.gz"), z.finish().unwrap()).unwrap();
    std::fs::write(d.join("genes.tsv"), "G1\tA\nG2\tB\nG3\tC\n").unwrap();
    std::fs::write(d.join("barcodes.tsv"), "c1\nc2\n").unwrap();
    one_line(&read_10x_mtx(&d).unwrap_err(), &["matrix.mtx.gz: line 2:", "1000000000000000 entries"]);
    no_panic_so_far();
}

#[test]
fn mtx_absurd_dimensions_are_refused() {
    count_panics();
    let t = tempfile::tempdir().unwrap();
    // usize::MAX rows: the old reader overflowed on `rows + 1`.
    let d = mtx_dir(t.path(), "rows", "18446744073709551615 2 1\n1 1 1\n");
    one_line(&read_10x_mtx(&d).unwrap_err(), &["matrix.mtx: line 2:", "18446744073709551615 rows", "32-bit"]);
    one_line(&read_mtx(d.join("matrix.mtx")).unwrap_err(), &["18446744073709551615 rows"]);
    let d = mtx_dir(t.path(), "cols", "3 18446744073709551615 1\n1 1 1\n");
    one_line(&read_mtx(d.join("matrix.mtx")).unwrap_err(), &["line 2", "18446744073709551615 columns"]);
    // Just past what 32-bit indices hold (the old reader truncated such indices silently).
    let d = mtx_dir(t.path(), "u32", "4294967296 1 1\n4294967296 1 1\n");
    one_line(&read_mtx(d.join("matrix.mtx")).unwrap_err(), &["line 2", "4294967296 rows"]);
    // Sizes that disagree with the feature and barcode files are refused before the entries.
    let d = mtx_dir(t.path(), "feats", "4000000000 2 1\n1 1 1\n");
    one_line(&read_10x_mtx(&d).unwrap_err(), &["genes.tsv: rows:", "3 features but the matrix has 4000000000 rows"]);
    let d = mtx_dir(t.path(), "bcs", "3 4000000000 1\n1 1 1\n");
    one_line(
        &read_10x_mtx(&d).unwrap_err(),
        &["barcodes.tsv: rows:", "2 barcodes but the matrix has 4000000000 columns"],
    );
    no_panic_so_far();
}

#[test]
fn mtx_garbage_size_lines_and_entries() {
    count_panics();
    let t = tempfile::tempdir().unwrap();
    for (k, (body, must)) in [
        ("-3 2 1\n", vec!["line 2", "bad size line '-3 2 1'", "non-negative integers"]),
        ("3 -2 1\n", vec!["line 2", "bad size line"]),
        ("3 2 -1\n", vec!["line 2", "bad size line"]),
        ("3 2 x\n", vec!["line 2", "bad size line '3 2 x'"]),
        ("3.5 2 1\n", vec!["line 2", "bad size line"]),
        ("3 2\n", vec!["line 2", "bad size line '3 2'"]),
        ("3 2 1 4\n", vec!["line 2", "bad size line"]),
        ("99999999999999999999999 2 1\n", vec!["line 2", "bad size line"]),
        ("", vec!["header", "missing size line"]),
        // fewer entries than announced
        ("3 2 4\n1 1 2\n2 2 1\n", vec!["entries", "announces 4 entries, found 2"]),
        // more entries than announced: refused at the first extra one
        ("3 2 1\n1 1 2\n2 2 1\n", vec!["line 4", "more entries than the 1 announced"]),
        // zero and out-of-range indices (1-based)
        ("3 2 1\n0 1 1\n", vec!["line 3", "entry (0, 1) outside the 3 x 2 matrix", "1-based"]),
        ("3 2 1\n1 0 1\n", vec!["line 3", "entry (1, 0) outside"]),
        ("3 2 1\n4 1 1\n", vec!["line 3", "entry (4, 1) outside"]),
        ("3 2 1\n1 3 1\n", vec!["line 3", "entry (1, 3) outside"]),
        ("3 2 1\n18446744073709551615 1 1\n", vec!["line 3", "outside"]),
        ("3 2 1\n-1 1 1\n", vec!["line 3", "bad entry '-1 1 1'"]),
        ("3 2 1\na b c\n", vec!["line 3", "bad entry"]),
        ("3 2 1\n1 1\n", vec!["line 3", "bad entry '1 1'"]),
        ("3 2 1\n1 1 many\n", vec!["line 3", "bad entry"]),
    ]
    .into_iter()
    .enumerate()
    {
        let d = mtx_dir(t.path(), &format!("case{k}"), body);
        let e = read_10x_mtx(&d).unwrap_err();
        let mut m = vec!["matrix.mtx"];
        m.extend(must);
        one_line(&e, &m);
        one_line(&read_mtx(d.join("matrix.mtx")).unwrap_err(), &["matrix.mtx"]);
    }
    // Exactly rows x columns entries, and zero entries, are fine.
    let d = mtx_dir(t.path(), "full", "3 2 6\n1 1 1\n1 2 1\n2 1 1\n2 2 1\n3 1 1\n3 2 1\n");
    assert_eq!(read_10x_mtx(&d).unwrap().0.x.stored(), 6);
    let d = mtx_dir(t.path(), "none", "3 2 0\n");
    assert_eq!(read_10x_mtx(&d).unwrap().0.x.shape(), (2, 3));
    no_panic_so_far();
}

// ---------------------------------------------------------------------------------------------
// .h5ad and Cell Ranger .h5 sparse structures

fn enc(b: &mut FileBuilder) {
    b.set_attr("encoding-type", AttrValue::VarLenString("anndata".into()));
    b.set_attr("encoding-version", AttrValue::VarLenString("0.1.0".into()));
}

fn df(b: &mut FileBuilder, name: &str, n: usize) {
    let index: Vec<String> = (0..n).map(|i| format!("{name}{i}")).collect();
    let index: Vec<&str> = index.iter().map(|s| s.as_str()).collect();
    let mut g = b.create_group(name);
    g.set_attr("encoding-type", AttrValue::VarLenString("dataframe".into()));
    g.set_attr("encoding-version", AttrValue::VarLenString("0.2.0".into()));
    g.set_attr("_index", AttrValue::VarLenString("_index".into()));
    g.set_attr("column-order", AttrValue::VarLenStringArray(vec![]));
    g.create_dataset("_index").with_vlen_strings(&index);
    b.add_group(g.finish());
}

/// A `csr_matrix` / `csc_matrix` group with the given arrays, stored as they come.
fn sparse(g: &mut GroupBuilder, kind: &str, shape: [i64; 2], indptr: &[i64], indices: &[i32]) {
    g.set_attr("encoding-type", AttrValue::VarLenString(kind.into()));
    g.set_attr("encoding-version", AttrValue::VarLenString("0.1.0".into()));
    g.set_attr("shape", AttrValue::I64Array(shape.to_vec()));
    g.create_dataset("data").with_f32_data(&vec![1.0; indices.len()]);
    g.create_dataset("indices").with_i32_data(indices);
    g.create_dataset("indptr").with_i64_data(indptr);
}

/// An .h5ad file whose X is the given sparse matrix; obs and var match `shape` when `frames`.
fn h5ad(dir: &Path, name: &str, kind: &str, shape: [i64; 2], indptr: &[i64], indices: &[i32], frames: bool) -> PathBuf {
    let mut b = FileBuilder::new();
    enc(&mut b);
    let mut g = b.create_group("X");
    sparse(&mut g, kind, shape, indptr, indices);
    b.add_group(g.finish());
    if frames {
        df(&mut b, "obs", shape[0] as usize);
        df(&mut b, "var", shape[1] as usize);
    }
    let p = dir.join(name);
    b.write(&p).unwrap();
    p
}

#[test]
fn csr_pointers_that_decrease_or_overrun_are_refused_by_every_reader() {
    count_panics();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for (k, (indptr, must)) in [
        // decreasing, with a middle pointer past nnz (the old reader sliced 0..5 of 2 values)
        (vec![0i64, 5, 2], vec!["X/indptr:", "decreases at row 1 (from 5 to 2)"]),
        (vec![0, 2, 1], vec!["X/indptr:", "decreases at row 1 (from 2 to 1)"]),
        // last pointer beyond indices / data
        (vec![0, 1, 9], vec!["X/indptr:", "ends at 9", "hold 2 values"]),
        // first pointer not 0
        (vec![1, 1, 2], vec!["X/indptr:", "starts at 1, expected 0"]),
        // wrong length
        (vec![0, 2], vec!["X/indptr:", "has 2 entries, expected 3"]),
        (vec![0, 1, 2, 2], vec!["X/indptr:", "has 4 entries, expected 3"]),
        (vec![0, -1, 2], vec!["X/indptr:", "negative offset -1"]),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("ptr{k}.h5ad");
        let p = h5ad(d, &name, "csr_matrix", [2, 3], &indptr, &[0, 1], true);
        let mut m = vec![name.as_str()];
        m.extend(must.iter().copied());
        one_line(&read_h5ad(&p).unwrap_err(), &m);
        one_line(&read_any(&p).unwrap_err(), &m);
        // The row reader checks the pointers when it opens the file (except the overrun of the
        // last one, which it finds against the length of X/data).
        let e = H5adRowReader::open(&p).unwrap_err();
        if indptr.last() == Some(&9) {
            one_line(&e, &[&name, "X/data:", "row pointers say 9 values"]);
        } else {
            one_line(&e, &m);
        }
    }
    no_panic_so_far();
}

#[test]
fn indices_beyond_n_vars_are_refused_whole_and_by_rows() {
    count_panics();
    let t = tempfile::tempdir().unwrap();
    let p = h5ad(t.path(), "idx.h5ad", "csr_matrix", [2, 3], &[0, 1, 2], &[0, 7], true);
    let must = ["idx.h5ad: X/indices:", "column index 7 in row 1 is out of range (3 columns)"];
    one_line(&read_h5ad(&p).unwrap_err(), &must);
    one_line(&read_any(&p).unwrap_err(), &must);
    let r = H5adRowReader::open(&p).unwrap();
    assert_eq!(r.read_rows(0, 1).unwrap().stored(), 1);
    one_line(&r.read_rows(0, 2).unwrap_err(), &must);
    one_line(&r.read_rows(1, 2).unwrap_err(), &must);
    // An index equal to n_vars is out of range too.
    let p = h5ad(t.path(), "edge.h5ad", "csr_matrix", [2, 3], &[0, 1, 2], &[3, 0], true);
    one_line(&read_h5ad(&p).unwrap_err(), &["edge.h5ad: X/indices:", "column index 3 in row 0"]);
    one_line(
        &H5adRowReader::open(&p).unwrap().read_rows(0, 2).unwrap_err(),
        &["X/indices:", "column index 3 in row 0"],
    );
    no_panic_so_far();
}

#[test]
fn csc_structure_is_checked_before_transposing() {
    count_panics();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // 3 cells x 2 genes stored by column: one pointer per gene, row (cell) indices.
    let ok = h5ad(d, "ok.h5ad", "csc_matrix", [3, 2], &[0, 1, 2], &[2, 0], true);
    assert_eq!(read_h5ad(&ok).unwrap().x.shape(), (3, 2));
    for (name, indptr, indices, must) in [
        ("dec.h5ad", vec![0i64, 5, 2], vec![0, 1], "X/indptr: decreases at column 1 (from 5 to 2)"),
        ("end.h5ad", vec![0, 1, 3], vec![0, 1], "X/indptr: ends at 3"),
        ("len.h5ad", vec![0, 2], vec![0, 1], "X/indptr: has 2 entries, expected 3 (one per column of the 2, plus one)"),
        ("row.h5ad", vec![0, 1, 2], vec![0, 9], "X/indices: row index 9 in column 1 is out of range (3 rows)"),
    ] {
        let p = h5ad(d, name, "csc_matrix", [3, 2], &indptr, &indices, true);
        one_line(&read_h5ad(&p).unwrap_err(), &[name, must]);
    }
    no_panic_so_far();
}

#[test]
fn absurd_shape_attributes_are_refused_before_allocating() {
    count_panics();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // No var: the old reader made 10^12 default gene names (and aborted).
    let p = h5ad(d, "wide.h5ad", "csr_matrix", [2, 1_000_000_000_000], &[0, 1, 2], &[0, 1], false);
    let must = ["wide.h5ad: X:", "shape 2 x 1000000000000 is larger than the 4294967295 rows or columns supported"];
    one_line(&read_h5ad(&p).unwrap_err(), &must);
    one_line(&H5adRowReader::open(&p).unwrap_err(), &must);
    // CSC without obs: the old reader allocated 10^12 row pointers to transpose.
    let p = h5ad(d, "tall.h5ad", "csc_matrix", [1_000_000_000_000, 2], &[0, 1, 2], &[0, 1], false);
    one_line(&read_h5ad(&p).unwrap_err(), &["tall.h5ad: X:", "shape 1000000000000 x 2"]);
    // With obs and var, a shape that disagrees with them is refused before X is read.
    let mut b = FileBuilder::new();
    enc(&mut b);
    let mut g = b.create_group("X");
    sparse(&mut g, "csc_matrix", [4_000_000_000, 2], &[0, 1, 2], &[0, 1]);
    b.add_group(g.finish());
    df(&mut b, "obs", 3);
    df(&mut b, "var", 2);
    let p = d.join("obs.h5ad");
    b.write(&p).unwrap();
    one_line(&read_h5ad(&p).unwrap_err(), &["obs.h5ad: obs:", "has 3 rows but X has 4000000000 rows"]);
    no_panic_so_far();
}

#[test]
fn bad_obsp_is_refused_by_read_and_by_annotations() {
    count_panics();
    let t = tempfile::tempdir().unwrap();
    let mut b = FileBuilder::new();
    enc(&mut b);
    let mut g = b.create_group("X");
    sparse(&mut g, "csr_matrix", [2, 3], &[0, 1, 2], &[0, 1]);
    b.add_group(g.finish());
    df(&mut b, "obs", 2);
    df(&mut b, "var", 3);
    let mut o = b.create_group("obsp");
    o.set_attr("encoding-type", AttrValue::VarLenString("dict".into()));
    o.set_attr("encoding-version", AttrValue::VarLenString("0.1.0".into()));
    let mut c = o.create_group("connectivities");
    sparse(&mut c, "csr_matrix", [2, 2], &[0, 4, 2], &[0, 1]);
    o.add_group(c.finish());
    b.add_group(o.finish());
    let p = t.path().join("obsp.h5ad");
    b.write(&p).unwrap();
    let must = ["obsp.h5ad: obsp/connectivities/indptr:", "decreases at row 1 (from 4 to 2)"];
    one_line(&read_h5ad(&p).unwrap_err(), &must);
    let r = H5adRowReader::open(&p).unwrap();
    assert_eq!(r.read_rows(0, 2).unwrap().stored(), 2);
    one_line(&r.annotations().unwrap_err(), &must);
    no_panic_so_far();
}

/// A Cell Ranger v3 .h5 with 3 genes x 2 cells stored by cell, with the given pointers.
fn tenx_h5(dir: &Path, name: &str, indptr: &[i64], indices: &[i32]) -> PathBuf {
    let mut b = FileBuilder::new();
    let mut m = b.create_group("matrix");
    m.create_dataset("barcodes").with_vlen_strings(&["c1", "c2"]);
    m.create_dataset("shape").with_i64_data(&[3, 2]);
    m.create_dataset("data").with_f32_data(&vec![1.0; indices.len()]);
    m.create_dataset("indices").with_i32_data(indices);
    m.create_dataset("indptr").with_i64_data(indptr);
    let mut f = m.create_group("features");
    f.create_dataset("id").with_vlen_strings(&["E1", "E2", "E3"]);
    f.create_dataset("name").with_vlen_strings(&["A", "B", "C"]);
    m.add_group(f.finish());
    b.add_group(m.finish());
    let p = dir.join(name);
    b.write(&p).unwrap();
    p
}

#[test]
fn cell_ranger_h5_pointers_and_indices_are_checked() {
    count_panics();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let ok = tenx_h5(d, "ok.h5", &[0, 1, 2], &[2, 0]);
    assert_eq!(read_10x_h5(&ok, None).unwrap().0.x.shape(), (2, 3));
    for (name, indptr, indices, must) in [
        ("dec.h5", vec![0i64, 5, 2], vec![0, 1], "matrix/indptr: decreases at column 1 (from 5 to 2)"),
        ("end.h5", vec![0, 1, 7], vec![0, 1], "matrix/indptr: ends at 7"),
        ("idx.h5", vec![0, 1, 2], vec![0, 3], "matrix/indices: row index 3 in column 1 is out of range (3 rows)"),
    ] {
        let p = tenx_h5(d, name, &indptr, &indices);
        one_line(&read_10x_h5(&p, None).unwrap_err(), &[name, must]);
        one_line(&read_any(&p).unwrap_err(), &[name, must]);
    }
    no_panic_so_far();
}
