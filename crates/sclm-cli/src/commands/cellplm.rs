//! CellPLM at the edge: `sclm import cellplm` and `sclm embed`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use sclm_cellplm::attention::{resolve_layer, top_k_attention, AttentionGraph, AttentionOptions};
use sclm_cellplm::embed::{for_each_piece, stream_pieces, CellLabels, StreamOptions};
use sclm_cellplm::{CellPlm, CellPlmConfig, EmbedOptions, GeneMapping};
use sclm_data::{AnnData, Array2, CsrMatrix, DataFrame, Dense, Matrix};
use sclm_io::{H5adRowReader, H5adStreamWriter};
use sclm_nn::embedding::CsrRows;
use sclm_preprocess::genes::{match_genes, GeneMatchOptions};

use crate::Global;

/// Model families that can be imported.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Family {
    /// CellPLM (Wen et al. 2023): `{prefix}.config.json` + `{prefix}.best.ckpt`.
    Cellplm,
}

/// Arguments of `sclm import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Model family of the checkpoint.
    #[arg(value_enum)]
    pub family: Family,
    /// The authors' config file (e.g. 20230926_85M.config.json).
    #[arg(long)]
    pub config: PathBuf,
    /// The authors' checkpoint (e.g. 20230926_85M.best.ckpt).
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Output model directory (config.json, model.safetensors, genes.txt, preprocessing.json).
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn import(g: &Global, a: ImportArgs) -> Result<()> {
    match a.family {
        Family::Cellplm => {
            let config = CellPlmConfig::from_json_file(&a.config)?;
            let (mut model, report) = CellPlm::load_torch(&a.ckpt, &config, &g.device()?)?;
            crate::progress::note(g.quiet, format!("{}: {}", a.ckpt.display(), report.summary()));
            model.save_dir(&a.output)?;
            crate::progress::note(g.quiet, format!("wrote {}", a.output.display()));
        }
    }
    Ok(())
}

/// Arguments of `sclm embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Model directory (from `sclm import` or `sclm pretrain`).
    #[arg(long)]
    pub model: PathBuf,
    /// Input data: .h5ad (raw counts in X or --layer), Cell Ranger .h5 or matrix directory.
    #[arg(long)]
    pub data: PathBuf,
    /// Output .h5ad: the input with the embedding added to obsm.
    #[arg(short, long)]
    pub output: PathBuf,
    /// obsm key of the embedding.
    #[arg(long, default_value = "X_cellplm")]
    pub key: String,
    /// obs column whose values form the groups of cells that attend to each other.
    #[arg(long, default_value = "batch")]
    pub group_key: String,
    /// Layer holding the raw counts (default: X). Reads the file whole.
    #[arg(long)]
    pub layer: Option<String>,
    /// obsm key of spatial coordinates (used by models with the positional encoding on).
    #[arg(long)]
    pub spatial_key: Option<String>,
    /// Most cells in one forward pass (bounds memory).
    #[arg(long, default_value_t = 10_000)]
    pub max_cells: usize,
    /// Stream an .h5ad input even when the copy cannot be complete: X is read and copied in
    /// row chunks, and the output keeps obs, var, obsm, varm, obsp and uns but not layers or
    /// raw, with X stored sparse. Without this flag, .h5ad files whose copy is complete
    /// (sparse X, no layers, no raw) are streamed and all others are read whole.
    #[arg(long, conflicts_with = "in_memory")]
    pub stream: bool,
    /// Read an .h5ad input whole even when it could be streamed.
    #[arg(long)]
    pub in_memory: bool,
    /// Rows of X read at a time when streaming.
    #[arg(long, default_value_t = 10_000)]
    pub chunk_rows: usize,
    /// Also export the encoder's cell–cell attention to obsp[KEY]: CSR, row i = cell i
    /// attending, W[i, j] = effective Flowformer weight of cell j in the output of cell i
    /// (positive, averaged over heads; rows do not sum to 1), top-k per row, block diagonal by
    /// group.
    #[arg(long, value_name = "KEY")]
    pub attention_obsp: Option<String>,
    /// Encoder layer of the attention export, from 0 (default: the last).
    #[arg(long, value_name = "L")]
    pub attention_layer: Option<usize>,
    /// Weights kept per cell in the attention export.
    #[arg(long, default_value_t = 30, value_name = "K")]
    pub attention_top_k: usize,
}

/// Group labels and coordinates of the cells, from obs / obsm.
type Labels = (Option<Vec<String>>, Option<Vec<[f32; 2]>>);

fn labels(a: &EmbedArgs, obs: &DataFrame, obsm: &BTreeMap<String, Array2>) -> Result<Labels> {
    let groups = obs.get(&a.group_key).map(|c| c.to_labels());
    let coords = match &a.spatial_key {
        Some(k) => {
            let arr = obsm.get(k).ok_or_else(|| {
                anyhow!(
                    "{}: no obsm entry named '{k}'{}",
                    a.data.display(),
                    sclm_data::available_hint(obsm.keys().map(|s| s.as_str()))
                )
            })?;
            let d = arr.to_f32();
            if d.ncols < 2 {
                bail!("{}: obsm['{k}'] has {} columns, expected 2", a.data.display(), d.ncols);
            }
            Some((0..d.nrows).map(|r| [d.get(r, 0), d.get(r, 1)]).collect())
        }
        None => None,
    };
    Ok((groups, coords))
}

/// The per-forward-call work: the embedding rows and, when asked, the attention graph.
struct Outputs<'m> {
    model: &'m CellPlm,
    fast: sclm_cellplm::CellPlmInference<'m>,
    emb: Dense<f32>,
    graph: Option<(AttentionGraph, AttentionOptions)>,
    done: usize,
}

impl Outputs<'_> {
    fn piece(&mut self, rows: &[usize], counts: &CsrRows<'_>, coords: Option<&[[f32; 2]]>) -> sclm_cellplm::Result<()> {
        let e = self.fast.embed_group(counts, coords)?;
        self.emb.set_rows(rows, &e);
        if let Some((g, opts)) = &mut self.graph {
            g.add_group(rows, &top_k_attention(self.model, counts, coords, opts)?)?;
        }
        self.done += rows.len();
        Ok(())
    }
}

pub fn embed(g: &Global, a: EmbedArgs) -> Result<()> {
    let (model, _pre) = CellPlm::load_dir(&a.model, &g.device()?)?;
    let attention = match &a.attention_obsp {
        Some(_) => {
            let opts =
                AttentionOptions { layer: a.attention_layer, top_k: a.attention_top_k.max(1), ..Default::default() };
            resolve_layer(&model, opts.layer).with_context(|| a.model.display().to_string())?;
            Some(opts)
        }
        None => None,
    };
    let opts = EmbedOptions {
        group_key: Some(a.group_key.clone()),
        max_cells_per_forward: a.max_cells.max(1),
        layer: a.layer.clone(),
        spatial_key: a.spatial_key.clone(),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let is_h5ad =
        a.layer.is_none() && !a.in_memory && matches!(sclm_io::detect_kind(&a.data), Ok(sclm_io::InputKind::H5ad));
    let streamed = if is_h5ad { open_streamable(&a)? } else { None };
    let n = match streamed {
        Some((reader, template, report)) => embed_streamed(g, &a, &model, &opts, attention, reader, template, &report)?,
        None => embed_in_memory(g, &a, &model, &opts, attention)?,
    };
    let secs = started.elapsed().as_secs_f64();
    let with_attn = a.attention_obsp.as_ref().map(|k| format!(", obsp['{k}']")).unwrap_or_default();
    crate::progress::note(
        g.quiet,
        format!(
            "wrote {} (obsm['{}']{with_attn}): {n} cells in {secs:.1} s ({:.0} cells/s)",
            a.output.display(),
            a.key,
            n as f64 / secs.max(1e-9)
        ),
    );
    Ok(())
}

/// The row reader and the template of an .h5ad input that is streamed: with `--stream`, or
/// when the streamed copy is complete (sparse X, no layers, no raw). `None`: read it whole.
fn open_streamable(a: &EmbedArgs) -> Result<Option<(H5adRowReader, AnnData, sclm_io::ReadReport)>> {
    let reader = match H5adRowReader::open(&a.data) {
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
    a: &EmbedArgs,
    model: &CellPlm,
    opts: &EmbedOptions,
    attention: Option<AttentionOptions>,
) -> Result<usize> {
    let (mut adata, report) = sclm_io::read_any(&a.data)?;
    crate::progress::warn_read(g.quiet, &a.data, &report);
    let matched = match_genes(&adata.var.index, model.genes(), &GeneMatchOptions::default())
        .with_context(|| a.data.display().to_string())?;
    crate::progress::note(g.quiet, format!("{}: {}", a.data.display(), matched.report()));
    let mapping = GeneMapping::new(matched.columns(), adata.n_vars())?;
    let (groups, coords) = labels(a, &adata.obs, &adata.obsm)?;
    let counts = match &a.layer {
        None => &adata.x,
        Some(l) => adata.layers.get(l).ok_or_else(|| {
            anyhow!(
                "{}: no layer named '{l}'{}",
                a.data.display(),
                sclm_data::available_hint(adata.layers.keys().map(|s| s.as_str()))
            )
        })?,
    };
    let x = counts.to_csr();
    let n = adata.n_obs();
    let mut out = Outputs {
        model,
        fast: model.inference(),
        emb: Dense::zeros(n, model.latent_dim()),
        graph: attention.map(|o| (AttentionGraph::new(n), o)),
        done: 0,
    };
    let pb = crate::progress::bar(n as u64, "embed", "cells", g.quiet);
    for_each_piece(
        model.genes().len(),
        &x,
        groups.as_deref(),
        coords.as_deref(),
        &mapping,
        opts,
        &mut |rows, c, pc| {
            out.piece(rows, c, pc)?;
            pb.set_position(out.done as u64);
            Ok(())
        },
    )
    .with_context(|| a.data.display().to_string())?;
    pb.finish_and_clear();
    drop(x);
    adata.obsm.insert(a.key.clone(), Array2::F32(out.emb));
    if let (Some(k), Some((gr, _))) = (&a.attention_obsp, out.graph) {
        adata.obsp.insert(k.clone(), Matrix::Csr(gr.finish()));
    }
    sclm_io::write_h5ad(&adata, &a.output, &Default::default())?;
    Ok(n)
}

#[allow(clippy::too_many_arguments)]
fn embed_streamed(
    g: &Global,
    a: &EmbedArgs,
    model: &CellPlm,
    opts: &EmbedOptions,
    attention: Option<AttentionOptions>,
    reader: H5adRowReader,
    mut template: AnnData,
    report: &sclm_io::ReadReport,
) -> Result<usize> {
    crate::progress::warn_read(g.quiet, &a.data, report);
    if !reader.is_sparse() || report.skipped.iter().any(|s| s.starts_with("layers/") || s.starts_with("raw ")) {
        crate::progress::note(g.quiet, format!("note: {}: streamed copy keeps obs, var, obsm, varm, obsp and uns; X is written sparse; layers and raw are left out", a.output.display()));
    }
    let matched = match_genes(reader.var_names(), model.genes(), &GeneMatchOptions::default())
        .with_context(|| a.data.display().to_string())?;
    crate::progress::note(g.quiet, format!("{}: {}", a.data.display(), matched.report()));
    let mapping = GeneMapping::new(matched.columns(), reader.n_vars())?;
    let (groups, coords) = labels(a, &template.obs, &template.obsm)?;
    let n = reader.n_obs();
    let cells = CellLabels { n_obs: n, groups: groups.as_deref(), coords: coords.as_deref() };
    let stream = StreamOptions { chunk_rows: a.chunk_rows.max(1), ..Default::default() };
    let mut out = Outputs {
        model,
        fast: model.inference(),
        emb: Dense::zeros(n, model.latent_dim()),
        graph: attention.map(|o| (AttentionGraph::new(n), o)),
        done: 0,
    };
    let pb = crate::progress::bar(n as u64, "embed", "cells", g.quiet);
    let mut read = |s: usize, e: usize| -> Result<CsrMatrix> { Ok(to_csr(reader.read_rows(s, e)?)) };
    stream_pieces(model.genes().len(), &cells, &mapping, opts, &stream, &mut read, &mut |rows, c, pc| {
        out.piece(rows, c, pc)?;
        pb.set_position(out.done as u64);
        Ok(())
    })
    .with_context(|| a.data.display().to_string())?;
    pb.finish_and_clear();
    template.obsm.insert(a.key.clone(), Array2::F32(out.emb));
    if let (Some(k), Some((gr, _))) = (&a.attention_obsp, out.graph) {
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
