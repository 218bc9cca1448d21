//! Out-of-core access to `X`: reading row ranges of a large file, and writing a file whose
//! `X` arrives in row chunks.

use std::path::{Path, PathBuf};

use hdf5_pure::{AttrValue, Dataset, FileAccessProperties, FileBuilder, MaxExtent, SyncPolicy};

use sclm_data::{AnnData, CsrMatrix, DataFrame, Dense, Matrix, Value};

use crate::error::{data_err, fmt_err, fname, guard, io_err, IoError, Result};
use crate::h5::{attr_str, encoding, Node, H5};
use crate::read::{
    check_indptr, index_out_of_range, legacy_categories, move_legacy_neighbors, read_arrays, read_dataframe,
    read_pairwise, read_uns, to_usize, ReadReport, MAX_SPARSE_DIM,
};
use crate::write::{
    build_anndata, check_level, check_storable, enc, publish_mode, temp_beside, WriteOptions, MAX_CHUNK_DIM,
};

enum Layout {
    Dense(Dataset),
    Csr { indptr: Vec<usize>, data: Dataset, indices: Dataset },
}

/// Reads rows `[a, b)` of `X` from an `.h5ad` file without loading `X` whole: for CSR, the
/// row pointers are read once and each request reads only the slice of `data`/`indices`
/// it needs; for dense `X`, only the requested row slab. `obs` and `var` are read at open.
///
/// ```no_run
/// let r = sclm_io::H5adRowReader::open("big.h5ad")?;
/// for start in (0..r.n_obs()).step_by(10_000) {
///     let block = r.read_rows(start, (start + 10_000).min(r.n_obs()))?;
///     // ... run the model on `block` ...
/// #   let _ = block;
/// }
/// # Ok::<(), sclm_io::IoError>(())
/// ```
pub struct H5adRowReader {
    h: H5,
    x: Layout,
    n_obs: usize,
    n_vars: usize,
    obs: DataFrame,
    var: DataFrame,
    report: ReadReport,
    /// Legacy (pre-0.7) categorical columns whose categories live in `uns`.
    used_cats: Vec<String>,
}

impl std::fmt::Debug for H5adRowReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H5adRowReader")
            .field("file", &self.h.name)
            .field("n_obs", &self.n_obs)
            .field("n_vars", &self.n_vars)
            .finish()
    }
}

impl H5adRowReader {
    /// Opens `path`, reading `obs`, `var` and (for CSR) the row pointers of `X`.
    /// CSC-stored `X` cannot be read by rows and is refused with an error saying so.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let h = H5::open(path.as_ref())?;
        let name = h.name.clone();
        guard(&name, move || Self::open_h5(h))
    }

    fn open_h5(h: H5) -> Result<Self> {
        let mut report = ReadReport::default();
        let (x, n_obs, n_vars) = match h.node("X") {
            None => return Err(h.err("X", "missing (no X matrix in this file)")),
            Some(Node::Dataset(d)) => {
                let s = h.shape("X", &d)?;
                if s.len() != 2 {
                    return Err(h.err("X", format!("expected a 2-D matrix, found shape {s:?}")));
                }
                (Layout::Dense(d), s[0], s[1])
            }
            Some(Node::Group(_)) => {
                let a = h.attrs("X")?;
                let (fmt, shape) = match encoding(&a) {
                    Some(e) => (e, a.get("shape").and_then(|v| v.to_i64s())),
                    None => match attr_str(&a, "h5sparse_format") {
                        Some(f) => (format!("{f}_matrix"), a.get("h5sparse_shape").and_then(|v| v.to_i64s())),
                        None => return Err(h.err("X", "group without encoding-type: not a matrix")),
                    },
                };
                match fmt.as_str() {
                    "csr_matrix" => {}
                    "csc_matrix" => return Err(h.err(
                        "X",
                        "stored column-major (CSC): rows cannot be streamed; read the file whole or rewrite it as CSR",
                    )),
                    other => return Err(h.err("X", format!("unknown encoding-type '{other}'"))),
                }
                let (r, c) = match shape.as_deref() {
                    Some(&[r, c]) if r >= 0 && c >= 0 => (r as usize, c as usize),
                    _ => return Err(h.err("X", "sparse matrix without a valid 2-D 'shape' attribute")),
                };
                if r > MAX_SPARSE_DIM || c > MAX_SPARSE_DIM {
                    return Err(h.err(
                        "X",
                        format!("shape {r} x {c} is larger than the {MAX_SPARSE_DIM} rows or columns supported (32-bit indices)"),
                    ));
                }
                let indptr = to_usize(&h, "X/indptr", h.read_i64("X/indptr")?)?;
                // Checked once here: every row range of read_rows is then valid.
                check_indptr(&h, "X", false, r, &indptr)?;
                let data = h.dataset("X/data")?;
                let indices = h.dataset("X/indices")?;
                let nnz = indptr[r];
                for (k, d) in [("X/data", &data), ("X/indices", &indices)] {
                    let s = h.shape(k, d)?;
                    if s != [nnz] {
                        return Err(h.err(k, format!("has shape {s:?}, row pointers say {nnz} values")));
                    }
                }
                (Layout::Csr { indptr, data, indices }, r, c)
            }
        };
        let cats = legacy_categories(&h);
        let mut used = Vec::new();
        let obs = if h.has("obs") {
            read_dataframe(&h, "obs", &cats, &mut used, &mut report)?
        } else {
            DataFrame::new((0..n_obs).map(|i| i.to_string()).collect())
        };
        let mut var = if h.has("var") {
            read_dataframe(&h, "var", &cats, &mut used, &mut report)?
        } else {
            DataFrame::new((0..n_vars).map(|i| i.to_string()).collect())
        };
        if obs.nrows() != n_obs {
            return Err(h.err("obs", format!("has {} rows but X has {n_obs} rows", obs.nrows())));
        }
        if var.nrows() != n_vars {
            return Err(h.err("var", format!("has {} rows but X has {n_vars} columns", var.nrows())));
        }
        report.duplicate_var_names = var.make_index_unique();
        Ok(H5adRowReader { h, x, n_obs, n_vars, obs, var, report, used_cats: used })
    }

    /// Number of cells.
    pub fn n_obs(&self) -> usize {
        self.n_obs
    }

    /// Number of genes.
    pub fn n_vars(&self) -> usize {
        self.n_vars
    }

    /// Gene names (made unique as anndata does).
    pub fn var_names(&self) -> &[String] {
        &self.var.index
    }

    /// Cell annotations.
    pub fn obs(&self) -> &DataFrame {
        &self.obs
    }

    /// Gene annotations.
    pub fn var(&self) -> &DataFrame {
        &self.var
    }

    /// What was skipped or renamed while reading `obs`/`var`.
    pub fn report(&self) -> &ReadReport {
        &self.report
    }

    /// Everything of the file but `X`, `layers` and `raw`: `obs`, `var`, `obsm`, `varm`,
    /// `obsp` and `uns`, with an empty CSR `X` of the file's shape. This is the template for
    /// an [`H5adStreamWriter`] copy of the file whose `X` is then copied chunk by chunk
    /// (`layers` and `raw` are as large as `X`: they are listed in the report as not read).
    pub fn annotations(&self) -> Result<(AnnData, ReadReport)> {
        guard(&self.h.name, || {
            let h = &self.h;
            let mut rep = self.report.clone();
            let (groups, datasets) = h.children("")?;
            let has = |k: &str| groups.iter().chain(datasets.iter()).any(|n| n == k);
            let mut a = AnnData::new(Matrix::Csr(CsrMatrix::zeros(self.n_obs, self.n_vars)));
            a.obs = self.obs.clone();
            a.var = self.var.clone();
            if has("obsm") {
                a.obsm = read_arrays(h, "obsm", self.n_obs, &mut rep)?;
            }
            if has("varm") {
                a.varm = read_arrays(h, "varm", self.n_vars, &mut rep)?;
            }
            if has("obsp") {
                a.obsp = read_pairwise(h, self.n_obs)?;
            }
            if has("varp") {
                let (g, d) = h.children("varp")?;
                rep.skipped
                    .extend(g.iter().chain(d.iter()).map(|e| format!("varp/{e} (gene × gene matrices are not kept)")));
            }
            if has("layers") {
                let (g, d) = h.children("layers")?;
                rep.skipped
                    .extend(g.iter().chain(d.iter()).map(|e| format!("layers/{e} (not read by the row reader)")));
            }
            if has("raw") || has("raw.X") {
                rep.skipped.push("raw (not read by the row reader)".into());
            }
            if has("uns") {
                if let Value::Map(m) = read_uns(h, "uns", &mut rep)? {
                    a.uns = m;
                }
                for c in &self.used_cats {
                    a.uns.remove(&format!("{c}_categories"));
                }
            }
            move_legacy_neighbors(h, self.n_obs, &mut a.obsp, &mut a.uns, &mut rep)?;
            a.validate().map_err(|e| data_err(&h.name, "AnnData", e))?;
            Ok((a, rep))
        })
    }

    /// True when `X` is stored sparse (CSR).
    pub fn is_sparse(&self) -> bool {
        matches!(self.x, Layout::Csr { .. })
    }

    /// Rows `[a, b)` of `X`, in the storage kind of the file (CSR or dense).
    pub fn read_rows(&self, a: usize, b: usize) -> Result<Matrix> {
        if a > b || b > self.n_obs {
            return Err(self.h.err("X", format!("row range {a}..{b} is outside 0..{}", self.n_obs)));
        }
        guard(&self.h.name, || self.read_rows_inner(a, b))
    }

    fn read_rows_inner(&self, a: usize, b: usize) -> Result<Matrix> {
        let h = &self.h;
        match &self.x {
            Layout::Dense(d) => {
                let data = if a == b {
                    vec![]
                } else {
                    d.read_f32_rows(a as u64, (b - a) as u64)
                        .map_err(|e| h.err("X", format!("cannot read rows {a}..{b}: {e}")))?
                };
                Ok(Matrix::Dense(Dense::from_vec(b - a, self.n_vars, data).map_err(|e| data_err(&h.name, "X", e))?))
            }
            Layout::Csr { indptr, data, indices } => {
                let (s, e) = (indptr[a], indptr[b]);
                let (vals, idx) = if s == e {
                    (vec![], vec![])
                } else {
                    let n = (e - s) as u64;
                    let v = data
                        .read_f32_rows(s as u64, n)
                        .map_err(|x| h.err("X/data", format!("cannot read values {s}..{e}: {x}")))?;
                    (v, h.read_indices_of("X/indices", indices, Some((s as u64, n)))?)
                };
                if vals.len() != e - s || idx.len() != e - s {
                    return Err(h.err("X", format!("short read of rows {a}..{b}")));
                }
                if let Some(k) = idx.iter().position(|&c| c as usize >= self.n_vars) {
                    // indptr[a] = s <= s + k: the row holding value s + k is found.
                    let row = a + indptr[a..=b].partition_point(|&p| p <= s + k).saturating_sub(1);
                    return Err(index_out_of_range(h, "X", false, self.n_vars, row, idx[k]));
                }
                let ip = indptr[a..=b].iter().map(|&p| p - s).collect();
                Ok(Matrix::Csr(
                    CsrMatrix::new(b - a, self.n_vars, ip, idx, vals).map_err(|x| data_err(&h.name, "X", x))?,
                ))
            }
        }
    }
}

/// Open handles on the streamed parts of `X`.
struct XDatasets {
    data: Dataset,
    indices: Dataset,
    indptr: Dataset,
}

/// Elements per HDF5 chunk of the streamed `X/data` and `X/indices` (see `MAX_CHUNK_DIM`).
const CHUNK: usize = MAX_CHUNK_DIM;
/// Elements buffered before they are appended to the file.
const FLUSH: usize = CHUNK * 64;

/// Writes an `.h5ad` file whose `X` (CSR) arrives in row chunks, so that `X` never has to be
/// held in memory. Everything but `X` comes from a template [`AnnData`] whose `X` only gives
/// the shape (use `CsrMatrix::zeros(n_obs, n_vars)`). The file appears at `path` only when
/// [`finish`](Self::finish) succeeds; dropping the writer, or any error, leaves nothing behind.
///
/// ```no_run
/// use sclm_data::{AnnData, CsrMatrix, Matrix};
/// let template = AnnData::new(Matrix::Csr(CsrMatrix::zeros(1000, 50)));
/// let mut w = sclm_io::H5adStreamWriter::create("sim.h5ad", &template, &Default::default())?;
/// for _ in 0..10 {
///     w.append(&CsrMatrix::zeros(100, 50))?;
/// }
/// w.finish()?;
/// # Ok::<(), sclm_io::IoError>(())
/// ```
pub struct H5adStreamWriter {
    // Field order matters: dataset handles, then the file, are dropped before the temporary
    // file is removed.
    ds: Option<XDatasets>,
    file: Option<hdf5_pure::File>,
    tmp: Option<tempfile::TempPath>,
    path: PathBuf,
    name: String,
    indptr: Vec<i64>,
    buf_data: Vec<f32>,
    buf_idx: Vec<i64>,
    /// Index type of `X/indices` and `X/indptr`: int64 when the matrix could hold more than
    /// `i32::MAX` values, else int32. Both always share one type, as scipy requires.
    wide: bool,
    n_obs: usize,
    n_vars: usize,
    rows: usize,
}

impl std::fmt::Debug for H5adStreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H5adStreamWriter")
            .field("file", &self.name)
            .field("rows", &self.rows)
            .field("n_obs", &self.n_obs)
            .finish()
    }
}

impl H5adStreamWriter {
    /// Starts a file at `path` with every part of `template` except `X`, whose shape it takes.
    pub fn create(path: impl AsRef<Path>, template: &AnnData, opts: &WriteOptions) -> Result<Self> {
        let path = path.as_ref();
        let name = fname(path);
        template.validate().map_err(|e| data_err(&name, "AnnData", e))?;
        check_storable(template, &name)?;
        Self::create_unchecked(path, template, opts)
    }

    /// [`create`](Self::create) for a template already validated; its `X` gives only the shape.
    pub(crate) fn create_unchecked(path: &Path, template: &AnnData, opts: &WriteOptions) -> Result<Self> {
        let name = fname(path);
        check_level(&name, opts)?;
        let (n_obs, n_vars) = template.x.shape();
        if n_vars > i32::MAX as usize {
            return Err(IoError::Invalid {
                what: name,
                msg: format!("{n_vars} genes is more than this writer supports"),
            });
        }
        let tmp = temp_beside(path)?.into_temp_path();
        let n2 = name.clone();
        let wide = (n_obs as u128) * (n_vars as u128) > i32::MAX as u128;
        let file = guard(&name, || {
            let mut b = FileBuilder::new();
            build_anndata(&mut b, template, opts, false);
            let mut g = b.create_group("X");
            enc(&mut g, "csr_matrix", "0.1.0");
            g.set_attr("shape", AttrValue::I64Array(vec![n_obs as i64, n_vars as i64]));
            for (k, dt) in [("data", 0), ("indices", 1), ("indptr", 2)] {
                let d = g.create_dataset(k);
                match dt {
                    0 => d.with_f32_data(&[]),
                    _ if wide => d.with_i64_data(&[]),
                    _ => d.with_i32_data(&[]),
                };
                let ch = if dt == 2 { (n_obs + 1).clamp(1, CHUNK) } else { CHUNK };
                d.with_shape(&[0]).with_maxshape(&[MaxExtent::Unlimited]).with_chunks(&[ch as u64]);
                if let Some(l) = opts.compression {
                    d.with_deflate(l);
                }
            }
            b.add_group(g.finish());
            b.write(&tmp).map_err(|e| fmt_err(&n2, "/", format!("cannot write: {e}")))?;
            let access = FileAccessProperties::new().with_sync_policy(SyncPolicy::OnClose);
            hdf5_pure::File::open_rw_with_options(&tmp, access)
                .map_err(|e| fmt_err(&n2, "/", format!("cannot reopen for appending: {e}")))
        })?;
        let ds = |k: &str| file.dataset(k).map_err(|e| fmt_err(&name, k, e));
        let (data, indices, indptr_ds) = (ds("X/data")?, ds("X/indices")?, ds("X/indptr")?);
        let mut indptr = Vec::with_capacity(n_obs + 1);
        indptr.push(0);
        Ok(H5adStreamWriter {
            file: Some(file),
            ds: Some(XDatasets { data, indices, indptr: indptr_ds }),
            tmp: Some(tmp),
            path: path.to_path_buf(),
            name,
            indptr,
            buf_data: Vec::with_capacity(FLUSH + CHUNK),
            buf_idx: Vec::with_capacity(FLUSH + CHUNK),
            wide,
            n_obs,
            n_vars,
            rows: 0,
        })
    }

    /// Rows written so far.
    pub fn rows_written(&self) -> usize {
        self.rows
    }

    /// Appends the next rows of `X`.
    pub fn append(&mut self, rows: &CsrMatrix) -> Result<()> {
        if rows.ncols != self.n_vars {
            return Err(fmt_err(
                &self.name,
                "X",
                format!("chunk has {} columns, expected {}", rows.ncols, self.n_vars),
            ));
        }
        if self.rows + rows.nrows > self.n_obs {
            return Err(fmt_err(
                &self.name,
                "X",
                format!("{} rows appended, more than the {} announced", self.rows + rows.nrows, self.n_obs),
            ));
        }
        let base = *self.indptr.last().unwrap_or(&0);
        self.indptr.extend(rows.indptr[1..].iter().map(|&p| base + p as i64));
        // Buffer in bounded pieces so that one large append does not double its memory.
        let mut off = 0;
        while off < rows.data.len() {
            let take = FLUSH.saturating_sub(self.buf_data.len()).max(CHUNK).min(rows.data.len() - off);
            self.buf_data.extend_from_slice(&rows.data[off..off + take]);
            self.buf_idx.extend(rows.indices[off..off + take].iter().map(|&c| c as i64));
            off += take;
            if self.buf_data.len() >= FLUSH {
                let whole = self.buf_data.len() / CHUNK * CHUNK;
                self.flush(whole)?;
            }
        }
        self.rows += rows.nrows;
        Ok(())
    }

    fn flush(&mut self, n: usize) -> Result<()> {
        let name = self.name.clone();
        let Some(x) = self.ds.as_mut() else {
            return Err(fmt_err(&name, "X", "writer already closed"));
        };
        let (d, i) = (&mut x.data, &mut x.indices);
        let (bd, bi) = (&self.buf_data[..n], &self.buf_idx[..n]);
        let wide = self.wide;
        guard(&name, || {
            d.append(bd).map_err(|e| fmt_err(&name, "X/data", format!("cannot append: {e}")))?;
            let r = if wide { i.append(bi) } else { i.append(&bi.iter().map(|&c| c as i32).collect::<Vec<i32>>()) };
            r.map_err(|e| fmt_err(&name, "X/indices", format!("cannot append: {e}")))
        })?;
        self.buf_data.drain(..n);
        self.buf_idx.drain(..n);
        Ok(())
    }

    /// Writes what is buffered and the row pointers, closes the file and moves it into place.
    /// Fails (leaving nothing behind) unless exactly the announced number of rows was appended.
    pub fn finish(mut self) -> Result<()> {
        if self.rows != self.n_obs {
            return Err(fmt_err(&self.name, "X", format!("{} rows appended, {} announced", self.rows, self.n_obs)));
        }
        let n = self.buf_data.len();
        self.flush(n)?;
        let name = self.name.clone();
        let mut x = self.ds.take().ok_or_else(|| fmt_err(&name, "X", "writer already closed"))?;
        let ip = &self.indptr;
        if !self.wide && ip.last().is_some_and(|&n| n > i32::MAX as i64) {
            return Err(fmt_err(&name, "X/indptr", "more stored values than int32 row pointers can hold"));
        }
        let wide = self.wide;
        guard(&name, || {
            let r = if wide {
                x.indptr.append(ip)
            } else {
                x.indptr.append(&ip.iter().map(|&p| p as i32).collect::<Vec<i32>>())
            };
            r.map_err(|e| fmt_err(&name, "X/indptr", format!("cannot append: {e}")))
        })?;
        // Every dataset handle is released before the file is closed.
        drop(x);
        if let Some(f) = self.file.take() {
            f.close().map_err(|e| fmt_err(&self.name, "/", format!("cannot close: {e}")))?;
        }
        let tmp = self.tmp.take().expect("temporary path is held until finish");
        publish_mode(&tmp, &self.name)?;
        tmp.persist(&self.path).map_err(|e| io_err(&self.name, e.error))?;
        Ok(())
    }
}
