//! Zero-shot embedding throughput with random weights in a given architecture.
//!
//! Usage: `cargo run --release -p sclm-cellplm --example bench_embed -- CONFIG_JSON [N_CELLS] [NNZ_PER_CELL]`
//! (defaults 10,000 cells × 1,500 non-zeros, one group: the shapes of `ref_cellplm_embed_bench.py`).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: bench_embed CONFIG_JSON [N_CELLS] [NNZ_PER_CELL]")?;
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let nnz: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1_500);
    let config = sclm_cellplm::CellPlmConfig::from_json_file(path)?;
    let r = sclm_cellplm::bench_embed(n, nnz, &config)?;
    println!(
        "sclm-cellplm cells={} nnz/cell={} params={} threads={} best_s={:.3} cells_per_s={:.0} embedder_s={:.3}",
        r.n_cells, r.nnz_per_cell, r.n_params, r.threads, r.best_seconds, r.cells_per_s, r.embedder_seconds
    );
    Ok(())
}
