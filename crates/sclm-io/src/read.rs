//! Reading `.h5ad` files: the current (encoding-type) layout, anndata 0.7 and pre-0.7 layouts.

use std::collections::BTreeMap;
use std::path::Path;

use hdf5_pure::DType;
use sclm_data::{AnnData, Array2, Column, CsrMatrix, DataFrame, Dense, Matrix, Raw, Value};

use crate::error::{data_err, guard, IoError, Result};
use crate::h5::{attr_bool, attr_str, attr_strings, compound_field, encoding, Node, Values, H5};

/// What to read from an `.h5ad` file. Defaults read everything that can be represented.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ReadOptions {
    /// Skip `raw` (default: false).
    pub skip_raw: bool,
    /// Skip `layers` (default: false).
    pub skip_layers: bool,
    /// Skip `uns` (default: false).
    pub skip_uns: bool,
    /// Genome to read from a multi-genome Cell Ranger v2 `.h5` (default: none; required
    /// only when the file has several).
    pub genome: Option<String>,
}

/// What a reader could not represent or had to change, for the caller to warn about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Elements not read, each as `key (reason)`, e.g. `varp/corr (gene × gene matrices are not kept)`.
    pub skipped: Vec<String>,
    /// Gene names that occurred more than once; they were made unique as anndata does (`A`, `A-1`, ...).
    pub duplicate_var_names: Vec<String>,
    /// Elements read with a change of type, each as `key (what changed)`, e.g. a nullable
    /// integer column with missing values read as float64 with NaN.
    pub converted: Vec<String>,
    /// The on-disk layout recognised, in words (e.g. `anndata 0.7 (__categories)`).
    pub layout: String,
}

impl ReadReport {
    /// True when nothing was skipped, renamed or converted.
    pub fn is_clean(&self) -> bool {
        self.skipped.is_empty() && self.duplicate_var_names.is_empty() && self.converted.is_empty()
    }

    /// One human-readable warning line per issue, for a command-line tool to print.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self.skipped.iter().map(|s| format!("not read: {s}")).collect();
        out.extend(self.converted.iter().map(|s| format!("converted: {s}")));
        if !self.duplicate_var_names.is_empty() {
            let shown: Vec<&str> = self.duplicate_var_names.iter().take(5).map(|s| s.as_str()).collect();
            let more = self.duplicate_var_names.len().saturating_sub(shown.len());
            out.push(format!(
                "{} gene name(s) occur more than once and were made unique (A, A-1, ...): {}{}",
                self.duplicate_var_names.len(),
                shown.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            ));
        }
        out
    }
}

/// Reads an `.h5ad` file whole (see [`read_h5ad_with_report`] to learn what was skipped).
pub fn read_h5ad(path: impl AsRef<Path>) -> Result<AnnData> {
    read_h5ad_with_report(path, &ReadOptions::default()).map(|(a, _)| a)
}

/// Reads an `.h5ad` file and reports what was skipped or renamed.
pub fn read_h5ad_with_report(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<(AnnData, ReadReport)> {
    let path = path.as_ref();
    let h = H5::open(path)?;
    let name = h.name.clone();
    guard(&name, || read_all(&h, opts))
}

pub(crate) fn read_all(h: &H5, opts: &ReadOptions) -> Result<(AnnData, ReadReport)> {
    let mut rep = ReadReport::default();
    let root_attrs = h.attrs("")?;
    if let Some(enc) = encoding(&root_attrs) {
        if enc != "anndata" {
            return Err(h.err("/", format!("unknown encoding-type '{enc}' (expected 'anndata')")));
        }
    }
    let (groups, datasets) = h.children("")?;
    let has = |k: &str| groups.iter().chain(datasets.iter()).any(|n| n == k);
    if !has("X") {
        return Err(h.err("X", "missing (no X matrix in this file)"));
    }
    rep.layout = if encoding(&root_attrs).is_some() {
        "anndata >= 0.8 (encoding-type attributes)".to_string()
    } else if datasets.iter().any(|d| d == "obs") {
        "anndata < 0.7 (compound obs/var, categories in uns)".to_string()
    } else if h.has("obs/__categories") || h.has("var/__categories") {
        "anndata 0.7 (__categories)".to_string()
    } else {
        "anndata without encoding attributes".to_string()
    };
    let legacy_cats = legacy_categories(h);
    // obs and var first: the shape of X is checked against them before X is read.
    let ((n, g), x_stored) = matrix_layout(h, "X")?;
    let mut used_cats = Vec::new();
    let obs =
        if has("obs") { read_dataframe(h, "obs", &legacy_cats, &mut used_cats, &mut rep)? } else { default_df(n) };
    let mut var =
        if has("var") { read_dataframe(h, "var", &legacy_cats, &mut used_cats, &mut rep)? } else { default_df(g) };
    check_len(h, "obs", n, obs.nrows())?;
    check_len(h, "var", g, var.nrows())?;
    let x = read_stored(h, "X", (n, g), x_stored)?;
    rep.layout.push_str(match &x {
        sclm_data::Matrix::Dense(_) => ", dense X",
        sclm_data::Matrix::Csr(_) => ", sparse X",
    });
    rep.duplicate_var_names = var.make_index_unique();

    let obsm = if has("obsm") { read_arrays(h, "obsm", n, &mut rep)? } else { BTreeMap::new() };
    let varm = if has("varm") { read_arrays(h, "varm", g, &mut rep)? } else { BTreeMap::new() };

    let mut layers = BTreeMap::new();
    if has("layers") {
        let (lg, ld) = h.children("layers")?;
        if opts.skip_layers {
            rep.skipped.extend(lg.iter().chain(ld.iter()).map(|k| format!("layers/{k} (skipped on request)")));
        } else {
            for k in lg.iter().chain(ld.iter()) {
                let key = format!("layers/{k}");
                let (shape, stored) = matrix_layout(h, &key)?;
                if shape != (n, g) {
                    return Err(h.err(&key, format!("shape {shape:?} differs from X {:?}", (n, g))));
                }
                layers.insert(k.clone(), read_stored(h, &key, shape, stored)?);
            }
        }
    }

    let raw = if opts.skip_raw {
        if has("raw") || has("raw.X") {
            rep.skipped.push("raw (skipped on request)".into());
        }
        None
    } else if has("raw") {
        read_raw(h, "raw/X", "raw/var", "raw/varm", n, &legacy_cats, &mut used_cats, &mut rep)?
    } else if has("raw.X") {
        read_raw(h, "raw.X", "raw.var", "raw.varm", n, &legacy_cats, &mut used_cats, &mut rep)?
    } else {
        None
    };

    let mut obsp = if has("obsp") { read_pairwise(h, n)? } else { BTreeMap::new() };
    if has("varp") {
        let (a, b) = h.children("varp")?;
        rep.skipped.extend(a.iter().chain(b.iter()).map(|e| format!("varp/{e} (gene × gene matrices are not kept)")));
    }

    let mut uns = BTreeMap::new();
    if has("uns") {
        if opts.skip_uns {
            rep.skipped.push("uns (skipped on request)".into());
        } else if let Value::Map(m) = read_uns(h, "uns", &mut rep)? {
            uns = m;
        }
        for c in &used_cats {
            uns.remove(&format!("{c}_categories"));
        }
    }
    move_legacy_neighbors(h, n, &mut obsp, &mut uns, &mut rep)?;
    for k in groups.iter().chain(datasets.iter()) {
        if !["X", "obs", "var", "obsm", "varm", "obsp", "varp", "layers", "raw", "raw.X", "raw.var", "raw.varm", "uns"]
            .contains(&k.as_str())
        {
            rep.skipped.push(format!("{k} (not part of AnnData)"));
        }
    }
    let a = AnnData { x, obs, var, obsm, varm, layers, obsp, raw, uns };
    a.validate().map_err(|e| data_err(&h.name, "AnnData", e))?;
    Ok((a, rep))
}

/// Reads `obsp`: every entry a dense, CSR or CSC `n × n` matrix.
pub(crate) fn read_pairwise(h: &H5, n: usize) -> Result<BTreeMap<String, Matrix>> {
    let mut out = BTreeMap::new();
    let (gs, ds) = h.children("obsp")?;
    for k in gs.iter().chain(ds.iter()) {
        let key = format!("obsp/{k}");
        let (shape, stored) = matrix_layout(h, &key)?;
        if shape != (n, n) {
            return Err(h.err(&key, format!("shape {shape:?}, expected {:?} (cells × cells)", (n, n))));
        }
        out.insert(k.clone(), read_stored(h, &key, shape, stored)?);
    }
    Ok(out)
}

/// Files written before anndata 0.7 keep the neighbour graph in
/// `uns/neighbors/{distances,connectivities}`; anndata moves those to `obsp` when reading, and
/// so does this reader (for cells × cells matrices), noting it in `rep.converted`.
pub(crate) fn move_legacy_neighbors(
    h: &H5,
    n: usize,
    obsp: &mut BTreeMap<String, Matrix>,
    uns: &mut BTreeMap<String, Value>,
    rep: &mut ReadReport,
) -> Result<()> {
    for k in ["distances", "connectivities"] {
        let key = format!("uns/neighbors/{k}");
        if !h.has(&key) {
            continue;
        }
        let Ok((shape, stored)) = matrix_layout(h, &key) else { continue };
        if shape != (n, n) {
            continue;
        }
        let Ok(m) = read_stored(h, &key, shape, stored) else { continue };
        obsp.insert(k.to_string(), m);
        if let Some(Value::Map(nb)) = uns.get_mut("neighbors") {
            nb.remove(k);
        }
        rep.skipped.retain(|s| !s.starts_with(&format!("{key} ")));
        rep.converted.push(format!("{key} (moved to obsp/{k}, as anndata does)"));
    }
    Ok(())
}

/// Legacy (pre-0.7) categories, stored in `uns` as `<col>_categories`.
pub(crate) fn legacy_categories(h: &H5) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let legacy = matches!(h.node("obs"), Some(Node::Dataset(_))) || matches!(h.node("var"), Some(Node::Dataset(_)));
    if legacy {
        if let Ok((_, uds)) = h.children("uns") {
            for d in uds {
                if let Some(col) = d.strip_suffix("_categories") {
                    if let Ok(v) = h.read_strings(&format!("uns/{d}")) {
                        out.insert(col.to_string(), v);
                    }
                }
            }
        }
    }
    out
}

fn default_df(n: usize) -> DataFrame {
    DataFrame::new((0..n).map(|i| i.to_string()).collect())
}

fn check_len(h: &H5, key: &str, expected: usize, found: usize) -> Result<()> {
    if expected != found {
        let what = if key == "obs" { "rows of X" } else { "columns of X" };
        return Err(h.err(key, format!("has {found} rows but X has {expected} {what}")));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn read_raw(
    h: &H5,
    xk: &str,
    vk: &str,
    mk: &str,
    n: usize,
    cats: &BTreeMap<String, Vec<String>>,
    used: &mut Vec<String>,
    rep: &mut ReadReport,
) -> Result<Option<Raw>> {
    if !h.has(xk) {
        rep.skipped.push(format!("{xk} (raw without X)"));
        return Ok(None);
    }
    let ((rn, rg), stored) = matrix_layout(h, xk)?;
    if rn != n {
        return Err(h.err(xk, format!("has {rn} rows but X has {n}")));
    }
    let mut var = if h.has(vk) { read_dataframe(h, vk, cats, used, rep)? } else { default_df(rg) };
    if var.nrows() != rg {
        return Err(h.err(vk, format!("has {} rows but {xk} has {rg} columns", var.nrows())));
    }
    let x = read_stored(h, xk, (rn, rg), stored)?;
    var.make_index_unique();
    let varm = if h.has(mk) { read_arrays(h, mk, rg, rep)? } else { BTreeMap::new() };
    Ok(Some(Raw { x, var, varm }))
}

/// How a matrix element is stored.
pub(crate) enum Stored {
    /// A 2-D dataset.
    Dense,
    /// A CSR (`"csr"`) or CSC (`"csc"`) group.
    Compressed(String),
}

/// Largest number of rows or columns of a sparse matrix: indices are held as 32-bit integers.
pub(crate) const MAX_SPARSE_DIM: usize = u32::MAX as usize;

/// The shape (rows, columns) and storage of a matrix element, read from its dataset shape or
/// its `shape` attribute without reading any values, so that callers can compare it with what
/// they expect before anything of that size is read or allocated.
pub(crate) fn matrix_layout(h: &H5, key: &str) -> Result<((usize, usize), Stored)> {
    match h.node(key) {
        None => Err(h.err(key, "missing")),
        Some(Node::Dataset(d)) => {
            let shape = h.shape(key, &d)?;
            if shape.len() != 2 {
                return Err(h.err(key, format!("expected a 2-D matrix, found shape {shape:?}")));
            }
            let a = h.attrs(key)?;
            if let Some(enc) = encoding(&a) {
                if enc != "array" {
                    return Err(h.err(key, format!("unknown encoding-type '{enc}' for a dense matrix")));
                }
            }
            Ok(((shape[0], shape[1]), Stored::Dense))
        }
        Some(Node::Group(_)) => {
            let a = h.attrs(key)?;
            let (fmt, shape) = if let Some(enc) = encoding(&a) {
                let f = match enc.as_str() {
                    "csr_matrix" => "csr",
                    "csc_matrix" => "csc",
                    other => return Err(h.err(key, format!("unknown encoding-type '{other}'"))),
                };
                (f.to_string(), a.get("shape").and_then(|v| v.to_i64s()))
            } else if let Some(f) = attr_str(&a, "h5sparse_format") {
                (f, a.get("h5sparse_shape").and_then(|v| v.to_i64s()))
            } else {
                return Err(h.err(key, "group without encoding-type: not a matrix"));
            };
            let shape = match shape.as_deref() {
                Some(&[r, c]) if r >= 0 && c >= 0 => (r as usize, c as usize),
                _ => return Err(h.err(key, "sparse matrix without a valid 2-D 'shape' attribute")),
            };
            if shape.0 > MAX_SPARSE_DIM || shape.1 > MAX_SPARSE_DIM {
                return Err(h.err(
                    key,
                    format!(
                        "shape {} x {} is larger than the {MAX_SPARSE_DIM} rows or columns supported (32-bit indices)",
                        shape.0, shape.1
                    ),
                ));
            }
            Ok((shape, Stored::Compressed(fmt)))
        }
    }
}

/// Reads a matrix element of the given `shape` and storage (see [`matrix_layout`]).
pub(crate) fn read_stored(h: &H5, key: &str, shape: (usize, usize), stored: Stored) -> Result<Matrix> {
    match stored {
        Stored::Dense => {
            let data = h.read_f32(key)?;
            Ok(Matrix::Dense(Dense::from_vec(shape.0, shape.1, data).map_err(|e| data_err(&h.name, key, e))?))
        }
        Stored::Compressed(fmt) => Ok(Matrix::Csr(read_compressed(h, key, &fmt, shape)?)),
    }
}

/// Reads `data`/`indices`/`indptr` under `key` as CSR (`fmt` = "csr") or CSC converted to CSR.
/// The structure is checked (see [`check_compressed`]) before it is used.
pub(crate) fn read_compressed(h: &H5, key: &str, fmt: &str, shape: (usize, usize)) -> Result<CsrMatrix> {
    let (major, minor) = match fmt {
        "csr" => shape,
        "csc" => (shape.1, shape.0),
        other => return Err(h.err(key, format!("unknown sparse format '{other}'"))),
    };
    let ik = format!("{key}/indptr");
    let indptr = to_usize(h, &ik, h.read_i64(&ik)?)?;
    let csc = fmt == "csc";
    check_indptr(h, key, csc, major, &indptr)?;
    let data = h.read_f32(&format!("{key}/data"))?;
    let indices = h.read_indices(&format!("{key}/indices"), None)?;
    check_compressed(h, key, csc, minor, &indptr, &indices, data.len())?;
    let m = CsrMatrix::new(major, minor, indptr, indices, data).map_err(|e| data_err(&h.name, key, e))?;
    Ok(if csc { m.transpose() } else { m })
}

/// Words for the major and minor axes of a compressed matrix.
fn axes(csc: bool) -> (&'static str, &'static str) {
    if csc {
        ("column", "row")
    } else {
        ("row", "column")
    }
}

/// Checks the row (CSR) or column (CSC, `csc`) pointers of the matrix at `key`: `major + 1`
/// of them, starting at 0 and never decreasing.
pub(crate) fn check_indptr(h: &H5, key: &str, csc: bool, major: usize, indptr: &[usize]) -> Result<()> {
    let ik = format!("{key}/indptr");
    let (maj, _) = axes(csc);
    if major.checked_add(1) != Some(indptr.len()) {
        return Err(h.err(
            &ik,
            format!(
                "has {} entries, expected {} (one per {maj} of the {major}, plus one)",
                indptr.len(),
                major as u128 + 1
            ),
        ));
    }
    if indptr[0] != 0 {
        return Err(h.err(&ik, format!("starts at {}, expected 0", indptr[0])));
    }
    if let Some(i) = indptr.windows(2).position(|w| w[1] < w[0]) {
        return Err(h.err(
            &ik,
            format!(
                "decreases at {maj} {i} (from {} to {}): the pointers must never decrease",
                indptr[i],
                indptr[i + 1]
            ),
        ));
    }
    Ok(())
}

/// Checks that checked pointers `indptr` (see [`check_indptr`]) end at the number of stored
/// values (`indices` and `n_data` values of `data`), and that every index is below `minor`
/// (the number of columns of a CSR matrix, of rows of a CSC one).
pub(crate) fn check_compressed(
    h: &H5,
    key: &str,
    csc: bool,
    minor: usize,
    indptr: &[usize],
    indices: &[u32],
    n_data: usize,
) -> Result<()> {
    let last = indptr.last().copied().unwrap_or(0);
    if indices.len() != n_data {
        return Err(
            h.err(&format!("{key}/indices"), format!("has {} values but {key}/data has {n_data}", indices.len()))
        );
    }
    if last != n_data {
        return Err(h.err(
            &format!("{key}/indptr"),
            format!("ends at {last} but {key}/data and {key}/indices hold {n_data} values"),
        ));
    }
    if let Some(k) = indices.iter().position(|&c| c as usize >= minor) {
        // indptr[0] = 0 <= k: the row (column) holding value k is found.
        let p = indptr.partition_point(|&p| p <= k).saturating_sub(1);
        return Err(index_out_of_range(h, key, csc, minor, p, indices[k]));
    }
    Ok(())
}

/// The error for index `c` (`>= minor`) stored in row (CSR) or column (CSC) `p`.
pub(crate) fn index_out_of_range(h: &H5, key: &str, csc: bool, minor: usize, p: usize, c: u32) -> IoError {
    let (maj, min) = axes(csc);
    h.err(&format!("{key}/indices"), format!("{min} index {c} in {maj} {p} is out of range ({minor} {min}s)"))
}

pub(crate) fn to_usize(h: &H5, key: &str, v: Vec<i64>) -> Result<Vec<usize>> {
    v.into_iter().map(|x| usize::try_from(x).map_err(|_| h.err(key, format!("negative offset {x}")))).collect()
}

fn values_to_column(v: Values) -> Column {
    match v {
        Values::F32(x) => Column::F32(x),
        Values::F64(x) => Column::F64(x),
        Values::I32(x) => Column::I32(x),
        Values::I64(x) => Column::I64(x),
        Values::Bool(x) => Column::Bool(x),
        Values::Str(x) => Column::Str(x),
    }
}

fn vals_len(v: &Values) -> usize {
    match v {
        Values::F32(x) => x.len(),
        Values::F64(x) => x.len(),
        Values::I32(x) => x.len(),
        Values::I64(x) => x.len(),
        Values::Bool(x) => x.len(),
        Values::Str(x) => x.len(),
    }
}

fn codes_of(v: Values) -> Option<Vec<i32>> {
    match v {
        Values::I32(x) => Some(x),
        Values::I64(x) => Some(x.into_iter().map(|c| c as i32).collect()),
        _ => None,
    }
}

fn categorical(h: &H5, key: &str, codes: Vec<i32>, categories: Vec<String>, ordered: bool) -> Result<Column> {
    if let Some(&c) = codes.iter().find(|&&c| c < -1 || c >= categories.len() as i32) {
        return Err(h.err(key, format!("category code {c} out of range ({} categories)", categories.len())));
    }
    Ok(Column::Categorical { codes, categories, ordered })
}

/// Reads a dataframe: a group (current, 0.7) or a compound dataset (pre-0.7).
pub(crate) fn read_dataframe(
    h: &H5,
    key: &str,
    legacy_cats: &BTreeMap<String, Vec<String>>,
    used_cats: &mut Vec<String>,
    rep: &mut ReadReport,
) -> Result<DataFrame> {
    match h.node(key) {
        None => Err(h.err(key, "missing")),
        Some(Node::Dataset(d)) => {
            let dt = d.datatype().map_err(|e| h.err(key, e))?;
            let hdf5_pure::Datatype::Compound { size, members } = dt else {
                return Err(h.err(key, "expected a dataframe (group or compound dataset)"));
            };
            let raw = d.read_raw().map_err(|e| h.err(key, e))?;
            let mut df = DataFrame::default();
            let mut index = None;
            for m in &members {
                let ck = format!("{key}/{}", m.name);
                let Some((vals, width)) = compound_field(&raw, size as usize, m.byte_offset as usize, &m.datatype)
                else {
                    rep.skipped.push(format!("{ck} (unsupported column type)"));
                    continue;
                };
                if width != 1 {
                    rep.skipped.push(format!("{ck} (array-valued column)"));
                    continue;
                }
                if m.name == "index" && index.is_none() {
                    if let Values::Str(s) = vals {
                        index = Some(s);
                        continue;
                    }
                }
                let col = match (legacy_cats.get(&m.name), codes_of(vals.clone())) {
                    (Some(cats), Some(codes)) => {
                        used_cats.push(m.name.clone());
                        categorical(h, &ck, codes, cats.clone(), false)?
                    }
                    _ => values_to_column(vals),
                };
                df.columns.push((m.name.clone(), col));
            }
            let n = raw.len() / (size as usize).max(1);
            df.index = index.unwrap_or_else(|| (0..n).map(|i| i.to_string()).collect());
            Ok(df)
        }
        Some(Node::Group(_)) => {
            let a = h.attrs(key)?;
            if let Some(enc) = encoding(&a) {
                if enc != "dataframe" {
                    return Err(h.err(key, format!("unknown encoding-type '{enc}' (expected 'dataframe')")));
                }
            }
            let (gs, ds) = h.children(key)?;
            let index_key = attr_str(&a, "_index").unwrap_or_else(|| "_index".into());
            let order = match attr_strings(&a, "column-order") {
                Some(o) => o,
                None => {
                    let mut all: Vec<String> = gs
                        .iter()
                        .chain(ds.iter())
                        .filter(|c| **c != index_key && *c != "__categories")
                        .cloned()
                        .collect();
                    all.sort();
                    all
                }
            };
            let ik = format!("{key}/{index_key}");
            let index = if ds.contains(&index_key) {
                match h.read_values(&ik)? {
                    Values::Str(s) => s,
                    other => values_to_column(other).to_labels(),
                }
            } else {
                return Err(h.err(&ik, "missing dataframe index"));
            };
            let mut df = DataFrame::new(index);
            for c in order {
                let ck = format!("{key}/{c}");
                match h.node(&ck) {
                    None => return Err(h.err(&ck, "listed in column-order but missing")),
                    Some(Node::Dataset(_)) => {
                        let vals = h.read_values(&ck)?;
                        let cat_key = format!("{key}/__categories/{c}");
                        let col = if h.has(&cat_key) {
                            let cats = h.read_strings(&cat_key)?;
                            let ordered = attr_bool(&h.attrs(&cat_key)?, "ordered").unwrap_or(false);
                            let codes =
                                codes_of(vals).ok_or_else(|| h.err(&ck, "categorical codes are not integers"))?;
                            categorical(h, &ck, codes, cats, ordered)?
                        } else {
                            values_to_column(vals)
                        };
                        df.columns.push((c, col));
                    }
                    Some(Node::Group(_)) => {
                        let ca = h.attrs(&ck)?;
                        match encoding(&ca).as_deref() {
                            Some("categorical") => {
                                let codes = codes_of(h.read_values(&format!("{ck}/codes"))?)
                                    .ok_or_else(|| h.err(&format!("{ck}/codes"), "codes are not integers"))?;
                                let cats = match h.read_values(&format!("{ck}/categories"))? {
                                    Values::Str(s) => s,
                                    other => {
                                        rep.converted.push(format!("{ck} (non-string categories read as strings)"));
                                        values_to_column(other).to_labels()
                                    }
                                };
                                let ordered = attr_bool(&ca, "ordered").unwrap_or(false);
                                let col = categorical(h, &ck, codes, cats, ordered)?;
                                df.columns.push((c, col));
                            }
                            Some(e @ ("nullable-integer" | "nullable-boolean" | "nullable-string-array")) => {
                                let vals = h.read_values(&format!("{ck}/values"))?;
                                let mask = match h.read_values(&format!("{ck}/mask"))? {
                                    Values::Bool(m) => m,
                                    _ => return Err(h.err(&format!("{ck}/mask"), "mask is not boolean")),
                                };
                                if mask.len() != vals_len(&vals) {
                                    return Err(h.err(&ck, "mask and values differ in length"));
                                }
                                let col = values_to_column(vals);
                                if !mask.iter().any(|&m| m) {
                                    df.columns.push((c, col));
                                } else if let Column::Str(mut v) = col {
                                    for (x, &m) in v.iter_mut().zip(&mask) {
                                        if m {
                                            x.clear();
                                        }
                                    }
                                    rep.converted
                                        .push(format!("{ck} ({e} with missing values: missing became empty strings)"));
                                    df.columns.push((c, Column::Str(v)));
                                } else if let Some(f) = col.to_f64() {
                                    let f =
                                        f.into_iter().zip(&mask).map(|(v, &m)| if m { f64::NAN } else { v }).collect();
                                    rep.converted
                                        .push(format!("{ck} ({e} with missing values: read as float64 with NaN)"));
                                    df.columns.push((c, Column::F64(f)));
                                } else {
                                    rep.skipped.push(format!("{ck} ({e} of unsupported element type)"));
                                }
                            }
                            Some(other) => rep.skipped.push(format!("{ck} (unsupported encoding-type '{other}')")),
                            None => rep.skipped.push(format!("{ck} (group without encoding-type)")),
                        }
                    }
                }
            }
            Ok(df)
        }
    }
}

/// Reads `obsm`/`varm`: a dict group of 2-D arrays, or a compound dataset (pre-0.7).
pub(crate) fn read_arrays(h: &H5, key: &str, nrows: usize, rep: &mut ReadReport) -> Result<BTreeMap<String, Array2>> {
    let mut out = BTreeMap::new();
    match h.node(key) {
        None => {}
        Some(Node::Dataset(d)) => {
            let dt = d.datatype().map_err(|e| h.err(key, e))?;
            let hdf5_pure::Datatype::Compound { size, members } = dt else {
                rep.skipped.push(format!("{key} (not a mapping)"));
                return Ok(out);
            };
            let raw = d.read_raw().map_err(|e| h.err(key, e))?;
            for m in &members {
                let ck = format!("{key}/{}", m.name);
                let is32 = matches!(&m.datatype, hdf5_pure::Datatype::Array { base_type, .. } if matches!(**base_type, hdf5_pure::Datatype::FloatingPoint { size: 4, .. }));
                match compound_field(&raw, size as usize, m.byte_offset as usize, &m.datatype) {
                    Some((Values::F64(v), w)) => {
                        let n = v.len() / w.max(1);
                        let arr = if is32 {
                            Array2::F32(Dense { nrows: n, ncols: w, data: v.into_iter().map(|x| x as f32).collect() })
                        } else {
                            Array2::F64(Dense { nrows: n, ncols: w, data: v })
                        };
                        check_rows(h, &ck, nrows, arr.shape().0)?;
                        out.insert(m.name.clone(), arr);
                    }
                    _ => rep.skipped.push(format!("{ck} (unsupported type)")),
                }
            }
        }
        Some(Node::Group(_)) => {
            let (gs, ds) = h.children(key)?;
            for g in gs {
                let e = encoding(&h.attrs(&format!("{key}/{g}"))?).unwrap_or_else(|| "group".into());
                rep.skipped.push(format!("{key}/{g} ({e} entries are not kept)"));
            }
            for d in ds {
                let ck = format!("{key}/{d}");
                let ds = h.dataset(&ck)?;
                let shape = h.shape(&ck, &ds)?;
                let (r, c) = match shape.as_slice() {
                    [r, c] => (*r, *c),
                    [r] => (*r, 1),
                    _ => {
                        rep.skipped.push(format!("{ck} (array of shape {shape:?})"));
                        continue;
                    }
                };
                let e = |e: hdf5_pure::Error| h.err(&ck, format!("cannot read: {e}"));
                let arr = match ds.dtype().map_err(|x| h.err(&ck, x))? {
                    DType::F32 => Array2::F32(Dense { nrows: r, ncols: c, data: ds.read_f32().map_err(e)? }),
                    DType::F64 => Array2::F64(Dense { nrows: r, ncols: c, data: ds.read_f64().map_err(e)? }),
                    DType::I8 | DType::I16 | DType::I32 | DType::I64 | DType::U8 | DType::U16 | DType::U32 => {
                        Array2::I64(Dense { nrows: r, ncols: c, data: ds.read_i64().map_err(e)? })
                    }
                    other => {
                        rep.skipped.push(format!("{ck} (element type {other})"));
                        continue;
                    }
                };
                check_rows(h, &ck, nrows, r)?;
                if arr_len(&arr) != r * c {
                    return Err(h.err(&ck, "data length does not match its shape"));
                }
                out.insert(d, arr);
            }
        }
    }
    Ok(out)
}

fn arr_len(a: &Array2) -> usize {
    match a {
        Array2::F32(d) => d.data.len(),
        Array2::F64(d) => d.data.len(),
        Array2::I64(d) => d.data.len(),
    }
}

fn check_rows(h: &H5, key: &str, expected: usize, found: usize) -> Result<()> {
    if expected != found {
        return Err(h.err(key, format!("has {found} rows, expected {expected}")));
    }
    Ok(())
}

/// Reads an `uns` element into a [`Value`]; what cannot be represented is recorded and left out.
pub(crate) fn read_uns(h: &H5, key: &str, rep: &mut ReadReport) -> Result<Value> {
    match h.node(key) {
        None => Err(h.err(key, "missing")),
        Some(Node::Group(_)) => {
            let a = h.attrs(key)?;
            match encoding(&a).as_deref() {
                None | Some("dict") => {}
                Some(other) => {
                    rep.skipped.push(format!("{key} ({other} in uns is not kept)"));
                    return Ok(Value::Map(BTreeMap::new()));
                }
            }
            if a.contains_key("h5sparse_format") {
                rep.skipped.push(format!("{key} (sparse matrix in uns is not kept)"));
                return Ok(Value::Map(BTreeMap::new()));
            }
            let (gs, ds) = h.children(key)?;
            let mut m = BTreeMap::new();
            for g in gs {
                let ck = format!("{key}/{g}");
                let ga = h.attrs(&ck)?;
                let enc = encoding(&ga);
                if matches!(enc.as_deref(), None | Some("dict")) && !ga.contains_key("h5sparse_format") {
                    m.insert(g, read_uns(h, &ck, rep)?);
                } else {
                    let why = enc.unwrap_or_else(|| "sparse matrix".into());
                    rep.skipped.push(format!("{ck} ({why} in uns is not kept)"));
                }
            }
            for d in ds {
                let ck = format!("{key}/{d}");
                if let Some(v) = read_uns_dataset(h, &ck, rep)? {
                    m.insert(d, v);
                }
            }
            Ok(Value::Map(m))
        }
        Some(Node::Dataset(_)) => Ok(read_uns_dataset(h, key, rep)?.unwrap_or(Value::Map(BTreeMap::new()))),
    }
}

fn read_uns_dataset(h: &H5, key: &str, rep: &mut ReadReport) -> Result<Option<Value>> {
    let d = h.dataset(key)?;
    let shape = h.shape(key, &d)?;
    let scalar = shape.is_empty();
    // Legacy files store string scalars as 1-element fixed-length arrays; anndata reads them as str.
    let legacy_str = shape == [1] && matches!(d.dtype(), Ok(DType::String)) && encoding(&h.attrs(key)?).is_none();
    let scalar = scalar || legacy_str;
    let vals = match h.read_values(key) {
        Ok(v) => v,
        Err(_) => {
            rep.skipped.push(format!("{key} (element type not supported in uns)"));
            return Ok(None);
        }
    };
    Ok(Some(match (vals, scalar) {
        (Values::Str(mut s), true) => Value::Str(s.pop().unwrap_or_default()),
        (Values::Str(s), false) => {
            if shape.len() != 1 {
                rep.skipped.push(format!("{key} (multi-dimensional string array)"));
                return Ok(None);
            }
            Value::Strings(s)
        }
        (Values::Bool(b), true) => Value::Bool(b.first().copied().unwrap_or(false)),
        (Values::Bool(_), false) => {
            rep.skipped.push(format!("{key} (boolean array in uns is not kept)"));
            return Ok(None);
        }
        (Values::F32(v), true) => Value::F64(v.first().copied().unwrap_or(f32::NAN) as f64),
        (Values::F64(v), true) => Value::F64(v.first().copied().unwrap_or(f64::NAN)),
        (Values::I32(v), true) => Value::I64(v.first().copied().unwrap_or(0) as i64),
        (Values::I64(v), true) => Value::I64(v.first().copied().unwrap_or(0)),
        (Values::F32(v), false) => Value::F64Array { shape, data: v.into_iter().map(|x| x as f64).collect() },
        (Values::F64(v), false) => Value::F64Array { shape, data: v },
        (Values::I32(v), false) => Value::I64Array { shape, data: v.into_iter().map(|x| x as i64).collect() },
        (Values::I64(v), false) => Value::I64Array { shape, data: v },
    }))
}
