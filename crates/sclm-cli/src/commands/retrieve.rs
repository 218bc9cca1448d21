//! `sclm retrieve`: text → cell search with a LangCell model (free-text queries against the cell
//! embeddings of a file, by cosine similarity in the shared space).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sclm_data::Column;
use sclm_langcell::LangCellModel;

use super::langcell_args::CountsArgs;
use crate::Global;

/// Arguments of `sclm retrieve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input: .h5ad with raw counts (X or --layer), Cell Ranger .h5 or matrix directory.
    pub input: PathBuf,
    /// A LangCell model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// A query text (repeat for several), e.g. "cell type: natural killer cell.".
    #[arg(long, required = true)]
    pub query: Vec<String>,
    /// Cells printed per query, most similar first.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// obs column printed next to each hit (e.g. the cell type, to judge the hits).
    #[arg(long)]
    pub show: Option<String>,
    /// Output .h5ad: the input with obs `<key-added>_<i>` = cosine similarity to query i.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// obs key prefix of the similarities.
    #[arg(long, default_value = "langcell_query")]
    pub key_added: String,
    #[command(flatten)]
    pub counts: CountsArgs,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let file = a.input.display().to_string();
    let model = LangCellModel::load(&a.model, &g.device()?).with_context(|| a.model.display().to_string())?;
    let (adata, report) = sclm_io::read_any(&a.input)?;
    crate::progress::warn_read(g.quiet, &a.input, &report);
    let input = a.counts.prepare(&adata, &file)?;
    let show = match &a.show {
        Some(k) => Some(input.obs.column(k, "obs column").with_context(|| file.clone())?.to_labels()),
        None => None,
    };
    if a.top == 0 {
        bail!("--top must be at least 1");
    }
    let opts = a.counts.embed_options();
    let (emb, matched) = sclm_model::embed(&model, &input, &opts, &mut |_| {}).with_context(|| file.clone())?;
    crate::progress::note(g.quiet, format!("{file}: {}", matched.report()));
    let texts = model.class_texts(&a.query)?;
    let d = emb.ncols;
    let mut out = adata;
    for (q, query) in a.query.iter().enumerate() {
        let t = &texts.embeddings[q * d..(q + 1) * d];
        let sim: Vec<f32> =
            (0..emb.nrows).map(|i| emb.data[i * d..(i + 1) * d].iter().zip(t).map(|(x, y)| x * y).sum()).collect();
        let mut order: Vec<usize> = (0..sim.len()).collect();
        order.sort_by(|&x, &y| sim[y].total_cmp(&sim[x]).then(x.cmp(&y)));
        println!("query {}: {query}", q + 1);
        for &i in order.iter().take(a.top) {
            let extra = show.as_ref().map(|s| format!("  {}", s[i])).unwrap_or_default();
            println!("  {:<24} {:.4}{extra}", out.obs.index[i], sim[i]);
        }
        out.obs.insert(format!("{}_{}", a.key_added, q + 1), Column::F32(sim))?;
    }
    if let Some(o) = &a.output {
        sclm_io::write_h5ad(&out, o, &Default::default())?;
        crate::progress::note(g.quiet, format!("wrote {} (obs['{}_1'] …)", o.display(), a.key_added));
    }
    Ok(())
}
