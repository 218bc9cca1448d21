//! Measures count generation speed (no writing) and prints summary statistics.
//!
//! ```text
//! cargo run --release -p sclm-sim --example sim_speed -- [n_cells] [n_genes] [chunk_size]
//! ```
//! Defaults: 100000 cells, 20000 genes, chunks of 10000 cells; other parameters from the
//! JSON in the `SIM_CONFIG` environment variable (default config otherwise).

use std::time::Instant;

use sclm_sim::{SimConfig, SimStream};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("arguments are integers")).collect();
    let n_cells = args.first().copied().unwrap_or(100_000);
    let n_genes = args.get(1).copied().unwrap_or(20_000);
    let chunk = args.get(2).copied().unwrap_or(10_000);
    // SIM_CONFIG may hold JSON overrides (e.g. '{"lib_loc": 9.0}').
    let base = std::env::var("SIM_CONFIG").unwrap_or_else(|_| "{}".into());
    let base = SimConfig::from_json(&base).expect("SIM_CONFIG must be a valid config");
    let cfg = SimConfig { n_cells, n_genes, ..base };
    let t0 = Instant::now();
    let stream = SimStream::new(&cfg).expect("valid config");
    let t_setup = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut nnz = 0usize;
    let mut totals: Vec<f64> = Vec::with_capacity(n_cells);
    for ch in stream.chunks(chunk) {
        let ch = ch.expect("chunk");
        nnz += ch.counts.nnz();
        for i in 0..ch.counts.nrows {
            totals.push(ch.counts.row(i).1.iter().map(|&v| v as f64).sum());
        }
    }
    let t_gen = t1.elapsed().as_secs_f64();
    totals.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{n_cells} cells x {n_genes} genes, {} threads: setup {t_setup:.2} s, counts {t_gen:.2} s ({:.0} cells/s)",
        rayon::current_num_threads(),
        n_cells as f64 / t_gen
    );
    println!(
        "non-zero fraction {:.4}, median total counts {:.0}, nnz {nnz}",
        nnz as f64 / (n_cells as f64 * n_genes as f64),
        totals[totals.len() / 2]
    );
}
