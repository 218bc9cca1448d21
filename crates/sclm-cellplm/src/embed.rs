//! Cell embedding of AnnData objects and of streamed CSR row chunks (the published zero-shot
//! pipeline: cells are grouped by an obs key, each group is a sequence for the Flowformer
//! encoder; rows come back in the original cell order).
use std::collections::BTreeMap;

use sclm_data::{AnnData, CsrMatrix, DataFrame, Dense, Matrix};
use sclm_nn::embedding::CsrRows;

use crate::error::{CellPlmError, Result};
use crate::model::{to_vec, CellPlm};

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
    let m = match &opts.layer {
        None => &adata.x,
        Some(l) => adata.layers.get(l).ok_or_else(|| {
            CellPlmError::Input(format!(
                "no layer named '{l}' (layers: {})",
                adata.layers.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?,
    };
    let owned;
    let x: &CsrMatrix = match m {
        Matrix::Csr(c) => c,
        Matrix::Dense(_) => {
            owned = m.to_csr();
            &owned
        }
    };
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
    if x.ncols != mapping.n_dataset_cols() {
        return Err(CellPlmError::Input(format!(
            "counts have {} genes, the gene mapping expects {}",
            x.ncols,
            mapping.n_dataset_cols()
        )));
    }
    if mapping.vocab_to_col().len() != model.genes().len() {
        return Err(CellPlmError::Input(format!(
            "gene mapping covers {} vocabulary genes, the model has {}",
            mapping.vocab_to_col().len(),
            model.genes().len()
        )));
    }
    check_counts(x, opts.allow_non_integer)?;
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
    let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for r in 0..n {
        by_group.entry(groups.map_or("", |g| g[r].as_str())).or_default().push(r);
    }
    let d = model.latent_dim();
    let mut out = Dense::zeros(n, d);
    let max = opts.max_cells_per_forward.max(1);
    let mut done = 0;
    for rows in by_group.values() {
        let pieces = rows.len().div_ceil(max);
        let base = rows.len() / pieces;
        let extra = rows.len() % pieces;
        let mut start = 0;
        for p in 0..pieces {
            let len = base + usize::from(p < extra);
            let part = &rows[start..start + len];
            start += len;
            let (ptr, idx, val) = mapping.remap(x, part);
            let counts = CsrRows::new(model.genes().len(), &ptr, &idx, &val)?;
            let pc: Option<Vec<[f32; 2]>> = coords.map(|c| part.iter().map(|&r| c[r]).collect());
            let e = to_vec(model.embed_group(&counts, pc.as_deref())?);
            for (i, &r) in part.iter().enumerate() {
                out.row_mut(r).copy_from_slice(&e[i * d..(i + 1) * d]);
            }
            done += len;
            progress(done);
        }
    }
    Ok(out)
}

fn check_counts(x: &CsrMatrix, allow_non_integer: bool) -> Result<()> {
    for r in 0..x.nrows {
        let (cols, vals) = x.row(r);
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
