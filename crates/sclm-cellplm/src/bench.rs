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
    /// Fastest of the timed passes of the embedding path `sclm embed` uses
    /// ([`CellPlm::inference`]), seconds.
    pub best_seconds: f64,
    /// `n_cells / best_seconds`.
    pub cells_per_s: f64,
    /// Time to build the inference snapshot (once per model, not per group), seconds.
    pub snapshot_seconds: f64,
    /// Fastest of the timed passes of the burn path ([`CellPlm::embed_group`]), when measured.
    pub engine_seconds: Option<f64>,
    /// Largest absolute difference between the two paths' embeddings, when both ran.
    pub max_abs_diff: Option<f32>,
    /// Number of timed passes.
    pub repeats: usize,
    /// Worker threads of the CPU backend (rayon pool).
    pub threads: usize,
}

/// Times zero-shot embedding on random raw counts (`nnz_per_cell` distinct genes per cell,
/// counts 1–5, seed 0) with a randomly initialised model of `config` on the CPU device: best
/// of 3 passes of [`CellPlm::inference`]'s path, and with `compare_engine` also best of 3
/// passes of the burn path and the largest difference between their outputs.
pub fn bench_embed(
    n_cells: usize,
    nnz_per_cell: usize,
    config: &CellPlmConfig,
    compare_engine: bool,
) -> Result<BenchResult> {
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
    let t = Instant::now();
    let fast = model.inference();
    let snapshot_seconds = t.elapsed().as_secs_f64();
    let mut best = f64::INFINITY;
    let mut fast_out = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        fast_out = fast.embed_group(&x, None)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    if fast_out.len() != n_cells * config.post_latent_dim {
        return Err(CellPlmError::Input("unexpected embedding size".into()));
    }
    let (mut engine_seconds, mut max_abs_diff) = (None, None);
    if compare_engine {
        let mut engine_best = f64::INFINITY;
        let mut engine_out = Vec::new();
        for _ in 0..repeats {
            let t = Instant::now();
            engine_out = to_vec(model.embed_group(&x, None)?); // forces the computation
            engine_best = engine_best.min(t.elapsed().as_secs_f64());
        }
        engine_seconds = Some(engine_best);
        max_abs_diff = Some(fast_out.iter().zip(&engine_out).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max));
    }
    Ok(BenchResult {
        n_cells,
        nnz_per_cell,
        n_params: model.num_params(),
        best_seconds: best,
        cells_per_s: n_cells as f64 / best,
        snapshot_seconds,
        engine_seconds,
        max_abs_diff,
        repeats,
        threads: rayon::current_num_threads(),
    })
}
