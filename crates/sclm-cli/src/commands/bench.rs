//! `sclm bench`: speed benchmarks (never tests), with ratios against references measured in the
//! same session.

use std::path::PathBuf;

use anyhow::Result;

use crate::Global;

/// What to time.
#[derive(Debug, clap::Subcommand)]
pub enum Which {
    /// One transformer encoder layer (d 512, 8 heads, ffn 2048, 8 × 512 tokens), forward and
    /// forward + backward; with --torch-python, the same layer in PyTorch and the ratio.
    Engine {
        /// A Python with torch installed, to time the PyTorch reference in the same run.
        #[arg(long)]
        torch_python: Option<PathBuf>,
    },
    /// CellPLM zero-shot embedding throughput with random weights.
    CellplmEmbed {
        /// Cells.
        #[arg(long, default_value_t = 10_000)]
        cells: usize,
        /// Non-zero genes per cell.
        #[arg(long, default_value_t = 1_500)]
        nnz_per_cell: usize,
        /// `85m`, `small`, or a path to an authors' config.json.
        #[arg(long, default_value = "85m")]
        config: String,
        /// Also time the burn path (`CellPlm::embed_group`) and report the speed-up and the
        /// largest difference between the two paths' embeddings.
        #[arg(long)]
        compare_engine: bool,
    },
    /// LangCell cell-encoder embedding throughput at the published shape (hidden 512, 12 layers,
    /// 8 heads) with random weights; with --torch-python, `transformers` in the same run and
    /// the ratio.
    LangcellEmbed {
        /// Cells.
        #[arg(long, default_value_t = 32)]
        cells: usize,
        /// Tokens per cell, `<cls>` included (published maximum 2,048).
        #[arg(long, default_value_t = 2048)]
        tokens: usize,
        /// Encoder layers (published: 12).
        #[arg(long, default_value_t = 12)]
        layers: usize,
        /// Timed passes; the best is reported.
        #[arg(long, default_value_t = 2)]
        reps: usize,
        /// A Python with torch and transformers, to time the reference in the same run.
        #[arg(long)]
        torch_python: Option<PathBuf>,
    },
}

/// Arguments of `sclm bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub which: Which,
}

pub fn run(_g: &Global, a: Args) -> Result<()> {
    match a.which {
        Which::Engine { torch_python } => {
            let cfg = sclm_nn::bench::BenchConfig::new();
            let ours = sclm_nn::bench::bench_encoder_layer(&cfg)?;
            println!(
                "{:<10} threads={} forward={:.1} ms forward+backward={:.1} ms",
                ours.engine, ours.threads, ours.forward_ms, ours.forward_backward_ms
            );
            if let Some(py) = torch_python {
                let t = sclm_nn::bench::bench_torch(&py, &cfg)?;
                println!(
                    "{:<10} threads={} forward={:.1} ms forward+backward={:.1} ms",
                    t.engine, t.threads, t.forward_ms, t.forward_backward_ms
                );
                println!(
                    "ratio sclm/torch: forward {:.2}x, forward+backward {:.2}x",
                    ours.forward_ms / t.forward_ms,
                    ours.forward_backward_ms / t.forward_backward_ms
                );
            }
        }
        Which::CellplmEmbed { cells, nnz_per_cell, config, compare_engine } => {
            let cfg = match config.as_str() {
                "85m" | "small" => {
                    // The published vocabulary size; gene names are placeholders for random weights.
                    let genes: Vec<String> = (0..19_374).map(|i| format!("G{i}")).collect();
                    if config == "85m" {
                        sclm_cellplm::CellPlmConfig::published_85m(genes)
                    } else {
                        sclm_cellplm::CellPlmConfig::small(genes)
                    }
                }
                path => sclm_cellplm::CellPlmConfig::from_json_file(path)?,
            };
            let r = sclm_cellplm::bench_embed(cells, nnz_per_cell, &cfg, compare_engine)?;
            print!(
                "sclm-cellplm cells={} nnz/cell={} params={} threads={} best_s={:.3} cells_per_s={:.0} (snapshot {:.3} s)",
                r.n_cells, r.nnz_per_cell, r.n_params, r.threads, r.best_seconds, r.cells_per_s, r.snapshot_seconds
            );
            match (r.engine_seconds, r.max_abs_diff) {
                (Some(e), Some(diff)) => println!(
                    " | burn path best_s={e:.3} cells_per_s={:.0}, speed-up {:.2}x, max |difference| {diff:.2e}",
                    r.n_cells as f64 / e,
                    e / r.best_seconds
                ),
                _ => println!(),
            }
        }
        Which::LangcellEmbed { cells, tokens, layers, reps, torch_python } => {
            let ours = sclm_langcell::bench::bench_embed(cells, tokens, layers, reps)?;
            let line = |r: &sclm_langcell::bench::BenchResult| {
                format!(
                    "{:<44} threads={} cells={cells} tokens={tokens} layers={layers} best_s={:.3} cells_per_s={:.2}",
                    r.engine, r.threads, r.best_seconds, r.cells_per_s
                )
            };
            println!("{}", line(&ours));
            if let Some(py) = torch_python {
                let t = sclm_langcell::bench::bench_torch(&py, cells, tokens, layers, reps)?;
                println!("{}", line(&t));
                println!("ratio sclm/transformers cells/s: {:.2}x", ours.cells_per_s / t.cells_per_s);
            }
        }
    }
    Ok(())
}
