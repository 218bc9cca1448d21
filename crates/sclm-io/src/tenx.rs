//! Cell Ranger outputs: Matrix Market directories (v2 and v3) and HDF5 matrices (v2 and v3).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use sclm_data::{AnnData, Column, CsrMatrix, DataFrame, Matrix};

use crate::error::{data_err, fmt_err, fname, guard, io_err, IoError, Result};
use crate::h5::{Node, H5};
use crate::read::{check_compressed, check_indptr, to_usize, ReadReport, MAX_SPARSE_DIM};

fn open_text(path: &Path) -> Result<Box<dyn BufRead>> {
    let f = std::fs::File::open(path).map_err(|e| io_err(&fname(path), e))?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    Ok(if gz {
        Box::new(BufReader::with_capacity(1 << 20, flate2::read::MultiGzDecoder::new(f)))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, f))
    })
}

fn find(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// True when `dir` holds a Cell Ranger Matrix Market matrix (`matrix.mtx` or `matrix.mtx.gz`).
pub fn is_10x_mtx_dir(dir: &Path) -> bool {
    find(dir, &["matrix.mtx.gz", "matrix.mtx"]).is_some()
}

fn read_tsv(path: &Path) -> Result<Vec<Vec<String>>> {
    let file = fname(path);
    let mut out = Vec::new();
    for (i, line) in open_text(path)?.lines().enumerate() {
        let line = line.map_err(|e| fmt_err(&file, &format!("line {}", i + 1), e))?;
        if line.is_empty() {
            continue;
        }
        out.push(line.split('\t').map(|s| s.to_string()).collect());
    }
    Ok(out)
}

/// Reads a Cell Ranger `filtered_feature_bc_matrix/` (v3: `matrix.mtx.gz`, `features.tsv.gz`,
/// `barcodes.tsv.gz`) or `filtered_gene_bc_matrices/<genome>/` (v2: `matrix.mtx`, `genes.tsv`,
/// `barcodes.tsv`) directory, compressed or not. The genes × cells matrix is transposed to
/// cells × genes; `var` is indexed by gene symbols made unique (as scanpy's
/// `read_10x_mtx(var_names='gene_symbols')`), with columns `gene_ids` and, for v3, `feature_types`.
pub fn read_10x_mtx(dir: impl AsRef<Path>) -> Result<(AnnData, ReadReport)> {
    let dir = dir.as_ref();
    let dname = fname(dir);
    let mtx = find(dir, &["matrix.mtx.gz", "matrix.mtx"]).ok_or_else(|| IoError::NotReadable {
        file: dname.clone(),
        msg: "no matrix.mtx or matrix.mtx.gz in this directory".into(),
    })?;
    let feats = find(dir, &["features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv"]).ok_or_else(|| {
        IoError::NotReadable {
            file: dname.clone(),
            msg: "no features.tsv(.gz) or genes.tsv(.gz) in this directory".into(),
        }
    })?;
    let bcs = find(dir, &["barcodes.tsv.gz", "barcodes.tsv"]).ok_or_else(|| IoError::NotReadable {
        file: dname.clone(),
        msg: "no barcodes.tsv(.gz) in this directory".into(),
    })?;
    let feats_rows = read_tsv(&feats)?;
    let barcodes: Vec<String> = read_tsv(&bcs)?.into_iter().map(|mut r| r.swap_remove(0)).collect();
    let ffile = fname(&feats);
    // The sizes announced by the matrix header are checked against the feature and barcode
    // files before anything of their size is allocated.
    let genes_by_cells = read_mtx_checked(&mtx, |nr, nc| {
        if feats_rows.len() != nr {
            return Err(fmt_err(
                &ffile,
                "rows",
                format!("{} features but the matrix has {nr} rows (genes)", feats_rows.len()),
            ));
        }
        if barcodes.len() != nc {
            return Err(fmt_err(
                &fname(&bcs),
                "rows",
                format!("{} barcodes but the matrix has {nc} columns (cells)", barcodes.len()),
            ));
        }
        Ok(())
    })?;
    let x = genes_by_cells.transpose();
    let mut ids = Vec::with_capacity(x.ncols);
    let mut names = Vec::with_capacity(x.ncols);
    let mut types = Vec::with_capacity(x.ncols);
    let v3 = feats_rows.iter().all(|r| r.len() >= 3);
    for (i, r) in feats_rows.into_iter().enumerate() {
        let mut it = r.into_iter();
        let id = it.next().unwrap_or_default();
        let name = it
            .next()
            .ok_or_else(|| fmt_err(&ffile, &format!("line {}", i + 1), "expected gene id and name columns"))?;
        ids.push(id);
        names.push(name);
        types.push(it.next().unwrap_or_default());
    }
    let mut var = DataFrame::new(names);
    let mut rep = ReadReport {
        duplicate_var_names: var.make_index_unique(),
        layout: "Cell Ranger matrix directory (Matrix Market)".to_string(),
        ..Default::default()
    };
    var.columns.push(("gene_ids".into(), Column::Str(ids)));
    if v3 {
        var.columns.push(("feature_types".into(), Column::Str(types)));
    }
    rep.skipped.clear();
    let a = AnnData { obs: DataFrame::new(barcodes), var, ..AnnData::new(Matrix::Csr(x)) };
    a.validate().map_err(|e| data_err(&dname, "AnnData", e))?;
    Ok((a, rep))
}

/// Largest number of rows or columns of a Matrix Market matrix: row and column indices are
/// held as 32-bit integers.
const MAX_MTX_DIM: usize = u32::MAX as usize;
/// Entries reserved before reading them; past this the vectors grow with the entries actually
/// read, so that a header announcing more entries than the file holds allocates nothing of
/// that size.
const MAX_MTX_RESERVE: usize = 1 << 20;

/// Reads a Matrix Market coordinate file (`integer`, `real` or `pattern`, `general`) as CSR,
/// rows as in the file. Duplicate entries are summed.
///
/// The size line is checked before anything is allocated: rows and columns must fit 32-bit
/// indices (at most 4,294,967,295) and the announced number of entries must not exceed
/// rows × columns; every entry must lie in the matrix (indices are 1-based), and the file must
/// hold exactly the announced number of entries.
pub fn read_mtx(path: impl AsRef<Path>) -> Result<CsrMatrix> {
    read_mtx_checked(path.as_ref(), |_, _| Ok(()))
}

/// [`read_mtx`], with `check(rows, cols)` run on the sizes of the header before the entries are
/// read (a caller that knows the expected sizes refuses a wrong header before allocating).
fn read_mtx_checked(path: &Path, check: impl FnOnce(usize, usize) -> Result<()>) -> Result<CsrMatrix> {
    let file = fname(path);
    let mut r = open_text(path)?;
    let mut line = String::new();
    let mut lineno = 0usize;
    let mut next = |r: &mut Box<dyn BufRead>, line: &mut String| -> Result<bool> {
        line.clear();
        lineno += 1;
        let n = r.read_line(line).map_err(|e| fmt_err(&file, &format!("line {lineno}"), e))?;
        Ok(n > 0)
    };
    if !next(&mut r, &mut line)? {
        return Err(IoError::NotReadable { file, msg: "empty file".into() });
    }
    let head: Vec<String> = line.split_whitespace().map(|s| s.to_ascii_lowercase()).collect();
    if head.len() < 5 || head[0] != "%%matrixmarket" || head[1] != "matrix" || head[2] != "coordinate" {
        return Err(fmt_err(
            &file,
            "line 1",
            "not a Matrix Market coordinate matrix (expected '%%MatrixMarket matrix coordinate ...')",
        ));
    }
    let pattern = match head[3].as_str() {
        "integer" | "real" => false,
        "pattern" => true,
        other => return Err(fmt_err(&file, "line 1", format!("unsupported field type '{other}'"))),
    };
    if head[4] != "general" {
        return Err(fmt_err(&file, "line 1", format!("unsupported symmetry '{}'", head[4])));
    }
    let mut ln = 1usize;
    let (nr, nc, nnz) = loop {
        if !next(&mut r, &mut line)? {
            return Err(fmt_err(&file, "header", "missing size line"));
        }
        ln += 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('%') {
            continue;
        }
        let key = format!("line {ln}");
        let bad = || {
            fmt_err(
                &file,
                &key,
                format!("bad size line '{t}' (expected three non-negative integers: rows, columns, entries)"),
            )
        };
        let v: Vec<usize> = t
            .split_whitespace()
            .map(|x| x.parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad())?;
        let [nr, nc, nnz] = v[..] else { return Err(bad()) };
        for (what, n) in [("rows", nr), ("columns", nc)] {
            if n > MAX_MTX_DIM {
                return Err(fmt_err(
                    &file,
                    &key,
                    format!("size line announces {n} {what}, more than the {MAX_MTX_DIM} supported (32-bit indices)"),
                ));
            }
        }
        // Both factors fit 32 bits: the product cannot overflow 64 bits.
        if nnz as u64 > nr as u64 * nc as u64 {
            return Err(fmt_err(
                &file,
                &key,
                format!(
                    "size line announces {nnz} entries, more than the {} of a {nr} x {nc} matrix",
                    nr as u64 * nc as u64
                ),
            ));
        }
        break (nr, nc, nnz);
    };
    check(nr, nc)?;
    let reserve = nnz.min(MAX_MTX_RESERVE);
    let mut rows = Vec::with_capacity(reserve);
    let mut cols = Vec::with_capacity(reserve);
    let mut vals = Vec::with_capacity(reserve);
    while next(&mut r, &mut line)? {
        ln += 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('%') {
            continue;
        }
        let bad = || fmt_err(&file, &format!("line {ln}"), format!("bad entry '{t}'"));
        let mut it = t.split_whitespace();
        let i: usize = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        let j: usize = it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        let v: f32 = if pattern { 1.0 } else { it.next().and_then(|x| x.parse().ok()).ok_or_else(bad)? };
        if i == 0 || j == 0 || i > nr || j > nc {
            return Err(fmt_err(
                &file,
                &format!("line {ln}"),
                format!("entry ({i}, {j}) outside the {nr} x {nc} matrix (indices are 1-based)"),
            ));
        }
        if rows.len() == nnz {
            return Err(fmt_err(
                &file,
                &format!("line {ln}"),
                format!("more entries than the {nnz} announced by the size line"),
            ));
        }
        // i <= nr <= u32::MAX and j <= nc <= u32::MAX: the conversions are exact.
        rows.push((i - 1) as u32);
        cols.push((j - 1) as u32);
        vals.push(v);
    }
    if rows.len() != nnz {
        return Err(fmt_err(
            &file,
            "entries",
            format!("header announces {nnz} entries, found {} (truncated file?)", rows.len()),
        ));
    }
    triplets_to_csr(nr, nc, &rows, &cols, &vals).map_err(|e| data_err(&file, "matrix", e))
}

/// Builds CSR from (row, col, value) triplets, summing duplicates. Every row index is `< nr`.
fn triplets_to_csr(nr: usize, nc: usize, rows: &[u32], cols: &[u32], vals: &[f32]) -> sclm_data::Result<CsrMatrix> {
    let mut counts = vec![0usize; nr + 1];
    for &r in rows {
        counts[r as usize + 1] += 1;
    }
    for i in 0..nr {
        counts[i + 1] += counts[i];
    }
    let mut next = counts.clone();
    let mut idx = vec![0u32; rows.len()];
    let mut dat = vec![0f32; rows.len()];
    for k in 0..rows.len() {
        let p = &mut next[rows[k] as usize];
        idx[*p] = cols[k];
        dat[*p] = vals[k];
        *p += 1;
    }
    // Sort each row and sum duplicates.
    let mut indptr = Vec::with_capacity(nr + 1);
    indptr.push(0);
    let mut oi: Vec<u32> = Vec::with_capacity(idx.len());
    let mut od: Vec<f32> = Vec::with_capacity(idx.len());
    let mut buf: Vec<(u32, f32)> = Vec::new();
    for i in 0..nr {
        buf.clear();
        buf.extend(idx[counts[i]..counts[i + 1]].iter().copied().zip(dat[counts[i]..counts[i + 1]].iter().copied()));
        buf.sort_unstable_by_key(|p| p.0);
        for &(c, v) in &buf {
            match (oi.last(), od.last_mut()) {
                (Some(&last), Some(sum)) if oi.len() > indptr[i] && last == c => *sum += v,
                _ => {
                    oi.push(c);
                    od.push(v);
                }
            }
        }
        indptr.push(oi.len());
    }
    CsrMatrix::new(nr, nc, indptr, oi, od)
}

/// Reads a Cell Ranger HDF5 matrix: v3 (`/matrix` with `features/`) or v2 (one group per
/// genome). A v2 file with several genomes needs `genome`; without it the error lists them.
/// `var` is indexed by gene symbols made unique, with `gene_ids` (and for v3 `feature_types`
/// and `genome`) columns, as scanpy's `read_10x_h5`.
pub fn read_10x_h5(path: impl AsRef<Path>, genome: Option<&str>) -> Result<(AnnData, ReadReport)> {
    let h = H5::open(path.as_ref())?;
    let name = h.name.clone();
    guard(&name, || read_10x_h5_inner(&h, genome))
}

/// True when an HDF5 file looks like a Cell Ranger matrix.
pub(crate) fn looks_like_10x_h5(h: &H5) -> bool {
    if h.has("matrix/barcodes") {
        return true;
    }
    h.children("")
        .map(|(gs, _)| gs.iter().any(|g| h.has(&format!("{g}/barcodes")) && h.has(&format!("{g}/gene_names"))))
        .unwrap_or(false)
}

pub(crate) fn read_10x_h5_inner(h: &H5, genome: Option<&str>) -> Result<(AnnData, ReadReport)> {
    let mut rep = ReadReport::default();
    let v3 = matches!(h.node("matrix"), Some(Node::Group(_)));
    rep.layout =
        if v3 { "Cell Ranger HDF5, v3 (matrix)" } else { "Cell Ranger HDF5, v2 (matrices/<genome>)" }.to_string();
    let g: String = if v3 {
        "matrix".into()
    } else {
        let (gs, _) = h.children("")?;
        let genomes: Vec<String> = gs.into_iter().filter(|g| h.has(&format!("{g}/barcodes"))).collect();
        match genome {
            Some(want) => {
                if !genomes.iter().any(|g| g == want) {
                    return Err(h.err(want, format!("no such genome; the file has: {}", genomes.join(", "))));
                }
                want.to_string()
            }
            None if genomes.len() == 1 => genomes[0].clone(),
            None if genomes.is_empty() => {
                return Err(h.err("/", "not a Cell Ranger matrix (no 'matrix' group nor genome groups)"))
            }
            None => return Err(h.err("/", format!("several genomes, choose one: {}", genomes.join(", ")))),
        }
    };
    let shape = h.read_i64(&format!("{g}/shape"))?;
    let (ngenes, ncells) = match shape.as_slice() {
        [a, b] if *a >= 0 && *b >= 0 => (*a as usize, *b as usize),
        _ => return Err(h.err(&format!("{g}/shape"), format!("expected 2 non-negative values, found {shape:?}"))),
    };
    if ngenes > MAX_SPARSE_DIM || ncells > MAX_SPARSE_DIM {
        return Err(h.err(
            &format!("{g}/shape"),
            format!(
                "{ngenes} x {ncells} is larger than the {MAX_SPARSE_DIM} genes or cells supported (32-bit indices)"
            ),
        ));
    }
    // Compressed by column (cell): one pointer per cell, gene indices below ngenes.
    let indptr = to_usize(h, &format!("{g}/indptr"), h.read_i64(&format!("{g}/indptr"))?)?;
    check_indptr(h, &g, true, ncells, &indptr)?;
    let data = h.read_f32(&format!("{g}/data"))?;
    let indices = h.read_indices(&format!("{g}/indices"), None)?;
    check_compressed(h, &g, true, ngenes, &indptr, &indices, data.len())?;
    // Stored genes x cells, compressed by column (cell): the same arrays are cells x genes CSR.
    let x = CsrMatrix::new(ncells, ngenes, indptr, indices, data).map_err(|e| data_err(&h.name, &g, e))?;
    let barcodes = h.read_strings(&format!("{g}/barcodes"))?;
    let (ids, names, extra) = if v3 {
        let f = format!("{g}/features");
        let ids = h.read_strings(&format!("{f}/id"))?;
        let names = h.read_strings(&format!("{f}/name"))?;
        let mut extra = vec![];
        for (col, key) in [("feature_types", "feature_type"), ("genome", "genome")] {
            let k = format!("{f}/{key}");
            if h.has(&k) {
                extra.push((col.to_string(), Column::Str(h.read_strings(&k)?)));
            }
        }
        (ids, names, extra)
    } else {
        (h.read_strings(&format!("{g}/genes"))?, h.read_strings(&format!("{g}/gene_names"))?, vec![])
    };
    for (k, n, want) in
        [("barcodes", barcodes.len(), ncells), ("gene ids", ids.len(), ngenes), ("gene names", names.len(), ngenes)]
    {
        if n != want {
            return Err(h.err(&g, format!("{n} {k}, expected {want} from shape")));
        }
    }
    for (k, c) in &extra {
        if c.len() != ngenes {
            return Err(h.err(&g, format!("{} {k} values, expected {ngenes}", c.len())));
        }
    }
    let mut var = DataFrame::new(names);
    rep.duplicate_var_names = var.make_index_unique();
    var.columns.push(("gene_ids".into(), Column::Str(ids)));
    var.columns.extend(extra);
    let a = AnnData { obs: DataFrame::new(barcodes), var, ..AnnData::new(Matrix::Csr(x)) };
    a.validate().map_err(|e| data_err(&h.name, "AnnData", e))?;
    Ok((a, rep))
}
