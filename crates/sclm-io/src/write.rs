//! Writing `.h5ad` files in the current anndata layout (encoding-type attributes, anndata ≥ 0.8).

use std::io::{BufWriter, Write};
use std::path::Path;

use hdf5_pure::{make_i8_type, AttrValue, DatasetBuilder, EnumTypeBuilder, FileBuilder, FinishedGroup, GroupBuilder};
use sclm_data::{AnnData, Array2, Column, CsrMatrix, DataFrame, Matrix, Value};

use crate::error::{data_err, fmt_err, fname, guard, io_err, IoError, Result};

/// Sparse `X` with at least this many stored values is written through the streaming path.
const STREAM_NNZ: usize = 1 << 22;

/// How `.h5ad` files are written.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct WriteOptions {
    /// Gzip (deflate) level 0–9 for arrays, or `None` (the default) for no compression.
    /// Uncompressed files are written several times faster.
    pub compression: Option<u32>,
}

/// Writes `adata` to `path` as `.h5ad` (anndata ≥ 0.8 layout). The file appears atomically:
/// it is written to a temporary file in the same directory and renamed, so on any error
/// no partial output is left behind and an existing file at `path` is untouched.
pub fn write_h5ad(adata: &AnnData, path: impl AsRef<Path>, opts: &WriteOptions) -> Result<()> {
    let path = path.as_ref();
    let file = fname(path);
    adata.validate().map_err(|e| data_err(&file, "AnnData", e))?;
    check_storable(adata, &file)?;
    check_level(&file, opts)?;
    if let Matrix::Csr(x) = &adata.x {
        if x.nnz() >= STREAM_NNZ && x.ncols <= i32::MAX as usize {
            // Large sparse X: append it to chunked datasets rather than copying it into the
            // in-memory file image (less memory, faster).
            let mut w = crate::stream::H5adStreamWriter::create_unchecked(path, adata, opts)?;
            w.append(x)?;
            return w.finish();
        }
    }
    let b = guard(&file, || {
        let mut b = FileBuilder::new();
        build_anndata(&mut b, adata, opts, true);
        Ok(b)
    })?;
    atomic_write(path, |w| {
        let mut bw = BufWriter::with_capacity(1 << 22, w);
        b.finish_to(&mut bw).map_err(|e| fmt_err(&file, "/", format!("cannot encode HDF5: {e}")))?;
        bw.flush().map_err(|e| io_err(&file, e))
    })
}

/// Refuses names HDF5 cannot store and categoricals pandas cannot load, naming the key.
pub(crate) fn check_storable(a: &AnnData, file: &str) -> Result<()> {
    fn name_ok(file: &str, key: &str, n: &str) -> Result<()> {
        if n.is_empty() || n.contains('/') || n == "." {
            return Err(fmt_err(
                file,
                &format!("{key}/{n}"),
                "name cannot be stored in .h5ad (empty, '.' or containing '/')",
            ));
        }
        Ok(())
    }
    fn frame(file: &str, key: &str, df: &DataFrame) -> Result<()> {
        for (n, c) in &df.columns {
            name_ok(file, key, n)?;
            if n == "_index" {
                return Err(fmt_err(file, &format!("{key}/{n}"), "'_index' is reserved for the index"));
            }
            if let Column::Categorical { codes, categories, .. } = c {
                if let Some(&x) = codes.iter().find(|&&x| x < -1 || x >= categories.len() as i32) {
                    return Err(fmt_err(
                        file,
                        &format!("{key}/{n}"),
                        format!("category code {x} out of range ({} categories)", categories.len()),
                    ));
                }
                let mut s: Vec<&String> = categories.iter().collect();
                s.sort();
                if let Some(w) = s.windows(2).find(|w| w[0] == w[1]) {
                    return Err(fmt_err(file, &format!("{key}/{n}"), format!("category '{}' appears twice", w[0])));
                }
            }
        }
        Ok(())
    }
    fn value(file: &str, key: &str, v: &Value) -> Result<()> {
        match v {
            Value::Map(m) => {
                for (k, x) in m {
                    name_ok(file, key, k)?;
                    value(file, &format!("{key}/{k}"), x)?;
                }
                Ok(())
            }
            Value::F64Array { shape, data } if shape.iter().product::<usize>() != data.len() => {
                Err(fmt_err(file, key, format!("shape {shape:?} does not match {} values", data.len())))
            }
            Value::I64Array { shape, data } if shape.iter().product::<usize>() != data.len() => {
                Err(fmt_err(file, key, format!("shape {shape:?} does not match {} values", data.len())))
            }
            _ => Ok(()),
        }
    }
    frame(file, "obs", &a.obs)?;
    frame(file, "var", &a.var)?;
    for (key, names) in [
        ("obsm", a.obsm.keys().collect::<Vec<_>>()),
        ("varm", a.varm.keys().collect()),
        ("layers", a.layers.keys().collect()),
        ("obsp", a.obsp.keys().collect()),
    ] {
        for n in names {
            name_ok(file, key, n)?;
        }
    }
    if let Some(r) = &a.raw {
        frame(file, "raw/var", &r.var)?;
        for n in r.varm.keys() {
            name_ok(file, "raw/varm", n)?;
        }
    }
    value(file, "uns", &Value::Map(a.uns.clone()))
}

pub(crate) fn check_level(file: &str, opts: &WriteOptions) -> Result<()> {
    if let Some(l) = opts.compression {
        if l > 9 {
            return Err(IoError::Invalid { what: file.to_string(), msg: format!("gzip level {l} is not in 0..=9") });
        }
    }
    Ok(())
}

/// Writes through `f` into a temporary file beside `path`, then renames it onto `path`.
pub(crate) fn atomic_write(path: &Path, f: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
    let file = fname(path);
    let tmp = temp_beside(path)?;
    let mut fh = tmp.reopen().map_err(|e| io_err(&file, e))?;
    f(&mut fh)?;
    fh.sync_all().map_err(|e| io_err(&file, e))?;
    drop(fh);
    publish_mode(tmp.path(), &file)?;
    tmp.persist(path).map_err(|e| io_err(&file, e.error))?;
    Ok(())
}

/// Gives a finished temporary file the usual mode of a new file (`rw-r--r--`): temporary
/// files are created owner-only.
pub(crate) fn publish_mode(p: &Path, file: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).map_err(|e| io_err(file, e))?;
    }
    #[cfg(not(unix))]
    let _ = (p, file);
    Ok(())
}

/// A temporary file in the directory of `path` (deleted when dropped unless persisted).
pub(crate) fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let file = fname(path);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let base = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    tempfile::Builder::new().prefix(&format!(".{base}.")).suffix(".tmp").tempfile_in(&dir).map_err(|e| io_err(&file, e))
}

/// A place datasets and groups can be created: the file root or a group.
pub(crate) trait Node {
    fn ds(&mut self, name: &str) -> &mut DatasetBuilder;
    fn attr(&mut self, k: &str, v: AttrValue);
    fn sub(&mut self, name: &str) -> GroupBuilder;
    fn add(&mut self, g: FinishedGroup);
}

impl Node for FileBuilder {
    fn ds(&mut self, name: &str) -> &mut DatasetBuilder {
        self.create_dataset(name)
    }
    fn attr(&mut self, k: &str, v: AttrValue) {
        self.set_attr(k, v)
    }
    fn sub(&mut self, name: &str) -> GroupBuilder {
        self.create_group(name)
    }
    fn add(&mut self, g: FinishedGroup) {
        self.add_group(g)
    }
}

impl Node for GroupBuilder {
    fn ds(&mut self, name: &str) -> &mut DatasetBuilder {
        self.create_dataset(name)
    }
    fn attr(&mut self, k: &str, v: AttrValue) {
        self.set_attr(k, v)
    }
    fn sub(&mut self, name: &str) -> GroupBuilder {
        self.create_group(name)
    }
    fn add(&mut self, g: FinishedGroup) {
        self.add_group(g)
    }
}

pub(crate) fn enc(n: &mut dyn Node, t: &str, v: &str) {
    n.attr("encoding-type", AttrValue::VarLenString(t.into()));
    n.attr("encoding-version", AttrValue::VarLenString(v.into()));
}

pub(crate) fn tag(d: &mut DatasetBuilder, t: &str, v: &str) {
    d.set_attr("encoding-type", AttrValue::VarLenString(t.into()));
    d.set_attr("encoding-version", AttrValue::VarLenString(v.into()));
}

/// Largest chunk dimension written. The HDF5 C library (h5py, anndata) rejects files from the
/// pure-Rust backend whose chunk dimensions need 3 bytes to encode, so none may exceed 65,535.
pub(crate) const MAX_CHUNK_DIM: usize = 65_535;

/// Chunked deflate for a 1-D dataset of `n` elements, when compression is on.
pub(crate) fn compress1(d: &mut DatasetBuilder, n: usize, opts: &WriteOptions) {
    if let (Some(level), true) = (opts.compression, n > 0) {
        d.with_chunks(&[n.min(MAX_CHUNK_DIM) as u64]).with_deflate(level);
    }
}

fn compress2(d: &mut DatasetBuilder, r: usize, c: usize, opts: &WriteOptions) {
    if let (Some(level), true) = (opts.compression, r > 0 && c > 0) {
        let cols = c.min(MAX_CHUNK_DIM);
        let rows = ((1usize << 16) / cols).clamp(1, r.min(MAX_CHUNK_DIM));
        d.with_chunks(&[rows as u64, cols as u64]).with_deflate(level);
    }
}

pub(crate) fn bool_type() -> hdf5_pure::Datatype {
    EnumTypeBuilder::with_base(make_i8_type())
        .raw_value("FALSE", &[0])
        .raw_value("TRUE", &[1])
        .build()
        .expect("a two-member enum over int8 is always valid")
}

pub(crate) fn string_array(n: &mut dyn Node, name: &str, v: &[String], opts: &WriteOptions) {
    let refs: Vec<&str> = v.iter().map(|s| s.as_str()).collect();
    let d = n.ds(name);
    d.with_vlen_strings(&refs);
    compress1(d, v.len(), opts);
    tag(d, "string-array", "0.2.0");
}

/// Adds every part of `a` to `b`; `X` only when `with_x`.
pub(crate) fn build_anndata(b: &mut FileBuilder, a: &AnnData, opts: &WriteOptions, with_x: bool) {
    enc(b, "anndata", "0.1.0");
    if with_x {
        write_matrix(b, "X", &a.x, opts);
    }
    write_dataframe(b, "obs", &a.obs, opts);
    write_dataframe(b, "var", &a.var, opts);
    write_arrays(b, "obsm", &a.obsm, opts);
    write_arrays(b, "varm", &a.varm, opts);
    let mut g = b.sub("layers");
    enc(&mut g, "dict", "0.1.0");
    for (k, m) in &a.layers {
        write_matrix(&mut g, k, m, opts);
    }
    b.add(g.finish());
    let mut g = b.sub("obsp");
    enc(&mut g, "dict", "0.1.0");
    for (k, m) in &a.obsp {
        write_matrix(&mut g, k, m, opts);
    }
    b.add(g.finish());
    let mut g = b.sub("varp");
    enc(&mut g, "dict", "0.1.0");
    b.add(g.finish());
    let mut g = b.sub("uns");
    enc(&mut g, "dict", "0.1.0");
    for (k, v) in &a.uns {
        write_value(&mut g, k, v, opts);
    }
    b.add(g.finish());
    if let Some(raw) = &a.raw {
        let mut g = b.sub("raw");
        enc(&mut g, "raw", "0.1.0");
        write_matrix(&mut g, "X", &raw.x, opts);
        write_dataframe(&mut g, "var", &raw.var, opts);
        write_arrays(&mut g, "varm", &raw.varm, opts);
        b.add(g.finish());
    }
}

/// Writes a matrix: dense `array` or `csr_matrix` group.
pub(crate) fn write_matrix(n: &mut dyn Node, name: &str, m: &Matrix, opts: &WriteOptions) {
    match m {
        Matrix::Dense(d) => {
            let ds = n.ds(name);
            ds.with_f32_data(&d.data).with_shape(&[d.nrows as u64, d.ncols as u64]);
            compress2(ds, d.nrows, d.ncols, opts);
            tag(ds, "array", "0.2.0");
        }
        Matrix::Csr(c) => write_csr(n, name, c, opts),
    }
}

fn write_csr(n: &mut dyn Node, name: &str, c: &CsrMatrix, opts: &WriteOptions) {
    let mut g = n.sub(name);
    enc(&mut g, "csr_matrix", "0.1.0");
    g.set_attr("shape", AttrValue::I64Array(vec![c.nrows as i64, c.ncols as i64]));
    let d = g.create_dataset("data");
    d.with_f32_data(&c.data);
    compress1(d, c.data.len(), opts);
    let d = g.create_dataset("indices");
    if c.ncols <= i32::MAX as usize {
        let v: Vec<i32> = c.indices.iter().map(|&x| x as i32).collect();
        d.with_i32_data(&v);
    } else {
        let v: Vec<i64> = c.indices.iter().map(|&x| x as i64).collect();
        d.with_i64_data(&v);
    }
    compress1(d, c.indices.len(), opts);
    let d = g.create_dataset("indptr");
    if c.nnz() <= i32::MAX as usize {
        let v: Vec<i32> = c.indptr.iter().map(|&x| x as i32).collect();
        d.with_i32_data(&v);
    } else {
        let v: Vec<i64> = c.indptr.iter().map(|&x| x as i64).collect();
        d.with_i64_data(&v);
    }
    compress1(d, c.indptr.len(), opts);
    n.add(g.finish());
}

/// Writes a dataframe group (`dataframe` 0.2.0).
pub(crate) fn write_dataframe(n: &mut dyn Node, name: &str, df: &DataFrame, opts: &WriteOptions) {
    let mut g = n.sub(name);
    enc(&mut g, "dataframe", "0.2.0");
    g.set_attr("_index", AttrValue::VarLenString("_index".into()));
    let names: Vec<String> = df.columns.iter().map(|(c, _)| c.clone()).collect();
    g.set_attr("column-order", AttrValue::VarLenStringArray(names));
    string_array(&mut g, "_index", &df.index, opts);
    for (c, col) in &df.columns {
        write_column(&mut g, c, col, opts);
    }
    n.add(g.finish());
}

fn write_column(g: &mut GroupBuilder, name: &str, col: &Column, opts: &WriteOptions) {
    let len = col.len();
    let d = match col {
        Column::Str(v) => return string_array(g, name, v, opts),
        Column::Categorical { codes, categories, ordered } => {
            let mut c = g.create_group(name);
            enc(&mut c, "categorical", "0.2.0");
            c.set_attr("ordered", AttrValue::U8(*ordered as u8));
            let d = c.create_dataset("codes");
            if categories.len() < i8::MAX as usize {
                let v: Vec<i8> = codes.iter().map(|&x| x as i8).collect();
                d.with_i8_data(&v);
            } else if categories.len() < i16::MAX as usize {
                let v: Vec<i16> = codes.iter().map(|&x| x as i16).collect();
                d.with_i16_data(&v);
            } else {
                d.with_i32_data(codes);
            }
            compress1(d, len, opts);
            tag(d, "array", "0.2.0");
            string_array(&mut c, "categories", categories, opts);
            g.add_group(c.finish());
            return;
        }
        Column::F64(v) => g.create_dataset(name).with_f64_data(v),
        Column::F32(v) => g.create_dataset(name).with_f32_data(v),
        Column::I64(v) => g.create_dataset(name).with_i64_data(v),
        Column::I32(v) => g.create_dataset(name).with_i32_data(v),
        Column::Bool(v) => {
            let bytes: Vec<u8> = v.iter().map(|&b| b as u8).collect();
            g.create_dataset(name).with_raw_data(bool_type(), bytes, v.len() as u64)
        }
    };
    compress1(d, len, opts);
    tag(d, "array", "0.2.0");
}

fn write_arrays(n: &mut dyn Node, name: &str, m: &std::collections::BTreeMap<String, Array2>, opts: &WriteOptions) {
    let mut g = n.sub(name);
    enc(&mut g, "dict", "0.1.0");
    for (k, a) in m {
        let (r, c) = a.shape();
        let d = g.create_dataset(k);
        match a {
            Array2::F32(x) => d.with_f32_data(&x.data),
            Array2::F64(x) => d.with_f64_data(&x.data),
            Array2::I64(x) => d.with_i64_data(&x.data),
        };
        d.with_shape(&[r as u64, c as u64]);
        compress2(d, r, c, opts);
        tag(d, "array", "0.2.0");
    }
    n.add(g.finish());
}

fn write_value(n: &mut dyn Node, name: &str, v: &Value, opts: &WriteOptions) {
    match v {
        Value::Map(m) => {
            let mut g = n.sub(name);
            enc(&mut g, "dict", "0.1.0");
            for (k, x) in m {
                write_value(&mut g, k, x, opts);
            }
            n.add(g.finish());
        }
        Value::Str(s) => {
            let d = n.ds(name);
            d.with_vlen_strings(&[s.as_str()]).with_shape(&[]);
            tag(d, "string", "0.2.0");
        }
        Value::F64(x) => {
            let d = n.ds(name);
            d.with_f64_data(&[*x]).with_shape(&[]);
            tag(d, "numeric-scalar", "0.2.0");
        }
        Value::I64(x) => {
            let d = n.ds(name);
            d.with_i64_data(&[*x]).with_shape(&[]);
            tag(d, "numeric-scalar", "0.2.0");
        }
        Value::Bool(b) => {
            let d = n.ds(name);
            d.with_raw_data(bool_type(), vec![*b as u8], 1).with_shape(&[]);
            tag(d, "numeric-scalar", "0.2.0");
        }
        Value::Strings(s) => string_array(n, name, s, opts),
        Value::F64Array { shape, data } => {
            let d = n.ds(name);
            d.with_f64_data(data).with_shape(&shape.iter().map(|&x| x as u64).collect::<Vec<_>>());
            if shape.len() == 1 {
                compress1(d, data.len(), opts);
            }
            tag(d, "array", "0.2.0");
        }
        Value::I64Array { shape, data } => {
            let d = n.ds(name);
            d.with_i64_data(data).with_shape(&shape.iter().map(|&x| x as u64).collect::<Vec<_>>());
            if shape.len() == 1 {
                compress1(d, data.len(), opts);
            }
            tag(d, "array", "0.2.0");
        }
    }
}
