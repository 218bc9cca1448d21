//! Throughput measurement of zero-shot embedding, with the shapes of the reference script
//! `ref_cellplm_embed_bench.py` (random weights, N cells × a fixed number of non-zeros, one
//! group, best of 3 forward passes).
use std::time::Instant;

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use sclm_nn::embedding::CsrRows;

use crate::config::CellPlmConfig;
use crate::error::{CellPlmError, Result};
use crate::model::{to_vec, CellPlm};

/// Result of [`bench_embed`].
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// Cells per forward call (one group).
    pub n_cells: usize,
    /// Non-zeros per cell.
    pub nnz_per_cell: usize,
    /// Parameter values of the model.
    pub n_params: usize,
    /// Fastest of the timed passes, seconds.
    pub best_seconds: f64,
    /// `n_cells / best_seconds`.
    pub cells_per_s: f64,
    /// Fastest of the timed passes of the embedder alone (gene-embedding bag, Linear, norm),
    /// seconds: the part of `best_seconds` spent before the encoder.
    pub embedder_seconds: f64,
    /// Number of timed passes.
    pub repeats: usize,
    /// Worker threads of the CPU backend (rayon pool).
    pub threads: usize,
}

/// Times [`CellPlm::embed_group`] on random raw counts (`nnz_per_cell` distinct genes per cell,
/// counts 1–5, seed 0) with a randomly initialised model of `config` on the CPU device; best
/// of 3 passes after building the input, then best of 3 passes of the embedder alone.
pub fn bench_embed(n_cells: usize, nnz_per_cell: usize, config: &CellPlmConfig) -> Result<BenchResult> {
    let g = config.n_genes();
    if n_cells == 0 || nnz_per_cell == 0 || nnz_per_cell > g {
        return Err(CellPlmError::Input(format!(
            "bench needs n_cells > 0 and 0 < nnz_per_cell <= {g} genes (got {n_cells}, {nnz_per_cell})"
        )));
    }
    let device = sclm_nn::cpu_device();
    let mut rng = sclm_nn::seed_everything(0, &device);
    let model = CellPlm::new(config, &device)?;
    let mut rng2 = rand::rngs::StdRng::seed_from_u64(rng.random());
    let mut indptr = Vec::with_capacity(n_cells + 1);
    indptr.push(0);
    let mut indices = Vec::with_capacity(n_cells * nnz_per_cell);
    let mut data = Vec::with_capacity(n_cells * nnz_per_cell);
    for _ in 0..n_cells {
        let mut cols: Vec<u32> = sample(&mut rng2, g, nnz_per_cell).into_iter().map(|c| c as u32).collect();
        cols.sort_unstable();
        for c in cols {
            indices.push(c);
            data.push(rng2.random_range(1..=5) as f32);
        }
        indptr.push(indices.len());
    }
    let x = CsrRows::new(g, &indptr, &indices, &data)?;
    let repeats = 3;
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let t = Instant::now();
        let e = model.embed_group(&x, None)?;
        let v = to_vec(e); // forces the computation
        best = best.min(t.elapsed().as_secs_f64());
        if v.len() != n_cells * config.post_latent_dim {
            return Err(CellPlmError::Input("unexpected embedding size".into()));
        }
    }
    let mut embedder_best = f64::INFINITY;
    for _ in 0..repeats {
        let t = Instant::now();
        let h = model.embedder.forward(&x, None)?;
        let _ = to_vec(h);
        embedder_best = embedder_best.min(t.elapsed().as_secs_f64());
    }
    Ok(BenchResult {
        embedder_seconds: embedder_best,
        n_cells,
        nnz_per_cell,
        n_params: model.num_params(),
        best_seconds: best,
        cells_per_s: n_cells as f64 / best,
        repeats,
        threads: rayon::current_num_threads(),
    })
}
