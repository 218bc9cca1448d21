//! `sclm bench langcell-embed`: cell-embedding throughput of the cell encoder at the published
//! shape (hidden 512, 12 layers, 8 heads, feed-forward 1,024, vocabulary 25,427) with random
//! weights on random cells of a fixed token count, and the same in `transformers` through a
//! user-supplied Python (same threads, same run). A benchmark, never a test.
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{BertConfig, LangCellConfig};
use crate::error::{LangCellError, Result};
use crate::family::LangCellModel;
use crate::text::TextTokenizer;
use crate::tokenizer::RankValueTokenizer;

/// The PyTorch counterpart.
pub const TORCH_SCRIPT: &str = include_str!("../scripts/bench_langcell_torch.py");

/// One engine's timing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    /// Which engine.
    pub engine: String,
    /// Threads used.
    pub threads: usize,
    /// Best wall time of one pass over the cells.
    pub best_seconds: f64,
    /// Cells per second of the best pass.
    pub cells_per_s: f64,
}

/// Times [`LangCellModel::embed_tokens`] on `cells` random cells of `tokens` tokens (`<cls>`
/// first), best of `reps` passes, with `layers` encoder layers (12 published).
pub fn bench_embed(cells: usize, tokens: usize, layers: usize, reps: usize) -> Result<BenchResult> {
    if cells == 0 || !(2..=2048).contains(&tokens) {
        return Err(LangCellError::Input("cells must be positive and tokens in 2..=2048".into()));
    }
    let n_genes = 25_424;
    let genes: Vec<String> = (0..n_genes).map(|i| format!("G{i}")).collect();
    let tok = RankValueTokenizer::new(genes, vec![1.0; n_genes], 2048)?;
    let text = TextTokenizer::from_texts(&["cell type: placeholder.".to_string()], 64)?;
    let cfg = LangCellConfig {
        cell: BertConfig { num_hidden_layers: layers, ..BertConfig::langcell_cell() },
        text: BertConfig {
            vocab_size: text.vocab_size(),
            hidden_size: 64,
            num_hidden_layers: 1,
            num_attention_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 64,
            type_vocab_size: 0,
            add_cross_attention: true,
            encoder_width: Some(512),
            ..Default::default()
        },
        ..LangCellConfig::published()
    };
    let device = sclm_nn::cpu_device();
    sclm_nn::seed_everything(0, &device);
    let model = LangCellModel::new(cfg.init(&device)?, tok, text, device)?;
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let seqs: Vec<Vec<u32>> = (0..cells)
        .map(|_| std::iter::once(25_426).chain((1..tokens).map(|_| rng.random_range(2..25_426u32))).collect())
        .collect();
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        model.embed_tokens(&seqs)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(BenchResult {
        engine: "sclm-langcell (burn flex)".into(),
        threads: rayon::current_num_threads(),
        best_seconds: best,
        cells_per_s: cells as f64 / best,
    })
}

/// The `transformers` counterpart through `python` (torch and transformers installed).
pub fn bench_torch(python: &Path, cells: usize, tokens: usize, layers: usize, reps: usize) -> Result<BenchResult> {
    let dir = std::env::temp_dir().join(format!("sclm-bench-lc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| LangCellError::io(&dir, e))?;
    let script = dir.join("bench_langcell_torch.py");
    std::fs::write(&script, TORCH_SCRIPT).map_err(|e| LangCellError::io(&script, e))?;
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--cells", &cells.to_string(), "--tokens", &tokens.to_string(), "--layers", &layers.to_string()])
        .args(["--threads", &rayon::current_num_threads().to_string(), "--reps", &reps.to_string()])
        .args(["--batch", &crate::family::CELLS_PER_CALL.to_string()])
        .output()
        .map_err(|e| LangCellError::io(python, e));
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    if !out.status.success() {
        return Err(LangCellError::Config(format!(
            "{} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| LangCellError::parse(python, format!("{e}: {line}")))
}
