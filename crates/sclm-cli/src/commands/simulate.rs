//! `sclm simulate`: stream a simulated dataset to .h5ad.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use sclm_sim::{PerturbConfig, SimConfig, SimStream, SpatialConfig};

use crate::Global;

/// Arguments of `sclm simulate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output .h5ad file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// A JSON file with a full simulation config (fields as in `SimConfig`); the flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Number of cells.
    #[arg(long)]
    pub cells: Option<usize>,
    /// Number of genes.
    #[arg(long)]
    pub genes: Option<usize>,
    /// Number of cell types.
    #[arg(long)]
    pub types: Option<usize>,
    /// Number of batches.
    #[arg(long)]
    pub batches: Option<usize>,
    /// Add 2-D spatial coordinates (obsm['spatial']) where cell types form niches.
    #[arg(long)]
    pub spatial: bool,
    /// Knock down this many genes in half of the cells (obs['perturbation']).
    #[arg(long)]
    pub perturb: Option<usize>,
    /// Cells generated and written per chunk.
    #[arg(long, default_value_t = 10_000)]
    pub chunk_size: usize,
    /// Gzip level for the written datasets (none by default: faster).
    #[arg(long)]
    pub gzip: Option<u32>,
}

/// Builds the simulation config from the flags.
pub fn config_from(g: &Global, a: &Args) -> Result<SimConfig> {
    let mut cfg: SimConfig = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("{}: not a valid simulation config", p.display()))?
        }
        None => SimConfig::default(),
    };
    cfg.seed = g.seed;
    if let Some(n) = a.cells {
        cfg.n_cells = n;
    }
    if let Some(n) = a.genes {
        cfg.n_genes = n;
    }
    if let Some(n) = a.types {
        cfg.n_types = n;
        cfg.n_lineages = cfg.n_lineages.min(n).max(1);
    }
    if let Some(n) = a.batches {
        cfg.n_batches = n;
    }
    if a.spatial && cfg.spatial.is_none() {
        cfg.spatial = Some(SpatialConfig::default());
    }
    if let Some(n) = a.perturb {
        cfg.perturbation = Some(PerturbConfig { n_perturbed: n, ..PerturbConfig::default() });
    }
    Ok(cfg)
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let cfg = config_from(g, &a)?;
    let t0 = Instant::now();
    let n = simulate_to(&cfg, &a.output, a.chunk_size.max(1), a.gzip, g.quiet)?;
    crate::progress::note(
        g.quiet,
        format!(
            "wrote {} ({} cells x {} genes) in {:.1} s",
            a.output.display(),
            n,
            cfg.n_genes,
            t0.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// Streams a simulation to `out` chunk by chunk; returns the number of cells written.
pub fn simulate_to(
    cfg: &SimConfig,
    out: &std::path::Path,
    chunk: usize,
    gzip: Option<u32>,
    quiet: bool,
) -> Result<usize> {
    let stream = SimStream::new(cfg)?;
    let opts = sclm_io::WriteOptions { compression: gzip };
    let mut w = sclm_io::H5adStreamWriter::create(out, &stream.template(), &opts)?;
    let pb = crate::progress::bar(stream.n_cells() as u64, "simulate", "cells", quiet);
    for c in stream.chunks(chunk) {
        let c = c?;
        pb.inc(c.counts.nrows as u64);
        w.append(&c.counts)?;
    }
    pb.finish_and_clear();
    let sp = crate::progress::spinner("finishing file", quiet);
    w.finish()?;
    sp.finish_and_clear();
    Ok(stream.n_cells())
}
