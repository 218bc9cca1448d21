//! Engine benchmark: one transformer encoder layer (default d 512, 8 heads, ffn 2048,
//! batch 8 × 512 tokens), forward and forward + backward, and the same layer in PyTorch
//! through a user-supplied Python interpreter.
use std::path::Path;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use crate::attention::AttentionKind;
use crate::encoder::EncoderLayerConfig;
use crate::NnError;

/// The PyTorch counterpart script (also in `scripts/bench_engine_torch.py`).
pub const TORCH_SCRIPT: &str = include_str!("../scripts/bench_engine_torch.py");

/// Benchmark settings.
#[derive(Config, Debug)]
pub struct BenchConfig {
    /// Model dimension (default 512).
    #[config(default = 512)]
    pub d_model: usize,
    /// Heads (default 8).
    #[config(default = 8)]
    pub n_heads: usize,
    /// Feed-forward dimension (default 2048).
    #[config(default = 2048)]
    pub d_ff: usize,
    /// Batch size (default 8).
    #[config(default = 8)]
    pub batch: usize,
    /// Tokens per sequence (default 512).
    #[config(default = 512)]
    pub seq: usize,
    /// Untimed warm-up iterations (default 2).
    #[config(default = 2)]
    pub warmup: usize,
    /// Timed iterations; the median is reported (default 5).
    #[config(default = 5)]
    pub iters: usize,
    /// Worker threads (default none = rayon's default, all cores or `RAYON_NUM_THREADS`).
    #[config(default = "None")]
    pub threads: Option<usize>,
    /// Attention kind (default softmax, matching PyTorch's layer).
    #[config(default = "AttentionKind::Softmax")]
    pub attention: AttentionKind,
}

/// Timings of one engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    /// Engine name.
    pub engine: String,
    /// Threads used.
    pub threads: usize,
    /// Median forward time (ms).
    pub forward_ms: f64,
    /// Median forward + backward time (ms).
    pub forward_backward_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn run(cfg: &BenchConfig) -> BenchResult {
    let layer_cfg = EncoderLayerConfig::new(cfg.d_model, cfg.n_heads, cfg.d_ff)
        .with_dropout(0.0)
        .with_attention(cfg.attention.clone());
    let timed = |f: &dyn Fn()| {
        for _ in 0..cfg.warmup {
            f();
        }
        median(
            (0..cfg.iters.max(1))
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        )
    };
    let dev = crate::cpu_device();
    let layer = layer_cfg.init(&dev);
    let x = Tensor::<3>::random([cfg.batch, cfg.seq, cfg.d_model], Distribution::Normal(0.0, 1.0), &dev);
    let forward_ms = timed(&|| {
        let _ = crate::util::scalar(layer.forward(x.clone(), None).sum());
    });
    let tdev = crate::train_device();
    let tlayer = layer_cfg.init(&tdev);
    let tx = Tensor::<3>::random([cfg.batch, cfg.seq, cfg.d_model], Distribution::Normal(0.0, 1.0), &tdev);
    let forward_backward_ms = timed(&|| {
        let grads = tlayer.forward(tx.clone(), None).sum().backward();
        let g = tlayer.ff_in.weight.val().grad(&grads).expect("gradient");
        let _ = crate::util::scalar(g.sum());
    });
    BenchResult {
        engine: "sclm-nn (burn 0.22.1, flex)".into(),
        threads: rayon::current_num_threads(),
        forward_ms,
        forward_backward_ms,
    }
}

/// Times one encoder layer (release builds give meaningful figures).
pub fn bench_encoder_layer(cfg: &BenchConfig) -> Result<BenchResult, NnError> {
    match cfg.threads {
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| NnError::Config(format!("cannot build a {n}-thread pool: {e}")))?;
            Ok(pool.install(|| run(cfg)))
        }
        None => Ok(run(cfg)),
    }
}

/// Runs the PyTorch counterpart with `python` (an interpreter with torch installed).
pub fn bench_torch(python: &Path, cfg: &BenchConfig) -> Result<BenchResult, NnError> {
    let dir = std::env::temp_dir().join(format!("sclm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| NnError::io(&dir, e))?;
    let script = dir.join("bench_engine_torch.py");
    std::fs::write(&script, TORCH_SCRIPT).map_err(|e| NnError::io(&script, e))?;
    let threads = cfg.threads.unwrap_or_else(rayon::current_num_threads);
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--d-model", &cfg.d_model.to_string(), "--heads", &cfg.n_heads.to_string()])
        .args(["--d-ff", &cfg.d_ff.to_string(), "--batch", &cfg.batch.to_string(), "--seq", &cfg.seq.to_string()])
        .args(["--warmup", &cfg.warmup.to_string(), "--iters", &cfg.iters.to_string()])
        .args(["--threads", &threads.to_string()])
        .output()
        .map_err(|e| NnError::io(python, e));
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    if !out.status.success() {
        return Err(NnError::Config(format!(
            "{} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| NnError::Json { path: python.display().to_string(), message: format!("{e}: {line}") })
}
