//! `sclm preprocess`: scanpy-style steps on a file.

use std::path::PathBuf;

use anyhow::Result;
use sclm_preprocess::pipeline;

use crate::Global;

/// Arguments of `sclm preprocess`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input: .h5ad, Cell Ranger .h5 or matrix directory.
    pub input: PathBuf,
    /// Output .h5ad file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Steps, comma-separated, each `name[:key=value[:key=value...]]`, run in order. Names:
    /// filter_cells, filter_genes, qc, normalize_total, log1p, hvg, scale, pca.
    #[arg(
        long,
        default_value = "qc,filter_cells:min_genes=1,filter_genes:min_cells=3,normalize_total:target_sum=1e4,log1p,hvg:flavor=seurat:n_top_genes=2000,pca:n_comps=50"
    )]
    pub steps: String,
    /// Gzip level for the written datasets (none by default).
    #[arg(long)]
    pub gzip: Option<u32>,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let steps = pipeline::parse_steps(&a.steps)?;
    let (mut adata, report) = sclm_io::read_any(&a.input)?;
    crate::progress::warn_read(g.quiet, &a.input, &report);
    let sp = crate::progress::spinner("preprocessing", g.quiet);
    let reports =
        pipeline::run(&mut adata, &steps, g.seed).map_err(|e| anyhow::anyhow!("{}: {e}", a.input.display()))?;
    sp.finish_and_clear();
    for r in &reports {
        crate::progress::note(g.quiet, format!("  {}: {}", r.step, r.summary));
    }
    let opts = sclm_io::WriteOptions { compression: a.gzip };
    sclm_io::write_h5ad(&adata, &a.output, &opts)?;
    crate::progress::note(
        g.quiet,
        format!("wrote {} ({} cells x {} genes)", a.output.display(), adata.n_obs(), adata.n_vars()),
    );
    Ok(())
}
