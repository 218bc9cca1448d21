//! Cell embedding of AnnData objects and of streamed CSR row chunks (the published zero-shot
//! pipeline: cells are grouped by an obs key, each group is a sequence for the Flowformer
//! encoder; rows come back in the original cell order).
use std::collections::BTreeMap;

use sclm_data::{AnnData, CsrMatrix, DataFrame, Dense, Matrix};
use sclm_nn::embedding::CsrRows;

use crate::error::{CellPlmError, Result};
use crate::model::CellPlm;

/// Which dataset column feeds each gene of the model vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneMapping {
    vocab_to_col: Vec<Option<usize>>,
    n_cols: usize,
    /// Dataset column → vocabulary entries fed by it (usually zero or one).
    col_to_vocab: Vec<Vec<u32>>,
}

impl GeneMapping {
    /// From a precomputed mapping: entry `v` is the dataset column of vocabulary gene `v`
    /// (`None` = absent from the dataset; its input is zero). Fails when a column is out of range
    /// or no gene is matched.
    pub fn new(vocab_to_col: Vec<Option<usize>>, n_dataset_cols: usize) -> Result<Self> {
        let mut col_to_vocab = vec![Vec::new(); n_dataset_cols];
        for (v, c) in vocab_to_col.iter().enumerate() {
            if let Some(c) = *c {
                if c >= n_dataset_cols {
                    return Err(CellPlmError::Input(format!(
                        "gene mapping points vocabulary gene {v} at column {c}, but the dataset has {n_dataset_cols} genes"
                    )));
                }
                col_to_vocab[c].push(v as u32);
            }
        }
        if col_to_vocab.iter().all(|v| v.is_empty()) {
            return Err(CellPlmError::Input("no dataset gene matches the model vocabulary".into()));
        }
        Ok(GeneMapping { vocab_to_col, n_cols: n_dataset_cols, col_to_vocab })
    }

    /// Exact string match of the vocabulary against the dataset's gene identifiers: the values
    /// of `id_column` when given, otherwise whichever of the var index and a `gene_ids` column
    /// (when present) matches more genes. Versions are not stripped and symbols are not
    /// resolved: richer matching belongs upstream (pass its result to [`GeneMapping::new`]).
    pub fn by_name(vocab: &[String], var: &DataFrame, id_column: Option<&str>) -> Result<Self> {
        let candidates: Vec<Vec<String>> = match id_column {
            Some(col) => vec![var.column(col, "var column")?.to_labels()],
            None => {
                let mut c = vec![var.index.clone()];
                if let Some(ids) = var.get("gene_ids") {
                    c.push(ids.to_labels());
                }
                c
            }
        };
        let mut best: Option<(usize, Vec<Option<usize>>)> = None;
        for names in candidates {
            let mut pos: BTreeMap<&str, usize> = BTreeMap::new();
            for (i, n) in names.iter().enumerate() {
                pos.entry(n.as_str()).or_insert(i);
            }
            let map: Vec<Option<usize>> = vocab.iter().map(|g| pos.get(g.as_str()).copied()).collect();
            let hits = map.iter().filter(|m| m.is_some()).count();
            if best.as_ref().is_none_or(|(h, _)| hits > *h) {
                best = Some((hits, map));
            }
        }
        let (_, map) = best.expect("at least one candidate");
        Self::new(map, var.nrows()).map_err(|_| {
            CellPlmError::Input(format!(
                "none of the {} dataset genes matches the model vocabulary (e.g. '{}'); expected identifiers like '{}'",
                var.nrows(),
                var.index.first().map(String::as_str).unwrap_or(""),
                vocab.first().map(String::as_str).unwrap_or("")
            ))
        })
    }

    /// Dataset column of each vocabulary gene.
    pub fn vocab_to_col(&self) -> &[Option<usize>] {
        &self.vocab_to_col
    }

    /// Number of vocabulary genes found in the dataset.
    pub fn n_matched(&self) -> usize {
        self.vocab_to_col.iter().filter(|c| c.is_some()).count()
    }

    /// Number of dataset columns the mapping expects.
    pub fn n_dataset_cols(&self) -> usize {
        self.n_cols
    }

    /// The rows `rows` of `x` re-indexed onto the vocabulary (CSR, `rows.len() × vocab`).
    fn remap(&self, x: &CsrMatrix, rows: &[usize]) -> (Vec<usize>, Vec<u32>, Vec<f32>) {
        let (mut p, mut idx, mut val) = (Vec::with_capacity(rows.len() + 1), Vec::new(), Vec::new());
        p.push(0);
        for &r in rows {
            let (cols, vals) = x.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                for &g in &self.col_to_vocab[c as usize] {
                    idx.push(g);
                    val.push(v);
                }
            }
            p.push(idx.len());
        }
        (p, idx, val)
    }
}

/// The counts a model reads: `X` or layer `layer`, as CSR (borrowed when already sparse).
pub(crate) fn counts_matrix<'a>(adata: &'a AnnData, layer: Option<&str>) -> Result<std::borrow::Cow<'a, CsrMatrix>> {
    let m = match layer {
        None => &adata.x,
        Some(l) => adata.layers.get(l).ok_or_else(|| {
            CellPlmError::Input(format!(
                "no layer named '{l}' (layers: {})",
                adata.layers.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?,
    };
    Ok(match m {
        Matrix::Csr(c) => std::borrow::Cow::Borrowed(c),
        Matrix::Dense(_) => std::borrow::Cow::Owned(m.to_csr()),
    })
}

/// Options of [`embed`] and [`embed_chunk`].
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOptions {
    /// obs column whose values define the groups (default `batch`); when the column is absent
    /// all cells form one group.
    pub group_key: Option<String>,
    /// Upper bound of cells per forward call (default 10,000): a larger group is split into
    /// near-equal contiguous pieces (then cells attend only within their piece).
    pub max_cells_per_forward: usize,
    /// Layer holding the raw counts (default none: `X`).
    pub layer: Option<String>,
    /// obsm key of 2-D spatial coordinates (default none); used only by models with the
    /// positional encoding on.
    pub spatial_key: Option<String>,
    /// Accept non-integer values (default false: the model expects raw counts).
    pub allow_non_integer: bool,
    /// var column with the gene identifiers for name matching (default: the var index or a
    /// `gene_ids` column, whichever matches more); ignored when a mapping is passed.
    pub gene_id_column: Option<String>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            group_key: Some("batch".into()),
            max_cells_per_forward: 10_000,
            layer: None,
            spatial_key: None,
            allow_non_integer: false,
            gene_id_column: None,
        }
    }
}

/// Embeds every cell of `adata` (raw counts in `X` or `opts.layer`). `mapping` = `None` matches
/// genes by name ([`GeneMapping::by_name`]). `progress` is called with the number of cells done
/// after each forward call. Returns `cells × latent_dim` in the original cell order;
/// deterministic for a deterministic model.
pub fn embed(
    model: &CellPlm,
    adata: &AnnData,
    mapping: Option<&GeneMapping>,
    opts: &EmbedOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Dense<f32>> {
    let x = counts_matrix(adata, opts.layer.as_deref())?;
    let x: &CsrMatrix = &x;
    let by_name;
    let mapping = match mapping {
        Some(mp) => mp,
        None => {
            by_name = GeneMapping::by_name(model.genes(), &adata.var, opts.gene_id_column.as_deref())?;
            &by_name
        }
    };
    let groups = match &opts.group_key {
        Some(k) => adata.obs.get(k).map(|c| c.to_labels()),
        None => None,
    };
    let coords = match &opts.spatial_key {
        Some(k) => {
            let a = adata.obsm_get(k)?.to_f32();
            if a.ncols < 2 {
                return Err(CellPlmError::Input(format!("obsm['{k}'] has {} columns, expected 2", a.ncols)));
            }
            Some((0..a.nrows).map(|r| [a.get(r, 0), a.get(r, 1)]).collect::<Vec<_>>())
        }
        None => None,
    };
    embed_chunk(model, x, groups.as_deref(), coords.as_deref(), mapping, opts, progress)
}

/// Embeds a chunk of CSR rows (e.g. read piecewise from an h5ad file): `groups` gives each
/// row's group label (`None` = one group), `coords` optional coordinates. Groups are formed
/// within the chunk only. Returns `rows × latent_dim` in row order; `progress` receives the
/// number of rows of this chunk done.
pub fn embed_chunk(
    model: &CellPlm,
    x: &CsrMatrix,
    groups: Option<&[String]>,
    coords: Option<&[[f32; 2]]>,
    mapping: &GeneMapping,
    opts: &EmbedOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Dense<f32>> {
    let n = x.nrows;
    let d = model.latent_dim();
    let mut out = Dense::zeros(n, d);
    let mut done = 0;
    let fast = model.inference();
    for_each_piece(model.genes().len(), x, groups, coords, mapping, opts, &mut |part, counts, pc| {
        let e = fast.embed_group(counts, pc)?;
        out.set_rows(part, &e);
        done += part.len();
        progress(done);
        Ok(())
    })?;
    Ok(out)
}

/// What is done with each forward call: `(rows, counts, coords)` = the dataset rows of its
/// cells (increasing), their counts re-indexed onto the vocabulary, their coordinates.
pub type PieceFn<'f, E> = dyn FnMut(&[usize], &CsrRows<'_>, Option<&[[f32; 2]]>) -> std::result::Result<(), E> + 'f;

/// Calls `f` once per forward call of [`plan_pieces`] over the rows of `x` (held in memory),
/// in the order of [`plan_pieces`]. The inputs are checked as in [`embed_chunk`].
pub fn for_each_piece(
    n_vocab: usize,
    x: &CsrMatrix,
    groups: Option<&[String]>,
    coords: Option<&[[f32; 2]]>,
    mapping: &GeneMapping,
    opts: &EmbedOptions,
    f: &mut PieceFn<'_, CellPlmError>,
) -> Result<()> {
    let n = x.nrows;
    if x.ncols != mapping.n_dataset_cols() {
        return Err(CellPlmError::Input(format!(
            "counts have {} genes, the gene mapping expects {}",
            x.ncols,
            mapping.n_dataset_cols()
        )));
    }
    check_labels(n_vocab, n, groups, coords, mapping)?;
    check_counts(x, opts.allow_non_integer)?;
    for part in plan_pieces(groups, n, opts.max_cells_per_forward) {
        let (ptr, idx, val) = mapping.remap(x, &part);
        let counts = CsrRows::new(n_vocab, &ptr, &idx, &val)?;
        let pc: Option<Vec<[f32; 2]>> = coords.map(|c| part.iter().map(|&r| c[r]).collect());
        f(&part, &counts, pc.as_deref())?;
    }
    Ok(())
}

fn check_labels(
    n_vocab: usize,
    n: usize,
    groups: Option<&[String]>,
    coords: Option<&[[f32; 2]]>,
    mapping: &GeneMapping,
) -> Result<()> {
    if mapping.vocab_to_col().len() != n_vocab {
        return Err(CellPlmError::Input(format!(
            "gene mapping covers {} vocabulary genes, the model has {n_vocab}",
            mapping.vocab_to_col().len(),
        )));
    }
    if let Some(g) = groups {
        if g.len() != n {
            return Err(CellPlmError::Input(format!("{} group labels for {n} cells", g.len())));
        }
    }
    if let Some(c) = coords {
        if c.len() != n {
            return Err(CellPlmError::Input(format!("{} coordinates for {n} cells", c.len())));
        }
    }
    Ok(())
}

/// The forward calls of an embedding: the cells of each group (groups in sorted label order,
/// cells in row order), a group larger than `max_cells` split into near-equal contiguous
/// pieces. `groups` = `None`: all `n` cells form one group. Every row appears in exactly one
/// piece; each piece lists its rows in increasing order.
pub fn plan_pieces(groups: Option<&[String]>, n: usize, max_cells: usize) -> Vec<Vec<usize>> {
    let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for r in 0..n {
        by_group.entry(groups.map_or("", |g| g[r].as_str())).or_default().push(r);
    }
    let max = max_cells.max(1);
    let mut out = Vec::new();
    for rows in by_group.values() {
        let pieces = rows.len().div_ceil(max);
        let base = rows.len() / pieces;
        let extra = rows.len() % pieces;
        let mut start = 0;
        for p in 0..pieces {
            let len = base + usize::from(p < extra);
            out.push(rows[start..start + len].to_vec());
            start += len;
        }
    }
    out
}

/// Per-cell annotations of a streamed embedding: the number of cells, their group labels
/// (`None` = one group) and optional 2-D coordinates.
#[derive(Debug, Clone, Copy)]
pub struct CellLabels<'a> {
    /// Number of cells (rows of `X`).
    pub n_obs: usize,
    /// Group label of each cell.
    pub groups: Option<&'a [String]>,
    /// Coordinates of each cell (models with the positional encoding on).
    pub coords: Option<&'a [[f32; 2]]>,
}

/// How [`embed_streaming`] reads the counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct StreamOptions {
    /// Rows of `X` read at a time (default 10,000).
    pub chunk_rows: usize,
    /// Most cells held while their forward call waits for the rest of its group (default
    /// 40,000; raised to `max_cells_per_forward` when smaller). When groups are interleaved
    /// in the file so that one pass would hold more, the file is read in several passes.
    pub max_pending_cells: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions { chunk_rows: 10_000, max_pending_cells: 40_000 }
    }
}

/// Cells of one forward call being gathered.
#[derive(Default)]
struct Pending {
    ptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<f32>,
}

/// Embeds a file too large to hold, reading `X` in row chunks through `read_rows(a, b)` (rows
/// `a..b` as CSR with the dataset's genes as columns, e.g. from `sclm_io::H5adRowReader`).
/// The result is identical to [`embed`]/[`embed_chunk`] on the whole matrix; see
/// [`stream_pieces`] for how rows are read and what is held in memory (here, in addition, the
/// output `n_obs × latent_dim`). `progress` receives the number of cells embedded so far.
/// Errors of `read_rows` are passed through; the model's errors are converted with
/// `From<CellPlmError>`.
pub fn embed_streaming<E: From<CellPlmError>>(
    model: &CellPlm,
    cells: &CellLabels<'_>,
    mapping: &GeneMapping,
    opts: &EmbedOptions,
    stream: &StreamOptions,
    read_rows: &mut dyn FnMut(usize, usize) -> std::result::Result<CsrMatrix, E>,
    progress: &mut dyn FnMut(usize),
) -> std::result::Result<Dense<f32>, E> {
    let d = model.latent_dim();
    let mut out = Dense::zeros(cells.n_obs, d);
    let mut done = 0;
    let fast = model.inference();
    stream_pieces(model.genes().len(), cells, mapping, opts, stream, read_rows, &mut |part, counts, pc| {
        let e = fast.embed_group(counts, pc)?;
        out.set_rows(part, &e);
        done += part.len();
        progress(done);
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` once per forward call of [`plan_pieces`], reading the counts in row chunks
/// through `read_rows(a, b)` instead of holding them. The calls are known from the labels
/// before any count is read. Rows are read in file order, `stream.chunk_rows` at a time; each
/// row's counts (re-indexed onto the vocabulary) wait in the buffer of its forward call until
/// the call's last cell has arrived, then `f` runs and the buffer is freed. Memory is thus one
/// chunk of rows plus the cells waiting: at most one forward call when groups are contiguous
/// in the file. When the labels show that one pass would hold more than
/// `stream.max_pending_cells` waiting cells (groups interleaved in the file), the calls are
/// split into batches of at most that many cells and the rows spanned by each batch are read
/// once per batch (more reading, bounded memory). Calls reach `f` in the order their last
/// cell is read, not in the order of [`plan_pieces`].
pub fn stream_pieces<E: From<CellPlmError>>(
    n_vocab: usize,
    cells: &CellLabels<'_>,
    mapping: &GeneMapping,
    opts: &EmbedOptions,
    stream: &StreamOptions,
    read_rows: &mut dyn FnMut(usize, usize) -> std::result::Result<CsrMatrix, E>,
    f: &mut PieceFn<'_, E>,
) -> std::result::Result<(), E> {
    let n = cells.n_obs;
    check_labels(n_vocab, n, cells.groups, cells.coords, mapping)?;
    let pieces = plan_pieces(cells.groups, n, opts.max_cells_per_forward);
    let mut piece_of = vec![0u32; n];
    for (p, rows) in pieces.iter().enumerate() {
        for &r in rows {
            piece_of[r] = p as u32;
        }
    }
    let budget = stream.max_pending_cells.max(opts.max_cells_per_forward).max(1);
    let batches = plan_batches(&pieces, budget);
    let chunk = stream.chunk_rows.max(1);
    // Batch of each piece; the pieces of the current batch being gathered.
    let mut batch_of = vec![0u32; pieces.len()];
    for (b, ps) in batches.iter().enumerate() {
        for &p in ps {
            batch_of[p] = b as u32;
        }
    }
    let mut pending: BTreeMap<u32, Pending> = BTreeMap::new();
    for (b, ps) in batches.iter().enumerate() {
        let lo = ps.iter().map(|&p| pieces[p][0]).min().unwrap_or(0);
        let hi = ps.iter().map(|&p| pieces[p][pieces[p].len() - 1] + 1).max().unwrap_or(0);
        let mut a = lo;
        while a < hi {
            let e = (a + chunk).min(hi);
            let x = read_rows(a, e)?;
            if x.nrows != e - a || x.ncols != mapping.n_dataset_cols() {
                return Err(CellPlmError::Input(format!(
                    "rows {a}..{e}: read {} × {} values, expected {} × {} (cells × genes)",
                    x.nrows,
                    x.ncols,
                    e - a,
                    mapping.n_dataset_cols()
                ))
                .into());
            }
            check_counts_from(&x, a, opts.allow_non_integer)?;
            for i in 0..x.nrows {
                let p = piece_of[a + i];
                if batch_of[p as usize] as usize != b {
                    continue;
                }
                let buf = pending.entry(p).or_default();
                if buf.ptr.is_empty() {
                    buf.ptr.push(0);
                }
                let (cols, vals) = x.row(i);
                for (&c, &v) in cols.iter().zip(vals) {
                    for &g in &mapping.col_to_vocab[c as usize] {
                        buf.idx.push(g);
                        buf.val.push(v);
                    }
                }
                buf.ptr.push(buf.idx.len());
                let part = &pieces[p as usize];
                if buf.ptr.len() == part.len() + 1 {
                    let buf = pending.remove(&p).unwrap_or_default();
                    let counts = CsrRows::new(n_vocab, &buf.ptr, &buf.idx, &buf.val).map_err(CellPlmError::from)?;
                    let pc: Option<Vec<[f32; 2]>> = cells.coords.map(|c| part.iter().map(|&r| c[r]).collect());
                    f(part, &counts, pc.as_deref())?;
                }
            }
            a = e;
        }
        if !pending.is_empty() {
            return Err(CellPlmError::Input("internal: a forward call did not receive all its cells".into()).into());
        }
    }
    Ok(())
}

/// Splits the forward calls into batches read in one pass each: one batch when a single pass
/// in row order never holds more than `budget` waiting cells, else consecutive calls (by first
/// row) of at most `budget` cells together.
fn plan_batches(pieces: &[Vec<usize>], budget: usize) -> Vec<Vec<usize>> {
    // Peak of waiting cells for one pass: +1 per row read, −len when a call completes.
    let mut events: Vec<(usize, usize)> = pieces.iter().map(|p| (p[p.len() - 1], p.len())).collect();
    events.sort_unstable();
    let n: usize = pieces.iter().map(|p| p.len()).sum();
    let mut last_rows = vec![0usize; n.max(events.last().map_or(0, |e| e.0 + 1))];
    for &(r, len) in &events {
        last_rows[r] += len;
    }
    let (mut waiting, mut peak) = (0usize, 0usize);
    for freed in last_rows {
        waiting += 1;
        peak = peak.max(waiting);
        waiting -= freed.min(waiting);
    }
    let mut order: Vec<usize> = (0..pieces.len()).collect();
    if peak <= budget {
        return vec![order];
    }
    order.sort_by_key(|&p| pieces[p][0]);
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut size = 0;
    for p in order {
        let len = pieces[p].len();
        match out.last_mut() {
            Some(b) if size + len <= budget => {
                b.push(p);
                size += len;
            }
            _ => {
                out.push(vec![p]);
                size = len;
            }
        }
    }
    out
}

fn check_counts(x: &CsrMatrix, allow_non_integer: bool) -> Result<()> {
    check_counts_from(x, 0, allow_non_integer)
}

/// [`check_counts`] for rows that start at row `first` of the dataset (for the messages).
fn check_counts_from(x: &CsrMatrix, first: usize, allow_non_integer: bool) -> Result<()> {
    for i in 0..x.nrows {
        let r = first + i;
        let (cols, vals) = x.row(i);
        for (&c, &v) in cols.iter().zip(vals) {
            if !v.is_finite() || v < 0.0 {
                return Err(CellPlmError::Input(format!(
                    "cell {r}, gene {c} holds {v}: CellPLM needs raw (non-negative) counts"
                )));
            }
            if !allow_non_integer && v.fract() != 0.0 {
                return Err(CellPlmError::Input(format!(
                    "cell {r}, gene {c} holds {v}: CellPLM needs raw integer counts (normalised data? use the raw counts layer)"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::tiny_model;

    /// `n` cells × 10 dataset genes (dataset gene k = vocabulary gene k + 1), integer counts.
    fn counts(n: usize) -> CsrMatrix {
        let mut d = Dense::zeros(n, 10);
        for r in 0..n {
            for c in 0..10 {
                if (r * 7 + c * 3) % 4 != 0 {
                    d.data[r * 10 + c] = ((r * 5 + 2 * c) % 7) as f32;
                }
            }
        }
        CsrMatrix::from_dense(&d)
    }

    fn mapping() -> GeneMapping {
        GeneMapping::new((0..12).map(|v| if (1..11).contains(&v) { Some(v - 1) } else { None }).collect(), 10).unwrap()
    }

    fn streamed(
        model: &CellPlm,
        x: &CsrMatrix,
        groups: Option<&[String]>,
        opts: &EmbedOptions,
        stream: &StreamOptions,
    ) -> (Dense<f32>, Vec<(usize, usize)>) {
        let mut reads = Vec::new();
        let cells = CellLabels { n_obs: x.nrows, groups, coords: None };
        let mut read = |a: usize, b: usize| -> std::result::Result<CsrMatrix, CellPlmError> {
            reads.push((a, b));
            Ok(x.select_rows(&(a..b).collect::<Vec<_>>()))
        };
        let mut last = 0;
        let e = embed_streaming(model, &cells, &mapping(), opts, stream, &mut read, &mut |d| last = d).unwrap();
        assert_eq!(last, x.nrows);
        (e, reads)
    }

    #[test]
    fn streaming_equals_in_memory_embedding() {
        let model = tiny_model(2);
        let x = counts(23);
        let m = mapping();
        // Contiguous groups, interleaved groups, and one group larger than max_cells.
        let contiguous: Vec<String> = (0..23).map(|r| if r < 9 { "a".into() } else { "b".into() }).collect();
        let interleaved: Vec<String> = (0..23).map(|r| ["x", "y", "z"][r % 3].to_string()).collect();
        for (groups, max_cells) in
            [(Some(&contiguous), 100), (Some(&interleaved), 100), (None, 5), (Some(&interleaved), 3)]
        {
            let opts = EmbedOptions { max_cells_per_forward: max_cells, ..Default::default() };
            let g = groups.map(|g| g.as_slice());
            let expected = embed_chunk(&model, &x, g, None, &m, &opts, &mut |_| {}).unwrap();
            for (chunk, pending) in [(1, 1000), (4, 1000), (7, 5), (100, 1)] {
                let stream = StreamOptions { chunk_rows: chunk, max_pending_cells: pending };
                let (e, reads) = streamed(&model, &x, g, &opts, &stream);
                assert_eq!(e, expected, "groups {g:?}, max_cells {max_cells}, chunk {chunk}, pending {pending}");
                assert!(reads.iter().all(|(a, b)| b - a <= chunk && a < b));
            }
        }
        // Interleaved groups with a small budget are read in several passes; contiguous ones in one.
        let opts = EmbedOptions { max_cells_per_forward: 8, ..Default::default() };
        let stream = StreamOptions { chunk_rows: 4, max_pending_cells: 8 };
        let (_, reads) = streamed(&model, &x, Some(&interleaved), &opts, &stream);
        assert!(reads.iter().map(|(a, b)| b - a).sum::<usize>() > 23, "{reads:?}");
        let opts = EmbedOptions { max_cells_per_forward: 9, ..Default::default() };
        let stream = StreamOptions { chunk_rows: 4, max_pending_cells: 9 };
        let (_, reads) = streamed(&model, &x, Some(&contiguous), &opts, &stream);
        assert_eq!(reads.iter().map(|(a, b)| b - a).sum::<usize>(), 23, "{reads:?}");
    }

    #[test]
    fn plan_batches_bounds_waiting_cells() {
        let interleaved: Vec<String> = (0..30).map(|r| ["x", "y", "z"][r % 3].to_string()).collect();
        let pieces = plan_pieces(Some(&interleaved), 30, 100);
        assert_eq!(pieces.len(), 3);
        assert_eq!(plan_batches(&pieces, 30).len(), 1);
        let b = plan_batches(&pieces, 10);
        assert_eq!(b.len(), 3);
        assert!(b.iter().all(|ps| ps.iter().map(|&p| pieces[p].len()).sum::<usize>() <= 10));
        let contiguous: Vec<String> = (0..30).map(|r| (r / 10).to_string()).collect();
        assert_eq!(plan_batches(&plan_pieces(Some(&contiguous), 30, 100), 10).len(), 1);
    }

    #[test]
    fn streaming_passes_read_errors_and_bad_counts_through() {
        let model = tiny_model(2);
        let x = counts(6);
        let cells = CellLabels { n_obs: 6, groups: None, coords: None };
        let mut failing = |a: usize, _b: usize| -> std::result::Result<CsrMatrix, CellPlmError> {
            Err(CellPlmError::Input(format!("disk gone at row {a}")))
        };
        let e = embed_streaming(
            &model,
            &cells,
            &mapping(),
            &EmbedOptions::default(),
            &StreamOptions::default(),
            &mut failing,
            &mut |_| {},
        );
        assert!(e.unwrap_err().to_string().contains("disk gone at row 0"));
        let mut frac = x.clone();
        frac.data[frac.indptr[4]] = 0.5;
        let mut read = |a: usize, b: usize| -> std::result::Result<CsrMatrix, CellPlmError> {
            Ok(frac.select_rows(&(a..b).collect::<Vec<_>>()))
        };
        let stream = StreamOptions { chunk_rows: 2, ..Default::default() };
        let e = embed_streaming(&model, &cells, &mapping(), &EmbedOptions::default(), &stream, &mut read, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("cell 4"), "{e}");
    }
}
