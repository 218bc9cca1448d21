//! `sclm embed`: any model directory, the family read from its manifest.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sclm_cellplm::attention::{resolve_layer, top_k_attention, AttentionGraph, AttentionOptions};
use sclm_data::{AnnData, Array2, Column, CsrMatrix, Dense, Matrix};
use sclm_io::{H5adRowReader, H5adStreamWriter};
use sclm_model::cells::{self, CellLabels, PieceOptions, StreamOptions};
use sclm_model::{CellModel, EmbedOptions, GeneMapping};
use sclm_nn::embedding::CsrRows;

use crate::Global;

/// Arguments of `sclm embed`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input: .h5ad (raw counts in X or --layer), Cell Ranger .h5 or matrix directory.
    pub input: PathBuf,
    /// Model directory (`sclm import`, `sclm pretrain`, `sclm finetune annotation --save-model`);
    /// its manifest names the family.
    #[arg(long)]
    pub model: PathBuf,
    /// Output .h5ad: the input with the embedding added to obsm.
    #[arg(short, long)]
    pub output: PathBuf,
    /// obsm key of the embedding (default `X_<family>`, e.g. `X_cellplm`).
    #[arg(long)]
    pub key_added: Option<String>,
    /// Layer holding the raw counts (default: X). Reads the file whole.
    #[arg(long)]
    pub layer: Option<String>,
    /// obs column whose values form the groups of cells that attend to each other (default: the
    /// group key saved with the model, `batch` for CellPLM; `""` = all cells one group).
    #[arg(long)]
    pub group_key: Option<String>,
    /// obsm key of spatial coordinates, read by models with a positional encoding (default: the
    /// key saved with the model, `spatial`, when the file has it; `""` = none).
    #[arg(long)]
    pub spatial_key: Option<String>,
    /// var column with the gene identifiers (default: the var index or `gene_ids`, whichever
    /// matches the model's vocabulary better).
    #[arg(long)]
    pub gene_id_column: Option<String>,
    /// Most cells in one forward pass (bounds memory).
    #[arg(long, default_value_t = 10_000)]
    pub max_cells: usize,
    /// Accept non-integer values (normalised data) where the model expects counts.
    #[arg(long)]
    pub allow_non_integer: bool,
    /// Stream an .h5ad input even when the copy cannot be complete: X is read and copied in
    /// row chunks, and the output keeps obs, var, obsm, varm, obsp and uns but not layers or
    /// raw, with X stored sparse. Without this flag, .h5ad files whose copy is complete
    /// (sparse X, no layers, no raw) are streamed and all others are read whole.
    #[arg(long, conflicts_with_all = ["in_memory", "shard"])]
    pub stream: bool,
    /// Read an .h5ad input whole even when it could be streamed.
    #[arg(long)]
    pub in_memory: bool,
    /// Rows of X read at a time when streaming.
    #[arg(long, default_value_t = 10_000)]
    pub chunk_rows: usize,
    /// CellPLM: also export the encoder's cell–cell attention to obsp[KEY]: CSR, row i = cell i
    /// attending, W[i, j] = effective Flowformer weight of cell j in the output of cell i
    /// (positive, averaged over heads; rows do not sum to 1), top-k per row, block diagonal by
    /// group. With --shard: the shard's block of the unsharded graph (weights stay within a
    /// forward call, and no forward call is split between shards).
    #[arg(long, value_name = "KEY")]
    pub attention_obsp: Option<String>,
    /// Encoder layer of the attention export, from 0 (default: the last).
    #[arg(long, value_name = "L", requires = "attention_obsp")]
    pub attention_layer: Option<usize>,
    /// Weights kept per cell in the attention export.
    #[arg(long, default_value_t = 30, value_name = "K", requires = "attention_obsp")]
    pub attention_top_k: usize,
    /// Embed only shard I of N (from 1: `--shard 1/4` ... `--shard 4/4`), e.g. one task of a
    /// SLURM job array. The forward calls of the unsharded run (same --group-key and
    /// --max-cells) are dealt whole into N shards of near-equal cell counts, so every cell gets
    /// bit for bit the embedding of the unsharded run. The output holds only the shard's cells,
    /// in input row order (obs, var, X, obsm, layers and raw of those cells; obsp keeps the block
    /// of those cells), plus obs["sclm_row"], each cell's 0-based row in the input. With no
    /// group key (`--group-key ""` or a file without the column) each shard is a contiguous row
    /// range, so `anndata.concat` of shards 1..N in order gives the input order; with groups,
    /// sort the concatenation by sclm_row. The input is read whole (not with --stream); a shard
    /// can be empty when there are fewer forward calls than shards.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
}

/// `--shard I/N`: shard `index` (from 0) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// From 0 (`--shard 1/N` is index 0).
    pub index: usize,
    /// Number of shards, at least 1.
    pub count: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index + 1, self.count)
    }
}

/// Parses `I/N` (1 <= I <= N); the message is shown by clap after "invalid value for '--shard'".
fn parse_shard(s: &str) -> std::result::Result<Shard, String> {
    let usage = "expected I/N with 1 <= I <= N, e.g. 1/4";
    let Some((i, n)) = s.split_once('/') else {
        return Err(format!("no '/': {usage}"));
    };
    let num = |t: &str| t.parse::<usize>().ok().filter(|_| t.bytes().all(|b| b.is_ascii_digit()));
    let (Some(i), Some(n)) = (num(i), num(n)) else {
        return Err(format!("not two whole numbers: {usage}"));
    };
    if n == 0 {
        return Err(format!("0 shards: {usage}"));
    }
    if i == 0 || i > n {
        return Err(format!("shard {i} of {n} does not exist (shards are 1 to {n}): {usage}"));
    }
    Ok(Shard { index: i - 1, count: n })
}

/// The per-forward-call work: the embedding rows and, when asked, the attention graph.
struct Outputs<'m> {
    embedder: Box<dyn sclm_model::PieceEmbedder + 'm>,
    attention: Option<(&'m sclm_cellplm::CellPlm, AttentionGraph, AttentionOptions)>,
    emb: Dense<f32>,
    done: usize,
}

impl Outputs<'_> {
    fn piece(&mut self, rows: &[usize], counts: &CsrRows<'_>, coords: Option<&[[f32; 2]]>) -> sclm_model::Result<()> {
        let e = self.embedder.embed_piece(counts, coords)?;
        sclm_model::api::check_len(e.len(), rows.len(), self.emb.ncols)?;
        self.emb.set_rows(rows, &e);
        if let Some((plm, g, opts)) = &mut self.attention {
            g.add_group(rows, &top_k_attention(plm, counts, coords, opts)?)?;
        }
        self.done += rows.len();
        Ok(())
    }
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let model = crate::load_model(&a.model, &g.device()?)?;
    let key = a.key_added.clone().unwrap_or_else(|| format!("X_{}", model.family()));
    let attention = match &a.attention_obsp {
        Some(_) => {
            let Some(cp) = model.as_any().downcast_ref::<sclm_cellplm::CellPlmModel>() else {
                bail!(
                    "--attention-obsp: a {} model has no Flowformer attention to export (CellPLM only)",
                    model.family()
                );
            };
            let opts =
                AttentionOptions { layer: a.attention_layer, top_k: a.attention_top_k.max(1), ..Default::default() };
            resolve_layer(cp.plm(), opts.layer).with_context(|| a.model.display().to_string())?;
            Some((cp.plm(), opts))
        }
        None => None,
    };
    let opts = EmbedOptions {
        group_key: a.group_key.clone(),
        layer: a.layer.clone(),
        spatial_key: a.spatial_key.clone(),
        gene_id_column: a.gene_id_column.clone(),
        pieces: PieceOptions { max_cells_per_forward: a.max_cells.max(1), allow_non_integer: a.allow_non_integer },
    };
    if let Some(k) = opts.group_key_for(model.as_ref()) {
        crate::progress::note(g.quiet, format!("cells grouped by obs['{k}'] (when the file has it)"));
    }
    let started = std::time::Instant::now();
    let is_h5ad =
        a.layer.is_none() && !a.in_memory && matches!(sclm_io::detect_kind(&a.input), Ok(sclm_io::InputKind::H5ad));
    let streamed = if is_h5ad && a.shard.is_none() { open_streamable(&a)? } else { None };
    let n = match (streamed, a.shard) {
        (Some((reader, template, report)), _) => {
            embed_streamed(g, &a, model.as_ref(), &opts, attention, reader, template, &report, &key)?
        }
        (None, Some(shard)) => embed_shard(g, &a, model.as_ref(), &opts, attention, &key, shard)?,
        (None, None) => embed_in_memory(g, &a, model.as_ref(), &opts, attention, &key)?,
    };
    let secs = started.elapsed().as_secs_f64();
    let with_attn = a.attention_obsp.as_ref().map(|k| format!(", obsp['{k}']")).unwrap_or_default();
    let (with_row, of_shard) = match a.shard {
        Some(s) => (", obs['sclm_row']", format!(" of shard {s}")),
        None => ("", String::new()),
    };
    crate::progress::note(
        g.quiet,
        format!(
            "wrote {} (obsm['{key}']{with_attn}{with_row}): {n} cells{of_shard} in {secs:.1} s ({:.0} cells/s)",
            a.output.display(),
            n as f64 / secs.max(1e-9)
        ),
    );
    Ok(())
}

/// The row reader and the template of an .h5ad input that is streamed: with `--stream`, or
/// when the streamed copy is complete (sparse X, no layers, no raw). `None`: read it whole.
fn open_streamable(a: &Args) -> Result<Option<(H5adRowReader, AnnData, sclm_io::ReadReport)>> {
    let reader = match H5adRowReader::open(&a.input) {
        Ok(r) => r,
        Err(e) if a.stream => return Err(e.into()),
        Err(_) => return Ok(None),
    };
    let (template, report) = reader.annotations()?;
    let complete =
        reader.is_sparse() && !report.skipped.iter().any(|s| s.starts_with("layers/") || s.starts_with("raw "));
    if !complete && !a.stream {
        return Ok(None);
    }
    Ok(Some((reader, template, report)))
}

fn embed_in_memory(
    g: &Global,
    a: &Args,
    model: &dyn CellModel,
    opts: &EmbedOptions,
    attention: Option<(&sclm_cellplm::CellPlm, AttentionOptions)>,
    key: &str,
) -> Result<usize> {
    let file = a.input.display().to_string();
    let (mut adata, report) = sclm_io::read_any(&a.input)?;
    crate::progress::warn_read(g.quiet, &a.input, &report);
    let p = sclm_model::prepare(model, &adata, opts).with_context(|| file.clone())?;
    crate::progress::note(g.quiet, format!("{file}: {}", p.matched.report()));
    let n = adata.n_obs();
    let mut out = Outputs {
        embedder: model.embedder()?,
        attention: attention.map(|(m, o)| (m, AttentionGraph::new(n), o)),
        emb: Dense::zeros(n, model.embedding_dim()),
        done: 0,
    };
    let pb = crate::progress::bar(n as u64, "embed", "cells", g.quiet);
    p.for_each_piece(model.genes().len(), &opts.pieces, &mut |rows, c, pc| {
        out.piece(rows, c, pc)?;
        pb.set_position(out.done as u64);
        Ok(())
    })
    .with_context(|| file.clone())?;
    pb.finish_and_clear();
    drop(p);
    adata.obsm.insert(key.to_string(), Array2::F32(out.emb));
    if let (Some(k), Some((_, gr, _))) = (&a.attention_obsp, out.attention) {
        adata.obsp.insert(k.clone(), Matrix::Csr(gr.finish()));
    }
    sclm_io::write_h5ad(&adata, &a.output, &Default::default())?;
    Ok(n)
}

/// `--shard`: the input read whole, the forward calls of the unsharded run planned over all its
/// cells, and only the calls of `shard` embedded; the output is the shard's cells in row order
/// with obs["sclm_row"].
fn embed_shard(
    g: &Global,
    a: &Args,
    model: &dyn CellModel,
    opts: &EmbedOptions,
    attention: Option<(&sclm_cellplm::CellPlm, AttentionOptions)>,
    key: &str,
    shard: Shard,
) -> Result<usize> {
    let file = a.input.display().to_string();
    let (adata, report) = sclm_io::read_any(&a.input)?;
    crate::progress::warn_read(g.quiet, &a.input, &report);
    let p = sclm_model::prepare(model, &adata, opts).with_context(|| file.clone())?;
    crate::progress::note(g.quiet, format!("{file}: {}", p.matched.report()));
    // The same check as the unsharded run, over every cell: a shard fails when the run would.
    cells::check_counts(&p.counts, opts.pieces.allow_non_integer).with_context(|| file.clone())?;
    let n_obs = adata.n_obs();
    let plan = cells::plan_pieces(p.groups.as_deref(), n_obs, opts.pieces.max_cells_per_forward);
    let n_calls = plan.len();
    let pieces = cells::shard_pieces(plan, shard.index, shard.count).context("--shard")?;
    let mut rows: Vec<usize> = pieces.iter().flatten().copied().collect();
    rows.sort_unstable();
    let n = rows.len();
    if n == 0 {
        crate::progress::note(
            g.quiet,
            format!(
                "note: shard {shard} holds no cells: the {n_obs} cells make {n_calls} forward call(s) for {} shards",
                shard.count
            ),
        );
    }
    let n_vocab = model.genes().len();
    let mut out = Outputs {
        embedder: model.embedder()?,
        attention: attention.map(|(m, o)| (m, AttentionGraph::new(n), o)),
        emb: Dense::zeros(n, model.embedding_dim()),
        done: 0,
    };
    let pb = crate::progress::bar(n as u64, "embed", "cells", g.quiet);
    for piece in &pieces {
        // The piece's cells at their places in the shard (rows and pieces are increasing).
        let local: Vec<usize> = piece.iter().map(|r| rows.binary_search(r).expect("a row of the shard")).collect();
        let (ptr, idx, val) = p.mapping.remap(&p.counts, piece);
        let counts = CsrRows::new(n_vocab, &ptr, &idx, &val).with_context(|| file.clone())?;
        let pc: Option<Vec<[f32; 2]>> = p.coords.as_ref().map(|c| piece.iter().map(|&r| c[r]).collect());
        out.piece(&local, &counts, pc.as_deref()).with_context(|| file.clone())?;
        pb.set_position(out.done as u64);
    }
    pb.finish_and_clear();
    drop(p);
    let mut sub = adata.select_obs(&rows);
    drop(adata);
    sub.obs.insert("sclm_row", Column::I64(rows.iter().map(|&r| r as i64).collect()))?;
    sub.obsm.insert(key.to_string(), Array2::F32(out.emb));
    if let (Some(k), Some((_, gr, _))) = (&a.attention_obsp, out.attention) {
        sub.obsp.insert(k.clone(), Matrix::Csr(gr.finish()));
    }
    sclm_io::write_h5ad(&sub, &a.output, &Default::default())?;
    Ok(n)
}

#[allow(clippy::too_many_arguments)]
fn embed_streamed(
    g: &Global,
    a: &Args,
    model: &dyn CellModel,
    opts: &EmbedOptions,
    attention: Option<(&sclm_cellplm::CellPlm, AttentionOptions)>,
    reader: H5adRowReader,
    mut template: AnnData,
    report: &sclm_io::ReadReport,
    key: &str,
) -> Result<usize> {
    let file = a.input.display().to_string();
    crate::progress::warn_read(g.quiet, &a.input, report);
    if !reader.is_sparse() || report.skipped.iter().any(|s| s.starts_with("layers/") || s.starts_with("raw ")) {
        crate::progress::note(
            g.quiet,
            format!(
                "note: {}: streamed copy keeps obs, var, obsm, varm, obsp and uns; X is written sparse; layers and raw are left out",
                a.output.display()
            ),
        );
    }
    let (mapping, matched) = GeneMapping::for_dataset(model.genes(), &template.var, opts.gene_id_column.as_deref())
        .with_context(|| file.clone())?;
    crate::progress::note(g.quiet, format!("{file}: {}", matched.report()));
    let groups = cells::group_labels(&template.obs, opts.group_key_for(model));
    let coords = opts.coordinates_for(model, &template.obsm).with_context(|| file.clone())?;
    let n = reader.n_obs();
    let labels = CellLabels { n_obs: n, groups: groups.as_deref(), coords: coords.as_deref() };
    let stream = StreamOptions { chunk_rows: a.chunk_rows.max(1), ..Default::default() };
    let mut out = Outputs {
        embedder: model.embedder()?,
        attention: attention.map(|(m, o)| (m, AttentionGraph::new(n), o)),
        emb: Dense::zeros(n, model.embedding_dim()),
        done: 0,
    };
    let pb = crate::progress::bar(n as u64, "embed", "cells", g.quiet);
    let mut read = |s: usize, e: usize| -> Result<CsrMatrix> { Ok(to_csr(reader.read_rows(s, e)?)) };
    cells::stream_pieces(
        model.genes().len(),
        &labels,
        &mapping,
        &opts.pieces,
        &stream,
        &mut read,
        &mut |rows, c, pc| {
            out.piece(rows, c, pc)?;
            pb.set_position(out.done as u64);
            Ok(())
        },
    )
    .with_context(|| file.clone())?;
    pb.finish_and_clear();
    template.obsm.insert(key.to_string(), Array2::F32(out.emb));
    if let (Some(k), Some((_, gr, _))) = (&a.attention_obsp, out.attention) {
        template.obsp.insert(k.clone(), Matrix::Csr(gr.finish()));
    }
    // Copy X chunk by chunk behind the new annotations.
    let mut w = H5adStreamWriter::create(&a.output, &template, &Default::default())?;
    drop(template);
    let pb = crate::progress::bar(n as u64, "copy X", "cells", g.quiet);
    let mut s = 0;
    while s < n {
        let e = (s + stream.chunk_rows).min(n);
        w.append(&to_csr(reader.read_rows(s, e)?))?;
        pb.set_position(e as u64);
        s = e;
    }
    w.finish()?;
    pb.finish_and_clear();
    Ok(n)
}

fn to_csr(m: Matrix) -> CsrMatrix {
    match m {
        Matrix::Csr(c) => c,
        other => other.to_csr(),
    }
}
