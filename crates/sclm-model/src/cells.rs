//! Cells as plain data for any model: the counts a model reads (X or a layer), group labels and
//! coordinates from obs/obsm, and the "pieces" planner: which cells go through one forward call
//! (the cells of a group, a large group split into near-equal contiguous pieces), over rows held
//! in memory ([`for_each_piece`]) or streamed from a file in row chunks with bounded memory
//! ([`stream_pieces`]). Masking and every other training transform belong to a family's training
//! step, not to this data.
use std::collections::BTreeMap;

use sclm_data::{AnnData, Array2, CsrMatrix, DataFrame, Matrix, RowSource};
use sclm_nn::embedding::CsrRows;

use crate::error::{ModelError, Result};
use crate::genes::GeneMapping;

/// How cells are cut into forward calls and checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PieceOptions {
    /// Upper bound of cells per forward call (default 10,000): a larger group is split into
    /// near-equal contiguous pieces (then cells attend only within their piece).
    pub max_cells_per_forward: usize,
    /// Accept non-integer values (default false: models expect raw counts).
    pub allow_non_integer: bool,
}

impl Default for PieceOptions {
    fn default() -> Self {
        PieceOptions { max_cells_per_forward: 10_000, allow_non_integer: false }
    }
}

/// The group label of every cell: the values of obs column `key`; `None` when no key is given
/// or the column is absent (all cells form one group).
pub fn group_labels(obs: &DataFrame, key: Option<&str>) -> Option<Vec<String>> {
    key.and_then(|k| obs.get(k)).map(|c| c.to_labels())
}

/// 2-D coordinates of every cell from obsm `key` (its first two columns); an error naming the
/// key when it is absent or has fewer than two columns.
pub fn coordinates(obsm: &BTreeMap<String, Array2>, key: &str) -> Result<Vec<[f32; 2]>> {
    let arr = obsm.get(key).ok_or_else(|| {
        ModelError::Input(format!(
            "no obsm entry named '{key}'{}",
            sclm_data::available_hint(obsm.keys().map(|s| s.as_str()))
        ))
    })?;
    let d = arr.to_f32();
    if d.ncols < 2 {
        return Err(ModelError::Input(format!("obsm['{key}'] has {} column(s); coordinates need 2", d.ncols)));
    }
    Ok((0..d.nrows).map(|r| [d.get(r, 0), d.get(r, 1)]).collect())
}

/// The counts a model reads: `X` or layer `layer`, as CSR (borrowed when already sparse).
pub fn counts_matrix<'a>(adata: &'a AnnData, layer: Option<&str>) -> Result<std::borrow::Cow<'a, CsrMatrix>> {
    let m = match layer {
        None => &adata.x,
        Some(l) => adata.layers.get(l).ok_or_else(|| {
            ModelError::Input(format!(
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

/// What is done with each forward call: `(rows, counts, coords)` = the dataset rows of its
/// cells (increasing), their counts re-indexed onto the vocabulary, their coordinates.
pub type PieceFn<'f, E> = dyn FnMut(&[usize], &CsrRows<'_>, Option<&[[f32; 2]]>) -> std::result::Result<(), E> + 'f;

/// Calls `f` once per forward call of [`plan_pieces`] over the rows of `x`, in the order of
/// [`plan_pieces`]. An in-memory [`CsrMatrix`] is read in place and checked by [`check_counts`]
/// before the first call; any other [`RowSource`] (a borrowed NumPy or SciPy matrix) is read one
/// forward call at a time, each call's rows checked as they are gathered.
pub fn for_each_piece(
    n_vocab: usize,
    x: &dyn RowSource,
    groups: Option<&[String]>,
    coords: Option<&[[f32; 2]]>,
    mapping: &GeneMapping,
    opts: &PieceOptions,
    f: &mut PieceFn<'_, ModelError>,
) -> Result<()> {
    let n = x.nrows();
    if x.ncols() != mapping.n_dataset_cols() {
        return Err(ModelError::Input(format!(
            "counts have {} genes, the gene mapping expects {}",
            x.ncols(),
            mapping.n_dataset_cols()
        )));
    }
    check_labels(n_vocab, n, groups, coords, mapping)?;
    let whole = x.as_csr();
    if let Some(m) = whole {
        check_counts(m, opts.allow_non_integer)?;
    }
    for part in plan_pieces(groups, n, opts.max_cells_per_forward) {
        let ((ptr, idx, val), totals) = match whole {
            Some(m) => (mapping.remap(m, &part), row_totals(m, &part)),
            None => {
                let sub = x.gather(&part)?;
                check_counts_rows(&sub, &part, opts.allow_non_integer)?;
                let all: Vec<usize> = (0..part.len()).collect();
                (mapping.remap(&sub, &all), row_totals(&sub, &all))
            }
        };
        let counts = CsrRows::new(n_vocab, &ptr, &idx, &val)?.with_totals(&totals)?;
        let pc: Option<Vec<[f32; 2]>> = coords.map(|c| part.iter().map(|&r| c[r]).collect());
        f(&part, &counts, pc.as_deref())?;
    }
    Ok(())
}

/// The forward calls of [`plan_pieces`] dealt into `n` shards of near-equal cell counts, whole
/// calls only (cells that attend to each other are never split), and shard `i` (from 0) of
/// them. Calls are taken in order of their first row, so without groups each shard is one
/// contiguous row range. The union of the shards is every call exactly once, so embedding the
/// shards separately gives the unsharded embedding bit for bit.
pub fn shard_pieces(pieces: Vec<Vec<usize>>, i: usize, n: usize) -> Result<Vec<Vec<usize>>> {
    if n == 0 || i >= n {
        return Err(ModelError::Input(format!("shard {} of {n} does not exist (shards are 1..={n})", i + 1)));
    }
    let mut order: Vec<Vec<usize>> = pieces;
    order.sort_by_key(|p| p.first().copied().unwrap_or(usize::MAX));
    let total: usize = order.iter().map(|p| p.len()).sum();
    // A call belongs to the shard where its first cell falls in the cumulative cell count.
    let mut before = 0usize;
    let mut out = Vec::new();
    for p in order {
        let s = if total == 0 { 0 } else { ((before as u128 * n as u128) / total as u128) as usize };
        before += p.len();
        if s == i {
            out.push(p);
        }
    }
    Ok(out)
}

fn check_labels(
    n_vocab: usize,
    n: usize,
    groups: Option<&[String]>,
    coords: Option<&[[f32; 2]]>,
    mapping: &GeneMapping,
) -> Result<()> {
    if mapping.vocab_to_col().len() != n_vocab {
        return Err(ModelError::Input(format!(
            "gene mapping covers {} vocabulary genes, the model has {n_vocab}",
            mapping.vocab_to_col().len(),
        )));
    }
    if let Some(g) = groups {
        if g.len() != n {
            return Err(ModelError::Input(format!("{} group labels for {n} cells", g.len())));
        }
    }
    if let Some(c) = coords {
        if c.len() != n {
            return Err(ModelError::Input(format!("{} coordinates for {n} cells", c.len())));
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

/// How [`stream_pieces`] reads the counts.
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
    /// Raw total of each row over all the dataset's genes.
    totals: Vec<f32>,
}

/// The raw total of each of `rows` of `m` over all its genes (the library size before genes
/// outside a vocabulary are dropped).
fn row_totals(m: &CsrMatrix, rows: &[usize]) -> Vec<f32> {
    rows.iter().map(|&r| m.row(r).1.iter().sum()).collect()
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
pub fn stream_pieces<E: From<ModelError>>(
    n_vocab: usize,
    cells: &CellLabels<'_>,
    mapping: &GeneMapping,
    opts: &PieceOptions,
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
                return Err(ModelError::Input(format!(
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
                buf.totals.push(vals.iter().sum());
                for (&c, &v) in cols.iter().zip(vals) {
                    for &g in &mapping.col_to_vocab()[c as usize] {
                        buf.idx.push(g);
                        buf.val.push(v);
                    }
                }
                buf.ptr.push(buf.idx.len());
                let part = &pieces[p as usize];
                if buf.ptr.len() == part.len() + 1 {
                    let buf = pending.remove(&p).unwrap_or_default();
                    let counts = CsrRows::new(n_vocab, &buf.ptr, &buf.idx, &buf.val)
                        .and_then(|c| c.with_totals(&buf.totals))
                        .map_err(ModelError::from)?;
                    let pc: Option<Vec<[f32; 2]>> = cells.coords.map(|c| part.iter().map(|&r| c[r]).collect());
                    f(part, &counts, pc.as_deref())?;
                }
            }
            a = e;
        }
        if !pending.is_empty() {
            return Err(ModelError::Input("internal: a forward call did not receive all its cells".into()).into());
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

/// Checks that every stored value is a finite non-negative count (an integer unless
/// `allow_non_integer`); the error names the cell and the gene column.
pub fn check_counts(x: &CsrMatrix, allow_non_integer: bool) -> Result<()> {
    check_counts_from(x, 0, allow_non_integer)
}

/// [`check_counts`] for rows that start at row `first` of the dataset (for the messages).
pub fn check_counts_from(x: &CsrMatrix, first: usize, allow_non_integer: bool) -> Result<()> {
    check_counts_named(x, &|i| first + i, allow_non_integer)
}

/// [`check_counts`] for rows gathered from dataset rows `rows` (for the messages).
pub fn check_counts_rows(x: &CsrMatrix, rows: &[usize], allow_non_integer: bool) -> Result<()> {
    check_counts_named(x, &|i| rows[i], allow_non_integer)
}

fn check_counts_named(x: &CsrMatrix, row: &dyn Fn(usize) -> usize, allow_non_integer: bool) -> Result<()> {
    for i in 0..x.nrows {
        let r = row(i);
        let (cols, vals) = x.row(i);
        for (&c, &v) in cols.iter().zip(vals) {
            if !v.is_finite() || v < 0.0 {
                return Err(ModelError::Input(format!(
                    "cell {r}, gene {c} holds {v}: the model needs raw (non-negative) counts"
                )));
            }
            if !allow_non_integer && v.fract() != 0.0 {
                return Err(ModelError::Input(format!(
                    "cell {r}, gene {c} holds {v}: the model needs raw integer counts (normalised data? use the raw counts layer)"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn pieces_cover_every_row_once_in_near_equal_parts() {
        let groups: Vec<String> = (0..23).map(|r| if r % 4 == 0 { "a".into() } else { "b".into() }).collect();
        let pieces = plan_pieces(Some(&groups), 23, 5);
        let mut all: Vec<usize> = pieces.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        assert!(pieces.iter().all(|p| p.len() <= 5 && p.windows(2).all(|w| w[0] < w[1])));
        // Group a: 6 cells → 3 + 3; group b: 17 cells → 5 + 4 + 4 + 4.
        let sizes: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
        assert_eq!(sizes, vec![3, 3, 5, 4, 4, 4]);
    }

    #[test]
    fn bad_counts_and_coordinates_name_the_cell_and_key() {
        let x = CsrMatrix::new(2, 2, vec![0, 1, 2], vec![0, 1], vec![1.0, 0.5]).unwrap();
        let e = check_counts(&x, false).unwrap_err().to_string();
        assert!(e.contains("cell 1, gene 1 holds 0.5"), "{e}");
        assert!(check_counts(&x, true).is_ok());
        let mut obsm = BTreeMap::new();
        obsm.insert("spatial".to_string(), Array2::F32(sclm_data::Dense::zeros(2, 1)));
        let e = coordinates(&obsm, "spatial").unwrap_err().to_string();
        assert!(e.contains("obsm['spatial'] has 1 column(s)"), "{e}");
        let e = coordinates(&obsm, "xy").unwrap_err().to_string();
        assert!(e.contains("'xy'") && e.contains("available: spatial"), "{e}");
    }

    /// What each forward call sees, as owned rows: (dataset rows, indptr, vocab indices, values).
    fn pieces_seen(x: &dyn RowSource, groups: Option<&[String]>, allow: bool) -> Result<Vec<(Vec<usize>, Vec<u32>)>> {
        // Vocabulary = dataset columns reversed, so the remap is not the identity.
        let n = x.ncols();
        let mapping = GeneMapping::new((0..n).rev().map(Some).collect(), n)?;
        let opts = PieceOptions { max_cells_per_forward: 3, allow_non_integer: allow };
        let mut seen = Vec::new();
        for_each_piece(n, x, groups, None, &mapping, &opts, &mut |rows, c, _| {
            let bits: Vec<u32> = c
                .indptr
                .iter()
                .map(|&p| p as u32)
                .chain(c.indices.iter().copied())
                .chain(c.data.iter().map(|v| v.to_bits()))
                .collect();
            seen.push((rows.to_vec(), bits));
            Ok(())
        })?;
        Ok(seen)
    }

    #[test]
    fn borrowed_views_give_the_forward_calls_of_the_in_memory_matrix() {
        let (nr, nc) = (8, 4);
        let dense: Vec<f64> = (0..nr * nc).map(|k| ((k * 7) % 5) as f64).collect();
        let m = CsrMatrix::from_dense(
            &sclm_data::Dense::from_vec(nr, nc, dense.iter().map(|&v| v as f32).collect()).unwrap(),
        );
        let groups: Vec<String> = (0..nr).map(|r| ["b", "a"][r % 2].to_string()).collect();
        let want = pieces_seen(&m, Some(&groups), false).unwrap();
        assert_eq!(want.len(), 4);
        let view = sclm_data::DenseView::new(nr, nc, &dense, nc, 1).unwrap();
        assert_eq!(pieces_seen(&view, Some(&groups), false).unwrap(), want);
        let ptr: Vec<i64> = m.indptr.iter().map(|&p| p as i64).collect();
        let csr = sclm_data::CsrView::new(nr, nc, &ptr, &m.indices, &m.data).unwrap();
        assert_eq!(pieces_seen(&csr, Some(&groups), false).unwrap(), want);
        // A bad value is reported with its dataset row, as for the in-memory matrix.
        let mut bad = dense.clone();
        bad[5 * nc + 2] = 0.5;
        let view = sclm_data::DenseView::new(nr, nc, &bad, nc, 1).unwrap();
        let e = pieces_seen(&view, Some(&groups), false).unwrap_err().to_string();
        assert!(e.contains("cell 5, gene 2 holds 0.5"), "{e}");
    }

    #[test]
    fn shards_hold_whole_calls_and_cover_every_call_once() {
        let groups: Vec<String> = (0..40).map(|r| ["x", "y", "z"][r % 3].to_string()).collect();
        for g in [None, Some(groups.as_slice())] {
            let pieces = plan_pieces(g, 40, 6);
            for n in [1, 2, 3, 7] {
                let mut all: Vec<Vec<usize>> = Vec::new();
                let mut sizes = Vec::new();
                for i in 0..n {
                    let s = shard_pieces(pieces.clone(), i, n).unwrap();
                    sizes.push(s.iter().map(|p| p.len()).sum::<usize>());
                    all.extend(s);
                }
                let mut want = pieces.clone();
                want.sort();
                all.sort();
                assert_eq!(all, want, "{n} shards");
                // Near-equal: no shard exceeds its share by more than one call.
                assert!(sizes.iter().all(|&c| c <= 40 / n + 6), "{sizes:?}");
            }
            // Without groups every shard is one contiguous row range.
            if g.is_none() {
                let s: Vec<usize> = shard_pieces(pieces.clone(), 1, 3).unwrap().concat();
                assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "{s:?}");
            }
        }
        assert!(shard_pieces(vec![], 2, 2).unwrap_err().to_string().contains("shard 3 of 2"));
    }
}
